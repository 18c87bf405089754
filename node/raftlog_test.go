package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestRaftLogger_StructuredWithNodeIDAndLevels(t *testing.T) {
	var buf bytes.Buffer
	base := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", "n1")
	var l hclog.Logger = newRaftLogger(base, hclog.Info)
	l = l.Named("net").With("peer", "n2")
	l.Debug("below the level")
	l.Warn("failed to contact", "servers", hclog.Fmt("%d of %d", 1, 3), "error", errors.New("refused"))
	l.StandardLogger(nil).Print("from the standard logger")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2 (debug suppressed):\n%s", len(lines), buf.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"level": "WARN", "msg": "failed to contact", "node": "n1", "component": "raft.net", "peer": "n2", "servers": "1 of 3", "error": "refused"}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v (line %s)", k, m[k], v, lines[0])
		}
	}
	if !strings.Contains(lines[1], `"node":"n1"`) {
		t.Errorf("standard-logger line without the node ID: %s", lines[1])
	}
}

func TestRaftLogger_FallbackAddressIsDebugNotWarn(t *testing.T) {
	var buf bytes.Buffer
	base := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	newRaftLogger(base, hclog.Warn).Warn(fallbackAddrMsg, "id", "n3")
	if buf.Len() != 0 {
		t.Fatalf("fallback-address warning logged at warn level: %s", buf.String())
	}
	newRaftLogger(base, hclog.Debug).Warn(fallbackAddrMsg, "id", "n3")
	if !strings.Contains(buf.String(), "level=DEBUG") {
		t.Fatalf("fallback-address message not kept at debug level: %q", buf.String())
	}
}

func TestPeerAddrs_AnswersForItself(t *testing.T) {
	p := &peerAddrs{byID: map[string]string{"n1": "127.0.0.1:7000", "n2": "127.0.0.1:9002"}, self: "n1"}
	if a, err := p.ServerAddr("n1"); err != nil || a != "127.0.0.1:7000" {
		t.Fatalf("ServerAddr(n1) = %q, %v", a, err)
	}
	if _, err := p.ServerAddr("n9"); err == nil {
		t.Fatal("ServerAddr of an unknown member: want an error so raft falls back to the configured address")
	}
	// A member back under a new identity is reached where its name is.
	if a, err := p.ServerAddr("n2~a1b2c3"); err != nil || a != "127.0.0.1:9002" {
		t.Fatalf("ServerAddr(n2~a1b2c3) = %q, %v; want n2's address", a, err)
	}
}
