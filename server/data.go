package server

import (
	"context"
	"errors"

	"github.com/limiterd/limiter/api/limiterpb"
	"github.com/limiterd/limiter/bucket"
	"github.com/limiterd/limiter/fsm"
	"github.com/limiterd/limiter/node"
)

// Take implements RateLimiter.Take.
func (s *Server) Take(ctx context.Context, req *limiterpb.TakeRequest) (*limiterpb.TakeResponse, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	items := []*limiterpb.TakeItem{{Limit: req.GetLimit(), Key: req.GetKey(), Cost: req.GetCost()}}
	t, err := s.validateTake(items, req.GetRequestId())
	if err != nil {
		return nil, err
	}
	if !s.node.IsLeader() {
		fctx, c, err := s.leaderConn(ctx)
		if err != nil {
			return nil, err
		}
		return limiterpb.NewRateLimiterClient(c).Take(fctx, req)
	}
	out, err := s.take(ctx, t)
	if err != nil {
		return nil, err
	}
	return &limiterpb.TakeResponse{Decision: decision(out.Results[0]), Replayed: out.Replayed, RequestId: t.RequestID}, nil
}

// TakeMany implements RateLimiter.TakeMany.
func (s *Server) TakeMany(ctx context.Context, req *limiterpb.TakeManyRequest) (*limiterpb.TakeManyResponse, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	t, err := s.validateTake(req.GetItems(), req.GetRequestId())
	if err != nil {
		return nil, err
	}
	if !s.node.IsLeader() {
		fctx, c, err := s.leaderConn(ctx)
		if err != nil {
			return nil, err
		}
		return limiterpb.NewRateLimiterClient(c).TakeMany(fctx, req)
	}
	out, err := s.take(ctx, t)
	if err != nil {
		return nil, err
	}
	resp := &limiterpb.TakeManyResponse{Replayed: out.Replayed, RequestId: t.RequestID}
	for _, r := range out.Results {
		resp.Decisions = append(resp.Decisions, decision(r))
	}
	return resp, nil
}

// take runs a validated take on the leader. A retry of a recorded request gets its recorded
// outcome first, whatever happened to the limit since. Under the lease, requests that can never
// succeed (unknown limit, cost above burst) are refused from local state without a log entry;
// without it, the log decides (a deposed leader's state may be stale). The state machine checks
// again when it applies, so a limit changed in between is still handled exactly.
func (s *Server) take(ctx context.Context, t fsm.Take) (fsm.TakeOutcome, error) {
	out, local := s.node.LocalTake(ctx, t)
	if !local && s.node.LeaseHeld() {
		if _, _, present := s.node.FSM().Recorded(t); !present {
			for _, it := range t.Items {
				info, err := s.node.FSM().Limit(it.Limit)
				if err != nil {
					return fsm.TakeOutcome{}, s.toStatus(ctx, err)
				}
				if it.Cost > info.Burst {
					return fsm.TakeOutcome{}, invalidArg("cost %d exceeds the burst %d of limit %q: it can never be granted", it.Cost, info.Burst, it.Limit)
				}
			}
		}
	}
	var err error
	if !local {
		out, err = s.node.Take(ctx, t)
	}
	if err == nil {
		err = out.Err
	}
	if err != nil {
		return out, s.toStatus(ctx, err)
	}
	return out, nil
}

// validateTake checks a take request and converts it to the state machine's form.
func (s *Server) validateTake(items []*limiterpb.TakeItem, requestID string) (fsm.Take, error) {
	if len(items) == 0 {
		return fsm.Take{}, invalidArg("no items: a take needs at least one limit and key")
	}
	if len(items) > fsm.MaxItems {
		return fsm.Take{}, invalidArg("%d items exceed the maximum of %d per call", len(items), fsm.MaxItems)
	}
	if len(requestID) > fsm.MaxRequestIDLen {
		return fsm.Take{}, invalidArg("request_id of %d bytes exceeds %d", len(requestID), fsm.MaxRequestIDLen)
	}
	if requestID == "" {
		requestID = newRequestID()
	}
	t := fsm.Take{RequestID: requestID, Items: make([]fsm.Item, len(items))}
	for i, it := range items {
		if err := checkLimitKey(it.GetLimit(), it.GetKey()); err != nil {
			return fsm.Take{}, err
		}
		cost := it.GetCost()
		if cost == 0 {
			cost = 1
		}
		if cost < 0 {
			return fsm.Take{}, invalidArg("cost %d must be positive", cost)
		}
		t.Items[i] = fsm.Item{Limit: it.GetLimit(), Key: it.GetKey(), Cost: cost}
	}
	return t, nil
}

func checkLimitKey(limit, key string) error {
	if err := fsm.CheckName(limit); err != nil {
		return invalidArg("limit: %v", err)
	}
	if err := fsm.CheckKey(key); err != nil {
		return invalidArg("key: %v", err)
	}
	return nil
}

// Peek implements RateLimiter.Peek.
func (s *Server) Peek(ctx context.Context, req *limiterpb.PeekRequest) (*limiterpb.PeekResponse, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	if err := checkLimitKey(req.GetLimit(), req.GetKey()); err != nil {
		return nil, err
	}
	cost := req.GetCost()
	if cost == 0 {
		cost = 1
	}
	if cost < 0 {
		return nil, invalidArg("cost %d must be positive", cost)
	}
	stale := req.GetConsistency() == limiterpb.Consistency_CONSISTENCY_STALE
	if !stale && !s.node.IsLeader() {
		fctx, c, err := s.leaderConn(ctx)
		if err != nil {
			return nil, err
		}
		return limiterpb.NewRateLimiterClient(c).Peek(fctx, req)
	}
	res, staleness, err := s.node.Peek(ctx, req.GetLimit(), req.GetKey(), cost, stale)
	if errors.Is(err, bucket.ErrCostExceedsBurst) {
		// Peeking a cost that can never be granted is a fair question: answer "never".
		return &limiterpb.PeekResponse{Decision: decision(res), StalenessNanos: int64(staleness)}, nil
	}
	if err != nil {
		if errors.Is(err, node.ErrNotLeader) && !stale {
			return nil, s.unavailable(ctx, err)
		}
		return nil, s.toStatus(ctx, err)
	}
	return &limiterpb.PeekResponse{Decision: decision(res), StalenessNanos: int64(staleness)}, nil
}

// decision converts a bucket result to its wire form (Never becomes -1).
func decision(r bucket.Result) *limiterpb.Decision {
	retry := int64(r.RetryAfter)
	if r.RetryAfter == bucket.Never {
		retry = -1
	}
	return &limiterpb.Decision{
		Allowed: r.Allowed, Remaining: r.Remaining, Limit: r.Limit,
		RetryAfterNanos: retry, ResetAfterNanos: int64(r.ResetAfter),
	}
}
