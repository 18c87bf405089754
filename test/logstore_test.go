package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// testLogStore is the Raft log store the suite's members run on: LIMITER_LOG_STORE (bolt or
// wal), or limiterd's default. CI runs the suite on both.
var testLogStore = os.Getenv("LIMITER_LOG_STORE")

// withLogStore passes testLogStore to a limiterd process through its environment.
func withLogStore(env []string) []string {
	if testLogStore == "" {
		return env
	}
	return append(env, "LIMITERD_LOG_STORE="+testLogStore)
}

// A dev cluster on raft-wal, stopped, converted member by member to bolt with the CLI, starts
// again with its state and needs no flag; asking for the old store is refused with the fix.
func TestProcesses_DevClusterMigratedBetweenLogStoresKeepsState(t *testing.T) {
	bin := mustBuild(t)
	limiterd := filepath.Join(bin, "limiterd")
	dir := t.TempDir()
	base, env := devPorts(t)
	dev := startProc(t, limiterd, "dev", "--data-dir", dir, "--port-base", fmt.Sprint(base), "--log-store", "wal")
	checkFiveTakesThenDenied(t, bin, env, "1h")
	if err := dev.stop(t, syscall.SIGINT); err != nil {
		t.Fatalf("limiterd dev exit after Ctrl-C: %v\n%s", err, dev.out.String())
	}
	for _, id := range []string{"n1", "n2", "n3"} {
		d := filepath.Join(dir, id)
		out, err := runCmd(limiterd, "migrate-log", "--to", "bolt", "--data-dir", d)
		if err != nil || !strings.Contains(out, "from wal to bolt") || !strings.Contains(out, filepath.Join(d, "wal.migrated")) {
			t.Fatalf("migrate-log %s: %v\n%s", id, err, out)
		}
		if _, err := os.Stat(filepath.Join(d, "raft.db")); err != nil {
			t.Fatalf("no raft.db after the migration: %v", err)
		}
	}
	out, err := runCmd(limiterd, "dev", "--data-dir", dir, "--port-base", fmt.Sprint(base), "--log-store", "wal")
	if err == nil || !strings.Contains(out, "limiterd migrate-log --to wal") {
		t.Fatalf("dev --log-store wal on bolt data dirs: %v, want a refusal naming the fix\n%s", err, out)
	}
	startProcEnv(t, []string{"LIMITERD_LOG_STORE="}, limiterd, "dev", "--data-dir", dir, "--port-base", fmt.Sprint(base))
	if r := peekRemaining(t, bin, env); r != 0 {
		t.Fatalf("peek after the migration: %d remaining, want 0 (state kept)", r)
	}
}
