package node

import (
	"fmt"
	"time"
)

// MaxServingLag is how many entries behind the leader's commit index a member may have applied
// and still be healthy. A follower hears the leader's commit index with every AppendEntries (at
// least every 50 ms while the leader leads), a moment before it applies the entries that came
// with it, so a small lag is normal; a member that cannot keep up or cannot write falls behind it
// for good.
const MaxServingLag = 128

// Health reports whether this node can serve, and why not: it must know a leader, have written
// its last log entry successfully, not be halted, and have applied the leader's commit index as it
// last heard it (not its own, which freezes with its log), less MaxServingLag.
func (n *Node) Health() (ok bool, why string) {
	if id, _ := n.Leader(); id == "" {
		return false, "no leader known"
	}
	if err := n.fsm.Halted(); err != nil {
		return false, fmt.Sprintf("state machine halted: %v", err)
	}
	if err, since := n.store.writeError(); err != nil {
		return false, fmt.Sprintf("cannot write the Raft log %s since %s: %v", n.store.path, since.Format(time.RFC3339), err)
	}
	applied := n.raft.AppliedIndex()
	commit := n.raft.CommitIndex()
	if !n.LeadsRaft() {
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
