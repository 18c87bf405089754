// Package server exposes a node over gRPC: the data plane (RateLimiter), the admin plane
// (Admin), gRPC health and reflection. It validates requests, forwards calls that need the
// leader, and maps errors to status codes in one place (errors.go).
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/limiterd/limiter/api/limiterpb"
	"github.com/limiterd/limiter/bucket"
	"github.com/limiterd/limiter/certs"
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
	tls    *certs.Reloader // reported in Status; nil without TLS
	health *health.Server
	join   []string // API addresses to ask for membership when this node has none
	limits []LimitDecl
	// limitsDone is set once the declared limits exist.
	limitsDone bool

	dial  []grpc.DialOption
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn // API address -> connection, for forwarding

	stop      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// Options configure a Server.
type Options struct {
	// Join lists API addresses of existing members to ask for membership (any member will do).
	Join []string
	// Limits are created by the leader when they do not exist (a configuration file's limits).
	Limits []LimitDecl
	// DialOptions are used to reach other members (plaintext when empty).
	DialOptions []grpc.DialOption
	Logger      *slog.Logger
	// TLS is the material the member serves, reported in Status (nil without TLS).
	TLS *certs.Reloader
}

// LimitDecl is a limit to create if it does not exist.
type LimitDecl struct {
	fsm.LimitSpec
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
		node: n, log: opts.Logger.With("node", n.ID()), tls: opts.TLS, health: health.NewServer(),
		join: opts.Join, limits: opts.Limits, conns: map[string]*grpc.ClientConn{}, stop: make(chan struct{}),
	}
	return s
}

// Register adds the services (RateLimiter, Admin, health, reflection) to g and starts the
// background work (registration and health updates). Call Close to stop it.
func (s *Server) Register(g *grpc.Server) {
	limiterpb.RegisterRateLimiterServer(g, s)
	limiterpb.RegisterAdminServer(g, s)
	healthpb.RegisterHealthServer(g, s.health)
	reflection.Register(g)
	s.wg.Add(1)
	go s.background()
}

// Close stops background work and closes forwarding connections.
func (s *Server) Close() {
	s.closeOnce.Do(s.close)
}

func (s *Server) close() {
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
// cluster first when asked to), keeps the health status current, and on the leader keeps the
// declared limits in place.
func (s *Server) background() {
	defer s.wg.Done()
	const every = 250 * time.Millisecond
	t := time.NewTicker(every)
	defer t.Stop()
	lastEnforce := time.Time{}
	for {
		s.updateHealth()
		if !s.registered() {
			s.register()
		}
		if s.node.IsLeader() {
			if !s.limitsDone {
				s.limitsDone = s.createMissingLimits()
			} else if time.Since(lastEnforce) >= enforceEvery {
				lastEnforce = time.Now()
				s.enforceDeclaredLimits()
			}
		}
		select {
		case <-s.stop:
			return
		case <-s.node.Done():
			return
		case <-t.C:
		}
	}
}

// enforceEvery is how often the leader puts enforced limits back when they were changed.
const enforceEvery = 2 * time.Second

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

// Serving reports whether this node can serve (node.Health).
func (s *Server) Serving() bool {
	ok, _ := s.node.Health()
	return ok
}

// createMissingLimits makes every declared limit exist (those that exist are left as they are,
// except enforced ones, which are set back to their declaration) and reports whether it could.
func (s *Server) createMissingLimits() bool {
	for _, l := range s.limits {
		if !s.declare(l) {
			return false
		}
	}
	return true
}

// enforceDeclaredLimits sets enforced limits back to their declaration if they changed or are gone.
func (s *Server) enforceDeclaredLimits() {
	for _, l := range s.limits {
		if l.Enforce && !s.declare(l) {
			return
		}
	}
}

// declare creates l if it is missing, or sets it back if it is enforced and differs, and reports
// whether that worked.
func (s *Server) declare(l LimitDecl) bool {
	if info, err := s.node.FSM().Limit(l.Name); err == nil {
		want, err := bucket.NewLimit(l.Rate, l.Period, l.Burst) // applies the burst default
		ttl, _ := l.EffectiveTTL()
		same := err == nil && info.Rate == want.Rate() && info.Period == want.Period() && info.Burst == want.Burst() &&
			info.Admission == l.Admission && info.GrantTTL == ttl
		if !l.Enforce || same {
			return true
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.node.SetLimit(ctx, l.LimitSpec); err != nil {
		s.log.Warn("create declared limit", "limit", l.Name, "err", err)
		return false
	}
	s.log.Info("set declared limit", "limit", l.Name, "rate", l.Rate, "per", l.Period, "burst", l.Burst, "admission", l.Admission)
	return true
}

func (s *Server) updateHealth() {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if s.Serving() {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(limiterpb.RateLimiter_ServiceDesc.ServiceName, st)
	// "liveness" only says the process answers: for probes that restart a stuck member, which
	// must not fire merely because the cluster has lost quorum.
	s.health.SetServingStatus(LivenessService, healthpb.HealthCheckResponse_SERVING)
}

// newRequestID returns a random request ID for calls that came without one.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "srv-" + hex.EncodeToString(b[:])
}
