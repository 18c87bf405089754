package server

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/api/limiterpb"
	"github.com/limiterd/limiter/node"
)

// remoteCall is one RPC of the generated clients, bound to a connection.
type remoteCall[Req, Resp any] func(ctx context.Context, c *grpc.ClientConn, req Req) (Resp, error)

// adminRPC turns an Admin client method (limiterpb.AdminClient.SetLimit) into a remoteCall.
func adminRPC[Req, Resp any](m func(limiterpb.AdminClient, context.Context, Req, ...grpc.CallOption) (Resp, error)) remoteCall[Req, Resp] {
	return func(ctx context.Context, c *grpc.ClientConn, req Req) (Resp, error) {
		return m(limiterpb.NewAdminClient(c), ctx, req)
	}
}

// dataRPC turns a RateLimiter client method (limiterpb.RateLimiterClient.Take) into a remoteCall.
func dataRPC[Req, Resp any](m func(limiterpb.RateLimiterClient, context.Context, Req, ...grpc.CallOption) (Resp, error)) remoteCall[Req, Resp] {
	return func(ctx context.Context, c *grpc.ClientConn, req Req) (Resp, error) {
		return m(limiterpb.NewRateLimiterClient(c), ctx, req)
	}
}

// onLeader runs local on the ready leader and forwards req to the leader from any other node,
// with the default deadline applied once. local's error is mapped to a status here (toStatus);
// a forwarded call's status is passed on as the leader gave it.
func onLeader[Req, Resp any](s *Server, ctx context.Context, req Req, remote remoteCall[Req, Resp], local func(context.Context) (Resp, error)) (Resp, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	if !s.node.IsLeader() {
		return forward(s, ctx, req, remote, false)
	}
	resp, err := local(ctx)
	if err != nil {
		var zero Resp
		return zero, s.toStatus(ctx, err)
	}
	return resp, nil
}

// wasForwarded reports whether the incoming call was forwarded by another member.
func wasForwarded(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	return ok && len(md.Get(forwardedHeader)) > 0
}

// forward sends req to the leader. A request that was itself forwarded is not forwarded again
// (no loops), unless this node led when it arrived and has just handed leadership over
// (handover: it was the request's destination, not a follower in a loop).
func forward[Req, Resp any](s *Server, ctx context.Context, req Req, remote remoteCall[Req, Resp], handover bool) (Resp, error) {
	var zero Resp
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(forwardedHeader)) > 0 && !handover {
		return zero, s.unavailable(ctx, node.ErrNotLeader)
	}
	_, addr := s.node.Leader()
	if addr == "" || addr == s.node.APIAddr() {
		return zero, s.unavailable(ctx, node.ErrNotLeader)
	}
	c, err := s.conn(addr)
	if err != nil {
		return zero, s.unavailable(ctx, node.ErrNotLeader)
	}
	return remote(metadata.AppendToOutgoingContext(ctx, forwardedHeader, s.node.ID()), c, req)
}

// conn returns a cached client connection to a member's API address.
func (s *Server) conn(addr string) (*grpc.ClientConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, s.dial...)
	if err != nil {
		return nil, err
	}
	s.conns[addr] = c
	return c, nil
}

// relayLeader runs on this node's outgoing calls. On a call forwarded to the leader it names the
// leader to the original caller in the LeaderHeader trailer: the leader's own hint when it
// refused (it may know a newer leader), else the address the call was forwarded to. So a client
// that reached a follower goes straight to the leader next time instead of paying the extra hop
// on every call.
func relayLeader(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if md, ok := metadata.FromOutgoingContext(ctx); !ok || len(md.Get(forwardedHeader)) == 0 {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	var trailer metadata.MD
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Trailer(&trailer))...)
	leader := cc.Target()
	if hint := trailer.Get(LeaderHeader); len(hint) > 0 {
		leader = hint[0]
	} else if c := status.Code(err); c == codes.Unavailable || c == codes.DeadlineExceeded {
		return err // it may not lead any more and named no one: leave the caller to its own discovery
	}
	_ = grpc.SetTrailer(ctx, metadata.Pairs(LeaderHeader, leader))
	return err
}

// withTimeout applies DefaultTimeout to calls without a deadline.
func withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, DefaultTimeout)
}
