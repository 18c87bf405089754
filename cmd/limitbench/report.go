package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// percentiles are the quantiles every report shows, with their labels.
var percentiles = []struct {
	q     float64
	label string // text report
	field string // JSON field
}{
	{0.5, "p50", "p50"}, {0.9, "p90", "p90"}, {0.99, "p99", "p99"}, {0.999, "p99.9", "p99_9"},
}

// JSONReport is the -o json output. Field names are stable lower_snake_case; durations are in
// seconds (elapsed_seconds, ...) or microseconds (latency_us, ..._us).
type JSONReport struct {
	Tool     string      `json:"tool"`
	Config   JSONConfig  `json:"config"`
	Leader   JSONLeader  `json:"leader"`
	Main     *JSONPhase  `json:"main"`
	Baseline *JSONPhase  `json:"baseline,omitempty"`
	Ratios   *JSONRatios `json:"ratios_to_baseline,omitempty"`
	Warnings []string    `json:"warnings"`
}

// JSONConfig is the run's configuration as reported.
type JSONConfig struct {
	Addrs                 []string `json:"addrs"`
	Concurrency           int      `json:"concurrency"`
	Keys                  int      `json:"keys"`
	Limit                 string   `json:"limit"`
	Setup                 bool     `json:"setup"`
	Rate                  int64    `json:"rate,omitempty"`
	PerSeconds            float64  `json:"per_seconds,omitempty"`
	Burst                 int64    `json:"burst,omitempty"`
	Cost                  int64    `json:"cost"`
	Mix                   string   `json:"mix"`
	Batch                 int      `json:"batch"`
	Loop                  string   `json:"loop"` // "closed" or "open"
	RateLimit             float64  `json:"rate_limit"`
	DurationSeconds       float64  `json:"duration_seconds"`
	Requests              int64    `json:"requests"`
	WarmupSeconds         float64  `json:"warmup_seconds"`
	Baseline              bool     `json:"baseline"`
	Consistency           string   `json:"consistency"`
	RequestTimeoutSeconds float64  `json:"request_timeout_seconds"`
	Seed                  uint64   `json:"seed"`
}

// JSONLeader is the leader the main phase's calls went to.
type JSONLeader struct {
	ID          string `json:"id"`
	Address     string `json:"address"`
	Term        uint64 `json:"term"`
	Connections int    `json:"connections"`
}

// JSONLatency is a latency summary in microseconds.
type JSONLatency struct {
	Min  float64 `json:"min"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
}

// JSONOp is the figures of one kind of call.
type JSONOp struct {
	Operations         int64       `json:"operations"`
	OpsPerSecond       float64     `json:"ops_per_second"`
	Decisions          int64       `json:"decisions"`
	DecisionsPerSecond float64     `json:"decisions_per_second"`
	Errors             int64       `json:"errors"`
	LatencyUs          JSONLatency `json:"latency_us"`
}

// JSONWindow is one second of the run.
type JSONWindow struct {
	Second     int     `json:"second"`
	Operations int64   `json:"operations"`
	Errors     int64   `json:"errors"`
	P50Us      float64 `json:"p50_us"`
	P99Us      float64 `json:"p99_us"`
	MaxUs      float64 `json:"max_us"`
}

// JSONPhase is the figures of one phase (main or baseline).
type JSONPhase struct {
	Name                string  `json:"name"`
	Mix                 string  `json:"mix"`
	Interrupted         bool    `json:"interrupted"`
	ElapsedSeconds      float64 `json:"elapsed_seconds"`
	LeaderID            string  `json:"leader_id"`
	Term                uint64  `json:"term"`
	LeaderIDAfter       string  `json:"leader_id_after"`
	TermAfter           uint64  `json:"term_after"`
	LeaderChanged       bool    `json:"leader_changed"`
	OfferedOpsPerSecond float64 `json:"offered_ops_per_second"`
	Operations          int64   `json:"operations"`
	OpsPerSecond        float64 `json:"ops_per_second"`
	Decisions           int64   `json:"decisions"`
	DecisionsPerSecond  float64 `json:"decisions_per_second"`
	Allowed             int64   `json:"allowed"`
	Denied              int64   `json:"denied"`
	Replayed            int64   `json:"replayed"`
	AnsweredLocally     int64   `json:"answered_locally"`
	// ExactAllowed is what exact buckets would have allowed of the takes sent, warmup included,
	// and AllowedOfThose what the cluster allowed of the same takes (both 0 when not computed).
	ExactAllowed   int64             `json:"exact_allowed"`
	AllowedOfThose int64             `json:"allowed_of_those"`
	UnderAdmission float64           `json:"under_admission"` // 1 - AllowedOfThose/ExactAllowed
	Errors         int64             `json:"errors"`
	ErrorsByCode   map[string]int64  `json:"errors_by_code"`
	FirstErrors    map[string]string `json:"first_errors"` // code -> the first message seen
	LatencyUs      JSONLatency       `json:"latency_us"`
	ByOp           map[string]JSONOp `json:"by_op"`
	Timeline       []JSONWindow      `json:"timeline"`
}

// JSONRatios compares the main run with the baseline: main / baseline.
type JSONRatios struct {
	OpsPerSecond float64 `json:"ops_per_second"`
	P50          float64 `json:"p50"`
	P99          float64 `json:"p99"`
}

// us converts d to microseconds, rounded to 0.1 µs.
func us(d time.Duration) float64 {
	return math.Round(float64(d)/100) / 10
}

// round3 rounds x to three decimals (for rates and ratios in JSON).
func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// latencyOf summarises h.
func latencyOf(h *Hist) JSONLatency {
	return JSONLatency{Min: us(h.Min()), Mean: us(h.Mean()), P50: us(h.Quantile(0.5)), P90: us(h.Quantile(0.9)),
		P99: us(h.Quantile(0.99)), P999: us(h.Quantile(0.999)), Max: us(h.Max())}
}

// jsonPhase converts p for the JSON report.
func jsonPhase(p *Phase) *JSONPhase {
	out := &JSONPhase{
		Name: p.Name, Mix: p.Mix.String(), Interrupted: p.Interrupted,
		ElapsedSeconds: round3(p.Elapsed.Seconds()), LeaderID: p.LeaderID, Term: p.Term, LeaderIDAfter: p.LeaderAfter,
		TermAfter: p.TermAfter, LeaderChanged: p.LeaderChanged(), OfferedOpsPerSecond: round3(p.Offered),
		Operations: p.TotalOps(), OpsPerSecond: round3(p.perSecond(p.TotalOps())),
		Decisions: p.TotalDecisions(), DecisionsPerSecond: round3(p.perSecond(p.TotalDecisions())),
		Allowed: p.Allowed, Denied: p.Denied, Replayed: p.Replayed, Errors: p.TotalErrors(),
		AnsweredLocally: p.Local, ExactAllowed: p.Exact, AllowedOfThose: p.ExactOf, UnderAdmission: round3(p.underAdmission()),
		ErrorsByCode: map[string]int64{}, FirstErrors: map[string]string{}, LatencyUs: latencyOf(p.AllHist()), ByOp: map[string]JSONOp{},
		Timeline: []JSONWindow{},
	}
	for i, n := range p.Errors {
		if n > 0 {
			out.ErrorsByCode[errSlotName(i)] = n
			if p.ErrorText[i] != "" {
				out.FirstErrors[errSlotName(i)] = p.ErrorText[i]
			}
		}
	}
	for k := range numOps {
		if p.Ops[k] == 0 && !p.Mix.has(k) {
			continue
		}
		out.ByOp[k.String()] = JSONOp{
			Operations: p.Ops[k], OpsPerSecond: round3(p.perSecond(p.Ops[k])),
			Decisions: p.Decisions[k], DecisionsPerSecond: round3(p.perSecond(p.Decisions[k])),
			Errors: p.OpErrors[k], LatencyUs: latencyOf(p.Hist[k]),
		}
	}
	for _, w := range p.Timeline {
		out.Timeline = append(out.Timeline, JSONWindow{Second: w.Index, Operations: w.Ops, Errors: w.Errors,
			P50Us: us(w.P50), P99Us: us(w.P99), MaxUs: us(w.Max)})
	}
	return out
}

// ratios compares the main phase with the baseline: main / baseline for ops/s, p50 and p99.
func ratios(main, base *Phase) JSONRatios {
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return round3(a / b)
	}
	mh, bh := main.AllHist(), base.AllHist()
	return JSONRatios{
		OpsPerSecond: div(main.perSecond(main.TotalOps()), base.perSecond(base.TotalOps())),
		P50:          div(float64(mh.Quantile(0.5)), float64(bh.Quantile(0.5))),
		P99:          div(float64(mh.Quantile(0.99)), float64(bh.Quantile(0.99))),
	}
}

// jsonReport builds the JSON report of res.
func jsonReport(res *Result) *JSONReport {
	c := res.Config
	loop := "closed"
	if c.openLoop() {
		loop = "open"
	}
	consistency := "linearizable"
	if c.Stale {
		consistency = "stale"
	}
	r := &JSONReport{
		Tool: "limitbench",
		Config: JSONConfig{
			Addrs: c.Addrs, Concurrency: c.Concurrency, Keys: c.Keys, Limit: c.Limit, Setup: c.Setup,
			Cost: c.Cost, Mix: c.Mix.String(), Batch: c.Batch, Loop: loop, RateLimit: c.RateLimit,
			DurationSeconds: c.Duration.Seconds(), Requests: c.Requests, WarmupSeconds: c.Warmup.Seconds(),
			Baseline: c.Baseline, Consistency: consistency, RequestTimeoutSeconds: c.RequestTimeout.Seconds(), Seed: c.Seed,
		},
		Leader: JSONLeader{ID: res.Leader.ID, Address: res.Leader.Address, Term: res.Leader.Term,
			Connections: res.Leader.Connections},
		Main:     jsonPhase(res.Main),
		Warnings: warnings(res),
	}
	if c.Setup {
		r.Config.Rate, r.Config.PerSeconds, r.Config.Burst = c.Rate, c.Per.Seconds(), effectiveBurst(c.Rate, c.Burst)
	}
	if res.Baseline != nil {
		r.Baseline = jsonPhase(res.Baseline)
		rt := ratios(res.Main, res.Baseline)
		r.Ratios = &rt
	}
	return r
}

// writeJSON writes the JSON report of res, indented, followed by a newline.
func writeJSON(w io.Writer, res *Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(jsonReport(res))
}

// warnings lists what a reader of the figures should know: errors, leader changes, an open
// loop that fell behind, replays, an interruption.
func warnings(res *Result) []string {
	out := []string{}
	for _, p := range []*Phase{res.Baseline, res.Main} {
		if p == nil {
			continue
		}
		if p.LeaderChanged() {
			out = append(out, fmt.Sprintf("%s run: leadership changed during the run (%s term %d, then %s term %d): calls after the change were forwarded or failed, so the figures do not describe a stable leader",
				p.Name, p.LeaderID, p.Term, p.LeaderAfter, p.TermAfter))
		}
		if p.AfterErr != "" {
			out = append(out, fmt.Sprintf("%s run: could not check the leader afterwards: %s", p.Name, p.AfterErr))
		}
		if p.Interrupted {
			out = append(out, fmt.Sprintf("%s run interrupted: figures cover %s only", p.Name, fmtSeconds(p.Elapsed)))
		}
		if n := p.TotalErrors(); n > 0 {
			out = append(out, fmt.Sprintf("%s run: %s of %s calls failed (%.2f%%): %s", p.Name, fmtCount(n), fmtCount(p.TotalOps()),
				100*float64(n)/float64(max(p.TotalOps(), 1)), errorsByCode(p)))
		}
		if p.Replayed > 0 {
			out = append(out, fmt.Sprintf("%s run: %d takes were answered as replays despite fresh request IDs", p.Name, p.Replayed))
		}
		if got := p.perSecond(p.TotalOps()); p.Offered > 0 && got < 0.95*p.Offered {
			out = append(out, fmt.Sprintf("%s run: offered %s calls/s but completed %s/s: the cluster (or --concurrency %d) could not keep up; latencies include the time calls waited to be sent",
				p.Name, fmtFloat(p.Offered), fmtFloat(got), res.Config.Concurrency))
		}
	}
	if p := res.Main; p != nil && p.Denied > 0 {
		if d := p.TotalDecisions(); d > 0 && float64(p.Denied) > 0.1*float64(d) {
			out = append(out, fmt.Sprintf("%.1f%% of decisions were denials: the limit is binding (raise --rate or --burst to measure allowed takes)",
				100*float64(p.Denied)/float64(d)))
		}
	}
	return out
}

// errorsByCode formats a phase's errors as "Unavailable 3, DeadlineExceeded 1", most first.
func errorsByCode(p *Phase) string {
	type kv struct {
		name string
		n    int64
	}
	var list []kv
	for i, n := range p.Errors {
		if n > 0 {
			list = append(list, kv{errSlotName(i), n})
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].n > list[j].n })
	parts := make([]string, len(list))
	for i, e := range list {
		parts[i] = fmt.Sprintf("%s %s", e.name, fmtCount(e.n))
	}
	return strings.Join(parts, ", ")
}

// underAdmission is the share of what exact buckets would allow that the cluster did not.
func (p *Phase) underAdmission() float64 {
	if p.Exact == 0 {
		return 0
	}
	return 1 - float64(p.ExactOf)/float64(p.Exact)
}

func admissionOf(c Config) string {
	if c.Admission == "" {
		return "linearizable"
	}
	if c.GrantTTL > 0 {
		return fmt.Sprintf("%s (grant TTL %s)", c.Admission, c.GrantTTL)
	}
	return c.Admission
}

// writeText writes the report of res for people.
func writeText(w io.Writer, res *Result) error {
	c := res.Config
	var b strings.Builder
	loop := "closed loop"
	if c.openLoop() {
		loop = fmt.Sprintf("open loop at %s calls/s offered", fmtFloat(c.RateLimit))
	}
	fmt.Fprintf(&b, "limitbench: mix %s, %d callers, %s, %s keys, seed %d\n", c.Mix, c.Concurrency, loop, fmtCount(int64(c.Keys)), c.Seed)
	fmt.Fprintf(&b, "leader:     %s at %s (term %d), %d connection(s)\n", res.Leader.ID, res.Leader.Address, res.Leader.Term, res.Leader.Connections)
	if c.Setup {
		fmt.Fprintf(&b, "limit:      %q set to %d per %s, burst %d, %s admission; cost %d", c.Limit, c.Rate, c.Per, effectiveBurst(c.Rate, c.Burst), admissionOf(c), c.Cost)
	} else {
		fmt.Fprintf(&b, "limit:      %q as found (--no-setup); cost %d", c.Limit, c.Cost)
	}
	if c.Mix.has(opTakeMany) {
		fmt.Fprintf(&b, "; TakeMany of %d", c.Batch)
	}
	if c.Mix.has(opPeek) {
		fmt.Fprintf(&b, "; %s peeks", map[bool]string{false: "linearizable", true: "stale"}[c.Stale])
	}
	fmt.Fprintf(&b, "\nmeasured:   %s after a %s warmup\n\n", fmtSeconds(res.Main.Elapsed), c.Warmup)

	phases := []*Phase{res.Main}
	header := []string{"", "main (" + res.Main.Mix.String() + ")"}
	if res.Baseline != nil {
		phases = append(phases, res.Baseline)
		header = append(header, "baseline (health)", "main/baseline")
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 3, ' ', tabwriter.AlignRight)
	row := func(label string, cells []string, ratio string) {
		fmt.Fprintf(tw, "%-14s\t%s", label, strings.Join(cells, "\t"))
		if res.Baseline != nil {
			fmt.Fprintf(tw, "\t%s", ratio)
		}
		fmt.Fprint(tw, "\t\n")
	}
	cells := func(f func(p *Phase) string) []string {
		out := make([]string, len(phases))
		for i, p := range phases {
			out[i] = f(p)
		}
		return out
	}
	hists := make([]*Hist, len(phases))
	for i, p := range phases {
		hists[i] = p.AllHist()
	}
	ratio := func(a, b float64) string {
		if b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fx", a/b)
	}
	header[0] = fmt.Sprintf("%-14s", "")
	fmt.Fprintf(tw, "%s\t\n", strings.Join(header, "\t"))
	row("calls", cells(func(p *Phase) string { return fmtCount(p.TotalOps()) }), "")
	rate := func(p *Phase) float64 { return p.perSecond(p.TotalOps()) }
	rateRatio := ""
	if res.Baseline != nil {
		rateRatio = ratio(rate(res.Main), rate(res.Baseline))
	}
	row("calls/s", cells(func(p *Phase) string { return fmtFloat(rate(p)) }), rateRatio)
	row("decisions/s", cells(func(p *Phase) string {
		if p.Mix.has(opHealth) {
			return "-"
		}
		return fmtFloat(p.perSecond(p.TotalDecisions()))
	}), "")
	row("allowed", cells(func(p *Phase) string {
		if p.Mix.has(opHealth) {
			return "-"
		}
		return fmtCount(p.Allowed)
	}), "")
	row("denied", cells(func(p *Phase) string {
		if p.Mix.has(opHealth) {
			return "-"
		}
		return fmtCount(p.Denied)
	}), "")
	row("errors", cells(func(p *Phase) string { return fmtCount(p.TotalErrors()) }), "")
	if res.Main.Local > 0 {
		row("from escrow", cells(func(p *Phase) string {
			if p.Mix.has(opHealth) {
				return "-"
			}
			return fmtCount(p.Local)
		}), "")
	}
	for _, pc := range percentiles {
		vals := make([]string, len(phases))
		for i, h := range hists {
			vals[i] = fmtLatency(h.Quantile(pc.q))
		}
		r := ""
		if res.Baseline != nil {
			r = ratio(float64(hists[0].Quantile(pc.q)), float64(hists[1].Quantile(pc.q)))
		}
		row("latency "+pc.label, vals, r)
	}
	row("latency max", cells(func(p *Phase) string { return fmtLatency(p.AllHist().Max()) }), "")
	row("latency mean", cells(func(p *Phase) string { return fmtLatency(p.AllHist().Mean()) }), "")
	if err := tw.Flush(); err != nil {
		return err
	}

	if p := res.Main; p.Exact > 0 {
		fmt.Fprintf(&b, "\nunder-admission: %s of the takes sent were allowed; exact buckets (full at the start) would allow %s: %.2f%% under\n",
			fmtCount(p.ExactOf), fmtCount(p.Exact), 100*p.underAdmission())
	}
	if len(res.Main.Mix) > 1 {
		b.WriteString("\nby call:\n")
		tw = tabwriter.NewWriter(&b, 0, 0, 3, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "%-10s\tcalls\tcalls/s\tdecisions/s\terrors\tp50\tp99\tmax\t\n", "")
		p := res.Main
		for _, m := range p.Mix {
			k := m.Op
			fmt.Fprintf(tw, "%-10s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", k, fmtCount(p.Ops[k]), fmtFloat(p.perSecond(p.Ops[k])),
				fmtFloat(p.perSecond(p.Decisions[k])), fmtCount(p.OpErrors[k]),
				fmtLatency(p.Hist[k].Quantile(0.5)), fmtLatency(p.Hist[k].Quantile(0.99)), fmtLatency(p.Hist[k].Max()))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, p := range phases {
		if p.TotalErrors() > 0 {
			fmt.Fprintf(&b, "\n%s errors by code: %s\n", p.Name, errorsByCode(p))
			for i, n := range p.Errors {
				if n > 0 && p.ErrorText[i] != "" {
					fmt.Fprintf(&b, "  first %s: %s\n", errSlotName(i), p.ErrorText[i])
				}
			}
		}
	}
	if ws := warnings(res); len(ws) > 0 {
		b.WriteString("\n")
		for _, w := range ws {
			fmt.Fprintf(&b, "warning: %s\n", w)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// fmtCount formats n with thousands separators: 1234567 is "1,234,567".
func fmtCount(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// fmtFloat formats a rate: with thousands separators when large, else with up to one decimal.
func fmtFloat(x float64) string {
	if x >= 100 {
		return fmtCount(int64(math.Round(x)))
	}
	return strconv.FormatFloat(math.Round(x*10)/10, 'f', -1, 64)
}

// fmtLatency formats a latency with three significant digits: "87.3µs", "1.23ms", "2.05s".
func fmtLatency(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", int64(d))
	case d < time.Millisecond:
		return sig3(float64(d)/1e3) + "µs"
	case d < time.Second:
		return sig3(float64(d)/1e6) + "ms"
	default:
		return sig3(float64(d)/1e9) + "s"
	}
}

// sig3 formats x (1 <= x < 1000) with three significant digits.
func sig3(x float64) string {
	switch {
	case x >= 100:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case x >= 10:
		return strconv.FormatFloat(x, 'f', 1, 64)
	default:
		return strconv.FormatFloat(x, 'f', 2, 64)
	}
}
