package test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/limiterd/limiter/client"
)

// wanDelays are the one-way delays between three regions (n1-n2, n1-n3, n2-n3), added in user
// space by the fault harness's links (this kernel has no netem).
var wanDelays = [3][3]time.Duration{
	{0, 35 * time.Millisecond, 75 * time.Millisecond},
	{35 * time.Millisecond, 0, 110 * time.Millisecond},
	{75 * time.Millisecond, 110 * time.Millisecond, 0},
}

// wanWarmup is left out of the latency figures: a key's first takes go to the log and its first
// grant round is waited for.
const wanWarmup = 3 * time.Second

// TestWAN_LocalAdmissionLatencyPerRegion simulates a cluster over three regions, led from the
// region farthest from the others, a client next to each member, and offers each region a steady load (together 90% of the rate) on a
// linearizable and on a local limit, next to a no-op call to the client's own member. It reports
// p50 and p99 of allowed takes per region (BENCHMARKS.md), and fails on over-admission or when
// less than 95% of the local limit's load is admitted. LIMITER_WAN=1 runs it (about a minute).
func TestWAN_LocalAdmissionLatencyPerRegion(t *testing.T) {
	if os.Getenv("LIMITER_WAN") == "" {
		t.Skip("LIMITER_WAN=1 runs the three-region simulation")
	}
	c := startPCluster(t, 3, 3, 1)
	for i := 0; i < 3; i++ {
		for j := 0; j < 3; j++ {
			if i != j {
				c.raft[i][j].SetDelay(wanDelays[i][j])
			}
			c.clientLinks[i][j].SetDelay(wanDelays[i][j]) // client i sits next to member i
		}
	}
	c.waitLeader(60 * time.Second)
	admin := c.directClient()
	ctx := context.Background()
	// The leader on n3, the member farthest from the others: the worst case, and the same one
	// every run (an election would otherwise pick it at random).
	waitFor(t, 60*time.Second, "n3 leading", func() bool {
		if c.waitLeader(30*time.Second) == 2 {
			return true
		}
		_, _ = admin.TransferLeadership(ctx, "n3")
		return false
	})
	const rate, burst, per = 300, 300, 20 * time.Second // a burst of a second of refill: see the README on sizing
	for _, adm := range []string{"linearizable", "local"} {
		if _, err := admin.SetLimitSpec(ctx, client.LimitSpec{Name: "wan-" + adm, Rate: rate, Per: time.Second, Burst: burst, Admission: adm}); err != nil {
			t.Fatal(err)
		}
	}
	type sample struct{ noop, lin, local []time.Duration }
	samples := make([]sample, 3)
	var admitted, offered [2]int64 // linearizable, local
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for r := 0; r < 3; r++ {
		cl := c.clientFor(r) // home: member r (clientFor sets it)
		conn, err := grpc.NewClient(c.clientLinks[r][r].Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		hc := healthpb.NewHealthClient(conn)
		// Each region offers rate x 0.9 / 3 takes per second on each limit, each from callers
		// enough to keep up (a linearizable take waits for a cross-region commit), and no-op
		// calls at the same pace.
		const callers = 16
		interval := time.Second * 3 * callers * 10 / (9 * rate)
		for w := 0; w < 3*callers; w++ {
			kind := w % 3 // 0 no-op, 1 linearizable, 2 local
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(w) * interval / (3 * callers)) // spread the callers' phases
				tick := time.NewTicker(interval)
				defer tick.Stop()
				for deadline := start.Add(per); time.Now().Before(deadline); {
					<-tick.C
					t0 := time.Now()
					var err error
					allowed := false
					if kind == 0 {
						_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{})
					} else {
						var res client.TakeResult
						res, err = cl.Take(ctx, []string{"", "wan-linearizable", "wan-local"}[kind], "k", 1, "")
						if err != nil {
							t.Errorf("region %d take: %v", r, err)
						}
						allowed = err == nil && res.Allowed
					}
					lat := time.Since(t0)
					if t0.Before(start.Add(wanWarmup)) {
						lat = -1 // counted for admission, not for latency: keys warm up first
					}
					mu.Lock()
					switch {
					case kind == 0 && err == nil && lat >= 0:
						samples[r].noop = append(samples[r].noop, lat)
					case kind > 0:
						offered[kind-1]++
						if allowed {
							admitted[kind-1]++
							if lat < 0 {
								break
							}
							if kind == 1 {
								samples[r].lin = append(samples[r].lin, lat)
							} else {
								samples[r].local = append(samples[r].local, lat)
							}
						}
					}
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	pct := func(d []time.Duration, q float64) time.Duration {
		if len(d) == 0 {
			return 0
		}
		s := slices.Clone(d)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[min(len(s)-1, int(q*float64(len(s))))]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "region  no-op p50/p99      linearizable p50/p99   local p50/p99       (allowed takes; one-way delays %v)\n", wanDelays)
	for r, s := range samples {
		fmt.Fprintf(&b, "n%d      %-8v %-8v  %-10v %-10v  %-8v %-8v\n", r+1,
			pct(s.noop, .5).Round(10*time.Microsecond), pct(s.noop, .99).Round(10*time.Microsecond),
			pct(s.lin, .5).Round(10*time.Microsecond), pct(s.lin, .99).Round(10*time.Microsecond),
			pct(s.local, .5).Round(10*time.Microsecond), pct(s.local, .99).Round(10*time.Microsecond))
	}
	bound := int64(burst) + int64(rate*(elapsed+3*time.Second).Seconds()) // + the default grant TTL, and slack for setup
	fmt.Fprintf(&b, "admitted: linearizable %d of %d, local %d of %d (bound %d)", admitted[0], offered[0], admitted[1], offered[1], bound)
	t.Log("\n" + b.String())
	for i, name := range []string{"linearizable", "local"} {
		if admitted[i] > bound {
			t.Errorf("%s: %d admitted, above burst + rate x (elapsed + TTL) = %d", name, admitted[i], bound)
		}
	}
	if float64(admitted[1]) < 0.95*float64(offered[1]) {
		t.Errorf("local: %d of %d admitted at 90%% of the rate; want at least 95%%", admitted[1], offered[1])
	}
}
