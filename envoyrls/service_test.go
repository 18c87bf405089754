package envoyrls

import (
	"math"
	"testing"
)

func TestClampU32_FitsEnvoyFields(t *testing.T) {
	for in, want := range map[int64]uint32{-5: 0, 0: 0, 7: 7, math.MaxUint32: math.MaxUint32, math.MaxUint32 + 1: math.MaxUint32, math.MaxInt64: math.MaxUint32} {
		if got := clampU32(in); got != want {
			t.Errorf("clampU32(%d) = %d, want %d", in, got, want)
		}
	}
}
