package ratelimit

import (
	"context"
	"strconv"
	"time"
)

// Counter counts events under a key in storage that several processes share
// (Redis), so that a limit holds for all of them together.
type Counter interface {
	// Incr adds one to the counter under key, creating it with the given
	// time to live if absent, and returns the new count.
	Incr(ctx context.Context, key string, ttl time.Duration) (int64, error)
}

// InWindow counts one event under name in the current fixed window (a
// minute, say, aligned to the clock, so every process agrees on when it
// starts) and reports whether the count is within limit, or else how long
// until the window ends. An error means nothing could be counted.
func InWindow(ctx context.Context, c Counter, name string, limit int64, window time.Duration, now time.Time) (ok bool, retryAfter time.Duration, err error) {
	start := now.Truncate(window)
	// The key outlives the window a little, for clocks that disagree.
	n, err := c.Incr(ctx, name+":"+strconv.FormatInt(start.Unix(), 10), window+10*time.Second)
	if err != nil {
		return false, 0, err
	}
	if n > limit {
		return false, start.Add(window).Sub(now), nil
	}
	return true, 0, nil
}
