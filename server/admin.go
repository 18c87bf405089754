package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/limiterd/limiter/api/limiterpb"
	"github.com/limiterd/limiter/fsm"
	"github.com/limiterd/limiter/internal/version"
	"github.com/limiterd/limiter/node"
)

func limitInfo(li *fsm.LimitInfo) *limiterpb.LimitInfo {
	return &limiterpb.LimitInfo{Name: li.Name, Rate: li.Rate, PeriodNanos: int64(li.Period), Burst: li.Burst, Buckets: int64(li.Buckets),
		Admission: li.Admission.String(), GrantTtlNanos: int64(li.GrantTTL)}
}

// SetLimit implements Admin.SetLimit: create a limit, or change it live.
func (s *Server) SetLimit(ctx context.Context, req *limiterpb.SetLimitRequest) (*limiterpb.LimitInfo, error) {
	if err := fsm.CheckName(req.GetName()); err != nil {
		return nil, invalidArg("name: %v", err)
	}
	admission, err := fsm.ParseAdmission(req.GetAdmission())
	if err != nil {
		return nil, invalidArg("%v", err)
	}
	spec := fsm.LimitSpec{Name: req.GetName(), Rate: req.GetRate(), Period: time.Duration(req.GetPeriodNanos()), Burst: req.GetBurst(),
		Admission: admission, GrantTTL: time.Duration(req.GetGrantTtlNanos())}
	if err := spec.Check(); err != nil {
		return nil, invalidArg("%v", err)
	}
	return onLeader(s, ctx, req, adminRPC(limiterpb.AdminClient.SetLimit), func(ctx context.Context) (*limiterpb.LimitInfo, error) {
		li, err := s.node.SetLimit(ctx, spec)
		if err != nil {
			return nil, err
		}
		if local, err := s.node.FSM().Limit(req.GetName()); err == nil {
			li.Buckets = local.Buckets // local, not replicated: how many buckets this node holds
		}
		return limitInfo(li), nil
	})
}

// GetLimit implements Admin.GetLimit (a linearizable read on the leader).
func (s *Server) GetLimit(ctx context.Context, req *limiterpb.GetLimitRequest) (*limiterpb.LimitInfo, error) {
	if err := fsm.CheckName(req.GetName()); err != nil {
		return nil, invalidArg("name: %v", err)
	}
	return onLeader(s, ctx, req, adminRPC(limiterpb.AdminClient.GetLimit), func(ctx context.Context) (*limiterpb.LimitInfo, error) {
		var li *fsm.LimitInfo
		var grants []fsm.GrantInfo
		var err error
		read := func() {
			li, err = s.node.FSM().Limit(req.GetName())
			grants = s.node.FSM().Grants(req.GetName())
		}
		if rerr := s.node.Read(ctx, read); rerr != nil {
			return nil, rerr
		}
		if err != nil {
			return nil, err
		}
		info := limitInfo(li)
		for _, g := range grants {
			info.Grants = append(info.Grants, &limiterpb.Grant{Id: g.ID, Holder: g.Holder, Key: g.Key, Tokens: g.Tokens, ExpiresUnixNanos: g.Expires, Live: g.Live})
		}
		return info, nil
	})
}

// ListLimits implements Admin.ListLimits (a linearizable read on the leader).
func (s *Server) ListLimits(ctx context.Context, req *limiterpb.ListLimitsRequest) (*limiterpb.ListLimitsResponse, error) {
	return onLeader(s, ctx, req, adminRPC(limiterpb.AdminClient.ListLimits), func(ctx context.Context) (*limiterpb.ListLimitsResponse, error) {
		var limits []*fsm.LimitInfo
		if err := s.node.Read(ctx, func() { limits = s.node.FSM().Limits() }); err != nil {
			return nil, err
		}
		resp := &limiterpb.ListLimitsResponse{}
		for _, li := range limits {
			resp.Limits = append(resp.Limits, limitInfo(li))
		}
		return resp, nil
	})
}

// DeleteLimit implements Admin.DeleteLimit.
func (s *Server) DeleteLimit(ctx context.Context, req *limiterpb.DeleteLimitRequest) (*limiterpb.DeleteLimitResponse, error) {
	if err := fsm.CheckName(req.GetName()); err != nil {
		return nil, invalidArg("name: %v", err)
	}
	return onLeader(s, ctx, req, adminRPC(limiterpb.AdminClient.DeleteLimit), func(ctx context.Context) (*limiterpb.DeleteLimitResponse, error) {
		return &limiterpb.DeleteLimitResponse{}, s.node.DeleteLimit(ctx, req.GetName())
	})
}

// ListMembers implements Admin.ListMembers: the leader's configuration (this node's when no
// leader is reachable), with each member's log index and last contact asked of the member.
func (s *Server) ListMembers(ctx context.Context, req *limiterpb.ListMembersRequest) (*limiterpb.ListMembersResponse, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	if !s.node.IsLeader() {
		if resp, err := forward(s, ctx, req, adminRPC(limiterpb.AdminClient.ListMembers), false); err == nil {
			return resp, nil
		}
	}
	members, err := s.node.Members(ctx)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	resp := &limiterpb.ListMembersResponse{Members: make([]*limiterpb.Member, len(members))}
	var wg sync.WaitGroup
	for i, m := range members {
		pm := memberPB(m)
		resp.Members[i] = pm
		if m.ID == s.node.ID() {
			st := s.node.Status()
			pm.MatchIndex, pm.LastContactMillis = st.LastLogIndex, contactMillis(st.LastContact)
			continue
		}
		if m.APIAddr == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := s.conn(m.APIAddr)
			if err != nil {
				return
			}
			sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			if st, err := limiterpb.NewAdminClient(c).Status(sctx, &limiterpb.StatusRequest{}); err == nil {
				pm.MatchIndex = st.GetLastLogIndex()
				pm.LastContactMillis = lastContactOf(st)
			}
		}()
	}
	wg.Wait()
	return resp, nil
}

// lastContactOf reads a member's own report of when it last heard from the leader.
func lastContactOf(st *limiterpb.StatusResponse) int64 {
	if st.IsLeader() {
		return 0
	}
	for _, m := range st.GetMembers() {
		if m.GetId() == st.GetNodeId() {
			return m.GetLastContactMillis()
		}
	}
	return -1
}

func contactMillis(d time.Duration) int64 {
	if d < 0 {
		return -1
	}
	return d.Milliseconds()
}

// memberPB is a member's wire form; its log index and last contact are filled in by the caller.
func memberPB(m node.Member) *limiterpb.Member {
	return &limiterpb.Member{Id: m.ID, RaftAddress: m.RaftAddr, ApiAddress: m.APIAddr, Leader: m.Leader, Suffrage: suffrage(m.Suffrage), LastContactMillis: -1}
}

func suffrage(s string) limiterpb.Suffrage {
	switch s {
	case "Nonvoter":
		return limiterpb.Suffrage_SUFFRAGE_NONVOTER
	case "Staging":
		return limiterpb.Suffrage_SUFFRAGE_STAGING
	}
	return limiterpb.Suffrage_SUFFRAGE_VOTER
}

// AddVoter implements Admin.AddVoter (also how a joining node registers).
func (s *Server) AddVoter(ctx context.Context, req *limiterpb.AddVoterRequest) (*limiterpb.AddVoterResponse, error) {
	if req.GetId() == "" || req.GetRaftAddress() == "" {
		return nil, invalidArg("id and raft_address are required")
	}
	return onLeader(s, ctx, req, adminRPC(limiterpb.AdminClient.AddVoter), func(ctx context.Context) (*limiterpb.AddVoterResponse, error) {
		if !req.GetForce() && !s.node.IsMember(req.GetId(), req.GetRaftAddress()) {
			// A joining node calls this itself, so it answers; an operator's typo or a node not
			// started yet does not, and must not become a voter that cannot vote.
			if err := s.node.ProbeMember(req.GetId(), req.GetRaftAddress()); err != nil {
				return nil, err
			}
		}
		return &limiterpb.AddVoterResponse{}, s.node.AddVoter(ctx, req.GetId(), req.GetRaftAddress(), req.GetApiAddress())
	})
}

// RemoveServer implements Admin.RemoveServer. Removing the leader transfers leadership first
// and then has the new leader remove it, so the cluster never waits out an election.
func (s *Server) RemoveServer(ctx context.Context, req *limiterpb.RemoveServerRequest) (*limiterpb.RemoveServerResponse, error) {
	if req.GetId() == "" {
		return nil, invalidArg("id is required")
	}
	remote := adminRPC(limiterpb.AdminClient.RemoveServer)
	if s.node.IsLeader() && req.GetId() == s.node.ID() {
		ctx, cancel := withTimeout(ctx)
		defer cancel()
		if err := s.node.TransferLeadership(ctx, ""); err != nil {
			return nil, s.toStatus(ctx, err)
		}
		if err := s.waitForOtherLeader(ctx); err != nil {
			return nil, s.toStatus(ctx, err)
		}
		return forward(s, ctx, req, remote, true)
	}
	return onLeader(s, ctx, req, remote, func(ctx context.Context) (*limiterpb.RemoveServerResponse, error) {
		return &limiterpb.RemoveServerResponse{}, s.node.RemoveServer(ctx, req.GetId())
	})
}

// waitForOtherLeader waits until another node is known as leader with an API address.
func (s *Server) waitForOtherLeader(ctx context.Context) error {
	for {
		if id, addr := s.node.Leader(); id != "" && id != s.node.ID() && addr != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TransferLeadership implements Admin.TransferLeadership.
func (s *Server) TransferLeadership(ctx context.Context, req *limiterpb.TransferLeadershipRequest) (*limiterpb.TransferLeadershipResponse, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	if !s.node.LeadsRaft() { // not IsLeader: a leader that is not ready yet may still hand over
		return forward(s, ctx, req, adminRPC(limiterpb.AdminClient.TransferLeadership), false)
	}
	if req.GetId() == s.node.ID() {
		return &limiterpb.TransferLeadershipResponse{LeaderId: s.node.ID()}, nil
	}
	if err := s.node.TransferLeadership(ctx, req.GetId()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if err := s.waitForOtherLeader(ctx); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	id, _ := s.node.Leader()
	return &limiterpb.TransferLeadershipResponse{LeaderId: id}, nil
}

// Status implements Admin.Status: this node's own view, never forwarded.
func (s *Server) Status(ctx context.Context, req *limiterpb.StatusRequest) (*limiterpb.StatusResponse, error) {
	st := s.node.Status()
	resp := &limiterpb.StatusResponse{
		Version: version.Get().Short(),
		NodeId:  st.ID, State: st.State, NodeState: limiterpb.ParseNodeState(st.State), Term: st.Term, LeaderId: st.LeaderID, LeaderApiAddress: st.LeaderAPI,
		CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex, LastLogIndex: st.LastLogIndex,
		Limits: int64(st.FSM.Limits), Buckets: int64(st.FSM.Buckets), RequestIds: int64(st.FSM.RequestIDs),
		FsmTimeNanos: st.FSM.Clock, RaftAddress: st.RaftAddr, ApiAddress: st.APIAddr,
		LeaseHeld: st.LeaseHeld, LeaseReads: st.LeaseReads, LocalDenials: st.LocalDenials,
		LeaderCommitIndex: st.LeaderCommitIndex, NotServing: st.NotServing, LogWriteFailures: st.LogWriteFailures,
		ExactlyOnceWindowNanos: int64(st.FSM.DedupSpan),
	}
	if s.tls != nil {
		notAfter, _, err := s.tls.State()
		if !notAfter.IsZero() {
			resp.TlsCertExpiresUnixNanos = notAfter.UnixNano()
		}
		if err != nil {
			resp.TlsReloadError = err.Error()
		}
	}
	if req.GetIncludeStateHash() {
		h, err := s.node.FSM().StateHash()
		if err != nil {
			return nil, s.toStatus(ctx, fmt.Errorf("state hash: %w", err))
		}
		resp.StateHash = h[:]
	}
	mctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if members, err := s.node.Members(mctx); err == nil {
		for _, m := range members {
			pm := memberPB(m)
			if m.ID == st.ID {
				pm.MatchIndex, pm.LastContactMillis = st.LastLogIndex, contactMillis(st.LastContact)
			}
			resp.Members = append(resp.Members, pm)
		}
	}
	return resp, nil
}
