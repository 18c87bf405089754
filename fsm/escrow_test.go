package fsm_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/limiterd/limiter/fsm"
)

// setLocal creates or changes a limit in local admission with the given grant TTL.
func setLocal(t testing.TB, f *fsm.FSM, stamp int64, name string, rate int64, period time.Duration, burst int64, ttl time.Duration) {
	t.Helper()
	mustApply(t, f, fsm.Command{Stamp: stamp, SetLimit: &fsm.LimitSpec{Name: name, Rate: rate, Period: period, Burst: burst, Admission: fsm.AdmitLocal, GrantTTL: ttl}})
}

func escrowOps(t testing.TB, f *fsm.FSM, stamp int64, ops ...fsm.EscrowOp) []fsm.EscrowOutcome {
	t.Helper()
	resp := mustApply(t, f, fsm.Command{Stamp: stamp, Escrow: ops})
	if len(resp.Escrow) != len(ops) {
		t.Fatalf("escrow entry of %d ops got %d outcomes", len(ops), len(resp.Escrow))
	}
	return resp.Escrow
}

func grantOp(id, holder, key string, lo, hi int64) fsm.EscrowOp {
	return fsm.EscrowOp{Op: fsm.OpGrant, ID: id, Holder: holder, Limit: "pay", Key: key, Min: lo, Max: hi}
}

func settleOp(id, holder string, unused int64) fsm.EscrowOp {
	return fsm.EscrowOp{Op: fsm.OpSettle, ID: id, Holder: holder, Unused: unused}
}

func grantOne(t testing.TB, f *fsm.FSM, stamp int64, op fsm.EscrowOp) fsm.EscrowOutcome {
	t.Helper()
	return escrowOps(t, f, stamp, op)[0]
}

// 10 tokens per second, burst 100, grants for one second.
func escrowFSM(t testing.TB) *fsm.FSM {
	f := newFSM(t)
	setLocal(t, f, t0, "pay", 10, time.Second, 100, time.Second)
	return f
}

func TestGrant_TakesFromTheBucketNeverMoreThanItHolds(t *testing.T) {
	f := escrowFSM(t)
	g := grantOne(t, f, t0, grantOp("g1", "n1", "k", 1, 30))
	if g.Err != nil || g.Granted != 30 || g.Expires != at(time.Second) || g.TTL != time.Second {
		t.Fatalf("first grant = %+v, want 30 tokens until t0+1s", g)
	}
	if got := remaining(t, f, "pay", "k", t0); got != 70 {
		t.Fatalf("bucket after a grant of 30 holds %d, want 70", got)
	}
	g = grantOne(t, f, t0, grantOp("g2", "n1", "k", 1, 100))
	if g.Granted != 70 {
		t.Fatalf("grant of up to 100 from 70 = %d, want 70 (one holder: no share to keep)", g.Granted)
	}
	g = grantOne(t, f, t0, grantOp("g3", "n1", "k", 5, 10))
	if g.Err != nil || g.Granted != 0 || g.Result.RetryAfter != 500*time.Millisecond {
		t.Fatalf("grant of at least 5 from an empty bucket = %+v, want 0 with RetryAfter 500ms", g)
	}
	if got := f.Grants("pay"); len(got) != 2 {
		t.Fatalf("grants = %+v, want g1 and g2 only (a grant of nothing is not recorded)", got)
	}
	// A refused grant changes nothing.
	h := stateHash(t, f)
	for _, op := range []fsm.EscrowOp{
		grantOp("g4", "n1", "k", 101, 101), grantOp("g5", "n1", "k", 3, 2), grantOp("", "n1", "k", 1, 1),
		{Op: fsm.OpGrant, ID: "g6", Holder: "n1", Limit: "nope", Key: "k", Min: 1, Max: 1},
	} {
		if g := grantOne(t, f, t0, op); g.Err == nil {
			t.Fatalf("grant %+v = %+v, want an error", op, g)
		}
	}
	if stateHash(t, f) != h {
		t.Fatalf("refused grants changed the state")
	}
}

func TestGrant_RetryIsAppliedOnce(t *testing.T) {
	f := escrowFSM(t)
	first := grantOne(t, f, t0, grantOp("g1", "n1", "k", 1, 40))
	again := grantOne(t, f, at(100*time.Millisecond), grantOp("g1", "n1", "k", 1, 40))
	if !again.Replayed || again.Granted != first.Granted || again.Expires != first.Expires {
		t.Fatalf("retried grant = %+v, want the first answer %+v replayed", again, first)
	}
	if got := remaining(t, f, "pay", "k", at(100*time.Millisecond)); got != 61 {
		t.Fatalf("bucket = %d, want 61 (100 - 40 + 1 refilled): the retry took nothing", got)
	}
	wantErrIs(t, "grant ID reused for another key", grantOne(t, f, t0, grantOp("g1", "n1", "other", 1, 40)).Err, fsm.ErrRequestIDReused)
	// Settled, then retried: still answered, still nothing taken.
	grantOne(t, f, at(200*time.Millisecond), settleOp("g1", "n1", 0))
	again = grantOne(t, f, at(300*time.Millisecond), grantOp("g1", "n1", "k", 1, 40))
	if !again.Replayed || again.Granted != 40 {
		t.Fatalf("grant retried after its settle = %+v, want a replay", again)
	}
	if got := remaining(t, f, "pay", "k", at(300*time.Millisecond)); got != 63 {
		t.Fatalf("bucket = %d, want 63", got)
	}
	// Two TTLs after the grant its tombstone is gone; only then would the ID grant again.
	tick(t, f, at(2*time.Second))
	if got := f.Grants("pay"); len(got) != 0 {
		t.Fatalf("grants two TTLs on = %+v, want none", got)
	}
}

func TestSettle_ReturnsUnusedCappedAtBurstOnce(t *testing.T) {
	f := escrowFSM(t)
	grantOne(t, f, t0, grantOp("g1", "n1", "k", 1, 50))
	s := grantOne(t, f, t0, settleOp("g1", "n1", 20))
	if s.Err != nil || s.Credited != 20 {
		t.Fatalf("settle = %+v, want 20 credited", s)
	}
	if got := remaining(t, f, "pay", "k", t0); got != 70 {
		t.Fatalf("bucket = %d, want 70", got)
	}
	s = grantOne(t, f, t0, settleOp("g1", "n1", 20))
	if !s.Replayed || s.Credited != 0 || remaining(t, f, "pay", "k", t0) != 70 {
		t.Fatalf("second settle = %+v, bucket %d: want a replay that credits nothing", s, remaining(t, f, "pay", "k", t0))
	}
	// A settle never returns more than was granted, and never lifts the bucket above the burst.
	grantOne(t, f, t0, grantOp("g2", "n1", "k", 1, 10))
	tick(t, f, at(900*time.Millisecond)) // the bucket refills to 69
	s = grantOne(t, f, at(900*time.Millisecond), settleOp("g2", "n1", 1000))
	if s.Credited != 10 {
		t.Fatalf("settle of 1000 unused of a grant of 10 credited %d, want 10", s.Credited)
	}
	if got := remaining(t, f, "pay", "k", at(900*time.Millisecond)); got != 79 {
		t.Fatalf("bucket = %d, want 79", got)
	}
	grantOne(t, f, at(900*time.Millisecond), grantOp("g3", "n1", "k", 1, 5))
	tick(t, f, at(5*time.Second)) // full again, grant g3 expired
	grantOne(t, f, at(5*time.Second), grantOp("g4", "n1", "k", 1, 5))
	tick(t, f, at(6*time.Second+500*time.Millisecond)) // expired at 6s, remembered until 7s
	s = grantOne(t, f, at(6*time.Second+500*time.Millisecond), settleOp("g4", "n1", 5))
	if !s.Replayed || s.Credited != 0 {
		t.Fatalf("settle after the grant expired = %+v, want nothing credited", s)
	}
	if got := remaining(t, f, "pay", "k", at(10*time.Second)); got != 100 {
		t.Fatalf("bucket = %d, want 100", got)
	}
	grantOne(t, f, at(10*time.Second), grantOp("g6", "n1", "k", 1, 5))
	tick(t, f, at(10*time.Second+500*time.Millisecond)) // refilled to the burst meanwhile
	if s := grantOne(t, f, at(10*time.Second+500*time.Millisecond), settleOp("g6", "n1", 5)); s.Credited != 5 {
		t.Fatalf("settle into a full bucket = %+v", s)
	}
	if got := remaining(t, f, "pay", "k", at(10*time.Second+500*time.Millisecond)); got != 100 {
		t.Fatalf("bucket after a settle into a full bucket = %d, want the burst 100", got)
	}
	// Unknown grants and other holders' grants change nothing.
	grantOne(t, f, at(10*time.Second), grantOp("g5", "n1", "k", 1, 5))
	h := stateHash(t, f)
	wantErrIs(t, "settle of an unknown grant", grantOne(t, f, at(10*time.Second), settleOp("nope", "n1", 1)).Err, fsm.ErrUnknownGrant)
	wantErrIs(t, "settle by another holder", grantOne(t, f, at(10*time.Second), settleOp("g5", "n2", 1)).Err, fsm.ErrUnknownGrant)
	if g := grantOne(t, f, at(10*time.Second), settleOp("g5", "n1", -1)); g.Err == nil {
		t.Fatalf("settle of -1 unused accepted")
	}
	if stateHash(t, f) != h {
		t.Fatalf("refused settles changed the state")
	}
}

func TestGrant_ExpiryCountsTheGrantSpent(t *testing.T) {
	f := escrowFSM(t)
	grantOne(t, f, t0, grantOp("g1", "n1", "k", 1, 100))
	tick(t, f, at(999*time.Millisecond))
	if gs := f.Grants("pay"); len(gs) != 1 || !gs[0].Live {
		t.Fatalf("grants before the TTL = %+v, want g1 live", gs)
	}
	tick(t, f, at(time.Second))
	if gs := f.Grants("pay"); len(gs) != 1 || gs[0].Live {
		t.Fatalf("grants at the TTL = %+v, want g1 ended", gs)
	}
	// The bucket refilled from empty at 10/s: nothing of the grant came back.
	if got := remaining(t, f, "pay", "k", at(time.Second)); got != 10 {
		t.Fatalf("bucket = %d, want 10", got)
	}
	if s := f.Escrow(); s.Grants != 0 || s.Spent != 100 {
		t.Fatalf("escrow stats = %+v, want no live grant and 100 spent", s)
	}
}

func TestGrant_ShareOfAScarceBucket(t *testing.T) {
	f := escrowFSM(t)
	grantOne(t, f, t0, grantOp("a1", "a", "k", 1, 60))
	// 40 left, two holders: b gets at most 20 of them.
	if g := grantOne(t, f, t0, grantOp("b1", "b", "k", 1, 40)); g.Granted != 20 {
		t.Fatalf("b's grant with a holding = %d, want 20 (half of what is left)", g.Granted)
	}
	// Three holders, 20 left: c gets 6; a grant's Min is honoured above the share.
	if g := grantOne(t, f, t0, grantOp("c1", "c", "k", 1, 40)); g.Granted != 6 {
		t.Fatalf("c's grant = %d, want 6", g.Granted)
	}
	if g := grantOne(t, f, t0, grantOp("c2", "c", "k", 10, 40)); g.Granted != 10 {
		t.Fatalf("c's grant of at least 10 = %d, want 10", g.Granted)
	}
}

func TestGrant_Bounds(t *testing.T) {
	f := escrowFSM(t)
	for i := 0; i < fsm.MaxGrantsPerHolder; i++ {
		if g := grantOne(t, f, t0, grantOp(fmt.Sprint("g", i), "n1", fmt.Sprint("k", i), 1, 1)); g.Granted != 1 {
			t.Fatalf("grant %d = %+v", i, g)
		}
	}
	wantErrIs(t, "one grant too many", grantOne(t, f, t0, grantOp("over", "n1", "k", 1, 1)).Err, fsm.ErrTooManyGrants)
	if g := grantOne(t, f, t0, grantOp("other", "n2", "k", 1, 1)); g.Granted != 1 {
		t.Fatalf("another holder's grant = %+v, want 1", g)
	}
}

func TestGrant_ModeChangeAndDelete(t *testing.T) {
	f := escrowFSM(t)
	grantOne(t, f, t0, grantOp("g1", "n1", "k", 1, 50))
	// Linearizable again: no new grants; the outstanding one still settles.
	mustSetLimit(t, f, t0, "pay", 10, time.Second, 100)
	wantErrIs(t, "grant on a linearizable limit", grantOne(t, f, t0, grantOp("g2", "n1", "k", 1, 5)).Err, fsm.ErrNotLocal)
	if s := grantOne(t, f, t0, settleOp("g1", "n1", 50)); s.Credited != 50 || remaining(t, f, "pay", "k", t0) != 100 {
		t.Fatalf("settle after the switch = %+v, bucket %d", s, remaining(t, f, "pay", "k", t0))
	}
	// A rate change with a grant out: the settle credits under the new limit, capped at its burst.
	setLocal(t, f, t0, "pay", 10, time.Second, 100, time.Second)
	grantOne(t, f, t0, grantOp("g3", "n1", "k", 1, 100))
	setLocal(t, f, t0, "pay", 5, time.Second, 50, time.Second) // empty stays empty
	if s := grantOne(t, f, t0, settleOp("g3", "n1", 100)); s.Credited != 100 || remaining(t, f, "pay", "k", t0) != 50 {
		t.Fatalf("settle after a rate change = %+v, bucket %d; want the bucket at its new burst 50", s, remaining(t, f, "pay", "k", t0))
	}
	// Delete: the grants go with the limit.
	grantOne(t, f, t0, grantOp("g4", "n1", "k", 1, 10))
	mustApply(t, f, fsm.Command{Stamp: t0, DeleteLimit: &fsm.LimitRef{Name: "pay"}})
	wantErrIs(t, "settle after delete", grantOne(t, f, t0, settleOp("g4", "n1", 10)).Err, fsm.ErrUnknownGrant)
	if s := f.Escrow(); s.Grants != 0 {
		t.Fatalf("escrow after delete = %+v", s)
	}
	tick(t, f, at(time.Hour)) // stale queue entries are skipped
}

func TestSetLimit_AdmissionValidation(t *testing.T) {
	f := newFSM(t)
	for _, spec := range []fsm.LimitSpec{
		{Name: "a", Rate: 1, Period: time.Second, Admission: fsm.AdmitLocal, GrantTTL: time.Millisecond},
		{Name: "a", Rate: 1, Period: time.Second, Admission: fsm.AdmitLocal, GrantTTL: time.Hour},
		{Name: "a", Rate: 1, Period: time.Second, GrantTTL: time.Second},
		{Name: "a", Rate: 1, Period: time.Second, Admission: 9},
	} {
		wantErrIs(t, fmt.Sprintf("%+v", spec), apply(t, f, fsm.Command{Stamp: t0, SetLimit: &spec}).Err, fsm.ErrInvalidCommand)
	}
	if len(f.Limits()) != 0 {
		t.Fatalf("refused specs created a limit")
	}
	setLocal(t, f, t0, "a", 1, time.Second, 0, 0)
	if l, _ := f.Limit("a"); l.Admission != fsm.AdmitLocal || l.GrantTTL != fsm.DefaultGrantTTL {
		t.Fatalf("local limit without a TTL = %+v, want the default TTL", l)
	}
	// Linearizable limits encode as before: a member of an earlier version reads them.
	old := []byte{fsm.FormatVersion, byte(fsm.KindSetLimit)}
	old = binary.AppendVarint(old, t0)
	old = append(binary.AppendUvarint(old, 1), 'a')
	old = binary.AppendVarint(binary.AppendVarint(binary.AppendVarint(old, 1), int64(time.Second)), 0)
	if got := encode(fsm.Command{Stamp: t0, SetLimit: &fsm.LimitSpec{Name: "a", Rate: 1, Period: time.Second}}); !bytes.Equal(got, old) {
		t.Fatalf("a linearizable set-limit encodes as % x, want the earlier % x", got, old)
	}
}

func TestEscrow_SnapshotRestoresGrants(t *testing.T) {
	f := escrowFSM(t)
	grantOne(t, f, t0, grantOp("g1", "n1", "k", 1, 30))
	grantOne(t, f, t0, grantOp("g2", "n2", "k", 1, 30))
	grantOne(t, f, t0, settleOp("g2", "n2", 10))
	g := newFSM(t)
	mustRestore(t, g, snapshotBytes(t, f), f.AppliedIndex())
	if stateHash(t, g) != stateHash(t, f) {
		t.Fatalf("restored state differs")
	}
	for _, m := range []*fsm.FSM{f, g} {
		if s := grantOne(t, m, t0, settleOp("g1", "n1", 30)); s.Credited != 30 {
			t.Fatalf("settle after restore = %+v", s)
		}
		if s := grantOne(t, m, t0, grantOp("g2", "n2", "k", 1, 30)); !s.Replayed {
			t.Fatalf("retried grant after restore = %+v, want a replay", s)
		}
		tick(t, m, at(3*time.Second))
	}
	if stateHash(t, g) != stateHash(t, f) {
		t.Fatalf("restored state diverged")
	}
}
