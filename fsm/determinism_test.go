package fsm_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/limiterd/limiter/fsm"
)

// testSeed returns the seed for a randomised test: FSM_SEED if set, else a fresh one. It is
// logged so a failure can be replayed with FSM_SEED=<seed>.
func testSeed(t testing.TB) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FSM_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("FSM_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (rerun with FSM_SEED=%d)", seed, seed)
	return seed
}

// logGen produces a random but plausible log: takes (with retried, reused and invalid request
// IDs, unknown limits, bad costs and keys), limit changes and deletes, members, ticks, and stamps
// that mostly advance but sometimes fall behind (by less than the skew or by hours) or jump ahead.
type logGen struct {
	rng    *rand.Rand
	leader int64          // the proposing leader's clock
	ids    int            // request IDs handed out
	recent []fsm.Take     // takes to retry
	grants []fsm.EscrowOp // grants to retry or settle
}

func newLogGen(seed uint64) *logGen {
	return &logGen{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), leader: t0}
}

var (
	genLimits = []string{"a", "b", "c", "ghost"} // ghost is never created
	genRates  = []int64{4, 10, 100, 1000}
	genPeriod = []time.Duration{7 * time.Millisecond, time.Second, time.Minute, time.Hour}
	genBursts = []int64{0, 0, 5, 50, 5000}
)

func (g *logGen) pick(n int) int { return g.rng.IntN(n) }

func (g *logGen) stamp() int64 {
	switch p := g.pick(100); {
	case p < 70:
		g.leader += g.rng.Int64N(int64(30 * time.Millisecond))
	case p < 78:
		return g.leader - g.rng.Int64N(int64(100*time.Millisecond)) // within the skew
	case p < 82:
		return g.leader - int64(time.Duration(1+g.pick(5))*time.Hour) // a badly slow leader
	case p < 85:
		g.leader += int64(time.Duration(1+g.pick(120)) * time.Second) // an idle stretch
	}
	return g.leader
}

func (g *logGen) item() fsm.Item {
	it := fsm.Item{Limit: genLimits[g.pick(3)], Key: fmt.Sprintf("k%d", g.pick(25)), Cost: 1 + g.rng.Int64N(4)}
	if g.pick(25) == 0 {
		it.Limit = "ghost"
	}
	switch g.pick(40) {
	case 0:
		it.Cost = 0
	case 1:
		it.Cost = 10_000 // above every burst but 5000... and that one too
	case 2:
		it.Key = ""
	case 3:
		it.Cost = -2
	}
	return it
}

func (g *logGen) next() fsm.Command {
	cmd := fsm.Command{Stamp: g.stamp()}
	switch p := g.pick(100); {
	case p < 55:
		cmd.TakeBatch = []fsm.Take{}
		cmd.BindingDenials = g.pick(4) == 0 // entries of the earlier kind still apply from old logs
		for n := 1 + g.pick(4); n > 0; n-- {
			if len(g.recent) > 0 && g.pick(5) == 0 { // a client retry: the same request again
				cmd.TakeBatch = append(cmd.TakeBatch, g.recent[g.pick(len(g.recent))])
				continue
			}
			var tk fsm.Take
			switch p := g.pick(100); {
			case p < 25: // no request ID
			case p < 30: // an old ID with new content
				tk.RequestID = fmt.Sprintf("req-%d", g.pick(g.ids+1))
			case p < 32:
				tk.RequestID = fmt.Sprintf("%070d", g.pick(3)) // too long
			default:
				g.ids++
				tk.RequestID = fmt.Sprintf("req-%d", g.ids)
			}
			for m := 1 + g.pick(2); m > 0; m-- {
				tk.Items = append(tk.Items, g.item())
			}
			cmd.TakeBatch = append(cmd.TakeBatch, tk)
			if len(g.recent) < 40 {
				g.recent = append(g.recent, tk)
			} else {
				g.recent[g.pick(40)] = tk
			}
		}
	case p < 70:
		cmd.SetLimit = &fsm.LimitSpec{
			Name:   genLimits[g.pick(3)],
			Rate:   genRates[g.pick(len(genRates))],
			Period: genPeriod[g.pick(len(genPeriod))],
			Burst:  genBursts[g.pick(len(genBursts))],
		}
		if g.pick(20) == 0 {
			cmd.SetLimit.Name = "bad name"
		}
		if g.pick(20) == 0 {
			cmd.SetLimit.Rate = 0
		}
		if g.pick(2) == 0 { // local admission, with the default TTL or its own (sometimes out of range)
			cmd.SetLimit.Admission = fsm.AdmitLocal
			cmd.SetLimit.GrantTTL = []time.Duration{0, 150 * time.Millisecond, time.Second, 5 * time.Millisecond}[g.pick(4)]
		}
	case p < 62:
		cmd.Escrow = []fsm.EscrowOp{}
		for n := 1 + g.pick(3); n > 0; n-- {
			cmd.Escrow = append(cmd.Escrow, g.escrowOp())
		}
	case p < 72:
		cmd.DeleteLimit = &fsm.LimitRef{Name: genLimits[g.pick(len(genLimits))]}
	case p < 80:
		cmd.SetMember = &fsm.MemberAddr{ID: fmt.Sprintf("n%d", g.pick(5))}
		if g.pick(3) > 0 {
			cmd.SetMember.APIAddr = fmt.Sprintf("10.0.0.%d:7001", g.pick(256))
		}
	default: // a tick
	}
	return cmd
}

// escrowOp returns a grant (new, retried, or with bad bounds) or a settle (of a recent grant,
// repeated, of an unknown grant or by another holder).
func (g *logGen) escrowOp() fsm.EscrowOp {
	holder := fmt.Sprintf("n%d", g.pick(3))
	if len(g.grants) > 0 && g.pick(2) == 0 {
		op := g.grants[g.pick(len(g.grants))]
		if g.pick(4) == 0 {
			return op // a retried grant
		}
		op.Op, op.Unused = fsm.OpSettle, g.rng.Int64N(op.Max+2)-1
		if g.pick(10) == 0 {
			op.Holder = holder
		}
		return op
	}
	g.ids++
	op := fsm.EscrowOp{Op: fsm.OpGrant, ID: fmt.Sprintf("g-%d", g.ids), Holder: holder, Limit: genLimits[g.pick(4)],
		Key: fmt.Sprintf("k%d", g.pick(10)), Min: 1 + g.rng.Int64N(3)}
	op.Max = op.Min + g.rng.Int64N(20)
	if g.pick(20) == 0 {
		op.Min = 0
	}
	if g.pick(30) == 0 {
		op.ID = "settle-unknown"
		op.Op = fsm.OpSettle
	}
	if len(g.grants) < 30 {
		g.grants = append(g.grants, op)
	} else {
		g.grants[g.pick(30)] = op
	}
	return op
}

// genLog returns n encoded entries.
func genLog(seed uint64, n int) [][]byte {
	g := newLogGen(seed)
	log := make([][]byte, n)
	for i := range log {
		log[i] = encode(g.next())
	}
	return log
}

// detConfig is small enough that the exactly-once table expires and overflows, and eviction
// sweeps the whole store, within a few thousand entries.
func detConfig(c *fsm.Config) {
	c.DedupWindow = 3 * time.Second
	c.DedupMax = 60
	c.SweepInterval = 640 * time.Millisecond
}

// TestApply_SameLogSameStateAndResponses feeds two state machines the same random log and
// compares every response and, every few entries, the state hash. A third machine restored from
// a snapshot taken midway and fed the rest of the log must end in the same state.
func TestApply_SameLogSameStateAndResponses(t *testing.T) {
	seed := testSeed(t)
	const n, every = 3000, 7
	log := genLog(seed, n)
	a, b := newFSM(t, detConfig), newFSM(t, detConfig)
	var c *fsm.FSM
	var applied, denied, refused, replayed int
	refusals := map[string]int{}
	for i, entry := range log {
		index := uint64(i + 1)
		ra, rb := a.Apply(index, entry), b.Apply(index, entry)
		da := describe(ra, true)
		if db := describe(rb, true); da != db {
			t.Fatalf("seed %d, entry %d: responses differ\n a: %s\n b: %s", seed, index, da, db)
		}
		if ra.Err != nil && a.Stats().Halted != nil {
			t.Fatalf("seed %d, entry %d: halted on a generated entry: %v", seed, index, ra.Err)
		}
		if c != nil {
			// Compared without LimitInfo.Buckets: see TestApply_ResponsesDoNotDependOnEviction.
			if dc := describe(c.Apply(index, entry), false); dc != describe(ra, false) {
				t.Fatalf("seed %d, entry %d: the restored replica answers differently\n a: %s\n c: %s", seed, index, describe(ra, false), dc)
			}
		}
		for _, o := range ra.Takes {
			switch {
			case o.Replayed:
				replayed++
			case o.Err != nil:
				refused++
				e := describeErr(o.Err)
				refusals[e[strings.LastIndexByte(e, '['):]]++
			default:
				applied++
				for _, r := range o.Results {
					if !r.Allowed {
						denied++
						break
					}
				}
			}
		}
		if i%every == 0 || i == n-1 {
			ha := stateHash(t, a)
			if hb := stateHash(t, b); ha != hb {
				t.Fatalf("seed %d, entry %d: state hashes differ", seed, index)
			}
			if c != nil && stateHash(t, c) != ha {
				t.Fatalf("seed %d, entry %d: the replica restored at entry %d has a different state hash", seed, index, n/2)
			}
		}
		if i+1 == n/2 {
			c = newFSM(t, detConfig)
			mustApply(t, c, fsm.Command{Stamp: t0, SetLimit: &fsm.LimitSpec{Name: "junk", Rate: 1, Period: time.Second}})
			mustRestore(t, c, snapshotBytes(t, a), index)
			if stateHash(t, c) != stateHash(t, a) {
				t.Fatalf("seed %d: restore of the snapshot at entry %d gives a different state hash", seed, index)
			}
		}
	}
	if a.Clock() != c.Clock() || a.AppliedIndex() != c.AppliedIndex() || fmt.Sprint(a.Members()) != fmt.Sprint(c.Members()) {
		t.Fatalf("seed %d: restored replica ends at clock %d index %d members %v, want %d %d %v",
			seed, c.Clock(), c.AppliedIndex(), c.Members(), a.Clock(), a.AppliedIndex(), a.Members())
	}
	s := a.Stats()
	t.Logf("%d entries: %d takes applied (%d with a denial), %d refused %v, %d replayed; end state %d limits, %d buckets, %d request IDs, %d clock resets",
		n, applied, denied, refused, refusals, replayed, s.Limits, s.Buckets, s.RequestIDs, s.ClockResets)
	// The log is meant to exercise every path; a generator change that stops doing so should show.
	if applied == 0 || denied == 0 || refused == 0 || replayed == 0 || s.ClockResets == 0 {
		t.Fatalf("seed %d: the random log did not exercise every path", seed)
	}
}

// TestSnapshot_RestoreGivesSameHashAndAnswers: a restored replica has the same state hash and
// answers every Peek, limit and member query the same, and then applies the same entry the same.
func TestSnapshot_RestoreGivesSameHashAndAnswers(t *testing.T) {
	seed := testSeed(t)
	src := newFSM(t, detConfig)
	for i, entry := range genLog(seed, 800) {
		src.Apply(uint64(i+1), entry)
	}
	snap := snapshotBytes(t, src)
	dst := newFSM(t, detConfig)
	mustSetLimit(t, dst, at(100*time.Hour), "stale", 5, time.Second, 0) // state the restore must replace
	takeOne(t, dst, at(100*time.Hour), "stale", "k", 1)
	mustRestore(t, dst, snap, src.AppliedIndex())

	if stateHash(t, dst) != stateHash(t, src) {
		t.Fatalf("seed %d: restored state hash differs", seed)
	}
	if dst.Clock() != src.Clock() || dst.AppliedIndex() != src.AppliedIndex() {
		t.Fatalf("seed %d: restored clock/index %d/%d, want %d/%d", seed, dst.Clock(), dst.AppliedIndex(), src.Clock(), src.AppliedIndex())
	}
	if _, err := dst.Limit("stale"); err == nil {
		t.Fatalf("seed %d: the limit that existed before the restore survived it", seed)
	}
	if fmt.Sprint(dst.Members()) != fmt.Sprint(src.Members()) {
		t.Fatalf("seed %d: members %v, want %v", seed, dst.Members(), src.Members())
	}
	if got, want := limitsWithoutBuckets(dst.Limits()), limitsWithoutBuckets(src.Limits()); got != want {
		t.Fatalf("seed %d: limits %s, want %s", seed, got, want)
	}
	if dst.Stats().RequestIDs != src.Stats().RequestIDs {
		t.Fatalf("seed %d: %d request IDs, want %d", seed, dst.Stats().RequestIDs, src.Stats().RequestIDs)
	}
	for _, lim := range genLimits {
		for k := 0; k < 25; k++ {
			key := fmt.Sprintf("k%d", k)
			for _, dt := range []time.Duration{0, 10 * time.Millisecond, time.Second, time.Hour} {
				for _, cost := range []int64{1, 4, 50, 10_000} {
					now := src.Clock() + int64(dt)
					r1, e1 := src.Peek(lim, key, cost, now)
					r2, e2 := dst.Peek(lim, key, cost, now)
					if r1 != r2 || describeErr(e1) != describeErr(e2) {
						t.Fatalf("seed %d: Peek(%s/%s, %d, +%v) = %+v %v on the source, %+v %v restored", seed, lim, key, cost, dt, r1, e1, r2, e2)
					}
				}
			}
		}
	}
	// Both then apply the same entries to the same effect.
	for i, entry := range genLog(seed+1, 50) {
		index := src.AppliedIndex() + uint64(i) + 1
		if d1, d2 := describe(src.Apply(index, entry), false), describe(dst.Apply(index, entry), false); d1 != d2 {
			t.Fatalf("seed %d: after restore, entry %d: %s vs %s", seed, index, d1, d2)
		}
	}
	if stateHash(t, dst) != stateHash(t, src) {
		t.Fatalf("seed %d: state hashes differ after applying the same entries", seed)
	}
}

func limitsWithoutBuckets(ls []*fsm.LimitInfo) string {
	s := ""
	for _, l := range ls {
		c := *l
		c.Buckets = 0
		s += fmt.Sprintf("%+v ", c)
	}
	return s
}

// TestSnapshot_EvictionShrinksBucketsNotState: once buckets have refilled, the deterministic
// sweep drops them shard by shard. Stats().Buckets shrinks to zero while the state hash stays equal
// to that of a replica fed the same log and of one restored from a snapshot (which never held
// the full buckets at all): full buckets are not part of the canonical state.
func TestSnapshot_EvictionShrinksBucketsNotState(t *testing.T) {
	sweep := func(c *fsm.Config) { c.SweepInterval = 64 * time.Millisecond } // one shard per ms
	a, b := newFSM(t, sweep), newFSM(t, sweep)
	both := func(cmd fsm.Command) {
		t.Helper()
		mustApply(t, a, cmd)
		mustApply(t, b, cmd)
	}
	both(fsm.Command{Stamp: t0, SetLimit: &fsm.LimitSpec{Name: "api", Rate: 10, Period: time.Second}})
	var takes []fsm.Take
	for i := 0; i < 500; i++ {
		takes = append(takes, fsm.Take{Items: []fsm.Item{{Limit: "api", Key: fmt.Sprintf("user:%d", i), Cost: 1 + int64(i%5)}}})
	}
	both(fsm.Command{Stamp: t0, TakeBatch: takes})
	if got := a.Stats().Buckets; got != 500 {
		t.Fatalf("Stats().Buckets = %d after 500 takes, want 500", got)
	}
	// 300ms on, the buckets that lost 1 to 3 tokens are full again, those that lost 4 or 5 are not.
	both(fsm.Command{Stamp: at(300 * time.Millisecond)})
	c := newFSM(t, sweep)
	mustRestore(t, c, snapshotBytes(t, a), a.AppliedIndex())
	if got := c.Stats().Buckets; got != 200 {
		t.Fatalf("the snapshot holds %d buckets, want the 200 not yet full", got)
	}
	if stateHash(t, c) != stateHash(t, a) {
		t.Fatalf("a replica holding full buckets hashes differently from one that does not")
	}

	prev := a.Stats().Buckets
	for ms := 1; ms < 100; ms++ { // 99 more sweep steps before +400ms cover all 64 shards
		cmd := fsm.Command{Stamp: at(300*time.Millisecond + time.Duration(ms)*time.Millisecond)}
		both(cmd)
		mustApply(t, c, cmd)
		if ha := stateHash(t, a); ha != stateHash(t, b) || ha != stateHash(t, c) {
			t.Fatalf("%dms into the sweep: state hashes differ (buckets held: %d, %d, %d)", ms, a.Stats().Buckets, b.Stats().Buckets, c.Stats().Buckets)
		}
		got := a.Stats().Buckets
		if got > prev {
			t.Fatalf("%dms into the sweep: Buckets grew from %d to %d", ms, prev, got)
		}
		prev = got
	}
	if got := a.Stats().Buckets; got != 200 {
		t.Fatalf("after a full sweep before +400ms Buckets = %d, want 200 (only the 300 full ones evicted)", got)
	}
	if info, _ := a.Limit("api"); info.Buckets != 200 {
		t.Fatalf("LimitInfo.Buckets = %d, want 200", info.Buckets)
	}
	// Much later every bucket is full; another full sweep drops them all.
	for ms := 0; ms <= 64; ms++ {
		cmd := fsm.Command{Stamp: at(time.Hour + time.Duration(ms)*time.Millisecond)}
		both(cmd)
		mustApply(t, c, cmd)
	}
	if sa, sc := a.Stats().Buckets, c.Stats().Buckets; sa != 0 || sc != 0 {
		t.Fatalf("an hour later Buckets = %d (and %d restored), want 0", sa, sc)
	}
	if ha := stateHash(t, a); ha != stateHash(t, b) || ha != stateHash(t, c) {
		t.Fatalf("state hashes differ after eviction")
	}
	// An evicted key behaves as the full bucket it was.
	checkResult(t, "take from an evicted key", takeOne(t, a, at(time.Hour+time.Second), "api", "user:4", 10), want{allowed: true, remaining: 0})
}

// TestApply_ResponsesDoNotDependOnEviction: two replicas with equal state (equal StateHash) must
// answer the same entry the same. The set-limit response reports LimitInfo.Buckets, the number
// of buckets held in memory, which counts full buckets that one replica has not swept yet and a
// replica restored from a snapshot never had.
func TestApply_ResponsesDoNotDependOnEviction(t *testing.T) {
	a := newFSM(t)
	mustSetLimit(t, a, t0, "api", 10, time.Second, 0)
	takeOne(t, a, t0, "api", "k", 1)
	tick(t, a, at(time.Second)) // k is full again but not yet swept
	c := newFSM(t)
	mustRestore(t, c, snapshotBytes(t, a), a.AppliedIndex())
	if stateHash(t, a) != stateHash(t, c) {
		t.Fatalf("precondition: the replicas' state differs")
	}
	cmd := fsm.Command{Stamp: at(time.Second), SetLimit: &fsm.LimitSpec{Name: "api", Rate: 20, Period: time.Second}}
	if ra, rc := describe(mustApply(t, a, cmd), true), describe(mustApply(t, c, cmd), true); ra != rc {
		t.Fatalf("same state, same entry, different responses:\n original: %s\n restored: %s", ra, rc)
	}
}
