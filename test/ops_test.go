package test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/api/limiterpb"
	"github.com/limiterd/limiter/client"
	"github.com/limiterd/limiter/fsm"
	"github.com/limiterd/limiter/internal/version"
	"github.com/limiterd/limiter/member"
	"github.com/limiterd/limiter/node"
	"github.com/limiterd/limiter/server"
)

// scrape returns the metric lines of a member's /metrics as name{labels} -> value.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

func TestOps_MetricsCountDecisionsAndShowRaftState(t *testing.T) {
	c := mustStartCluster(t, 3)
	cl := c.mustClient()
	mustSetLimit(t, cl, "m", 1, time.Hour, 2)
	for i := 0; i < 3; i++ {
		mustTake(t, cl, "m", "k", 1, "")
	}
	l := c.waitLeader()
	m := scrape(t, c.members[l].metrics)
	checks := map[string]float64{
		`limiterd_requests_total{method="Take",result="allowed"}`:    2,
		`limiterd_requests_total{method="Take",result="denied"}`:     1,
		`limiterd_decisions_total{result="allowed",source="take"}`:   2,
		`limiterd_decisions_total{result="denied",source="take"}`:    1,
		`limiterd_limit_decisions_total{limit="m",result="allowed"}`: 2,
		`limiterd_limit_decisions_total{limit="m",result="denied"}`:  1,
		`limiterd_raft_state{state="leader"}`:                        1,
		`limiterd_limits`:                                            1,
		`limiterd_buckets`:                                           1,
		`limiterd_request_ids`:                                       2, // the denial was answered locally under the lease, or recorded: at least 2
	}
	for name, want := range checks {
		got, ok := m[name]
		if !ok || (name == `limiterd_request_ids` && got < want) || (name != `limiterd_request_ids` && got != want) {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	// Decisions are counted where the client called (a forwarded call is not counted again at
	// the leader): summed over the members they are the cluster's.
	sum := map[string]float64{}
	for _, mem := range c.members {
		for name, v := range scrape(t, mem.metrics) {
			if strings.HasPrefix(name, "limiterd_decisions_total") || strings.HasPrefix(name, "limiterd_limit_decisions_total") {
				sum[name] += v
			}
		}
	}
	for name, want := range map[string]float64{
		`limiterd_decisions_total{result="allowed",source="take"}`:   2,
		`limiterd_decisions_total{result="denied",source="take"}`:    1,
		`limiterd_limit_decisions_total{limit="m",result="allowed"}`: 2,
		`limiterd_limit_decisions_total{limit="m",result="denied"}`:  1,
	} {
		if sum[name] != want {
			t.Errorf("%s summed over members = %v, want %v", name, sum[name], want)
		}
	}
	if m[`limiterd_batch_takes_count`] < 1 || m[`limiterd_raft_term`] < 1 {
		t.Errorf("batch and term metrics missing: %v %v", m[`limiterd_batch_takes_count`], m[`limiterd_raft_term`])
	}
	raft := 0
	for name := range m {
		if strings.HasPrefix(name, "raft_") {
			raft++
		}
	}
	if raft == 0 {
		t.Errorf("hashicorp/raft's own metrics are not bridged")
	}
	v := version.Get()
	if build := fmt.Sprintf(`limiterd_build_info{goversion=%q,revision=%q,version=%q}`, v.GoVersion, v.Revision, v.Short()); m[build] != 1 {
		t.Errorf("%s missing", build)
	}
	st, err := c.mustClient().Status(ctxT(t, 5*time.Second), c.members[l].apiAddr)
	if err != nil || st.GetVersion() != v.Short() {
		t.Errorf("Status version = %q (%v), want %q", st.GetVersion(), err, v.Short())
	}
	f := c.follower()
	if fm := scrape(t, c.members[f].metrics); fm[`limiterd_raft_state{state="follower"}`] != 1 {
		t.Errorf("follower reports state %v", fm)
	}
}

func TestOps_HealthReflectsWhetherTheNodeCanServe(t *testing.T) {
	c := mustStartCluster(t, 3)
	cl := c.mustClient()
	for _, m := range c.members {
		waitFor(t, 10*time.Second, m.id+" to report SERVING", func() bool {
			ok, err := cl.Health(ctxT(t, 2*time.Second), m.apiAddr)
			return err == nil && ok
		})
		resp, err := http.Get("http://" + m.metrics + "/healthz")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s /healthz: %v %v", m.id, resp, err)
		}
		resp.Body.Close()
		resp, err = http.Get("http://" + m.metrics + "/debug/pprof/")
		if err != nil || resp.StatusCode != http.StatusNotFound {
			t.Fatalf("%s /debug/pprof/ without Pprof: %v %v, want 404", m.id, resp, err)
		}
		resp.Body.Close()
	}
	// Alone, a member cannot serve: once it no longer knows a leader it says so.
	last := len(c.members) - 1
	for i := 0; i < last; i++ {
		c.stop(i)
	}
	waitFor(t, 20*time.Second, "the lone member to report NOT_SERVING", func() bool {
		ok, err := cl.Health(ctxT(t, 2*time.Second), c.members[last].apiAddr)
		return err == nil && !ok
	})
	resp, err := http.Get("http://" + c.members[last].metrics + "/healthz")
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/healthz of a lone member: %v %v, want 503", resp, err)
	}
	resp.Body.Close()
	// Liveness stays SERVING: losing quorum is no reason to restart the process.
	conn, err := grpc.NewClient(c.members[last].apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hr, err := healthpb.NewHealthClient(conn).Check(ctxT(t, 5*time.Second), &healthpb.HealthCheckRequest{Service: server.LivenessService})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("liveness of a lone member: %v %v, want SERVING", hr, err)
	}
}

func TestOps_DeclaredLimitsAreCreatedOnceAndNeverOverridden(t *testing.T) {
	addrs := freeAddrs(t, 2)
	cfg := node.DefaultConfig()
	cfg.LogStore = testLogStore
	cfg.ID, cfg.RaftAddr, cfg.DataDir = "solo", addrs[0], t.TempDir()
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 300*time.Millisecond, 300*time.Millisecond, 150*time.Millisecond
	cfg.Bootstrap = []node.Peer{{ID: "solo", RaftAddr: addrs[0]}}
	cfg.RaftLogOutput = io.Discard
	decl := []server.LimitDecl{{LimitSpec: fsm.LimitSpec{Name: "payments", Rate: 1000, Period: time.Minute}}}
	start := func() *member.Member {
		in, err := member.Start(context.Background(), member.Config{Node: cfg, APIListen: addrs[1], Logger: testLogger(), Limits: decl})
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	in := start()
	cl, err := client.New([]string{addrs[1]}, client.Options{RetryFor: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	waitFor(t, 10*time.Second, "the declared limit", func() bool {
		li, err := cl.GetLimit(ctxT(t, 2*time.Second), "payments")
		return err == nil && li.GetRate() == 1000 && li.GetBurst() == 1000
	})
	// An operator changes it; a restart with the same file must not undo that.
	mustSetLimit(t, cl, "payments", 5000, time.Minute, 0)
	if err := in.Stop(time.Second); err != nil {
		t.Fatal(err)
	}
	in = start()
	defer in.Stop(time.Second)
	waitFor(t, 10*time.Second, "the restarted node to lead", func() bool { return in.Node.IsLeader() })
	time.Sleep(500 * time.Millisecond) // two passes of the background loop
	if li, err := cl.GetLimit(ctxT(t, 5*time.Second), "payments"); err != nil || li.GetRate() != 5000 {
		t.Fatalf("after restart: %+v %v, want the operator's 5000/min kept", li, err)
	}
}

func TestOps_SnapshotSaveAndRestoreBringBackTheSavedState(t *testing.T) {
	c := mustStartCluster(t, 3)
	cl := c.mustClient()
	mustSetLimit(t, cl, "backup", 1, time.Hour, 10)
	mustTake(t, cl, "backup", "k", 4, "before-backup")
	var snap bytes.Buffer
	n, err := cl.SaveSnapshot(ctxT(t, 20*time.Second), &snap)
	if err != nil || n == 0 || int64(snap.Len()) != n {
		t.Fatalf("save: %d bytes, %v", n, err)
	}
	// Life goes on: more takes, a new limit, then disaster strikes and the backup is restored.
	mustTake(t, cl, "backup", "k", 5, "")
	mustSetLimit(t, cl, "later", 1, time.Second, 0)
	// The container image has no writable /tmp: a restore must not need one.
	t.Setenv("TMPDIR", filepath.Join(t.TempDir(), "no-such-dir"))
	resp, err := cl.RestoreSnapshot(ctxT(t, 60*time.Second), bytes.NewReader(snap.Bytes()))
	if err != nil || resp.GetLimits() != 1 {
		t.Fatalf("restore: %+v %v", resp, err)
	}
	if d := mustPeek(t, cl, "backup", "k"); d.Remaining != 6 {
		t.Fatalf("after restore: %d remaining, want the saved 6", d.Remaining)
	}
	if _, err := cl.GetLimit(ctxT(t, 10*time.Second), "later"); status.Code(err) != codes.NotFound {
		t.Fatalf("a limit created after the backup survived the restore: %v", err)
	}
	// The exactly-once table came back too: the saved request is still answered from it.
	if r := mustTake(t, cl, "backup", "k", 4, "before-backup"); !r.Replayed {
		t.Fatalf("a request recorded before the backup was applied again after the restore")
	}
	c.mustConverge()
	// A corrupt file changes nothing.
	bad := append([]byte(nil), snap.Bytes()...)
	bad[len(bad)/2] ^= 0xff
	if _, err := cl.RestoreSnapshot(ctxT(t, 20*time.Second), bytes.NewReader(bad)); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("restore of a corrupt file: %v, want InvalidArgument", err)
	}
	if d := mustPeek(t, cl, "backup", "k"); d.Remaining != 6 {
		t.Fatalf("a refused restore changed the state: %d remaining", d.Remaining)
	}
}

func TestOps_ReflectionListsTheServices(t *testing.T) {
	c := mustStartCluster(t, 1)
	conn, err := grpc.NewClient(c.members[0].apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, s := range resp.GetListServicesResponse().GetService() {
		got[s.GetName()] = true
	}
	for _, want := range []string{"limiter.v1.RateLimiter", "limiter.v1.Admin", "grpc.health.v1.Health"} {
		if !got[want] {
			t.Errorf("reflection does not list %s (got %v)", want, got)
		}
	}
}

func TestOps_OversizedMessageIsRefusedClearly(t *testing.T) {
	c := mustStartCluster(t, 1)
	conn, err := grpc.NewClient(c.members[0].apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	big := strings.Repeat("k", member.MaxMessageBytes+1)
	_, err = limiterpb.NewRateLimiterClient(conn).Take(ctxT(t, 10*time.Second), &limiterpb.TakeRequest{Limit: "l", Key: big})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "larger than max") {
		t.Fatalf("a %d-byte request: %v, want ResourceExhausted naming the size limit", len(big), err)
	}
}

func TestOps_PprofServedOnlyWhenAskedFor(t *testing.T) {
	c := mustStartClusterWith(t, 1, func(ic *member.Config) { ic.Pprof = true })
	resp, err := http.Get("http://" + c.members[0].metrics + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "heap profile") {
		t.Fatalf("/debug/pprof/heap with Pprof: %d %.200s", resp.StatusCode, body)
	}
}
