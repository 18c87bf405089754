package node

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/limiterd/limiter/bucket"
	"github.com/limiterd/limiter/fsm"
)

// The holder: this member's escrow for limits in local admission (DESIGN.md, "Local admission").
//
// A take on a hot key of a local limit is answered from tokens this member holds, with no
// network or disk round trip. Tokens come from grant entries the leader commits; the holder asks
// ahead of need, sized from the key's recent demand, spends its oldest grant first, and stops
// using a grant at its own deadline: its monotonic clock when it sent the request, plus the TTL,
// less a margin. The state machine ends the grant a TTL of log time after the grant entry, which
// is later, so every admitted take was paid for by a token taken from the bucket at most one TTL
// earlier. Before its deadline the holder settles what is left. It never admits from tokens it
// does not hold: with an empty escrow a take waits for one grant round, and while the leader is
// unreachable the holder answers from unexpired escrow only, then fails.

const (
	holderTick = 10 * time.Millisecond
	// hotWindow: a key taken twice within it is hot and served from escrow; a cold key's take
	// goes to the log, so a sparse key costs one entry per take, not a grant and a settle.
	hotWindow = time.Second
	// idleSettle: the unused escrow of a key with no take for this long (and for a quarter of
	// its grant's TTL) is settled, so tokens return to the bucket for other holders instead of
	// waiting out their grant.
	idleSettle = 250 * time.Millisecond
	// forgetKey: a key with no escrow and no take for this long is dropped from memory.
	forgetKey = 10 * time.Second
	// maxRecent bounds the node-local exactly-once table (about 200 bytes per record).
	maxRecent = 200_000
	// maxKeys bounds the keys the holder tracks; beyond it new keys stay cold (the log decides).
	maxKeys = 100_000
	// demandTau is the time constant of a key's demand estimate.
	demandTau = time.Second
	// sweepEvery: idle keys are looked for every this many ticks (only keys holding escrow are
	// visited on every tick).
	sweepEvery = 100
)

// ErrNoEscrow: a take on a local limit found no escrow and could not get a grant (the leader is
// unreachable, or the grant round failed). Nothing was admitted; it is safe to retry.
var ErrNoEscrow = errors.New("no escrow for this key and no grant from the leader")

// margin is how long before the state machine's end of a grant its holder stops using it: a
// tenth of the TTL (at least 10 ms), for the difference between clocks' rates.
func margin(ttl time.Duration) time.Duration { return max(ttl/10, 10*time.Millisecond) }

type heldGrant struct {
	id               string
	granted, left    int64
	ttl              time.Duration
	deadline, settle time.Duration // stop using it at deadline; settle it from settle on
	giveUp           time.Duration // past this the state machine counts it spent: stop settling
}

type heldKey struct {
	limit, key  string
	grants      []*heldGrant // oldest first
	lastTake    time.Duration
	rate        float64       // demand in tokens per second, decaying with demandTau
	rateAt      time.Duration // when rate was last brought up to date
	deniedUntil time.Duration
	retryAfter  time.Duration
	fetch       *grantFetch
}

type grantFetch struct {
	done    chan struct{}
	granted int64
	err     error
}

// spend is tokens taken from one grant, for putting back.
type spend struct {
	g *heldGrant
	n int64
}

// HolderStats are the holder's counters, for metrics.
type HolderStats struct {
	Allowed, Denied, ToLog  uint64 // takes answered from escrow (allowed, denied), sent to the log
	GrantRequests, Failures uint64 // grant rounds, and those that failed as a whole
	GrantNanos              uint64 // their total duration
	Granted, Settled        uint64 // tokens received, tokens returned
	Stranded                uint64 // tokens left unsettled at a grant's end (a partition, a crash)
	Held                    int64  // tokens in escrow now
	Keys                    int
}

type holder struct {
	n      *Node
	prefix string
	seq    atomic.Uint64
	wire   escrowClient

	mu     sync.Mutex
	keys   map[string]*heldKey
	active map[*heldKey]struct{} // keys holding grants: the ones upkeep visits every tick
	rtt    time.Duration         // a grant round, smoothed
	ticks  int
	recent recentTable

	allowed, denied, toLog, requests, failures, grantNanos, granted, settled, stranded atomic.Uint64
}

func newHolder(n *Node) *holder {
	h := &holder{n: n, keys: map[string]*heldKey{}, active: map[*heldKey]struct{}{}, prefix: n.cfg.ID + "/" + randomHex(4) + "/"}
	h.wire.n = n
	return h
}

func (h *holder) mono() time.Duration { return h.n.cfg.Mono() }

// TakeLocal answers a take from this member's escrow when every item is on a local limit and
// its key is hot. handled is false when the take must go to the log instead (a linearizable or
// mixed request, a cold key, a request the log would refuse, a limit at its grant bound).
// clientID says the request ID came from the client, so a retry is answered here from the
// node-local exactly-once table. Items are decided each on its own, as the log decides them.
func (n *Node) TakeLocal(ctx context.Context, t fsm.Take, clientID bool) (out fsm.TakeOutcome, handled bool, err error) {
	h := n.holder
	limits := make([]fsm.LimitInfo, len(t.Items))
	for i, it := range t.Items {
		adm, ttl, burst, ok := n.fsm.Mode(it.Limit)
		if !ok || adm != fsm.AdmitLocal {
			return fsm.TakeOutcome{}, false, nil
		}
		limits[i] = fsm.LimitInfo{Name: it.Limit, Burst: burst, Admission: adm, GrantTTL: ttl}
	}
	if n.fsm.Refusal(t) != nil {
		return fsm.TakeOutcome{}, false, nil // refused by the log, the same everywhere
	}
	if clientID { // a server-made ID is fresh: nothing can be recorded under it
		if rec, lookup := n.fsm.Recorded(t); lookup == fsm.Binding {
			return rec, true, nil // decided in the log before (a cold key's take, retried)
		}
		if rec, ok, same := h.recent.get(t); ok {
			if !same {
				return fsm.TakeOutcome{}, false, nil // a reused ID: the log refuses it
			}
			rec.Replayed = true
			return rec, true, nil
		}
	}
	if !h.hot(t) {
		h.toLog.Add(1)
		return fsm.TakeOutcome{}, false, nil
	}
	results := make([]bucket.Result, len(t.Items))
	var spent []spend
	for i, it := range t.Items {
		res, sp, err := h.takeItem(ctx, &limits[i], it)
		if err != nil {
			h.refund(spent)
			if errors.Is(err, fsm.ErrTooManyGrants) || errors.Is(err, fsm.ErrNotLocal) || errors.Is(err, fsm.ErrUnknownLimit) {
				h.toLog.Add(1)
				return fsm.TakeOutcome{}, false, nil // the log decides (and refuses what it must)
			}
			return fsm.TakeOutcome{}, true, err
		}
		spent = append(spent, sp...)
		results[i] = res
	}
	out = fsm.TakeOutcome{Results: results}
	if clientID {
		h.recent.put(t, out, h.mono(), n.fsm.Config().DedupWindow)
	}
	return out, true, nil
}

// hot marks the take's keys as taken now and reports whether every one is hot: taken twice
// within hotWindow, or holding escrow already.
func (h *holder) hot(t fsm.Take) bool {
	now := h.mono()
	h.mu.Lock()
	defer h.mu.Unlock()
	hot := true
	for _, it := range t.Items {
		k := h.keys[bucketID(it.Limit, it.Key)]
		if k == nil && len(h.keys) >= maxKeys {
			hot = false // too many keys tracked: this one stays cold
			continue
		}
		k = h.key(it.Limit, it.Key)
		if len(k.grants) == 0 && (k.lastTake == 0 || now-k.lastTake > hotWindow) {
			hot = false
		}
		k.lastTake = now
	}
	return hot
}

func (h *holder) key(limit, key string) *heldKey {
	id := bucketID(limit, key)
	k := h.keys[id]
	if k == nil {
		k = &heldKey{limit: limit, key: key}
		h.keys[id] = k
	}
	return k
}

// demand brings the key's demand estimate to now, adding cost tokens taken now.
func (k *heldKey) demand(now time.Duration, cost int64) float64 {
	if dt := now - k.rateAt; dt > 0 {
		k.rate *= math.Exp(-float64(dt) / float64(demandTau))
		k.rateAt = now
	}
	k.rate += float64(cost) / demandTau.Seconds()
	return k.rate
}

// takeItem decides one item from escrow, fetching a grant when the escrow cannot cover it.
func (h *holder) takeItem(ctx context.Context, li *fsm.LimitInfo, it fsm.Item) (bucket.Result, []spend, error) {
	for round := 0; ; round++ {
		h.mu.Lock()
		k := h.key(it.Limit, it.Key)
		now := h.mono()
		if sp, left, ok := k.take(it.Cost, now); ok {
			k.demand(now, it.Cost)
			h.prefetch(k, li, now)
			h.mu.Unlock()
			h.allowed.Add(1)
			return bucket.Result{Allowed: true, Remaining: left, Limit: li.Burst}, sp, nil
		}
		left := k.usable(now)
		if now < k.deniedUntil || round >= 3 {
			wait := max(k.deniedUntil-now, time.Millisecond)
			h.mu.Unlock()
			h.denied.Add(1)
			return bucket.Result{Remaining: left, Limit: li.Burst, RetryAfter: wait}, nil, nil
		}
		f := h.startFetch(k, li, it.Cost-left)
		h.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return bucket.Result{}, nil, fmt.Errorf("waiting for a grant: %w", ctx.Err())
		case <-h.n.shutdownCh:
			return bucket.Result{}, nil, ErrShutdown
		}
		if f.err != nil {
			return bucket.Result{}, nil, f.err
		}
		if round == 0 {
			h.mu.Lock()
			k.demand(h.mono(), it.Cost) // a take that waited for a grant is demand too
			h.mu.Unlock()
		}
	}
}

// take spends cost from the usable grants, oldest first, if together they cover it.
func (k *heldKey) take(cost int64, now time.Duration) ([]spend, int64, bool) {
	if k.usable(now) < cost {
		return nil, 0, false
	}
	var sp []spend
	need := cost
	for _, g := range k.grants {
		if need == 0 {
			break
		}
		if now >= g.deadline || g.left == 0 {
			continue
		}
		n := min(need, g.left)
		g.left -= n
		need -= n
		sp = append(sp, spend{g, n})
	}
	return sp, k.usable(now), true
}

// usable is the escrow this key may still admit from at now.
func (k *heldKey) usable(now time.Duration) int64 {
	var sum int64
	for _, g := range k.grants {
		if now < g.deadline {
			sum += g.left
		}
	}
	return sum
}

// refund puts back tokens spent for a take that did not complete, while their grants are usable.
func (h *holder) refund(spent []spend) {
	if len(spent) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.mono()
	for _, s := range spent {
		if now < s.g.deadline {
			s.g.left += s.n
		}
	}
}

// want is how many tokens to ask for: the key's recent demand over a quarter of the TTL, or four
// grant round trips if longer (at most half the TTL), so a steady stream asks a few times per
// grant lifetime and holds little more than it needs.
func (h *holder) want(k *heldKey, li *fsm.LimitInfo, need int64, now time.Duration) int64 {
	horizon := min(max(li.GrantTTL/8, 2*h.rtt), li.GrantTTL/4)
	w := int64(k.demand(now, 0)*horizon.Seconds()) + 1
	return min(max(w, need), li.Burst)
}

// prefetch asks for the next grant while the escrow still covers two grant round trips of
// demand (at least 50 ms, at most a quarter TTL), so the answer comes before the escrow runs out.
func (h *holder) prefetch(k *heldKey, li *fsm.LimitInfo, now time.Duration) {
	lead := min(max(3*h.rtt/2, 50*time.Millisecond), li.GrantTTL/4)
	if need := int64(k.rate*lead.Seconds()) + 1; k.fetch == nil && now >= k.deniedUntil && k.usable(now) < need {
		// Ask for at least what lasts until the next answer: when tokens are scarce the state
		// machine grants a share of what is left, or this minimum when the bucket holds it, so
		// a member far from the leader is not starved by ones that ask more often.
		h.startFetch(k, li, need-k.usable(now))
	}
}

// startFetch starts a grant round for k (or returns the one in flight). Caller holds h.mu.
func (h *holder) startFetch(k *heldKey, li *fsm.LimitInfo, need int64) *grantFetch {
	if k.fetch != nil {
		return k.fetch
	}
	need = min(max(need, 1), li.Burst)
	f := &grantFetch{done: make(chan struct{})}
	k.fetch = f
	op := fsm.EscrowOp{Op: fsm.OpGrant, ID: h.prefix + strconv.FormatUint(h.seq.Add(1), 36), Holder: h.n.cfg.ID,
		Limit: k.limit, Key: k.key, Min: need}
	sent := h.mono()
	op.Max = h.want(k, li, need, sent)
	if !h.n.spawn(func() { h.runFetch(k, f, op, sent, li.GrantTTL) }) {
		k.fetch, f.err = nil, ErrShutdown
		close(f.done)
	}
	return f
}

func (h *holder) runFetch(k *heldKey, f *grantFetch, op fsm.EscrowOp, sent, ttl time.Duration) {
	h.requests.Add(1)
	// Retried with the same ID (applied once) while a grant could still be of use.
	ctx, cancel := context.WithTimeout(context.Background(), ttl/2)
	out, err := h.request(ctx, []fsm.EscrowOp{op})
	cancel()
	took := h.mono() - sent
	h.grantNanos.Add(uint64(took))
	if o := h.n.observer.Load(); o != nil {
		(*o).ObserveGrant(took)
	}
	var o fsm.EscrowOutcome
	if err == nil {
		o = out[0]
		err = o.Err
	}
	h.mu.Lock()
	k.fetch = nil
	now := h.mono()
	if err == nil {
		h.rtt = (4*h.rtt + took) / 5 // smoothed; the first rounds pull it up from 0 quickly enough
	}
	switch {
	case err != nil:
		h.failures.Add(1)
		if !errors.Is(err, fsm.ErrTooManyGrants) && !errors.Is(err, fsm.ErrNotLocal) && !errors.Is(err, fsm.ErrUnknownLimit) {
			err = fmt.Errorf("%w: %w", ErrNoEscrow, err)
		}
		f.err = err
	case o.Granted > 0:
		h.granted.Add(uint64(o.Granted))
		g := &heldGrant{id: op.ID, granted: o.Granted, left: o.Granted, ttl: o.TTL,
			deadline: sent + o.TTL - margin(o.TTL), giveUp: sent + o.TTL}
		g.settle = g.deadline - o.TTL/4
		k.grants = append(k.grants, g)
		h.active[k] = struct{}{}
		f.granted = o.Granted
		k.deniedUntil = 0
	default: // the bucket holds less than we needed: deny locally until it may
		k.deniedUntil = now + min(o.Result.RetryAfter, ttl)
	}
	h.mu.Unlock()
	close(f.done)
}

// request sends escrow ops to the leader (or applies them, on the leader), retrying whole-request
// failures (no leader, a lost connection) until ctx ends: every op is exactly-once by its ID.
func (h *holder) request(ctx context.Context, ops []fsm.EscrowOp) ([]fsm.EscrowOutcome, error) {
	for {
		var out []fsm.EscrowOutcome
		var err error
		if h.n.IsLeader() {
			out, err = h.n.Escrow(ctx, ops)
		} else if addr, _ := h.n.raft.LeaderWithID(); addr == "" {
			err = ErrNotLeader
		} else {
			out, err = h.wire.call(ctx, string(addr), ops)
		}
		if err == nil || errors.Is(err, ErrShutdown) {
			return out, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-h.n.shutdownCh:
			return nil, ErrShutdown
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// run is the holder's upkeep: demand estimates, settling grants near their deadline and grants
// of idle keys, forgetting idle keys.
func (h *holder) run() {
	t := time.NewTicker(holderTick)
	defer t.Stop()
	defer h.wire.close()
	for {
		select {
		case <-h.n.shutdownCh:
			return
		case <-t.C:
		}
		if ops := h.upkeep(); len(ops) > 0 {
			h.n.spawn(func() { h.settle(ops) })
		}
	}
}

// upkeep returns the settles due now.
func (h *holder) upkeep() []settleReq {
	now := h.mono()
	h.mu.Lock()
	defer h.mu.Unlock()
	var due []settleReq
	for k := range h.active {
		kept := k.grants[:0]
		for _, g := range k.grants {
			idle := now-k.lastTake > max(idleSettle, g.ttl/4)
			switch {
			case g.left == 0 && (now >= g.settle || idle):
				// used up: the state machine counts it spent at its TTL; nothing to return
			case now >= g.settle || idle:
				due = append(due, settleReq{g: g, limit: k.limit, unused: g.left})
				g.left = 0
			default:
				kept = append(kept, g)
			}
		}
		clear(k.grants[len(kept):])
		k.grants = kept
		if len(k.grants) == 0 {
			delete(h.active, k)
		}
	}
	if h.ticks++; h.ticks%sweepEvery == 0 {
		for id, k := range h.keys {
			if len(k.grants) == 0 && k.fetch == nil && now-k.lastTake > forgetKey {
				delete(h.keys, id)
			}
		}
		h.recent.expire(now)
	}
	return due
}

type settleReq struct {
	g      *heldGrant
	limit  string
	unused int64
}

// settle returns unused escrow, retrying until the grants' state-machine end (past it they count
// as spent, and what was left is stranded: under-admission, never over-admission).
func (h *holder) settle(reqs []settleReq) {
	for len(reqs) > 0 {
		batch := reqs[:min(len(reqs), maxEscrowOps)]
		reqs = reqs[len(batch):]
		ops := make([]fsm.EscrowOp, len(batch))
		giveUp := batch[0].g.giveUp
		for i, r := range batch {
			ops[i] = fsm.EscrowOp{Op: fsm.OpSettle, ID: r.g.id, Holder: h.n.cfg.ID, Limit: r.limit, Unused: r.unused}
			giveUp = min(giveUp, r.g.giveUp)
		}
		ctx, cancel := context.WithTimeout(context.Background(), max(giveUp-h.mono(), time.Millisecond))
		out, err := h.request(ctx, ops)
		cancel()
		for i, r := range batch {
			if err == nil && out[i].Err == nil && !out[i].Replayed {
				h.settled.Add(uint64(r.unused))
			} else {
				h.stranded.Add(uint64(r.unused))
			}
		}
	}
}

// Stats returns the holder's counters.
func (h *holder) stats() HolderStats {
	s := HolderStats{Allowed: h.allowed.Load(), Denied: h.denied.Load(), ToLog: h.toLog.Load(),
		GrantRequests: h.requests.Load(), Failures: h.failures.Load(), GrantNanos: h.grantNanos.Load(),
		Granted: h.granted.Load(), Settled: h.settled.Load(), Stranded: h.stranded.Load()}
	now := h.mono()
	h.mu.Lock()
	s.Keys = len(h.keys)
	for k := range h.active {
		s.Held += k.usable(now)
	}
	h.mu.Unlock()
	return s
}

// HolderStats returns this member's escrow counters.
func (n *Node) HolderStats() HolderStats { return n.holder.stats() }
