// Package fsm is the replicated state machine of the limiter: named limits, their buckets, the
// exactly-once table and the clock, changed only by applying log entries.
//
// It knows nothing of Raft's network or of wall clocks: node/ feeds it committed entries and
// snapshot streams. The same sequence of entries gives the same state and the same results on
// every machine (see DESIGN.md in this folder).
package fsm

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/limiterd/limiter/bucket"
)

// Config holds the state machine's parameters. They shape replicated state, so every member of
// a cluster must use the same values (the defaults unless you have a reason).
type Config struct {
	// Skew: a stamp behind the clock by more than this is counted as a clock reset (for
	// operators); either way the clock does not move backward.
	Skew time.Duration
	// DedupWindow is how long, in log time, a request ID's outcome is remembered.
	DedupWindow time.Duration
	// DedupMax bounds the exactly-once table; the oldest records are dropped first beyond it.
	DedupMax int
	// SweepInterval is how long, in log time, a full pass of idle-bucket eviction takes.
	SweepInterval time.Duration
	// MaxLimits bounds the number of limits; creating one more is refused (ErrTooManyLimits).
	MaxLimits int
}

// DefaultConfig returns the parameters every cluster should use.
func DefaultConfig() Config {
	return Config{
		Skew:          bucket.DefaultSkew,
		DedupWindow:   2 * time.Minute,
		DedupMax:      DedupMaxFor(512 << 20), // 8,388,608: 2 minutes at 69,000 takes/s
		SweepInterval: 10 * time.Second,
		MaxLimits:     10_000,
	}
}

// DedupRecordBytes is the memory budget per recorded request ID that DedupMaxFor assumes: a
// one-item take's record costs about 60 bytes (BENCHMARKS.md).
const DedupRecordBytes = 64

// DedupMaxFor is the exactly-once table's cap for a memory budget in bytes.
func DedupMaxFor(budget int64) int { return int(max(1, budget/DedupRecordBytes)) }

// Fingerprint identifies the parameters, so members can refuse a peer whose state machine would
// diverge from theirs (every member must use the same Config).
func (c Config) Fingerprint() uint64 {
	h := fnv.New64a()
	for _, v := range []int64{int64(c.Skew), int64(c.DedupWindow), int64(c.DedupMax), int64(c.SweepInterval), int64(c.MaxLimits)} {
		_ = binary.Write(h, binary.LittleEndian, v)
	}
	return h.Sum64()
}

// Validate checks the constraints between fields.
func (c Config) Validate() error {
	switch {
	case c.Skew < 0:
		return fmt.Errorf("fsm config: Skew %v must not be negative", c.Skew)
	case c.DedupWindow <= 0:
		return fmt.Errorf("fsm config: DedupWindow %v must be positive", c.DedupWindow)
	case c.DedupMax <= 0:
		return fmt.Errorf("fsm config: DedupMax %d must be positive", c.DedupMax)
	case c.SweepInterval <= 0:
		return fmt.Errorf("fsm config: SweepInterval %v must be positive", c.SweepInterval)
	case c.MaxLimits <= 0:
		return fmt.Errorf("fsm config: MaxLimits %d must be positive", c.MaxLimits)
	}
	return nil
}

// limitState is one named limit and its buckets.
type limitState struct {
	name      string
	limit     bucket.Limit
	keyed     *bucket.Keyed
	admission Admission
	grantTTL  int64 // nanoseconds of log time; local limits only
}

// FSM is the limiter state machine. Apply, Snapshot and Restore are called by one goroutine (the
// node's apply loop); the read methods (Peek, Limits, ...) may be called concurrently with them.
type FSM struct {
	cfg Config

	mu        sync.RWMutex // guards everything below against concurrent readers
	clock     int64        // log time, Unix nanoseconds; never moves backward
	limits    map[string]*limitState
	members   map[string]string // node ID -> API address
	dedup     *dedupTable
	escrow    *escrowState
	cursor    int   // next bucket shard to sweep
	nextSweep int64 // log time of the next sweep step

	applied     atomic.Uint64 // index of the last applied entry
	halted      atomic.Pointer[error]
	clockResets atomic.Uint64 // stamps further behind the clock than Skew (not replicated state)
	takes       atomic.Uint64 // take requests applied (not replicated state; for metrics)
}

// New returns an empty state machine.
func New(cfg Config) (*FSM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	f := &FSM{cfg: cfg}
	f.reset()
	return f, nil
}

func (f *FSM) reset() {
	f.clock = 0
	f.limits = make(map[string]*limitState)
	f.members = make(map[string]string)
	f.dedup = newDedupTable(int64(f.cfg.DedupWindow), f.cfg.DedupMax)
	f.escrow = newEscrow()
	f.cursor = 0
	f.nextSweep = 0
}

// TakeOutcome is the answer to one take request.
type TakeOutcome struct {
	// Results has one decision per item, in order; empty when Err is set. It is shared with the
	// exactly-once table (a replay returns the same slice): do not modify it.
	Results []bucket.Result
	// Replayed is true when this is the recorded answer to an earlier copy of the request.
	Replayed bool
	// Err is set when the request was refused as a whole (unknown limit, bad cost, ...); nothing
	// was consumed.
	Err error
}

// Response is what Apply returns for one entry.
type Response struct {
	Takes  []TakeOutcome   // KindTakeBatch: one per take, in order
	Escrow []EscrowOutcome // KindEscrow: one per op, in order
	Limit  *LimitInfo      // KindSetLimit (Buckets is always 0 here: it is not a function of the log)
	Err    error           // the whole command failed (bad limit, unknown limit, corrupt entry)
}

// LimitInfo describes a limit.
type LimitInfo struct {
	Name    string
	Rate    int64
	Period  time.Duration
	Burst   int64
	Buckets int // buckets held (keys not known to be full)
	// Admission is the limit's admission mode; GrantTTL its grants' TTL (local limits only).
	Admission Admission
	GrantTTL  time.Duration
}

// Apply applies one committed entry at the given log index and returns its response.
// A corrupt entry halts the state machine: this and every later Apply returns ErrHalted and
// changes nothing, because skipping the entry would make replicas diverge.
func (f *FSM) Apply(index uint64, data []byte) *Response {
	if h := f.halted.Load(); h != nil {
		return &Response{Err: fmt.Errorf("%w: %w", ErrHalted, *h)}
	}
	cmd, err := Decode(data)
	if err != nil {
		err = fmt.Errorf("entry %d: %w", index, err)
		f.halted.Store(&err)
		return &Response{Err: err}
	}
	f.mu.Lock()
	resp := f.apply(&cmd)
	f.mu.Unlock()
	f.applied.Store(index)
	return resp
}

func (f *FSM) apply(cmd *Command) *Response {
	f.advance(cmd.Stamp)
	f.escrow.advance(f.clock) // grants due by this entry's time end before it applies
	var resp Response
	switch {
	case cmd.TakeBatch != nil:
		resp.Takes = make([]TakeOutcome, len(cmd.TakeBatch))
		for i := range cmd.TakeBatch {
			resp.Takes[i] = f.applyTake(&cmd.TakeBatch[i], cmd.BindingDenials)
		}
	case cmd.SetLimit != nil:
		resp.Limit, resp.Err = f.setLimit(*cmd.SetLimit)
	case cmd.DeleteLimit != nil:
		if _, ok := f.limits[cmd.DeleteLimit.Name]; !ok {
			resp.Err = fmt.Errorf("%w: %q", ErrUnknownLimit, cmd.DeleteLimit.Name)
		}
		delete(f.limits, cmd.DeleteLimit.Name)
		f.escrow.dropLimit(cmd.DeleteLimit.Name) // its holders' escrow is spent
	case cmd.Escrow != nil:
		resp.Escrow = make([]EscrowOutcome, len(cmd.Escrow))
		for i := range cmd.Escrow {
			resp.Escrow[i] = f.applyEscrow(&cmd.Escrow[i])
		}
	case cmd.SetMember != nil:
		if cmd.SetMember.APIAddr == "" {
			delete(f.members, cmd.SetMember.ID)
		} else {
			f.members[cmd.SetMember.ID] = cmd.SetMember.APIAddr
		}
	}
	f.dedup.expire(f.clock)
	f.sweep()
	return &resp
}

// addClamped returns a+b for b >= 0, saturating at MaxInt64 instead of wrapping: a stamp near
// the end of time must not make a record expire, or a sweep fall due, in the past.
func addClamped(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// advance moves the log clock to the entry's stamp; the clock never moves backward, so a stamp
// behind it means no time passed and no token can be granted twice.
func (f *FSM) advance(stamp int64) {
	if stamp >= f.clock {
		f.clock = stamp
		return
	}
	if uint64(f.clock)-uint64(stamp) > uint64(f.cfg.Skew) { // unsigned: no overflow for any stamp
		f.clockResets.Add(1)
	}
}

// sweep evicts full buckets one shard at a time, paced by log time, so the cost is spread
// thinly and the schedule is the same on every replica.
func (f *FSM) sweep() {
	if f.clock < f.nextSweep || len(f.limits) == 0 {
		return
	}
	for _, ls := range f.limits {
		ls.keyed.EvictShard(f.cursor, f.clock)
	}
	f.cursor = (f.cursor + 1) % bucket.ShardCount
	f.nextSweep = addClamped(f.clock, int64(f.cfg.SweepInterval)/bucket.ShardCount)
}

// applyTake decides one take request, or answers a retry of it from the exactly-once table. An
// outcome that admitted something binds: its retry gets it again. One that admitted nothing
// (every item denied, or refused as a whole) binds nothing unless bindingDenials (entries of
// earlier versions): its retry is decided afresh and recorded in its place, so a request consumes
// at most once and the answer a retry gets does not depend on whether the first attempt was
// answered from the log or from the leader's lease (node/local.go records nothing).
func (f *FSM) applyTake(t *Take, bindingDenials bool) TakeOutcome {
	f.takes.Add(1)
	if len(t.RequestID) > MaxRequestIDLen {
		// Refused before the table: an over-long ID is never recorded (nor could a snapshot
		// hold it).
		return TakeOutcome{Err: invalid("request ID of %d bytes exceeds %d", len(t.RequestID), MaxRequestIDLen)}
	}
	fp := t.fingerprint()
	var key idKey
	if t.RequestID != "" {
		key = keyOf(t.RequestID) // hashed once: looked up, then recorded under it
		if r, ok := f.dedup.get(key); ok {
			if r.fp != fp {
				return TakeOutcome{Err: fmt.Errorf("%w: %q", ErrRequestIDReused, t.RequestID)}
			}
			// A denial of the earlier kind binds too, when its outcome was kept (one recorded by
			// a current entry was not: it is decided afresh, the same on every replica).
			if r.admitted || (bindingDenials && r.kept) {
				return r.replay()
			}
		}
	}
	results, err := f.decide(t)
	if t.RequestID != "" {
		f.dedup.put(key, fp, addClamped(f.clock, f.dedup.window), &outcome{results: results, err: record(err)}, bindingDenials)
	}
	return TakeOutcome{Results: results, Err: err}
}

// decide validates every item first, so a request is refused as a whole or applied as a whole.
func (f *FSM) decide(t *Take) ([]bucket.Result, error) {
	states, err := f.check(t)
	if err != nil {
		return nil, err
	}
	results := make([]bucket.Result, len(t.Items))
	for i, it := range t.Items {
		res, err := states[i].keyed.Take(it.Key, f.clock, it.Cost)
		if err != nil { // unreachable after validation; fail loudly rather than silently
			return nil, fmt.Errorf("take %q/%q: %w", it.Limit, it.Key, err)
		}
		results[i] = res
	}
	return results, nil
}

// check applies the refusal rules to a take request: what makes it fail as a whole, whatever
// the buckets hold. It returns each item's limit. The caller holds f.mu.
func (f *FSM) check(t *Take) ([]*limitState, error) {
	if len(t.Items) == 0 || len(t.Items) > MaxItems {
		return nil, invalid("%d items; want 1 to %d", len(t.Items), MaxItems)
	}
	states := make([]*limitState, len(t.Items))
	for i, it := range t.Items {
		// Names and keys are checked here too, not only by the server: what is recorded (in
		// error messages) must stay within what a snapshot can hold.
		if err := CheckName(it.Limit); err != nil {
			return nil, err
		}
		if err := CheckKey(it.Key); err != nil {
			return nil, err
		}
		ls, ok := f.limits[it.Limit]
		if !ok {
			return nil, fmt.Errorf("%w: %q", ErrUnknownLimit, it.Limit)
		}
		if it.Cost <= 0 {
			return nil, fmt.Errorf("%w: cost %d must be positive", bucket.ErrInvalidCost, it.Cost)
		}
		if it.Cost > ls.limit.Burst() {
			return nil, fmt.Errorf("%w: cost %d, limit %q has burst %d: it can never be granted", bucket.ErrCostExceedsBurst, it.Cost, it.Limit, ls.limit.Burst())
		}
		states[i] = ls
	}
	return states, nil
}

// Refusal reports whether applying t now would refuse it as a whole (unknown limit, cost above
// the burst, bad item), with the error apply would record. These rules live only here, so an
// answer given from local state and the log's answer agree.
func (f *FSM) Refusal(t Take) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	_, err := f.check(&t)
	return err
}

func (f *FSM) setLimit(spec LimitSpec) (*LimitInfo, error) {
	if err := CheckName(spec.Name); err != nil {
		return nil, err
	}
	l, err := bucket.NewLimit(spec.Rate, spec.Period, spec.Burst)
	if err != nil {
		return nil, fmt.Errorf("limit %q: %w", spec.Name, err)
	}
	ttl, err := spec.EffectiveTTL()
	if err != nil {
		return nil, fmt.Errorf("limit %q: %w", spec.Name, err)
	}
	ls, ok := f.limits[spec.Name]
	if !ok && len(f.limits) >= f.cfg.MaxLimits {
		return nil, fmt.Errorf("%w: %d limits exist; delete one first", ErrTooManyLimits, len(f.limits))
	}
	// Buckets here see only the log clock, which never moves backward, so they need no skew
	// tolerance; with none, eviction drops a bucket as soon as it is full, on every replica alike.
	if !ok {
		ls = &limitState{name: spec.Name, limit: l, keyed: bucket.NewKeyed(l, bucket.WithSkew(0))}
		f.limits[spec.Name] = ls
	} else if ls.limit != l {
		ls.keyed.SetLimit(l, f.clock)
		ls.limit = l
	}
	// A switch to linearizable stops new grants; outstanding ones run out by their TTL.
	ls.admission, ls.grantTTL = spec.Admission, int64(ttl)
	info := ls.info()
	info.Buckets = 0 // how many buckets are held depends on eviction timing, not on the log
	return info, nil
}

func (ls *limitState) info() *LimitInfo {
	return &LimitInfo{Name: ls.name, Rate: ls.limit.Rate(), Period: ls.limit.Period(), Burst: ls.limit.Burst(), Buckets: ls.keyed.Len(),
		Admission: ls.admission, GrantTTL: time.Duration(ls.grantTTL)}
}

// Check validates the admission fields of a spec the way Apply will (the rate, period and burst
// are checked by bucket.NewLimit there), so a bad spec is refused before it reaches the log.
func (spec LimitSpec) Check() error {
	_, err := spec.EffectiveTTL()
	return err
}

// EffectiveTTL checks the admission fields of a spec and returns the grant TTL it sets: the
// default for a local limit without one, none for a linearizable limit.
func (spec LimitSpec) EffectiveTTL() (time.Duration, error) {
	switch spec.Admission {
	case AdmitLinearizable:
		if spec.GrantTTL != 0 {
			return 0, invalid("a grant TTL (%v) applies only to local admission", spec.GrantTTL)
		}
		return 0, nil
	case AdmitLocal:
		if spec.GrantTTL == 0 {
			return DefaultGrantTTL, nil
		}
		if spec.GrantTTL < MinGrantTTL || spec.GrantTTL > MaxGrantTTL {
			return 0, invalid("grant TTL %v; want %v to %v", spec.GrantTTL, MinGrantTTL, MaxGrantTTL)
		}
		return spec.GrantTTL, nil
	}
	return 0, invalid("admission mode %d; want linearizable (0) or local (1)", spec.Admission)
}

// CheckName validates a limit name: 1 to MaxNameLen bytes of letters, digits and ._:/-.
func CheckName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return invalid("limit name of %d bytes; want 1 to %d", len(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == ':' || c == '/') {
			return invalid("limit name %q has character %q; use letters, digits and . _ - : /", name, c)
		}
	}
	return nil
}

// CheckKey validates a bucket key: 1 to MaxKeyLen bytes, any content.
func CheckKey(key string) error {
	if key == "" || len(key) > MaxKeyLen {
		return invalid("key of %d bytes; want 1 to %d", len(key), MaxKeyLen)
	}
	return nil
}

// Peek reports what a take of cost from key under limit would decide at time now, changing
// nothing. now is raised to the log clock if behind it, so a peek never sees time run backward.
func (f *FSM) Peek(limit, key string, cost int64, now int64) (bucket.Result, error) {
	if err := CheckKey(key); err != nil {
		return bucket.Result{}, err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	ls, ok := f.limits[limit]
	if !ok {
		return bucket.Result{}, fmt.Errorf("%w: %q", ErrUnknownLimit, limit)
	}
	if now < f.clock {
		now = f.clock
	}
	return ls.keyed.Peek(key, now, cost)
}

// Lookup is what the exactly-once table holds for a take request's ID.
type Lookup int

// Lookup results.
const (
	// NotRecorded: the ID is not in the table (or the request has none).
	NotRecorded Lookup = iota
	// Binding: the same request was recorded and admitted something: its outcome is the answer.
	Binding
	// NotBinding: the same request was recorded and admitted nothing: it is decided afresh.
	NotBinding
	// OtherContent: the ID was recorded for a different request; only the log may refuse it.
	OtherContent
)

// Recorded looks a take's request ID up in the exactly-once table. When the outcome binds
// (Binding) it is returned with Replayed set, so a retry can be answered without a log entry.
func (f *FSM) Recorded(t Take) (TakeOutcome, Lookup) {
	if t.RequestID == "" {
		return TakeOutcome{}, NotRecorded
	}
	f.mu.RLock()
	r, ok := f.dedup.get(keyOf(t.RequestID))
	f.mu.RUnlock()
	switch {
	case !ok:
		return TakeOutcome{}, NotRecorded
	case r.fp != t.fingerprint():
		return TakeOutcome{}, OtherContent
	case !r.admitted:
		return TakeOutcome{}, NotBinding
	}
	return r.replay(), Binding
}

// Limit returns the named limit.
func (f *FSM) Limit(name string) (*LimitInfo, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	ls, ok := f.limits[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownLimit, name)
	}
	return ls.info(), nil
}

// Limits returns every limit, sorted by name.
func (f *FSM) Limits() []*LimitInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*LimitInfo, 0, len(f.limits))
	for _, ls := range f.limits {
		out = append(out, ls.info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Members returns the recorded API address of every member that registered one.
func (f *FSM) Members() map[string]string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]string, len(f.members))
	for k, v := range f.members {
		out[k] = v
	}
	return out
}

// Clock returns the log time of the last applied entry (Unix nanoseconds).
func (f *FSM) Clock() int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.clock
}

// Config returns the parameters the state machine was made with.
func (f *FSM) Config() Config { return f.cfg }

// AppliedIndex is the log index of the last entry applied (or skipped).
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// Halted reports why the state machine stopped applying entries (wrapping ErrHalted), or nil.
// Its state is then frozen at the entry before, so nothing may be read from it as current.
func (f *FSM) Halted() error {
	if h := f.halted.Load(); h != nil {
		return fmt.Errorf("%w: %w", ErrHalted, *h)
	}
	return nil
}

// Stats are counters for operators.
type Stats struct {
	Limits     int
	Buckets    int
	RequestIDs int // size of the exactly-once table
	// DedupSpan is how long a request recorded now is sure to stay in the exactly-once table:
	// DedupWindow, or less while the table is at DedupMax (retries must arrive within it).
	DedupSpan   time.Duration
	ClockResets uint64
	Takes       uint64
	Clock       int64
	Halted      error
}

// Stats returns current counters.
func (f *FSM) Stats() Stats {
	f.mu.RLock()
	s := Stats{Limits: len(f.limits), RequestIDs: f.dedup.len(), Clock: f.clock, DedupSpan: time.Duration(f.dedup.span(f.clock))}
	for _, ls := range f.limits {
		s.Buckets += ls.keyed.Len()
	}
	f.mu.RUnlock()
	s.ClockResets = f.clockResets.Load()
	s.Takes = f.takes.Load()
	if h := f.halted.Load(); h != nil {
		s.Halted = *h
	}
	return s
}
