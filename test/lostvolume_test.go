package test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/limiterd/limiter/api/limiterpb"
	"github.com/limiterd/limiter/node"
	"github.com/limiterd/limiter/test/faultnet"
)

// The way a lost volume lost acknowledged takes before: 300 tokens are acknowledged by two of three
// members while the third lags; one of the two crashes; the other's data dir is wiped and it is
// restarted with its usual command (--bootstrap, as the StatefulSet and compose file pass on every
// start). It must not start a second history and vote the lagging member in: no leader may serve
// until the crashed member returns, every acknowledged take survives, and the wiped member comes
// back under a new identity while its old one leaves the configuration.
func TestLostVolume_WipedMemberRestartedWithBootstrapLosesNoAcknowledgedTake(t *testing.T) {
	if testing.Short() {
		t.Skip("starts limiterd processes")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	c := startPCluster(t, 3, 0, seed)
	cl := c.directClient()
	mustSetLimit(t, cl, "pay", 1, 24*time.Hour, 1000)

	a := c.waitLeader(30 * time.Second) // a: up to date, will crash
	g := (a + 1) % 3                    // g: lags behind
	b := (a + 2) % 3                    // b: up to date, will lose its volume
	setRaftLinks(c, g, faultnet.Down)
	for i := 0; i < 3; i++ {
		if r := mustTake(t, cl, "pay", "merchant:1", 100, "lost-volume-"+string(rune('a'+i))); !r.Allowed {
			t.Fatalf("take %d denied: %+v", i, r.Decision)
		}
	}
	if d := mustPeek(t, cl, "pay", "merchant:1"); d.Remaining != 700 {
		t.Fatalf("remaining %d after 300 acknowledged, want 700", d.Remaining)
	}

	c.kill(a)
	c.kill(b)
	if err := os.RemoveAll(filepath.Join(c.dir, c.ids[b])); err != nil {
		t.Fatal(err)
	}
	c.healLinks()
	c.start(b) // its usual command, --bootstrap included

	// g lags and b has nothing: no leader may form from the two of them.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, i := range []int{g, b} {
			if st, err := c.status(i, false); err == nil && st.IsLeader() {
				t.Fatalf("%s leads without the member that holds the acknowledged takes (term %d)\n%s", st.GetNodeId(), st.GetTerm(), c.logs())
			}
		}
		time.Sleep(100 * time.Millisecond)
	}

	c.start(a)
	c.waitLeader(30 * time.Second)
	var members []*limiterpb.Member
	waitFor(t, 30*time.Second, "the wiped member to rejoin as a voter under a new identity", func() bool {
		st, err := c.status(a, false)
		if err != nil {
			return false
		}
		members = st.GetMembers()
		voters := 0
		for _, m := range members {
			if m.GetSuffrage() == limiterpb.Suffrage_SUFFRAGE_VOTER {
				voters++
			}
			if m.GetId() == c.ids[b] {
				return false // the old identity still counts
			}
		}
		return voters == 3 && len(members) == 3
	})
	var newID string
	for _, m := range members {
		if node.MemberName(m.GetId()) == c.ids[b] {
			newID = m.GetId()
		}
	}
	if !strings.HasPrefix(newID, c.ids[b]+"~") {
		t.Fatalf("members %v: want %s back as %s~suffix", members, c.ids[b], c.ids[b])
	}
	if d := mustPeek(t, cl, "pay", "merchant:1"); d.Remaining != 700 {
		t.Fatalf("remaining %d after the lost volume, want 700: acknowledged takes were forgotten", d.Remaining)
	}
	c.converge(30 * time.Second)

	// The wiped member's data dir records its new identity and the cluster's ID.
	metas := map[string]map[string]string{}
	for i := 0; i < 3; i++ {
		var m map[string]string
		raw, err := os.ReadFile(filepath.Join(c.dir, c.ids[i], "node.json"))
		if err == nil {
			err = json.Unmarshal(raw, &m)
		}
		if err != nil {
			t.Fatalf("node.json of %s: %v", c.ids[i], err)
		}
		metas[c.ids[i]] = m
	}
	if got := metas[c.ids[b]]["raft_id"]; got != newID {
		t.Fatalf("%s node.json raft_id %q, want %q", c.ids[b], got, newID)
	}
	for id, m := range metas {
		if m["cluster_id"] == "" || m["cluster_id"] != metas[c.ids[a]]["cluster_id"] {
			t.Fatalf("cluster IDs differ or are missing: %v (%s)", metas, id)
		}
	}
	// And it takes part: the cluster decides with it after the lagging member stops.
	c.kill(g)
	if r := mustTake(t, cl, "pay", "merchant:1", 1, "after-rejoin"); !r.Allowed || r.Remaining != 699 {
		t.Fatalf("take with the rejoined member in the quorum: %+v", r.Decision)
	}
}

// setRaftLinks sets every Raft link to and from node i.
func setRaftLinks(c *pcluster, i int, m faultnet.Mode) {
	for j := 0; j < c.n; j++ {
		if j != i {
			c.raft[i][j].SetMode(m)
			c.raft[j][i].SetMode(m)
		}
	}
}

// The leader loses its volume right after acknowledging takes that only it and one follower
// hold (the other follower lags), and comes back at once with its usual command, listening at
// its old identity's address under a new one. Whatever leads next must hold every acknowledged
// take: the new process must neither vote as the old identity nor make a lagging member leader.
// Three rounds, each wiping the leader of the moment.
func TestLostVolume_LeaderWipedRightAfterAcknowledgingLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts limiterd processes")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	c := startPCluster(t, 3, 0, seed)
	cl := c.directClient()
	mustSetLimit(t, cl, "pay", 1, 24*time.Hour, 1000)
	acked := int64(0)
	for round := 0; round < 3; round++ {
		waitFor(t, 60*time.Second, "every member voting under its current identity", c.allVoting)
		l := c.waitLeader(30 * time.Second)
		g := (l + 1) % 3 // lags behind: cut off from Raft while the takes are acknowledged
		setRaftLinks(c, g, faultnet.Down)
		for i := 0; i < 3; i++ {
			if r := mustTake(t, cl, "pay", "m", 10, fmt.Sprintf("leader-wiped-%d-%d", round, i)); !r.Allowed {
				t.Fatalf("round %d take %d denied: %+v", round, i, r.Decision)
			}
			acked += 10
		}
		c.kill(l)
		if err := os.RemoveAll(filepath.Join(c.dir, c.ids[l])); err != nil {
			t.Fatal(err)
		}
		c.start(l) // at once, before the others elect anyone
		c.healLinks()
		c.waitLeader(60 * time.Second)
		if d := mustPeek(t, cl, "pay", "m"); d.Remaining != 1000-acked {
			t.Fatalf("round %d: remaining %d, want %d: acknowledged takes were lost when the leader %s lost its volume\n%s", round, d.Remaining, 1000-acked, c.ids[l], c.logs())
		}
	}
	c.converge(60 * time.Second)
}
