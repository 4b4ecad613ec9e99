package redisstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The URL forms Open and NewUniversalClient accept. The Sentinel and Cluster forms
// have schemes of their own, rather than go-redis's redis://...?addr=
// forms, for two reasons: a cluster reached through one seed address
// cannot be told apart from a single server by its URL, and in go-redis's
// Sentinel form the password in the user info is the Sentinels' and not
// Redis's, the reverse of what it means in every other redis:// URL.
// Everything after the "?" is go-redis's own options, documented at
// redis.ParseURL, redis.ParseFailoverURL and redis.ParseClusterURL.
const (
	schemeRedis     = "redis"
	schemeRedisTLS  = "rediss"
	schemeUnix      = "unix"
	schemeSentinel  = "redis-sentinel"
	schemeSentinelS = "rediss-sentinel"
	schemeCluster   = "redis-cluster"
	schemeClusterS  = "rediss-cluster"
)

// Default ports of the hosts in a host list that name none.
const (
	defaultRedisPort    = "6379"
	defaultSentinelPort = "26379"
)

// urlForms is the usage quoted by every URL error.
const urlForms = "want redis://[[user]:password@]host[:port][/db], rediss://..., unix://..., " +
	"redis-sentinel://[[user]:password@]host[:port][,host[:port]...][/db]?master_name=<name> or " +
	"redis-cluster://[[user]:password@]host[:port][,host[:port]...] (rediss-sentinel://, rediss-cluster:// for TLS)"

// Query parameters that Open handles itself: for the Sentinel form, the
// Sentinels' own credentials, which go-redis takes only from the user
// info; for every form but Cluster, how many replicas must acknowledge a
// write (Redis's WAIT) before the Store reports it done, and for how long
// to wait for them.
const (
	paramSentinelUser     = "sentinel_username"
	paramSentinelPassword = "sentinel_password"
	paramWaitReplicas     = "wait_replicas"
	paramWaitTimeout      = "wait_timeout"
)

// Defaults of wait_replicas: with Sentinel, a failover promotes a replica,
// and a write only the old primary had would be lost with it, so a write
// counts as done once one replica has it; a lone server has no replica to
// wait for. maxWaitReplicas bounds the parameter to a sane count.
const (
	defaultSentinelWaitReplicas = 1
	maxWaitReplicas             = 16
)

// urlError returns an error about a Redis URL that names what is wrong
// and never includes the URL, which may hold a password.
func urlError(format string, args ...any) error {
	return fmt.Errorf("redisstore: invalid Redis URL: "+format+" ("+urlForms+")", args...)
}

// options is what a URL selects: exactly one of the three client
// options is set.
type options struct {
	single   *redis.Options
	failover *redis.FailoverOptions
	cluster  *redis.ClusterOptions

	// waitReplicas is how many replicas must acknowledge each write
	// within waitTimeout; zero for none.
	waitReplicas int
	waitTimeout  time.Duration
}

// moveWait removes wait_replicas and wait_timeout from q and returns them.
func moveWait(q url.Values) url.Values {
	moved := url.Values{}
	for _, p := range []string{paramWaitReplicas, paramWaitTimeout} {
		if q.Has(p) {
			moved[p] = q[p]
			q.Del(p)
		}
	}
	return moved
}

// takeWait parses wait_replicas and wait_timeout from q, wait_replicas
// defaulting to defReplicas and wait_timeout to half of
// readTimeout, which it must be shorter than: WAIT's answer has to arrive
// before the client gives up reading it.
func takeWait(q url.Values, defReplicas int, readTimeout time.Duration) (int, time.Duration, error) {
	n, timeout := defReplicas, readTimeout/2
	if readTimeout <= 0 {
		timeout = urlReadTimeout / 2
	}
	if q.Has(paramWaitReplicas) {
		v, err := strconv.Atoi(q.Get(paramWaitReplicas))
		if err != nil || v < 0 || v > maxWaitReplicas {
			return 0, 0, urlError("wait_replicas is not a number from 0 to %d", maxWaitReplicas)
		}
		n = v
	}
	if q.Has(paramWaitTimeout) {
		d, err := time.ParseDuration(q.Get(paramWaitTimeout))
		if err != nil || d < time.Millisecond {
			return 0, 0, urlError("wait_timeout is not a duration of at least 1ms")
		}
		if readTimeout > 0 && d >= readTimeout {
			return 0, 0, urlError("wait_timeout must be shorter than read_timeout (%s)", readTimeout)
		}
		timeout = d
	}
	q.Del(paramWaitReplicas)
	q.Del(paramWaitTimeout)
	return n, timeout, nil
}

// parseURL parses rawURL into client options, with Open's fail-fast
// settings wherever the URL leaves them unset. Errors never include the
// password: go-redis's messages are passed on only when they do not
// contain a secret of the URL.
func parseURL(rawURL string) (options, error) {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return options{}, urlError("no scheme")
	}
	switch strings.ToLower(scheme) {
	case schemeRedis, schemeRedisTLS, schemeUnix:
		return parseSingle(rawURL)
	case schemeSentinel, schemeSentinelS:
		return parseSentinel(strings.TrimSuffix(strings.ToLower(scheme), "-sentinel"), rest)
	case schemeCluster, schemeClusterS:
		return parseCluster(strings.TrimSuffix(strings.ToLower(scheme), "-cluster"), rest)
	}
	return options{}, urlError("unknown scheme")
}

func parseSingle(rawURL string) (options, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url's errors quote the whole URL.
		return options{}, urlError("not a URL")
	}
	q := u.Query()
	switch {
	case q.Has("master_name"):
		return options{}, urlError("master_name is for Sentinel: use redis-sentinel://")
	case q.Has("addr"):
		return options{}, urlError("several addresses are for Sentinel or Cluster: use redis-sentinel:// or redis-cluster://")
	}
	// go-redis rejects parameters it does not know.
	waitQuery := moveWait(q)
	if len(waitQuery) > 0 {
		u.RawQuery = q.Encode()
		rawURL = u.String()
	}
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return options{}, goRedisError(err, u)
	}
	urlDefaults(&opt.DialTimeout, &opt.ReadTimeout, &opt.WriteTimeout, &opt.PoolTimeout, &opt.DialerRetries, &opt.Protocol)
	if opt.MaxRetries == 0 {
		opt.MaxRetries = urlMaxRetries
	}
	// Let a caller's deadline cut a call short too.
	opt.ContextTimeoutEnabled = true
	n, timeout, err := takeWait(waitQuery, 0, opt.ReadTimeout)
	if err != nil {
		return options{}, err
	}
	return options{single: opt, waitReplicas: n, waitTimeout: timeout}, nil
}

// hostList splits the part of a URL after "://" into its user info, its
// comma-separated hosts (each given defaultPort if it names none) and the
// rest: the path, query and fragment.
func hostList(rest, defaultPort string) (userinfo string, hosts []string, tail string, err error) {
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		userinfo, authority = authority[:i+1], authority[i+1:]
	}
	if authority == "" {
		return "", nil, "", urlError("no host")
	}
	for h := range strings.SplitSeq(authority, ",") {
		if h == "" {
			return "", nil, "", urlError("empty host in the host list")
		}
		addr, ok := hostPort(h, defaultPort)
		if !ok {
			return "", nil, "", urlError("host %d of the host list is not host[:port]", len(hosts)+1)
		}
		hosts = append(hosts, addr)
	}
	return userinfo, hosts, tail, nil
}

// hostPort returns h as host:port, with defaultPort if h names none. An
// IPv6 address must be in brackets, as in any URL.
func hostPort(h, defaultPort string) (string, bool) {
	host, port := h, defaultPort
	switch {
	case strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]"):
		host = h[1 : len(h)-1]
	case strings.Contains(h, ":"):
		var err error
		if host, port, err = net.SplitHostPort(h); err != nil {
			return "", false
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", false
	}
	if host == "" || strings.ContainsAny(host, "[]/@?#%") {
		return "", false
	}
	return net.JoinHostPort(host, port), true
}

// parseMulti parses a Sentinel or Cluster URL, given as its base scheme
// (redis or rediss) and the part after "://", into a go-redis URL with the
// first host as its host and the others as addr parameters.
func parseMulti(base, rest, defaultPort string) (*url.URL, error) {
	userinfo, hosts, tail, err := hostList(rest, defaultPort)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(base + "://" + userinfo + hosts[0] + tail)
	if err != nil {
		return nil, urlError("not a URL")
	}
	if u.Fragment != "" {
		return nil, urlError("unexpected fragment")
	}
	if len(hosts) > 1 {
		q := u.Query()
		for _, h := range hosts[1:] {
			q.Add("addr", h)
		}
		u.RawQuery = q.Encode()
	}
	return u, nil
}

func parseSentinel(base, rest string) (options, error) {
	u, err := parseMulti(base, rest, defaultSentinelPort)
	if err != nil {
		return options{}, err
	}
	q := u.Query()
	if q.Has("username") || q.Has("password") {
		return options{}, urlError("give Redis's password as the user info (redis-sentinel://:password@host...), not as a parameter")
	}
	if q.Get("master_name") == "" {
		return options{}, urlError("redis-sentinel:// needs master_name=<the name the Sentinels monitor>")
	}
	// The user info is Redis's; go-redis reads the Sentinels' from there.
	data := u.User
	u.User = nil
	if su, sp := q.Get(paramSentinelUser), q.Get(paramSentinelPassword); su != "" || sp != "" {
		u.User = url.UserPassword(su, sp)
	}
	q.Del(paramSentinelUser)
	q.Del(paramSentinelPassword)
	waitQuery := moveWait(q)
	u.RawQuery = q.Encode()
	opt, err := redis.ParseFailoverURL(u.String())
	if err != nil {
		return options{}, goRedisError(err, u, data)
	}
	if data != nil {
		opt.Username = data.Username()
		opt.Password, _ = data.Password()
	}
	urlDefaults(&opt.DialTimeout, &opt.ReadTimeout, &opt.WriteTimeout, &opt.PoolTimeout, &opt.DialerRetries, &opt.Protocol)
	if opt.MaxRetries == 0 {
		opt.MaxRetries = urlMaxRetries
	}
	opt.ContextTimeoutEnabled = true
	verifyEachHost(opt.TLSConfig)
	n, timeout, err := takeWait(waitQuery, defaultSentinelWaitReplicas, opt.ReadTimeout)
	if err != nil {
		return options{}, err
	}
	return options{failover: opt, waitReplicas: n, waitTimeout: timeout}, nil
}

func parseCluster(base, rest string) (options, error) {
	u, err := parseMulti(base, rest, defaultRedisPort)
	if err != nil {
		return options{}, err
	}
	switch strings.Trim(u.Path, "/") {
	case "", "0":
	default:
		return options{}, urlError("Redis Cluster has only database 0")
	}
	u.Path = ""
	if q := u.Query(); q.Has(paramWaitReplicas) || q.Has(paramWaitTimeout) {
		// WAIT must follow the write on the connection to the key's node,
		// which a cluster pipeline does not promise for a keyless command.
		return options{}, urlError("wait_replicas is not supported with redis-cluster://")
	}
	opt, err := redis.ParseClusterURL(u.String())
	if err != nil {
		return options{}, goRedisError(err, u)
	}
	urlDefaults(&opt.DialTimeout, &opt.ReadTimeout, &opt.WriteTimeout, &opt.PoolTimeout, &opt.DialerRetries, &opt.Protocol)
	// Unlike the other clients, a cluster client must retry: a MOVED or
	// ASK answer (a slot that moved, a resharding in progress) or
	// CLUSTERDOWN and TRYAGAIN mean the command did not run and must be
	// sent again, to the node named. go-redis counts those in
	// MaxRedirects, together with retries after network errors, which
	// are not safe (see sentOnce); newClient stops the latter.
	opt.ContextTimeoutEnabled = true
	verifyEachHost(opt.TLSConfig)
	return options{cluster: opt}, nil
}

// verifyEachHost makes a TLS connection check the certificate of the host
// it dials rather than go-redis's choice, the URL's first host: a
// Sentinel group or Cluster is several hosts, and the servers behind the
// Sentinels are named by the Sentinels, not by the URL. With no server
// name, crypto/tls takes the one of each address dialled.
func verifyEachHost(c *tls.Config) {
	if c != nil {
		c.ServerName = ""
	}
}

// goRedisError returns go-redis's parse error if it quotes none of the
// URL's secrets, and a generic one otherwise.
func goRedisError(err error, u *url.URL, more ...*url.Userinfo) error {
	msg := strings.TrimPrefix(err.Error(), "redis: ")
	var secrets []string
	for _, ui := range append(more, u.User) {
		if ui != nil {
			p, _ := ui.Password()
			secrets = append(secrets, p)
		}
	}
	q := u.Query()
	secrets = append(secrets, q["password"]...)
	secrets = append(secrets, q[paramSentinelPassword]...)
	for _, p := range secrets {
		if p != "" && strings.Contains(msg, p) {
			return urlError("a value is invalid (not quoted: the message would include the password)")
		}
	}
	return urlError("%s", msg)
}

// newClient returns the client for o.
func (o options) newClient() redis.UniversalClient {
	if o.cluster != nil {
		opt := *o.cluster
		opt.NewClient = func(no *redis.Options) *redis.Client {
			c := redis.NewClient(no)
			c.AddHook(sentOnce{})
			return c
		}
		return redis.NewClusterClient(&opt)
	}
	return o.newNodeClient()
}

// newNodeClient returns the client for one server or a Sentinel group.
func (o options) newNodeClient() *redis.Client {
	if o.failover != nil {
		return redis.NewFailoverClient(o.failover)
	}
	return redis.NewClient(o.single)
}

// sentOnce keeps a cluster client from sending a command a second time
// after a network error, when the first may have run: a retried SET NX
// whose first answer was lost reads as ErrExists, a retried GETDEL as
// ErrNotFound, which would turn a login into "expired" instead of a 503.
// The cluster client retries an error it recognises (EOF, reset, timeout);
// sentOnce hides those behind mayHaveRun, on each node's client, so that
// only errors that prove the command did not run (a refused dial, an
// exhausted pool, MOVED, ASK, TRYAGAIN, CLUSTERDOWN, LOADING) are retried.
type sentOnce struct{}

func (sentOnce) DialHook(next redis.DialHook) redis.DialHook { return next }

func (sentOnce) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		return hideUnsafe(next(ctx, cmd))
	}
}

func (sentOnce) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		return hideUnsafe(next(ctx, cmds))
	}
}

// mayHaveRun is a network error after which the command may or may not
// have run. It deliberately has no Unwrap: go-redis looks through wrapped
// errors when it decides whether to retry. backendError unwraps it.
type mayHaveRun struct{ err error }

func (e mayHaveRun) Error() string { return e.err.Error() }

func hideUnsafe(err error) error {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var reply redis.Error
	if errors.As(err, &reply) {
		return err // Redis answered
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return err // nothing was sent
	}
	if errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrClosed) {
		return err // nothing was sent
	}
	return mayHaveRun{err}
}

// urlDefaults fills the timeouts and dial retries a URL left unset. The
// single-server, Sentinel and Cluster options are different types with the
// same fields, so it takes the fields.
func urlDefaults(dial, read, write, pool *time.Duration, dialerRetries, protocol *int) {
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{dial, urlDialTimeout}, {read, urlReadTimeout}, {write, urlWriteTimeout}, {pool, urlPoolTimeout}} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if *dialerRetries == 0 {
		*dialerRetries = urlDialerRetries
	}
	if *protocol == 0 {
		*protocol = urlProtocol
	}
}
