package test

import (
	"testing"
	"time"

	"github.com/limiterd/limiter/client"
	"github.com/limiterd/limiter/test/faultnet"
)

// A client whose response is lost (the link holds the reply after the request reached the
// leader) retries with the same request ID; the leader then dies, and the retry is answered by
// the new leader from the exactly-once table: the take is applied once.
func TestFault_LostReplyRetriedAtNewLeaderIsAppliedOnce(t *testing.T) {
	c := mustStartCluster(t, 3)
	mustSetLimit(t, c.mustClient(), "pay", 1, time.Hour, 10)

	// The client reaches every node through its own link.
	links := make([]*faultnet.Link, len(c.members))
	addrs := make([]string, len(c.members))
	amap := map[string]string{}
	for i, m := range c.members {
		l, err := faultnet.Listen("client->"+m.id, m.apiAddr, uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		links[i], addrs[i], amap[m.apiAddr] = l, l.Addr(), l.Addr()
	}
	leader := c.waitLeader()
	ordered := append([]string{addrs[leader]}, append(append([]string{}, addrs[:leader]...), addrs[leader+1:]...)...)
	cl, err := client.New(ordered, client.Options{RetryFor: 30 * time.Second, AttemptTimeout: 2 * time.Second, AddressMap: amap})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// Warm the connection, then make the leader's link hold its replies (lost packets: the
	// leader notices nothing) and cut the others, so the first attempt is applied but
	// unanswered and no retry can succeed before the leader dies.
	mustTake(t, cl, "pay", "warm", 1, "")
	links[leader].SetMode(faultnet.HoldReplies)
	for i := range links {
		if i != leader {
			links[i].SetMode(faultnet.Down)
		}
	}

	type result struct {
		res client.TakeResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := cl.Take(ctxT(t, 60*time.Second), "pay", "card:1", 3, "lost-reply-1")
		done <- result{res, err}
	}()
	// Wait until the leader has applied the take (its reply is being dropped).
	waitFor(t, 10*time.Second, "the leader to apply the take", func() bool {
		r, err := c.members[leader].in.Node.FSM().Peek("pay", "card:1", 1, 0)
		return err == nil && r.Remaining == 7
	})
	// Now the leader dies and the other links heal: the client's retries (same ID) reach the
	// new leader, which must answer from the exactly-once table.
	c.stop(leader)
	for i := range links {
		if i != leader {
			links[i].Heal()
		}
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("take with a lost reply: %v", r.err)
	}
	if !r.res.Replayed || !r.res.Allowed || r.res.Remaining != 7 {
		t.Fatalf("retry: %+v replayed=%v, want the recorded answer (allowed, 7 left) replayed", r.res.Decision, r.res.Replayed)
	}
	check := c.mustClient()
	if d := mustPeek(t, check, "pay", "card:1"); d.Remaining != 7 {
		t.Fatalf("remaining %d, want 7: the take was applied %d times", d.Remaining, (10-d.Remaining)/3)
	}
}
