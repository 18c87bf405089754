package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/limiterd/limiter/member"
	"github.com/limiterd/limiter/node"
)

// Dev-cluster addresses: limitctl's default --addr is the three API addresses.
const (
	devAPIBase     = 7401
	devRaftBase    = 7411
	devMetricsBase = 9401
	devNodes       = 3
)

func newDevCmd(stdout, stderr io.Writer) *cobra.Command {
	var f nodeFlags
	var dataDir string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a 3-node cluster on 127.0.0.1 in one process, for development",
		Long: fmt.Sprintf(`dev runs three members in one process: gRPC on 127.0.0.1:%d-%d, Raft on
127.0.0.1:%d-%d. Data goes to a fresh temporary folder (removed on exit), or to --data-dir, where
a later run picks up the same state. Plaintext and loopback only: never expose it.`,
			devAPIBase, devAPIBase+devNodes-1, devRaftBase, devRaftBase+devNodes-1),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDev(cmd.Context(), f, dataDir, stdout, stderr)
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "keep the cluster's data here (default: a temporary folder removed on exit)")
	cmd.Flags().IntVar(&f.inflight, "inflight-batches", 1, "batch entries of takes in flight at once (group commit)")
	cmd.Flags().BoolVar(&f.pprof, "pprof", false, fmt.Sprintf("serve Go's profiler at http://127.0.0.1:%d/debug/pprof/ (the whole process: all three members)", devMetricsBase))
	addLogFlags(cmd.Flags(), &f)
	return cmd
}

func runDev(ctx context.Context, f nodeFlags, dataDir string, stdout, stderr io.Writer) error {
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
		peers = append(peers, node.Peer{ID: fmt.Sprintf("n%d", i+1), RaftAddr: fmt.Sprintf("127.0.0.1:%d", devRaftBase+i)})
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
		cfg.MaxInflightBatches = f.inflight
		wg.Add(1)
		go func() {
			defer wg.Done()
			ins[i], errs[i] = member.Start(ctx, member.Config{Node: cfg, APIListen: fmt.Sprintf("127.0.0.1:%d", devAPIBase+i),
				MetricsAddr: fmt.Sprintf("127.0.0.1:%d", devMetricsBase+i), Pprof: f.pprof && i == 0, Logger: log})
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
		fmt.Fprintf(stdout, "  %s  gRPC %s  Raft %s  metrics http://127.0.0.1:%d/metrics\n", in.Node.ID(), in.APIAddr(), in.Node.RaftAddr(), devMetricsBase+i)
	}
	fmt.Fprintf(stdout, "  data: %s\n", dataDir)
	if id, err := waitLeader(ctx, ins, 15*time.Second); err != nil {
		return err
	} else {
		fmt.Fprintf(stdout, "ready: leader is %s. Try:\n  go run ./cmd/limitctl limit set demo --rate 5 --per 1m\n  go run ./cmd/limitctl take demo user:1\n  go run ./cmd/limitctl member list\nCtrl-C stops the cluster.\n", id)
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
