package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/limiterd/limiter/envoyrls"
	"github.com/limiterd/limiter/internal/cli"
	"github.com/limiterd/limiter/member"
	"github.com/limiterd/limiter/node"
	"github.com/limiterd/limiter/server"
)

// Dev-cluster addresses, as offsets from --port-base (default 7400): limitctl's default --addr is
// the three API addresses of the default base.
const (
	devPortBase      = 7400
	devAPIOffset     = 1    // gRPC on base+1 .. base+3
	devRaftOffset    = 11   // Raft on base+11 .. base+13
	devMetricsOffset = 2001 // metrics on base+2001 .. base+2003 (9401-9403 by default)
	devNodes         = 3
)

func newDevCmd(stdout, stderr io.Writer) *cobra.Command {
	var f nodeFlags
	var dataDir string
	var base int
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a 3-node cluster on 127.0.0.1 in one process, for development",
		Long: fmt.Sprintf(`dev runs three members in one process: gRPC on 127.0.0.1:%d-%d, Raft on
127.0.0.1:%d-%d, metrics on 127.0.0.1:%d-%d (with --port-base B: B+%d.., B+%d.., B+%d..). Data goes
to a fresh temporary folder (removed on exit), or to --data-dir, where a later run picks up the
same state. Plaintext and loopback only: never expose it.`,
			devPortBase+devAPIOffset, devPortBase+devAPIOffset+devNodes-1, devPortBase+devRaftOffset, devPortBase+devRaftOffset+devNodes-1,
			devPortBase+devMetricsOffset, devPortBase+devMetricsOffset+devNodes-1, devAPIOffset, devRaftOffset, devMetricsOffset),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if base < 1024 || base+devMetricsOffset+devNodes > 65535 {
				return fmt.Errorf("--port-base %d: want 1024 to %d", base, 65535-devMetricsOffset-devNodes)
			}
			if err := logStoreConfig(f, &node.Config{}); err != nil {
				return err
			}
			var limits []server.LimitDecl
			if f.configFile != "" {
				var err error
				if limits, err = loadConfig(f.configFile, cmd.Flags()); err != nil {
					return err
				}
			}
			var envoy *envoyrls.Config
			if f.envoyConfig != "" {
				var err error
				if envoy, err = envoyrls.LoadConfig(cli.SplitList(f.envoyConfig)...); err != nil {
					return err
				}
			}
			return runDev(cmd.Context(), f, devExtras{limits: limits, envoy: envoy}, dataDir, base, stdout, stderr)
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "keep the cluster's data here (default: a temporary folder removed on exit)")
	cmd.Flags().IntVar(&base, "port-base", devPortBase, "move every port: gRPC on base+1..3, Raft on base+11..13, metrics on base+2001..2003 (to run beside another dev cluster or the compose file)")
	addTuningFlags(cmd.Flags(), &f)
	cmd.Flags().BoolVar(&f.pprof, "pprof", false, fmt.Sprintf("serve Go's profiler at http://127.0.0.1:%d/debug/pprof/ (the whole process: all three members; base+2001)", devPortBase+devMetricsOffset))
	cmd.Flags().StringVar(&f.configFile, "config", "", "YAML file with dev's flag values (keys are the flag names) and `limits` to create, as limiterd --config")
	cmd.Flags().StringVar(&f.envoyConfig, "envoy-config", "", "serve Envoy's rate limit service on every member with these envoyproxy/ratelimit YAML files: FILE,...")
	cmd.Flags().BoolVar(&f.envoyHeaders, "envoy-headers", false, "add X-RateLimit-* headers to Envoy rate limit responses")
	addLogStoreFlag(cmd.Flags(), &f)
	addLogFlags(cmd.Flags(), &f)
	return cmd
}

// devExtras are what --config and --envoy-config give every member of a dev cluster.
type devExtras struct {
	limits []server.LimitDecl
	envoy  *envoyrls.Config
}

func runDev(ctx context.Context, f nodeFlags, x devExtras, dataDir string, base int, stdout, stderr io.Writer) error {
	log, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	if dataDir == "" {
		tmp, err := os.MkdirTemp("", "limiterd-dev-")
		if err != nil {
			return fmt.Errorf("create temporary data dir: %w", err)
		}
		defer os.RemoveAll(tmp)
		dataDir = tmp
	}
	var peers []node.Peer
	for i := 0; i < devNodes; i++ {
		peers = append(peers, node.Peer{ID: fmt.Sprintf("n%d", i+1), RaftAddr: fmt.Sprintf("127.0.0.1:%d", base+devRaftOffset+i)})
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The members start together: a new member waits for its bootstrap peers to answer.
	ins := make([]*member.Member, len(peers))
	errs := make([]error, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		cfg := node.DefaultConfig()
		cfg.ID, cfg.RaftAddr, cfg.DataDir, cfg.Bootstrap = p.ID, p.RaftAddr, filepath.Join(dataDir, p.ID), peers
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 250*time.Millisecond
		cfg.RaftLogLevel = f.raftLogLevel
		tuningConfig(f, &cfg)
		_ = logStoreConfig(f, &cfg) // checked above
		wg.Add(1)
		go func() {
			defer wg.Done()
			ins[i], errs[i] = member.Start(ctx, member.Config{Node: cfg, APIListen: fmt.Sprintf("127.0.0.1:%d", base+devAPIOffset+i),
				MetricsAddr: fmt.Sprintf("127.0.0.1:%d", base+devMetricsOffset+i), Pprof: f.pprof && i == 0, Logger: log,
				Limits: x.limits, Envoy: x.envoy, EnvoyHeaders: f.envoyHeaders})
		}()
	}
	wg.Wait()
	defer func() {
		for _, in := range ins {
			if in == nil {
				continue
			}
			if err := in.Stop(2 * time.Second); err != nil {
				log.Warn("stop", "err", err)
			}
		}
	}()
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("start %s: %w", peers[i].ID, err)
		}
	}
	log.Warn("limiterd dev: PLAINTEXT and UNAUTHENTICATED on 127.0.0.1, for development on this machine only")
	fmt.Fprintln(stdout, "limiterd dev: a 3-node cluster on 127.0.0.1 (PLAINTEXT, no authentication: for development only)")
	for i, in := range ins {
		fmt.Fprintf(stdout, "  %s  gRPC %s  Raft %s  metrics http://127.0.0.1:%d/metrics\n", in.Node.ID(), in.APIAddr(), in.Node.RaftAddr(), base+devMetricsOffset+i)
	}
	fmt.Fprintf(stdout, "  data: %s\n", dataDir)
	if id, err := waitLeader(ctx, ins, 15*time.Second); err != nil {
		return err
	} else {
		fmt.Fprintf(stdout, "ready: leader is %s. Try:\n", id)
		if base != devPortBase { // limitctl's default addresses are the default base's
			var addrs []string
			for _, in := range ins {
				addrs = append(addrs, in.APIAddr())
			}
			fmt.Fprintf(stdout, "  export LIMITCTL_ADDR=%s\n", strings.Join(addrs, ","))
		}
		fmt.Fprintln(stdout, "  go run ./cmd/limitctl limit set demo --rate 5 --per 1m\n  go run ./cmd/limitctl take demo user:1\n  go run ./cmd/limitctl member list\nCtrl-C stops the cluster.")
	}
	<-ctx.Done()
	fmt.Fprintln(stdout, "limiterd dev: stopping")
	return nil
}

// waitLeader waits until some member is a ready leader that every member knows by API address.
func waitLeader(ctx context.Context, ins []*member.Member, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, in := range ins {
			if in.Node.IsLeader() {
				ok := true
				for _, o := range ins {
					if _, addr := o.Node.Leader(); addr == "" {
						ok = false
					}
				}
				if ok {
					return in.Node.ID(), nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return "", fmt.Errorf("no leader elected within %v", timeout)
}
