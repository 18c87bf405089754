// Package envoyrls serves Envoy's global rate limit API (envoy.service.ratelimit.v3) and reads
// envoyproxy/ratelimit's YAML configuration language. Each configured descriptor is a replicated
// limit; a request's descriptors are decided together through a Decider (the limiter's own data
// plane), so they get the same guarantees as any take.
package envoyrls

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/limiterd/limiter/api/limiterpb"
	"github.com/limiterd/limiter/fsm"
)

// Decider is the decision path the service asks: the limiter's data plane, which decides on the
// leader (forwarding there from any member) with every guarantee of a take. *server.Server is one.
type Decider interface {
	TakeMany(ctx context.Context, req *limiterpb.TakeManyRequest) (*limiterpb.TakeManyResponse, error)
	Peek(ctx context.Context, req *limiterpb.PeekRequest) (*limiterpb.PeekResponse, error)
}

// Service implements envoy.service.ratelimit.v3.RateLimitService on top of the replicated
// limiter: each descriptor that matches a configured rule takes hits_addend tokens from that
// rule's limit, keyed by the descriptor's values, all in one log entry; descriptors that match no
// rule (or an unlimited one) are not limited, as in envoyproxy/ratelimit.
type Service struct {
	rlsv3.UnimplementedRateLimitServiceServer
	decider  Decider
	cfg      *Config
	headers  bool
	observer Observer // nil: not counted
}

// Observer counts the service's decisions (metrics). Its methods must be quick and safe for
// concurrent use.
type Observer interface {
	// ObserveEnvoyDecision counts one descriptor's decision: the replicated limit, the rule
	// (rate_limit.name, else the limit) and allowed, denied or shadow_denied.
	ObserveEnvoyDecision(limit, rule, result string)
	// ObserveUnknownDomain counts a request for a domain no file configures.
	ObserveUnknownDomain()
}

// SetObserver installs o (before serving).
func (e *Service) SetObserver(o Observer) { e.observer = o }

// NewService returns the service for cfg, deciding through d; headers adds X-RateLimit-* response
// headers.
func NewService(d Decider, cfg *Config, headers bool) *Service {
	return &Service{decider: d, cfg: cfg, headers: headers}
}

// ShouldRateLimit implements the Envoy rate limit service.
func (e *Service) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	if req.GetDomain() == "" {
		// envoyproxy/ratelimit refuses it with this message: an empty domain is a broken Envoy
		// filter config, not a request to let through.
		return nil, status.Error(codes.InvalidArgument, "rate limit domain must not be empty")
	}
	if len(req.GetDescriptors()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "no descriptors: a rate limit request needs at least one")
	}
	if e.observer != nil && !e.cfg.hasDomain(req.GetDomain()) {
		e.observer.ObserveUnknownDomain()
	}
	hits := uint64(req.GetHitsAddend())
	if hits == 0 {
		hits = 1
	}
	resp := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}
	type pending struct {
		status *rlsv3.RateLimitResponse_DescriptorStatus
		rule   *rule
		peek   bool
	}
	var items []*limiterpb.TakeItem
	var waiting []pending
	for _, d := range req.GetDescriptors() {
		st := &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
		resp.Statuses = append(resp.Statuses, st)
		var keys, values []string
		for _, en := range d.GetEntries() {
			keys, values = append(keys, en.GetKey()), append(values, en.GetValue())
		}
		rule := e.cfg.match(req.GetDomain(), keys, values)
		if rule == nil || rule.unlimited {
			continue
		}
		st.CurrentLimit = &rlsv3.RateLimitResponse_RateLimit{Name: rule.name, RequestsPerUnit: clampU32(rule.rpu), Unit: rule.unit}
		h := hits
		if d.GetHitsAddend() != nil {
			h = d.GetHitsAddend().GetValue()
		}
		if h > uint64(rule.rpu) { // can never be granted
			e.over(resp, st, rule)
			continue
		}
		cost := int64(h)
		if cost == 0 {
			cost = 1 // hits_addend 0 asks about the limit without consuming: a peek
		}
		items = append(items, &limiterpb.TakeItem{Limit: rule.limit, Key: envoyBucketKey(values), Cost: cost})
		waiting = append(waiting, pending{status: st, rule: rule, peek: h == 0})
	}
	var takes []*limiterpb.TakeItem
	var takers []pending
	for i, it := range items {
		if waiting[i].peek {
			p, err := e.decider.Peek(ctx, &limiterpb.PeekRequest{Limit: it.Limit, Key: it.Key, Cost: it.Cost})
			if err != nil {
				return nil, err
			}
			e.fill(resp, waiting[i].status, waiting[i].rule, p.GetDecision())
			continue
		}
		takes, takers = append(takes, it), append(takers, waiting[i])
	}
	if len(takes) > 0 {
		out, err := e.decider.TakeMany(ctx, &limiterpb.TakeManyRequest{Items: takes})
		if err != nil {
			return nil, err // Envoy applies its failure_mode_deny setting
		}
		for i, d := range out.GetDecisions() {
			e.fill(resp, takers[i].status, takers[i].rule, d)
		}
	}
	if e.headers {
		resp.ResponseHeadersToAdd = envoyHeaders(resp.GetStatuses())
	}
	return resp, nil
}

// fill records one decision in its descriptor status.
func (e *Service) fill(resp *rlsv3.RateLimitResponse, st *rlsv3.RateLimitResponse_DescriptorStatus, rule *rule, d *limiterpb.Decision) {
	st.LimitRemaining = clampU32(d.GetRemaining())
	st.DurationUntilReset = durationpb.New(time.Duration(d.GetResetAfterNanos()))
	if !d.GetAllowed() {
		e.over(resp, st, rule)
		return
	}
	e.observe(rule, "allowed")
}

// over marks a descriptor, and the response, OVER_LIMIT, unless its rule is in shadow mode:
// then the take is counted but never enforced, the descriptor reports OK, and the decision is
// counted as shadow_denied (how a rule is evaluated before it is enforced).
func (e *Service) over(resp *rlsv3.RateLimitResponse, st *rlsv3.RateLimitResponse_DescriptorStatus, rule *rule) {
	if rule.shadow {
		e.observe(rule, "shadow_denied")
		return
	}
	e.observe(rule, "denied")
	st.Code = rlsv3.RateLimitResponse_OVER_LIMIT
	resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
}

func (e *Service) observe(rule *rule, result string) {
	if e.observer == nil {
		return
	}
	name := rule.name
	if name == "" {
		name = rule.limit
	}
	e.observer.ObserveEnvoyDecision(rule.limit, name, result)
}

// envoyBucketKey is the bucket of a descriptor: its values, which distinguish "any value" rules'
// buckets (one per client IP, say). Long keys are hashed to fit.
func envoyBucketKey(values []string) string {
	k := strings.Join(values, "\x1f")
	if k == "" {
		k = "\x1f"
	}
	if len(k) > fsm.MaxKeyLen {
		h := fnv.New64a()
		h.Write([]byte(k))
		k = fmt.Sprintf("%s#%016x", k[:fsm.MaxKeyLen-17], h.Sum64())
	}
	return k
}

// envoyHeaders are the X-RateLimit-* headers of the most restrictive limited descriptor.
func envoyHeaders(sts []*rlsv3.RateLimitResponse_DescriptorStatus) []*corev3.HeaderValue {
	var best *rlsv3.RateLimitResponse_DescriptorStatus
	for _, st := range sts {
		if st.GetCurrentLimit() == nil {
			continue
		}
		if best == nil || st.GetLimitRemaining() < best.GetLimitRemaining() {
			best = st
		}
	}
	if best == nil {
		return nil
	}
	reset := int64((best.GetDurationUntilReset().AsDuration() + time.Second - 1) / time.Second)
	return []*corev3.HeaderValue{
		{Key: "X-RateLimit-Limit", Value: fmt.Sprint(best.GetCurrentLimit().GetRequestsPerUnit())},
		{Key: "X-RateLimit-Remaining", Value: fmt.Sprint(best.GetLimitRemaining())},
		{Key: "X-RateLimit-Reset", Value: fmt.Sprint(reset)},
	}
}

// clampU32 fits a count into Envoy's uint32 fields: negative as 0, too large as the maximum
// (limits up to 2^63 per unit are valid here).
func clampU32(v int64) uint32 {
	return uint32(min(max(v, 0), math.MaxUint32))
}
