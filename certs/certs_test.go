package certs

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustPKI(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := Generate(dir, []string{"localhost", "127.0.0.1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	return dir
}

// rotate copies a PKI's node certificate, key and CA into live, each by an atomic rename, as a
// certificate manager would.
func rotate(t *testing.T, from, live string) {
	t.Helper()
	for _, f := range []string{"node.pem", "node-key.pem", "ca.pem"} {
		data, err := os.ReadFile(filepath.Join(from, f))
		if err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(live, f+".tmp")
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(live, f)); err != nil {
			t.Fatal(err)
		}
	}
}

func presented(t *testing.T, r *Reloader) []byte {
	t.Helper()
	cfg, err := r.ServerConfig(tls.NoClientCert).GetConfigForClient(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Certificates[0].Certificate[0]
}

func TestReloader_PicksUpRotatedFilesWithoutARestart(t *testing.T) {
	a, b := mustPKI(t), mustPKI(t)
	live := t.TempDir()
	cp := func(from string) { rotate(t, from, live) }
	cp(a)
	r, err := NewReloader(Files{Cert: filepath.Join(live, "node.pem"), Key: filepath.Join(live, "node-key.pem"), CA: filepath.Join(live, "ca.pem")})
	if err != nil {
		t.Fatal(err)
	}
	r.checkEvery = 10 * time.Millisecond
	first := presented(t, r)
	time.Sleep(20 * time.Millisecond) // let the modification times differ
	cp(b)
	deadline := time.Now().Add(5 * time.Second)
	for string(presented(t, r)) == string(first) {
		if time.Now().After(deadline) {
			t.Fatalf("the rotated certificate was never picked up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A broken rotation keeps the last good material.
	if err := os.WriteFile(filepath.Join(live, "node.pem"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	if cur := presented(t, r); len(cur) == 0 || r.Err() == nil {
		t.Fatalf("a broken rotation: cert %d bytes, err %v; want the old certificate kept and the error reported", len(cur), r.Err())
	}
}

func TestFiles_CertAndKeyGoTogether(t *testing.T) {
	if _, err := NewReloader(Files{Cert: "x.pem"}); err == nil {
		t.Fatalf("a certificate without a key was accepted")
	}
	if _, err := NewReloader(Files{CA: "/nonexistent/ca.pem"}); err == nil {
		t.Fatalf("a missing CA file was accepted")
	}
}

// A failed reload is counted every time it is retried but logged once per kind of failure, the
// expiry of the certificate still serving is reported, and the recovery is logged.
func TestReloader_FailedReloadLoggedOnceCountedAndExpiryReported(t *testing.T) {
	a := mustPKI(t)
	live := t.TempDir()
	rotate(t, a, live)
	r, err := NewReloader(Files{Cert: filepath.Join(live, "node.pem"), Key: filepath.Join(live, "node-key.pem"), CA: filepath.Join(live, "ca.pem")})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	r.SetLogger(slog.New(slog.NewTextHandler(&logs, nil)))
	r.checkEvery = time.Millisecond
	notAfter, failures, err := r.State()
	if err != nil || failures != 0 || time.Until(notAfter) <= 50*time.Minute || time.Until(notAfter) > time.Hour {
		t.Fatalf("state %v %d %v; want the 1-hour certificate's expiry and no failure", notAfter, failures, err)
	}
	time.Sleep(5 * time.Millisecond)
	if err := os.WriteFile(filepath.Join(live, "node.pem"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		time.Sleep(3 * time.Millisecond)
		presented(t, r)
	}
	na2, failures, err := r.State()
	if err == nil || failures < 2 || !na2.Equal(notAfter) {
		t.Fatalf("after a broken rotation: %v %d %v; want the old expiry, the error and every retry counted", na2, failures, err)
	}
	if n := strings.Count(logs.String(), "TLS reload failed"); n != 1 {
		t.Fatalf("the failure was logged %d times, want once:\n%s", n, logs.String())
	}
	time.Sleep(5 * time.Millisecond)
	rotate(t, mustPKI(t), live)
	time.Sleep(5 * time.Millisecond)
	if _, _, err := r.State(); err != nil {
		t.Fatalf("after a good rotation: %v", err)
	}
	if !strings.Contains(logs.String(), "TLS certificate and CA reloaded") {
		t.Fatalf("the recovery was not logged:\n%s", logs.String())
	}
}
