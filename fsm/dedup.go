package fsm

import (
	"github.com/limiterd/limiter/bucket"
)

// outcome is the recorded answer to one take request.
type outcome struct {
	fp      uint64 // fingerprint of the request's content
	expires int64  // FSM time after which the record may be dropped
	results []bucket.Result
	err     *recordedError
}

// replay is the recorded answer to a retry of the request.
func (o *outcome) replay() TakeOutcome {
	out := TakeOutcome{Results: o.results, Replayed: true}
	if o.err != nil { // not a plain assignment: a nil *recordedError is a non-nil error
		out.Err = o.err
	}
	return out
}

// admitted reports whether the outcome admitted anything (then it binds; see applyTake).
func (o *outcome) admitted() bool {
	for _, r := range o.results {
		if r.Allowed {
			return true
		}
	}
	return false
}

// dedupTable is the exactly-once table: request ID -> recorded outcome. Records expire by FSM
// time (window) and the table never holds more than max records, dropping the oldest first.
// Both rules depend only on the log, so every replica drops the same records at the same entry.
type dedupTable struct {
	window int64
	max    int
	byID   map[string]*outcome
	order  []orderEntry // insertion (log) order; a ring would do, but a sliding slice is simpler
	head   int          // order[head:] are live, or stale (the ID was recorded again later)
}

// orderEntry is one recording: a later recording of the same ID (a request decided afresh)
// leaves this one stale, told apart by its outcome pointer.
type orderEntry struct {
	id string
	o  *outcome
}

func newDedupTable(window int64, max int) *dedupTable {
	return &dedupTable{window: window, max: max, byID: make(map[string]*outcome)}
}

func (d *dedupTable) get(id string) *outcome { return d.byID[id] }

func (d *dedupTable) put(id string, o *outcome) {
	d.byID[id] = o
	d.order = append(d.order, orderEntry{id, o})
}

// expire drops records whose time has passed, and the oldest records beyond max.
func (d *dedupTable) expire(now int64) {
	for d.head < len(d.order) {
		e := d.order[d.head]
		if o := d.byID[e.id]; o == e.o { // not stale
			if o.expires > now && len(d.byID) <= d.max {
				break
			}
			delete(d.byID, e.id)
		}
		d.order[d.head] = orderEntry{}
		d.head++
	}
	// Compact once the dead prefix dominates, so the slice does not grow without bound.
	if d.head > 1024 && d.head*2 > len(d.order) {
		n := copy(d.order, d.order[d.head:])
		clear(d.order[n:])
		d.order = d.order[:n]
		d.head = 0
	}
}

func (d *dedupTable) len() int { return len(d.byID) }

// span is how long, in log time, a request recorded now is sure to stay recorded: the window,
// or less when the table is at its cap and drops the oldest records before they expire (then:
// the age of the oldest record).
func (d *dedupTable) span(now int64) int64 {
	if len(d.byID) < d.max {
		return d.window
	}
	for _, e := range d.order[d.head:] {
		if d.byID[e.id] == e.o {
			recorded := e.o.expires - d.window
			return max(0, min(d.window, now-recorded))
		}
	}
	return d.window
}

// each visits live records in log order (of their latest recording).
func (d *dedupTable) each(fn func(id string, o *outcome)) {
	for _, e := range d.order[d.head:] {
		if d.byID[e.id] == e.o {
			fn(e.id, e.o)
		}
	}
}
