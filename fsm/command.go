package fsm

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"time"
)

// FormatVersion is the version byte that starts every log entry this package writes. A reader
// refuses entries of any other version rather than guessing: skipping an entry would make
// replicas diverge.
const FormatVersion byte = 1

// Kind is a command's type tag in the log envelope. Values are never reused.
type Kind byte

// Command kinds.
const (
	KindTakeBatch   Kind = 1 // one or more take requests, each with its own request ID
	KindSetLimit    Kind = 2 // create a limit or change it live
	KindDeleteLimit Kind = 3 // drop a limit and its buckets
	KindSetMember   Kind = 4 // record (or, with an empty address, forget) a member's API address
	KindTick        Kind = 5 // advances the clock only (e.g. a new leader's first entry)
	// KindTakes is take-batch with the current request-ID rule: a recorded outcome that admitted
	// nothing (denied or refused) binds nothing, and a retry is decided afresh. KindTakeBatch
	// entries, written by earlier versions, keep every outcome binding.
	KindTakes Kind = 6
	// KindEscrow moves tokens into and out of holders' escrow (local admission): grants and
	// settles, each with its own ID.
	KindEscrow Kind = 7
)

func (k Kind) String() string {
	switch k {
	case KindTakeBatch:
		return "take-batch"
	case KindSetLimit:
		return "set-limit"
	case KindDeleteLimit:
		return "delete-limit"
	case KindSetMember:
		return "set-member"
	case KindTick:
		return "tick"
	case KindTakes:
		return "takes"
	case KindEscrow:
		return "escrow"
	}
	return fmt.Sprintf("kind(%d)", byte(k))
}

// Bounds on names, keys and counts: server/ checks them on requests, and Apply checks them again,
// deterministically, so an out-of-bounds command is refused the same way on every replica.
const (
	MaxNameLen      = 128
	MaxKeyLen       = 256
	MaxRequestIDLen = 64
	MaxItems        = 1000 // items in one take request
)

// Item is one take: cost tokens from key's bucket under the named limit.
type Item struct {
	Limit string
	Key   string
	Cost  int64
}

// Take is one client request: its items are validated together (one bad item refuses the whole
// request), then each item is decided on its own, and the outcome is recorded under RequestID.
type Take struct {
	RequestID string
	Items     []Item
}

// LimitSpec is the content of a set-limit command.
type LimitSpec struct {
	Name   string
	Rate   int64
	Period time.Duration
	Burst  int64
	// Admission is how takes on the limit are decided: through the log (the zero value) or
	// locally from escrowed grants.
	Admission Admission
	// GrantTTL is how long, in log time, a grant of a local limit lasts (0: DefaultGrantTTL).
	// Only a local limit has one.
	GrantTTL time.Duration
}

// LimitRef names a limit (the payload of a delete-limit command).
type LimitRef struct {
	Name string
}

// MemberAddr is the payload of a set-member command: a member's Raft ID and its gRPC address
// (empty to forget the member).
type MemberAddr struct {
	ID      string
	APIAddr string
}

// Command is one decoded log entry: a stamp and at most one payload, which gives its kind (none
// is a tick). Stamp is the leader's clock (Unix nanoseconds) when it proposed the entry; it is the
// only source of time for the state machine.
type Command struct {
	Stamp     int64
	TakeBatch []Take // takes (a non-nil slice, possibly empty)
	// BindingDenials marks a take batch of the earlier kind (KindTakeBatch), whose every
	// recorded outcome binds, denials included: kept so old log entries apply as they did.
	BindingDenials bool
	SetLimit       *LimitSpec  // set-limit
	DeleteLimit    *LimitRef   // delete-limit
	SetMember      *MemberAddr // set-member
	Escrow         []EscrowOp  // escrow (a non-nil slice)
}

// Kind is the command's type tag, from the payload that is set.
func (c *Command) Kind() Kind {
	switch {
	case c.TakeBatch != nil && c.BindingDenials:
		return KindTakeBatch
	case c.TakeBatch != nil:
		return KindTakes
	case c.SetLimit != nil:
		return KindSetLimit
	case c.DeleteLimit != nil:
		return KindDeleteLimit
	case c.SetMember != nil:
		return KindSetMember
	case c.Escrow != nil:
		return KindEscrow
	}
	return KindTick
}

// Encode appends the versioned envelope of c to dst and returns it.
func (c *Command) Encode(dst []byte) []byte {
	dst = append(dst, FormatVersion, byte(c.Kind()))
	dst = binary.AppendVarint(dst, c.Stamp)
	switch {
	case c.TakeBatch != nil:
		dst = binary.AppendUvarint(dst, uint64(len(c.TakeBatch)))
		for i := range c.TakeBatch {
			t := &c.TakeBatch[i]
			dst = appendString(dst, t.RequestID)
			dst = binary.AppendUvarint(dst, uint64(len(t.Items)))
			for _, it := range t.Items {
				dst = appendString(dst, it.Limit)
				dst = appendString(dst, it.Key)
				dst = binary.AppendVarint(dst, it.Cost)
			}
		}
	case c.SetLimit != nil:
		dst = appendString(dst, c.SetLimit.Name)
		dst = binary.AppendVarint(dst, c.SetLimit.Rate)
		dst = binary.AppendVarint(dst, int64(c.SetLimit.Period))
		dst = binary.AppendVarint(dst, c.SetLimit.Burst)
		// Linearizable limits encode as before, so a member of an earlier version applies
		// them; only a local limit carries the two fields after the burst.
		if c.SetLimit.Admission != AdmitLinearizable || c.SetLimit.GrantTTL != 0 {
			dst = append(dst, byte(c.SetLimit.Admission))
			dst = binary.AppendVarint(dst, int64(c.SetLimit.GrantTTL))
		}
	case c.DeleteLimit != nil:
		dst = appendString(dst, c.DeleteLimit.Name)
	case c.SetMember != nil:
		dst = appendString(dst, c.SetMember.ID)
		dst = appendString(dst, c.SetMember.APIAddr)
	case c.Escrow != nil:
		dst = binary.AppendUvarint(dst, uint64(len(c.Escrow)))
		for _, op := range c.Escrow {
			dst = append(dst, byte(op.Op))
			dst = appendString(dst, op.ID)
			dst = appendString(dst, op.Holder)
			switch op.Op {
			case OpGrant:
				dst = appendString(dst, op.Limit)
				dst = appendString(dst, op.Key)
				dst = binary.AppendVarint(dst, op.Min)
				dst = binary.AppendVarint(dst, op.Max)
			default:
				dst = binary.AppendVarint(dst, op.Unused)
			}
		}
	}
	return dst
}

// Decode parses one log entry. It never panics; any malformed input returns an error wrapping
// ErrCorruptEntry.
func Decode(b []byte) (Command, error) {
	var c Command
	if len(b) < 2 {
		return c, fmt.Errorf("%w: %d bytes is shorter than the envelope", ErrCorruptEntry, len(b))
	}
	if b[0] != FormatVersion {
		return c, fmt.Errorf("%w: format version %d, this binary reads %d", ErrCorruptEntry, b[0], FormatVersion)
	}
	kind := Kind(b[1])
	r := reader{b: b[2:]}
	c.Stamp = r.varint()
	switch kind {
	case KindTakeBatch, KindTakes:
		c.BindingDenials = kind == KindTakeBatch
		n := r.count(2) // a take is at least 2 bytes: id length and item count (zero items is refused at apply)
		c.TakeBatch = make([]Take, 0, n)
		for i := 0; i < n && r.err == nil; i++ {
			var t Take
			t.RequestID = r.str()
			m := r.count(3)
			t.Items = make([]Item, 0, m)
			for j := 0; j < m && r.err == nil; j++ {
				t.Items = append(t.Items, Item{Limit: r.str(), Key: r.str(), Cost: r.varint()})
			}
			c.TakeBatch = append(c.TakeBatch, t)
		}
	case KindSetLimit:
		c.SetLimit = &LimitSpec{Name: r.str(), Rate: r.varint(), Period: time.Duration(r.varint()), Burst: r.varint()}
		if r.err == nil && len(r.b) > 0 {
			c.SetLimit.Admission = Admission(r.b[0])
			r.b = r.b[1:]
			c.SetLimit.GrantTTL = time.Duration(r.varint())
		}
	case KindDeleteLimit:
		c.DeleteLimit = &LimitRef{Name: r.str()}
	case KindSetMember:
		c.SetMember = &MemberAddr{ID: r.str(), APIAddr: r.str()}
	case KindEscrow:
		n := r.count(4) // op byte, two string lengths and a varint at least
		c.Escrow = make([]EscrowOp, 0, n)
		for i := 0; i < n && r.err == nil; i++ {
			var op EscrowOp
			if len(r.b) == 0 {
				r.err = fmt.Errorf("escrow op %d truncated", i)
				break
			}
			op.Op, r.b = EscrowOpKind(r.b[0]), r.b[1:]
			op.ID, op.Holder = r.str(), r.str()
			switch op.Op {
			case OpGrant:
				op.Limit, op.Key, op.Min, op.Max = r.str(), r.str(), r.varint(), r.varint()
			case OpSettle:
				op.Unused = r.varint()
			default:
				r.err = fmt.Errorf("escrow op kind %d", op.Op)
			}
			c.Escrow = append(c.Escrow, op)
		}
	case KindTick:
	default:
		return c, fmt.Errorf("%w: unknown command kind %d", ErrCorruptEntry, b[1])
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d trailing bytes", len(r.b))
	}
	if r.err != nil {
		return Command{}, fmt.Errorf("%w: %s: %v", ErrCorruptEntry, kind, r.err)
	}
	return c, nil
}

// Fingerprint identifies a take's content (its items, not its request ID).
func (t *Take) Fingerprint() uint64 { return t.fingerprint() }

// fingerprint identifies a take's content, so a request ID reused for a different request is
// refused instead of answered with another request's decision.
func (t *Take) fingerprint() uint64 {
	h := fnv.New64a()
	var buf [binary.MaxVarintLen64]byte
	for _, it := range t.Items {
		h.Write(binary.AppendUvarint(buf[:0], uint64(len(it.Limit))))
		io.WriteString(h, it.Limit)
		h.Write(binary.AppendUvarint(buf[:0], uint64(len(it.Key))))
		io.WriteString(h, it.Key)
		h.Write(binary.AppendVarint(buf[:0], it.Cost))
	}
	return h.Sum64()
}

// appendString writes a length-prefixed string (the log encoding; snapshots use encoder.str).
func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// reader decodes varints and strings from a byte slice, keeping the first error.
type reader struct {
	b   []byte
	err error
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("bad uvarint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads an element count and checks it against the bytes left (each element needs at
// least min bytes), so a corrupt count cannot make us allocate gigabytes.
func (r *reader) count(min int) int {
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)/min) {
		r.err = fmt.Errorf("count %d exceeds the %d bytes left", n, len(r.b))
		return 0
	}
	return int(n)
}

func (r *reader) str() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.err = fmt.Errorf("string of %d bytes exceeds the %d left", n, len(r.b))
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}
