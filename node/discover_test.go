package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// groupConfigs returns configs for members ids, each bootstrapping with all of them.
func groupConfigs(t *testing.T, ids ...string) []Config {
	t.Helper()
	var cfgs []Config
	var peers []Peer
	for _, id := range ids {
		cfg := testConfig(t, id, filepath.Join(t.TempDir(), id))
		cfgs = append(cfgs, cfg)
		peers = append(peers, Peer{ID: id, RaftAddr: cfg.RaftAddr})
	}
	for i := range cfgs {
		cfgs[i].Bootstrap = peers
	}
	return cfgs
}

type started struct {
	n   *Node
	err error
}

// startAsync starts cfg in the background; the node is shut down at the end of the test.
func startAsync(t *testing.T, ctx context.Context, cfg Config) <-chan started {
	t.Helper()
	ch := make(chan started, 1)
	go func() {
		n, err := Start(ctx, cfg)
		if n != nil {
			t.Cleanup(func() { n.Shutdown() })
		}
		ch <- started{n, err}
	}()
	return ch
}

func waitStarted(t *testing.T, ch <-chan started, d time.Duration) *Node {
	t.Helper()
	select {
	case s := <-ch:
		if s.err != nil {
			t.Fatalf("start: %v", s.err)
		}
		return s.n
	case <-time.After(d):
		t.Fatalf("start did not return within %v", d)
	}
	return nil
}

// startGroup starts every member of cfgs at once and waits for them all.
func startGroup(t *testing.T, cfgs []Config) []*Node {
	t.Helper()
	var chs []<-chan started
	for _, cfg := range cfgs {
		chs = append(chs, startAsync(t, context.Background(), cfg))
	}
	var nodes []*Node
	for _, ch := range chs {
		nodes = append(nodes, waitStarted(t, ch, 20*time.Second))
	}
	return nodes
}

func waitLeader(t *testing.T, nodes []*Node) *Node {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			if n.IsLeader() {
				return n
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no leader within 15s")
	return nil
}

// A new cluster is created only once every listed member answers: two of three wait (and write no
// Raft state) until the third starts; then all three bootstrap the same history with one cluster ID.
func TestDiscover_NewClusterWaitsForEveryMemberAndAgreesOnOneClusterID(t *testing.T) {
	cfgs := groupConfigs(t, "n1", "n2", "n3")
	ctx := context.Background()
	first := []<-chan started{startAsync(t, ctx, cfgs[0]), startAsync(t, ctx, cfgs[1])}
	time.Sleep(1500 * time.Millisecond)
	for i, ch := range first {
		select {
		case s := <-ch:
			t.Fatalf("n%d started (err %v) while n3 had not answered", i+1, s.err)
		default:
		}
		if n, err := os.ReadFile(filepath.Join(cfgs[i].DataDir, "node.json")); err != nil || strings.Contains(string(n), "cluster_id") {
			t.Fatalf("n%d recorded a cluster before every member answered: %s %v", i+1, n, err)
		}
	}
	third := startAsync(t, ctx, cfgs[2])
	nodes := []*Node{waitStarted(t, first[0], 20*time.Second), waitStarted(t, first[1], 20*time.Second), waitStarted(t, third, 20*time.Second)}
	id := nodes[0].ClusterID()
	for _, n := range nodes {
		if n.ClusterID() == "" || n.ClusterID() != id {
			t.Fatalf("cluster IDs %q, %q, %q: want one, the same on all", nodes[0].ClusterID(), nodes[1].ClusterID(), nodes[2].ClusterID())
		}
		if n.ID() != n.name {
			t.Fatalf("%s runs as Raft ID %s in a new cluster", n.name, n.ID())
		}
	}
	waitLeader(t, nodes)
}

// Members given different bootstrap lists refuse to create a cluster, naming the difference.
func TestDiscover_DifferentBootstrapListsAreRefused(t *testing.T) {
	cfgs := groupConfigs(t, "n1", "n2")
	cfgs[1].Bootstrap = append(append([]Peer{}, cfgs[1].Bootstrap...), Peer{ID: "n3", RaftAddr: freeAddr(t)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_ = startAsync(t, ctx, cfgs[1]) // waits for n3, which never answers
	select {
	case s := <-startAsync(t, ctx, cfgs[0]):
		if s.err == nil || !strings.Contains(s.err.Error(), "bootstrap lists differ") {
			t.Fatalf("start with a different bootstrap list than a peer: %v, want it refused", s.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("start with a different bootstrap list than a peer did not return")
	}
}

// A member whose data dir is wiped while the others hold a history comes back under a new Raft ID
// and becomes a voter once caught up; its old ID leaves the configuration.
func TestDiscover_WipedMemberRejoinsUnderANewIdentity(t *testing.T) {
	cfgs := groupConfigs(t, "n1", "n2", "n3")
	nodes := startGroup(t, cfgs)
	leader := waitLeader(t, nodes)
	victim := 0
	for nodes[victim] == leader {
		victim++
	}
	if err := nodes[victim].Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(cfgs[victim].DataDir); err != nil {
		t.Fatal(err)
	}
	back := waitStarted(t, startAsync(t, context.Background(), cfgs[victim]), 20*time.Second)
	if !strings.HasPrefix(back.ID(), cfgs[victim].ID+"~") || back.ClusterID() != leader.ClusterID() {
		t.Fatalf("back as Raft ID %q in cluster %q; want %s~suffix in cluster %q", back.ID(), back.ClusterID(), cfgs[victim].ID, leader.ClusterID())
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		c := leader.Raft().GetConfiguration().Configuration()
		if hasVote(c, raft.ServerID(back.ID())) && len(c.Servers) == 3 && back.canVote() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("configuration %+v (the member votes: %v): want the new identity as a voter and the old one gone", c.Servers, back.canVote())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A node of another cluster is refused on the Raft port: its vote requests never reach raft.
func TestClusterID_RaftConnectionsFromAnotherClusterAreRefused(t *testing.T) {
	x := mustStartSingle(t, testConfig(t, "x1", t.TempDir()))
	y := mustStartSingle(t, testConfig(t, "y1", t.TempDir()))
	if x.ClusterID() == "" || x.ClusterID() == y.ClusterID() {
		t.Fatalf("cluster IDs %q and %q: want two different ones", x.ClusterID(), y.ClusterID())
	}
	req := &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("y1"), Addr: []byte(y.RaftAddr())}, Term: 1000}
	if err := y.trans.RequestVote("x1", raft.ServerAddress(x.RaftAddr()), req, &raft.RequestVoteResponse{}); err == nil {
		t.Fatal("a vote request from another cluster was answered")
	}
	if x.mux.refused.Load() == 0 {
		t.Fatal("no refusal counted")
	}
	if term := x.Raft().CurrentTerm(); term >= 1000 {
		t.Fatalf("the other cluster's term reached raft: %d", term)
	}
}

// A node that is not a voter of its own configuration (it joined and has not been added yet, or
// came back under a new ID) refuses vote requests, whoever they were meant for.
func TestGuardedTransport_NoVotesFromANonVoter(t *testing.T) {
	recv := newGuardedTransport(newTCPTransport(t, time.Second))
	stop := make(chan struct{})
	defer close(stop)
	var voter atomic.Bool
	go recv.pump(func() raft.ServerID { return "" }, voter.Load, stop)
	go func() {
		for {
			select {
			case rpc := <-recv.Consumer():
				rpc.Respond(&raft.RequestVoteResponse{Granted: true}, nil)
			case <-stop:
				return
			}
		}
	}()
	send := newTCPTransport(t, time.Second)
	req := &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("n2"), Addr: []byte(send.LocalAddr())}, Term: 5}
	var resp raft.RequestVoteResponse
	if err := send.RequestVote("n3", recv.LocalAddr(), req, &resp); err == nil || resp.Granted {
		t.Fatalf("vote from a non-voter: err %v granted %v, want refused", err, resp.Granted)
	}
	pre := &raft.RequestPreVoteRequest{RPCHeader: req.RPCHeader, Term: 5}
	if err := send.RequestPreVote("n3", recv.LocalAddr(), pre, &raft.RequestPreVoteResponse{}); err == nil {
		t.Fatal("pre-vote from a non-voter was answered")
	}
	if got := recv.notVoter.Load(); got != 2 {
		t.Fatalf("refused %d vote requests, want 2", got)
	}
	voter.Store(true)
	if err := send.RequestVote("n3", recv.LocalAddr(), req, &resp); err != nil || !resp.Granted {
		t.Fatalf("vote from a voter: %v granted %v", err, resp.Granted)
	}
}

// node.json written by earlier versions ({"id"} only) still opens, under the name as Raft ID.
func TestIdentity_OldNodeJSONKeepsItsID(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "node.json"), []byte(`{"id":"n1"}`), 0o640); err != nil {
		t.Fatal(err)
	}
	m, err := checkDataDir(dir, "n1")
	if err != nil || m.RaftID != "n1" || m.ClusterID != "" || m.Nonce == "" {
		t.Fatalf("meta %+v, %v", m, err)
	}
	if _, err := checkDataDir(dir, "n2"); err == nil || !strings.Contains(err.Error(), `"n1"`) {
		t.Fatalf("another name on the data dir: %v", err)
	}
	if got := MemberName("n3~a1b2c3"); got != "n3" {
		t.Fatal(got)
	}
}

// A leader whose entries stop committing (no quorum can store them) is unhealthy after a while,
// and healthy again once the commit index moves.
func TestStallClock_MeasuresHowLongEntriesWaitToCommit(t *testing.T) {
	var s stallClock
	if d := s.check(10, 10, time.Second); d != 0 {
		t.Fatalf("nothing waiting: %v", d)
	}
	if d := s.check(12, 10, 2*time.Second); d != time.Second {
		t.Fatalf("waiting since the commit index last moved: %v, want 1s", d)
	}
	if d := s.check(13, 10, 5*time.Second); d != 4*time.Second {
		t.Fatalf("still waiting: %v, want 4s", d)
	}
	if d := s.check(13, 11, 6*time.Second); d != 0 {
		t.Fatalf("the commit index moved: %v, want 0", d)
	}
	if d := s.check(13, 11, 7*time.Second); d != time.Second {
		t.Fatalf("waiting again: %v, want 1s", d)
	}
}

// Members whose state machines would apply the log differently (another exactly-once cap) refuse
// to form a cluster together, and refuse each other's Raft connections.
func TestDiscover_OtherStateMachineParametersAreRefused(t *testing.T) {
	cfgs := groupConfigs(t, "n1", "n2")
	cfgs[1].FSM.DedupMax = 1000
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := startAsync(t, ctx, cfgs[0]), startAsync(t, ctx, cfgs[1])
	// The first to see the other's answer refuses; the other then waits for a peer that left.
	var s started
	select {
	case s = <-a:
	case s = <-b:
	case <-time.After(15 * time.Second):
		t.Fatal("start with other state machine parameters than a peer did not return")
	}
	if s.err == nil || !strings.Contains(s.err.Error(), "state machine parameters") {
		t.Fatalf("start with other state machine parameters than a peer: %v", s.err)
	}
	// And on the Raft port: a vote request from a node with other parameters never reaches raft.
	x := mustStartSingle(t, testConfig(t, "x1", t.TempDir()))
	ycfg := testConfig(t, "y1", t.TempDir())
	ycfg.FSM.DedupMax = 1000
	y := mustStartSingle(t, ycfg)
	y.mux.setClusterID(x.ClusterID()) // same cluster, other parameters
	req := &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("y1"), Addr: []byte(y.RaftAddr())}, Term: 1000}
	if err := y.trans.RequestVote("x1", raft.ServerAddress(x.RaftAddr()), req, &raft.RequestVoteResponse{}); err == nil {
		t.Fatal("a vote request from a node with other state machine parameters was answered")
	}
}

// Health compares the applied index with the leader's commit index as last heard, not the node's
// own (which freezes with its log): a follower far behind is not serving, and says why.
func TestHealth_BehindTheLeadersCommitIndexIsNotServing(t *testing.T) {
	cfgs := groupConfigs(t, "n1", "n2", "n3")
	nodes := startGroup(t, cfgs)
	leader := waitLeader(t, nodes)
	var f *Node
	for _, n := range nodes {
		if n != leader {
			f = n
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for ok, why := f.Health(); !ok; ok, why = f.Health() {
		if time.Now().After(deadline) {
			t.Fatalf("follower not serving: %s", why)
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.trans.leaderCommit.Store(f.raft.AppliedIndex() + MaxServingLag + 10) // as if the leader had moved on
	if ok, why := f.Health(); ok || !strings.Contains(why, "behind the leader's commit index") {
		t.Fatalf("a follower %d entries behind the leader: Health = %v, %q", MaxServingLag+10, ok, why)
	}
	if ok, _ := leader.Health(); !ok {
		t.Fatal("the leader is not serving")
	}
}
