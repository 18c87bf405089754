package client

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/api/limiterpb"
)

func TestNew_NeedsAnAddress(t *testing.T) {
	if _, err := New([]string{" ", ""}, Options{}); err == nil {
		t.Fatalf("a client with no addresses was created")
	}
}

func TestRetryable_OnlyWhenTheNodeCouldNotServe(t *testing.T) {
	ctx := context.Background()
	for code, want := range map[codes.Code]bool{
		codes.Unavailable: true, codes.DeadlineExceeded: true, codes.Aborted: false, codes.ResourceExhausted: false,
		codes.InvalidArgument: false, codes.NotFound: false, codes.AlreadyExists: false, codes.Internal: false,
	} {
		if got := retryable(ctx, status.Error(code, "x")); got != want {
			t.Errorf("retryable(%v) = %v, want %v", code, got, want)
		}
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if retryable(done, status.Error(codes.Unavailable, "x")) {
		t.Errorf("retried after the caller's context ended")
	}
}

func TestTranslate_LeaderHintsThroughTheAddressMap(t *testing.T) {
	c, err := New([]string{"proxy:1"}, Options{AddressMap: map[string]string{"node:1": "proxy:1"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.translate([]string{"node:1"}); got != "proxy:1" {
		t.Fatalf("mapped hint: %q", got)
	}
	if got := c.translate([]string{"node:2"}); got != "node:2" {
		t.Fatalf("unmapped hint: %q", got)
	}
	if got := c.translate(nil); got != "" {
		t.Fatalf("no hint: %q", got)
	}
}

func TestCall_GivesUpWithinRetryForOnAnUnreachableNode(t *testing.T) {
	c, err := New([]string{"127.0.0.1:1"}, Options{RetryFor: 300 * time.Millisecond, AttemptTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.Take(context.Background(), "l", "k", 1, "")
	if err == nil {
		t.Fatalf("a take on an unreachable node succeeded")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("gave up after %v; RetryFor was 300ms", el)
	}
}

// fakeNode answers Take, counting calls; when leader is set it names that address in the
// LeaderHeader trailer, as a follower does after forwarding.
type fakeNode struct {
	limiterpb.UnimplementedRateLimiterServer
	calls  atomic.Int64
	leader string
}

func (f *fakeNode) Take(ctx context.Context, req *limiterpb.TakeRequest) (*limiterpb.TakeResponse, error) {
	f.calls.Add(1)
	if f.leader != "" {
		_ = grpc.SetTrailer(ctx, metadata.Pairs(LeaderHeader, f.leader))
	}
	return &limiterpb.TakeResponse{Decision: &limiterpb.Decision{Allowed: true}, RequestId: req.GetRequestId()}, nil
}

func serveFake(t *testing.T, f *fakeNode) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	limiterpb.RegisterRateLimiterServer(g, f)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

func TestCall_FollowsTheLeaderNamedByAForwardedAnswer(t *testing.T) {
	leader := &fakeNode{}
	leaderAddr := serveFake(t, leader)
	follower := &fakeNode{leader: leaderAddr}
	c, err := New([]string{serveFake(t, follower), leaderAddr}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 10; i++ {
		if _, err := c.Take(context.Background(), "l", "k", 1, ""); err != nil {
			t.Fatal(err)
		}
	}
	if f, l := follower.calls.Load(), leader.calls.Load(); f != 1 || l != 9 {
		t.Fatalf("follower answered %d calls and the leader %d; want 1 and 9 (the client follows the named leader)", f, l)
	}
}

func TestToken_PlaintextOnlyToLoopback(t *testing.T) {
	c, err := New([]string{"127.0.0.1:1"}, Options{Token: "secret", AllowPlaintextToken: true})
	if err != nil {
		t.Fatal(err)
	}
	if c.strict == nil {
		t.Fatal("a plaintext token allowed on loopback has no strict dial options for other addresses (a redirect would leak it)")
	}
	c, err = New([]string{"127.0.0.1:1"}, Options{Token: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	if c.strict != nil {
		t.Fatal("strict dial options without a plaintext token allowed")
	}
}

// fakeAdmin's first DeleteLimit and TransferLeadership do their work but answer too late (a
// lost reply); later DeleteLimits find the limit gone.
type fakeAdmin struct {
	limiterpb.UnimplementedAdminServer
	deletes, transfers atomic.Int64
}

func (f *fakeAdmin) DeleteLimit(ctx context.Context, req *limiterpb.DeleteLimitRequest) (*limiterpb.DeleteLimitResponse, error) {
	if f.deletes.Add(1) == 1 {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return nil, status.Errorf(codes.NotFound, "unknown limit %q", req.GetName())
}

func (f *fakeAdmin) TransferLeadership(ctx context.Context, req *limiterpb.TransferLeadershipRequest) (*limiterpb.TransferLeadershipResponse, error) {
	f.transfers.Add(1)
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestAdmin_RemovalsAndTransfersAfterALostReply(t *testing.T) {
	f := &fakeAdmin{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	limiterpb.RegisterAdminServer(g, f)
	go g.Serve(lis)
	defer g.Stop()
	c, err := New([]string{lis.Addr().String()}, Options{RetryFor: 5 * time.Second, AttemptTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.DeleteLimit(context.Background(), "x"); err != nil {
		t.Fatalf("delete whose first reply was lost: %v; want success (the retry found it gone)", err)
	}
	_, err = c.TransferLeadership(context.Background(), "")
	if err == nil || status.Code(err) != codes.Unknown || f.transfers.Load() != 1 {
		t.Fatalf("transfer that timed out: %v (code %v) after %d attempts; want Unknown after 1 attempt", err, status.Code(err), f.transfers.Load())
	}
}

// busyNode refuses every take with Unavailable and reports a short exactly-once window.
type busyNode struct {
	limiterpb.UnimplementedRateLimiterServer
	limiterpb.UnimplementedAdminServer
	window time.Duration
}

func (b *busyNode) Take(context.Context, *limiterpb.TakeRequest) (*limiterpb.TakeResponse, error) {
	return nil, status.Error(codes.Unavailable, "busy")
}

func (b *busyNode) Status(context.Context, *limiterpb.StatusRequest) (*limiterpb.StatusResponse, error) {
	return &limiterpb.StatusResponse{ExactlyOnceWindowNanos: int64(b.window)}, nil
}

// The client stops retrying before the exactly-once window the cluster reports ends, even when
// RetryFor is longer: a retry after the window could be applied twice.
func TestCall_RetriesStayInsideTheReportedWindow(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	b := &busyNode{window: 2500 * time.Millisecond}
	limiterpb.RegisterRateLimiterServer(g, b)
	limiterpb.RegisterAdminServer(g, b)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	c, err := New([]string{lis.Addr().String()}, Options{RetryFor: 30 * time.Second, AttemptTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.Take(context.Background(), "l", "k", 1, "id-1")
	el := time.Since(start)
	var ce *CallError
	if !errors.As(err, &ce) || status.Code(err) != codes.Unavailable {
		t.Fatalf("take on a busy node: %v, want a CallError with the last Unavailable", err)
	}
	// window 2.5 s less one attempt (0.2 s) and a second of slack: about 1.3 s, far from 30 s.
	if el > 2500*time.Millisecond {
		t.Fatalf("retried for %v with a 2.5 s exactly-once window", el)
	}
}
