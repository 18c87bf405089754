package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/limiterd/limiter/client"
)

// errUnhealthy makes `health` exit 1 after printing which nodes are not serving.
var errUnhealthy = errors.New("not every node is serving")

// healthPoll is how often `health --wait` asks again.
const healthPoll = 500 * time.Millisecond

// healthRow is one node's health.
type healthRow struct {
	Address string `json:"address"`
	Serving bool   `json:"serving"`
	Reason  string `json:"reason,omitempty"` // why it is not serving, as the node says
	Error   string `json:"error,omitempty"`
}

// healthCmd builds `health`, the check that container health probes and rolling restarts run.
func (a *app) healthCmd() *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Check that every node is serving (grpc.health.v1); --wait blocks until they are",
		Long: `Ask every node in --addr for its grpc.health.v1 status. A node is SERVING when it knows a
leader, its last write of the Raft log succeeded, its state machine is not halted, and it has
applied the leader's commit index as it last heard it (within a small bound). A node that is not
serving says why.

With --wait, also ask every member the cluster lists, and repeat until all of them are SERVING
or --timeout ends: the gate between two steps of a rolling restart.

Exit status:
  0  every node is SERVING
  1  some node is not, or cannot be reached`,
		Args: exactArgs(),
		RunE: a.run(func(ctx context.Context, c *client.Client, _ []string) error {
			rows, ok := checkHealth(ctx, c, wait)
			for wait && !ok && ctx.Err() == nil {
				select {
				case <-ctx.Done():
				case <-time.After(healthPoll):
					rows, ok = checkHealth(ctx, c, wait)
				}
			}
			if err := a.emit(rows, func(w io.Writer) error {
				for _, r := range rows {
					state := "SERVING"
					if !r.Serving {
						state = "NOT_SERVING"
						if r.Reason != "" {
							state += ": " + r.Reason
						}
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
	cmd.Flags().BoolVar(&wait, "wait", false, "include every member the cluster lists, and wait until all are SERVING (bounded by --timeout)")
	return cmd
}

// checkHealth asks each node (with members, also every member the cluster lists) once.
func checkHealth(ctx context.Context, c *client.Client, members bool) ([]healthRow, bool) {
	addrs := c.Addrs()
	if members {
		mctx, cancel := context.WithTimeout(ctx, nodeStatusTimeout)
		if ms, err := c.Members(mctx); err == nil {
			seen := map[string]bool{}
			for _, a := range addrs {
				seen[a] = true
			}
			for _, m := range ms {
				if a := m.GetApiAddress(); a != "" && !seen[a] {
					seen[a] = true
					addrs = append(addrs, a)
				}
			}
		}
		cancel()
	}
	var rows []healthRow
	ok := true
	for _, addr := range addrs {
		nctx, cancel := context.WithTimeout(ctx, nodeStatusTimeout) // one silent node must not use up --timeout
		serving, err := c.Health(nctx, addr)
		r := healthRow{Address: addr, Serving: serving}
		if err != nil {
			r.Error = errorMessage(err)
		} else if !serving {
			if st, err := c.Status(nctx, addr); err == nil {
				r.Reason = st.GetNotServing()
			}
		}
		cancel()
		ok = ok && serving
		rows = append(rows, r)
	}
	return rows, ok
}
