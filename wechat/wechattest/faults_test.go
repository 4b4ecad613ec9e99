package wechattest

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestFailNext(t *testing.T) {
	s := newPlatformServer(t, Config{}, "", Plaintext)
	tokenURL := s.URL + "/cgi-bin/token?grant_type=client_credential&appid=" + oaID + "&secret=" + oaSecret

	s.FailNext("/cgi-bin/token", 2, Fault{Errcode: -1})
	s.FailNext("/cgi-bin/token", 1, Fault{Errcode: 45011, Errmsg: "api minute-quota reach limit, must slower, retry next minute"})
	wantErrcode(t, get(t, tokenURL), -1)
	wantErrcode(t, get(t, tokenURL), -1)
	a := get(t, tokenURL)
	wantErrcode(t, a, 45011)
	if !strings.HasPrefix(a.str("errmsg"), "api minute-quota reach limit") {
		t.Errorf("errmsg %q", a.str("errmsg"))
	}
	wantErrcode(t, get(t, tokenURL), 0)
	if n := s.Calls("/cgi-bin/token"); n != 4 {
		t.Errorf("Calls = %d, want 4", n)
	}

	// Faults are per path.
	s.FailNext("/sns/auth", 1, Fault{Errcode: 40001})
	wantErrcode(t, get(t, tokenURL), 0)

	// n <= 0 clears.
	s.FailNext("/sns/auth", 0, Fault{})
	wantErrcode(t, get(t, s.URL+"/sns/auth"), 41001)

	s.FailNext("/cgi-bin/token", 1, Fault{HTTPStatus: http.StatusBadGateway})
	resp, err := http.Get(tokenURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d", resp.StatusCode)
	}

	// A fresh connection, so that the client does not transparently retry
	// the request as it may on a reused one.
	s.FailNext("/cgi-bin/token", 1, Fault{Drop: true})
	before := s.Calls("/cgi-bin/token")
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, err := fresh.Get(tokenURL); err == nil {
		resp.Body.Close()
		t.Fatal("dropped connection answered")
	}
	if n := s.Calls("/cgi-bin/token") - before; n != 1 {
		t.Fatalf("%d calls for one dropped request", n)
	}
	wantErrcode(t, get(t, tokenURL), 0)
}

func TestFaultDelayAndLatency(t *testing.T) {
	s := newPlatformServer(t, Config{}, "", Plaintext)
	tokenURL := s.URL + "/cgi-bin/token?grant_type=client_credential&appid=" + oaID + "&secret=" + oaSecret

	s.FailNext("/cgi-bin/token", 1, Fault{Delay: 80 * time.Millisecond})
	start := time.Now()
	wantErrcode(t, get(t, tokenURL), 0)
	if d := time.Since(start); d < 80*time.Millisecond {
		t.Errorf("delayed call took %v", d)
	}

	// A client that gives up first gets nothing.
	s.SetLatency("/cgi-bin/token", time.Second)
	client := &http.Client{Timeout: 50 * time.Millisecond}
	start = time.Now()
	if resp, err := client.Get(tokenURL); err == nil {
		resp.Body.Close()
		t.Fatal("slow call answered within the client's timeout")
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("timeout took %v", d)
	}
	s.SetLatency("/cgi-bin/token", 0)
	start = time.Now()
	wantErrcode(t, get(t, tokenURL), 0)
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("latency not removed: %v", d)
	}
}

// TestConcurrentUse runs every kind of call at once; it is meant for -race.
func TestConcurrentUse(t *testing.T) {
	cb := newCallback(t, nil)
	s := newPlatformServer(t, Config{}, cb.URL, Safe)
	s.SetOAuthUser("alice")
	tok := fetchStable(t, s, false).str("access_token")
	ticket := createQR(t, s, tok, `{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"c"}}}`).str("ticket")

	// Goroutines report with t.Error: t.Fatal must stay on the test's own.
	check := func(a apiAnswer, err error) apiAnswer {
		if err != nil {
			t.Error(err)
		} else if a.errcode() != 0 {
			t.Errorf("errcode %d", a.errcode())
		}
		return a
	}
	tokenURL := s.URL + "/cgi-bin/token?grant_type=client_credential&appid=" + oaID + "&secret=" + oaSecret
	stableBody := `{"grant_type":"client_credential","appid":"` + oaID + `","secret":"` + oaSecret + `"}`
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 5 {
				check(callE(http.MethodGet, tokenURL, ""))
				check(callE(http.MethodPost, s.URL+"/cgi-bin/stable_token", stableBody))
				check(callE(http.MethodPost, s.URL+"/cgi-bin/qrcode/create?access_token="+url.QueryEscape(tok),
					`{"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":9}}}`))
				resp, err := noRedirect.Get(authorizeURL(s, "snsapi_base", "c"))
				if err != nil {
					t.Error(err)
					continue
				}
				resp.Body.Close()
				loc, _ := url.Parse(resp.Header.Get("Location"))
				check(callE(http.MethodGet, s.URL+"/sns/oauth2/access_token?appid="+oaID+"&secret="+oaSecret+
					"&code="+loc.Query().Get("code")+"&grant_type=authorization_code", ""))
				user := []string{"alice", "bob"}[i%2]
				if _, err := s.Scan(context.Background(), oaID, ticket, user); err != nil {
					t.Error(err)
				}
				s.FailNext("/sns/auth", 1, Fault{Errcode: -1})
				s.SetLatency("/nothing", time.Millisecond)
				s.Advance(time.Millisecond)
				_ = s.Calls("/cgi-bin/token")
				_ = s.Deliveries()
				_ = s.Users()
			}
		})
	}
	wg.Wait()
	if n := len(s.Deliveries()); n != 40 {
		t.Errorf("%d deliveries, want 40", n)
	}
}

// TestDelayedPostEndsWithItsClient: a client that gives up on a delayed
// POST frees the server at once, so Close does not wait out the delay.
func TestDelayedPostEndsWithItsClient(t *testing.T) {
	srv := NewServer(Config{})
	srv.FailNext("/cgi-bin/stable_token", 1, Fault{Delay: 10 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/cgi-bin/stable_token",
		strings.NewReader(`{"grant_type":"client_credential","appid":"x","secret":"y"}`))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("the delayed call answered before its delay")
	}
	start := time.Now()
	srv.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close waited %v for a request whose client had gone", d)
	}
}
