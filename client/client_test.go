package client

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestNew_NeedsAnAddress(t *testing.T) {
	if _, err := New([]string{" ", ""}, Options{}); err == nil {
		t.Fatalf("a client with no addresses was created")
	}
}

func TestResolveAddrs_FlagThenEnvThenDefault(t *testing.T) {
	cases := []struct {
		flag    string
		flagSet bool
		env     string
		want    []string
	}{
		{"a:1,b:2", true, "c:3", []string{"a:1", "b:2"}},
		{"a:1", false, "c:3, d:4,c:3", []string{"c:3", "d:4"}},
		{"a:1", false, "  ", []string{"a:1"}},
	}
	for _, c := range cases {
		got, err := ResolveAddrs(c.flag, c.flagSet, c.env, "X_ADDR")
		if err != nil || len(got) != len(c.want) {
			t.Fatalf("%+v: got %v %v", c, got, err)
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Fatalf("%+v: got %v", c, got)
			}
		}
	}
	if _, err := ResolveAddrs(",", true, "", "X_ADDR"); err == nil {
		t.Fatalf("an empty list was accepted")
	}
}

func TestRetryable_OnlyWhenTheNodeCouldNotServe(t *testing.T) {
	ctx := context.Background()
	for code, want := range map[codes.Code]bool{
		codes.Unavailable: true, codes.DeadlineExceeded: true, codes.Aborted: true, codes.ResourceExhausted: true,
		codes.InvalidArgument: false, codes.NotFound: false, codes.AlreadyExists: false, codes.Internal: false,
	} {
		if got := retryable(ctx, status.Error(code, "x")); got != want {
			t.Errorf("retryable(%v) = %v, want %v", code, got, want)
		}
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if retryable(done, status.Error(codes.Unavailable, "x")) {
		t.Errorf("retried after the caller's context ended")
	}
}

func TestTranslate_LeaderHintsThroughTheAddressMap(t *testing.T) {
	c, err := New([]string{"proxy:1"}, Options{AddressMap: map[string]string{"node:1": "proxy:1"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.translate([]string{"node:1"}); got != "proxy:1" {
		t.Fatalf("mapped hint: %q", got)
	}
	if got := c.translate([]string{"node:2"}); got != "node:2" {
		t.Fatalf("unmapped hint: %q", got)
	}
	if got := c.translate(nil); got != "" {
		t.Fatalf("no hint: %q", got)
	}
}

func TestCall_GivesUpWithinRetryForOnAnUnreachableNode(t *testing.T) {
	c, err := New([]string{"127.0.0.1:1"}, Options{RetryFor: 300 * time.Millisecond, AttemptTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.Take(context.Background(), "l", "k", 1, "")
	if err == nil {
		t.Fatalf("a take on an unreachable node succeeded")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("gave up after %v; RetryFor was 300ms", el)
	}
}
