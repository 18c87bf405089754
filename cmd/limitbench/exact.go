package main

import (
	"cmp"
	"slices"
	"strconv"
	"time"

	"github.com/limiterd/limiter/bucket"
)

// Under-admission: how many of the takes sent an exact token bucket per key would have allowed,
// compared with how many the cluster allowed. A linearizable limit allows exactly that (up to
// the order calls reach the leader); a local one may allow less (escrow held by one member while
// another is denied, escrow stranded by a failure), never more.

// maxTakeRecs bounds the takes recorded for the comparison (16 bytes each).
const maxTakeRecs = 8 << 20

// takeRec is one take that got an answer: when it was sent (since the run began), its key, and
// whether it was allowed.
type takeRec struct {
	at      time.Duration
	key     int32
	allowed bool
}

// recordTake keeps a take's send time and answer for underAdmission (warmup included: the
// buckets' state at the start of measuring depends on it).
func (w *worker) recordTake(k opKind, at time.Duration, o outcome) {
	if k != opTake || o.err != nil || len(w.st.takes) >= maxTakeRecs/w.cfg.Concurrency {
		return
	}
	key, _ := strconv.Atoi(w.take.Key[1:]) // "k123"
	w.st.takes = append(w.st.takes, takeRec{at: at, key: int32(key), allowed: o.allowed == 1})
}

// underAdmission replays the recorded takes in send order through exact buckets, full at the
// start, and returns what they allow and what the cluster allowed of the same takes. Both are 0
// when the comparison does not apply: the limit was not set up by this run, the mix is not
// takes alone, or the record overflowed.
func underAdmission(cfg *Config, start time.Time, workers []*worker) (exact, actual int64) {
	if !cfg.Setup || len(cfg.Mix) != 1 || cfg.Mix[0].Op != opTake {
		return 0, 0
	}
	var all []takeRec
	for _, w := range workers {
		if len(w.st.takes) >= maxTakeRecs/cfg.Concurrency {
			return 0, 0
		}
		all = append(all, w.st.takes...)
	}
	slices.SortFunc(all, func(a, b takeRec) int { return cmp.Compare(a.at, b.at) })
	l, err := bucket.NewLimit(cfg.Rate, cfg.Per, cfg.Burst)
	if err != nil {
		return 0, 0
	}
	k := bucket.NewKeyed(l, bucket.WithSkew(0))
	base := start.UnixNano()
	for _, r := range all {
		if res, err := k.Take("k"+strconv.Itoa(int(r.key)), base+int64(r.at), cfg.Cost); err == nil && res.Allowed {
			exact++
		}
		if r.allowed {
			actual++
		}
	}
	return exact, actual
}
