package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// A member whose data dir was lost comes back as a new Raft identity, name~suffix (discover.go
// decides when). Its old identity's votes and log are gone, so that identity must never count in
// a quorum again; the new one starts with nothing and must not count until it holds the log.
// The rejoining node asks the leader, over the Raft port, to:
//  1. remove every member with the same name or the same Raft address (the ghost: with a 3-member
//     cluster that already lost it, removing it leaves the same tolerance, and the quorum no longer
//     waits for a voter that cannot answer);
//  2. add the new identity as a nonvoter, which receives the log (or a snapshot) but has no vote;
//  3. promote it to voter once its log is within maxPromoteLag entries of the leader's commit
//     index.
// The node repeats its request until its own configuration lists it as a voter. Until then it
// grants no votes (canVote), whoever they were meant for.

const (
	// maxPromoteLag is how far behind the leader's commit index a rejoining member's log may be
	// when it is promoted to voter.
	maxPromoteLag = 256
	// rejoinInterval is the pause between a rejoining member's requests to the leader.
	rejoinInterval = 500 * time.Millisecond
)

// newIncarnation is a fresh Raft ID for member name.
func newIncarnation(name string) string { return name + raftIDSep + randomHex(3) }

// rejoin runs on a member that came back with a lost volume until the leader has made it a voter.
func (n *Node) rejoin() {
	if n.canVote() {
		return
	}
	lastReport := time.Time{}
	for !n.canVote() {
		resp, err := n.askLeaderToRejoin()
		switch {
		case err != nil:
			if time.Since(lastReport) >= probeReport {
				lastReport = time.Now()
				n.log.Warn("rejoining after a lost data dir: waiting for a leader", "err", err)
			}
		case resp.Error != "":
			if time.Since(lastReport) >= probeReport {
				lastReport = time.Now()
				n.log.Warn("rejoining after a lost data dir: the leader refused for now", "leader", resp.RaftID, "err", resp.Error)
			}
		default:
			n.log.Debug("rejoin in progress", "leader", resp.RaftID, "suffrage", resp.Suffrage)
		}
		if n.pause(context.Background(), rejoinInterval) != nil {
			return
		}
	}
	n.log.Info("rejoined the cluster as a voter", "raft_id", n.cfg.ID)
}

// askLeaderToRejoin sends the rejoin request to the leader this node knows of, or to whichever
// bootstrap peer says it leads.
func (n *Node) askLeaderToRejoin() (probeResponse, error) {
	req := probeRequest{Op: "rejoin", From: n.name, ClusterID: n.clusterID(), RaftID: n.cfg.ID,
		RaftAddr: n.cfg.RaftAddr, LastIndex: n.raft.LastIndex()}
	var targets []string
	if addr, id := n.raft.LeaderWithID(); id != "" {
		targets = append(targets, n.dialAddr(string(id), string(addr)))
	}
	for _, p := range n.cfg.Bootstrap {
		if p.ID != n.name {
			targets = append(targets, n.dialAddr(p.ID, p.RaftAddr))
		}
	}
	var last error = errors.New("no bootstrap peers to ask")
	for _, t := range targets {
		resp, err := n.mux.ask(t, req, muxHandshakeTimeout)
		if err != nil {
			last = err
			continue
		}
		if !resp.IsLeader {
			last = fmt.Errorf("%s is not the leader (leader: %q)", resp.RaftID, resp.LeaderID)
			continue
		}
		return resp, nil
	}
	return probeResponse{}, last
}

// admitRejoiner is the leader's side of a rejoin (see the top of this file). It returns the
// requester's suffrage after the call.
func (n *Node) admitRejoiner(ctx context.Context, req probeRequest) (string, error) {
	if !n.IsLeader() {
		return "", ErrNotLeader
	}
	if req.From == "" || MemberName(req.RaftID) != req.From || req.RaftID == req.From || req.RaftAddr == "" {
		return "", fmt.Errorf("rejoin: want a name, a Raft ID name~suffix and an address; got %q, %q, %q", req.From, req.RaftID, req.RaftAddr)
	}
	if ours := n.clusterID(); ours != "" && req.ClusterID != "" && ours != req.ClusterID {
		return "", fmt.Errorf("rejoin: %s belongs to cluster %s, this is %s", req.RaftID, req.ClusterID, ours)
	}
	cf := n.raft.GetConfiguration()
	if err := n.wait(ctx, cf, nil); err != nil {
		return "", fmt.Errorf("read configuration: %w", err)
	}
	var self *raft.Server
	var ghosts []raft.Server
	for _, s := range cf.Configuration().Servers {
		switch {
		case string(s.ID) == req.RaftID:
			s := s
			self = &s
		case MemberName(string(s.ID)) == req.From || string(s.Address) == req.RaftAddr:
			if s.ID == raft.ServerID(n.cfg.ID) {
				return "", fmt.Errorf("rejoin: %s claims the name or address of the leader itself (%s at %s)", req.RaftID, s.ID, s.Address)
			}
			ghosts = append(ghosts, s)
		}
	}
	for _, g := range ghosts {
		if err := n.RemoveServer(ctx, string(g.ID)); err != nil && !errors.Is(err, ErrUnknownMember) {
			return "", fmt.Errorf("remove %s, the identity %s lost with its data dir: %w", g.ID, req.From, err)
		}
		n.log.Warn("removed a member that came back with an empty data dir under a new identity", "old", g.ID, "new", req.RaftID, "raft_addr", g.Address)
	}
	n.beginConfigChange()
	defer n.endConfigChange()
	switch {
	case self == nil:
		if err := n.wait(ctx, n.raft.AddNonvoter(raft.ServerID(req.RaftID), raft.ServerAddress(req.RaftAddr), 0, 0), nil); err != nil {
			return "", fmt.Errorf("add %s as a nonvoter: %w", req.RaftID, err)
		}
		n.log.Info("added a rejoining member as a nonvoter until it catches up", "id", req.RaftID, "raft_addr", req.RaftAddr)
		return "nonvoter", nil
	case self.Suffrage == raft.Voter:
		return "voter", nil
	case req.LastIndex+maxPromoteLag < n.raft.CommitIndex():
		return "nonvoter", nil // still catching up
	}
	if err := n.wait(ctx, n.raft.AddVoter(raft.ServerID(req.RaftID), raft.ServerAddress(req.RaftAddr), 0, 0), nil); err != nil {
		return "", fmt.Errorf("promote %s to voter: %w", req.RaftID, err)
	}
	n.log.Info("promoted a rejoined member to voter", "id", req.RaftID, "last_index", req.LastIndex)
	return "voter", nil
}
