// Package server exposes a node over gRPC: the data plane (RateLimiter), the admin plane
// (Admin), gRPC health and reflection. It validates requests, forwards calls that need the
// leader, and maps errors to status codes in one place (errors.go).
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/api/limiterpb"
	"github.com/limiterd/limiter/fsm"
	"github.com/limiterd/limiter/node"
)

// LivenessService is the grpc.health.v1 service name that is SERVING whenever the process
// answers (the empty name reports whether the node can serve).
const LivenessService = "liveness"

// DefaultTimeout bounds a call that arrives without a deadline.
const DefaultTimeout = 10 * time.Second

// Server implements the RateLimiter and Admin gRPC services for one node.
type Server struct {
	limiterpb.UnimplementedRateLimiterServer
	limiterpb.UnimplementedAdminServer

	node   *node.Node
	log    *slog.Logger
	health *health.Server
	join   []string // API addresses to ask for membership when this node has none
	limits []LimitDecl
	envoy  *EnvoyService // nil unless configured
	// limitsDone is set once the declared limits exist.
	limitsDone bool

	dial  []grpc.DialOption
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn // API address -> connection, for forwarding

	stop chan struct{}
	wg   sync.WaitGroup
}

// Options configure a Server.
type Options struct {
	// Join lists API addresses of existing members to ask for membership (any member will do).
	Join []string
	// Limits are created by the leader when they do not exist (a configuration file's limits).
	Limits []LimitDecl
	// Envoy, if set, serves envoy.service.ratelimit.v3.RateLimitService with these rules (their
	// limits are created like Limits); EnvoyHeaders adds X-RateLimit-* response headers.
	Envoy        *EnvoyConfig
	EnvoyHeaders bool
	// DialOptions are used to reach other members (plaintext when empty).
	DialOptions []grpc.DialOption
	Logger      *slog.Logger
}

// LimitDecl is a limit to create if it does not exist.
type LimitDecl struct {
	Name  string
	Rate  int64
	Per   time.Duration
	Burst int64
	// Enforce keeps the limit as declared: the leader re-creates it when it is missing (deleted,
	// or a backup without it was restored) and sets it back when it differs. For limits whose
	// declaration is the source of truth (Envoy's configuration); without it a declared limit is
	// only created when missing at startup, and later changes through the API stand.
	Enforce bool
}

// New returns a Server for n.
func New(n *node.Node, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if len(opts.DialOptions) == 0 {
		opts.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	s := &Server{
		dial: append(append([]grpc.DialOption{}, opts.DialOptions...), grpc.WithChainUnaryInterceptor(relayLeader)),
		node: n, log: opts.Logger.With("node", n.ID()), health: health.NewServer(),
		join: opts.Join, limits: opts.Limits, conns: map[string]*grpc.ClientConn{}, stop: make(chan struct{}),
	}
	if opts.Envoy != nil {
		s.envoy = &EnvoyService{s: s, cfg: opts.Envoy, headers: opts.EnvoyHeaders}
		s.limits = append(append([]LimitDecl{}, s.limits...), opts.Envoy.Limits()...)
	}
	return s
}

// Register adds the services (RateLimiter, Admin, health, reflection) to g and starts the
// background work (registration and health updates). Call Close to stop it.
func (s *Server) Register(g *grpc.Server) {
	limiterpb.RegisterRateLimiterServer(g, s)
	limiterpb.RegisterAdminServer(g, s)
	if s.envoy != nil {
		rlsv3.RegisterRateLimitServiceServer(g, s.envoy)
	}
	healthpb.RegisterHealthServer(g, s.health)
	reflection.Register(g)
	s.wg.Add(1)
	go s.background()
}

// Close stops background work and closes forwarding connections.
func (s *Server) Close() {
	select {
	case <-s.stop:
		return
	default:
	}
	close(s.stop)
	s.wg.Wait()
	s.health.Shutdown()
	s.mu.Lock()
	defer s.mu.Unlock()
	for addr, c := range s.conns {
		c.Close()
		delete(s.conns, addr)
	}
}

// background keeps this node's API address registered in the replicated state (joining the
// cluster first when asked to) and keeps the health status current.
func (s *Server) background() {
	defer s.wg.Done()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	ticks := 0
	for {
		s.updateHealth()
		if !s.registered() {
			s.register()
		}
		if s.node.IsLeader() {
			if !s.limitsDone {
				s.limitsDone = s.createDeclaredLimits(true)
			} else if ticks%8 == 0 { // every 2 s: put enforced limits back if they were changed
				s.createDeclaredLimits(false)
			}
		}
		ticks++
		select {
		case <-s.stop:
			return
		case <-s.node.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) registered() bool {
	return s.node.FSM().Members()[s.node.ID()] == s.node.APIAddr()
}

// register asks the leader (directly, or through any join address) to add this node as a voter
// and record its API address. AddVoter is idempotent, so repeating it is harmless.
func (s *Server) register() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := &limiterpb.AddVoterRequest{Id: s.node.ID(), RaftAddress: s.node.RaftAddr(), ApiAddress: s.node.APIAddr()}
	if s.node.IsLeader() {
		if err := s.node.AddVoter(ctx, req.Id, req.RaftAddress, req.ApiAddress); err != nil {
			s.log.Debug("register self", "err", err)
		}
		return
	}
	targets := s.join
	if _, addr := s.node.Leader(); addr != "" {
		targets = append([]string{addr}, targets...)
	}
	for _, addr := range targets {
		if addr == s.node.APIAddr() {
			continue
		}
		conn, err := s.conn(addr)
		if err != nil {
			continue
		}
		if _, err := limiterpb.NewAdminClient(conn).AddVoter(ctx, req); err != nil {
			s.log.Debug("register via member", "addr", addr, "err", err)
			continue
		}
		s.log.Info("registered with the cluster", "via", addr)
		return
	}
}

// maxServingLag is how far behind the commit index a node may have applied and still report
// itself healthy.
const maxServingLag = 1000

// serving reports whether this node can serve: it knows a leader, its state machine is not
// halted, and it has applied nearly everything committed.
func (s *Server) serving() bool {
	id, _ := s.node.Leader()
	if id == "" || s.node.FSM().Stats().Halted != nil {
		return false
	}
	r := s.node.Raft()
	return r.CommitIndex() <= r.AppliedIndex()+maxServingLag
}

// createDeclaredLimits makes the declared limits exist on the leader and reports whether it
// could. On the first pass it creates every missing one; existing limits are left as they are,
// except Enforce ones, which are set back to their declaration. Later passes (first false) look
// at Enforce limits only.
func (s *Server) createDeclaredLimits(first bool) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, l := range s.limits {
		if !first && !l.Enforce {
			continue
		}
		if info, err := s.node.FSM().Limit(l.Name); err == nil {
			burst := l.Burst
			if burst == 0 {
				burst = l.Rate
			}
			if !l.Enforce || (info.Rate == l.Rate && info.Period == l.Per && info.Burst == burst) {
				continue
			}
		}
		resp, err := s.node.Propose(ctx, fsm.Command{Kind: fsm.KindSetLimit, Limit: fsm.LimitSpec{Name: l.Name, Rate: l.Rate, Period: l.Per, Burst: l.Burst}})
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			s.log.Warn("create declared limit", "limit", l.Name, "err", err)
			return false
		}
		s.log.Info("set declared limit", "limit", l.Name, "rate", l.Rate, "per", l.Per, "burst", l.Burst)
	}
	return true
}

func (s *Server) updateHealth() {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if s.serving() {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(limiterpb.RateLimiter_ServiceDesc.ServiceName, st)
	// "liveness" only says the process answers: for probes that restart a stuck member, which
	// must not fire merely because the cluster has lost quorum.
	s.health.SetServingStatus(LivenessService, healthpb.HealthCheckResponse_SERVING)
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

// leaderConn returns a connection to the leader for forwarding, or an Unavailable status when
// the leader is unknown or the request was already forwarded once (no forwarding loops).
func (s *Server) leaderConn(ctx context.Context) (context.Context, *grpc.ClientConn, error) {
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(forwardedHeader)) > 0 {
		return nil, nil, s.unavailable(ctx, node.ErrNotLeader)
	}
	return s.leaderConnAfterHandover(ctx)
}

// leaderConnAfterHandover is leaderConn for a node that led when the request arrived and has just
// handed leadership over (removing itself): it may pass a request on once more, since it was the
// request's destination, not a follower in a loop.
func (s *Server) leaderConnAfterHandover(ctx context.Context) (context.Context, *grpc.ClientConn, error) {
	_, addr := s.node.Leader()
	if addr == "" || addr == s.node.APIAddr() {
		return nil, nil, s.unavailable(ctx, node.ErrNotLeader)
	}
	c, err := s.conn(addr)
	if err != nil {
		return nil, nil, s.unavailable(ctx, node.ErrNotLeader)
	}
	out := metadata.AppendToOutgoingContext(ctx, forwardedHeader, s.node.ID())
	return out, c, nil
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

// newRequestID returns a random request ID for calls that came without one.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "srv-" + hex.EncodeToString(b[:])
}
