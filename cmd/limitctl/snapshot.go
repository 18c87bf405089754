package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/limiterd/limiter/client"
)

// snapshotCmd builds `snapshot save FILE` and `snapshot restore FILE`.
func (a *app) snapshotCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Back up the replicated state to a file, or restore it from one",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	save := &cobra.Command{
		Use:   "save FILE",
		Short: "Write a consistent snapshot of every limit, bucket and recorded request ID to FILE",
		Long: `Take a snapshot on the leader at a linearizable point and write it to FILE (written to a
temporary file first and renamed, so FILE is never half-written). Restore it with
'limitctl snapshot restore FILE'.`,
		Args: exactArgs("FILE"),
		RunE: a.run(func(ctx context.Context, c *client.Client, args []string) error {
			path := args[0]
			tmp, err := os.CreateTemp(filepath.Dir(path), ".limitctl-snapshot-*")
			if err != nil {
				return fmt.Errorf("create %s: %w", path, err)
			}
			defer os.Remove(tmp.Name())
			n, err := c.SaveSnapshot(ctx, tmp)
			if err == nil {
				err = tmp.Sync()
			}
			if cerr := tmp.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), path); err != nil {
				return fmt.Errorf("write %s: %w", path, err)
			}
			return a.emit(map[string]any{"file": path, "bytes": n}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "saved %d bytes to %s\n", n, path)
				return err
			})
		}),
	}
	restore := &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the whole replicated state, on every member, with a snapshot saved earlier",
		Long: `Upload FILE to the leader, which verifies it (nothing changes if it is not a valid snapshot)
and installs it on every member. Everything taken since the snapshot is forgotten, and time
resumes from the snapshot's clock: buckets continue as they were when it was saved.`,
		Args: exactArgs("FILE"),
		RunE: a.run(func(ctx context.Context, c *client.Client, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return fmt.Errorf("open %s: %w", args[0], err)
			}
			defer f.Close()
			resp, err := c.RestoreSnapshot(ctx, f)
			if err != nil {
				return err
			}
			return a.emit(map[string]any{"file": args[0], "bytes": resp.GetBytes(), "limits": resp.GetLimits(), "buckets": resp.GetBuckets()}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "restored %s: %d limits, %d buckets\n", args[0], resp.GetLimits(), resp.GetBuckets())
				return err
			})
		}),
	}
	cmd.AddCommand(save, restore)
	return cmd
}
