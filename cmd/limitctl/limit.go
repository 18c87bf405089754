package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/limiterd/limiter/api/limiterpb"
	"github.com/limiterd/limiter/client"
	"github.com/limiterd/limiter/internal/cli"
)

// limitCmd builds `limit` and its subcommands set, get, list and delete.
func (a *app) limitCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "limit",
		Short: "Create, show, list and delete limits",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	cmd.AddCommand(a.limitSetCmd(), a.limitGetCmd(), a.limitListCmd(), a.limitDeleteCmd())
	return cmd
}

// limitSetCmd builds `limit set NAME --rate N --per DURATION [--burst N]`.
func (a *app) limitSetCmd() *cobra.Command {
	var (
		rate, burst   int64
		per, grantTTL time.Duration
		admission     string
	)
	cmd := &cobra.Command{
		Use:   "set NAME --rate N --per DURATION [--burst N] [--admission local [--grant-ttl D]]",
		Short: "Create a limit or change it live",
		Long: `Create the limit NAME, or change it live: --rate tokens are added every --per, up to
--burst tokens (default: the rate). Setting the same values again is harmless.

--admission linearizable (the default) decides every take in the Raft log. --admission local
lets any member answer takes from tokens the log has escrowed to it, with no round trip: it
never over-admits, and over any window W admits at most burst + rate x (W + grant TTL).
--grant-ttl (100ms to 1m, default 2s) is how long one grant lasts. Switching back to
linearizable stops new grants; outstanding ones run out within their TTL.
Prints the limit as stored.

` + exitStatusHelp,
		Example: `  limitctl limit set api --rate 100 --per 1m
  limitctl limit set login --rate 5 --per 1h --burst 10
  limitctl limit set payments --rate 5000 --per 1s --admission local --grant-ttl 2s`,
		Args: exactArgs("NAME"),
		RunE: a.run(func(ctx context.Context, c *client.Client, args []string) error {
			li, err := c.SetLimitSpec(ctx, client.LimitSpec{Name: args[0], Rate: rate, Per: per, Burst: burst, Admission: admission, GrantTTL: grantTTL})
			if err != nil {
				return err
			}
			return a.printLimits(li)
		}),
	}
	f := cmd.Flags()
	f.Int64Var(&rate, "rate", 0, "tokens added every --per (required)")
	f.Var(cli.DurationFlag{D: &per}, "per", "refill period, e.g. 1s, 1m, 1h, 1d, 1w (required)")
	f.Int64Var(&burst, "burst", 0, "bucket capacity (0: the rate)")
	f.StringVar(&admission, "admission", "linearizable", "linearizable or local (see above)")
	f.DurationVar(&grantTTL, "grant-ttl", 0, "local admission: how long a grant lasts (0: 2s)")
	_ = cmd.MarkFlagRequired("rate")
	_ = cmd.MarkFlagRequired("per")
	return cmd
}

// limitGetCmd builds `limit get NAME`.
func (a *app) limitGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Show one limit",
		Long:  "Show the limit NAME: its rate, period, burst, admission mode and the buckets it holds;\nfor a local limit, the tokens each member holds in escrow.\n\n" + exitStatusHelp,
		Args:  exactArgs("NAME"),
		RunE: a.run(func(ctx context.Context, c *client.Client, args []string) error {
			li, err := c.GetLimit(ctx, args[0])
			if err != nil {
				return err
			}
			return a.printLimits(li)
		}),
	}
}

// limitListCmd builds `limit list`.
func (a *app) limitListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List every limit",
		Long:  "List every limit, sorted by name. With -o json, prints an array (empty when there are none).\n\n" + exitStatusHelp,
		Args:  exactArgs(),
		RunE: a.run(func(ctx context.Context, c *client.Client, _ []string) error {
			lis, err := c.ListLimits(ctx)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return writeJSON(a.stdout, limitsJSONOf(lis))
			}
			if len(lis) == 0 {
				_, err := fmt.Fprintln(a.stdout, "no limits")
				return err
			}
			return writeLimitsTable(a.stdout, lis)
		}),
	}
}

// limitDeleteCmd builds `limit delete NAME`.
func (a *app) limitDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a limit and its buckets",
		Long: `Delete the limit NAME and all its buckets. A retry after a lost reply may report
NotFound, since the first attempt already deleted it.

` + exitStatusHelp,
		Args: exactArgs("NAME"),
		RunE: a.run(func(ctx context.Context, c *client.Client, args []string) error {
			if err := c.DeleteLimit(ctx, args[0]); err != nil {
				return err
			}
			return a.emit(deletedJSON{Name: args[0], Deleted: true}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "deleted limit %q\n", args[0])
				return err
			})
		}),
	}
}

// deletedJSON is the JSON answer of `limit delete`.
type deletedJSON struct {
	Name    string `json:"name"`
	Deleted bool   `json:"deleted"`
}

// printLimits prints one limit: a JSON object, or a one-row table.
func (a *app) printLimits(li *limiterpb.LimitInfo) error {
	return a.emit(limitJSONOf(li), func(w io.Writer) error {
		return writeLimitsTable(w, []*limiterpb.LimitInfo{li})
	})
}
