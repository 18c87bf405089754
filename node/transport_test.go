package node

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func newTCPTransport(t *testing.T, timeout time.Duration) *raft.NetworkTransport {
	t.Helper()
	tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, timeout, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// TestGuardedTransport_TimeoutNowOnlyFromTheCurrentLeader: a TimeoutNow reaches raft only when
// its sender is the leader this node follows; any other is refused (a late one from an earlier
// leadership must not start an election that ignores stickiness).
func TestGuardedTransport_TimeoutNowOnlyFromTheCurrentLeader(t *testing.T) {
	recv := newGuardedTransport(newTCPTransport(t, time.Second))
	leader := raft.ServerID("")
	stop := make(chan struct{})
	defer close(stop)
	go recv.pump(func() raft.ServerID { return leader }, func() bool { return true }, stop)
	go func() { // stands in for raft: answer whatever gets through
		for {
			select {
			case rpc := <-recv.Consumer():
				rpc.Respond(&raft.TimeoutNowResponse{}, nil)
			case <-stop:
				return
			}
		}
	}()
	send := newGuardedTransport(newTCPTransport(t, time.Second))
	req := &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("n1"), Addr: []byte(send.LocalAddr())}}
	for _, c := range []struct {
		leader raft.ServerID
		pass   bool
	}{{"", false}, {"n2", false}, {"n1", true}} {
		leader = c.leader
		err := send.TimeoutNow("n3", recv.LocalAddr(), req, &raft.TimeoutNowResponse{})
		if (err == nil) != c.pass {
			t.Fatalf("TimeoutNow from n1 while following %q: err %v, want passed=%v", c.leader, err, c.pass)
		}
	}
	if recv.refused.Load() != 2 {
		t.Fatalf("refused %d TimeoutNow messages, want 2", recv.refused.Load())
	}
	if send.Poisoned() {
		t.Fatal("the sender is poisoned after TimeoutNows that were answered (refused or handled)")
	}
}

// TestGuardedTransport_UnansweredTimeoutNowPoisonsTheLease: a TimeoutNow that was written but
// never answered may still be delivered, so its sender takes no lease again; one that could not
// even dial sent nothing.
func TestGuardedTransport_UnansweredTimeoutNowPoisonsTheLease(t *testing.T) {
	send := newGuardedTransport(newTCPTransport(t, 200*time.Millisecond))
	req := &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("n1")}}

	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	err = send.TimeoutNow("n3", raft.ServerAddress(deadAddr), req, &raft.TimeoutNowResponse{})
	var op *net.OpError
	if err == nil || !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("TimeoutNow to a closed port: %v, want a dial error", err)
	}
	if send.Poisoned() {
		t.Fatal("poisoned by a TimeoutNow that was never sent")
	}

	silent, err := net.Listen("tcp", "127.0.0.1:0") // accepts and reads, never answers (a frozen target)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			go io.Copy(io.Discard, c)
		}
	}()
	if err := send.TimeoutNow("n3", raft.ServerAddress(silent.Addr().String()), req, &raft.TimeoutNowResponse{}); err == nil {
		t.Fatal("a TimeoutNow to a silent peer succeeded")
	}
	if !send.Poisoned() {
		t.Fatal("not poisoned after a TimeoutNow whose delivery is unknown")
	}
}
