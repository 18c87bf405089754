package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// One history per cluster (see DESIGN.md, "Lost volumes"). A node whose data dir holds no Raft state
// and that was given bootstrap members does not bootstrap blindly: it asks every listed peer over
// the Raft port first.
//   - If any peer has a history beyond the bootstrap entry (a term above 1 or an entry after index
//     1), the cluster exists and this data dir lost its part of it: the node comes back as a new
//     Raft identity and the leader swaps the old one out (rejoin.go). Bootstrapping here would
//     start a second history under an ID whose votes and log the others still count.
//   - Only when every listed peer answers, and none has more than the bootstrap entry, does it
//     bootstrap, with the same configuration and cluster ID as those that already did.
//
// A node that bootstrapped starts Raft only once every listed peer has bootstrapped too, so no
// election can happen while a listed member is still deciding: a member that finds term 1 and
// index 1 everywhere knows that no vote was ever cast and nothing was ever acknowledged.

const (
	// probeTimeout bounds one discovery exchange with one peer.
	probeTimeout = 2 * time.Second
	// probeInterval is the pause between discovery rounds while peers are missing.
	probeInterval = 300 * time.Millisecond
	// probeReport is how often a waiting node says what it waits for.
	probeReport = 10 * time.Second
)

// probeRequest is one discovery or rejoin request on the Raft port.
type probeRequest struct {
	Op        string `json:"op"` // "hello" or "rejoin"
	From      string `json:"from"`
	ClusterID string `json:"cluster_id,omitempty"`
	// Rejoin: the new Raft identity, its address, and how far its log reaches.
	RaftID    string `json:"raft_id,omitempty"`
	RaftAddr  string `json:"raft_addr,omitempty"`
	LastIndex uint64 `json:"last_index,omitempty"`
}

// probeResponse is the answer.
type probeResponse struct {
	Name        string `json:"name"`
	RaftID      string `json:"raft_id"`
	ClusterID   string `json:"cluster_id,omitempty"`
	Nonce       string `json:"nonce,omitempty"`
	Bootstrap   string `json:"bootstrap,omitempty"` // the bootstrap list, canonical
	FSM         uint64 `json:"fsm"`                 // fsm.Config.Fingerprint: every member needs the same
	HasState    bool   `json:"has_state"`
	Term        uint64 `json:"term"`
	LastIndex   uint64 `json:"last_index"`
	RaftRunning bool   `json:"raft_running"`
	IsLeader    bool   `json:"is_leader"`
	LeaderID    string `json:"leader_id,omitempty"`
	LeaderAddr  string `json:"leader_addr,omitempty"`
	// Rejoin: the requester's suffrage after the call ("nonvoter", "voter"), or why it failed.
	Suffrage string `json:"suffrage,omitempty"`
	Error    string `json:"error,omitempty"`
}

// beyondBootstrap reports whether a peer's history has moved past the bootstrap entry: some
// election happened (term > 1) or some entry followed it.
func (p probeResponse) beyondBootstrap() bool { return p.HasState && (p.Term > 1 || p.LastIndex > 1) }

// canonicalPeers is a bootstrap list in a form two nodes can compare.
func canonicalPeers(ps []Peer) string {
	var parts []string
	for _, p := range ps {
		parts = append(parts, p.ID+"="+p.RaftAddr)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// dialAddr is where to reach a peer's Raft port: its PeerAddrs override (by Raft ID, then by
// member name) or the given address.
func (n *Node) dialAddr(id, addr string) string {
	if a, ok := n.cfg.PeerAddrs[id]; ok {
		return a
	}
	if a, ok := n.cfg.PeerAddrs[MemberName(id)]; ok {
		return a
	}
	return addr
}

// localState is what a probe reports of this node: from raft once it runs, from the stores before.
func (n *Node) localState() (has bool, term, last uint64) {
	if n.started.Load() {
		term, last = n.raft.CurrentTerm(), n.raft.LastIndex()
		return term > 0 || last > 0, term, last
	}
	last, _ = n.store.LastIndex()
	term, _ = n.store.GetUint64([]byte("CurrentTerm")) // raft's key in the stable store
	if metas, err := n.snaps.List(); err == nil && len(metas) > 0 {
		last = max(last, metas[0].Index)
		has = true
	}
	return has || term > 0 || last > 0, term, last
}

// answerProbe serves a discovery or rejoin request (from the Raft port's goroutines).
func (n *Node) answerProbe(req probeRequest) probeResponse {
	n.metaMu.Lock()
	meta := n.meta
	n.metaMu.Unlock()
	has, term, last := n.localState()
	resp := probeResponse{Name: meta.ID, RaftID: meta.RaftID, ClusterID: meta.ClusterID, Nonce: meta.Nonce,
		Bootstrap: canonicalPeers(n.cfg.Bootstrap), FSM: n.fsmPrint, HasState: has, Term: term, LastIndex: last}
	if n.started.Load() {
		resp.RaftRunning = true
		addr, id := n.raft.LeaderWithID()
		resp.LeaderID, resp.LeaderAddr = string(id), string(addr)
		resp.IsLeader = n.IsLeader()
	}
	if req.Op == "rejoin" && !n.started.Load() {
		resp.Error = "raft is not running here yet"
	} else if req.Op == "rejoin" {
		ctx, cancel := context.WithTimeout(context.Background(), muxHandshakeTimeout-time.Second)
		defer cancel()
		s, err := n.admitRejoiner(ctx, req)
		resp.Suffrage = s
		if err != nil {
			resp.Error = err.Error()
		}
	}
	return resp
}

// askPeers sends hello to every bootstrap peer but this node and returns the answers and the
// peers that did not answer (with why).
func (n *Node) askPeers() (map[string]probeResponse, map[string]error) {
	answers, missing := map[string]probeResponse{}, map[string]error{}
	for _, p := range n.cfg.Bootstrap {
		if p.ID == n.name {
			continue
		}
		resp, err := n.mux.ask(n.dialAddr(p.ID, p.RaftAddr), probeRequest{Op: "hello", From: n.name}, probeTimeout)
		if err != nil {
			missing[p.ID] = err
			continue
		}
		if MemberName(resp.Name) != p.ID {
			missing[p.ID] = fmt.Errorf("the node at %s is %q, not %q", p.RaftAddr, resp.Name, p.ID)
			continue
		}
		answers[p.ID] = resp
	}
	return answers, missing
}

// discovery is what an empty data dir turned out to be.
type discovery struct {
	rejoin    bool   // the cluster has a history: come back as a new identity
	clusterID string // the cluster's ID ("" when the cluster has none yet)
}

// discover decides, for an empty data dir with bootstrap members, whether to bootstrap or rejoin.
// It waits (returning only on ctx or shutdown) while the answer is not certain.
func (n *Node) discover(ctx context.Context) (discovery, error) {
	ours := canonicalPeers(n.cfg.Bootstrap)
	lastReport := time.Now()
	for {
		answers, missing := n.askPeers()
		for id, a := range answers {
			if a.FSM != n.fsmPrint {
				return discovery{}, fmt.Errorf("%s runs with other state machine parameters than this node: every member needs the same --dedup-memory", id)
			}
		}
		var withState []probeResponse
		for _, a := range answers {
			if a.beyondBootstrap() {
				id, err := agreedClusterID(answers, true)
				if err != nil {
					return discovery{}, err
				}
				n.log.Warn("this data dir is empty but the cluster already has a history: coming back as a new member identity; the old one will be removed",
					"peer", a.Name, "peer_term", a.Term, "peer_last_index", a.LastIndex)
				return discovery{rejoin: true, clusterID: id}, nil
			}
			if a.HasState {
				withState = append(withState, a)
			}
		}
		if len(missing) == 0 {
			for id, a := range answers {
				if a.Bootstrap != ours {
					return discovery{}, fmt.Errorf("bootstrap lists differ: %s was started with %q, this node with %q; give every member the same --bootstrap", id, a.Bootstrap, ours)
				}
			}
			if len(withState) > 0 {
				id, err := agreedClusterID(answers, false)
				return discovery{clusterID: id}, err
			}
			// A new cluster: every member takes the nonce of the lowest member ID as the cluster ID.
			nonces := map[string]string{n.name: n.meta.Nonce}
			for id, a := range answers {
				nonces[id] = a.Nonce
			}
			first := slices.Sorted(maps.Keys(nonces))[0]
			if nonces[first] == "" {
				return discovery{}, fmt.Errorf("peer %s answered discovery without a nonce", first)
			}
			return discovery{clusterID: nonces[first]}, nil
		}
		if time.Since(lastReport) >= probeReport {
			lastReport = time.Now()
			n.log.Warn("waiting for every bootstrap member to answer before creating the cluster", "missing", describeMissing(missing))
		}
		if err := n.pause(ctx, probeInterval); err != nil {
			return discovery{}, err
		}
	}
}

// agreedClusterID is the cluster ID that the peers with state report; they must agree.
// beyond restricts it to peers with a history past the bootstrap entry.
func agreedClusterID(answers map[string]probeResponse, beyond bool) (string, error) {
	id, from := "", ""
	for name, a := range answers {
		if !a.HasState || (beyond && !a.beyondBootstrap()) || a.ClusterID == "" {
			continue
		}
		if id != "" && a.ClusterID != id {
			return "", fmt.Errorf("peers belong to different clusters: %s has cluster ID %s, %s has %s; check --bootstrap", from, id, name, a.ClusterID)
		}
		id, from = a.ClusterID, name
	}
	return id, nil
}

// waitPeersBootstrapped holds a node whose state is only the bootstrap entry until every listed
// peer has state too (see the top of this file). It returns early when some peer is already past
// the bootstrap entry: then that history was made with this node's bootstrap state counted.
func (n *Node) waitPeersBootstrapped(ctx context.Context) error {
	lastReport := time.Now()
	for {
		answers, missing := n.askPeers()
		waiting := map[string]error{}
		for id, err := range missing {
			waiting[id] = err
		}
		for id, a := range answers {
			if ours := n.clusterID(); a.ClusterID != "" && ours != "" && a.ClusterID != ours {
				return fmt.Errorf("peer %s belongs to cluster %s, this node to %s; check --bootstrap", id, a.ClusterID, ours)
			}
			if a.beyondBootstrap() {
				return nil
			}
			if !a.HasState {
				waiting[id] = errors.New("has not bootstrapped yet")
			}
		}
		if len(waiting) == 0 {
			return nil
		}
		if time.Since(lastReport) >= probeReport {
			lastReport = time.Now()
			n.log.Warn("bootstrapped; waiting for every bootstrap member to bootstrap before starting Raft", "waiting_for", describeMissing(waiting))
		}
		if err := n.pause(ctx, probeInterval); err != nil {
			return err
		}
	}
}

func describeMissing(m map[string]error) string {
	var parts []string
	for id, err := range m {
		parts = append(parts, fmt.Sprintf("%s (%v)", id, err))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

// pause sleeps for d unless ctx ends or the node shuts down.
func (n *Node) pause(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return fmt.Errorf("waiting for peers: %w", ctx.Err())
	case <-n.shutdownCh:
		return ErrShutdown
	case <-time.After(d):
		return nil
	}
}

// clusterID is this node's cluster ID ("" while unknown).
func (n *Node) clusterID() string {
	n.metaMu.Lock()
	defer n.metaMu.Unlock()
	return n.meta.ClusterID
}

// ClusterID is the ID of the cluster history this node belongs to ("" while it has not learnt it).
func (n *Node) ClusterID() string { return n.clusterID() }

// setClusterID records the cluster ID in node.json and in the Raft handshake.
func (n *Node) setClusterID(id string) error {
	n.metaMu.Lock()
	defer n.metaMu.Unlock()
	m := n.meta
	m.ClusterID = id
	if err := writeMeta(n.cfg.DataDir, m); err != nil {
		return err
	}
	n.meta = m
	n.mux.setClusterID(id)
	return nil
}

// learnClusterID runs while this node does not know its cluster ID (it joined, or its data dir
// predates cluster IDs): it asks the leader it follows, and only that leader, and records the
// answer.
func (n *Node) learnClusterID() {
	for n.clusterID() == "" {
		if addr, id := n.raft.LeaderWithID(); id != "" && string(id) != n.cfg.ID {
			resp, err := n.mux.ask(n.dialAddr(string(id), string(addr)), probeRequest{Op: "hello", From: n.name}, probeTimeout)
			if err == nil && resp.IsLeader && resp.RaftID == string(id) && resp.ClusterID != "" {
				if err := n.setClusterID(resp.ClusterID); err != nil {
					n.log.Warn("record the cluster ID", "err", err)
				} else {
					n.log.Info("learnt the cluster ID from the leader", "cluster_id", resp.ClusterID, "leader", id)
				}
			}
		}
		if n.pause(context.Background(), time.Second) != nil {
			return
		}
	}
}

// hasVote reports whether id is a voter in the configuration.
func hasVote(c raft.Configuration, id raft.ServerID) bool {
	for _, s := range c.Servers {
		if s.ID == id {
			return s.Suffrage == raft.Voter
		}
	}
	return false
}

// canVote reports whether this node may answer vote requests: only as a voter of its own latest
// configuration. A node with no configuration yet (joining, or back from a lost volume under a new
// ID) would otherwise grant votes meant for whoever held its address before.
func (n *Node) canVote() bool {
	return hasVote(n.raft.GetConfiguration().Configuration(), raft.ServerID(n.cfg.ID))
}
