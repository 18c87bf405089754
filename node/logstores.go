package node

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"go.etcd.io/bbolt"
)

// The Raft log store kinds. Each data dir holds one, recorded in node.json; see DESIGN.md
// ("Log stores") for how they differ and what each does with a damaged file.
const (
	// LogStoreBolt is raft-boltdb/v2: one bbolt file, raft.db. The default for a new data dir.
	LogStoreBolt = "bolt"
	// LogStoreWAL is hashicorp/raft-wal: segment files and a small bbolt meta db in wal/.
	LogStoreWAL = "wal"
)

// ValidLogStore reports whether s names a log store kind ("" means: the data dir's own, or bolt
// for a new one).
func ValidLogStore(s string) bool { return s == "" || s == LogStoreBolt || s == LogStoreWAL }

// storePath is where a kind's live files are in a data dir.
func storePath(dir, kind string) string {
	if kind == LogStoreWAL {
		return filepath.Join(dir, "wal")
	}
	return filepath.Join(dir, "raft.db")
}

// tmpPath is where a migration builds a kind's files before they are proven; backupPath is where
// the other kind's files are kept after it (until the operator deletes them).
func tmpPath(dir, kind string) string    { return storePath(dir, kind) + ".migrating" }
func backupPath(dir, kind string) string { return storePath(dir, kind) + ".migrated" }

func otherKind(kind string) string {
	if kind == LogStoreWAL {
		return LogStoreBolt
	}
	return LogStoreWAL
}

// hasStore reports whether a kind's live files exist in dir (an empty raft.db, left by a bolt
// open that failed before writing, does not count).
func hasStore(dir, kind string) bool {
	fi, err := os.Stat(storePath(dir, kind))
	if err != nil {
		return false
	}
	if kind == LogStoreWAL {
		return fi.IsDir()
	}
	return fi.Size() > 0
}

// resolveLogStore decides which log store a data dir uses: the one node.json records (a data
// dir from before the choice existed holds raft.db, or nothing), or want for a new data dir.
// It refuses a want that differs from what the data dir holds, and a data dir holding the live
// files of both kinds, naming the files and the fix: starting empty beside an existing log
// would be a member that forgot what it acknowledged. It also finishes a migration that
// committed (migrate.go) but was interrupted before tidying up.
func resolveLogStore(dir string, meta *nodeMeta, want string, log *slog.Logger) (kind string, changed bool, err error) {
	if err := finishMigration(dir, meta, log); err != nil {
		return "", false, err
	}
	kind = meta.LogStore
	if kind == "" {
		switch bolt, w := hasStore(dir, LogStoreBolt), hasStore(dir, LogStoreWAL); {
		case bolt && w:
			return "", false, fmt.Errorf("data dir %s holds both a bolt log (%s) and a wal log (%s), and node.json does not say which is live: move the one that is not aside",
				dir, storePath(dir, LogStoreBolt), storePath(dir, LogStoreWAL))
		case bolt:
			kind = LogStoreBolt
		case w:
			kind = LogStoreWAL
		}
	}
	if kind == "" { // a new data dir
		kind = want
		if kind == "" {
			kind = LogStoreBolt
		}
		meta.LogStore = kind
		return kind, true, nil
	}
	if want != "" && want != kind {
		return "", false, fmt.Errorf("data dir %s holds a %s Raft log (%s), not %s: start without --log-store (or with --log-store %s), or convert it while the node is stopped: limiterd migrate-log --to %s --data-dir %s",
			dir, kind, storePath(dir, kind), want, kind, want, dir)
	}
	if other := otherKind(kind); hasStore(dir, other) {
		return "", false, fmt.Errorf("data dir %s uses a %s Raft log (%s, per node.json) but also holds a %s log (%s): move %s aside (it is not read) and start again",
			dir, kind, storePath(dir, kind), other, storePath(dir, other), storePath(dir, other))
	}
	changed = meta.LogStore != kind
	meta.LogStore = kind
	return kind, changed, nil
}

// openLogStore opens (or creates) a Raft log and stable store of the given kind at path (its
// storePath in a data dir, or a migration's copy), refusing damaged files with an error that
// names them.
func openLogStore(path, kind string, o storeOptions, hl hclog.Logger) (raftStore, string, error) {
	switch kind {
	case LogStoreBolt:
		if err := checkBoltFile(path); err != nil {
			return nil, path, err
		}
		s, err := raftboltdb.New(raftboltdb.Options{
			Path:        path,
			NoSync:      o.noSync,
			BoltOptions: &bbolt.Options{Timeout: 2 * time.Second},
		})
		if err != nil {
			return nil, path, fmt.Errorf("open raft log %s: %w", path, err)
		}
		return s, path, nil
	case LogStoreWAL:
		// raft-wal always syncs: noSync does not apply.
		if err := os.MkdirAll(path, 0o750); err != nil {
			return nil, path, fmt.Errorf("create raft log dir %s: %w", path, err)
		}
		if err := checkWALDir(path); err != nil {
			return nil, path, err
		}
		meta := &metadb.BoltMetaDB{}
		size := o.segmentSize
		if size <= 0 {
			size = wal.DefaultSegmentSize
		}
		w, err := wal.Open(path, wal.WithLogger(hl.Named("wal")), wal.WithMetaStore(meta), wal.WithSegmentSize(size))
		if err != nil {
			_ = meta.Close()
			return nil, path, fmt.Errorf("open raft log %s: %w; restore the node from a backup or replace it with a new member", path, err)
		}
		return &walStore{WAL: w, meta: meta}, path, nil
	}
	return nil, path, fmt.Errorf("unknown log store %q (want %s or %s)", kind, LogStoreBolt, LogStoreWAL)
}

// storeOptions tune a log store: noSync (bolt only, tests) and the WAL's segment size (0: raft-wal's
// 64 MiB).
type storeOptions struct {
	noSync      bool
	segmentSize int
}

// walStore closes the meta db it gave raft-wal when Open fails after opening it (so the file
// lock is not held by this process for good); WAL.Close closes it otherwise, and a second
// close is harmless.
type walStore struct {
	*wal.WAL
	meta *metadb.BoltMetaDB
}

func (w *walStore) Close() error {
	return errors.Join(w.WAL.Close(), w.meta.Close())
}

// errLocked is returned when another process holds a data dir.
var errLocked = errors.New("in use by another process")
