package test

import (
	"crypto/tls"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/limiterd/limiter/certs"
	"github.com/limiterd/limiter/client"
	"github.com/limiterd/limiter/member"
)

func mustPKI(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := certs.Generate(dir, []string{"localhost", "127.0.0.1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mustReloader(t *testing.T, dir, name string) *certs.Reloader {
	t.Helper()
	r, err := certs.NewReloader(certs.Files{Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem"), CA: filepath.Join(dir, "ca.pem")})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestTLS_ClusterOverTLSWithMutualTLSBetweenMembers(t *testing.T) {
	pki := mustPKI(t)
	node := mustReloader(t, pki, "node")
	c := mustStartClusterWith(t, 3, func(ic *member.Config) {
		ic.TLS, ic.ClientAuth = node, tls.VerifyClientCertIfGiven
		ic.Node.PeerNames = []string{"limiterd-node"} // what limiterd's --node-identities sets
	})

	// A client that trusts the cluster CA works, through a follower too (members forward over TLS).
	cl, err := client.New([]string{c.members[c.follower()].apiAddr}, client.Options{RetryFor: 20 * time.Second, TLS: mustReloader(t, pki, "client").ClientConfig("")})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	mustSetLimit(t, cl, "secure", 3, time.Hour, 0)
	if r := mustTake(t, cl, "secure", "k", 1, ""); !r.Allowed || r.Remaining != 2 {
		t.Fatalf("take over TLS: %+v", r.Decision)
	}
	// Each member reports the expiry of the certificate it serves (the test PKI's: within a day),
	// in Status and as a metric, and that no reload has failed.
	st, err := cl.Status(ctxT(t, 10*time.Second), c.members[c.follower()].apiAddr)
	if err != nil {
		t.Fatal(err)
	}
	if exp := time.Unix(0, st.GetTlsCertExpiresUnixNanos()); time.Until(exp) <= 0 || time.Until(exp) > 48*time.Hour || st.GetTlsReloadError() != "" {
		t.Fatalf("status: certificate expires %v, reload error %q", exp, st.GetTlsReloadError())
	}
	m := scrape(t, c.members[0].metrics)
	if m[`limiterd_tls_cert_expiry_timestamp_seconds`] < float64(time.Now().Unix()) || m[`limiterd_tls_reload_ok`] != 1 {
		t.Fatalf("TLS metrics: expiry %v, reload ok %v", m[`limiterd_tls_cert_expiry_timestamp_seconds`], m[`limiterd_tls_reload_ok`])
	}

	// A plaintext client fails, and says why.
	plain, err := client.New([]string{c.members[0].apiAddr}, client.Options{RetryFor: time.Second, AttemptTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.Take(ctxT(t, 10*time.Second), "secure", "k", 1, ""); err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("plaintext client against a TLS node: %v, want an error that mentions TLS", err)
	}

	// Raft's port accepts only peers with a certificate from the cluster CA.
	raftAddr := c.members[0].raftAddr
	try := func(cfg *tls.Config) error {
		conn, err := tls.Dial("tcp", raftAddr, cfg)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		if err := conn.Handshake(); err != nil {
			return err
		}
		// TLS 1.3 reports a rejected client certificate on the first read.
		_, err = conn.Read(make([]byte, 1))
		return err
	}
	noCert := node.ClientConfig("127.0.0.1")
	noCert.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
	if err := try(noCert); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("a peer without a certificate reached Raft: %v", err)
	}
	foreign := mustPKI(t) // another CA
	stranger := mustReloader(t, foreign, "node").ClientConfig("127.0.0.1")
	stranger.RootCAs = node.ClientConfig("").RootCAs // it trusts us, but we do not trust it
	if err := try(stranger); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("a peer with a certificate from another CA reached Raft: %v", err)
	}
	// Nor with a client certificate of the same CA that does not name a member: a data-plane or
	// admin client must not be able to append entries or call elections.
	if err := try(mustReloader(t, pki, "client").ClientConfig("127.0.0.1")); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("a data-plane client certificate reached Raft: %v", err)
	}
	if err := try(node.ClientConfig("127.0.0.1")); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("a member's certificate was refused by Raft: %v (want the connection kept open: a timeout)", err)
	}
}

func TestTLS_DataPlaneCanRequireClientCertificates(t *testing.T) {
	pki := mustPKI(t)
	node := mustReloader(t, pki, "node")
	c := mustStartClusterWith(t, 3, func(ic *member.Config) { ic.TLS, ic.ClientAuth = node, tls.RequireAndVerifyClientCert })
	noCert := node.ClientConfig("")
	noCert.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
	anon, err := client.New([]string{c.members[0].apiAddr}, client.Options{RetryFor: time.Second, AttemptTimeout: 500 * time.Millisecond, TLS: noCert})
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if _, _, err := anon.Peek(ctxT(t, 10*time.Second), "x", "k", 1, false); err == nil {
		t.Fatalf("a client without a certificate was served")
	}
	withCert, err := client.New(c.apiAddrs(), client.Options{RetryFor: 20 * time.Second, TLS: mustReloader(t, pki, "client").ClientConfig("")})
	if err != nil {
		t.Fatal(err)
	}
	defer withCert.Close()
	mustSetLimit(t, withCert, "m", 1, time.Hour, 0) // no admin auth configured here: the certificate suffices
	if r := mustTake(t, withCert, "m", "k", 1, ""); !r.Allowed {
		t.Fatalf("take with a client certificate: %+v", r.Decision)
	}
}
