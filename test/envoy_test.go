package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	extrl "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/limiterd/limiter/envoyrls"
	"github.com/limiterd/limiter/fsm"
	"github.com/limiterd/limiter/member"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// envoyConfigYAML is in envoyproxy/ratelimit's format.
const envoyConfigYAML = `
domain: edge
descriptors:
  - key: remote_address
    rate_limit:
      unit: minute
      requests_per_unit: 3
  - key: path
    value: /login
    rate_limit: {unit: hour, requests_per_unit: 2}
    descriptors:
      - key: user
        rate_limit: {unit: hour, requests_per_unit: 1, name: per-user-login}
  - key: path
    value: /free
    rate_limit: {unlimited: true}
  - key: batch
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
`

func desc(kv ...string) *extrl.RateLimitDescriptor {
	d := &extrl.RateLimitDescriptor{}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Entries = append(d.Entries, &extrl.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	return d
}

func TestEnvoy_ShouldRateLimitAgainstTheReplicatedCluster(t *testing.T) {
	p := filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(p, []byte(envoyConfigYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := envoyrls.LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	c := mustStartClusterWith(t, 3, func(ic *member.Config) { ic.Envoy, ic.EnvoyHeaders = cfg, true })
	waitFor(t, 20*time.Second, "the configured limits", func() bool {
		lis, err := c.mustClient().ListLimits(ctxT(t, 5*time.Second))
		return err == nil && len(lis) == 4
	})
	// Envoy may talk to any member: use a follower (it forwards to the leader).
	conn, err := grpc.NewClient(c.members[c.follower()].apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rls := rlsv3.NewRateLimitServiceClient(conn)
	ask := func(hits uint32, ds ...*extrl.RateLimitDescriptor) *rlsv3.RateLimitResponse {
		t.Helper()
		resp, err := rls.ShouldRateLimit(ctxT(t, 20*time.Second), &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: ds, HitsAddend: hits})
		if err != nil {
			t.Fatalf("ShouldRateLimit: %v", err)
		}
		return resp
	}

	// 3 per minute per client address; each address has its own bucket.
	for i, want := range []uint32{2, 1, 0} {
		r := ask(0, desc("remote_address", "10.0.0.1"))
		st := r.GetStatuses()[0]
		if r.GetOverallCode() != rlsv3.RateLimitResponse_OK || st.GetLimitRemaining() != want ||
			st.GetCurrentLimit().GetRequestsPerUnit() != 3 || st.GetCurrentLimit().GetUnit() != rlsv3.RateLimitResponse_RateLimit_MINUTE ||
			st.GetDurationUntilReset().AsDuration() <= 0 {
			t.Fatalf("request %d: %v", i, r)
		}
	}
	if r := ask(0, desc("remote_address", "10.0.0.1")); r.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT || r.GetStatuses()[0].GetCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("4th request from 10.0.0.1: %v, want OVER_LIMIT", r)
	}
	if r := ask(0, desc("remote_address", "10.0.0.2")); r.GetOverallCode() != rlsv3.RateLimitResponse_OK {
		t.Fatalf("another address: %v, want OK", r)
	}

	// hits_addend is honoured: 2 of the 2 per hour at once.
	if r := ask(2, desc("path", "/login")); r.GetOverallCode() != rlsv3.RateLimitResponse_OK || r.GetStatuses()[0].GetLimitRemaining() != 0 {
		t.Fatalf("hits 2: %v", r)
	}
	// Nested descriptors reach the nested rule (1 per hour per user), named as configured.
	r := ask(0, desc("path", "/login", "user", "bob"))
	if r.GetOverallCode() != rlsv3.RateLimitResponse_OK || r.GetStatuses()[0].GetCurrentLimit().GetName() != "per-user-login" {
		t.Fatalf("nested rule: %v", r)
	}
	// Unknown descriptors and unlimited rules are not limited.
	r = ask(0, desc("nobody", "knows"), desc("path", "/free"))
	for _, st := range r.GetStatuses() {
		if st.GetCode() != rlsv3.RateLimitResponse_OK || st.GetCurrentLimit() != nil {
			t.Fatalf("unknown or unlimited descriptor limited: %v", r)
		}
	}
	// One descriptor over its limit makes the whole request OVER_LIMIT; the others say OK.
	r = ask(0, desc("remote_address", "10.0.0.3"), desc("path", "/login"))
	if r.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT || r.GetStatuses()[0].GetCode() != rlsv3.RateLimitResponse_OK || r.GetStatuses()[1].GetCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("mixed request: %v", r)
	}
	// Rate-limit headers name the most restrictive descriptor.
	headers := map[string]string{}
	for _, h := range r.GetResponseHeadersToAdd() {
		headers[h.GetKey()] = h.GetValue()
	}
	if headers["X-RateLimit-Remaining"] != "0" || headers["X-RateLimit-Limit"] != "2" || headers["X-RateLimit-Reset"] == "" {
		t.Fatalf("headers %v", headers)
	}
	// Shadow mode: counted, never enforced.
	for i := 0; i < 3; i++ {
		if r := ask(0, desc("batch", "nightly")); r.GetOverallCode() != rlsv3.RateLimitResponse_OK {
			t.Fatalf("shadow-mode request %d: %v, want OK", i, r)
		}
	}
	lis, err := c.mustClient().ListLimits(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, li := range lis {
		if strings.Contains(li.GetName(), "batch") {
			d, _, err := c.mustClient().Peek(ctxT(t, 5*time.Second), li.GetName(), "nightly", 1, false)
			if err != nil || d.Remaining != 0 {
				t.Fatalf("shadow-mode bucket: %+v %v, want it consumed", d, err)
			}
		}
	}
	// The member Envoy called counts its decisions: the shadow rule's refusals as shadow_denied,
	// by source and by rule, and a request for a domain nothing configures.
	if _, err := rls.ShouldRateLimit(ctxT(t, 5*time.Second), &rlsv3.RateLimitRequest{Domain: "nope", Descriptors: []*extrl.RateLimitDescriptor{desc("a", "b")}}); err != nil {
		t.Fatal(err)
	}
	m := scrape(t, c.members[c.follower()].metrics)
	shadowByRule := 0.0
	for name, v := range m {
		if strings.HasPrefix(name, `limiterd_envoy_rule_decisions_total{result="shadow_denied",rule=`) {
			shadowByRule += v
		}
	}
	if got := m[`limiterd_decisions_total{result="shadow_denied",source="envoy"}`]; got != 2 || shadowByRule != 2 {
		t.Errorf("shadow_denied: %v by source, %v by rule; want 2 (3 requests on a limit of 1)", got, shadowByRule)
	}
	if m[`limiterd_decisions_total{result="denied",source="envoy"}`] == 0 || m[`limiterd_decisions_total{result="allowed",source="envoy"}`] == 0 {
		t.Errorf("envoy decisions not counted: %v allowed, %v denied", m[`limiterd_decisions_total{result="allowed",source="envoy"}`], m[`limiterd_decisions_total{result="denied",source="envoy"}`])
	}
	if m[`limiterd_envoy_unknown_domain_total`] != 1 {
		t.Errorf("unknown domain counted %v times, want 1", m[`limiterd_envoy_unknown_domain_total`])
	}
	// Per-descriptor hits_addend overrides the request's.
	d := desc("remote_address", "10.0.0.9")
	d.HitsAddend = wrapperspb.UInt64(3)
	if r := ask(1, d); r.GetStatuses()[0].GetLimitRemaining() != 0 {
		t.Fatalf("descriptor hits_addend 3: %v", r)
	}
}

func TestEnvoy_BadConfigNamesTheProblem(t *testing.T) {
	cases := map[string]struct{ body, want string }{
		"no domain":     {"descriptors: []\n", "domain is required"},
		"bad unit":      {"domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n", "d.k: rate_limit.unit"},
		"zero requests": {"domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 0}\n", "requests_per_unit"},
		"no key":        {"domain: d\ndescriptors:\n  - value: v\n", "without a key"},
		"unknown field": {"domain: d\ndescriptors:\n  - key: k\n    rate_limits: {}\n", "rate_limits"},
		"duplicate":     {"domain: d\ndescriptors:\n  - {key: k, value: v}\n  - {key: k, value: v}\n", "configured twice"},
		"wildcard":      {"domain: d\ndescriptors:\n  - {key: k, value: v*, rate_limit: {unit: second, requests_per_unit: 1}}\n", "wildcard values are not supported"},
		"replaces":      {"domain: d\ndescriptors:\n  - {key: k, replaces: [{name: x}], rate_limit: {unit: second, requests_per_unit: 1}}\n", "replaces is not supported"},
		"admission":     {"domain: d\ndescriptors:\n  - {key: k, rate_limit: {unit: second, requests_per_unit: 1, admission: fast}}\n", "d.k: rate_limit: invalid command: admission \"fast\""},
		"grant ttl":     {"domain: d\ndescriptors:\n  - {key: k, rate_limit: {unit: second, requests_per_unit: 1, admission: local, grant_ttl: 5m}}\n", "grant TTL 5m0s"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(p, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := envoyrls.LoadConfig(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("got %v, want an error naming %s and %q", err, p, tc.want)
			}
		})
	}
}

// TestEnvoy_ConfiguredLimitsAreKeptAsConfigured: the Envoy configuration is the source of truth
// for its limits: one deleted (or lost to a restored backup) comes back, one changed through the
// admin API is set back; and paths that read alike ("a.b" > "c", "a" > "b" > "c") never share one.
func TestEnvoy_ConfiguredLimitsAreKeptAsConfigured(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"one.yaml": "domain: a.b\ndescriptors:\n  - {key: c, rate_limit: {unit: minute, requests_per_unit: 5}}\n",
		"two.yaml": "domain: a\ndescriptors:\n  - key: b\n    descriptors:\n      - {key: c, rate_limit: {unit: hour, requests_per_unit: 7, admission: local, grant_ttl: 1s}}\n",
	}
	var paths []string
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	cfg, err := envoyrls.LoadConfig(paths...)
	if err != nil {
		t.Fatal(err)
	}
	c := mustStartClusterWith(t, 3, func(ic *member.Config) { ic.Envoy = cfg })
	cl := c.mustClient()
	limitOf := func(rate int64) string {
		var name string
		waitFor(t, 20*time.Second, fmt.Sprintf("a configured limit of %d", rate), func() bool {
			lis, err := cl.ListLimits(ctxT(t, 5*time.Second))
			if err != nil || len(lis) != 2 {
				return false
			}
			for _, li := range lis {
				if li.GetRate() == rate {
					name = li.GetName()
					return true
				}
			}
			return false
		})
		return name
	}
	five, seven := limitOf(5), limitOf(7)
	if five == seven {
		t.Fatalf("two configured paths share the limit %q", five)
	}
	if err := cl.DeleteLimit(ctxT(t, 5*time.Second), five); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.SetLimit(ctxT(t, 5*time.Second), seven, 1000, time.Second, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the deleted limit back and the changed one set back", func() bool {
		a, errA := cl.GetLimit(ctxT(t, 5*time.Second), five)
		b, errB := cl.GetLimit(ctxT(t, 5*time.Second), seven)
		return errA == nil && errB == nil && a.GetRate() == 5 && b.GetRate() == 7 && time.Duration(b.GetPeriodNanos()) == time.Hour &&
			a.GetAdmission() == "linearizable" && b.GetAdmission() == "local" && b.GetGrantTtlNanos() == int64(time.Second)
	})
}

func TestEnvoy_ExampleConfigInDeployLoads(t *testing.T) {
	cfg, err := envoyrls.LoadConfig("../deploy/envoy/ratelimit-config.yaml")
	if err != nil {
		t.Fatalf("the example rate limit configuration does not load: %v", err)
	}
	local := 0
	for _, l := range cfg.Limits() {
		if l.Admission == fsm.AdmitLocal {
			local++
		}
	}
	if local != 1 {
		t.Fatalf("the example configuration has %d rules in local admission, want the one it documents", local)
	}
}
