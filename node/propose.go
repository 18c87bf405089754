package node

import (
	"context"
	"fmt"

	"github.com/limiterd/limiter/fsm"
)

// SetLimit creates a limit or changes it live, through the log. The state machine's refusal (an
// invalid limit, too many limits) is the error.
func (n *Node) SetLimit(ctx context.Context, spec fsm.LimitSpec) (*fsm.LimitInfo, error) {
	resp, err := n.propose(ctx, fsm.Command{SetLimit: &spec})
	if err != nil {
		return nil, err
	}
	return resp.Limit, nil
}

// DeleteLimit drops a limit and its buckets, through the log (fsm.ErrUnknownLimit if it does
// not exist).
func (n *Node) DeleteLimit(ctx context.Context, name string) error {
	_, err := n.propose(ctx, fsm.Command{DeleteLimit: &fsm.LimitRef{Name: name}})
	return err
}

// setMember records a member's API address in the replicated state (an empty address forgets it).
func (n *Node) setMember(ctx context.Context, id, apiAddr string) error {
	_, err := n.propose(ctx, fsm.Command{SetMember: &fsm.MemberAddr{ID: id, APIAddr: apiAddr}})
	return err
}

// propose applies one non-take command through the log, stamped by the leader. The state
// machine's refusal comes back as the error, so callers handle one error channel.
func (n *Node) propose(ctx context.Context, cmd fsm.Command) (*fsm.Response, error) {
	if !n.IsLeader() {
		return nil, ErrNotLeader
	}
	var limits []string // no local answer on a limit about to change
	switch {
	case cmd.TakeBatch != nil:
		return nil, fmt.Errorf("propose: takes go through Take")
	case cmd.SetLimit != nil:
		limits = []string{cmd.SetLimit.Name}
	case cmd.DeleteLimit != nil:
		limits = []string{cmd.DeleteLimit.Name}
	case cmd.Escrow != nil:
		return nil, fmt.Errorf("propose: escrow ops go through Escrow")
	}
	for _, l := range limits {
		n.pending.addLimit(l, 1)
	}
	cmd.Stamp = n.Stamp()
	f := n.raft.Apply(cmd.Encode(nil), applyEnqueueTimeout)
	// The pending mark stays until the entry is applied or has failed for good, not until the
	// caller gives up.
	err := n.wait(ctx, f, func() {
		for _, l := range limits {
			n.pending.addLimit(l, -1)
		}
	})
	if err != nil {
		return nil, err
	}
	resp, ok := f.Response().(*fsm.Response)
	if !ok {
		return nil, fmt.Errorf("unexpected apply response %T", f.Response())
	}
	if resp.Err != nil {
		return resp, resp.Err
	}
	return resp, nil
}
