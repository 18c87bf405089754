package fsm_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/limiterd/limiter/fsm"
)

// FuzzDecode: Decode never panics and fails only with ErrCorruptEntry; whatever it accepts
// re-encodes to an equal command, and applying it never halts the state machine. The committed
// seeds (testdata/fuzz/FuzzDecode) are real encodings of every kind plus malformed entries.
func FuzzDecode(f *testing.F) {
	for _, cmd := range roundTripCommands() {
		f.Add(encode(cmd))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cmd, err := fsm.Decode(data)
		if err != nil {
			if !errors.Is(err, fsm.ErrCorruptEntry) {
				t.Fatalf("Decode error %v does not wrap ErrCorruptEntry", err)
			}
			return
		}
		enc := cmd.Encode(nil)
		again, err := fsm.Decode(enc)
		if err != nil {
			t.Fatalf("Decode(Encode(Decode(x))) failed: %v\ncommand %+v", err, cmd)
		}
		if !reflect.DeepEqual(again, cmd) {
			t.Fatalf("Decode(Encode(c)) = %+v, want %+v", again, cmd)
		}
		if !bytes.Equal(again.Encode(nil), enc) {
			t.Fatalf("re-encoding is not stable")
		}

		// A decodable entry is applied, never halts: refusals are per command or per take.
		fm, err := fsm.New(fsm.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		fm.Apply(1, encode(fsm.Command{SetLimit: &fsm.LimitSpec{Name: "l", Rate: 10, Period: time.Second}}))
		resp := fm.Apply(2, data)
		if resp == nil || errors.Is(resp.Err, fsm.ErrCorruptEntry) || fm.Stats().Halted != nil {
			t.Fatalf("Apply of a decodable entry halted: %+v", resp)
		}
		if cmd.Kind() == fsm.KindTakeBatch && len(resp.Takes) != len(cmd.TakeBatch) {
			t.Fatalf("%d takes, %d outcomes", len(cmd.TakeBatch), len(resp.Takes))
		}
		if _, err := fm.StateHash(); err != nil {
			t.Fatalf("StateHash after applying: %v", err)
		}
	})
}

// FuzzRestore: Restore of arbitrary bytes never panics and either fails with ErrCorruptSnapshot,
// leaving the state alone, or succeeds with a state that persists and restores to the same hash.
// Each input is tried as a whole snapshot and as a body with a valid checksum appended, so the
// fuzzer also reaches the decoder behind the checksum. The committed seeds
// (testdata/fuzz/FuzzRestore) are real snapshots, their bodies, and broken variants.
func FuzzRestore(f *testing.F) {
	f.Add(snapshotBytes(f, newFSM(f)))
	f.Add(snapshotBytes(f, smallState(f)))
	f.Add(validBody(nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		sum := sha256.Sum256(data)
		for _, in := range [][]byte{data, append(data[:len(data):len(data)], sum[:]...)} {
			fm := otherState(t)
			before := stateHash(t, fm)
			err := fm.Restore(bytes.NewReader(in), 7)
			if err != nil {
				if !errors.Is(err, fsm.ErrCorruptSnapshot) {
					t.Fatalf("Restore error %v does not wrap ErrCorruptSnapshot", err)
				}
				if stateHash(t, fm) != before || fm.AppliedIndex() == 7 {
					t.Fatalf("a failed Restore changed the state")
				}
				continue
			}
			if fm.AppliedIndex() != 7 {
				t.Fatalf("AppliedIndex = %d after Restore at 7", fm.AppliedIndex())
			}
			h := stateHash(t, fm)
			again := newFSM(t)
			mustRestore(t, again, snapshotBytes(t, fm), 7)
			if stateHash(t, again) != h {
				t.Fatalf("persist and restore of a restored state changed its hash")
			}
			// The restored state can go on applying entries.
			for _, cmd := range []fsm.Command{
				{Stamp: fm.Clock() + int64(time.Second)},
				{Stamp: fm.Clock() + int64(time.Second), TakeBatch: []fsm.Take{{RequestID: "r", Items: []fsm.Item{{Limit: "api", Key: "k", Cost: 1}}}}},
			} {
				if resp := fm.Apply(fm.AppliedIndex()+1, encode(cmd)); resp.Err != nil && errors.Is(resp.Err, fsm.ErrCorruptEntry) {
					t.Fatalf("apply after restore: %v", resp.Err)
				}
			}
		}
	})
}
