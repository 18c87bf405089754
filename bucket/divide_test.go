package bucket

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestDivider_ExactForEveryNumerator(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	divisors := []uint64{1, 2, 3, 5, 7, 10, 60, 1000, 1 << 20, 3_600_000_000_000, 31_536_000_000_000_000, math.MaxInt64, math.MaxUint64, math.MaxUint64 - 1}
	for i := 0; i < 300; i++ {
		divisors = append(divisors, rng.Uint64()>>rng.IntN(64)|1, rng.Uint64()>>rng.IntN(64)+1)
	}
	for _, d := range divisors {
		v := newDivider(d)
		nums := []uint64{0, 1, d - 1, d, d + 1, 2*d - 1, 2 * d, math.MaxUint64, math.MaxUint64 - 1, math.MaxInt64}
		for i := 0; i < 2000; i++ {
			nums = append(nums, rng.Uint64()>>rng.IntN(64))
		}
		for _, n := range nums {
			if got, want := v.div(n), n/d; got != want {
				t.Fatalf("%d / %d = %d, want %d", n, d, got, want)
			}
			if n > 0 && n < math.MaxUint64 {
				want := (n-1)/d + 1
				if got := v.ceil(n); got != want {
					t.Fatalf("ceil(%d / %d) = %d, want %d", n, d, got, want)
				}
			}
		}
	}
}
