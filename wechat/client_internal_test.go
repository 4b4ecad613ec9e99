package wechat

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode"
)

func TestStripURL(t *testing.T) {
	inner := errors.New("connection refused")
	err := &url.Error{Op: "Get", URL: "https://api.test/sns/oauth2/access_token?secret=S&code=C", Err: &url.Error{Op: "parse", URL: "x?code=C", Err: inner}}
	got := (&callError{"sns/oauth2/access_token", "send request", stripURL(err)}).Error()
	if got != "wechat: sns/oauth2/access_token: send request: connection refused" {
		t.Errorf("got %q", got)
	}
	if stripURL(inner) != inner {
		t.Error("stripURL changed an error that is not a *url.Error")
	}
}

// FuzzDecodeResponse feeds arbitrary bodies through the decoding and the
// validation of every answer type: no panics, errcodes become *Error with
// clean text, and accepted answers satisfy the documented invariants.
func FuzzDecodeResponse(f *testing.F) {
	for _, s := range []string{
		`{"access_token":"ACCESS_TOKEN","expires_in":7200}`,
		`{"errcode":40013,"errmsg":"invalid appid"}`,
		`{"errcode":0,"errmsg":"ok"}`,
		`{"ticket":"gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2taZ2Z3TVRtNzJXV1Brb3ZhYmJJAAIEZ23sUwMEmm3sUw==","expire_seconds":60,"url":"http:\/\/weixin.qq.com\/q\/kZgfwMTm72WWPkovabbI"}`,
		`{"subscribe": 1, "openid": "o6_bmjrPTlm6_2sgVt7hMZOPfL2M", "unionid": " o6_x", "tagid_list":[128,2], "subscribe_time": 1382694957}`,
		`{"access_token":"AT","expires_in":7200,"refresh_token":"RT","openid":"OID","scope":"snsapi_userinfo","is_snapshotuser":1,"unionid":"U"}`,
		`{"openid":"OID","nickname":"n","sex":1,"privilege":["A"],"headimgurl":"https:\/\/x\/0"}`,
		`{"errcode":"40001"}`, `{"errcode":1e400}`, `null`, `[]`, ``, `{"errmsg":"\u0000\n"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		start := time.Unix(1700000000, 0)
		outs := []statusCarrier{&tokenResponse{}, &qrCreateResponse{}, &followerResponse{}, &oauthTokenResponse{}, &userInfoResponse{}, &apiStatus{}}
		for _, out := range outs {
			err := decodeResponse("path/x", body, out)
			var werr *Error
			if errors.As(err, &werr) {
				if werr.Code == 0 || werr.Path != "path/x" {
					t.Fatalf("bad *Error %+v", werr)
				}
				if strings.ContainsFunc(werr.Msg, func(r rune) bool { return !unicode.IsPrint(r) }) {
					t.Fatalf("unclean Msg %q", werr.Msg)
				}
				continue
			}
			if err != nil {
				if !strings.HasPrefix(err.Error(), "wechat: path/x: decode response: ") {
					t.Fatalf("error %q lacks the path", err)
				}
				continue
			}
			if tr, ok := out.(*tokenResponse); ok {
				if tok, err := tr.toToken("p", start); err == nil && (tok.Value == "" || !tok.ExpiresAt.After(start)) {
					t.Fatalf("accepted bad token %+v", tok)
				}
			}
		}
	})
}
