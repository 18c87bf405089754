package certs

import (
	"context"
	"crypto/tls"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// TestClientCredentials_FollowACARotation: one credentials value, as a member keeps for its
// forwarding connections, verifies a server of the new CA after the files were rotated.
func TestClientCredentials_FollowACARotation(t *testing.T) {
	a, b := mustPKI(t), mustPKI(t)
	live := t.TempDir()
	cp := func(from string) { rotate(t, from, live) }
	cp(a)
	client, err := NewReloader(Files{Cert: filepath.Join(live, "node.pem"), Key: filepath.Join(live, "node-key.pem"), CA: filepath.Join(live, "ca.pem")})
	if err != nil {
		t.Fatal(err)
	}
	client.checkEvery = 10 * time.Millisecond
	creds := client.ClientCredentials()
	handshake := func(serverPKI string) error {
		srv, err := NewReloader(Files{Cert: filepath.Join(serverPKI, "node.pem"), Key: filepath.Join(serverPKI, "node-key.pem"), CA: filepath.Join(serverPKI, "ca.pem")})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			cfg := srv.ServerConfig(tls.NoClientCert)
			get := cfg.GetConfigForClient
			cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
				inner, err := get(h)
				if inner != nil {
					inner.NextProtos = []string{"h2"} // as a gRPC server negotiates
				}
				return inner, err
			}
			_ = tls.Server(c, cfg).Handshake()
		}()
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _, err = creds.ClientHandshake(ctx, ln.Addr().String(), conn)
		return err
	}
	if err := handshake(a); err != nil {
		t.Fatalf("handshake with a server of the current CA: %v", err)
	}
	if err := handshake(b); err == nil {
		t.Fatal("a server of another CA was trusted")
	}
	time.Sleep(20 * time.Millisecond) // let the modification times differ
	cp(b)
	time.Sleep(30 * time.Millisecond)
	if err := handshake(b); err != nil {
		t.Fatalf("handshake with a server of the rotated-in CA, same credentials: %v", err)
	}
}
