package server

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/api/limiterpb"
	"github.com/limiterd/limiter/bucket"
	"github.com/limiterd/limiter/fsm"
	"github.com/limiterd/limiter/node"
)

// LeaderHeader is the trailer that names the leader (limiterpb.LeaderHeader).
const LeaderHeader = limiterpb.LeaderHeader

// forwardedHeader marks a request forwarded by another node, so it is never forwarded twice.
const forwardedHeader = "x-limiter-forwarded"

// toStatus decides the gRPC status of an error: the one place where codes are chosen for what
// node/ and fsm/ return (validation answers InvalidArgument at once, auth.go PermissionDenied,
// and backup.go names upload problems in its own words).
func (s *Server) toStatus(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err // already a status (e.g. from a forwarded call)
	}
	var code codes.Code
	switch {
	case errors.Is(err, node.ErrNotLeader), errors.Is(err, node.ErrShutdown), errors.Is(err, node.ErrBusy),
		errors.Is(err, node.ErrStorage), errors.Is(err, node.ErrNoEscrow),
		errors.Is(err, fsm.ErrHalted):
		return s.unavailable(ctx, err)
	case errors.Is(err, fsm.ErrUnknownLimit), errors.Is(err, node.ErrUnknownMember):
		code = codes.NotFound
	case errors.Is(err, fsm.ErrInvalidCommand), errors.Is(err, bucket.ErrInvalidCost),
		errors.Is(err, bucket.ErrCostExceedsBurst), errors.Is(err, bucket.ErrInvalidLimit):
		code = codes.InvalidArgument
	case errors.Is(err, fsm.ErrRequestIDReused):
		code = codes.AlreadyExists
	case errors.Is(err, node.ErrAddressInUse), errors.Is(err, node.ErrUnreachableMember):
		code = codes.FailedPrecondition
	case errors.Is(err, fsm.ErrTooManyLimits):
		code = codes.ResourceExhausted
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	default:
		code = codes.Internal
	}
	return status.Error(code, err.Error())
}

// unavailable answers "not the leader" with the leader's address in the message and in the
// LeaderHeader trailer, so clients can go straight there.
func (s *Server) unavailable(ctx context.Context, err error) error {
	id, addr := s.node.Leader()
	if addr != "" && addr != s.node.APIAddr() {
		_ = grpc.SetTrailer(ctx, metadata.Pairs(LeaderHeader, addr))
		return status.Errorf(codes.Unavailable, "%v; the leader is %s at %s", err, id, addr)
	}
	return status.Errorf(codes.Unavailable, "%v; no leader known yet, retry shortly", err)
}

func invalidArg(format string, args ...any) error {
	return status.Error(codes.InvalidArgument, fmt.Sprintf(format, args...))
}
