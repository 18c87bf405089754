package node

import (
	"context"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/limiterd/limiter/bucket"
	"github.com/limiterd/limiter/fsm"
)

// pendingSet counts, per bucket and per limit, the takes and limit changes this leader has
// accepted but not yet applied. A local answer is only given for buckets with nothing pending:
// then the applied state is that bucket's latest state.
type pendingSet struct {
	mu     sync.Mutex
	keys   map[string]int
	limits map[string]int
}

func bucketID(limit, key string) string { return limit + "\x00" + key }

func (p *pendingSet) addTake(t *fsm.Take, d int) {
	p.mu.Lock()
	if p.keys == nil {
		p.keys = map[string]int{}
	}
	for _, it := range t.Items {
		id := bucketID(it.Limit, it.Key)
		if p.keys[id] += d; p.keys[id] <= 0 {
			delete(p.keys, id)
		}
	}
	p.mu.Unlock()
}

func (p *pendingSet) addLimit(name string, d int) {
	p.mu.Lock()
	if p.limits == nil {
		p.limits = map[string]int{}
	}
	if p.limits[name] += d; p.limits[name] <= 0 {
		delete(p.limits, name)
	}
	p.mu.Unlock()
}

func (p *pendingSet) quiet(t *fsm.Take) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, it := range t.Items {
		if p.keys[bucketID(it.Limit, it.Key)] > 0 || p.limits[it.Limit] > 0 {
			return false
		}
	}
	return true
}

// Take decides a take request; it is the one entry point for takes, and leader only. In order:
// a retry of a request whose recorded outcome admitted something gets that outcome (one that
// admitted nothing binds nothing: fsm.Recorded); under the read lease, a request the
// log would certainly refuse (fsm.Refusal) or deny is answered from local state; everything else
// goes through the batcher into one log entry with the other takes queued meanwhile. A refusal of
// the request as a whole is the error (Results is then empty). When ctx ends first the outcome is
// unknown (the take may still commit): retry with the same request ID.
func (n *Node) Take(ctx context.Context, t fsm.Take) (fsm.TakeOutcome, error) {
	if !n.IsLeader() {
		return fsm.TakeOutcome{}, ErrNotLeader
	}
	out, ok := n.answerLocally(t)
	if !ok {
		var err error
		if out, err = n.batch.submit(ctx, t); err != nil {
			return fsm.TakeOutcome{}, err
		}
	}
	return out, out.Err
}

// answerLocally answers a take from this leader's state, without a log entry, when that is
// certainly what the log would answer: the request ID's outcome is already recorded (a retry);
// or, under the read lease and with nothing pending for its buckets or limits, the request would
// be refused as a whole, or every item denied. A refusal or a denial changes no state, so
// answering it locally is a read, linearized at the stamp it was evaluated at: later entries
// carry later stamps. ok is false when the take must go through the log.
func (n *Node) answerLocally(t fsm.Take) (out fsm.TakeOutcome, ok bool) {
	rec, lookup := n.fsm.Recorded(t)
	switch {
	case lookup == fsm.Binding:
		return rec, true // an outcome that admitted something is final; any member may repeat it
	case lookup == fsm.OtherContent || !n.LeaseHeld():
		return fsm.TakeOutcome{}, false // a reused ID is refused by the log, not answered here
	}
	// Not recorded, or recorded without admitting anything: decided afresh, as the log would.
	term := n.raft.CurrentTerm()
	now := n.Stamp() // before the pending check: a take not pending now is stamped after this
	if !n.pending.quiet(&t) {
		return fsm.TakeOutcome{}, false
	}
	if err := n.fsm.Refusal(t); err != nil {
		if !n.stillLeasing(term) {
			return fsm.TakeOutcome{}, false
		}
		return fsm.TakeOutcome{Err: err}, true
	}
	results := make([]bucket.Result, len(t.Items))
	for i, it := range t.Items {
		res, err := n.fsm.Peek(it.Limit, it.Key, it.Cost, now)
		if err != nil || res.Allowed {
			return fsm.TakeOutcome{}, false
		}
		results[i] = res
	}
	// Re-check after reading: a pause (GC, SIGSTOP) between the first check and the read must not
	// let an expired lease answer.
	if !n.stillLeasing(term) {
		return fsm.TakeOutcome{}, false
	}
	n.localDenials.Add(1)
	return fsm.TakeOutcome{Results: results}, true
}

// stillLeasing re-checks, after a local read, that this node held the lease of term throughout.
func (n *Node) stillLeasing(term uint64) bool {
	return n.lease.holds(term, n.cfg.Mono()) && n.ready.Load() == term && n.raft.State() == raft.Leader
}
