package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/api/limiterpb"
)

// admin runs one Admin call with the client's leader discovery and retries.
func admin[T any](ctx context.Context, c *Client, fn func(ctx context.Context, a limiterpb.AdminClient, o ...grpc.CallOption) (T, error)) (T, error) {
	var out T
	err := c.call(ctx, func(ctx context.Context, conn *grpc.ClientConn, o ...grpc.CallOption) (err error) {
		out, err = fn(ctx, limiterpb.NewAdminClient(conn), o...)
		return err
	})
	return out, err
}

// adminRemove runs a call that removes something, with retries. A retry after an attempt whose
// outcome is unknown (a lost reply, a timeout) may find the thing already gone: that NotFound
// means the earlier attempt did the work, so it is reported as success.
func adminRemove[T any](ctx context.Context, c *Client, fn func(ctx context.Context, a limiterpb.AdminClient, o ...grpc.CallOption) (T, error)) (T, error) {
	uncertain := false
	return admin(ctx, c, func(ctx context.Context, a limiterpb.AdminClient, o ...grpc.CallOption) (T, error) {
		out, err := fn(ctx, a, o...)
		switch status.Code(err) {
		case codes.NotFound:
			if uncertain {
				return out, nil
			}
		case codes.Unavailable, codes.DeadlineExceeded:
			uncertain = true
		}
		return out, err
	})
}

// SetLimit creates the named limit or changes it live (burst 0 means burst = rate).
// Setting the same values again is harmless, so it is safe to retry.
func (c *Client) SetLimit(ctx context.Context, name string, rate int64, per time.Duration, burst int64) (*limiterpb.LimitInfo, error) {
	return c.SetLimitSpec(ctx, LimitSpec{Name: name, Rate: rate, Per: per, Burst: burst})
}

// LimitSpec is a limit with its admission mode.
type LimitSpec struct {
	Name      string
	Rate      int64
	Per       time.Duration
	Burst     int64  // 0: the rate
	Admission string // "linearizable" (the default when empty) or "local"
	GrantTTL  time.Duration
}

// SetLimitSpec creates or changes a limit, admission mode included.
func (c *Client) SetLimitSpec(ctx context.Context, spec LimitSpec) (*limiterpb.LimitInfo, error) {
	req := &limiterpb.SetLimitRequest{Name: spec.Name, Rate: spec.Rate, PeriodNanos: int64(spec.Per), Burst: spec.Burst,
		Admission: spec.Admission, GrantTtlNanos: int64(spec.GrantTTL)}
	info, err := admin(ctx, c, func(ctx context.Context, a limiterpb.AdminClient, o ...grpc.CallOption) (*limiterpb.LimitInfo, error) {
		return a.SetLimit(ctx, req, o...)
	})
	if err == nil {
		c.learn(spec.Name, info.GetAdmission())
	}
	return info, err
}

// GetLimit returns the named limit.
func (c *Client) GetLimit(ctx context.Context, name string) (*limiterpb.LimitInfo, error) {
	return admin(ctx, c, func(ctx context.Context, a limiterpb.AdminClient, o ...grpc.CallOption) (*limiterpb.LimitInfo, error) {
		return a.GetLimit(ctx, &limiterpb.GetLimitRequest{Name: name}, o...)
	})
}

// ListLimits returns every limit, sorted by name.
func (c *Client) ListLimits(ctx context.Context) ([]*limiterpb.LimitInfo, error) {
	resp, err := admin(ctx, c, func(ctx context.Context, a limiterpb.AdminClient, o ...grpc.CallOption) (*limiterpb.ListLimitsResponse, error) {
		return a.ListLimits(ctx, &limiterpb.ListLimitsRequest{}, o...)
	})
	return resp.GetLimits(), err
}

// DeleteLimit deletes the named limit and its buckets. NotFound means it did not exist; a retry
// that finds it gone after an attempt with an unknown outcome counts as success.
func (c *Client) DeleteLimit(ctx context.Context, name string) error {
	_, err := adminRemove(ctx, c, func(ctx context.Context, a limiterpb.AdminClient, o ...grpc.CallOption) (*limiterpb.DeleteLimitResponse, error) {
		return a.DeleteLimit(ctx, &limiterpb.DeleteLimitRequest{Name: name}, o...)
	})
	return err
}

// Members lists the cluster's members as the leader sees them.
func (c *Client) Members(ctx context.Context) ([]*limiterpb.Member, error) {
	resp, err := admin(ctx, c, func(ctx context.Context, a limiterpb.AdminClient, o ...grpc.CallOption) (*limiterpb.ListMembersResponse, error) {
		return a.ListMembers(ctx, &limiterpb.ListMembersRequest{}, o...)
	})
	return resp.GetMembers(), err
}

// AddVoter adds a voting member (idempotent).
func (c *Client) AddVoter(ctx context.Context, id, raftAddr, apiAddr string) error {
	return c.AddMember(ctx, id, raftAddr, apiAddr, false)
}

// AddMember is AddVoter with force: add the member even if nothing answers as it at raftAddr
// (without force the leader refuses such a member with FailedPrecondition).
func (c *Client) AddMember(ctx context.Context, id, raftAddr, apiAddr string, force bool) error {
	_, err := admin(ctx, c, func(ctx context.Context, a limiterpb.AdminClient, o ...grpc.CallOption) (*limiterpb.AddVoterResponse, error) {
		return a.AddVoter(ctx, &limiterpb.AddVoterRequest{Id: id, RaftAddress: raftAddr, ApiAddress: apiAddr, Force: force}, o...)
	})
	return err
}

// RemoveServer removes a member (transferring leadership first if it is the leader). As with
// DeleteLimit, a retry that finds the member gone after an unknown outcome counts as success.
func (c *Client) RemoveServer(ctx context.Context, id string) error {
	_, err := adminRemove(ctx, c, func(ctx context.Context, a limiterpb.AdminClient, o ...grpc.CallOption) (*limiterpb.RemoveServerResponse, error) {
		return a.RemoveServer(ctx, &limiterpb.RemoveServerRequest{Id: id}, o...)
	})
	return err
}

// TransferLeadership hands leadership to id, or to any up-to-date voter when id is "", and
// returns the new leader's ID. An attempt that timed out is not repeated (a repeat could move
// leadership a second time): its error says the outcome is unknown; check with Members.
func (c *Client) TransferLeadership(ctx context.Context, id string) (string, error) {
	resp, err := admin(ctx, c, func(ctx context.Context, a limiterpb.AdminClient, o ...grpc.CallOption) (*limiterpb.TransferLeadershipResponse, error) {
		resp, err := a.TransferLeadership(ctx, &limiterpb.TransferLeadershipRequest{Id: id}, o...)
		if status.Code(err) == codes.DeadlineExceeded {
			return nil, status.Errorf(codes.Unknown, "leadership transfer: outcome unknown, not repeated (check member list): %v", status.Convert(err).Message())
		}
		return resp, err
	})
	c.setLeader("")
	return resp.GetLeaderId(), err
}

// Status asks one node, at addr, for its own view (no retries, no redirects).
func (c *Client) Status(ctx context.Context, addr string) (*limiterpb.StatusResponse, error) {
	conn, err := c.conn(addr)
	if err != nil {
		return nil, err
	}
	resp, err := limiterpb.NewAdminClient(conn).Status(ctx, &limiterpb.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("status of %s: %w", addr, err)
	}
	return resp, nil
}

// Addrs returns the node addresses the client was given.
func (c *Client) Addrs() []string { return append([]string(nil), c.addrs...) }

// Health asks one node, at addr, for its grpc.health.v1 status: true when it is SERVING (it knows
// a leader, is not halted and has applied nearly everything committed).
func (c *Client) Health(ctx context.Context, addr string) (bool, error) {
	conn, err := c.conn(addr)
	if err != nil {
		return false, err
	}
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return false, fmt.Errorf("health of %s: %w", addr, err)
	}
	return resp.GetStatus() == healthpb.HealthCheckResponse_SERVING, nil
}

// leaderAddr asks the nodes, in turn, which member leads and returns its API address (as this
// client dials it, through AddressMap).
func (c *Client) leaderAddr(ctx context.Context) (string, error) {
	var last error
	for _, addr := range c.addrs {
		// Each node gets its own share of time: one that drops packets must not use up ctx.
		nctx, cancel := context.WithTimeout(ctx, min(c.opts.AttemptTimeout, 2*time.Second))
		st, err := c.Status(nctx, addr)
		cancel()
		if err != nil {
			last = err
			continue
		}
		if st.IsLeader() {
			return addr, nil
		}
		if l := c.translate([]string{st.GetLeaderApiAddress()}); l != "" {
			return l, nil
		}
	}
	if last == nil {
		last = errors.New("no node knows a leader")
	}
	return "", fmt.Errorf("find the leader: %w", last)
}

// SaveSnapshot writes a consistent snapshot of the replicated state (a backup) to w and returns
// its size. It is taken on the leader at a linearizable point.
func (c *Client) SaveSnapshot(ctx context.Context, w io.Writer) (int64, error) {
	addr, err := c.leaderAddr(ctx)
	if err != nil {
		return 0, err
	}
	conn, err := c.conn(addr)
	if err != nil {
		return 0, err
	}
	stream, err := limiterpb.NewAdminClient(conn).SaveSnapshot(ctx, &limiterpb.SaveSnapshotRequest{})
	if err != nil {
		return 0, fmt.Errorf("save snapshot: %w", err)
	}
	var n int64
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("save snapshot: %w", err)
		}
		m, err := w.Write(chunk.GetData())
		n += int64(m)
		if err != nil {
			return n, fmt.Errorf("save snapshot: %w", err)
		}
	}
}

// RestoreSnapshot replaces the whole replicated state, on every member, with a snapshot saved by
// SaveSnapshot. The cluster verifies the file before changing anything.
func (c *Client) RestoreSnapshot(ctx context.Context, r io.Reader) (*limiterpb.RestoreSnapshotResponse, error) {
	addr, err := c.leaderAddr(ctx)
	if err != nil {
		return nil, err
	}
	conn, err := c.conn(addr)
	if err != nil {
		return nil, err
	}
	stream, err := limiterpb.NewAdminClient(conn).RestoreSnapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("restore snapshot: %w", err)
	}
	buf := make([]byte, 1<<20)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if err := stream.Send(&limiterpb.SnapshotChunk{Data: buf[:n]}); err != nil {
				if errors.Is(err, io.EOF) {
					break // the server ended the call: its status is in CloseAndRecv
				}
				return nil, fmt.Errorf("restore snapshot: %w", err)
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("restore snapshot: read: %w", rerr)
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, fmt.Errorf("restore snapshot: %w", err)
	}
	return resp, nil
}
