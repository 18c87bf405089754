package fsm

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/limiterd/limiter/bucket"
)

// refTable is the plain model of dedupTable: a map and a log-ordered list of recordings.
type refTable struct {
	max   int
	recs  map[string]refRec
	order []refOrder
	seq   int
}

type refRec struct {
	fp      uint64
	expires int64
	o       *outcome
	seq     int
}

type refOrder struct {
	id  string
	seq int
}

func (r *refTable) put(id string, fp uint64, expires int64, o *outcome) {
	r.seq++
	r.recs[id] = refRec{fp, expires, o, r.seq}
	r.order = append(r.order, refOrder{id, r.seq})
}

func (r *refTable) expire(now int64) {
	for len(r.order) > 0 {
		e := r.order[0]
		if rec, ok := r.recs[e.id]; ok && rec.seq == e.seq {
			if rec.expires > now && len(r.recs) <= r.max {
				break
			}
			delete(r.recs, e.id)
		}
		r.order = r.order[1:]
	}
}

// The compact table answers exactly as the plain model under random puts (new IDs, repeats that
// replace a record, multi-item and denied outcomes), expiries and caps, across its ring and index
// growing and shrinking.
func TestDedupTable_MatchesAPlainModel(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	for round := 0; round < 20; round++ {
		max := 1 + rng.IntN(6000)
		window := int64(1000)
		d := newDedupTable(window, max)
		ref := &refTable{max: max, recs: map[string]refRec{}}
		now := int64(0)
		ids := 1 + rng.IntN(20000)
		for step := 0; step < 20000; step++ {
			now += int64(rng.IntN(3))
			if rng.IntN(5000) == 0 {
				now += 2 * window // everything expires: the ring and the index shrink
			}
			id := fmt.Sprintf("id-%d", rng.IntN(ids))
			var o *outcome
			switch rng.IntN(4) {
			case 0:
				o = &outcome{results: []bucket.Result{{Allowed: true, Remaining: rng.Int64N(1 << 20), Limit: 1 << 20, ResetAfter: time.Duration(rng.Int64N(1e10))}}}
			case 1:
				o = &outcome{results: []bucket.Result{{Allowed: true, Remaining: 1}, {Allowed: false, RetryAfter: 5}}}
			case 2:
				o = &outcome{results: []bucket.Result{{Allowed: false, RetryAfter: 7}}}
			default:
				o = &outcome{err: record(ErrUnknownLimit)}
			}
			keep := rng.IntN(2) == 0
			fp := uint64(rng.IntN(3))
			d.put(keyOf(id), fp, now+window, o, keep)
			ref.put(id, fp, now+window, o)
			d.expire(now)
			ref.expire(now)
			if d.len() != len(ref.recs) {
				t.Fatalf("round %d step %d: len %d, model %d", round, step, d.len(), len(ref.recs))
			}
			probe := fmt.Sprintf("id-%d", rng.IntN(ids))
			got, ok := d.get(keyOf(probe))
			want, wok := ref.recs[probe]
			if ok != wok {
				t.Fatalf("round %d step %d: get(%s) present %v, model %v", round, step, probe, ok, wok)
			}
			if ok && (got.fp != want.fp || got.admitted != want.o.admitted()) {
				t.Fatalf("round %d step %d: get(%s) = %+v, model %+v", round, step, probe, got, want)
			}
			if ok && got.admitted {
				r := got.replay()
				if len(r.Results) != len(want.o.results) || r.Results[0] != want.o.results[0] {
					t.Fatalf("round %d step %d: replay %+v, model %+v", round, step, r.Results, want.o.results)
				}
			}
		}
		n := 0
		d.each(func(idKey, *dedupEntry, *outcome) bool { n++; return true })
		if n != d.len() {
			t.Fatalf("round %d: each visits %d records, len %d", round, n, d.len())
		}
	}
}

// BenchmarkDedupInsert records b.N fresh request IDs (one-item admitted takes), as a leader
// applying a steady stream of takes does: the table grows, ring and index with it.
//
//	go test -run '^$' -bench DedupInsert -benchmem ./fsm/
func BenchmarkDedupInsert(b *testing.B) {
	d := newDedupTable(int64(time.Hour), 1<<30)
	o := &outcome{results: []bucket.Result{{Allowed: true, Remaining: 5, Limit: 10}}}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		var k idKey
		binary.LittleEndian.PutUint64(k[:8], uint64(i)*0x9E3779B97F4A7C15)
		d.put(k, uint64(i), int64(time.Hour), o, false)
	}
}
