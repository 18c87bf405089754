package server

import (
	"context"
	"crypto/subtle"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/certs"
	"github.com/limiterd/limiter/internal/cli"
)

// Auth decides who may call the admin plane (limits, membership, leadership, snapshots): a
// bearer token read from a file (compared in constant time), a client certificate whose common
// name or DNS name is an admin identity, or another member (a certificate with a node identity).
// The data plane, Status and health stay open (require client certificates with
// --tls-client-auth require for the data plane).
type Auth struct {
	TokenFile string   // the admin token, first line of the file; re-read when it changes
	Admins    []string // certificate identities allowed to administer
	Nodes     []string // certificate identities of members

	mu      sync.Mutex
	token   []byte
	mtime   time.Time
	checked time.Time
}

// Enabled reports whether any credential is configured; without one the admin plane is open
// (loopback development only: limiterd refuses a non-loopback listener without TLS).
func (a *Auth) Enabled() bool { return a != nil && (a.TokenFile != "" || len(a.Admins) > 0) }

// Token returns the current token from the file.
func (a *Auth) Token() ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if time.Since(a.checked) < time.Second && a.token != nil {
		return a.token, nil
	}
	a.checked = time.Now()
	fi, err := os.Stat(a.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("admin token file: %w", err)
	}
	if fi.ModTime().Equal(a.mtime) && a.token != nil {
		return a.token, nil
	}
	b, err := os.ReadFile(a.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("admin token file: %w", err)
	}
	tok := []byte(cli.ParseToken(b))
	if len(tok) < 16 {
		return nil, fmt.Errorf("admin token file %s: the token must be at least 16 characters", a.TokenFile)
	}
	a.token, a.mtime = tok, fi.ModTime()
	return tok, nil
}

// adminMethod reports whether a full gRPC method name belongs to the admin plane.
func adminMethod(full string) bool {
	return strings.HasPrefix(full, "/limiter.v1.Admin/") && full != "/limiter.v1.Admin/Status"
}

// authorize checks an admin call.
func (a *Auth) authorize(ctx context.Context) error {
	if ids := peerIdentities(ctx); len(ids) > 0 {
		for _, id := range ids {
			if slices.Contains(a.Admins, id) || slices.Contains(a.Nodes, id) {
				return nil
			}
		}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	auth := md.Get("authorization")
	if len(auth) == 0 {
		if ids := peerIdentities(ctx); len(ids) > 0 {
			return status.Errorf(codes.PermissionDenied, "admin calls need an admin identity; the client certificate names %s", strings.Join(ids, ", "))
		}
		return status.Error(codes.Unauthenticated, "admin calls need a bearer token (authorization: Bearer ...) or an admin client certificate")
	}
	if a.TokenFile == "" {
		return status.Error(codes.PermissionDenied, "admin tokens are not accepted here: use an admin client certificate")
	}
	want, err := a.Token()
	if err != nil {
		return status.Errorf(codes.Unavailable, "cannot check the admin token: %v", err)
	}
	got, ok := strings.CutPrefix(auth[0], "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
		return status.Error(codes.PermissionDenied, "the bearer token is not the admin token")
	}
	return nil
}

// peerIdentities are the common name and DNS names of the verified client certificate.
func peerIdentities(ctx context.Context) []string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil
	}
	c := ti.State.VerifiedChains[0][0]
	return certs.Names(c)
}

// UnaryInterceptor enforces Auth on admin calls.
func (a *Auth) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if a.Enabled() && adminMethod(info.FullMethod) {
			if err := a.authorize(ctx); err != nil {
				return nil, err
			}
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor enforces Auth on admin streams (snapshots).
func (a *Auth) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if a.Enabled() && adminMethod(info.FullMethod) {
			if err := a.authorize(ss.Context()); err != nil {
				return err
			}
		}
		return handler(srv, ss)
	}
}

// BearerToken sends a token with every call (for limitctl, the client, and members calling
// each other when tokens are in use).
type BearerToken struct {
	Get    func() ([]byte, error)
	Secure bool // refuse to send it over a plaintext connection
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b BearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	t, err := b.Get()
	if err != nil {
		return nil, err
	}
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (b BearerToken) RequireTransportSecurity() bool { return b.Secure }
