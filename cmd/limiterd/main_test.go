package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestEnv_FillsFlagsNotGivenOnTheCommandLine(t *testing.T) {
	t.Setenv("LIMITERD_DATA_DIR", "/from/env")
	t.Setenv("LIMITERD_ID", "env-id")
	t.Setenv("LIMITERD_HEARTBEAT_TIMEOUT", "750ms")
	cmd := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
	if err := cmd.ParseFlags([]string{"--id", "flag-id"}); err != nil {
		t.Fatal(err)
	}
	if err := bindEnv(cmd.Flags(), "LIMITERD"); err != nil {
		t.Fatal(err)
	}
	get := func(name string) string { return cmd.Flags().Lookup(name).Value.String() }
	if get("id") != "flag-id" {
		t.Errorf("--id %q: the command line must win over LIMITERD_ID", get("id"))
	}
	if get("data-dir") != "/from/env" {
		t.Errorf("--data-dir %q, want it from LIMITERD_DATA_DIR", get("data-dir"))
	}
	if get("heartbeat-timeout") != "750ms" {
		t.Errorf("--heartbeat-timeout %q, want 750ms from the environment", get("heartbeat-timeout"))
	}
}

func TestEnv_BadValueNamesTheVariable(t *testing.T) {
	t.Setenv("LIMITERD_HEARTBEAT_TIMEOUT", "soon")
	cmd := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
	if err := bindEnv(cmd.Flags(), "LIMITERD"); err == nil || !strings.Contains(err.Error(), "LIMITERD_HEARTBEAT_TIMEOUT") {
		t.Fatalf("got %v, want an error naming LIMITERD_HEARTBEAT_TIMEOUT", err)
	}
}

func TestRun_MissingOrConflictingFlagsAreClearErrors(t *testing.T) {
	cases := map[string]struct {
		args []string
		want string
	}{
		"no id":              {[]string{"--raft-addr", "127.0.0.1:1", "--data-dir", "x"}, "--id is required"},
		"no data dir":        {[]string{"--id", "n1", "--raft-addr", "127.0.0.1:1"}, "--data-dir is required"},
		"bootstrap and join": {[]string{"--id", "n1", "--raft-addr", "127.0.0.1:1", "--data-dir", t.TempDir(), "--bootstrap", "n1=127.0.0.1:1", "--join", "127.0.0.1:2"}, "exclusive"},
		"bad bootstrap":      {[]string{"--id", "n1", "--raft-addr", "127.0.0.1:1", "--data-dir", t.TempDir(), "--bootstrap", "n1"}, "--bootstrap"},
		"bad log level":      {[]string{"--log-level", "loud"}, "--log-level"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cmd := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
			cmd.SetArgs(tc.args)
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
