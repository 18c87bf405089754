package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Named timeouts. raft's own calls take an enqueue timeout only; the waits below follow ctx and
// shutdown.
const (
	// applyEnqueueTimeout bounds handing an entry to raft (raft.Apply's timeout).
	applyEnqueueTimeout = 5 * time.Second
	// raftCallTimeout bounds a barrier, a membership change and a halted leader's handover.
	raftCallTimeout = 10 * time.Second
	// restoreTimeout bounds installing a snapshot a user uploaded.
	restoreTimeout = time.Minute
	// barrierRetry is the pause before a new leader retries a failed barrier.
	barrierRetry = 100 * time.Millisecond
	// appliedPoll is how often a read waiting for the applied index checks it.
	appliedPoll = 200 * time.Microsecond
)

// wait waits for a raft future while honouring ctx and shutdown, and returns raft's error mapped
// onto this package's sentinels (translate). When ctx ends or shutdown begins first the outcome is
// unknown: the command may still commit. done, if not nil, runs once the future has its answer,
// even after the caller stopped waiting (for bookkeeping that must last until then).
//
// The goroutine that waits on the future is deliberately not tracked by Shutdown: raft does not
// answer the futures of Apply, Barrier and VerifyLeader still queued when it shuts down, so a
// tracked waiter could hang Shutdown. It owns the future alone (raft futures are not safe for
// concurrent Error calls) and ends with the process at the latest.
func (n *Node) wait(ctx context.Context, f raft.Future, done func()) error {
	ch := make(chan error, 1)
	go func() {
		err := f.Error()
		if done != nil {
			done()
		}
		ch <- err
	}()
	select {
	case err := <-ch:
		return n.translate(err)
	case <-ctx.Done():
		return fmt.Errorf("outcome unknown: %w", ctx.Err())
	case <-n.shutdownCh:
		return ErrShutdown
	}
}

// translate maps raft's errors onto this package's sentinels. A write of this node's own log that
// failed (a full disk) is ErrStorage: raft answers the entries it could not store with the store's
// error, and they were neither appended nor replicated.
func (n *Node) translate(err error) error {
	switch {
	case err == nil:
		return nil
	case n.store.failed(err):
		return fmt.Errorf("%w: %w", ErrStorage, err)
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %w", ErrNotLeader, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %w", ErrShutdown, err)
	case errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrAbortedByRestore):
		return fmt.Errorf("%w: %w", ErrBusy, err)
	}
	return err
}
