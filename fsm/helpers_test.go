package fsm_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/limiterd/limiter/bucket"
	"github.com/limiterd/limiter/fsm"
)

// t0 is an arbitrary Unix-nanosecond stamp (November 2023) that the tests count time from.
const t0 = int64(1_700_000_000_000_000_000)

// at returns the stamp d after t0.
func at(d time.Duration) int64 { return t0 + int64(d) }

// newFSM returns an empty state machine with the default config changed by mods.
func newFSM(t testing.TB, mods ...func(*fsm.Config)) *fsm.FSM {
	t.Helper()
	cfg := fsm.DefaultConfig()
	for _, m := range mods {
		m(&cfg)
	}
	f, err := fsm.New(cfg)
	if err != nil {
		t.Fatalf("fsm.New(%+v): %v", cfg, err)
	}
	return f
}

// encode is Command.Encode into a fresh slice.
func encode(c fsm.Command) []byte { return c.Encode(nil) }

// apply encodes cmd and applies it at the next log index, returning the response whatever it is.
func apply(t testing.TB, f *fsm.FSM, cmd fsm.Command) *fsm.Response {
	t.Helper()
	resp := f.Apply(f.AppliedIndex()+1, encode(cmd))
	if resp == nil {
		t.Fatalf("Apply(%s) returned a nil response", cmd.Kind())
	}
	return resp
}

// mustApply is apply that fails the test if the command as a whole failed.
func mustApply(t testing.TB, f *fsm.FSM, cmd fsm.Command) *fsm.Response {
	t.Helper()
	resp := apply(t, f, cmd)
	if resp.Err != nil {
		t.Fatalf("Apply(%s @%d): %v", cmd.Kind(), cmd.Stamp, resp.Err)
	}
	return resp
}

// mustSetLimit creates or changes a limit at stamp.
func mustSetLimit(t testing.TB, f *fsm.FSM, stamp int64, name string, rate int64, period time.Duration, burst int64) *fsm.LimitInfo {
	t.Helper()
	resp := mustApply(t, f, fsm.Command{Stamp: stamp, SetLimit: &fsm.LimitSpec{Name: name, Rate: rate, Period: period, Burst: burst}})
	if resp.Limit == nil {
		t.Fatalf("set-limit %q: response has no LimitInfo", name)
	}
	return resp.Limit
}

// tick applies a clock-only entry.
func tick(t testing.TB, f *fsm.FSM, stamp int64) {
	t.Helper()
	mustApply(t, f, fsm.Command{Stamp: stamp})
}

// takeBatch applies one take-batch entry and returns its outcomes, failing unless there is one
// outcome per take.
func takeBatch(t testing.TB, f *fsm.FSM, stamp int64, takes ...fsm.Take) []fsm.TakeOutcome {
	t.Helper()
	resp := mustApply(t, f, fsm.Command{Stamp: stamp, TakeBatch: takes})
	if len(resp.Takes) != len(takes) {
		t.Fatalf("take-batch of %d takes got %d outcomes", len(takes), len(resp.Takes))
	}
	return resp.Takes
}

// takeLegacy applies a batch of one take as an entry of the earlier kind (KindTakeBatch), under
// which every recorded outcome binds, and returns its outcome.
func takeLegacy(t testing.TB, f *fsm.FSM, stamp int64, requestID string, items ...fsm.Item) fsm.TakeOutcome {
	t.Helper()
	resp := mustApply(t, f, fsm.Command{Stamp: stamp, BindingDenials: true, TakeBatch: []fsm.Take{{RequestID: requestID, Items: items}}})
	return resp.Takes[0]
}

// take applies a batch of one take and returns its outcome.
func take(t testing.TB, f *fsm.FSM, stamp int64, requestID string, items ...fsm.Item) fsm.TakeOutcome {
	t.Helper()
	return takeBatch(t, f, stamp, fsm.Take{RequestID: requestID, Items: items})[0]
}

// takeOne takes cost from limit/key with no request ID and returns the single result, failing
// if the take was refused as a whole.
func takeOne(t testing.TB, f *fsm.FSM, stamp int64, limit, key string, cost int64) bucket.Result {
	t.Helper()
	out := take(t, f, stamp, "", fsm.Item{Limit: limit, Key: key, Cost: cost})
	if out.Err != nil {
		t.Fatalf("take %s/%s cost %d @%v: %v", limit, key, cost, time.Duration(stamp-t0), out.Err)
	}
	if len(out.Results) != 1 {
		t.Fatalf("take %s/%s: %d results, want 1", limit, key, len(out.Results))
	}
	return out.Results[0]
}

// want describes the parts of a bucket.Result a test checks; RetryAfter is checked only when
// the take is denied.
type want struct {
	allowed    bool
	remaining  int64
	retryAfter time.Duration
}

func checkResult(t testing.TB, what string, got bucket.Result, w want) {
	t.Helper()
	if got.Allowed != w.allowed || got.Remaining != w.remaining || (!w.allowed && got.RetryAfter != w.retryAfter) {
		t.Fatalf("%s: got allowed=%v remaining=%d retryAfter=%v; want allowed=%v remaining=%d retryAfter=%v",
			what, got.Allowed, got.Remaining, got.RetryAfter, w.allowed, w.remaining, w.retryAfter)
	}
	if w.allowed && got.RetryAfter != 0 {
		t.Fatalf("%s: allowed with RetryAfter %v, want 0", what, got.RetryAfter)
	}
}

// mustPeek returns what a take of cost from limit/key would decide at now.
func mustPeek(t testing.TB, f *fsm.FSM, limit, key string, cost, now int64) bucket.Result {
	t.Helper()
	res, err := f.Peek(limit, key, cost, now)
	if err != nil {
		t.Fatalf("Peek(%s/%s, %d): %v", limit, key, cost, err)
	}
	return res
}

// remaining is the whole tokens key holds under limit at now (a peek of cost 1).
func remaining(t testing.TB, f *fsm.FSM, limit, key string, now int64) int64 {
	t.Helper()
	return mustPeek(t, f, limit, key, 1, now).Remaining
}

func wantErrIs(t testing.TB, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error %v, want one wrapping %q", what, err, target)
	}
}

func stateHash(t testing.TB, f *fsm.FSM) [32]byte {
	t.Helper()
	h, err := f.StateHash()
	if err != nil {
		t.Fatalf("StateHash: %v", err)
	}
	return h
}

// snapshotBytes takes a snapshot of f and persists it.
func snapshotBytes(t testing.TB, f *fsm.FSM) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := f.Snapshot().Persist(&buf); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	return buf.Bytes()
}

// mustRestore restores snap into f at index.
func mustRestore(t testing.TB, f *fsm.FSM, snap []byte, index uint64) {
	t.Helper()
	if err := f.Restore(bytes.NewReader(snap), index); err != nil {
		t.Fatalf("Restore of %d bytes: %v", len(snap), err)
	}
}

// withChecksum appends the SHA-256 trailer a snapshot body needs, so a test can hand Restore a
// body that is wrong in exactly one way other than its checksum.
func withChecksum(body []byte) []byte {
	sum := sha256.Sum256(body)
	return append(append([]byte(nil), body...), sum[:]...)
}

// describe renders a response canonically for comparison between replicas. Errors are rendered
// as their message plus the sentinel they wrap, so an answer replayed from the exactly-once
// table (a recorded error) compares equal to the original. With withBuckets false the
// LimitInfo.Buckets count (memory held, not replicated state) is left out.
func describe(r *fsm.Response, withBuckets bool) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "err=%s", describeErr(r.Err))
	if r.Limit != nil {
		l := *r.Limit
		if !withBuckets {
			l.Buckets = -1
		}
		fmt.Fprintf(&sb, " limit=%+v", l)
	}
	for i, o := range r.Takes {
		fmt.Fprintf(&sb, " take[%d]{replayed=%v err=%s results=%+v}", i, o.Replayed, describeErr(o.Err), o.Results)
	}
	for i, o := range r.Escrow {
		e := describeErr(o.Err)
		o.Err = nil
		fmt.Fprintf(&sb, " escrow[%d]{%+v err=%s}", i, o, e)
	}
	return sb.String()
}

var sentinels = []struct {
	name string
	err  error
}{
	{"UnknownLimit", fsm.ErrUnknownLimit},
	{"InvalidCommand", fsm.ErrInvalidCommand},
	{"RequestIDReused", fsm.ErrRequestIDReused},
	{"CorruptEntry", fsm.ErrCorruptEntry},
	{"Halted", fsm.ErrHalted},
	{"InvalidCost", bucket.ErrInvalidCost},
	{"CostExceedsBurst", bucket.ErrCostExceedsBurst},
	{"InvalidLimit", bucket.ErrInvalidLimit},
	{"NotLocal", fsm.ErrNotLocal},
	{"TooManyGrants", fsm.ErrTooManyGrants},
	{"UnknownGrant", fsm.ErrUnknownGrant},
}

func describeErr(err error) string {
	if err == nil {
		return "nil"
	}
	var is []string
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			is = append(is, s.name)
		}
	}
	return fmt.Sprintf("%q%v", err.Error(), is)
}
