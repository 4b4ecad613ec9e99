package middleware_test

import (
	"fmt"
	"log"
	"net/http"
	"os"

	"github.com/wechat-login/caddy-wechat-login/middleware"
)

// Put WeChat login in front of an application. Requests that reach app carry
// the user's identity; everything under /wechat/ is the middleware's own.
func Example() {
	mw, err := middleware.New(middleware.Config{
		AppID:          os.Getenv("WECHAT_APP_ID"),
		AppSecret:      os.Getenv("WECHAT_APP_SECRET"),
		PushToken:      os.Getenv("WECHAT_TOKEN"),
		EncodingAESKey: os.Getenv("WECHAT_ENCODING_AES_KEY"),
		SessionKeys:    [][]byte{[]byte(os.Getenv("WECHAT_SESSION_KEY"))},
		SiteName:       "Example",
		PublicPaths:    []string{"/static/"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer mw.Close()

	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := middleware.IdentityFromContext(r.Context())
		fmt.Fprintf(w, "Hello, %s (logged in by %s)\n", id.OpenID, id.Method)
	})
	log.Fatal(http.ListenAndServe(":8080", mw.Handler(app)))
}
