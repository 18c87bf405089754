package bucket

import (
	"errors"
	"math"
	"math/rand"
	"slices"
	"testing"
	"time"
)

// randomLimit returns a valid limit with rates, periods and bursts spread over many magnitudes,
// including periods with no common factor with the rate (fractional emission intervals).
func randomLimit(tb testing.TB, rng *rand.Rand) Limit {
	tb.Helper()
	magnitude := func(max int64) int64 { // log-uniform in [1, max]
		return 1 + rng.Int63n(int64(math.Pow(float64(max), rng.Float64())))
	}
	periods := []int64{1, 1000, millis, seconds, minutes, hours, 24 * hours, 86400*seconds + 1}
	for {
		rate := magnitude(1e12)
		var period int64
		if rng.Intn(2) == 0 {
			period = periods[rng.Intn(len(periods))]
		} else {
			period = magnitude(1e13)
		}
		burst := int64(0)
		if rng.Intn(2) == 0 {
			burst = magnitude(1e9)
		}
		if l, err := NewLimit(rate, time.Duration(period), burst); err == nil {
			return l
		} else if !errors.Is(err, ErrInvalidLimit) {
			tb.Fatalf("NewLimit(%d, %d, %d): %v", rate, period, burst, err)
		}
	}
}

// randomState returns a bucket with tokens anywhere in [0, capacity], favouring the edges.
func randomState(rng *rand.Rand, l *Limit) Bucket {
	var units uint64
	switch rng.Intn(6) {
	case 0:
		units = 0
	case 1:
		units = l.cap
	case 2:
		units = l.cap - 1
	case 3: // a whole number of tokens
		units = uint64(rng.Int63n(l.burst+1)) * l.p
	default:
		units = uint64(rng.Int63n(int64(l.cap) + 1))
	}
	return FromState(l, units, t0+rng.Int63n(1e12))
}

// randomSpan returns a time span on the scale of the bucket's fill time, sometimes far beyond.
func randomSpan(rng *rand.Rand, l *Limit) int64 {
	fill := l.nanosFor(l.cap)
	switch rng.Intn(4) {
	case 0:
		return rng.Int63n(1000)
	case 1:
		return rng.Int63n(1e15)
	default:
		return rng.Int63n(2*min(fill, 5e14) + 1)
	}
}

func randomSkew(rng *rand.Rand) int64 {
	return []int64{0, 1, int64(DefaultSkew), rng.Int63n(10 * seconds)}[rng.Intn(4)]
}

func TestRefill_TwoStepsEqualOne(t *testing.T) {
	rng := seededRand(t)
	for i := 0; i < 20000; i++ {
		l := randomLimit(t, rng)
		b := randomState(rng, &l)
		skew := randomSkew(rng)
		_, last := b.State()
		// t1 anywhere from the far edge of the skew window (not a reset) to well past last.
		t1 := last - rng.Int63n(skew+1) + rng.Int63n(2)*randomSpan(rng, &l)
		t2 := t1 + 1 + randomSpan(rng, &l)

		two, one := b, b
		two.refill(&l, t1, skew)
		two.refill(&l, t2, skew)
		one.refill(&l, t2, skew)
		if two != one {
			t.Fatalf("limit %v (r=%d p=%d cap=%d) skew %d, start %+v: refill at t1=%d then t2=%d gives %+v, one refill at t2 gives %+v",
				l, l.r, l.p, l.cap, skew, b, t1, t2, two, one)
		}
	}
}

func TestRefill_ManyStepsEqualOne(t *testing.T) {
	rng := seededRand(t)
	for i := 0; i < 3000; i++ {
		l := randomLimit(t, rng)
		b := randomState(rng, &l)
		skew := randomSkew(rng)
		_, last := b.State()
		end := last + randomSpan(rng, &l)
		k := 1 + rng.Intn(64)
		times := make([]int64, k)
		for j := range times {
			times[j] = last + rng.Int63n(end-last+1) // repeats and the endpoints included
		}
		slices.Sort(times)
		times[k-1] = end

		split, one := b, b
		for _, at := range times {
			split.refill(&l, at, skew)
		}
		one.refill(&l, end, skew)
		if split != one {
			t.Fatalf("limit %v, start %+v: refills at %v give %+v, one refill at %d gives %+v", l, b, times, split, end, one)
		}
	}
}

func TestRefill_TokensAppearExactlyAtEmissionEdges(t *testing.T) {
	// From empty, token m appears at exactly ceil(m × p / r) ns, the m-th edge, whether the
	// time is reached in one refill or by stopping at every edge and 1ns before it.
	tests := []struct {
		rate   int64
		period time.Duration
		burst  int64
	}{
		{1000, time.Minute, 0},           // 60ms edges
		{1, time.Hour, 5},                // 1h edges
		{3, time.Second, 0},              // 333333333.33ns: edges alternate rounding
		{7, 86400*time.Second + 1, 0},    // coprime with the period
		{1_000_000_000, time.Second, 50}, // 1ns edges
	}
	for _, tt := range tests {
		l := testLimit(t, tt.rate, tt.period, tt.burst)
		start := emptyBucket(t, &l, t0)
		stepped := start
		for m := int64(1); m <= l.Burst(); m++ {
			edge := t0 + l.nanosFor(uint64(m)*l.p)
			for _, at := range []int64{edge - 1, edge} {
				want := m
				if at < edge {
					want = m - 1
				}
				stepped.refill(&l, at, int64(DefaultSkew))
				direct := start
				direct.refill(&l, at, int64(DefaultSkew))
				if stepped != direct {
					t.Fatalf("%v: refilling at every edge up to %d gives %+v, one refill gives %+v", l, at, stepped, direct)
				}
				if got := direct.Tokens(&l); got != want {
					t.Fatalf("%v: %d tokens at t0+%dns (edge %d at +%dns), want %d", l, got, at-t0, m, edge-t0, want)
				}
			}
		}
		if fill := t0 + l.nanosFor(l.cap); !start.Full(&l, fill) || start.Full(&l, fill-1) {
			t.Fatalf("%v: Full from empty is not exactly at the last edge t0+%dns", l, fill-t0)
		}
	}
}

func TestPeek_ChangesNothing(t *testing.T) {
	l := testLimit(t, 1000, time.Minute, 0)
	times := []int64{t0, t0 + 30*seconds, t0 + hours, t0 - 50*millis, t0 - hours}
	costs := []int64{1, 500, 1000, 1001, 0, -1}

	t.Run("Bucket", func(t *testing.T) {
		b := NewBucket(&l, t0)
		mustTake(t, &b, &l, t0, 600)
		before := b
		for _, at := range times {
			for _, cost := range costs {
				b.Peek(&l, at, cost, DefaultSkew)
				if b != before {
					t.Fatalf("Peek(now=t0%+d, cost=%d) changed the bucket from %+v to %+v", at-t0, cost, before, b)
				}
			}
		}
	})
	t.Run("Keyed", func(t *testing.T) {
		k := NewKeyed(l)
		mustKeyedTake(t, k, "held", t0, 600)
		before, _ := k.Get("held")
		for _, at := range times {
			for _, cost := range costs {
				k.Peek("held", at, cost)
				k.Peek("absent", at, cost)
			}
		}
		if after, ok := k.Get("held"); !ok || after != before {
			t.Fatalf("Peeks changed the held bucket from %+v to %+v (present %v)", before, after, ok)
		}
		if _, ok := k.Get("absent"); ok || k.Len() != 1 {
			t.Fatalf("Peek on an absent key stored a bucket (Len %d)", k.Len())
		}
	})
}

func TestPeek_MatchesTake(t *testing.T) {
	rng := seededRand(t)
	for round := 0; round < 200; round++ {
		l := randomLimit(t, rng)
		skew := time.Duration(randomSkew(rng))
		k := NewKeyed(l, WithSkew(skew))
		var b Bucket // created, like Keyed's, by the first take that is applied
		created := false
		now := t0
		for step := 0; step < 100; step++ {
			switch rng.Intn(4) {
			case 0:
				now += randomSpan(rng, &l) / 16
			case 1:
				now -= rng.Int63n(2*int64(skew) + 2) // within or just beyond the skew window
			}
			cost := 1 + rng.Int63n(l.Burst())
			switch rng.Intn(10) {
			case 0:
				cost = l.Burst() + 1
			case 1:
				cost = -rng.Int63n(2)
			}
			if !created {
				b = NewBucket(&l, now)
			}

			peek, perr := b.Peek(&l, now, cost, skew)
			copied := b
			took, terr := copied.Take(&l, now, cost, skew)
			if !peekMatchesTake(peek, took, cost) || !sameErr(perr, terr) {
				t.Fatalf("Bucket %v at %d cost %d: Peek %+v, %v; Take %+v, %v", l, now, cost, peek, perr, took, terr)
			}
			kpeek, kperr := k.Peek("a", now, cost)
			if kpeek != peek || !sameErr(kperr, perr) {
				t.Fatalf("Keyed %v at %d cost %d: Peek %+v, %v; Bucket Peek %+v, %v", l, now, cost, kpeek, kperr, peek, perr)
			}
			if rng.Intn(2) == 0 { // sometimes actually take, so the state moves on
				ktook, kterr := k.Take("a", now, cost)
				if ktook != took || !sameErr(kterr, terr) {
					t.Fatalf("Keyed %v at %d cost %d: Take %+v, %v; Bucket Take %+v, %v", l, now, cost, ktook, kterr, took, terr)
				}
				if terr == nil {
					b, created = copied, true
				}
			}
		}
	}
}

// peekMatchesTake reports whether a Peek result agrees with the Take result for the same state,
// time and cost. A denied take changes nothing, so the results are identical; for an allowed one
// Peek describes the bucket before the take (cost more whole tokens, and its own ResetAfter).
func peekMatchesTake(peek, took Result, cost int64) bool {
	if !took.Allowed {
		return peek == took
	}
	return peek.Allowed && peek.RetryAfter == 0 && peek.Limit == took.Limit &&
		peek.Remaining == took.Remaining+cost && peek.ResetAfter <= took.ResetAfter
}

// sameErr reports whether a and b are both nil or wrap the same sentinel error.
func sameErr(a, b error) bool {
	if (a == nil) != (b == nil) {
		return false
	}
	for _, s := range []error{ErrInvalidLimit, ErrInvalidCost, ErrCostExceedsBurst} {
		if errors.Is(a, s) != errors.Is(b, s) {
			return false
		}
	}
	return true
}
