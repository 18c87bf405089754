package node

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/limiterd/limiter/bucket"
)

// ReadIndex makes the next local read linearizable (the read-index recipe of hashicorp/raft#603):
// it takes the commit index, confirms with a heartbeat round to a quorum that this node is still
// the leader of the same term, and waits until the state machine has applied up to that index.
// Only a leader that has committed an entry of its own term may do this (IsLeader).
func (n *Node) ReadIndex(ctx context.Context) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	term := n.raft.CurrentTerm()
	ri := n.raft.CommitIndex()
	if err := n.wait(ctx, n.raft.VerifyLeader(), nil); err != nil {
		return err
	}
	if n.raft.CurrentTerm() != term || n.ready.Load() != term {
		return fmt.Errorf("%w: term changed during read", ErrNotLeader)
	}
	return n.waitApplied(ctx, ri)
}

// Read runs read against local state so that what it sees is linearizable. Under the lease it
// reads at once and then checks the lease again (a pause between the check and the read must not
// let an expired lease answer); otherwise, or if the lease ran out, it takes the read-index path.
func (n *Node) Read(ctx context.Context, read func()) error {
	if n.LeaseHeld() {
		term := n.raft.CurrentTerm()
		read()
		if n.stillLeasing(term) {
			n.leaseReads.Add(1)
			return nil
		}
	}
	if err := n.ReadIndex(ctx); err != nil {
		return err
	}
	read()
	return nil
}

// waitApplied waits until the state machine has applied index.
func (n *Node) waitApplied(ctx context.Context, index uint64) error {
	if n.raft.AppliedIndex() >= index {
		return nil
	}
	t := time.NewTicker(appliedPoll)
	defer t.Stop()
	for n.raft.AppliedIndex() < index {
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("wait for apply of index %d: %w", index, ctx.Err())
		case <-n.shutdownCh:
			return ErrShutdown
		}
	}
	return nil
}

// Peek answers a read of one bucket. Linearizable reads go through Read (the lease, or the read
// index) and evaluate the
// bucket at the leader's current stamp; stale reads use this node's applied state as is and
// report how far it may lag.
func (n *Node) Peek(ctx context.Context, limit, key string, cost int64, stale bool) (bucket.Result, time.Duration, error) {
	if !stale {
		var res bucket.Result
		var perr error
		if err := n.Read(ctx, func() { res, perr = n.fsm.Peek(limit, key, cost, n.Stamp()) }); err != nil {
			return bucket.Result{}, 0, err
		}
		return res, 0, perr
	}
	if err := n.fsm.Halted(); err != nil {
		return bucket.Result{}, 0, err // frozen state is not even a stale answer
	}
	var staleness time.Duration
	if n.raft.State() != raft.Leader {
		if lc := n.raft.LastContact(); lc.IsZero() {
			staleness = -1
		} else {
			staleness = n.cfg.Now().Sub(lc)
		}
	}
	now := n.clock.estimate(n.fsm.Clock(), n.cfg.Mono())
	res, err := n.fsm.Peek(limit, key, cost, now)
	return res, staleness, err
}
