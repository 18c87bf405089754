package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/limiterd/limiter/certs"

	"github.com/limiterd/limiter/node"
)

// Resource bounds of the gRPC server.
const (
	MaxMessageBytes           = 4 << 20
	MaxConcurrentCallsPerConn = 1024
)

// Instance is one running limiterd member: a Raft node and the gRPC server in front of it.
// cmd/limiterd and the cluster tests start members this way.
type Instance struct {
	Node    *node.Node
	Server  *Server
	GRPC    *grpc.Server
	Metrics *Metrics
	lis     net.Listener
	http    *http.Server // metrics; nil when not served
	done    chan error
}

// InstanceConfig is what StartInstance needs.
type InstanceConfig struct {
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
	Limits []LimitDecl
	// Envoy and EnvoyHeaders configure the Envoy rate limit service (see Options).
	Envoy        *EnvoyConfig
	EnvoyHeaders bool
	// TLS, if set, serves gRPC over TLS (and Raft over mutual TLS, with Node.PeerNames defaulting
	// to Auth.Nodes when Auth is set, unless Node.TLS is set
	// otherwise); ClientAuth says whether gRPC clients must present a certificate.
	TLS        *certs.Reloader
	ClientAuth tls.ClientAuthType
	// Auth, if enabled, guards the admin plane (see Auth).
	Auth *Auth
}

// StartInstance listens on the API address, starts the Raft node and serves gRPC. A new member
// waits in node.Start for its bootstrap peers (see node/discover.go); ctx bounds that wait.
func StartInstance(ctx context.Context, cfg InstanceConfig) (*Instance, error) {
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
	n, err := node.Start(ctx, cfg.Node)
	if err != nil {
		lis.Close()
		return nil, err
	}
	m := NewMetrics(n)
	unary := []grpc.UnaryServerInterceptor{m.Interceptor()}
	var stream []grpc.StreamServerInterceptor
	if cfg.Auth.Enabled() {
		unary, stream = append(unary, cfg.Auth.UnaryInterceptor()), append(stream, cfg.Auth.StreamInterceptor())
	}
	// Resource bounds: 4 MiB per message (a TakeMany of 1,000 items fits easily) and 1,024
	// concurrent calls per connection; more are queued by HTTP/2 flow control, not failed.
	opts := append([]grpc.ServerOption{grpc.MaxRecvMsgSize(MaxMessageBytes), grpc.MaxConcurrentStreams(MaxConcurrentCallsPerConn),
		grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...)}, cfg.GRPCOptions...)
	sopts := Options{Join: cfg.Join, Limits: cfg.Limits, Envoy: cfg.Envoy, EnvoyHeaders: cfg.EnvoyHeaders, Logger: cfg.Logger}
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
		sopts.DialOptions = append(sopts.DialOptions, grpc.WithPerRPCCredentials(BearerToken{Get: cfg.Auth.Token, Secure: cfg.TLS != nil}))
	}
	g := grpc.NewServer(opts...)
	s := New(n, sopts)
	s.Register(g)
	in := &Instance{Node: n, Server: s, GRPC: g, Metrics: m, lis: lis, done: make(chan error, 1)}
	if cfg.MetricsAddr != "" {
		mlis, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			s.Close()
			n.Shutdown()
			lis.Close()
			return nil, fmt.Errorf("listen for metrics on %s: %w", cfg.MetricsAddr, err)
		}
		if err := BridgeRaftMetrics(); err != nil {
			cfg.Logger.Warn("raft metrics not bridged", "err", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", m.Handler())
		if cfg.Pprof {
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
			if s.serving() {
				fmt.Fprintln(w, "ok")
				return
			}
			http.Error(w, "not serving: no leader known, halted, or behind the commit index", http.StatusServiceUnavailable)
		})
		in.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go in.http.Serve(mlis)
	}
	go func() { in.done <- g.Serve(lis) }()
	return in, nil
}

// APIAddr is the address the gRPC server listens on.
func (in *Instance) APIAddr() string { return in.lis.Addr().String() }

// Leave hands leadership to another voter if this member leads, so that a planned stop (SIGTERM,
// a rolling restart) costs the cluster a transfer rather than an election timeout. It waits at
// most until ctx ends; stopping anyway afterwards is safe.
func (in *Instance) Leave(ctx context.Context) error {
	if !in.Node.IsLeader() {
		return nil
	}
	if err := in.Node.TransferLeadership(ctx, ""); err != nil {
		return fmt.Errorf("hand over leadership before stopping: %w", err)
	}
	return nil
}

// Stop shuts the member down: in-flight calls get up to grace to finish, then Raft stops and
// its stores are closed (the log is fsync'd on every commit, so nothing acknowledged is lost).
func (in *Instance) Stop(grace time.Duration) error {
	stopped := make(chan struct{})
	go func() {
		in.GRPC.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(grace):
		in.GRPC.Stop()
	}
	in.Server.Close()
	if in.http != nil {
		in.http.Close()
	}
	if err := in.Node.Shutdown(); err != nil {
		return fmt.Errorf("stop node %s: %w", in.Node.ID(), err)
	}
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
