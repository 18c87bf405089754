// Package bucket is exact, deterministic token-bucket math and an embedded per-key limiter.
//
// # Units
//
// A Limit is Rate tokens every Period with a capacity of Burst tokens (Burst defaults to Rate).
// Time is int64 nanoseconds on any fixed epoch the caller chooses (Unix nanoseconds, or a
// replicated log's clock). Tokens are integers in sub-token units: Rate/Period is reduced to lowest
// terms r/p, a token is p units and a bucket gains r units per nanosecond. There is no floating
// point anywhere, so the same sequence of (time, operation) gives bit-identical state on every
// machine and architecture, and refill is exact: 1 token per hour accrues exactly one token after
// exactly one hour. A limit whose capacity in units (Burst × p) does not fit in 63 bits is refused
// by NewLimit with an error rather than approximated.
//
// # Rounding
//
// Remaining counts whole tokens, rounded down. RetryAfter and ResetAfter are exact times rounded
// up to the next nanosecond, so waiting for RetryAfter always suffices. A take of cost n is all or
// nothing: a denied take consumes nothing. A cost above Burst can never succeed: Take returns an
// error wrapping ErrCostExceedsBurst and RetryAfter is Never. Changing a limit (Keyed.SetLimit,
// Bucket.Rescale) first refills every bucket at the old rate up to the moment of the change, then
// keeps each bucket's fraction of capacity (500 of 1000 becomes 2500 of 5000), rounding down by at
// most one sub-token unit.
//
// # Clocks
//
// A bucket never runs time backward. A time behind the bucket's last refill by at most the skew
// tolerance (DefaultSkew, 100 ms; WithSkew changes it) counts as no time passed: nothing is
// refilled and the bucket keeps its anchor. A larger backward step is a clock reset: the bucket
// re-anchors at the new time without granting tokens, and tokens never go negative. A forward
// jump refills at most to capacity. Refilling at t1 and then at t2 gives exactly the state of one
// refill at t2.
//
// A bucket cannot tell a reset from a stale reading: times that swing back by more than the skew
// and forward again (a goroutine that read the clock, then waited longer than the skew for the
// lock) are each taken as a reset, and every swing forward refills the same interval again. So
// read the clock just before each call, from one monotonic source (time.Since of a fixed base,
// not wall time), and keep the skew above the longest delay a caller may see between reading the
// clock and the call. The replicated state machine is not exposed to this: its clock comes from
// the log and never moves backward.
//
// # Memory and eviction
//
// A Bucket is 16 bytes. A key with no bucket behaves as a full one, so Keyed.Evict drops buckets
// that have refilled to full by the caller's clock; that changes no answer and keeps memory
// proportional to recently active keys (about 90 bytes per key with 16-byte names, map and slab
// included; see BenchmarkMemoryPerKey). Keyed.StartSweeper runs Evict in the background for the embedded mode.
//
// # Concurrency
//
// Bucket is a plain value and is not safe for concurrent use. Limiter (one bucket) and Keyed
// (many) are: Keyed spreads keys over 64 mutex-guarded shards by a deterministic hash, so takes on
// different keys run in parallel and a limit change moves shard by shard without failing or
// losing a concurrent take.
package bucket
