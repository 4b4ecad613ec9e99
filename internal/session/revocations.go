package session

import (
	"context"
	"errors"
	"time"

	"github.com/wechat-login/caddy-wechat-login/middleware/store"
)

// StoreRevocations keeps revocations in a store that every instance shares
// and that evicts nothing early (see store.Durable).
func StoreRevocations(s store.Store, now func() time.Time) Revocations {
	return storeRevocations{s: s, now: now}
}

type storeRevocations struct {
	s   store.Store
	now func() time.Time
}

func revocationKey(id string) string { return "revoked:" + id }

func (r storeRevocations) Revoke(ctx context.Context, id string, until time.Time) error {
	err := r.s.Create(ctx, revocationKey(id), []byte{1}, until.Sub(r.now()))
	if err != nil && !errors.Is(err, store.ErrExists) {
		return err
	}
	return nil
}

func (r storeRevocations) Revoked(ctx context.Context, id string) (bool, error) {
	_, err := r.s.Get(ctx, revocationKey(id))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	}
	return false, err
}

// List is a list of revocations kept in this process (and perhaps a file),
// which answers at once.
type List interface {
	Revoke(id string, until time.Time) error
	Revoked(id string) bool
}

// ListRevocations keeps revocations in l.
func ListRevocations(l List) Revocations { return listRevocations{l} }

type listRevocations struct{ l List }

func (r listRevocations) Revoke(_ context.Context, id string, until time.Time) error {
	return r.l.Revoke(id, until)
}

func (r listRevocations) Revoked(_ context.Context, id string) (bool, error) {
	return r.l.Revoked(id), nil
}
