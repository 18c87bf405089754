package test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/client"
	"github.com/limiterd/limiter/test/faultnet"
)

// Nemesis run settings. The default (go test ./...) is a short run; LIMITER_SOAK=10m runs the
// nemesis for that long (and LIMITER_SOAK_NODES=5 on five nodes); LIMITER_SEED reproduces a run.
func nemesisSettings(t *testing.T) (dur time.Duration, nodes int, seed uint64) {
	dur, nodes = 20*time.Second, 3
	if testing.Short() {
		dur = 8 * time.Second
	}
	if v := os.Getenv("LIMITER_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("LIMITER_SOAK=%q: %v", v, err)
		}
		dur = d
	}
	if v := os.Getenv("LIMITER_SOAK_NODES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || (n != 3 && n != 5) {
			t.Fatalf("LIMITER_SOAK_NODES=%q: want 3 or 5", v)
		}
		nodes = n
	}
	seed = uint64(time.Now().UnixNano())
	if v := os.Getenv("LIMITER_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("LIMITER_SEED=%q: %v", v, err)
		}
		seed = s
	}
	return dur, nodes, seed
}

const (
	linLimit     = "lin"  // refills 1 per 365 days: checked by porcupine, exactly
	flowLimit    = "flow" // refills 20 per second: checked against the over-admission bound
	flowRate     = 20
	flowBurst    = 10
	localLimit   = "esc" // local admission, same rate and burst as flow: checked against the same bound
	localTTL     = 500 * time.Millisecond
	linBurst0    = 100
	clientsCount = 4
)

var linKeys = []string{"a", "b", "c", "d", "e", "f"}

// recorder collects the history.
type recorder struct {
	mu       sync.Mutex
	start    time.Time
	ops      []historyOp
	flowAcks map[string]int64 // acknowledged allowed takes on the flow limit, by key
	escAcks  map[string]int64 // the same on the local limit
	errs     map[string]int   // failed operations by gRPC code
}

func (r *recorder) now() int64 { return time.Since(r.start).Nanoseconds() }

func (r *recorder) add(op historyOp) {
	r.mu.Lock()
	r.ops = append(r.ops, op)
	r.mu.Unlock()
}

func (r *recorder) failed(err error) {
	r.mu.Lock()
	r.errs[status.Code(err).String()]++
	r.mu.Unlock()
}

// runClient issues random operations until stop closes.
func runClient(ctx context.Context, k int, cl *client.Client, rng *rand.Rand, rec *recorder, stop <-chan struct{}) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		opCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		id := fmt.Sprintf("c%d-%d", k, i)
		r := rng.Float64()
		switch {
		case r < 0.45: // take on one key
			key, cost := linKeys[rng.IntN(len(linKeys))], int64(1+rng.IntN(3))
			call := rec.now()
			res, err := cl.Take(opCtx, linLimit, key, cost, id)
			op := historyOp{client: k, call: call, ret: rec.now(), kind: opTake, keys: []string{key}, costs: []int64{cost}, id: id}
			if err != nil {
				rec.failed(err)
				op.unknown, op.ret = true, math.MaxInt64
			} else {
				op.allowed, op.rem = []bool{res.Allowed}, []int64{res.Remaining}
			}
			rec.add(op)
		case r < 0.55: // take-many on two keys
			p := rng.Perm(len(linKeys))
			items := []client.Item{{Limit: linLimit, Key: linKeys[p[0]], Cost: int64(1 + rng.IntN(2))}, {Limit: linLimit, Key: linKeys[p[1]], Cost: int64(1 + rng.IntN(2))}}
			call := rec.now()
			ds, _, err := cl.TakeMany(opCtx, items, id)
			op := historyOp{client: k, call: call, ret: rec.now(), kind: opTake, keys: []string{items[0].Key, items[1].Key}, costs: []int64{items[0].Cost, items[1].Cost}, id: id}
			if err != nil {
				rec.failed(err)
				op.unknown, op.ret = true, math.MaxInt64
			} else {
				for _, d := range ds {
					op.allowed, op.rem = append(op.allowed, d.Allowed), append(op.rem, d.Remaining)
				}
			}
			rec.add(op)
		case r < 0.80: // linearizable peek
			key := linKeys[rng.IntN(len(linKeys))]
			call := rec.now()
			d, _, err := cl.Peek(opCtx, linLimit, key, 1, false)
			if err != nil {
				rec.failed(err) // a failed read has no effect: leave it out of the history
			} else {
				rec.add(historyOp{client: k, call: call, ret: rec.now(), kind: opPeek, keys: []string{key}, costs: []int64{0}, allowed: []bool{d.Allowed}, rem: []int64{d.Remaining}})
			}
		case r < 0.97: // take on a refilling limit, linearizable or local
			limit, acks := flowLimit, rec.flowAcks
			if r >= 0.88 {
				limit, acks = localLimit, rec.escAcks
			}
			key := fmt.Sprintf("f%d", rng.IntN(2))
			res, err := cl.Take(opCtx, limit, key, 1, id)
			if err != nil {
				rec.failed(err)
			} else if res.Allowed {
				rec.mu.Lock()
				acks[key]++
				rec.mu.Unlock()
			}
		default: // live burst change on the lin limit
			burst := []int64{50, 100, 200}[rng.IntN(3)]
			call := rec.now()
			_, err := cl.SetLimit(opCtx, linLimit, 1, 365*24*time.Hour, burst)
			op := historyOp{client: k, call: call, ret: rec.now(), kind: opSetBurst, burst: burst}
			if err != nil {
				rec.failed(err)
				op.unknown, op.ret = true, math.MaxInt64
			}
			rec.add(op)
		}
		cancel()
	}
}

// nemesis injects one fault at a time on a seeded schedule, holds it, then undoes it.
type nemesis struct {
	c      *pcluster
	rng    *rand.Rand
	counts map[string]int
	log    []string
}

func (nm *nemesis) note(kind, detail string) {
	nm.counts[kind]++
	nm.log = append(nm.log, fmt.Sprintf("%s %s", kind, detail))
}

func (nm *nemesis) cutBetween(a, b []int) {
	for _, i := range a {
		for _, j := range b {
			nm.c.raft[i][j].SetMode(faultnet.Down)
			nm.c.raft[j][i].SetMode(faultnet.Down)
		}
	}
}

func (nm *nemesis) others(x int) []int {
	var out []int
	for i := 0; i < nm.c.n; i++ {
		if i != x {
			out = append(out, i)
		}
	}
	return out
}

// step applies one random fault for a random hold time and then undoes it.
func (nm *nemesis) step(stop <-chan struct{}) {
	c, rng := nm.c, nm.rng
	hold := time.Duration(500+rng.IntN(2000)) * time.Millisecond
	x := rng.IntN(c.n)
	if rng.IntN(2) == 0 { // half the time, aim at whoever leads now
		if l := c.agreedLeader(); l >= 0 {
			x = l
		}
	}
	var undo func()
	switch k := rng.IntN(12); k {
	case 0:
		nm.note("isolate", c.ids[x])
		nm.cutBetween([]int{x}, nm.others(x))
		undo = c.healLinks
	case 1:
		p := rng.Perm(c.n)
		minority := p[:(c.n-1)/2]
		nm.note("split", fmt.Sprint(minority))
		nm.cutBetween(minority, p[(c.n-1)/2:])
		undo = c.healLinks
	case 2:
		// x bridges two sides that cannot see each other.
		rest := nm.others(x)
		nm.note("bridge", c.ids[x])
		nm.cutBetween(rest[:len(rest)/2], rest[len(rest)/2:])
		undo = c.healLinks
	case 3:
		y := nm.others(x)[rng.IntN(c.n-1)]
		nm.note("one-way", c.ids[x]+"->"+c.ids[y])
		c.raft[x][y].SetMode(faultnet.Down)
		undo = c.healLinks
	case 4:
		d := time.Duration(20+rng.IntN(150)) * time.Millisecond
		nm.note("slow", fmt.Sprintf("%s %v", c.ids[x], d))
		for _, j := range nm.others(x) {
			c.raft[x][j].SetDelay(d)
			c.raft[j][x].SetDelay(d)
		}
		undo = c.healLinks
	case 5:
		nm.note("lossy", c.ids[x])
		for _, j := range nm.others(x) {
			c.raft[x][j].SetLoss(0.05)
			c.raft[j][x].SetLoss(0.05)
		}
		undo = c.healLinks
	case 6:
		nm.note("kill", c.ids[x])
		c.kill(x)
		undo = func() { c.start(x) }
	case 7:
		nm.note("freeze", c.ids[x])
		c.freeze(x)
		undo = func() { c.resume(x) }
	case 8:
		off := time.Duration(rng.IntN(201)-100) * time.Millisecond
		if rng.IntN(2) == 0 {
			off = time.Duration(1+rng.IntN(3)) * time.Hour * time.Duration(1-2*rng.IntN(2))
		}
		drift := int64(rng.IntN(2001) - 1000)
		nm.note("clock", fmt.Sprintf("%s offset=%v drift=%dppm", c.ids[x], off, drift))
		c.setClock(x, off, drift)
		undo = func() {}
	case 9:
		nm.note("client-cut", c.ids[x])
		for _, row := range c.clientLinks {
			row[x].SetMode(faultnet.Down)
		}
		undo = c.healLinks
	case 11:
		// A lost volume: the node dies, its data dir is wiped, and it comes back with its usual
		// command (--bootstrap): it must rejoin under a new identity, never start a second history.
		// One failure at a time: only while every member votes under its current identity (a
		// second wipe before the first rejoiner is a voter again loses a majority's state, and the
		// cluster then rightly stops).
		if !c.allVoting() {
			nm.note("kill", c.ids[x])
			c.kill(x)
			undo = func() { c.start(x) }
			break
		}
		nm.note("wipe", c.ids[x])
		c.kill(x)
		if err := os.RemoveAll(filepath.Join(c.dir, c.ids[x])); err != nil {
			c.t.Errorf("wipe %s: %v", c.ids[x], err)
		}
		undo = func() { c.start(x) }
	case 10:
		mode := []faultnet.Mode{faultnet.DropReplies, faultnet.HoldReplies}[rng.IntN(2)]
		nm.note(mode.String(), c.ids[x])
		for _, row := range c.clientLinks {
			row[x].SetMode(mode)
		}
		undo = c.healLinks
	}
	select {
	case <-time.After(hold):
	case <-stop:
	}
	undo()
	select {
	case <-time.After(time.Duration(200+rng.IntN(800)) * time.Millisecond):
	case <-stop:
	}
}

func TestNemesis_LinearizableExactlyOnceNoOverAdmissionUnderFaults(t *testing.T) {
	dur, nodes, seed := nemesisSettings(t)
	store := testLogStore
	if store == "" {
		store = "bolt (default)"
	}
	t.Logf("nemesis: seed=%d (LIMITER_SEED=%d reproduces the schedule) nodes=%d duration=%v log store=%s", seed, seed, nodes, dur, store)
	c := startPCluster(t, nodes, clientsCount, seed)
	direct := c.directClient()
	ctx := context.Background()

	fsmTime := func() int64 {
		l := c.waitLeader(60 * time.Second)
		st, err := c.status(l, false)
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		return st.GetFsmTimeNanos()
	}
	flowStart := fsmTime()
	if _, err := direct.SetLimit(ctx, linLimit, 1, 365*24*time.Hour, linBurst0); err != nil {
		t.Fatalf("set %s: %v", linLimit, err)
	}
	if _, err := direct.SetLimit(ctx, flowLimit, flowRate, time.Second, flowBurst); err != nil {
		t.Fatalf("set %s: %v", flowLimit, err)
	}
	if _, err := direct.SetLimitSpec(ctx, client.LimitSpec{Name: localLimit, Rate: flowRate, Per: time.Second, Burst: flowBurst, Admission: "local", GrantTTL: localTTL}); err != nil {
		t.Fatalf("set %s: %v", localLimit, err)
	}

	rec := &recorder{start: time.Now(), flowAcks: map[string]int64{}, escAcks: map[string]int64{}, errs: map[string]int{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for k := 0; k < clientsCount; k++ {
		wg.Add(1)
		cl := c.clientFor(k)
		rng := rand.New(rand.NewPCG(seed, uint64(k)))
		go func() {
			defer wg.Done()
			runClient(ctx, k, cl, rng, rec, stop)
		}()
	}
	nm := &nemesis{c: c, rng: rand.New(rand.NewPCG(seed, 99)), counts: map[string]int{}}
	nemesisDone := make(chan struct{})
	go func() {
		defer close(nemesisDone)
		for deadline := time.Now().Add(dur); time.Now().Before(deadline); {
			nm.step(stop)
		}
	}()
	<-nemesisDone
	close(stop)
	wg.Wait()

	// Heal everything, wait for one leader and equal replicas.
	c.healLinks()
	for i := 0; i < c.n; i++ {
		c.setClock(i, 0, 0)
		c.resume(i)
		if c.state[i] == "dead" {
			c.start(i)
		}
	}
	c.waitLeader(60 * time.Second)
	c.converge(60 * time.Second)
	flowEnd := fsmTime() // every grant of the run was made before this
	// Every grant ends (settled, or expired as spent) within its TTL of log time; entries of
	// another limit move log time on. Then the replicas must still agree, escrow included.
	waitFor(t, 30*time.Second, "every escrow grant settled or expired", func() bool {
		if _, err := direct.SetLimit(ctx, "nemesis-tick", 1, time.Hour, 1); err != nil {
			return false
		}
		li, err := direct.GetLimit(ctx, localLimit)
		if err != nil {
			return false
		}
		for _, g := range li.GetGrants() {
			if g.GetLive() {
				return false
			}
		}
		return true
	})
	c.converge(60 * time.Second)

	// Final reads go into the history: every acknowledged take must still be counted.
	finalPeek := func(tag string) map[string]int64 {
		out := map[string]int64{}
		for _, key := range linKeys {
			call := rec.now()
			d, _, err := direct.Peek(ctx, linLimit, key, 1, false)
			if err != nil {
				t.Fatalf("%s peek %s: %v", tag, key, err)
			}
			rec.add(historyOp{client: clientsCount, call: call, ret: rec.now(), kind: opPeek, keys: []string{key}, costs: []int64{0}, allowed: []bool{d.Allowed}, rem: []int64{d.Remaining}})
			out[key] = d.Remaining
		}
		return out
	}
	before := finalPeek("after healing")
	var leaseReads, localDenials uint64 // since each node's last start
	for i := 0; i < c.n; i++ {
		if st, err := c.status(i, false); err == nil {
			leaseReads += st.GetLeaseReads()
			localDenials += st.GetLocalDenials()
		}
	}

	// Kill every node without a clean shutdown and restart them all from their data dirs.
	c.killAll()
	for i := 0; i < c.n; i++ {
		c.start(i)
	}
	c.waitLeader(60 * time.Second)
	c.converge(60 * time.Second)
	after := finalPeek("after killing every node")
	for k, v := range before {
		if after[k] != v {
			t.Errorf("key %s: %d tokens before killing every node, %d after: acknowledged state lost", k, v, after[k])
		}
	}

	// Linearizability, per key.
	violations := 0
	parts := partition(rec.ops, linKeys)
	model := bucketModel(linBurst0)
	checked := 0
	for _, key := range sortedKeys(parts) {
		ops := parts[key]
		checked += len(ops)
		res, info := porcupine.CheckOperationsVerbose(model, ops, 60*time.Second)
		switch res {
		case porcupine.Illegal:
			violations++
			path := filepath.Join(os.TempDir(), fmt.Sprintf("limiter-nemesis-%d-%s.html", seed, key))
			if err := porcupine.VisualizePath(model, info, path); err != nil {
				t.Logf("visualise: %v", err)
			}
			t.Errorf("key %s: history of %d operations is not linearizable; visualisation: %s", key, len(ops), path)
		case porcupine.Unknown:
			t.Logf("key %s: linearizability check timed out on %d operations (inconclusive)", key, len(ops))
		}
	}
	// No over-admission on the refilling limit.
	elapsed := time.Duration(flowEnd - flowStart)
	bound := int64(flowBurst) + int64(flowRate*elapsed.Seconds()) + 1
	for key, n := range rec.flowAcks {
		if n > bound {
			violations++
			t.Errorf("flow key %s: %d takes granted, more than burst %d + %d/s × %v = %d", key, n, flowBurst, flowRate, elapsed, bound)
		}
	}
	// The local limit: every admitted take was paid for by a grant made within the run, so the
	// same bound holds over the whole run (the grant TTL matters only for windows inside it).
	for key, n := range rec.escAcks {
		if n > bound {
			violations++
			t.Errorf("local key %s: %d takes admitted from escrow, more than burst %d + %d/s × %v = %d", key, n, flowBurst, flowRate, elapsed, bound)
		}
	}
	t.Logf("nemesis: seed=%d operations checked=%d (flow takes granted %v, local %v, within bound %d; answered under the lease since last restarts: %d reads, %d denials) faults: %s; failed calls: %s; violations=%d",
		seed, checked, rec.flowAcks, rec.escAcks, bound, leaseReads, localDenials, describeCounts(nm.counts), describeCounts(rec.errs), violations)
	if t.Failed() {
		t.Logf("fault log: %v\n%s", nm.log, c.logs())
	}
	_ = codes.OK
}
