package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	walmigrate "github.com/hashicorp/raft-wal/migrate"
)

// MigrateReport says what MigrateLog did.
type MigrateReport struct {
	From, To    string
	First, Last uint64 // the log's index range (0, 0 when empty)
	Path        string // the new store's files
	Backup      string // the old store's files, kept until the operator deletes them
	Took        time.Duration
}

// migrateStep, when set (tests), is called after each step of a migration: a test kills the
// process there to check that every interruption leaves a data dir that starts.
var migrateStep func(step string)

func stepDone(step string) {
	if migrateStep != nil {
		migrateStep(step)
	}
}

// Stable-store keys hashicorp/raft writes (raft.go: keyCurrentTerm, keyLastVoteTerm,
// keyLastVoteCand); this project writes none of its own.
var (
	stableUint64Keys = []string{"CurrentTerm", "LastVoteTerm"}
	stableBytesKeys  = []string{"LastVoteCand"}
)

// MigrateLog converts a stopped member's Raft log and stable store to the other kind, offline.
// The new store is built beside the old one (under a temporary name), reopened and compared
// entry by entry and key by key with the old, and only then made live by one durable write of
// node.json; the old files are kept (renamed) for the operator to delete once the member has
// rejoined. Interrupted before that write, the data dir is as it was (the partial copy is
// removed by the next migration or start); interrupted after it, the next start or migration
// finishes the renames. Snapshots are not touched: both kinds share them.
func MigrateLog(dir, to string, log *slog.Logger) (MigrateReport, error) {
	rep := MigrateReport{To: to}
	if to != LogStoreBolt && to != LogStoreWAL {
		return rep, fmt.Errorf("--to %q: want %s or %s", to, LogStoreBolt, LogStoreWAL)
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	start := time.Now()
	if _, err := os.Stat(dir); err != nil {
		return rep, fmt.Errorf("data dir: %w", err)
	}
	lock, err := lockDataDir(dir)
	if err != nil {
		return rep, err
	}
	defer lock.Close()
	meta, found, err := readMeta(dir)
	if err != nil {
		return rep, err
	}
	if !found {
		return rep, fmt.Errorf("%s has no node.json: not a limiterd data dir", dir)
	}
	from, changed, err := resolveLogStore(dir, &meta, "", log)
	if err != nil {
		return rep, err
	}
	rep.From = from
	if from == to {
		return rep, fmt.Errorf("data dir %s already uses a %s Raft log (%s)", dir, to, storePath(dir, to))
	}
	if !hasStore(dir, from) {
		return rep, fmt.Errorf("data dir %s holds no Raft log yet (no %s): start the node with --log-store %s instead", dir, storePath(dir, from), to)
	}
	if _, err := os.Stat(backupPath(dir, from)); err == nil {
		return rep, fmt.Errorf("%s exists (a backup from an earlier migration): delete it, or move it away, first", backupPath(dir, from))
	}
	if changed { // record the current kind before anything else exists beside it
		if err := writeMeta(dir, meta); err != nil {
			return rep, err
		}
	}
	tmp := tmpPath(dir, to)
	if err := os.RemoveAll(tmp); err != nil {
		return rep, fmt.Errorf("remove an earlier migration's %s: %w", tmp, err)
	}
	if rep.First, rep.Last, err = copyStore(dir, from, tmp, to); err != nil {
		return rep, err
	}
	stepDone("copied")
	if err := verifyStore(dir, from, tmp, to); err != nil {
		return rep, fmt.Errorf("the copy in %s does not match %s (the data dir is unchanged): %w", tmp, storePath(dir, from), err)
	}
	syncDir(dir)
	stepDone("verified")
	meta.LogStore, meta.MigratedFrom = to, from
	if err := writeMeta(dir, meta); err != nil { // the commit point
		return rep, err
	}
	stepDone("committed")
	if err := finishMigration(dir, &meta, log); err != nil {
		return rep, err
	}
	rep.Path, rep.Backup, rep.Took = storePath(dir, to), backupPath(dir, from), time.Since(start)
	return rep, nil
}

// finishMigration completes a committed migration (node.json names the new kind and the one it
// came from): it moves the verified copy to its live name and the old files to their backup
// name, then clears the mark. Without a mark it only removes a partial copy an interrupted
// migration left. It is idempotent, so a crash during it is finished by the next start.
func finishMigration(dir string, meta *nodeMeta, log *slog.Logger) error {
	if meta.MigratedFrom == "" {
		for _, k := range []string{LogStoreBolt, LogStoreWAL} {
			if p := tmpPath(dir, k); exists(p) {
				if err := os.RemoveAll(p); err != nil {
					return fmt.Errorf("remove %s, left by an interrupted log migration: %w", p, err)
				}
				log.Warn("removed the partial copy of an interrupted log migration; the data dir is as before it", "path", p)
			}
		}
		return nil
	}
	to, from := meta.LogStore, meta.MigratedFrom
	if live := storePath(dir, to); !exists(live) {
		tmp := tmpPath(dir, to)
		if !exists(tmp) {
			return fmt.Errorf("node.json says the Raft log was migrated to %s, but neither %s nor %s exists: restore the node from a backup or replace it with a new member", to, live, tmp)
		}
		if err := os.Rename(tmp, live); err != nil {
			return fmt.Errorf("finish log migration: %w", err)
		}
	}
	if old := storePath(dir, from); exists(old) {
		if err := os.Rename(old, backupPath(dir, from)); err != nil {
			return fmt.Errorf("finish log migration: keep the old log as %s: %w", backupPath(dir, from), err)
		}
	}
	syncDir(dir)
	meta.MigratedFrom = ""
	if err := writeMeta(dir, *meta); err != nil {
		return err
	}
	log.Info("the Raft log store is now "+to, "path", storePath(dir, to), "old_log_kept_at", backupPath(dir, from))
	return nil
}

// copyStore copies the stable values and every log entry of the kind-from store in dir into a
// new kind-to store at path, and closes both.
func copyStore(dir, from, path, to string) (first, last uint64, err error) {
	src, _, err := openLogStore(storePath(dir, from), from, storeOptions{}, hclog.NewNullLogger())
	if err != nil {
		return 0, 0, err
	}
	defer src.Close()
	dst, _, err := openLogStore(path, to, storeOptions{}, hclog.NewNullLogger())
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		if cerr := dst.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close %s: %w", path, cerr)
		}
	}()
	vals, err := stableValues(src)
	if err != nil {
		return 0, 0, err
	}
	if err := setStableValues(dst, vals); err != nil {
		return 0, 0, fmt.Errorf("write to %s: %w", path, err)
	}
	if first, err = src.FirstIndex(); err != nil {
		return 0, 0, fmt.Errorf("read the log's first index: %w", err)
	}
	if last, err = src.LastIndex(); err != nil {
		return 0, 0, fmt.Errorf("read the log's last index: %w", err)
	}
	if last == 0 {
		return 0, 0, nil
	}
	if err := walmigrate.CopyLogs(context.Background(), dst, src, 4<<20, nil); err != nil {
		return 0, 0, fmt.Errorf("copy the log to %s: %w", path, err)
	}
	return first, last, nil
}

// verifyStore reopens both stores and compares them: the same index range, every entry equal in
// every field raft reads, the same stable values.
func verifyStore(dir, from, path, to string) error {
	src, _, err := openLogStore(storePath(dir, from), from, storeOptions{}, hclog.NewNullLogger())
	if err != nil {
		return err
	}
	defer src.Close()
	dst, _, err := openLogStore(path, to, storeOptions{}, hclog.NewNullLogger())
	if err != nil {
		return err
	}
	defer dst.Close()
	a, err := stableValues(src)
	if err != nil {
		return err
	}
	b, err := stableValues(dst)
	if err != nil {
		return err
	}
	for k, v := range a {
		if !bytes.Equal(v, b[k]) {
			return fmt.Errorf("stable %s: %x became %x", k, v, b[k])
		}
	}
	if len(a) != len(b) {
		return fmt.Errorf("stable values: %d became %d", len(a), len(b))
	}
	f1, err1 := src.FirstIndex()
	l1, err2 := src.LastIndex()
	f2, err3 := dst.FirstIndex()
	l2, err4 := dst.LastIndex()
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return err
	}
	if l1 == 0 && l2 == 0 {
		return nil
	}
	if f1 != f2 || l1 != l2 {
		return fmt.Errorf("index range [%d, %d] became [%d, %d]", f1, l1, f2, l2)
	}
	var x, y raft.Log
	for i := f1; i <= l1; i++ {
		if err := src.GetLog(i, &x); err != nil {
			return fmt.Errorf("read entry %d: %w", i, err)
		}
		if err := dst.GetLog(i, &y); err != nil {
			return fmt.Errorf("read entry %d of the copy: %w", i, err)
		}
		if x.Index != y.Index || x.Term != y.Term || x.Type != y.Type || !bytes.Equal(x.Data, y.Data) ||
			!bytes.Equal(x.Extensions, y.Extensions) || !x.AppendedAt.Equal(y.AppendedAt) {
			return fmt.Errorf("entry %d differs", i)
		}
	}
	return nil
}

// stableValues reads the stable-store keys raft writes that are set (raft-boltdb says "not
// found" for a key never set, raft-wal returns nothing). A uint64 is returned big-endian whatever
// the store keeps: raft-boltdb stores it big-endian, raft-wal little-endian, so raw bytes must
// never be copied across.
func stableValues(s raft.StableStore) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, k := range append(append([]string{}, stableUint64Keys...), stableBytesKeys...) {
		v, err := s.Get([]byte(k))
		if err != nil && err.Error() == "not found" {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", k, err)
		}
		if len(v) == 0 {
			continue
		}
		if slices.Contains(stableUint64Keys, k) {
			n, err := s.GetUint64([]byte(k))
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", k, err)
			}
			v = binary.BigEndian.AppendUint64(nil, n)
		}
		out[k] = v
	}
	return out, nil
}

// setStableValues writes what stableValues read, each uint64 through the store's own SetUint64.
func setStableValues(s raft.StableStore, vals map[string][]byte) error {
	for k, v := range vals {
		var err error
		if slices.Contains(stableUint64Keys, k) {
			err = s.SetUint64([]byte(k), binary.BigEndian.Uint64(v))
		} else {
			err = s.Set([]byte(k), v)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
	}
	return nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// syncDir makes renames and new files in dir durable (best effort: some file systems refuse).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
