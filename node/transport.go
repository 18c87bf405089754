package node

import (
	"errors"
	"net"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// errStaleTimeoutNow answers a TimeoutNow that does not come from this node's current leader.
var errStaleTimeoutNow = errors.New("timeout-now refused: the sender is not this node's current leader")

// errNotVoter answers a vote request to a node that is not a voter of its own configuration.
var errNotVoter = errors.New("vote refused: this node is not a voter of its own configuration")

// guardedTransport is raft's NetworkTransport with the two guards the read lease needs around
// TimeoutNow, the message of a leadership transfer. raft's handler of TimeoutNow checks nothing
// (no term, no sender) and makes the receiver campaign with the transfer flag, which makes every
// voter ignore stickiness, the very property the lease rests on. A TimeoutNow can arrive late: the
// transfer gives up after an election timeout while the message may still sit in a socket buffer
// (a frozen target reads it when it resumes).
//
//   - Receiving: a TimeoutNow is handed to raft only if its sender is the leader this node
//     follows now. So a late one cannot start an election against any other leader's lease.
//   - Sending: while a TimeoutNow is in flight, and for the rest of the process once one has
//     failed after it may have been written (its delivery unknown), this node takes no lease
//     (Poisoned): a late delivery could only elect someone against this node's own lease. A
//     TimeoutNow that was answered (handled, or refused by the guard above) cannot come back,
//     and a dial error sent nothing.
type guardedTransport struct {
	*raft.NetworkTransport
	consumer chan raft.RPC
	inflight atomic.Int64
	failed   atomic.Bool
	refused  atomic.Uint64
	notVoter atomic.Uint64 // vote requests refused because this node is not a voter
	// leaderCommit is the commit index the leader sent last (AppendEntries other than heartbeats,
	// at least every CommitTimeout while it leads): what "caught up" means on a follower.
	leaderCommit atomic.Uint64
}

func newGuardedTransport(t *raft.NetworkTransport) *guardedTransport {
	return &guardedTransport{NetworkTransport: t, consumer: make(chan raft.RPC)}
}

// Consumer is what raft reads incoming RPCs from: the filtered stream.
func (g *guardedTransport) Consumer() <-chan raft.RPC { return g.consumer }

// pump passes incoming RPCs to raft, refusing a TimeoutNow whose sender is not leader() (the ID
// of the leader this node follows, "" when none). It returns when stop closes.
//
// It also refuses vote and pre-vote requests while canVote() is false (this node is not a voter of
// its own latest configuration): a member back from a lost volume under a new ID listens at its old
// identity's address, and a vote meant for that identity must not be granted by a node that kept
// none of its log (hashicorp/raft#235); raft itself grants votes when it has no configuration.
func (g *guardedTransport) pump(leader func() raft.ServerID, canVote func() bool, stop <-chan struct{}) {
	in := g.NetworkTransport.Consumer()
	for {
		select {
		case rpc := <-in:
			switch req := rpc.Command.(type) {
			case *raft.TimeoutNowRequest:
				if l := leader(); l == "" || raft.ServerID(req.ID) != l {
					g.refused.Add(1)
					rpc.Respond(nil, errStaleTimeoutNow)
					continue
				}
			case *raft.AppendEntriesRequest:
				if req.LeaderCommitIndex > 0 {
					g.leaderCommit.Store(req.LeaderCommitIndex) // health compares the applied index with it
				}
			case *raft.RequestVoteRequest, *raft.RequestPreVoteRequest:
				if !canVote() {
					g.notVoter.Add(1)
					rpc.Respond(nil, errNotVoter)
					continue
				}
			}
			select {
			case g.consumer <- rpc:
			case <-stop:
				return
			}
		case <-stop:
			return
		}
	}
}

// TimeoutNow sends a TimeoutNow, noting whether its delivery may still be pending.
func (g *guardedTransport) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	g.inflight.Add(1)
	defer g.inflight.Add(-1)
	err := g.NetworkTransport.TimeoutNow(id, target, args, resp)
	var op *net.OpError
	switch {
	case err == nil:
	case err.Error() == errStaleTimeoutNow.Error(): // answered: the target refused it for good
	case errors.As(err, &op) && op.Op == "dial": // never sent
	default: // written, perhaps, but not answered: it may yet be delivered
		g.failed.Store(true)
	}
	return err
}

// Poisoned reports whether a TimeoutNow this node sent may still be delivered: then it must not
// hold a read lease.
func (g *guardedTransport) Poisoned() bool { return g.inflight.Load() > 0 || g.failed.Load() }
