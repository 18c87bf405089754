package bucket

import (
	"fmt"
	"math/big"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestKeyed_ConcurrentTakesGrantExactlyCapacity(t *testing.T) {
	// No refill (one fixed now): however 250 goroutines interleave, the grants on a key add up
	// to exactly the whole tokens it holds, never more (lost update) and never less.
	tests := []struct {
		name     string
		burst    int64
		keys     int
		cost     int64
		attempts int // takes per goroutine per key
		want     int64
	}{
		{"one key capacity 100", 100, 1, 1, 4, 100},
		{"one key capacity 1000", 1000, 1, 1, 8, 1000},
		{"one key capacity 100 cost 3", 100, 1, 3, 4, 99},
		{"many keys capacity 100", 100, 200, 1, 1, 100},
	}
	const goroutines = 250
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := NewKeyed(testLimit(t, tt.burst, time.Hour, 0))
			keys := make([]string, tt.keys)
			for i := range keys {
				keys[i] = fmt.Sprintf("key-%d", i)
			}
			granted := make([]atomic.Int64, tt.keys)
			var errs atomic.Int64
			start := make(chan struct{})
			var wg sync.WaitGroup
			for g := 0; g < goroutines; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					for a := 0; a < tt.attempts; a++ {
						for i := range keys {
							j := (i + g) % len(keys) // each goroutine starts at a different key
							res, err := k.Take(keys[j], t0, tt.cost)
							if err != nil {
								errs.Add(1)
							}
							if res.Allowed {
								granted[j].Add(tt.cost)
							}
						}
					}
				}()
			}
			close(start)
			wg.Wait()
			if n := errs.Load(); n != 0 {
				t.Fatalf("%d takes returned an error", n)
			}
			for i := range keys {
				if got := granted[i].Load(); got != tt.want {
					t.Fatalf("key %s: %d tokens granted to %d goroutines × %d attempts, want exactly %d",
						keys[i], got, goroutines, tt.attempts, tt.want)
				}
				if b, _ := k.Get(keys[i]); b.Tokens(addr(k.Limit())) != tt.burst-tt.want {
					t.Fatalf("key %s: %d tokens left, want %d", keys[i], b.Tokens(addr(k.Limit())), tt.burst-tt.want)
				}
			}
		})
	}
}

func addr[T any](v T) *T { return &v }

func TestKeyed_SetLimitDuringConcurrentTakesDropsNone(t *testing.T) {
	// With one fixed now there is no refill, so each key's fraction of capacity starts at 1,
	// falls by cost/burst on every granted take (burst of the limit that granted it, reported
	// as Result.Limit) and is kept, rounded down by under one unit, by every limit change.
	// After the changes stop, the keys are drained. Then for every key exactly:
	//   1 - Σ cost/burst - finalUnits/finalCap  ∈  [0, changes/minCap)
	// and, for limits of equal capacity in units, that slack is exactly 0.
	tests := []struct {
		name   string
		limits [][3]int64 // rate, period, burst; cycled by the changer
		exact  bool
	}{
		{"equal unit capacity", [][3]int64{{1000, minutes, 0}, {5000, minutes, 0}, {3000, minutes, 0}}, true},
		{"mixed capacities", [][3]int64{{1000, minutes, 0}, {7, seconds, 10}, {1, hours, 3}, {5000, minutes, 0}}, false},
	}
	const (
		goroutines = 12
		nkeys      = 1024 // 16 per shard, so a limit change spends a while in each shard
		passes     = 16
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limits := make([]Limit, len(tt.limits))
			minCap := uint64(1 << 63)
			for i, v := range tt.limits {
				limits[i] = testLimit(t, v[0], time.Duration(v[1]), v[2])
				minCap = min(minCap, limits[i].cap)
			}
			k := NewKeyed(limits[0])
			keys := make([]string, nkeys)
			for i := range keys {
				keys[i] = fmt.Sprintf("k%04d", i)
			}

			// consumed[key] = Σ cost/burst over granted takes, per goroutine to avoid sharing.
			consumed := make([][]*big.Rat, goroutines)
			var errs atomic.Int64
			var wg sync.WaitGroup
			var takersDone atomic.Bool
			changes := 0
			changerDone := make(chan struct{})
			go func() { // the changer: SetLimit over and over while the takers run
				defer close(changerDone)
				for i := 1; !takersDone.Load() || i < 4; i++ {
					k.SetLimit(limits[i%len(limits)], t0)
					changes++
					runtime.Gosched()
				}
				k.SetLimit(limits[0], t0)
				changes++
			}()
			for g := 0; g < goroutines; g++ {
				consumed[g] = make([]*big.Rat, nkeys)
				for i := range consumed[g] {
					consumed[g][i] = new(big.Rat)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for p := 0; p < passes; p++ {
						for i := range keys {
							j := (i + g*5) % nkeys
							cost := int64(1 + (p+g+i)%3)
							res, err := k.Take(keys[j], t0, cost)
							if err != nil {
								errs.Add(1)
								continue
							}
							if res.Allowed {
								consumed[g][j].Add(consumed[g][j], big.NewRat(cost, res.Limit))
							}
						}
					}
				}()
			}
			wg.Wait()
			takersDone.Store(true)
			<-changerDone
			if n := errs.Load(); n != 0 {
				t.Fatalf("%d takes returned an error during limit changes", n)
			}
			t.Logf("%d limit changes during %d takes", changes, goroutines*passes*nkeys)

			final := limits[0]
			for j, key := range keys {
				total := new(big.Rat)
				for g := range consumed {
					total.Add(total, consumed[g][j])
				}
				// Drain the whole tokens left at the final limit.
				if left, _ := k.Peek(key, t0, 1); left.Remaining > 0 {
					if res := mustKeyedTake(t, k, key, t0, left.Remaining); !res.Allowed {
						t.Fatalf("key %s: taking Peek's Remaining %d was denied: %+v", key, left.Remaining, res)
					}
					total.Add(total, big.NewRat(left.Remaining, final.Burst()))
				}
				b, _ := k.Get(key)
				units, _ := b.State()
				if units >= final.p {
					t.Fatalf("key %s: %d units left after draining, a whole token is %d", key, units, final.p)
				}
				// slack = 1 - consumed - units/cap
				slack := new(big.Rat).Sub(big.NewRat(1, 1), total)
				slack.Sub(slack, new(big.Rat).SetFrac(new(big.Int).SetUint64(units), new(big.Int).SetUint64(final.cap)))
				// Each change rounds a key down by less than one unit of the new capacity.
				maxSlack := new(big.Rat).SetFrac64(int64(changes), int64(minCap))
				if slack.Sign() < 0 || tt.exact && slack.Sign() != 0 || !tt.exact && slack.Cmp(maxSlack) >= 0 {
					t.Fatalf("key %s: granted fraction %s + left %d/%d units leaves %s of capacity unaccounted; want 0 (exact) or within [0, %s)",
						key, total.FloatString(12), units, final.cap, slack.FloatString(15), maxSlack.FloatString(15))
				}
			}
		})
	}
}

func TestWithSkew_ConfiguresTolerance(t *testing.T) {
	tests := []struct {
		name     string
		opts     []Option
		wantSkew time.Duration
	}{
		{"default", nil, DefaultSkew},
		{"1s", []Option{WithSkew(time.Second)}, time.Second},
		{"zero", []Option{WithSkew(0)}, 0},
		{"negative is ignored", []Option{WithSkew(-time.Second)}, DefaultSkew},
		{"last wins", []Option{WithSkew(time.Second), WithSkew(3 * time.Millisecond)}, 3 * time.Millisecond},
	}
	l := testLimit(t, 1000, time.Minute, 0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := NewKeyed(l, tt.opts...)
			if k.Skew() != tt.wantSkew {
				t.Fatalf("Skew() = %v, want %v", k.Skew(), tt.wantSkew)
			}
			skew := int64(tt.wantSkew)
			mustKeyedTake(t, k, "within", t0, 1000)
			mustKeyedTake(t, k, "beyond", t0, 1000)
			if skew > 0 {
				mustKeyedTake(t, k, "within", t0-skew, 1)
				if b, _ := k.Get("within"); b != (Bucket{0, t0}) {
					t.Fatalf("step back of exactly the skew %v: bucket %+v, want unchanged {0 %d}", tt.wantSkew, b, t0)
				}
			}
			mustKeyedTake(t, k, "beyond", t0-skew-1, 1)
			if b, _ := k.Get("beyond"); b != (Bucket{0, t0 - skew - 1}) {
				t.Fatalf("step back of skew+1ns: bucket %+v, want re-anchored {0 %d}", b, t0-skew-1)
			}
		})
	}
}

func TestEvict_DropsOnlyFullBuckets(t *testing.T) {
	l := testLimit(t, 1000, time.Minute, 0) // 60ms per token
	k := NewKeyed(l)
	mustKeyedTake(t, k, "one", t0, 1)         // full at t0+60ms
	mustKeyedTake(t, k, "half", t0, 500)      // full at t0+30s
	mustKeyedTake(t, k, "ahead", t0+hours, 1) // anchored ahead of every eviction time below
	k.Put("full", NewBucket(&l, t0))          // full already

	steps := []struct {
		at      int64
		evicted int
		kept    []string
	}{
		{t0, 1, []string{"one", "half", "ahead"}},
		{t0 + 60*millis - 1, 0, []string{"one", "half", "ahead"}},
		{t0 + 60*millis, 1, []string{"half", "ahead"}},
		{t0 + 30*seconds - 1, 0, []string{"half", "ahead"}},
		{t0 + 30*seconds, 1, []string{"ahead"}},
		{t0 + hours - 1, 0, []string{"ahead"}}, // behind its anchor: not known to be full
		{t0 + hours + 60*millis, 1, nil},
	}
	skew := int64(DefaultSkew) // eviction looks a skew back, so each step's clock reads that much later
	for i, s := range steps {
		if n := k.Evict(s.at + skew); n != s.evicted {
			t.Fatalf("step %d: Evict(t0%+d) dropped %d, want %d", i, s.at-t0, n, s.evicted)
		}
		if k.Len() != len(s.kept) {
			t.Fatalf("step %d: Len %d after eviction, want %d", i, k.Len(), len(s.kept))
		}
		for _, key := range s.kept {
			if _, ok := k.Get(key); !ok {
				t.Fatalf("step %d: %s evicted before it was full", i, key)
			}
		}
	}
}

func TestEvictShard_DropsOnlyThatShard(t *testing.T) {
	l := testLimit(t, 1000, time.Minute, 0)
	k := NewKeyed(l)
	perShard := make([]int, ShardCount)
	for i := 0; i < 1000; i++ {
		key := fmt.Sprint(i)
		mustKeyedTake(t, k, key, t0, 1)
		perShard[shardHash(key)&(shardCount-1)]++
	}
	full := t0 + 60*millis + int64(DefaultSkew) // full at t0+60ms; evicted once that is a skew behind
	for _, i := range []int{-1, ShardCount, 1 << 20} {
		if n := k.EvictShard(i, full); n != 0 {
			t.Fatalf("EvictShard(%d) out of range dropped %d", i, n)
		}
	}
	left := 1000
	for i := 0; i < ShardCount; i++ {
		if n := k.EvictShard(i, full-1); n != 0 {
			t.Fatalf("EvictShard(%d) before full dropped %d", i, n)
		}
		if n := k.EvictShard(i, full); n != perShard[i] {
			t.Fatalf("EvictShard(%d) dropped %d, the shard holds %d", i, n, perShard[i])
		}
		left -= perShard[i]
		if k.Len() != left {
			t.Fatalf("after EvictShard(%d): Len %d, want %d", i, k.Len(), left)
		}
	}
}

func TestEvict_TakeAfterEvictionMatchesStoreWithoutEviction(t *testing.T) {
	// Over a random sequence on a clock that never runs backward, a store that evicts answers
	// every take and peek exactly as one that never evicts, through limit changes too.
	rng := seededRand(t)
	limits := [][3]int64{{1000, minutes, 0}, {5000, minutes, 0}, {3, seconds, 5}, {7, 86400*seconds + 1, 0}, {1, hours, 2}}
	var evicted, allowed, denied int
	for round := 0; round < 40; round++ {
		pick := func() Limit {
			v := limits[rng.Intn(len(limits))]
			return testLimit(t, v[0], time.Duration(v[1]), v[2])
		}
		l := pick()
		keep, evict := NewKeyed(l), NewKeyed(l)
		keys := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
		now := t0
		for step := 0; step < 400; step++ {
			key := keys[rng.Intn(len(keys))]
			switch op := rng.Intn(10); {
			case op < 5:
				cost := 1 + rng.Int63n(keep.Limit().Burst())
				r1, e1 := keep.Take(key, now, cost)
				r2, e2 := evict.Take(key, now, cost)
				if r1 != r2 || !sameErr(e1, e2) {
					t.Fatalf("round %d step %d: Take(%s, t0%+d, %d): without eviction %+v, %v; with %+v, %v", round, step, key, now-t0, cost, r1, e1, r2, e2)
				}
				if r1.Allowed {
					allowed++
				} else {
					denied++
				}
			case op == 5:
				cost := 1 + rng.Int63n(keep.Limit().Burst())
				r1, _ := keep.Peek(key, now, cost)
				r2, _ := evict.Peek(key, now, cost)
				if r1 != r2 {
					t.Fatalf("round %d step %d: Peek(%s, t0%+d, %d): without eviction %+v; with %+v", round, step, key, now-t0, cost, r1, r2)
				}
			case op == 6:
				// Forward by a fraction of the fill time, so buckets are caught both full and not.
				now += rng.Int63n(fillTime(keep.Limit())/2 + 1)
			case op == 7:
				evicted += evict.Evict(now)
			case op == 8:
				evicted += evict.EvictShard(rng.Intn(ShardCount), now)
			case op == 9 && rng.Intn(4) == 0:
				next := pick()
				keep.SetLimit(next, now)
				evict.SetLimit(next, now)
			}
		}
	}
	if evicted == 0 || allowed == 0 || denied == 0 {
		t.Fatalf("sequence too tame to test anything: %d evicted, %d allowed, %d denied", evicted, allowed, denied)
	}
	t.Logf("%d evictions, %d allowed and %d denied takes compared", evicted, allowed, denied)
}

// fillTime is the time a bucket of limit l takes to refill from empty.
func fillTime(l Limit) int64 { return l.nanosFor(l.cap) }

func TestEvict_TakeWithinSkewBeforeEvictionTimeMatchesStoreWithoutEviction(t *testing.T) {
	l := testLimit(t, 1, time.Second, 1)
	keep, evict := NewKeyed(l), NewKeyed(l)
	mustKeyedTake(t, keep, "k", t0, 1)
	mustKeyedTake(t, evict, "k", t0, 1)
	// Full again exactly 1s later, but a take may carry a clock up to the skew behind the sweeper's:
	// at t0+1s the bucket is not dropped yet; once the sweeper's clock is a skew past, it is.
	if n := evict.Evict(t0 + seconds); n != 0 {
		t.Fatalf("Evict at t0+1s dropped %d, want 0 (a take at t0+1s-50ms would still be denied)", n)
	}
	if n := evict.Evict(t0 + seconds + int64(DefaultSkew)); n != 1 {
		t.Fatalf("Evict at t0+1s+skew dropped %d, want 1", n)
	}
	at := t0 + seconds + int64(DefaultSkew) - 50*millis // 50ms behind the evicting clock, within DefaultSkew
	r1 := mustKeyedTake(t, keep, "k", at, 1)
	r2 := mustKeyedTake(t, evict, "k", at, 1)
	if r1 != r2 {
		t.Fatalf("take 50ms before the eviction time: without eviction %+v; with eviction %+v", r1, r2)
	}
}

func TestStartSweeper_EvictsInBackgroundAndStops(t *testing.T) {
	l := testLimit(t, 1000, time.Minute, 0)
	k := NewKeyed(l)
	for i := 0; i < 100; i++ {
		mustKeyedTake(t, k, fmt.Sprint("short", i), t0, 1)   // full at t0+60ms
		mustKeyedTake(t, k, fmt.Sprint("long", i), t0, 1000) // full at t0+60s
	}
	var clock, reads atomic.Int64
	clock.Store(t0)
	stop := k.StartSweeper(time.Millisecond, func() int64 {
		reads.Add(1)
		return clock.Load()
	})
	deadline := time.Now().Add(10 * time.Second)
	// waitSweeps waits until the sweeper has read the clock n more times (so n more sweeps ran).
	waitSweeps := func(n int64) {
		t.Helper()
		target := reads.Load() + n
		for reads.Load() < target {
			if time.Now().After(deadline) {
				t.Fatalf("sweeper made %d clock reads, waiting for %d", reads.Load(), target)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	waitSweeps(2)
	if k.Len() != 200 {
		t.Fatalf("sweeps at t0 evicted buckets that were not full: Len %d, want 200", k.Len())
	}
	clock.Store(t0 + 60*millis + int64(DefaultSkew))
	waitSweeps(2) // the first may have read the old time
	if k.Len() != 100 {
		t.Fatalf("after sweeps at t0+60ms+skew: Len %d, want the 100 long buckets", k.Len())
	}
	for i := 0; i < 100; i++ {
		if _, ok := k.Get(fmt.Sprint("long", i)); !ok {
			t.Fatalf("long%d evicted before it was full", i)
		}
	}
	clock.Store(t0 + minutes + int64(DefaultSkew))
	waitSweeps(2)
	if k.Len() != 0 {
		t.Fatalf("after sweeps at t0+1m+skew: Len %d, want 0", k.Len())
	}

	stopped := make(chan struct{})
	go func() {
		stop()
		stop() // idempotent
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("stop() did not return")
	}
	after := reads.Load()
	mustKeyedTake(t, k, "late", t0, 1)
	clock.Store(t0 + hours)
	time.Sleep(5 * time.Millisecond) // several intervals: a running sweeper would read the clock
	if reads.Load() != after || k.Len() != 1 {
		t.Fatalf("sweeper still running after stop(): %d clock reads since, Len %d", reads.Load()-after, k.Len())
	}
}

func TestKeyed_PutGetRangeSeeTheSameBuckets(t *testing.T) {
	l := testLimit(t, 1000, time.Minute, 0)
	k := NewKeyed(l)
	want := map[string]Bucket{}
	for i := 0; i < 300; i++ {
		key := fmt.Sprint("k", i)
		b := FromState(&l, uint64(i)*l.p, t0+int64(i))
		k.Put(key, b)
		want[key] = b
	}
	got := map[string]Bucket{}
	k.Range(func(key string, b Bucket) {
		if _, dup := got[key]; dup {
			t.Errorf("Range visited %s twice", key)
		}
		got[key] = b
	})
	if len(got) != len(want) || k.Len() != len(want) {
		t.Fatalf("Range visited %d buckets, Len %d, want %d", len(got), k.Len(), len(want))
	}
	for key, b := range want {
		if got[key] != b {
			t.Fatalf("Range gave %s = %+v, want %+v", key, got[key], b)
		}
		if g, ok := k.Get(key); !ok || g != b {
			t.Fatalf("Get(%s) = %+v, %v; want %+v", key, g, ok, b)
		}
		// The stored state is what takes use: k42 holds 42 tokens as of t0+42ns.
		if res, _ := k.Peek(key, t0+299, 1); res.Remaining != b.Tokens(&l) {
			t.Fatalf("Peek(%s) Remaining %d, want %d", key, res.Remaining, b.Tokens(&l))
		}
	}
}
