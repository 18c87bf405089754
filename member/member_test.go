package member

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/limiterd/limiter/node"
)

func TestAdvertisedAPIAddr_NeverAWildcard(t *testing.T) {
	cases := []struct {
		bound    string
		raftAddr string
		want     string
	}{
		{"127.0.0.1:7401", "127.0.0.1:7411", "127.0.0.1:7401"},
		{"0.0.0.0:7400", "limiter-1.limiter:7000", "limiter-1.limiter:7400"},
		{"[::]:7400", "10.0.0.5:7000", "10.0.0.5:7400"},
		{"0.0.0.0:7400", "0.0.0.0:7000", "127.0.0.1:7400"},
	}
	for _, c := range cases {
		a, err := net.ResolveTCPAddr("tcp", c.bound)
		if err != nil {
			t.Fatal(err)
		}
		if got := advertisedAPIAddr(a, c.raftAddr); got != c.want {
			t.Errorf("bound %s, raft %s: got %s, want %s", c.bound, c.raftAddr, got, c.want)
		}
	}
}

// A Serve failure is not lost: Failed closes and Wait returns it (before, a gRPC Serve error was
// written to a channel nobody read).
func TestMember_ServeFailureIsReported(t *testing.T) {
	dir := t.TempDir()
	cfg := node.DefaultConfig()
	cfg.LogStore = os.Getenv("LIMITER_LOG_STORE")
	cfg.ID, cfg.RaftAddr, cfg.DataDir = "solo", freeAddr(t), dir
	cfg.Bootstrap = []node.Peer{{ID: "solo", RaftAddr: cfg.RaftAddr}}
	cfg.RaftLogOutput = io.Discard
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := Start(context.Background(), Config{Node: cfg, APIListen: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Failed():
		t.Fatal("failed before anything went wrong")
	default:
	}
	m.lis.Close() // the gRPC listener breaks under the server
	select {
	case <-m.Failed():
	case <-time.After(10 * time.Second):
		t.Fatal("a broken gRPC listener was not reported")
	}
	if err := m.Stop(time.Second); err != nil {
		t.Fatal(err)
	}
	if err := m.Wait(); err == nil || !strings.Contains(err.Error(), "serve gRPC") {
		t.Fatalf("Wait = %v, want the gRPC Serve failure", err)
	}
}

// A member stopped normally reports no failure.
func TestMember_CleanStopWaitsForNothingFailed(t *testing.T) {
	cfg := node.DefaultConfig()
	cfg.LogStore = os.Getenv("LIMITER_LOG_STORE")
	cfg.ID, cfg.RaftAddr, cfg.DataDir = "solo", freeAddr(t), t.TempDir()
	cfg.Bootstrap = []node.Peer{{ID: "solo", RaftAddr: cfg.RaftAddr}}
	cfg.RaftLogOutput = io.Discard
	m, err := Start(context.Background(), Config{Node: cfg, APIListen: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(time.Second); err != nil {
		t.Fatal(err)
	}
	if err := m.Wait(); err != nil {
		t.Fatalf("Wait after a clean stop: %v", err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
