package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/limiterd/limiter/bucket"
	"github.com/limiterd/limiter/fsm"
)

// Escrow requests travel from a holder to the leader over the Raft port ('G' in mux.go): the
// channel members already trust each other on, refused to nodes of another cluster like Raft
// itself. One connection per leader carries many requests in flight, one JSON line each way.

const (
	maxEscrowOps      = 256     // ops in one request
	maxEscrowLine     = 1 << 20 // bytes in one message
	escrowCallTimeout = 5 * time.Second
)

var errEscrowConn = errors.New("escrow connection to the leader failed")

type escrowRequest struct {
	Seq uint64         `json:"seq"`
	Ops []fsm.EscrowOp `json:"ops"`
}

type escrowReply struct {
	Seq uint64        `json:"seq"`
	Out []wireOutcome `json:"out,omitempty"`
	// Err is why the request as a whole failed; NotLeader marks ErrNotLeader, Retry an error
	// after which nothing was appended.
	Err       string `json:"err,omitempty"`
	NotLeader bool   `json:"not_leader,omitempty"`
}

type wireOutcome struct {
	Granted    int64  `json:"g,omitempty"`
	Expires    int64  `json:"e,omitempty"`
	TTL        int64  `json:"t,omitempty"`
	Remaining  int64  `json:"r,omitempty"`
	Limit      int64  `json:"l,omitempty"`
	RetryAfter int64  `json:"ra,omitempty"`
	Credited   int64  `json:"c,omitempty"`
	Replayed   bool   `json:"rp,omitempty"`
	Err        string `json:"err,omitempty"`
	Code       string `json:"code,omitempty"`
}

// wireErrors are the refusals a holder acts on, by code.
var wireErrors = map[string]error{
	"not_local":     fsm.ErrNotLocal,
	"too_many":      fsm.ErrTooManyGrants,
	"unknown_grant": fsm.ErrUnknownGrant,
	"unknown_limit": fsm.ErrUnknownLimit,
	"invalid":       fsm.ErrInvalidCommand,
	"cost":          bucket.ErrCostExceedsBurst,
	"reused":        fsm.ErrRequestIDReused,
}

func toWire(o fsm.EscrowOutcome) wireOutcome {
	w := wireOutcome{Granted: o.Granted, Expires: o.Expires, TTL: int64(o.TTL), Remaining: o.Result.Remaining,
		Limit: o.Result.Limit, RetryAfter: int64(o.Result.RetryAfter), Credited: o.Credited, Replayed: o.Replayed}
	if o.Err != nil {
		w.Err = o.Err.Error()
		for code, sentinel := range wireErrors {
			if errors.Is(o.Err, sentinel) {
				w.Code = code
				break
			}
		}
	}
	return w
}

func fromWire(w wireOutcome) fsm.EscrowOutcome {
	o := fsm.EscrowOutcome{Granted: w.Granted, Expires: w.Expires, TTL: time.Duration(w.TTL), Credited: w.Credited, Replayed: w.Replayed,
		Result: bucket.Result{Remaining: w.Remaining, Limit: w.Limit, RetryAfter: time.Duration(w.RetryAfter)}}
	if w.Err != "" {
		if s, ok := wireErrors[w.Code]; ok {
			o.Err = fmt.Errorf("%w (at the leader: %s)", s, w.Err)
		} else {
			o.Err = errors.New(w.Err)
		}
	}
	return o
}

// Escrow applies grants and settles through the log, leader only, in the batcher's entries with
// the other members' ops queued meanwhile. The state machine's answer to each op is in its
// outcome; the error is for the request as a whole (not the leader, storage).
func (n *Node) Escrow(ctx context.Context, ops []fsm.EscrowOp) ([]fsm.EscrowOutcome, error) {
	if len(ops) == 0 || len(ops) > maxEscrowOps {
		return nil, fmt.Errorf("%w: %d escrow ops; want 1 to %d", fsm.ErrInvalidCommand, len(ops), maxEscrowOps)
	}
	if !n.IsLeader() {
		return nil, ErrNotLeader
	}
	out := make([]fsm.EscrowOutcome, len(ops))
	errs := make([]error, len(ops))
	var wg sync.WaitGroup
	for i := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], errs[i] = n.escrowBatch.submitEscrow(ctx, ops[i])
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// serveEscrow answers one holder's connection until it closes or this node stops.
func (n *Node) serveEscrow(c net.Conn, br *bufio.Reader) {
	defer c.Close()
	stop := context.AfterFunc(n.ctx, func() { c.Close() })
	defer stop()
	var wmu sync.Mutex
	reply := func(r escrowReply) {
		wmu.Lock()
		defer wmu.Unlock()
		_ = c.SetWriteDeadline(time.Now().Add(escrowCallTimeout))
		if writeJSONLine(c, r) != nil {
			c.Close()
		}
	}
	sc := bufio.NewScanner(br)
	sc.Buffer(make([]byte, 0, 4096), maxEscrowLine)
	var wg sync.WaitGroup
	defer wg.Wait()
	for sc.Scan() {
		var req escrowRequest
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(n.ctx, escrowCallTimeout)
			defer cancel()
			out, err := n.Escrow(ctx, req.Ops)
			r := escrowReply{Seq: req.Seq}
			if err != nil {
				r.Err, r.NotLeader = err.Error(), errors.Is(err, ErrNotLeader)
			}
			for _, o := range out {
				r.Out = append(r.Out, toWire(o))
			}
			reply(r)
		}()
	}
}

// escrowClient is a holder's connection to the leader, redialled when the leader changes.
type escrowClient struct {
	n       *Node
	mu      sync.Mutex
	addr    string
	conn    net.Conn
	seq     uint64
	pending map[uint64]chan escrowReply
}

// call sends ops to the leader at addr and waits for the answer.
func (e *escrowClient) call(ctx context.Context, addr string, ops []fsm.EscrowOp) ([]fsm.EscrowOutcome, error) {
	ch := make(chan escrowReply, 1)
	e.mu.Lock()
	if e.conn != nil && e.addr != addr {
		e.conn.Close() // the leader moved: its reader fails what was pending there
		e.conn = nil
	}
	if e.conn == nil {
		c, err := e.dial(ctx, addr)
		if err != nil {
			e.mu.Unlock()
			return nil, fmt.Errorf("%w: dial %s: %w", errEscrowConn, addr, err)
		}
		e.conn, e.addr, e.pending = c, addr, map[uint64]chan escrowReply{}
		go e.read(c, e.pending)
	}
	e.seq++
	seq, c := e.seq, e.conn
	e.pending[seq] = ch
	_ = c.SetWriteDeadline(time.Now().Add(escrowCallTimeout))
	err := writeJSONLine(c, escrowRequest{Seq: seq, Ops: ops})
	e.mu.Unlock()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%w: %w", errEscrowConn, err)
	}
	select {
	case r, ok := <-ch:
		switch {
		case !ok:
			return nil, fmt.Errorf("%w: connection to %s closed", errEscrowConn, addr)
		case r.NotLeader:
			return nil, ErrNotLeader
		case r.Err != "":
			return nil, fmt.Errorf("leader %s: %s", addr, r.Err)
		case len(r.Out) != len(ops):
			return nil, fmt.Errorf("leader %s answered %d of %d escrow ops", addr, len(r.Out), len(ops))
		}
		out := make([]fsm.EscrowOutcome, len(r.Out))
		for i, w := range r.Out {
			out[i] = fromWire(w)
		}
		return out, nil
	case <-ctx.Done():
		e.mu.Lock()
		delete(e.pending, seq)
		e.mu.Unlock()
		return nil, fmt.Errorf("escrow request to %s: %w", addr, ctx.Err())
	}
}

func (e *escrowClient) dial(ctx context.Context, addr string) (net.Conn, error) {
	timeout := escrowCallTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	c, err := e.n.mux.inner.Dial(raft.ServerAddress(addr), timeout)
	if err != nil {
		return nil, err
	}
	_ = c.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := c.Write(e.n.mux.hello(muxGrant)); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// read dispatches replies until the connection fails, then fails every request still waiting.
func (e *escrowClient) read(c net.Conn, pending map[uint64]chan escrowReply) {
	defer func() {
		c.Close()
		e.mu.Lock()
		for seq, ch := range pending {
			close(ch)
			delete(pending, seq)
		}
		if e.conn == c {
			e.conn = nil
		}
		e.mu.Unlock()
	}()
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 0, 4096), maxEscrowLine)
	for sc.Scan() {
		var r escrowReply
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			return
		}
		e.mu.Lock()
		ch := pending[r.Seq]
		delete(pending, r.Seq)
		e.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

func (e *escrowClient) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.conn != nil {
		e.conn.Close()
		e.conn = nil
	}
}
