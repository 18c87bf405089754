package bucket

import (
	"errors"
	"math"
	"math/big"
	"testing"
	"time"
	"unsafe"
)

func TestTake_RefillIsExact(t *testing.T) {
	// From empty, the first whole token appears exactly one emission interval (period/rate,
	// rounded up to a nanosecond) later: denied 1ns before, allowed at it.
	tests := []struct {
		name       string
		rate       int64
		period     time.Duration
		firstToken int64
	}{
		{"1 per hour", 1, time.Hour, hours},
		{"1000 per minute", 1000, time.Minute, 60 * millis},
		{"3 per second (fractional interval)", 3, time.Second, 333_333_334},
		{"7 per day plus 1ns (coprime)", 7, 86400*time.Second + 1, 12_342_857_142_858},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := testLimit(t, tt.rate, tt.period, 0)
			empty := emptyBucket(t, &l, t0)

			before := empty
			res := mustTake(t, &before, &l, t0+tt.firstToken-1, 1)
			if res.Allowed || res.Remaining != 0 || res.RetryAfter != 1 {
				t.Fatalf("take 1ns before the first token: %+v; want denied, Remaining 0, RetryAfter 1ns", res)
			}
			if res := mustTake(t, &before, &l, t0+tt.firstToken, 1); !res.Allowed {
				t.Fatalf("take at the first token after a denied take 1ns earlier: %+v; want allowed", res)
			}

			at := empty
			if res := mustTake(t, &at, &l, t0+tt.firstToken, 1); !res.Allowed || res.Remaining != 0 {
				t.Fatalf("take exactly at the first token: %+v; want allowed with Remaining 0", res)
			}
		})
	}
}

func TestTake_DeniedTakeConsumesNothing(t *testing.T) {
	l := testLimit(t, 1, time.Hour, 5) // no refill worth a token within the test
	t.Run("Bucket", func(t *testing.T) {
		b := NewBucket(&l, t0)
		if res := mustTake(t, &b, &l, t0, 3); !res.Allowed || res.Remaining != 2 {
			t.Fatalf("take 3 of 5: %+v", res)
		}
		before := b
		res := mustTake(t, &b, &l, t0, 3)
		if res.Allowed || res.Remaining != 2 {
			t.Fatalf("take 3 with 2 left: %+v; want denied with Remaining 2", res)
		}
		if b != before {
			t.Fatalf("denied take changed the bucket from %+v to %+v", before, b)
		}
		if res := mustTake(t, &b, &l, t0, 2); !res.Allowed || res.Remaining != 0 {
			t.Fatalf("take 2 with 2 left after a denied take: %+v; want allowed, Remaining 0", res)
		}
	})
	t.Run("Keyed", func(t *testing.T) {
		k := NewKeyed(l)
		mustKeyedTake(t, k, "a", t0, 3)
		before, _ := k.Get("a")
		if res := mustKeyedTake(t, k, "a", t0, 3); res.Allowed || res.Remaining != 2 {
			t.Fatalf("take 3 with 2 left: %+v; want denied with Remaining 2", res)
		}
		if after, _ := k.Get("a"); after != before {
			t.Fatalf("denied take changed the bucket from %+v to %+v", before, after)
		}
		if res := mustKeyedTake(t, k, "a", t0, 2); !res.Allowed {
			t.Fatalf("take 2 with 2 left after a denied take: %+v", res)
		}
	})
}

func TestTake_RetryAfterIsExactAndSuffices(t *testing.T) {
	tests := []struct {
		name  string
		rate  int64
		per   time.Duration
		setup func(t *testing.T, l *Limit) (Bucket, int64) // state and the time of the take
		cost  int64
		want  time.Duration
	}{
		{"1000/min empty cost 1", 1000, time.Minute, drained(0), 1, 60 * time.Millisecond},
		{"1000/min empty cost 5", 1000, time.Minute, drained(0), 5, 300 * time.Millisecond},
		{"1000/min 2 left cost 3", 1000, time.Minute, leaving(2), 3, 60 * time.Millisecond},
		{"3/s empty cost 1 rounds up", 3, time.Second, drained(0), 1, 333_333_334},
		{"3/s empty cost 2 rounds up", 3, time.Second, drained(0), 2, 666_666_667},
		{"3/s empty cost 3 is whole", 3, time.Second, drained(0), 3, time.Second},
		{"3/s 1ns after empty", 3, time.Second, drained(1), 1, 333_333_333},
		{"1/h empty", 1, time.Hour, drained(0), 1, time.Hour},
		{"1000/min empty, now 40ms behind within skew", 1000, time.Minute, drained(-40 * millis), 1, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := testLimit(t, tt.rate, tt.per, 0)
			b, now := tt.setup(t, &l)
			peek, err := b.Peek(&l, now, tt.cost, DefaultSkew)
			if err != nil {
				t.Fatal(err)
			}
			got := b
			res := mustTake(t, &got, &l, now, tt.cost)
			if res.Allowed || res.RetryAfter != tt.want {
				t.Fatalf("take %d: %+v; want denied with RetryAfter %v (%d ns)", tt.cost, res, tt.want, int64(tt.want))
			}
			if peek != res {
				t.Fatalf("Peek %+v differs from Take %+v", peek, res)
			}
			early := got
			if res := mustTake(t, &early, &l, now+int64(tt.want)-1, tt.cost); res.Allowed || res.RetryAfter != 1 {
				t.Fatalf("take 1ns before RetryAfter: %+v; want denied with RetryAfter 1ns", res)
			}
			onTime := got
			if res := mustTake(t, &onTime, &l, now+int64(tt.want), tt.cost); !res.Allowed || res.RetryAfter != 0 {
				t.Fatalf("take exactly after RetryAfter: %+v; want allowed with RetryAfter 0", res)
			}
		})
	}
}

// drained returns a setup: a bucket emptied at t0, taken from at t0+offset.
func drained(offset int64) func(*testing.T, *Limit) (Bucket, int64) {
	return func(t *testing.T, l *Limit) (Bucket, int64) {
		t.Helper()
		return emptyBucket(t, l, t0), t0 + offset
	}
}

// leaving returns a setup: a full bucket with all but n tokens taken at t0.
func leaving(n int64) func(*testing.T, *Limit) (Bucket, int64) {
	return func(t *testing.T, l *Limit) (Bucket, int64) {
		t.Helper()
		b := NewBucket(l, t0)
		if n < l.Burst() {
			mustTake(t, &b, l, t0, l.Burst()-n)
		}
		return b, t0
	}
}

func TestTake_CostAboveBurstIsNeverAndErrCostExceedsBurst(t *testing.T) {
	l := testLimit(t, 1000, time.Minute, 10)
	for _, cost := range []int64{11, 1000, math.MaxInt64} {
		b := NewBucket(&l, t0)
		mustTake(t, &b, &l, t0, 4)
		before := b
		later := t0 + hours // a refill would change the state; a refused take must not refill
		for name, op := range map[string]func() (Result, error){
			"Take": func() (Result, error) { return b.Take(&l, later, cost, DefaultSkew) },
			"Peek": func() (Result, error) { return b.Peek(&l, later, cost, DefaultSkew) },
		} {
			res, err := op()
			if !errors.Is(err, ErrCostExceedsBurst) {
				t.Fatalf("%s cost %d of burst 10: err %v, want ErrCostExceedsBurst", name, cost, err)
			}
			if res.Allowed || res.RetryAfter != Never || res.Limit != 10 {
				t.Fatalf("%s cost %d of burst 10: %+v; want not allowed, RetryAfter Never, Limit 10", name, cost, res)
			}
			if b != before {
				t.Fatalf("%s cost %d changed the bucket from %+v to %+v", name, cost, before, b)
			}
		}

		k := NewKeyed(l)
		mustKeyedTake(t, k, "a", t0, 4)
		kb, _ := k.Get("a")
		res, err := k.Take("a", later, cost)
		if !errors.Is(err, ErrCostExceedsBurst) || res.Allowed || res.RetryAfter != Never {
			t.Fatalf("Keyed.Take cost %d of burst 10: %+v, %v; want ErrCostExceedsBurst, RetryAfter Never", cost, res, err)
		}
		if _, err := k.Take("fresh", later, cost); !errors.Is(err, ErrCostExceedsBurst) {
			t.Fatalf("Keyed.Take cost %d on an absent key: err %v", cost, err)
		}
		if res, err := k.Peek("a", later, cost); !errors.Is(err, ErrCostExceedsBurst) || res.RetryAfter != Never {
			t.Fatalf("Keyed.Peek cost %d: %+v, %v", cost, res, err)
		}
		if got, _ := k.Get("a"); got != kb || k.Len() != 1 {
			t.Fatalf("refused takes changed the store: bucket %+v (was %+v), Len %d", got, kb, k.Len())
		}
	}
}

func TestTake_NonPositiveCostIsErrInvalidCost(t *testing.T) {
	l := testLimit(t, 1000, time.Minute, 0)
	for _, cost := range []int64{0, -1, math.MinInt64} {
		b := NewBucket(&l, t0)
		mustTake(t, &b, &l, t0, 4)
		before := b
		later := t0 + hours
		if res, err := b.Take(&l, later, cost, DefaultSkew); !errors.Is(err, ErrInvalidCost) || res.Allowed {
			t.Fatalf("Take cost %d: %+v, %v; want ErrInvalidCost", cost, res, err)
		}
		if res, err := b.Peek(&l, later, cost, DefaultSkew); !errors.Is(err, ErrInvalidCost) || res.Allowed {
			t.Fatalf("Peek cost %d: %+v, %v; want ErrInvalidCost", cost, res, err)
		}
		if b != before {
			t.Fatalf("cost %d changed the bucket from %+v to %+v", cost, before, b)
		}

		k := NewKeyed(l)
		if res, err := k.Take("a", t0, cost); !errors.Is(err, ErrInvalidCost) || res.Allowed {
			t.Fatalf("Keyed.Take cost %d: %+v, %v; want ErrInvalidCost", cost, res, err)
		}
		if res, err := k.Peek("a", t0, cost); !errors.Is(err, ErrInvalidCost) || res.Allowed {
			t.Fatalf("Keyed.Peek cost %d: %+v, %v; want ErrInvalidCost", cost, res, err)
		}
		if k.Len() != 0 {
			t.Fatalf("an invalid take stored a bucket (Len %d)", k.Len())
		}
	}
}

func TestResult_ResetAfterIsExactAndZeroWhenFull(t *testing.T) {
	tests := []struct {
		name  string
		rate  int64
		per   time.Duration
		burst int64
		setup func(t *testing.T, l *Limit) (Bucket, int64)
		want  time.Duration
	}{
		{"full", 1000, time.Minute, 0, leaving(1000), 0},
		{"full after a long idle", 1000, time.Minute, 0, drained(5 * hours), 0},
		{"full, now 40ms behind within skew", 1000, time.Minute, 0, func(t *testing.T, l *Limit) (Bucket, int64) {
			b, _ := leaving(1000)(t, l)
			return b, t0 - 40*millis
		}, 0},
		{"1000/min one taken", 1000, time.Minute, 0, leaving(999), 60 * time.Millisecond},
		{"1000/min half taken", 1000, time.Minute, 0, leaving(500), 30 * time.Second},
		{"3/s burst 3 one taken rounds up", 3, time.Second, 3, leaving(2), 333_333_334},
		{"3/s burst 3 emptied", 3, time.Second, 3, leaving(0), time.Second},
		{"3/s burst 3 1ns after empty", 3, time.Second, 3, drained(1), 999_999_999},
		{"1000/min one taken, now 40ms behind within skew", 1000, time.Minute, 0, func(t *testing.T, l *Limit) (Bucket, int64) {
			b, _ := leaving(999)(t, l)
			return b, t0 - 40*millis
		}, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := testLimit(t, tt.rate, tt.per, tt.burst)
			b, now := tt.setup(t, &l)
			res, err := b.Peek(&l, now, 1, DefaultSkew)
			if err != nil {
				t.Fatal(err)
			}
			if res.ResetAfter != tt.want {
				t.Fatalf("ResetAfter %v (%d ns), want %v (%d ns); result %+v", res.ResetAfter, int64(res.ResetAfter), tt.want, int64(tt.want), res)
			}
			full := now + int64(tt.want)
			if _, last := b.State(); full >= last && !b.Full(&l, full) { // Full is false behind the anchor
				t.Fatalf("bucket not full at now+ResetAfter")
			}
			if res, _ := b.Peek(&l, full, 1, DefaultSkew); res.ResetAfter != 0 || res.Remaining != l.Burst() {
				t.Fatalf("Peek at now+ResetAfter: %+v; want Remaining %d, ResetAfter 0", res, l.Burst())
			}
			if tt.want > 0 && b.Full(&l, full-1) {
				t.Fatalf("bucket already full 1ns before now+ResetAfter")
			}
		})
	}
}

func TestResult_RemainingRoundsDownToWholeTokens(t *testing.T) {
	l := testLimit(t, 3, time.Second, 3) // 3 units per ns, 1e9 units per token
	empty := emptyBucket(t, &l, t0)
	tests := []struct {
		after int64
		want  int64
	}{
		{0, 0},
		{333_333_333, 0}, // 999999999 units
		{333_333_334, 1}, // 1000000002 units
		{666_666_666, 1}, // 1999999998 units
		{666_666_667, 2}, // 2000000001 units
		{999_999_999, 2}, // 2999999997 units
		{seconds, 3},
	}
	for _, tt := range tests {
		b := empty
		res, err := b.Peek(&l, t0+tt.after, 1, DefaultSkew)
		if err != nil {
			t.Fatal(err)
		}
		if res.Remaining != tt.want {
			t.Errorf("%d ns after empty: Remaining %d, want %d", tt.after, res.Remaining, tt.want)
		}
		b.refill(&l, t0+tt.after, int64(DefaultSkew))
		if got := b.Tokens(&l); got != tt.want {
			t.Errorf("%d ns after empty: Tokens %d, want %d", tt.after, got, tt.want)
		}
	}
	// After a take the fraction stays: 1000000002 units minus one token leaves 2 units, 0 tokens.
	b := empty
	if res := mustTake(t, &b, &l, t0+333_333_334, 1); !res.Allowed || res.Remaining != 0 {
		t.Fatalf("take 1 at 1000000002 units: %+v; want allowed, Remaining 0", res)
	}
	wantState(t, "after take", b, 2, t0+333_333_334)
}

func TestRateChange_KeepsFractionOfCapacity(t *testing.T) {
	tests := []struct {
		name          string
		from, to      [3]int64 // rate, period, burst
		left          int64    // tokens left before the change
		wantRemaining int64
	}{
		{"1000/min to 5000/min half full", [3]int64{1000, minutes, 0}, [3]int64{5000, minutes, 0}, 500, 2500},
		{"5000/min to 1000/min half full", [3]int64{5000, minutes, 0}, [3]int64{1000, minutes, 0}, 2500, 500},
		{"full stays full", [3]int64{1000, minutes, 0}, [3]int64{5000, minutes, 0}, 1000, 5000},
		{"empty stays empty", [3]int64{1000, minutes, 0}, [3]int64{5000, minutes, 0}, 0, 0},
		{"odd fraction rounds down", [3]int64{1000, minutes, 0}, [3]int64{1, hours, 3}, 500, 1},
		{"burst-only change", [3]int64{10, seconds, 10}, [3]int64{10, seconds, 40}, 3, 12},
		// 6e7 units × 604800000000007 / 6e10 = 604800000000.007 units: the rounding is down.
		{"sub-unit remainder rounds down", [3]int64{1000, minutes, 0}, [3]int64{7, 86400*seconds + 1, 0}, 1, 0},
	}
	for _, tt := range tests {
		from := testLimit(t, tt.from[0], time.Duration(tt.from[1]), tt.from[2])
		to := testLimit(t, tt.to[0], time.Duration(tt.to[1]), tt.to[2])
		// Expected units: the same fraction of the new capacity, rounded down to a unit.
		want := new(big.Int).Mul(new(big.Int).SetUint64(uint64(tt.left)*from.p), new(big.Int).SetUint64(to.cap))
		wantUnits := want.Quo(want, new(big.Int).SetUint64(from.cap)).Uint64()

		t.Run(tt.name+"/Bucket.Rescale", func(t *testing.T) {
			b := NewBucket(&from, t0)
			if tt.left < from.Burst() {
				mustTake(t, &b, &from, t0, from.Burst()-tt.left)
			}
			b.Rescale(&from, &to, t0, DefaultSkew)
			wantState(t, "after Rescale", b, wantUnits, t0)
			if res, _ := b.Peek(&to, t0, 1, DefaultSkew); res.Remaining != tt.wantRemaining || res.Limit != to.Burst() {
				t.Fatalf("after Rescale: %+v; want Remaining %d of %d", res, tt.wantRemaining, to.Burst())
			}
		})
		t.Run(tt.name+"/Keyed.SetLimit", func(t *testing.T) {
			k := NewKeyed(from)
			if tt.left < from.Burst() {
				mustKeyedTake(t, k, "a", t0, from.Burst()-tt.left)
			} else {
				k.Put("a", NewBucket(&from, t0))
			}
			k.SetLimit(to, t0)
			b, ok := k.Get("a")
			if !ok {
				t.Fatal("SetLimit dropped the bucket")
			}
			wantState(t, "after SetLimit", b, wantUnits, t0)
			res, err := k.Peek("a", t0, 1)
			if err != nil || res.Remaining != tt.wantRemaining || res.Limit != to.Burst() {
				t.Fatalf("after SetLimit: %+v, %v; want Remaining %d of %d", res, err, tt.wantRemaining, to.Burst())
			}
			if got := k.Limit(); got != to {
				t.Fatalf("Limit() = %v, want %v", got, to)
			}
		})
	}
}

func TestRateChange_SettlesRefillAtOldRateFirst(t *testing.T) {
	// Each bucket is emptied at t0 and the limit changes at t0+30s. Settling at the old rate
	// and then rescaling differs from refilling the 30s at the new rate in every case but the
	// first (where rate/burst is the same on both sides, as in the documented example).
	tests := []struct {
		name     string
		from, to [3]int64
		want     int64 // tokens right after the change
		next     int64 // time after the change at which the next token accrues at the new rate
	}{
		{"1000/min to 5000/min", [3]int64{1000, minutes, 0}, [3]int64{5000, minutes, 0}, 2500, 12 * millis},
		{"1000/min to 5000/min burst 10000", [3]int64{1000, minutes, 0}, [3]int64{5000, minutes, 10000}, 5000, 12 * millis},
		{"5000/min burst 10000 to 1000/min", [3]int64{5000, minutes, 10000}, [3]int64{1000, minutes, 0}, 250, 60 * millis},
	}
	const change = t0 + 30*seconds
	for _, tt := range tests {
		from := testLimit(t, tt.from[0], time.Duration(tt.from[1]), tt.from[2])
		to := testLimit(t, tt.to[0], time.Duration(tt.to[1]), tt.to[2])
		check := func(t *testing.T, b Bucket) {
			t.Helper()
			if _, last := b.State(); last != change {
				t.Fatalf("anchor %d after the change, want the change time %d", last, change)
			}
			if got := b.Tokens(&to); got != tt.want {
				t.Fatalf("%d tokens after the change, want %d", got, tt.want)
			}
			// From here the new rate applies, measured from the change: exactly one more token
			// one new emission interval later, and not 1ns before.
			if res, _ := b.Peek(&to, change+tt.next-1, 1, DefaultSkew); res.Remaining != tt.want {
				t.Fatalf("1ns before the next token: Remaining %d, want %d", res.Remaining, tt.want)
			}
			if res, _ := b.Peek(&to, change+tt.next, 1, DefaultSkew); res.Remaining != tt.want+1 {
				t.Fatalf("at the next token: Remaining %d, want %d", res.Remaining, tt.want+1)
			}
		}
		t.Run(tt.name+"/Bucket.Rescale", func(t *testing.T) {
			b := emptyBucket(t, &from, t0)
			b.Rescale(&from, &to, change, DefaultSkew)
			check(t, b)
		})
		t.Run(tt.name+"/Keyed.SetLimit", func(t *testing.T) {
			k := NewKeyed(from)
			mustKeyedTake(t, k, "a", t0, from.Burst())
			k.SetLimit(to, change)
			b, _ := k.Get("a")
			check(t, b)
		})
	}
}

func TestRateChange_FullBucketStaysFullAcrossDownAndUpscale(t *testing.T) {
	// Keeping the fraction means a bucket refilled to full under a small burst is full under a
	// large one again. So tokens granted across limit changes are bounded by the elapsed refill
	// plus the capacity increases, not by max capacity plus elapsed refill (here 2000 > 1000+1).
	big := testLimit(t, 1, time.Second, 1000)
	small := testLimit(t, 1, time.Second, 1)
	k := NewKeyed(big)
	granted := mustKeyedTake(t, k, "a", t0, 1000).Allowed
	k.SetLimit(small, t0)
	k.SetLimit(big, t0+seconds)
	res := mustKeyedTake(t, k, "a", t0+seconds, 1000)
	if !granted || !res.Allowed {
		t.Fatalf("second take of 1000 after a 1s refill under burst 1: %+v; want allowed (fraction kept)", res)
	}
}

func TestClock_BackwardWithinSkewIsNoTimePassed(t *testing.T) {
	l := testLimit(t, 1000, time.Minute, 0) // one token per 60ms
	b := emptyBucket(t, &l, t0)
	back := t0 - int64(DefaultSkew)
	res := mustTake(t, &b, &l, back, 1)
	if res.Allowed || res.RetryAfter != 160*time.Millisecond || res.ResetAfter != 60*time.Second+100*time.Millisecond {
		t.Fatalf("take 100ms behind: %+v; want denied, RetryAfter 160ms, ResetAfter 60.1s", res)
	}
	wantState(t, "100ms behind", b, 0, t0) // anchor unchanged, nothing gained
	// A later forward move is measured from the original anchor t0, not from t0-100ms: at
	// t0+60ms exactly one token has accrued (from t0-100ms it would be 160ms, 2 tokens).
	if res := mustTake(t, &b, &l, t0+60*millis, 1); !res.Allowed {
		t.Fatalf("take at t0+60ms: %+v; want allowed", res)
	}
	if res := mustTake(t, &b, &l, t0+60*millis, 1); res.Allowed {
		t.Fatalf("second take at t0+60ms: %+v; want denied (no double grant)", res)
	}
	wantState(t, "after t0+60ms", b, 0, t0+60*millis)
}

func TestClock_BackwardBeyondSkewReanchorsWithoutTokens(t *testing.T) {
	l := testLimit(t, 1000, time.Minute, 0)
	for _, start := range []int64{0, 400} { // tokens left at t0
		b := NewBucket(&l, t0)
		mustTake(t, &b, &l, t0, 1000-start)
		back := t0 - int64(DefaultSkew) - 1
		res := mustTake(t, &b, &l, back, start+1)
		if res.Allowed || res.Remaining != start || res.RetryAfter != 60*time.Millisecond {
			t.Fatalf("start %d: take %d at 100ms+1ns behind: %+v; want denied, Remaining %d, RetryAfter 60ms (no skew wait)", start, start+1, res, start)
		}
		wantState(t, "re-anchored", b, uint64(start)*l.p, back)
		// Time now runs from the new anchor; the 100ms+1ns between back and t0 are refilled
		// as they pass again, and nothing more.
		early := b
		if res := mustTake(t, &early, &l, back+60*millis-1, start+1); res.Allowed || res.RetryAfter != 1 {
			t.Fatalf("start %d: take %d 1ns before one interval after re-anchoring: %+v; want denied, RetryAfter 1ns", start, start+1, res)
		}
		onTime := b
		if res := mustTake(t, &onTime, &l, back+60*millis, start+1); !res.Allowed || res.Remaining != 0 {
			t.Fatalf("start %d: take %d one interval after re-anchoring: %+v; want allowed, Remaining 0", start, start+1, res)
		}
	}
}

func TestClock_ResetBackAndForthGrantsNoMoreThanMeasuredElapsed(t *testing.T) {
	l := testLimit(t, 1000, time.Minute, 0) // 1 token per 60ms
	steps := []struct {
		at   int64
		want int64 // tokens a greedy client gets at this time
	}{
		{t0, 1000},
		{t0 + 30*seconds, 500},
		{t0 - 2*hours, 0},                           // reset: re-anchor, no grant
		{t0 - 2*hours + 30*seconds, 500},            // 30s measured from the new anchor
		{t0 - 2*hours + 30*seconds - 100*millis, 0}, // within skew: no time passed
		{t0 - 2*hours + 30*seconds + 60*millis, 1},  // measured from the anchor, not the skewed time
		{t0 + hours, 1000},                          // forward 3h: capacity, not 3h of tokens
		{t0 - 2*hours, 0},                           // reset again
		{t0 - 2*hours + 6*seconds, 100},
	}
	b := NewBucket(&l, t0)
	m := anchorModel{anchor: t0, skew: int64(DefaultSkew)}
	var granted int64
	for i, s := range steps {
		elapsedBefore := m.elapsed
		m.observe(s.at)
		got := greedy(t, &b, &l, s.at)
		if got != s.want {
			t.Fatalf("step %d (t0%+dns): granted %d, want %d", i, s.at-t0, got, s.want)
		}
		granted += got
		// Bound: capacity plus the rate times the time the bucket measured, with a reset
		// contributing nothing and a within-skew step nothing.
		bound := l.Burst() + m.elapsed*l.Rate()/int64(l.Period())
		if granted > bound {
			t.Fatalf("step %d: granted %d in total exceeds capacity + rate × measured elapsed = %d (measured %v, step %v)",
				i, granted, bound, time.Duration(m.elapsed), time.Duration(m.elapsed-elapsedBefore))
		}
	}
	if granted != 3101 {
		t.Fatalf("granted %d over the sequence, want 3101", granted)
	}
}

// greedy takes every whole token available at now and returns how many it got.
func greedy(tb testing.TB, b *Bucket, l *Limit, now int64) int64 {
	tb.Helper()
	res, err := b.Peek(l, now, 1, DefaultSkew)
	if err != nil {
		tb.Fatal(err)
	}
	if res.Remaining == 0 {
		mustTake(tb, b, l, now, 1) // denied, but refills/re-anchors like any take
		return 0
	}
	if r := mustTake(tb, b, l, now, res.Remaining); !r.Allowed || r.Remaining != 0 {
		tb.Fatalf("greedy take of Peek's Remaining %d: %+v", res.Remaining, r)
	}
	return res.Remaining
}

// anchorModel measures elapsed time the way the documentation says a bucket does: forward
// steps from the anchor count, a step back within skew changes nothing, and a larger step back
// re-anchors without counting.
type anchorModel struct {
	anchor, skew, elapsed int64
}

func (m *anchorModel) observe(now int64) {
	switch {
	case now >= m.anchor:
		m.elapsed += now - m.anchor
		m.anchor = now
	case m.anchor-now > m.skew:
		m.anchor = now
	}
}

func TestClock_ForwardJumpRefillsExactlyToCapacity(t *testing.T) {
	limits := [][3]int64{{1000, minutes, 0}, {1, hours, 3}, {3, seconds, 3}, {math.MaxInt64, 1, 0}, {7, 86400*seconds + 1, 0}}
	jumps := []struct {
		name     string
		from, to int64
	}{
		{"1 hour", t0, t0 + hours},
		{"5 hours", t0, t0 + 5*hours},
		{"200 years", t0, t0 + 200*365*24*hours},
		{"whole int64 range", math.MinInt64 + 1, math.MaxInt64},
	}
	for _, lim := range limits {
		l := testLimit(t, lim[0], time.Duration(lim[1]), lim[2])
		for _, j := range jumps {
			for _, left := range []int64{0, l.Burst() / 2} {
				b := NewBucket(&l, j.from)
				if left < l.Burst() {
					mustTake(t, &b, &l, j.from, l.Burst()-left)
				}
				if uint64(j.to-j.from) < uint64(l.nanosFor(l.cap)) {
					continue // too short to refill this limit from empty
				}
				res := mustTake(t, &b, &l, j.to, 1)
				if !res.Allowed || res.Remaining != l.Burst()-1 {
					t.Fatalf("%v, %s jump from %d left: take 1: %+v; want allowed with Remaining %d", l, j.name, left, res, l.Burst()-1)
				}
				wantState(t, l.String()+" "+j.name, b, l.cap-l.p, j.to)
			}
		}
	}
}

func TestClock_BackwardStepBeyondInt64RangeIsAReset(t *testing.T) {
	l := testLimit(t, 1000, time.Minute, 0)
	last := int64(1) << 62
	b := emptyBucket(t, &l, last)
	now := -(int64(1) << 62) - (int64(1) << 61) // last-now = 2^63+2^61 overflows int64
	res := mustTake(t, &b, &l, now, 1)
	if res.RetryAfter != 60*time.Millisecond || res.ResetAfter != time.Minute {
		t.Errorf("take after a %s-long backward step: %+v; want RetryAfter 60ms, ResetAfter 1m (a reset)", "2^63+2^61ns", res)
	}
	wantState(t, "after the backward step", b, 0, now)
}

func TestBucket_Is16Bytes(t *testing.T) {
	if size := unsafe.Sizeof(Bucket{}); size != 16 {
		t.Fatalf("Bucket is %d bytes, documented as 16", size)
	}
}

func TestFromState_RoundTripsAndClampsToCapacity(t *testing.T) {
	l := testLimit(t, 3, time.Second, 3)
	b := NewBucket(&l, t0)
	mustTake(t, &b, &l, t0+5, 2)
	units, last := b.State()
	if got := FromState(&l, units, last); got != b {
		t.Fatalf("FromState(State()) = %+v, want %+v", got, b)
	}
	for _, units := range []uint64{l.cap + 1, 1 << 63, math.MaxUint64} {
		c := FromState(&l, units, t0)
		if u, _ := c.State(); u != l.cap {
			t.Fatalf("FromState(%d units) holds %d units, want the capacity %d", units, u, l.cap)
		}
		if res := mustTake(t, &c, &l, t0, 3); !res.Allowed || res.Remaining != 0 {
			t.Fatalf("take of the whole burst from a clamped bucket: %+v", res)
		}
	}
}
