package fsm_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"testing"
	"time"

	"github.com/limiterd/limiter/fsm"
)

// smallState builds a state with something in every section of the snapshot: a member, a limit
// with partly drained buckets, a recorded take and a recorded refusal.
func smallState(t testing.TB) *fsm.FSM {
	t.Helper()
	f := newFSM(t)
	mustApply(t, f, fsm.Command{Stamp: t0, SetMember: &fsm.MemberAddr{ID: "n1", APIAddr: "10.0.0.1:7001"}})
	mustSetLimit(t, f, t0, "api", 10, time.Second, 0)
	take(t, f, t0, "r1", item("api", "a", 3), item("api", "b", 10))
	take(t, f, t0, "r2", item("ghost", "a", 1))
	return f
}

// otherState is the state a failed restore must leave alone: different from smallState in every
// section.
func otherState(t testing.TB) *fsm.FSM {
	t.Helper()
	f := newFSM(t)
	mustApply(t, f, fsm.Command{Stamp: at(time.Hour), SetMember: &fsm.MemberAddr{ID: "n9", APIAddr: "10.9.9.9:7001"}})
	mustSetLimit(t, f, at(time.Hour), "other", 5, time.Minute, 0)
	take(t, f, at(time.Hour), "x1", item("other", "z", 2))
	return f
}

// checkUnchanged fails unless f still has the state otherState built.
func checkUnchanged(t testing.TB, what string, f *fsm.FSM, hash [32]byte, index uint64) {
	t.Helper()
	if stateHash(t, f) != hash {
		t.Fatalf("%s: a failed restore changed the state", what)
	}
	if f.AppliedIndex() != index || f.Clock() != at(time.Hour) {
		t.Fatalf("%s: a failed restore changed applied index/clock to %d/%d", what, f.AppliedIndex(), f.Clock())
	}
	if got := remaining(t, f, "other", "z", at(time.Hour)); got != 3 {
		t.Fatalf("%s: other/z holds %d after a failed restore, want 3", what, got)
	}
}

func restoreErr(f *fsm.FSM, b []byte) error { return f.Restore(bytes.NewReader(b), 99) }

// TestSnapshot_RestoreOfEveryTruncationFails cuts a valid snapshot at every length.
func TestSnapshot_RestoreOfEveryTruncationFails(t *testing.T) {
	snap := snapshotBytes(t, smallState(t))
	f := otherState(t)
	hash, index := stateHash(t, f), f.AppliedIndex()
	for n := 0; n < len(snap); n++ {
		err := restoreErr(f, snap[:n])
		if !errors.Is(err, fsm.ErrCorruptSnapshot) {
			t.Fatalf("Restore of the first %d of %d bytes: %v, want ErrCorruptSnapshot", n, len(snap), err)
		}
		checkUnchanged(t, "truncated snapshot", f, hash, index)
	}
	mustRestore(t, f, snap, 99) // and the whole snapshot restores
	if stateHash(t, f) == hash {
		t.Fatalf("the full snapshot restored but the state did not change")
	}
}

// TestSnapshot_RestoreOfAFlippedByteFails flips every bit pattern class at every position; the
// checksum catches what the decoder does not.
func TestSnapshot_RestoreOfAFlippedByteFails(t *testing.T) {
	snap := snapshotBytes(t, smallState(t))
	f := otherState(t)
	hash, index := stateHash(t, f), f.AppliedIndex()
	for i := range snap {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			bad := append([]byte(nil), snap...)
			bad[i] ^= mask
			if err := restoreErr(f, bad); !errors.Is(err, fsm.ErrCorruptSnapshot) {
				t.Fatalf("byte %d of %d xor %#x: Restore = %v, want ErrCorruptSnapshot", i, len(snap), mask, err)
			}
			checkUnchanged(t, "flipped byte", f, hash, index)
		}
	}
}

// snapBody writes a snapshot body field by field, for snapshots wrong in one chosen way.
type snapBody struct{ b []byte }

func (s *snapBody) raw(b ...byte) *snapBody { s.b = append(s.b, b...); return s }
func (s *snapBody) u(v uint64) *snapBody    { s.b = binary.AppendUvarint(s.b, v); return s }
func (s *snapBody) v(v int64) *snapBody     { s.b = binary.AppendVarint(s.b, v); return s }
func (s *snapBody) str(v string) *snapBody  { return s.u(uint64(len(v))).raw([]byte(v)...) }
func (s *snapBody) header(version byte) *snapBody {
	return s.raw([]byte("LIMITFSM")...).raw(version).v(t0).u(0).v(t0)
}

// validBody returns a valid body of a state with one limit and one bucket, changed by mod.
func validBody(mod func(*snapBody) *snapBody) []byte {
	s := (&snapBody{}).header(2)
	s.u(0)                                                    // members
	s.u(1).str("api").v(10).v(int64(time.Second)).v(10)       // one limit
	s.u(1).str("k").u(5 * uint64(100*time.Millisecond)).v(t0) // one bucket holding 5 tokens
	s.u(0)                                                    // request IDs
	if mod != nil {
		s = mod(s)
	}
	return s.b
}

// validBody3 returns a valid version 3 body: the state of validBody with the limit in local
// admission and grants written by grants (nil: none).
func validBody3(grants func(*snapBody) *snapBody) []byte {
	s := (&snapBody{}).header(3)
	s.u(0)
	s.u(1).str("api").v(10).v(int64(time.Second)).v(10).raw(1).v(int64(time.Second))
	s.u(1).str("k").u(5 * uint64(100*time.Millisecond)).v(t0)
	s.u(0) // request IDs
	if grants == nil {
		return s.u(0).b
	}
	return grants(s).b
}

func TestSnapshot_RestoreOfMalformedSnapshotsFails(t *testing.T) {
	good := withChecksum(validBody(nil))
	{ // a version 2 snapshot restores
		f := newFSM(t)
		mustRestore(t, f, good, 1)
		if got := remaining(t, f, "api", "k", t0); got != 5 {
			t.Fatalf("crafted v2 snapshot: k holds %d, want 5", got)
		}
	}
	good = withChecksum(validBody3(func(s *snapBody) *snapBody {
		return s.u(1).str("g1").str("n1").str("api").str("k").v(3).v(t0 + int64(time.Second)).v(int64(time.Second)).raw(1)
	}))
	{ // the builder writes what Persist writes
		f := newFSM(t)
		mustRestore(t, f, good, 1)
		if got := remaining(t, f, "api", "k", t0); got != 5 {
			t.Fatalf("crafted snapshot: k holds %d, want 5", got)
		}
		if !bytes.Equal(snapshotBytes(t, f), good) {
			t.Fatalf("crafted snapshot is not in the canonical encoding:\n got % x\nwant % x", snapshotBytes(t, f), good)
		}
	}
	header := func(version byte) *snapBody { return (&snapBody{}).header(version) }
	cases := map[string][]byte{
		"empty":                  {},
		"bad magic":              withChecksum(append([]byte("LIMITFSN"), validBody(nil)[8:]...)),
		"other file":             []byte("{\"clock\": 1}\n" + string(bytes.Repeat([]byte{0}, 64))),
		"version 0":              withChecksum(append(header(0).b, validBody(nil)[len(header(1).b):]...)),
		"version 4":              withChecksum(append(header(4).b, validBody3(nil)[len(header(1).b):]...)),
		"version 255":            withChecksum(append(header(255).b, validBody(nil)[len(header(1).b):]...)),
		"no checksum":            validBody(nil),
		"short checksum":         good[:len(good)-1],
		"checksum of other data": append(validBody(nil), make([]byte, 32)...),
		"one trailing byte":      append(append([]byte(nil), good...), 0),
		"trailing snapshot":      append(append([]byte(nil), good...), good...),
		"members count 2^63":     withChecksum(header(1).u(1 << 63).b),
		"limits count 2^64-1":    withChecksum(header(1).u(0).u(math.MaxUint64).b),
		"string length 2^40":     withChecksum(header(1).u(1).u(1<<40).raw(1, 2, 3).b),
		"string over 64KiB":      withChecksum(header(1).u(1).str(string(make([]byte, 1<<16+1))).str("").u(0).u(0).b),
		"sweep cursor 64":        withChecksum((&snapBody{}).raw([]byte("LIMITFSM")...).raw(1).v(t0).u(64).v(t0).u(0).u(0).u(0).b),
		"invalid limit":          withChecksum(header(1).u(0).u(1).str("api").v(0).v(int64(time.Second)).v(10).u(0).u(0).b),
		"unrepresentable limit":  withChecksum(header(1).u(0).u(1).str("api").v(1).v(math.MaxInt64).v(3).u(0).u(0).b),
		"duplicate limit": withChecksum(header(1).u(0).u(2).
			str("api").v(1).v(int64(time.Second)).v(1).u(0).
			str("api").v(1).v(int64(time.Second)).v(1).u(0).u(0).b),
		"bucket count beyond data": withChecksum(validBody(func(s *snapBody) *snapBody {
			s.b = s.b[:len(s.b)-1] // drop the request-ID count
			return s.u(1 << 30)
		})),
		"request ID count beyond data": withChecksum(validBody(func(s *snapBody) *snapBody {
			s.b = s.b[:len(s.b)-1]
			return s.u(3).raw(make([]byte, 16)...).u(7).v(t0).raw(0)
		})),
		"result count beyond data": withChecksum(validBody(func(s *snapBody) *snapBody {
			s.b = s.b[:len(s.b)-1]
			return s.u(1).raw(make([]byte, 16)...).u(7).v(t0).raw(2).raw(0).u(1 << 50)
		})),
		"request record tag 9": withChecksum(validBody(func(s *snapBody) *snapBody {
			s.b = s.b[:len(s.b)-1]
			return s.u(1).raw(make([]byte, 16)...).u(7).v(t0).raw(9)
		})),
		"malformed packed decision": withChecksum(validBody(func(s *snapBody) *snapBody {
			s.b = s.b[:len(s.b)-1]
			return s.u(1).raw(make([]byte, 16)...).u(7).v(t0).raw(1).raw(bytes.Repeat([]byte{0xff}, 15)...)
		})),
		"repeated request ID": withChecksum(validBody(func(s *snapBody) *snapBody {
			s.b = s.b[:len(s.b)-1]
			return s.u(2).raw(make([]byte, 16)...).u(7).v(t0).raw(0).raw(make([]byte, 16)...).u(7).v(t0).raw(0)
		})),
		"v1 result count beyond data": withChecksum(append(header(1).b, validBody(func(s *snapBody) *snapBody {
			s.b = s.b[:len(s.b)-1]
			return s.u(1).str("r").u(7).v(t0).raw(0).u(1 << 50)
		})[len(header(2).b):]...)),
		"admission 7": withChecksum(append(header(3).b, bytes.Replace(validBody3(nil)[len(header(1).b):], []byte{20, 1}, []byte{20, 7}, 1)...)),
		"local limit without a TTL": withChecksum(append(header(3).b, bytes.Replace(validBody3(nil)[len(header(1).b):],
			binary.AppendVarint([]byte{20, 1}, int64(time.Second)), []byte{20, 1, 0}, 1)...)),
		"grant of an unknown limit": withChecksum(validBody3(func(s *snapBody) *snapBody {
			return s.u(1).str("g1").str("n1").str("web").str("k").v(3).v(t0).v(int64(time.Second)).raw(1)
		})),
		"grant above the burst": withChecksum(validBody3(func(s *snapBody) *snapBody {
			return s.u(1).str("g1").str("n1").str("api").str("k").v(11).v(t0).v(int64(time.Second)).raw(1)
		})),
		"grant live and expired": withChecksum(validBody3(func(s *snapBody) *snapBody {
			return s.u(1).str("g1").str("n1").str("api").str("k").v(3).v(t0).v(int64(time.Second)).raw(3)
		})),
		"grants out of order": withChecksum(validBody3(func(s *snapBody) *snapBody {
			s.u(2).str("g2").str("n1").str("api").str("k").v(3).v(t0).v(int64(time.Second)).raw(1)
			return s.str("g1").str("n1").str("api").str("k").v(3).v(t0).v(int64(time.Second)).raw(1)
		})),
		"grant count beyond data": withChecksum(validBody3(func(s *snapBody) *snapBody { return s.u(1 << 40) })),
		"varint overflow":         withChecksum(append(header(1).b[:len(header(1).b)-1], bytes.Repeat([]byte{0xff}, 11)...)),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			f := otherState(t)
			hash, index := stateHash(t, f), f.AppliedIndex()
			if err := restoreErr(f, b); !errors.Is(err, fsm.ErrCorruptSnapshot) {
				t.Fatalf("Restore = %v, want ErrCorruptSnapshot", err)
			}
			checkUnchanged(t, name, f, hash, index)
		})
	}
}

// TestSnapshot_RestoreReadErrorIsCorrupt: a stream that fails mid-way is a corrupt snapshot too,
// and leaves the state alone.
func TestSnapshot_RestoreReadErrorIsCorrupt(t *testing.T) {
	snap := snapshotBytes(t, smallState(t))
	f := otherState(t)
	hash, index := stateHash(t, f), f.AppliedIndex()
	r := io.MultiReader(bytes.NewReader(snap[:len(snap)/2]), iotestErrReader{})
	if err := f.Restore(r, 99); !errors.Is(err, fsm.ErrCorruptSnapshot) {
		t.Fatalf("Restore from a failing reader = %v, want ErrCorruptSnapshot", err)
	}
	checkUnchanged(t, "failing reader", f, hash, index)
}

type iotestErrReader struct{}

func (iotestErrReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

// TestSnapshot_PersistIsCanonical: the same state persists to the same bytes however it was
// reached, and persisting twice gives the same bytes.
func TestSnapshot_PersistIsCanonical(t *testing.T) {
	a := smallState(t)
	s := a.Snapshot()
	var one, two bytes.Buffer
	if err := s.Persist(&one); err != nil {
		t.Fatal(err)
	}
	if err := s.Persist(&two); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(one.Bytes(), two.Bytes()) {
		t.Fatalf("persisting one snapshot twice gave different bytes")
	}
	// The same limits, members and buckets created in another order.
	b := newFSM(t)
	mustSetLimit(t, b, t0, "zz", 1, time.Second, 0)
	mustSetLimit(t, b, t0, "api", 10, time.Second, 0)
	mustApply(t, b, fsm.Command{Stamp: t0, SetMember: &fsm.MemberAddr{ID: "n2", APIAddr: "x"}})
	mustApply(t, b, fsm.Command{Stamp: t0, SetMember: &fsm.MemberAddr{ID: "n1", APIAddr: "10.0.0.1:7001"}})
	c := newFSM(t)
	mustApply(t, c, fsm.Command{Stamp: t0, SetMember: &fsm.MemberAddr{ID: "n1", APIAddr: "10.0.0.1:7001"}})
	mustApply(t, c, fsm.Command{Stamp: t0, SetMember: &fsm.MemberAddr{ID: "n2", APIAddr: "x"}})
	mustSetLimit(t, c, t0, "api", 10, time.Second, 0)
	mustSetLimit(t, c, t0, "zz", 1, time.Second, 0)
	for i := 0; i < 200; i++ {
		key := string(rune('a'+i%26)) + string(rune('a'+i/26))
		takeOne(t, b, t0, "api", key, 1+int64(i%9))
	}
	for i := 199; i >= 0; i-- {
		key := string(rune('a'+i%26)) + string(rune('a'+i/26))
		takeOne(t, c, t0, "api", key, 1+int64(i%9))
	}
	if !bytes.Equal(snapshotBytes(t, b), snapshotBytes(t, c)) || stateHash(t, b) != stateHash(t, c) {
		t.Fatalf("the same state reached in another order persists differently")
	}
}

// Snapshots of format version 1 (request IDs in full) still restore: a recorded admitted take
// is replayed, and the same request ID with other content is refused.
func TestSnapshot_Version1Restores(t *testing.T) {
	body := (&snapBody{}).header(1)
	body.u(0)
	body.u(1).str("api").v(10).v(int64(time.Second)).v(10)
	body.u(1).str("k").u(5 * uint64(100*time.Millisecond)).v(t0)
	req := fsm.Take{RequestID: "req-v1", Items: []fsm.Item{item("api", "k", 5)}}
	fp := fsm.Fingerprint(req)
	body.u(1).str("req-v1").u(fp).v(t0 + int64(time.Minute)).raw(0).u(1).
		raw(1).v(5).v(10).v(0).v(int64(500 * time.Millisecond))
	f := newFSM(t)
	mustRestore(t, f, withChecksum(body.b), 1)
	out := take(t, f, t0, "req-v1", item("api", "k", 5))
	if !out.Replayed || !out.Results[0].Allowed || out.Results[0].Remaining != 5 {
		t.Fatalf("retry recorded in a version-1 snapshot: %+v", out)
	}
	if r := take(t, f, t0, "req-v1", item("api", "k", 1)); !errors.Is(r.Err, fsm.ErrRequestIDReused) {
		t.Fatalf("reuse with other content: %+v", r)
	}
}
