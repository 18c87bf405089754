package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	mrand "math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/api/limiterpb"
)

// Workers: one caller each, making calls and recording what they measured.

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
	local     int64 // takes answered from escrow
	takes     []takeRec
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
	local      bool // answered from a member's escrow
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
			o.decisions, o.replayed, o.local = 1, resp.GetReplayed(), resp.GetLocalNode() != ""
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
			o.replayed, o.local = resp.GetReplayed(), resp.GetLocalNode() != ""
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
		if o.local {
			st.local++
		}
	}
}
