package server

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/bucket"
	"github.com/limiterd/limiter/fsm"
	"github.com/limiterd/limiter/node"
)

// toStatus chooses every code in one place; a wrapped sentinel keeps its code.
func TestToStatus_CodesBySentinel(t *testing.T) {
	s := &Server{}
	for _, c := range []struct {
		err  error
		want codes.Code
	}{
		{fsm.ErrUnknownLimit, codes.NotFound},
		{node.ErrUnknownMember, codes.NotFound},
		{fmt.Errorf("take: %w", bucket.ErrCostExceedsBurst), codes.InvalidArgument},
		{fsm.ErrInvalidCommand, codes.InvalidArgument},
		{fsm.ErrRequestIDReused, codes.AlreadyExists},
		{node.ErrAddressInUse, codes.FailedPrecondition},
		{fsm.ErrTooManyLimits, codes.ResourceExhausted},
		{fmt.Errorf("outcome unknown: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{context.Canceled, codes.Canceled},
		{errors.New("a bug"), codes.Internal},
		{status.Error(codes.PermissionDenied, "forwarded"), codes.PermissionDenied},
	} {
		if got := status.Code(s.toStatus(context.Background(), c.err)); got != c.want {
			t.Errorf("toStatus(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	if s.toStatus(context.Background(), nil) != nil {
		t.Error("toStatus(nil) is not nil")
	}
}
