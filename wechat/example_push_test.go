package wechat_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// A plaintext push (the captured subscribe through a parametric QR code,
// token GreedIsGood) passes; the same URL with a signature for another token
// does not. A handler answers a refusal with the error's Status and Reason
// and counts it under its Kind.
func ExamplePushVerifier_Verify() {
	v := &wechat.PushVerifier{
		Token:  "GreedIsGood",
		MaxAge: 5 * time.Minute,
		Now:    func() time.Time { return time.Unix(1670592450, 0) },
	}
	const query = "signature=eef9a7798349ab9473dc8ea661ccabc3ed47778d&timestamp=1670592443&nonce=1078156260&openid=ooUo26seZPcU3qKfcMiXLneG3fO4"
	body := "<xml><ToUserName><![CDATA[gh_de0f036ce08f]]></ToUserName>\n" +
		"<FromUserName><![CDATA[ooUo26seZPcU3qKfcMiXLneG3fO4]]></FromUserName>\n" +
		"<CreateTime>1670592443</CreateTime>\n" +
		"<MsgType><![CDATA[event]]></MsgType>\n" +
		"<Event><![CDATA[subscribe]]></Event>\n" +
		"<EventKey><![CDATA[qrscene_110]]></EventKey>\n" +
		"</xml>"

	r := httptest.NewRequest(http.MethodPost, "/callback?"+query, strings.NewReader(body))
	push, err := v.Verify(r)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(push.Event.Kind(), push.Event.EventKey, push.Encrypted())

	forged := strings.Replace(query, "eef9a7798349ab9473dc8ea661ccabc3ed47778d", wechat.Signature("guess", "1670592443", "1078156260"), 1)
	_, err = v.Verify(httptest.NewRequest(http.MethodPost, "/callback?"+forged, strings.NewReader(body)))
	var refused *wechat.PushError
	if errors.As(err, &refused) {
		fmt.Println(refused.Status, refused.Kind, refused.Reason)
	}
	// Output:
	// subscribe qrscene_110 false
	// 403 signature bad signature
}
