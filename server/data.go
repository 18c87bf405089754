package server

import (
	"context"
	"errors"

	"google.golang.org/grpc/metadata"

	"github.com/limiterd/limiter/api/limiterpb"
	"github.com/limiterd/limiter/bucket"
	"github.com/limiterd/limiter/fsm"
)

// Take implements RateLimiter.Take.
func (s *Server) Take(ctx context.Context, req *limiterpb.TakeRequest) (*limiterpb.TakeResponse, error) {
	items := []*limiterpb.TakeItem{{Limit: req.GetLimit(), Key: req.GetKey(), Cost: req.GetCost()}}
	t, err := s.validateTake(items, req.GetRequestId())
	if err != nil {
		return nil, err
	}
	if out, ok, err := s.takeLocal(ctx, t, req.GetRequestId() != ""); ok {
		if err != nil {
			return nil, err
		}
		return &limiterpb.TakeResponse{Decision: decision(out.Results[0]), Replayed: out.Replayed, RequestId: t.RequestID, LocalNode: s.node.Name(), Admission: fsm.AdmitLocal.String()}, nil
	}
	return onLeader(s, ctx, req, dataRPC(limiterpb.RateLimiterClient.Take), func(ctx context.Context) (*limiterpb.TakeResponse, error) {
		out, err := s.node.Take(ctx, t)
		if err != nil {
			return nil, err
		}
		resp := &limiterpb.TakeResponse{Decision: decision(out.Results[0]), Replayed: out.Replayed, RequestId: t.RequestID}
		if adm, _, _, ok := s.node.FSM().Mode(t.Items[0].Limit); ok { // Mode, not Limit: no bucket count on the take path
			resp.Admission = adm.String()
		}
		return resp, nil
	})
}

// TakeMany implements RateLimiter.TakeMany.
func (s *Server) TakeMany(ctx context.Context, req *limiterpb.TakeManyRequest) (*limiterpb.TakeManyResponse, error) {
	t, err := s.validateTake(req.GetItems(), req.GetRequestId())
	if err != nil {
		return nil, err
	}
	if out, ok, err := s.takeLocal(ctx, t, req.GetRequestId() != ""); ok {
		if err != nil {
			return nil, err
		}
		resp := &limiterpb.TakeManyResponse{Replayed: out.Replayed, RequestId: t.RequestID, LocalNode: s.node.Name()}
		for _, r := range out.Results {
			resp.Decisions = append(resp.Decisions, decision(r))
		}
		return resp, nil
	}
	return onLeader(s, ctx, req, dataRPC(limiterpb.RateLimiterClient.TakeMany), func(ctx context.Context) (*limiterpb.TakeManyResponse, error) {
		out, err := s.node.Take(ctx, t)
		if err != nil {
			return nil, err
		}
		resp := &limiterpb.TakeManyResponse{Replayed: out.Replayed, RequestId: t.RequestID}
		for _, r := range out.Results {
			resp.Decisions = append(resp.Decisions, decision(r))
		}
		return resp, nil
	})
}

// takeLocal answers a take from this member's escrow when every item is on a limit in local
// admission (node.TakeLocal); ok is false when the take goes to the leader's log instead. A
// forwarded take is never answered here: the member that forwarded it chose the log.
func (s *Server) takeLocal(ctx context.Context, t fsm.Take, clientID bool) (fsm.TakeOutcome, bool, error) {
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(forwardedHeader)) > 0 {
		return fsm.TakeOutcome{}, false, nil
	}
	// No deadline of our own here: a take answered from escrow does not wait, and one that waits
	// for a grant is bounded by the grant round's own timeout.
	out, ok, err := s.node.TakeLocal(ctx, t, clientID)
	if !ok {
		return out, false, nil
	}
	return out, true, s.toStatus(ctx, err)
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
		cost, err := checkCost(it.GetCost())
		if err != nil {
			return fsm.Take{}, err
		}
		t.Items[i] = fsm.Item{Limit: it.GetLimit(), Key: it.GetKey(), Cost: cost}
	}
	return t, nil
}

// checkCost applies the wire's default (0 means 1) and refuses a negative cost.
func checkCost(cost int64) (int64, error) {
	if cost == 0 {
		return 1, nil
	}
	if cost < 0 {
		return 0, invalidArg("cost %d must be positive", cost)
	}
	return cost, nil
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

// Peek implements RateLimiter.Peek: linearizable on the leader (forwarded there), or stale from
// this node's own state.
func (s *Server) Peek(ctx context.Context, req *limiterpb.PeekRequest) (*limiterpb.PeekResponse, error) {
	if err := checkLimitKey(req.GetLimit(), req.GetKey()); err != nil {
		return nil, err
	}
	cost, err := checkCost(req.GetCost())
	if err != nil {
		return nil, err
	}
	stale := req.GetConsistency() == limiterpb.Consistency_CONSISTENCY_STALE
	peek := func(ctx context.Context) (*limiterpb.PeekResponse, error) {
		res, staleness, err := s.node.Peek(ctx, req.GetLimit(), req.GetKey(), cost, stale)
		if err != nil && !errors.Is(err, bucket.ErrCostExceedsBurst) {
			return nil, err
		}
		// Peeking a cost that can never be granted is a fair question: the answer is "never".
		return &limiterpb.PeekResponse{Decision: decision(res), StalenessNanos: int64(staleness)}, nil
	}
	if stale {
		ctx, cancel := withTimeout(ctx)
		defer cancel()
		resp, err := peek(ctx)
		return resp, s.toStatus(ctx, err)
	}
	return onLeader(s, ctx, req, dataRPC(limiterpb.RateLimiterClient.Peek), peek)
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
