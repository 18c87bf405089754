package test

import (
	"syscall"
	"testing"
	"time"
)

// shutdownBudget is how long a member may take to stop on SIGTERM (Kubernetes' grace period is
// longer; a rolling restart waits on it).
const shutdownBudget = 10 * time.Second

// SIGTERM to the leader while a follower hangs (SIGSTOP: its connections stay open and answer
// nothing): the leader hands leadership to the live follower and exits within the budget, instead of
// waiting out transport timeouts on the hung one.
func TestShutdown_LeaderStopsWithinBudgetWithAHungFollower(t *testing.T) {
	if testing.Short() {
		t.Skip("starts limiterd processes")
	}
	c := startPCluster(t, 5, 0, 7) // five: with the leader gone and one hung, three still decide
	cl := c.directClient()
	mustSetLimit(t, cl, "stop", 1, time.Hour, 1000)
	for i := 0; i < 20; i++ {
		mustTake(t, cl, "stop", "k", 1, "")
	}
	l := c.waitLeader(30 * time.Second)
	hung := (l + 1) % 5
	c.freeze(hung)
	defer c.resume(hung)
	// Replication to the hung follower must be under way, as it would be under load.
	for i := 0; i < 20; i++ {
		mustTake(t, cl, "stop", "k", 1, "")
	}
	c.mu.Lock()
	p, exited := c.procs[l], c.exited[l]
	c.state[l] = "dead"
	c.mu.Unlock()
	start := time.Now()
	if err := p.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(3 * shutdownBudget):
		t.Fatalf("the leader did not exit within %v of SIGTERM\n%s", 3*shutdownBudget, c.logs())
	}
	took := time.Since(start)
	t.Logf("leader exited %v after SIGTERM", took.Round(time.Millisecond))
	if took > shutdownBudget {
		t.Fatalf("the leader took %v to stop with a hung follower; the budget is %v\n%s", took, shutdownBudget, c.logs())
	}
	waitFor(t, 10*time.Second, "a live member to lead", func() bool {
		for i := 0; i < 5; i++ {
			if i == l || i == hung {
				continue
			}
			if st, err := c.status(i, false); err == nil && st.IsLeader() {
				return true
			}
		}
		return false
	})
}
