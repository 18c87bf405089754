package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/api/limiterpb"
)

// opKind is one kind of call that a worker makes.
type opKind int

// The kinds of call. opHealth is the no-op of the baseline run.
const (
	opTake opKind = iota
	opTakeMany
	opPeek
	opHealth
	numOps
)

// opNames are the names of the kinds of call, as used in --mix and in reports.
var opNames = [numOps]string{"take", "takemany", "peek", "health"}

// String returns the op's name.
func (k opKind) String() string { return opNames[k] }

// numCodes is the number of gRPC status codes (OK through Unauthenticated).
const numCodes = int(codes.Unauthenticated) + 1

// errNotServing is the error slot of a health check that answered other than SERVING.
const errNotServing = numCodes

// errSlots is the number of error counters: one per gRPC code, and one for NOT_SERVING.
const errSlots = numCodes + 1

// errSlotName returns the name under which errors of slot i are reported.
func errSlotName(i int) string {
	if i == errNotServing {
		return "NotServing"
	}
	return codes.Code(i).String()
}

// Config is everything a run needs; main.go builds it from the flags and validates it.
type Config struct {
	Addrs          []string      // node API addresses
	Concurrency    int           // callers
	Conns          int           // connections to the leader; 0 picks min(4, max(1, Concurrency/16))
	Keys           int           // distinct keys, chosen uniformly at random
	Limit          string        // the limit that takes and peeks use
	Setup          bool          // create or set the limit first
	Rate           int64         // with Setup: tokens per Per
	Per            time.Duration // with Setup: the refill period
	Burst          int64         // with Setup: the capacity (0 = Rate)
	Cost           int64         // tokens per take, per TakeMany item and per peek
	Mix            Mix           // the weighted kinds of call
	Batch          int           // items per TakeMany
	Duration       time.Duration // measured time (unless Requests > 0)
	Requests       int64         // measured requests; 0 means run for Duration
	RateLimit      float64       // offered requests per second (open loop); 0 = closed loop
	Warmup         time.Duration // run before measuring, not counted
	Baseline       bool          // also run the Health/Check baseline first
	Stale          bool          // peeks with stale consistency
	RequestTimeout time.Duration // deadline of each call
	Seed           uint64        // seeds key and op choice
	LeaderWait     time.Duration // how long to look for a leader; 0 means 10 s

	// Progress receives the progress display (nil: none); ProgressTTY redraws one line in place.
	Progress    io.Writer
	ProgressTTY bool
}

// leaderConns returns the number of connections to open to the leader.
func (c *Config) leaderConns() int {
	if c.Conns > 0 {
		return min(c.Conns, c.Concurrency)
	}
	return min(4, max(1, c.Concurrency/16))
}

// openLoop reports whether requests are sent on a fixed schedule (--rate-limit).
func (c *Config) openLoop() bool { return c.RateLimit > 0 }

// Result is the outcome of a run: the main phase and, with --baseline, the baseline phase.
type Result struct {
	Config   Config
	Leader   LeaderInfo
	Main     *Phase
	Baseline *Phase // nil without --baseline
}

// LeaderInfo describes the leader that the main phase's calls went to.
type LeaderInfo struct {
	ID          string
	Address     string // the address dialled
	Term        uint64
	Connections int
}

// Window is one second of the measured run, by intended send time.
type Window struct {
	Index  int   // seconds since the measured run began
	Ops    int64 // calls sent in the window (errors included)
	Errors int64
	P50    time.Duration
	P99    time.Duration
	Max    time.Duration
}

// Phase is the measured outcome of one phase (the main run or the baseline).
type Phase struct {
	Name        string // "main" or "baseline"
	Mix         Mix    // what was sent
	Elapsed     time.Duration
	Offered     float64 // offered requests/s in open loop, else 0
	Interrupted bool    // stopped early (Ctrl-C)

	// The leader when the phase began, and the view of the node called once it was over
	// (AfterErr when that failed). A different leader or term means an election happened
	// during the phase: calls after it were forwarded or failed.
	LeaderID    string
	Term        uint64
	LeaderAfter string
	TermAfter   uint64
	AfterErr    string

	Ops       [numOps]int64
	OpErrors  [numOps]int64
	Decisions [numOps]int64 // successful calls' decisions: a TakeMany of N counts N
	Allowed   int64
	Denied    int64
	Replayed  int64 // takes answered as replays (fresh IDs should give none)
	Errors    [errSlots]int64
	ErrorText [errSlots]string // the first error message seen per code
	Hist      [numOps]*Hist    // latency per kind of call, errors included
	Timeline  []Window
}

// LeaderChanged reports whether an election happened during the phase.
func (p *Phase) LeaderChanged() bool {
	return p.AfterErr == "" && p.LeaderAfter != "" && (p.LeaderAfter != p.LeaderID || p.TermAfter != p.Term)
}

// TotalOps returns the number of measured calls.
func (p *Phase) TotalOps() int64 { return sum(p.Ops[:]) }

// TotalDecisions returns the number of decisions in successful calls.
func (p *Phase) TotalDecisions() int64 { return sum(p.Decisions[:]) }

// TotalErrors returns the number of failed calls.
func (p *Phase) TotalErrors() int64 { return sum(p.Errors[:]) }

// AllHist returns the latency histogram of every kind of call together.
func (p *Phase) AllHist() *Hist {
	h := NewHist()
	for _, k := range p.Hist {
		h.Merge(k)
	}
	return h
}

// perSecond returns n per second of the phase's elapsed time.
func (p *Phase) perSecond(n int64) float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(n) / p.Elapsed.Seconds()
}

// sum adds up xs.
func sum(xs []int64) int64 {
	var t int64
	for _, x := range xs {
		t += x
	}
	return t
}

// run connects to the cluster, discovers the leader, sets up the limit, runs the baseline
// (with Config.Baseline) and then the main phase. Before each phase it checks that the node it
// sends to is still the leader (finding the new one if not), and after each phase it asks again,
// so that a leadership change during a phase is reported.
func run(ctx context.Context, cfg Config) (*Result, error) {
	cl, err := connect(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	defer cl.close()
	res := &Result{Config: cfg}
	if cfg.Setup {
		if err := cl.setLimit(ctx, &cfg); err != nil {
			return nil, err
		}
	}
	if err := cl.preflight(ctx, &cfg); err != nil {
		return nil, err
	}
	if cfg.Baseline {
		if err := cl.ensureLeader(ctx, &cfg); err != nil {
			return nil, err
		}
		res.Baseline, err = runPhase(ctx, &cfg, cl, "baseline", Mix{{Op: opHealth, Weight: 1}})
		if err != nil {
			return nil, err
		}
		if res.Baseline.Interrupted {
			return res, nil
		}
	}
	if err := cl.ensureLeader(ctx, &cfg); err != nil {
		return nil, err
	}
	res.Leader = LeaderInfo{ID: cl.leaderID, Address: cl.leaderAddr, Term: cl.term, Connections: len(cl.conns)}
	res.Main, err = runPhase(ctx, &cfg, cl, "main", cfg.Mix)
	if err != nil {
		return nil, err
	}
	return res, nil
}

// cluster holds the connections: one per given address for discovery and setup, and a few to
// the leader for the data path.
type cluster struct {
	byAddr     map[string]*grpc.ClientConn // one per given address
	conns      []*grpc.ClientConn          // to the leader, round-robined over workers
	extra      []*grpc.ClientConn          // leader connections not in byAddr, to close
	leaderID   string
	leaderAddr string
	term       uint64
}

// dial opens a plaintext connection to addr and starts connecting at once.
func dial(addr string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	conn.Connect()
	return conn, nil
}

// closeLeaderConns closes the leader connections that are not also discovery connections.
func (c *cluster) closeLeaderConns() {
	for _, conn := range c.extra {
		conn.Close()
	}
	c.extra, c.conns = nil, nil
}

// close closes every connection.
func (c *cluster) close() {
	c.closeLeaderConns()
	for _, conn := range c.byAddr {
		conn.Close()
	}
}

// connect dials every address, finds the leader and opens the leader connections.
func connect(ctx context.Context, cfg *Config) (*cluster, error) {
	c := &cluster{byAddr: map[string]*grpc.ClientConn{}}
	for _, a := range cfg.Addrs {
		conn, err := dial(a)
		if err != nil {
			c.close()
			return nil, err
		}
		c.byAddr[a] = conn
	}
	if err := c.discover(ctx, cfg); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// discover finds the leader with Admin.Status (retrying for up to cfg.LeaderWait while there is
// none, e.g. during an election) and opens cfg.leaderConns() connections to it, reusing the
// discovery connection to its address.
func (c *cluster) discover(ctx context.Context, cfg *Config) error {
	c.closeLeaderConns()
	wait := cfg.LeaderWait
	if wait <= 0 {
		wait = 10 * time.Second
	}
	deadline := time.Now().Add(wait)
	for {
		err := c.findLeader(ctx, cfg.Addrs)
		if err == nil {
			break
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	if conn, ok := c.byAddr[c.leaderAddr]; ok {
		c.conns = append(c.conns, conn)
	}
	for len(c.conns) < cfg.leaderConns() {
		conn, err := dial(c.leaderAddr)
		if err != nil {
			return fmt.Errorf("leader connection: %w", err)
		}
		c.conns = append(c.conns, conn)
		c.extra = append(c.extra, conn)
	}
	return nil
}

// status asks the node the data path goes to for its own view.
func (c *cluster) status(ctx context.Context) (*limiterpb.StatusResponse, error) {
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st, err := limiterpb.NewAdminClient(c.conns[0]).Status(sctx, &limiterpb.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("status of %s: %w", c.leaderAddr, err)
	}
	return st, nil
}

// ensureLeader checks that the node the data path goes to is still the leader, and finds the
// new leader (and reconnects) when it is not.
func (c *cluster) ensureLeader(ctx context.Context, cfg *Config) error {
	if st, err := c.status(ctx); err == nil && st.IsLeader() {
		c.leaderID, c.term = st.GetNodeId(), st.GetTerm()
		return nil
	}
	return c.discover(ctx, cfg)
}

// findLeader asks every address for its Status, in parallel. A node that says it is the leader
// wins (and is dialled at the address we were given for it); otherwise the leader address that
// followers report is used.
func (c *cluster) findLeader(ctx context.Context, addrs []string) error {
	type answer struct {
		addr string
		st   *limiterpb.StatusResponse
		err  error
	}
	answers := make([]answer, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			st, err := limiterpb.NewAdminClient(c.byAddr[a]).Status(sctx, &limiterpb.StatusRequest{})
			answers[i] = answer{a, st, err}
		}()
	}
	wg.Wait()
	var problems []string
	for _, an := range answers {
		if an.err == nil && an.st.IsLeader() {
			c.leaderID, c.leaderAddr, c.term = an.st.GetNodeId(), an.addr, an.st.GetTerm()
			return nil
		}
	}
	for _, an := range answers {
		switch {
		case an.err != nil:
			problems = append(problems, fmt.Sprintf("%s: %s", an.addr, status.Convert(an.err).Message()))
		case an.st.GetLeaderApiAddress() != "":
			c.leaderID, c.leaderAddr, c.term = an.st.GetLeaderId(), an.st.GetLeaderApiAddress(), an.st.GetTerm()
			for _, o := range answers { // prefer the given address of the named leader
				if o.err == nil && o.st.GetNodeId() == c.leaderID {
					c.leaderAddr = o.addr
				}
			}
			return nil
		default:
			problems = append(problems, fmt.Sprintf("%s: %s, no leader known", an.addr, an.st.GetState()))
		}
	}
	return fmt.Errorf("find the leader with Admin.Status: %s", strings.Join(problems, "; "))
}

// retryUnavailable runs fn until it succeeds, fails with a code other than Unavailable, or 10 s
// pass: a fresh leader answers Unavailable until an entry of its own term has committed.
func retryUnavailable(ctx context.Context, fn func(ctx context.Context) error) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := fn(cctx)
		cancel()
		if err == nil || status.Code(err) != codes.Unavailable || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// grpcError formats a gRPC error as "message (Code)".
func grpcError(err error) string {
	st := status.Convert(err)
	return fmt.Sprintf("%s (%s)", st.Message(), st.Code())
}

// setLimit creates or sets the benchmark's limit on the leader.
func (c *cluster) setLimit(ctx context.Context, cfg *Config) error {
	req := &limiterpb.SetLimitRequest{Name: cfg.Limit, Rate: cfg.Rate, PeriodNanos: int64(cfg.Per), Burst: cfg.Burst}
	err := retryUnavailable(ctx, func(ctx context.Context) error {
		_, err := limiterpb.NewAdminClient(c.conns[0]).SetLimit(ctx, req)
		return err
	})
	if err != nil {
		return fmt.Errorf("set limit %q to %d per %v (burst %d): %s", cfg.Limit, cfg.Rate, cfg.Per, cfg.Burst, grpcError(err))
	}
	return nil
}

// preflight makes one call of each kind in the mix (and a health check with --baseline), so that
// a missing limit or a cost above the burst is a clear error rather than a run full of errors.
func (c *cluster) preflight(ctx context.Context, cfg *Config) error {
	kinds := []opKind{}
	for _, m := range cfg.Mix {
		kinds = append(kinds, m.Op)
	}
	if cfg.Baseline {
		kinds = append(kinds, opHealth)
	}
	w := newWorker(0, cfg, c.conns[0], nil)
	for _, k := range kinds {
		var out outcome
		err := retryUnavailable(ctx, func(ctx context.Context) error {
			out = w.call(ctx, k)
			if out.notServing { // no leader known right now (an election): retry like Unavailable
				return status.Error(codes.Unavailable, "health check: not serving")
			}
			return out.err
		})
		if err != nil {
			hint := ""
			if status.Code(err) == codes.NotFound && !cfg.Setup {
				hint = " (create the limit, or run without --no-setup)"
			}
			return fmt.Errorf("preflight %s on limit %q at %s: %s%s", k, cfg.Limit, c.leaderAddr, grpcError(err), hint)
		}
	}
	return nil
}

// live holds a worker's running totals for the progress display. Workers add to their own
// (padded, so no two share a cache line); the display sums them.
type live struct {
	ops  atomic.Int64
	errs atomic.Int64
	_    [48]byte
}

// worker is one caller: it makes calls on one connection, one at a time, and records them into
// its own statistics, so the hot path takes no locks.
type worker struct {
	id    int
	cfg   *Config
	mix   Mix
	rl    limiterpb.RateLimiterClient
	hc    healthpb.HealthClient
	rng   *mrand.Rand    // key and op choice, from --seed
	idRng *mrand.ChaCha8 // request IDs, from crypto/rand, so reruns with one seed do not replay
	live  *live

	// Reused request messages (gRPC has serialised them once a call returns).
	take   *limiterpb.TakeRequest
	many   *limiterpb.TakeManyRequest
	peek   *limiterpb.PeekRequest
	health *healthpb.HealthCheckRequest

	st workerStats
}

// workerStats is what one worker measured.
type workerStats struct {
	ops       [numOps]int64
	opErrs    [numOps]int64
	decisions [numOps]int64
	allowed   int64
	denied    int64
	replayed  int64
	errs      [errSlots]int64
	errText   [errSlots]string
	hist      [numOps]*Hist
	lastEnd   time.Time // completion of the last measured call

	win     *Hist // the current one-second window
	winIdx  int
	winOps  int64
	winErrs int64
}

// newWorker returns worker id, calling over conn; l (may be nil) receives its live totals.
func newWorker(id int, cfg *Config, conn *grpc.ClientConn, l *live) *worker {
	var seed [32]byte
	_, _ = rand.Read(seed[:])
	if l == nil {
		l = &live{}
	}
	w := &worker{
		id: id, cfg: cfg, mix: cfg.Mix, live: l,
		rl:     limiterpb.NewRateLimiterClient(conn),
		hc:     healthpb.NewHealthClient(conn),
		rng:    newWorkerRand(cfg.Seed, id),
		idRng:  mrand.NewChaCha8(seed),
		take:   &limiterpb.TakeRequest{Limit: cfg.Limit, Cost: cfg.Cost},
		many:   &limiterpb.TakeManyRequest{},
		peek:   &limiterpb.PeekRequest{Limit: cfg.Limit, Cost: cfg.Cost},
		health: &healthpb.HealthCheckRequest{},
	}
	if cfg.Stale {
		w.peek.Consistency = limiterpb.Consistency_CONSISTENCY_STALE
	}
	for i := 0; i < cfg.Batch; i++ {
		w.many.Items = append(w.many.Items, &limiterpb.TakeItem{Limit: cfg.Limit, Cost: cfg.Cost})
	}
	for k := range w.st.hist {
		w.st.hist[k] = NewHist()
	}
	w.st.win = NewHist()
	return w
}

// newWorkerRand returns worker id's generator for key and op choice: a function of the seed and
// the worker, so a run can be repeated with --seed.
func newWorkerRand(seed uint64, id int) *mrand.Rand {
	return mrand.New(mrand.NewPCG(seed, uint64(id)))
}

// key returns a uniformly random key among cfg.Keys.
func (w *worker) key() string {
	return "k" + strconv.Itoa(w.rng.IntN(w.cfg.Keys))
}

// requestID returns a fresh random 128-bit request ID in hex.
func (w *worker) requestID() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], w.idRng.Uint64())
	binary.LittleEndian.PutUint64(b[8:], w.idRng.Uint64())
	return hex.EncodeToString(b[:])
}

// outcome is the result of one call.
type outcome struct {
	err        error
	notServing bool // a health check that answered other than SERVING
	decisions  int64
	allowed    int64
	replayed   bool
}

// call makes one call of kind k, with a fresh request ID for takes, under the request timeout.
// A failed call is not retried.
func (w *worker) call(ctx context.Context, k opKind) outcome {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.RequestTimeout)
	defer cancel()
	var o outcome
	switch k {
	case opTake:
		w.take.Key, w.take.RequestId = w.key(), w.requestID()
		resp, err := w.rl.Take(ctx, w.take)
		if o.err = err; err == nil {
			o.decisions, o.replayed = 1, resp.GetReplayed()
			if resp.GetDecision().GetAllowed() {
				o.allowed = 1
			}
		}
	case opTakeMany:
		for _, it := range w.many.Items {
			it.Key = w.key()
		}
		w.many.RequestId = w.requestID()
		resp, err := w.rl.TakeMany(ctx, w.many)
		if o.err = err; err == nil {
			o.replayed = resp.GetReplayed()
			for _, d := range resp.GetDecisions() {
				o.decisions++
				if d.GetAllowed() {
					o.allowed++
				}
			}
		}
	case opPeek:
		w.peek.Key = w.key()
		resp, err := w.rl.Peek(ctx, w.peek)
		if o.err = err; err == nil {
			o.decisions = 1
			if resp.GetDecision().GetAllowed() {
				o.allowed = 1
			}
		}
	case opHealth:
		resp, err := w.hc.Check(ctx, w.health)
		o.err = err
		o.notServing = err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING
	}
	return o
}

// pick chooses the next kind of call by the mix's weights.
func (w *worker) pick() opKind {
	if len(w.mix) == 1 {
		return w.mix[0].Op
	}
	r := w.rng.IntN(w.mix.total())
	for _, m := range w.mix {
		if r < m.Weight {
			return m.Op
		}
		r -= m.Weight
	}
	return w.mix[len(w.mix)-1].Op
}

// record adds a measured call: its kind, latency (from the intended send time), outcome, the
// window it was sent in and when it ended.
func (w *worker) record(k opKind, lat time.Duration, o outcome, win int, end time.Time, tl *timeline) {
	st := &w.st
	if win != st.winIdx {
		tl.add(w.id, st.winIdx, st.win, st.winOps, st.winErrs, win)
		st.win.Reset()
		st.winIdx, st.winOps, st.winErrs = win, 0, 0
	}
	st.ops[k]++
	st.hist[k].Record(lat)
	st.win.Record(lat)
	st.winOps++
	st.lastEnd = end
	switch {
	case o.err != nil:
		st.opErrs[k]++
		code := status.Code(o.err)
		if int(code) >= numCodes {
			code = codes.Unknown // a code outside the standard set
		}
		st.errs[code]++
		if st.errText[code] == "" {
			st.errText[code] = k.String() + ": " + status.Convert(o.err).Message()
		}
		st.winErrs++
	case o.notServing:
		st.opErrs[k]++
		st.errs[errNotServing]++
		st.winErrs++
	default:
		st.decisions[k] += o.decisions
		st.allowed += o.allowed
		if k != opHealth {
			st.denied += o.decisions - o.allowed
		}
		if o.replayed {
			st.replayed++
		}
	}
}

// schedule is the timing of one phase.
type schedule struct {
	start        time.Time    // warmup begins
	measureStart time.Time    // measuring begins
	measureEnd   time.Time    // closed loop by duration: measuring ends
	tickets      atomic.Int64 // closed loop with --requests: measured requests started
	// Open loop: request i is due at start + i/rate; requests [first, first+count) are measured.
	next     atomic.Int64 // the next request number to send
	interval float64      // nanoseconds between requests
	first    int64
	count    int64
}

// due returns the intended send time of open-loop request i.
func (s *schedule) due(i int64) time.Time {
	return s.start.Add(time.Duration(float64(i) * s.interval))
}

// runPhase runs one phase: cfg.Concurrency workers over the leader connections, warmup first,
// then the measured part, in closed or open loop.
func runPhase(ctx context.Context, cfg *Config, cl *cluster, name string, mix Mix) (*Phase, error) {
	if err := mix.validate(); err != nil {
		return nil, err
	}
	sch := &schedule{start: time.Now()}
	sch.measureStart = sch.start.Add(cfg.Warmup)
	sch.measureEnd = sch.measureStart.Add(cfg.Duration)
	var total time.Duration // for the progress display; 0 when counted in requests
	if cfg.openLoop() {
		sch.interval = 1e9 / cfg.RateLimit
		sch.first = int64(math.Ceil(cfg.Warmup.Seconds() * cfg.RateLimit))
		sch.count = cfg.Requests
		if sch.count <= 0 {
			sch.count = max(1, int64(math.Ceil(cfg.Duration.Seconds()*cfg.RateLimit)))
		}
		sch.measureStart = sch.due(sch.first)
		total = sch.due(sch.first + sch.count).Sub(sch.start)
	} else if cfg.Requests <= 0 {
		total = cfg.Warmup + cfg.Duration
	}

	lives := make([]live, cfg.Concurrency)
	workers := make([]*worker, cfg.Concurrency)
	for i := range workers {
		workers[i] = newWorker(i, cfg, cl.conns[i%len(cl.conns)], &lives[i])
		workers[i].mix = mix
	}
	tl := newTimeline(cfg.Concurrency)
	prog := startProgress(cfg, name, lives, sch, total)

	var wg sync.WaitGroup
	var interrupted atomic.Bool
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !w.loop(ctx, sch, tl) {
				interrupted.Store(true)
			}
			tl.add(w.id, w.st.winIdx, w.st.win, w.st.winOps, w.st.winErrs, math.MaxInt)
		}()
	}
	wg.Wait()
	prog.stop()

	p := &Phase{Name: name, Mix: mix, Interrupted: interrupted.Load() || ctx.Err() != nil, LeaderID: cl.leaderID, Term: cl.term}
	if st, err := cl.status(context.WithoutCancel(ctx)); err != nil {
		p.AfterErr = err.Error()
	} else {
		p.LeaderAfter, p.TermAfter = st.GetLeaderId(), st.GetTerm()
	}
	if cfg.openLoop() {
		p.Offered = cfg.RateLimit
	}
	var lastEnd time.Time
	for k := range p.Hist {
		p.Hist[k] = NewHist()
	}
	for _, w := range workers {
		st := &w.st
		for k := range numOps {
			p.Ops[k] += st.ops[k]
			p.OpErrors[k] += st.opErrs[k]
			p.Decisions[k] += st.decisions[k]
			p.Hist[k].Merge(st.hist[k])
		}
		for i, n := range st.errs {
			p.Errors[i] += n
			if p.ErrorText[i] == "" {
				p.ErrorText[i] = st.errText[i]
			}
		}
		p.Allowed += st.allowed
		p.Denied += st.denied
		p.Replayed += st.replayed
		if st.lastEnd.After(lastEnd) {
			lastEnd = st.lastEnd
		}
	}
	if !lastEnd.IsZero() {
		p.Elapsed = lastEnd.Sub(sch.measureStart)
	}
	p.Timeline = tl.windows()
	return p, nil
}

// loop is the worker's main loop. It returns false when interrupted (ctx cancelled).
func (w *worker) loop(ctx context.Context, sch *schedule, tl *timeline) bool {
	if w.cfg.openLoop() {
		return w.openLoop(ctx, sch, tl)
	}
	return w.closedLoop(ctx, sch, tl)
}

// closedLoop sends the next call as soon as the previous one returns.
func (w *worker) closedLoop(ctx context.Context, sch *schedule, tl *timeline) bool {
	for ctx.Err() == nil {
		now := time.Now()
		measured := !now.Before(sch.measureStart)
		if measured {
			if w.cfg.Requests > 0 {
				if sch.tickets.Add(1) > w.cfg.Requests {
					return true
				}
			} else if !now.Before(sch.measureEnd) {
				return true
			}
		}
		if !w.one(ctx, now, measured, sch, tl) {
			return false
		}
	}
	return false
}

// openLoop sends requests on a fixed schedule: request i is due at start + i/rate. Workers take
// the next request number from a shared counter, wait until it is due and send it, so any free
// worker sends the next due request. Latency is measured from the due time: a request that could
// not be sent on time (every worker busy with a slow call) counts its wait, so a stall shows up
// in the latency instead of quietly lowering the load (no coordinated omission).
func (w *worker) openLoop(ctx context.Context, sch *schedule, tl *timeline) bool {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		i := sch.next.Add(1) - 1
		if i >= sch.first+sch.count {
			return true
		}
		due := sch.due(i)
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return false
			case <-timer.C:
			}
		}
		if ctx.Err() != nil {
			return false
		}
		if !w.one(ctx, due, i >= sch.first, sch, tl) {
			return false
		}
	}
}

// one makes one call intended at the given time and records it when measured. It returns false
// when the call failed because ctx was cancelled (an interruption, not counted).
func (w *worker) one(ctx context.Context, intended time.Time, measured bool, sch *schedule, tl *timeline) bool {
	k := w.pick()
	o := w.call(ctx, k)
	end := time.Now()
	w.live.ops.Add(1)
	if o.err != nil || o.notServing {
		if ctx.Err() != nil {
			return false
		}
		w.live.errs.Add(1)
	}
	if measured {
		win := int(intended.Sub(sch.measureStart) / time.Second)
		w.record(k, end.Sub(intended), o, max(win, 0), end, tl)
	}
	return true
}

// timeline merges the workers' one-second windows. Each worker hands over a window when it
// moves past it (once a second, off the hot path); a window is final once every worker has
// moved past it, and is then reduced to its percentiles, so memory stays bounded on long runs.
type timeline struct {
	mu      sync.Mutex
	pending map[int]*windowAcc
	at      []int // each worker's current window
	done    []Window
}

// windowAcc accumulates one window from several workers.
type windowAcc struct {
	hist *Hist
	ops  int64
	errs int64
}

// newTimeline returns a timeline for n workers.
func newTimeline(n int) *timeline {
	return &timeline{pending: map[int]*windowAcc{}, at: make([]int, n)}
}

// add merges worker's data for window win and records that the worker has moved on to next.
func (t *timeline) add(worker, win int, h *Hist, ops, errs int64, next int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ops > 0 {
		acc := t.pending[win]
		if acc == nil {
			acc = &windowAcc{hist: NewHist()}
			t.pending[win] = acc
		}
		acc.hist.Merge(h)
		acc.ops += ops
		acc.errs += errs
	}
	t.at[worker] = next
	low := math.MaxInt
	for _, a := range t.at {
		low = min(low, a)
	}
	for i, acc := range t.pending {
		if i < low {
			t.done = append(t.done, Window{Index: i, Ops: acc.ops, Errors: acc.errs,
				P50: acc.hist.Quantile(0.5), P99: acc.hist.Quantile(0.99), Max: acc.hist.Max()})
			delete(t.pending, i)
		}
	}
}

// windows returns every window in order, with empty seconds filled in (no calls sent).
func (t *timeline) windows() []Window {
	t.mu.Lock()
	defer t.mu.Unlock()
	sort.Slice(t.done, func(i, j int) bool { return t.done[i].Index < t.done[j].Index })
	var out []Window
	for _, w := range t.done {
		for len(out) < w.Index {
			out = append(out, Window{Index: len(out)})
		}
		out = append(out, w)
	}
	return out
}

// errInterrupted is returned when the run was stopped before the main phase began.
var errInterrupted = errors.New("interrupted before the main run")
