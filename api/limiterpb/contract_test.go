package limiterpb

import "testing"

func TestIsLeader_EnumFirstThenTheTextOfOlderServers(t *testing.T) {
	for _, c := range []struct {
		st   *StatusResponse
		want bool
	}{
		{&StatusResponse{NodeState: NodeState_NODE_STATE_LEADER}, true},
		{&StatusResponse{NodeState: NodeState_NODE_STATE_FOLLOWER, State: "Leader"}, false},
		{&StatusResponse{State: "Leader"}, true}, // an older server: text only
		{&StatusResponse{State: "Follower"}, false},
		{nil, false},
	} {
		if got := c.st.IsLeader(); got != c.want {
			t.Errorf("%v: IsLeader = %v, want %v", c.st, got, c.want)
		}
	}
	for _, s := range []string{"Follower", "Candidate", "Leader", "Shutdown"} {
		if ParseNodeState(s) == NodeState_NODE_STATE_UNSPECIFIED {
			t.Errorf("ParseNodeState(%q) is unspecified", s)
		}
	}
	if ParseNodeState("Leaderish") != NodeState_NODE_STATE_UNSPECIFIED {
		t.Error("an unknown name parsed")
	}
}
