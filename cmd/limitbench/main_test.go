package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// TestParseMix checks accepted mixes and the canonical form they print as.
func TestParseMix(t *testing.T) {
	tests := []struct{ in, want string }{
		{"take=1", "take=1"},
		{"take=8,peek=2", "take=8,peek=2"},
		{"takemany=1", "takemany=1"},
		{" Take = 3 , peek=1 ,", "take=3,peek=1"},
		{"peek", "peek=1"},
		{"take=1,peek=0", "take=1"}, // zero weights are dropped
		{"take=1,takemany=1,peek=1", "take=1,takemany=1,peek=1"},
	}
	for _, tt := range tests {
		m, err := parseMix(tt.in)
		if err != nil {
			t.Errorf("parseMix(%q): %v", tt.in, err)
			continue
		}
		if m.String() != tt.want {
			t.Errorf("parseMix(%q) = %s, want %s", tt.in, m, tt.want)
		}
	}
}

// TestParseMixErrors checks that bad mixes give clear errors.
func TestParseMixErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "no ops"},
		{" , ", "no ops"},
		{"tak=1", `unknown op "tak" (want take, takemany or peek)`},
		{"health=1", `unknown op "health"`},
		{"take=x", `weight "x" of take is not an integer`},
		{"take=-1", `weight "-1" of take is not an integer`},
		{"take=1.5", `weight "1.5"`},
		{"take=99999999999", "is not an integer from 0 to 1000000"},
		{"take=1,take=2", "take appears twice"},
		{"take=0,peek=0", "every weight is 0"},
	}
	for _, tt := range tests {
		_, err := parseMix(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parseMix(%q) = %v, want an error containing %q", tt.in, err, tt.want)
		}
	}
}

// TestMixPickFollowsWeights checks that a worker picks ops in proportion to their weights.
func TestMixPickFollowsWeights(t *testing.T) {
	mix, err := parseMix("take=8,peek=2")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Mix: mix, Keys: 10, Limit: "x", Cost: 1, Batch: 1, Seed: 7}
	w := &worker{cfg: cfg, mix: mix}
	w.rng = newWorkerRand(cfg.Seed, 0)
	var n [numOps]int
	for i := 0; i < 100_000; i++ {
		n[w.pick()]++
	}
	if frac := float64(n[opTake]) / 100_000; frac < 0.79 || frac > 0.81 {
		t.Fatalf("take picked %.3f of the time, want 0.8", frac)
	}
	if n[opTakeMany] != 0 || n[opTake]+n[opPeek] != 100_000 {
		t.Fatalf("picked %v", n)
	}
}

// parseFlags runs the flag parsing of the command on args (without running anything) and
// returns the resulting Config or error.
func parseFlags(t *testing.T, env map[string]string, args ...string) (Config, error) {
	t.Helper()
	f := &flags{}
	cmd := &cobra.Command{Use: "limitbench"}
	f.addFlags(cmd)
	if err := cmd.ParseFlags(args); err != nil {
		return Config{}, err
	}
	return f.config(cmd.Flags().Changed, func(k string) string { return env[k] })
}

// TestFlagDefaults checks the defaults: limiterd dev's addresses, 64 callers, 10000 keys,
// take=1, closed loop for 10 s after a 1 s warmup, a limit that mostly allows, a random seed.
func TestFlagDefaults(t *testing.T) {
	cfg, err := parseFlags(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.Addrs, ",") != defaultAddrs || cfg.Concurrency != 64 || cfg.Keys != 10000 ||
		cfg.Mix.String() != "take=1" || cfg.Duration != 10*time.Second || cfg.Warmup != time.Second ||
		cfg.RateLimit != 0 || cfg.Batch != 100 || cfg.Limit != "bench" || !cfg.Setup || cfg.Rate != 1e9 ||
		cfg.Per != time.Second || cfg.Cost != 1 || cfg.Stale || cfg.Baseline {
		t.Fatalf("defaults: %+v", cfg)
	}
	if cfg.leaderConns() != 4 {
		t.Fatalf("leader connections for 64 callers: %d, want 4", cfg.leaderConns())
	}
	if cfg.Seed == 0 {
		t.Fatalf("no random seed chosen")
	}
}

// TestFlagValues checks that flags reach the Config, and LIMITCTL_ADDR replaces the default
// addresses but not an explicit --addr.
func TestFlagValues(t *testing.T) {
	env := map[string]string{addrEnv: "10.0.0.1:1, 10.0.0.2:1"}
	cfg, err := parseFlags(t, env, "--concurrency", "16", "--keys", "5", "--mix", "takemany=1", "--batch", "10",
		"--rate-limit", "500", "--requests", "1000", "--seed", "42", "--consistency", "stale", "--mix", "peek=1",
		"--no-setup", "--baseline", "--plot", "x.html")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.Addrs, ",") != "10.0.0.1:1,10.0.0.2:1" || cfg.Concurrency != 16 || cfg.Keys != 5 ||
		cfg.Mix.String() != "peek=1" || cfg.Batch != 10 || cfg.RateLimit != 500 || cfg.Requests != 1000 ||
		cfg.Duration != 0 || cfg.Seed != 42 || !cfg.Stale || cfg.Setup || !cfg.Baseline || cfg.leaderConns() != 1 {
		t.Fatalf("config: %+v", cfg)
	}
	cfg, err = parseFlags(t, env, "--addr", "a:1,a:1,b:2", "--conns", "3")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.Addrs, ",") != "a:1,b:2" || cfg.leaderConns() != 3 {
		t.Fatalf("addrs %v conns %d", cfg.Addrs, cfg.leaderConns())
	}
}

// TestFlagErrors checks that bad flags give clear errors, never a panic.
func TestFlagErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--mix", "jump=1"}, `unknown op "jump"`},
		{[]string{"--batch", "0"}, "invalid --batch 0: must be from 1 to 1000"},
		{[]string{"--batch", "1001"}, "invalid --batch 1001"},
		{[]string{"--concurrency", "0"}, "invalid --concurrency 0"},
		{[]string{"--keys", "-3"}, "invalid --keys -3"},
		{[]string{"--conns", "-1"}, "invalid --conns -1"},
		{[]string{"--cost", "0"}, "invalid --cost 0"},
		{[]string{"--cost", "11", "--rate", "10"}, "invalid --cost 11: above the burst 10"},
		{[]string{"--rate", "0"}, "invalid --rate 0"},
		{[]string{"--per", "0s"}, "invalid --per 0s"},
		{[]string{"--burst", "-1"}, "invalid --burst -1"},
		{[]string{"--duration", "0s"}, "invalid --duration 0s"},
		{[]string{"--duration", "5s", "--requests", "10"}, "give --duration or --requests, not both"},
		{[]string{"--requests", "-1"}, "invalid --requests -1"},
		{[]string{"--rate-limit", "-5"}, "invalid --rate-limit -5"},
		{[]string{"--rate-limit", "NaN"}, "invalid --rate-limit NaN"},
		{[]string{"--warmup", "-1s"}, "invalid --warmup -1s"},
		{[]string{"--consistency", "eventual"}, `invalid --consistency "eventual"`},
		{[]string{"--consistency", "stale"}, "the mix has none"},
		{[]string{"-o", "yaml"}, `invalid --output "yaml"`},
		{[]string{"--plot", "out.png"}, "must end in .svg or .html"},
		{[]string{"--limit", "no spaces"}, `invalid --limit "no spaces"`},
		{[]string{"--limit", ""}, "invalid --limit: empty name"},
		{[]string{"--addr", " , "}, "no node addresses in --addr"},
		{[]string{"--request-timeout", "0s"}, "invalid --request-timeout 0s"},
	}
	for _, tt := range tests {
		_, err := parseFlags(t, nil, tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: got %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}

// TestCLIErrorsExitOne checks the command line end to end: a bad flag value prints one
// "limitbench: ..." line, a flag that does not parse also prints the usage, and both exit 1
// before contacting any node.
func TestCLIErrorsExitOne(t *testing.T) {
	tests := []struct {
		args  []string
		first string
		usage bool
	}{
		{[]string{"--batch", "0", "--mix", "takemany=1"}, "limitbench: invalid --batch 0: must be from 1 to 1000 (see limitbench --help)", false},
		{[]string{"--mix", "take=1,jump=2"}, `limitbench: invalid --mix "take=1,jump=2": unknown op "jump" (want take, takemany or peek) (see limitbench --help)`, false},
		{[]string{"--bogus"}, "limitbench: unknown flag: --bogus", true},
		{[]string{"extra-arg"}, `limitbench: unexpected argument "extra-arg": limitbench takes flags only`, true},
		{[]string{"--concurrency", "many"}, `limitbench: invalid argument "many" for "-c, --concurrency" flag: strconv.ParseInt: parsing "many": invalid syntax`, true},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := runCLI(context.Background(), tt.args, &stdout, &stderr, false, func(string) string { return "" })
		first, _, _ := strings.Cut(stderr.String(), "\n")
		if code != 1 || first != tt.first || strings.Contains(stderr.String(), "Usage:") != tt.usage || stdout.Len() != 0 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", tt.args, code, stdout.String(), stderr.String())
		}
	}
}

// TestFmt checks the number and latency formats of the text report.
func TestFmt(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{fmtCount(0), "0"}, {fmtCount(999), "999"}, {fmtCount(1000), "1,000"}, {fmtCount(-1234567), "-1,234,567"},
		{fmtFloat(52245.4), "52,245"}, {fmtFloat(3.14159), "3.1"},
		{fmtLatency(87300 * time.Nanosecond), "87.3µs"}, {fmtLatency(1234 * time.Microsecond), "1.23ms"},
		{fmtLatency(2050 * time.Millisecond), "2.05s"}, {fmtLatency(500), "500ns"}, {fmtLatency(0), "0"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}
