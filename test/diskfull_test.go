package test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// tmpfsSize is each member's filesystem in the disk-full test: room for the log of this test, and
// small enough to fill in a moment.
const tmpfsSize = "32m"

// mountTmpfs mounts a tmpfs of tmpfsSize at dir for the test (unmounted at the end), or skips the
// test when this process may not mount (it needs root, as CI has).
func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+tmpfsSize, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mounting a tmpfs needs root (CI runs this as root): %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v %s", dir, err, out)
		}
	})
}

// fill writes a filler file into dir until its filesystem is full and returns the file's path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", dir, err)
			}
			break
		}
	}
	// Smaller writes take what is left.
	for n := len(buf) / 2; n > 0; n /= 2 {
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				break
			}
		}
	}
	return p
}

// A member whose disk is full: a follower, then the leader, then every member. Nothing
// acknowledged is lost; a take that could not be appended is answered Unavailable (retryable with
// its request ID), never Internal; the full member says it is not serving and why; and it recovers
// once space returns.
func TestDiskFull_FollowerLeaderAndEveryMember(t *testing.T) {
	if testing.Short() {
		t.Skip("starts limiterd processes")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	// raft-wal preallocates each segment: 64 MiB ones would not fit the 32 MiB disk at all.
	t.Setenv("LIMITERD_WAL_SEGMENT_SIZE", "1MiB")
	c := startPClusterWith(t, 3, 0, seed, func(dir string) { mountTmpfs(t, dir) })
	cl := c.directClient()
	const burst = 1_000_000
	mustSetLimit(t, cl, "disk", 1, time.Hour, burst)
	var (
		mu             sync.Mutex
		acked, unknown int64
		n              int
		bad            []string
	)
	one := func(phase string, within time.Duration) {
		mu.Lock()
		n++
		id := fmt.Sprintf("disk-%d", n)
		mu.Unlock()
		res, err := cl.Take(ctxT(t, within), "disk", "k", 1, id)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil && res.Allowed:
			acked++
		case err == nil:
			bad = append(bad, fmt.Sprintf("%s: take %s denied: %+v", phase, id, res.Decision))
		default:
			if code := status.Code(err); code == codes.Internal || code == codes.Unknown {
				bad = append(bad, fmt.Sprintf("%s: take %s answered %v, want a retryable code: %v", phase, id, code, err))
			}
			unknown++
		}
	}
	// take makes count takes, callers at a time (many callers fill a log faster: raft-wal writes
	// into preallocated segments and fails only when it needs a new one).
	take := func(phase string, count, callers int, within time.Duration) {
		t.Helper()
		var wg sync.WaitGroup
		for w := 0; w < callers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < count; i += callers {
					one(phase, within)
				}
			}()
		}
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(bad) > 0 {
			t.Fatal(strings.Join(bad, "\n"))
		}
	}
	reason := func(i int) string {
		st, err := c.status(i, false)
		if err != nil {
			return "unreachable: " + err.Error()
		}
		return st.GetNotServing()
	}
	waitServing := func(i int) {
		t.Helper()
		waitFor(t, 60*time.Second, c.ids[i]+" serving again", func() bool { st, err := c.status(i, false); return err == nil && st.GetNotServing() == "" })
	}
	take("warm up", 20, 1, 30*time.Second)

	// A full follower: the cluster goes on; the follower says it cannot write its log.
	l := c.waitLeader(30 * time.Second)
	f := (l + 1) % 3
	filler := fill(t, filepath.Join(c.dir, c.ids[f]))
	var why string
	waitFor(t, 30*time.Second, c.ids[f]+" reporting its full disk", func() bool {
		take("follower full", 400, 16, 30*time.Second)
		why = reason(f)
		return strings.Contains(why, "cannot write the Raft log")
	})
	t.Logf("full follower: %s", why)
	os.Remove(filler)
	take("follower freed", 5, 1, 30*time.Second)
	waitServing(f)

	// A full leader: its takes fail to append and are answered Unavailable; the client retries with
	// the same request ID and another member leads.
	l = c.waitLeader(30 * time.Second)
	filler = fill(t, filepath.Join(c.dir, c.ids[l]))
	take("leader full", 30, 1, 60*time.Second)
	waitFor(t, 30*time.Second, c.ids[l]+" reporting its full disk", func() bool {
		take("leader full", 400, 16, 60*time.Second)
		return strings.Contains(reason(l), "cannot write the Raft log")
	})
	os.Remove(filler)
	waitServing(l)

	// Every member full: nothing is decided, nothing acknowledged is lost.
	var fillers []string
	for i := 0; i < 3; i++ {
		fillers = append(fillers, fill(t, filepath.Join(c.dir, c.ids[i])))
	}
	// bbolt reuses pages it freed inside raft.db, so writes fail once those are used up too.
	for before, deadline := unknown, time.Now().Add(90*time.Second); unknown == before; {
		if time.Now().After(deadline) {
			t.Fatal("every disk is full and takes are still acknowledged after 90 s")
		}
		take("all full", 64, 16, 3*time.Second)
	}
	// A member that has not tried to write since may truthfully still be serving (stale reads);
	// the ones that tried say why they are not, and no member serves as leader.
	reported := false
	for i := 0; i < 3; i++ {
		st, err := c.status(i, false)
		if err != nil {
			continue
		}
		if st.IsLeader() && st.GetNotServing() == "" {
			t.Errorf("%s serves as leader with every disk full", c.ids[i])
		}
		reported = reported || strings.Contains(st.GetNotServing(), "cannot write the Raft log")
		t.Logf("all full: %s %s: %q", c.ids[i], st.GetNodeState(), st.GetNotServing())
	}
	if !reported {
		t.Error("no member reports that it cannot write its log")
	}
	for _, p := range fillers {
		os.Remove(p)
	}
	for i := 0; i < 3; i++ {
		waitServing(i)
	}
	take("all freed", 10, 1, 60*time.Second)
	c.converge(60 * time.Second)

	d := mustPeek(t, cl, "disk", "k")
	consumed := burst - d.Remaining
	if consumed < acked || consumed > acked+unknown {
		t.Fatalf("%d tokens consumed; %d takes acknowledged and %d with unknown outcome: an acknowledged take was lost or one was applied twice", consumed, acked, unknown)
	}
	t.Logf("disk full: %d acknowledged, %d unknown, %d consumed", acked, unknown, consumed)
}
