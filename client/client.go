// Package client is the Go client of limiterd. It takes a list of node addresses, finds the
// leader, follows the leader hints that followers return, and retries calls that failed with
// Unavailable or a per-attempt timeout, with backoff and the same request ID, so a take retried
// across a leader change is applied exactly once.
package client

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/api/limiterpb"
	"github.com/limiterd/limiter/internal/cli"
)

// LeaderHeader is the trailer in which a node names the leader's address.
const LeaderHeader = limiterpb.LeaderHeader

// Never is the RetryAfter of a take whose cost is above the limit's capacity.
const Never = time.Duration(math.MaxInt64)

// Options configure a Client.
type Options struct {
	// RetryFor bounds how long a call keeps retrying (default 30 s). Before it retries, the client
	// asks the cluster for its exactly-once window (2 minutes, or less while the table is full)
	// and stops retrying before that ends, whatever RetryFor says: a retry after the window could
	// be applied again.
	RetryFor time.Duration
	// AttemptTimeout bounds one attempt (default 3 s), so a call to a dead or partitioned node
	// moves on to another.
	AttemptTimeout time.Duration
	// DialOptions replace the default (plaintext) dial options.
	DialOptions []grpc.DialOption
	// TLS, if set (and DialOptions is not), connects over TLS with this configuration.
	TLS *tls.Config
	// Token, if set (and DialOptions is not), is sent as a bearer token with every call (the
	// admin token). It is refused over plaintext unless AllowPlaintextToken is set, and even then
	// it goes in the clear only to loopback addresses (limiterd dev): a call to any other address,
	// such as a leader named in a redirect, fails rather than leak the token.
	Token               string
	AllowPlaintextToken bool
	// AddressMap translates the leader addresses that nodes name in their hints into the
	// addresses this client should dial (for clients behind NAT or a proxy per node).
	AddressMap map[string]string
	// Home is the member that takes on limits in local admission go to (the nearest one: it
	// answers them from its own escrow). Default: the first address given; when it stops
	// answering, the next. A take's retries stay on the member that first got it while it
	// answers, so they are answered from its exactly-once table.
	Home string
}

// Client talks to a limiterd cluster. It is safe for concurrent use.
type Client struct {
	addrs  []string
	opts   Options
	strict []grpc.DialOption // dial options for non-loopback addresses (see Options.Token)

	mu       sync.Mutex
	window   time.Duration // the cluster's exactly-once window as last reported (0: unknown)
	windowAt time.Time     // when it was reported
	conns    map[string]*grpc.ClientConn
	leader   string // the address that last answered as leader or was named as leader
	next     int    // round-robin position when no leader is known
	home     string
	local    map[string]bool // limits known to be in local admission
}

// New returns a client for the nodes at addrs (host:port). It does not connect until used.
func New(addrs []string, opts Options) (*Client, error) {
	clean := cli.SplitList(strings.Join(addrs, ","))
	if len(clean) == 0 {
		return nil, errors.New("client: no node addresses given")
	}
	if opts.RetryFor <= 0 {
		opts.RetryFor = 30 * time.Second
	}
	if opts.AttemptTimeout <= 0 {
		opts.AttemptTimeout = 3 * time.Second
	}
	var strict []grpc.DialOption // for non-loopback addresses when a plaintext token is allowed
	if opts.DialOptions == nil {
		creds := insecure.NewCredentials()
		if opts.TLS != nil {
			creds = credentials.NewTLS(opts.TLS)
		}
		opts.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(creds), grpc.WithConnectParams(reconnect)}
		if opts.Token != "" {
			tok := []byte(opts.Token)
			base := opts.DialOptions
			opts.DialOptions = append(base[:len(base):len(base)], grpc.WithPerRPCCredentials(bearer{tok, opts.TLS != nil || !opts.AllowPlaintextToken}))
			if opts.TLS == nil && opts.AllowPlaintextToken {
				strict = append(base[:len(base):len(base)], grpc.WithPerRPCCredentials(bearer{tok, true}))
			}
		}
	}
	home := opts.Home
	if home == "" {
		home = clean[0]
	}
	return &Client{addrs: clean, opts: opts, strict: strict, conns: map[string]*grpc.ClientConn{}, home: home, local: map[string]bool{}}, nil
}

// reconnect caps gRPC's reconnect backoff at 3 s (its default grows to 120 s), so a client
// notices nodes that come back after a long outage within seconds.
var reconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
	MinConnectTimeout: 5 * time.Second,
}

// Close closes all connections.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for a, conn := range c.conns {
		errs = append(errs, conn.Close())
		delete(c.conns, a)
	}
	return errors.Join(errs...)
}

func (c *Client) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if conn, ok := c.conns[addr]; ok {
		return conn, nil
	}
	dial := c.opts.DialOptions
	if c.strict != nil && !cli.IsLoopback(addr) {
		dial = c.strict // gRPC then refuses to send the token over this plaintext connection
	}
	conn, err := grpc.NewClient(addr, dial...)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", addr, err)
	}
	c.conns[addr] = conn
	return conn, nil
}

// target picks the node for the next attempt: the known leader, else the next in turn.
func (c *Client) target() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leader != "" {
		return c.leader
	}
	a := c.addrs[c.next%len(c.addrs)]
	c.next++
	return a
}

func (c *Client) setLeader(addr string) {
	c.mu.Lock()
	c.leader = addr
	c.mu.Unlock()
}

// translate returns the address to dial for a leader hint ("" for none).
func (c *Client) translate(hint []string) string {
	if len(hint) == 0 || hint[0] == "" {
		return ""
	}
	if a, ok := c.opts.AddressMap[hint[0]]; ok {
		return a
	}
	return hint[0]
}

// retryable reports whether a failed attempt may be repeated: the node could not serve
// (Unavailable), or the attempt ran out of time while the caller's context still has some.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	// Not ResourceExhausted: the server uses it for bounds that do not clear by waiting (too many
	// limits, a message over the size limit), and a retried SetLimit would write the log again.
	return false
}

// learn records a limit's admission mode from an answer.
func (c *Client) learn(limit, admission string) {
	if admission == "" {
		return
	}
	c.mu.Lock()
	c.local[limit] = admission == "local"
	c.mu.Unlock()
}

func (c *Client) isLocal(limits ...string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range limits {
		if !c.local[l] {
			return false
		}
	}
	return true
}

// homeAddr is where takes on local limits go.
func (c *Client) homeAddr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.home
}

// leaveHome moves home to the next address after failed (which did not answer).
func (c *Client) leaveHome(failed string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.home != failed {
		return
	}
	for i, a := range c.addrs {
		if a == failed {
			c.home = c.addrs[(i+1)%len(c.addrs)]
			return
		}
	}
	c.home = c.addrs[0]
}

// callFn is one attempt of a call on a connection.
type callFn func(ctx context.Context, conn *grpc.ClientConn, opts ...grpc.CallOption) error

// callHome runs fn on the home member (takes on local limits). A member that answers keeps the
// call, retries included (an Unavailable that says it has no escrow is an answer); one that does
// not answer loses it, and home, to the next member. A retry there may be charged again: that is
// over-charging, never over-admission.
func (c *Client) callHome(ctx context.Context, fn callFn) error {
	return c.run(ctx, fn, true)
}

// call runs fn against the cluster with leader discovery and retries. fn must be idempotent:
// takes are, because they carry one request ID across every attempt.
func (c *Client) call(ctx context.Context, fn callFn) error { return c.run(ctx, fn, false) }

func (c *Client) run(ctx context.Context, fn callFn, home bool) error {
	start := time.Now()
	deadline := start.Add(c.opts.RetryFor)
	backoff := 5 * time.Millisecond
	var last error
	windowChecked := false
	for attempt := 0; ; attempt++ {
		addr := c.target()
		if home {
			addr = c.homeAddr()
		}
		conn, err := c.conn(addr)
		if err != nil {
			return err
		}
		actx, cancel := context.WithTimeout(ctx, c.opts.AttemptTimeout)
		var trailer metadata.MD
		err = fn(actx, conn, grpc.Trailer(&trailer))
		cancel()
		if err == nil && home {
			return nil
		}
		if err == nil {
			// A follower that forwarded the call names the leader: go there next time.
			if hint := c.translate(trailer.Get(LeaderHeader)); hint != "" {
				addr = hint
			}
			c.setLeader(addr)
			return nil
		}
		last = err
		if !retryable(ctx, err) {
			return err
		}
		if !windowChecked { // about to retry: stay inside the cluster's exactly-once window
			windowChecked = true
			if w := c.exactlyOnceWindow(ctx); w > 0 {
				// A retry sent before the limit lands within one attempt, and the first attempt
				// was recorded no earlier than start.
				if limit := start.Add(w - c.opts.AttemptTimeout - time.Second); limit.Before(deadline) {
					deadline = limit
				}
			}
		}
		if home {
			if !strings.Contains(err.Error(), "no escrow") {
				c.leaveHome(addr)
			}
		} else if hint := c.translate(trailer.Get(LeaderHeader)); hint != "" && hint != addr {
			c.setLeader(hint)
			if attempt < 2*len(c.addrs) {
				continue // a named leader: go there at once
			}
		} else {
			c.setLeader("") // try the next node
		}
		if time.Now().Add(backoff).After(deadline) {
			e := &CallError{Attempts: attempt + 1, Last: last}
			if c.opts.TLS == nil && c.opts.DialOptions != nil && strings.Contains(last.Error(), "server preface") {
				e.Hint = "the node may be serving TLS: give the client its CA"
			}
			return e
		}
		t := time.NewTimer(backoff/2 + mrand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return &CallError{Attempts: attempt + 1, Ctx: ctx.Err(), Last: last}
		case <-t.C:
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// windowTTL is how long the client trusts the exactly-once window a node reported.
const windowTTL = 10 * time.Second

// exactlyOnceWindow returns the cluster's exactly-once window as a node reports it (0 when no
// node answers within a moment), asking at most every windowTTL.
func (c *Client) exactlyOnceWindow(ctx context.Context) time.Duration {
	c.mu.Lock()
	w, at := c.window, c.windowAt
	c.mu.Unlock()
	if w > 0 && time.Since(at) < windowTTL {
		return w
	}
	for _, addr := range c.addrs {
		sctx, cancel := context.WithTimeout(ctx, min(c.opts.AttemptTimeout, 500*time.Millisecond))
		st, err := c.Status(sctx, addr)
		cancel()
		if err != nil || st.GetExactlyOnceWindowNanos() <= 0 {
			continue
		}
		w = time.Duration(st.GetExactlyOnceWindowNanos())
		c.mu.Lock()
		c.window, c.windowAt = w, time.Now()
		c.mu.Unlock()
		return w
	}
	return 0
}

// CallError is a call that ended without an answer: its retry budget (Options.RetryFor) ran
// out, or its context ended between attempts. It keeps the last error a node gave, so callers
// inspect it with errors.Is and errors.As (Unwrap) rather than by its text.
type CallError struct {
	Attempts int
	Ctx      error  // the context's error when it ended first; nil when the budget ran out
	Last     error  // the last error a node gave (nil if none)
	Hint     string // a likely cause worth telling the user, or ""
}

func (e *CallError) Error() string {
	var msg string
	if e.Ctx != nil {
		msg = "client: " + e.Ctx.Error()
		if e.Last != nil {
			msg += " (last error: " + e.Last.Error() + ")"
		}
		return msg
	}
	msg = fmt.Sprintf("client: gave up after %d attempts", e.Attempts)
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	if e.Last != nil {
		msg += ": " + e.Last.Error()
	}
	return msg
}

// Unwrap returns the context's error and the last error.
func (e *CallError) Unwrap() []error {
	var out []error
	for _, err := range []error{e.Ctx, e.Last} {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// GRPCStatus is DeadlineExceeded or Canceled when the context ended, else the last error's status.
func (e *CallError) GRPCStatus() *status.Status {
	if e.Ctx != nil {
		return status.New(status.FromContextError(e.Ctx).Code(), e.Error())
	}
	if st, ok := status.FromError(e.Last); ok && e.Last != nil {
		return st
	}
	return status.New(codes.Unknown, e.Error())
}

// NewRequestID returns a random request ID (128 bits, hex).
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Decision is the answer for one bucket.
type Decision struct {
	Allowed    bool
	Remaining  int64
	Limit      int64
	RetryAfter time.Duration // Never when the cost is above capacity
	ResetAfter time.Duration
}

func fromPB(d *limiterpb.Decision) Decision {
	retry := time.Duration(d.GetRetryAfterNanos())
	if d.GetRetryAfterNanos() < 0 {
		retry = Never
	}
	return Decision{Allowed: d.GetAllowed(), Remaining: d.GetRemaining(), Limit: d.GetLimit(), RetryAfter: retry, ResetAfter: time.Duration(d.GetResetAfterNanos())}
}

// TakeResult is a Take's decision and whether it was a replay of an earlier attempt.
type TakeResult struct {
	Decision
	Replayed  bool
	RequestID string
	// LocalNode is the member that answered from its escrow (a limit in local admission), or ""
	// when the take was decided in the log.
	LocalNode string
}

// Take consumes cost tokens (0 means 1) for key under limit. requestID may be "" for a fresh
// random one; pass your own to make retries of your own across process restarts exactly-once.
func (c *Client) Take(ctx context.Context, limit, key string, cost int64, requestID string) (TakeResult, error) {
	if requestID == "" {
		requestID = NewRequestID()
	}
	req := &limiterpb.TakeRequest{Limit: limit, Key: key, Cost: cost, RequestId: requestID}
	var resp *limiterpb.TakeResponse
	fn := func(ctx context.Context, conn *grpc.ClientConn, o ...grpc.CallOption) (err error) {
		resp, err = limiterpb.NewRateLimiterClient(conn).Take(ctx, req, o...)
		return err
	}
	var err error
	if c.isLocal(limit) {
		err = c.callHome(ctx, fn)
	} else {
		err = c.call(ctx, fn)
	}
	if err != nil {
		return TakeResult{RequestID: requestID}, err
	}
	c.learn(limit, resp.GetAdmission())
	return TakeResult{Decision: fromPB(resp.GetDecision()), Replayed: resp.GetReplayed(), RequestID: requestID, LocalNode: resp.GetLocalNode()}, nil
}

// Item is one take in a TakeMany call.
type Item struct {
	Limit string
	Key   string
	Cost  int64
}

// TakeMany applies several independent takes in one call and one log entry.
func (c *Client) TakeMany(ctx context.Context, items []Item, requestID string) ([]Decision, bool, error) {
	if requestID == "" {
		requestID = NewRequestID()
	}
	req := &limiterpb.TakeManyRequest{RequestId: requestID}
	for _, it := range items {
		req.Items = append(req.Items, &limiterpb.TakeItem{Limit: it.Limit, Key: it.Key, Cost: it.Cost})
	}
	var resp *limiterpb.TakeManyResponse
	fn := func(ctx context.Context, conn *grpc.ClientConn, o ...grpc.CallOption) (err error) {
		resp, err = limiterpb.NewRateLimiterClient(conn).TakeMany(ctx, req, o...)
		return err
	}
	limits := make([]string, len(items))
	for i, it := range items {
		limits[i] = it.Limit
	}
	var err error
	if len(items) > 0 && c.isLocal(limits...) {
		err = c.callHome(ctx, fn)
	} else {
		err = c.call(ctx, fn)
	}
	if err != nil {
		return nil, false, err
	}
	out := make([]Decision, len(resp.GetDecisions()))
	for i, d := range resp.GetDecisions() {
		out[i] = fromPB(d)
	}
	return out, resp.GetReplayed(), nil
}

// Peek reports a bucket's state for a take of cost without consuming anything. With stale, the
// first node reached answers from its local state and staleness says how far it may lag.
func (c *Client) Peek(ctx context.Context, limit, key string, cost int64, stale bool) (Decision, time.Duration, error) {
	req := &limiterpb.PeekRequest{Limit: limit, Key: key, Cost: cost}
	if stale {
		req.Consistency = limiterpb.Consistency_CONSISTENCY_STALE
	}
	var resp *limiterpb.PeekResponse
	err := c.call(ctx, func(ctx context.Context, conn *grpc.ClientConn, o ...grpc.CallOption) (err error) {
		resp, err = limiterpb.NewRateLimiterClient(conn).Peek(ctx, req, o...)
		return err
	})
	if err != nil {
		return Decision{}, 0, err
	}
	return fromPB(resp.GetDecision()), time.Duration(resp.GetStalenessNanos()), nil
}

// bearer sends the admin token with every call.
type bearer struct {
	token  []byte
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b.token)}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.secure }
