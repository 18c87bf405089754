package fsm

import (
	"crypto/sha256"
	"encoding/binary"
	"time"

	"github.com/limiterd/limiter/bucket"
)

// The exactly-once table: request ID -> recorded outcome, for DedupWindow of log time and at most
// DedupMax records, dropping the oldest first. Both rules depend only on the log, so every replica
// drops the same records at the same entry.
//
// It is built for memory (about 60 bytes per record of a single-item take, the common case): a
// log-ordered ring of fixed 48-byte entries and an open-addressing index of ring positions. A
// record keeps a 16-byte SHA-256 digest of its request ID, not the ID; the content fingerprint;
// its expiry; and its outcome packed into 16 bytes when it is one admitted decision. An outcome
// that admitted nothing binds nothing (applyTake), so only the fact that it was recorded is kept.
// Outcomes that do not pack (several items, or a binding denial of an entry of the earlier kind)
// live in a side map.

// outcome is a recorded answer in full (the side map, snapshots of the earlier format).
type outcome struct {
	results []bucket.Result
	err     *recordedError
}

// admitted reports whether the outcome admitted anything (then it binds; see applyTake).
func (o *outcome) admitted() bool {
	for _, r := range o.results {
		if r.Allowed {
			return true
		}
	}
	return false
}

// idKey is a request ID as the table keeps it: the first 16 bytes of its SHA-256.
type idKey [16]byte

func keyOf(id string) idKey {
	sum := sha256.Sum256([]byte(id))
	return idKey(sum[:16])
}

// Entry tags: what a record keeps of its outcome.
const (
	tagNone   byte = iota // admitted nothing and binds nothing: no outcome kept
	tagPacked             // one admitted decision, packed into the entry
	tagFull               // the outcome is in the side map
)

// dedupEntry is one record in the ring.
type dedupEntry struct {
	key     idKey
	fp      uint64 // fingerprint of the request's content
	expires int64  // log time after which the record may be dropped
	packed  [16]byte
}

func (e *dedupEntry) tag() byte { return e.packed[0] }

// pack stores one admitted decision in e.packed, or reports that it does not fit.
func (e *dedupEntry) pack(r bucket.Result) bool {
	var arr [4 * binary.MaxVarintLen64]byte
	buf := binary.AppendVarint(arr[:0], r.Remaining)
	buf = binary.AppendVarint(buf, r.Limit)
	buf = binary.AppendVarint(buf, int64(r.RetryAfter))
	buf = binary.AppendVarint(buf, int64(r.ResetAfter))
	if !r.Allowed || len(buf) > len(e.packed)-1 {
		return false
	}
	e.packed = [16]byte{}
	e.packed[0] = tagPacked
	copy(e.packed[1:], buf)
	return true
}

// validPacked reports whether a packed decision read from a snapshot holds four whole varints.
func validPacked(p [16]byte) bool {
	b := p[1:]
	for i := 0; i < 4; i++ {
		_, n := binary.Varint(b)
		if n <= 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

// unpack reads the decision pack stored.
func (e *dedupEntry) unpack() bucket.Result {
	b := e.packed[1:]
	next := func() int64 {
		v, n := binary.Varint(b)
		b = b[n:]
		return v
	}
	r := bucket.Result{Allowed: true}
	r.Remaining = next()
	r.Limit = next()
	r.RetryAfter = time.Duration(next())
	r.ResetAfter = time.Duration(next())
	return r
}

// found is what a lookup finds.
type found struct {
	fp       uint64
	admitted bool // the outcome admitted something (it binds)
	kept     bool // the outcome itself is kept (for a replay)
	out      *outcome
	one      bucket.Result // the decision, when packed
}

// replay is the recorded answer to a retry of the request.
func (r found) replay() TakeOutcome {
	if r.out == nil {
		return TakeOutcome{Results: []bucket.Result{r.one}, Replayed: true}
	}
	out := TakeOutcome{Results: r.out.results, Replayed: true}
	if r.out.err != nil { // not a plain assignment: a nil *recordedError is a non-nil error
		out.Err = r.out.err
	}
	return out
}

type dedupTable struct {
	window int64
	max    int

	// ring holds n entries in log order from head, circularly; an entry whose key the index
	// maps elsewhere is stale (its request was recorded again, decided afresh).
	ring  []dedupEntry
	head  int
	n     int
	index []int32 // open addressing over ring slots: slot+1, 0 when empty
	live  int     // records the index holds
	full  map[idKey]*outcome
}

func newDedupTable(window int64, max int) *dedupTable {
	return &dedupTable{window: window, max: max, full: map[idKey]*outcome{}}
}

func (d *dedupTable) len() int { return d.live }

func (d *dedupTable) slot(i int) int { return (d.head + i) % len(d.ring) }

// find returns the ring slot holding key's live record, and the index position where it (or the
// gap to insert it at) is.
func (d *dedupTable) find(k idKey) (slot, pos int) {
	if len(d.index) == 0 {
		return -1, -1
	}
	mask := len(d.index) - 1
	for pos = int(binary.LittleEndian.Uint64(k[:8])) & mask; ; pos = (pos + 1) & mask {
		v := d.index[pos]
		if v == 0 {
			return -1, pos
		}
		if d.ring[v-1].key == k {
			return int(v - 1), pos
		}
	}
}

// get looks a request ID's digest up.
func (d *dedupTable) get(k idKey) (found, bool) {
	slot, _ := d.find(k)
	if slot < 0 {
		return found{}, false
	}
	return d.recordAt(slot), true
}

func (d *dedupTable) recordAt(slot int) found {
	e := &d.ring[slot]
	r := found{fp: e.fp}
	switch e.tag() {
	case tagPacked:
		r.admitted, r.kept, r.one = true, true, e.unpack()
	case tagFull:
		r.out = d.full[e.key]
		r.admitted, r.kept = r.out.admitted(), true
	}
	return r
}

// put records a request's outcome. keepDenials keeps an outcome that admitted nothing (entries
// of the earlier kind bind it); otherwise only the fact is kept.
func (d *dedupTable) put(k idKey, fp uint64, expires int64, o *outcome, keepDenials bool) {
	e := dedupEntry{key: k, fp: fp, expires: expires}
	var full *outcome
	switch {
	case o.err == nil && len(o.results) == 1 && e.pack(o.results[0]):
	case !o.admitted() && !keepDenials:
		e.packed[0] = tagNone
	default:
		e.packed[0] = tagFull
		full = o
	}
	d.insert(e, full)
}

// insert appends e (replacing any record of the same key in the index) with its side outcome.
func (d *dedupTable) insert(e dedupEntry, full *outcome) {
	if d.n == len(d.ring) {
		d.resize(max(16, d.n+d.n/8)) // grow by an eighth: the ring is most of the memory
	}
	if (d.live+1)*4 > len(d.index)*3 {
		d.reindex(max(16, 2*len(d.index)))
	}
	slot := d.slot(d.n)
	d.ring[slot] = e
	d.n++
	if len(d.full) > 0 {
		delete(d.full, e.key) // a replaced record's outcome goes with it
	}
	if full != nil {
		d.full[e.key] = full
	}
	if old, pos := d.find(e.key); old >= 0 {
		d.index[pos] = int32(slot + 1) // the old entry is stale now
	} else {
		d.index[pos] = int32(slot + 1)
		d.live++
	}
}

// resize moves the ring's entries to a ring of capacity c (>= n), head at 0. The index is
// remapped slot by slot (a slot's new position is its distance from the head), not rebuilt: a
// rebuild probes for every entry, and the ring grows by an eighth at a time.
func (d *dedupTable) resize(c int) {
	ring := make([]dedupEntry, c)
	for i := 0; i < d.n; i++ {
		ring[i] = d.ring[d.slot(i)]
	}
	if old := len(d.ring); old > 0 {
		for pos, v := range d.index {
			if v != 0 {
				d.index[pos] = int32((int(v-1)-d.head+old)%old + 1)
			}
		}
	}
	d.ring, d.head = ring, 0
}

// liveFlags says, by ring order, which entries the index points to.
func (d *dedupTable) liveFlags() []bool {
	keep := make([]bool, d.n)
	for _, v := range d.index {
		if v != 0 {
			keep[(int(v-1)-d.head+len(d.ring))%len(d.ring)] = true
		}
	}
	return keep
}

// reindex rebuilds the index with c positions (a power of two).
func (d *dedupTable) reindex(c int) { d.rebuild(d.liveFlags(), c) }

// rebuild makes an index of c positions over the ring entries whose keep flag (by ring order)
// is set.
func (d *dedupTable) rebuild(keep []bool, c int) {
	c = max(c, 16)
	for d.live*4 > c*3 {
		c *= 2
	}
	d.index = make([]int32, c)
	for i := 0; i < d.n; i++ {
		if keep[i] {
			s := d.slot(i)
			_, pos := d.find(d.ring[s].key)
			d.index[pos] = int32(s + 1)
		}
	}
}

// remove deletes the index position pos, shifting later entries of its probe run back (linear
// probing needs no tombstones then).
func (d *dedupTable) remove(pos int) {
	mask := len(d.index) - 1
	d.index[pos] = 0
	for next := (pos + 1) & mask; d.index[next] != 0; next = (next + 1) & mask {
		v := d.index[next]
		home := int(binary.LittleEndian.Uint64(d.ring[v-1].key[:8])) & mask
		// Move v back into the gap unless its home lies cyclically in (pos, next].
		if (next > pos && (home <= pos || home > next)) || (next < pos && home <= pos && home > next) {
			d.index[pos], d.index[next] = v, 0
			pos = next
		}
	}
	d.live--
}

// expire drops records whose time has passed, and the oldest records beyond max.
func (d *dedupTable) expire(now int64) {
	for d.n > 0 {
		s := d.head
		e := &d.ring[s]
		if cur, pos := d.find(e.key); cur == s { // live, not stale
			if e.expires > now && d.live <= d.max {
				break
			}
			d.remove(pos)
			delete(d.full, e.key)
		}
		d.ring[s] = dedupEntry{}
		d.head = (d.head + 1) % len(d.ring)
		d.n--
	}
	if d.n == 0 {
		d.head = 0
	}
	// Give memory back once the ring is mostly empty.
	if len(d.ring) > 1024 && d.n*4 < len(d.ring) {
		d.resize(d.n + d.n/8 + 16)
	}
	if len(d.index) > 1024 && d.live*8 < len(d.index) {
		d.reindex(16)
	}
}

// span is how long, in log time, a request recorded now is sure to stay recorded: the window,
// or less when the table is at its cap and drops the oldest records before they expire (then:
// the age of the oldest record).
func (d *dedupTable) span(now int64) int64 {
	if d.live < d.max {
		return d.window
	}
	var out int64 = d.window
	d.each(func(_ idKey, e *dedupEntry, _ *outcome) bool {
		out = max(0, min(d.window, now-(e.expires-d.window)))
		return false
	})
	return out
}

// each visits live records in log order (of their latest recording) until fn returns false.
func (d *dedupTable) each(fn func(k idKey, e *dedupEntry, full *outcome) bool) {
	for i := 0; i < d.n; i++ {
		s := d.slot(i)
		e := &d.ring[s]
		if cur, _ := d.find(e.key); cur != s {
			continue // stale
		}
		var full *outcome
		if e.tag() == tagFull {
			full = d.full[e.key]
		}
		if !fn(e.key, e, full) {
			return
		}
	}
}
