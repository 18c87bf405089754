package bucket

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"time"
)

// Sentinel errors. Callers test them with errors.Is; the returned errors wrap them with detail.
var (
	// ErrInvalidLimit: the rate, period or burst is zero, negative, or not representable exactly.
	ErrInvalidLimit = errors.New("invalid limit")
	// ErrInvalidCost: a take or peek of zero or negative tokens.
	ErrInvalidCost = errors.New("invalid cost")
	// ErrCostExceedsBurst: the cost is above the bucket's capacity, so it can never be granted.
	ErrCostExceedsBurst = errors.New("cost exceeds burst capacity")
)

// Never is the RetryAfter of a take that can never succeed (its cost is above the capacity).
// It is the largest Duration, so code that sleeps for RetryAfter does not spin.
const Never = time.Duration(math.MaxInt64)

// DefaultSkew is the default clock-skew tolerance: a time up to this far behind a bucket's last
// refill counts as "no time passed" rather than as a clock reset.
const DefaultSkew = 100 * time.Millisecond

// Limit is an exact rational refill rate, Rate tokens every Period, with a capacity of Burst tokens.
//
// Internally a token is p sub-token units and the bucket gains r units per nanosecond, where
// r/p is Rate/Period reduced to lowest terms. Every quantity is an integer, so refill is exact:
// 1 token per hour accrues one unit per nanosecond, 3.6e12 units to the token. The zero Limit is
// invalid; build one with NewLimit.
type Limit struct {
	rate   int64
	period int64
	burst  int64
	r      uint64 // units added per nanosecond
	p      uint64 // units per token
	cap    uint64 // burst * p
	byR    divider
	byP    divider
}

// NewLimit returns the limit of rate tokens per period with the given burst capacity; a burst of
// 0 means burst = rate. It returns an error wrapping ErrInvalidLimit when a value is not positive
// or when burst × (period / gcd(rate, period)) does not fit in 63 bits (for example a burst of a
// billion tokens per period of a prime number of days), because such a limit cannot be kept exact.
func NewLimit(rate int64, period time.Duration, burst int64) (Limit, error) {
	switch {
	case rate <= 0:
		return Limit{}, fmt.Errorf("%w: rate %d must be positive", ErrInvalidLimit, rate)
	case period <= 0:
		return Limit{}, fmt.Errorf("%w: period %v must be positive", ErrInvalidLimit, period)
	case burst < 0:
		return Limit{}, fmt.Errorf("%w: burst %d must not be negative", ErrInvalidLimit, burst)
	}
	if burst == 0 {
		burst = rate
	}
	g := gcd(uint64(rate), uint64(period))
	r, p := uint64(rate)/g, uint64(period)/g
	hi, c := bits.Mul64(uint64(burst), p)
	if hi != 0 || c > math.MaxInt64 {
		return Limit{}, fmt.Errorf("%w: %d per %v with burst %d is not representable exactly (burst × reduced period overflows 63 bits); use a smaller burst or a rate that divides the period more evenly",
			ErrInvalidLimit, rate, period, burst)
	}
	return Limit{rate: rate, period: int64(period), burst: burst, r: r, p: p, cap: c, byR: newDivider(r), byP: newDivider(p)}, nil
}

// MustLimit is NewLimit for constants in tests and examples; it panics on an invalid limit.
func MustLimit(rate int64, period time.Duration, burst int64) Limit {
	l, err := NewLimit(rate, period, burst)
	if err != nil {
		panic(err)
	}
	return l
}

// Rate is the number of tokens added per Period.
func (l Limit) Rate() int64 { return l.rate }

// Period is the refill period.
func (l Limit) Period() time.Duration { return time.Duration(l.period) }

// Burst is the capacity of a bucket, in tokens.
func (l Limit) Burst() int64 { return l.burst }

// Valid reports whether l was built by NewLimit (the zero Limit is not valid).
func (l Limit) Valid() bool { return l.p != 0 }

// String formats the limit as "1000/1m0s burst 1000".
func (l Limit) String() string {
	return fmt.Sprintf("%d/%v burst %d", l.rate, time.Duration(l.period), l.burst)
}

// checkCost validates a cost against the limit.
func (l *Limit) checkCost(cost int64) error {
	if !l.Valid() {
		return fmt.Errorf("%w: zero Limit", ErrInvalidLimit)
	}
	if cost <= 0 {
		return fmt.Errorf("%w: %d must be positive", ErrInvalidCost, cost)
	}
	if cost > l.burst {
		return fmt.Errorf("%w: cost %d, burst %d", ErrCostExceedsBurst, cost, l.burst)
	}
	return nil
}

// nanosFor returns the time, rounded up to a whole nanosecond, in which the bucket gains units.
func (l *Limit) nanosFor(units uint64) int64 {
	return int64(l.byR.ceil(units)) // cannot overflow: units <= cap < 2^63
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
