package fsm_test

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/limiterd/limiter/bucket"
	"github.com/limiterd/limiter/fsm"
)

func TestApply_SetLimitReportsTheLimit(t *testing.T) {
	f := newFSM(t)
	info := mustSetLimit(t, f, t0, "api", 10, time.Second, 0)
	want := fsm.LimitInfo{Name: "api", Rate: 10, Period: time.Second, Burst: 10, Buckets: 0}
	if *info != want {
		t.Fatalf("set-limit with burst 0 = %+v, want %+v (burst defaults to rate)", *info, want)
	}
	got, err := f.Limit("api")
	if err != nil || *got != want {
		t.Fatalf("Limit(api) = %+v, %v; want %+v", got, err, want)
	}
	if s := f.Stats(); s.Limits != 1 || s.Clock != t0 {
		t.Fatalf("Stats = %+v, want 1 limit and clock t0", s)
	}
}

func TestApply_SetLimitRefusesAnInvalidLimit(t *testing.T) {
	for name, spec := range map[string]fsm.LimitSpec{
		"zero rate":         {Name: "l", Rate: 0, Period: time.Second},
		"negative rate":     {Name: "l", Rate: -1, Period: time.Second},
		"zero period":       {Name: "l", Rate: 1},
		"negative burst":    {Name: "l", Rate: 1, Period: time.Second, Burst: -1},
		"not representable": {Name: "l", Rate: 1, Period: time.Duration(math.MaxInt64), Burst: 2},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFSM(t)
			resp := apply(t, f, fsm.Command{Stamp: t0, SetLimit: &spec})
			wantErrIs(t, "set-limit "+name, resp.Err, bucket.ErrInvalidLimit)
			if resp.Limit != nil || f.Stats().Limits != 0 {
				t.Fatalf("an invalid limit was created: %+v, %d limits", resp.Limit, f.Stats().Limits)
			}
		})
	}
}

// TestApply_TakeUntilDenied drains a 10/s bucket 3 tokens at a time and checks every decision
// exactly, including the exact RetryAfter of a denial.
func TestApply_TakeUntilDenied(t *testing.T) {
	f := newFSM(t)
	mustSetLimit(t, f, t0, "api", 10, time.Second, 0)
	steps := []struct {
		cost int64
		want want
	}{
		{3, want{allowed: true, remaining: 7}},
		{3, want{allowed: true, remaining: 4}},
		{3, want{allowed: true, remaining: 1}},
		{3, want{allowed: false, remaining: 1, retryAfter: 200 * time.Millisecond}}, // 2 tokens short at 10/s
		{1, want{allowed: true, remaining: 0}},
		{1, want{allowed: false, remaining: 0, retryAfter: 100 * time.Millisecond}},
		{10, want{allowed: false, remaining: 0, retryAfter: time.Second}},
	}
	for i, s := range steps {
		res := takeOne(t, f, t0, "api", "user:1", s.cost)
		checkResult(t, fmt.Sprintf("take %d (cost %d)", i, s.cost), res, s.want)
		if res.Limit != 10 {
			t.Fatalf("step %d: Result.Limit = %d, want the burst 10", i, res.Limit)
		}
	}
	// Another key has its own, full bucket.
	checkResult(t, "other key", takeOne(t, f, t0, "api", "user:2", 10), want{allowed: true, remaining: 0})
	if got := f.Stats().Buckets; got != 2 {
		t.Fatalf("Stats().Buckets = %d, want 2", got)
	}
}

func TestApply_DeletedLimitIsUnknown(t *testing.T) {
	f := newFSM(t)
	mustSetLimit(t, f, t0, "api", 10, time.Second, 0)
	takeOne(t, f, t0, "api", "k", 10)
	mustApply(t, f, fsm.Command{Stamp: t0, DeleteLimit: &fsm.LimitRef{Name: "api"}})

	out := take(t, f, t0, "", fsm.Item{Limit: "api", Key: "k", Cost: 1})
	wantErrIs(t, "take after delete", out.Err, fsm.ErrUnknownLimit)
	if len(out.Results) != 0 || out.Replayed {
		t.Fatalf("refused take has results %+v replayed=%v, want none", out.Results, out.Replayed)
	}
	if _, err := f.Peek("api", "k", 1, t0); !errors.Is(err, fsm.ErrUnknownLimit) {
		t.Fatalf("Peek after delete: %v, want ErrUnknownLimit", err)
	}
	if _, err := f.Limit("api"); !errors.Is(err, fsm.ErrUnknownLimit) {
		t.Fatalf("Limit after delete: %v, want ErrUnknownLimit", err)
	}
	if s := f.Stats(); s.Limits != 0 || s.Buckets != 0 {
		t.Fatalf("Stats after delete = %+v, want no limits and no buckets", s)
	}
	resp := apply(t, f, fsm.Command{Stamp: t0, DeleteLimit: &fsm.LimitRef{Name: "api"}})
	wantErrIs(t, "delete of a deleted limit", resp.Err, fsm.ErrUnknownLimit)

	// Re-creating the limit starts from fresh (full) buckets: the old drained bucket is gone.
	mustSetLimit(t, f, t0, "api", 10, time.Second, 0)
	checkResult(t, "take after re-create", takeOne(t, f, t0, "api", "k", 10), want{allowed: true, remaining: 0})
}

// TestApply_RefusedTakeConsumesNothing: a take whose last item is invalid is refused as a whole
// with the bucket sentinel, and none of its earlier (valid) items consumes anything.
func TestApply_RefusedTakeConsumesNothing(t *testing.T) {
	cases := []struct {
		name    string
		bad     fsm.Item
		wantErr error
	}{
		{"cost 0", fsm.Item{Limit: "api", Key: "c", Cost: 0}, bucket.ErrInvalidCost},
		{"negative cost", fsm.Item{Limit: "api", Key: "c", Cost: -3}, bucket.ErrInvalidCost},
		{"min int64 cost", fsm.Item{Limit: "api", Key: "c", Cost: math.MinInt64}, bucket.ErrInvalidCost},
		{"cost above burst", fsm.Item{Limit: "api", Key: "c", Cost: 11}, bucket.ErrCostExceedsBurst},
		{"cost above the other limit's burst", fsm.Item{Limit: "small", Key: "c", Cost: 3}, bucket.ErrCostExceedsBurst},
		{"max int64 cost", fsm.Item{Limit: "api", Key: "c", Cost: math.MaxInt64}, bucket.ErrCostExceedsBurst},
		{"unknown limit", fsm.Item{Limit: "nope", Key: "c", Cost: 1}, fsm.ErrUnknownLimit},
		{"empty key", fsm.Item{Limit: "api", Key: "", Cost: 1}, fsm.ErrInvalidCommand},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFSM(t)
			mustSetLimit(t, f, t0, "api", 10, time.Second, 0)
			mustSetLimit(t, f, t0, "small", 2, time.Second, 0)
			takeOne(t, f, t0, "api", "a", 5) // a and b hold 5 each, so a wrongful take shows
			takeOne(t, f, t0, "api", "b", 5)
			before := stateHash(t, f)

			out := take(t, f, t0, "", fsm.Item{Limit: "api", Key: "a", Cost: 1}, fsm.Item{Limit: "api", Key: "b", Cost: 2}, tc.bad)
			wantErrIs(t, tc.name, out.Err, tc.wantErr)
			if len(out.Results) != 0 {
				t.Fatalf("refused take returned results %+v", out.Results)
			}
			for _, key := range []string{"a", "b"} {
				if got := remaining(t, f, "api", key, t0); got != 5 {
					t.Fatalf("after the refused take %s holds %d, want 5 (nothing consumed)", key, got)
				}
			}
			if got := f.Stats().Buckets; got != 2 {
				t.Fatalf("refused take created buckets: %d, want 2", got)
			}
			if stateHash(t, f) != before {
				t.Fatalf("a refused take without request ID changed the state hash")
			}
		})
	}
}

// TestApply_InvalidNamesKeysAndRequestIDs checks every bound at and one past its limit.
func TestApply_InvalidNamesKeysAndRequestIDs(t *testing.T) {
	items := func(n int) []fsm.Item {
		out := make([]fsm.Item, n)
		for i := range out {
			out[i] = fsm.Item{Limit: "api", Key: "k", Cost: 1}
		}
		return out
	}
	one := items(1)
	takeCases := []struct {
		name  string
		take  fsm.Take
		valid bool
	}{
		{"key of MaxKeyLen bytes", fsm.Take{Items: []fsm.Item{{Limit: "api", Key: strings.Repeat("k", fsm.MaxKeyLen), Cost: 1}}}, true},
		{"key of MaxKeyLen+1 bytes", fsm.Take{Items: []fsm.Item{{Limit: "api", Key: strings.Repeat("k", fsm.MaxKeyLen+1), Cost: 1}}}, false},
		{"empty key", fsm.Take{Items: []fsm.Item{{Limit: "api", Key: "", Cost: 1}}}, false},
		{"binary key", fsm.Take{Items: []fsm.Item{{Limit: "api", Key: "\x00\xff ü", Cost: 1}}}, true},
		{"request ID of MaxRequestIDLen bytes", fsm.Take{RequestID: strings.Repeat("r", fsm.MaxRequestIDLen), Items: one}, true},
		{"request ID of MaxRequestIDLen+1 bytes", fsm.Take{RequestID: strings.Repeat("r", fsm.MaxRequestIDLen+1), Items: one}, false},
		{"MaxItems items", fsm.Take{Items: items(fsm.MaxItems)}, true},
		{"MaxItems+1 items", fsm.Take{Items: items(fsm.MaxItems + 1)}, false},
		// A request ID of 2+ bytes keeps this entry decodable; see TestEncodeDecode_TakeWithoutItemsRoundTrips.
		{"no items", fsm.Take{RequestID: "no-items", Items: []fsm.Item{}}, false},
	}
	for _, tc := range takeCases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFSM(t)
			mustSetLimit(t, f, t0, "api", 2000, time.Second, 0)
			out := takeBatch(t, f, t0, tc.take)[0]
			if tc.valid {
				if out.Err != nil || len(out.Results) != len(tc.take.Items) {
					t.Fatalf("valid take refused: %v (%d results)", out.Err, len(out.Results))
				}
				return
			}
			wantErrIs(t, tc.name, out.Err, fsm.ErrInvalidCommand)
			if f.Stats().Buckets != 0 {
				t.Fatalf("an invalid take created a bucket")
			}
		})
	}

	nameCases := []struct {
		name  string
		limit string
		valid bool
	}{
		{"every allowed character", "azAZ09._-:/", true},
		{"MaxNameLen bytes", strings.Repeat("n", fsm.MaxNameLen), true},
		{"MaxNameLen+1 bytes", strings.Repeat("n", fsm.MaxNameLen+1), false},
		{"empty", "", false},
		{"space", "api v2", false},
		{"non-ASCII", "límite", false},
		{"NUL", "a\x00", false},
		{"comma", "a,b", false},
	}
	for _, tc := range nameCases {
		t.Run("limit name "+tc.name, func(t *testing.T) {
			f := newFSM(t)
			resp := apply(t, f, fsm.Command{Stamp: t0, SetLimit: &fsm.LimitSpec{Name: tc.limit, Rate: 1, Period: time.Second}})
			if tc.valid {
				if resp.Err != nil {
					t.Fatalf("valid name %q refused: %v", tc.limit, resp.Err)
				}
				return
			}
			wantErrIs(t, "set-limit "+tc.name, resp.Err, fsm.ErrInvalidCommand)
			if f.Stats().Limits != 0 {
				t.Fatalf("limit with invalid name %q created", tc.limit)
			}
			if err := fsm.CheckName(tc.limit); !errors.Is(err, fsm.ErrInvalidCommand) {
				t.Fatalf("CheckName(%q) = %v, want ErrInvalidCommand", tc.limit, err)
			}
		})
	}
	if err := fsm.CheckKey(strings.Repeat("k", fsm.MaxKeyLen+1)); !errors.Is(err, fsm.ErrInvalidCommand) {
		t.Fatalf("CheckKey of an overlong key = %v, want ErrInvalidCommand", err)
	}
	if _, err := newFSM(t).Peek("api", "", 1, t0); !errors.Is(err, fsm.ErrInvalidCommand) {
		t.Fatalf("Peek of an empty key = %v, want ErrInvalidCommand", err)
	}
}

func TestApply_MembersAreRecordedAndForgotten(t *testing.T) {
	f := newFSM(t)
	mustApply(t, f, fsm.Command{Stamp: t0, SetMember: &fsm.MemberAddr{ID: "n1", APIAddr: "10.0.0.1:7001"}})
	mustApply(t, f, fsm.Command{Stamp: t0, SetMember: &fsm.MemberAddr{ID: "n2", APIAddr: "10.0.0.2:7001"}})
	mustApply(t, f, fsm.Command{Stamp: t0, SetMember: &fsm.MemberAddr{ID: "n1", APIAddr: "10.0.0.9:7001"}})
	mustApply(t, f, fsm.Command{Stamp: t0, SetMember: &fsm.MemberAddr{ID: "n2", APIAddr: ""}})
	got := f.Members()
	if len(got) != 1 || got["n1"] != "10.0.0.9:7001" {
		t.Fatalf("Members() = %v, want only n1 at its newest address", got)
	}
	got["n3"] = "mutated"
	if _, ok := f.Members()["n3"]; ok {
		t.Fatalf("Members() returned the FSM's own map")
	}
}

// TestApply_StampsAdvanceRefillExactly: 10/s is one token per 100ms exactly, with nothing granted
// a nanosecond early.
func TestApply_StampsAdvanceRefillExactly(t *testing.T) {
	f := newFSM(t)
	mustSetLimit(t, f, t0, "api", 10, time.Second, 0)
	takeOne(t, f, t0, "api", "k", 10)

	checkResult(t, "1ns before the first token", takeOne(t, f, at(100*time.Millisecond-1), "api", "k", 1),
		want{allowed: false, remaining: 0, retryAfter: 1})
	checkResult(t, "at the first token", takeOne(t, f, at(100*time.Millisecond), "api", "k", 1),
		want{allowed: true, remaining: 0})
	checkResult(t, "2.5 tokens later", takeOne(t, f, at(350*time.Millisecond), "api", "k", 3),
		want{allowed: false, remaining: 2, retryAfter: 50 * time.Millisecond})
	checkResult(t, "the half token completes", takeOne(t, f, at(400*time.Millisecond), "api", "k", 3),
		want{allowed: true, remaining: 0})
	if c := f.Clock(); c != at(400*time.Millisecond) {
		t.Fatalf("Clock() = %d, want the last stamp %d", c, at(400*time.Millisecond))
	}
}

// TestApply_StampBehindClockGrantsNothing: a stamp behind the clock (a new leader whose clock is
// slow, by a little or by hours) neither refills nor moves the clock back, so the interval it
// spans can never be granted twice.
func TestApply_StampBehindClockGrantsNothing(t *testing.T) {
	for _, back := range []time.Duration{time.Nanosecond, 50 * time.Millisecond, 3 * time.Hour, 30 * 24 * time.Hour} {
		t.Run(back.String(), func(t *testing.T) {
			f := newFSM(t)
			mustSetLimit(t, f, t0, "api", 10, time.Second, 0)
			now := at(time.Second)
			takeOne(t, f, now, "api", "k", 10)

			checkResult(t, "take behind the clock", takeOne(t, f, now-int64(back), "api", "k", 1),
				want{allowed: false, remaining: 0, retryAfter: 100 * time.Millisecond})
			tick(t, f, now-int64(back))
			if c := f.Clock(); c != now {
				t.Fatalf("Clock() = %d after a stamp %v behind, want it to stay at %d", c, back, now)
			}
			// The next 100ms after the clock yield exactly one token, not one plus the skipped span.
			checkResult(t, "99.999999ms later", takeOne(t, f, now+int64(100*time.Millisecond)-1, "api", "k", 1),
				want{allowed: false, remaining: 0, retryAfter: 1})
			checkResult(t, "100ms later", takeOne(t, f, now+int64(100*time.Millisecond), "api", "k", 1),
				want{allowed: true, remaining: 0})
			checkResult(t, "and no more", takeOne(t, f, now+int64(100*time.Millisecond), "api", "k", 1),
				want{allowed: false, remaining: 0, retryAfter: 100 * time.Millisecond})
		})
	}
}

// TestStats_ClockResetsCountOnlyStampsBeyondSkew: every stamp below is behind the clock; only
// those more than Skew behind count as resets.
func TestStats_ClockResetsCountOnlyStampsBeyondSkew(t *testing.T) {
	for _, skew := range []time.Duration{bucket.DefaultSkew, 0, time.Second} {
		t.Run("skew "+skew.String(), func(t *testing.T) {
			f := newFSM(t, func(c *fsm.Config) { c.Skew = skew })
			now := at(time.Hour)
			tick(t, f, now)
			var wantResets uint64
			for _, back := range []time.Duration{0, 1, 50 * time.Millisecond, skew, skew + 1, 2 * skew, time.Hour} {
				tick(t, f, now-int64(back))
				if back > skew {
					wantResets++
				}
				if got := f.Stats().ClockResets; got != wantResets {
					t.Fatalf("after a stamp %v behind the clock (skew %v): ClockResets = %d, want %d", back, skew, got, wantResets)
				}
			}
			if c := f.Stats().Clock; c != now {
				t.Fatalf("Stats().Clock = %d, want %d", c, now)
			}
		})
	}
}

// TestStats_ClockResetCountsAStampFarBehind: the counter is for operators, but a stamp near
// math.MinInt64 is exactly the garbage it should surface.
func TestStats_ClockResetCountsAStampFarBehind(t *testing.T) {
	f := newFSM(t)
	tick(t, f, t0)
	tick(t, f, math.MinInt64)
	if got := f.Stats().ClockResets; got != 1 {
		t.Fatalf("ClockResets = %d after a stamp of math.MinInt64 behind clock t0, want 1", got)
	}
}

func TestApply_ForwardJumpRefillsToCapacityOnly(t *testing.T) {
	f := newFSM(t)
	mustSetLimit(t, f, t0, "api", 10, time.Second, 0)
	takeOne(t, f, t0, "api", "k", 10)
	for i, jump := range []time.Duration{10 * time.Hour, 24 * 365 * time.Hour} {
		now := at(jump)
		if got := remaining(t, f, "api", "k", now); got != 10 {
			t.Fatalf("jump %d: peek after %v holds %d, want the capacity 10", i, jump, got)
		}
		checkResult(t, "take after a jump", takeOne(t, f, now, "api", "k", 1), want{allowed: true, remaining: 9})
		checkResult(t, "drain", takeOne(t, f, now, "api", "k", 9), want{allowed: true, remaining: 0})
	}
}

// TestApply_PeekNeverSeesTimeRunBackward: Peek with a time behind the log clock answers as of
// the clock.
func TestApply_PeekNeverSeesTimeRunBackward(t *testing.T) {
	f := newFSM(t)
	mustSetLimit(t, f, t0, "api", 10, time.Second, 0)
	takeOne(t, f, t0, "api", "k", 10)
	tick(t, f, at(500*time.Millisecond))
	for _, now := range []int64{0, t0, at(500 * time.Millisecond)} {
		if got := remaining(t, f, "api", "k", now); got != 5 {
			t.Fatalf("Peek at %d (clock is t0+500ms) holds %d, want 5", now, got)
		}
	}
	if got := remaining(t, f, "api", "k", at(700*time.Millisecond)); got != 7 {
		t.Fatalf("Peek ahead of the clock holds %d, want 7", got)
	}
}

// TestApply_LiveRateChangeRescalesBuckets: changing 1000/min to 5000/min while a bucket holds 500
// leaves it holding 2500, the same fraction of the new capacity.
func TestApply_LiveRateChangeRescalesBuckets(t *testing.T) {
	f := newFSM(t)
	mustSetLimit(t, f, t0, "api", 1000, time.Minute, 0)
	checkResult(t, "take 500", takeOne(t, f, t0, "api", "k", 500), want{allowed: true, remaining: 500})
	checkResult(t, "untouched key", takeOne(t, f, t0, "api", "other", 1000), want{allowed: true, remaining: 0})

	info := mustSetLimit(t, f, t0, "api", 5000, time.Minute, 0)
	// Buckets is 0 in the replicated response: how many are held depends on eviction timing.
	if want := (fsm.LimitInfo{Name: "api", Rate: 5000, Period: time.Minute, Burst: 5000, Buckets: 0}); *info != want {
		t.Fatalf("set-limit response = %+v, want %+v", *info, want)
	}
	if got := remaining(t, f, "api", "k", t0); got != 2500 {
		t.Fatalf("500 of 1000 became %d of 5000, want exactly 2500", got)
	}
	if got := remaining(t, f, "api", "other", t0); got != 0 {
		t.Fatalf("an empty bucket became %d, want 0", got)
	}
	// From now on it refills at the new rate: 6s of 5000/min is 500 tokens.
	if got := remaining(t, f, "api", "k", at(6*time.Second)); got != 3000 {
		t.Fatalf("6s after the change the bucket holds %d, want 3000", got)
	}
	checkResult(t, "take at the new capacity", takeOne(t, f, at(time.Minute), "api", "k", 5000), want{allowed: true, remaining: 0})
}

// TestApply_LiveRateChangeSettlesRefillAtTheOldRate: the time between the last take and the
// change is refilled at the old rate before the bucket is rescaled. The burst is held at 1000 so
// the order shows: at the old rate 500 + 6s × 1000/min = 600; refilling at the new rate would
// give 500 + 6s × 5000/min = 1000.
func TestApply_LiveRateChangeSettlesRefillAtTheOldRate(t *testing.T) {
	f := newFSM(t)
	mustSetLimit(t, f, t0, "api", 1000, time.Minute, 1000)
	takeOne(t, f, t0, "api", "k", 500)
	mustSetLimit(t, f, at(6*time.Second), "api", 5000, time.Minute, 1000)
	if got := remaining(t, f, "api", "k", at(6*time.Second)); got != 600 {
		t.Fatalf("after the change at +6s the bucket holds %d, want 600 (refilled at the old rate, then rescaled)", got)
	}
	// And a shrink: 600 of 1000 becomes 60 of 100, with the 6s already settled.
	mustSetLimit(t, f, at(6*time.Second), "api", 100, time.Minute, 0)
	if got := remaining(t, f, "api", "k", at(6*time.Second)); got != 60 {
		t.Fatalf("600 of 1000 rescaled to burst 100 holds %d, want 60", got)
	}
}

// TestApply_SetLimitUnchangedKeepsBuckets: setting a limit to its current value is not a change.
func TestApply_SetLimitUnchangedKeepsBuckets(t *testing.T) {
	f := newFSM(t)
	mustSetLimit(t, f, t0, "api", 10, time.Second, 0)
	takeOne(t, f, t0, "api", "k", 7)
	mustSetLimit(t, f, t0, "api", 10, time.Second, 10)
	if got := remaining(t, f, "api", "k", t0); got != 3 {
		t.Fatalf("re-setting the same limit left %d, want 3", got)
	}
}

// TestApply_CorruptEntryHalts: a committed entry that does not decode stops the state machine;
// every later entry is refused with ErrHalted and changes nothing, until a snapshot is restored.
func TestApply_CorruptEntryHalts(t *testing.T) {
	garbage := map[string][]byte{
		"empty":        {},
		"bad version":  {0x7f, byte(fsm.KindTick), 0},
		"unknown kind": {fsm.FormatVersion, 0x42, 0},
		"truncated":    encode(fsm.Command{Stamp: t0, SetLimit: &fsm.LimitSpec{Name: "x", Rate: 1, Period: time.Second}})[:6],
		"trailing":     append(encode(fsm.Command{Stamp: t0}), 9),
	}
	for name, bad := range garbage {
		t.Run(name, func(t *testing.T) {
			f := newFSM(t)
			mustSetLimit(t, f, t0, "api", 10, time.Second, 0)
			takeOne(t, f, t0, "api", "k", 4)
			good := snapshotBytes(t, f)
			before := stateHash(t, f)

			resp := f.Apply(3, bad)
			wantErrIs(t, "apply of garbage", resp.Err, fsm.ErrCorruptEntry)
			if errors.Is(resp.Err, fsm.ErrHalted) {
				t.Fatalf("the corrupt entry itself reported ErrHalted: %v", resp.Err)
			}
			wantErrIs(t, "Stats().Halted", f.Stats().Halted, fsm.ErrCorruptEntry)

			for i, cmd := range []fsm.Command{
				{Stamp: at(time.Second), TakeBatch: []fsm.Take{{RequestID: "r", Items: []fsm.Item{{Limit: "api", Key: "k", Cost: 1}}}}},
				{Stamp: at(time.Second), SetLimit: &fsm.LimitSpec{Name: "other", Rate: 1, Period: time.Second}},
				{Stamp: at(time.Hour)},
			} {
				resp := f.Apply(uint64(4+i), encode(cmd))
				wantErrIs(t, "apply after halt", resp.Err, fsm.ErrHalted)
				if len(resp.Takes) != 0 || resp.Limit != nil {
					t.Fatalf("halted apply returned results: %+v", resp)
				}
			}
			if stateHash(t, f) != before || f.Clock() != t0 || f.AppliedIndex() != 2 {
				t.Fatalf("applies after the halt changed the state: clock %d applied %d", f.Clock(), f.AppliedIndex())
			}
			if got := remaining(t, f, "api", "k", t0); got != 6 {
				t.Fatalf("after the halt the bucket holds %d, want 6", got)
			}
			wantErrIs(t, "Stats().Halted later", f.Stats().Halted, fsm.ErrCorruptEntry)

			// Installing a snapshot (Raft's way past a bad entry) resumes applying.
			mustRestore(t, f, good, 10)
			if h := f.Stats().Halted; h != nil {
				t.Fatalf("Stats().Halted = %v after a restore, want nil", h)
			}
			checkResult(t, "take after restore", takeOne(t, f, t0, "api", "k", 6), want{allowed: true, remaining: 0})
		})
	}
}

func TestApply_LimitCountIsBounded(t *testing.T) {
	f := newFSM(t, func(c *fsm.Config) { c.MaxLimits = 2 })
	mustSetLimit(t, f, t0, "a", 1, time.Second, 0)
	mustSetLimit(t, f, t0, "b", 1, time.Second, 0)
	resp := apply(t, f, fsm.Command{Stamp: t0, SetLimit: &fsm.LimitSpec{Name: "c", Rate: 1, Period: time.Second}})
	if !errors.Is(resp.Err, fsm.ErrTooManyLimits) {
		t.Fatalf("third limit: %v, want ErrTooManyLimits", resp.Err)
	}
	// Changing an existing limit is still fine.
	mustSetLimit(t, f, t0, "a", 2, time.Second, 0)
}

// TestApply_WhatTheLogMayHoldAlwaysSnapshots: the state machine re-checks bounds itself (the log
// may hold entries no server would propose), so whatever it records, a snapshot can hold.
func TestApply_WhatTheLogMayHoldAlwaysSnapshots(t *testing.T) {
	f := newFSM(t)
	mustSetLimit(t, f, at(0), "a", 10, time.Second, 0)
	longID := strings.Repeat("x", 70_000)
	out := take(t, f, at(0), longID, fsm.Item{Limit: "a", Key: "k", Cost: 1})
	wantErrIs(t, "over-long request ID", out.Err, fsm.ErrInvalidCommand)
	out = take(t, f, at(0), "id-1", fsm.Item{Limit: strings.Repeat("\x01", 20_000), Key: "k", Cost: 1})
	wantErrIs(t, "limit name of control bytes", out.Err, fsm.ErrInvalidCommand)
	if st := f.Stats(); st.RequestIDs != 1 {
		t.Fatalf("exactly-once table holds %d IDs, want 1 (the over-long one is never recorded)", st.RequestIDs)
	}
	g := newFSM(t)
	mustRestore(t, g, snapshotBytes(t, f), 3)
	if stateHash(t, g) != stateHash(t, f) {
		t.Fatal("restored state differs")
	}
	if remaining(t, f, "a", "k", at(0)) != 10 {
		t.Fatal("a refused take consumed tokens")
	}
}

// TestApply_StampNearTheEndOfTimeKeepsExactlyOnce: record expiry saturates instead of wrapping
// into the past, so a retry is still answered from the table.
func TestApply_StampNearTheEndOfTimeKeepsExactlyOnce(t *testing.T) {
	f := newFSM(t)
	end := int64(math.MaxInt64 - int64(time.Minute))
	mustSetLimit(t, f, end, "a", 10, time.Second, 0)
	for i := 0; i < 3; i++ {
		out := take(t, f, end, "req-1", fsm.Item{Limit: "a", Key: "k", Cost: 1})
		if out.Err != nil || out.Results[0].Remaining != 9 || out.Replayed != (i > 0) {
			t.Fatalf("attempt %d: %+v, want 9 remaining, replayed after the first", i, out)
		}
	}
}
