package redisstore_test

import (
	"context"
	"log"
	"time"

	"github.com/wechat-login/caddy-wechat-login/middleware/redisstore"
)

// One client shared by the Store and the Notifier of an instance; every
// instance of the cluster points at the same Redis and prefix.
func Example() {
	client, err := redisstore.NewClient("redis://:password@redis.internal:6379/0")
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	st := redisstore.New(client, "wechat_login:")
	defer st.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	notifier, err := redisstore.NewNotifier(ctx, client, "wechat_login:")
	if err != nil {
		log.Fatal(err)
	}
	defer notifier.Close()

	// Give st and notifier to the middleware as its Store and Notifier.
}
