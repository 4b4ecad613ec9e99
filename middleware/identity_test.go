package middleware

import (
	"context"
	"net/http"
	"reflect"
	"testing"
)

type otherKey struct{}

// TestIdentityContext: the identity is found on the context
// ContextWithIdentity returns and on any context derived from it, the
// parent's values stay visible, and cancelling the parent still reaches
// children.
func TestIdentityContext(t *testing.T) {
	want := Identity{AppID: testAppID, OpenID: "oAlice", UnionID: "uAlice", Method: MethodQR, Nickname: "Alice"}
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), otherKey{}, "kept"))
	ctx := ContextWithIdentity(parent, want)
	child, cancelChild := context.WithCancel(context.WithValue(ctx, otherKey{}, "shadow"))
	defer cancelChild()
	for name, c := range map[string]context.Context{"direct": ctx, "derived": child} {
		if got, ok := IdentityFromContext(c); !ok || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: IdentityFromContext = %+v, %v", name, got, ok)
		}
	}
	if v := ctx.Value(otherKey{}); v != "kept" {
		t.Errorf("parent's value through the identity context: %v", v)
	}
	if _, ok := IdentityFromContext(parent); ok {
		t.Error("identity on the parent")
	}
	if _, ok := IdentityFromContext(context.Background()); ok {
		t.Error("identity on Background")
	}
	// A copy, not the context's own: changing it changes nothing.
	got, _ := IdentityFromContext(ctx)
	got.OpenID = "changed"
	if again, _ := IdentityFromContext(child); again.OpenID != "oAlice" {
		t.Errorf("identity changed through a copy: %q", again.OpenID)
	}
	cancel()
	<-child.Done()
	if ctx.Err() == nil || child.Err() == nil {
		t.Error("cancellation did not reach the identity context and its child")
	}
}

// TestIdentityHeadersAsSet: the identity and user headers are exactly what
// http.Header.Set would make of them, each value its own slice.
func TestIdentityHeadersAsSet(t *testing.T) {
	for _, tc := range []struct {
		name        string
		userHeaders bool
		userID      string
		id          Identity
	}{
		{"plain", false, "", Identity{AppID: testAppID, OpenID: "oA", Method: MethodQR}},
		{"unionid", false, "", Identity{AppID: testAppID, OpenID: "oA", UnionID: "uA", Method: MethodOAuth}},
		{"user headers", true, "openid", Identity{AppID: testAppID, OpenID: "oA", UnionID: "uA", Method: MethodCode}},
		{"user headers by unionid", true, "unionid", Identity{AppID: testAppID, OpenID: "oA", UnionID: "uA", Method: MethodOpen}},
		{"no unionid for the user headers", true, "unionid", Identity{AppID: testAppID, OpenID: "oA", Method: MethodQR}},
	} {
		m := &Middleware{cfg: Config{UserHeaders: tc.userHeaders, UserID: tc.userID}}
		want := http.Header{"Accept": {"*/*"}}
		want.Set(HeaderOpenID, tc.id.OpenID)
		want.Set(HeaderAppID, tc.id.AppID)
		want.Set(HeaderLoginMethod, tc.id.Method)
		if tc.id.UnionID != "" {
			want.Set(HeaderUnionID, tc.id.UnionID)
		}
		user := tc.id.OpenID
		if tc.userID == "unionid" {
			user = tc.id.UnionID
		}
		if tc.userHeaders && user != "" {
			want.Set(HeaderForwardedUser, user)
			want.Set(HeaderAuthRequestUser, user)
			want.Set(HeaderRemoteUser, user)
		}
		got := http.Header{"Accept": {"*/*"}, "X_wechat_openid": {"forged"}, "Remote_User": {"forged"}}
		m.setIdentityHeaders(got, tc.id)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %v\nwant %v", tc.name, got, want)
		}
		for k := range got {
			got.Add(k, "more")
		}
		for k, v := range got {
			if len(v) != 2 || v[1] != "more" || v[0] != want.Get(k) {
				t.Errorf("%s: after adding to every header, %s is %q", tc.name, k, v)
			}
		}
	}
}

// identifiedRecorder is a next handler that takes identities directly.
type identifiedRecorder struct {
	plain, identified int
	id                Identity
	header            http.Header
	ctxHasID          bool
}

func (h *identifiedRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.plain++
	_, h.ctxHasID = IdentityFromContext(r.Context())
}

func (h *identifiedRecorder) ServeIdentified(w http.ResponseWriter, r *http.Request, id Identity) {
	h.identified++
	h.id, h.header = id, r.Header.Clone()
	_, h.ctxHasID = IdentityFromContext(r.Context())
}

// TestIdentifiedHandler: a next handler that is an IdentifiedHandler gets a
// request with a session through ServeIdentified, with its identity and the
// identity headers (client-sent ones replaced), and a public path's request
// through ServeHTTP, without an identity.
func TestIdentifiedHandler(t *testing.T) {
	cfg := validConfig()
	cfg.PublicPaths = []string{"/public"}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	value := issueTestSession(t, m, "oAlice0000000000000000000001")
	next := &identifiedRecorder{}

	r := cookieRequest(value)
	r.Header.Set(HeaderOpenID, "forged")
	w := &recorder{header: http.Header{}}
	m.ServeNext(w, r, next)
	if next.identified != 1 || next.plain != 0 {
		t.Fatalf("with a session: ServeIdentified %d times, ServeHTTP %d times", next.identified, next.plain)
	}
	if next.id.OpenID != "oAlice0000000000000000000001" || next.id.AppID != testAppID || next.header.Get(HeaderOpenID) != next.id.OpenID {
		t.Errorf("identity %+v, header %q", next.id, next.header.Get(HeaderOpenID))
	}
	if next.ctxHasID {
		t.Error("identity also put on a copy of the request's context")
	}

	r = cookieRequest(value)
	r.URL.Path = "/public/x"
	m.ServeNext(&recorder{header: http.Header{}}, r, next)
	if next.plain != 1 || next.identified != 1 || next.ctxHasID {
		t.Errorf("public path: ServeHTTP %d times, ServeIdentified %d times, identity on the context %v", next.plain, next.identified, next.ctxHasID)
	}
}
