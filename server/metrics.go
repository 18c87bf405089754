package server

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"time"

	armonmetrics "github.com/armon/go-metrics"
	armonprom "github.com/armon/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/api/limiterpb"
	"github.com/limiterd/limiter/certs"
	"github.com/limiterd/limiter/internal/version"
	"github.com/limiterd/limiter/node"
)

// Metrics are one member's Prometheus metrics. Names are part of the operator contract
// (deploy/grafana uses them): do not rename.
type Metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	batch    prometheus.Histogram
	snapshot prometheus.Histogram
	grant    prometheus.Histogram
	decided  *Decisions
}

// NewMetrics registers the metrics of n in a new registry and installs itself as n's observer.
func NewMetrics(n *node.Node) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "limiterd_requests_total",
			Help: "gRPC requests by method and result (allowed, denied, ok, error, unauthorized).",
		}, []string{"method", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "limiterd_request_duration_seconds",
			Help:    "gRPC request latency by method.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18), // 100us to ~13s
		}, []string{"method"}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "limiterd_batch_takes",
			Help:    "Take requests per log entry (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		snapshot: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "limiterd_snapshot_duration_seconds",
			Help:    "Time to take and persist a snapshot of the state machine.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
	}
	m.grant = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "limiterd_grant_duration_seconds",
		Help:    "Time for this member to get an escrow grant (a round to the leader and a commit).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
	})
	v := version.Get()
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "limiterd_build_info",
		Help:        "Always 1; the labels say what this member runs (as limitctl status and --version do).",
		ConstLabels: prometheus.Labels{"version": v.Short(), "revision": v.Revision, "goversion": v.GoVersion},
	})
	buildInfo.Set(1)
	reg.MustRegister(buildInfo)
	reg.MustRegister(m.requests, m.latency, m.batch, m.snapshot, m.grant, &nodeCollector{n: n}, &escrowCollector{n: n},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.decided = newDecisions(reg)
	n.SetObserver(m)
	return m
}

// WatchTLS exports the state of the TLS material r serves: its certificate's expiry, and reloads
// that failed (a broken rotation keeps the old certificate serving, silently but for these and one
// log line). Each scrape also checks the files for a rotation.
func (m *Metrics) WatchTLS(r *certs.Reloader) { m.reg.MustRegister(&tlsCollector{r: r}) }

type tlsCollector struct{ r *certs.Reloader }

var (
	descTLSExpiry   = prometheus.NewDesc("limiterd_tls_cert_expiry_timestamp_seconds", "When the certificate this member serves expires (Unix time); alert well before it.", nil, nil)
	descTLSFailures = prometheus.NewDesc("limiterd_tls_reload_failures_total", "Reloads of the TLS files that failed (the previous certificate kept serving).", nil, nil)
	descTLSOK       = prometheus.NewDesc("limiterd_tls_reload_ok", "1 when the last reload of the TLS files succeeded (or none was needed), 0 while a broken rotation is in place.", nil, nil)
)

func (c *tlsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descTLSExpiry
	ch <- descTLSFailures
	ch <- descTLSOK
}

func (c *tlsCollector) Collect(ch chan<- prometheus.Metric) {
	notAfter, failures, err := c.r.State()
	if !notAfter.IsZero() {
		ch <- prometheus.MustNewConstMetric(descTLSExpiry, prometheus.GaugeValue, float64(notAfter.Unix()))
	}
	ok := 1.0
	if err != nil {
		ok = 0
	}
	ch <- prometheus.MustNewConstMetric(descTLSFailures, prometheus.CounterValue, float64(failures))
	ch <- prometheus.MustNewConstMetric(descTLSOK, prometheus.GaugeValue, ok)
}

// Decisions are the decision counters; the Envoy service reports its decisions to them.
func (m *Metrics) Decisions() *Decisions { return m.decided }

// ObserveBatch implements node.Observer.
func (m *Metrics) ObserveBatch(takes int) { m.batch.Observe(float64(takes)) }

// ObserveSnapshot implements node.Observer.
func (m *Metrics) ObserveSnapshot(d time.Duration) { m.snapshot.Observe(d.Seconds()) }

// ObserveGrant implements node.Observer.
func (m *Metrics) ObserveGrant(d time.Duration) { m.grant.Observe(d.Seconds()) }

// Registry is the registry the metrics live in.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus text format, with hashicorp/raft's own metrics
// (process-wide: in `limiterd dev` they cover all three members) when BridgeRaftMetrics ran.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(prometheus.Gatherers{m.reg, raftRegistry}, promhttp.HandlerOpts{})
}

// Interceptor counts and times every unary call, with the decision as the result of a Take.
func (m *Metrics) Interceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		method := info.FullMethod[strings.LastIndexByte(info.FullMethod, '/')+1:]
		result := "ok"
		switch r := resp.(type) {
		case *limiterpb.TakeResponse:
			result = "denied"
			if r.GetDecision().GetAllowed() {
				result = "allowed"
			}
		}
		if err != nil {
			result = "error"
			if c := status.Code(err); c == codes.Unauthenticated || c == codes.PermissionDenied {
				result = "unauthorized" // refused by admin authorization
			}
		}
		if err == nil && !wasForwarded(ctx) {
			// A call another member forwarded here is counted there, where the client called:
			// the sum over members is the cluster's decisions.
			m.decided.observeCall(req, resp)
		}
		m.requests.WithLabelValues(method, result).Inc()
		m.latency.WithLabelValues(method).Observe(time.Since(start).Seconds())
		return resp, err
	}
}

// nodeCollector reads the node's state once per scrape.
type nodeCollector struct{ n *node.Node }

var (
	descState     = prometheus.NewDesc("limiterd_raft_state", "1 for the Raft state this node is in.", []string{"state"}, nil)
	descTerm      = prometheus.NewDesc("limiterd_raft_term", "Current Raft term.", nil, nil)
	descCommit    = prometheus.NewDesc("limiterd_raft_commit_index", "Raft commit index.", nil, nil)
	descApplied   = prometheus.NewDesc("limiterd_raft_applied_index", "Index of the last entry applied to the state machine.", nil, nil)
	descLag       = prometheus.NewDesc("limiterd_apply_lag", "Commit index minus applied index.", nil, nil)
	descChanges   = prometheus.NewDesc("limiterd_leader_changes_total", "Leadership won or lost by this node.", nil, nil)
	descBuckets   = prometheus.NewDesc("limiterd_buckets", "Buckets held (keys not yet refilled to full).", nil, nil)
	descLimits    = prometheus.NewDesc("limiterd_limits", "Limits defined.", nil, nil)
	descIDs       = prometheus.NewDesc("limiterd_request_ids", "Entries in the exactly-once table.", nil, nil)
	descLease     = prometheus.NewDesc("limiterd_lease_held", "1 while this node holds the read lease.", nil, nil)
	descLeaseRead = prometheus.NewDesc("limiterd_lease_reads_total", "Reads answered under the lease.", nil, nil)
	descLocalDeny = prometheus.NewDesc("limiterd_local_denials_total", "Takes denied from local state under the lease.", nil, nil)
	descResets    = prometheus.NewDesc("limiterd_clock_resets_total", "Entries stamped further behind the log clock than the skew tolerance.", nil, nil)
	descServing   = prometheus.NewDesc("limiterd_serving", "1 while this node is healthy (a leader known, its log writable, caught up with the leader's commit index).", nil, nil)
	descBehind    = prometheus.NewDesc("limiterd_behind_leader", "The leader's commit index as last heard minus this node's applied index.", nil, nil)
	descLogFail   = prometheus.NewDesc("limiterd_log_write_failures_total", "Writes of this node's Raft log that failed (a full disk, an I/O error).", nil, nil)
)

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descState, descTerm, descCommit, descApplied, descLag, descChanges, descBuckets, descLimits, descIDs, descLease, descLeaseRead, descLocalDeny, descResets, descServing, descBehind, descLogFail} {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.n.Status()
	for _, s := range []string{"Follower", "Candidate", "Leader", "Shutdown"} {
		v := 0.0
		if st.State == s {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, strings.ToLower(s))
	}
	lag := 0.0
	if st.CommitIndex > st.AppliedIndex {
		lag = float64(st.CommitIndex - st.AppliedIndex)
	}
	lease := 0.0
	if st.LeaseHeld {
		lease = 1
	}
	ch <- prometheus.MustNewConstMetric(descTerm, prometheus.GaugeValue, float64(st.Term))
	ch <- prometheus.MustNewConstMetric(descCommit, prometheus.GaugeValue, float64(st.CommitIndex))
	ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(st.AppliedIndex))
	ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, lag)
	ch <- prometheus.MustNewConstMetric(descChanges, prometheus.CounterValue, float64(st.LeaderChanges))
	ch <- prometheus.MustNewConstMetric(descBuckets, prometheus.GaugeValue, float64(st.FSM.Buckets))
	ch <- prometheus.MustNewConstMetric(descLimits, prometheus.GaugeValue, float64(st.FSM.Limits))
	ch <- prometheus.MustNewConstMetric(descIDs, prometheus.GaugeValue, float64(st.FSM.RequestIDs))
	ch <- prometheus.MustNewConstMetric(descLease, prometheus.GaugeValue, lease)
	ch <- prometheus.MustNewConstMetric(descLeaseRead, prometheus.CounterValue, float64(st.LeaseReads))
	ch <- prometheus.MustNewConstMetric(descLocalDeny, prometheus.CounterValue, float64(st.LocalDenials))
	ch <- prometheus.MustNewConstMetric(descResets, prometheus.CounterValue, float64(st.FSM.ClockResets))
	serving, behind := 0.0, 0.0
	if st.NotServing == "" {
		serving = 1
	}
	if st.LeaderCommitIndex > st.AppliedIndex {
		behind = float64(st.LeaderCommitIndex - st.AppliedIndex)
	}
	ch <- prometheus.MustNewConstMetric(descServing, prometheus.GaugeValue, serving)
	ch <- prometheus.MustNewConstMetric(descBehind, prometheus.GaugeValue, behind)
	ch <- prometheus.MustNewConstMetric(descLogFail, prometheus.CounterValue, float64(st.LogWriteFailures))
}

// escrowCollector reads this member's escrow counters (local admission) once per scrape.
type escrowCollector struct{ n *node.Node }

var (
	descLocalTakes = prometheus.NewDesc("limiterd_local_takes_total", "Takes on local limits answered from this member's escrow, by decision.", []string{"result"}, nil)
	descToLog      = prometheus.NewDesc("limiterd_local_to_log_total", "Takes on local limits this member sent to the log (cold keys, a limit at its grant bound).", nil, nil)
	descGrantReqs  = prometheus.NewDesc("limiterd_grant_requests_total", "Escrow grant rounds this member started.", nil, nil)
	descGrantFails = prometheus.NewDesc("limiterd_grant_failures_total", "Escrow grant rounds that failed as a whole (no leader reachable).", nil, nil)
	descHeld       = prometheus.NewDesc("limiterd_escrow_tokens", "Tokens this member holds in escrow and may still admit.", nil, nil)
	descGranted    = prometheus.NewDesc("limiterd_escrow_granted_tokens_total", "Tokens granted to this member.", nil, nil)
	descSettled    = prometheus.NewDesc("limiterd_escrow_settled_tokens_total", "Unused tokens this member returned to their buckets.", nil, nil)
	descStranded   = prometheus.NewDesc("limiterd_escrow_stranded_tokens_total", "Unused tokens this member could not return before their grant ended (under-admission from a partition or a lost leader).", nil, nil)
	descLiveGrants = prometheus.NewDesc("limiterd_escrow_grants", "Live escrow grants in the replicated state (all holders).", nil, nil)
	descSpent      = prometheus.NewDesc("limiterd_escrow_ended_unsettled_tokens_total", "Tokens of grants that ended without being returned, as this member applied them: admitted by their holders, or stranded.", nil, nil)
)

func (c *escrowCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLocalTakes, descToLog, descGrantReqs, descGrantFails, descHeld, descGranted, descSettled, descStranded, descLiveGrants, descSpent} {
		ch <- d
	}
}

func (c *escrowCollector) Collect(ch chan<- prometheus.Metric) {
	h := c.n.HolderStats()
	e := c.n.FSM().Escrow()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(descLocalTakes, h.Allowed, "allowed")
	counter(descLocalTakes, h.Denied, "denied")
	counter(descToLog, h.ToLog)
	counter(descGrantReqs, h.GrantRequests)
	counter(descGrantFails, h.Failures)
	counter(descGranted, h.Granted)
	counter(descSettled, h.Settled)
	counter(descStranded, h.Stranded)
	counter(descSpent, e.Spent)
	ch <- prometheus.MustNewConstMetric(descHeld, prometheus.GaugeValue, float64(h.Held))
	ch <- prometheus.MustNewConstMetric(descLiveGrants, prometheus.GaugeValue, float64(e.Grants))
}

var (
	raftBridge   sync.Once
	raftRegistry = prometheus.NewRegistry()
)

// BridgeRaftMetrics sends hashicorp/raft's own metrics (go-metrics, which is process-wide) into a
// process-wide registry that every member's Handler serves, named "raft_...". Calls after the
// first do nothing.
func BridgeRaftMetrics() error {
	var err error
	raftBridge.Do(func() {
		var sink *armonprom.PrometheusSink
		sink, err = armonprom.NewPrometheusSinkFrom(armonprom.PrometheusOpts{Registerer: raftRegistry, Expiration: time.Minute})
		if err != nil {
			return
		}
		cfg := armonmetrics.DefaultConfig("")
		cfg.EnableHostname, cfg.EnableRuntimeMetrics, cfg.EnableServiceLabel = false, false, false
		_, err = armonmetrics.NewGlobal(cfg, sink)
	})
	return err
}
