package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/limiterd/limiter/fsm"
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
		"bad log store":      {[]string{"--id", "n1", "--raft-addr", "127.0.0.1:1", "--data-dir", t.TempDir(), "--log-store", "sqlite"}, "--log-store \"sqlite\": want bolt or wal"},
		"tiny wal segments":  {[]string{"--id", "n1", "--raft-addr", "127.0.0.1:1", "--data-dir", t.TempDir(), "--log-store", "wal", "--wal-segment-size", "4KiB"}, "--wal-segment-size"},
		"dev bad log store":  {[]string{"dev", "--log-store", "rocks"}, "--log-store"},
		"migrate without to": {[]string{"migrate-log", "--data-dir", t.TempDir()}, "to"},
		"migrate to nowhere": {[]string{"migrate-log", "--to", "tape", "--data-dir", t.TempDir()}, "want bolt or wal"},
		"migrate no dir":     {[]string{"migrate-log", "--to", "wal"}, "--data-dir is required"},
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

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := t.TempDir() + "/config.yaml"
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfig_FileFillsFlagsBelowEnvAndCommandLineAndDeclaresLimits(t *testing.T) {
	t.Setenv("LIMITERD_RAFT_ADDR", "10.0.0.1:7000")
	p := writeConfig(t, `
id: from-file
raft-addr: 10.9.9.9:7000
data-dir: /var/lib/limiterd
heartbeat-timeout: 2s
limits:
  - name: payments
    rate: 1000
    per: 1m
  - name: login
    rate: 5
    per: 1m
    burst: 10
  - name: checkout
    rate: 100
    per: 1s
    admission: local
    grant_ttl: 3s
`)
	cmd := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
	if err := cmd.ParseFlags([]string{"--data-dir", "/from/flag"}); err != nil {
		t.Fatal(err)
	}
	if err := bindEnv(cmd.Flags(), "LIMITERD"); err != nil {
		t.Fatal(err)
	}
	limits, err := loadConfig(p, cmd.Flags())
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	get := func(name string) string { return cmd.Flags().Lookup(name).Value.String() }
	if get("id") != "from-file" || get("raft-addr") != "10.0.0.1:7000" || get("data-dir") != "/from/flag" || get("heartbeat-timeout") != "2s" {
		t.Fatalf("precedence wrong: id=%s raft-addr=%s data-dir=%s heartbeat=%s", get("id"), get("raft-addr"), get("data-dir"), get("heartbeat-timeout"))
	}
	if len(limits) != 3 || limits[0].Name != "payments" || limits[0].Period != time.Minute || limits[1].Burst != 10 ||
		limits[0].Admission != fsm.AdmitLinearizable || limits[2].Admission != fsm.AdmitLocal || limits[2].GrantTTL != 3*time.Second {
		t.Fatalf("limits %+v", limits)
	}
}

func TestConfig_BadFileNamesTheField(t *testing.T) {
	cases := map[string]struct{ body, want string }{
		"unknown key":     {"datadir: /x\n", `"datadir"`},
		"bad duration":    {"heartbeat-timeout: soon\n", `"heartbeat-timeout"`},
		"bad limit per":   {"limits:\n  - name: a\n    rate: 1\n    per: often\n", "limits[0].per"},
		"bad limit rate":  {"limits:\n  - name: a\n    rate: 0\n    per: 1s\n", "limits[0]"},
		"bad limit name":  {"limits:\n  - name: 'a b'\n    rate: 1\n    per: 1s\n", "limits[0].name"},
		"duplicate limit": {"limits:\n  - {name: a, rate: 1, per: 1s}\n  - {name: a, rate: 2, per: 1s}\n", "limits[1].name"},
		"not yaml":        {"limits: [\n", "config"},
		"bad admission":   {"limits:\n  - {name: a, rate: 1, per: 1s, admission: eventually}\n", "limits[0].admission"},
		"bad grant ttl":   {"limits:\n  - {name: a, rate: 1, per: 1s, admission: local, grant_ttl: 1h}\n", "limits[0] (a)"},
		"ttl not local":   {"limits:\n  - {name: a, rate: 1, per: 1s, grant_ttl: 2s}\n", "limits[0] (a)"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cmd := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
			_, err := loadConfig(writeConfig(t, tc.body), cmd.Flags())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

func TestRun_RefusesANonLoopbackAddressWithoutTLSUnlessInsecure(t *testing.T) {
	cmd := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
	cmd.SetArgs([]string{"--id", "n1", "--raft-addr", "127.0.0.1:0", "--api-addr", "0.0.0.0:0", "--data-dir", t.TempDir(), "--bootstrap", "n1=127.0.0.1:0"})
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "--insecure") || !strings.Contains(err.Error(), "--api-addr") {
		t.Fatalf("got %v, want a refusal naming --api-addr and --insecure", err)
	}
	cmd = newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
	cmd.SetArgs([]string{"--id", "n1", "--raft-addr", "127.0.0.1:7000", "--data-dir", t.TempDir(), "--tls-cert", "x.pem"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "go together") {
		t.Fatalf("got %v, want the TLS flags to be required together", err)
	}
}

func TestVersionFlag(t *testing.T) {
	var out bytes.Buffer
	cmd := newRootCmd(&out, &bytes.Buffer{})
	cmd.SetArgs([]string{"--version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "limiterd version ") || !strings.Contains(out.String(), "revision ") {
		t.Fatalf("--version printed %q", out.String())
	}
}

// JSON logs carry durations as strings a person can read ("1.5s"), not nanoseconds.
func TestJSONLogs_DurationsAsStrings(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(&buf, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("done", "took", 1500*time.Millisecond, "n", 3)
	if !strings.Contains(buf.String(), `"took":"1.5s"`) || !strings.Contains(buf.String(), `"n":3`) {
		t.Fatalf("log line %s", buf.String())
	}
}
