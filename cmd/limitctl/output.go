package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/limiterd/limiter/api/limiterpb"
	"github.com/limiterd/limiter/client"
)

// emit prints v as JSON with -o json, or calls text with -o text.
func (a *app) emit(v any, text func(w io.Writer) error) error {
	if a.output == "json" {
		return writeJSON(a.stdout, v)
	}
	return text(a.stdout)
}

// writeJSON writes v as one indented JSON value followed by a newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeTable writes rows under header, in columns separated by at least two spaces.
func writeTable(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// humanDuration formats d for people: whole milliseconds ("11.999s", "12s", "1m30s"), or
// microseconds under a millisecond, and "never" for client.Never.
func humanDuration(d time.Duration) string {
	switch {
	case d == client.Never:
		return "never"
	case d >= time.Millisecond || d <= -time.Millisecond:
		return d.Round(time.Millisecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}

// period formats a limit's period without trailing zero units: "1m" rather than "1m0s".
func period(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// millis converts d to milliseconds for JSON, with -1 for client.Never.
func millis(d time.Duration) float64 {
	if d == client.Never {
		return -1
	}
	return float64(d) / float64(time.Millisecond)
}

// decisionJSON is the JSON form of a client.Decision; durations are in milliseconds and
// retry_after_ms is -1 when the cost can never be taken (it is above the burst).
type decisionJSON struct {
	Allowed      bool    `json:"allowed"`
	Remaining    int64   `json:"remaining"`
	Limit        int64   `json:"limit"`
	RetryAfterMS float64 `json:"retry_after_ms"`
	ResetAfterMS float64 `json:"reset_after_ms"`
}

// takeJSON is the JSON answer of `take`.
type takeJSON struct {
	decisionJSON
	RequestID string `json:"request_id"`
	Replayed  bool   `json:"replayed"`
	LocalNode string `json:"local_node,omitempty"` // the member that answered from its escrow
}

// peekJSON is the JSON answer of `peek`.
type peekJSON struct {
	decisionJSON
	Consistency string  `json:"consistency"`
	StalenessMS float64 `json:"staleness_ms"`
}

// decisionJSONOf converts a decision to its JSON form.
func decisionJSONOf(d client.Decision) decisionJSON {
	return decisionJSON{
		Allowed: d.Allowed, Remaining: d.Remaining, Limit: d.Limit,
		RetryAfterMS: millis(d.RetryAfter), ResetAfterMS: millis(d.ResetAfter),
	}
}

// takeJSONOf converts a take's result to its JSON form.
func takeJSONOf(r client.TakeResult) takeJSON {
	return takeJSON{decisionJSON: decisionJSONOf(r.Decision), RequestID: r.RequestID, Replayed: r.Replayed, LocalNode: r.LocalNode}
}

// peekJSONOf converts a peek's answer to its JSON form.
func peekJSONOf(d client.Decision, staleness time.Duration, consistency string) peekJSON {
	return peekJSON{decisionJSON: decisionJSONOf(d), Consistency: consistency, StalenessMS: millis(staleness)}
}

// decisionText formats a decision on one line: "allowed  remaining=4/5  reset_after=12s", or
// "denied  remaining=0/5  retry_after=11.999s" (retry_after=never when the cost is above the
// burst).
func decisionText(d client.Decision) string {
	if d.Allowed {
		return fmt.Sprintf("allowed  remaining=%d/%d  reset_after=%s", d.Remaining, d.Limit, humanDuration(d.ResetAfter))
	}
	return fmt.Sprintf("denied  remaining=%d/%d  retry_after=%s", d.Remaining, d.Limit, humanDuration(d.RetryAfter))
}

// takeText formats a take's result: its decision, marked "replayed" when it is the recorded
// answer to an earlier attempt with the same request ID.
func takeText(r client.TakeResult) string {
	s := decisionText(r.Decision)
	if r.Replayed {
		s += "  replayed request_id=" + r.RequestID
	}
	if r.LocalNode != "" {
		s += "  (from " + r.LocalNode + "'s escrow)"
	}
	return s
}

// peekText formats a peek's answer: its decision, plus the staleness bound of a stale read.
func peekText(d client.Decision, staleness time.Duration, stale bool) string {
	s := decisionText(d)
	if stale {
		s += "  staleness=" + humanDuration(staleness)
	}
	return s
}

// limitJSON is the JSON form of a limit.
type limitJSON struct {
	Name     string  `json:"name"`
	Rate     int64   `json:"rate"`
	Period   string  `json:"period"`
	PeriodMS float64 `json:"period_ms"`
	Burst    int64   `json:"burst"`
	Buckets  int64   `json:"buckets"`
	// Admission is "linearizable" or "local"; a local limit has a grant TTL, and `limit get`
	// shows its escrow per holder.
	Admission string       `json:"admission"`
	GrantTTL  string       `json:"grant_ttl,omitempty"`
	Escrow    []escrowJSON `json:"escrow,omitempty"`
}

// escrowJSON is one holder's escrow of a limit: its live grants and their tokens.
type escrowJSON struct {
	Holder string `json:"holder"`
	Grants int    `json:"grants"`
	Tokens int64  `json:"tokens"`
}

// limitJSONOf converts a limit to its JSON form.
func limitJSONOf(li *limiterpb.LimitInfo) limitJSON {
	p := time.Duration(li.GetPeriodNanos())
	out := limitJSON{Name: li.GetName(), Rate: li.GetRate(), Period: period(p), PeriodMS: millis(p), Burst: li.GetBurst(), Buckets: li.GetBuckets(),
		Admission: li.GetAdmission()}
	if out.Admission == "" {
		out.Admission = "linearizable" // a member of an earlier version
	}
	if ttl := li.GetGrantTtlNanos(); ttl > 0 {
		out.GrantTTL = period(time.Duration(ttl))
	}
	out.Escrow = escrowOf(li)
	return out
}

// escrowOf sums a limit's live grants per holder, sorted by holder.
func escrowOf(li *limiterpb.LimitInfo) []escrowJSON {
	var out []escrowJSON
	idx := map[string]int{}
	for _, g := range li.GetGrants() {
		if !g.GetLive() {
			continue
		}
		i, ok := idx[g.GetHolder()]
		if !ok {
			i = len(out)
			idx[g.GetHolder()] = i
			out = append(out, escrowJSON{Holder: g.GetHolder()})
		}
		out[i].Grants++
		out[i].Tokens += g.GetTokens()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Holder < out[j].Holder })
	return out
}

// admissionText is the ADMISSION column: the mode, with the grant TTL of a local limit.
func admissionText(l limitJSON) string {
	if l.GrantTTL != "" {
		return l.Admission + " (grant ttl " + l.GrantTTL + ")"
	}
	return l.Admission
}

// limitsJSONOf converts limits to their JSON form: never nil, so none encodes as [].
func limitsJSONOf(lis []*limiterpb.LimitInfo) []limitJSON {
	out := make([]limitJSON, 0, len(lis))
	for _, li := range lis {
		out = append(out, limitJSONOf(li))
	}
	return out
}

// writeLimitsTable writes limits as a table: name, rate, period, burst, buckets.
func writeLimitsTable(w io.Writer, lis []*limiterpb.LimitInfo) error {
	rows := make([][]string, 0, len(lis))
	for _, li := range lis {
		rows = append(rows, []string{
			li.GetName(), fmt.Sprint(li.GetRate()), period(time.Duration(li.GetPeriodNanos())),
			fmt.Sprint(li.GetBurst()), admissionText(limitJSONOf(li)), fmt.Sprint(li.GetBuckets()),
		})
	}
	if err := writeTable(w, []string{"NAME", "RATE", "PER", "BURST", "ADMISSION", "BUCKETS"}, rows); err != nil {
		return err
	}
	if len(lis) != 1 || len(lis[0].GetGrants()) == 0 {
		return nil
	}
	var esc [][]string
	for _, e := range escrowOf(lis[0]) {
		esc = append(esc, []string{e.Holder, fmt.Sprint(e.Grants), fmt.Sprint(e.Tokens)})
	}
	if len(esc) == 0 {
		_, err := fmt.Fprintln(w, "\nno tokens in escrow")
		return err
	}
	fmt.Fprintln(w)
	return writeTable(w, []string{"HOLDER", "GRANTS", "TOKENS IN ESCROW"}, esc)
}
