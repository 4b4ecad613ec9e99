package middleware

import (
	"context"
	"time"

	"github.com/wechat-login/caddy-wechat-login/middleware/store"
)

// deadlineStore holds every call to its context: once ctx has ended it starts
// no call, and a call in flight when ctx ends is no longer waited for: the
// caller gets ctx.Err() at once.
//
// Why it exists: a push is processed on its own request's goroutine and must
// be answered before WeChat gives up (pushBudget), so every store call it
// makes has to give up when its context ends. The stores of this module do:
// bigcachestore works in memory and cannot block, and redisstore's clients
// (Open, NewClient) cut a call short at the context's deadline. A Store
// given in Config need not (a wedged connection without deadlines, or a
// client made without ContextTimeoutEnabled), and would hold the answer
// past WeChat's five seconds.
//
// What is guaranteed once ctx has ended: no further call reaches the store,
// and nothing runs on behalf of the caller except the one call that was
// already in flight; the goroutine carrying it delivers its result to a
// buffered channel nobody reads and ends.
//
// What is not: that the call in flight has no effect. The store may still
// apply it, as Redis applies a command whose answer its client stopped
// waiting for; no wrapper can take that back. ctx.Err() from a write means
// "outcome unknown", never "not done", and whoever relies on the write must
// let a retry find out which (confirmScene does, for a scan's transition).
// Arguments, value slices included, must not be changed after a call
// returns, since the call in flight may still read them.
type deadlineStore struct{ store.Store }

// pushStore is the store as every call made for a push sees it.
func (m *Middleware) pushStore() store.Store { return deadlineStore{m.store} }

// untilDone runs call and returns its result, or ctx.Err() as soon as ctx
// ends (see deadlineStore for what that does and does not mean).
func untilDone[T any](ctx context.Context, call func() (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	if ctx.Done() == nil { // a context that never ends
		return call()
	}
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := call()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		select {
		case r := <-done: // finished in the same instant: report what happened
			return r.v, r.err
		default:
			return zero, ctx.Err()
		}
	}
}

func (s deadlineStore) Create(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	_, err := untilDone(ctx, func() (struct{}, error) { return struct{}{}, s.Store.Create(ctx, key, value, ttl) })
	return err
}

func (s deadlineStore) Get(ctx context.Context, key string) ([]byte, error) {
	return untilDone(ctx, func() ([]byte, error) { return s.Store.Get(ctx, key) })
}

func (s deadlineStore) Update(ctx context.Context, key string, old, value []byte) error {
	_, err := untilDone(ctx, func() (struct{}, error) { return struct{}{}, s.Store.Update(ctx, key, old, value) })
	return err
}

func (s deadlineStore) Take(ctx context.Context, key string) ([]byte, error) {
	return untilDone(ctx, func() ([]byte, error) { return s.Store.Take(ctx, key) })
}

func (s deadlineStore) Delete(ctx context.Context, key string) error {
	_, err := untilDone(ctx, func() (struct{}, error) { return struct{}{}, s.Store.Delete(ctx, key) })
	return err
}
