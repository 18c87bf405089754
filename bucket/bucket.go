package bucket

import (
	"math/bits"
	"time"
)

// Result is the outcome of a Take or Peek.
type Result struct {
	// Allowed reports whether the take was applied (for Peek: whether it would be now).
	Allowed bool
	// Remaining is the whole tokens left after the decision (rounded down).
	Remaining int64
	// Limit is the bucket's capacity (the limit's burst), for X-RateLimit-Limit headers.
	Limit int64
	// RetryAfter is the exact time, rounded up to a nanosecond, until the cost will be available:
	// 0 when allowed, Never when the cost is above the capacity.
	RetryAfter time.Duration
	// ResetAfter is the time until the bucket is full again.
	ResetAfter time.Duration
}

// Bucket is the state of one token bucket: 16 bytes. It does not hold its Limit (many buckets
// share one), so every method takes the limit. A Bucket is not safe for concurrent use; Keyed
// is. Times are int64 nanoseconds on any fixed epoch.
type Bucket struct {
	tokens uint64 // in sub-token units: tokens × l.p
	last   int64  // time of the last refill
}

// NewBucket returns a full bucket as of now.
func NewBucket(l *Limit, now int64) Bucket {
	return Bucket{tokens: l.cap, last: now}
}

// refill advances the bucket to now. A now at or after the last refill adds the tokens of the
// elapsed time, capped at capacity. A now behind it by at most skew counts as no time passed; a
// larger backward step is a clock reset: the bucket re-anchors at now without adding tokens.
// Refilling at t1 then t2 leaves exactly the state of one refill at t2.
func (b *Bucket) refill(l *Limit, now, skew int64) {
	if now < b.last {
		if uint64(b.last)-uint64(now) > uint64(skew) { // unsigned: exact for any two int64 times
			b.last = now
		}
		return
	}
	dt := now - b.last
	b.last = now
	deficit := l.cap - b.tokens
	if deficit == 0 {
		return
	}
	// A 128-bit product, so no elapsed time can overflow.
	if hi, lo := bits.Mul64(uint64(dt), l.r); hi != 0 || lo >= deficit {
		b.tokens = l.cap
	} else {
		b.tokens += lo
	}
}

// result describes the bucket (already refilled to now) for a take of cost.
func (b *Bucket) result(l *Limit, now int64, cost int64, allowed bool) Result {
	ahead := int64(0) // refill starts only once now reaches last (inside the skew window)
	if b.last > now {
		ahead = b.last - now
	}
	res := Result{
		Allowed:   allowed,
		Remaining: int64(l.byP.div(b.tokens)),
		Limit:     l.burst,
	}
	if b.tokens != l.cap {
		res.ResetAfter = time.Duration(sat(ahead, l.nanosFor(l.cap-b.tokens)))
	}
	if !allowed {
		need := uint64(cost) * l.p
		if need > b.tokens {
			res.RetryAfter = time.Duration(sat(ahead, l.nanosFor(need-b.tokens)))
		}
	}
	return res
}

// Take consumes cost tokens if they are all there, all or nothing; a denied take changes nothing
// but the refill. skew is the clock-skew tolerance (DefaultSkew unless you have a reason). It
// returns an error wrapping ErrInvalidCost or ErrCostExceedsBurst (with RetryAfter Never) for
// a cost that can never be granted, and leaves the bucket untouched.
func (b *Bucket) Take(l *Limit, now, cost int64, skew time.Duration) (Result, error) {
	if cost <= 0 || cost > l.burst || l.p == 0 { // one inlined test for the common case
		return Result{Limit: l.burst, RetryAfter: Never}, l.checkCost(cost)
	}
	b.refill(l, now, int64(skew))
	need := uint64(cost) * l.p
	allowed := need <= b.tokens
	if allowed {
		b.tokens -= need
	}
	return b.result(l, now, cost, allowed), nil
}

// Peek reports what Take would decide now, without changing the bucket.
func (b Bucket) Peek(l *Limit, now, cost int64, skew time.Duration) (Result, error) {
	if cost <= 0 || cost > l.burst || l.p == 0 {
		return Result{Limit: l.burst, RetryAfter: Never}, l.checkCost(cost)
	}
	b.refill(l, now, int64(skew))
	return b.result(l, now, cost, uint64(cost)*l.p <= b.tokens), nil
}

// Rescale moves the bucket from limit old to limit next at time now: it first refills at the old
// rate up to now, then keeps the same fraction of capacity (500 of 1000 becomes 2500 of 5000),
// rounding down to a sub-token unit.
func (b *Bucket) Rescale(old, next *Limit, now int64, skew time.Duration) {
	if old.cap == 0 {
		// The zero Limit refuses every take, so a bucket under it never lost a token: it
		// starts the new limit full, like a fresh one (and there is no fraction to keep).
		b.tokens, b.last = next.cap, now
		return
	}
	b.refill(old, now, int64(skew))
	hi, lo := bits.Mul64(b.tokens, next.cap)
	q, _ := bits.Div64(hi, lo, old.cap) // hi < old.cap because tokens <= old.cap
	b.tokens = q
}

// Full reports whether the bucket has refilled to capacity by now, so that it is
// indistinguishable from a fresh bucket and may be dropped without changing any answer.
func (b *Bucket) Full(l *Limit, now int64) bool {
	if now < b.last {
		return false // a bucket ahead of the clock refills later than a fresh one would
	}
	deficit := l.cap - b.tokens
	hi, lo := bits.Mul64(uint64(now-b.last), l.r)
	return hi != 0 || lo >= deficit
}

// Tokens reports the whole tokens in the bucket as of its last refill.
func (b *Bucket) Tokens(l *Limit) int64 { return int64(l.byP.div(b.tokens)) }

// State exposes the raw state for encoding: units (tokens × the limit's reduced period) and the
// time of the last refill. FromState is its inverse.
func (b *Bucket) State() (units uint64, last int64) { return b.tokens, b.last }

// FromState rebuilds a bucket from State's values, clamping units to the limit's capacity so
// that a corrupt or stale value can never exceed it.
func FromState(l *Limit, units uint64, last int64) Bucket {
	if units > l.cap {
		units = l.cap
	}
	return Bucket{tokens: units, last: last}
}

// sat adds two non-negative durations, saturating at the largest int64.
func sat(a, b int64) int64 {
	if s := a + b; s >= a {
		return s
	}
	return int64(Never)
}

// TakeUpTo consumes between min and max whole tokens: as many as the bucket holds, up to max, or
// none when it holds fewer than min (the escrow grant of package fsm). It returns the tokens
// taken and the result of a take of min (RetryAfter is the wait for min when none were taken).
// min must be in 1..max and max at most the burst.
func (b *Bucket) TakeUpTo(l *Limit, now, min, max int64, skew time.Duration) (int64, Result, error) {
	if err := l.checkCost(min); err != nil {
		return 0, Result{Limit: l.burst, RetryAfter: Never}, err
	}
	if max < min || max > l.burst {
		return 0, Result{Limit: l.burst, RetryAfter: Never}, l.checkCost(max)
	}
	b.refill(l, now, int64(skew))
	have := int64(l.byP.div(b.tokens))
	if have < min {
		return 0, b.result(l, now, min, false), nil
	}
	n := have
	if n > max {
		n = max
	}
	b.tokens -= uint64(n) * l.p
	return n, b.result(l, now, n, true), nil
}

// Credit returns n whole tokens to the bucket at now (an unused escrow grant settled), capped at
// the capacity so that no credit ever lifts the bucket above its burst. n <= 0 changes nothing
// but the refill.
func (b *Bucket) Credit(l *Limit, now, n int64, skew time.Duration) {
	b.refill(l, now, int64(skew))
	if n <= 0 || l.p == 0 {
		return
	}
	room := l.cap - b.tokens
	if hi, lo := bits.Mul64(uint64(n), l.p); hi != 0 || lo >= room {
		b.tokens = l.cap
	} else {
		b.tokens += lo
	}
}
