package node

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"

	"github.com/limiterd/limiter/certs"
)

// peerAddrs maps server IDs to the addresses to dial them at: by Raft ID, then (for a member
// back under a new identity) by member name; this node's own ID is always listed.
type peerAddrs struct {
	byID map[string]string
	self string
}

func (p *peerAddrs) ServerAddr(id raft.ServerID) (raft.ServerAddress, error) {
	if a, ok := p.byID[string(id)]; ok {
		return raft.ServerAddress(a), nil
	}
	if a, ok := p.byID[MemberName(string(id))]; ok && string(id) != p.self {
		return raft.ServerAddress(a), nil
	}
	return "", fmt.Errorf("no address override for %s", id) // raft then dials the configured address
}

// tcpStream is a plain TCP raft.StreamLayer that advertises the configured address as written
// (a host name stays a host name, so peers re-resolve it when a container or pod comes back with
// a new IP), not the bound address, which may be a wildcard.
type tcpStream struct {
	net.Listener
	advertise net.Addr
}

// advertisedAddr is a net.Addr that keeps the configured host:port text.
type advertisedAddr string

func (a advertisedAddr) Network() string { return "tcp" }
func (a advertisedAddr) String() string  { return string(a) }

func newTCPStream(bind, advertise string) (*tcpStream, error) {
	if bind == "" {
		bind = advertise
	}
	host, port, err := net.SplitHostPort(advertise)
	if err != nil {
		return nil, fmt.Errorf("raft address %s: %w", advertise, err)
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("raft listen on %s: %w", bind, err)
	}
	var adv net.Addr = advertisedAddr(advertise)
	if ip := net.ParseIP(host); port == "0" || host == "" || (ip != nil && ip.IsUnspecified()) {
		adv = ln.Addr() // nothing usable was configured: advertise what was bound
	}
	return &tcpStream{Listener: ln, advertise: adv}, nil
}

func (t *tcpStream) Addr() net.Addr { return t.advertise }

// tlsStream is tcpStream under mutual TLS.
type tlsStream struct {
	*tcpStream
	tls   *certs.Reloader
	names []string // certificate names a peer must carry (see Config.PeerNames)
}

func (t *tlsStream) Accept() (net.Conn, error) {
	c, err := t.tcpStream.Accept()
	if err != nil {
		return nil, err
	}
	return tls.Server(c, t.tls.PeerServerConfig(t.names)), nil
}

func (t *tlsStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(string(addr))
	if err != nil {
		return nil, fmt.Errorf("raft dial %s: %w", addr, err)
	}
	d := &net.Dialer{Timeout: timeout}
	c, err := tls.DialWithDialer(d, "tcp", string(addr), t.tls.PeerClientConfig(host, t.names))
	if err != nil {
		return nil, fmt.Errorf("raft dial %s over TLS: %w", addr, err)
	}
	return c, nil
}

func (t *tcpStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}
