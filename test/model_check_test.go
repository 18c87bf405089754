package test

import (
	"math"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// The model must reject histories that are not linearizable, or the nemesis test proves nothing.
func TestModel_RejectsDoubleGrantAndStaleRead(t *testing.T) {
	m := bucketModel(2)
	take := func(client int, call, ret int64, allowed bool, rem int64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Call: call, Return: ret,
			Input:  &modelIn{kind: opTake, key: "k", costs: []int64{1}},
			Output: &modelOut{allowed: []bool{allowed}, remaining: []int64{rem}}}
	}
	peek := func(call, ret int64, rem int64) porcupine.Operation {
		return porcupine.Operation{ClientId: 9, Call: call, Return: ret,
			Input: &modelIn{kind: opPeek, key: "k"}, Output: &modelOut{allowed: []bool{rem > 0}, remaining: []int64{rem}}}
	}
	cases := []struct {
		name string
		ops  []porcupine.Operation
		ok   bool
	}{
		{"sequential", []porcupine.Operation{take(0, 0, 1, true, 1), take(1, 2, 3, true, 0), take(0, 4, 5, false, 0)}, true},
		{"concurrent in either order", []porcupine.Operation{take(0, 0, 10, true, 0), take(1, 1, 9, true, 1)}, true},
		{"three grants from a burst of two", []porcupine.Operation{take(0, 0, 1, true, 1), take(1, 2, 3, true, 0), take(2, 4, 5, true, 0)}, false},
		{"stale read after a take", []porcupine.Operation{take(0, 0, 1, true, 1), peek(2, 3, 2)}, false},
		{"unknown take may have applied", []porcupine.Operation{
			{ClientId: 0, Call: 0, Return: math.MaxInt64, Input: &modelIn{kind: opTake, key: "k", costs: []int64{1}}, Output: &modelOut{unknown: true}},
			peek(5, 6, 1)}, true},
		{"unknown take may not have applied", []porcupine.Operation{
			{ClientId: 0, Call: 0, Return: math.MaxInt64, Input: &modelIn{kind: opTake, key: "k", costs: []int64{1}}, Output: &modelOut{unknown: true}},
			peek(5, 6, 2)}, true},
		{"burst change rescales", []porcupine.Operation{take(0, 0, 1, true, 1),
			{ClientId: 1, Call: 2, Return: 3, Input: &modelIn{kind: opSetBurst, burst: 4}, Output: &modelOut{}}, peek(4, 5, 2)}, true},
		{"burst change ignored", []porcupine.Operation{take(0, 0, 1, true, 1),
			{ClientId: 1, Call: 2, Return: 3, Input: &modelIn{kind: opSetBurst, burst: 4}, Output: &modelOut{}}, peek(4, 5, 1)}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := porcupine.CheckOperationsTimeout(m, tc.ops, 10*time.Second)
			if (res == porcupine.Ok) != tc.ok {
				t.Fatalf("check = %v, want ok=%v", res, tc.ok)
			}
		})
	}
}

func TestModel_QuarterTokensStayExactAcrossBurstChanges(t *testing.T) {
	s := initialState(100)
	s, _, _ = s.apply(&modelIn{kind: opTake, costs: []int64{1}}) // 99 of 100
	for _, b := range []int64{50, 200, 50, 100, 200, 100} {
		s, _, _ = s.apply(&modelIn{kind: opSetBurst, burst: b})
	}
	if s.q != 4*99 || s.cap != 100 {
		t.Fatalf("after a round trip of burst changes: %+v, want 99 of 100", s)
	}
	s, _, _ = s.apply(&modelIn{kind: opSetBurst, burst: 50}) // 49.5
	if s.q != 198 {
		t.Fatalf("99 of 100 at burst 50: q=%d, want 198 (49.5 tokens)", s.q)
	}
}
