package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/limiterd/limiter/fsm"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("reserve port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func testConfig(t *testing.T, id, dir string) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.ID, cfg.RaftAddr, cfg.DataDir, cfg.APIAddr = id, freeAddr(t), dir, "127.0.0.1:1"
	cfg.LogStore = testLogStore
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.RaftLogOutput = io.Discard
	return cfg
}

// mustStartSingle bootstraps a one-node cluster and waits until it is a ready leader.
func mustStartSingle(t *testing.T, cfg Config) *Node {
	t.Helper()
	cfg.Bootstrap = []Peer{{ID: cfg.ID, RaftAddr: cfg.RaftAddr}}
	n, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { n.Shutdown() })
	deadline := time.Now().Add(10 * time.Second)
	for !n.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatalf("single node did not become a ready leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return n
}

func TestStart_EmptyDataDirWithoutBootstrapOrJoinIsRefused(t *testing.T) {
	cfg := testConfig(t, "n1", t.TempDir())
	_, err := Start(context.Background(), cfg)
	if !errors.Is(err, ErrNoState) || !strings.Contains(err.Error(), cfg.DataDir) {
		t.Fatalf("got %v, want ErrNoState naming %s", err, cfg.DataDir)
	}
}

func TestStart_DataDirOfAnotherNodeIsRefused(t *testing.T) {
	dir := t.TempDir()
	n := mustStartSingle(t, testConfig(t, "n1", dir))
	if err := n.Shutdown(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	_, err := Start(context.Background(), testConfig(t, "n2", dir))
	if !errors.Is(err, ErrWrongNode) || !strings.Contains(err.Error(), "node.json") {
		t.Fatalf("got %v, want ErrWrongNode naming node.json", err)
	}
}

func TestStart_CorruptLogFileIsRefusedWithItsName(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "raft.db"), []byte("this is not a bolt database, just garbage bytes......"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, "n1", dir)
	cfg.LogStore = LogStoreBolt // wal: TestLogStore_WALCorruptMetaDBIsRefusedWithItsName
	cfg.Bootstrap = []Peer{{ID: "n1", RaftAddr: cfg.RaftAddr}}
	_, err := Start(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "raft.db")) {
		t.Fatalf("got %v, want an error naming raft.db", err)
	}
}

func TestStart_RestartKeepsStateWithoutBootstrap(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, "n1", dir)
	n := mustStartSingle(t, cfg)
	ctx := context.Background()
	if _, err := n.SetLimit(ctx, fsm.LimitSpec{Name: "l", Rate: 1, Period: time.Hour, Burst: 10}); err != nil {
		t.Fatalf("set limit: %v", err)
	}
	out, err := n.Take(ctx, fsm.Take{RequestID: "r1", Items: []fsm.Item{{Limit: "l", Key: "k", Cost: 4}}})
	if err != nil || out.Err != nil || !out.Results[0].Allowed {
		t.Fatalf("take: %v %+v", err, out)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	cfg.Bootstrap = nil // a restart needs no bootstrap
	n2, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer n2.Shutdown()
	deadline := time.Now().Add(10 * time.Second)
	for !n2.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatalf("restarted node did not lead")
		}
		time.Sleep(10 * time.Millisecond)
	}
	res, _, err := n2.Peek(ctx, "l", "k", 1, false)
	if err != nil || res.Remaining != 6 {
		t.Fatalf("peek after restart: %+v %v, want 6 remaining", res, err)
	}
	again, err := n2.Take(ctx, fsm.Take{RequestID: "r1", Items: []fsm.Item{{Limit: "l", Key: "k", Cost: 4}}})
	if err != nil || !again.Replayed {
		t.Fatalf("retry after restart: %+v %v, want replayed", again, err)
	}
}

func TestConfig_ValidateRejectsInconsistentFields(t *testing.T) {
	base := testConfig(t, "n1", t.TempDir())
	cases := map[string]func(c *Config){
		"no id":                  func(c *Config) { c.ID = "" },
		"no data dir":            func(c *Config) { c.DataDir = "" },
		"bootstrap and join":     func(c *Config) { c.Bootstrap = []Peer{{ID: "n1", RaftAddr: c.RaftAddr}}; c.Join = true },
		"bootstrap without self": func(c *Config) { c.Bootstrap = []Peer{{ID: "n2", RaftAddr: "127.0.0.1:9"}} },
		"bootstrap other addr":   func(c *Config) { c.Bootstrap = []Peer{{ID: "n1", RaftAddr: "127.0.0.1:9"}} },
		"lease above heartbeat":  func(c *Config) { c.LeaderLeaseTimeout = 2 * c.HeartbeatTimeout },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			c := base
			mutate(&c)
			if err := c.Validate(); err == nil {
				t.Fatalf("Validate accepted %s", name)
			}
		})
	}
}

func TestParsePeers(t *testing.T) {
	ps, err := ParsePeers("n1=127.0.0.1:1, n2=127.0.0.1:2")
	if err != nil || len(ps) != 2 || ps[1].ID != "n2" || ps[1].RaftAddr != "127.0.0.1:2" {
		t.Fatalf("got %+v %v", ps, err)
	}
	for _, bad := range []string{"n1", "=127.0.0.1:1", "n1=nohost", "n1=127.0.0.1:1,n1=127.0.0.1:2", "n1=127.0.0.1:1,n2=127.0.0.1:1"} {
		if _, err := ParsePeers(bad); err == nil {
			t.Errorf("ParsePeers(%q) accepted", bad)
		}
	}
}

func TestStampClock_FollowsMonotonicTimeNotWallClocks(t *testing.T) {
	var c stampClock
	wall := time.Unix(1000, 0)
	// A new cluster starts log time at the wall clock.
	c.anchor(0, wall, 5*time.Second)
	if got := c.stamp(wall.Add(-time.Hour), 5*time.Second+50*time.Millisecond); got != wall.UnixNano()+int64(50*time.Millisecond) {
		t.Fatalf("stamp %d: a wall step moved stamps", got)
	}
	// A node that applied an entry stamped S at monotonic 10s and wins an election at 12s
	// anchors at S+2s, whatever its wall clock says (here: three hours ahead).
	const S = int64(1_000_000_000_000)
	c = stampClock{}
	c.observe(S, 10*time.Second)
	c.anchor(S, wall.Add(3*time.Hour), 12*time.Second)
	if got, want := c.stamp(wall, 13*time.Second), S+int64(3*time.Second); got != want {
		t.Fatalf("stamp %d, want %d (anchor at the last stamp plus monotonic elapsed)", got, want)
	}
	// A node that has applied nothing in this process (just restarted) anchors at the log clock.
	var fresh stampClock
	fresh.anchor(S, wall.Add(-3*time.Hour), time.Second)
	if got := fresh.stamp(wall, 2*time.Second); got != S+int64(time.Second) {
		t.Fatalf("fresh node stamp %d, want %d", got, S+int64(time.Second))
	}
}

// TestStampClock_ReanchorNeverGoesBehindTheLineInUse: a node anchored again in the same process
// (a new term after a failed transfer) keeps stamping at or after where its earlier line is now,
// even when the last entry it applied is older than that line by the commit latency.
func TestStampClock_ReanchorNeverGoesBehindTheLineInUse(t *testing.T) {
	var c stampClock
	const S = int64(1_000_000_000_000)
	c.observe(S, 10*time.Second)
	c.anchor(S, time.Unix(0, 0), 10*time.Second)                         // line: S at 10 s
	c.observe(S+int64(time.Second), 11*time.Second+900*time.Millisecond) // applied 100 ms after its stamp
	c.anchor(S+int64(time.Second), time.Unix(0, 0), 12*time.Second)
	if got, want := c.stamp(time.Unix(0, 0), 12*time.Second), S+int64(2*time.Second); got < want {
		t.Fatalf("stamp after re-anchoring %d, behind the earlier line %d", got, want)
	}
}

// mustDataDirWithState runs a single node that applies a limit, a take and a snapshot, and
// stops it, returning its config.
func mustDataDirWithState(t *testing.T) Config {
	t.Helper()
	cfg := testConfig(t, "n1", t.TempDir())
	n := mustStartSingle(t, cfg)
	ctx := context.Background()
	if _, err := n.SetLimit(ctx, fsm.LimitSpec{Name: "l", Rate: 1, Period: time.Hour, Burst: 10}); err != nil {
		t.Fatalf("set limit: %v", err)
	}
	if out, err := n.Take(ctx, fsm.Take{RequestID: "r1", Items: []fsm.Item{{Limit: "l", Key: "k", Cost: 4}}}); err != nil || out.Err != nil {
		t.Fatalf("take: %v %+v", err, out)
	}
	if err := n.Raft().Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	cfg.Bootstrap = nil
	return cfg
}

func TestStart_TruncatedLogFileIsRefusedWithItsName(t *testing.T) {
	if testLogStore == LogStoreWAL {
		t.Skip("raft.db is bolt's file; TestLogStore_WALTruncatedSegmentIsRefusedWithItsName covers wal")
	}
	cfg := mustDataDirWithState(t)
	path := filepath.Join(cfg.DataDir, "raft.db")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()/3); err != nil {
		t.Fatal(err)
	}
	n, err := Start(context.Background(), cfg)
	if err == nil {
		n.Shutdown()
		t.Fatalf("a truncated raft.db was accepted")
	}
	if !strings.Contains(err.Error(), path) {
		t.Fatalf("error %q does not name %s", err, path)
	}
}

func TestStart_CorruptSnapshotIsRefusedNotSkipped(t *testing.T) {
	cfg := mustDataDirWithState(t)
	dirs, err := filepath.Glob(filepath.Join(cfg.DataDir, "snapshots", "*", "state.bin"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no snapshot written: %v", err)
	}
	b, err := os.ReadFile(dirs[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(dirs[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := Start(context.Background(), cfg)
	if err == nil {
		n.Shutdown()
		t.Fatalf("a corrupt snapshot was accepted (the state it holds would be silently lost)")
	}
	if !strings.Contains(err.Error(), filepath.Dir(dirs[0])) {
		t.Fatalf("error %q does not name the snapshot %s", err, filepath.Dir(dirs[0]))
	}
}

func TestLease_HeldByReadyLeaderAndServesReadsLocally(t *testing.T) {
	cfg := testConfig(t, "n1", t.TempDir())
	n := mustStartSingle(t, cfg)
	ctx := context.Background()
	deadline := time.Now().Add(5 * time.Second)
	for !n.LeaseHeld() {
		if time.Now().After(deadline) {
			t.Fatalf("a ready single-node leader never took the lease")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := n.SetLimit(ctx, fsm.LimitSpec{Name: "l", Rate: 1, Period: time.Hour, Burst: 2}); err != nil {
		t.Fatalf("set limit: %v", err)
	}
	before := n.Status().LeaseReads
	if _, _, err := n.Peek(ctx, "l", "k", 1, false); err != nil {
		t.Fatalf("peek: %v", err)
	}
	if n.Status().LeaseReads != before+1 {
		t.Fatalf("peek under the lease did not take the lease path")
	}
	// Transferring leadership (impossible here, but it is attempted) drops the lease first.
	_ = n.TransferLeadership(ctx, "")
	if n.LeaseHeld() {
		t.Fatalf("lease still held after a leadership transfer began")
	}
}

func TestLocalTake_CertainDenialAnsweredWithoutALogEntry(t *testing.T) {
	n := mustStartSingle(t, testConfig(t, "n1", t.TempDir()))
	ctx := context.Background()
	if _, err := n.SetLimit(ctx, fsm.LimitSpec{Name: "l", Rate: 1, Period: time.Hour, Burst: 2}); err != nil {
		t.Fatalf("set limit: %v", err)
	}
	take := func(id string) fsm.Take {
		return fsm.Take{RequestID: id, Items: []fsm.Item{{Limit: "l", Key: "k", Cost: 1}}}
	}
	// While tokens are left, nothing is answered locally.
	if _, ok := n.answerLocally(take("a")); ok {
		t.Fatalf("an allowed take was answered locally")
	}
	for _, id := range []string{"a", "b"} {
		if out, err := n.Take(ctx, take(id)); err != nil || !out.Results[0].Allowed {
			t.Fatalf("take %s: %+v %v", id, out, err)
		}
	}
	for !n.LeaseHeld() {
		time.Sleep(5 * time.Millisecond)
	}
	last := n.Raft().LastIndex()
	out, ok := n.answerLocally(take("c"))
	if !ok || out.Results[0].Allowed || out.Results[0].RetryAfter <= 0 {
		t.Fatalf("certain denial: ok=%v %+v, want a local denial with a retry time", ok, out)
	}
	if n.Raft().LastIndex() != last || n.Status().LocalDenials != 1 {
		t.Fatalf("the local denial wrote to the log or was not counted")
	}
	// A retry of a recorded request is answered from the exactly-once table.
	if out, ok := n.answerLocally(take("a")); !ok || !out.Replayed || !out.Results[0].Allowed {
		t.Fatalf("retry of a recorded take: ok=%v %+v, want its recorded answer", ok, out)
	}
}

func TestLocalTake_NotWhileATakeOnTheBucketIsPending(t *testing.T) {
	var p pendingSet
	tk := fsm.Take{Items: []fsm.Item{{Limit: "l", Key: "k", Cost: 1}}}
	other := fsm.Take{Items: []fsm.Item{{Limit: "l", Key: "other", Cost: 1}}}
	p.addTake(&tk, 1)
	if p.quiet(&tk) || !p.quiet(&other) {
		t.Fatalf("pending take on l/k: quiet(l/k)=%v quiet(l/other)=%v", p.quiet(&tk), p.quiet(&other))
	}
	p.addTake(&tk, -1)
	p.addLimit("l", 1)
	if p.quiet(&other) {
		t.Fatalf("a pending change of limit l must stop local answers on all its buckets")
	}
	p.addLimit("l", -1)
	if !p.quiet(&tk) {
		t.Fatalf("nothing pending, yet not quiet")
	}
}

func TestStart_RestartWaitsOutTheLeaseBeforeStartingRaft(t *testing.T) {
	cfg := mustDataDirWithState(t)
	start := time.Now()
	n, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	if el, lease := time.Since(start), cfg.HeartbeatTimeout/2; el < lease {
		t.Fatalf("restart took %v, less than the lease %v: the restart guard did not wait", el, lease)
	}
}

func TestTransferLeadership_UnknownTargetLeavesTheLeaderServing(t *testing.T) {
	n := mustStartSingle(t, testConfig(t, "n1", t.TempDir()))
	if err := n.TransferLeadership(context.Background(), "nobody"); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("got %v, want ErrUnknownMember", err)
	}
	if !n.IsLeader() {
		t.Fatalf("a refused transfer left the leader not ready")
	}
}

func TestTransferLeadership_FailedTransferRestoresReadinessButHoldsOffTheLease(t *testing.T) {
	cfg := testConfig(t, "n1", t.TempDir())
	n := mustStartSingle(t, cfg)
	for !n.LeaseHeld() {
		time.Sleep(5 * time.Millisecond)
	}
	// A single node has no one to hand leadership to: the transfer fails.
	if err := n.TransferLeadership(context.Background(), ""); err == nil {
		t.Fatalf("a transfer with no other voter succeeded")
	}
	if n.LeaseHeld() {
		t.Fatalf("lease held right after a failed transfer (its target may still be campaigning)")
	}
	deadline := time.Now().Add(10 * time.Second)
	for !n.IsLeader() || !n.LeaseHeld() {
		if time.Now().After(deadline) {
			t.Fatalf("after a failed transfer the leader never became ready with a lease again (ready=%v)", n.IsLeader())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTCPStream_AdvertisesTheConfiguredHostName(t *testing.T) {
	ts, err := newTCPStream("127.0.0.1:0", "localhost:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	if got := ts.Addr().String(); got != "localhost:7000" {
		t.Fatalf("advertised %q, want the name as configured (peers must re-resolve it)", got)
	}
}

func TestConfig_LeaseNotLongerThanLeaderLeaseTimeout(t *testing.T) {
	cfg := testConfig(t, "n1", t.TempDir())
	cfg.LeaseDuration = cfg.LeaderLeaseTimeout + time.Millisecond
	if err := cfg.Validate(); err == nil {
		t.Fatal("a lease longer than LeaderLeaseTimeout was accepted: a leader that steps down would vote while still holding it")
	}
	cfg.LeaseDuration, cfg.LeaderLeaseTimeout = 0, cfg.HeartbeatTimeout/2-time.Millisecond
	if err := cfg.Validate(); err == nil {
		t.Fatal("the default lease (half the heartbeat timeout) was accepted with a shorter LeaderLeaseTimeout")
	}
}

// TestNode_HaltedStateMachineServesNothing: after a committed entry it cannot apply, the node is
// not a ready leader and refuses even stale reads: its state stopped at the entry before.
func TestNode_HaltedStateMachineServesNothing(t *testing.T) {
	n := mustStartSingle(t, testConfig(t, "n1", t.TempDir()))
	ctx := context.Background()
	if _, err := n.SetLimit(ctx, fsm.LimitSpec{Name: "l", Rate: 1, Period: time.Hour, Burst: 10}); err != nil {
		t.Fatalf("set limit: %v", err)
	}
	if err := n.raft.Apply([]byte{0xff, 0xff, 0xff}, time.Second).Error(); err != nil {
		t.Fatalf("append a corrupt entry: %v", err)
	}
	if n.IsLeader() || n.LeaseHeld() {
		t.Fatal("a node whose state machine halted still serves as leader")
	}
	if _, _, err := n.Peek(ctx, "l", "k", 1, true); !errors.Is(err, fsm.ErrHalted) {
		t.Fatalf("stale peek on a halted node: %v, want ErrHalted", err)
	}
	if _, _, err := n.Peek(ctx, "l", "k", 1, false); err == nil {
		t.Fatal("linearizable peek on a halted node succeeded")
	}
}
