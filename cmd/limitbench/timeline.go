package main

import (
	"errors"
	"math"
	"sort"
	"sync"
)

// The per-second timeline of a run, merged from every worker.

type timeline struct {
	mu      sync.Mutex
	pending map[int]*windowAcc
	at      []int // each worker's current window
	done    []Window
}

// windowAcc accumulates one window from several workers.
type windowAcc struct {
	hist *Hist
	ops  int64
	errs int64
}

// newTimeline returns a timeline for n workers.
func newTimeline(n int) *timeline {
	return &timeline{pending: map[int]*windowAcc{}, at: make([]int, n)}
}

// add merges worker's data for window win and records that the worker has moved on to next.
func (t *timeline) add(worker, win int, h *Hist, ops, errs int64, next int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ops > 0 {
		acc := t.pending[win]
		if acc == nil {
			acc = &windowAcc{hist: NewHist()}
			t.pending[win] = acc
		}
		acc.hist.Merge(h)
		acc.ops += ops
		acc.errs += errs
	}
	t.at[worker] = next
	low := math.MaxInt
	for _, a := range t.at {
		low = min(low, a)
	}
	for i, acc := range t.pending {
		if i < low {
			t.done = append(t.done, Window{Index: i, Ops: acc.ops, Errors: acc.errs,
				P50: acc.hist.Quantile(0.5), P99: acc.hist.Quantile(0.99), Max: acc.hist.Max()})
			delete(t.pending, i)
		}
	}
}

// windows returns every window in order, with empty seconds filled in (no calls sent).
func (t *timeline) windows() []Window {
	t.mu.Lock()
	defer t.mu.Unlock()
	sort.Slice(t.done, func(i, j int) bool { return t.done[i].Index < t.done[j].Index })
	var out []Window
	for _, w := range t.done {
		for len(out) < w.Index {
			out = append(out, Window{Index: len(out)})
		}
		out = append(out, w)
	}
	return out
}

// errInterrupted is returned when the run was stopped before the main phase began.
var errInterrupted = errors.New("interrupted before the main run")
