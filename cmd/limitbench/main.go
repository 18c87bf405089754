// Command limitbench is a load generator for a running limiterd cluster. It sends takes,
// TakeMany batches and peeks straight to the leader and reports honest figures: operations and
// decisions per second, allowed/denied, errors by gRPC code, and latency percentiles from a
// log-linear histogram (at most 1% relative error), optionally next to a no-op baseline
// (grpc.health.v1 Health/Check on the same connections) and with an SVG/HTML plot.
//
// Usage:
//
//	limitbench [--addr A,B,C] [--concurrency 64] [--keys 10000] [--mix take=1] [--duration 10s]
//	           [--rate-limit R] [--baseline] [-o text|json] [--plot out.svg] ...
//
// Examples:
//
//	limitbench --baseline                                  # take=1, 64 callers, 10 s, vs Health/Check
//	limitbench --mix takemany=1 --batch 100 --concurrency 16
//	limitbench --mix peek=1 --consistency linearizable
//	limitbench --mix take=8,peek=2 --rate-limit 5000 --plot run.html
//	limitbench --requests 100000 -o json > run.json
//	limitbench --admission local --spread --rate 5000 --keys 10   # local admission on every node
//
// How it measures. limitbench asks every address for Admin.Status to find the leader, then
// opens a few connections to it (min(4, concurrency/16) by default, --conns) and round-robins
// the callers over them; one HTTP/2 connection can bottleneck. It does not use the Go client's
// retry loop: a call that fails is counted under its gRPC code and not retried, and every take
// carries a fresh random request ID. Calls made during --warmup are not counted. In closed loop
// (the default) each caller sends its next call when the previous one returns. With
// --rate-limit R the run is open loop: request i is due at start + i/R, whatever happened
// before, and its latency is measured from that due time, so a stalled server shows up in the
// latency rather than silently lowering the offered load (coordinated omission). The key of
// each call is chosen uniformly among --keys keys ("k0", "k1", ...) by a generator seeded with
// --seed (random when not given, and printed).
//
// Exit status: 0 when the run completed (errors during the run are reported, not fatal), 1 on
// bad flags or when the cluster cannot be reached or set up.
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/limiterd/limiter/fsm"
	"github.com/limiterd/limiter/internal/cli"
	"github.com/limiterd/limiter/internal/version"
)

// defaultAddrs are the API addresses of the three nodes that `limiterd dev` starts.
const defaultAddrs = "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403"

// addrEnv is the environment variable that replaces the default --addr (shared with limitctl).
const addrEnv = "LIMITCTL_ADDR"

// MixEntry is one kind of call in a mix and its relative weight.
type MixEntry struct {
	Op     opKind
	Weight int
}

// Mix is a weighted choice of calls, e.g. take=8,peek=2: each call is a take with probability
// 8/10 and a peek with probability 2/10.
type Mix []MixEntry

// total returns the sum of the weights.
func (m Mix) total() int {
	t := 0
	for _, e := range m {
		t += e.Weight
	}
	return t
}

// has reports whether the mix includes op with a positive weight.
func (m Mix) has(op opKind) bool {
	for _, e := range m {
		if e.Op == op && e.Weight > 0 {
			return true
		}
	}
	return false
}

// validate checks that the mix has at least one call with a positive weight.
func (m Mix) validate() error {
	if m.total() <= 0 {
		return errors.New("the mix has no call with a positive weight")
	}
	return nil
}

// String formats the mix as it is written on the command line, e.g. "take=8,peek=2".
func (m Mix) String() string {
	parts := make([]string, len(m))
	for i, e := range m {
		parts[i] = fmt.Sprintf("%s=%d", e.Op, e.Weight)
	}
	return strings.Join(parts, ",")
}

// mixOps are the kinds of call that --mix accepts (the health check is only for --baseline).
var mixOps = map[string]opKind{"take": opTake, "takemany": opTakeMany, "peek": opPeek}

// maxWeight bounds one weight, so that the sum cannot overflow.
const maxWeight = 1_000_000

// parseMix parses a mix such as "take=1" or "take=8,peek=2". Ops are take, takemany and peek;
// weights are non-negative integers, at least one positive; an op may appear once. A bare op
// ("peek") means weight 1.
func parseMix(s string) (Mix, error) {
	var m Mix
	seen := map[opKind]bool{}
	for _, part := range cli.SplitList(s) {
		name, weight, hasWeight := strings.Cut(part, "=")
		name = strings.ToLower(strings.TrimSpace(name))
		op, ok := mixOps[name]
		if !ok {
			return nil, fmt.Errorf("invalid --mix %q: unknown op %q (want take, takemany or peek)", s, name)
		}
		if seen[op] {
			return nil, fmt.Errorf("invalid --mix %q: %s appears twice", s, name)
		}
		seen[op] = true
		w := 1
		if hasWeight {
			var err error
			w, err = strconv.Atoi(strings.TrimSpace(weight))
			if err != nil || w < 0 || w > maxWeight {
				return nil, fmt.Errorf("invalid --mix %q: weight %q of %s is not an integer from 0 to %d", s, weight, name, maxWeight)
			}
		}
		m = append(m, MixEntry{Op: op, Weight: w})
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("invalid --mix %q: no ops (want e.g. take=1 or take=8,peek=2)", s)
	}
	if m.total() == 0 {
		return nil, fmt.Errorf("invalid --mix %q: every weight is 0", s)
	}
	// Drop zero weights: they are never chosen.
	out := m[:0]
	for _, e := range m {
		if e.Weight > 0 {
			out = append(out, e)
		}
	}
	return out, nil
}

// resolveAddrs returns the node addresses: those of --addr when it was given (flagSet), else
// those of env (LIMITCTL_ADDR) when not blank, else the flag's default. Blanks are trimmed and
// empty entries and duplicates dropped.
func resolveAddrs(flag string, flagSet bool, env string) ([]string, error) {
	return cli.ResolveAddrs(flag, flagSet, env, addrEnv)
}

// flags holds the raw command-line flags; config turns them into a validated Config.
type flags struct {
	addr           string
	concurrency    int
	conns          int
	keys           int
	limit          string
	noSetup        bool
	rate           int64
	per            time.Duration
	burst          int64
	cost           int64
	mix            string
	batch          int
	duration       time.Duration
	requests       int64
	rateLimit      float64
	warmup         time.Duration
	baseline       bool
	consistency    string
	output         string
	plot           string
	seed           uint64
	requestTimeout time.Duration
	admission      string
	grantTTL       time.Duration
	spread         bool
}

// addFlags declares the flags on cmd.
func (f *flags) addFlags(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.addr, "addr", defaultAddrs, "node API addresses, comma-separated (when not given: $"+addrEnv+" if set, else this default)")
	fs.IntVarP(&f.concurrency, "concurrency", "c", 64, "concurrent callers")
	fs.IntVar(&f.conns, "conns", 0, "gRPC connections to the leader, round-robined over the callers (0: min(4, concurrency/16), at least 1)")
	fs.IntVar(&f.keys, "keys", 10000, "distinct keys, chosen uniformly at random")
	fs.StringVar(&f.limit, "limit", "bench", "the limit to take from and peek at")
	fs.BoolVar(&f.noSetup, "no-setup", false, "use the limit as it is instead of creating or setting it with --rate/--per/--burst")
	fs.Int64Var(&f.rate, "rate", 1_000_000_000, "the limit's rate: tokens per --per (the default makes takes mostly allowed)")
	fs.DurationVar(&f.per, "per", time.Second, "the limit's refill period")
	fs.Int64Var(&f.burst, "burst", 0, "the limit's burst capacity (0: the rate)")
	fs.Int64Var(&f.cost, "cost", 1, "tokens per take, per TakeMany item and per peek")
	fs.StringVar(&f.mix, "mix", "take=1", "calls and weights: take, takemany, peek, e.g. take=8,peek=2")
	fs.IntVar(&f.batch, "batch", 100, fmt.Sprintf("items per TakeMany call (1 to %d)", fsm.MaxItems))
	fs.DurationVarP(&f.duration, "duration", "d", 10*time.Second, "measured time, after the warmup")
	fs.Int64VarP(&f.requests, "requests", "n", 0, "measured requests instead of --duration")
	fs.Float64Var(&f.rateLimit, "rate-limit", 0, "offered requests per second in total (open loop, latency from the intended send time); 0: closed loop")
	fs.DurationVar(&f.warmup, "warmup", time.Second, "time to run before measuring (not counted)")
	fs.BoolVar(&f.baseline, "baseline", false, "first run a no-op baseline (grpc.health.v1 Health/Check, same connections, concurrency and duration) and report ratios to it")
	fs.StringVar(&f.consistency, "consistency", "linearizable", "consistency of peeks: linearizable or stale")
	fs.StringVarP(&f.output, "output", "o", "text", "report format: text or json")
	fs.StringVar(&f.plot, "plot", "", "write latency plots to this file (.svg, or .html with the report)")
	fs.Uint64Var(&f.seed, "seed", 0, "seed of the key and op choice (default: random, printed)")
	fs.DurationVar(&f.requestTimeout, "request-timeout", 10*time.Second, "deadline of each call (a call that runs out counts as DeadlineExceeded)")
	fs.StringVar(&f.admission, "admission", "linearizable", "the limit's admission mode when set up: linearizable or local (takes answered from escrow on the node called)")
	fs.DurationVar(&f.grantTTL, "grant-ttl", 0, "with --admission local: the grant TTL (0: the server's default)")
	fs.BoolVar(&f.spread, "spread", false, "spread the callers over every node (one connection each) instead of sending everything to the leader")
}

// config validates the flags and returns the run's Config. changed reports whether a flag was
// given on the command line; getenv reads the environment.
func (f *flags) config(changed func(string) bool, getenv func(string) string) (Config, error) {
	var cfg Config
	addrs, err := resolveAddrs(f.addr, changed("addr"), getenv(addrEnv))
	if err != nil {
		return cfg, err
	}
	mix, err := parseMix(f.mix)
	if err != nil {
		return cfg, err
	}
	switch {
	case f.concurrency < 1:
		return cfg, fmt.Errorf("invalid --concurrency %d: must be at least 1", f.concurrency)
	case f.conns < 0:
		return cfg, fmt.Errorf("invalid --conns %d: must not be negative", f.conns)
	case f.keys < 1:
		return cfg, fmt.Errorf("invalid --keys %d: must be at least 1", f.keys)
	case f.limit == "":
		return cfg, errors.New("invalid --limit: empty name")
	case f.rate < 1:
		return cfg, fmt.Errorf("invalid --rate %d: must be at least 1", f.rate)
	case f.per <= 0:
		return cfg, fmt.Errorf("invalid --per %s: must be positive", f.per)
	case f.burst < 0:
		return cfg, fmt.Errorf("invalid --burst %d: must not be negative", f.burst)
	case f.cost < 1:
		return cfg, fmt.Errorf("invalid --cost %d: must be at least 1", f.cost)
	case !f.noSetup && f.cost > effectiveBurst(f.rate, f.burst):
		return cfg, fmt.Errorf("invalid --cost %d: above the burst %d, every take would be refused", f.cost, effectiveBurst(f.rate, f.burst))
	case f.batch < 1 || f.batch > fsm.MaxItems:
		return cfg, fmt.Errorf("invalid --batch %d: must be from 1 to %d", f.batch, fsm.MaxItems)
	case f.requests < 0:
		return cfg, fmt.Errorf("invalid --requests %d: must not be negative", f.requests)
	case f.requests > 0 && changed("duration"):
		return cfg, errors.New("give --duration or --requests, not both")
	case f.requests == 0 && f.duration <= 0:
		return cfg, fmt.Errorf("invalid --duration %s: must be positive", f.duration)
	case f.rateLimit < 0 || f.rateLimit != f.rateLimit || f.rateLimit > 1e9:
		return cfg, fmt.Errorf("invalid --rate-limit %v: must be from 0 (closed loop) to 1e9 requests/s", f.rateLimit)
	case f.warmup < 0:
		return cfg, fmt.Errorf("invalid --warmup %s: must not be negative", f.warmup)
	case f.consistency != "linearizable" && f.consistency != "stale":
		return cfg, fmt.Errorf("invalid --consistency %q: want linearizable or stale", f.consistency)
	case f.output != "text" && f.output != "json":
		return cfg, fmt.Errorf("invalid --output %q: want text or json", f.output)
	case f.requestTimeout <= 0:
		return cfg, fmt.Errorf("invalid --request-timeout %s: must be positive", f.requestTimeout)
	case f.admission != "linearizable" && f.admission != "local":
		return cfg, fmt.Errorf("invalid --admission %q: want linearizable or local", f.admission)
	case f.grantTTL != 0 && f.admission != "local":
		return cfg, errors.New("--grant-ttl applies to --admission local")
	case f.noSetup && (changed("admission") || changed("grant-ttl")):
		return cfg, errors.New("--admission and --grant-ttl set the limit up; they do nothing with --no-setup")
	}
	if err := fsm.CheckName(f.limit); err != nil {
		return cfg, fmt.Errorf("invalid --limit %q: %w", f.limit, err)
	}
	if f.plot != "" {
		if _, err := plotFormat(f.plot); err != nil {
			return cfg, err
		}
	}
	if f.consistency == "stale" && !mix.has(opPeek) {
		return cfg, errors.New("--consistency stale applies to peeks, but the mix has none")
	}
	seed := f.seed
	if !changed("seed") {
		seed = randomSeed()
	}
	cfg = Config{
		Addrs: addrs, Concurrency: f.concurrency, Conns: f.conns, Keys: f.keys,
		Limit: f.limit, Setup: !f.noSetup, Rate: f.rate, Per: f.per, Burst: f.burst,
		Cost: f.cost, Mix: mix, Batch: f.batch, Duration: f.duration, Requests: f.requests,
		RateLimit: f.rateLimit, Warmup: f.warmup, Baseline: f.baseline, Stale: f.consistency == "stale",
		RequestTimeout: f.requestTimeout, Seed: seed, Admission: f.admission, GrantTTL: f.grantTTL, Spread: f.spread,
	}
	if cfg.Requests > 0 {
		cfg.Duration = 0
	}
	return cfg, nil
}

// effectiveBurst returns the burst a limit gets: burst, or rate when burst is 0.
func effectiveBurst(rate, burst int64) int64 {
	if burst == 0 {
		return rate
	}
	return burst
}

// randomSeed returns a random seed of at most 48 bits, short enough to copy from the output.
func randomSeed() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:]) >> 16
}

// plotFormat returns "svg" or "html" from the plot file's extension.
func plotFormat(path string) (string, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".svg":
		return "svg", nil
	case ".html", ".htm":
		return "html", nil
	}
	return "", fmt.Errorf("invalid --plot %q: the file name must end in .svg or .html", path)
}

// usageError marks an error in how limitbench was invoked; it is followed by the usage.
type usageError struct{ err error }

// Error returns the wrapped error's message.
func (e usageError) Error() string { return e.err.Error() }

// Unwrap returns the wrapped error.
func (e usageError) Unwrap() error { return e.err }

// newRootCmd builds the limitbench command, writing the report to stdout and the progress,
// warnings and errors to stderr (stderrTTY: stderr is a terminal, so progress redraws a line).
func newRootCmd(stdout, stderr io.Writer, stderrTTY bool, getenv func(string) string) *cobra.Command {
	f := &flags{}
	cmd := &cobra.Command{
		Use:     "limitbench",
		Version: version.Get().String(),
		Short:   "Load generator for a limiterd cluster",
		Long: `limitbench drives a running limiterd cluster and reports throughput (operations and
decisions per second), allowed/denied, errors by gRPC code and latency percentiles.

Calls go straight to the leader (found with Admin.Status) over a few connections; a failed
call is counted, not retried, and every take has a fresh request ID. Closed loop by default;
--rate-limit R sends on a fixed schedule and measures latency from the intended send time.
--baseline first runs grpc.health.v1 Health/Check the same way and reports ratios to it.`,
		Example: `  limitbench --baseline
  limitbench --mix takemany=1 --batch 100 --concurrency 16
  limitbench --mix peek=1 --consistency stale -o json
  limitbench --mix take=8,peek=2 --rate-limit 5000 --duration 30s --plot run.html
  limitbench --admission local --spread --rate 5000 --keys 10 --baseline`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unexpected argument %q: limitbench takes flags only", args[0])}
			}
			return nil
		},
		SilenceUsage:      true,
		SilenceErrors:     true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.config(cmd.Flags().Changed, getenv)
			if err != nil {
				return fmt.Errorf("%w (see limitbench --help)", err)
			}
			cfg.Progress, cfg.ProgressTTY = stderr, stderrTTY
			return execute(cmd.Context(), cfg, f.output, f.plot, stdout, stderr)
		},
	}
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	f.addFlags(cmd)
	return cmd
}

// execute runs the benchmark with cfg and writes the report (and the plot, when asked).
func execute(ctx context.Context, cfg Config, output, plot string, stdout, stderr io.Writer) error {
	loop := "closed loop"
	if cfg.openLoop() {
		loop = fmt.Sprintf("open loop at %s req/s", fmtFloat(cfg.RateLimit))
	}
	fmt.Fprintf(stderr, "limitbench: mix %s, %d callers, %s, %d keys, seed %d\n", cfg.Mix, cfg.Concurrency, loop, cfg.Keys, cfg.Seed)
	res, err := run(ctx, cfg)
	if err != nil {
		return err
	}
	if res.Main == nil {
		return errInterrupted
	}
	for _, w := range warnings(res) {
		fmt.Fprintf(stderr, "limitbench: warning: %s\n", w)
	}
	if output == "json" {
		err = writeJSON(stdout, res)
	} else {
		err = writeText(stdout, res)
	}
	if err != nil {
		return fmt.Errorf("write the report: %w", err)
	}
	if plot != "" {
		if err := writePlotFile(plot, res); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "limitbench: wrote %s\n", plot)
	}
	return nil
}

// runCLI runs limitbench with args and returns the exit status.
func runCLI(ctx context.Context, args []string, stdout, stderr io.Writer, stderrTTY bool, getenv func(string) string) int {
	cmd := newRootCmd(stdout, stderr, stderrTTY, getenv)
	if args == nil {
		args = []string{} // nil would make cobra read os.Args
	}
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(stderr, "limitbench: %s\n", err)
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "\n%s", cmd.UsageString())
		}
		return 1
	}
	return 0
}

// main runs limitbench; Ctrl-C stops the run early and still reports what was measured.
func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runCLI(ctx, os.Args[1:], os.Stdout, os.Stderr, isTerminal(os.Stderr), os.Getenv)
	stop()
	os.Exit(code)
}
