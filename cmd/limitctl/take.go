package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/client"
)

// takeCmd builds `take LIMIT KEY [--cost N] [--request-id ID]`.
func (a *app) takeCmd() *cobra.Command {
	var (
		cost      int64
		requestID string
	)
	cmd := &cobra.Command{
		Use:   "take LIMIT KEY [--cost N] [--request-id ID]",
		Short: "Consume tokens from a bucket",
		Long: `Consume --cost tokens from the bucket of KEY under the limit LIMIT, all or nothing, and
print the decision:

  allowed  remaining=4/5  reset_after=12s
  denied  remaining=0/5  retry_after=11.999s

A take is applied exactly once per request ID, also when the client retries it across a leader
change. Without --request-id a random one is used; pass your own to make a take you repeat
(e.g. after limitctl itself failed) count once. A repeated request ID answers with the recorded
decision, marked replayed.

With -o json: {"allowed", "remaining", "limit", "retry_after_ms", "reset_after_ms",
"request_id", "replayed"}; retry_after_ms is -1 when the cost is above the burst (never).

Exit status:
  0  the take was allowed
  1  any error: bad flags or arguments, no node reachable, NotFound, InvalidArgument, ...
  2  the take was denied (the decision is still printed on stdout, nothing on stderr)`,
		Example: `  limitctl take api user:42
  limitctl take api user:42 --cost 3 --request-id order-1234 -o json`,
		Args: exactArgs("LIMIT", "KEY"),
		RunE: a.run(func(ctx context.Context, c *client.Client, args []string) error {
			if cost <= 0 {
				return fmt.Errorf("--cost %d: must be at least 1", cost)
			}
			r, err := c.Take(ctx, args[0], args[1], cost, requestID)
			if err != nil {
				return takeError(err, r.RequestID)
			}
			if err := a.emit(takeJSONOf(r), func(w io.Writer) error {
				_, err := fmt.Fprintln(w, takeText(r))
				return err
			}); err != nil {
				return err
			}
			if !r.Allowed {
				return errDenied
			}
			return nil
		}),
	}
	cmd.Flags().Int64Var(&cost, "cost", 1, "tokens to consume")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key, up to 64 bytes (default: a random one)")
	return cmd
}

// takeError is a failed take's error. When the take may have been applied (a timeout is an
// unknown outcome) it names the request ID, so a retry with --request-id counts at most once;
// a refusal applied nothing and a retry would be refused too.
func takeError(err error, requestID string) error {
	if outcomeUnknown(err) {
		return fmt.Errorf("%w (request_id=%s: retry with --request-id %s to apply it at most once)", err, requestID, requestID)
	}
	return err
}

// outcomeUnknown reports whether a failed take may still have been applied: the node could not
// answer (or answered with an internal error). A refusal (bad input, unknown limit, no
// permission) applied nothing, and a retry hint would only mislead.
func outcomeUnknown(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return true // not from the server: a transport or context error
	}
	switch st.Code() {
	case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition, codes.PermissionDenied,
		codes.Unauthenticated, codes.OutOfRange, codes.Unimplemented, codes.AlreadyExists, codes.ResourceExhausted:
		return false
	}
	return true
}

// peekCmd builds `peek LIMIT KEY [--cost N] [--consistency linearizable|stale]`.
func (a *app) peekCmd() *cobra.Command {
	var (
		cost        int64
		consistency string
	)
	cmd := &cobra.Command{
		Use:   "peek LIMIT KEY [--cost N] [--consistency linearizable|stale]",
		Short: "Show a bucket without consuming anything",
		Long: `Show the bucket of KEY under the limit LIMIT without consuming anything: whether a take of
--cost tokens would be allowed now, what remains, and when the bucket is full again.

--consistency linearizable (the default) reflects every decision acknowledged before the call;
stale answers from the first node reached, which may lag the leader by the printed staleness.

With -o json: {"allowed", "remaining", "limit", "retry_after_ms", "reset_after_ms",
"consistency", "staleness_ms"}; retry_after_ms is -1 when the cost is above the burst (never).

` + exitStatusHelp + `
A peek exits 0 whether or not a take would be allowed.`,
		Example: `  limitctl peek api user:42
  limitctl peek api user:42 --cost 3 --consistency stale -o json`,
		Args: exactArgs("LIMIT", "KEY"),
		PreRunE: func(*cobra.Command, []string) error {
			if consistency != "linearizable" && consistency != "stale" {
				return usagef("invalid --consistency %q: want linearizable or stale", consistency)
			}
			return nil
		},
		RunE: a.run(func(ctx context.Context, c *client.Client, args []string) error {
			stale := consistency == "stale"
			d, staleness, err := c.Peek(ctx, args[0], args[1], cost, stale)
			if err != nil {
				return err
			}
			return a.emit(peekJSONOf(d, staleness, consistency), func(w io.Writer) error {
				_, err := fmt.Fprintln(w, peekText(d, staleness, stale))
				return err
			})
		}),
	}
	cmd.Flags().Int64Var(&cost, "cost", 1, "tokens a take would consume")
	cmd.Flags().StringVar(&consistency, "consistency", "linearizable", "linearizable or stale")
	return cmd
}
