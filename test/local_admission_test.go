package test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
	home, err := client.New(c.apiAddrs(), client.Options{Home: c.members[f].apiAddr, RetryFor: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer home.Close()

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
