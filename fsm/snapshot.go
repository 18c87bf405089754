package fsm

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"sort"
	"time"

	"github.com/limiterd/limiter/bucket"
)

// snapshotMagic starts every snapshot; the byte after it is the snapshot format version.
const snapshotMagic = "LIMITFSM"

// snapshotVersion is the format Persist writes. Version 2 keeps the exactly-once table as the
// table does (request ID digests, packed outcomes); version 3 adds each limit's admission mode
// and the escrow grants. Restore reads versions 1 and 2 too.
const snapshotVersion byte = 3

// Snapshot is a point-in-time copy of the state, taken quickly (under the apply lock) and written
// out later by Persist while Apply goes on.
type Snapshot struct {
	clock     int64
	cursor    int
	nextSweep int64
	members   []member
	limits    []limitCopy
	dedup     []dedupCopy
	grants    []grant
}

type member struct{ id, addr string }

type bucketCopy struct {
	key   string
	units uint64
	last  int64
}

type limitCopy struct {
	name      string
	limit     bucket.Limit
	admission Admission
	grantTTL  int64
	buckets   []bucketCopy
}

type dedupCopy struct {
	e    dedupEntry
	full *outcome // outcomes are never mutated after they are recorded, so sharing is safe
}

// Snapshot copies the state. Buckets that are full at the log clock are left out: they equal
// fresh buckets, so the encoding is canonical whatever eviction has or has not happened yet.
func (f *FSM) Snapshot() *Snapshot {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := &Snapshot{clock: f.clock, cursor: f.cursor, nextSweep: f.nextSweep}
	for id, addr := range f.members {
		s.members = append(s.members, member{id, addr})
	}
	for _, ls := range f.limits {
		lc := limitCopy{name: ls.name, limit: ls.limit, admission: ls.admission, grantTTL: ls.grantTTL}
		clock := f.clock
		ls.keyed.Range(func(key string, b bucket.Bucket) {
			if !b.Full(&lc.limit, clock) {
				units, last := b.State()
				lc.buckets = append(lc.buckets, bucketCopy{key, units, last})
			}
		})
		s.limits = append(s.limits, lc)
	}
	s.dedup = make([]dedupCopy, 0, f.dedup.len())
	f.dedup.each(func(_ idKey, e *dedupEntry, full *outcome) bool {
		s.dedup = append(s.dedup, dedupCopy{*e, full})
		return true
	})
	for _, g := range f.escrow.grants {
		s.grants = append(s.grants, *g)
	}
	return s
}

// Persist writes the snapshot to w in its deterministic encoding: members, limits and buckets
// sorted by name, the exactly-once table in log order, then a SHA-256 of everything before it.
// It streams through a buffer rather than building the whole image in memory.
func (s *Snapshot) Persist(w io.Writer) error {
	sort.Slice(s.members, func(i, j int) bool { return s.members[i].id < s.members[j].id })
	sort.Slice(s.limits, func(i, j int) bool { return s.limits[i].name < s.limits[j].name })
	sort.Slice(s.grants, func(i, j int) bool { return s.grants[i].id < s.grants[j].id })
	for _, lc := range s.limits {
		sort.Slice(lc.buckets, func(i, j int) bool { return lc.buckets[i].key < lc.buckets[j].key })
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	h := sha256.New()
	e := encoder{w: io.MultiWriter(bw, h)}
	e.raw([]byte(snapshotMagic))
	e.raw([]byte{snapshotVersion})
	e.varint(s.clock)
	e.uvarint(uint64(s.cursor))
	e.varint(s.nextSweep)
	e.uvarint(uint64(len(s.members)))
	for _, m := range s.members {
		e.str(m.id)
		e.str(m.addr)
	}
	e.uvarint(uint64(len(s.limits)))
	for _, lc := range s.limits {
		e.str(lc.name)
		e.varint(lc.limit.Rate())
		e.varint(int64(lc.limit.Period()))
		e.varint(lc.limit.Burst())
		e.raw([]byte{byte(lc.admission)})
		e.varint(lc.grantTTL)
		e.uvarint(uint64(len(lc.buckets)))
		for _, b := range lc.buckets {
			e.str(b.key)
			e.uvarint(b.units)
			e.varint(b.last)
		}
	}
	e.uvarint(uint64(len(s.dedup)))
	for _, d := range s.dedup {
		e.raw(d.e.key[:])
		e.uvarint(d.e.fp)
		e.varint(d.e.expires)
		e.raw([]byte{d.e.tag()})
		switch d.e.tag() {
		case tagPacked:
			e.raw(d.e.packed[1:])
		case tagFull:
			writeOutcome(&e, d.full)
		}
	}
	e.uvarint(uint64(len(s.grants)))
	for _, g := range s.grants {
		e.str(g.id)
		e.str(g.holder)
		e.str(g.limit)
		e.str(g.key)
		e.varint(g.tokens)
		e.varint(g.expires)
		e.varint(g.ttl)
		var flags byte
		if g.live {
			flags |= 1
		}
		if g.expired {
			flags |= 2
		}
		e.raw([]byte{flags})
	}
	if e.err != nil {
		return fmt.Errorf("write snapshot: %w", e.err)
	}
	if _, err := bw.Write(h.Sum(nil)); err != nil {
		return fmt.Errorf("write snapshot checksum: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("flush snapshot: %w", err)
	}
	return nil
}

// writeOutcome encodes a full outcome: its error (code and message) and its decisions.
func writeOutcome(e *encoder, o *outcome) {
	if o.err != nil {
		e.raw([]byte{byte(o.err.code)})
		e.str(o.err.msg)
	} else {
		e.raw([]byte{byte(codeNone)})
	}
	e.uvarint(uint64(len(o.results)))
	for _, r := range o.results {
		allowed := byte(0)
		if r.Allowed {
			allowed = 1
		}
		e.raw([]byte{allowed})
		e.varint(r.Remaining)
		e.varint(r.Limit)
		e.varint(int64(r.RetryAfter))
		e.varint(int64(r.ResetAfter))
	}
}

// readOutcome decodes what writeOutcome wrote.
func readOutcome(d *decoder) *outcome {
	o := &outcome{}
	if code := errCode(d.byte()); code != codeNone {
		o.err = &recordedError{code: code, msg: d.str()}
	}
	for m := d.uvarint(); m > 0 && d.err == nil; m-- {
		o.results = append(o.results, bucket.Result{
			Allowed: d.byte() == 1, Remaining: d.varint(), Limit: d.varint(),
			RetryAfter: time.Duration(d.varint()), ResetAfter: time.Duration(d.varint()),
		})
	}
	return o
}

// StateHash is the SHA-256 of the snapshot encoding: equal on replicas with equal state.
func (f *FSM) StateHash() ([32]byte, error) {
	h := sha256.New()
	if err := f.Snapshot().Persist(h); err != nil {
		return [32]byte{}, err
	}
	// The encoding ends with the hash of everything before it; hashing it all is just as good.
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out, nil
}

// Restore replaces the whole state with the snapshot read from r, taken at log index. The new
// state is built aside and swapped in only when the stream has been read to the end and its
// checksum matches, so a corrupt snapshot leaves the old state untouched. Errors wrap
// ErrCorruptSnapshot.
func (f *FSM) Restore(r io.Reader, index uint64) error {
	br := bufio.NewReaderSize(r, 64<<10)
	d := decoder{r: br, h: sha256.New()}
	magic := d.bytes(len(snapshotMagic))
	if d.err == nil && string(magic) != snapshotMagic {
		return fmt.Errorf("%w: not a limiter snapshot (bad magic)", ErrCorruptSnapshot)
	}
	version := d.byte()
	if d.err == nil && (version < 1 || version > snapshotVersion) {
		return fmt.Errorf("%w: snapshot format version %d, this binary reads 1 to %d", ErrCorruptSnapshot, version, snapshotVersion)
	}
	clock := d.varint()
	cursor := d.uvarint()
	nextSweep := d.varint()
	if d.err == nil && cursor >= bucket.ShardCount {
		d.fail("sweep cursor %d out of range", cursor)
	}
	// Everything the encoder sorts must arrive strictly increasing: that rejects duplicates and
	// reordering that a valid checksum would not catch (a snapshot written by another encoder).
	members := make(map[string]string)
	prev := ""
	for n := d.uvarint(); n > 0 && d.err == nil; n-- {
		id, addr := d.str(), d.str()
		if d.err == nil && len(members) > 0 && id <= prev {
			d.fail("member %q out of order or repeated", id)
		}
		members[id], prev = addr, id
	}
	limits := make(map[string]*limitState)
	for n := d.uvarint(); n > 0 && d.err == nil; n-- {
		name := d.str()
		rate, period, burst := d.varint(), d.varint(), d.varint()
		spec := LimitSpec{Name: name}
		if version >= 3 {
			spec.Admission, spec.GrantTTL = Admission(d.byte()), time.Duration(d.varint())
		}
		if d.err != nil {
			break
		}
		if ttl, err := spec.EffectiveTTL(); err != nil || ttl != spec.GrantTTL {
			d.fail("limit %q: admission %v with grant TTL %v", name, spec.Admission, spec.GrantTTL)
			break
		}
		l, err := bucket.NewLimit(rate, time.Duration(period), burst)
		if err != nil {
			d.fail("limit %q: %v", name, err)
			break
		}
		if _, dup := limits[name]; dup {
			d.fail("limit %q appears twice", name)
			break
		}
		if len(limits) > 0 && name <= prev {
			d.fail("limit %q out of order", name)
			break
		}
		prev = name
		ls := &limitState{name: name, limit: l, keyed: bucket.NewKeyed(l, bucket.WithSkew(0)), admission: spec.Admission, grantTTL: int64(spec.GrantTTL)}
		limits[name] = ls
		prevKey, first := "", true
		for m := d.uvarint(); m > 0 && d.err == nil; m-- {
			key, units, last := d.str(), d.uvarint(), d.varint()
			if d.err == nil && !first && key <= prevKey {
				d.fail("bucket %q of limit %q out of order or repeated", key, name)
			}
			ls.keyed.Put(key, bucket.FromState(&l, units, last))
			prevKey, first = key, false
		}
	}
	dedup := newDedupTable(int64(f.cfg.DedupWindow), f.cfg.DedupMax)
	for n := d.uvarint(); n > 0 && d.err == nil; n-- {
		var e dedupEntry
		var full *outcome
		var id string
		if version == 1 { // the request ID itself, and every outcome in full (all of them bound)
			id = d.str()
			e.key, e.fp, e.expires = keyOf(id), d.uvarint(), d.varint()
			full = readOutcome(&d)
			if d.err == nil && !(full.err == nil && len(full.results) == 1 && e.pack(full.results[0])) {
				e.packed[0] = tagFull
			} else {
				full = nil
			}
		} else {
			copy(e.key[:], d.bytes(len(e.key)))
			e.fp, e.expires = d.uvarint(), d.varint()
			switch tag := d.byte(); tag {
			case tagNone:
			case tagPacked:
				e.packed[0] = tagPacked
				copy(e.packed[1:], d.bytes(len(e.packed)-1))
				if d.err == nil && !validPacked(e.packed) {
					d.fail("request record with a malformed decision")
				}
			case tagFull:
				e.packed[0] = tagFull
				full = readOutcome(&d)
			default:
				d.fail("request record tag %d", tag)
			}
		}
		if d.err != nil {
			break
		}
		if slot, _ := dedup.find(e.key); slot >= 0 {
			d.fail("request ID %q (digest %x) repeated", id, e.key)
			break
		}
		dedup.insert(e, full)
	}
	escrow := newEscrow()
	if version >= 3 {
		readGrants(&d, escrow, limits)
	}
	if d.err != nil {
		return fmt.Errorf("%w: %w", ErrCorruptSnapshot, d.err)
	}
	want := d.h.Sum(nil)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(br, got); err != nil {
		return fmt.Errorf("%w: checksum missing: %w", ErrCorruptSnapshot, err)
	}
	if string(got) != string(want) {
		return fmt.Errorf("%w: checksum mismatch", ErrCorruptSnapshot)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return fmt.Errorf("%w: trailing bytes after the checksum", ErrCorruptSnapshot)
	}
	f.mu.Lock()
	f.clock, f.cursor, f.nextSweep = clock, int(cursor), nextSweep
	f.members, f.limits, f.dedup, f.escrow = members, limits, dedup, escrow
	f.mu.Unlock()
	f.halted.Store(nil)
	f.applied.Store(index)
	return nil
}

// readGrants decodes the escrow section, checking what the encoder guarantees: IDs in order, each
// grant's limit present, its flags consistent.
func readGrants(d *decoder, escrow *escrowState, limits map[string]*limitState) {
	prev := ""
	for n := d.uvarint(); n > 0 && d.err == nil; n-- {
		g := &grant{id: d.str(), holder: d.str(), limit: d.str(), key: d.str(), tokens: d.varint(), expires: d.varint(), ttl: d.varint()}
		flags := d.byte()
		if d.err != nil {
			return
		}
		g.live, g.expired = flags&1 != 0, flags&2 != 0
		switch ls := limits[g.limit]; {
		case len(escrow.grants) > 0 && g.id <= prev:
			d.fail("grant %q out of order or repeated", g.id)
		case ls == nil:
			d.fail("grant %q of unknown limit %q", g.id, g.limit)
		case flags > 3 || g.live && g.expired || g.tokens <= 0 || g.tokens > ls.limit.Burst() || g.ttl <= 0:
			d.fail("grant %q is malformed", g.id)
		}
		if d.err != nil {
			return
		}
		prev = g.id
		escrow.add(g)
	}
}

// encoder writes varints and strings, keeping the first error.
type encoder struct {
	w   io.Writer
	buf [binary.MaxVarintLen64]byte
	err error
}

func (e *encoder) raw(b []byte) {
	if e.err == nil {
		_, e.err = e.w.Write(b)
	}
}
func (e *encoder) varint(v int64)   { e.raw(binary.AppendVarint(e.buf[:0], v)) }
func (e *encoder) uvarint(v uint64) { e.raw(binary.AppendUvarint(e.buf[:0], v)) }
func (e *encoder) str(s string) {
	e.uvarint(uint64(len(s)))
	if e.err == nil {
		_, e.err = io.WriteString(e.w, s)
	}
}

// maxSnapshotString bounds one string in a snapshot, so a corrupt length cannot exhaust memory.
const maxSnapshotString = 1 << 16

// decoder reads what encoder wrote, hashing every byte it consumes.
type decoder struct {
	r   *bufio.Reader
	h   hash.Hash
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *decoder) ReadByte() (byte, error) {
	b, err := d.r.ReadByte()
	if err == nil {
		d.h.Write([]byte{b})
	}
	return b, err
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	b, err := d.ReadByte()
	if err != nil {
		d.err = truncated(err)
	}
	return b
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(d.r, b); err != nil {
		d.err = truncated(err)
		return nil
	}
	d.h.Write(b)
	return b
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, err := binary.ReadVarint(d)
	if err != nil {
		d.err = truncated(err)
	}
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, err := binary.ReadUvarint(d)
	if err != nil {
		d.err = truncated(err)
	}
	return v
}

func (d *decoder) str() string {
	n := d.uvarint()
	if d.err == nil && n > maxSnapshotString {
		d.fail("string of %d bytes exceeds %d", n, maxSnapshotString)
	}
	return string(d.bytes(int(n)))
}

func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("truncated: %w", io.ErrUnexpectedEOF)
	}
	return err
}
