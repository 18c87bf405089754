package node

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// The Raft port carries two protocols, told apart by a connection's first byte:
//
//   - 'R' + one length byte + the dialer's cluster ID + 8 bytes of its state machine's parameters
//     (fsm.Config.Fingerprint), then raft's own protocol. A member whose cluster ID differs from
//     ours (a node of another cluster, or a restored disk of one) is refused: a stray node at a
//     reused address must never vote in or append to our history. An empty ID on either side (a
//     node that has not learnt it yet, or a data dir from before cluster IDs) is accepted. A
//     member with other state machine parameters (a different --dedup-memory) is refused too: it
//     would apply the same log to a different state.
//   - 'P' + one JSON request line, answered with one JSON line: discovery (is there state here,
//     which cluster, who leads) and the rejoin of a member that lost its volume (discover.go).
//   - 'G' + the same hello as 'R', then escrow requests from a member to the leader, one JSON
//     line each way per request, many in flight (escrowwire.go). It is refused like 'R'.
//
// A first byte below 8 is raft's own protocol from a member of an older version (raft's RPC type
// bytes are 0-4), accepted as before so a rolling upgrade keeps replicating to upgraded members.
const (
	muxRaft  = 'R'
	muxProbe = 'P'
	muxGrant = 'G'
	// muxHandshakeTimeout bounds the TLS handshake and first bytes of an accepted connection, so a
	// hung or hostile peer holds only its own goroutine.
	muxHandshakeTimeout = 5 * time.Second
)

// errMuxClosed is returned by Accept after Close.
var errMuxClosed = errors.New("raft stream closed")

// muxStream wraps the Raft stream layer (TCP, TLS, or a test's) with the cluster-ID handshake and
// the discovery protocol. Raft connections are refused until raftOn is set: before Raft runs,
// nothing here may vote or take entries.
type muxStream struct {
	inner     raft.StreamLayer
	clusterID atomic.Pointer[string]
	raftOn    atomic.Bool
	fsmPrint  uint64 // fsm.Config.Fingerprint of this node
	probe     func(probeRequest) probeResponse
	escrow    func(net.Conn, *bufio.Reader) // serves one 'G' connection; nil: refused
	log       *slog.Logger
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
	refused   atomic.Uint64 // Raft connections refused for a cluster ID mismatch
	lastWarn  atomic.Int64  // unix nanos of the last mismatch warning (rate limit)

	// Outgoing Raft connections, closed at once when the node stops (stopDialing): a peer that
	// hangs would otherwise hold raft's shutdown for a transport timeout per pending RPC.
	dialMu   sync.Mutex
	dialed   map[*trackedConn]struct{}
	stopping bool
}

// trackedConn is an outgoing Raft connection that leaves the mux's set when closed.
type trackedConn struct {
	net.Conn
	m    *muxStream
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.m.dialMu.Lock()
		delete(c.m.dialed, c)
		c.m.dialMu.Unlock()
	})
	return c.Conn.Close()
}

// stopDialing closes every outgoing Raft connection and refuses new ones: Shutdown calls it
// first, so RPCs blocked on a hung peer fail at once and raft's shutdown does not wait for them.
func (m *muxStream) stopDialing() {
	m.dialMu.Lock()
	m.stopping = true
	conns := make([]*trackedConn, 0, len(m.dialed))
	for c := range m.dialed {
		conns = append(conns, c)
	}
	m.dialMu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

func newMuxStream(inner raft.StreamLayer, clusterID string, fsmPrint uint64, probe func(probeRequest) probeResponse, escrow func(net.Conn, *bufio.Reader), log *slog.Logger) *muxStream {
	m := &muxStream{inner: inner, fsmPrint: fsmPrint, probe: probe, escrow: escrow, log: log, conns: make(chan net.Conn), closed: make(chan struct{})}
	m.setClusterID(clusterID)
	go m.acceptLoop()
	return m
}

func (m *muxStream) setClusterID(id string) { m.clusterID.Store(&id) }
func (m *muxStream) ClusterID() string      { return *m.clusterID.Load() }

func (m *muxStream) acceptLoop() {
	delay := 5 * time.Millisecond
	for {
		c, err := m.inner.Accept()
		if err != nil {
			select {
			case <-m.closed:
				return
			case <-time.After(delay):
			}
			delay = min(2*delay, time.Second)
			continue
		}
		delay = 5 * time.Millisecond
		go m.serve(c)
	}
}

// serve reads an accepted connection's first bytes and routes it.
func (m *muxStream) serve(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(muxHandshakeTimeout))
	br := bufio.NewReader(c)
	first, err := br.Peek(1)
	if err != nil {
		c.Close()
		return
	}
	switch b := first[0]; {
	case b == muxProbe:
		defer c.Close()
		_, _ = br.ReadByte()
		var req probeRequest
		if err := readJSONLine(br, &req); err != nil {
			return
		}
		_ = writeJSONLine(c, m.probe(req))
		return
	case b == muxGrant:
		_, _ = br.ReadByte()
		if !m.acceptHello(c, br) || m.escrow == nil || !m.raftOn.Load() {
			c.Close()
			return
		}
		_ = c.SetDeadline(time.Time{})
		m.escrow(c, br)
		return
	case b == muxRaft:
		_, _ = br.ReadByte()
		if !m.acceptHello(c, br) {
			c.Close()
			return
		}
	case b < 8: // raft's protocol without the handshake: a member of an older version
	default:
		c.Close()
		return
	}
	if !m.raftOn.Load() {
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	select {
	case m.conns <- &bufferedConn{Conn: c, r: br}:
	case <-m.closed:
		c.Close()
	}
}

// acceptHello reads the dialer's cluster ID and state machine fingerprint and reports whether
// they match ours (logging a refusal, at most every 10 s).
func (m *muxStream) acceptHello(c net.Conn, br *bufio.Reader) bool {
	theirs, err := readShortString(br)
	var print [8]byte
	if err == nil {
		_, err = io.ReadFull(br, print[:])
	}
	if err != nil {
		return false
	}
	why := ""
	if ours := m.ClusterID(); ours != "" && theirs != "" && ours != theirs {
		why = fmt.Sprintf("it belongs to cluster %s, this node to %s", theirs, ours)
	} else if p := binary.LittleEndian.Uint64(print[:]); p != m.fsmPrint {
		why = "its state machine parameters differ from this node's (every member needs the same --dedup-memory)"
	}
	if why == "" {
		return true
	}
	m.refused.Add(1)
	if now := time.Now().UnixNano(); now-m.lastWarn.Load() > int64(10*time.Second) {
		m.lastWarn.Store(now)
		m.log.Error("refused a Raft connection", "remote", c.RemoteAddr().String(), "why", why)
	}
	return false
}

// hello is what a dialer sends after the protocol byte: our cluster ID and fingerprint.
func (m *muxStream) hello(proto byte) []byte {
	id := m.ClusterID()
	b := append([]byte{proto, byte(len(id))}, id...)
	return binary.LittleEndian.AppendUint64(b, m.fsmPrint)
}

// Accept returns the next Raft connection (raft's transport calls it).
func (m *muxStream) Accept() (net.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case <-m.closed:
		return nil, errMuxClosed
	}
}

// Close stops accepting and closes the listener.
func (m *muxStream) Close() error {
	var err error
	m.closeOnce.Do(func() {
		close(m.closed)
		err = m.inner.Close()
	})
	return err
}

// Addr is the advertised Raft address.
func (m *muxStream) Addr() net.Addr { return m.inner.Addr() }

// Dial opens a Raft connection and sends the handshake with our cluster ID.
func (m *muxStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	m.dialMu.Lock()
	stopping := m.stopping
	m.dialMu.Unlock()
	if stopping {
		return nil, fmt.Errorf("raft dial %s: %w", addr, ErrShutdown)
	}
	c, err := m.inner.Dial(addr, timeout)
	if err != nil {
		return nil, err
	}
	hello := m.hello(muxRaft)
	_ = c.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := c.Write(hello); err != nil {
		c.Close()
		return nil, fmt.Errorf("raft handshake with %s: %w", addr, err)
	}
	_ = c.SetWriteDeadline(time.Time{})
	tc := &trackedConn{Conn: c, m: m}
	m.dialMu.Lock()
	defer m.dialMu.Unlock()
	if m.stopping {
		c.Close()
		return nil, fmt.Errorf("raft dial %s: %w", addr, ErrShutdown)
	}
	if m.dialed == nil {
		m.dialed = map[*trackedConn]struct{}{}
	}
	m.dialed[tc] = struct{}{}
	return tc, nil
}

// ask sends one discovery request to addr over the Raft port and returns the answer.
func (m *muxStream) ask(addr string, req probeRequest, timeout time.Duration) (probeResponse, error) {
	var resp probeResponse
	c, err := m.inner.Dial(raft.ServerAddress(addr), timeout)
	if err != nil {
		return resp, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte{muxProbe}); err != nil {
		return resp, err
	}
	if err := writeJSONLine(c, req); err != nil {
		return resp, err
	}
	if err := readJSONLine(bufio.NewReader(c), &resp); err != nil {
		return resp, fmt.Errorf("no discovery answer (a member of an older version, or not a limiterd Raft port): %w", err)
	}
	return resp, nil
}

// bufferedConn is a net.Conn whose first bytes were read into r.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func readShortString(r *bufio.Reader) (string, error) {
	n, err := r.ReadByte()
	if err != nil {
		return "", err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

func readJSONLine(r *bufio.Reader, v any) error {
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return fmt.Errorf("discovery message too long")
		}
		return err
	}
	return json.Unmarshal(line, v)
}

func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
