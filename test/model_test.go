package test

import (
	"fmt"
	"sort"
	"strings"

	"github.com/anishathalye/porcupine"
)

// The sequential model of one bucket of the "lin" limit, for porcupine.
//
// The limit refills 1 token per 365 days, so over a test run refill adds far less than a
// quarter of a token: the model ignores it and stays exact. Bursts change only among 50, 100
// and 200, so a bucket's tokens are always a whole number of quarter tokens: with Y = tokens ×
// 200 / burst an integer (rescaling keeps Y; a take of c subtracts c × 200 / burst, an integer),
// tokens = Y × burst / 200 has a denominator of at most 4. The model therefore keeps tokens in
// quarters (q) and rescales exactly, and refill can never move a whole-token boundary.

type opKind int

const (
	opTake opKind = iota // one take or the items of a take-many that fall on this key
	opPeek
	opSetBurst
)

// modelIn is an operation's input, restricted to one key.
type modelIn struct {
	kind   opKind
	key    string
	costs  []int64 // opTake: the costs of this key's items, in order
	burst  int64   // opSetBurst
	client int
	id     string // request ID, for the visualisation
}

// modelOut is an operation's output, restricted to one key.
type modelOut struct {
	unknown   bool // timed out or failed: it may or may not have been applied
	allowed   []bool
	remaining []int64
}

type bucketState struct {
	q   int64 // tokens × 4
	cap int64 // burst
}

func initialState(burst int64) bucketState { return bucketState{q: 4 * burst, cap: burst} }

// apply returns the state after in and the outputs it would give.
func (s bucketState) apply(in *modelIn) (bucketState, []bool, []int64) {
	switch in.kind {
	case opTake:
		var allowed []bool
		var rem []int64
		for _, c := range in.costs {
			ok := s.q >= 4*c
			if ok {
				s.q -= 4 * c
			}
			allowed = append(allowed, ok)
			rem = append(rem, s.q/4)
		}
		return s, allowed, rem
	case opPeek:
		return s, []bool{s.q >= 4}, []int64{s.q / 4}
	case opSetBurst:
		return bucketState{q: s.q * in.burst / s.cap, cap: in.burst}, nil, nil
	}
	return s, nil, nil
}

func equalOut(a []bool, b []int64, out *modelOut) bool {
	if out.unknown {
		return true
	}
	if len(a) != len(out.allowed) || len(b) != len(out.remaining) {
		return false
	}
	for i := range a {
		if a[i] != out.allowed[i] || b[i] != out.remaining[i] {
			return false
		}
	}
	return true
}

func bucketModel(initialBurst int64) porcupine.Model {
	nm := &porcupine.NondeterministicModel{
		Init: func() []interface{} { return []interface{}{initialState(initialBurst)} },
		Step: func(state, input, output interface{}) []interface{} {
			s, in, out := state.(bucketState), input.(*modelIn), output.(*modelOut)
			next, allowed, rem := s.apply(in)
			if in.kind == opSetBurst {
				if out.unknown {
					return []interface{}{s, next}
				}
				return []interface{}{next}
			}
			if !equalOut(allowed, rem, out) {
				return nil
			}
			if out.unknown && in.kind == opTake {
				return []interface{}{s, next} // applied or not
			}
			return []interface{}{next}
		},
		Equal: func(a, b interface{}) bool { return a.(bucketState) == b.(bucketState) },
		DescribeOperation: func(input, output interface{}) string {
			in, out := input.(*modelIn), output.(*modelOut)
			var what string
			switch in.kind {
			case opTake:
				what = fmt.Sprintf("take(%s, %v)", in.key, in.costs)
			case opPeek:
				what = fmt.Sprintf("peek(%s)", in.key)
			case opSetBurst:
				what = fmt.Sprintf("set-burst(%d)", in.burst)
			}
			if out.unknown {
				return what + " -> ?"
			}
			return fmt.Sprintf("%s -> %v %v", what, out.allowed, out.remaining)
		},
		DescribeState: func(state interface{}) string {
			s := state.(bucketState)
			return fmt.Sprintf("%d.%02d of %d", s.q/4, 25*(s.q%4), s.cap)
		},
	}
	return nm.ToModel()
}

// historyOp is one recorded client operation across keys, split per key for checking.
type historyOp struct {
	client  int
	call    int64
	ret     int64 // math.MaxInt64 when the outcome is unknown
	kind    opKind
	keys    []string // opTake: the key of each item
	costs   []int64
	burst   int64
	allowed []bool
	rem     []int64
	unknown bool
	id      string
}

// partition splits a history into one porcupine history per key. A burst change touches every
// key, so it appears in every partition.
func partition(ops []historyOp, keys []string) map[string][]porcupine.Operation {
	out := map[string][]porcupine.Operation{}
	for _, k := range keys {
		out[k] = nil
	}
	for _, op := range ops {
		for _, k := range keys {
			in := &modelIn{kind: op.kind, key: k, burst: op.burst, client: op.client, id: op.id}
			o := &modelOut{unknown: op.unknown}
			switch op.kind {
			case opSetBurst:
			default:
				for i, ik := range op.keys {
					if ik != k {
						continue
					}
					in.costs = append(in.costs, op.costs[i])
					if !op.unknown {
						o.allowed = append(o.allowed, op.allowed[i])
						o.remaining = append(o.remaining, op.rem[i])
					}
				}
				if len(in.costs) == 0 {
					continue
				}
			}
			out[k] = append(out[k], porcupine.Operation{ClientId: op.client, Input: in, Call: op.call, Output: o, Return: op.ret})
		}
	}
	return out
}

func sortedKeys(m map[string][]porcupine.Operation) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func describeCounts(m map[string]int) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}
