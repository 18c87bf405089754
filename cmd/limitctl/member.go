package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/limiterd/limiter/api/limiterpb"
	"github.com/limiterd/limiter/client"
)

// memberCmd builds `member` and its subcommands list, add and remove.
func (a *app) memberCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "member",
		Short: "List, add and remove cluster members",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	cmd.AddCommand(a.memberListCmd(), a.memberAddCmd(), a.memberRemoveCmd())
	return cmd
}

// memberListCmd builds `member list`.
func (a *app) memberListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the cluster's members as the leader sees them",
		Long: `List the cluster's members as the leader sees them: ID, Raft and API addresses, suffrage,
which one leads, its last log index and how long ago the leader heard from it.

` + exitStatusHelp,
		Args: exactArgs(),
		RunE: a.run(func(ctx context.Context, c *client.Client, _ []string) error {
			ms, err := c.Members(ctx)
			if err != nil {
				return err
			}
			return a.emit(membersJSONOf(ms), func(w io.Writer) error { return writeMembersTable(w, ms) })
		}),
	}
}

// memberAddCmd builds `member add ID RAFT_ADDR [--api-addr ADDR]`.
func (a *app) memberAddCmd() *cobra.Command {
	var apiAddr string
	var force bool
	cmd := &cobra.Command{
		Use:   "add ID RAFT_ADDR [--api-addr ADDR]",
		Short: "Add a voting member",
		Long: `Add the node ID, reachable for Raft at RAFT_ADDR, as a voting member (or change its address).
Adding a member that is already there is harmless. The leader first asks RAFT_ADDR who it is
and refuses (FailedPrecondition) when nothing answers as ID there: a voter that is not running
raises the quorum (4 voters need 3) without voting. --force adds it anyway. --api-addr registers its gRPC address, so
other nodes can redirect clients to it.

` + exitStatusHelp,
		Example: `  limitctl member add n4 127.0.0.1:7104 --api-addr 127.0.0.1:7404`,
		Args:    exactArgs("ID", "RAFT_ADDR"),
		RunE: a.run(func(ctx context.Context, c *client.Client, args []string) error {
			if err := c.AddMember(ctx, args[0], args[1], apiAddr, force); err != nil {
				return err
			}
			out := memberAddedJSON{ID: args[0], RaftAddress: args[1], APIAddress: apiAddr, Added: true}
			return a.emit(out, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "added voter %s  raft=%s  api=%s\n", args[0], args[1], orDash(apiAddr))
				return err
			})
		}),
	}
	cmd.Flags().StringVar(&apiAddr, "api-addr", "", "the member's gRPC API address")
	cmd.Flags().BoolVar(&force, "force", false, "add it even if nothing answers as that member at RAFT_ADDR (it then counts in the quorum without voting until it runs)")
	return cmd
}

// memberRemoveCmd builds `member remove ID`.
func (a *app) memberRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a member",
		Long: `Remove the member ID from the cluster. When it is the leader, leadership is transferred
first.

` + exitStatusHelp,
		Args: exactArgs("ID"),
		RunE: a.run(func(ctx context.Context, c *client.Client, args []string) error {
			if err := c.RemoveServer(ctx, args[0]); err != nil {
				return err
			}
			return a.emit(memberRemovedJSON{ID: args[0], Removed: true}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "removed member %s\n", args[0])
				return err
			})
		}),
	}
}

// leaderCmd builds `leader` and its subcommand transfer.
func (a *app) leaderCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "leader",
		Short: "Manage leadership",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "transfer [ID]",
		Short: "Hand leadership to a member",
		Long: `Hand leadership to the member ID, or to any up-to-date voter when ID is not given, and print
the new leader's ID.

` + exitStatusHelp,
		Args: rangeArgs(0, "ID"),
		RunE: a.run(func(ctx context.Context, c *client.Client, args []string) error {
			var id string
			if len(args) > 0 {
				id = args[0]
			}
			leader, err := c.TransferLeadership(ctx, id)
			if err != nil {
				return err
			}
			return a.emit(leaderJSON{LeaderID: leader}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "leader is now %s\n", orDash(leader))
				return err
			})
		}),
	})
	return cmd
}

// memberJSON is the JSON form of a member; last_contact_ms is -1 when unknown.
type memberJSON struct {
	ID            string `json:"id"`
	RaftAddress   string `json:"raft_address"`
	APIAddress    string `json:"api_address"`
	Suffrage      string `json:"suffrage"`
	Leader        bool   `json:"leader"`
	MatchIndex    uint64 `json:"match_index"`
	LastContactMS int64  `json:"last_contact_ms"`
}

// memberAddedJSON is the JSON answer of `member add`.
type memberAddedJSON struct {
	ID          string `json:"id"`
	RaftAddress string `json:"raft_address"`
	APIAddress  string `json:"api_address"`
	Added       bool   `json:"added"`
}

// memberRemovedJSON is the JSON answer of `member remove`.
type memberRemovedJSON struct {
	ID      string `json:"id"`
	Removed bool   `json:"removed"`
}

// leaderJSON is the JSON answer of `leader transfer`.
type leaderJSON struct {
	LeaderID string `json:"leader_id"`
}

// suffrageName returns "voter", "nonvoter" or "staging".
func suffrageName(s limiterpb.Suffrage) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "SUFFRAGE_"))
}

// membersJSONOf converts members to their JSON form: never nil, so none encodes as [].
func membersJSONOf(ms []*limiterpb.Member) []memberJSON {
	out := make([]memberJSON, 0, len(ms))
	for _, m := range ms {
		out = append(out, memberJSON{
			ID: m.GetId(), RaftAddress: m.GetRaftAddress(), APIAddress: m.GetApiAddress(),
			Suffrage: suffrageName(m.GetSuffrage()), Leader: m.GetLeader(),
			MatchIndex: m.GetMatchIndex(), LastContactMS: m.GetLastContactMillis(),
		})
	}
	return out
}

// writeMembersTable writes members as a table, the leader marked with "*".
func writeMembersTable(w io.Writer, ms []*limiterpb.Member) error {
	rows := make([][]string, 0, len(ms))
	for _, m := range ms {
		leader, contact := "", "-"
		if m.GetLeader() {
			leader = "*"
		}
		if ms := m.GetLastContactMillis(); ms >= 0 {
			contact = humanDuration(time.Duration(ms) * time.Millisecond)
		}
		rows = append(rows, []string{
			m.GetId(), leader, suffrageName(m.GetSuffrage()), m.GetRaftAddress(), orDash(m.GetApiAddress()),
			fmt.Sprint(m.GetMatchIndex()), contact,
		})
	}
	return writeTable(w, []string{"ID", "LEADER", "SUFFRAGE", "RAFT_ADDRESS", "API_ADDRESS", "MATCH_INDEX", "LAST_CONTACT"}, rows)
}

// orDash returns s, or "-" when it is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
