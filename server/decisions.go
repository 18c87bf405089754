package server

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/limiterd/limiter/api/limiterpb"
)

// maxLabelValues bounds the distinct limit and Envoy rule names the per-limit and per-rule
// counters carry; later names are counted under otherLabel, so a deployment with many limits
// (or a client inventing names) cannot blow up the metrics.
const (
	maxLabelValues = 256
	otherLabel     = "_other"
)

// Decisions counts decisions by where they were made and how they came out: the panel an
// operator reads to see the cluster deciding, per limit and per Envoy rule.
type Decisions struct {
	bySource      *prometheus.CounterVec // source (take, takemany, local, envoy), result
	byLimit       *prometheus.CounterVec // limit, result
	byRule        *prometheus.CounterVec // Envoy rule, result
	unknownDomain prometheus.Counter

	limits labelSet
	rules  labelSet
}

// labelSet is the label values a counter has given out: a lock-free lookup on the decision path,
// a lock only to admit a new name.
type labelSet struct {
	seen sync.Map // string -> struct{}
	mu   sync.Mutex
	n    int
}

// bounded returns name while fewer than maxLabelValues names have been admitted, else otherLabel.
func (l *labelSet) bounded(name string) string {
	if _, ok := l.seen.Load(name); ok {
		return name
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.seen.Load(name); ok {
		return name
	}
	if l.n >= maxLabelValues {
		return otherLabel
	}
	l.seen.Store(name, struct{}{})
	l.n++
	return name
}

func newDecisions(reg *prometheus.Registry) *Decisions {
	d := &Decisions{
		bySource: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "limiterd_decisions_total",
			Help: "Decisions by source (take, takemany, local: from this member's escrow, envoy) and result (allowed, denied, shadow_denied: an Envoy rule in shadow mode that would have denied).",
		}, []string{"source", "result"}),
		byLimit: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "limiterd_limit_decisions_total",
			Help: "Decisions by limit and result (at most 256 limit names; later ones as _other).",
		}, []string{"limit", "result"}),
		byRule: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "limiterd_envoy_rule_decisions_total",
			Help: "Envoy decisions by rule (rate_limit.name, else the limit it maps to; at most 256, later ones as _other) and result.",
		}, []string{"rule", "result"}),
		unknownDomain: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "limiterd_envoy_unknown_domain_total",
			Help: "Envoy requests for a domain no configuration file defines (let through, as envoyproxy/ratelimit does).",
		}),
	}
	reg.MustRegister(d.bySource, d.byLimit, d.byRule, d.unknownDomain)
	return d
}

func result(allowed bool) string {
	if allowed {
		return "allowed"
	}
	return "denied"
}

func (d *Decisions) count(source, limit, res string) {
	d.bySource.WithLabelValues(source, res).Inc()
	d.byLimit.WithLabelValues(d.limits.bounded(limit), res).Inc()
}

// observeCall counts the decisions in a data-plane call's answer (Envoy's are counted by the
// Envoy service itself, which knows its rules).
func (d *Decisions) observeCall(req, resp any) {
	switch r := resp.(type) {
	case *limiterpb.TakeResponse:
		source := "take"
		if r.GetLocalNode() != "" {
			source = "local"
		}
		if q, ok := req.(*limiterpb.TakeRequest); ok {
			d.count(source, q.GetLimit(), result(r.GetDecision().GetAllowed()))
		}
	case *limiterpb.TakeManyResponse:
		q, ok := req.(*limiterpb.TakeManyRequest)
		if !ok || len(q.GetItems()) != len(r.GetDecisions()) {
			return
		}
		source := "takemany"
		if r.GetLocalNode() != "" {
			source = "local"
		}
		for i, dec := range r.GetDecisions() {
			d.count(source, q.GetItems()[i].GetLimit(), result(dec.GetAllowed()))
		}
	}
}

// ObserveEnvoyDecision implements envoyrls.Observer.
func (d *Decisions) ObserveEnvoyDecision(limit, rule, res string) {
	d.count("envoy", limit, res)
	d.byRule.WithLabelValues(d.rules.bounded(rule), res).Inc()
}

// ObserveUnknownDomain implements envoyrls.Observer.
func (d *Decisions) ObserveUnknownDomain() { d.unknownDomain.Inc() }
