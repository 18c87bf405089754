package test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/api/limiterpb"
	"github.com/limiterd/limiter/client"
	"github.com/limiterd/limiter/server"
)

func TestCluster_TakeAndPeekThroughLeaderAndFollower(t *testing.T) {
	c := mustStartCluster(t, 3)
	cl := c.mustClient()
	mustSetLimit(t, cl, "demo", 5, time.Minute, 0)
	for i := 1; i <= 5; i++ {
		res := mustTake(t, cl, "demo", "user:1", 1, "")
		if !res.Allowed || res.Remaining != int64(5-i) || res.Limit != 5 {
			t.Fatalf("take %d: got %+v, want allowed with %d remaining of 5", i, res.Decision, 5-i)
		}
	}
	res := mustTake(t, cl, "demo", "user:1", 1, "")
	if res.Allowed {
		t.Fatalf("6th take allowed: %+v", res.Decision)
	}
	// 5 per minute: one token every 12 s; the 6th waits at most that long.
	if res.RetryAfter <= 0 || res.RetryAfter > 12*time.Second {
		t.Fatalf("retry after %v, want in (0, 12s]", res.RetryAfter)
	}
	// A client that only knows a follower gets the same, linearizable answers (forwarded).
	f := c.follower()
	fcl := c.mustClient(c.members[f].apiAddr)
	if d := mustPeek(t, fcl, "demo", "user:1"); d.Allowed || d.Remaining != 0 {
		t.Fatalf("peek through follower: %+v, want 0 remaining", d)
	}
	if r := mustTake(t, fcl, "demo", "user:2", 2, ""); !r.Allowed || r.Remaining != 3 {
		t.Fatalf("take through follower: %+v, want allowed with 3 remaining", r.Decision)
	}
	if d := mustPeek(t, cl, "demo", "user:2"); d.Remaining != 3 {
		t.Fatalf("peek after forwarded take: %+v, want 3 remaining", d)
	}
	// A forwarded answer names the leader, so clients stop paying the extra hop.
	conn, err := grpc.NewClient(c.members[f].apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var trailer metadata.MD
	if _, err := limiterpb.NewRateLimiterClient(conn).Take(ctxT(t, 5*time.Second), &limiterpb.TakeRequest{Limit: "demo", Key: "user:3"}, grpc.Trailer(&trailer)); err != nil {
		t.Fatal(err)
	}
	if got, want := trailer.Get(server.LeaderHeader), c.members[c.waitLeader()].apiAddr; len(got) != 1 || got[0] != want {
		t.Fatalf("leader named after a forwarded take: %v, want [%s]", got, want)
	}
}

func TestCluster_BadInputGetsStatusCodes(t *testing.T) {
	c := mustStartCluster(t, 3)
	cl := c.mustClient()
	mustSetLimit(t, cl, "api", 10, time.Second, 0)
	long := make([]byte, 300)
	for i := range long {
		long[i] = 'k'
	}
	ctx := ctxT(t, 30*time.Second)
	cases := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"empty key", func() error { _, err := cl.Take(ctx, "api", "", 1, ""); return err }, codes.InvalidArgument},
		{"key too long", func() error { _, err := cl.Take(ctx, "api", string(long), 1, ""); return err }, codes.InvalidArgument},
		{"negative cost", func() error { _, err := cl.Take(ctx, "api", "k", -1, ""); return err }, codes.InvalidArgument},
		{"cost above capacity", func() error { _, err := cl.Take(ctx, "api", "k", 11, ""); return err }, codes.InvalidArgument},
		{"unknown limit", func() error { _, err := cl.Take(ctx, "nope", "k", 1, ""); return err }, codes.NotFound},
		{"bad limit name", func() error { _, err := cl.Take(ctx, "bad name!", "k", 1, ""); return err }, codes.InvalidArgument},
		{"request id too long", func() error { _, err := cl.Take(ctx, "api", "k", 1, string(long)); return err }, codes.InvalidArgument},
		{"zero rate", func() error { _, err := cl.SetLimit(ctx, "x", 0, time.Second, 0); return err }, codes.InvalidArgument},
		{"negative period", func() error { _, err := cl.SetLimit(ctx, "x", 1, -time.Second, 0); return err }, codes.InvalidArgument},
		{"unrepresentable limit", func() error {
			_, err := cl.SetLimit(ctx, "x", 999999937, 86400*time.Second+1, 1_000_000_000)
			return err
		}, codes.InvalidArgument},
		{"peek unknown limit", func() error { _, _, err := cl.Peek(ctx, "nope", "k", 1, false); return err }, codes.NotFound},
		{"get unknown limit", func() error { _, err := cl.GetLimit(ctx, "nope"); return err }, codes.NotFound},
		{"delete unknown limit", func() error { return cl.DeleteLimit(ctx, "nope") }, codes.NotFound},
		{"remove unknown member", func() error { return cl.RemoveServer(ctx, "nobody") }, codes.NotFound},
		{"add a voter at a member's raft address", func() error { return cl.AddVoter(ctx, "n9", c.members[0].raftAddr, "") }, codes.FailedPrecondition},
		{"take many with no items", func() error { _, _, err := cl.TakeMany(ctx, nil, ""); return err }, codes.InvalidArgument},
		{"request id reused for another request", func() error {
			if _, err := cl.Take(ctx, "api", "a", 1, "same-id"); err != nil {
				return err
			}
			_, err := cl.Take(ctx, "api", "b", 1, "same-id")
			return err
		}, codes.AlreadyExists},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if got := status.Code(err); got != tc.want {
				t.Fatalf("got %v (%v), want %v", got, err, tc.want)
			}
			if st, _ := status.FromError(err); st.Message() == "" {
				t.Fatalf("status without a message")
			}
		})
	}
	// Nothing above consumed from "k".
	if d := mustPeek(t, cl, "api", "k"); d.Remaining != 10 {
		t.Fatalf("bad requests consumed tokens: %+v", d)
	}
}

func TestCluster_200ConcurrentClientsOnCapacity100GetExactly100(t *testing.T) {
	c := mustStartCluster(t, 3)
	cl := c.mustClient()
	mustSetLimit(t, cl, "hot", 1, time.Hour, 100) // refill is negligible during the test
	var allowed, denied atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := cl.Take(ctxT(t, 60*time.Second), "hot", "merchant:7", 1, "")
			if err != nil {
				errs <- err
				return
			}
			if res.Allowed {
				allowed.Add(1)
			} else {
				denied.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("take: %v", err)
	}
	if allowed.Load() != 100 || denied.Load() != 100 {
		t.Fatalf("allowed %d denied %d, want exactly 100 and 100", allowed.Load(), denied.Load())
	}
}

func TestCluster_TakeManyDecidesEachItem(t *testing.T) {
	c := mustStartCluster(t, 3)
	cl := c.mustClient()
	mustSetLimit(t, cl, "a", 3, time.Hour, 0)
	mustSetLimit(t, cl, "b", 1, time.Hour, 0)
	ds, _, err := cl.TakeMany(ctxT(t, 20*time.Second), []client.Item{{Limit: "a", Key: "k", Cost: 2}, {Limit: "b", Key: "k"}, {Limit: "b", Key: "k"}}, "")
	if err != nil {
		t.Fatalf("take many: %v", err)
	}
	if len(ds) != 3 || !ds[0].Allowed || ds[0].Remaining != 1 || !ds[1].Allowed || ds[2].Allowed {
		t.Fatalf("decisions %+v", ds)
	}
	// One bad item refuses the whole call and consumes nothing.
	_, _, err = cl.TakeMany(ctxT(t, 20*time.Second), []client.Item{{Limit: "a", Key: "k", Cost: 1}, {Limit: "missing", Key: "k"}}, "")
	if status.Code(err) != codes.NotFound {
		t.Fatalf("got %v, want NotFound", err)
	}
	if d := mustPeek(t, cl, "a", "k"); d.Remaining != 1 {
		t.Fatalf("a refused call consumed tokens: %+v", d)
	}
}

func TestCluster_LiveRateChangeWhileTakesRun(t *testing.T) {
	c := mustStartCluster(t, 3)
	cl := c.mustClient()
	mustSetLimit(t, cl, "pay", 1000, time.Minute, 0)
	if r := mustTake(t, cl, "pay", "m:1", 500, ""); !r.Allowed || r.Remaining != 500 {
		t.Fatalf("take 500: %+v", r.Decision)
	}
	// Takes keep running on other keys while the rate changes; none may fail.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var failures atomic.Int64
	var done atomic.Int64
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := cl.Take(ctxT(t, 20*time.Second), "pay", fmt.Sprintf("w%d:%d", w, i%5), 1, ""); err != nil {
					failures.Add(1)
					t.Errorf("take during rate change: %v", err)
					return
				}
				done.Add(1)
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	info, err := cl.SetLimit(ctxT(t, 20*time.Second), "pay", 5000, time.Minute, 0)
	if err != nil || info.GetBurst() != 5000 {
		t.Fatalf("change rate: %v %+v", err, info)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failures.Load() > 0 || done.Load() == 0 {
		t.Fatalf("%d takes failed, %d done", failures.Load(), done.Load())
	}
	// 500 of 1000 plus a little refill became about 2500 of 5000 (refill at 1000/min is ~17/s,
	// at 5000/min ~83/s, over well under 10 s of test).
	d := mustPeek(t, cl, "pay", "m:1")
	if d.Limit != 5000 || d.Remaining < 2500 || d.Remaining > 2500+5*(1000/60)+10*(5000/60) {
		t.Fatalf("after change: %+v, want ~2500 of 5000", d)
	}
	if err := cl.DeleteLimit(ctxT(t, 20*time.Second), "pay"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := cl.Take(ctxT(t, 20*time.Second), "pay", "m:1", 1, ""); status.Code(err) != codes.NotFound {
		t.Fatalf("take after delete: %v, want NotFound", err)
	}
}

func TestCluster_LeaderStopped_NewLeaderServesAndRetryAppliesOnce(t *testing.T) {
	c := mustStartCluster(t, 3)
	cl := c.mustClient()
	mustSetLimit(t, cl, "pay", 1, time.Hour, 50)
	first := mustTake(t, cl, "pay", "card:9", 3, "req-1")
	if !first.Allowed || first.Remaining != 47 {
		t.Fatalf("first take: %+v", first.Decision)
	}
	// Takes in flight while the leader stops: every call eventually returns (the client
	// retries with the same ID at the new leader), and each is counted exactly once.
	var wg sync.WaitGroup
	var allowed atomic.Int64
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 5 * time.Millisecond)
			res, err := cl.Take(ctxT(t, 60*time.Second), "pay", "card:9", 1, fmt.Sprintf("inflight-%d", i))
			if err != nil {
				t.Errorf("in-flight take %d: %v", i, err)
				return
			}
			if res.Allowed {
				allowed.Add(1)
			}
		}()
	}
	old := c.waitLeader()
	c.stop(old)
	wg.Wait()
	nl := c.waitLeader()
	if nl == old {
		t.Fatalf("leader did not change")
	}
	// The response to req-1 was "lost": the client retries it at the new leader.
	again := mustTake(t, cl, "pay", "card:9", 3, "req-1")
	if !again.Replayed || again.Allowed != first.Allowed || again.Remaining != first.Remaining {
		t.Fatalf("retry: %+v replayed=%v, want the recorded answer %+v", again.Decision, again.Replayed, first.Decision)
	}
	d := mustPeek(t, cl, "pay", "card:9")
	if want := 47 - allowed.Load(); d.Remaining != want {
		t.Fatalf("remaining %d, want %d (each take counted once)", d.Remaining, want)
	}
	// Retrying the in-flight IDs again changes nothing.
	for i := 0; i < 20; i++ {
		if r := mustTake(t, cl, "pay", "card:9", 1, fmt.Sprintf("inflight-%d", i)); !r.Replayed {
			t.Fatalf("retry of inflight-%d was applied again", i)
		}
	}
	if d2 := mustPeek(t, cl, "pay", "card:9"); d2.Remaining != d.Remaining {
		t.Fatalf("retries consumed tokens: %d -> %d", d.Remaining, d2.Remaining)
	}
	// The stopped node comes back from its data dir and catches up.
	c.mustStart(old)
	c.waitLeader()
}

func TestCluster_AllNodesRestartFromDiskKeepEveryAcknowledgedTake(t *testing.T) {
	c := mustStartCluster(t, 3)
	cl := c.mustClient()
	mustSetLimit(t, cl, "quota", 1, time.Hour, 1000)
	var acked int64
	for i := 0; i < 30; i++ {
		if r := mustTake(t, cl, "quota", fmt.Sprintf("k%d", i%3), int64(i%4+1), ""); r.Allowed {
			acked += int64(i%4 + 1)
		}
	}
	before := map[string]int64{}
	for k := 0; k < 3; k++ {
		before[fmt.Sprintf("k%d", k)] = mustPeek(t, cl, "quota", fmt.Sprintf("k%d", k)).Remaining
	}
	c.stopAll()
	for i := range c.members {
		c.mustStart(i)
	}
	c.waitLeader()
	var total int64
	for k, want := range before {
		got := mustPeek(t, cl, "quota", k).Remaining
		if got != want {
			t.Fatalf("%s: %d remaining after restart, %d before", k, got, want)
		}
		total += 1000 - got
	}
	if total != acked {
		t.Fatalf("consumed %d after restart, acknowledged %d", total, acked)
	}
}

func TestCluster_AlreadyForwardedRequestGetsUnavailableWithLeaderHint(t *testing.T) {
	c := mustStartCluster(t, 3)
	l := c.waitLeader()
	f := c.follower()
	conn, err := grpc.NewClient(c.members[f].apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A request that was already forwarded once is never forwarded again (no loops): the
	// follower answers Unavailable and names the leader.
	ctx := metadata.AppendToOutgoingContext(ctxT(t, 5*time.Second), "x-limiter-forwarded", "test")
	var trailer metadata.MD
	_, err = limiterpb.NewRateLimiterClient(conn).Take(ctx, &limiterpb.TakeRequest{Limit: "x", Key: "k"}, grpc.Trailer(&trailer))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v, want Unavailable", err)
	}
	if got := trailer.Get(server.LeaderHeader); len(got) != 1 || got[0] != c.members[l].apiAddr {
		t.Fatalf("leader hint %v, want %s", got, c.members[l].apiAddr)
	}
	if !strings.Contains(status.Convert(err).Message(), c.members[l].apiAddr) {
		t.Fatalf("message %q does not name the leader", status.Convert(err).Message())
	}
}

func TestCluster_MinorityAnswersWithinDeadlineAndNeverDecides(t *testing.T) {
	c := mustStartCluster(t, 3)
	cl := c.mustClient()
	mustSetLimit(t, cl, "m", 1, time.Hour, 5)
	l := c.waitLeader()
	// Stop both followers: the old leader is now a minority of one and must not decide.
	for i := range c.members {
		if i != l {
			c.stop(i)
		}
	}
	conn, err := grpc.NewClient(c.members[l].apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = limiterpb.NewRateLimiterClient(conn).Take(ctx, &limiterpb.TakeRequest{Limit: "m", Key: "k"})
	if code := status.Code(err); code != codes.DeadlineExceeded && code != codes.Unavailable {
		t.Fatalf("minority take: %v, want DeadlineExceeded or Unavailable", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("minority take took %v; the deadline was 500ms", el)
	}
	// Bring the followers back: the take above was never acknowledged; whether or not it was
	// applied, the bucket holds 5 or 4 tokens, never fewer.
	for i := range c.members {
		if i != l {
			c.mustStart(i)
		}
	}
	c.waitLeader()
	if d := mustPeek(t, cl, "m", "k"); d.Remaining < 4 {
		t.Fatalf("remaining %d after a single unacknowledged take", d.Remaining)
	}
}

// mustConverge waits until every running member has applied the leader's last index and all
// their state hashes are equal (background entries, such as a member re-registering its address,
// may still be arriving, so it retries rather than checking once).
func (c *cluster) mustConverge() {
	c.t.Helper()
	var last string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		l := c.waitLeader()
		target := c.members[l].in.Node.Raft().LastIndex()
		same, info := true, []string{}
		var first [32]byte
		for _, m := range c.members {
			if m.in == nil {
				continue
			}
			h, err := m.in.Node.FSM().StateHash()
			if err != nil {
				c.t.Fatalf("state hash of %s: %v", m.id, err)
			}
			applied := m.in.Node.Raft().AppliedIndex()
			if first == ([32]byte{}) {
				first = h
			}
			if h != first || applied < target {
				same = false
			}
			info = append(info, fmt.Sprintf("%s applied=%d/%d hash=%x", m.id, applied, target, h[:6]))
		}
		if same {
			return
		}
		last = strings.Join(info, "; ")
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("replicas did not converge within 30s: %s", last)
}

func TestCluster_NewMemberCatchesUpFromSnapshotAndAllReplicasConverge(t *testing.T) {
	c := mustStartCluster(t, 3)
	cl := c.mustClient()
	mustSetLimit(t, cl, "s", 1, time.Hour, 100)
	var consumed int64
	for i := 0; i < 60; i++ {
		if r := mustTake(t, cl, "s", fmt.Sprintf("k%d", i%6), 1, ""); r.Allowed {
			consumed++
		}
	}
	// Snapshot the leader and compact its log, so a new member must be sent the snapshot.
	l := c.waitLeader()
	if err := c.members[l].in.Node.Raft().Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	m4 := c.mustJoin("n4")
	n4 := c.mustClient(m4.apiAddr)
	waitFor(t, 30*time.Second, "n4 to catch up from the snapshot", func() bool {
		d, _, err := n4.Peek(ctxT(t, 5*time.Second), "s", "k0", 1, true)
		return err == nil && d.Remaining == 90
	})
	if st := m4.in.Node.Raft().Stats(); st["last_snapshot_index"] == "0" {
		t.Fatalf("n4 caught up without a snapshot (stats %v); the test must exercise InstallSnapshot", st)
	}
	for i := 0; i < 10; i++ {
		mustTake(t, cl, "s", "k1", 1, "")
	}
	c.mustConverge()
	if consumed != 60 {
		t.Fatalf("consumed %d of 60", consumed)
	}
}

func TestCluster_RetryOfRecordedTakeGetsItsAnswerEvenAfterTheLimitChanged(t *testing.T) {
	c := mustStartCluster(t, 3)
	cl := c.mustClient()
	mustSetLimit(t, cl, "gone", 1, time.Hour, 5)
	first := mustTake(t, cl, "gone", "k", 5, "rec-1")
	// The reply was "lost"; meanwhile the limit's burst drops below the cost, then it is deleted.
	mustSetLimit(t, cl, "gone", 1, time.Hour, 2)
	again := mustTake(t, cl, "gone", "k", 5, "rec-1")
	if !again.Replayed || again.Allowed != first.Allowed || again.Remaining != first.Remaining {
		t.Fatalf("retry after a burst cut: %+v replayed=%v, want the recorded %+v", again.Decision, again.Replayed, first.Decision)
	}
	if err := cl.DeleteLimit(ctxT(t, 20*time.Second), "gone"); err != nil {
		t.Fatal(err)
	}
	if r := mustTake(t, cl, "gone", "k", 5, "rec-1"); !r.Replayed {
		t.Fatalf("retry after the limit was deleted was not answered from the record")
	}
}

func TestCluster_ReusedRequestIDOnAnEmptyBucketIsRefusedNotDenied(t *testing.T) {
	c := mustStartCluster(t, 3)
	cl := c.mustClient()
	mustSetLimit(t, cl, "r", 1, time.Hour, 2)
	mustTake(t, cl, "r", "k", 2, "reuse-1") // the bucket is now empty
	// Under the lease a take on an empty bucket is denied locally; the same ID with other
	// content must still be refused as a reuse.
	waitFor(t, 5*time.Second, "the leader's lease", func() bool { return c.members[c.waitLeader()].in.Node.LeaseHeld() })
	if _, err := cl.Take(ctxT(t, 20*time.Second), "r", "k", 1, "reuse-1"); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("got %v, want AlreadyExists", err)
	}
}
