package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/limiterd/limiter/client"
)

// takeManyJSON is the JSON answer of `take-many`: one decision per item, in order.
type takeManyJSON struct {
	RequestID string         `json:"request_id"`
	Replayed  bool           `json:"replayed"`
	Items     []takeItemJSON `json:"items"`
}

type takeItemJSON struct {
	Limit string `json:"limit"`
	Key   string `json:"key"`
	Cost  int64  `json:"cost"`
	decisionJSON
}

// takeManyCmd builds `take-many LIMIT KEY [LIMIT KEY ...] [--costs N,...] [--request-id ID]`.
func (a *app) takeManyCmd() *cobra.Command {
	var costs, requestID string
	cmd := &cobra.Command{
		Use:   "take-many LIMIT KEY [LIMIT KEY ...] [--costs N,...] [--request-id ID]",
		Short: "Consume tokens from several buckets in one call and one log entry",
		Long: `Take from several buckets at once: each LIMIT KEY pair is one item, decided on its own (some
may be allowed and others denied), all in one call and one log entry, exactly once per request ID
as a whole. --costs gives each item's cost in order (default 1 each).

Exit status:
  0  every item allowed
  2  at least one item denied
  1  an error (with an unknown outcome, the request ID to retry with)`,
		Example: `  limitctl take-many api user:42 login ip:10.0.0.7
  limitctl take-many api user:42 export user:42 --costs 1,50 -o json`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 || len(args)%2 != 0 {
				return usagef("want LIMIT KEY pairs, got %d arguments", len(args))
			}
			return nil
		},
		RunE: a.run(func(ctx context.Context, c *client.Client, args []string) error {
			items, err := takeManyItems(args, costs)
			if err != nil {
				return err
			}
			if requestID == "" {
				requestID = client.NewRequestID()
			}
			ds, replayed, err := c.TakeMany(ctx, items, requestID)
			if err != nil {
				return takeError(err, requestID)
			}
			out := takeManyJSON{RequestID: requestID, Replayed: replayed}
			denied := false
			for i, d := range ds {
				out.Items = append(out.Items, takeItemJSON{Limit: items[i].Limit, Key: items[i].Key, Cost: items[i].Cost, decisionJSON: decisionJSONOf(d)})
				denied = denied || !d.Allowed
			}
			if err := a.emit(out, func(w io.Writer) error {
				for i, d := range ds {
					if _, err := fmt.Fprintf(w, "%s %s  %s\n", items[i].Limit, items[i].Key, decisionText(d)); err != nil {
						return err
					}
				}
				if replayed {
					_, err := fmt.Fprintf(w, "replayed request_id=%s\n", requestID)
					return err
				}
				return nil
			}); err != nil {
				return err
			}
			if denied {
				return errDenied
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&costs, "costs", "", "each item's cost, comma-separated, in order (default 1 each)")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key of the whole call, up to 64 bytes (default: a random one)")
	return cmd
}

// takeManyItems pairs LIMIT KEY arguments into items with their costs.
func takeManyItems(args []string, costs string) ([]client.Item, error) {
	var cs []string
	if strings.TrimSpace(costs) != "" {
		cs = strings.Split(costs, ",")
		if len(cs) != len(args)/2 {
			return nil, usagef("--costs has %d values for %d items", len(cs), len(args)/2)
		}
	}
	var items []client.Item
	for i := 0; i < len(args); i += 2 {
		it := client.Item{Limit: args[i], Key: args[i+1], Cost: 1}
		if cs != nil {
			n, err := strconv.ParseInt(strings.TrimSpace(cs[i/2]), 10, 64)
			if err != nil || n < 1 {
				return nil, usagef("--costs: %q is not a cost of at least 1", cs[i/2])
			}
			it.Cost = n
		}
		items = append(items, it)
	}
	return items, nil
}
