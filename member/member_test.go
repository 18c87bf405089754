package member

import (
	"net"
	"testing"
)

func TestAdvertisedAPIAddr_NeverAWildcard(t *testing.T) {
	cases := []struct {
		bound    string
		raftAddr string
		want     string
	}{
		{"127.0.0.1:7401", "127.0.0.1:7411", "127.0.0.1:7401"},
		{"0.0.0.0:7400", "limiter-1.limiter:7000", "limiter-1.limiter:7400"},
		{"[::]:7400", "10.0.0.5:7000", "10.0.0.5:7400"},
		{"0.0.0.0:7400", "0.0.0.0:7000", "127.0.0.1:7400"},
	}
	for _, c := range cases {
		a, err := net.ResolveTCPAddr("tcp", c.bound)
		if err != nil {
			t.Fatal(err)
		}
		if got := advertisedAPIAddr(a, c.raftAddr); got != c.want {
			t.Errorf("bound %s, raft %s: got %s, want %s", c.bound, c.raftAddr, got, c.want)
		}
	}
}
