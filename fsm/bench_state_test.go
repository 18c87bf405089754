package fsm_test

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/limiterd/limiter/fsm"
)

// fillFSM applies one take of one token on each of `buckets` distinct 16-byte keys, in entries of
// 1,000, arriving at `rate` per second of log time. With withIDs each take carries a 16-byte
// request ID, and the exactly-once table holds every one of them when rate × DedupWindow (2
// minutes) covers the whole fill; without, the table stays empty.
func fillFSM(tb testing.TB, buckets, rate int, withIDs bool) *fsm.FSM {
	tb.Helper()
	f := newFSM(tb)
	mustSetLimit(tb, f, t0, "api", 1, time.Hour, 10) // refills slowly: no bucket is full again during the fill
	const per = 1000
	stamp := t0
	step := int64(time.Second) * per / int64(rate)
	idx := uint64(10)
	for i := 0; i < buckets; i += per {
		cmd := fsm.Command{Stamp: stamp, TakeBatch: []fsm.Take{}}
		for j := i; j < i+per && j < buckets; j++ {
			id := ""
			if withIDs {
				id = fmt.Sprintf("req-%012d", j)
			}
			cmd.TakeBatch = append(cmd.TakeBatch, fsm.Take{RequestID: id, Items: []fsm.Item{{Limit: "api", Key: fmt.Sprintf("user:%011d", j), Cost: 1}}})
		}
		if resp := f.Apply(idx, cmd.Encode(nil)); resp.Err != nil {
			tb.Fatalf("apply: %v", resp.Err)
		}
		idx++
		stamp += step
	}
	return f
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkFSMMemory reports the FSM's memory with 1,000,000 buckets of 16-byte keys: per bucket
// with an empty exactly-once table, and per live request ID with the table filled at 20,000
// requests per second (all within the 2-minute window).
func BenchmarkFSMMemory(b *testing.B) {
	const n = 1_000_000
	b.Run("buckets", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			before := heapInUse()
			f := fillFSM(b, n, 20_000, false)
			after := heapInUse()
			if st := f.Stats(); st.Buckets != n || st.RequestIDs != 0 {
				b.Fatalf("stats %+v", st)
			}
			b.ReportMetric(float64(after-before)/n, "B/bucket")
			runtime.KeepAlive(f)
		}
	})
	b.Run("buckets+request-ids", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			before := heapInUse()
			f := fillFSM(b, n, 20_000, true)
			after := heapInUse()
			if st := f.Stats(); st.Buckets != n || st.RequestIDs != n {
				b.Fatalf("stats %+v", st)
			}
			b.ReportMetric(float64(after-before)/n, "B/(bucket+id)")
			runtime.KeepAlive(f)
		}
	})
}

// BenchmarkSnapshotRestore1M reports the time to persist and to restore a snapshot of 1,000,000
// buckets (and, in the second case, 1,000,000 live request IDs too), and the snapshot's size.
func BenchmarkSnapshotRestore1M(b *testing.B) {
	for _, withIDs := range []bool{false, true} {
		name := "buckets"
		if withIDs {
			name = "buckets+request-ids"
		}
		b.Run(name, func(b *testing.B) {
			f := fillFSM(b, 1_000_000, 20_000, withIDs)
			var buf bytes.Buffer
			b.ResetTimer()
			var persist, restore time.Duration
			for i := 0; i < b.N; i++ {
				buf.Reset()
				start := time.Now()
				if err := f.Snapshot().Persist(&buf); err != nil {
					b.Fatal(err)
				}
				persist += time.Since(start)
				g := newFSM(b)
				start = time.Now()
				if err := g.Restore(bytes.NewReader(buf.Bytes()), 1); err != nil {
					b.Fatal(err)
				}
				restore += time.Since(start)
			}
			b.ReportMetric(persist.Seconds()/float64(b.N), "s/persist")
			b.ReportMetric(restore.Seconds()/float64(b.N), "s/restore")
			b.ReportMetric(float64(buf.Len()), "bytes")
		})
	}
}

// limitsMemory creates n limits with no buckets and returns the heap they take per limit.
func limitsMemory(tb testing.TB, n int) (float64, *fsm.FSM) {
	tb.Helper()
	cfg := fsm.DefaultConfig()
	cfg.MaxLimits = n
	f, err := fsm.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	before := heapInUse()
	for i := 0; i < n; i++ {
		mustSetLimit(tb, f, t0, fmt.Sprintf("tenant-%06d", i), 100, time.Second, 0)
	}
	after := heapInUse()
	return (float64(after) - float64(before)) / float64(n), f
}

// BenchmarkLimitMemory reports the heap a limit with no buckets takes (10,000 limits, the default
// cap).
func BenchmarkLimitMemory(b *testing.B) {
	for i := 0; i < b.N; i++ {
		per, f := limitsMemory(b, 10_000)
		b.ReportMetric(per, "B/limit")
		runtime.KeepAlive(f)
	}
}

// A limit nobody has used yet costs under 1 KiB (its bucket shards are made on first use): 10,000
// limits fit in about 10 MiB.
func TestLimitMemory_UnderOneKiB(t *testing.T) {
	per, f := limitsMemory(t, 10_000)
	runtime.KeepAlive(f)
	t.Logf("%.0f B per limit with no buckets", per)
	if per > 1024 {
		t.Fatalf("%.0f B per limit with no buckets, want under 1 KiB", per)
	}
}

// A recorded request ID of a one-item take costs at most 64 bytes (about 60 measured), so the
// table's cap can be derived from a memory budget (DedupMaxFor).
func TestDedupMemory_UnderTarget(t *testing.T) {
	const n = 200_000
	h0 := heapInUse()
	f := fillFSM(t, n, 20_000, true) // buckets and request IDs
	h1 := heapInUse()
	g := fillFSM(t, n, 20_000, false) // the same buckets alone
	h2 := heapInUse()
	runtime.KeepAlive(f)
	runtime.KeepAlive(g)
	perID := (float64(h1-h0) - float64(h2-h1)) / n
	t.Logf("%.1f B per recorded request ID", perID)
	if perID > fsm.DedupRecordBytes {
		t.Fatalf("%.1f B per recorded request ID, want at most %d", perID, fsm.DedupRecordBytes)
	}
}
