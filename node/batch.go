package node

import (
	"context"
	"fmt"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/limiterd/limiter/fsm"
)

// takeReq is one take, or one escrow op, waiting to be proposed.
type takeReq struct {
	take fsm.Take
	op   *fsm.EscrowOp // set for a grant or settle (then take is empty)
	size int
	done chan takeResp // buffered 1, so the batcher never blocks on a caller that gave up
}

type takeResp struct {
	out fsm.TakeOutcome
	esc fsm.EscrowOutcome
	err error
}

// submitEscrow queues one grant or settle for the next batch's escrow entry and waits for its
// outcome, as submit does for a take.
func (b *batcher) submitEscrow(ctx context.Context, op fsm.EscrowOp) (fsm.EscrowOutcome, error) {
	req := &takeReq{op: &op, size: 48 + len(op.ID) + len(op.Holder) + len(op.Limit) + len(op.Key), done: make(chan takeResp, 1)}
	b.n.pending.addLimit(op.Limit, 1) // grants and settles change buckets: no local answer meanwhile
	r, err := b.enqueue(ctx, req)
	return r.esc, err
}

// enqueue hands a marked request to the batcher and waits for its outcome. When it cannot be
// queued its mark is cleared; once queued, the batcher clears it.
func (b *batcher) enqueue(ctx context.Context, req *takeReq) (takeResp, error) {
	n := b.n
	select {
	case b.ch <- req:
	case <-ctx.Done():
		b.unmark(req)
		return takeResp{}, fmt.Errorf("queue: %w", ctx.Err())
	case <-n.shutdownCh:
		b.unmark(req)
		return takeResp{}, ErrShutdown
	}
	select {
	case r := <-req.done:
		return r, r.err
	case <-ctx.Done():
		return takeResp{}, fmt.Errorf("outcome unknown: %w", ctx.Err())
	case <-n.shutdownCh:
		return takeResp{}, ErrShutdown
	}
}

// unmark clears the pending mark a request set when it was queued.
func (b *batcher) unmark(r *takeReq) {
	if r.op != nil {
		b.n.pending.addLimit(r.op.Limit, -1)
	} else {
		b.n.pending.addTake(&r.take, -1)
	}
}

// batcher coalesces concurrent takes into one log entry (group commit). At most
// MaxInflightBatches entries are in flight: while they commit, the next batch collects. A lone
// take is not delayed: the batcher proposes as soon as there is room in flight.
type batcher struct {
	n  *Node
	ch chan *takeReq
}

func newBatcher(n *Node) *batcher {
	return &batcher{n: n, ch: make(chan *takeReq, 8192)}
}

// submit queues one take request for the next batch entry and waits for its outcome. When ctx
// ends first the outcome is unknown (the take may still commit); retry with the same request ID.
func (b *batcher) submit(ctx context.Context, t fsm.Take) (fsm.TakeOutcome, error) {
	size := 16 + len(t.RequestID)
	for _, it := range t.Items {
		size += 24 + len(it.Limit) + len(it.Key)
	}
	req := &takeReq{take: t, size: size, done: make(chan takeResp, 1)}
	b.n.pending.addTake(&t, 1) // before the entry is stamped; see answerLocally
	r, err := b.enqueue(ctx, req)
	return r.out, err
}

func (b *batcher) run() {
	inflight := make(chan struct{}, b.n.cfg.MaxInflightBatches)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		// Wait for room before collecting, so the next batch gathers everything that arrives
		// while the entries in flight commit.
		select {
		case <-b.n.shutdownCh:
			b.drain(ErrShutdown)
			return
		case inflight <- struct{}{}:
		}
		var batch []*takeReq
		select {
		case <-b.n.shutdownCh:
			b.drain(ErrShutdown)
			return
		case r := <-b.ch:
			batch = append(batch, r)
		}
		size := batch[0].size
	collect:
		for len(batch) < b.n.cfg.MaxBatchTakes && size < b.n.cfg.MaxBatchBytes {
			select {
			case r := <-b.ch:
				batch = append(batch, r)
				size += r.size
			default:
				break collect
			}
		}
		// Stamp and hand to raft here, in order, so entries carry increasing stamps; wait for
		// the commit elsewhere. Takes and escrow ops go in one entry each.
		var takes, ops []*takeReq
		for _, r := range batch {
			if r.op != nil {
				ops = append(ops, r)
			} else {
				takes = append(takes, r)
			}
		}
		var ft, fo raft.ApplyFuture
		if len(takes) > 0 {
			ft = b.propose(takes)
		}
		if len(ops) > 0 {
			fo = b.proposeEscrow(ops)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if len(takes) > 0 {
				b.finish(takes, ft)
			}
			if len(ops) > 0 {
				b.finishEscrow(ops, fo)
			}
			<-inflight
		}()
	}
}

// propose stamps and encodes one batch entry and hands it to raft (nil if not the leader).
func (b *batcher) propose(batch []*takeReq) raft.ApplyFuture {
	if !b.n.IsLeader() {
		return nil
	}
	if o := b.n.observer.Load(); o != nil {
		(*o).ObserveBatch(len(batch))
	}
	cmd := fsm.Command{Stamp: b.n.Stamp(), TakeBatch: make([]fsm.Take, len(batch))}
	for i, r := range batch {
		cmd.TakeBatch[i] = r.take
	}
	return b.n.raft.Apply(cmd.Encode(nil), applyEnqueueTimeout)
}

// proposeEscrow stamps and encodes one escrow entry and hands it to raft (nil if not the leader).
func (b *batcher) proposeEscrow(batch []*takeReq) raft.ApplyFuture {
	if !b.n.IsLeader() {
		return nil
	}
	cmd := fsm.Command{Stamp: b.n.Stamp(), Escrow: make([]fsm.EscrowOp, len(batch))}
	for i, r := range batch {
		cmd.Escrow[i] = *r.op
	}
	return b.n.raft.Apply(cmd.Encode(nil), applyEnqueueTimeout)
}

// finishEscrow waits for an escrow entry and hands each caller its outcome.
func (b *batcher) finishEscrow(batch []*takeReq, f raft.ApplyFuture) {
	var resp *fsm.Response
	err := ErrNotLeader
	if f != nil {
		if err = b.n.wait(context.Background(), f, nil); err != nil {
			err = b.n.translate(err)
		} else if r, ok := f.Response().(*fsm.Response); !ok {
			err = fmt.Errorf("unexpected apply response %T", f.Response())
		} else if err = r.Err; err == nil && len(r.Escrow) != len(batch) {
			err = fmt.Errorf("apply returned %d escrow outcomes for %d ops", len(r.Escrow), len(batch))
		} else {
			resp = r
		}
	}
	for i, r := range batch {
		b.unmark(r)
		if err != nil {
			r.done <- takeResp{err: err}
		} else {
			r.done <- takeResp{esc: resp.Escrow[i]}
		}
	}
}

// finish waits for a batch entry and hands each caller its outcome.
func (b *batcher) finish(batch []*takeReq, f raft.ApplyFuture) {
	// The entry is applied (or failed for good) once f has an answer: clear the pending marks
	// before the callers hear back, so a caller's next request sees its own take as settled.
	settle := func() {
		for _, r := range batch {
			b.n.pending.addTake(&r.take, -1)
		}
	}
	fail := func(err error) {
		settle()
		for _, r := range batch {
			r.done <- takeResp{err: err}
		}
	}
	if f == nil {
		fail(ErrNotLeader)
		return
	}
	if err := b.n.wait(context.Background(), f, nil); err != nil {
		fail(b.n.translate(err)) // ErrShutdown included: the outcome is unknown, retry by request ID
		return
	}
	resp, ok := f.Response().(*fsm.Response)
	switch {
	case !ok:
		fail(fmt.Errorf("unexpected apply response %T", f.Response()))
	case resp.Err != nil:
		fail(resp.Err)
	case len(resp.Takes) != len(batch):
		fail(fmt.Errorf("apply returned %d outcomes for %d takes", len(resp.Takes), len(batch)))
	default:
		settle()
		for i, r := range batch {
			r.done <- takeResp{out: resp.Takes[i]}
		}
	}
}

func (b *batcher) drain(err error) {
	for {
		select {
		case r := <-b.ch:
			b.unmark(r)
			r.done <- takeResp{err: err}
		default:
			return
		}
	}
}
