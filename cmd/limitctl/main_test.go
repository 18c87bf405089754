package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/api/limiterpb"
	"github.com/limiterd/limiter/client"
)

// runCLI runs limitctl with args and returns its exit status, stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// firstLine returns s up to its first newline.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// TestUsageErrors_ExitOneWithMessageAndUsage checks that bad flags, arguments and commands exit 1 with one
// "limitctl: ..." line followed by the usage, before any node is contacted.
func TestUsageErrors_ExitOneWithMessageAndUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // the first line of stderr
	}{
		{"missing --rate", []string{"limit", "set", "api", "--per", "1m"}, `limitctl: required flag(s) "rate" not set`},
		{"missing --rate and --per", []string{"limit", "set", "api"}, `limitctl: required flag(s) "per", "rate" not set`},
		{"bad --per", []string{"limit", "set", "api", "--rate", "5", "--per", "soon"}, `limitctl: invalid argument "soon" for "--per" flag: invalid duration "soon" (e.g. 1s, 1m, 1h, 1d, 1w)`},
		{"--addr without a port", []string{"status", "--addr", "db1.internal"}, `limitctl: --addr: "db1.internal" is not host:port (limiterd serves gRPC on 7400 unless told otherwise, e.g. db1.internal:7400)`},
		{"missing NAME", []string{"limit", "set", "--rate", "5", "--per", "1m"}, `limitctl: missing NAME`},
		{"missing KEY", []string{"take", "api"}, `limitctl: missing KEY`},
		{"extra argument", []string{"limit", "get", "a", "b"}, `limitctl: unexpected argument "b"`},
		{"unknown flag", []string{"take", "api", "k", "--bogus"}, `limitctl: unknown flag: --bogus`},
		{"bad --output", []string{"limit", "list", "-o", "yaml"}, `limitctl: invalid --output "yaml": want text or json`},
		{"bad --timeout", []string{"status", "--timeout", "0s"}, `limitctl: invalid --timeout 0s: must be positive`},
		{"bad --consistency", []string{"peek", "api", "k", "--consistency", "eventual"}, `limitctl: invalid --consistency "eventual": want linearizable or stale`},
		{"empty --addr", []string{"status", "--addr", " , "}, `limitctl: no node addresses in --addr`},
		{"unknown command", []string{"limt", "list"}, `limitctl: unknown command "limt" for "limitctl"; did you mean "limit"?`},
		{"unknown subcommand", []string{"member", "rm", "n1"}, `limitctl: unknown command "rm" for "limitctl member"`},
		{"missing subcommand", []string{"leader"}, `limitctl: limitctl leader needs a subcommand`},
		{"no command", nil, `limitctl: limitctl needs a subcommand`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tt.args...)
			if code != 1 {
				t.Errorf("exit status = %d, want 1", code)
			}
			if got := firstLine(stderr); got != tt.want {
				t.Errorf("first line of stderr = %q, want %q", got, tt.want)
			}
			if !strings.Contains(stderr, "\nUsage:\n") {
				t.Errorf("stderr lacks the usage:\n%s", stderr)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
		})
	}
}

// TestHelp_GoesToStdoutAndDocumentsExitStatus checks that help exits 0 on stdout and documents the exit
// statuses.
func TestHelp_GoesToStdoutAndDocumentsExitStatus(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"take", "--help"}, {"help", "peek"}} {
		code, stdout, stderr := runCLI(t, args...)
		if code != 0 || stderr != "" {
			t.Errorf("%v: exit %d, stderr %q; want 0 and nothing", args, code, stderr)
		}
		if !strings.Contains(stdout, "Exit status:") || !strings.Contains(stdout, "2  ") {
			t.Errorf("%v: help does not document the exit statuses:\n%s", args, stdout)
		}
	}
}

// TestResolveAddrs checks the precedence --addr, LIMITCTL_ADDR, default, and the list cleanup.
func TestResolveAddrs(t *testing.T) {
	def := "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403"
	tests := []struct {
		name    string
		flag    string
		flagSet bool
		env     string
		want    []string
		wantErr bool
	}{
		{"default", def, false, "", []string{"127.0.0.1:7401", "127.0.0.1:7402", "127.0.0.1:7403"}, false},
		{"env when flag not given", def, false, "10.0.0.1:7401, 10.0.0.2:7401", []string{"10.0.0.1:7401", "10.0.0.2:7401"}, false},
		{"blank env ignored", def, false, "  ", []string{"127.0.0.1:7401", "127.0.0.1:7402", "127.0.0.1:7403"}, false},
		{"flag wins over env", "h:1", true, "10.0.0.1:7401", []string{"h:1"}, false},
		{"blanks and duplicates dropped", " a:1 ,,a:1, b:2 ", true, "", []string{"a:1", "b:2"}, false},
		{"empty flag", " , ", true, "x:1", nil, true},
		{"no port", "a:1,b", true, "", nil, true},
		{"no port in env", def, false, "10.0.0.1", nil, true},
		{"IPv6 with port", "[::1]:7401", true, "", []string{"[::1]:7401"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolveAddrs(tt.flag, tt.flagSet, tt.env)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("addrs = %q, want %q", got, tt.want)
			}
		})
	}
}

// statusAddrs runs `status -o json` with args and returns the addresses the report lists.
func statusAddrs(t *testing.T, args ...string) []string {
	t.Helper()
	code, stdout, _ := runCLI(t, append([]string{"status", "-o", "json", "--timeout", "2s"}, args...)...)
	if code != 1 {
		t.Errorf("exit status = %d, want 1 (nothing listens there)", code)
	}
	var rep statusReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("stdout is not a status report: %v\n%s", err, stdout)
	}
	var addrs []string
	for _, n := range rep.Nodes {
		addrs = append(addrs, n.Address)
	}
	return addrs
}

// TestAddr_LIMITCTL_ADDRHonouredUnlessFlagGiven checks through the command that LIMITCTL_ADDR picks the nodes
// asked, and that --addr overrides it.
func TestAddr_LIMITCTL_ADDRHonouredUnlessFlagGiven(t *testing.T) {
	t.Setenv(addrEnv, "127.0.0.1:1, 127.0.0.1:2")
	if got, want := statusAddrs(t), []string{"127.0.0.1:1", "127.0.0.1:2"}; !slices.Equal(got, want) {
		t.Errorf("with %s: addresses = %q, want %q", addrEnv, got, want)
	}
	if got, want := statusAddrs(t, "--addr", "127.0.0.1:3"), []string{"127.0.0.1:3"}; !slices.Equal(got, want) {
		t.Errorf("with --addr: addresses = %q, want %q", got, want)
	}
}

// TestUnreachable_ExitsOneWithOneErrorLineWithinTimeout checks that a cluster nobody listens on fails
// within --timeout with exit 1 and one readable error line.
func TestUnreachable_ExitsOneWithOneErrorLineWithinTimeout(t *testing.T) {
	for _, args := range [][]string{
		{"limit", "list"},
		{"take", "api", "user:1"},
		{"status"},
	} {
		start := time.Now()
		code, _, stderr := runCLI(t, append(args, "--addr", "127.0.0.1:1", "--timeout", "2s")...)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%v took %s with --timeout 2s", args, d)
		}
		if code != 1 {
			t.Errorf("%v: exit status = %d, want 1", args, code)
		}
		if !strings.HasPrefix(stderr, "limitctl: ") || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%v: stderr = %q, want one line starting with \"limitctl: \"", args, stderr)
		}
		if strings.Contains(stderr, "rpc error") {
			t.Errorf("%v: stderr = %q, want the gRPC status unwrapped", args, stderr)
		}
	}
}

// TestExitCode checks the mapping of outcomes to exit statuses.
func TestExitCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errDenied, 2},
		{fmt.Errorf("wrapped: %w", errDenied), 2},
		{errors.New("boom"), 1},
		{status.Error(codes.NotFound, "unknown limit"), 1},
		{usagef("missing NAME"), 1},
		{context.DeadlineExceeded, 1},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

// TestErrorMessage_ShowsStatusMessageAndCodeName checks that gRPC errors print as "<message> (<Code>)",
// wrapped, flattened or timed out.
func TestErrorMessage_ShowsStatusMessageAndCodeName(t *testing.T) {
	notFound := status.Error(codes.NotFound, `limit "x" not found`)
	unavailable := status.Error(codes.Unavailable, "connection refused")
	tests := []struct {
		err  error
		want string
	}{
		{notFound, `limit "x" not found (NotFound)`},
		{&client.CallError{Attempts: 3, Last: unavailable}, "gave up after 3 attempts: connection refused (Unavailable)"},
		{fmt.Errorf("status of n1: %w", &client.CallError{Attempts: 3, Last: unavailable}), "status of n1: gave up after 3 attempts: connection refused (Unavailable)"},
		{&client.CallError{Ctx: context.DeadlineExceeded, Last: unavailable}, "context deadline exceeded; last error: connection refused (Unavailable)"},
		{&timeoutError{2 * time.Second, &client.CallError{Ctx: context.DeadlineExceeded, Last: unavailable}}, "timed out after 2s (--timeout): last error: connection refused (Unavailable)"},
		{fmt.Errorf("set limit: %w", notFound), `set limit: limit "x" not found (NotFound)`},
		{&timeoutError{2 * time.Second, status.Error(codes.DeadlineExceeded, "context deadline exceeded")}, "timed out after 2s (--timeout)"},
		{errors.New("plain"), "plain"},
	}
	for _, tt := range tests {
		if got := errorMessage(tt.err); got != tt.want {
			t.Errorf("errorMessage(%v) =\n  %q, want\n  %q", tt.err, got, tt.want)
		}
	}
}

// TestDecisionText checks the one-line text of takes and peeks.
func TestDecisionText(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"allowed take", takeText(client.TakeResult{Decision: client.Decision{Allowed: true, Remaining: 4, Limit: 5, ResetAfter: 12 * time.Second}}),
			"allowed  remaining=4/5  reset_after=12s"},
		{"denied take", takeText(client.TakeResult{Decision: client.Decision{Remaining: 0, Limit: 5, RetryAfter: 11999 * time.Millisecond, ResetAfter: time.Minute}}),
			"denied  remaining=0/5  retry_after=11.999s"},
		{"never", takeText(client.TakeResult{Decision: client.Decision{Limit: 5, RetryAfter: client.Never}}),
			"denied  remaining=0/5  retry_after=never"},
		{"replayed take", takeText(client.TakeResult{Decision: client.Decision{Allowed: true, Remaining: 1, Limit: 2, ResetAfter: 1500 * time.Microsecond}, Replayed: true, RequestID: "r1"}),
			"allowed  remaining=1/2  reset_after=2ms  replayed request_id=r1"},
		{"stale peek", peekText(client.Decision{Allowed: true, Remaining: 5, Limit: 5}, 40*time.Millisecond, true),
			"allowed  remaining=5/5  reset_after=0s  staleness=40ms"},
		{"linearizable peek", peekText(client.Decision{Remaining: 0, Limit: 5, RetryAfter: 300 * time.Microsecond}, 0, false),
			"denied  remaining=0/5  retry_after=300µs"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

// TestDecisionJSON_StableSnakeCaseFields checks the JSON field names, order and units of takes and
// peeks.
func TestDecisionJSON_StableSnakeCaseFields(t *testing.T) {
	compact := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	take := takeJSONOf(client.TakeResult{
		Decision:  client.Decision{Allowed: false, Remaining: 0, Limit: 5, RetryAfter: 11999500 * time.Microsecond, ResetAfter: time.Minute},
		RequestID: "r1", Replayed: true,
	})
	if got, want := compact(take), `{"allowed":false,"remaining":0,"limit":5,"retry_after_ms":11999.5,"reset_after_ms":60000,"request_id":"r1","replayed":true}`; got != want {
		t.Errorf("take JSON =\n  %s, want\n  %s", got, want)
	}
	never := takeJSONOf(client.TakeResult{Decision: client.Decision{Limit: 5, RetryAfter: client.Never}, RequestID: "r2"})
	if got, want := compact(never), `{"allowed":false,"remaining":0,"limit":5,"retry_after_ms":-1,"reset_after_ms":0,"request_id":"r2","replayed":false}`; got != want {
		t.Errorf("never take JSON =\n  %s, want\n  %s", got, want)
	}
	peek := peekJSONOf(client.Decision{Allowed: true, Remaining: 3, Limit: 5, ResetAfter: 24 * time.Second}, 15*time.Millisecond, "stale")
	if got, want := compact(peek), `{"allowed":true,"remaining":3,"limit":5,"retry_after_ms":0,"reset_after_ms":24000,"consistency":"stale","staleness_ms":15}`; got != want {
		t.Errorf("peek JSON =\n  %s, want\n  %s", got, want)
	}
}

// TestLimitFormatting checks a limit's JSON, its table row and period formatting.
func TestLimitFormatting(t *testing.T) {
	li := &limiterpb.LimitInfo{Name: "api", Rate: 100, PeriodNanos: int64(time.Minute), Burst: 150, Buckets: 3}
	b, _ := json.Marshal(limitJSONOf(li))
	if got, want := string(b), `{"name":"api","rate":100,"period":"1m","period_ms":60000,"burst":150,"buckets":3,"admission":"linearizable"}`; got != want {
		t.Errorf("limit JSON = %s, want %s", got, want)
	}
	if b, _ := json.Marshal(limitsJSONOf(nil)); string(b) != "[]" {
		t.Errorf("no limits = %s, want []", b)
	}
	var buf bytes.Buffer
	if err := writeLimitsTable(&buf, []*limiterpb.LimitInfo{li}); err != nil {
		t.Fatal(err)
	}
	if got, want := buf.String(), "NAME  RATE  PER  BURST  ADMISSION     BUCKETS\napi   100   1m   150    linearizable  3\n"; got != want {
		t.Errorf("table =\n%s\nwant\n%s", got, want)
	}
	local := &limiterpb.LimitInfo{Name: "pay", Rate: 10, PeriodNanos: int64(time.Second), Burst: 10, Admission: "local", GrantTtlNanos: int64(2 * time.Second),
		Grants: []*limiterpb.Grant{{Holder: "n2", Tokens: 3, Live: true}, {Holder: "n1", Tokens: 4, Live: true}, {Holder: "n2", Tokens: 2, Live: true}, {Holder: "n3", Tokens: 9}}}
	b, _ = json.Marshal(limitJSONOf(local))
	if got, want := string(b), `{"name":"pay","rate":10,"period":"1s","period_ms":1000,"burst":10,"buckets":0,"admission":"local","grant_ttl":"2s","escrow":[{"holder":"n1","grants":1,"tokens":4},{"holder":"n2","grants":2,"tokens":5}]}`; got != want {
		t.Errorf("local limit JSON = %s, want %s", got, want)
	}
	buf.Reset()
	if err := writeLimitsTable(&buf, []*limiterpb.LimitInfo{local}); err != nil {
		t.Fatal(err)
	}
	if got, want := buf.String(), "NAME  RATE  PER  BURST  ADMISSION             BUCKETS\npay   10    1s   10     local (grant ttl 2s)  0\n\nHOLDER  GRANTS  TOKENS IN ESCROW\nn1      1       4\nn2      2       5\n"; got != want {
		t.Errorf("local table =\n%s\nwant\n%s", got, want)
	}
	for d, want := range map[time.Duration]string{time.Second: "1s", time.Minute: "1m", time.Hour: "1h", 90 * time.Minute: "1h30m", 1500 * time.Millisecond: "1.5s"} {
		if got := period(d); got != want {
			t.Errorf("period(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestBuildStatusReport_LagAgainstLeaderAndUnreachableRows checks the status rows: lag against the
// leader's last index, unreachable nodes, and the text table.
func TestBuildStatusReport_LagAgainstLeaderAndUnreachableRows(t *testing.T) {
	addrs := []string{"a:1", "b:1", "c:1"}
	resps := []*limiterpb.StatusResponse{
		{NodeId: "n1", State: "Leader", Term: 3, LeaderId: "n1", LastLogIndex: 20, AppliedIndex: 20, CommitIndex: 20},
		{NodeId: "n2", State: "Follower", Term: 3, LeaderId: "n1", LastLogIndex: 20, AppliedIndex: 17, CommitIndex: 18},
		nil,
	}
	errs := []error{nil, nil, fmt.Errorf("status of c:1: %w", status.Error(codes.Unavailable, "connection refused"))}
	rep := buildStatusReport(addrs, resps, errs)
	if !rep.answered() {
		t.Fatal("answered() = false with two answers")
	}
	if n := rep.Nodes[1]; n.Lag == nil || *n.Lag != 3 {
		t.Errorf("follower lag = %v, want 3", n.Lag)
	}
	if n := rep.Nodes[2]; n.Reachable || n.Error != "connection refused (Unavailable)" || n.Address != "c:1" {
		t.Errorf("unreachable row = %+v", n)
	}
	var buf bytes.Buffer
	if err := writeStatusText(&buf, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"n2    b:1      Follower     3     n1      18      17       20    3", "c:1      unreachable", "c:1: connection refused (Unavailable)", "no limits"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("status text lacks %q:\n%s", want, buf.String())
		}
	}

	noLeader := buildStatusReport(addrs[1:2], resps[1:2], errs[1:2])
	if noLeader.Nodes[0].Lag != nil {
		t.Errorf("lag without a leader = %d, want unknown", *noLeader.Nodes[0].Lag)
	}
	none := buildStatusReport(addrs[2:], resps[2:], errs[2:])
	if none.answered() {
		t.Error("answered() = true with no answer")
	}
}

// fakeLimiter is a gRPC server standing in for a limiterd node: keys named "deny*" are denied,
// other keys allowed, and every admin call but ListLimits answers NotFound.
type fakeLimiter struct {
	limiterpb.UnimplementedRateLimiterServer
	limiterpb.UnimplementedAdminServer
}

// Take answers a decision that depends on the key.
func (fakeLimiter) Take(_ context.Context, req *limiterpb.TakeRequest) (*limiterpb.TakeResponse, error) {
	if strings.HasPrefix(req.GetKey(), "fail") {
		return nil, status.Errorf(codes.FailedPrecondition, "the fake refuses %q", req.GetKey())
	}
	if strings.HasPrefix(req.GetKey(), "busy") {
		return nil, status.Errorf(codes.Unavailable, "the fake is busy")
	}
	d := &limiterpb.Decision{Allowed: true, Remaining: 4, Limit: 5, ResetAfterNanos: int64(12 * time.Second)}
	if strings.HasPrefix(req.GetKey(), "deny") {
		d = &limiterpb.Decision{Remaining: 0, Limit: 5, RetryAfterNanos: int64(11999 * time.Millisecond), ResetAfterNanos: int64(time.Minute)}
	}
	return &limiterpb.TakeResponse{Decision: d, RequestId: req.GetRequestId()}, nil
}

// TakeMany allows every item but those whose key starts with "deny".
func (fakeLimiter) TakeMany(_ context.Context, req *limiterpb.TakeManyRequest) (*limiterpb.TakeManyResponse, error) {
	resp := &limiterpb.TakeManyResponse{}
	for _, it := range req.GetItems() {
		d := &limiterpb.Decision{Allowed: true, Remaining: 5 - it.GetCost(), Limit: 5, ResetAfterNanos: int64(time.Second)}
		if strings.HasPrefix(it.GetKey(), "deny") {
			d = &limiterpb.Decision{Limit: 5, RetryAfterNanos: int64(time.Second), ResetAfterNanos: int64(time.Minute)}
		}
		resp.Decisions = append(resp.Decisions, d)
	}
	return resp, nil
}

// Peek always answers not allowed.
func (fakeLimiter) Peek(context.Context, *limiterpb.PeekRequest) (*limiterpb.PeekResponse, error) {
	return &limiterpb.PeekResponse{Decision: &limiterpb.Decision{Limit: 5, RetryAfterNanos: -1}}, nil
}

// GetLimit answers NotFound, as limiterd does for an unknown limit.
func (fakeLimiter) GetLimit(_ context.Context, req *limiterpb.GetLimitRequest) (*limiterpb.LimitInfo, error) {
	return nil, status.Errorf(codes.NotFound, "unknown limit: %q", req.GetName())
}

// mustServeFake starts a fakeLimiter on a loopback port and returns its address.
func mustServeFake(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	limiterpb.RegisterRateLimiterServer(g, fakeLimiter{})
	limiterpb.RegisterAdminServer(g, fakeLimiter{})
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

// TestTake_ExitStatusAgainstFakeNode checks exit statuses and output end to end against a fake node:
// allowed take 0, denied take 2 with nothing on stderr, not-allowed peek 0, NotFound 1.
func TestTake_ExitStatusAgainstFakeNode(t *testing.T) {
	addr := mustServeFake(t)

	code, stdout, stderr := runCLI(t, "--addr", addr, "take", "api", "user:1")
	if code != 0 || stdout != "allowed  remaining=4/5  reset_after=12s\n" || stderr != "" {
		t.Errorf("allowed take: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	code, stdout, stderr = runCLI(t, "--addr", addr, "take", "api", "deny:1", "-o", "json", "--request-id", "r1")
	if code != 2 || stderr != "" {
		t.Errorf("denied take: exit %d, stderr %q; want 2 and nothing", code, stderr)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("denied take: stdout is not JSON: %v\n%s", err, stdout)
	}
	if got["allowed"] != false || got["retry_after_ms"] != 11999.0 || got["request_id"] != "r1" || got["replayed"] != false {
		t.Errorf("denied take JSON = %v", got)
	}

	// A refusal applied nothing: no retry hint. An answer that never came may have applied it:
	// name the request ID to retry with.
	code, stdout, stderr = runCLI(t, "--addr", addr, "take", "api", "fail:1", "--request-id", "order-77")
	if code != 1 || stdout != "" || strings.Contains(stderr, "request_id") || !strings.Contains(stderr, "(FailedPrecondition)") {
		t.Errorf("refused take: exit %d, stdout %q, stderr %q; want 1 and the code, no retry hint", code, stdout, stderr)
	}
	code, stdout, stderr = runCLI(t, "--addr", addr, "--timeout", "300ms", "take", "api", "busy:1", "--request-id", "order-78")
	if code != 1 || stdout != "" || !strings.Contains(stderr, "retry with --request-id order-78") {
		t.Errorf("unanswered take: exit %d, stdout %q, stderr %q; want 1 and the retry hint", code, stdout, stderr)
	}
	code, _, stderr = runCLI(t, "--addr", addr, "take", "api", "user:1", "--cost", "0")
	if code != 1 || !strings.Contains(stderr, "--cost 0") {
		t.Errorf("take --cost 0: exit %d, stderr %q; want 1 naming the flag", code, stderr)
	}

	code, stdout, stderr = runCLI(t, "--addr", addr, "peek", "api", "deny:1")
	if code != 0 || stdout != "denied  remaining=0/5  retry_after=never\n" || stderr != "" {
		t.Errorf("peek not allowed: exit %d, stdout %q, stderr %q; want 0", code, stdout, stderr)
	}

	code, stdout, stderr = runCLI(t, "--addr", addr, "limit", "get", "x")
	if code != 1 || stdout != "" || stderr != "limitctl: unknown limit: \"x\" (NotFound)\n" {
		t.Errorf("NotFound: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// Under -o json an error is one JSON object too.
	code, stdout, stderr = runCLI(t, "--addr", addr, "limit", "get", "x", "-o", "json")
	var e struct{ Error, Code string }
	if err := json.Unmarshal([]byte(stderr), &e); code != 1 || stdout != "" || err != nil || e.Code != "NotFound" || !strings.Contains(e.Error, `unknown limit: "x"`) {
		t.Errorf("NotFound -o json: exit %d, stdout %q, stderr %q (%v)", code, stdout, stderr, err)
	}
}

// status exits 1 without a leader and says what each node reports.
func TestStatus_NoLeaderIsAnErrorSayingWhatEachNodeReports(t *testing.T) {
	rep := statusReport{Nodes: []nodeStatus{
		{Address: "a:1", Reachable: true, NodeID: "n1", State: "Follower", Term: 7},
		{Address: "b:1", Reachable: true, NodeID: "n2", State: "Candidate", Term: 9},
		{Address: "c:1"},
	}}
	err := rep.leaderError()
	if err == nil {
		t.Fatal("no leader, no error")
	}
	for _, want := range []string{"no leader", "n1 is a Follower (term 7) and knows no leader", "n2 is a Candidate (term 9)", "c:1 unreachable"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
	if exitCode(err) != 1 {
		t.Errorf("exit %d, want 1", exitCode(err))
	}
	rep.Nodes[2] = nodeStatus{Address: "c:1", Reachable: true, NodeID: "n3", State: "Leader", Term: 9}
	if err := rep.leaderError(); err != nil {
		t.Errorf("with a leader: %v", err)
	}
}

func TestTakeMany_ItemsCostsAndExitStatusAgainstFakeNode(t *testing.T) {
	addr := mustServeFake(t)
	code, stdout, stderr := runCLI(t, "--addr", addr, "take-many", "api", "user:1", "login", "ip:7", "--costs", "2,1")
	if code != 0 || stderr != "" || stdout != "api user:1  allowed  remaining=3/5  reset_after=1s\nlogin ip:7  allowed  remaining=4/5  reset_after=1s\n" {
		t.Errorf("allowed: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, "--addr", addr, "take-many", "api", "user:1", "api", "deny:1", "-o", "json", "--request-id", "tm-1")
	var got takeManyJSON
	if err := json.Unmarshal([]byte(stdout), &got); code != 2 || err != nil || got.RequestID != "tm-1" || len(got.Items) != 2 ||
		!got.Items[0].Allowed || got.Items[1].Allowed || got.Items[1].Key != "deny:1" {
		t.Errorf("one denied: exit %d (want 2), %+v %v\n%s", code, got, err, stdout)
	}
	for _, bad := range [][]string{{"take-many", "api"}, {"take-many", "api", "k", "--costs", "1,2"}, {"take-many", "api", "k", "--costs", "0"}} {
		if code, _, stderr := runCLI(t, append([]string{"--addr", addr}, bad...)...); code != 1 || !strings.HasPrefix(stderr, "limitctl: ") {
			t.Errorf("%v: exit %d, stderr %q; want a usage error", bad, code, stderr)
		}
	}
}

// status --watch reports again every interval until the command's context ends (Ctrl-C), and a
// round without a leader is reported on stderr without ending the watch.
func TestStatus_WatchRepeatsUntilCancelled(t *testing.T) {
	addr := mustServeFake(t) // it has no Status: every round finds no node answering
	ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"--addr", addr, "--timeout", "300ms", "status", "--watch", "200ms", "-o", "json"}, &stdout, &stderr)
	rounds := strings.Count(stdout.String(), `"nodes"`)
	if code != 0 || rounds < 3 || !strings.Contains(stderr.String(), "no node answered") {
		t.Fatalf("exit %d after %d rounds; stderr %q", code, rounds, stderr.String())
	}
	if code, _, stderr := runCLI(t, "--addr", addr, "status", "--watch", "10ms"); code != 1 || !strings.Contains(stderr, "--watch") {
		t.Fatalf("--watch 10ms: exit %d, %q", code, stderr)
	}
}

// Shell completion scripts come from the CLI itself.
func TestCompletion_ScriptsForEveryShell(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		code, stdout, stderr := runCLI(t, "completion", sh)
		if code != 0 || !strings.Contains(stdout, "limitctl") || stderr != "" {
			t.Errorf("completion %s: exit %d, stderr %q, %d bytes", sh, code, stderr, len(stdout))
		}
	}
}

// status warns about a certificate that expires within 14 days, an expired one, and a broken
// rotation; a certificate with longer to live is not mentioned.
func TestStatus_TLSWarnings(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	nodes := []nodeStatus{
		{Reachable: true, NodeID: "n1", TLSCertExpires: now.Add(9*24*time.Hour + 4*time.Hour).Format(time.RFC3339)},
		{Reachable: true, NodeID: "n2", TLSCertExpires: now.Add(90 * 24 * time.Hour).Format(time.RFC3339), TLSReloadError: "tls: load certificate x: bad PEM"},
		{Reachable: true, NodeID: "n3", TLSCertExpires: now.Add(-time.Hour).Format(time.RFC3339)},
		{Reachable: true, NodeID: "n4"}, // plaintext
	}
	got := strings.Join(tlsWarnings(nodes, now), "\n")
	for _, want := range []string{"n1: its certificate expires in 9d4h", "n2: reloading its TLS files failed", "n3: its certificate EXPIRED"} {
		if !strings.Contains(got, want) {
			t.Errorf("warnings %q do not say %q", got, want)
		}
	}
	if strings.Contains(got, "n2: its certificate") || strings.Contains(got, "n4") {
		t.Errorf("warnings %q mention a certificate with months to live or a plaintext node", got)
	}
}

func TestVersionsText(t *testing.T) {
	n := func(id, v string) nodeStatus { return nodeStatus{NodeID: id, Reachable: true, Version: v} }
	if got := versionsText([]nodeStatus{n("n1", "v1"), n("n2", "v1"), {Address: "x"}}); got != "version: v1 (every node)" {
		t.Errorf("one version: %q", got)
	}
	if got := versionsText([]nodeStatus{n("n1", "v1"), n("n2", "v2"), n("n3", "")}); got != "versions differ: n1 v1, n2 v2, n3 -" {
		t.Errorf("a rolling upgrade: %q", got)
	}
	if got := versionsText([]nodeStatus{n("n1", "")}); got != "" {
		t.Errorf("no version reported: %q", got)
	}
}
