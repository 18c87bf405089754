package test

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/client"
	"github.com/limiterd/limiter/member"
	"github.com/limiterd/limiter/server"
)

func TestAuth_AdminCallsNeedAnAdminCertificateOrTheToken(t *testing.T) {
	pki := mustPKI(t)
	node := mustReloader(t, pki, "node")
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	const token = "s3cret-admin-token-0123456789"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := mustStartClusterWith(t, 3, func(ic *member.Config) {
		ic.TLS, ic.ClientAuth = node, tls.VerifyClientCertIfGiven
		ic.Auth = &server.Auth{TokenFile: tokenFile, Admins: []string{"admin"}, Nodes: []string{"limiterd-node"}}
	})
	f := c.members[c.follower()].apiAddr // every call goes through a follower: authorization happens before forwarding
	newClient := func(cert, tok string) *client.Client {
		t.Helper()
		cfg := mustReloader(t, pki, "client").ClientConfig("")
		if cert != "" {
			cfg = mustReloader(t, pki, cert).ClientConfig("")
		} else {
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
		}
		cl, err := client.New([]string{f}, client.Options{RetryFor: 10 * time.Second, TLS: cfg, Token: tok})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	admin := newClient("admin", "")
	mustSetLimit(t, admin, "guarded", 5, time.Hour, 0)

	cases := []struct {
		name string
		cl   *client.Client
		want codes.Code
	}{
		{"no credentials", newClient("", ""), codes.Unauthenticated},
		{"a non-admin certificate", newClient("client", ""), codes.PermissionDenied},
		{"a wrong token", newClient("", "not-the-admin-token-at-all"), codes.PermissionDenied},
		{"the admin token", newClient("", token), codes.OK},
		{"an admin certificate", admin, codes.OK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cl.SetLimit(ctxT(t, 15*time.Second), "guarded", 5, time.Hour, 0)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("set limit: %v, want %v", err, tc.want)
			}
			if err != nil && status.Convert(err).Message() == "" {
				t.Fatalf("refusal without a message")
			}
			// The data plane and Status stay open to anyone the TLS layer lets in.
			if r := mustTake(t, tc.cl, "guarded", tc.name, 1, ""); !r.Allowed {
				t.Fatalf("take: %+v", r.Decision)
			}
			if _, err := tc.cl.Status(ctxT(t, 5*time.Second), f); err != nil {
				t.Fatalf("status: %v", err)
			}
		})
	}
	// Refusals are counted.
	var refused float64
	for _, m := range c.members {
		for name, v := range scrape(t, m.metrics) {
			if name == `limiterd_requests_total{method="SetLimit",result="unauthorized"}` {
				refused += v
			}
		}
	}
	if refused < 3 {
		t.Fatalf("%v unauthorized SetLimit calls counted, want at least 3", refused)
	}
}
