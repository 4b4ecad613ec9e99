package wechattest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// DeliveryStatus is how WeChat judges a callback's answer to a push.
type DeliveryStatus string

// A push is acknowledged by "success" or an empty body, replied to with a
// valid passive reply, or else the user sees "service unavailable".
const (
	StatusAcknowledged DeliveryStatus = "acknowledged"
	StatusReplied      DeliveryStatus = "replied"
	StatusUnavailable  DeliveryStatus = "service unavailable"
)

// maxReply is the most of a callback's answer that is read.
const maxReply = 64 << 10

// Attempt is one HTTP request of a push.
type Attempt struct {
	// Status is the HTTP status, 0 when no answer arrived in time.
	Status int
	// Body is the raw answer (at most 64 KiB).
	Body []byte
	// Err is the transport error or timeout, if any.
	Err error
	// Duration is how long the attempt took.
	Duration time.Duration
}

// Delivery is a push to an Official Account's callback and its outcome.
type Delivery struct {
	AppID string
	// Event is the pushed event, in plaintext.
	Event wechat.Event
	// URL is the requested URL, query included; Body is the exact body
	// sent. Every attempt sends the same URL and body.
	URL  string
	Body []byte
	// Timestamp and Nonce are the query's values.
	Timestamp, Nonce string
	// Attempts lists the requests made, at most Config.PushAttempts.
	Attempts []Attempt
	// Status judges the last attempt; Problem says why it is
	// StatusUnavailable.
	Status  DeliveryStatus
	Problem string
	// Reply is the decoded passive reply when Status is StatusReplied, and
	// ReplyXML its plaintext XML (decrypted when it was encrypted).
	Reply    *wechat.Event
	ReplyXML []byte
}

// ServiceUnavailableNotice is what WeChat shows in the chat when the
// account's server did not answer a push in time, or answered with
// something WeChat cannot use.
const ServiceUnavailableNotice = "该公众号暂时无法提供服务，请稍后再试"

// Scan makes userName's phone scan a parametric QR code and, if the user
// does not follow the account yet, tap "follow" on the account page that
// opens; the resulting event is pushed to the app's callback. ref is a
// ticket, the QR code's url, or a scene value (the newest ticket with that
// scene). appID may be empty to take the ticket's app.
//
// A user who does not follow the account gets a subscribe event with
// EventKey "qrscene_<scene>" and now follows it; a follower gets a SCAN
// event with the bare scene. Both carry the Ticket. Unknown or expired
// tickets are an error and push nothing. A callback that fails is not an
// error: the returned Delivery says what happened. The error is non-nil
// with a Delivery only when ctx ends during the push.
//
// Scan is ScanWithoutFollowing followed by Follow, in one step.
func (p *Platform) Scan(ctx context.Context, appID, ref, userName string) (*Delivery, error) {
	return p.scan(ctx, appID, ref, userName, true)
}

// ScanWithoutFollowing makes userName's phone scan a parametric QR code
// and stop there. For a follower it is Scan: WeChat pushes SCAN with the
// bare scene. A user who does not follow sees the account's page and
// nothing is pushed, as on WeChat: ScanWithoutFollowing returns a nil
// Delivery and a nil error. If the user then follows (see Follow) from that
// page, the subscribe event carries "qrscene_<scene>" and the Ticket.
func (p *Platform) ScanWithoutFollowing(ctx context.Context, appID, ref, userName string) (*Delivery, error) {
	return p.scan(ctx, appID, ref, userName, false)
}

func (p *Platform) scan(ctx context.Context, appID, ref, userName string, follow bool) (*Delivery, error) {
	now := p.now()
	p.mu.Lock()
	if p.users[userName] == nil {
		p.mu.Unlock()
		return nil, fmt.Errorf("scan as %q: %w", userName, ErrUnknownUser)
	}
	t := p.resolveTicketLocked(appID, ref)
	if t == nil || (appID != "" && t.appID != appID) {
		p.mu.Unlock()
		return nil, fmt.Errorf("scan: %w", ErrUnknownTicket)
	}
	if t.expired(now) {
		p.mu.Unlock()
		return nil, fmt.Errorf("scan: %w", ErrTicketExpired)
	}
	a, err := p.pushTargetLocked(t.appID)
	if err != nil {
		p.mu.Unlock()
		return nil, fmt.Errorf("scan: %w", err)
	}
	ev := newEvent(a, userName, now, "")
	ev.Ticket = t.ticket
	f := p.followOf(subject{a.AppID, userName})
	switch {
	case f.subscribed:
		ev.Event, ev.EventKey = "SCAN", t.scene
	case follow:
		ev.Event, ev.EventKey = "subscribe", "qrscene_"+t.scene
		f.followVia(t, now)
	default:
		// The account page is open; the scan itself pushes nothing.
		tc := *t
		f.page = &tc
		p.mu.Unlock()
		return nil, nil
	}
	p.mu.Unlock()
	return p.deliver(ctx, a, ev, now)
}

// followVia records a follow from the account page of QR code t.
func (f *follow) followVia(t *ticket, now time.Time) {
	*f = follow{subscribed: true, since: now, scene: "ADD_SCENE_QR_CODE", qrScene: t.sceneID}
	if t.sceneID == 0 {
		f.qrSceneStr = t.scene
	}
}

// newEvent returns an event from userName to a, created at now.
func newEvent(a *app, userName string, now time.Time, name string) wechat.Event {
	return wechat.Event{
		ToUserName:   a.OriginalID,
		FromUserName: openID(a.AppID, userName),
		CreateTime:   now.Unix(),
		MsgType:      "event",
		Event:        name,
	}
}

// Follow makes userName tap "follow" on an Official Account's page and
// pushes the subscribe event. When the page was opened by scanning a
// parametric QR code (ScanWithoutFollowing), the event carries EventKey
// "qrscene_<scene>" and the Ticket, and cgi-bin/user/info reports
// ADD_SCENE_QR_CODE with the scene; otherwise the EventKey is empty and the
// user found the account by search (ADD_SCENE_SEARCH). A user who already
// follows gets ErrAlreadyFollowing and nothing is pushed.
func (p *Platform) Follow(ctx context.Context, appID, userName string) (*Delivery, error) {
	now := p.now()
	p.mu.Lock()
	a, f, err := p.phoneLocked(appID, userName)
	if err == nil && f.subscribed {
		err = ErrAlreadyFollowing
	}
	if err != nil {
		p.mu.Unlock()
		return nil, fmt.Errorf("follow %s as %q: %w", appID, userName, err)
	}
	ev := newEvent(a, userName, now, "subscribe")
	if t := f.page; t != nil {
		ev.EventKey, ev.Ticket = "qrscene_"+t.scene, t.ticket
		f.followVia(t, now)
	} else {
		*f = follow{subscribed: true, since: now, scene: "ADD_SCENE_SEARCH"}
	}
	p.mu.Unlock()
	return p.deliver(ctx, a, ev, now)
}

// Unfollow makes userName unfollow an Official Account and pushes the
// unsubscribe event (with an empty EventKey). A user who does not follow
// gets ErrNotFollowing and nothing is pushed.
func (p *Platform) Unfollow(ctx context.Context, appID, userName string) (*Delivery, error) {
	now := p.now()
	p.mu.Lock()
	a, f, err := p.phoneLocked(appID, userName)
	if err == nil && !f.subscribed {
		err = ErrNotFollowing
	}
	if err != nil {
		p.mu.Unlock()
		return nil, fmt.Errorf("unfollow %s as %q: %w", appID, userName, err)
	}
	*f = follow{}
	ev := newEvent(a, userName, now, "unsubscribe")
	p.mu.Unlock()
	return p.deliver(ctx, a, ev, now)
}

// Subscribe is Follow.
//
// Deprecated: use Follow, which names the user's action.
func (p *Platform) Subscribe(ctx context.Context, appID, userName string) (*Delivery, error) {
	return p.Follow(ctx, appID, userName)
}

// Unsubscribe is Unfollow.
//
// Deprecated: use Unfollow, which names the user's action.
func (p *Platform) Unsubscribe(ctx context.Context, appID, userName string) (*Delivery, error) {
	return p.Unfollow(ctx, appID, userName)
}

// SendText makes userName send a text message to an Official Account's
// chat. WeChat pushes it (MsgType text, Content, a new MsgId; encrypted as
// the account's mode requires) and the answer to that push is what the
// chat shows: reply is the Content of a passive text reply, a placeholder
// such as "[image]" for other reply types, "" when the server only
// acknowledged, and ServiceUnavailableNotice when it failed. The whole
// exchange is in Deliveries.
//
// Only followers have the chat: others get ErrNotFollowing and nothing is
// pushed. An empty content is refused, as WeChat's send button is. The
// error is also non-nil when ctx ends during the push.
func (p *Platform) SendText(ctx context.Context, appID, userName, content string) (reply string, err error) {
	d, err := p.sendText(ctx, appID, userName, content)
	if err != nil {
		return "", err
	}
	return d.ChatText(), nil
}

// sendText is SendText returning the delivery; like deliver, it returns a
// delivery with an error when ctx ends during the push.
func (p *Platform) sendText(ctx context.Context, appID, userName, content string) (*Delivery, error) {
	if content == "" {
		return nil, errors.New("wechattest: send text: empty message")
	}
	now := p.now()
	p.mu.Lock()
	a, f, err := p.phoneLocked(appID, userName)
	if err == nil && !f.subscribed {
		err = ErrNotFollowing
	}
	if err != nil {
		p.mu.Unlock()
		return nil, fmt.Errorf("send text to %s as %q: %w", appID, userName, err)
	}
	ev := newEvent(a, userName, now, "")
	ev.MsgType, ev.Content, ev.MsgID = "text", content, p.msgIDLocked(now)
	p.mu.Unlock()
	return p.deliver(ctx, a, ev, now)
}

// msgIDLocked returns a new 64-bit message id, unique on this platform and
// shaped like WeChat's (19 digits). p.mu must be held.
func (p *Platform) msgIDLocked(now time.Time) int64 {
	p.msgSeq++
	return now.Unix()<<32 | p.msgSeq&0xffffffff
}

// phoneLocked returns the app a user's phone talks to and the user's follow
// state with it. p.mu must be held.
func (p *Platform) phoneLocked(appID, userName string) (*app, *follow, error) {
	if p.users[userName] == nil {
		return nil, nil, ErrUnknownUser
	}
	a, err := p.pushTargetLocked(appID)
	if err != nil {
		return nil, nil, err
	}
	return a, p.followOf(subject{appID, userName}), nil
}

// ChatText returns what the user's chat with the account shows after this
// delivery: the text of a passive text reply, a placeholder for other
// replies, nothing for a plain acknowledgement, or WeChat's notice that the
// account cannot serve right now.
func (d *Delivery) ChatText() string {
	switch d.Status {
	case StatusUnavailable:
		return ServiceUnavailableNotice
	case StatusReplied:
		if d.Reply == nil {
			return ""
		}
		switch d.Reply.MsgType {
		case "text":
			return d.Reply.Content
		case "transfer_customer_service":
			// Handed to a customer service agent; nothing shows yet.
			return ""
		}
		return "[" + d.Reply.MsgType + "]"
	}
	return ""
}

// Push sends an arbitrary event or message to an Official Account's
// callback, exactly like Scan does. FromUserName (an openid) is required;
// ToUserName defaults to the app's OriginalID and CreateTime to now. Unlike
// the phone's methods it checks nothing about the user, such as whether
// they follow the account: it is for pushes those methods do not make.
func (p *Platform) Push(ctx context.Context, appID string, ev *wechat.Event) (*Delivery, error) {
	if ev == nil || ev.FromUserName == "" {
		return nil, errors.New("wechattest: push needs an event with FromUserName")
	}
	now := p.now()
	p.mu.Lock()
	a, err := p.pushTargetLocked(appID)
	p.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	e := *ev
	if e.ToUserName == "" {
		e.ToUserName = a.OriginalID
	}
	if e.CreateTime == 0 {
		e.CreateTime = now.Unix()
	}
	return p.deliver(ctx, a, e, now)
}

// pushTargetLocked returns an app that can receive pushes. p.mu must be held.
func (p *Platform) pushTargetLocked(appID string) (*app, error) {
	a := p.apps[appID]
	switch {
	case a == nil:
		return nil, fmt.Errorf("app %q: %w", appID, ErrUnknownApp)
	case a.Kind != OfficialAccount:
		return nil, fmt.Errorf("app %q: %w", appID, ErrNotOA)
	case a.CallbackURL == "":
		return nil, fmt.Errorf("app %q: %w", appID, ErrNoCallback)
	}
	return a, nil
}

// deliver signs, encrypts and posts ev like WeChat, retrying with the same
// request when the callback is slow, fails, or answers with something
// WeChat would not accept.
func (p *Platform) deliver(ctx context.Context, a *app, ev wechat.Event, now time.Time) (*Delivery, error) {
	d := &Delivery{
		AppID:     a.AppID,
		Event:     ev,
		Timestamp: strconv.FormatInt(now.Unix(), 10),
		Nonce:     randDigits(9),
	}
	plain := wechat.MarshalEvent(&ev)
	// WeChat's parameter order: signature, timestamp, nonce, openid,
	// encrypt_type, msg_signature.
	query := "signature=" + wechat.Signature(a.Token, d.Timestamp, d.Nonce) +
		"&timestamp=" + d.Timestamp + "&nonce=" + d.Nonce + "&openid=" + url.QueryEscape(ev.FromUserName)
	switch a.Mode {
	case Plaintext:
		d.Body = plain
	default:
		enc, msgSig, err := a.crypter.Encrypt(plain, d.Timestamp, d.Nonce)
		if err != nil {
			return nil, fmt.Errorf("wechattest: encrypt push: %w", err)
		}
		query += "&encrypt_type=aes&msg_signature=" + msgSig
		encElem := "<Encrypt><![CDATA[" + enc + "]]></Encrypt>\n"
		if a.Mode == Compatible {
			d.Body = insertBeforeClose(plain, encElem)
		} else {
			d.Body = []byte("<xml><ToUserName><![CDATA[" + ev.ToUserName + "]]></ToUserName>\n" + encElem + "</xml>")
		}
	}
	d.URL = a.CallbackURL
	if strings.Contains(d.URL, "?") {
		d.URL += "&" + query
	} else {
		d.URL += "?" + query
	}

	var ctxErr error
	for range p.pushAttempts {
		at := p.attempt(ctx, d.URL, d.Body)
		d.Status, d.Problem, d.Reply, d.ReplyXML = StatusUnavailable, "", nil, nil
		if at.Err != nil {
			d.Problem = "no answer: " + at.Err.Error()
		} else {
			p.judge(a, d, at)
		}
		d.Attempts = append(d.Attempts, at)
		if d.Status != StatusUnavailable {
			break
		}
		if ctxErr = ctx.Err(); ctxErr != nil {
			break
		}
	}
	p.record(d)
	if ctxErr != nil {
		return d, fmt.Errorf("wechattest: push interrupted: %w", ctxErr)
	}
	return d, nil
}

// insertBeforeClose inserts elem before the closing </xml> of doc.
func insertBeforeClose(doc []byte, elem string) []byte {
	i := bytes.LastIndex(doc, []byte("</xml>"))
	if i < 0 {
		return append(slices.Clone(doc), elem...)
	}
	out := make([]byte, 0, len(doc)+len(elem)+1)
	out = append(out, doc[:i]...)
	if i > 0 && doc[i-1] != '\n' {
		out = append(out, '\n')
	}
	out = append(out, elem...)
	return append(out, doc[i:]...)
}

func (p *Platform) attempt(ctx context.Context, target string, body []byte) Attempt {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, p.pushTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return Attempt{Err: err}
	}
	req.Header.Set("Content-Type", "text/xml")
	req.Header.Set("User-Agent", "Mozilla/4.0")
	req.Header.Set("Accept", "*/*")
	resp, err := p.client.Do(req)
	if err != nil {
		return Attempt{Err: withoutURL(err), Duration: time.Since(start)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	return Attempt{Status: resp.StatusCode, Body: b, Err: err, Duration: time.Since(start)}
}

// withoutURL drops the URL from a client error: a push URL carries the
// user's openid and signatures, which do not belong in error text.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s callback: %w", ue.Op, ue.Err)
	}
	return err
}

// replyTypes are the passive reply message types WeChat accepts.
var replyTypes = []string{"text", "image", "voice", "video", "music", "news", "transfer_customer_service"}

// judge decides what WeChat makes of an attempt's answer and records it in d.
func (p *Platform) judge(a *app, d *Delivery, at Attempt) {
	if at.Status < 200 || at.Status > 299 {
		d.Problem = "HTTP status " + strconv.Itoa(at.Status)
		return
	}
	body := bytes.TrimSpace(at.Body)
	if len(body) == 0 || string(body) == "success" {
		d.Status = StatusAcknowledged
		return
	}
	inner := body
	if bytes.Contains(body, []byte("<Encrypt>")) {
		env, err := wechat.ParseReplyEnvelope(body)
		switch {
		case err != nil:
			d.Problem = "malformed encrypted reply"
			return
		case a.crypter == nil:
			d.Problem = "encrypted reply from an app in plaintext mode"
			return
		}
		plain, err := a.crypter.Decrypt(env.MsgSignature, env.TimeStamp, env.Nonce, env.Encrypt)
		if err != nil {
			d.Problem = "encrypted reply rejected: " + err.Error()
			return
		}
		inner = plain
	} else if a.Mode == Safe {
		d.Problem = "safe mode requires an encrypted reply"
		return
	}
	reply, err := wechat.ParseEvent(inner)
	switch {
	case err != nil:
		d.Problem = "reply is not a WeChat XML message"
	case !slices.Contains(replyTypes, reply.MsgType):
		d.Problem = "reply has an unsupported MsgType"
	case reply.ToUserName != d.Event.FromUserName || reply.FromUserName != d.Event.ToUserName:
		d.Problem = "reply ToUserName/FromUserName do not match the push"
	default:
		d.Status, d.Reply, d.ReplyXML = StatusReplied, reply, inner
	}
}

// deliveryLog keeps the latest maxDeliveriesKept deliveries in a ring, so
// that recording one costs the same however long the platform has run.
type deliveryLog struct {
	ring []Delivery // grows to maxDeliveriesKept, then is overwritten in place
	next int        // where the next delivery goes once the ring is full
}

func (l *deliveryLog) add(d Delivery) {
	if n := len(l.ring); n < maxDeliveriesKept {
		if n == cap(l.ring) {
			// Grow as append would, but never past the limit.
			grown := make([]Delivery, n, min(max(2*n, 16), maxDeliveriesKept))
			copy(grown, l.ring)
			l.ring = grown
		}
		l.ring = append(l.ring, d)
		return
	}
	l.ring[l.next] = d
	l.next = (l.next + 1) % maxDeliveriesKept
}

// each calls f for the kept deliveries, oldest first.
func (l *deliveryLog) each(f func(*Delivery)) {
	n := len(l.ring)
	for i := range n {
		f(&l.ring[(l.next+i)%n])
	}
}

func (p *Platform) record(d *Delivery) {
	c := d.clone() // the log keeps its own copy: the caller owns d
	p.logMu.Lock()
	defer p.logMu.Unlock()
	p.log.add(c)
}

// Deliveries returns copies of the pushes made so far, oldest first (the
// latest 1000).
func (p *Platform) Deliveries() []Delivery {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	out := make([]Delivery, 0, len(p.log.ring))
	p.log.each(func(d *Delivery) { out = append(out, d.clone()) })
	return out
}

// clone returns a copy of d that shares no memory with it.
func (d *Delivery) clone() Delivery {
	c := *d
	c.Body = slices.Clone(d.Body)
	c.ReplyXML = slices.Clone(d.ReplyXML)
	c.Attempts = slices.Clone(d.Attempts)
	for i := range c.Attempts {
		c.Attempts[i].Body = slices.Clone(c.Attempts[i].Body)
	}
	if d.Reply != nil {
		r := *d.Reply
		c.Reply = &r
	}
	return c
}

// VerifyCallback performs WeChat's URL verification handshake against an
// app's callback: a signed GET with an echostr that the server must echo
// back verbatim. It is plaintext in every mode, as for Official Accounts.
func (p *Platform) VerifyCallback(ctx context.Context, appID string) error {
	p.mu.Lock()
	a, err := p.pushTargetLocked(appID)
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("verify callback: %w", err)
	}
	ts := strconv.FormatInt(p.now().Unix(), 10)
	nonce, echo := randDigits(10), randDigits(19)
	target := a.CallbackURL
	if strings.Contains(target, "?") {
		target += "&"
	} else {
		target += "?"
	}
	target += "signature=" + wechat.Signature(a.Token, ts, nonce) + "&echostr=" + echo + "&timestamp=" + ts + "&nonce=" + nonce

	ctx, cancel := context.WithTimeout(ctx, p.pushTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("verify callback: %w", err)
	}
	req.Header.Set("User-Agent", "Mozilla/4.0")
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("verify callback: %w", withoutURL(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return fmt.Errorf("verify callback: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: HTTP status %d", ErrCallbackFailed, resp.StatusCode)
	}
	if string(b) != echo {
		return fmt.Errorf("%w: answer is not the echostr", ErrCallbackFailed)
	}
	return nil
}
