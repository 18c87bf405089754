// Package node runs one Raft member of the limiter: hashicorp/raft with a raft-boltdb/v2 or raft-wal store, a
// file snapshot store and a TCP transport; bootstrap, join and restart; membership and
// leadership; group commit of takes; and linearizable reads. See DESIGN.md in this folder.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/limiterd/limiter/fsm"
)

// Node is one running Raft member.
type Node struct {
	cfg   Config
	log   *slog.Logger
	fsm   *fsm.FSM
	raft  *raft.Raft
	trans *guardedTransport // raft's NetworkTransport with the TimeoutNow guards (transport.go)
	store *trackedStore     // raft-boltdb or raft-wal, with its last write's outcome (logstore.go)
	// dirLock holds the data dir against a second process (dirlock.go).
	dirLock *os.File
	snaps   *raft.FileSnapshotStore
	mux     *muxStream // the Raft port: cluster-ID handshake and discovery (mux.go)

	// name is the member's name (--id); cfg.ID is its Raft ID, which differs after it came back
	// from a lost volume (rejoin.go). meta is node.json.
	name     string
	metaMu   sync.Mutex
	meta     nodeMeta
	started  atomic.Bool // raft is running (n.raft is set)
	fsmPrint uint64      // fsm.Config.Fingerprint, for discovery and the Raft handshake

	batch  *batcher
	holder *holder // this member's escrow for local limits (holder.go)
	// escrowBatch groups grants and settles into entries of their own, with their own entries in
	// flight: they must not queue behind the takes' commits (a holder waiting for a grant is
	// a take waiting).
	escrowBatch *batcher
	// ctx ends when the node shuts down (for work not tied to a caller).
	ctx    context.Context
	cancel context.CancelFunc
	clock  stampClock
	lease  leaseState
	// configChanges counts membership changes in progress: the lease is not held during them,
	// because they change which servers form a quorum.
	configChanges atomic.Int32
	pending       pendingSet
	renewing      atomic.Uint64 // the term whose lease renewer is running
	haltNoted     atomic.Bool   // the state machine's halt has been logged (and acted on)
	spawnMu       sync.Mutex    // guards stopping against wg.Add (see spawn)
	stopping      bool
	leaderChanges atomic.Uint64
	observer      atomic.Pointer[Observer]
	localDenials  atomic.Uint64
	commitStall   stallClock // health: how long a leader's entries have waited to commit
	leaseReads    atomic.Uint64

	// ready is the term in which this node, as leader, has committed an entry of its own term
	// (so its state includes every committed entry); 0 when not ready.
	ready atomic.Uint64

	shutdownCh chan struct{}
	closeOnce  sync.Once
	wg         sync.WaitGroup
}

// Start opens (or creates) the data dir and starts Raft. With state in the data dir it restarts
// from it. With an empty data dir it joins (cfg.Join: waits to be added), or, with bootstrap
// members, asks them first (discover.go): it bootstraps a new cluster only when every listed member
// answers and none has a history, and comes back as a new member identity when the cluster
// already has one. Start waits for peers while that is undecided; ctx bounds the wait.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.LeaseDuration == 0 {
		cfg.LeaseDuration = cfg.HeartbeatTimeout / 2
	}
	if cfg.Mono == nil {
		start := time.Now()
		cfg.Mono = func() time.Duration { return time.Since(start) }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	n := &Node{cfg: cfg, name: cfg.ID, log: cfg.Logger.With("node", cfg.ID), shutdownCh: make(chan struct{})}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			if n.raft != nil {
				_ = n.Shutdown() // stops raft and the goroutines started so far, then closes
				return
			}
			n.closeResources()
		}
	}()

	var err error
	if n.dirLock, err = lockDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	meta, err := checkDataDir(cfg.DataDir, cfg.ID)
	if err != nil {
		return nil, err
	}
	kind, changed, err := resolveLogStore(cfg.DataDir, &meta, cfg.LogStore, n.log)
	if err != nil {
		return nil, err
	}
	if changed {
		if err := writeMeta(cfg.DataDir, meta); err != nil {
			return nil, err
		}
	}
	n.meta = meta
	f, err := fsm.New(cfg.FSM)
	if err != nil {
		return nil, err
	}
	n.fsm = f

	var hl hclog.Logger = newRaftLogger(n.log, hclog.LevelFromString(cfg.RaftLogLevel))
	if cfg.RaftLogOutput != nil {
		hl = hclog.New(&hclog.LoggerOptions{
			Name:   "raft",
			Output: cfg.RaftLogOutput,
			Level:  hclog.LevelFromString(cfg.RaftLogLevel),
		}).With("node", cfg.ID)
	}
	store, storeAt, err := openLogStore(storePath(cfg.DataDir, kind), kind, storeOptions{noSync: cfg.NoSync, segmentSize: cfg.WALSegmentSize}, hl)
	if err != nil {
		return nil, err
	}
	if n.store, err = newTrackedStore(store, kind, storeAt, cfg.LogCacheSize, n.log); err != nil {
		store.Close()
		return nil, err
	}
	snapDir := cfg.DataDir
	n.snaps, err = raft.NewFileSnapshotStoreWithLogger(snapDir, 2, hl)
	if err != nil {
		return nil, fmt.Errorf("open snapshot store in %s: %w", snapDir, err)
	}
	has, err := raft.HasExistingState(n.store, n.store, n.snaps)
	if err != nil {
		return nil, fmt.Errorf("read raft state in %s: %w", cfg.DataDir, err)
	}
	if !has && len(cfg.Bootstrap) == 0 && !cfg.Join {
		return nil, fmt.Errorf("%w %s: pass bootstrap members to create a cluster, or join to be added to one", ErrNoState, cfg.DataDir)
	}

	stream := cfg.Stream
	if stream == nil {
		tcp, err := newTCPStream(cfg.RaftBind, cfg.RaftAddr)
		if err != nil {
			return nil, err
		}
		stream = tcp
		if cfg.TLS != nil {
			stream = &tlsStream{tcpStream: tcp, tls: cfg.TLS, names: cfg.PeerNames}
		}
	}
	// The Raft port answers discovery from here on; Raft connections wait for raft to run.
	// (n.mux is assigned after its goroutines start: answerProbe must not read it.)
	n.fsmPrint = cfg.FSM.Fingerprint()
	n.holder = newHolder(n)
	n.mux = newMuxStream(stream, meta.ClusterID, n.fsmPrint, n.answerProbe, n.serveEscrow, n.log)
	tc := &raft.NetworkTransportConfig{Stream: n.mux, MaxPool: 3, Timeout: 10 * time.Second, Logger: hl}
	// raft also asks for this node's own ID (EncodePeer on every heartbeat): answer it with the
	// advertised address so that is not a warning per heartbeat. Peers are found by Raft ID or,
	// for a member back under a new identity, by name.
	addrs := &peerAddrs{byID: map[string]string{}}
	for id, a := range cfg.PeerAddrs {
		addrs.byID[id] = a
	}
	tc.ServerAddressProvider = addrs // filled in with this node's own Raft ID below, before raft runs
	n.trans = newGuardedTransport(raft.NewNetworkTransportWithConfig(tc))

	rejoining := false
	if !has && len(cfg.Bootstrap) > 0 {
		d, err := n.discover(ctx)
		if err != nil {
			return nil, err
		}
		meta.ClusterID = d.clusterID
		if d.rejoin {
			meta.RaftID, rejoining = newIncarnation(cfg.ID), true // never reuse an ID: see rejoin.go
		} else {
			meta.RaftID = cfg.ID
		}
		if err := n.updateMeta(meta); err != nil {
			return nil, err
		}
	}
	n.cfg.ID = n.meta.RaftID
	addrs.byID[n.cfg.ID] = cfg.RaftAddr
	addrs.self = n.cfg.ID
	if n.cfg.ID != cfg.ID {
		n.log = n.log.With("raft_id", n.cfg.ID)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.ID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	if cfg.SnapshotInterval > 0 {
		rc.SnapshotInterval = cfg.SnapshotInterval
	}
	rc.TrailingLogs = cfg.TrailingLogs
	rc.MaxAppendEntries = cfg.MaxAppendEntries
	rc.Logger = hl
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("raft config: %w", err)
	}

	bootstrapOnly := false
	if !has && len(cfg.Bootstrap) > 0 && !rejoining {
		var servers []raft.Server
		for _, p := range cfg.Bootstrap {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr)})
		}
		if err := raft.BootstrapCluster(rc, n.store, n.store, n.snaps, n.trans, raft.Configuration{Servers: servers}); err != nil {
			return nil, fmt.Errorf("bootstrap: %w", err)
		}
		n.log.Info("bootstrapped a new cluster", "members", len(servers), "cluster_id", meta.ClusterID)
		bootstrapOnly = true
	} else if has && len(cfg.Bootstrap) > 0 {
		_, term, last := n.localState()
		bootstrapOnly = term <= 1 && last <= 1
	}
	if bootstrapOnly && len(cfg.Bootstrap) > 1 {
		if err := n.waitPeersBootstrapped(ctx); err != nil {
			return nil, err
		}
	}

	if has && cfg.LeaseDuration > 0 {
		// Restart guard: before the crash this node may have acknowledged a heartbeat that a
		// leader's lease counts on; it must not vote for anyone else until that lease is over.
		// A full heartbeat timeout covers the lease plus the heartbeat interval and drift.
		time.Sleep(cfg.HeartbeatTimeout)
	}
	n.raft, err = raft.NewRaft(rc, raftFSM{n}, n.store, n.store, n.snaps, n.trans)
	if err != nil {
		if metas, lerr := n.snaps.List(); lerr == nil && len(metas) > 0 {
			return nil, fmt.Errorf("start raft from %s (newest snapshot %s): %w",
				cfg.DataDir, filepath.Join(snapDir, "snapshots", metas[0].ID), err)
		}
		return nil, fmt.Errorf("start raft from %s: %w", cfg.DataDir, err)
	}
	n.started.Store(true)
	n.mux.raftOn.Store(true)
	n.spawn(func() {
		n.trans.pump(func() raft.ServerID { _, id := n.raft.LeaderWithID(); return id }, n.canVote, n.shutdownCh)
	})
	if has {
		n.log.Info("restarted from existing state", "data_dir", cfg.DataDir)
	}

	n.batch = newBatcher(n)
	n.spawn(n.batch.run)
	n.escrowBatch = newBatcher(n)
	n.spawn(n.escrowBatch.run)
	n.spawn(n.holder.run)
	n.spawn(n.watchLeadership)
	if n.cfg.ID != n.name {
		// A new identity after a lost volume (this start or an earlier one, which may have stopped
		// before the leader promoted it): ask until it is a voter; rejoin returns at once if it is.
		n.spawn(n.rejoin)
	}
	if n.clusterID() == "" {
		n.spawn(n.learnClusterID)
	}
	ok = true
	return n, nil
}

// updateMeta writes node.json and makes it this node's.
func (n *Node) updateMeta(m nodeMeta) error {
	n.metaMu.Lock()
	defer n.metaMu.Unlock()
	if err := writeMeta(n.cfg.DataDir, m); err != nil {
		return err
	}
	n.meta = m
	n.mux.setClusterID(m.ClusterID)
	return nil
}

// spawn runs fn in a goroutine that Shutdown waits for, unless shutdown has begun (a WaitGroup
// must not grow while Shutdown waits on it). Every goroutine the node owns starts here; the only
// others are the waiters on raft futures (future.go) and the Raft port's connections (mux.go).
// It reports whether fn was started.
func (n *Node) spawn(fn func()) bool {
	n.spawnMu.Lock()
	defer n.spawnMu.Unlock()
	if n.stopping {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		fn()
	}()
	return true
}

// Shutdown stops Raft and closes the stores. It is safe to call more than once.
func (n *Node) Shutdown() error {
	var err error
	n.closeOnce.Do(func() {
		n.spawnMu.Lock()
		n.stopping = true
		n.spawnMu.Unlock()
		close(n.shutdownCh)
		n.cancel()
		n.ready.Store(0)
		n.lease.drop()
		if n.mux != nil {
			n.mux.stopDialing() // a hung peer must not hold raft's shutdown (see stopDialing)
		}
		if n.raft != nil {
			if e := n.raft.Shutdown().Error(); e != nil {
				err = fmt.Errorf("raft shutdown: %w", e)
			}
		}
		n.wg.Wait()
		n.closeResources()
	})
	return err
}

func (n *Node) closeResources() {
	if n.trans != nil {
		n.trans.Close() // closes the stream (n.mux) too
	} else if n.mux != nil {
		n.mux.Close()
	}
	if n.store != nil {
		n.store.Close()
	}
	if n.dirLock != nil {
		n.dirLock.Close() // releases the lock
	}
}

// Observer receives measurements for metrics. Its methods must be quick and safe for concurrent
// use; they are called on the batching and snapshot paths.
type Observer interface {
	ObserveBatch(takes int)
	ObserveSnapshot(d time.Duration)
	ObserveGrant(d time.Duration) // an escrow grant round, from request to answer
}

// SetObserver installs o (nil removes it).
func (n *Node) SetObserver(o Observer) {
	if o == nil {
		n.observer.Store(nil)
		return
	}
	n.observer.Store(&o)
}

// ID is the node's Raft server ID.
func (n *Node) ID() string { return n.cfg.ID }

// Name is the member's name (its --id), the same across a rejoin under a new Raft ID.
func (n *Node) Name() string { return n.name }

// RaftAddr is the address Raft advertises.
func (n *Node) RaftAddr() string { return string(n.trans.LocalAddr()) }

// DataDir is the folder holding this node's Raft log, snapshots and node.json.
func (n *Node) DataDir() string { return n.cfg.DataDir }

// APIAddr is the gRPC address this node registers.
func (n *Node) APIAddr() string { return n.cfg.APIAddr }

// FSM exposes the state machine for local reads and statistics.
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// Raft exposes the underlying Raft instance (for tests and metrics).
func (n *Node) Raft() *raft.Raft { return n.raft }

// Done is closed when Shutdown begins.
func (n *Node) Done() <-chan struct{} { return n.shutdownCh }

// IsLeader reports whether this node is the leader and ready to serve (it has committed an
// entry of its current term).
// A halted state machine is never ready: its state stopped at the entry it could not apply.
func (n *Node) IsLeader() bool {
	return n.raft.State() == raft.Leader && n.ready.Load() == n.raft.CurrentTerm() && n.ready.Load() != 0 &&
		n.fsm.Halted() == nil
}

// LeadsRaft reports whether raft counts this node as the leader, ready to serve or not (see IsLeader).
func (n *Node) LeadsRaft() bool { return n.raft.State() == raft.Leader }

// Leader returns the leader's ID and API address as this node knows them ("" when unknown).
func (n *Node) Leader() (id, apiAddr string) {
	_, lid := n.raft.LeaderWithID()
	if lid == "" {
		return "", ""
	}
	return string(lid), n.fsm.Members()[string(lid)]
}

// watchLeadership commits a barrier on each election win before marking the node ready, and
// re-anchors the stamp clock. Losing leadership clears readiness at once.
func (n *Node) watchLeadership() {
	for {
		select {
		case <-n.shutdownCh:
			return
		case leader := <-n.raft.LeaderCh():
			n.ready.Store(0)
			n.lease.drop()
			n.leaderChanges.Add(1)
			if !leader {
				n.log.Info("lost leadership")
				continue
			}
			n.becomeReady(n.raft.CurrentTerm())
		}
	}
}

// becomeReady makes this leader ready to serve in term: it commits a barrier (an entry of this
// term; Barrier also waits until everything before it is applied, so reads and stamps start from
// the whole committed state), retrying while it still leads in that term, then anchors the stamp
// clock, marks itself ready and keeps the read lease renewed.
func (n *Node) becomeReady(term uint64) {
	leads := func() bool { return n.raft.State() == raft.Leader && n.raft.CurrentTerm() == term }
	for leads() {
		err := n.wait(context.Background(), n.raft.Barrier(raftCallTimeout), nil)
		if err == nil {
			break
		}
		if errors.Is(err, ErrShutdown) {
			return
		}
		n.log.Warn("barrier in a new term failed; retrying", "term", term, "err", err)
		select {
		case <-n.shutdownCh:
			return
		case <-time.After(barrierRetry):
		}
	}
	if !leads() {
		return
	}
	n.clock.anchor(n.fsm.Clock(), n.cfg.Now(), n.cfg.Mono())
	n.ready.Store(term)
	n.log.Info("leader ready", "term", term, "stamp", n.Stamp(), "log_clock", n.fsm.Clock())
	if n.cfg.LeaseDuration > 0 && n.renewing.Swap(term) != term { // one renewer per term
		n.spawn(func() { n.renewLease(term) })
	}
}
