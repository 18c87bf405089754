package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/limiterd/limiter/client"
)

// errUnhealthy makes `health` exit 1 after printing which nodes are not serving.
var errUnhealthy = errors.New("not every node is serving")

// healthCmd builds `health`, the check that container health probes run.
func (a *app) healthCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "health",
		Short: "Check that every node in --addr is serving (grpc.health.v1)",
		Long: `Ask every node in --addr for its grpc.health.v1 status. A node is SERVING when it knows a
leader, its state machine is not halted, and it has applied nearly everything committed.

Exit status:
  0  every node is SERVING
  1  some node is not, or cannot be reached`,
		Args: exactArgs(),
		RunE: a.run(func(ctx context.Context, c *client.Client, _ []string) error {
			type row struct {
				Address string `json:"address"`
				Serving bool   `json:"serving"`
				Error   string `json:"error,omitempty"`
			}
			var rows []row
			ok := true
			for _, addr := range c.Addrs() {
				nctx, cancel := context.WithTimeout(ctx, nodeStatusTimeout) // one silent node must not use up --timeout
				serving, err := c.Health(nctx, addr)
				cancel()
				r := row{Address: addr, Serving: serving}
				if err != nil {
					r.Error = errorMessage(err)
				}
				ok = ok && serving
				rows = append(rows, r)
			}
			if err := a.emit(rows, func(w io.Writer) error {
				for _, r := range rows {
					state := "SERVING"
					if !r.Serving {
						state = "NOT_SERVING"
					}
					if r.Error != "" {
						state = "unreachable: " + r.Error
					}
					fmt.Fprintf(w, "%s  %s\n", r.Address, state)
				}
				return nil
			}); err != nil {
				return err
			}
			if !ok {
				return errUnhealthy
			}
			return nil
		}),
	}
}
