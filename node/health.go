package node

import (
	"fmt"
	"sync"
	"time"
)

// MaxServingLag is how many entries behind the leader's commit index a member may have applied
// and still be healthy. A follower hears the leader's commit index with every AppendEntries (at
// least every 50 ms while the leader leads), a moment before it applies the entries that came
// with it, so a small lag is normal; a member that cannot keep up or cannot write falls behind it
// for good.
const MaxServingLag = 128

// Health reports whether this node can serve, and why not: it must have written its last log
// entry successfully, not be halted, know a leader, and have applied the leader's commit index as it
// last heard it (not its own, which freezes with its log), less MaxServingLag.
func (n *Node) Health() (ok bool, why string) {
	if err, since := n.store.writeError(); err != nil {
		return false, fmt.Sprintf("cannot write the Raft log %s since %s: %v", n.store.path, since.Format(time.RFC3339), err)
	}
	if err := n.fsm.Halted(); err != nil {
		return false, fmt.Sprintf("state machine halted: %v", err)
	}
	if id, _ := n.Leader(); id == "" {
		return false, "no leader known"
	}
	applied := n.raft.AppliedIndex()
	commit := n.raft.CommitIndex()
	if n.LeadsRaft() {
		if stalled := n.commitStall.check(n.raft.LastIndex(), commit, n.cfg.Mono()); stalled > 2*n.cfg.HeartbeatTimeout {
			return false, fmt.Sprintf("entries after the commit index %d have not committed for %s: no quorum stores them", commit, stalled.Round(time.Millisecond))
		}
	} else {
		commit = n.trans.leaderCommit.Load()
		if commit == 0 {
			return false, "has not heard the leader's commit index yet"
		}
	}
	if applied+MaxServingLag < commit {
		return false, fmt.Sprintf("applied index %d is %d behind the leader's commit index %d", applied, commit-applied, commit)
	}
	return true, ""
}

// LeaderCommitIndex is the leader's commit index as this node last heard it (its own on the
// leader).
func (n *Node) LeaderCommitIndex() uint64 {
	if n.LeadsRaft() {
		return n.raft.CommitIndex()
	}
	return n.trans.leaderCommit.Load()
}

// stallClock measures how long a leader's commit index has stood still while it had entries
// beyond it: then a quorum cannot store them (followers' disks full, say), though every member
// still answers heartbeats.
type stallClock struct {
	mu     sync.Mutex
	commit uint64
	since  time.Duration // monotonic time when commit index last moved, or entries last caught up
}

// check notes the leader's last and commit indexes at monotonic time now and returns how long
// entries have waited to commit (0 when none wait).
func (s *stallClock) check(last, commit uint64, now time.Duration) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if last <= commit || commit != s.commit {
		s.commit, s.since = commit, now
		return 0
	}
	return now - s.since
}
