package wechattest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat"
)

func FuzzParseQRRequest(f *testing.F) {
	for _, s := range []string{
		`{"expire_seconds":604800,"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":123}}}`,
		`{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"test"}}}`,
		`{"action_name":"QR_LIMIT_SCENE","action_info":{"scene":{"scene_id":100000}}}`,
		`{"action_name":"QR_LIMIT_STR_SCENE","action_info":{}}`,
		`{"expire_seconds":-5,"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":1e3}}}`,
		`{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"\u0000"}}}`,
		`{'action_name':'QR_SCENE'}`, `null`, `[]`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		tk, ttl, apiErr := parseQRRequest(body)
		if apiErr != nil {
			if apiErr.code != 40052 && apiErr.code != 40053 {
				t.Fatalf("errcode %d", apiErr.code)
			}
			return
		}
		if tk.scene == "" || len(tk.scene) > 64 {
			t.Fatalf("scene %q", tk.scene)
		}
		if tk.permanent != (ttl == 0) || ttl < 0 || ttl > maxQRTTL*time.Second {
			t.Fatalf("permanent %v with ttl %v", tk.permanent, ttl)
		}
		if strings.HasSuffix(tk.action, "_SCENE") && !strings.Contains(tk.action, "STR") && tk.scene != "0" && tk.sceneID == 0 {
			t.Fatalf("numeric scene %q without an id", tk.scene)
		}
	})
}

func FuzzCheckAuthorizeQuery(f *testing.F) {
	for _, s := range []string{
		"appid=wx1&redirect_uri=https%3A%2F%2Fa.example%2Fcb&response_type=code&scope=snsapi_base&state=abc",
		"appid=wx1&redirect_uri=x&response_type=code&scope=snsapi_userinfo&state=a&forcePopup=true",
		"redirect_uri=x&appid=wx1&response_type=code&scope=snsapi_base",
		"appid=wx1&redirect_uri=x&response_type=code&scope=s&state=a;b",
		"appid=%zz", "&&&", "appid=wx1&appid=wx2&redirect_uri=x&response_type=code&scope=s",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		vals, perr := checkAuthorizeQuery(raw)
		if perr != nil {
			return
		}
		keys := queryKeys(raw)
		if len(keys) < 4 || !slices.Equal(keys[:4], authorizeOrder) {
			t.Fatalf("accepted keys %v", keys)
		}
		if vals.Get("response_type") != "code" || !validState(vals.Get("state")) || vals.Get("appid") == "" {
			t.Fatalf("accepted %v", vals)
		}
	})
}

func FuzzStableTokenBody(f *testing.F) {
	for _, s := range []string{
		`{"grant_type":"client_credential","appid":"` + oaID + `","secret":"` + oaSecret + `","force_refresh":false}`,
		`{"grant_type":"client_credential","appid":"` + oaID + `","secret":"` + oaSecret + `","force_refresh":true}`,
		`{"grant_type":"client_credential","appid":"` + oaID + `"}`,
		`{"force_refresh":"true"}`, `grant_type=client_credential`, ``, `{`,
	} {
		f.Add(s)
	}
	p, err := New(Config{})
	if err != nil {
		f.Fatal(err)
	}
	if err := p.AddApp(App{AppID: oaID, AppSecret: oaSecret}); err != nil {
		f.Fatal(err)
	}
	allowed := []int{0, 40002, 40013, 40125, 41002, 41004, 44002, 45009, 47001}
	f.Fuzz(func(t *testing.T, body string) {
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/cgi-bin/stable_token", strings.NewReader(body)))
		if rec.Code != http.StatusOK {
			t.Fatalf("HTTP %d", rec.Code)
		}
		var a struct {
			Errcode     int    `json:"errcode"`
			AccessToken string `json:"access_token"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
			t.Fatalf("not JSON: %s", rec.Body)
		}
		if !slices.Contains(allowed, a.Errcode) || (a.Errcode == 0) == (a.AccessToken == "") {
			t.Fatalf("answer %s", rec.Body)
		}
	})
}

func FuzzJudgeReply(f *testing.F) {
	f.Add(200, []byte("success"))
	f.Add(200, []byte(""))
	f.Add(500, []byte("success"))
	f.Add(200, []byte(`{"errcode":0}`))
	f.Add(200, []byte("<xml><ToUserName><![CDATA[o]]></ToUserName><MsgType><![CDATA[text]]></MsgType></xml>"))
	f.Add(200, []byte("<xml><Encrypt><![CDATA[abc]]></Encrypt><MsgSignature><![CDATA[x]]></MsgSignature><TimeStamp>1</TimeStamp><Nonce><![CDATA[n]]></Nonce></xml>"))
	f.Add(200, []byte("<xml><Encrypt>"))
	cr, err := wechat.NewCrypter(oaToken, oaAESKey, oaID)
	if err != nil {
		f.Fatal(err)
	}
	user := openID(oaID, "alice")
	p := &Platform{}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		for _, a := range []*app{
			{App: App{AppID: oaID, Mode: Plaintext}},
			{App: App{AppID: oaID, Mode: Safe}, crypter: cr},
		} {
			d := &Delivery{Event: wechat.Event{ToUserName: oaGH, FromUserName: user}, Status: StatusUnavailable}
			p.judge(a, d, Attempt{Status: status, Body: body})
			switch d.Status {
			case StatusAcknowledged:
			case StatusReplied:
				if d.Reply == nil || d.Reply.ToUserName != user || d.Reply.FromUserName != oaGH {
					t.Fatalf("replied with %+v", d.Reply)
				}
			case StatusUnavailable:
				if d.Problem == "" {
					t.Fatal("unavailable without a problem")
				}
			default:
				t.Fatalf("status %q", d.Status)
			}
		}
	})
}
