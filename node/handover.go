package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"
)

// handoverProbe bounds how long a planned stop waits for a follower to answer before it counts
// the follower as hung and hands leadership to another.
const handoverProbe = 500 * time.Millisecond

// HandOver hands leadership to a live voter before a planned stop (SIGTERM, a rolling restart).
// raft would pick the most up-to-date follower even if it hangs (a stopped process keeps its
// connections open and answers nothing), and the transfer would then wait out transport
// timeouts. So this asks each voter first, over the Raft port, with a short timeout, and tries the
// ones that answer, most up to date first, until one takes over or ctx ends.
func (n *Node) HandOver(ctx context.Context) error {
	if !n.LeadsRaft() {
		return nil
	}
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("read configuration: %w", err)
	}
	type candidate struct {
		id   string
		last uint64
	}
	var live []candidate
	var hung []string
	for _, s := range cf.Configuration().Servers {
		if s.ID == raft.ServerID(n.cfg.ID) || s.Suffrage != raft.Voter {
			continue
		}
		resp, err := n.mux.ask(n.dialAddr(string(s.ID), string(s.Address)), probeRequest{Op: "hello", From: n.name}, handoverProbe)
		if err != nil || !resp.RaftRunning {
			hung = append(hung, string(s.ID))
			continue
		}
		live = append(live, candidate{string(s.ID), resp.LastIndex})
	}
	if len(hung) > 0 {
		n.log.Warn("handing leadership over: skipping voters that do not answer", "skipped", hung)
	}
	slices.SortFunc(live, func(a, b candidate) int {
		if a.last != b.last {
			if a.last > b.last {
				return -1
			}
			return 1
		}
		return 0
	})
	err := errors.New("no voter answers")
	for _, c := range live {
		if ctx.Err() != nil {
			break
		}
		if err = n.TransferLeadership(ctx, c.id); err == nil {
			n.log.Info("handed leadership over", "to", c.id)
			return nil
		}
	}
	return fmt.Errorf("hand leadership over: %w", err)
}
