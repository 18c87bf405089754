package main

import (
	"math"
	"math/bits"
	"time"
)

// The histogram's layout. Values are nanoseconds. Values below linearCount are counted exactly,
// one bucket per nanosecond. Above that, every power-of-two range [2^e, 2^(e+1)) is split into
// subCount equal buckets, each 2^(e-subBits) wide, so a bucket is at most 1/128 of its lower
// bound wide and its midpoint is within 1/256 (0.39%) of any value in it. The top range ends at
// 2^maxExp ns (about 68.7 s); larger values land in the last bucket (the exact maximum is kept
// separately). The whole layout is 3840 buckets, about 30 KiB.
const (
	subBits     = 7
	subCount    = 1 << subBits // buckets per power of two
	linearCount = subCount     // values 0..127 ns are counted exactly
	maxExp      = 36           // 2^36 ns ≈ 68.7 s, above the 60 s the tool must cover
	numBuckets  = linearCount + (maxExp-subBits)*subCount
)

// Hist is a log-linear latency histogram in the style of HdrHistogram: fixed buckets with a
// relative error of at most 0.4% (at most 1% is promised) from 1 ns up to about 68 s, constant
// time Record, and Merge to combine histograms. It is not safe for concurrent use: each
// goroutine records into its own Hist, with no locks or atomics on the hot path, and the
// histograms are merged once the goroutines are done (or, for time windows, once a second).
type Hist struct {
	counts [numBuckets]uint64
	n      uint64
	sum    float64 // nanoseconds; float so long runs cannot overflow
	min    int64
	max    int64
}

// NewHist returns an empty histogram.
func NewHist() *Hist {
	h := &Hist{}
	h.Reset()
	return h
}

// Reset empties h.
func (h *Hist) Reset() {
	clear(h.counts[:])
	h.n, h.sum, h.min, h.max = 0, 0, math.MaxInt64, 0
}

// bucketIndex returns the bucket of a value of v nanoseconds (v >= 0).
func bucketIndex(v uint64) int {
	if v < linearCount {
		return int(v)
	}
	e := bits.Len64(v) - 1 // 2^e <= v < 2^(e+1), e >= subBits
	if e >= maxExp {
		return numBuckets - 1
	}
	sub := int(v>>(e-subBits)) - subCount // 0..subCount-1
	return linearCount + (e-subBits)*subCount + sub
}

// bucketBounds returns the lowest value of bucket i and the bucket's width, in nanoseconds.
func bucketBounds(i int) (lo, width uint64) {
	if i < linearCount {
		return uint64(i), 1
	}
	j := i - linearCount
	shift := j / subCount // e - subBits
	sub := uint64(j % subCount)
	return (subCount + sub) << shift, 1 << shift
}

// Record adds one value. Negative durations count as zero.
func (h *Hist) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	h.counts[bucketIndex(uint64(v))]++
	h.n++
	h.sum += float64(v)
	if v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
}

// Merge adds every value recorded in o to h.
func (h *Hist) Merge(o *Hist) {
	if o == nil || o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// Count returns the number of recorded values.
func (h *Hist) Count() uint64 { return h.n }

// Min returns the smallest recorded value exactly (0 when empty).
func (h *Hist) Min() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.min)
}

// Max returns the largest recorded value exactly (0 when empty).
func (h *Hist) Max() time.Duration { return time.Duration(h.max) }

// Mean returns the exact mean of the recorded values (0 when empty).
func (h *Hist) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Quantile returns the value at quantile q (0 <= q <= 1): the value of rank ceil(q·n) (at
// least 1) in sorted order, to within the bucket's precision: the bucket's midpoint, clamped to
// the exact minimum and maximum. Quantile(1) is the exact maximum; an empty histogram gives 0.
func (h *Hist) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	if q >= 1 {
		return time.Duration(h.max)
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		seen += c
		if seen >= rank {
			lo, w := bucketBounds(i)
			v := int64(lo + (w-1)/2)
			return time.Duration(min(max(v, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}
