package bucket

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// The speed benchmarks run at one fixed time, so nothing refills: a billion tokens a second
// with a burst of 2^50 never runs out, and both limiters do their full bookkeeping per take.
const (
	benchRate  = 1_000_000_000 // per second
	benchBurst = 1 << 50
)

var benchTime = time.Unix(1_700_000_000, 0)

func benchLimit(b *testing.B) Limit { return testLimit(b, benchRate, time.Second, benchBurst) }

func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("key:%012d", i)
	}
	return keys
}

func BenchmarkTakeSingleKey(b *testing.B) {
	const key = "user:00000000042" // 16 bytes
	b.Run("limiter", func(b *testing.B) {
		k := NewKeyed(benchLimit(b))
		now := benchTime.UnixNano()
		b.ReportAllocs()
		for b.Loop() {
			if res, _ := k.Take(key, now, 1); !res.Allowed {
				b.Fatal("denied")
			}
		}
	})
	b.Run("limiter_single", func(b *testing.B) { // one concurrency-safe bucket, like rate.Limiter
		lm := NewLimiter(benchLimit(b), benchTime.UnixNano())
		now := benchTime.UnixNano()
		b.ReportAllocs()
		for b.Loop() {
			if res, _ := lm.Take(now, 1); !res.Allowed {
				b.Fatal("denied")
			}
		}
	})
	b.Run("xrate", func(b *testing.B) {
		lim := rate.NewLimiter(benchRate, benchBurst)
		b.ReportAllocs()
		for b.Loop() {
			if !lim.AllowN(benchTime, 1) {
				b.Fatal("denied")
			}
		}
	})
}

func BenchmarkBucketTake(b *testing.B) {
	l := benchLimit(b)
	now := benchTime.UnixNano()
	bk := NewBucket(&l, now)
	b.ReportAllocs()
	for b.Loop() {
		if res, _ := bk.Take(&l, now, 1, DefaultSkew); !res.Allowed {
			b.Fatal("denied")
		}
	}
}

// BenchmarkTakeParallelManyKeys: every goroutine (GOMAXPROCS of them) cycles over the same
// 10,000 keys from its own starting point. Both stores hold every key before the timer starts.
func BenchmarkTakeParallelManyKeys(b *testing.B) {
	keys := benchKeys(10_000)
	b.Run("limiter", func(b *testing.B) {
		k := NewKeyed(benchLimit(b))
		now := benchTime.UnixNano()
		for _, key := range keys {
			k.Take(key, now, 1)
		}
		var worker atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := int(worker.Add(1)*7919) % len(keys)
			for pb.Next() {
				if res, _ := k.Take(keys[i], now, 1); !res.Allowed {
					panic("denied")
				}
				if i++; i == len(keys) {
					i = 0
				}
			}
		})
	})
	b.Run("xrate_mutex_map", func(b *testing.B) {
		var mu sync.Mutex
		m := make(map[string]*rate.Limiter)
		get := func(key string) *rate.Limiter {
			mu.Lock()
			lim, ok := m[key]
			if !ok {
				lim = rate.NewLimiter(benchRate, benchBurst)
				m[key] = lim
			}
			mu.Unlock()
			return lim
		}
		for _, key := range keys {
			get(key).AllowN(benchTime, 1)
		}
		var worker atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := int(worker.Add(1)*7919) % len(keys)
			for pb.Next() {
				if !get(keys[i]).AllowN(benchTime, 1) {
					panic("denied")
				}
				if i++; i == len(keys) {
					i = 0
				}
			}
		})
	})
}

// memoryPerKey inserts n keys of 16-byte names into an empty Keyed store with Take and returns
// the live heap growth per key after a full GC: map slots, buckets and the key strings.
func memoryPerKey(tb testing.TB, n int) (float64, *Keyed) {
	tb.Helper()
	k := NewKeyed(testLimit(tb, 1000, time.Minute, 0))
	now := benchTime.UnixNano()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("key:%012d", i)
		if len(key) != 16 {
			tb.Fatalf("key %q is %d bytes, want 16", key, len(key))
		}
		k.Take(key, now, 1)
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(k)
	if k.Len() != n {
		tb.Fatalf("store holds %d keys, want %d", k.Len(), n)
	}
	return (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / float64(n), k
}

// BenchmarkMemoryPerKey reports B/key for 1,000,000 keys. The insertion runs once per
// invocation (outside b.Loop); the timed loop then peeks at keys of the full store.
func BenchmarkMemoryPerKey(b *testing.B) {
	const n = 1_000_000
	perKey, k := memoryPerKey(b, n)
	keys := benchKeys(1024)
	now := benchTime.UnixNano()
	i := 0
	for b.Loop() {
		k.Peek(keys[i&1023], now, 1)
		i++
	}
	b.ReportMetric(perKey, "B/key")
}

func TestMemoryPerKey_UnderTarget(t *testing.T) {
	const (
		n      = 200_000
		target = 128.0
	)
	perKey, k := memoryPerKey(t, n)
	runtime.KeepAlive(k)
	t.Logf("%.1f B/key for %d keys of 16 bytes", perKey, n)
	if perKey > target {
		t.Fatalf("%.1f B/key for %d keys, target <= %.0f", perKey, n, target)
	}
}
