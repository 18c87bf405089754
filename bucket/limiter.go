package bucket

import (
	"sync"
	"time"
)

// Limiter is one token bucket with its limit, safe for concurrent use: the counterpart of
// golang.org/x/time/rate.Limiter, with exact integer math and the clock handling of this package.
// For many keys use Keyed.
type Limiter struct {
	mu    sync.Mutex
	limit Limit
	b     Bucket
	skew  time.Duration
}

// NewLimiter returns a full bucket under l as of now, with the default skew tolerance.
func NewLimiter(l Limit, now int64) *Limiter {
	return &Limiter{limit: l, b: NewBucket(&l, now), skew: DefaultSkew}
}

// SetSkew changes the clock-skew tolerance (see WithSkew).
func (lm *Limiter) SetSkew(d time.Duration) {
	lm.mu.Lock()
	if d >= 0 {
		lm.skew = d
	}
	lm.mu.Unlock()
}

// Take consumes cost tokens at now, all or nothing (see Bucket.Take).
func (lm *Limiter) Take(now, cost int64) (Result, error) {
	lm.mu.Lock()
	res, err := lm.b.Take(&lm.limit, now, cost, lm.skew)
	lm.mu.Unlock()
	return res, err
}

// Peek reports what Take would decide at now, changing nothing.
func (lm *Limiter) Peek(now, cost int64) (Result, error) {
	lm.mu.Lock()
	res, err := lm.b.Peek(&lm.limit, now, cost, lm.skew)
	lm.mu.Unlock()
	return res, err
}

// SetLimit changes the limit live, refilling at the old rate up to now and keeping the bucket's
// fraction of capacity (see Bucket.Rescale).
func (lm *Limiter) SetLimit(l Limit, now int64) {
	lm.mu.Lock()
	lm.b.Rescale(&lm.limit, &l, now, lm.skew)
	lm.limit = l
	lm.mu.Unlock()
}

// Limit returns the current limit.
func (lm *Limiter) Limit() Limit {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	return lm.limit
}
