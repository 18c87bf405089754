package test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The tests in this file run the real binaries as separate processes, exactly as the README's
// recipes do.

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// mustBuild builds limiterd and limitctl once per test binary and returns their folder.
func mustBuild(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "limiter-bin-")
		if buildErr != nil {
			return
		}
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		for _, cmd := range []string{"limiterd", "limitctl"} {
			out, err := exec.Command(goBin, "build", "-o", filepath.Join(binDir, cmd), "../cmd/"+cmd).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", cmd, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// proc is a started process whose output is kept for failure messages.
type proc struct {
	cmd *exec.Cmd
	out *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	return startProcEnv(t, nil, bin, args...)
}

// startProcEnv starts a process with env added to the test's environment (a later value wins).
func startProcEnv(t *testing.T, env []string, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), out: &syncBuffer{}}
	p.cmd.Env = append(withLogStore(os.Environ()), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		p.stop(t, syscall.SIGKILL)
		if t.Failed() {
			t.Logf("output of %s %s:\n%s", filepath.Base(bin), strings.Join(args, " "), p.out.String())
		}
	})
	return p
}

// stop signals the process (by its own PID) and waits up to 15 s for it to exit.
func (p *proc) stop(t *testing.T, sig syscall.Signal) error {
	if p.cmd.ProcessState != nil {
		return nil
	}
	_ = p.cmd.Process.Signal(sig)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
		return errors.New("did not exit within 15s of the signal; killed")
	}
}

// runCmd runs a command to its end with the test's environment and returns its output.
func runCmd(bin string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "LIMITERD_LOG_STORE=")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// limitctl runs the CLI and returns its stdout, stderr and exit status.
func limitctl(t *testing.T, bin string, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "limitctl"), args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run limitctl: %v", err)
	}
	return stdout.String(), stderr.String(), code
}

// waitCtl retries a limitctl command until it exits 0.
func waitCtl(t *testing.T, bin string, env []string, d time.Duration, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		out, errOut, code := limitctl(t, bin, env, args...)
		if code == 0 {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("limitctl %s: exit %d: %s%s", strings.Join(args, " "), code, out, errOut)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkFiveTakesThenDenied is the README's first session: a limit of 5 per period allows 5
// takes (exit 0) and denies the 6th (exit 2), and member list shows 3 voters.
func checkFiveTakesThenDenied(t *testing.T, bin string, env []string, per string) {
	t.Helper()
	waitCtl(t, bin, env, 30*time.Second, "limit", "set", "demo", "--rate", "5", "--per", per)
	for i := 1; i <= 5; i++ {
		out, errOut, code := limitctl(t, bin, env, "take", "demo", "user:1", "-o", "json")
		if code != 0 {
			t.Fatalf("take %d: exit %d, want 0: %s%s", i, code, out, errOut)
		}
		var d struct {
			Allowed   bool  `json:"allowed"`
			Remaining int64 `json:"remaining"`
		}
		if err := json.Unmarshal([]byte(out), &d); err != nil || !d.Allowed || d.Remaining != int64(5-i) {
			t.Fatalf("take %d: %q (%v), want allowed with %d remaining", i, out, err, 5-i)
		}
	}
	if out, errOut, code := limitctl(t, bin, env, "take", "demo", "user:1"); code != 2 {
		t.Fatalf("6th take: exit %d, want 2 (denied): %s%s", code, out, errOut)
	}
	out := waitCtl(t, bin, env, 10*time.Second, "member", "list", "-o", "json")
	var members []map[string]any
	if err := json.Unmarshal([]byte(out), &members); err != nil {
		t.Fatalf("member list -o json: %v: %q", err, out)
	}
	voters := 0
	for _, m := range members {
		if s, _ := m["suffrage"].(string); strings.EqualFold(s, "voter") {
			voters++
		}
	}
	if len(members) != 3 || voters != 3 {
		t.Fatalf("member list: %d members, %d voters, want 3 voters: %s", len(members), voters, out)
	}
}

func TestProcesses_ThreeNodeRecipeFromREADME(t *testing.T) {
	bin := mustBuild(t)
	addrs := freeAddrs(t, 6)
	raft, api := addrs[:3], addrs[3:]
	bootstrap := fmt.Sprintf("n1=%s,n2=%s,n3=%s", raft[0], raft[1], raft[2])
	dir := t.TempDir()
	var procs []*proc
	for i := 0; i < 3; i++ {
		procs = append(procs, startProc(t, filepath.Join(bin, "limiterd"),
			"--id", fmt.Sprintf("n%d", i+1), "--raft-addr", raft[i], "--api-addr", api[i],
			"--data-dir", filepath.Join(dir, fmt.Sprintf("n%d", i+1)), "--bootstrap", bootstrap))
	}
	env := []string{"LIMITCTL_ADDR=" + strings.Join(api, ",")}
	checkFiveTakesThenDenied(t, bin, env, "1h")

	// SIGTERM stops a member cleanly; the other two keep answering.
	if err := procs[0].stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("n1 exit after SIGTERM: %v\n%s", err, procs[0].out.String())
	}
	if r := peekRemaining(t, bin, env); r != 0 {
		t.Fatalf("peek after stopping n1: %d remaining, want 0", r)
	}
}

// The dev cluster runs on ports of its own (--port-base), never on the default ones a developer's
// own `limiterd dev` may be using: a test must not touch a cluster it did not start.
func TestProcesses_DevClusterRestartedOnSameDataDirKeepsState(t *testing.T) {
	bin := mustBuild(t)
	dir := t.TempDir()
	base, env := devPorts(t)
	dev := startProc(t, filepath.Join(bin, "limiterd"), "dev", "--data-dir", dir, "--port-base", fmt.Sprint(base))
	checkFiveTakesThenDenied(t, bin, env, "1h")
	if err := dev.stop(t, syscall.SIGINT); err != nil {
		t.Fatalf("limiterd dev exit after Ctrl-C: %v\n%s", err, dev.out.String())
	}
	startProc(t, filepath.Join(bin, "limiterd"), "dev", "--data-dir", dir, "--port-base", fmt.Sprint(base))
	if r := peekRemaining(t, bin, env); r != 0 {
		t.Fatalf("peek after restart: %d remaining, want 0 (state kept)", r)
	}
}

// devPorts picks a free --port-base for a dev cluster and returns it with limitctl's environment
// to reach its three API addresses.
func devPorts(t *testing.T) (int, []string) {
	t.Helper()
	base := freePortBase(t)
	var api []string
	for i := 1; i <= 3; i++ {
		api = append(api, fmt.Sprintf("127.0.0.1:%d", base+i))
	}
	return base, []string{"LIMITCTL_ADDR=" + strings.Join(api, ",")}
}

// freePortBase finds a --port-base whose nine dev ports (base+1..3, +11..13, +2001..2003) are free,
// away from the default 7400.
func freePortBase(t *testing.T) int {
	t.Helper()
	for tries := 0; tries < 200; tries++ {
		base := 20000 + rand.IntN(8000)
		free := true
		var lns []net.Listener
		for _, off := range []int{1, 2, 3, 11, 12, 13, 2001, 2002, 2003} {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+off))
			if err != nil {
				free = false
				break
			}
			lns = append(lns, ln)
		}
		for _, ln := range lns {
			ln.Close()
		}
		if free {
			return base
		}
	}
	t.Fatal("no free port base for a dev cluster")
	return 0
}

// peekRemaining peeks demo/user:1 through limitctl (retrying until the cluster answers).
func peekRemaining(t *testing.T, bin string, env []string) int64 {
	t.Helper()
	out := waitCtl(t, bin, env, 30*time.Second, "peek", "demo", "user:1", "-o", "json")
	var d struct {
		Remaining int64 `json:"remaining"`
	}
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("peek -o json: %v: %q", err, out)
	}
	return d.Remaining
}

// limiterd dev takes the same --config (flags and declared limits) and --envoy-config files as a
// member: the declared limit and the Envoy rules' limits exist once it is up.
func TestProcesses_DevClusterWithConfigAndEnvoyConfig(t *testing.T) {
	bin := mustBuild(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "dev.yaml")
	if err := os.WriteFile(cfg, []byte("log-level: warn\nlimits:\n  - {name: checkout, rate: 5, per: 1d}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	envoyCfg := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(envoyCfg, []byte("domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: {unit: minute, requests_per_unit: 3}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base, env := devPorts(t)
	startProc(t, filepath.Join(bin, "limiterd"), "dev", "--data-dir", filepath.Join(dir, "data"), "--port-base", fmt.Sprint(base),
		"--config", cfg, "--envoy-config", envoyCfg)
	// The leader creates declared limits once it leads: wait for them.
	var out string
	waitFor(t, 30*time.Second, "the declared and the Envoy limits", func() bool {
		out = waitCtl(t, bin, env, 30*time.Second, "limit", "list", "-o", "json")
		var lis []struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal([]byte(out), &lis); err != nil {
			t.Fatalf("limit list -o json: %v\n%s", err, out)
		}
		var checkout, edge bool
		for _, l := range lis {
			checkout = checkout || l.Name == "checkout"
			edge = edge || strings.HasPrefix(l.Name, "envoy/edge")
		}
		return checkout && edge
	})
}
