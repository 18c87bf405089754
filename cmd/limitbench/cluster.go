package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/api/limiterpb"
)

// The cluster under test: connections, leader discovery, the limit set up for the run and a
// preflight call.

type cluster struct {
	byAddr     map[string]*grpc.ClientConn // one per given address
	conns      []*grpc.ClientConn          // to the leader, round-robined over workers
	extra      []*grpc.ClientConn          // leader connections not in byAddr, to close
	leaderID   string
	leaderAddr string
	term       uint64
}

// dial opens a plaintext connection to addr and starts connecting at once.
func dial(addr string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	conn.Connect()
	return conn, nil
}

// closeLeaderConns closes the leader connections that are not also discovery connections.
func (c *cluster) closeLeaderConns() {
	for _, conn := range c.extra {
		conn.Close()
	}
	c.extra, c.conns = nil, nil
}

// close closes every connection.
func (c *cluster) close() {
	c.closeLeaderConns()
	for _, conn := range c.byAddr {
		conn.Close()
	}
}

// connect dials every address, finds the leader and opens the leader connections.
func connect(ctx context.Context, cfg *Config) (*cluster, error) {
	c := &cluster{byAddr: map[string]*grpc.ClientConn{}}
	for _, a := range cfg.Addrs {
		conn, err := dial(a)
		if err != nil {
			c.close()
			return nil, err
		}
		c.byAddr[a] = conn
	}
	if err := c.discover(ctx, cfg); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// discover finds the leader with Admin.Status (retrying for up to cfg.LeaderWait while there is
// none, e.g. during an election) and opens cfg.leaderConns() connections to it, reusing the
// discovery connection to its address.
func (c *cluster) discover(ctx context.Context, cfg *Config) error {
	c.closeLeaderConns()
	wait := cfg.LeaderWait
	if wait <= 0 {
		wait = 10 * time.Second
	}
	deadline := time.Now().Add(wait)
	for {
		err := c.findLeader(ctx, cfg.Addrs)
		if err == nil {
			break
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	if cfg.Spread { // the leader's connections first: status and setup go there
		for _, a := range append([]string{c.leaderAddr}, cfg.Addrs...) {
			if conn, ok := c.byAddr[a]; ok && !contains(c.conns, conn) {
				c.conns = append(c.conns, conn)
			}
		}
		return nil
	}
	if conn, ok := c.byAddr[c.leaderAddr]; ok {
		c.conns = append(c.conns, conn)
	}
	for len(c.conns) < cfg.leaderConns() {
		conn, err := dial(c.leaderAddr)
		if err != nil {
			return fmt.Errorf("leader connection: %w", err)
		}
		c.conns = append(c.conns, conn)
		c.extra = append(c.extra, conn)
	}
	return nil
}

func contains(conns []*grpc.ClientConn, c *grpc.ClientConn) bool {
	for _, x := range conns {
		if x == c {
			return true
		}
	}
	return false
}

// status asks the node the data path goes to for its own view.
func (c *cluster) status(ctx context.Context) (*limiterpb.StatusResponse, error) {
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st, err := limiterpb.NewAdminClient(c.conns[0]).Status(sctx, &limiterpb.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("status of %s: %w", c.leaderAddr, err)
	}
	return st, nil
}

// ensureLeader checks that the node the data path goes to is still the leader, and finds the
// new leader (and reconnects) when it is not.
func (c *cluster) ensureLeader(ctx context.Context, cfg *Config) error {
	if st, err := c.status(ctx); err == nil && st.IsLeader() {
		c.leaderID, c.term = st.GetNodeId(), st.GetTerm()
		return nil
	}
	return c.discover(ctx, cfg)
}

// findLeader asks every address for its Status, in parallel. A node that says it is the leader
// wins (and is dialled at the address we were given for it); otherwise the leader address that
// followers report is used.
func (c *cluster) findLeader(ctx context.Context, addrs []string) error {
	type answer struct {
		addr string
		st   *limiterpb.StatusResponse
		err  error
	}
	answers := make([]answer, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			st, err := limiterpb.NewAdminClient(c.byAddr[a]).Status(sctx, &limiterpb.StatusRequest{})
			answers[i] = answer{a, st, err}
		}()
	}
	wg.Wait()
	var problems []string
	for _, an := range answers {
		if an.err == nil && an.st.IsLeader() {
			c.leaderID, c.leaderAddr, c.term = an.st.GetNodeId(), an.addr, an.st.GetTerm()
			return nil
		}
	}
	for _, an := range answers {
		switch {
		case an.err != nil:
			problems = append(problems, fmt.Sprintf("%s: %s", an.addr, status.Convert(an.err).Message()))
		case an.st.GetLeaderApiAddress() != "":
			c.leaderID, c.leaderAddr, c.term = an.st.GetLeaderId(), an.st.GetLeaderApiAddress(), an.st.GetTerm()
			for _, o := range answers { // prefer the given address of the named leader
				if o.err == nil && o.st.GetNodeId() == c.leaderID {
					c.leaderAddr = o.addr
				}
			}
			return nil
		default:
			problems = append(problems, fmt.Sprintf("%s: %s, no leader known", an.addr, an.st.GetState()))
		}
	}
	return fmt.Errorf("find the leader with Admin.Status: %s", strings.Join(problems, "; "))
}

// retryUnavailable runs fn until it succeeds, fails with a code other than Unavailable, or 10 s
// pass: a fresh leader answers Unavailable until an entry of its own term has committed.
func retryUnavailable(ctx context.Context, fn func(ctx context.Context) error) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := fn(cctx)
		cancel()
		if err == nil || status.Code(err) != codes.Unavailable || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// grpcError formats a gRPC error as "message (Code)".
func grpcError(err error) string {
	st := status.Convert(err)
	return fmt.Sprintf("%s (%s)", st.Message(), st.Code())
}

// setLimit creates or sets the benchmark's limit on the leader.
func (c *cluster) setLimit(ctx context.Context, cfg *Config) error {
	req := &limiterpb.SetLimitRequest{Name: cfg.Limit, Rate: cfg.Rate, PeriodNanos: int64(cfg.Per), Burst: cfg.Burst,
		Admission: cfg.Admission, GrantTtlNanos: int64(cfg.GrantTTL)}
	err := retryUnavailable(ctx, func(ctx context.Context) error {
		_, err := limiterpb.NewAdminClient(c.conns[0]).SetLimit(ctx, req)
		return err
	})
	if err != nil {
		return fmt.Errorf("set limit %q to %d per %v (burst %d): %s", cfg.Limit, cfg.Rate, cfg.Per, cfg.Burst, grpcError(err))
	}
	return nil
}

// preflight makes one call of each kind in the mix (and a health check with --baseline), so that
// a missing limit or a cost above the burst is a clear error rather than a run full of errors.
func (c *cluster) preflight(ctx context.Context, cfg *Config) error {
	kinds := []opKind{}
	for _, m := range cfg.Mix {
		kinds = append(kinds, m.Op)
	}
	if cfg.Baseline {
		kinds = append(kinds, opHealth)
	}
	w := newWorker(0, cfg, c.conns[0], nil)
	for _, k := range kinds {
		var out outcome
		err := retryUnavailable(ctx, func(ctx context.Context) error {
			out = w.call(ctx, k)
			if out.notServing { // no leader known right now (an election): retry like Unavailable
				return status.Error(codes.Unavailable, "health check: not serving")
			}
			return out.err
		})
		if err != nil {
			hint := ""
			if status.Code(err) == codes.NotFound && !cfg.Setup {
				hint = " (create the limit, or run without --no-setup)"
			}
			return fmt.Errorf("preflight %s on limit %q at %s: %s%s", k, cfg.Limit, c.leaderAddr, grpcError(err), hint)
		}
	}
	return nil
}

// live holds a worker's running totals for the progress display. Workers add to their own
// (padded, so no two share a cache line); the display sums them.
