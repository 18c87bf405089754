package server

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/limiterd/limiter/api/limiterpb"
)

// Per-limit labels stop at maxLabelValues distinct names; the rest are counted under _other, so
// no client can grow the metrics without bound. Local answers and TakeMany items are counted by
// their own source.
func TestDecisions_BoundedLabelsAndSources(t *testing.T) {
	d := newDecisions(prometheus.NewRegistry())
	for i := 0; i < maxLabelValues+50; i++ {
		d.observeCall(&limiterpb.TakeRequest{Limit: fmt.Sprintf("l%d", i)}, &limiterpb.TakeResponse{Decision: &limiterpb.Decision{Allowed: true}})
	}
	if n := testutil.CollectAndCount(d.byLimit); n != maxLabelValues+1 {
		t.Fatalf("%d per-limit series, want %d plus _other", n, maxLabelValues)
	}
	if got := testutil.ToFloat64(d.byLimit.WithLabelValues(otherLabel, "allowed")); got != 50 {
		t.Fatalf("_other counted %v, want 50", got)
	}
	if got := testutil.ToFloat64(d.byLimit.WithLabelValues("l0", "allowed")); got != 1 {
		t.Fatalf("l0 counted %v, want 1", got)
	}
	d.observeCall(&limiterpb.TakeRequest{Limit: "l0"}, &limiterpb.TakeResponse{Decision: &limiterpb.Decision{}, LocalNode: "n2"})
	d.observeCall(&limiterpb.TakeManyRequest{Items: []*limiterpb.TakeItem{{Limit: "a"}, {Limit: "b"}}},
		&limiterpb.TakeManyResponse{Decisions: []*limiterpb.Decision{{Allowed: true}, {}}})
	d.ObserveEnvoyDecision("edge.x", "per-user", "shadow_denied")
	for _, c := range []struct {
		source, result string
		want           float64
	}{{"take", "allowed", maxLabelValues + 50}, {"local", "denied", 1}, {"takemany", "allowed", 1}, {"takemany", "denied", 1}, {"envoy", "shadow_denied", 1}} {
		if got := testutil.ToFloat64(d.bySource.WithLabelValues(c.source, c.result)); got != c.want {
			t.Errorf("decisions{source=%s,result=%s} = %v, want %v", c.source, c.result, got, c.want)
		}
	}
	if got := testutil.ToFloat64(d.byRule.WithLabelValues("per-user", "shadow_denied")); got != 1 {
		t.Errorf("rule counter %v", got)
	}
}
