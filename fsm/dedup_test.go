package fsm_test

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/limiterd/limiter/bucket"
	"github.com/limiterd/limiter/fsm"
)

func item(limit, key string, cost int64) fsm.Item {
	return fsm.Item{Limit: limit, Key: key, Cost: cost}
}

// checkReplay fails unless got is the replay of orig: Replayed set, the identical results and
// the same error.
func checkReplay(t testing.TB, what string, got, orig fsm.TakeOutcome) {
	t.Helper()
	if !got.Replayed {
		t.Fatalf("%s: Replayed = false, want the recorded answer (got %+v)", what, got)
	}
	if orig.Replayed {
		t.Fatalf("%s: the original answer is marked Replayed", what)
	}
	if !reflect.DeepEqual(got.Results, orig.Results) {
		t.Fatalf("%s: replayed results %+v, want the original %+v", what, got.Results, orig.Results)
	}
	if describeErr(got.Err) != describeErr(orig.Err) {
		t.Fatalf("%s: replayed error %s, want the original %s", what, describeErr(got.Err), describeErr(orig.Err))
	}
}

func TestApply_RetriedRequestIDConsumesOnce(t *testing.T) {
	f := newFSM(t)
	mustSetLimit(t, f, t0, "api", 10, time.Second, 0)
	req := fsm.Take{RequestID: "req-1", Items: []fsm.Item{item("api", "a", 3), item("api", "b", 4)}}

	// The same request twice in one batch entry (a client retry that the leader batched with
	// the original).
	outs := takeBatch(t, f, t0, req, req)
	if outs[0].Err != nil || outs[0].Replayed {
		t.Fatalf("first copy: %+v, want applied", outs[0])
	}
	checkResult(t, "first copy, item a", outs[0].Results[0], want{allowed: true, remaining: 7})
	checkResult(t, "first copy, item b", outs[0].Results[1], want{allowed: true, remaining: 6})
	checkReplay(t, "second copy in the same entry", outs[1], outs[0])

	// Again in a later entry, when the bucket has refilled: still the original answer.
	later := take(t, f, at(100*time.Millisecond), "req-1", req.Items...)
	checkReplay(t, "copy in a later entry", later, outs[0])

	// Consumed once: a was drained by 3 (7 left) and b by 4 (6 left); 100ms refilled one more.
	if got := remaining(t, f, "api", "a", at(100*time.Millisecond)); got != 8 {
		t.Fatalf("a holds %d at +100ms, want 8 (consumed once)", got)
	}
	if got := remaining(t, f, "api", "b", at(100*time.Millisecond)); got != 7 {
		t.Fatalf("b holds %d at +100ms, want 7 (consumed once)", got)
	}
	if got := f.Stats().RequestIDs; got != 1 {
		t.Fatalf("Stats().RequestIDs = %d, want 1", got)
	}
}

// TestApply_RequestWithoutIDIsNeverDeduplicated: an empty request ID opts out of exactly-once.
func TestApply_RequestWithoutIDIsNeverDeduplicated(t *testing.T) {
	f := newFSM(t)
	mustSetLimit(t, f, t0, "api", 10, time.Second, 0)
	req := fsm.Take{Items: []fsm.Item{item("api", "k", 3)}}
	outs := takeBatch(t, f, t0, req, req)
	checkResult(t, "first", outs[0].Results[0], want{allowed: true, remaining: 7})
	checkResult(t, "second", outs[1].Results[0], want{allowed: true, remaining: 4})
	if outs[1].Replayed || f.Stats().RequestIDs != 0 {
		t.Fatalf("a take without request ID was recorded or replayed")
	}
}

func TestApply_ReusedRequestIDWithDifferentContentIsRefused(t *testing.T) {
	orig := []fsm.Item{item("api", "k", 3), item("api", "j", 1)}
	for name, items := range map[string][]fsm.Item{
		"other cost":        {item("api", "k", 4), item("api", "j", 1)},
		"other key":         {item("api", "x", 3), item("api", "j", 1)},
		"other limit":       {item("other", "k", 3), item("api", "j", 1)},
		"items reordered":   {item("api", "j", 1), item("api", "k", 3)},
		"an item fewer":     {item("api", "k", 3)},
		"an item more":      {item("api", "k", 3), item("api", "j", 1), item("api", "j", 1)},
		"key/limit shifted": {item("apik", "", 3), item("api", "j", 1)},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFSM(t)
			mustSetLimit(t, f, t0, "api", 10, time.Second, 0)
			mustSetLimit(t, f, t0, "other", 10, time.Second, 0)
			first := take(t, f, t0, "req-1", orig...)
			before := stateHash(t, f)

			// In the same entry and in a later one.
			outs := takeBatch(t, f, t0, fsm.Take{RequestID: "req-1", Items: items}, fsm.Take{RequestID: "req-1", Items: orig})
			wantErrIs(t, "reused ID in a batch", outs[0].Err, fsm.ErrRequestIDReused)
			if outs[0].Replayed || len(outs[0].Results) != 0 {
				t.Fatalf("refused reuse returned %+v", outs[0])
			}
			checkReplay(t, "the original after a refused reuse", outs[1], first)
			if stateHash(t, f) != before {
				t.Fatalf("an entry holding only a refused reuse and a replay changed the state")
			}
			if got := remaining(t, f, "api", "k", t0); got != 7 {
				t.Fatalf("k holds %d, want 7: the reuse must consume nothing", got)
			}
			if got := remaining(t, f, "other", "k", t0); got != 10 {
				t.Fatalf("other/k holds %d, want 10", got)
			}
			wantErrIs(t, "reused ID later", take(t, f, at(100*time.Millisecond), "req-1", items...).Err, fsm.ErrRequestIDReused)
			if got := remaining(t, f, "api", "k", at(100*time.Millisecond)); got != 8 {
				t.Fatalf("k holds %d at +100ms, want 8: the later reuse must consume nothing", got)
			}
			if got := f.Stats().RequestIDs; got != 1 {
				t.Fatalf("Stats().RequestIDs = %d, want 1 (a refused reuse is not recorded)", got)
			}
		})
	}
}

// TestApply_ErroredRequestIsRecorded: under entries of the earlier kind (KindTakeBatch, still in
// old logs), a request refused as a whole is recorded like any other, so a retry gets the same
// refusal even after the cause went away, on every replica. (Current entries decide a request
// that admitted nothing afresh: TestApply_RequestThatAdmittedNothingIsDecidedAfresh.)
func TestApply_ErroredRequestIsRecorded(t *testing.T) {
	run := func(t *testing.T) (first, retry fsm.TakeOutcome, f *fsm.FSM) {
		f = newFSM(t)
		first = takeLegacy(t, f, t0, "req-e", item("ghost", "k", 1))
		wantErrIs(t, "take on an unknown limit", first.Err, fsm.ErrUnknownLimit)
		if got := f.Stats().RequestIDs; got != 1 {
			t.Fatalf("the errored request was not recorded: RequestIDs = %d", got)
		}
		mustSetLimit(t, f, at(time.Millisecond), "ghost", 10, time.Second, 0)
		retry = takeLegacy(t, f, at(2*time.Millisecond), "req-e", item("ghost", "k", 1))
		return first, retry, f
	}
	first, retry, f := run(t)
	checkReplay(t, "retry after the limit exists", retry, first)
	wantErrIs(t, "replayed error", retry.Err, fsm.ErrUnknownLimit)
	if got := remaining(t, f, "ghost", "k", at(2*time.Millisecond)); got != 10 || f.Stats().Buckets != 0 {
		t.Fatalf("the replayed refusal consumed tokens: %d left, %d buckets", got, f.Stats().Buckets)
	}

	// Deterministic: a second replica answers the same, and so does one restored from a snapshot
	// taken while the refusal was recorded (the error survives encoding with its sentinel).
	_, retry2, f2 := run(t)
	if describeErr(retry2.Err) != describeErr(retry.Err) || stateHash(t, f2) != stateHash(t, f) {
		t.Fatalf("two replicas disagree: %s vs %s", describeErr(retry2.Err), describeErr(retry.Err))
	}
	f3 := newFSM(t)
	mustRestore(t, f3, snapshotBytes(t, f), f.AppliedIndex())
	again := takeLegacy(t, f3, at(3*time.Millisecond), "req-e", item("ghost", "k", 1))
	checkReplay(t, "retry on a restored replica", again, first)

	// Other refusals are recorded with their sentinel too.
	for name, tc := range map[string]struct {
		item fsm.Item
		want error
	}{
		"invalid cost":  {item("ghost", "k", 0), bucket.ErrInvalidCost},
		"over burst":    {item("ghost", "k", 11), bucket.ErrCostExceedsBurst},
		"invalid key":   {item("ghost", "", 1), fsm.ErrInvalidCommand},
		"unknown limit": {item("nope", "k", 1), fsm.ErrUnknownLimit},
	} {
		id := "req-" + name
		orig := takeLegacy(t, f, at(3*time.Millisecond), id, tc.item)
		wantErrIs(t, name, orig.Err, tc.want)
		snapF := newFSM(t)
		mustRestore(t, snapF, snapshotBytes(t, f), f.AppliedIndex())
		for _, g := range []*fsm.FSM{f, snapF} {
			checkReplay(t, name+" retried", takeLegacy(t, g, at(4*time.Millisecond), id, tc.item), orig)
		}
	}
}

// TestApply_RequestIDExpiresAfterDedupWindow: a record lives DedupWindow of log time; after that
// the same request is a new request.
func TestApply_RequestIDExpiresAfterDedupWindow(t *testing.T) {
	const window = time.Second
	f := newFSM(t, func(c *fsm.Config) { c.DedupWindow = window })
	mustSetLimit(t, f, t0, "api", 10, time.Hour, 0) // no refill within the test
	first := take(t, f, t0, "req-1", item("api", "k", 2))
	checkResult(t, "first", first.Results[0], want{allowed: true, remaining: 8})

	checkReplay(t, "retry 1ns inside the window", take(t, f, at(window-1), "req-1", item("api", "k", 2)), first)
	if got := f.Stats().RequestIDs; got != 1 {
		t.Fatalf("RequestIDs = %d inside the window, want 1", got)
	}
	tick(t, f, at(window))
	if got := f.Stats().RequestIDs; got != 0 {
		t.Fatalf("RequestIDs = %d once the window has passed, want 0", got)
	}
	again := take(t, f, at(window+1), "req-1", item("api", "k", 2))
	if again.Replayed || again.Err != nil {
		t.Fatalf("retry after the window: %+v, want applied anew", again)
	}
	checkResult(t, "retry after the window", again.Results[0], want{allowed: true, remaining: 6})
	if got := f.Stats().RequestIDs; got != 1 {
		t.Fatalf("RequestIDs = %d after the retry, want 1 (recorded again)", got)
	}

	// A request whose entry carries a stamp behind the clock is remembered for a window from the
	// log clock, not from its stamp (which would have expired it on the spot).
	back := take(t, f, at(window+1)-int64(time.Hour), "req-back", item("api", "k", 1))
	checkReplay(t, "retry of a request stamped an hour behind", take(t, f, at(2*window), "req-back", item("api", "k", 1)), back)
	if got := remaining(t, f, "api", "k", at(2*window)); got != 5 {
		t.Fatalf("k holds %d, want 5", got)
	}
}

// TestApply_RequestIDTableIsBoundedOldestFirst: with DedupMax records the oldest are dropped first,
// and Stats().RequestIDs reports the size.
func TestApply_RequestIDTableIsBoundedOldestFirst(t *testing.T) {
	const max = 3
	f := newFSM(t, func(c *fsm.Config) { c.DedupMax = max })
	mustSetLimit(t, f, t0, "api", 100, time.Hour, 0)
	id := func(i int) string { return fmt.Sprintf("req-%d", i) }
	for i := 0; i < 5; i++ {
		take(t, f, t0, id(i), item("api", "k", 1))
		if got, want := f.Stats().RequestIDs, min(i+1, max); got != want {
			t.Fatalf("after %d requests RequestIDs = %d, want %d", i+1, got, want)
		}
	}
	// req-0 and req-1 were dropped, req-2..4 are remembered.
	var retries []fsm.Take
	for i := 0; i < 5; i++ {
		retries = append(retries, fsm.Take{RequestID: id(i), Items: []fsm.Item{item("api", "k", 1)}})
	}
	outs := takeBatch(t, f, t0, retries...)
	for i, o := range outs {
		if wantReplayed := i >= 2; o.Replayed != wantReplayed || o.Err != nil {
			t.Fatalf("retry of %s: replayed=%v err=%v, want replayed=%v", id(i), o.Replayed, o.Err, wantReplayed)
		}
	}
	if got := remaining(t, f, "api", "k", t0); got != 100-5-2 {
		t.Fatalf("k holds %d, want %d: only the two forgotten requests were applied again", got, 100-5-2)
	}
	// That entry recorded req-0 and req-1 again; the table kept the newest three: req-4, req-0, req-1.
	if got := f.Stats().RequestIDs; got != max {
		t.Fatalf("RequestIDs = %d, want %d", got, max)
	}
	outs = takeBatch(t, f, t0, retries[4], retries[0], retries[1], retries[3])
	for i, wantReplayed := range []bool{true, true, true, false} {
		if outs[i].Replayed != wantReplayed {
			t.Fatalf("second round, take %d: replayed=%v, want %v", i, outs[i].Replayed, wantReplayed)
		}
	}

	// One entry with many new IDs still leaves at most max records.
	var many []fsm.Take
	for i := 100; i < 120; i++ {
		many = append(many, fsm.Take{RequestID: id(i), Items: []fsm.Item{item("api", "k", 1)}})
	}
	takeBatch(t, f, t0, many...)
	if got := f.Stats().RequestIDs; got != max {
		t.Fatalf("after a batch of 20 new IDs RequestIDs = %d, want %d", got, max)
	}
	outs = takeBatch(t, f, t0, many[16], many[17], many[18], many[19])
	for i, wantReplayed := range []bool{false, true, true, true} {
		if outs[i].Replayed != wantReplayed {
			t.Fatalf("after the big batch, take %d: replayed=%v, want %v", 16+i, outs[i].Replayed, wantReplayed)
		}
	}
}

// TestApply_RequestIDTableSurvivesManyExpiries runs the table through enough records that its
// internal log of IDs is compacted several times, checking the size and which IDs replay.
func TestApply_RequestIDTableSurvivesManyExpiries(t *testing.T) {
	const max = 50
	f := newFSM(t, func(c *fsm.Config) { c.DedupMax = max; c.DedupWindow = time.Second })
	mustSetLimit(t, f, t0, "api", 1_000_000, time.Millisecond, 0)
	stamp := t0
	for i := 0; i < 5000; i++ {
		if i%100 == 0 {
			stamp += int64(200 * time.Millisecond) // some records expire by time, others by count
		}
		take(t, f, stamp, fmt.Sprintf("r%d", i), item("api", "k", 1))
		if got := f.Stats().RequestIDs; got > max {
			t.Fatalf("after %d requests RequestIDs = %d > DedupMax %d", i+1, got, max)
		}
	}
	outs := takeBatch(t, f, stamp, fsm.Take{RequestID: "r4949", Items: []fsm.Item{item("api", "k", 1)}},
		fsm.Take{RequestID: "r4950", Items: []fsm.Item{item("api", "k", 1)}},
		fsm.Take{RequestID: "r4999", Items: []fsm.Item{item("api", "k", 1)}})
	for i, wantReplayed := range []bool{false, true, true} {
		if outs[i].Replayed != wantReplayed {
			t.Fatalf("take %d: replayed=%v, want %v", i, outs[i].Replayed, wantReplayed)
		}
	}
}

// A request that admitted nothing (every item denied, or refused as a whole) binds nothing: a
// retry is decided afresh and recorded in its place, on every replica and after a snapshot. One
// that admitted anything binds. So a retry's answer does not depend on whether the first attempt
// went through the log or was answered from the leader's lease (which records nothing), and a
// request consumes at most once.
func TestApply_RequestThatAdmittedNothingIsDecidedAfresh(t *testing.T) {
	run := func(t *testing.T) *fsm.FSM {
		f := newFSM(t)
		mustSetLimit(t, f, t0, "api", 10, time.Second, 1) // one token, back in 100 ms
		if r := take(t, f, t0, "a", item("api", "k", 1)); !r.Results[0].Allowed {
			t.Fatalf("first take denied: %+v", r)
		}
		denied := take(t, f, t0, "d", item("api", "k", 1))
		if denied.Results[0].Allowed {
			t.Fatalf("second take allowed: %+v", denied)
		}
		if again := take(t, f, at(time.Millisecond), "d", item("api", "k", 1)); again.Replayed || again.Results[0].Allowed {
			t.Fatalf("retry before the refill: %+v, want a fresh denial", again)
		}
		fresh := take(t, f, at(150*time.Millisecond), "d", item("api", "k", 1))
		if fresh.Replayed || !fresh.Results[0].Allowed {
			t.Fatalf("retry after the refill: %+v, want allowed, decided afresh", fresh)
		}
		replay := take(t, f, at(150*time.Millisecond), "d", item("api", "k", 1))
		checkReplay(t, "retry of the admitted retry", replay, fresh)
		if got := remaining(t, f, "api", "k", at(150*time.Millisecond)); got != 0 {
			t.Fatalf("%d tokens left at +150ms, want 0: the request consumed more than once", got)
		}
		// A refusal binds nothing either: once the limit exists, the retry is decided.
		if r := take(t, f, at(500*time.Millisecond), "g", item("ghost", "k", 1)); !errors.Is(r.Err, fsm.ErrUnknownLimit) {
			t.Fatalf("take on an unknown limit: %+v", r)
		}
		mustSetLimit(t, f, at(501*time.Millisecond), "ghost", 10, time.Second, 5)
		if r := take(t, f, at(502*time.Millisecond), "g", item("ghost", "k", 1)); r.Err != nil || r.Replayed || !r.Results[0].Allowed {
			t.Fatalf("retry once the limit exists: %+v, want allowed", r)
		}
		// Anything admitted binds, even when another item was denied.
		mixed := take(t, f, at(600*time.Millisecond), "m", item("ghost", "k", 1), item("api", "k", 1), item("api", "k", 1))
		if !mixed.Results[0].Allowed || mixed.Results[2].Allowed {
			t.Fatalf("mixed request: %+v", mixed)
		}
		checkReplay(t, "retry of a partly admitted request", take(t, f, at(2*time.Second), "m", item("ghost", "k", 1), item("api", "k", 1), item("api", "k", 1)), mixed)
		return f
	}
	f := run(t)
	if got := f.Stats().RequestIDs; got != 4 {
		t.Fatalf("RequestIDs = %d, want 4 (a request decided afresh replaces its record)", got)
	}
	// Deterministic, and the same after a snapshot (the replaced record is not in it).
	f2 := run(t)
	if stateHash(t, f) != stateHash(t, f2) {
		t.Fatal("two replicas disagree")
	}
	f3 := newFSM(t)
	mustRestore(t, f3, snapshotBytes(t, f), f.AppliedIndex())
	if stateHash(t, f3) != stateHash(t, f) || f3.Stats().RequestIDs != 4 {
		t.Fatalf("restored replica differs: %d IDs", f3.Stats().RequestIDs)
	}
	// Records expire in log order, the replaced ones included.
	tick(t, f, at(10*time.Minute))
	if got := f.Stats().RequestIDs; got != 0 {
		t.Fatalf("RequestIDs = %d after the window, want 0", got)
	}

	// Entries of the earlier kind keep denials binding.
	g := newFSM(t)
	mustSetLimit(t, g, t0, "api", 10, time.Second, 1)
	takeLegacy(t, g, t0, "a", item("api", "k", 1))
	denied := takeLegacy(t, g, t0, "d", item("api", "k", 1))
	checkReplay(t, "legacy retry after the refill", takeLegacy(t, g, at(150*time.Millisecond), "d", item("api", "k", 1)), denied)
}

// The window a retry can count on shrinks while the table is full: it is then the age of the
// oldest record, which is what clients must stay within.
func TestStats_DedupSpanShrinksWhenTheTableIsFull(t *testing.T) {
	cfg := fsm.DefaultConfig()
	cfg.DedupMax = 3
	f, err := fsm.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mustSetLimit(t, f, t0, "api", 1000, time.Second, 1000)
	for i, sec := range []int{0, 10, 20} {
		if f.Stats().DedupSpan != cfg.DedupWindow {
			t.Fatalf("%d records: span %v, want the whole window", i, f.Stats().DedupSpan)
		}
		take(t, f, at(time.Duration(sec)*time.Second), fmt.Sprintf("r%d", i), item("api", "k", 1))
	}
	if got := f.Stats().DedupSpan; got != 20*time.Second {
		t.Fatalf("full table at +20s with its oldest record from +0s: span %v, want 20s", got)
	}
	take(t, f, at(30*time.Second), "r3", item("api", "k", 1)) // drops r0
	if got := f.Stats().DedupSpan; got != 20*time.Second {
		t.Fatalf("full table at +30s with its oldest record from +10s: span %v, want 20s", got)
	}
}
