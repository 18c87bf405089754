package bucket

import (
	"math/rand"
	"os"
	"strconv"
	"testing"
	"time"
)

// t0 is an arbitrary, realistic Unix-nanosecond epoch for tests (2023-11-14).
const t0 = int64(1_700_000_000) * int64(time.Second)

// Durations as int64 nanoseconds, the unit of the package's times.
const (
	millis  = int64(time.Millisecond)
	seconds = int64(time.Second)
	minutes = int64(time.Minute)
	hours   = int64(time.Hour)
)

// testLimit builds a limit or fails the test.
func testLimit(tb testing.TB, rate int64, period time.Duration, burst int64) Limit {
	tb.Helper()
	l, err := NewLimit(rate, period, burst)
	if err != nil {
		tb.Fatalf("NewLimit(%d, %v, %d): %v", rate, period, burst, err)
	}
	return l
}

// mustTake is Bucket.Take with DefaultSkew that fails the test on an error.
func mustTake(tb testing.TB, b *Bucket, l *Limit, now, cost int64) Result {
	tb.Helper()
	res, err := b.Take(l, now, cost, DefaultSkew)
	if err != nil {
		tb.Fatalf("Take(now=%d, cost=%d): unexpected error %v", now, cost, err)
	}
	return res
}

// mustKeyedTake is Keyed.Take that fails the test on an error.
func mustKeyedTake(tb testing.TB, k *Keyed, key string, now, cost int64) Result {
	tb.Helper()
	res, err := k.Take(key, now, cost)
	if err != nil {
		tb.Fatalf("Keyed.Take(%q, now=%d, cost=%d): unexpected error %v", key, now, cost, err)
	}
	return res
}

// emptyBucket returns a bucket that was full and then drained completely at now.
func emptyBucket(tb testing.TB, l *Limit, now int64) Bucket {
	tb.Helper()
	b := NewBucket(l, now)
	if res := mustTake(tb, &b, l, now, l.Burst()); !res.Allowed {
		tb.Fatalf("draining a full bucket of %v was denied: %+v", *l, res)
	}
	return b
}

// wantState fails the test unless b holds exactly units sub-token units anchored at last.
func wantState(tb testing.TB, what string, b Bucket, units uint64, last int64) {
	tb.Helper()
	gotUnits, gotLast := b.State()
	if gotUnits != units || gotLast != last {
		tb.Fatalf("%s: state (units %d, last %d), want (units %d, last %d)", what, gotUnits, gotLast, units, last)
	}
}

// seededRand returns a math/rand source seeded from $BUCKET_SEED, or from the clock when it is
// unset, and logs the seed so a failure can be replayed.
func seededRand(tb testing.TB) *rand.Rand {
	tb.Helper()
	seed := time.Now().UnixNano()
	if s := os.Getenv("BUCKET_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			tb.Fatalf("BUCKET_SEED=%q: %v", s, err)
		}
		seed = v
	}
	tb.Logf("seed %d (replay with BUCKET_SEED=%d)", seed, seed)
	return rand.New(rand.NewSource(seed))
}
