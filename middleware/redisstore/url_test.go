package redisstore

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Secrets the URLs of these tests carry; no error may quote them.
const (
	testPassword         = "hunter2"
	testSentinelPassword = "s3cret"
)

func TestParseSentinelURL(t *testing.T) {
	tests := []struct {
		name      string
		url       string
		addrs     []string
		db        int
		user      string
		pass      string
		sUser     string
		sPass     string
		tls       bool
		dial      time.Duration
		wantRetry int
	}{
		{
			name:  "one sentinel, default port",
			url:   "redis-sentinel://sentinel.internal?master_name=mymaster",
			addrs: []string{"sentinel.internal:26379"},
			dial:  urlDialTimeout, wantRetry: urlMaxRetries,
		},
		{
			name:  "three sentinels, password, db",
			url:   "redis-sentinel://:" + testPassword + "@10.0.0.1:26379,10.0.0.2,[::1]:26380/2?master_name=mymaster",
			addrs: []string{"10.0.0.1:26379", "10.0.0.2:26379", "[::1]:26380"},
			db:    2, pass: testPassword,
			dial: urlDialTimeout, wantRetry: urlMaxRetries,
		},
		{
			name:  "ACL user and Sentinel credentials",
			url:   "redis-sentinel://app:" + testPassword + "@h1:1,h2:2/0?master_name=m&sentinel_username=watch&sentinel_password=" + testSentinelPassword,
			addrs: []string{"h1:1", "h2:2"},
			user:  "app", pass: testPassword, sUser: "watch", sPass: testSentinelPassword,
			dial: urlDialTimeout, wantRetry: urlMaxRetries,
		},
		{
			name:  "TLS and go-redis options",
			url:   "rediss-sentinel://h1,h2?master_name=m&dial_timeout=3s&max_retries=2&addr=h3:26381",
			addrs: []string{"h1:26379", "h3:26381", "h2:26379"},
			tls:   true, dial: 3 * time.Second, wantRetry: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseURL(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			f := o.failover
			if f == nil {
				t.Fatalf("parsed as %+v, want Sentinel options", o)
			}
			if strings.Join(sortedCopy(f.SentinelAddrs), " ") != strings.Join(sortedCopy(tc.addrs), " ") {
				t.Errorf("Sentinels %q, want %q", f.SentinelAddrs, tc.addrs)
			}
			if f.MasterName == "" || f.DB != tc.db || f.Username != tc.user || f.Password != tc.pass ||
				f.SentinelUsername != tc.sUser || f.SentinelPassword != tc.sPass || (f.TLSConfig != nil) != tc.tls {
				t.Errorf("master %q db %d user %q password %q sentinel user %q password %q TLS %v",
					f.MasterName, f.DB, f.Username, f.Password, f.SentinelUsername, f.SentinelPassword, f.TLSConfig != nil)
			}
			if f.TLSConfig != nil && f.TLSConfig.ServerName != "" {
				t.Errorf("TLS server name %q; want none, so that each host is checked under its own name", f.TLSConfig.ServerName)
			}
			if f.DialTimeout != tc.dial || f.ReadTimeout != urlReadTimeout || f.MaxRetries != tc.wantRetry || !f.ContextTimeoutEnabled {
				t.Errorf("dial %s read %s retries %d context %v", f.DialTimeout, f.ReadTimeout, f.MaxRetries, f.ContextTimeoutEnabled)
			}
		})
	}
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// TestParseWait: how many replicas a write waits for, and how long.
func TestParseWait(t *testing.T) {
	for _, tc := range []struct {
		url     string
		n       int
		timeout time.Duration
	}{
		{"redis-sentinel://h?master_name=m", 1, urlReadTimeout / 2},
		{"redis-sentinel://h?master_name=m&wait_replicas=0", 0, urlReadTimeout / 2},
		{"redis-sentinel://h?master_name=m&wait_replicas=2&wait_timeout=200ms", 2, 200 * time.Millisecond},
		{"redis-sentinel://h?master_name=m&read_timeout=3s", 1, 1500 * time.Millisecond},
		{"redis://h/0", 0, urlReadTimeout / 2},
		{"redis://:" + testPassword + "@h/0?wait_replicas=1&wait_timeout=50ms&dial_timeout=2s", 1, 50 * time.Millisecond},
		{"redis-cluster://h1,h2", 0, 0},
	} {
		o, err := parseURL(tc.url)
		if err != nil {
			t.Fatalf("%s: %v", tc.url, err)
		}
		if o.waitReplicas != tc.n || (tc.n > 0 && o.waitTimeout != tc.timeout) {
			t.Errorf("%s: wait for %d replicas for %s; want %d for %s", tc.url, o.waitReplicas, o.waitTimeout, tc.n, tc.timeout)
		}
	}
	// Taking the wait parameters out leaves the others to go-redis.
	o, err := parseURL("redis://:" + testPassword + "@h/3?wait_replicas=1&dial_timeout=2s")
	if err != nil {
		t.Fatal(err)
	}
	if o.single.Password != testPassword || o.single.DB != 3 || o.single.DialTimeout != 2*time.Second {
		t.Errorf("password %q, db %d, dial timeout %s; want %q, 3, 2s", o.single.Password, o.single.DB, o.single.DialTimeout, testPassword)
	}
}

func TestParseClusterURL(t *testing.T) {
	tests := []struct {
		name  string
		url   string
		addrs []string
		user  string
		pass  string
		tls   bool
		read  time.Duration
	}{
		{
			name:  "three nodes with a password",
			url:   "redis-cluster://:" + testPassword + "@10.0.0.1:7000,10.0.0.2:7001,10.0.0.3",
			addrs: []string{"10.0.0.1:7000", "10.0.0.2:7001", "10.0.0.3:6379"},
			pass:  testPassword, read: urlReadTimeout,
		},
		{
			name:  "one seed node, database 0",
			url:   "redis-cluster://node.internal:7000/0",
			addrs: []string{"node.internal:7000"},
			read:  urlReadTimeout,
		},
		{
			name:  "TLS, ACL user, options",
			url:   "rediss-cluster://app:" + testPassword + "@h1:7000,h2:7000/?read_timeout=2s",
			addrs: []string{"h1:7000", "h2:7000"},
			user:  "app", pass: testPassword, tls: true, read: 2 * time.Second,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseURL(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			c := o.cluster
			if c == nil {
				t.Fatalf("parsed as %+v, want Cluster options", o)
			}
			if strings.Join(sortedCopy(c.Addrs), " ") != strings.Join(sortedCopy(tc.addrs), " ") {
				t.Errorf("nodes %q, want %q", c.Addrs, tc.addrs)
			}
			if c.Username != tc.user || c.Password != tc.pass || (c.TLSConfig != nil) != tc.tls {
				t.Errorf("user %q password %q TLS %v", c.Username, c.Password, c.TLSConfig != nil)
			}
			if c.TLSConfig != nil && c.TLSConfig.ServerName != "" {
				t.Errorf("TLS server name %q; want none, so that each node is checked under its own name", c.TLSConfig.ServerName)
			}
			if c.ReadTimeout != tc.read || c.DialTimeout != urlDialTimeout || c.DialerRetries != urlDialerRetries || !c.ContextTimeoutEnabled {
				t.Errorf("read %s dial %s dialer retries %d context %v", c.ReadTimeout, c.DialTimeout, c.DialerRetries, c.ContextTimeoutEnabled)
			}
		})
	}
}

func TestParseURLErrors(t *testing.T) {
	pw := ":" + testPassword + "@"
	tests := []struct {
		url  string
		want string // in the error
	}{
		{"redis-sentinel://" + pw + "h1,h2/0", "master_name"},
		{"redis-sentinel://" + pw + "h1?master_name=m&password=" + testPassword, "user info"},
		{"redis-sentinel://h1?master_name=m&username=u", "user info"},
		{"redis-sentinel://" + pw + "/0?master_name=m", "no host"},
		{"redis-sentinel://" + pw + "h1,,h2?master_name=m", "empty host"},
		{"redis-sentinel://" + pw + "h1:99999?master_name=m", "host 1"},
		{"redis-sentinel://" + pw + "h1,::1?master_name=m", "host 2"},
		{"redis-sentinel://" + pw + "h1/0/1?master_name=m", "path"},
		{"redis-sentinel://" + pw + "h1?master_name=m&bogus=1", "bogus"},
		{"redis-sentinel://" + pw + "h1?master_name=m#frag", "fragment"},
		{"redis-cluster://" + pw + "h1,h2/3", "database 0"},
		{"redis-cluster://" + pw + "h1?nope=1", "nope"},
		{"redis-cluster://" + pw + "h1?dial_timeout=" + testPassword, "not quoted"},
		{"redis://" + pw + "h1?master_name=m", "redis-sentinel://"},
		{"redis://" + pw + "h1?addr=h2:6379", "redis-cluster://"},
		{"redis://" + pw + "h1/x", "database"},
		{"sentinel://" + pw + "h1", "unknown scheme"},
		{testPassword, "no scheme"},
		{"redis://" + pw + "h1:port/0", "not a URL"},
		{"redis-sentinel://" + pw + "h1?master_name=m&wait_replicas=-1", "wait_replicas"},
		{"redis-sentinel://" + pw + "h1?master_name=m&wait_replicas=x", "wait_replicas"},
		{"redis://" + pw + "h1?wait_timeout=1s", "shorter than read_timeout"},
		{"redis://" + pw + "h1?wait_timeout=0", "wait_timeout"},
		{"redis-sentinel://" + pw + "h1?master_name=m&read_timeout=200ms&wait_timeout=300ms", "shorter than read_timeout"},
		{"redis-cluster://" + pw + "h1?wait_replicas=1", "not supported"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			_, err := parseURL(tc.url)
			if err == nil {
				t.Fatalf("parsed %q", tc.url)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if strings.Contains(err.Error(), testPassword) || strings.Contains(err.Error(), testSentinelPassword) {
				t.Errorf("error quotes a password: %v", err)
			}
			// Open and NewClient fail alike.
			if s, err := Open(tc.url, ""); err == nil {
				_ = s.Close()
				t.Errorf("Open(%q) succeeded", tc.url)
			}
		})
	}
}

// TestNewClientKinds: each URL form gets the client that speaks to it.
func TestNewClientKinds(t *testing.T) {
	for url, want := range map[string]string{
		"redis://127.0.0.1:6379/0":                           "*redis.Client",
		"unix:///run/redis.sock?db=1":                        "*redis.Client",
		"redis-sentinel://127.0.0.1:26379/0?master_name=m":   "*redis.Client",
		"redis-cluster://127.0.0.1:7000,127.0.0.1:7001":      "*redis.ClusterClient",
		"rediss-cluster://127.0.0.1:7000?dial_timeout=250ms": "*redis.ClusterClient",
	} {
		c, err := NewUniversalClient(url)
		if err != nil {
			t.Fatalf("NewUniversalClient(%q): %v", url, err)
		}
		var got string
		switch c.(type) {
		case *redis.Client:
			got = "*redis.Client"
		case *redis.ClusterClient:
			got = "*redis.ClusterClient"
		}
		if got != want {
			t.Errorf("NewUniversalClient(%q) is a %T, want %s", url, c, want)
		}
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		// NewClient gives the same, or says it cannot.
		nc, err := NewClient(url)
		switch {
		case want == "*redis.Client" && err != nil:
			t.Errorf("NewClient(%q): %v", url, err)
		case want == "*redis.Client":
			_ = nc.Close()
		case err == nil || !strings.Contains(err.Error(), "NewUniversalClient"):
			t.Errorf("NewClient(%q) = %v, want an error naming NewUniversalClient", url, err)
		}
	}
}

// TestParseURLProtocol: RESP2 unless the URL asks for RESP3, for each
// kind of URL.
func TestParseURLProtocol(t *testing.T) {
	protocol := func(o options) int {
		switch {
		case o.single != nil:
			return o.single.Protocol
		case o.failover != nil:
			return o.failover.Protocol
		default:
			return o.cluster.Protocol
		}
	}
	for _, base := range []string{"redis://h1/0", "redis-sentinel://h1,h2/0?master_name=m", "redis-cluster://h1,h2"} {
		for query, want := range map[string]int{"": 2, "protocol=3": 3, "protocol=2": 2} {
			url := base
			if query != "" {
				url += map[bool]string{true: "&", false: "?"}[strings.Contains(base, "?")] + query
			}
			o, err := parseURL(url)
			if err != nil {
				t.Fatalf("%s: %v", url, err)
			}
			if got := protocol(o); got != want {
				t.Errorf("%s: protocol %d, want %d", url, got, want)
			}
		}
	}
}
