package bucket

import "math/bits"

// divider divides by a fixed divisor with a multiply and shifts instead of a hardware division
// (the "branchfree" method of libdivide, after Granlund and Montgomery): each Limit divides by
// its reduced period and rate on every take, and a 64-bit DIV costs several times a multiply.
// The result is exact for every uint64 numerator; divide_test.go checks it against `/`.
type divider struct {
	magic uint64
	shift uint8
	one   bool // divisor 1
}

func newDivider(d uint64) divider {
	switch {
	case d == 0:
		panic("bucket: divider of zero") // unreachable: limits are validated positive
	case d == 1:
		return divider{one: true}
	}
	l := uint8(63 - bits.LeadingZeros64(d))
	if d&(d-1) == 0 { // a power of two: q = (n>>1) >> (l-1)
		return divider{magic: 0, shift: l - 1}
	}
	m, rem := bits.Div64(uint64(1)<<l, 0, d) // 2^(64+l) / d; the high word 2^l < d
	m += m
	if twice := rem + rem; twice >= d || twice < rem {
		m++
	}
	return divider{magic: m + 1, shift: l}
}

// div returns n / d, rounded down.
func (v divider) div(n uint64) uint64 {
	if v.one {
		return n
	}
	q, _ := bits.Mul64(v.magic, n)
	return (((n - q) >> 1) + q) >> v.shift
}

// ceil returns n / d rounded up.
func (v divider) ceil(n uint64) uint64 {
	if n == 0 {
		return 0
	}
	return v.div(n-1) + 1
}
