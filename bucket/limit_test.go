package bucket

import (
	"errors"
	"math"
	"testing"
	"time"
)

func TestNewLimit_RejectsInvalidWithErrInvalidLimit(t *testing.T) {
	tests := []struct {
		name   string
		rate   int64
		period time.Duration
		burst  int64
	}{
		{"zero rate", 0, time.Second, 10},
		{"negative rate", -1, time.Second, 10},
		{"min int rate", math.MinInt64, time.Second, 10},
		{"zero period", 10, 0, 10},
		{"negative period", 10, -time.Nanosecond, 10},
		{"min int period", 10, math.MinInt64, 10},
		{"negative burst", 10, time.Second, -1},
		{"min int burst", 10, time.Second, math.MinInt64},
		// 999999937 is prime and shares no factor with 86400s+1ns, so a token is 86400000000001
		// units and a billion of them overflow 63 bits.
		{"unrepresentable prime rate over a day plus 1ns", 999999937, 86400*time.Second + 1, 1e9},
		// Units per token is the reduced period 6e7; one token more than MaxInt64/6e7 overflows.
		{"one token past the 63-bit capacity", 1000, time.Minute, math.MaxInt64/60_000_000 + 1},
		{"max burst on a max period", 1, math.MaxInt64, math.MaxInt64},
		{"burst 2 on a max period", 1, math.MaxInt64, 2},
		// burst 0 defaults to rate, which is then checked like an explicit burst.
		{"default burst unrepresentable", math.MaxInt64 - 1, math.MaxInt64, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				l   Limit
				err error
			)
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("NewLimit(%d, %v, %d) panicked: %v", tt.rate, tt.period, tt.burst, p)
					}
				}()
				l, err = NewLimit(tt.rate, tt.period, tt.burst)
			}()
			if !errors.Is(err, ErrInvalidLimit) {
				t.Fatalf("NewLimit(%d, %v, %d) = %v, %v; want an error wrapping ErrInvalidLimit", tt.rate, tt.period, tt.burst, l, err)
			}
			if l.Valid() {
				t.Fatalf("NewLimit returned a valid limit %v alongside error %v", l, err)
			}
		})
	}
}

func TestNewLimit_AcceptsLargestRepresentable(t *testing.T) {
	tests := []struct {
		name    string
		rate    int64
		period  time.Duration
		burst   int64
		wantCap uint64
	}{
		// Only the reduced period counts: 1000/min is 1 unit per ns and 6e7 units per token,
		// so MaxInt64/6e7 tokens fit although burst × 6e10 ns would not.
		{"reduced period at the 63-bit edge", 1000, time.Minute, math.MaxInt64 / 60_000_000, math.MaxInt64 / 60_000_000 * 60_000_000},
		{"one token per max period", 1, math.MaxInt64, 1, math.MaxInt64},
		{"max rate per ns", math.MaxInt64, time.Nanosecond, 0, math.MaxInt64},
		{"max rate per max period reduces to 1/1", math.MaxInt64, math.MaxInt64, 0, math.MaxInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := testLimit(t, tt.rate, tt.period, tt.burst)
			if l.cap != tt.wantCap {
				t.Fatalf("capacity %d units, want %d", l.cap, tt.wantCap)
			}
			b := NewBucket(&l, t0)
			if res := mustTake(t, &b, &l, t0, l.Burst()); !res.Allowed || res.Remaining != 0 {
				t.Fatalf("taking the whole burst %d of a full bucket: %+v", l.Burst(), res)
			}
		})
	}
}

func TestNewLimit_ZeroBurstDefaultsToRate(t *testing.T) {
	l := testLimit(t, 1000, time.Minute, 0)
	if l.Burst() != 1000 || l.Rate() != 1000 || l.Period() != time.Minute {
		t.Fatalf("NewLimit(1000, 1m, 0) = rate %d period %v burst %d; want 1000, 1m, 1000", l.Rate(), l.Period(), l.Burst())
	}
	if got, want := l.String(), "1000/1m0s burst 1000"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	// Behaviourally: a fresh bucket grants exactly 1000 tokens at one instant.
	b := NewBucket(&l, t0)
	for i := 0; i < 1000; i++ {
		if res := mustTake(t, &b, &l, t0, 1); !res.Allowed {
			t.Fatalf("take %d of 1000 denied: %+v", i+1, res)
		}
	}
	if res := mustTake(t, &b, &l, t0, 1); res.Allowed {
		t.Fatalf("take 1001 of a 1000-token burst allowed: %+v", res)
	}
}

func TestNewLimit_ExplicitBurstIsKept(t *testing.T) {
	l := testLimit(t, 10, time.Second, 3)
	if l.Burst() != 3 {
		t.Fatalf("Burst() = %d, want 3", l.Burst())
	}
	b := NewBucket(&l, t0)
	if res := mustTake(t, &b, &l, t0, 3); !res.Allowed || res.Limit != 3 {
		t.Fatalf("take 3 of burst 3: %+v", res)
	}
}

func TestMustLimit_PanicsOnInvalid(t *testing.T) {
	defer func() {
		p := recover()
		err, ok := p.(error)
		if !ok || !errors.Is(err, ErrInvalidLimit) {
			t.Fatalf("MustLimit(0, 1s, 0) panicked with %v, want an error wrapping ErrInvalidLimit", p)
		}
	}()
	MustLimit(0, time.Second, 0)
}

func TestLimit_ZeroValueIsInvalidAndRefusedWithoutPanic(t *testing.T) {
	var l Limit
	if l.Valid() {
		t.Fatal("zero Limit reports Valid")
	}
	var b Bucket
	res, err := b.Take(&l, t0, 1, DefaultSkew)
	if !errors.Is(err, ErrInvalidLimit) || res.Allowed || res.RetryAfter != Never {
		t.Fatalf("Take on a zero Limit = %+v, %v; want ErrInvalidLimit, not allowed, RetryAfter Never", res, err)
	}
	if _, err := b.Peek(&l, t0, 1, DefaultSkew); !errors.Is(err, ErrInvalidLimit) {
		t.Fatalf("Peek on a zero Limit: err %v, want ErrInvalidLimit", err)
	}
	k := NewKeyed(l)
	if _, err := k.Take("a", t0, 1); !errors.Is(err, ErrInvalidLimit) {
		t.Fatalf("Keyed.Take on a zero Limit: err %v, want ErrInvalidLimit", err)
	}
	if k.Len() != 0 {
		t.Fatalf("a refused take stored a bucket: Len %d", k.Len())
	}
}
