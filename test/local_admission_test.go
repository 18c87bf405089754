package test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/client"
)

// setLocalLimit creates a limit in local admission.
func setLocalLimit(t *testing.T, cl *client.Client, name string, rate int64, per time.Duration, burst int64, ttl time.Duration) {
	t.Helper()
	info, err := cl.SetLimitSpec(ctxT(t, 20*time.Second), client.LimitSpec{Name: name, Rate: rate, Per: per, Burst: burst, Admission: "local", GrantTTL: ttl})
	if err != nil {
		t.Fatalf("set local limit %s: %v", name, err)
	}
	if info.GetAdmission() != "local" || info.GetGrantTtlNanos() != int64(ttl) {
		t.Fatalf("limit %s = %v, want local admission with TTL %v", name, info, ttl)
	}
}

// TestLocalAdmission_FollowerAnswersFromEscrowWithinTheBound: a client whose home is a follower
// gets its takes answered there, from escrow, and over the run the allowed takes stay within
// burst + rate x (elapsed + TTL) while most of the offered load above the rate is admitted.
func TestLocalAdmission_FollowerAnswersFromEscrowWithinTheBound(t *testing.T) {
	c := mustStartCluster(t, 3)
	f := c.follower()
	cl := c.mustClient()
	const rate, burst, ttl = 200, 50, time.Second
	setLocalLimit(t, cl, "pay", rate, time.Second, burst, ttl)
	home := c.homeClient(t, f)

	start := time.Now()
	var allowed, local, calls atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				res, err := home.Take(ctx, "pay", "k", 1, "")
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("take: %v", err)
					}
					return
				}
				calls.Add(1)
				if res.Allowed {
					allowed.Add(1)
				}
				if res.LocalNode == c.members[f].id { // (the first takes, before the client learns the mode, go to the leader)
					local.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	bound := burst + int64(float64(rate)*(elapsed+ttl).Seconds())
	t.Logf("%d calls in %v: %d allowed (bound %d, rate alone %d), %d answered locally", calls.Load(), elapsed.Round(time.Millisecond), allowed.Load(), bound, int64(rate*elapsed.Seconds()), local.Load())
	if allowed.Load() > bound {
		t.Fatalf("%d takes allowed, above burst + rate x (elapsed + TTL) = %d", allowed.Load(), bound)
	}
	if local.Load() < calls.Load()/2 {
		t.Fatalf("only %d of %d takes answered from escrow", local.Load(), calls.Load())
	}
	if min := int64(0.8 * rate * elapsed.Seconds()); allowed.Load() < min {
		t.Fatalf("%d takes allowed under offered load far above the rate; want at least %d (80%% of the rate)", allowed.Load(), min)
	}
}

// homeClient returns a client whose takes on local limits go to member i.
func (c *cluster) homeClient(t *testing.T, i int) *client.Client {
	t.Helper()
	cl, err := client.New(c.apiAddrs(), client.Options{Home: c.members[i].apiAddr, RetryFor: 5 * time.Second, AttemptTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// offer sends takes on limit/key through cl every interval (0: back to back) until ctx ends, and
// counts the calls and the allowed ones.
func offer(ctx context.Context, t *testing.T, cl *client.Client, limit, key string, interval time.Duration, calls, allowed *atomic.Int64) {
	var tick *time.Ticker
	if interval > 0 {
		tick = time.NewTicker(interval)
		defer tick.Stop()
	}
	for ctx.Err() == nil {
		if tick != nil {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
		res, err := cl.Take(ctx, limit, key, 1, "")
		if err != nil {
			if ctx.Err() == nil {
				t.Errorf("take %s/%s: %v", limit, key, err)
			}
			return
		}
		calls.Add(1)
		if res.Allowed {
			allowed.Add(1)
		}
	}
}

// TestLocalAdmission_EqualDemandGetsEqualShares: two members with equal demand far above the
// rate each admit 40% to 60% of what is admitted.
func TestLocalAdmission_EqualDemandGetsEqualShares(t *testing.T) {
	c := mustStartCluster(t, 3)
	setLocalLimit(t, c.mustClient(), "fair", 100, time.Second, 20, time.Second)
	l := c.waitLeader()
	a, b := (l+1)%3, (l+2)%3 // two followers: the same distance from the leader
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	var calls, allowed [2]atomic.Int64
	var wg sync.WaitGroup
	for side, m := range []int{a, b} {
		cl := c.homeClient(t, m)
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() { defer wg.Done(); offer(ctx, t, cl, "fair", "k", 0, &calls[side], &allowed[side]) }()
		}
	}
	wg.Wait()
	total := allowed[0].Load() + allowed[1].Load()
	t.Logf("admitted %d and %d of %d and %d calls", allowed[0].Load(), allowed[1].Load(), calls[0].Load(), calls[1].Load())
	for side := range allowed {
		if share := float64(allowed[side].Load()) / float64(total); share < 0.4 || share > 0.6 {
			t.Fatalf("member %d admitted %.0f%% of %d admitted takes; want 40%% to 60%%", side, 100*share, total)
		}
	}
}

// TestLocalAdmission_SteadyLoadBelowTheRateIsAdmitted: an offered load at 90% of the rate, spread
// over the three members, is at least 95% admitted: escrow spread over holders and returned when
// unused does not starve anyone.
func TestLocalAdmission_SteadyLoadBelowTheRateIsAdmitted(t *testing.T) {
	c := mustStartCluster(t, 3)
	const rate = 300
	setLocalLimit(t, c.mustClient(), "steady", rate, time.Second, rate/10, time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var calls, allowed atomic.Int64
	var wg sync.WaitGroup
	per := time.Second * 3 * 3 * 10 / (9 * rate) // 3 callers on each of 3 members: 90% of the rate in all
	for m := 0; m < 3; m++ {
		cl := c.homeClient(t, m)
		for w := 0; w < 3; w++ {
			wg.Add(1)
			go func() { defer wg.Done(); offer(ctx, t, cl, "steady", "k", per, &calls, &allowed) }()
		}
	}
	wg.Wait()
	ratio := float64(allowed.Load()) / float64(calls.Load())
	t.Logf("offered %d takes at 90%% of the rate over 3 members: %d admitted (%.1f%%)", calls.Load(), allowed.Load(), 100*ratio)
	if ratio < 0.95 {
		t.Fatalf("%.1f%% of a load at 90%% of the rate admitted; want at least 95%%", 100*ratio)
	}
}

// TestLocalAdmission_CutOffHolderAdmitsOnlyWhatItHolds: a member cut off from every other admits
// only from the escrow it holds, then answers Unavailable; it never admits from tokens it does
// not hold. Its retried request is answered from its own exactly-once table meanwhile.
func TestLocalAdmission_CutOffHolderAdmitsOnlyWhatItHolds(t *testing.T) {
	c := mustStartCluster(t, 3)
	setLocalLimit(t, c.mustClient(), "cut", 1000, time.Second, 1000, 2*time.Second)
	h := c.follower()
	cl, err := client.New(c.apiAddrs(), client.Options{Home: c.members[h].apiAddr, RetryFor: 500 * time.Millisecond, AttemptTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := 0; i < 50; i++ { // warm: the key is hot and escrow held
		mustTake(t, cl, "cut", "k", 1, "")
	}
	first := mustTake(t, cl, "cut", "k", 1, "retry-me")
	if first.LocalNode != c.members[h].id {
		t.Fatalf("take answered by %q, want from %s's escrow", first.LocalNode, c.members[h].id)
	}
	hs := c.members[h].in.Node.HolderStats()
	for i := range c.members {
		if i != h {
			c.stop(i)
		}
	}
	again := mustTake(t, cl, "cut", "k", 1, "retry-me")
	if !again.Replayed || again.Remaining != first.Remaining {
		t.Fatalf("retry at the same member = %+v, want the recorded answer %+v", again, first)
	}
	var admitted int64
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		res, err := cl.Take(ctxT(t, 10*time.Second), "cut", "k", 1, "")
		if err != nil {
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("take with the leader gone: %v, want Unavailable", err)
			}
			break
		}
		if res.Allowed {
			admitted++
		}
	}
	// What it held, plus any grant that was committed before the cut and answered after it.
	held := hs.Held + int64(c.members[h].in.Node.HolderStats().Granted-hs.Granted)
	t.Logf("held %d tokens when cut off; admitted %d afterwards", held, admitted)
	if admitted > held {
		t.Fatalf("admitted %d takes cut off from the leader while holding %d tokens", admitted, held)
	}
	if _, err := cl.Take(ctxT(t, 10*time.Second), "cut", "k", 1, ""); status.Code(err) != codes.Unavailable {
		t.Fatalf("take after the escrow ran out: %v, want Unavailable", err)
	}
}

// TestLocalAdmission_ModeSwitchAndDelete: back to linearizable, takes are decided in the log and
// the escrow drains within the grant TTL; a deleted limit is NotFound on every member.
func TestLocalAdmission_ModeSwitchAndDelete(t *testing.T) {
	c := mustStartCluster(t, 3)
	admin := c.mustClient()
	setLocalLimit(t, admin, "sw", 1000, time.Second, 100, 500*time.Millisecond)
	f := c.follower()
	cl := c.homeClient(t, f)
	for i := 0; i < 20; i++ {
		mustTake(t, cl, "sw", "k", 1, "")
	}
	if res := mustTake(t, cl, "sw", "k", 1, ""); res.LocalNode == "" {
		t.Fatalf("a hot key's take was not answered from escrow")
	}
	mustSetLimit(t, admin, "sw", 1000, time.Second, 100)
	waitFor(t, 10*time.Second, "takes decided in the log after the switch", func() bool {
		return mustTake(t, cl, "sw", "k", 1, "").LocalNode == ""
	})
	waitFor(t, 10*time.Second, "the escrow drained", func() bool {
		mustSetLimit(t, admin, "tick", 1, time.Hour, 1) // moves log time on
		li, err := admin.GetLimit(ctxT(t, 5*time.Second), "sw")
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range li.GetGrants() {
			if g.GetLive() {
				return false
			}
		}
		return li.GetAdmission() == "linearizable"
	})
	setLocalLimit(t, admin, "sw", 1000, time.Second, 100, 500*time.Millisecond)
	for i := 0; i < 5; i++ {
		mustTake(t, cl, "sw", "k", 1, "")
	}
	if err := admin.DeleteLimit(ctxT(t, 5*time.Second), "sw"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the deleted limit refused on the home member", func() bool {
		_, err := cl.Take(ctxT(t, 5*time.Second), "sw", "k", 1, "")
		return status.Code(err) == codes.NotFound
	})
}

// TestLocalAdmission_BadInputIsRefusedAndChangesNothing: an unknown mode, a TTL out of range or a
// TTL on a linearizable limit is InvalidArgument, and the limit stays as it was.
func TestLocalAdmission_BadInputIsRefusedAndChangesNothing(t *testing.T) {
	c := mustStartCluster(t, 3)
	cl := c.mustClient()
	setLocalLimit(t, cl, "bad", 10, time.Second, 10, time.Second)
	for _, spec := range []client.LimitSpec{
		{Name: "bad", Rate: 20, Per: time.Second, Admission: "eventually"},
		{Name: "bad", Rate: 20, Per: time.Second, Admission: "local", GrantTTL: time.Hour},
		{Name: "bad", Rate: 20, Per: time.Second, Admission: "local", GrantTTL: time.Millisecond},
		{Name: "bad", Rate: 20, Per: time.Second, Admission: "linearizable", GrantTTL: time.Second},
	} {
		_, err := cl.SetLimitSpec(ctxT(t, 5*time.Second), spec)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("set %+v: %v, want InvalidArgument", spec, err)
		}
	}
	li, err := cl.GetLimit(ctxT(t, 5*time.Second), "bad")
	if err != nil {
		t.Fatal(err)
	}
	if li.GetRate() != 10 || li.GetAdmission() != "local" || li.GetGrantTtlNanos() != int64(time.Second) {
		t.Fatalf("after refused changes the limit is %v, want it unchanged", li)
	}
}
