package test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/limiterd/limiter/client"
	"github.com/limiterd/limiter/member"
	"github.com/limiterd/limiter/node"
)

// slot is one member of a test cluster: fixed addresses and data dir across restarts.
type slot struct {
	id       string
	raftAddr string
	apiAddr  string
	metrics  string // Prometheus HTTP address
	dir      string
	in       *member.Member // nil while stopped
}

// cluster is a set of limiterd members in this process, on 127.0.0.1.
type cluster struct {
	t       *testing.T
	members []*slot
	peers   []node.Peer
	tweak   func(*member.Config) // applied to every member's config before it starts
}

// freeAddrs reserves n distinct loopback ports for servers that are told their address in advance
// (and keep it across restarts). The ports are picked below the kernel's ephemeral range: a port
// handed out by listen(":0") and released could otherwise be taken meanwhile by any outgoing
// connection's local port or another ":0" listener (a fault link, say), and the node would fail
// to start, or to restart after a kill, with "address already in use".
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	lo, hi := 10000, ephemeralLow()
	var out []string
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for tries := 0; len(out) < n; tries++ {
		if tries > 100*n {
			t.Fatalf("reserve port: no free port in [%d, %d) after %d tries", lo, hi, tries)
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", lo+rand.IntN(hi-lo)))
		if err != nil {
			continue // in use: pick another
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	return out
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768 when it cannot be read).
func ephemeralLow() int {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 11000 {
				lo = v
			}
		}
	}
	return lo
}

func testLogger() *slog.Logger {
	if os.Getenv("LIMITER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// mustStartCluster starts n bootstrapped members and waits for a ready leader known to all.
func mustStartCluster(t *testing.T, n int) *cluster {
	t.Helper()
	return mustStartClusterWith(t, n, nil)
}

// mustStartClusterWith is mustStartCluster with tweak applied to each member's configuration.
func mustStartClusterWith(t *testing.T, n int, tweak func(*member.Config)) *cluster {
	t.Helper()
	addrs := freeAddrs(t, 3*n)
	c := &cluster{t: t, tweak: tweak}
	for i := 0; i < n; i++ {
		m := &slot{id: fmt.Sprintf("n%d", i+1), raftAddr: addrs[3*i], apiAddr: addrs[3*i+1], metrics: addrs[3*i+2], dir: filepath.Join(t.TempDir(), fmt.Sprintf("n%d", i+1))}
		c.members = append(c.members, m)
		c.peers = append(c.peers, node.Peer{ID: m.id, RaftAddr: m.raftAddr})
	}
	t.Cleanup(c.stopAll)
	c.mustStartAll()
	c.waitLeader()
	return c
}

func (c *cluster) nodeConfig(m *slot) node.Config {
	cfg := node.DefaultConfig()
	cfg.ID, cfg.RaftAddr, cfg.APIAddr, cfg.DataDir = m.id, m.raftAddr, m.apiAddr, m.dir
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 250*time.Millisecond
	cfg.TrailingLogs = 10 // a snapshot compacts the log, so late members need InstallSnapshot
	cfg.LogStore = testLogStore
	cfg.RaftLogOutput = io.Discard
	if os.Getenv("LIMITER_TEST_LOG") != "" {
		cfg.RaftLogOutput = os.Stderr
	}
	return cfg
}

// mustStart starts (or restarts, from its data dir) member i.
func (c *cluster) mustStart(i int) {
	c.t.Helper()
	if err := c.start(i); err != nil {
		c.t.Fatal(err)
	}
}

// mustStartAll starts every member at once: a new member waits in Start for its bootstrap peers.
func (c *cluster) mustStartAll() {
	c.t.Helper()
	errs := make(chan error, len(c.members))
	for i := range c.members {
		go func() { errs <- c.start(i) }()
	}
	for range c.members {
		if err := <-errs; err != nil {
			c.t.Fatal(err)
		}
	}
}

// start starts member i, retrying while its port may still be held by its previous run.
func (c *cluster) start(i int) error {
	m := c.members[i]
	cfg := c.nodeConfig(m)
	cfg.Bootstrap = c.peers
	var err error
	ic := member.Config{Node: cfg, APIListen: m.apiAddr, MetricsAddr: m.metrics, Logger: testLogger()}
	if c.tweak != nil {
		c.tweak(&ic)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for attempt := 0; attempt < 50; attempt++ { // a just-closed port may linger briefly
		m.in, err = member.Start(ctx, ic)
		if err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("start %s: %w", m.id, err)
}

// mustJoin starts a new member that joins through the existing members.
func (c *cluster) mustJoin(id string) *slot {
	c.t.Helper()
	addrs := freeAddrs(c.t, 2)
	m := &slot{id: id, raftAddr: addrs[0], apiAddr: addrs[1], dir: filepath.Join(c.t.TempDir(), id)}
	cfg := c.nodeConfig(m)
	cfg.Join = true
	var join []string
	for _, o := range c.members {
		if o.in != nil {
			join = append(join, o.apiAddr)
		}
	}
	var err error
	m.in, err = member.Start(context.Background(), member.Config{Node: cfg, APIListen: m.apiAddr, Join: join, Logger: testLogger()})
	if err != nil {
		c.t.Fatalf("start %s: %v", id, err)
	}
	c.members = append(c.members, m)
	return m
}

// stop stops member i (in-flight calls get a short grace).
func (c *cluster) stop(i int) {
	c.t.Helper()
	m := c.members[i]
	if m.in == nil {
		return
	}
	if err := m.in.Stop(time.Second); err != nil {
		c.t.Logf("stop %s: %v", m.id, err)
	}
	m.in = nil
}

func (c *cluster) stopAll() {
	for i := range c.members {
		c.stop(i)
	}
}

// waitLeader waits for a ready leader whose API address every running member knows, and
// returns its index.
func (c *cluster) waitLeader() int {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for i, m := range c.members {
			if m.in == nil || !m.in.Node.IsLeader() {
				continue
			}
			all := true
			for _, o := range c.members {
				if o.in == nil {
					continue
				}
				if id, addr := o.in.Node.Leader(); id != m.id || addr == "" {
					all = false
				}
			}
			if all {
				return i
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("no leader known to every running member within 20s")
	return -1
}

// follower returns the index of a running member that is not the leader.
func (c *cluster) follower() int {
	c.t.Helper()
	l := c.waitLeader()
	for i, m := range c.members {
		if i != l && m.in != nil {
			return i
		}
	}
	c.t.Fatalf("no running follower")
	return -1
}

// apiAddrs lists the API addresses of all members (running or not), as a client would know them.
func (c *cluster) apiAddrs() []string {
	var out []string
	for _, m := range c.members {
		out = append(out, m.apiAddr)
	}
	return out
}

// mustClient returns a client for the given addresses (all members when none are given).
func (c *cluster) mustClient(addrs ...string) *client.Client {
	c.t.Helper()
	if len(addrs) == 0 {
		addrs = c.apiAddrs()
	}
	cl, err := client.New(addrs, client.Options{RetryFor: 20 * time.Second, AttemptTimeout: 2 * time.Second})
	if err != nil {
		c.t.Fatalf("client: %v", err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustSetLimit(t *testing.T, cl *client.Client, name string, rate int64, per time.Duration, burst int64) {
	t.Helper()
	if _, err := cl.SetLimit(ctxT(t, 20*time.Second), name, rate, per, burst); err != nil {
		t.Fatalf("set limit %s: %v", name, err)
	}
}

func mustTake(t *testing.T, cl *client.Client, limit, key string, cost int64, id string) client.TakeResult {
	t.Helper()
	res, err := cl.Take(ctxT(t, 30*time.Second), limit, key, cost, id)
	if err != nil {
		t.Fatalf("take %s/%s: %v", limit, key, err)
	}
	return res
}

func mustPeek(t *testing.T, cl *client.Client, limit, key string) client.Decision {
	t.Helper()
	d, _, err := cl.Peek(ctxT(t, 30*time.Second), limit, key, 1, false)
	if err != nil {
		t.Fatalf("peek %s/%s: %v", limit, key, err)
	}
	return d
}
