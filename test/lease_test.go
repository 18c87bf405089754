package test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/limiterd/limiter/api/limiterpb"
)

// The fault that breaks lease reads elsewhere (etcd#20418): the leader is paused (SIGSTOP) while
// it holds a lease, the others elect a new leader and change a bucket, then the old leader
// resumes and is asked to read that bucket at once. It must not answer from its stale state.
func TestLease_FrozenLeaderDoesNotServeStaleReads(t *testing.T) {
	c := startPCluster(t, 3, 0, 1)
	direct := c.directClient()
	ctx := context.Background()
	if _, err := direct.SetLimit(ctx, "l", 1, time.Hour, 10); err != nil {
		t.Fatal(err)
	}
	old := c.waitLeader(30 * time.Second)
	waitFor(t, 10*time.Second, "the leader to hold the lease", func() bool {
		st, err := c.status(old, false)
		return err == nil && st.GetLeaseHeld()
	})
	conn, err := grpc.NewClient(c.apiAddr[old], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	peekOld := func() (*limiterpb.PeekResponse, error) {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		return limiterpb.NewRateLimiterClient(conn).Peek(pctx, &limiterpb.PeekRequest{Limit: "l", Key: "k"})
	}
	if r, err := peekOld(); err != nil || r.GetDecision().GetRemaining() != 10 {
		t.Fatalf("peek on the leader: %v %v", r, err)
	}

	c.freeze(old)
	var others []int
	for i := 0; i < c.n; i++ {
		if i != old {
			others = append(others, i)
		}
	}
	waitFor(t, 30*time.Second, "a new leader among the others", func() bool {
		for _, i := range others {
			if st, err := c.status(i, false); err == nil && st.IsLeader() {
				return true
			}
		}
		return false
	})
	res, err := direct.Take(ctx, "l", "k", 4, "")
	if err != nil || !res.Allowed || res.Remaining != 6 {
		t.Fatalf("take at the new leader: %+v %v", res, err)
	}
	c.resume(old)
	// Straight after resuming, the old leader still believes it leads for a moment.
	for i := 0; i < 20; i++ {
		r, err := peekOld()
		if err == nil && r.GetDecision().GetRemaining() != 6 {
			t.Fatalf("the resumed old leader answered a stale read: %d remaining, want 6", r.GetDecision().GetRemaining())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
