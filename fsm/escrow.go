package fsm

import (
	"container/heap"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/limiterd/limiter/bucket"
)

// Escrow: the replicated half of local admission (DESIGN.md, "Local admission").
//
// A grant entry moves whole tokens from a bucket into one holder's escrow at the entry's log
// time; it never takes more than the bucket holds. A settle entry returns the unused part of a
// grant, credited back and capped at the burst, and ends it. A grant not settled by its expiry
// (log time) counts as fully spent. Either way an ended grant stays as a tombstone for one more
// TTL, so a late retry of its grant request is answered, not granted again. Tokens are never
// created: a holder admits at most what it was granted, and a settle returns at most that.

// Admission is how takes on a limit are decided.
type Admission uint8

// Admission modes.
const (
	// AdmitLinearizable decides every take in the log (the default).
	AdmitLinearizable Admission = 0
	// AdmitLocal lets any member answer takes from tokens escrowed to it by grant entries.
	AdmitLocal Admission = 1
)

func (a Admission) String() string {
	switch a {
	case AdmitLinearizable:
		return "linearizable"
	case AdmitLocal:
		return "local"
	}
	return fmt.Sprintf("admission(%d)", byte(a))
}

// ParseAdmission reads an admission mode by name ("" is linearizable).
func ParseAdmission(s string) (Admission, error) {
	switch s {
	case "", "linearizable":
		return AdmitLinearizable, nil
	case "local":
		return AdmitLocal, nil
	}
	return 0, invalid("admission %q; want linearizable or local", s)
}

// Bounds of local admission.
const (
	DefaultGrantTTL = 2 * time.Second
	MinGrantTTL     = 100 * time.Millisecond
	MaxGrantTTL     = time.Minute
	// MaxGrantsPerLimit bounds the grants (live and tombstones) of one limit: about 13 MiB.
	MaxGrantsPerLimit = 1 << 16
	// MaxGrantsPerHolder bounds the live grants one holder has on one limit.
	MaxGrantsPerHolder = 1 << 12
)

// Errors of escrow commands.
var (
	// ErrNotLocal: a grant on a limit that is not in local admission mode.
	ErrNotLocal = errors.New("limit is not in local admission mode")
	// ErrTooManyGrants: a grant beyond MaxGrantsPerLimit or MaxGrantsPerHolder.
	ErrTooManyGrants = errors.New("too many grants")
	// ErrUnknownGrant: a settle names a grant that does not exist (or another holder's).
	ErrUnknownGrant = errors.New("unknown grant")
)

// EscrowOpKind tells a grant from a settle.
type EscrowOpKind uint8

// Escrow operations.
const (
	OpGrant  EscrowOpKind = 1
	OpSettle EscrowOpKind = 2
)

// EscrowOp is one grant or settle in an escrow entry.
type EscrowOp struct {
	Op     EscrowOpKind
	ID     string // the grant's ID (for a settle, the grant it ends); exactly-once
	Holder string // the member that holds (or asks for) the tokens
	Limit  string // grant: the limit and key whose bucket pays
	Key    string
	Min    int64 // grant: grant nothing unless at least Min tokens are there
	Max    int64 // grant: at most Max tokens
	Unused int64 // settle: the tokens the holder did not admit
}

// EscrowOutcome is the answer to one escrow op.
type EscrowOutcome struct {
	Granted int64         // grant: tokens moved into escrow (0: the bucket had fewer than Min)
	Expires int64         // grant: log time at which an unsettled grant counts as spent
	TTL     time.Duration // grant: the limit's grant TTL at the grant
	// Result is the bucket after a grant, with RetryAfter the wait for Min when none was granted.
	Result   bucket.Result
	Credited int64 // settle: tokens returned to the bucket (before the cap at the burst)
	Replayed bool  // a retry: the grant already exists, or the settle already happened
	Err      error
}

// GrantInfo describes one grant, for operators.
type GrantInfo struct {
	ID, Holder, Key string
	Tokens          int64
	Expires         int64 // log time
	Live            bool  // not yet settled or expired
}

// grant is one escrow grant. Its one queue entry is due at expires while expired is false,
// then at expires+ttl (when it is forgotten).
type grant struct {
	id, holder, limit, key string
	tokens                 int64
	expires                int64
	ttl                    int64
	live                   bool // not settled and not expired
	expired                bool // its expiry has passed
}

func (g *grant) due() int64 {
	if g.expired {
		return addClamped(g.expires, g.ttl)
	}
	return g.expires
}

// escrowState is every grant, indexed for the bounds and for fairness.
type escrowState struct {
	grants  map[string]*grant
	byLimit map[string]int      // grants (live and tombstones) per limit
	byKey   map[string][]*grant // live grants per bucket (bucketKey)
	holders map[string]int      // live grants per limit and holder (bucketKey(limit, holder))
	queue   grantQueue

	// Counters for operators (not replicated state).
	granted, settled, expired uint64
}

func newEscrow() *escrowState {
	return &escrowState{grants: map[string]*grant{}, byLimit: map[string]int{}, byKey: map[string][]*grant{}, holders: map[string]int{}}
}

func bucketKey(limit, key string) string { return limit + "\x00" + key }

func (e *escrowState) add(g *grant) {
	e.grants[g.id] = g
	e.byLimit[g.limit]++
	if g.live {
		e.byKey[bucketKey(g.limit, g.key)] = append(e.byKey[bucketKey(g.limit, g.key)], g)
		e.holders[bucketKey(g.limit, g.holder)]++
	}
	heap.Push(&e.queue, queued{at: g.due(), id: g.id})
}

// end makes a live grant a tombstone.
func (e *escrowState) end(g *grant) {
	if !g.live {
		return
	}
	g.live = false
	bk := bucketKey(g.limit, g.key)
	list := e.byKey[bk]
	for i, o := range list {
		if o == g {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(e.byKey, bk)
	} else {
		e.byKey[bk] = list
	}
	hk := bucketKey(g.limit, g.holder)
	if e.holders[hk]--; e.holders[hk] <= 0 {
		delete(e.holders, hk)
	}
}

func (e *escrowState) forget(g *grant) {
	e.end(g)
	delete(e.grants, g.id)
	if e.byLimit[g.limit]--; e.byLimit[g.limit] <= 0 {
		delete(e.byLimit, g.limit)
	}
}

// dropLimit forgets every grant of a deleted limit (their queue entries go stale).
func (e *escrowState) dropLimit(name string) {
	if e.byLimit[name] == 0 {
		return
	}
	for _, g := range e.grants {
		if g.limit == name {
			e.forget(g)
		}
	}
}

// advance ends the grants whose expiry has passed (unsettled: counted as spent) and forgets the
// tombstones whose second TTL has passed. The order is the queue's (time, then ID), the same
// on every replica.
func (e *escrowState) advance(now int64) {
	for len(e.queue) > 0 && e.queue[0].at <= now {
		q := heap.Pop(&e.queue).(queued)
		g, ok := e.grants[q.id]
		if !ok || g.due() != q.at {
			continue // stale: the grant's limit was deleted
		}
		if !g.expired {
			if g.live {
				e.expired += uint64(g.tokens)
			}
			e.end(g)
			g.expired = true
			heap.Push(&e.queue, queued{at: g.due(), id: g.id})
			continue
		}
		e.forget(g)
	}
}

// holderCount is the number of distinct holders with live grants on a bucket, counting holder.
func (e *escrowState) holderCount(limit, key, holder string) int64 {
	seen := map[string]bool{holder: true}
	for _, g := range e.byKey[bucketKey(limit, key)] {
		seen[g.holder] = true
	}
	return int64(len(seen))
}

// checkEscrowOp applies the bounds every replica checks the same way.
func checkEscrowOp(op *EscrowOp) error {
	if op.ID == "" || len(op.ID) > MaxRequestIDLen {
		return invalid("grant ID of %d bytes; want 1 to %d", len(op.ID), MaxRequestIDLen)
	}
	if op.Holder == "" || len(op.Holder) > MaxNameLen {
		return invalid("holder of %d bytes; want 1 to %d", len(op.Holder), MaxNameLen)
	}
	switch op.Op {
	case OpGrant:
		if err := CheckName(op.Limit); err != nil {
			return err
		}
		if err := CheckKey(op.Key); err != nil {
			return err
		}
		if op.Min <= 0 || op.Max < op.Min {
			return invalid("grant of %d to %d tokens; want 1 <= min <= max", op.Min, op.Max)
		}
	case OpSettle:
		if op.Unused < 0 {
			return invalid("settle of %d unused tokens; want 0 or more", op.Unused)
		}
	default:
		return invalid("escrow op %d", op.Op)
	}
	return nil
}

func (f *FSM) applyEscrow(op *EscrowOp) EscrowOutcome {
	if err := checkEscrowOp(op); err != nil {
		return EscrowOutcome{Err: err}
	}
	if op.Op == OpSettle {
		return f.settle(op)
	}
	return f.grant(op)
}

// grant moves up to op.Max tokens (at least op.Min, or none) into op.Holder's escrow. When
// tokens are scarce (fewer than every holder's ask) a holder gets at most its share of what is
// left: the bucket divided among the holders with live grants on it, so no holder starves
// another and grants shrink as the bucket empties.
func (f *FSM) grant(op *EscrowOp) EscrowOutcome {
	e := f.escrow
	if g, ok := e.grants[op.ID]; ok {
		if g.holder != op.Holder || g.limit != op.Limit || g.key != op.Key {
			return EscrowOutcome{Err: fmt.Errorf("%w: grant %q", ErrRequestIDReused, op.ID)}
		}
		return EscrowOutcome{Granted: g.tokens, Expires: g.expires, TTL: time.Duration(g.ttl), Replayed: true}
	}
	ls, ok := f.limits[op.Limit]
	switch {
	case !ok:
		return EscrowOutcome{Err: fmt.Errorf("%w: %q", ErrUnknownLimit, op.Limit)}
	case ls.admission != AdmitLocal:
		return EscrowOutcome{Err: fmt.Errorf("%w: %q", ErrNotLocal, op.Limit)}
	case op.Min > ls.limit.Burst():
		return EscrowOutcome{Err: fmt.Errorf("%w: cost %d, limit %q has burst %d: it can never be granted", bucket.ErrCostExceedsBurst, op.Min, op.Limit, ls.limit.Burst())}
	case e.byLimit[op.Limit] >= MaxGrantsPerLimit:
		return EscrowOutcome{Err: fmt.Errorf("%w: limit %q has %d grants", ErrTooManyGrants, op.Limit, MaxGrantsPerLimit)}
	case e.holders[bucketKey(op.Limit, op.Holder)] >= MaxGrantsPerHolder:
		return EscrowOutcome{Err: fmt.Errorf("%w: %s holds %d grants on limit %q", ErrTooManyGrants, op.Holder, MaxGrantsPerHolder, op.Limit)}
	}
	// Tokens are scarce when the bucket could not give every holder on the key as much as this
	// one asks: then a holder gets its share of what is left (or what leaves each other holder
	// as much as it asks, if that is more).
	avail := ls.keyed.Available(op.Key, f.clock)
	holders := e.holderCount(op.Limit, op.Key, op.Holder)
	share := max(avail/holders, avail-(holders-1)*min(op.Max, ls.limit.Burst()))
	hi := min(op.Max, ls.limit.Burst(), max(op.Min, share))
	n, res, err := ls.keyed.TakeUpTo(op.Key, f.clock, op.Min, hi)
	if err != nil {
		return EscrowOutcome{Err: fmt.Errorf("grant %q/%q: %w", op.Limit, op.Key, err)}
	}
	if n == 0 { // nothing moved, nothing recorded: a retry is decided afresh
		return EscrowOutcome{Result: res, TTL: time.Duration(ls.grantTTL)}
	}
	g := &grant{id: op.ID, holder: op.Holder, limit: op.Limit, key: op.Key, tokens: n,
		expires: addClamped(f.clock, ls.grantTTL), ttl: ls.grantTTL, live: true}
	e.add(g)
	e.granted += uint64(n)
	return EscrowOutcome{Granted: n, Expires: g.expires, TTL: time.Duration(g.ttl), Result: res}
}

// settle returns a live grant's unused tokens to its bucket (at most what was granted, never
// above the burst) and ends it. Settling an ended grant again changes nothing.
func (f *FSM) settle(op *EscrowOp) EscrowOutcome {
	e := f.escrow
	g, ok := e.grants[op.ID]
	if !ok || g.holder != op.Holder {
		return EscrowOutcome{Err: fmt.Errorf("%w: %q of %s", ErrUnknownGrant, op.ID, op.Holder)}
	}
	if !g.live {
		return EscrowOutcome{Replayed: true}
	}
	unused := min(op.Unused, g.tokens)
	if ls, ok := f.limits[g.limit]; ok {
		ls.keyed.Credit(g.key, f.clock, unused)
	}
	e.end(g)
	e.settled += uint64(unused)
	e.expired += uint64(g.tokens - unused) // admitted by the holder, or wasted: spent either way
	return EscrowOutcome{Credited: unused}
}

// Mode is what a member needs to answer a take on a limit from escrow: its admission mode,
// grant TTL and burst. ok is false for an unknown limit. Cheaper than Limit (no bucket count).
func (f *FSM) Mode(limit string) (admission Admission, ttl time.Duration, burst int64, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	ls, ok := f.limits[limit]
	if !ok {
		return 0, 0, 0, false
	}
	return ls.admission, time.Duration(ls.grantTTL), ls.limit.Burst(), true
}

// Grants lists the grants of a limit (live and recently ended), sorted by ID.
func (f *FSM) Grants(limit string) []GrantInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []GrantInfo
	for _, g := range f.escrow.grants {
		if g.limit == limit {
			out = append(out, GrantInfo{ID: g.id, Holder: g.holder, Key: g.key, Tokens: g.tokens, Expires: g.expires, Live: g.live})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// EscrowStats are escrow figures for operators.
type EscrowStats struct {
	Grants  int   // live grants
	Tokens  int64 // tokens in live grants
	Granted uint64
	// Settled counts tokens returned by settles; Spent counts tokens of ended grants that were
	// not returned (admitted by their holders, or stranded by a crash or partition).
	Settled, Spent uint64
}

// Escrow returns escrow figures.
func (f *FSM) Escrow() EscrowStats {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := EscrowStats{Granted: f.escrow.granted, Settled: f.escrow.settled, Spent: f.escrow.expired}
	for _, g := range f.escrow.grants {
		if g.live {
			s.Grants++
			s.Tokens += g.tokens
		}
	}
	return s
}

// queued is a grant's next due time in the queue.
type queued struct {
	at int64
	id string
}

// grantQueue is a min-heap by (at, id): a deterministic order for equal times.
type grantQueue []queued

func (q grantQueue) Len() int { return len(q) }
func (q grantQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].id < q[j].id
}
func (q grantQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *grantQueue) Push(x any)   { *q = append(*q, x.(queued)) }
func (q *grantQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}
