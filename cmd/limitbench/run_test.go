package main

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/api/limiterpb"
)

// fakeNode is a one-node stand-in for limiterd: it says it is the leader, allows every take,
// and stalls once, on take number stallAt, for stall; or fails takes with failCode.
type fakeNode struct {
	limiterpb.UnimplementedRateLimiterServer
	limiterpb.UnimplementedAdminServer
	addr     string
	takes    atomic.Int64
	stallAt  int64
	stall    time.Duration
	failCode codes.Code
}

// Take allows the take, after the one stall, or fails with failCode when set.
func (f *fakeNode) Take(ctx context.Context, req *limiterpb.TakeRequest) (*limiterpb.TakeResponse, error) {
	if n := f.takes.Add(1); n == f.stallAt {
		time.Sleep(f.stall)
	} else if f.failCode != codes.OK && n > 1 { // the first take is the preflight
		return nil, status.Error(f.failCode, "injected failure")
	}
	return &limiterpb.TakeResponse{Decision: &limiterpb.Decision{Allowed: true, Limit: 10}, RequestId: req.GetRequestId()}, nil
}

// SetLimit accepts any limit.
func (f *fakeNode) SetLimit(_ context.Context, req *limiterpb.SetLimitRequest) (*limiterpb.LimitInfo, error) {
	return &limiterpb.LimitInfo{Name: req.GetName(), Rate: req.GetRate()}, nil
}

// Status says this node is the leader of term 1.
func (f *fakeNode) Status(context.Context, *limiterpb.StatusRequest) (*limiterpb.StatusResponse, error) {
	return &limiterpb.StatusResponse{NodeId: "f1", State: "Leader", Term: 1, LeaderId: "f1", LeaderApiAddress: f.addr}, nil
}

// startFake serves f on a free loopback port until the test ends.
func startFake(t *testing.T, f *fakeNode) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	g := grpc.NewServer()
	limiterpb.RegisterRateLimiterServer(g, f)
	limiterpb.RegisterAdminServer(g, f)
	healthpb.RegisterHealthServer(g, health.NewServer())
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return f.addr
}

// fakeConfig is a one-caller take run against addr.
func fakeConfig(addr string) Config {
	return Config{Addrs: []string{addr}, Concurrency: 1, Keys: 10, Limit: "x", Setup: true, Rate: 10, Per: time.Second,
		Cost: 1, Mix: Mix{{Op: opTake, Weight: 1}}, Batch: 1, Requests: 100, RequestTimeout: 5 * time.Second, Seed: 1}
}

// TestOpenLoopCountsStallsInLatency checks the open loop's defence against coordinated
// omission: one 300 ms stall at 100 requests/s delays the ~30 requests due during it, and each
// of them counts its wait from its due time. A closed loop sees the same stall as one slow call.
func TestOpenLoopCountsStallsInLatency(t *testing.T) {
	const stall = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	open := fakeConfig(startFake(t, &fakeNode{stallAt: 21, stall: stall}))
	open.RateLimit = 100 // 100 requests over 1 s
	res, err := run(ctx, open)
	if err != nil {
		t.Fatal(err)
	}
	h := res.Main.AllHist()
	if h.Count() != 100 || res.Main.TotalErrors() != 0 {
		t.Fatalf("open loop: %d calls, %d errors", h.Count(), res.Main.TotalErrors())
	}
	// Requests 20..49 were due during the stall: the 21st slowest waited at least ~100 ms.
	if q := h.Quantile(0.8); q < 50*time.Millisecond {
		t.Errorf("open loop p80 %v: the stall's queued requests were not counted from their due time", q)
	}
	if h.Max() < stall {
		t.Errorf("open loop max %v, want at least the %v stall", h.Max(), stall)
	}
	if res.Main.Elapsed < 900*time.Millisecond {
		t.Errorf("open loop of 100 requests at 100/s took %v", res.Main.Elapsed)
	}

	closed := fakeConfig(startFake(t, &fakeNode{stallAt: 21, stall: stall}))
	res, err = run(ctx, closed)
	if err != nil {
		t.Fatal(err)
	}
	h = res.Main.AllHist()
	if h.Count() != 100 || h.Max() < stall {
		t.Fatalf("closed loop: %d calls, max %v", h.Count(), h.Max())
	}
	if q := h.Quantile(0.8); q > 50*time.Millisecond {
		t.Errorf("closed loop p80 %v: only the stalled call should be slow", q)
	}
}

// TestErrorsCountedByCodeNotRetried checks that failed calls are counted once each under their
// gRPC code, with the first message kept, and never retried.
func TestErrorsCountedByCodeNotRetried(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f := &fakeNode{failCode: codes.ResourceExhausted}
	cfg := fakeConfig(startFake(t, f))
	cfg.Concurrency = 4
	res, err := run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := res.Main
	if p.TotalOps() != 100 || p.Errors[codes.ResourceExhausted] != 100 || p.TotalDecisions() != 0 || p.Allowed != 0 {
		t.Fatalf("%d calls, errors %v, %d decisions", p.TotalOps(), p.Errors, p.TotalDecisions())
	}
	if got := f.takes.Load(); got != 101 { // the preflight and 100 measured takes: no retries
		t.Fatalf("server saw %d takes, want 101", got)
	}
	if p.ErrorText[codes.ResourceExhausted] != "take: injected failure" {
		t.Fatalf("first error text %q", p.ErrorText[codes.ResourceExhausted])
	}
}
