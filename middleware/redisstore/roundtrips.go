package redisstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wechat-login/caddy-wechat-login/middleware/store"
)

// Calls that do in one round trip what would otherwise take two, for the
// middleware's busiest paths (store.MultiGetter, store.CreateUpdater,
// store.PrefixTaker).

var (
	_ store.MultiGetter   = (*Store)(nil)
	_ store.CreateUpdater = (*Store)(nil)
	_ store.PrefixTaker   = (*Store)(nil)
)

// GetMany implements store.MultiGetter with one MGET: one round trip and
// one command. On a Cluster, where the keys may live on different nodes,
// it is a pipeline of GETs (one round trip per node the keys live on).
func (s *Store) GetMany(ctx context.Context, keys ...string) ([][]byte, []error) {
	vals := make([][]byte, len(keys))
	errs := make([]error, len(keys))
	valid := make([]string, 0, len(keys))
	at := make([]int, 0, len(keys)) // the index in keys of each of valid
	for i, key := range keys {
		k, err := s.key(key)
		if err != nil {
			errs[i] = err
			continue
		}
		valid = append(valid, k)
		at = append(at, i)
	}
	if len(valid) == 0 {
		return vals, errs
	}
	if _, cluster := s.client.(*redis.ClusterClient); cluster {
		cmds := make([]*redis.StringCmd, len(valid))
		pipe := s.client.Pipeline()
		for j, k := range valid {
			cmds[j] = pipe.Get(ctx, k)
		}
		_, _ = pipe.Exec(ctx) // each command holds its own error
		for j, cmd := range cmds {
			v, err := cmd.Result()
			vals[at[j]], errs[at[j]] = value(v, err, "get")
		}
		return vals, errs
	}
	got, err := s.client.MGet(ctx, valid...).Result()
	if err == nil && len(got) != len(valid) {
		err = fmt.Errorf("%d values for %d keys", len(got), len(valid))
	}
	for j := range valid {
		i := at[j]
		switch {
		case err != nil:
			vals[i], errs[i] = value("", err, "get")
		case got[j] == nil:
			errs[i] = store.ErrNotFound
		default:
			v, ok := got[j].(string)
			if !ok {
				errs[i] = fmt.Errorf("redisstore: get: unexpected value %T", got[j])
				continue
			}
			vals[i], errs[i] = value(v, nil, "get")
		}
	}
	return vals, errs
}

// CreateThenUpdate implements store.CreateUpdater: one script, so one
// round trip, atomic on the server. On a Cluster, where the two keys may
// live on different nodes, it is Create and then Update.
func (s *Store) CreateThenUpdate(ctx context.Context, createKey string, createValue []byte, ttl time.Duration, key string, old, value []byte) (createErr, updateErr error) {
	sequential := func() (error, error) {
		createErr := s.Create(ctx, createKey, createValue, ttl)
		if createErr != nil && !errors.Is(createErr, store.ErrExists) {
			return createErr, store.ErrNotAttempted
		}
		return createErr, s.Update(ctx, key, old, value)
	}
	if _, cluster := s.client.(*redis.ClusterClient); cluster {
		return sequential()
	}
	if ttl < time.Millisecond {
		return fmt.Errorf("redisstore: ttl %s is shorter than 1ms", ttl), store.ErrNotAttempted
	}
	ck, err := s.key(createKey)
	if err == nil {
		err = checkValue(createValue)
	}
	if err != nil {
		return err, store.ErrNotAttempted
	}
	k, err := s.key(key)
	if err == nil {
		err = checkValue(value)
	}
	if err != nil {
		// As Update would fail: the Create alone, as it would be made.
		return s.Create(ctx, createKey, createValue, ttl), err
	}
	var cmd *redis.Cmd
	waitErr := s.replicated(ctx, func(c redis.Cmdable) redis.Cmder {
		cmd = script(ctx, c, createSwapFollow, []string{ck, k}, createValue, ttl.Milliseconds(), old, value)
		return cmd
	})
	res, err := cmd.Int64Slice()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("unexpected script result %v", res)
	}
	if err != nil {
		return backendError("create", err), store.ErrNotAttempted
	}
	if res[0] == 1 {
		if waitErr != nil {
			createErr = backendError("create", waitErr)
		}
	} else {
		createErr = store.ErrExists
	}
	switch res[1] {
	case casSwapped:
		if waitErr != nil {
			updateErr = backendError("update", waitErr)
		}
	case casChanged:
		updateErr = store.ErrChanged
	case casMissing:
		updateErr = store.ErrNotFound
	default:
		updateErr = fmt.Errorf("redisstore: update: unexpected script result %d", res[1])
	}
	return createErr, updateErr
}

// takeIfPrefix returns false if KEYS[1] is missing; else {1, value,
// remaining ttl in ms} after deleting it if its value begins with ARGV[1],
// and {0, value, 0} if not.
var takeIfPrefix = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then
	return false
end
if string.sub(v, 1, string.len(ARGV[1])) ~= ARGV[1] then
	return {0, v, 0}
end
local ttl = redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[1])
return {1, v, ttl}
`)

// TakeIfPrefix implements store.PrefixTaker with one script on one key
// (so also on a Cluster). When the Store waits for replicas and they do
// not confirm the delete, it fails as a backend error and puts the value
// back, as Take does.
func (s *Store) TakeIfPrefix(ctx context.Context, key string, prefix []byte) ([]byte, bool, error) {
	k, err := s.key(key)
	if err != nil {
		return nil, false, err
	}
	var cmd *redis.Cmd
	waitErr := s.replicated(ctx, func(c redis.Cmdable) redis.Cmder {
		cmd = script(ctx, c, takeIfPrefix, []string{k}, prefix)
		return cmd
	})
	res, err := cmd.Slice()
	if errors.Is(err, redis.Nil) {
		return nil, false, store.ErrNotFound
	}
	if err != nil {
		return nil, false, backendError("take", err)
	}
	if len(res) != 3 {
		return nil, false, fmt.Errorf("redisstore: take: unexpected script result of %d values", len(res))
	}
	taken, _ := res[0].(int64)
	v, ok := res[1].(string)
	ttl, _ := res[2].(int64)
	if !ok {
		return nil, false, fmt.Errorf("redisstore: take: unexpected script result %T", res[1])
	}
	if taken == 1 && waitErr != nil {
		// As Take: the delete may not survive a failover, so the value
		// goes back for a later call rather than being handed out.
		if ttl >= 1 {
			if rerr := s.client.SetNX(ctx, k, v, time.Duration(ttl)*time.Millisecond).Err(); rerr != nil {
				waitErr = fmt.Errorf("%w; putting the value back: %w", waitErr, rerr)
			}
		}
		return nil, false, backendError("take", waitErr)
	}
	b, _ := value(v, nil, "take")
	return b, taken == 1, nil
}

var _ store.PairCounter = (*Store)(nil)

// incrIfWithin is incrWithTTL on KEYS[1] and then, if its count is at
// most ARGV[2], on KEYS[2]. It returns {first count, second count or 0}.
var incrIfWithin = redis.NewScript(`
local n = redis.call("INCR", KEYS[1])
if n == 1 then redis.call("PEXPIRE", KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then return {n, 0} end
local m = redis.call("INCR", KEYS[2])
if m == 1 then redis.call("PEXPIRE", KEYS[2], ARGV[1]) end
return {n, m}`)

// IncrIfWithin implements store.PairCounter: one script, so one round
// trip, atomic on the server. On a Cluster, where the two keys may live on
// different nodes, it is Incr and then, if within limit, Incr.
func (s *Store) IncrIfWithin(ctx context.Context, first string, limit int64, second string, ttl time.Duration) (firstN, secondN int64, err error) {
	if _, cluster := s.client.(*redis.ClusterClient); cluster {
		firstN, err = s.Incr(ctx, first, ttl)
		if err != nil || firstN > limit {
			return firstN, 0, err
		}
		secondN, err = s.Incr(ctx, second, ttl)
		return firstN, secondN, err
	}
	if ttl < time.Millisecond {
		return 0, 0, fmt.Errorf("redisstore: ttl %s is shorter than 1ms", ttl)
	}
	k1, err := s.key(first)
	if err != nil {
		return 0, 0, err
	}
	k2, err := s.key(second)
	if err != nil {
		return 0, 0, err
	}
	var cmd *redis.Cmd
	waitErr := s.replicated(ctx, func(c redis.Cmdable) redis.Cmder {
		cmd = script(ctx, c, incrIfWithin, []string{k1, k2}, ttl.Milliseconds(), limit)
		return cmd
	})
	res, err := cmd.Int64Slice()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("unexpected script result %v", res)
	}
	if err == nil {
		err = waitErr
	}
	if err != nil {
		return 0, 0, backendError("incr", err)
	}
	return res[0], res[1], nil
}

// decrIfExists takes one off KEYS[1] if it exists.
var decrIfExists = redis.NewScript(`
if redis.call("EXISTS", KEYS[1]) == 1 then return redis.call("DECR", KEYS[1]) end
return 0`)

// Uncount implements store.PairCounter.
func (s *Store) Uncount(ctx context.Context, key string) error {
	k, err := s.key(key)
	if err != nil {
		return err
	}
	var cmd *redis.Cmd
	waitErr := s.replicated(ctx, func(c redis.Cmdable) redis.Cmder {
		cmd = script(ctx, c, decrIfExists, []string{k})
		return cmd
	})
	err = cmd.Err()
	if err == nil {
		err = waitErr
	}
	if err != nil {
		return backendError("incr", err)
	}
	return nil
}

var _ store.CreateUpdateFollower = (*Store)(nil)

// createSwapFollow is Create (SET NX PX) on KEYS[1] and then, if that did
// not fail, compareAndSwap on KEYS[2]; with a third key, if the swap was
// made, PUBLISH ARGV[6] on ARGV[5] and SET NX PX of KEYS[3]; in one
// script. It returns {created (1 or 0), the compareAndSwap result} and,
// with a third key, marked (1 or 0).
var createSwapFollow = redis.NewScript(`
local created = 0
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
	created = 1
end
local function result(swap, marked)
	if KEYS[3] then
		return {created, swap, marked}
	end
	return {created, swap}
end
local cur = redis.call('GET', KEYS[2])
if not cur then
	return result(0, 0)
end
if cur ~= ARGV[3] then
	return result(1, 0)
end
redis.call('SET', KEYS[2], ARGV[4], 'KEEPTTL')
if not KEYS[3] then
	return result(2)
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
local marked = 0
if redis.call('SET', KEYS[3], ARGV[7], 'NX', 'PX', ARGV[8]) then
	marked = 1
end
return result(2, marked)
`)

// CreateThenUpdateThen implements store.CreateUpdateFollower: one script,
// so one round trip, atomic on the server; this instance's subscribers
// are woken when it returns. On a Cluster, where the keys may live on
// different nodes, it is CreateThenUpdate and then PublishThenCreate, as
// are arguments those methods would refuse.
func (s *Store) CreateThenUpdateThen(ctx context.Context, createKey string, createValue []byte, ttl time.Duration, key string, old, value []byte, then store.Followup) (createErr, updateErr, publishErr, thenErr error) {
	sequential := func() (error, error, error, error) {
		createErr, updateErr := s.CreateThenUpdate(ctx, createKey, createValue, ttl, key, old, value)
		if updateErr != nil {
			return createErr, updateErr, store.ErrNotAttempted, store.ErrNotAttempted
		}
		publishErr, thenErr := s.PublishThenCreate(ctx, then.Topic, then.Key, then.Value, then.TTL)
		return createErr, updateErr, publishErr, thenErr
	}
	if _, cluster := s.client.(*redis.ClusterClient); cluster {
		return sequential()
	}
	if ttl < time.Millisecond || then.TTL < time.Millisecond {
		return sequential()
	}
	ck, err1 := s.key(createKey)
	k, err2 := s.key(key)
	mk, err3 := s.key(then.Key)
	if errors.Join(err1, err2, err3, checkValue(createValue), checkValue(value), checkValue(then.Value)) != nil {
		return sequential()
	}
	n := s.notifications()
	var cmd *redis.Cmd
	waitErr := s.replicated(ctx, func(c redis.Cmdable) redis.Cmder {
		cmd = script(ctx, c, createSwapFollow, []string{ck, k, mk}, createValue, ttl.Milliseconds(), old, value,
			n.channel, then.Topic, then.Value, then.TTL.Milliseconds())
		return cmd
	})
	res, err := cmd.Int64Slice()
	if err == nil && len(res) != 3 {
		err = fmt.Errorf("unexpected script result %v", res)
	}
	if err != nil {
		return backendError("create", err), store.ErrNotAttempted, store.ErrNotAttempted, store.ErrNotAttempted
	}
	created := func(ok int64, op string) error {
		if ok != 1 {
			return store.ErrExists
		}
		if waitErr != nil {
			return backendError(op, waitErr)
		}
		return nil
	}
	createErr = created(res[0], "create")
	switch res[1] {
	case casSwapped:
		n.local.Wake(then.Topic)
		if waitErr != nil {
			updateErr = backendError("update", waitErr)
		}
		return createErr, updateErr, nil, created(res[2], "create")
	case casChanged:
		updateErr = store.ErrChanged
	case casMissing:
		updateErr = store.ErrNotFound
	default:
		updateErr = fmt.Errorf("redisstore: update: unexpected script result %d", res[1])
	}
	return createErr, updateErr, store.ErrNotAttempted, store.ErrNotAttempted
}

var _ store.Splicer = (*Store)(nil)

// spliceFollow is store.Splice in one script. KEYS: guard, key, create,
// then; ARGV: prefix, head, tail, create value, create ttl (ms), the
// notification channel, topic, then value, then ttl (ms). It returns {1,
// guard's value}, {2} when the key is missing, {3, value} when it does not
// begin with the prefix, and {0, created (1 or 0), marked (1 or 0)} when it
// was spliced.
var spliceFollow = redis.NewScript(`
local g = redis.call('GET', KEYS[1])
if g then
	return {1, g}
end
local v = redis.call('GET', KEYS[2])
if not v then
	return {2}
end
local n = string.len(ARGV[1])
if string.sub(v, 1, n) ~= ARGV[1] then
	return {3, v}
end
local created = 0
if redis.call('SET', KEYS[3], ARGV[4], 'NX', 'PX', ARGV[5]) then
	created = 1
end
redis.call('SET', KEYS[2], ARGV[2] .. string.sub(v, n + 1) .. ARGV[3], 'KEEPTTL')
redis.call('PUBLISH', ARGV[6], ARGV[7])
local marked = 0
if redis.call('SET', KEYS[4], ARGV[8], 'NX', 'PX', ARGV[9]) then
	marked = 1
end
return {0, created, marked}
`)

// Splice implements store.Splicer: one script, so one round trip, atomic on
// the server; this instance's subscribers are woken when it returns. On a
// Cluster, where the keys may live on different nodes, it is not
// attempted.
func (s *Store) Splice(ctx context.Context, sp store.Splice) (store.SpliceResult, error) {
	var res store.SpliceResult
	if _, cluster := s.client.(*redis.ClusterClient); cluster {
		return res, store.ErrNotAttempted
	}
	if sp.Create.TTL < time.Millisecond || sp.Then.TTL < time.Millisecond {
		return res, store.ErrNotAttempted
	}
	gk, err1 := s.key(sp.Guard)
	k, err2 := s.key(sp.Key)
	ck, err3 := s.key(sp.Create.Key)
	tk, err4 := s.key(sp.Then.Key)
	if errors.Join(err1, err2, err3, err4, checkValue(sp.Create.Value), checkValue(sp.Then.Value),
		checkValue(sp.Head), checkValue(sp.Tail)) != nil {
		return res, store.ErrNotAttempted
	}
	n := s.notifications()
	var cmd *redis.Cmd
	waitErr := s.replicated(ctx, func(c redis.Cmdable) redis.Cmder {
		cmd = script(ctx, c, spliceFollow, []string{gk, k, ck, tk}, sp.Prefix, sp.Head, sp.Tail,
			sp.Create.Value, sp.Create.TTL.Milliseconds(), n.channel, sp.Then.Topic, sp.Then.Value, sp.Then.TTL.Milliseconds())
		return cmd
	})
	got, err := cmd.Slice()
	if err != nil {
		return res, backendError("splice", err)
	}
	outcome, _ := got[0].(int64)
	str := func(i int) ([]byte, error) {
		if len(got) > i {
			if v, ok := got[i].(string); ok {
				return value(v, nil, "splice")
			}
		}
		return nil, fmt.Errorf("redisstore: splice: unexpected script result %v", got)
	}
	switch {
	case outcome == 1:
		res.Guarded, err = str(1)
	case outcome == 2 && len(got) == 1:
		err = store.ErrNotFound
	case outcome == 3:
		res.Found, err = str(1)
	case outcome == 0 && len(got) == 3:
		n.local.Wake(sp.Then.Topic)
		res.Spliced = true
		made := func(v any) error {
			if v != int64(1) {
				return store.ErrExists
			}
			return nil
		}
		res.CreateErr, res.ThenErr = made(got[1]), made(got[2])
		if waitErr != nil {
			// The change may not survive a failover: the caller answers
			// as for a failed write, and the push is retried.
			err = backendError("splice", waitErr)
		}
	default:
		err = fmt.Errorf("redisstore: splice: unexpected script result %v", got)
	}
	return res, err
}
