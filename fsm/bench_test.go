package fsm_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/limiterd/limiter/fsm"
)

// BenchmarkApplyTakeBatch applies batch entries of 100 takes, each on its own key and with its own
// request ID, 1ms of log time apart, and reports the cost per take (decode, exactly-once lookup
// and record, bucket update, expiry and sweep included).
//
// The entry is encoded once; each iteration rewrites its stamp and request IDs in place (both are
// fixed-width), so the timed loop measures Apply only.
func BenchmarkApplyTakeBatch(b *testing.B) {
	const takes = 100
	f := newFSM(b, func(c *fsm.Config) { c.DedupWindow = time.Second }) // ~100k live request IDs
	mustSetLimit(b, f, t0, "api", 1000, time.Second, 0)

	id := func(iter, j int) string { return fmt.Sprintf("%010d-%03d", iter, j) }
	cmd := fsm.Command{Stamp: t0, TakeBatch: []fsm.Take{}}
	for j := 0; j < takes; j++ {
		cmd.TakeBatch = append(cmd.TakeBatch, fsm.Take{RequestID: id(0, j), Items: []fsm.Item{{Limit: "api", Key: fmt.Sprintf("user:%03d", j), Cost: 1}}})
	}
	entry := cmd.Encode(nil)
	idAt := make([]int, takes)
	for j := range idAt {
		idAt[j] = bytes.Index(entry, []byte(id(0, j)))
	}
	stampLen := len(binary.AppendVarint(nil, t0))

	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		stamp := t0 + int64(i+1)*int64(time.Millisecond)
		if n := len(binary.AppendVarint(entry[2:2], stamp)); n != stampLen {
			b.Fatalf("stamp varint changed width: %d bytes, want %d", n, stampLen)
		}
		var digits [10]byte // the iteration number, the part of every request ID that changes
		for k, v := len(digits)-1, i+1; k >= 0; k, v = k-1, v/10 {
			digits[k] = byte('0' + v%10)
		}
		for _, off := range idAt {
			copy(entry[off:], digits[:])
		}
		resp := f.Apply(uint64(i+2), entry)
		if resp.Err != nil || resp.Takes[0].Err != nil || resp.Takes[0].Replayed || !resp.Takes[takes-1].Results[0].Allowed {
			b.Fatalf("iteration %d: unexpected response %s", i, describe(resp, true))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*takes), "ns/take")
}
