package bucket

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLimiter_ConcurrentTakesGrantExactlyCapacity(t *testing.T) {
	l := testLimit(t, 1, time.Hour, 100)
	lm := NewLimiter(l, t0)
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 250; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 3; i++ {
				if res, err := lm.Take(t0, 1); err != nil {
					t.Error(err)
				} else if res.Allowed {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if allowed.Load() != 100 {
		t.Fatalf("%d takes allowed from a bucket of 100 with no refill", allowed.Load())
	}
}

func TestLimiter_SetLimitRescalesAndPeekChangesNothing(t *testing.T) {
	lm := NewLimiter(testLimit(t, 1000, time.Minute, 0), t0)
	if res, _ := lm.Take(t0, 500); !res.Allowed || res.Remaining != 500 {
		t.Fatalf("take 500: %+v", res)
	}
	lm.SetLimit(testLimit(t, 5000, time.Minute, 0), t0)
	if p, _ := lm.Peek(t0, 1); p.Remaining != 2500 || p.Limit != 5000 {
		t.Fatalf("after 1000->5000/min: %+v, want 2500 of 5000", p)
	}
	if p, _ := lm.Peek(t0, 1); p.Remaining != 2500 {
		t.Fatalf("peek consumed: %+v", p)
	}
	if _, err := lm.Take(t0, 5001); err == nil {
		t.Fatalf("a cost above the burst was accepted")
	}
}

// TestLimiter_SetLimitFromTheZeroLimit: the zero Limit refuses every take; changing to a real
// limit starts full (nothing was ever taken) instead of dividing by its zero capacity.
func TestLimiter_SetLimitFromTheZeroLimit(t *testing.T) {
	lm := NewLimiter(Limit{}, t0)
	if _, err := lm.Take(t0, 1); err == nil {
		t.Fatal("a take under the zero Limit was not refused")
	}
	lm.SetLimit(testLimit(t, 1, time.Second, 5), t0+1)
	res, err := lm.Take(t0+1, 5)
	if err != nil || !res.Allowed || res.Remaining != 0 {
		t.Fatalf("take of the whole burst after leaving the zero Limit: %+v, %v", res, err)
	}
	k := NewKeyed(Limit{})
	k.Take("a", t0, 1)
	k.SetLimit(testLimit(t, 1, time.Second, 5), t0+1)
	if res, err := k.Take("a", t0+1, 5); err != nil || !res.Allowed {
		t.Fatalf("keyed take after leaving the zero Limit: %+v, %v", res, err)
	}
}
