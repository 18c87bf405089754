package bucket

import (
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// shardCount is a power of two so a shard is picked with a mask. 64 shards keep contention low
// for hundreds of goroutines on many keys while costing little memory when the store is small.
const shardCount = 64

// ShardCount is the number of lock shards in a Keyed store, for callers that spread eviction
// over time with EvictShard.
const ShardCount = shardCount

// Keyed is a store of buckets keyed by string, all under one Limit: the embedded (single-process)
// limiter and the per-limit state of the replicated FSM. It is safe for concurrent use; keys are
// spread over sharded locks so takes on different keys proceed in parallel.
//
// A key that has no bucket behaves as a full bucket, so buckets that have refilled to full are
// dropped by Evict (driven by the caller's clock, hence deterministic) or by the optional
// background sweeper; dropping one changes no answer.
type Keyed struct {
	// shards are allocated on first use, so a store with few keys (or none: a limit nobody has
	// used yet) costs a few hundred bytes, not 64 padded shards.
	shards [shardCount]atomic.Pointer[shard]
	skew   int64
	limit  atomic.Pointer[Limit] // the newest limit, for Limit() and new shards; each shard holds its own copy
	setMu  sync.Mutex            // serialises SetLimit calls and shard creation
}

// shard holds its buckets in a slab indexed by a map, so a take on an existing key only reads
// the map (a Go map write touches the map's header, and the 64 headers, allocated together,
// share cache lines: writing them from two cores made parallel takes slower than serial ones).
type shard struct {
	mu    sync.Mutex
	idx   map[string]uint32
	slab  []Bucket
	free  []uint32 // slab slots of evicted buckets
	limit Limit
	_     [256 - 8 - 8 - 24 - 24 - unsafe.Sizeof(Limit{})]byte // whole cache lines: no false sharing
}

// get returns key's bucket, or nil.
func (s *shard) get(key string) *Bucket {
	if i, ok := s.idx[key]; ok {
		return &s.slab[i]
	}
	return nil
}

// put stores b under key, reusing a free slot.
func (s *shard) put(key string, b Bucket) {
	if i, ok := s.idx[key]; ok {
		s.slab[i] = b
		return
	}
	var i uint32
	if n := len(s.free); n > 0 {
		i, s.free = s.free[n-1], s.free[:n-1]
	} else {
		i = uint32(len(s.slab))
		s.slab = append(s.slab, Bucket{})
	}
	s.slab[i] = b
	s.idx[key] = i
}

// compact rebuilds the slab once most of it is free, so memory follows the live keys.
func (s *shard) compact() {
	if len(s.slab) < 1024 || len(s.free) < len(s.slab)*3/4 {
		return
	}
	slab := make([]Bucket, 0, len(s.idx)+len(s.idx)/4)
	idx := make(map[string]uint32, len(s.idx))
	for key, i := range s.idx {
		idx[key] = uint32(len(slab))
		slab = append(slab, s.slab[i])
	}
	s.idx, s.slab, s.free = idx, slab, nil
}

// Option configures a Keyed store.
type Option func(*Keyed)

// WithSkew sets the clock-skew tolerance (default DefaultSkew): a time up to d behind a bucket's
// last refill counts as no time passed; further behind is a clock reset and re-anchors the bucket.
func WithSkew(d time.Duration) Option {
	return func(k *Keyed) {
		if d >= 0 {
			k.skew = int64(d)
		}
	}
}

// NewKeyed returns an empty store whose buckets follow limit l.
func NewKeyed(l Limit, opts ...Option) *Keyed {
	k := &Keyed{skew: int64(DefaultSkew)}
	for _, o := range opts {
		o(k)
	}
	k.limit.Store(&l)
	return k
}

// shardIndex is the shard a key lives in.
func shardIndex(key string) int { return int(shardHash(key) & (shardCount - 1)) }

// shardFor returns key's shard, creating it on first use.
func (k *Keyed) shardFor(key string) *shard {
	i := shardIndex(key)
	if s := k.shards[i].Load(); s != nil {
		return s
	}
	k.setMu.Lock() // a shard made now takes the limit SetLimit last stored, never an older one
	defer k.setMu.Unlock()
	if s := k.shards[i].Load(); s != nil {
		return s
	}
	s := &shard{limit: *k.limit.Load(), idx: make(map[string]uint32)}
	k.shards[i].Store(s)
	return s
}

// shardHash hashes a key to pick its shard, eight bytes at a time. It is deterministic across
// processes (unlike maphash), so the shard a key lives in, and therefore the order in which the
// replicated FSM sweeps keys, is the same on every replica.
func shardHash(s string) uint32 {
	h := uint64(len(s)) * 0x9e3779b97f4a7c15
	for len(s) >= 8 {
		w := uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
			uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
		h = (h ^ w) * 0xff51afd7ed558ccd
		h ^= h >> 32
		s = s[8:]
	}
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * 0xc4ceb9fe1a85ec53
	}
	h ^= h >> 29
	h *= 0x94d049bb133111eb
	return uint32(h >> 32)
}

// Limit returns the store's current limit.
func (k *Keyed) Limit() Limit { return *k.limit.Load() }

// Skew returns the clock-skew tolerance.
func (k *Keyed) Skew() time.Duration { return time.Duration(k.skew) }

// Take consumes cost tokens from key's bucket at time now (nanoseconds), all or nothing.
// Errors wrap ErrInvalidCost or ErrCostExceedsBurst; nothing is consumed then.
func (k *Keyed) Take(key string, now, cost int64) (Result, error) {
	s := k.shardFor(key)
	s.mu.Lock()
	l := &s.limit
	if err := l.checkCost(cost); err != nil {
		s.mu.Unlock()
		return Result{Limit: l.burst, RetryAfter: Never}, err
	}
	if b := s.get(key); b != nil {
		res, _ := b.Take(l, now, cost, time.Duration(k.skew))
		s.mu.Unlock()
		return res, nil
	}
	b := NewBucket(l, now)
	res, _ := b.Take(l, now, cost, time.Duration(k.skew))
	s.put(key, b) // allowed: an absent bucket is full and cost <= burst
	s.mu.Unlock()
	return res, nil
}

// Peek reports what a take of cost would decide at now, changing nothing.
func (k *Keyed) Peek(key string, now, cost int64) (Result, error) {
	s := k.shards[shardIndex(key)].Load()
	if s == nil { // no bucket: a full one under the current limit
		l := k.Limit()
		b := NewBucket(&l, now)
		return b.Peek(&l, now, cost, time.Duration(k.skew))
	}
	s.mu.Lock()
	l := &s.limit
	b := NewBucket(l, now)
	if p := s.get(key); p != nil {
		b = *p
	}
	res, err := b.Peek(l, now, cost, time.Duration(k.skew))
	s.mu.Unlock()
	return res, err
}

// SetLimit changes the limit live. Each bucket is refilled at the old rate up to now and then
// rescaled to the same fraction of the new capacity. Shards switch one at a time under their
// locks, so a concurrent take sees its bucket entirely before or entirely after the change and
// never fails because of it.
func (k *Keyed) SetLimit(l Limit, now int64) {
	k.setMu.Lock()
	defer k.setMu.Unlock()
	for i := range k.shards {
		s := k.shards[i].Load()
		if s == nil {
			continue
		}
		s.mu.Lock()
		old := s.limit
		for _, i := range s.idx {
			s.slab[i].Rescale(&old, &l, now, time.Duration(k.skew))
		}
		s.limit = l
		s.mu.Unlock()
	}
	k.limit.Store(&l)
}

// Evict drops every bucket that was already full skew before now (so that a take whose clock reads
// up to the skew tolerance behind the sweeper's still gets the answer it would have got) and
// returns how many it dropped. After a clock reset by more than the skew, a dropped bucket reads
// as full where the kept one would have re-anchored without refill: keep clocks monotonic (the
// replicated FSM's is) where that matters.
func (k *Keyed) Evict(now int64) int {
	n := 0
	for i := range k.shards {
		n += k.EvictShard(i, now)
	}
	return n
}

// EvictShard drops the full buckets of one shard (0 <= i < ShardCount), so a caller can spread
// eviction work over time. An out-of-range i evicts nothing.
func (k *Keyed) EvictShard(i int, now int64) int {
	if i < 0 || i >= shardCount {
		return 0
	}
	s := k.shards[i].Load()
	if s == nil {
		return 0
	}
	at := now - k.skew
	if at > now { // underflow near the start of the int64 range
		return 0
	}
	s.mu.Lock()
	n := 0
	for key, i := range s.idx {
		if s.slab[i].Full(&s.limit, at) {
			delete(s.idx, key)
			s.free = append(s.free, i)
			n++
		}
	}
	s.compact()
	s.mu.Unlock()
	return n
}

// Len returns the number of buckets held (keys not known to be full).
func (k *Keyed) Len() int {
	n := 0
	for i := range k.shards {
		s := k.shards[i].Load()
		if s == nil {
			continue
		}
		s.mu.Lock()
		n += len(s.idx)
		s.mu.Unlock()
	}
	return n
}

// Get returns key's bucket and whether the store holds one.
func (k *Keyed) Get(key string) (Bucket, bool) {
	s := k.shards[shardIndex(key)].Load()
	if s == nil {
		return Bucket{}, false
	}
	s.mu.Lock()
	var b Bucket
	p := s.get(key)
	if p != nil {
		b = *p
	}
	s.mu.Unlock()
	return b, p != nil
}

// Put stores a bucket for key (used to restore a snapshot).
func (k *Keyed) Put(key string, b Bucket) {
	s := k.shardFor(key)
	s.mu.Lock()
	s.put(key, b)
	s.mu.Unlock()
}

// Range calls fn for each bucket, shard by shard, holding that shard's lock; fn must not call
// back into the store. Iteration order is unspecified; sort if you need determinism.
func (k *Keyed) Range(fn func(key string, b Bucket)) {
	for i := range k.shards {
		s := k.shards[i].Load()
		if s == nil {
			continue
		}
		s.mu.Lock()
		for key, i := range s.idx {
			fn(key, s.slab[i])
		}
		s.mu.Unlock()
	}
}

// StartSweeper evicts full buckets every interval in the background, reading the time from
// clock (nanoseconds). It is meant for the embedded mode; replicated state evicts from the log's
// clock instead. It returns a function that stops the sweeper and waits for it to exit.
func (k *Keyed) StartSweeper(interval time.Duration, clock func() int64) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				k.Evict(clock())
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		<-exited
	}
}

// TakeUpTo consumes between min and max whole tokens from key's bucket at now (see
// Bucket.TakeUpTo) and returns how many it took.
func (k *Keyed) TakeUpTo(key string, now, min, max int64) (int64, Result, error) {
	s := k.shardFor(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	l := &s.limit
	b := s.get(key)
	if b == nil {
		fresh := NewBucket(l, now)
		n, res, err := fresh.TakeUpTo(l, now, min, max, time.Duration(k.skew))
		if err == nil && n > 0 {
			s.put(key, fresh)
		}
		return n, res, err
	}
	return b.TakeUpTo(l, now, min, max, time.Duration(k.skew))
}

// Credit returns n tokens to key's bucket at now, capped at the burst (see Bucket.Credit). An
// absent bucket is full, so crediting it changes nothing.
func (k *Keyed) Credit(key string, now, n int64) {
	s := k.shardFor(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.get(key); b != nil {
		b.Credit(&s.limit, now, n, time.Duration(k.skew))
	}
}

// Available reports the whole tokens key's bucket holds at now, changing nothing.
func (k *Keyed) Available(key string, now int64) int64 {
	s := k.shards[shardIndex(key)].Load()
	if s == nil {
		return k.Limit().Burst()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l := &s.limit
	b := NewBucket(l, now)
	if p := s.get(key); p != nil {
		b = *p
	}
	b.refill(l, now, k.skew)
	return int64(l.byP.div(b.tokens))
}
