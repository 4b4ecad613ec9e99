package redisstore_test

import (
	"log"

	"github.com/wechat-login/caddy-wechat-login/middleware"
	"github.com/wechat-login/caddy-wechat-login/middleware/redisstore"
)

// Every instance of a cluster opens the same Redis with the same prefix and
// gives the Store to the middleware: it keeps the login state, the logouts
// and the notifications that wake a browser waiting on another instance.
// Opening makes no connection; the first request does.
func Example() {
	st, err := redisstore.Open("redis://:password@redis.internal:6379/0", "wechat_login:")
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()

	mw, err := middleware.New(middleware.Config{
		AppID:       "wx0123456789abcdef",
		AppSecret:   "the-app-secret",
		PushToken:   "pushtoken",
		SessionKeys: [][]byte{[]byte("at-least-32-bytes-of-secret-randomness")},
		Store:       st,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer mw.Close()
	// http.ListenAndServe(":8080", mw.Handler(app))
}
