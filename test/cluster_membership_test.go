package test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/api/limiterpb"
)

func TestCluster_AddFourthMemberThenRemoveOne(t *testing.T) {
	c := mustStartCluster(t, 3)
	cl := c.mustClient()
	mustSetLimit(t, cl, "m", 10, time.Hour, 0)
	mustTake(t, cl, "m", "k", 4, "")
	m4 := c.mustJoin("n4")
	waitFor(t, 20*time.Second, "n4 to be a registered voter", func() bool {
		ms, err := cl.Members(ctxT(t, 5*time.Second))
		if err != nil || len(ms) != 4 {
			return false
		}
		for _, m := range ms {
			if m.GetId() == "n4" && m.GetApiAddress() == m4.apiAddr {
				return true
			}
		}
		return false
	})
	// The new member has the state: a stale read on it sees the earlier take once caught up.
	n4 := c.mustClient(m4.apiAddr)
	waitFor(t, 10*time.Second, "n4 to catch up", func() bool {
		d, _, err := n4.Peek(ctxT(t, 5*time.Second), "m", "k", 1, true)
		return err == nil && d.Remaining == 6
	})
	// Remove the current leader, asking a follower in one plain gRPC call (no client retries):
	// the follower forwards, leadership moves first, and the old leader passes the removal on to
	// the new one.
	l := c.waitLeader()
	conn, err := grpc.NewClient(c.members[c.follower()].apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := limiterpb.NewAdminClient(conn).RemoveServer(ctxT(t, 30*time.Second), &limiterpb.RemoveServerRequest{Id: c.members[l].id}); err != nil {
		t.Fatalf("remove leader %s through a follower: %v", c.members[l].id, err)
	}
	waitFor(t, 20*time.Second, "3 members", func() bool {
		ms, err := cl.Members(ctxT(t, 5*time.Second))
		return err == nil && len(ms) == 3
	})
	c.stop(l)
	if r := mustTake(t, cl, "m", "k", 1, ""); !r.Allowed || r.Remaining != 5 {
		t.Fatalf("take after removal: %+v", r.Decision)
	}
}

func TestCluster_LeadershipTransfer(t *testing.T) {
	c := mustStartCluster(t, 3)
	cl := c.mustClient()
	old := c.waitLeader()
	target := c.members[(old+1)%3].id
	got, err := cl.TransferLeadership(ctxT(t, 20*time.Second), target)
	if err != nil || got != target {
		t.Fatalf("transfer to %s: got %q, %v", target, got, err)
	}
	if l := c.waitLeader(); c.members[l].id != target {
		t.Fatalf("leader is %s, want %s", c.members[l].id, target)
	}
	mustSetLimit(t, cl, "after", 1, time.Second, 0)
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", d, what)
}

func TestCluster_LeaveHandsLeadershipOverBeforeAPlannedStop(t *testing.T) {
	c := mustStartCluster(t, 3)
	l := c.waitLeader()
	if err := c.members[l].in.Leave(ctxT(t, 10*time.Second)); err != nil {
		t.Fatalf("leave: %v", err)
	}
	if c.members[l].in.Node.IsLeader() {
		t.Fatalf("still the ready leader after Leave")
	}
	c.stop(l)
	if nl := c.waitLeader(); nl == l {
		t.Fatalf("no other leader")
	}
	// A follower's Leave is a no-op.
	if err := c.members[c.follower()].in.Leave(ctxT(t, 5*time.Second)); err != nil {
		t.Fatalf("follower leave: %v", err)
	}
}

// TestCluster_RemovedRunningMemberStaysRemoved: a member removed while it runs does not add
// itself back (it keeps retrying registration only while its address is unrecorded).
func TestCluster_RemovedRunningMemberStaysRemoved(t *testing.T) {
	c := mustStartCluster(t, 3)
	cl := c.mustClient()
	m4 := c.mustJoin("n4")
	waitFor(t, 20*time.Second, "n4 to be a registered voter", func() bool {
		ms, err := cl.Members(ctxT(t, 5*time.Second))
		if err != nil {
			return false
		}
		for _, m := range ms {
			if m.GetId() == "n4" && m.GetApiAddress() == m4.apiAddr {
				return true
			}
		}
		return false
	})
	if err := cl.RemoveServer(ctxT(t, 20*time.Second), "n4"); err != nil {
		t.Fatalf("remove n4: %v", err)
	}
	deadline := time.Now().Add(3 * time.Second) // a dozen of n4's registration rounds
	for time.Now().Before(deadline) {
		ms, err := cl.Members(ctxT(t, 5*time.Second))
		if err == nil && len(ms) != 3 {
			t.Fatalf("%d members after removing n4 (it added itself back?): %v", len(ms), ms)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestCluster_HaltedLeaderHandsLeadershipOverAndServesNothing: a committed entry the state
// machine cannot apply halts every replica alike; the leader that halts hands leadership over
// (a member with a newer binary could lead on), and no member answers reads from frozen state.
func TestCluster_HaltedLeaderHandsLeadershipOverAndServesNothing(t *testing.T) {
	c := mustStartCluster(t, 3)
	cl := c.mustClient()
	mustSetLimit(t, cl, "h", 1, time.Hour, 10)
	l := c.waitLeader()
	n := c.members[l].in.Node
	changes := n.Status().LeaderChanges
	if err := n.Raft().Apply([]byte{0xff, 0xff, 0xff}, 5*time.Second).Error(); err != nil {
		t.Fatalf("append a corrupt entry: %v", err)
	}
	// Every replica halts on the entry and each leader hands over once, so leadership may come
	// back to this node in the end: count its losses rather than look at its state.
	waitFor(t, 20*time.Second, "the halted leader to hand leadership over", func() bool {
		return n.Status().LeaderChanges > changes
	})
	for _, m := range c.members {
		if m.in.Node.IsLeader() {
			t.Fatalf("%s serves as a ready leader with a halted state machine", m.id)
		}
	}
	if _, _, err := cl.Peek(ctxT(t, 3*time.Second), "h", "k", 1, true); err == nil {
		t.Fatal("a stale read was answered from a halted state machine")
	}
}

// Adding a member that does not answer at its Raft address is refused (it would be a voter that
// cannot vote: 4 voters, quorum 3), the configuration is unchanged, and --force adds it anyway.
func TestCluster_AddingAnUnreachableMemberIsRefusedUnlessForced(t *testing.T) {
	c := mustStartCluster(t, 3)
	cl := c.mustClient()
	nowhere := freeAddrs(t, 1)[0] // nothing listens there
	err := cl.AddVoter(ctxT(t, 10*time.Second), "n4", nowhere, "")
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "start it first") {
		t.Fatalf("adding a member nothing answers for: %v, want FailedPrecondition saying to start it first", err)
	}
	if ms, err := cl.Members(ctxT(t, 5*time.Second)); err != nil || len(ms) != 3 {
		t.Fatalf("members after a refused add: %v %v, want the 3 unchanged", ms, err)
	}
	if err := cl.AddMember(ctxT(t, 10*time.Second), "n4", nowhere, "", true); err != nil {
		t.Fatalf("forced add: %v", err)
	}
	if ms, err := cl.Members(ctxT(t, 5*time.Second)); err != nil || len(ms) != 4 {
		t.Fatalf("members after a forced add: %v %v, want 4", ms, err)
	}
	if err := cl.RemoveServer(ctxT(t, 10*time.Second), "n4"); err != nil {
		t.Fatalf("remove the forced member: %v", err)
	}
}
