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
