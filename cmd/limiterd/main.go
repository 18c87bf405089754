// Command limiterd runs a member of a Raft-replicated token-bucket rate limiter, or, with
// `limiterd dev`, a whole 3-node cluster on 127.0.0.1 in one process.
//
// Every flag can also be given as an environment variable: LIMITERD_ plus the flag name in
// upper case with dashes as underscores (--data-dir is LIMITERD_DATA_DIR). A flag on the
// command line wins over the environment.
package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/limiterd/limiter/certs"
	"github.com/limiterd/limiter/envoyrls"
	"github.com/limiterd/limiter/fsm"
	"github.com/limiterd/limiter/internal/cli"
	"github.com/limiterd/limiter/internal/version"
	"github.com/limiterd/limiter/member"
	"github.com/limiterd/limiter/node"
	"github.com/limiterd/limiter/server"
)

func main() {
	if err := newRootCmd(os.Stdout, os.Stderr).Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "limiterd: %v\n", err)
		os.Exit(1)
	}
}

// nodeFlags are the flags of one member.
type nodeFlags struct {
	id, raftAddr, raftBind, apiAddr, apiAdvertise, dataDir, bootstrap, join string
	logLevel, logFormat, raftLogLevel                                       string
	heartbeat                                                               time.Duration
	peerAddrs, clockSkewFile                                                string
	inflight, maxAppend, logCache                                           int
	dedupMemory, logStore, walSegment                                       string
	metricsAddr, configFile, envoyConfig                                    string
	envoyHeaders, insecure, pprof                                           bool
	tls                                                                     certs.Files
	clientAuth, adminTokenFile, adminIDs, nodeIDs                           string
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	var f nodeFlags
	root := &cobra.Command{
		Use:     "limiterd",
		Version: version.Get().String(),
		Short:   "Run a member of a Raft-replicated, strongly consistent rate limiter",
		Long: `limiterd runs one member of a limiter cluster. Start three (or five) with the same
--bootstrap list to create a cluster; later members --join it. A member restarted on its data dir
rejoins with its state; no bootstrap or join flag is needed then.

Every flag may be set as LIMITERD_<FLAG> in the environment (e.g. LIMITERD_DATA_DIR).
For a local 3-node cluster in one process, run: limiterd dev`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return bindEnv(cmd.Flags(), "LIMITERD")
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			var limits []server.LimitDecl
			if f.configFile != "" {
				var err error
				if limits, err = loadConfig(f.configFile, cmd.Flags()); err != nil {
					return err
				}
			}
			return runNode(cmd.Context(), f, limits, stdout, stderr)
		},
	}
	fl := root.Flags()
	fl.StringVar(&f.id, "id", "", "this node's stable ID (required)")
	fl.StringVar(&f.raftAddr, "raft-addr", "", "Raft address advertised to peers, host:port (required)")
	fl.StringVar(&f.raftBind, "raft-bind", "", "Raft listen address when it differs from --raft-addr (e.g. 0.0.0.0:7000)")
	fl.StringVar(&f.apiAddr, "api-addr", "127.0.0.1:7400", "gRPC listen address")
	fl.StringVar(&f.apiAdvertise, "api-advertise", "", "gRPC address other nodes and clients use to reach this one (default: --api-addr, or its port on --raft-addr's host when --api-addr is a wildcard)")
	fl.StringVar(&f.dataDir, "data-dir", "", "directory for the Raft log, snapshots and node.json (required)")
	addLogStoreFlag(fl, &f)
	fl.StringVar(&f.bootstrap, "bootstrap", "", "create a new cluster with these voters: id=raft-host:port,... (must include this node; ignored when the data dir has state)")
	fl.StringVar(&f.join, "join", "", "join an existing cluster by asking any of these members' gRPC addresses: host:port,...")
	addLogFlags(fl, &f)
	addTuningFlags(fl, &f)
	fl.StringVar(&f.dedupMemory, "dedup-memory", "512MiB", "memory for the exactly-once table: it holds this over 64 bytes of request IDs (512MiB: 8.4 million, a 2-minute window at 69,000 takes/s); the same on every member")
	fl.StringVar(&f.configFile, "config", "", "YAML file with flag values (keys are the flag names) and `limits` to create: [{name, rate, per, burst}]")
	fl.StringVar(&f.tls.Cert, "tls-cert", "", "serve gRPC over TLS with this certificate (PEM), and run Raft over mutual TLS with it")
	fl.StringVar(&f.tls.Key, "tls-key", "", "key of --tls-cert (PEM)")
	fl.StringVar(&f.tls.CA, "tls-ca", "", "the cluster CA (PEM): peers' and clients' certificates must be signed by it")
	fl.StringVar(&f.clientAuth, "tls-client-auth", "verify-if-given", "gRPC client certificates: none, verify-if-given or require")
	fl.StringVar(&f.adminTokenFile, "admin-token-file", "", "admin calls (limits, membership, leadership, snapshots) may present this file's token as \"authorization: Bearer TOKEN\"")
	fl.StringVar(&f.adminIDs, "admin-identities", "admin", "with TLS: client-certificate names (CN or DNS) allowed to make admin calls, comma-separated")
	fl.StringVar(&f.nodeIDs, "node-identities", "limiterd-node", "with TLS: certificate names (CN or DNS) of the members: only they may exchange Raft messages, and they may call each other's admin plane; comma-separated")
	fl.BoolVar(&f.insecure, "insecure", false, "allow listening on a non-loopback address without TLS (plaintext, unauthenticated)")
	fl.StringVar(&f.envoyConfig, "envoy-config", "", "serve Envoy's rate limit service (envoy.service.ratelimit.v3) with these envoyproxy/ratelimit YAML files, one domain each: FILE,...")
	fl.BoolVar(&f.envoyHeaders, "envoy-headers", false, "add X-RateLimit-Limit/Remaining/Reset headers to Envoy rate limit responses")
	fl.BoolVar(&f.pprof, "pprof", false, "also serve Go's profiler at http://METRICS-ADDR/debug/pprof/ (needs --metrics-addr)")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics (and /healthz), e.g. 127.0.0.1:9400; off when empty")
	fl.DurationVar(&f.heartbeat, "heartbeat-timeout", time.Second, "Raft heartbeat and election timeout")
	fl.StringVar(&f.peerAddrs, "raft-peer-addrs", "", "dial these addresses for these peers instead of their advertised Raft addresses: id=host:port,... (NAT, or a proxy per link)")
	fl.StringVar(&f.clockSkewFile, "clock-skew-file", "", "testing only: skew this node's clocks as a JSON file says ({\"offset_ns\":N,\"drift_ppm\":N}), re-read every 20ms")
	_ = fl.MarkHidden("clock-skew-file")

	root.AddCommand(newDevCmd(stdout, stderr), newMigrateLogCmd(stdout, stderr))
	root.SetOut(stdout) // --version and help
	root.SetErr(stderr)
	return root
}

func addLogStoreFlag(fl *pflag.FlagSet, f *nodeFlags) {
	fl.StringVar(&f.logStore, "log-store", "", "Raft log store for a new data dir: bolt (raft-boltdb, the default) or wal (raft-wal: faster commits); an existing data dir keeps its own, and another value is refused (convert with limiterd migrate-log)")
	fl.StringVar(&f.walSegment, "wal-segment-size", "64MiB", "with --log-store wal: size of each log segment file (preallocated; the log is compacted a segment at a time)")
}

// addTuningFlags declares the commit path's knobs (BENCHMARKS.md measures them).
func addTuningFlags(fl *pflag.FlagSet, f *nodeFlags) {
	fl.IntVar(&f.inflight, "inflight-batches", 1, "batch entries of takes in flight at once (group commit)")
	fl.IntVar(&f.maxAppend, "raft-max-append-entries", 512, "entries the leader writes in one log write and sends in one AppendEntries (1 to 1024)")
	fl.IntVar(&f.logCache, "raft-log-cache", 256, "keep this many recent log entries in memory in front of the log store, so replication does not read them back (0: none)")
}

// tuningConfig sets the commit path's knobs on cfg.
func tuningConfig(f nodeFlags, cfg *node.Config) {
	cfg.MaxInflightBatches, cfg.MaxAppendEntries, cfg.LogCacheSize = f.inflight, f.maxAppend, f.logCache
}

// logStoreConfig checks --log-store and --wal-segment-size and sets them on cfg.
func logStoreConfig(f nodeFlags, cfg *node.Config) error {
	if !node.ValidLogStore(f.logStore) {
		return fmt.Errorf("--log-store %q: want bolt or wal", f.logStore)
	}
	size, err := cli.ParseSize(f.walSegment)
	if err != nil || size < 1<<20 || size > 1<<30 {
		return fmt.Errorf("--wal-segment-size %q: want 1MiB to 1GiB", f.walSegment)
	}
	cfg.LogStore, cfg.WALSegmentSize = f.logStore, int(size)
	return nil
}

func addLogFlags(fl *pflag.FlagSet, f *nodeFlags) {
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fl.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fl.StringVar(&f.raftLogLevel, "raft-log-level", "warn", "log level of the Raft library")
}

// bindEnv fills every flag not given on the command line from PREFIX_FLAG_NAME.
func bindEnv(fs *pflag.FlagSet, prefix string) error {
	var err error
	fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Changed || err != nil {
			return
		}
		env := prefix + "_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if e := fs.Set(fl.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, e)
			}
		}
	})
	return err
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		// Durations as Go writes them ("1.5s"), not as integer nanoseconds.
		opts.ReplaceAttr = func(_ []string, a slog.Attr) slog.Attr {
			if a.Value.Kind() == slog.KindDuration {
				a.Value = slog.StringValue(a.Value.Duration().String())
			}
			return a
		}
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

func runNode(ctx context.Context, f nodeFlags, limits []server.LimitDecl, stdout, stderr io.Writer) error {
	log, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	for name, v := range map[string]string{"--id": f.id, "--raft-addr": f.raftAddr, "--data-dir": f.dataDir} {
		if v == "" {
			return fmt.Errorf("%s is required (or LIMITERD_%s)", name, strings.ToUpper(strings.ReplaceAll(name[2:], "-", "_")))
		}
	}
	cfg := node.DefaultConfig()
	cfg.ID, cfg.RaftAddr, cfg.RaftBind, cfg.DataDir = f.id, f.raftAddr, f.raftBind, f.dataDir
	cfg.APIAddr = f.apiAdvertise
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = f.heartbeat, f.heartbeat, f.heartbeat/2
	cfg.RaftLogLevel = f.raftLogLevel
	tuningConfig(f, &cfg)
	if err := logStoreConfig(f, &cfg); err != nil {
		return err
	}
	budget, err := cli.ParseSize(f.dedupMemory)
	if err != nil {
		return fmt.Errorf("--dedup-memory: %w", err)
	}
	cfg.FSM.DedupMax = fsm.DedupMaxFor(budget)
	if f.bootstrap != "" {
		if cfg.Bootstrap, err = node.ParsePeers(f.bootstrap); err != nil {
			return fmt.Errorf("--bootstrap: %w", err)
		}
	}
	if f.peerAddrs != "" {
		peers, err := node.ParsePeers(f.peerAddrs)
		if err != nil {
			return fmt.Errorf("--raft-peer-addrs: %w", err)
		}
		cfg.PeerAddrs = map[string]string{}
		for _, p := range peers {
			cfg.PeerAddrs[p.ID] = p.RaftAddr
		}
	}
	if f.clockSkewFile != "" {
		sk := newSkewedClock(ctx, f.clockSkewFile, log)
		cfg.Now, cfg.Mono = sk.now, sk.mono
		log.Warn("clocks skewed from a file: for fault-injection tests only", "file", f.clockSkewFile)
	}
	var join []string
	if f.join != "" {
		if f.bootstrap != "" {
			return fmt.Errorf("--bootstrap and --join are exclusive")
		}
		cfg.Join = true
		join = cli.SplitList(f.join)
	}
	var reloader *certs.Reloader
	clientAuth := tls.VerifyClientCertIfGiven
	if f.tls.Enabled() {
		if f.tls.Cert == "" || f.tls.CA == "" {
			return fmt.Errorf("--tls-cert, --tls-key and --tls-ca go together: members verify each other against the CA")
		}
		if reloader, err = certs.NewReloader(f.tls); err != nil {
			return err
		}
		switch f.clientAuth {
		case "none":
			clientAuth = tls.NoClientCert
		case "verify-if-given":
		case "require":
			clientAuth = tls.RequireAndVerifyClientCert
		default:
			return fmt.Errorf("--tls-client-auth %q: want none, verify-if-given or require", f.clientAuth)
		}
	} else if !f.insecure {
		for name, addr := range map[string]string{"--api-addr": f.apiAddr, "--raft-addr": f.raftAddr, "--raft-bind": f.raftBind, "--metrics-addr": f.metricsAddr} {
			if addr != "" && !cli.IsLoopback(addr) {
				return fmt.Errorf("%s %s is not a loopback address and TLS is off: give --tls-cert, --tls-key and --tls-ca, or --insecure to serve plaintext anyway", name, addr)
			}
		}
	}
	auth := &server.Auth{TokenFile: f.adminTokenFile}
	if reloader != nil {
		auth.Admins, auth.Nodes = cli.SplitList(f.adminIDs), cli.SplitList(f.nodeIDs)
	}
	if auth.TokenFile != "" {
		if _, err := auth.Token(); err != nil {
			return err
		}
	}
	var envoy *envoyrls.Config
	if f.envoyConfig != "" {
		if envoy, err = envoyrls.LoadConfig(cli.SplitList(f.envoyConfig)...); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	in, err := member.Start(ctx, member.Config{Node: cfg, APIListen: f.apiAddr, Join: join, Logger: log,
		MetricsAddr: f.metricsAddr, Pprof: f.pprof, Limits: limits, Envoy: envoy, EnvoyHeaders: f.envoyHeaders,
		TLS: reloader, ClientAuth: clientAuth, Auth: auth})
	if err != nil {
		return err
	}
	log.Info("limiterd serving", "node", cfg.ID, "raft_id", in.Node.ID(), "api", in.APIAddr(), "raft", in.Node.RaftAddr(), "metrics", f.metricsAddr, "data_dir", cfg.DataDir)
	select {
	case <-ctx.Done():
		log.Info("shutting down", "node", cfg.ID)
	case <-in.Failed():
		log.Error("serving failed; shutting down", "node", cfg.ID)
	}
	lctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := in.Leave(lctx); err != nil {
		log.Warn("stopping without a leadership transfer", "err", err)
	}
	if err := in.Stop(5 * time.Second); err != nil {
		return err
	}
	return in.Wait()
}
