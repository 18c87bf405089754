package bucket

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"os"
	"testing"
	"time"
)

// FuzzBucketSequence decodes its input into a limit, a skew and a sequence of operations (takes
// and peeks of any cost, limit changes, clock steps forward and backward, small and large, and
// evictions) and runs them against a bare Bucket and two Keyed stores, one that never evicts and
// one that does. It checks:
//
//   - no panic, and NewLimit refuses an invalid limit with ErrInvalidLimit;
//   - the Bucket and the non-evicting store agree exactly (state and every Result) with a
//     reference model of the documented semantics written in math/big, so with no overflow;
//   - 0 <= tokens <= capacity, and 0 <= Remaining <= burst, after every operation;
//   - on every bucket of all three, tokens granted so far never exceed the budget
//     initial burst + Σ rate × elapsed + Σ max(0, burst increase at a limit change),
//     where elapsed is measured as the bucket measures it (forward steps from its anchor; a step
//     back within the skew adds nothing and keeps the anchor; a larger one re-anchors, adding
//     nothing). In fact tokens held + granted <= budget, which is what is asserted (see fuzzAccount).
//
// Why the budget holds: a refill over a measured dt adds at most r×dt units = rate×dt/period
// tokens; a take removes exactly its cost; a limit change keeps the fraction of capacity rounded
// down, so tokens become at most tokens × newBurst/oldBurst <= tokens + max(0, newBurst-oldBurst)
// because tokens <= oldBurst. (The capacity increase term cannot be dropped: a bucket refilled to
// full under burst 1 is full again under burst 1000; see
// TestRateChange_FullBucketStaysFullAcrossDownAndUpscale.) An evicted bucket was full at the
// eviction time E >= its anchor, so its budget is charged the elapsed time up to E; it comes back
// full, anchored at the time of its next take.
func FuzzBucketSequence(f *testing.F) {
	// The seed corpus is in testdata/fuzz/FuzzBucketSequence; the encoding is decodeLimit,
	// decodeCost and the op switch in runFuzzSequence.
	f.Fuzz(func(t *testing.T, data []byte) {
		runFuzzSequence(t, &fuzzInput{b: data})
	})
}

// fuzzTimeLimit bounds the clock to ±2^61 ns (±73 years around the epoch), so that no two times
// are more than MaxInt64 apart: beyond that refill's int64 difference wraps, a known bug pinned by
// the skipped TestClock_BackwardStepBeyondInt64RangeIsAReset.
const fuzzTimeLimit = int64(1) << 61

const fuzzMaxOps = 300

// fuzzTrace logs every take and peek; set BUCKET_FUZZ_TRACE=1 to follow a failing input.
var fuzzTrace = os.Getenv("BUCKET_FUZZ_TRACE") != ""

type fuzzInput struct{ b []byte }

func (in *fuzzInput) empty() bool { return len(in.b) == 0 }

func (in *fuzzInput) byte() byte {
	if len(in.b) == 0 {
		return 0
	}
	c := in.b[0]
	in.b = in.b[1:]
	return c
}

func (in *fuzzInput) u16() uint16 { return uint16(in.byte())<<8 | uint16(in.byte()) }

func (in *fuzzInput) u64() uint64 {
	return uint64(in.u16())<<48 | uint64(in.u16())<<32 | uint64(in.u16())<<16 | uint64(in.u16())
}

var (
	fuzzPow10   = [...]int64{1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9}
	fuzzPeriods = [...]time.Duration{1, time.Microsecond, time.Millisecond, 7 * time.Millisecond, time.Second,
		3 * time.Second, time.Minute, time.Hour, 24 * time.Hour, 86400*time.Second + 1}
)

// decodeLimit reads a limit. Selector values that are multiples of 16 take raw 64-bit values,
// mostly invalid or unrepresentable; the rest build rate = m×10^e per a period from a list
// (optionally plus up to 65535ns, for awkward fractions) with burst default or m×10^e.
func decodeLimit(t *testing.T, in *fuzzInput) (Limit, bool) {
	sel := in.byte()
	var (
		rate, burst int64
		period      time.Duration
	)
	if sel%16 == 0 {
		rate, period, burst = int64(in.u64()), time.Duration(in.u64()), int64(in.u64())
	} else {
		rate = int64(1+in.byte()) * fuzzPow10[in.byte()%10]
		period = fuzzPeriods[in.byte()%byte(len(fuzzPeriods))]
		if sel&0x10 != 0 {
			period += time.Duration(in.u16())
		}
		if sel&0x20 != 0 {
			burst = int64(1+in.byte()) * fuzzPow10[in.byte()%8]
		}
	}
	l, err := NewLimit(rate, period, burst)
	if err != nil {
		if !errors.Is(err, ErrInvalidLimit) || l.Valid() {
			t.Helper()
			t.Fatalf("NewLimit(%d, %d, %d) = %v, %v; want an invalid Limit and ErrInvalidLimit", rate, period, burst, l, err)
		}
		return Limit{}, false
	}
	// The representation is the exact reduced fraction: cap = burst × p, r/p = rate/period.
	lr := new(big.Int).Mul(big.NewInt(rate), new(big.Int).SetUint64(l.p))
	rp := new(big.Int).Mul(big.NewInt(int64(period)), new(big.Int).SetUint64(l.r))
	if lr.Cmp(rp) != 0 || new(big.Int).Mul(big.NewInt(l.burst), new(big.Int).SetUint64(l.p)).Cmp(new(big.Int).SetUint64(l.cap)) != 0 ||
		(burst != 0 && l.burst != burst) || (burst == 0 && l.burst != rate) || l.cap > math.MaxInt64 {
		t.Helper()
		t.Fatalf("NewLimit(%d, %d, %d) = %+v: not the exact reduced representation", rate, period, burst, l)
	}
	return l, true
}

func decodeCost(in *fuzzInput, burst int64) int64 {
	switch c := in.byte(); {
	case c == 255:
		return burst + 1
	case c == 254:
		return 0
	case c == 253:
		return -int64(in.byte())
	case c == 252:
		return burst
	case c == 251:
		return math.MaxInt64
	case c >= 128:
		return 1 + int64(in.u64()>>1)%burst
	default:
		return 1 + int64(c)%min(burst, 128)
	}
}

var fuzzKeys = [...]string{"a", "b", "c", "d"}

func runFuzzSequence(t *testing.T, in *fuzzInput) {
	cur, ok := decodeLimit(t, in)
	if !ok {
		cur = MustLimit(1000, time.Minute, 0)
	}
	var skew int64
	switch s := in.byte(); s % 4 {
	case 0:
		skew = int64(DefaultSkew)
	case 1:
		skew = 0
	case 2:
		skew = int64(in.u16()) * int64(time.Microsecond)
	case 3:
		skew = 1
	}
	now := t0

	bare := NewBucket(&cur, now)
	bareRef := newRefBucket(&cur, now)
	bareAcc := newFuzzAccount(&cur, now)
	keep, evict := NewKeyed(cur, WithSkew(time.Duration(skew))), NewKeyed(cur, WithSkew(time.Duration(skew)))
	keepRef := map[string]*refBucket{}
	keepAcc, evictAcc := map[string]*fuzzAccount{}, map[string]*fuzzAccount{}
	for _, k := range fuzzKeys {
		keepAcc[k], evictAcc[k] = &fuzzAccount{}, &fuzzAccount{}
	}

	for op := 0; op < fuzzMaxOps && !in.empty(); op++ {
		code := in.byte()
		key := fuzzKeys[(code>>4)%4]
		d := &opDesc{n: op, kind: "clock", key: key, cur: cur, skew: skew, shard: -1}
		what := d.String // formatted only on failure, to keep executions cheap
		switch code % 10 {
		case 0, 1, 2: // take or peek
			cost := decodeCost(in, cur.burst)
			peek := code%10 == 2
			d.kind, d.now, d.cost = "Take", now, cost
			if peek {
				d.kind = "Peek"
			}

			// The bare bucket and its model.
			var got, want Result
			var gerr, werr error
			if peek {
				got, gerr = bare.Peek(&cur, now, cost, time.Duration(skew))
				want, werr = bareRef.peek(&cur, now, cost, skew)
			} else {
				got, gerr = bare.Take(&cur, now, cost, time.Duration(skew))
				want, werr = bareRef.take(&cur, now, cost, skew)
				bareAcc.take(&cur, now, cost, skew, got.Allowed, gerr)
			}
			checkResult(t, what, "Bucket", got, gerr, want, werr, &cur)

			// The store that never evicts and its model.
			ref, held := keepRef[key]
			if !held {
				ref = newRefBucket(&cur, now)
			}
			if peek {
				got, gerr = keep.Peek(key, now, cost)
				want, werr = ref.peek(&cur, now, cost, skew)
			} else {
				got, gerr = keep.Take(key, now, cost)
				want, werr = ref.take(&cur, now, cost, skew)
				if werr == nil {
					keepRef[key] = ref
				}
				keepAcc[key].take(&cur, now, cost, skew, got.Allowed, gerr)
			}
			checkResult(t, what, "Keyed", got, gerr, want, werr, &cur)
			if fuzzTrace {
				t.Logf("%s: %+v, %v", what(), got, gerr)
			}

			// The evicting store: invariants and the budget only.
			if peek {
				got, gerr = evict.Peek(key, now, cost)
			} else {
				got, gerr = evict.Take(key, now, cost)
				evictAcc[key].take(&cur, now, cost, skew, got.Allowed, gerr)
			}
			if (gerr == nil) != (werr == nil) || got.Remaining < 0 || got.Remaining > cur.burst || got.Limit != cur.burst {
				t.Fatalf("%s evicting Keyed: %+v, %v", what(), got, gerr)
			}

		case 3: // limit change
			next, ok := decodeLimit(t, in)
			if !ok {
				break
			}
			d.kind, d.now, d.next = "SetLimit", now, next
			bare.Rescale(&cur, &next, now, time.Duration(skew))
			bareRef.rescale(&cur, &next, now, skew)
			bareAcc.setLimit(&cur, &next, now, skew)
			keep.SetLimit(next, now)
			evict.SetLimit(next, now)
			for _, k := range fuzzKeys {
				if ref, ok := keepRef[k]; ok {
					ref.rescale(&cur, &next, now, skew)
				}
				keepAcc[k].setLimit(&cur, &next, now, skew)
				evictAcc[k].setLimit(&cur, &next, now, skew)
			}
			cur = next
			if got := keep.Limit(); got != cur {
				t.Fatalf("%s: Limit() = %v", what(), got)
			}

		case 4: // forward, small
			now += int64(in.u16()) * [...]int64{1, int64(time.Microsecond), millis}[in.byte()%3]
		case 5: // forward, large
			now += int64(in.u16()) * minutes
		case 6: // backward around the skew edge, or small
			switch s := in.byte() % 6; s {
			case 0:
				now -= skew
			case 1:
				now -= skew + 1
			case 2:
				now -= max(skew-1, 0)
			case 3:
				now -= int64(in.u16())
			default:
				now -= int64(in.u16()) * int64(time.Microsecond)
			}
		case 7: // backward, large: a clock reset
			now -= int64(in.u16()+1) * minutes
		case 8, 9: // eviction, everything or one shard
			shard := -1
			var n int
			if code%10 == 8 {
				n = evict.Evict(now)
			} else {
				shard = int(in.byte()) % (ShardCount + 2) // sometimes out of range
				n = evict.EvictShard(shard, now)
			}
			d.kind, d.now, d.shard = "Evict", now, shard
			dropped := 0
			for _, k := range fuzzKeys {
				if _, ok := evict.Get(k); !ok && evictAcc[k].present {
					evictAcc[k].evicted(&cur, now)
					dropped++
				}
			}
			if n != dropped {
				t.Fatalf("%s: reported %d evictions, %d keys went", what(), n, dropped)
			}
			// Full must agree with the model: the bucket refilled to now is at capacity.
			for k, ref := range keepRef {
				b, _ := keep.Get(k)
				if got, want := b.Full(&cur, now), ref.full(&cur, now); got != want {
					t.Fatalf("%s: Full(%s) = %v, model %v", what(), k, got, want)
				}
			}
		}
		now = max(-fuzzTimeLimit, min(fuzzTimeLimit, now))
		if d.kind == "clock" {
			d.now = now
		}
		if fuzzTrace && code%10 >= 3 {
			t.Log(what())
		}

		// State checks after every operation.
		checkState(t, what, "Bucket", bare, bareRef, bareAcc, &cur)
		for _, k := range fuzzKeys {
			b, held := keep.Get(k)
			ref, modelled := keepRef[k]
			if held != modelled {
				t.Fatalf("%s: Keyed holds %s = %v, model %v", what(), k, held, modelled)
			}
			if held {
				checkState(t, what, "Keyed "+k, b, ref, keepAcc[k], &cur)
			}
			if b, held := evict.Get(k); held {
				if !evictAcc[k].present {
					t.Fatalf("%s: evicting Keyed holds %s, which should be absent", what(), k)
				}
				checkState(t, what, "evicting Keyed "+k, b, nil, evictAcc[k], &cur)
			}
		}
	}
}

// opDesc describes an operation for failure messages.
type opDesc struct {
	n         int
	kind, key string
	now, cost int64
	cur, next Limit
	skew      int64
	shard     int
}

func (d *opDesc) String() string {
	switch d.kind {
	case "Take", "Peek":
		return fmt.Sprintf("op %d: %s(%s, now=t0%+d, cost=%d) under %v skew %d", d.n, d.kind, d.key, d.now-t0, d.cost, d.cur, d.skew)
	case "SetLimit":
		return fmt.Sprintf("op %d: SetLimit(%v -> %v, now=t0%+d)", d.n, d.cur, d.next, d.now-t0)
	case "Evict":
		return fmt.Sprintf("op %d: Evict(shard %d, now=t0%+d)", d.n, d.shard, d.now-t0)
	}
	return fmt.Sprintf("op %d: clock to t0%+d", d.n, d.now-t0)
}

func checkResult(t *testing.T, what func() string, who string, got Result, gerr error, want Result, werr error, l *Limit) {
	if got != want || !sameErr(gerr, werr) {
		t.Helper() // only when failing: Helper is costly per operation
		t.Fatalf("%s %s = %+v, %v; model %+v, %v", what(), who, got, gerr, want, werr)
	}
	if got.Remaining < 0 || got.Remaining > l.burst || got.RetryAfter < 0 || got.ResetAfter < 0 {
		t.Helper() // only when failing: Helper is costly per operation
		t.Fatalf("%s %s = %+v: out of range", what(), who, got)
	}
}

// checkState checks 0 <= tokens <= capacity, equality with the model (when there is one) and
// tokens held + tokens granted <= budget.
func checkState(t *testing.T, what func() string, who string, b Bucket, ref *refBucket, acc *fuzzAccount, l *Limit) {
	units, last := b.State()
	if units > l.cap {
		t.Helper() // only when failing: Helper is costly per operation
		t.Fatalf("%s %s: %d units above capacity %d", what(), who, units, l.cap)
	}
	if ref != nil && (ref.units.Cmp(new(big.Int).SetUint64(units)) != 0 || ref.last != last) {
		t.Helper() // only when failing: Helper is costly per operation
		t.Fatalf("%s %s: state (units %d, last t0%+d), model (units %s, last t0%+d)", what(), who, units, last-t0, ref.units, ref.last-t0)
	}
	if last != acc.anchor {
		t.Helper() // only when failing: Helper is costly per operation
		t.Fatalf("%s %s: anchor t0%+d, measured anchor t0%+d", what(), who, last-t0, acc.anchor-t0)
	}
	if a := acc.avail; a.Sign() < 0 || a.Cmp(new(big.Int).SetUint64(units)) < 0 {
		t.Helper() // only when failing: Helper is costly per operation
		t.Fatalf("%s %s: %s tokens granted and %d units held (%d per token) exceed the budget: only %s units were available "+
			"(initial burst + rate × measured elapsed + burst increases, less grants)", what(), who, acc.granted, units, l.p, a)
	}
}

// refBucket is the reference model: the documented semantics computed with unbounded integers.
type refBucket struct {
	units *big.Int
	last  int64
}

func newRefBucket(l *Limit, now int64) *refBucket {
	return &refBucket{units: new(big.Int).SetUint64(l.cap), last: now}
}

func (m *refBucket) refill(l *Limit, now, skew int64) {
	if now < m.last {
		if new(big.Int).Sub(big.NewInt(m.last), big.NewInt(now)).Cmp(big.NewInt(skew)) > 0 {
			m.last = now // a clock reset: re-anchor, nothing granted
		}
		return
	}
	dt := new(big.Int).Sub(big.NewInt(now), big.NewInt(m.last))
	m.last = now
	m.units.Add(m.units, dt.Mul(dt, new(big.Int).SetUint64(l.r)))
	if capacity := new(big.Int).SetUint64(l.cap); m.units.Cmp(capacity) > 0 {
		m.units.Set(capacity)
	}
}

func (m *refBucket) take(l *Limit, now, cost, skew int64) (Result, error) {
	return m.decide(l, now, cost, skew, true)
}

func (m *refBucket) peek(l *Limit, now, cost, skew int64) (Result, error) {
	c := &refBucket{units: new(big.Int).Set(m.units), last: m.last}
	return c.decide(l, now, cost, skew, false)
}

func (m *refBucket) decide(l *Limit, now, cost, skew int64, apply bool) (Result, error) {
	switch {
	case cost <= 0:
		return Result{Limit: l.burst, RetryAfter: Never}, ErrInvalidCost
	case cost > l.burst:
		return Result{Limit: l.burst, RetryAfter: Never}, ErrCostExceedsBurst
	}
	m.refill(l, now, skew)
	need := new(big.Int).Mul(big.NewInt(cost), new(big.Int).SetUint64(l.p))
	allowed := need.Cmp(m.units) <= 0
	if allowed && apply {
		m.units.Sub(m.units, need)
	}
	ahead := big.NewInt(max(m.last-now, 0)) // waiting for the clock to reach the anchor
	capacity := new(big.Int).SetUint64(l.cap)
	res := Result{
		Allowed:   allowed,
		Remaining: new(big.Int).Quo(m.units, new(big.Int).SetUint64(l.p)).Int64(),
		Limit:     l.burst,
	}
	if m.units.Cmp(capacity) < 0 {
		res.ResetAfter = time.Duration(satBig(ahead, ceilDiv(new(big.Int).Sub(capacity, m.units), l.r)))
	}
	if !allowed {
		res.RetryAfter = time.Duration(satBig(ahead, ceilDiv(new(big.Int).Sub(need, m.units), l.r)))
	}
	return res, nil
}

func (m *refBucket) rescale(old, next *Limit, now, skew int64) {
	m.refill(old, now, skew)
	m.units.Mul(m.units, new(big.Int).SetUint64(next.cap))
	m.units.Quo(m.units, new(big.Int).SetUint64(old.cap))
}

func (m *refBucket) full(l *Limit, now int64) bool {
	if now < m.last {
		return false
	}
	c := &refBucket{units: new(big.Int).Set(m.units), last: m.last}
	c.refill(l, now, 0)
	return c.units.Cmp(new(big.Int).SetUint64(l.cap)) == 0
}

func ceilDiv(a *big.Int, d uint64) *big.Int {
	dd := new(big.Int).SetUint64(d)
	q := new(big.Int).Add(a, dd)
	q.Sub(q, big.NewInt(1))
	return q.Quo(q, dd)
}

func satBig(a, b *big.Int) int64 {
	s := new(big.Int).Add(a, b)
	if !s.IsInt64() {
		return math.MaxInt64
	}
	return s.Int64()
}

// fuzzAccount tracks, for one bucket, what it may still hold: avail = budget - tokens granted, in
// sub-token units of the current limit, with elapsed time measured the way the documentation says
// the bucket measures it. The invariant checked is held <= avail, so granted <= budget.
//
// At a limit change avail is converted to the new units rounding down, which only tightens the
// check and stays sound: with h = held tokens <= old burst, the new bucket holds
// floor(h × newBurst/oldBurst × p') <= floor(avail × p'/p + max(0, newBurst-oldBurst) × p').
// Integers throughout keep the fuzzer fast (sums of rate×dt/period over many periods would make
// big rationals with huge denominators).
type fuzzAccount struct {
	created, present bool
	anchor           int64
	avail            *big.Int
	granted          *big.Int // tokens, for messages
}

func newFuzzAccount(l *Limit, now int64) *fuzzAccount {
	a := &fuzzAccount{}
	a.create(l, now)
	return a
}

func (a *fuzzAccount) create(l *Limit, now int64) {
	if !a.created {
		a.created = true
		a.avail, a.granted = new(big.Int).SetUint64(l.cap), new(big.Int)
	}
	a.present, a.anchor = true, now
}

// advance accounts for a refill at now: r units per measured nanosecond.
func (a *fuzzAccount) advance(l *Limit, now, skew int64) {
	switch {
	case now >= a.anchor:
		dt := new(big.Int).Sub(big.NewInt(now), big.NewInt(a.anchor))
		a.avail.Add(a.avail, dt.Mul(dt, new(big.Int).SetUint64(l.r)))
		a.anchor = now
	case a.anchor-now > skew:
		a.anchor = now
	}
}

func (a *fuzzAccount) take(l *Limit, now, cost, skew int64, allowed bool, err error) {
	if err != nil {
		return // refused before any refill
	}
	if a.present {
		a.advance(l, now, skew)
	} else {
		a.create(l, now) // a key with no bucket gets a full one at now
	}
	if allowed {
		a.avail.Sub(a.avail, new(big.Int).Mul(big.NewInt(cost), new(big.Int).SetUint64(l.p)))
		a.granted.Add(a.granted, big.NewInt(cost))
	}
}

func (a *fuzzAccount) setLimit(old, next *Limit, now, skew int64) {
	if a.present {
		a.advance(old, now, skew)
	}
	if !a.created {
		return
	}
	a.avail.Mul(a.avail, new(big.Int).SetUint64(next.p))
	a.avail.Div(a.avail, new(big.Int).SetUint64(old.p)) // floor (Euclidean; avail >= 0 if correct)
	if next.burst > old.burst {
		up := new(big.Int).Mul(big.NewInt(next.burst-old.burst), new(big.Int).SetUint64(next.p))
		a.avail.Add(a.avail, up)
	}
}

// evicted accounts for a bucket dropped as full at now: its refill up to now is charged.
func (a *fuzzAccount) evicted(l *Limit, now int64) {
	a.advance(l, now, math.MaxInt64)
	a.present = false
}
