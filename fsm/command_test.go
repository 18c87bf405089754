package fsm_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/limiterd/limiter/fsm"
)

// roundTripCommands has at least one command of every Kind, with edge values in every field.
// Decode always returns non-nil (possibly empty) Takes and Items for a take batch, so the
// expected values spell them out.
func roundTripCommands() map[string]fsm.Command {
	return map[string]fsm.Command{
		"take-batch": {Stamp: t0, TakeBatch: []fsm.Take{
			{RequestID: "req-1", Items: []fsm.Item{{Limit: "api", Key: "user:42", Cost: 1}, {Limit: "global", Key: "*", Cost: 7}}},
			{RequestID: "", Items: []fsm.Item{{Limit: "api", Key: "ключ\x00\xff", Cost: math.MaxInt64}}},
			{RequestID: strings.Repeat("r", fsm.MaxRequestIDLen), Items: []fsm.Item{{Limit: "", Key: "", Cost: -5}, {Limit: "a", Key: "b", Cost: math.MinInt64}}},
		}},
		"take-batch-empty":       {Stamp: 0, TakeBatch: []fsm.Take{}},
		"take-batch-legacy":      {Stamp: 3, BindingDenials: true, TakeBatch: []fsm.Take{{RequestID: "x", Items: []fsm.Item{{Limit: "l", Key: "k", Cost: 1}}}}},
		"take-batch-min-stamp":   {Stamp: math.MinInt64, TakeBatch: []fsm.Take{{RequestID: "x", Items: []fsm.Item{{Limit: "l", Key: "k", Cost: 0}}}}},
		"set-limit":              {Stamp: t0, SetLimit: &fsm.LimitSpec{Name: "api", Rate: 1000, Period: time.Minute, Burst: 5000}},
		"set-limit-extremes":     {Stamp: -1, SetLimit: &fsm.LimitSpec{Name: "x", Rate: math.MinInt64, Period: math.MaxInt64, Burst: -1}},
		"set-limit-zero":         {SetLimit: &fsm.LimitSpec{}},
		"delete-limit":           {Stamp: t0 + 1, DeleteLimit: &fsm.LimitRef{Name: "api"}},
		"delete-limit-long-name": {Stamp: t0, DeleteLimit: &fsm.LimitRef{Name: strings.Repeat("n", 1000)}},
		"set-member":             {Stamp: t0, SetMember: &fsm.MemberAddr{ID: "node-1", APIAddr: "10.0.0.1:7001"}},
		"forget-member":          {Stamp: t0, SetMember: &fsm.MemberAddr{ID: "node-1", APIAddr: ""}},
		"tick":                   {Stamp: t0},
		"tick-max-stamp":         {Stamp: math.MaxInt64},
	}
}

func TestEncodeDecode_RoundTripsEveryKind(t *testing.T) {
	seen := map[fsm.Kind]bool{}
	for name, cmd := range roundTripCommands() {
		t.Run(name, func(t *testing.T) {
			b := encode(cmd)
			if b[0] != fsm.FormatVersion || fsm.Kind(b[1]) != cmd.Kind() {
				t.Fatalf("envelope % x: want version %d kind %d first", b[:2], fsm.FormatVersion, cmd.Kind())
			}
			got, err := fsm.Decode(b)
			if err != nil {
				t.Fatalf("Decode(Encode(%+v)): %v", cmd, err)
			}
			if !reflect.DeepEqual(got, cmd) {
				t.Fatalf("Decode(Encode(c)) = %+v\nwant %+v", got, cmd)
			}
			// The encoding is canonical: re-encoding the decoded command gives the same bytes,
			// and appending to a non-empty dst leaves the prefix alone.
			if again := encode(got); !bytes.Equal(again, b) {
				t.Fatalf("Encode(Decode(b)) = % x, want % x", again, b)
			}
			if app := cmd.Encode([]byte("prefix")); !bytes.Equal(app, append([]byte("prefix"), b...)) {
				t.Fatalf("Encode(dst) did not append to dst")
			}
		})
		seen[cmd.Kind()] = true
	}
	for _, k := range []fsm.Kind{fsm.KindTakeBatch, fsm.KindTakes, fsm.KindSetLimit, fsm.KindDeleteLimit, fsm.KindSetMember, fsm.KindTick} {
		if !seen[k] {
			t.Errorf("no round-trip case for kind %s", k)
		}
	}
}

// TestDecode_EveryTruncationIsCorrupt cuts every valid encoding at every length: the format is
// self-delimiting, so no proper prefix of an entry may decode.
func TestDecode_EveryTruncationIsCorrupt(t *testing.T) {
	for name, cmd := range roundTripCommands() {
		b := encode(cmd)
		for n := 0; n < len(b); n++ {
			got, err := fsm.Decode(b[:n])
			if !errorsIsCorruptEntry(err) {
				t.Fatalf("%s: Decode of the first %d of %d bytes = %+v, %v; want ErrCorruptEntry", name, n, len(b), got, err)
			}
			if !reflect.DeepEqual(got, fsm.Command{}) {
				t.Fatalf("%s: Decode of a %d-byte prefix returned a partial command %+v with its error", name, n, got)
			}
		}
	}
}

func TestDecode_MalformedEntriesAreCorrupt(t *testing.T) {
	valid := func(c fsm.Command) []byte { return encode(c) }
	tick := valid(fsm.Command{Stamp: t0})
	withByte := func(b []byte, i int, v byte) []byte {
		c := append([]byte(nil), b...)
		c[i] = v
		return c
	}
	// header builds the envelope of a kind with a zero stamp, followed by raw body bytes.
	header := func(k fsm.Kind, body ...byte) []byte { return append([]byte{fsm.FormatVersion, byte(k), 0}, body...) }
	uvarint := func(v uint64) []byte { return binary.AppendUvarint(nil, v) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	cases := map[string][]byte{
		"nil":          nil,
		"empty":        {},
		"version only": {fsm.FormatVersion},
		"version 0":    withByte(tick, 0, 0),
		"version 2":    withByte(tick, 0, fsm.FormatVersion+1),
		"version 255":  withByte(tick, 0, 255),
		"kind 0":       withByte(tick, 1, 0),
		"kind 6":       withByte(tick, 1, 6),
		"kind 255":     withByte(tick, 1, 255),
		"stamp varint overflow": append([]byte{fsm.FormatVersion, byte(fsm.KindTick)},
			bytes.Repeat([]byte{0xff}, binary.MaxVarintLen64+1)...),
		"tick trailing byte":         append(tick, 0),
		"set-limit trailing byte":    append(valid(roundTripCommands()["set-limit"]), 1),
		"delete-limit trailing byte": append(valid(roundTripCommands()["delete-limit"]), 1),
		"set-member trailing byte":   append(valid(roundTripCommands()["set-member"]), 1),
		"take-batch trailing byte":   append(valid(roundTripCommands()["take-batch"]), 1),
		"two entries concatenated":   append(append([]byte(nil), tick...), tick...),
		"take count 2^64-1":          header(fsm.KindTakeBatch, uvarint(math.MaxUint64)...),
		"take count 2^62":            header(fsm.KindTakeBatch, uvarint(1<<62)...),
		"take count beyond bytes":    cat(header(fsm.KindTakeBatch), uvarint(2), []byte{0, 1, 0, 0, 2}),
		"item count 2^64-1":          cat(header(fsm.KindTakeBatch), uvarint(1), uvarint(0), uvarint(math.MaxUint64)),
		"item count beyond bytes":    cat(header(fsm.KindTakeBatch), uvarint(1), uvarint(0), uvarint(3), []byte{0, 0, 2, 0, 0, 2}),
		"request ID length 2^63":     cat(header(fsm.KindTakeBatch), uvarint(1), uvarint(1<<63), []byte{1, 0, 0, 2}),
		"limit name length 2^64-1":   cat(header(fsm.KindSetLimit), uvarint(math.MaxUint64), []byte{2, 2, 2}),
		"limit name beyond bytes":    cat(header(fsm.KindDeleteLimit), uvarint(5), []byte("abcd")),
		"member addr beyond bytes":   cat(header(fsm.KindSetMember), uvarint(1), []byte("n"), uvarint(10), []byte("x")),
		"set-limit missing burst":    cat(header(fsm.KindSetLimit), uvarint(1), []byte("n"), []byte{2, 2}),
		"cost varint unterminated":   cat(header(fsm.KindTakeBatch), uvarint(1), uvarint(0), uvarint(1), []byte{0, 0, 0x80}),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := fsm.Decode(b)
			if !errorsIsCorruptEntry(err) {
				t.Fatalf("Decode(% x) = %+v, %v; want ErrCorruptEntry", b, got, err)
			}
		})
	}
}

// TestEncodeDecode_TakeWithoutItemsRoundTrips: Encode accepts a take with no items (Apply then
// refuses it with ErrInvalidCommand, see TestApply_InvalidNamesKeysAndRequestIDs), so Decode
// must accept what Encode wrote. Otherwise a leader that proposes such a take (for instance an
// API request with an empty item list that no layer rejected) commits an entry on which every
// replica halts.
func TestEncodeDecode_TakeWithoutItemsRoundTrips(t *testing.T) {
	for _, id := range []string{"", "a", "ab"} {
		cmd := fsm.Command{Stamp: t0, TakeBatch: []fsm.Take{{RequestID: id, Items: []fsm.Item{}}}}
		got, err := fsm.Decode(encode(cmd))
		if err != nil {
			t.Errorf("request ID %q: Decode(Encode(take with no items)): %v", id, err)
			continue
		}
		if !reflect.DeepEqual(got, cmd) {
			t.Errorf("request ID %q: round trip = %+v, want %+v", id, got, cmd)
		}
		f := newFSM(t)
		resp := apply(t, f, cmd)
		if resp.Err != nil || len(resp.Takes) != 1 {
			t.Errorf("request ID %q: Apply: err %v, %d outcomes; want the take refused on its own", id, resp.Err, len(resp.Takes))
		} else {
			wantErrIs(t, "take with no items", resp.Takes[0].Err, fsm.ErrInvalidCommand)
		}
		if h := f.Stats().Halted; h != nil {
			t.Errorf("request ID %q: the state machine halted on an entry Encode produced: %v", id, h)
		}
	}
}

func TestKind_StringNamesEveryKind(t *testing.T) {
	for k, want := range map[fsm.Kind]string{
		fsm.KindTakeBatch: "take-batch", fsm.KindSetLimit: "set-limit", fsm.KindDeleteLimit: "delete-limit",
		fsm.KindSetMember: "set-member", fsm.KindTick: "tick", fsm.KindTakes: "takes", fsm.Kind(9): "kind(9)",
	} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", byte(k), got, want)
		}
	}
}

func errorsIsCorruptEntry(err error) bool { return errors.Is(err, fsm.ErrCorruptEntry) }

// The log format did not change when Command became a one-of: these bytes were written by the
// encoder before (commit 8dda4fa), and are what committed logs hold.
func TestEncode_SameBytesAsBeforeTheOneOf(t *testing.T) {
	for _, c := range []struct {
		cmd fsm.Command
		hex string
	}{
		{fsm.Command{Stamp: 1700000000123456789, BindingDenials: true, TakeBatch: []fsm.Take{{RequestID: "req-1", Items: []fsm.Item{{Limit: "api", Key: "user:42", Cost: 3}}}, {Items: []fsm.Item{{Limit: "g", Key: "*", Cost: 1}, {Limit: "api", Key: "k", Cost: 7}}}}},
			"0101aab4aed8c7bfce972f02057265712d31010361706907757365723a34320600020167012a0203617069016b0e"},
		{fsm.Command{Stamp: 5, SetLimit: &fsm.LimitSpec{Name: "api", Rate: 1000, Period: time.Minute, Burst: 5000}}, "01020a03617069d00f80e0ba84bf03904e"},
		{fsm.Command{Stamp: -7, DeleteLimit: &fsm.LimitRef{Name: "api"}}, "01030d03617069"},
		{fsm.Command{Stamp: 9, SetMember: &fsm.MemberAddr{ID: "n1", APIAddr: "10.0.0.1:7401"}}, "010412026e310d31302e302e302e313a37343031"},
		{fsm.Command{Stamp: 11}, "010516"},
	} {
		if got := hex.EncodeToString(c.cmd.Encode(nil)); got != c.hex {
			t.Errorf("%s: encoded %s, want %s (the bytes committed logs hold)", c.cmd.Kind(), got, c.hex)
		}
		b, _ := hex.DecodeString(c.hex)
		back, err := fsm.Decode(b)
		if err != nil || hex.EncodeToString(back.Encode(nil)) != c.hex {
			t.Errorf("%s: decode and re-encode: %v", c.cmd.Kind(), err)
		}
	}
}
