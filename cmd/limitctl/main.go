// Command limitctl is the command-line client of limiterd, the Raft-replicated rate limiter.
// It wraps the Go client in package client: flag parsing, wiring and formatting only.
//
// Usage:
//
//	limitctl [--addr A,B,C] [--timeout 10s] [-o text|json] COMMAND ...
//
// Commands:
//
//	limit set NAME --rate N --per DURATION [--burst N] [--admission local [--grant-ttl D]]
//	limit get NAME                                       show one limit
//	limit list                                           show every limit
//	limit delete NAME                                    delete a limit and its buckets
//	take LIMIT KEY [--cost N] [--request-id ID]          consume tokens (exactly once per request ID)
//	take-many LIMIT KEY [LIMIT KEY ...] [--costs N,...]   several buckets in one call and one log entry
//	peek LIMIT KEY [--cost N] [--consistency linearizable|stale]
//	                                                     show a bucket without consuming
//	member list                                          show the cluster's members
//	member add ID RAFT_ADDR [--api-addr ADDR]            add a voting member
//	member remove ID                                     remove a member
//	leader transfer [ID]                                 hand leadership to ID or to any voter
//	status                                               ask every node for its own view
//
// Global flags: --addr lists the nodes' API addresses, comma-separated; without the flag the
// LIMITCTL_ADDR environment variable is used, and without that the three addresses of
// `limiterd dev` (127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403). --timeout bounds the whole
// command, retries included. -o/--output selects text (for people) or json (one JSON object or
// array on stdout, lower_snake_case field names).
//
// Exit status:
//
//	0  success, including an allowed take and a peek whatever it says
//	1  any error: bad flags or arguments, no node reachable, NotFound, InvalidArgument, ...
//	2  take was denied (the decision is still printed on stdout)
//
// Errors are printed as one line on stderr, "limitctl: <message>"; for gRPC errors the message
// ends with the status code name, e.g. `limitctl: unknown limit: "x" (NotFound)`. Usage errors
// (unknown flags or commands, missing arguments) are followed by the command's usage.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/certs"
	"github.com/limiterd/limiter/client"
	"github.com/limiterd/limiter/internal/cli"
	"github.com/limiterd/limiter/internal/version"
)

// defaultAddrs are the API addresses of the three nodes that `limiterd dev` starts.
const defaultAddrs = "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403"

// addrEnv is the environment variable that replaces the default --addr.
const addrEnv = "LIMITCTL_ADDR"

// Exit statuses; see the package documentation.
const (
	exitOK     = 0
	exitError  = 1
	exitDenied = 2
)

// exitStatusHelp is the exit-status section shared by the long help of the commands.
const exitStatusHelp = `Exit status:
  0  success (including an allowed take, and a peek whatever it says)
  1  any error: bad flags or arguments, no node reachable, NotFound, InvalidArgument, ...
  2  the take was denied (take only; the decision is still printed on stdout)`

// errDenied is returned by the take command when the take was denied. It maps to exit status
// 2 and prints nothing on stderr: the decision itself was already printed on stdout.
var errDenied = errors.New("take denied")

// usageError marks an error in how limitctl was invoked (flags, arguments, unknown command).
// It exits 1 like any error, but is followed by the command's usage on stderr.
type usageError struct{ err error }

// Error returns the wrapped error's message.
func (e usageError) Error() string { return e.err.Error() }

// Unwrap returns the wrapped error.
func (e usageError) Unwrap() error { return e.err }

// usagef returns a usageError with a formatted message.
func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// timeoutError is a command that ran out of --timeout; err is the last error seen.
type timeoutError struct {
	timeout time.Duration
	err     error
}

// Error says the command timed out, followed by the last error when there is one worth showing.
func (e *timeoutError) Error() string {
	msg := errorMessage(e.err)
	msg = strings.TrimPrefix(msg, "context deadline exceeded")
	msg = strings.TrimPrefix(msg, " (DeadlineExceeded)")
	msg = strings.TrimPrefix(msg, "; ")
	if msg == "" {
		return fmt.Sprintf("timed out after %s (--timeout)", e.timeout)
	}
	return fmt.Sprintf("timed out after %s (--timeout): %s", e.timeout, msg)
}

// Unwrap returns the last error seen.
func (e *timeoutError) Unwrap() error { return e.err }

// main runs limitctl and exits with the status that exitCode gives for its outcome.
func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes limitctl with args, prints the error line (and the usage, for usage errors) on
// stderr, and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	if args == nil {
		args = []string{} // nil would make cobra read os.Args
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err != nil && !errors.Is(err, errDenied) {
		if o := root.PersistentFlags().Lookup("output"); o != nil && o.Value.String() == "json" && !isUsageError(err) {
			// One JSON object on stderr, so a script reading -o json never has to parse prose.
			code := ""
			if st, ok := status.FromError(err); ok {
				code = st.Code().String()
			}
			b, _ := json.Marshal(struct {
				Error string `json:"error"`
				Code  string `json:"code,omitempty"`
			}{errorMessage(err), code})
			fmt.Fprintf(stderr, "%s\n", b)
			return exitCode(err)
		}
		fmt.Fprintf(stderr, "limitctl: %s\n", errorMessage(err))
		if isUsageError(err) && cmd != nil {
			fmt.Fprintf(stderr, "\n%s", cmd.UsageString())
		}
	}
	return exitCode(err)
}

// exitCode maps the outcome of a command to the process's exit status: 0 for success, 2 for a
// denied take (errDenied), 1 for any other error.
func exitCode(err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errDenied):
		return exitDenied
	default:
		return exitError
	}
}

// isUsageError reports whether err is about how limitctl was invoked rather than about what
// happened when it ran: a usageError, or an unknown command that cobra reports itself.
func isUsageError(err error) bool {
	var ue usageError
	return errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command ")
}

// errorMessage turns err into the one-line message printed after "limitctl: ". gRPC status
// errors become "<status message> (<code name>)" instead of "rpc error: code = ... desc = ...",
// also inside the client's CallError; the client's "client: " prefix is dropped and the message is
// kept on one line.
func errorMessage(err error) string {
	if err == nil {
		return ""
	}
	var msg string
	var te *timeoutError
	var ce *client.CallError
	switch {
	case errors.As(err, &te):
		msg = te.Error() // formats its own last error
	case errors.As(err, &ce):
		msg = strings.Replace(err.Error(), ce.Error(), callText(ce), 1) // keep any wrapping text
	default:
		msg = statusText(err)
	}
	msg = strings.ReplaceAll(msg, "\n", " ")
	return strings.TrimPrefix(msg, "client: ")
}

// callText is a CallError as "<why it ended>: <last error as statusText>".
func callText(ce *client.CallError) string {
	var msg string
	if ce.Ctx != nil {
		msg = ce.Ctx.Error()
		if ce.Last != nil {
			msg += "; last error: " + statusText(ce.Last)
		}
	} else {
		msg = fmt.Sprintf("gave up after %d attempts", ce.Attempts)
		if ce.Hint != "" {
			msg += " (" + ce.Hint + ")"
		}
		if ce.Last != nil {
			msg += ": " + statusText(ce.Last)
		}
	}
	return msg
}

// statusText is err's text with a gRPC status in it written "<message> (<code name>)".
func statusText(err error) string {
	msg := err.Error()
	var gs interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &gs) {
		return msg
	}
	st := gs.GRPCStatus()
	pretty := st.Message() + " (" + st.Code().String() + ")"
	if raw := st.Err().Error(); strings.Contains(msg, raw) {
		return strings.Replace(msg, raw, pretty, 1)
	}
	return pretty
}

// app holds the global flags and the output streams shared by every command.
type app struct {
	stdout, stderr io.Writer
	getenv         func(string) string

	addrFlag  string
	timeout   time.Duration
	output    string
	tls       certs.Files // --ca, --cert, --key
	tokenFile string
}

// newRootCmd builds the limitctl command tree, writing results to stdout and cobra's own
// messages (help aside, which goes to stdout) to stderr. Errors are returned, not printed: the
// caller prints them and maps them to an exit status with exitCode.
func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	a := &app{stdout: stdout, stderr: stderr, getenv: os.Getenv}
	root := &cobra.Command{
		Use:     "limitctl",
		Version: version.Get().String(),
		Short:   "Command-line client of limiterd, the Raft-replicated rate limiter",
		Long: `limitctl manages and uses a limiterd cluster: limits, takes and peeks, membership,
leadership, and the status of every node.

Node addresses come from --addr (comma-separated), else from the LIMITCTL_ADDR environment
variable, else the addresses of 'limiterd dev'. Calls go to the leader; followers redirect, and
unavailable nodes are retried until --timeout.

` + exitStatusHelp,
		SilenceUsage:      true, // run prints the usage itself, for usage errors only
		SilenceErrors:     true, // run prints errors as one "limitctl: ..." line
		Args:              cobra.ArbitraryArgs,
		RunE:              groupRunE,
		PersistentPreRunE: a.prepare,
		CompletionOptions: cobra.CompletionOptions{HiddenDefaultCmd: false},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	// Groups are runnable only to report unknown subcommands: show just their "[command]" line.
	root.SetUsageTemplate(strings.Replace(root.UsageTemplate(),
		"{{if .Runnable}}", "{{if and .Runnable (not .HasAvailableSubCommands)}}", 1))

	pf := root.PersistentFlags()
	pf.StringVar(&a.addrFlag, "addr", defaultAddrs, "node API addresses, comma-separated (when not given: $"+addrEnv+" if set, else this default)")
	pf.DurationVar(&a.timeout, "timeout", 10*time.Second, "time limit for the whole command, retries included")
	pf.StringVarP(&a.output, "output", "o", "text", "output format: text or json")
	pf.StringVar(&a.tls.CA, "ca", "", "connect over TLS, trusting this CA (PEM); env LIMITCTL_CA")
	pf.StringVar(&a.tls.Cert, "cert", "", "client certificate (PEM) for mutual TLS; env LIMITCTL_CERT")
	pf.StringVar(&a.tls.Key, "key", "", "key of --cert (PEM); env LIMITCTL_KEY")
	pf.StringVar(&a.tokenFile, "token-file", "", "send this file's admin token with admin calls; env LIMITCTL_TOKEN_FILE")

	root.AddCommand(a.limitCmd(), a.takeCmd(), a.takeManyCmd(), a.peekCmd(), a.memberCmd(), a.leaderCmd(), a.statusCmd(), a.healthCmd(), a.snapshotCmd())
	return root
}

// prepare validates the global flags and the command's required flags before any command
// runs. Its errors are usage errors.
func (a *app) prepare(cmd *cobra.Command, _ []string) error {
	if a.output != "text" && a.output != "json" {
		return usagef("invalid --output %q: want text or json", a.output)
	}
	if a.timeout <= 0 {
		return usagef("invalid --timeout %s: must be positive", a.timeout)
	}
	if err := cmd.ValidateRequiredFlags(); err != nil {
		return usageError{err}
	}
	return nil
}

// resolveAddrs returns the node addresses: those of the --addr flag when it was given
// (flagSet), else those of env (LIMITCTL_ADDR) when it is not blank, else the flag's default.
// Lists are comma-separated; blanks are trimmed and empty entries and duplicates dropped.
func resolveAddrs(flag string, flagSet bool, env string) ([]string, error) {
	return cli.ResolveAddrs(flag, flagSet, env, addrEnv)
}

// action is the body of a command: it runs under the --timeout deadline with a client for the
// resolved addresses.
type action func(ctx context.Context, c *client.Client, args []string) error

// run adapts an action to a cobra RunE: it resolves the node addresses, sets the deadline,
// creates and closes the client, and turns errors caused by running out of time into a
// timeoutError.
func (a *app) run(fn action) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		addrs, err := resolveAddrs(a.addrFlag, cmd.Flags().Changed("addr"), a.getenv(addrEnv))
		if err != nil {
			return usageError{err}
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout)
		defer cancel()
		opts := client.Options{RetryFor: a.timeout, AttemptTimeout: min(3*time.Second, a.timeout)}
		files := a.tls
		for env, v := range map[string]*string{"LIMITCTL_CA": &files.CA, "LIMITCTL_CERT": &files.Cert, "LIMITCTL_KEY": &files.Key} {
			if *v == "" {
				*v = a.getenv(env)
			}
		}
		if files.Enabled() {
			r, err := certs.NewReloader(files)
			if err != nil {
				return usageError{err}
			}
			opts.TLS = r.ClientConfig("")
		}
		tokenFile := a.tokenFile
		if tokenFile == "" {
			tokenFile = a.getenv("LIMITCTL_TOKEN_FILE")
		}
		if tokenFile != "" {
			b, err := os.ReadFile(tokenFile)
			if err != nil {
				return usageError{fmt.Errorf("--token-file: %w", err)}
			}
			opts.Token = cli.ParseToken(b)
			opts.AllowPlaintextToken = allLoopback(addrs) // a token never crosses a network in the clear
		}
		c, err := client.New(addrs, opts)
		if err != nil {
			return err
		}
		defer c.Close()
		err = fn(ctx, c, args)
		if err != nil && !errors.Is(err, errDenied) && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = &timeoutError{timeout: a.timeout, err: err}
		}
		return err
	}
}

// groupRunE is the RunE of commands that only group subcommands: invoked without a known
// subcommand, they fail with a usage error naming what was wrong.
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return usagef("%s needs a subcommand", cmd.CommandPath())
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %q?", s[0])
	}
	return usageError{errors.New(msg)}
}

// exactArgs requires one positional argument per name, naming the missing or extra ones.
func exactArgs(names ...string) cobra.PositionalArgs {
	return rangeArgs(len(names), names...)
}

// rangeArgs requires at least required positional arguments and at most len(names), naming
// the missing or extra ones.
func rangeArgs(required int, names ...string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) < required {
			return usagef("missing %s", strings.Join(names[len(args):required], " and "))
		}
		if len(args) > len(names) {
			return usagef("unexpected argument %q", args[len(names)])
		}
		return nil
	}
}

// allLoopback reports whether every address is on this machine.
func allLoopback(addrs []string) bool {
	for _, a := range addrs {
		if !cli.IsLoopback(a) {
			return false
		}
	}
	return true
}
