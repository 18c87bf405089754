package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/limiterd/limiter/api/limiterpb"
	"github.com/limiterd/limiter/client"
	"github.com/limiterd/limiter/node"
	"github.com/limiterd/limiter/test/faultnet"
)

// pcluster is a cluster of limiterd processes whose every network path goes through a faultnet
// link: node i dials node j's Raft port through raft[i][j]; client c reaches node j through
// clientLinks[c][j]. Processes can be killed (SIGKILL), frozen (SIGSTOP) and resumed, and their
// clocks skewed through a file each one re-reads.
type pcluster struct {
	t           *testing.T
	bin         string
	dir         string
	n           int
	ids         []string
	raftAddr    []string
	apiAddr     []string
	raft        [][]*faultnet.Link // raft[i][j]: i dials j through it (nil on the diagonal)
	clientLinks [][]*faultnet.Link // clientLinks[c][j]
	procs       []*exec.Cmd
	exited      []chan struct{} // closed when procs[i] has been waited for
	state       []string        // "up", "frozen", "dead"
	mu          sync.Mutex
	control     []*grpc.ClientConn // direct, unfaulted: for status and state hashes only
}

func startPCluster(t *testing.T, n, clients int, seed uint64) *pcluster {
	t.Helper()
	return startPClusterWith(t, n, clients, seed, nil)
}

// startPClusterWith is startPCluster with prepare(dataDir) run for each node's data dir before
// any node starts (to mount a filesystem there, say).
func startPClusterWith(t *testing.T, n, clients int, seed uint64, prepare func(dataDir string)) *pcluster {
	t.Helper()
	c := &pcluster{t: t, bin: mustBuild(t), dir: t.TempDir(), n: n}
	if prepare != nil {
		for i := 0; i < n; i++ {
			prepare(filepath.Join(c.dir, fmt.Sprintf("n%d", i+1)))
		}
	}
	addrs := freeAddrs(t, 2*n)
	for i := 0; i < n; i++ {
		c.ids = append(c.ids, fmt.Sprintf("n%d", i+1))
		c.raftAddr = append(c.raftAddr, addrs[2*i])
		c.apiAddr = append(c.apiAddr, addrs[2*i+1])
	}
	c.raft = make([][]*faultnet.Link, n)
	for i := 0; i < n; i++ {
		c.raft[i] = make([]*faultnet.Link, n)
		for j := 0; j < n; j++ {
			if i != j {
				c.raft[i][j] = c.mustLink(fmt.Sprintf("raft %s->%s", c.ids[i], c.ids[j]), c.raftAddr[j], seed+uint64(i*n+j))
			}
		}
	}
	for k := 0; k < clients; k++ {
		var row []*faultnet.Link
		for j := 0; j < n; j++ {
			row = append(row, c.mustLink(fmt.Sprintf("client c%d->%s", k, c.ids[j]), c.apiAddr[j], seed+1000+uint64(k*n+j)))
		}
		c.clientLinks = append(c.clientLinks, row)
	}
	c.procs = make([]*exec.Cmd, n)
	c.exited = make([]chan struct{}, n)
	c.state = make([]string, n)
	t.Cleanup(c.killAll)
	for i := 0; i < n; i++ {
		c.start(i)
		conn, err := grpc.NewClient(c.apiAddr[i], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		c.control = append(c.control, conn)
	}
	c.waitLeader(30 * time.Second)
	return c
}

func (c *pcluster) mustLink(name, target string, seed uint64) *faultnet.Link {
	c.t.Helper()
	l, err := faultnet.Listen(name, target, seed)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { l.Close() })
	return l
}

func (c *pcluster) skewFile(i int) string { return filepath.Join(c.dir, c.ids[i]+".clock.json") }

// start starts (or restarts from its data dir) node i.
func (c *pcluster) start(i int) {
	c.t.Helper()
	var boot, peers []string
	for j := 0; j < c.n; j++ {
		boot = append(boot, c.ids[j]+"="+c.raftAddr[j])
		if j != i {
			peers = append(peers, c.ids[j]+"="+c.raft[i][j].Addr())
		}
	}
	logf, err := os.OpenFile(filepath.Join(c.dir, c.ids[i]+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(c.bin, "limiterd"),
		"--id", c.ids[i], "--raft-addr", c.raftAddr[i], "--api-addr", c.apiAddr[i],
		"--data-dir", filepath.Join(c.dir, c.ids[i]), "--bootstrap", strings.Join(boot, ","),
		"--raft-peer-addrs", strings.Join(peers, ","), "--heartbeat-timeout", "500ms",
		"--clock-skew-file", c.skewFile(i), "--log-level", "warn")
	cmd.Env = withLogStore(os.Environ())
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", c.ids[i], err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	c.mu.Lock()
	c.procs[i], c.exited[i], c.state[i] = cmd, exited, "up"
	c.mu.Unlock()
}

// kill stops node i with SIGKILL: no clean shutdown.
func (c *pcluster) kill(i int) {
	c.mu.Lock()
	p, exited := c.procs[i], c.exited[i]
	c.state[i] = "dead"
	c.mu.Unlock()
	if p != nil && p.Process != nil {
		p.Process.Signal(syscall.SIGCONT) // a frozen process must run to die
		p.Process.Kill()
		<-exited
	}
}

func (c *pcluster) freeze(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state[i] == "up" {
		c.procs[i].Process.Signal(syscall.SIGSTOP)
		c.state[i] = "frozen"
	}
}

func (c *pcluster) resume(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state[i] == "frozen" {
		c.procs[i].Process.Signal(syscall.SIGCONT)
		c.state[i] = "up"
	}
}

func (c *pcluster) killAll() {
	for i := range c.procs {
		c.kill(i)
	}
}

// setClock writes node i's clock skew.
func (c *pcluster) setClock(i int, offset time.Duration, driftPPM int64) {
	c.t.Helper()
	b := fmt.Sprintf(`{"offset_ns":%d,"drift_ppm":%d}`, int64(offset), driftPPM)
	tmp := c.skewFile(i) + ".tmp"
	if err := os.WriteFile(tmp, []byte(b), 0o644); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Rename(tmp, c.skewFile(i)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *pcluster) healLinks() {
	for i := range c.raft {
		for _, l := range c.raft[i] {
			if l != nil {
				l.Heal()
			}
		}
	}
	for _, row := range c.clientLinks {
		for _, l := range row {
			l.Heal()
		}
	}
}

// status asks node i directly (not through a faulted link).
func (c *pcluster) status(i int, withHash bool) (*limiterpb.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return limiterpb.NewAdminClient(c.control[i]).Status(ctx, &limiterpb.StatusRequest{IncludeStateHash: withHash})
}

// waitLeader waits until one node says it leads and every node names it as leader.
func (c *pcluster) waitLeader(d time.Duration) int {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if l := c.agreedLeader(); l >= 0 {
			return l
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("no leader agreed on by all %d nodes within %v; logs:\n%s", c.n, d, c.logs())
	return -1
}

func (c *pcluster) agreedLeader() int {
	var sts []*limiterpb.StatusResponse
	leader := -1
	for i := 0; i < c.n; i++ {
		st, err := c.status(i, false)
		if err != nil {
			return -1
		}
		if st.IsLeader() {
			leader = i
		}
		sts = append(sts, st)
	}
	if leader < 0 {
		return -1
	}
	for _, st := range sts {
		// By name: a member back from a lost volume leads as name~suffix.
		if node.MemberName(st.GetLeaderId()) != c.ids[leader] || st.GetLeaderApiAddress() == "" {
			return -1
		}
	}
	return leader
}

// allVoting reports whether the agreed leader lists every node, under the Raft ID the node
// reports now, as a voter (no member is rejoining after a lost volume).
func (c *pcluster) allVoting() bool {
	l := c.agreedLeader()
	if l < 0 {
		return false
	}
	st, err := c.status(l, false)
	if err != nil {
		return false
	}
	voters := map[string]bool{}
	for _, m := range st.GetMembers() {
		if m.GetSuffrage() == limiterpb.Suffrage_SUFFRAGE_VOTER {
			voters[m.GetId()] = true
		}
	}
	if len(voters) != c.n {
		return false
	}
	for i := 0; i < c.n; i++ {
		s, err := c.status(i, false)
		if err != nil || !voters[s.GetNodeId()] {
			return false
		}
	}
	return true
}

// converge waits until every node has applied the same index and checks their state hashes.
func (c *pcluster) converge(d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	var last string
	for time.Now().Before(deadline) {
		var sts []*limiterpb.StatusResponse
		ok := true
		for i := 0; i < c.n; i++ {
			st, err := c.status(i, true)
			if err != nil {
				ok = false
				last = err.Error()
				break
			}
			sts = append(sts, st)
		}
		if ok {
			same := true
			for _, st := range sts[1:] {
				if st.GetAppliedIndex() != sts[0].GetAppliedIndex() || string(st.GetStateHash()) != string(sts[0].GetStateHash()) {
					same = false
				}
			}
			if same {
				return
			}
			last = ""
			for _, st := range sts {
				last += fmt.Sprintf("%s applied=%d hash=%x; ", st.GetNodeId(), st.GetAppliedIndex(), st.GetStateHash()[:6])
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.t.Fatalf("replicas did not converge within %v: %s", d, last)
}

// clientFor returns client k, which reaches every node through its own links.
func (c *pcluster) clientFor(k int) *client.Client {
	c.t.Helper()
	var addrs []string
	amap := map[string]string{}
	for j, l := range c.clientLinks[k] {
		addrs = append(addrs, l.Addr())
		amap[c.apiAddr[j]] = l.Addr()
	}
	// Takes on local limits go to one member per client, so every member holds escrow.
	cl, err := client.New(addrs, client.Options{RetryFor: 3 * time.Second, AttemptTimeout: time.Second, AddressMap: amap, Home: addrs[k%len(addrs)]})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// directClient reaches the nodes without faults (for setup and final checks).
func (c *pcluster) directClient() *client.Client {
	c.t.Helper()
	cl, err := client.New(c.apiAddr, client.Options{RetryFor: 30 * time.Second, AttemptTimeout: 2 * time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// logs returns the tail of every node's log, for failure messages.
func (c *pcluster) logs() string {
	var b strings.Builder
	for i := 0; i < c.n; i++ {
		data, _ := os.ReadFile(filepath.Join(c.dir, c.ids[i]+".log"))
		if len(data) > 3000 {
			data = data[len(data)-3000:]
		}
		c.mu.Lock()
		p, exited, state := c.procs[i], c.exited[i], c.state[i]
		c.mu.Unlock()
		note := state
		if exited != nil {
			select {
			case <-exited:
				if state != "dead" { // not killed by the nemesis: it stopped by itself
					note = fmt.Sprintf("EXITED on its own: %v", p.ProcessState)
				}
			default:
			}
		}
		fmt.Fprintf(&b, "--- %s (%s) ---\n%s\n", c.ids[i], note, data)
	}
	return b.String()
}
