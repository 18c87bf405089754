package node

import (
	"sync"
	"time"

	"github.com/limiterd/limiter/fsm"
)

// recentTable is the node-local exactly-once table of takes answered from escrow: a retry at the
// same member gets the recorded answer for the replicated table's window, or until maxRecent
// later answers push it out. A ring in answer order, and a map by request ID.
type recentTable struct {
	mu   sync.Mutex
	byID map[string]recentTake
	ring []recentID // len maxRecent once used; head is the oldest, n the count
	head int
	n    int
}

type recentTake struct {
	fp  uint64
	out fsm.TakeOutcome
}

type recentID struct {
	id      string
	expires time.Duration
}

func (r *recentTable) get(t fsm.Take) (out fsm.TakeOutcome, ok, same bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.byID[t.RequestID]
	if !ok {
		return out, false, false
	}
	return rec.out, true, rec.fp == t.Fingerprint()
}

func (r *recentTable) put(t fsm.Take, out fsm.TakeOutcome, now, window time.Duration) {
	fp := t.Fingerprint()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byID == nil {
		r.byID = make(map[string]recentTake, 1024)
		r.ring = make([]recentID, maxRecent)
	}
	if _, dup := r.byID[t.RequestID]; dup {
		return
	}
	if r.n == len(r.ring) {
		r.pop()
	}
	r.byID[t.RequestID] = recentTake{fp: fp, out: out}
	r.ring[(r.head+r.n)%len(r.ring)] = recentID{t.RequestID, now + window}
	r.n++
}

func (r *recentTable) pop() {
	delete(r.byID, r.ring[r.head].id)
	r.ring[r.head] = recentID{}
	r.head = (r.head + 1) % len(r.ring)
	r.n--
}

func (r *recentTable) expire(now time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.n > 0 && r.ring[r.head].expires <= now {
		r.pop()
	}
}
