package limiterpb

// What both ends of the wire share beyond the generated messages. (Hand-written; the generated
// files beside it are not.)

// LeaderHeader is the response trailer in which a node names the leader's API address: on
// Unavailable from a node that does not lead, and on a call it forwarded to the leader.
const LeaderHeader = "x-limiter-leader"

// IsLeader reports whether the responding node was the Raft leader. Servers before node_state
// existed sent only the state text, which is read then.
func (x *StatusResponse) IsLeader() bool {
	if s := x.GetNodeState(); s != NodeState_NODE_STATE_UNSPECIFIED {
		return s == NodeState_NODE_STATE_LEADER
	}
	return x.GetState() == "Leader"
}

// ParseNodeState converts a Raft state's name (Follower, Candidate, Leader, Shutdown) to the enum.
func ParseNodeState(s string) NodeState {
	switch s {
	case "Follower":
		return NodeState_NODE_STATE_FOLLOWER
	case "Candidate":
		return NodeState_NODE_STATE_CANDIDATE
	case "Leader":
		return NodeState_NODE_STATE_LEADER
	case "Shutdown":
		return NodeState_NODE_STATE_SHUTDOWN
	}
	return NodeState_NODE_STATE_UNSPECIFIED
}
