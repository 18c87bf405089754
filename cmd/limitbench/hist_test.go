package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// exactQuantile returns the value of rank ceil(q·n) (at least 1) of sorted, the definition that
// Hist.Quantile approximates.
func exactQuantile(sorted []time.Duration, q float64) time.Duration {
	if q >= 1 {
		return sorted[len(sorted)-1]
	}
	rank := max(int(math.Ceil(q*float64(len(sorted)))), 1)
	return sorted[rank-1]
}

// relErr returns |got-want|/want (0 when both are 0).
func relErr(got, want time.Duration) float64 {
	if want == 0 {
		return math.Abs(float64(got))
	}
	return math.Abs(float64(got-want)) / float64(want)
}

// quantiles are the quantiles checked against exact values.
var quantiles = []float64{0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1}

// checkAgainstExact records values into a histogram and checks every quantile, the count, the
// exact minimum, maximum and mean against the values themselves.
func checkAgainstExact(t *testing.T, name string, values []time.Duration) {
	t.Helper()
	h := NewHist()
	var sum float64
	for _, v := range values {
		h.Record(v)
		sum += float64(v)
	}
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	if h.Count() != uint64(len(values)) {
		t.Fatalf("%s: count %d, want %d", name, h.Count(), len(values))
	}
	if h.Min() != sorted[0] || h.Max() != sorted[len(sorted)-1] {
		t.Errorf("%s: min/max %v/%v, want %v/%v", name, h.Min(), h.Max(), sorted[0], sorted[len(sorted)-1])
	}
	if e := relErr(h.Mean(), time.Duration(sum/float64(len(values)))); e > 1e-9 {
		t.Errorf("%s: mean %v off by %.2g", name, h.Mean(), e)
	}
	for _, q := range quantiles {
		got, want := h.Quantile(q), exactQuantile(sorted, q)
		if e := relErr(got, want); e > 0.01 {
			t.Errorf("%s: q=%v: got %v, want %v (relative error %.3f%% > 1%%)", name, q, got, want, 100*e)
		}
	}
}

// TestHistQuantilesMatchExactPercentiles checks the histogram against exact percentiles of
// random data from several distributions spanning 1 µs to 60 s.
func TestHistQuantilesMatchExactPercentiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 200_000
	dists := map[string]func() time.Duration{
		// Log-uniform over the whole promised range, 1 µs to 60 s.
		"log-uniform 1us-60s": func() time.Duration {
			return time.Duration(math.Exp(math.Log(1e3) + rng.Float64()*(math.Log(60e9)-math.Log(1e3))))
		},
		// A typical RPC latency: log-normal around 1 ms.
		"log-normal ~1ms": func() time.Duration {
			return time.Duration(1e6 * math.Exp(rng.NormFloat64()*0.8))
		},
		// Uniform in a narrow band, where neighbouring ranks share buckets.
		"uniform 100-200us": func() time.Duration {
			return time.Duration(100_000 + rng.Int64N(100_000))
		},
		// A bimodal mix with a rare slow tail.
		"bimodal with tail": func() time.Duration {
			if rng.IntN(1000) == 0 {
				return time.Duration(rng.Int64N(int64(5 * time.Second)))
			}
			return time.Duration(200_000 + rng.Int64N(50_000))
		},
		// Small values are counted exactly.
		"exact below 128ns": func() time.Duration { return time.Duration(rng.Int64N(128)) },
	}
	for name, gen := range dists {
		values := make([]time.Duration, n)
		for i := range values {
			values[i] = gen()
		}
		checkAgainstExact(t, name, values)
	}
	// A small sample, where every rank matters.
	small := []time.Duration{3 * time.Millisecond, time.Microsecond, 42 * time.Second, 7 * time.Millisecond, 900 * time.Microsecond}
	checkAgainstExact(t, "five values", small)
}

// TestHistBucketsCoverRangeWithBoundedError walks the bucket layout: buckets are contiguous, and
// every bucket from 1 µs to 60 s is at most 1% of its lower bound wide, so any value in it is
// within 1% of the reported midpoint.
func TestHistBucketsCoverRangeWithBoundedError(t *testing.T) {
	var next uint64
	for i := 0; i < numBuckets; i++ {
		lo, w := bucketBounds(i)
		if lo != next {
			t.Fatalf("bucket %d starts at %d, want %d (gap or overlap)", i, lo, next)
		}
		if bucketIndex(lo) != i || bucketIndex(lo+w-1) != i {
			t.Fatalf("bucket %d [%d,%d): index of bounds %d/%d", i, lo, lo+w, bucketIndex(lo), bucketIndex(lo+w-1))
		}
		if lo >= 1000 && lo <= uint64(60*time.Second) && float64(w)/float64(lo) > 0.01 {
			t.Fatalf("bucket %d [%d,+%d) is %.2f%% wide", i, lo, w, 100*float64(w)/float64(lo))
		}
		next = lo + w
	}
	if next < uint64(60*time.Second) {
		t.Fatalf("buckets end at %v, want at least 60s", time.Duration(next))
	}
	// Values beyond the range still count and keep the exact maximum.
	h := NewHist()
	h.Record(2 * time.Minute)
	h.Record(-time.Second) // clamped to zero
	if h.Count() != 2 || h.Max() != 2*time.Minute || h.Min() != 0 || h.Quantile(1) != 2*time.Minute {
		t.Fatalf("out-of-range values: count %d min %v max %v q1 %v", h.Count(), h.Min(), h.Max(), h.Quantile(1))
	}
}

// TestHistMergeEqualsSingle checks that merging per-goroutine histograms gives the same counts
// and quantiles as recording everything into one.
func TestHistMergeEqualsSingle(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	all := NewHist()
	parts := []*Hist{NewHist(), NewHist(), NewHist(), NewHist()}
	for i := 0; i < 50_000; i++ {
		v := time.Duration(rng.Int64N(int64(10 * time.Millisecond)))
		all.Record(v)
		parts[i%len(parts)].Record(v)
	}
	merged := NewHist()
	for _, p := range parts {
		merged.Merge(p)
	}
	merged.Merge(NewHist()) // merging an empty histogram changes nothing
	if merged.counts != all.counts || merged.Count() != all.Count() || merged.Min() != all.Min() || merged.Max() != all.Max() {
		t.Fatalf("merged histogram differs from the single one")
	}
	for _, q := range quantiles {
		if merged.Quantile(q) != all.Quantile(q) {
			t.Fatalf("q=%v: merged %v, single %v", q, merged.Quantile(q), all.Quantile(q))
		}
	}
}

// TestHistEmptyAndReset checks the zero answers of an empty histogram and that Reset empties.
func TestHistEmptyAndReset(t *testing.T) {
	h := NewHist()
	if h.Count() != 0 || h.Quantile(0.5) != 0 || h.Min() != 0 || h.Max() != 0 || h.Mean() != 0 {
		t.Fatalf("empty histogram: count %d q50 %v min %v max %v mean %v", h.Count(), h.Quantile(0.5), h.Min(), h.Max(), h.Mean())
	}
	h.Record(time.Second)
	h.Reset()
	if h.Count() != 0 || h.Quantile(0.99) != 0 || h.Max() != 0 {
		t.Fatalf("after Reset: count %d q99 %v max %v", h.Count(), h.Quantile(0.99), h.Max())
	}
}

// BenchmarkHistRecord measures the hot-path cost of recording one value.
func BenchmarkHistRecord(b *testing.B) {
	h := NewHist()
	v := time.Duration(1)
	for i := 0; i < b.N; i++ {
		h.Record(v)
		v = (v*7 + 12345) % (10 * time.Second)
	}
}
