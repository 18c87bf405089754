package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/limiterd/limiter/api/limiterpb"
	"github.com/limiterd/limiter/client"
	"github.com/limiterd/limiter/node"
)

// The end-to-end test of the container deployment: it builds the image (FROM scratch), brings up
// deploy/compose, and breaks it on purpose. It needs a Docker engine, so it runs only with
// LIMITER_E2E_DOCKER=1 (.ci/run sets it when `docker info` answers).

// compose runs docker compose (v2) or docker-compose (v1) for project p.
type compose struct {
	t       *testing.T
	cmd     []string
	project string
	file    string
	env     []string
}

func newCompose(t *testing.T) *compose {
	t.Helper()
	c := &compose{t: t, project: fmt.Sprintf("limiterd-e2e-%d", os.Getpid()), file: "../deploy/compose/docker-compose.yml"}
	if exec.Command("docker", "compose", "version").Run() == nil {
		c.cmd = []string{"docker", "compose"}
	} else if _, err := exec.LookPath("docker-compose"); err == nil {
		c.cmd = []string{"docker-compose"}
	} else {
		t.Fatalf("neither `docker compose` nor docker-compose is installed")
	}
	return c
}

func (c *compose) run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append(append(append([]string{}, c.cmd[1:]...), "-p", c.project, "-f", c.file), args...)
	cmd := exec.CommandContext(ctx, c.cmd[0], full...)
	cmd.Env = append(os.Environ(), c.env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *compose) must(timeout time.Duration, args ...string) string {
	c.t.Helper()
	out, err := c.run(timeout, args...)
	if err != nil {
		c.t.Fatalf("compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// container returns the container ID of a service.
func (c *compose) container(service string) string {
	c.t.Helper()
	return strings.TrimSpace(c.must(30*time.Second, "ps", "-q", service))
}

func docker(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestE2E_DockerComposeClusterSurvivesKillPartitionAndRollingRestart(t *testing.T) {
	if os.Getenv("LIMITER_E2E_DOCKER") != "1" {
		t.Skip("set LIMITER_E2E_DOCKER=1 to run the Docker end-to-end test (needs a Docker engine)")
	}
	image := fmt.Sprintf("limiterd:e2e-%d", os.Getpid())
	if out, err := exec.Command("bash", "../deploy/build-image.sh", image).CombinedOutput(); err != nil {
		t.Fatalf("build image: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", image).Run() })
	c := newCompose(t)
	c.env = []string{"LIMITERD_IMAGE=" + image}
	// Tear everything down even when a step fails: containers, the network, the volumes.
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := c.run(time.Minute, "logs", "--tail", "50")
			t.Logf("compose logs:\n%s", out)
		}
		if out, err := c.run(3*time.Minute, "down", "-v", "--remove-orphans", "--timeout", "5"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
		if left := strings.TrimSpace(dockerOut("ps", "-aq", "--filter", "label=com.docker.compose.project="+c.project)); left != "" {
			t.Errorf("containers left behind: %s", left)
		}
		if left := strings.TrimSpace(dockerOut("volume", "ls", "-q", "--filter", "label=com.docker.compose.project="+c.project)); left != "" {
			t.Errorf("volumes left behind: %s", left)
		}
		if left := strings.TrimSpace(dockerOut("network", "ls", "-q", "--filter", "label=com.docker.compose.project="+c.project)); left != "" {
			t.Errorf("networks left behind: %s", left)
		}
	})
	c.must(5*time.Minute, "up", "-d")

	addrs := []string{"127.0.0.1:7401", "127.0.0.1:7402", "127.0.0.1:7403"}
	cl, err := client.New(addrs, client.Options{RetryFor: 60 * time.Second, AttemptTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	leaderService := func() string {
		t.Helper()
		var svc string
		waitFor(t, 90*time.Second, "a leader every member agrees on", func() bool {
			leaders := map[string]bool{}
			for _, a := range addrs {
				st, err := cl.Status(ctxT(t, 3*time.Second), a)
				if err != nil || st.GetLeaderId() == "" {
					return false
				}
				leaders[st.GetLeaderId()] = true
			}
			if len(leaders) != 1 {
				return false
			}
			for id := range leaders { // n3, or n3~suffix after a lost volume
				svc = "limiter-" + strings.TrimPrefix(node.MemberName(id), "n")
			}
			return true
		})
		return svc
	}
	leaderService()
	// limitctl, as an operator would use it from the host.
	ctl := filepath.Join(mustBuild(t), "limitctl")
	if out, err := exec.Command(ctl, "limit", "set", "e2e", "--rate", "1", "--per", "1h", "--burst", "1000").CombinedOutput(); err != nil {
		t.Fatalf("limitctl limit set: %v\n%s", err, out)
	}
	var acked int64
	take := func(phase string, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			res, err := cl.Take(ctxT(t, 90*time.Second), "e2e", "k", 1, "")
			if err != nil {
				t.Fatalf("%s: take %d: %v", phase, i, err)
			}
			if !res.Allowed {
				t.Fatalf("%s: take %d denied", phase, i)
			}
			acked++
		}
	}
	out, err := exec.Command(ctl, "take", "e2e", "k", "-o", "json").CombinedOutput()
	var d struct{ Allowed bool }
	if err != nil || json.Unmarshal(out, &d) != nil || !d.Allowed {
		t.Fatalf("limitctl take: %v %s", err, out)
	}
	acked++
	take("start", 20)

	// Kill the leader's container: the others keep answering; nothing acknowledged is lost.
	l := leaderService()
	docker(t, "kill", c.container(l))
	take("after killing the leader "+l, 20)
	c.must(2*time.Minute, "start", l)

	// Partition one member off the network, then heal it.
	leaderService()
	netName := c.project + "_limiter"
	if strings.Contains(docker(t, "network", "ls", "--format", "{{.Name}}"), c.project+"-limiter") {
		netName = c.project + "-limiter"
	}
	victim := c.container("limiter-3")
	docker(t, "network", "disconnect", netName, victim)
	take("with limiter-3 partitioned", 20)
	docker(t, "network", "connect", "--alias", "limiter-3", netName, victim)

	// Rolling restart, one member at a time, with service throughout.
	for _, svc := range []string{"limiter-1", "limiter-2", "limiter-3"} {
		leaderService()
		c.must(2*time.Minute, "restart", "-t", "20", svc)
		take("rolling restart of "+svc, 10)
	}
	leaderService()
	dd, _, err := cl.Peek(ctxT(t, 60*time.Second), "e2e", "k", 1, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := 1000 - acked; dd.Remaining != want {
		t.Fatalf("remaining %d after %d acknowledged takes, want %d: an acknowledged take was lost or doubled", dd.Remaining, acked, want)
	}
	t.Logf("e2e: %d acknowledged takes, all counted across a leader kill, a partition and a rolling restart", acked)

	// A lost volume plus a crash, as shipped: takes acknowledged by two members while the third
	// is cut off; one of the two crashes; the other loses its volume and comes back with its usual
	// command (--bootstrap). No leader may serve until the crashed member returns; then the wiped
	// member rejoins under a new identity and every acknowledged take is still counted.
	l = leaderService()
	num := func(svc string) int { n := 0; fmt.Sscanf(svc, "limiter-%d", &n); return n }
	lagger := fmt.Sprintf("limiter-%d", num(l)%3+1)
	wiped := fmt.Sprintf("limiter-%d", (num(l)+1)%3+1)
	lagC := c.container(lagger)
	docker(t, "network", "disconnect", netName, lagC)
	take("with "+lagger+" cut off", 20)
	lc := c.container(l)
	docker(t, "update", "--restart=no", lc) // a crash it does not come back from by itself
	docker(t, "kill", lc)
	c.must(2*time.Minute, "rm", "-f", "-s", wiped)
	vol := strings.TrimSpace(docker(t, "volume", "ls", "-q", "--filter", "label=com.docker.compose.project="+c.project,
		"--filter", "label=com.docker.compose.volume="+wiped+"-data"))
	if vol == "" || strings.Contains(vol, "\n") {
		t.Fatalf("volume of %s: %q", wiped, vol)
	}
	docker(t, "volume", "rm", vol)
	docker(t, "network", "connect", "--alias", lagger, netName, lagC)
	c.must(2*time.Minute, "up", "-d", "--no-deps", wiped)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, svc := range []string{lagger, wiped} {
			if st, err := cl.Status(ctxT(t, 2*time.Second), addrs[num(svc)-1]); err == nil && st.IsLeader() {
				t.Fatalf("%s (%s) leads while the member holding the acknowledged takes is down", svc, st.GetNodeId())
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	c.must(2*time.Minute, "start", l)
	leaderService()
	waitFor(t, 2*time.Minute, "the wiped member back as a voter under a new identity", func() bool {
		st, err := cl.Status(ctxT(t, 3*time.Second), addrs[num(l)-1])
		if err != nil || len(st.GetMembers()) != 3 {
			return false
		}
		for _, m := range st.GetMembers() {
			if m.GetSuffrage() != limiterpb.Suffrage_SUFFRAGE_VOTER || m.GetId() == fmt.Sprintf("n%d", num(wiped)) {
				return false
			}
		}
		return true
	})
	dd, _, err = cl.Peek(ctxT(t, 60*time.Second), "e2e", "k", 1, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := 1000 - acked; dd.Remaining != want {
		t.Fatalf("remaining %d after %d acknowledged takes and a lost volume, want %d: acknowledged takes were forgotten", dd.Remaining, acked, want)
	}
	t.Logf("e2e: %d acknowledged takes survive a crash plus a lost volume restarted with --bootstrap", acked)
}

func dockerOut(args ...string) string {
	out, _ := exec.Command("docker", args...).CombinedOutput()
	return string(out)
}
