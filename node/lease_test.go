package node

import (
	"testing"
	"time"
)

func TestLeaseState_HeldOnlyInItsTermUntilExpiry(t *testing.T) {
	var l leaseState
	if l.holds(0, 0) || l.holds(1, 0) {
		t.Fatalf("a lease never extended is held")
	}
	if !l.extend(l.generation(), 3, 0, 10*time.Second) {
		t.Fatalf("extend refused")
	}
	cases := []struct {
		term uint64
		now  time.Duration
		want bool
	}{
		{3, 0, true},
		{3, 10*time.Second - 1, true},
		{3, 10 * time.Second, false}, // expiry is exclusive: a read at the boundary takes the slow path
		{3, time.Hour, false},        // e.g. after a long pause
		{4, time.Second, false},      // another term
	}
	for _, c := range cases {
		if got := l.holds(c.term, c.now); got != c.want {
			t.Errorf("holds(term %d, %v) = %v, want %v", c.term, c.now, got, c.want)
		}
	}
	l.drop()
	if l.holds(3, time.Second) {
		t.Fatalf("held after drop")
	}
}

func TestLeaseState_RenewalRacingADropDoesNotReviveIt(t *testing.T) {
	var l leaseState
	gen := l.generation() // a renewal reads the generation, then starts its heartbeat round...
	l.drop()              // ...a leadership transfer drops the lease meanwhile...
	if l.extend(gen, 1, 0, time.Hour) || l.holds(1, time.Second) {
		t.Fatalf("a renewal that started before the drop revived the lease")
	}
}

func TestLeaseState_NoLeaseStartsDuringAHoldOff(t *testing.T) {
	var l leaseState
	l.holdOff(5 * time.Second) // a leadership transfer began; its target may still win until 5s
	if l.extend(l.generation(), 1, 4*time.Second, 6*time.Second) {
		t.Fatalf("a lease measured from 4s was taken during a hold-off until 5s")
	}
	if !l.extend(l.generation(), 1, 5*time.Second, 6*time.Second) || !l.holds(1, 5500*time.Millisecond) {
		t.Fatalf("a lease measured from after the hold-off was refused")
	}
}
