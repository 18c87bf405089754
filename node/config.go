package node

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/limiterd/limiter/certs"
	"github.com/limiterd/limiter/fsm"
	"github.com/limiterd/limiter/internal/cli"
)

// Sentinel errors. Test them with errors.Is.
var (
	// ErrNotLeader: the call needs the leader and this node is not it (or not yet ready to serve
	// as leader: a new leader first commits an entry of its own term).
	ErrNotLeader = errors.New("not the leader")
	// ErrNoState: the data dir holds no Raft state and neither bootstrap nor join was asked for.
	ErrNoState = errors.New("no raft state in data dir")
	// ErrWrongNode: the data dir belongs to a node with another ID.
	ErrWrongNode = errors.New("data dir belongs to another node")
	// ErrShutdown: the node is shutting down.
	ErrShutdown = errors.New("node is shut down")
	// ErrUnknownMember: a membership call names a server that is not in the configuration.
	ErrUnknownMember = errors.New("unknown member")
	// ErrUnreachableMember: a member to be added does not answer as itself at its Raft address.
	ErrUnreachableMember = errors.New("the member to add does not answer")
	// ErrAddressInUse: a member is to be added at a Raft address another member holds.
	ErrAddressInUse = errors.New("raft address held by another member")
	// ErrStorage: this node could not write its Raft log (a full disk, an I/O error); the command
	// was not appended, and is safe to retry (at another leader, or once space returns).
	ErrStorage = errors.New("the Raft log could not be written; the command was not appended")
	// ErrBusy: the command was not appended (raft's queue was full, or a restore aborted it);
	// it is safe to retry.
	ErrBusy = errors.New("busy: the command was not appended")
)

// Peer is one member of a bootstrap configuration.
type Peer struct {
	ID       string
	RaftAddr string
}

// ParsePeers parses "id=host:port,id=host:port".
func ParsePeers(s string) ([]Peer, error) {
	var out []Peer
	seen := map[string]bool{}
	for _, part := range cli.SplitList(s) {
		id, addr, ok := strings.Cut(part, "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("peer %q: want id=host:port", part)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("peer %q: address: %w", part, err)
		}
		if seen[id] {
			return nil, fmt.Errorf("peer %q: duplicate id %q", part, id)
		}
		if seen["addr:"+addr] {
			return nil, fmt.Errorf("peer %q: duplicate address %q", part, addr)
		}
		seen[id], seen["addr:"+addr] = true, true
		out = append(out, Peer{ID: id, RaftAddr: addr})
	}
	return out, nil
}

// Config describes one node.
type Config struct {
	// ID is the node's stable Raft server ID. A node whose data dir was wiped must use a new ID.
	ID string
	// RaftAddr is the address Raft listens on and advertises to peers (host:port).
	RaftAddr string
	// RaftBind is the address Raft listens on when it differs from RaftAddr (e.g. 0.0.0.0:7000
	// in a container); empty means RaftAddr.
	RaftBind string
	// APIAddr is this node's gRPC address, recorded in the replicated state so followers can
	// forward to the leader and clients can be redirected.
	APIAddr string
	// DataDir holds the Raft log (raft.db or wal/), snapshots and node.json.
	DataDir string
	// LogStore is the Raft log store: LogStoreBolt or LogStoreWAL for a new data dir; an
	// existing one keeps the kind it has (node.json records it) and a different value is refused.
	// Empty means the data dir's own, or bolt for a new one.
	LogStore string
	// WALSegmentSize is the size of raft-wal's segment files (each is preallocated to it); 0 means
	// raft-wal's default, 64 MiB. Only for the wal store.
	WALSegmentSize int
	// Bootstrap, when the data dir is empty, creates a new cluster with these voters (which must
	// include this node). Ignored when the data dir already holds state.
	Bootstrap []Peer
	// Join, when the data dir is empty, starts the node without state to be added by a member.
	Join bool

	// Raft timing; all three must be positive (DefaultConfig has production values).
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// LeaseDuration is how long a leader may answer reads from local state after a quorum
	// confirmed its leadership. 0 means half of HeartbeatTimeout; negative disables the lease
	// (every read pays a heartbeat round). It must be at most 60% of HeartbeatTimeout. (A
	// restarted node waits a whole HeartbeatTimeout before starting Raft, so it cannot help elect
	// a new leader while an old lease may be held.)
	LeaseDuration time.Duration
	// SnapshotThreshold is the number of log entries between snapshots; SnapshotInterval how
	// often Raft checks; TrailingLogs how many entries it keeps after a snapshot so slow
	// followers can catch up without one.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	// NoSync skips fsync on a bolt log: only for tests that do not check crash durability
	// (raft-wal always syncs).
	NoSync bool

	// Batch bounds proposal batching (group commit): takes and bytes per entry, and entries in
	// flight at once (see BENCHMARKS.md for the measurements behind the default).
	MaxBatchTakes      int
	MaxBatchBytes      int
	MaxInflightBatches int
	// MaxAppendEntries is raft's: how many entries the leader writes in one StoreLogs and sends in
	// one AppendEntries (1 to 1024). LogCacheSize, when positive, keeps that many recent entries in
	// memory in front of the log store (raft.LogCache), so the leader's replication does not read
	// them back from disk (256 by default: a few MB at typical batch sizes, at most 256 MaxBatchBytes
	// entries). BENCHMARKS.md has the measurements behind the defaults.
	MaxAppendEntries int
	LogCacheSize     int

	// FSM parameters; must be identical on every member.
	FSM fsm.Config

	// Stream, if set, replaces the TCP stream layer for Raft traffic (fault injection).
	Stream raft.StreamLayer
	// TLS, if set, runs Raft traffic over mutual TLS: members present their certificate and
	// accept only peers whose certificate the cluster CA signed.
	TLS *certs.Reloader
	// PeerNames, with TLS, are the certificate names (common name or DNS name) a member must
	// present to send or answer Raft messages: a data-plane or admin client certificate from the
	// same CA must not be able to append entries or call elections. Empty accepts any certificate
	// the CA signed.
	PeerNames []string
	// PeerAddrs overrides the address this node dials to reach a peer, by server ID (for NAT,
	// or a proxy per link in fault tests). Peers not listed are dialled at their configured
	// Raft address.
	PeerAddrs map[string]string
	// Now is the wall clock (time.Now by default): it anchors stamps at each election win and
	// measures staleness. Mono is the monotonic clock stamps advance with while this node leads
	// (time since process start by default); a wall-clock step does not move it. See stampClock.
	Now  func() time.Time
	Mono func() time.Duration
	// Logger receives the node's logs, and Raft's own at RaftLogLevel (with "component": "raft").
	// RaftLogOutput, if set, sends Raft's logs there in hclog's format instead.
	Logger        *slog.Logger
	RaftLogOutput io.Writer
	RaftLogLevel  string
}

// DefaultConfig returns a config with production defaults; set ID, addresses and DataDir.
func DefaultConfig() Config {
	return Config{
		HeartbeatTimeout:   1000 * time.Millisecond,
		ElectionTimeout:    1000 * time.Millisecond,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		SnapshotThreshold:  8192,
		SnapshotInterval:   120 * time.Second,
		TrailingLogs:       10240,
		MaxBatchTakes:      1024,
		MaxBatchBytes:      1 << 20,
		MaxInflightBatches: 1,
		MaxAppendEntries:   512,
		LogCacheSize:       256,
		FSM:                fsm.DefaultConfig(),
		RaftLogLevel:       "warn",
	}
}

// effectiveLease is the read lease Start uses: LeaseDuration, or half the heartbeat timeout when
// it is 0 (negative disables it).
func (c *Config) effectiveLease() time.Duration {
	if c.LeaseDuration == 0 {
		return c.HeartbeatTimeout / 2
	}
	return c.LeaseDuration
}

// Validate checks the constraints between fields.
func (c *Config) Validate() error {
	switch {
	case c.ID == "":
		return fmt.Errorf("node config: ID is required")
	case c.RaftAddr == "":
		return fmt.Errorf("node config: RaftAddr is required")
	case c.DataDir == "":
		return fmt.Errorf("node config: DataDir is required")
	case c.WALSegmentSize < 0 || c.WALSegmentSize > 1<<30:
		return fmt.Errorf("node config: WAL segment size %d: want 0 (the default) to 1 GiB", c.WALSegmentSize)
	case !ValidLogStore(c.LogStore):
		return fmt.Errorf("node config: log store %q: want %s or %s", c.LogStore, LogStoreBolt, LogStoreWAL)
	case len(c.Bootstrap) > 0 && c.Join:
		return fmt.Errorf("node config: Bootstrap and Join are exclusive")
	case c.HeartbeatTimeout <= 0 || c.ElectionTimeout <= 0 || c.LeaderLeaseTimeout <= 0:
		return fmt.Errorf("node config: raft timeouts must be positive")
	case c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return fmt.Errorf("node config: LeaderLeaseTimeout %v must not exceed HeartbeatTimeout %v", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	case c.LeaseDuration > c.HeartbeatTimeout*6/10:
		return fmt.Errorf("node config: LeaseDuration %v must be at most 60%% of HeartbeatTimeout %v (followers' stickiness window, less a heartbeat interval and clock drift)", c.LeaseDuration, c.HeartbeatTimeout)
	case c.effectiveLease() > c.LeaderLeaseTimeout:
		// A leader that cannot reach a quorum steps down after LeaderLeaseTimeout and then votes
		// for anyone at once: it must not still hold its read lease by then.
		return fmt.Errorf("node config: LeaseDuration %v (default: half the heartbeat timeout) must not exceed LeaderLeaseTimeout %v", c.effectiveLease(), c.LeaderLeaseTimeout)
	case c.MaxAppendEntries < 1 || c.MaxAppendEntries > 1024 || c.LogCacheSize < 0:
		return fmt.Errorf("node config: MaxAppendEntries %d (want 1 to 1024) or LogCacheSize %d (want >= 0)", c.MaxAppendEntries, c.LogCacheSize)
	case c.MaxBatchTakes <= 0 || c.MaxBatchBytes <= 0 || c.MaxInflightBatches <= 0:
		return fmt.Errorf("node config: batch bounds must be positive")
	}
	if len(c.Bootstrap) > 0 {
		self := false
		for _, p := range c.Bootstrap {
			if p.ID == c.ID {
				self = true
				if p.RaftAddr != c.RaftAddr {
					return fmt.Errorf("node config: bootstrap lists %s at %s but RaftAddr is %s", p.ID, p.RaftAddr, c.RaftAddr)
				}
			}
		}
		if !self {
			return fmt.Errorf("node config: bootstrap members do not include this node (%s)", c.ID)
		}
	}
	return c.FSM.Validate()
}
