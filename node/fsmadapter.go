package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/raft"

	"github.com/limiterd/limiter/fsm"
)

// raftFSM adapts the node's fsm.FSM to raft.FSM: it applies entries, tells the stamp clock the
// log time after each, and acts on a halt.
type raftFSM struct{ n *Node }

func (r raftFSM) Apply(l *raft.Log) any {
	n := r.n
	resp := n.fsm.Apply(l.Index, l.Data)
	n.clock.observe(n.fsm.Clock(), n.cfg.Mono())
	if errors.Is(resp.Err, fsm.ErrCorruptEntry) && n.haltNoted.CompareAndSwap(false, true) {
		n.log.Error("state machine halted on a committed entry it cannot apply; this node will not apply further entries until it is upgraded or restored", "index", l.Index, "err", resp.Err)
		if n.raft.State() == raft.Leader {
			// A member whose binary can read the entry may lead on; this one can serve nothing.
			n.spawn(func() {
				ctx, cancel := context.WithTimeout(context.Background(), raftCallTimeout)
				defer cancel()
				if err := n.TransferLeadership(ctx, ""); err != nil {
					n.log.Warn("halted leader could not hand leadership over", "err", err)
				}
			})
		}
	}
	return resp
}

func (r raftFSM) Snapshot() (raft.FSMSnapshot, error) {
	return &raftSnapshot{s: r.n.fsm.Snapshot(), n: r.n, start: time.Now()}, nil
}

func (r raftFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := r.n.fsm.Restore(rc, 0); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	r.n.clock.observe(r.n.fsm.Clock(), r.n.cfg.Mono())
	return nil
}

type raftSnapshot struct {
	s     *fsm.Snapshot
	n     *Node
	start time.Time
}

func (s *raftSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.s.Persist(sink); err != nil {
		sink.Cancel()
		return err
	}
	err := sink.Close()
	if o := s.n.observer.Load(); o != nil && err == nil {
		(*o).ObserveSnapshot(time.Since(s.start))
	}
	return err
}

func (s *raftSnapshot) Release() {}
