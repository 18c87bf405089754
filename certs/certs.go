// Package certs loads TLS material from files and reloads it when the files change, so
// certificates can be rotated without a restart. The same files serve both sides of mutual TLS:
// a member presents its certificate to clients and peers, and verifies theirs against the CA.
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"
)

// Files names the PEM files: this process's certificate and key, and the CA that signed every
// certificate of the cluster (peers' and, for mutual TLS, clients').
type Files struct {
	Cert string
	Key  string
	CA   string
}

// Enabled reports whether any file is set.
func (f Files) Enabled() bool { return f.Cert != "" || f.Key != "" || f.CA != "" }

// Validate checks that the files that go together are all given.
func (f Files) Validate() error {
	if (f.Cert == "") != (f.Key == "") {
		return errors.New("tls: a certificate and its key go together (give both)")
	}
	return nil
}

// Reloader holds the current certificate and CA pool, re-reading the files at most once per
// checkEvery when their modification times change. A failed reload keeps the previous material
// (and reports the error through Err), so a half-written rotation never takes a node down.
type Reloader struct {
	files      Files
	checkEvery time.Duration

	mu       sync.Mutex
	cert     *tls.Certificate
	pool     *x509.CertPool
	mtimes   [3]time.Time
	checked  time.Time
	err      error
	failures uint64
	log      *slog.Logger // nil: no log lines
}

// SetLogger makes the reloader log each change of outcome once: a rotation picked up, a reload
// that failed (and why: the previous material keeps serving), and recovery after a failure.
func (r *Reloader) SetLogger(l *slog.Logger) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = l
}

// State checks the files for a change first (as a handshake would), then reports the serving
// certificate's expiry (zero without a certificate), how many reloads have failed, and the last
// reload's error (nil when it succeeded).
func (r *Reloader) State() (notAfter time.Time, failures uint64, err error) {
	c, _ := r.current()
	r.mu.Lock()
	defer r.mu.Unlock()
	if c != nil && c.Leaf != nil {
		notAfter = c.Leaf.NotAfter
	}
	return notAfter, r.failures, r.err
}

// NewReloader loads the files once; it fails if they cannot be read or parsed.
func NewReloader(f Files) (*Reloader, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	r := &Reloader{files: f, checkEvery: time.Second}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func mtime(path string) time.Time {
	if path == "" {
		return time.Time{}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

func (r *Reloader) load() error {
	var cert *tls.Certificate
	if r.files.Cert != "" {
		c, err := tls.LoadX509KeyPair(r.files.Cert, r.files.Key)
		if err != nil {
			return fmt.Errorf("tls: load certificate %s and key %s: %w", r.files.Cert, r.files.Key, err)
		}
		cert = &c
	}
	var pool *x509.CertPool
	if r.files.CA != "" {
		pem, err := os.ReadFile(r.files.CA)
		if err != nil {
			return fmt.Errorf("tls: read CA %s: %w", r.files.CA, err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("tls: CA %s holds no PEM certificate", r.files.CA)
		}
	}
	r.cert, r.pool = cert, pool
	r.mtimes = [3]time.Time{mtime(r.files.Cert), mtime(r.files.Key), mtime(r.files.CA)}
	return nil
}

// current returns the material, reloading it first if a file changed.
func (r *Reloader) current() (*tls.Certificate, *x509.CertPool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) >= r.checkEvery {
		r.checked = now
		if m := [3]time.Time{mtime(r.files.Cert), mtime(r.files.Key), mtime(r.files.CA)}; m != r.mtimes {
			prev := r.err
			r.err = r.load() // on error the previous material stays
			r.noteReload(prev, m)
		}
	}
	return r.cert, r.pool
}

// noteReload counts a failed reload and logs each change of outcome once. A failed reload does
// not record the new modification times, so it is retried at every check until the files are
// fixed; only the first failure of each kind is logged.
func (r *Reloader) noteReload(prev error, m [3]time.Time) {
	if r.err != nil {
		r.failures++
		if r.log != nil && (prev == nil || prev.Error() != r.err.Error()) {
			r.log.Error("TLS reload failed: still serving the previous certificate", "err", r.err, "cert", r.files.Cert, "ca", r.files.CA)
		}
		return
	}
	if r.log != nil {
		var notAfter time.Time
		if r.cert != nil && r.cert.Leaf != nil {
			notAfter = r.cert.Leaf.NotAfter
		}
		r.log.Info("TLS certificate and CA reloaded", "cert", r.files.Cert, "not_after", notAfter.UTC().Format(time.RFC3339), "after_failures", prev != nil)
	}
}

// Err is the error of the last reload attempt (nil when it succeeded).
func (r *Reloader) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// ServerConfig is a TLS server configuration that presents the current certificate. With
// clientAuth it verifies client certificates against the current CA.
func (r *Reloader) ServerConfig(clientAuth tls.ClientAuthType) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool := r.current()
			if cert == nil {
				return nil, errors.New("tls: no server certificate configured")
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{*cert},
				ClientCAs:    pool,
				ClientAuth:   clientAuth,
			}, nil
		},
	}
}

// Names returns the names a certificate carries: its common name and DNS names.
func Names(c *x509.Certificate) []string {
	out := []string{}
	if c.Subject.CommonName != "" {
		out = append(out, c.Subject.CommonName)
	}
	return append(out, c.DNSNames...)
}

// RequirePeerName returns a tls.Config.VerifyConnection check that the peer's verified
// certificate carries one of names (nil when names is empty: any certificate the CA signed).
func RequirePeerName(names []string) func(tls.ConnectionState) error {
	if len(names) == 0 {
		return nil
	}
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("tls: the peer presented no certificate")
		}
		for _, n := range Names(cs.PeerCertificates[0]) {
			if slices.Contains(names, n) {
				return nil
			}
		}
		return fmt.Errorf("tls: peer certificate %v is not one of %v", Names(cs.PeerCertificates[0]), names)
	}
}

// PeerServerConfig is ServerConfig for members' mutual TLS: a client certificate is required and
// must carry one of names (any name when names is empty).
func (r *Reloader) PeerServerConfig(names []string) *tls.Config {
	c := r.ServerConfig(tls.RequireAndVerifyClientCert)
	get, verify := c.GetConfigForClient, RequirePeerName(names)
	c.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		inner, err := get(h)
		if inner != nil {
			inner.VerifyConnection = verify
		}
		return inner, err
	}
	return c
}

// PeerClientConfig is ClientConfig for dialing a member: the server's certificate must also
// carry one of names (any name when names is empty).
func (r *Reloader) PeerClientConfig(serverName string, names []string) *tls.Config {
	c := r.ClientConfig(serverName)
	c.VerifyConnection = RequirePeerName(names) // after Go's own checks against the CA
	return c
}

// ClientConfig is a TLS client configuration that verifies servers against the current CA (the
// system roots when none is set) and presents the current certificate when one is set.
func (r *Reloader) ClientConfig(serverName string) *tls.Config {
	_, pool := r.current()
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: serverName,
		RootCAs:    pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _ := r.current()
			if cert == nil {
				return &tls.Certificate{}, nil // no certificate: the server decides
			}
			return cert, nil
		},
	}
}
