// Package member assembles one limiterd member: the Raft node, the gRPC server in front of it
// (data plane, admin plane, health, reflection, and Envoy's rate limit service when configured),
// TLS, and the HTTP server for metrics, health and pprof. It owns the goroutines that serve them:
// Wait reports a Serve failure, Stop ends them all. cmd/limiterd and the cluster tests start
// members this way.
package member

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/limiterd/limiter/certs"
	"github.com/limiterd/limiter/envoyrls"
	"github.com/limiterd/limiter/node"
	"github.com/limiterd/limiter/server"
)

// Resource bounds of the gRPC server.
const (
	MaxMessageBytes           = 4 << 20
	MaxConcurrentCallsPerConn = 1024
)

// Member is one running limiterd member.
type Member struct {
	Node *node.Node
	srv  *server.Server
	grpc *grpc.Server
	lis  net.Listener
	http *http.Server // metrics; nil when not served

	serving  sync.WaitGroup // the Serve goroutines
	failed   chan struct{}  // closed when a Serve goroutine has failed
	failOnce sync.Once
	errMu    sync.Mutex
	err      error // the first Serve failure
}

// Config is what Start needs.
type Config struct {
	Node node.Config
	// APIListen is the gRPC listen address; Node.APIAddr defaults to the bound address.
	APIListen string
	// Join lists API addresses of members to ask for membership (with Node.Join).
	Join   []string
	Logger *slog.Logger
	// GRPCOptions are extra gRPC server options (interceptors, credentials).
	GRPCOptions []grpc.ServerOption
	// MetricsAddr, if set, serves Prometheus metrics over HTTP at /metrics (and /healthz).
	MetricsAddr string
	// Pprof also serves Go's profiler at /debug/pprof/ on MetricsAddr. Profiles show what the
	// process is doing (and cost CPU while they run), so it is off unless asked for.
	Pprof bool
	// Limits are created by the leader when they do not exist yet.
	Limits []server.LimitDecl
	// Envoy, if set, serves envoy.service.ratelimit.v3.RateLimitService with these rules, whose
	// limits the leader keeps as configured; EnvoyHeaders adds X-RateLimit-* response headers.
	Envoy        *envoyrls.Config
	EnvoyHeaders bool
	// TLS, if set, serves gRPC over TLS and runs Raft over mutual TLS (unless Node.TLS or
	// Node.Stream is set), where Node.PeerNames defaults to Auth.Nodes. ClientAuth says whether
	// gRPC clients must present a certificate.
	TLS        *certs.Reloader
	ClientAuth tls.ClientAuthType
	// Auth, if enabled, guards the admin plane (see server.Auth).
	Auth *server.Auth
}

// Start listens on the API address, starts the Raft node and serves gRPC (and metrics). A new
// member waits in node.Start for its bootstrap peers (see node/discover.go); ctx bounds that wait.
func Start(ctx context.Context, cfg Config) (*Member, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	lis, err := net.Listen("tcp", cfg.APIListen)
	if err != nil {
		return nil, fmt.Errorf("listen for gRPC on %s: %w", cfg.APIListen, err)
	}
	if cfg.Node.APIAddr == "" {
		cfg.Node.APIAddr = advertisedAPIAddr(lis.Addr().(*net.TCPAddr), cfg.Node.RaftAddr)
	}
	if cfg.Node.Logger == nil {
		cfg.Node.Logger = cfg.Logger
	}
	if cfg.TLS != nil && cfg.Node.TLS == nil && cfg.Node.Stream == nil {
		cfg.Node.TLS = cfg.TLS
		if cfg.Auth != nil && cfg.Node.PeerNames == nil {
			cfg.Node.PeerNames = cfg.Auth.Nodes // the members' certificate names (--node-identities)
		}
	}
	var mlis net.Listener
	if cfg.MetricsAddr != "" {
		if mlis, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			lis.Close()
			return nil, fmt.Errorf("listen for metrics on %s: %w", cfg.MetricsAddr, err)
		}
	}
	n, err := node.Start(ctx, cfg.Node)
	if err != nil {
		lis.Close()
		if mlis != nil {
			mlis.Close()
		}
		return nil, err
	}
	metrics := server.NewMetrics(n)
	if cfg.TLS != nil {
		cfg.TLS.SetLogger(cfg.Logger)
		metrics.WatchTLS(cfg.TLS)
	}
	unary := []grpc.UnaryServerInterceptor{metrics.Interceptor()}
	var stream []grpc.StreamServerInterceptor
	if cfg.Auth.Enabled() {
		unary, stream = append(unary, cfg.Auth.UnaryInterceptor()), append(stream, cfg.Auth.StreamInterceptor())
	}
	// Resource bounds: 4 MiB per message (a TakeMany of 1,000 items fits easily) and 1,024
	// concurrent calls per connection; more are queued by HTTP/2 flow control, not failed.
	opts := append([]grpc.ServerOption{grpc.MaxRecvMsgSize(MaxMessageBytes), grpc.MaxConcurrentStreams(MaxConcurrentCallsPerConn),
		grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...)}, cfg.GRPCOptions...)
	limits := cfg.Limits
	if cfg.Envoy != nil {
		for _, l := range cfg.Envoy.Limits() {
			limits = append(limits, server.LimitDecl{LimitSpec: l, Enforce: true})
		}
	}
	sopts := server.Options{Join: cfg.Join, Limits: limits, Logger: cfg.Logger, TLS: cfg.TLS}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS.ServerConfig(cfg.ClientAuth))))
		// Members reach each other's gRPC port (forwarding, joining) with their own certificate.
		sopts.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(cfg.TLS.ClientCredentials())} // follows CA rotation
	}
	if cfg.Auth != nil && cfg.Auth.TokenFile != "" {
		// Members calling each other (joining, registering) present the admin token too.
		if sopts.DialOptions == nil {
			sopts.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
		}
		sopts.DialOptions = append(sopts.DialOptions, grpc.WithPerRPCCredentials(server.BearerToken{Get: cfg.Auth.Token, Secure: cfg.TLS != nil}))
	}
	g := grpc.NewServer(opts...)
	s := server.New(n, sopts)
	s.Register(g)
	if cfg.Envoy != nil {
		rls := envoyrls.NewService(s, cfg.Envoy, cfg.EnvoyHeaders)
		if metrics != nil {
			rls.SetObserver(metrics.Decisions())
		}
		rlsv3.RegisterRateLimitServiceServer(g, rls)
	}
	m := &Member{Node: n, srv: s, grpc: g, lis: lis, failed: make(chan struct{})}
	if mlis != nil {
		if err := server.BridgeRaftMetrics(); err != nil {
			cfg.Logger.Warn("raft metrics not bridged", "err", err)
		}
		m.http = &http.Server{Handler: httpMux(n, metrics, cfg.Pprof), ReadHeaderTimeout: 5 * time.Second}
		m.serve("metrics", func() error {
			if err := m.http.Serve(mlis); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	m.serve("gRPC", func() error {
		if err := g.Serve(lis); !errors.Is(err, grpc.ErrServerStopped) { // stopped before it served
			return err
		}
		return nil
	})
	return m, nil
}

// httpMux serves /metrics, /healthz and, when asked for, /debug/pprof/.
func httpMux(n *node.Node, metrics *server.Metrics, withPprof bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler())
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		ok, why := n.Health()
		if ok {
			fmt.Fprintln(w, "ok")
			return
		}
		http.Error(w, "not serving: "+why, http.StatusServiceUnavailable)
	})
	return mux
}

// serve runs a Serve loop in a goroutine the member owns; a failure is kept for Wait and closes
// Failed.
func (m *Member) serve(what string, run func() error) {
	m.serving.Add(1)
	go func() {
		defer m.serving.Done()
		if err := run(); err != nil {
			m.errMu.Lock()
			if m.err == nil {
				m.err = fmt.Errorf("serve %s: %w", what, err)
			}
			m.errMu.Unlock()
			m.failOnce.Do(func() { close(m.failed) })
		}
	}()
}

// Failed is closed when serving gRPC or metrics failed; Stop the member then and see Wait.
func (m *Member) Failed() <-chan struct{} { return m.failed }

// Wait waits until the member's Serve goroutines have returned (after Stop, or after a failure
// and Stop) and returns the first Serve failure, or nil.
func (m *Member) Wait() error {
	m.serving.Wait()
	m.errMu.Lock()
	defer m.errMu.Unlock()
	return m.err
}

// APIAddr is the address the gRPC server listens on.
func (m *Member) APIAddr() string { return m.lis.Addr().String() }

// Leave hands leadership to another voter if this member leads, so that a planned stop (SIGTERM,
// a rolling restart) costs the cluster a transfer rather than an election timeout. It waits at
// most until ctx ends; stopping anyway afterwards is safe.
func (m *Member) Leave(ctx context.Context) error {
	if err := m.Node.HandOver(ctx); err != nil {
		return fmt.Errorf("hand over leadership before stopping: %w", err)
	}
	return nil
}

// Stop shuts the member down: in-flight calls get up to grace to finish, then Raft stops and
// its stores are closed (the log is fsync'd on every commit, so nothing acknowledged is lost).
func (m *Member) Stop(grace time.Duration) error {
	stopped := make(chan struct{})
	go func() {
		m.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(grace):
		m.grpc.Stop()
	}
	m.srv.Close()
	if m.http != nil {
		m.http.Close()
	}
	if err := m.Node.Shutdown(); err != nil {
		return fmt.Errorf("stop node %s: %w", m.Node.ID(), err)
	}
	m.serving.Wait()
	return nil
}

// advertisedAPIAddr is the API address to record for other nodes and clients when none was
// given: the bound address, or, when bound to a wildcard (0.0.0.0, ::), the Raft address's host
// with the bound port, so forwarding never dials a wildcard.
func advertisedAPIAddr(bound *net.TCPAddr, raftAddr string) string {
	if !bound.IP.IsUnspecified() {
		return bound.String()
	}
	host, _, err := net.SplitHostPort(raftAddr)
	if err != nil || host == "" || net.ParseIP(host).IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, fmt.Sprint(bound.Port))
}
