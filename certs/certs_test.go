package certs

import (
	"crypto/tls"
	"os"
	"path/filepath"
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
