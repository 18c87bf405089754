// Package faultnet is a fault-injecting TCP proxy for tests: one Link per directed network path
// (node to node for Raft, client to node for gRPC), each of which can be cut, slowed, made
// lossy, or made to drop replies (the request arrives, the response is lost). The real
// hashicorp/raft, raft-boltdb and gRPC code runs on both ends.
package faultnet

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// Mode is what a Link does with traffic.
type Mode int

const (
	// Up forwards both ways.
	Up Mode = iota
	// Down refuses new connections and resets existing ones: the path is cut.
	Down
	// DropReplies forwards requests but resets the connection as soon as the far side sends
	// anything back. The far side sees its connection reset, as after a crash of the client.
	DropReplies
	// HoldReplies forwards requests but holds everything the far side sends back until the mode
	// changes, as a network that loses packets one way: the far side notices nothing, the
	// caller times out. Held bytes are delivered if the link heals (TCP would retransmit them).
	HoldReplies
)

func (m Mode) String() string {
	switch m {
	case Up:
		return "up"
	case Down:
		return "down"
	case DropReplies:
		return "drop-replies"
	case HoldReplies:
		return "hold-replies"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// Link proxies connections accepted on its own address to a target address.
type Link struct {
	Name   string
	target string
	ln     net.Listener

	mu    sync.Mutex
	mode  Mode
	delay time.Duration // added before each chunk is forwarded, each way
	loss  float64       // probability that forwarding a chunk resets the connection
	rng   *rand.Rand
	conns map[*pair]struct{}
	done  bool
}

type pair struct{ a, b net.Conn }

func (p *pair) close() {
	p.a.Close()
	p.b.Close()
}

// Listen starts a link on a free loopback port that proxies to target. seed drives its loss.
func Listen(name, target string, seed uint64) (*Link, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultnet: listen for %s: %w", name, err)
	}
	l := &Link{Name: name, target: target, ln: ln, rng: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)), conns: map[*pair]struct{}{}}
	go l.accept()
	return l, nil
}

// Addr is the address to dial to go through the link.
func (l *Link) Addr() string { return l.ln.Addr().String() }

// SetMode changes what the link does; cutting it (Down) resets every open connection.
func (l *Link) SetMode(m Mode) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mode = m
	if m == Down {
		for p := range l.conns {
			p.close()
			delete(l.conns, p)
		}
	}
}

// Mode reports the current mode.
func (l *Link) Mode() Mode {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mode
}

// SetDelay adds d of latency to every chunk forwarded, each way.
func (l *Link) SetDelay(d time.Duration) {
	l.mu.Lock()
	l.delay = d
	l.mu.Unlock()
}

// SetLoss makes forwarding a chunk reset the connection with probability p (TCP does not lose
// bytes silently; a lossy path shows up as stalls and resets).
func (l *Link) SetLoss(p float64) {
	l.mu.Lock()
	l.loss = p
	l.mu.Unlock()
}

// Heal restores the link: up, no delay, no loss.
func (l *Link) Heal() {
	l.mu.Lock()
	l.mode, l.delay, l.loss = Up, 0, 0
	l.mu.Unlock()
}

// Close stops the link and resets its connections.
func (l *Link) Close() error {
	l.mu.Lock()
	l.done = true
	for p := range l.conns {
		p.close()
	}
	l.mu.Unlock()
	return l.ln.Close()
}

func (l *Link) accept() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		go l.serve(c)
	}
}

func (l *Link) serve(c net.Conn) {
	l.mu.Lock()
	if l.mode == Down || l.done {
		l.mu.Unlock()
		c.Close()
		return
	}
	l.mu.Unlock()
	up, err := net.DialTimeout("tcp", l.target, 2*time.Second)
	if err != nil {
		c.Close()
		return
	}
	p := &pair{a: c, b: up}
	l.mu.Lock()
	if l.mode == Down || l.done {
		l.mu.Unlock()
		p.close()
		return
	}
	l.conns[p] = struct{}{}
	l.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.pipe(p, c, up, false) }()
	go func() { defer wg.Done(); l.pipe(p, up, c, true) }()
	wg.Wait()
	l.mu.Lock()
	delete(l.conns, p)
	l.mu.Unlock()
}

// waitWhileHolding blocks while the link holds replies.
func (l *Link) waitWhileHolding() {
	for l.Mode() == HoldReplies {
		time.Sleep(5 * time.Millisecond)
	}
}

// pipe copies src to dst, applying the link's faults to each chunk. reply is true for the
// direction from the target back to the dialer.
func (l *Link) pipe(p *pair, src, dst net.Conn, reply bool) {
	defer p.close()
	buf := make([]byte, 32<<10)
	for {
		if reply {
			l.waitWhileHolding()
		}
		n, err := src.Read(buf)
		if n > 0 {
			l.mu.Lock()
			mode, delay := l.mode, l.delay
			lose := l.loss > 0 && l.rng.Float64() < l.loss
			l.mu.Unlock()
			if mode == Down || lose || (reply && mode == DropReplies) {
				return
			}
			if reply && mode == HoldReplies {
				l.waitWhileHolding()
				if l.Mode() == Down {
					return
				}
			}
			if delay > 0 {
				time.Sleep(delay)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				return
			}
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite() // pass the half-close on
				return
			}
			return
		}
	}
}
