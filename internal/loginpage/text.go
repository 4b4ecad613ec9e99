package loginpage

import (
	"net/http"
	"strconv"
	"strings"
)

// Text is the wording of every page in one language. The fields with a JSON
// name are also handed to the login page's script, which shows them as the
// login moves from state to state.
type Text struct {
	Title     string `json:"-"`
	Scan      string `json:"-"`
	QRAlt     string `json:"-"`
	NoScript  string `json:"-"`
	Simulate  string `json:"-"`
	AsUser    string `json:"-"`
	Sandbox   string `json:"-"`
	OpenLogin string `json:"-"`
	// OpenEmbedded labels the button that shows website login's QR code on
	// the page (OpenDisplay embedded).
	OpenEmbedded string `json:"-"`
	// FrameTitle names the frame holding WeChat's website-login page, for
	// screen readers.
	FrameTitle string `json:"frameTitle"`
	// FrameDone is what the frame shows once it handed the login to the
	// page.
	FrameDone string `json:"-"`
	Or        string `json:"-"`
	// The help for a phone's browser outside WeChat.
	PhoneIntro string `json:"-"`
	PhoneSave  string `json:"-"`
	PhoneAlbum string `json:"-"`
	SaveCode   string `json:"-"`
	PhoneOpen  string `json:"-"`
	CopyLink   string `json:"-"`
	Copied     string `json:"copied"`
	Saved      string `json:"saved"`
	// Continue labels the link from a finished login's page on to the site.
	Continue string `json:"-"`
	// Code login: the code's label, the steps ({account} is replaced by
	// the account's name), the follow QR code's description, and the note
	// for QR scanners who do not follow the account yet.
	CodeLabel      string `json:"-"`
	CodeStepFollow string `json:"-"`
	CodeStepSearch string `json:"-"` // the first step without a follow QR code
	CodeStepSend   string `json:"-"`
	OurAccount     string `json:"-"`
	NamedAccount   string `json:"-"` // {name} is replaced by the account's name
	FollowQRAlt    string `json:"-"`
	ScanFollow     string `json:"-"`
	CopyCode       string `json:"-"`
	CodeCopied     string `json:"codeCopied"`
	CodeWaiting    string `json:"codeWaiting"`
	CodeLoading    string `json:"codeLoading"`
	CodeExpired    string `json:"codeExpired"`
	CodeRefresh    string `json:"codeRefresh"`
	// UseCode and UseQR switch between the two when a site offers both;
	// QRUnavailable says why the page moved to a code by itself.
	UseCode       string `json:"useCode"`
	UseQR         string `json:"useQR"`
	QRUnavailable string `json:"qrUnavailable"`
	// SimulateSend labels the sandbox button in code login.
	SimulateSend string `json:"simulateSend"`

	Loading      string `json:"loading"`
	Waiting      string `json:"waiting"`
	Scanned      string `json:"scanned"`
	Success      string `json:"success"`
	Expired      string `json:"expired"`
	Denied       string `json:"denied"`
	Error        string `json:"error"`
	Reconnecting string `json:"reconnecting"`
	Refresh      string `json:"refresh"`
	Retry        string `json:"retry"`
	ExpiresIn    string `json:"expiresIn"` // {t} is replaced by m:ss
	// SimulateConfirm labels the sandbox button once a scan waits for the
	// confirmation in chat.
	SimulateConfirm string `json:"simulateConfirm"`
	// NoUnionID is shown when a login is refused because WeChat gave no
	// unionid and the site identifies people by it.
	NoUnionID string `json:"noUnionID"`
	// Misconfigured is shown when WeChat refuses to serve the site until
	// its owner changes its setup: there is nothing for the user to retry.
	Misconfigured string `json:"misconfigured"`

	// problems words the messages that have no field of their own.
	problems map[Message]string
}

// Forbidden is the refusal of an account that may not use the site. It
// keeps {{.T.Forbidden}} working in custom login templates.
func (t Text) Forbidden() string { return t.Denied }

// message returns the wording of m, "" for none.
func (t Text) message(m Message) string {
	switch m {
	case MsgSuccess:
		return t.Success
	case MsgForbidden:
		return t.Denied
	}
	return t.problems[m]
}

// Message names what a page says in place of its usual content: the
// outcome of an OAuth flow, or why the login page shows no QR code.
type Message int

// The messages. The zero Message is none.
const (
	_ Message = iota
	MsgSuccess
	MsgForbidden // the account is not allowed on this site
	MsgBadRequest
	MsgBadNext
	MsgNotEnabled
	MsgTooMany
	MsgExpired // the login link, not a QR code
	MsgOtherBrowser
	MsgCookies
	MsgDeclined
	MsgSnapshot
	MsgCodeInvalid
	MsgMisconfigured
	MsgBusy
	MsgUnavailable
	MsgNoUnionID // the site identifies people by unionid, and WeChat gave none
)

// In returns the wording of m in lang ("en" or "zh").
func (m Message) In(lang string) string { return texts[lang].message(m) }

var texts = map[string]Text{
	"en": {
		Title:    "Log in with WeChat",
		Scan:     "Open WeChat on your phone, tap + then Scan, and point it at the code.",
		QRAlt:    "Login QR code: scan it with WeChat",
		NoScript: "This page needs JavaScript to show the login code.",
		Simulate: "Simulate scan",

		SimulateConfirm: "Simulate replying the code in WeChat",
		NoUnionID:       noUnionIDEn,
		Misconfigured:   misconfiguredEn,
		AsUser:          "Scan as test user",
		Sandbox:         "Sandbox: no real WeChat involved",
		OpenLogin:       "Open the WeChat login window",
		OpenEmbedded:    "Log in with a WeChat website login code",
		FrameTitle:      "WeChat website login",
		FrameDone:       "Scanned. Finishing the login…",
		PhoneIntro:      "WeChat cannot scan a code on its own phone's screen. Instead:",
		PhoneSave:       "Save the code to your photos: press and hold it, or use the button below.",
		PhoneAlbum:      "In WeChat, tap + then Scan, tap the album icon and choose the saved code.",
		SaveCode:        "Save the code",
		PhoneOpen:       "Or open this page in WeChat, which logs you in there directly: copy its link and send it to yourself (File Transfer) in WeChat.",
		CopyLink:        "Copy the link",
		Copied:          "Link copied.",
		Saved:           "Code saved: now scan it from the album in WeChat.",
		Or:              "or",
		Continue:        "Continue",

		CodeLabel:      "Your login code",
		CodeStepFollow: "In WeChat, follow {account}: scan its code below, or search for its name.",
		CodeStepSearch: "In WeChat, follow {account}: search for its name.",
		CodeStepSend:   "Send it the code above as a chat message. This page logs you in when it arrives.",
		OurAccount:     "this site's Official Account",
		NamedAccount:   "the Official Account “{name}”",
		FollowQRAlt:    "QR code of the Official Account: scan it with WeChat to follow the account",
		ScanFollow:     "If you do not follow the account yet, WeChat asks you to follow it first: the login completes when you do.",
		CopyCode:       "Copy the code",
		CodeCopied:     "Code copied.",
		CodeWaiting:    "Waiting for your message in WeChat…",
		CodeLoading:    "Preparing your login code…",
		CodeExpired:    "This login code has expired.",
		CodeRefresh:    "Get a new code",
		UseCode:        "Log in with a code instead",
		UseQR:          "Scan a QR code instead",
		QRUnavailable:  "This site's WeChat account cannot show a login QR code: send it a code instead.",
		SimulateSend:   "Simulate sending the code",

		Loading:      "Preparing your login code…",
		Waiting:      "Waiting for you to scan…",
		Scanned:      "Scanned. Confirm the login on your phone…",
		Success:      "Logged in. Taking you back…",
		Expired:      "This code has expired.",
		Denied:       "This WeChat account is not allowed to use this site.",
		Error:        "Something went wrong. Please try again.",
		Reconnecting: "Connection lost. Reconnecting…",
		Refresh:      "Get a new code",
		Retry:        "Try again",
		ExpiresIn:    "Expires in {t}",

		problems: map[Message]string{
			MsgBadRequest:    "This login link is not valid. Please start again.",
			MsgBadNext:       "This login link points to another site, so it was not followed.",
			MsgTooMany:       "Too many login attempts from your network. Please wait a minute and try again.",
			MsgNotEnabled:    "This way of logging in is not enabled on this site.",
			MsgExpired:       "This login link has expired or has already been used. Please start again.",
			MsgOtherBrowser:  "This login was started in another browser or tab. For your safety it was not completed here. Please start again.",
			MsgCookies:       "Your browser did not keep this site's cookies, which logging in needs. Please allow cookies (or open the page in your phone's browser) and try again.",
			MsgDeclined:      "You did not allow WeChat to log you in.",
			MsgSnapshot:      "You are viewing a preview of this page, which does not tell us who you are. Tap “Use full service” (使用完整服务) at the bottom of the screen, then log in again.",
			MsgCodeInvalid:   "This WeChat login has expired or was already used. Please log in again.",
			MsgMisconfigured: misconfiguredEn,
			MsgBusy:          "WeChat is busy right now. Please try again in a moment.",
			MsgUnavailable:   "Logging in is temporarily unavailable. Please try again in a moment.",
			MsgNoUnionID:     noUnionIDEn,
		},
	},
	"zh": {
		Title:    "微信登录",
		Scan:     "打开手机微信，点击右上角“+”中的“扫一扫”，扫描二维码即可登录。",
		QRAlt:    "登录二维码，请用微信扫描",
		NoScript: "本页面需要启用 JavaScript 才能显示登录二维码。",
		Simulate: "模拟扫码",

		SimulateConfirm: "模拟在微信中回复确认码",
		NoUnionID:       noUnionIDZh,
		Misconfigured:   misconfiguredZh,
		AsUser:          "以测试用户身份扫码",
		Sandbox:         "沙盒模式：不连接真实的微信",
		OpenLogin:       "打开微信登录窗口",
		OpenEmbedded:    "使用微信网站登录二维码",
		FrameTitle:      "微信网站登录",
		FrameDone:       "已扫码，正在完成登录…",
		PhoneIntro:      "微信无法扫描本机屏幕上的二维码，可以这样登录：",
		PhoneSave:       "把二维码保存到相册：长按二维码，或点下面的按钮。",
		PhoneAlbum:      "在微信中点“+”→“扫一扫”，点相册图标，选择刚保存的二维码。",
		SaveCode:        "保存二维码",
		PhoneOpen:       "也可以在微信中打开本页直接登录：复制链接，发给自己（文件传输助手）后在微信中打开。",
		CopyLink:        "复制链接",
		Copied:          "链接已复制。",
		Saved:           "二维码已保存，请在微信“扫一扫”中从相册选择。",
		Or:              "或",
		Continue:        "继续",

		CodeLabel:      "你的登录码",
		CodeStepFollow: "在微信中关注{account}：扫描下方二维码，或搜索公众号名称。",
		CodeStepSearch: "在微信中搜索并关注{account}。",
		CodeStepSend:   "把上面的登录码作为消息发给它，消息送达后本页自动登录。",
		OurAccount:     "本站的公众号",
		NamedAccount:   "公众号“{name}”",
		FollowQRAlt:    "公众号二维码，用微信扫描即可关注",
		ScanFollow:     "如果你还没有关注公众号，微信会先请你关注，关注后即完成登录。",
		CopyCode:       "复制登录码",
		CodeCopied:     "登录码已复制。",
		CodeWaiting:    "等待你在微信中发送登录码…",
		CodeLoading:    "正在生成登录码…",
		CodeExpired:    "登录码已过期。",
		CodeRefresh:    "获取新的登录码",
		UseCode:        "改用登录码登录",
		UseQR:          "改用扫码登录",
		QRUnavailable:  "本站公众号无法生成登录二维码，请改为发送登录码。",
		SimulateSend:   "模拟发送登录码",

		Loading:      "正在生成登录二维码…",
		Waiting:      "等待扫码…",
		Scanned:      "扫码成功，请在手机上确认登录…",
		Success:      "登录成功，正在跳转…",
		Expired:      "二维码已过期。",
		Denied:       "此微信账号无权访问本站。",
		Error:        "出错了，请重试。",
		Reconnecting: "连接中断，正在重新连接…",
		Refresh:      "刷新二维码",
		Retry:        "重试",
		ExpiresIn:    "{t} 后过期",

		problems: map[Message]string{
			MsgBadRequest:    "登录链接无效，请重新开始。",
			MsgBadNext:       "登录链接指向其他网站，已拒绝跳转。",
			MsgTooMany:       "你所在的网络登录尝试过多，请稍等一分钟再试。",
			MsgNotEnabled:    "本站未启用这种登录方式。",
			MsgExpired:       "登录链接已过期或已被使用，请重新开始。",
			MsgOtherBrowser:  "此次登录是在另一个浏览器或标签页中发起的，为安全起见未在此完成，请重新开始。",
			MsgCookies:       "您的浏览器没有保存本站的 Cookie，登录需要它。请允许 Cookie（或在手机浏览器中打开本页）后重试。",
			MsgDeclined:      "您没有允许使用微信登录。",
			MsgSnapshot:      "您正在浏览本页的快照，无法确认您的身份。请点击屏幕下方的“使用完整服务”，然后重新登录。",
			MsgCodeInvalid:   "微信登录已过期或已被使用，请重新登录。",
			MsgMisconfigured: misconfiguredZh,
			MsgBusy:          "微信繁忙，请稍后再试。",
			MsgUnavailable:   "登录暂时不可用，请稍后再试。",
			MsgNoUnionID:     noUnionIDZh,
		},
	},
}

// htmlLang is the value of <html lang> on the login page, which screen
// readers use to pick a voice.
var htmlLang = map[string]string{"en": "en", "zh": "zh-CN"}

// pickLang chooses zh or en from an Accept-Language header: the supported
// language with the highest quality, the earlier one on a tie, English when
// neither is acceptable.
func pickLang(acceptLanguage string) string {
	best, bestQ := "en", -1.0
	for part := range strings.SplitSeq(acceptLanguage, ",") {
		tag, params, _ := strings.Cut(part, ";")
		tag = strings.ToLower(strings.TrimSpace(tag))
		var lang string
		switch {
		case tag == "zh" || strings.HasPrefix(tag, "zh-"):
			lang = "zh"
		case tag == "en" || strings.HasPrefix(tag, "en-"):
			lang = "en"
		default:
			continue
		}
		if q := quality(params); q > bestQ {
			best, bestQ = lang, q
		}
	}
	return best
}

// quality reads the q parameter of one Accept-Language entry. A missing or
// malformed q counts as 1, as browsers intend; q=0 means "not acceptable".
func quality(params string) float64 {
	for p := range strings.SplitSeq(params, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || strings.TrimSpace(k) != "q" {
			continue
		}
		q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || !(q <= 1) { // also catches NaN
			return 1
		}
		if q <= 0 {
			return -1
		}
		return q
	}
	return 1
}

// The refusal when a site that identifies people by unionid gets none: said
// on the login page (QR) and on the OAuth pages alike.
const (
	noUnionIDEn = "This site knows people by their WeChat UnionID, and WeChat did not give one for your account, so you cannot log in here this way. Please try another way of logging in, or tell the site's owner."
	noUnionIDZh = "本站以微信 UnionID 识别用户，但微信没有提供您账号的 UnionID，因此无法用此方式登录。请换一种登录方式，或联系网站管理员。"
)

// The answer when WeChat refuses the site because of how it is set up: no
// retry can cure that, so it names whom to tell instead.
const (
	misconfiguredEn = "WeChat login is not set up correctly on this site. Please tell the site's owner."
	misconfiguredZh = "本站的微信登录配置有误，请联系网站管理员。"
)

// Lang returns the language the pages use for r: "en" or "zh".
func Lang(r *http.Request) string { return pickLang(r.Header.Get("Accept-Language")) }
