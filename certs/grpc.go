package certs

import (
	"context"
	"errors"
	"net"

	"google.golang.org/grpc/credentials"
)

// ClientCredentials returns gRPC transport credentials that build their TLS configuration at each
// handshake (ClientConfig with the dialled host as server name), so a long-lived connection pool,
// such as a member's connections for forwarding to the leader, verifies servers against the CA
// current at that moment and follows a CA rotation without a restart. (credentials.NewTLS would
// keep the CA it was made with.)
func (r *Reloader) ClientCredentials() credentials.TransportCredentials {
	return &reloadingCreds{r: r, info: credentials.NewTLS(r.ClientConfig("")).Info()}
}

type reloadingCreds struct {
	r        *Reloader
	info     credentials.ProtocolInfo
	override string
}

func (c *reloadingCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	host := c.override
	if host == "" {
		host = authority
		if h, _, err := net.SplitHostPort(authority); err == nil {
			host = h
		}
	}
	return credentials.NewTLS(c.r.ClientConfig(host)).ClientHandshake(ctx, authority, conn)
}

func (c *reloadingCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("certs: ClientCredentials are for clients only")
}

func (c *reloadingCreds) Info() credentials.ProtocolInfo { return c.info }

func (c *reloadingCreds) Clone() credentials.TransportCredentials {
	cp := *c
	return &cp
}

// OverrideServerName is deprecated in gRPC; kept for the interface.
func (c *reloadingCreds) OverrideServerName(name string) error {
	c.override = name
	return nil
}
