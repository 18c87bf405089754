package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
	"go.etcd.io/bbolt"
)

// checkWALDir validates a raft-wal directory before raft-wal opens it, turning what it would
// not notice, or would die of, into an error naming the file:
//   - a damaged or truncated wal-meta.db (bbolt maps pages past a truncated end and the process
//     dies of SIGBUS; a meta db without raft-wal's bucket makes it dereference nil);
//   - a segment file that the meta db lists but that is missing (raft-wal would recreate the
//     tail empty, and so forget acknowledged entries silently) or shorter than raft-wal made it.
//     raft-wal preallocates every segment to its size limit before its first commit, so a
//     segment with data and fewer bytes than that limit lost its end; raft-wal's recovery
//     would read up to the cut and carry on with fewer entries than this member acknowledged.
//
// A torn last write (a crash during an append) is not an error: the file keeps its size, and
// raft-wal drops the unacknowledged batch by its checksum. A new or empty directory passes.
func checkWALDir(dir string) error {
	metaPath := filepath.Join(dir, metadb.FileName)
	fi, err := os.Stat(metaPath)
	if errors.Is(err, os.ErrNotExist) {
		if segs, _ := filepath.Glob(filepath.Join(dir, "*.wal")); len(segs) > 0 {
			return fmt.Errorf("%s is missing but %s holds %d segment files: the log cannot be read without it; restore the node from a backup or replace it with a new member", metaPath, dir, len(segs))
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", metaPath, err)
	}
	if fi.Size() == 0 {
		return fmt.Errorf("%s is empty: restore the node from a backup or replace it with a new member", metaPath)
	}
	if err := checkBoltFile(metaPath); err != nil {
		return err
	}
	state, err := readWALState(metaPath)
	if err != nil {
		return err
	}
	for i, si := range state.Segments {
		p := filepath.Join(dir, segment.FileName(si))
		fi, err := os.Stat(p)
		tail := i == len(state.Segments)-1
		switch {
		case errors.Is(err, os.ErrNotExist) && tail:
			// raft-wal commits a new tail to the meta db before it creates the file, and
			// recreates it when a crash fell between the two (a deleted tail looks the same).
			continue
		case err != nil:
			return fmt.Errorf("raft log segment %s (entries from %d), listed in %s: %w; restore the node from a backup or replace it with a new member", p, si.BaseIndex, metaPath, err)
		case fi.Size() == 0 && tail:
			continue // created, not yet preallocated or synced: nothing was acknowledged from it
		case fi.Size() < int64(si.SizeLimit):
			return fmt.Errorf("raft log segment %s is truncated: %d bytes, raft-wal made it %d; restore the node from a backup or replace it with a new member", p, fi.Size(), si.SizeLimit)
		}
	}
	return nil
}

// readWALState reads raft-wal's segment list from its meta db, read-only.
func readWALState(metaPath string) (types.PersistentState, error) {
	var state types.PersistentState
	db, err := bbolt.Open(metaPath, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if errors.Is(err, bbolt.ErrTimeout) {
		return state, fmt.Errorf("%s is %w (another limiterd on this data dir?)", metaPath, errLocked)
	}
	if err != nil {
		return state, fmt.Errorf("%s is not a valid raft-wal meta db: %w; restore the node from a backup or replace it with a new member", metaPath, err)
	}
	defer db.Close()
	err = db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(metadb.MetaBucket))
		if b == nil || tx.Bucket([]byte(metadb.StableBucket)) == nil {
			return fmt.Errorf("it has no %q or %q bucket", metadb.MetaBucket, metadb.StableBucket)
		}
		raw := b.Get([]byte(metadb.MetaKey))
		if raw == nil {
			return nil // an empty log
		}
		return json.Unmarshal(raw, &state)
	})
	if err != nil {
		return state, fmt.Errorf("%s is not a valid raft-wal meta db: %v; restore the node from a backup or replace it with a new member", metaPath, err)
	}
	return state, nil
}
