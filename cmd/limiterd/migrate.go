package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/limiterd/limiter/node"
)

func newMigrateLogCmd(stdout, stderr io.Writer) *cobra.Command {
	var to, dataDir string
	var f nodeFlags
	cmd := &cobra.Command{
		Use:   "migrate-log --to bolt|wal --data-dir DIR",
		Short: "Convert a stopped member's Raft log to the other log store (offline)",
		Long: `migrate-log converts a stopped member's Raft log and stable store between raft-boltdb
(bolt: DIR/raft.db) and raft-wal (wal: DIR/wal/). It copies every entry and value into a new store
beside the old one, reopens the copy and compares it entry by entry, and only then switches
node.json to it. The old files are kept as raft.db.migrated or wal.migrated: delete them once the
member has rejoined its cluster. Interrupted at any point, the data dir starts as before (or, past
the switch, on the new store). Snapshots are shared by both stores and are not touched.

Stop the member first: migrate-log refuses a data dir in use. The member then starts on the new
store without --log-store (or with the new value). Migrate one member at a time, waiting for it
to catch up, so the cluster keeps its quorum.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" {
				return fmt.Errorf("--data-dir is required")
			}
			log, err := newLogger(stderr, f.logLevel, f.logFormat)
			if err != nil {
				return err
			}
			rep, err := node.MigrateLog(dataDir, to, log)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "migrated the Raft log of %s from %s to %s in %s: entries %d..%d\n", dataDir, rep.From, rep.To, rep.Took.Round(1e6), rep.First, rep.Last)
			fmt.Fprintf(stdout, "  live:         %s\n  old, kept at: %s (delete it once the member has rejoined)\n", rep.Path, rep.Backup)
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the log store to convert to: bolt or wal (required)")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the stopped member's data dir (required)")
	addLogFlags(cmd.Flags(), &f)
	_ = cmd.MarkFlagRequired("to")
	return cmd
}
