package main

import (
	"context"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
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
	Admission      string        // with Setup: the limit's admission mode ("" or "linearizable", "local")
	GrantTTL       time.Duration // with Setup and local admission: the grant TTL (0: the default)
	Spread         bool          // callers spread over every node instead of all on the leader

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
	Local     int64 // takes answered from a member's escrow (local admission)
	// Exact is what an exact bucket per key, full at the start, would have allowed of the takes
	// sent (warmup included), by send time; ExactOf is the allowed takes it compares with (also
	// warmup included). 0 when not computed (see underAdmission).
	Exact, ExactOf int64
	Errors         [errSlots]int64
	ErrorText      [errSlots]string // the first error message seen per code
	Hist           [numOps]*Hist    // latency per kind of call, errors included
	Timeline       []Window
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
		p.Local += st.local
		if st.lastEnd.After(lastEnd) {
			lastEnd = st.lastEnd
		}
	}
	if !lastEnd.IsZero() {
		p.Elapsed = lastEnd.Sub(sch.measureStart)
	}
	p.Timeline = tl.windows()
	if name == "main" {
		p.Exact, p.ExactOf = underAdmission(cfg, sch.start, workers)
	}
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
	sent := time.Now()
	o := w.call(ctx, k)
	end := time.Now()
	w.recordTake(k, sent.Sub(sch.start), o)
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
