package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/limiterd/limiter/api/limiterpb"
	"github.com/limiterd/limiter/client"
)

const (
	// nodeStatusTimeout bounds the Status call to one node, so a dead node does not hold up
	// the report.
	nodeStatusTimeout = 2 * time.Second
	// statusLimitsTimeout bounds the ListLimits call under the table, which needs a leader.
	statusLimitsTimeout = 3 * time.Second
)

// statusCmd builds `status`.
func (a *app) statusCmd() *cobra.Command {
	var watch time.Duration
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every node's own view of the cluster, and the limits",
		Long: `Ask every node in --addr, concurrently, for its own view of the cluster and print one row
per node: node ID, address, Raft state, term, leader, commit/applied/last log index, lag (the
leader's last log index minus this node's applied index; "-" when no leader answered), and the
number of limits, buckets and recorded request IDs. Nodes that do not answer within 2s are
shown as unreachable. The limits are listed under the table when a leader can be reached.

With -o json: {"nodes": [...], "limits": [...]} (plus "limits_error" when the limits could not
be listed); unreachable nodes have "reachable": false and an "error".

With --watch D: again every D until Ctrl-C (the screen redrawn in text, one JSON object per
line with -o json); a round that finds no leader prints why on stderr and the watch goes on.

Exit status:
  0  a node answered that it is the leader (with --watch: stopped by Ctrl-C)
  1  no leader (the error says what each node reports), no node answered, or bad flags or
     arguments`,
		Args: exactArgs(),
	}
	once := func(ctx context.Context, c *client.Client) error {
		addrs := c.Addrs()
		resps, errs := fetchStatuses(ctx, c, addrs)
		rep := buildStatusReport(addrs, resps, errs)
		if rep.answered() {
			lctx, cancel := context.WithTimeout(ctx, statusLimitsTimeout)
			lis, err := c.ListLimits(lctx)
			cancel()
			rep.Limits = limitsJSONOf(lis)
			if err != nil {
				rep.LimitsError = errorMessage(err)
			}
		}
		if err := a.emit(rep, func(w io.Writer) error { return writeStatusText(w, rep) }); err != nil {
			return err
		}
		if !rep.answered() {
			return fmt.Errorf("no node answered (tried %s)", strings.Join(addrs, ", "))
		}
		return rep.leaderError()
	}
	cmd.RunE = a.run(func(ctx context.Context, c *client.Client, _ []string) error {
		if watch <= 0 {
			return once(ctx, c)
		}
		if watch < 100*time.Millisecond {
			return usagef("invalid --watch %s: at least 100ms", watch)
		}
		// Each round gets --timeout; the watch itself runs until the command's context ends.
		for {
			if a.output == "text" {
				fmt.Fprintf(a.stdout, "\033[H\033[2J%s, every %s (Ctrl-C stops)\n\n", time.Now().Format(time.TimeOnly), watch)
			}
			rctx, cancel := context.WithTimeout(cmd.Context(), a.timeout)
			err := once(rctx, c)
			cancel()
			if err != nil && cmd.Context().Err() == nil {
				fmt.Fprintf(a.stderr, "limitctl: %s\n", errorMessage(err))
			}
			select {
			case <-cmd.Context().Done():
				return nil
			case <-time.After(watch):
			}
		}
	})
	cmd.Flags().DurationVar(&watch, "watch", 0, "show the status again every interval until Ctrl-C, e.g. 2s")
	return cmd
}

// fetchStatuses asks every node in addrs for its status concurrently, each call bounded by
// nodeStatusTimeout, and returns the answers and errors by position in addrs.
func fetchStatuses(ctx context.Context, c *client.Client, addrs []string) ([]*limiterpb.StatusResponse, []error) {
	resps := make([]*limiterpb.StatusResponse, len(addrs))
	errs := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Go(func() {
			nctx, cancel := context.WithTimeout(ctx, nodeStatusTimeout)
			defer cancel()
			resps[i], errs[i] = c.Status(nctx, addr)
		})
	}
	wg.Wait()
	return resps, errs
}

// nodeStatus is one node's row in the status report. Lag is nil when no leader answered.
type nodeStatus struct {
	Address          string  `json:"address"`
	Reachable        bool    `json:"reachable"`
	Error            string  `json:"error,omitempty"`
	NodeID           string  `json:"node_id"`
	State            string  `json:"state"`
	Term             uint64  `json:"term"`
	LeaderID         string  `json:"leader_id"`
	LeaderAPIAddress string  `json:"leader_api_address"`
	CommitIndex      uint64  `json:"commit_index"`
	AppliedIndex     uint64  `json:"applied_index"`
	LastLogIndex     uint64  `json:"last_log_index"`
	Lag              *uint64 `json:"lag"`
	Limits           int64   `json:"limits"`
	Buckets          int64   `json:"buckets"`
	RequestIDs       int64   `json:"request_ids"`
	RaftAddress      string  `json:"raft_address"`
	APIAddress       string  `json:"api_address"`
	NotServing       string  `json:"not_serving,omitempty"` // why the node is not SERVING
	Version          string  `json:"version,omitempty"`     // the binary the node runs
	// TLSCertExpires is when the certificate the node serves expires (RFC 3339); TLSReloadError
	// why its last reload of the TLS files failed (the old certificate keeps serving).
	TLSCertExpires string `json:"tls_cert_expires,omitempty"`
	TLSReloadError string `json:"tls_reload_error,omitempty"`
	// ExactlyOnceWindow is how long a request recorded now stays recorded (retries must land
	// within it): the configured window, or less while the table is full.
	ExactlyOnceWindow string `json:"exactly_once_window,omitempty"`
}

// statusReport is the answer of `status`.
type statusReport struct {
	Nodes       []nodeStatus `json:"nodes"`
	Limits      []limitJSON  `json:"limits"`
	LimitsError string       `json:"limits_error,omitempty"`
}

// answered reports whether at least one node answered.
func (r statusReport) answered() bool {
	for _, n := range r.Nodes {
		if n.Reachable {
			return true
		}
	}
	return false
}

// certWarnBefore is how long before its certificate expires status starts warning about a node.
const certWarnBefore = 14 * 24 * time.Hour

// timeNow is the clock tlsWarnings compares expiries with (tests set it).
var timeNow = time.Now

// tlsWarnings lists the nodes whose certificate expires within certWarnBefore (or has expired) and
// those whose last reload of the TLS files failed.
func tlsWarnings(nodes []nodeStatus, now time.Time) []string {
	var out []string
	for _, n := range nodes {
		if !n.Reachable {
			continue
		}
		if exp, err := time.Parse(time.RFC3339, n.TLSCertExpires); err == nil {
			switch left := exp.Sub(now); {
			case left <= 0:
				out = append(out, fmt.Sprintf("%s: its certificate EXPIRED at %s", n.NodeID, n.TLSCertExpires))
			case left < certWarnBefore:
				out = append(out, fmt.Sprintf("%s: its certificate expires in %s (%s)", n.NodeID, humanDays(left), n.TLSCertExpires))
			}
		}
		if n.TLSReloadError != "" {
			out = append(out, fmt.Sprintf("%s: reloading its TLS files failed, the previous certificate still serves: %s", n.NodeID, n.TLSReloadError))
		}
	}
	return out
}

// humanDays writes a duration of days as "9d4h", shorter ones as Go does.
func humanDays(d time.Duration) string {
	if d < 24*time.Hour {
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%dd%dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

// leaderError is nil when a node that answered says it leads, and otherwise says so with what
// each node reports (state, and the leader it knows of, if any), e.g. during an election or
// with quorum lost.
func (r statusReport) leaderError() error {
	var views []string
	for _, n := range r.Nodes {
		switch {
		case n.Reachable && n.State == "Leader":
			return nil
		case !n.Reachable:
			views = append(views, n.Address+" unreachable")
		case n.LeaderID != "":
			views = append(views, fmt.Sprintf("%s is a %s (term %d) following %s, which did not answer as leader", n.NodeID, n.State, n.Term, n.LeaderID))
		default:
			views = append(views, fmt.Sprintf("%s is a %s (term %d) and knows no leader", n.NodeID, n.State, n.Term))
		}
	}
	return fmt.Errorf("no leader: %s", strings.Join(views, "; "))
}

// buildStatusReport turns the answers (or errors) of the nodes at addrs into report rows. The
// lag of a node is the leader's last log index minus the node's applied index (never below
// 0, as the answers are not taken at the same instant); the leader is the answering node in
// state Leader with the highest term.
func buildStatusReport(addrs []string, resps []*limiterpb.StatusResponse, errs []error) statusReport {
	var leader *limiterpb.StatusResponse
	for _, r := range resps {
		if r != nil && r.IsLeader() && (leader == nil || r.GetTerm() > leader.GetTerm()) {
			leader = r
		}
	}
	rep := statusReport{Nodes: make([]nodeStatus, len(addrs)), Limits: []limitJSON{}}
	for i, addr := range addrs {
		r := resps[i]
		if r == nil {
			err := errs[i]
			if err == nil {
				err = errors.New("no answer")
			}
			rep.Nodes[i] = nodeStatus{Address: addr, Error: strings.TrimPrefix(errorMessage(err), "status of "+addr+": ")}
			continue
		}
		n := nodeStatus{
			Address: addr, Reachable: true, NodeID: r.GetNodeId(), State: r.GetState(), Term: r.GetTerm(),
			LeaderID: r.GetLeaderId(), LeaderAPIAddress: r.GetLeaderApiAddress(),
			CommitIndex: r.GetCommitIndex(), AppliedIndex: r.GetAppliedIndex(), LastLogIndex: r.GetLastLogIndex(),
			Limits: r.GetLimits(), Buckets: r.GetBuckets(), RequestIDs: r.GetRequestIds(),
			RaftAddress: r.GetRaftAddress(), APIAddress: r.GetApiAddress(), NotServing: r.GetNotServing(),
			Version: r.GetVersion(), TLSReloadError: r.GetTlsReloadError(),
		}
		if e := r.GetTlsCertExpiresUnixNanos(); e > 0 {
			n.TLSCertExpires = time.Unix(0, e).UTC().Format(time.RFC3339)
		}
		if w := r.GetExactlyOnceWindowNanos(); w > 0 {
			n.ExactlyOnceWindow = time.Duration(w).String()
		}
		if leader != nil {
			var lag uint64
			if last := leader.GetLastLogIndex(); last > r.GetAppliedIndex() {
				lag = last - r.GetAppliedIndex()
			}
			n.Lag = &lag
		}
		rep.Nodes[i] = n
	}
	return rep
}

// versionsText says what the reachable nodes run: one version, or each node's when they differ
// (a rolling upgrade in progress). Empty when no node reported one (an earlier version).
func versionsText(nodes []nodeStatus) string {
	var parts []string
	seen := map[string]bool{}
	for _, n := range nodes {
		if n.Reachable {
			v := orDash(n.Version)
			parts = append(parts, n.NodeID+" "+v)
			seen[v] = true
		}
	}
	switch {
	case len(seen) == 0 || (len(seen) == 1 && seen["-"]):
		return ""
	case len(seen) == 1:
		for v := range seen {
			return "version: " + v + " (every node)"
		}
	}
	return "versions differ: " + strings.Join(parts, ", ")
}

// writeStatusText writes the report for people: the node table, the errors of unreachable
// nodes, then the limits.
func writeStatusText(w io.Writer, rep statusReport) error {
	header := []string{"NODE", "ADDRESS", "STATE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST", "LAG", "LIMITS", "BUCKETS", "REQUEST_IDS"}
	rows := make([][]string, 0, len(rep.Nodes))
	var failures []string
	for _, n := range rep.Nodes {
		if !n.Reachable {
			rows = append(rows, []string{"-", n.Address, "unreachable", "-", "-", "-", "-", "-", "-", "-", "-", "-"})
			failures = append(failures, n.Address+": "+n.Error)
			continue
		}
		lag := "-"
		if n.Lag != nil {
			lag = fmt.Sprint(*n.Lag)
		}
		rows = append(rows, []string{
			n.NodeID, n.Address, n.State, fmt.Sprint(n.Term), orDash(n.LeaderID),
			fmt.Sprint(n.CommitIndex), fmt.Sprint(n.AppliedIndex), fmt.Sprint(n.LastLogIndex), lag,
			fmt.Sprint(n.Limits), fmt.Sprint(n.Buckets), fmt.Sprint(n.RequestIDs),
		})
	}
	if err := writeTable(w, header, rows); err != nil {
		return err
	}
	if len(failures) > 0 {
		fmt.Fprintf(w, "\nunreachable:\n  %s\n", strings.Join(failures, "\n  "))
	}
	var notServing []string
	window := ""
	for _, n := range rep.Nodes {
		if n.Reachable && n.NotServing != "" {
			notServing = append(notServing, n.NodeID+": "+n.NotServing)
		}
		if n.Reachable && n.State == "Leader" && n.ExactlyOnceWindow != "" {
			window = n.ExactlyOnceWindow
		}
	}
	if len(notServing) > 0 {
		fmt.Fprintf(w, "\nnot serving:\n  %s\n", strings.Join(notServing, "\n  "))
	}
	if window != "" {
		fmt.Fprintf(w, "\nexactly-once window: %s (retries of a request must arrive within it)\n", window)
	}
	if v := versionsText(rep.Nodes); v != "" {
		fmt.Fprintf(w, "\n%s\n", v)
	}
	if warn := tlsWarnings(rep.Nodes, timeNow()); len(warn) > 0 {
		fmt.Fprintf(w, "\nTLS:\n  %s\n", strings.Join(warn, "\n  "))
	}
	if !rep.answered() {
		return nil
	}
	fmt.Fprintln(w)
	switch {
	case rep.LimitsError != "":
		_, err := fmt.Fprintf(w, "limits: not available: %s\n", rep.LimitsError)
		return err
	case len(rep.Limits) == 0:
		_, err := fmt.Fprintln(w, "no limits")
		return err
	}
	rows = rows[:0]
	for _, l := range rep.Limits {
		rows = append(rows, []string{l.Name, fmt.Sprint(l.Rate), l.Period, fmt.Sprint(l.Burst), fmt.Sprint(l.Buckets)})
	}
	return writeTable(w, []string{"LIMIT", "RATE", "PER", "BURST", "BUCKETS"}, rows)
}
