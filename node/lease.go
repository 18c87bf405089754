package node

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// leaseState is the leader's read lease. It is held until `until` (on this node's monotonic
// clock) in term `term`; gen changes whenever the lease is dropped, so a renewal that started
// before a drop cannot revive it.
//
// Why this is safe, and every hole it closes, is argued once, in DESIGN.md ("Linearizable reads").
type leaseState struct {
	mu        sync.Mutex
	term      uint64
	until     time.Duration
	gen       uint64
	notBefore time.Duration // no lease may start before this monotonic time
}

// drop ends the lease at once (leadership change, transfer, membership change, shutdown).
func (l *leaseState) drop() {
	l.mu.Lock()
	l.until, l.term = 0, 0
	l.gen++
	l.mu.Unlock()
}

// holdOff drops the lease and refuses a new one whose start is before t (after a leadership
// transfer began: its target may win an election without the followers' stickiness).
func (l *leaseState) holdOff(t time.Duration) {
	l.mu.Lock()
	l.until, l.term = 0, 0
	l.gen++
	l.notBefore = max(l.notBefore, t)
	l.mu.Unlock()
}

// generation returns the current generation, to pass to extend.
func (l *leaseState) generation() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gen
}

// extend holds the lease in term until `until`, unless it was dropped since generation gen was
// read (a renewal that raced with a drop must not revive it).
func (l *leaseState) extend(gen, term uint64, start, until time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gen != gen || start < l.notBefore {
		return false
	}
	l.term, l.until = term, until
	return true
}

// holds reports whether the lease is held in term at monotonic time now.
func (l *leaseState) holds(term uint64, now time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.term == term && term != 0 && now < l.until
}

// LeaseHeld reports whether this node holds the read lease now.
func (n *Node) LeaseHeld() bool {
	if n.cfg.LeaseDuration <= 0 || !n.IsLeader() || n.trans.Poisoned() {
		return false
	}
	return n.lease.holds(n.raft.CurrentTerm(), n.cfg.Mono())
}

// renewLease keeps the lease for term alive while this node leads and is ready in it.
func (n *Node) renewLease(term uint64) {
	every := n.cfg.LeaseDuration / 4
	for {
		if n.ready.Load() == term && n.raft.CurrentTerm() == term && n.configChanges.Load() == 0 {
			gen := n.lease.generation()
			t0 := n.cfg.Mono() // before the round: the lease is measured from here
			if err := n.wait(context.Background(), n.raft.VerifyLeader(), nil); err == nil && !n.trans.Poisoned() &&
				n.ready.Load() == term && n.raft.CurrentTerm() == term && n.configChanges.Load() == 0 {
				n.lease.extend(gen, term, t0, t0+n.cfg.LeaseDuration)
			}
		}
		select {
		case <-n.shutdownCh:
			return
		case <-time.After(every):
		}
		if n.raft.CurrentTerm() != term || n.raft.State() != raft.Leader {
			n.lease.drop()
			n.renewing.CompareAndSwap(term, 0)
			return
		}
	}
}
