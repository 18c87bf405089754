package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/limiterd/limiter/fsm"
)

// Member is one server in the Raft configuration.
type Member struct {
	ID       string
	RaftAddr string
	APIAddr  string // "" until the member has registered it
	Suffrage string // Voter, Nonvoter or Staging
	Leader   bool
}

// Members lists the Raft configuration as this node knows it, with each member's API address.
func (n *Node) Members(ctx context.Context) ([]Member, error) {
	f := n.raft.GetConfiguration()
	if err := n.wait(ctx, f, nil); err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	apis := n.fsm.Members()
	_, leader := n.raft.LeaderWithID()
	var out []Member
	for _, s := range f.Configuration().Servers {
		out = append(out, Member{
			ID: string(s.ID), RaftAddr: string(s.Address), APIAddr: apis[string(s.ID)],
			Suffrage: s.Suffrage.String(), Leader: s.ID == leader,
		})
	}
	return out, nil
}

// AddVoter adds a voting member, or records its API address if it is already a member at that
// Raft address (so the call is idempotent and doubles as registration; a nonvoter stays one until
// the rejoin protocol promotes it). Leader only.
func (n *Node) AddVoter(ctx context.Context, id, raftAddr, apiAddr string) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	if id == "" || raftAddr == "" {
		return fmt.Errorf("add voter: id and raft address are required")
	}
	cf := n.raft.GetConfiguration()
	if err := n.wait(ctx, cf, nil); err != nil {
		return fmt.Errorf("read configuration: %w", err)
	}
	present := false
	for _, s := range cf.Configuration().Servers {
		if s.ID == raft.ServerID(id) && s.Address == raft.ServerAddress(raftAddr) {
			// A nonvoter is a member back from a lost volume that is still catching up; it is
			// promoted by the rejoin protocol (rejoin.go) once it holds the log, not here.
			present = true
		} else if s.Address == raft.ServerAddress(raftAddr) && s.ID != raft.ServerID(id) {
			return fmt.Errorf("add voter %s: %w: %s is held by member %s; remove it first", id, ErrAddressInUse, raftAddr, s.ID)
		}
	}
	if !present {
		n.beginConfigChange()
		defer n.endConfigChange()
		if err := n.wait(ctx, n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, raftCallTimeout), nil); err != nil {
			return fmt.Errorf("add voter %s: %w", id, err)
		}
		n.log.Info("added voter", "id", id, "raft_addr", raftAddr)
	}
	if apiAddr != "" && n.fsm.Members()[id] != apiAddr {
		if err := n.setMember(ctx, id, apiAddr); err != nil {
			return fmt.Errorf("record API address of %s: %w", id, err)
		}
	}
	return nil
}

// IsMember reports whether id is a member at raftAddr in the configuration as this node knows it.
func (n *Node) IsMember(id, raftAddr string) bool {
	for _, s := range n.raft.GetConfiguration().Configuration().Servers {
		if s.ID == raft.ServerID(id) && s.Address == raft.ServerAddress(raftAddr) {
			return true
		}
	}
	return false
}

// ProbeMember asks whoever answers at raftAddr (on the Raft port) who it is, and reports an error
// unless it is the member id and shares this cluster's state machine parameters: adding a
// member that is not running makes a voter that cannot vote.
func (n *Node) ProbeMember(id, raftAddr string) error {
	resp, err := n.mux.ask(n.dialAddr(id, raftAddr), probeRequest{Op: "hello", From: n.name}, probeTimeout)
	if err != nil {
		return fmt.Errorf("%w: nothing answers as %s at %s (%v): start it first (a voter that is not running raises the quorum and cannot vote), or add it anyway with force", ErrUnreachableMember, id, raftAddr, err)
	}
	if MemberName(resp.Name) != MemberName(id) {
		return fmt.Errorf("%w: the node at %s is %q, not %q", ErrUnreachableMember, raftAddr, resp.Name, id)
	}
	if resp.FSM != n.fsmPrint {
		return fmt.Errorf("%w: %s runs with other state machine parameters (every member needs the same --dedup-memory)", ErrUnreachableMember, id)
	}
	return nil
}

// RemoveServer removes a member. Leader only; to remove the leader itself, transfer leadership
// first (the server layer does this) so the cluster does not wait out an election timeout.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	cf := n.raft.GetConfiguration()
	if err := n.wait(ctx, cf, nil); err != nil {
		return fmt.Errorf("read configuration: %w", err)
	}
	found := false
	for _, s := range cf.Configuration().Servers {
		if s.ID == raft.ServerID(id) {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("%w: %q", ErrUnknownMember, id)
	}
	n.beginConfigChange()
	defer n.endConfigChange()
	if err := n.wait(ctx, n.raft.RemoveServer(raft.ServerID(id), 0, raftCallTimeout), nil); err != nil {
		return fmt.Errorf("remove server %s: %w", id, err)
	}
	n.log.Info("removed server", "id", id)
	if id != n.cfg.ID && n.fsm.Members()[id] != "" {
		if err := n.setMember(ctx, id, ""); err != nil {
			n.log.Warn("forget API address of removed member", "id", id, "err", err)
		}
	}
	return nil
}

// TransferLeadership hands leadership to id (any up-to-date voter when id is ""). Readiness and
// the lease are dropped before the transfer starts, since the target is elected at once, without
// the followers' stickiness. If the transfer fails and this node still leads, it becomes ready
// again only through a new barrier, and takes no lease for another election timeout (the target
// may still have been campaigning). raft bounds the transfer by the election timeout; the wait
// also ends with ctx (the transfer's outcome is then unknown).
func (n *Node) TransferLeadership(ctx context.Context, id string) error {
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	var addr raft.ServerAddress
	if id != "" {
		cf := n.raft.GetConfiguration()
		if err := n.wait(ctx, cf, nil); err != nil {
			return fmt.Errorf("read configuration: %w", err)
		}
		for _, s := range cf.Configuration().Servers {
			if s.ID == raft.ServerID(id) {
				addr = s.Address
			}
		}
		if addr == "" {
			return fmt.Errorf("%w: %q", ErrUnknownMember, id)
		}
	}
	term := n.raft.CurrentTerm()
	n.ready.Store(0)
	n.lease.holdOff(n.cfg.Mono() + 2*n.cfg.ElectionTimeout)
	var f raft.Future
	if id == "" {
		f = n.raft.LeadershipTransfer()
	} else {
		f = n.raft.LeadershipTransferToServer(raft.ServerID(id), addr)
	}
	err := n.wait(ctx, f, nil)
	if errors.Is(err, ErrShutdown) {
		return err
	}
	if err != nil {
		if n.raft.State() == raft.Leader && n.raft.CurrentTerm() == term {
			n.lease.holdOff(n.cfg.Mono() + n.cfg.ElectionTimeout)
			n.spawn(func() { n.becomeReady(term) })
		}
		return fmt.Errorf("transfer leadership: %w", err)
	}
	return nil
}

// beginConfigChange drops the lease for the duration of a membership change, which changes
// which servers form a quorum (and so whose stickiness the lease relies on).
func (n *Node) beginConfigChange() {
	n.configChanges.Add(1)
	n.lease.drop()
}

func (n *Node) endConfigChange() { n.configChanges.Add(-1) }

// Status is this node's view of itself and the cluster.
type Status struct {
	ID, RaftAddr, APIAddr string
	State                 string
	Term                  uint64
	LeaderID, LeaderAPI   string
	CommitIndex           uint64
	AppliedIndex          uint64
	LastLogIndex          uint64
	LastContact           time.Duration // since the leader was last heard from; 0 on the leader; -1 never
	LeaseHeld             bool
	LeaseReads            uint64 // reads answered under the lease
	LocalDenials          uint64 // takes denied from local state under the lease
	LeaderChanges         uint64 // leadership observations (won or lost) since start
	LeaderCommitIndex     uint64 // the leader's commit index as last heard (own on the leader)
	NotServing            string // why Health fails; "" when serving
	LogWriteFailures      uint64 // failed writes of the Raft log since start
	FSM                   fsm.Stats
}

// Status reports the node's state.
func (n *Node) Status() Status {
	lid, lapi := n.Leader()
	s := Status{
		ID: n.cfg.ID, RaftAddr: n.RaftAddr(), APIAddr: n.cfg.APIAddr,
		State: n.raft.State().String(), Term: n.raft.CurrentTerm(),
		LeaderID: lid, LeaderAPI: lapi,
		CommitIndex: n.raft.CommitIndex(), AppliedIndex: n.raft.AppliedIndex(), LastLogIndex: n.raft.LastIndex(),
		FSM: n.fsm.Stats(), LeaseHeld: n.LeaseHeld(),
		LeaseReads: n.leaseReads.Load(), LocalDenials: n.localDenials.Load(), LeaderChanges: n.leaderChanges.Load(),
		LeaderCommitIndex: n.LeaderCommitIndex(), LogWriteFailures: n.store.failures.Load(),
	}
	_, s.NotServing = n.Health()
	if n.raft.State() != raft.Leader {
		if lc := n.raft.LastContact(); lc.IsZero() {
			s.LastContact = -1
		} else {
			s.LastContact = n.cfg.Now().Sub(lc)
		}
	}
	if v, err := strconv.ParseUint(n.raft.Stats()["last_log_index"], 10, 64); err == nil {
		s.LastLogIndex = v
	}
	return s
}

// RestoreSnapshot replaces the replicated state with a snapshot of size bytes read from r
// (already verified by the caller). Raft installs it on every member; the lease is dropped and
// the leader becomes ready again only through a new barrier.
func (n *Node) RestoreSnapshot(ctx context.Context, r io.Reader, size int64) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	term := n.raft.CurrentTerm()
	n.ready.Store(0)
	n.lease.drop()
	// raft.Restore blocks (it takes no ctx) until the snapshot is installed or restoreTimeout ends.
	err := n.raft.Restore(&raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: size}, r, restoreTimeout)
	if n.raft.State() == raft.Leader && n.raft.CurrentTerm() == term {
		n.becomeReady(term)
	}
	if err != nil {
		return fmt.Errorf("restore snapshot: %w", n.translate(err))
	}
	return nil
}
