package test

import (
	"testing"
	"time"

	"github.com/limiterd/limiter/member"
)

// One rule for request IDs on every path: a request that admitted nothing (denied, or refused as
// a whole) binds nothing, and its retry is decided afresh; one that admitted anything binds, and
// its retry gets that answer. Checked where the denial was answered from the leader's lease (not
// recorded), through the log (recorded), and after a leader change.
func TestRequestID_ADenialBindsNothingOnEveryPath(t *testing.T) {
	// retryAfterRefill denies id, waits for the token to come back, and checks that the retry is
	// decided afresh (allowed) and that retrying that binds.
	retryAfterRefill := func(t *testing.T, c *cluster, id string, between func()) {
		t.Helper()
		cl := c.mustClient()
		mustTake(t, cl, "rid", "k", 1, id+"-first") // the bucket's one token
		if r := mustTake(t, cl, "rid", "k", 1, id); r.Allowed || r.Replayed {
			t.Fatalf("%s: second take %+v, want denied", id, r)
		}
		if between != nil {
			between()
		}
		time.Sleep(300 * time.Millisecond) // the token is back after 200 ms
		fresh := mustTake(t, cl, "rid", "k", 1, id)
		if !fresh.Allowed || fresh.Replayed {
			t.Fatalf("%s: retry after the refill %+v, want allowed and decided afresh", id, fresh)
		}
		again := mustTake(t, cl, "rid", "k", 1, id)
		if !again.Allowed || !again.Replayed {
			t.Fatalf("%s: retry of the admitted retry %+v, want its recorded answer", id, again)
		}
	}

	t.Run("lease", func(t *testing.T) {
		c := mustStartCluster(t, 3)
		mustSetLimit(t, c.mustClient(), "rid", 5, time.Second, 1)
		l := c.waitLeader()
		waitFor(t, 5*time.Second, "the leader's lease", func() bool { return c.members[l].in.Node.LeaseHeld() })
		before := c.members[l].in.Node.Status().LocalDenials
		retryAfterRefill(t, c, "lease", func() {
			if c.members[l].in.Node.Status().LocalDenials == before {
				t.Fatal("the denial did not come from the lease")
			}
		})
	})
	t.Run("log", func(t *testing.T) {
		c := mustStartClusterWith(t, 3, func(ic *member.Config) { ic.Node.LeaseDuration = -1 }) // no lease: every denial is a log entry
		mustSetLimit(t, c.mustClient(), "rid", 5, time.Second, 1)
		retryAfterRefill(t, c, "log", nil)
	})
	t.Run("leader change", func(t *testing.T) {
		c := mustStartClusterWith(t, 3, func(ic *member.Config) { ic.Node.LeaseDuration = -1 })
		mustSetLimit(t, c.mustClient(), "rid", 5, time.Second, 1)
		l := c.waitLeader()
		retryAfterRefill(t, c, "moved", func() {
			if err := c.members[l].in.Node.TransferLeadership(ctxT(t, 5*time.Second), ""); err != nil {
				t.Fatal(err)
			}
			if c.waitLeader() == l {
				t.Fatal("leadership did not move")
			}
		})
	})
}
