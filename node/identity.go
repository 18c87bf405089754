package node

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// nodeMeta is node.json: who this data dir belongs to and which cluster history it holds.
//
//   - ID is the member's name (--id). A data dir cannot be started under another name.
//   - RaftID is the Raft server ID this data dir votes and stores logs under. It is the name for a
//     member that bootstrapped its cluster; a member that came back with a lost volume gets a new
//     one (name~suffix, see rejoin.go), because its old ID's votes and log are gone and must never
//     be counted again (hashicorp/raft#235).
//   - ClusterID names the cluster history; peers refuse Raft connections from another one (mux.go).
//     Empty for data dirs made before cluster IDs existed, until the node learns it from its leader.
//   - Nonce is this data dir's random proposal for a new cluster's ID (discover.go), written before
//     the node answers any discovery probe so every peer sees the same value across restarts.
//   - LogStore is the Raft log store kind (logstores.go); empty in data dirs made before the
//     choice existed (they hold raft.db). MigratedFrom marks a log migration that committed and
//     whose renames may not be done yet (migrate.go).
type nodeMeta struct {
	ID           string `json:"id"`
	RaftID       string `json:"raft_id,omitempty"`
	ClusterID    string `json:"cluster_id,omitempty"`
	Nonce        string `json:"nonce,omitempty"`
	LogStore     string `json:"log_store,omitempty"`
	MigratedFrom string `json:"migrated_from,omitempty"`
}

// raftIDSep separates a member's name from the suffix of a later incarnation's Raft ID.
const raftIDSep = "~"

// MemberName is the member name a Raft server ID belongs to: the ID up to "~" (a member that came
// back with a lost volume runs under name~suffix).
func MemberName(raftID string) string {
	name, _, _ := strings.Cut(raftID, raftIDSep)
	return name
}

// randomHex returns n random bytes as hex.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // the runtime cannot fail here (Go 1.24+)
	}
	return hex.EncodeToString(b)
}

func metaPath(dir string) string { return filepath.Join(dir, "node.json") }

// readMeta reads node.json; a missing file is a zero nodeMeta and no error.
func readMeta(dir string) (nodeMeta, bool, error) {
	p := metaPath(dir)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nodeMeta{}, false, nil
	}
	if err != nil {
		return nodeMeta{}, false, fmt.Errorf("read %s: %w", p, err)
	}
	var m nodeMeta
	if err := json.Unmarshal(b, &m); err != nil || m.ID == "" {
		return nodeMeta{}, false, fmt.Errorf("%s is corrupt (want {\"id\": ...}): %v", p, err)
	}
	if m.RaftID == "" {
		m.RaftID = m.ID // written before incarnations existed
	}
	return m, true, nil
}

// writeMeta replaces node.json durably (write, fsync, rename, fsync the dir): the Raft ID and
// cluster ID must be on disk before any Raft state is written under them.
func writeMeta(dir string, m nodeMeta) error {
	p := metaPath(dir)
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", p, err)
	}
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// checkDataDir creates the data dir if needed, refuses one that belongs to another member, drops
// leftovers of an interrupted restore, and returns node.json (with a nonce, written if new).
func checkDataDir(dir, name string) (nodeMeta, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nodeMeta{}, fmt.Errorf("create data dir %s: %w", dir, err)
	}
	// A restore spooled here by a process that died mid-upload (server/backup.go) is garbage.
	if stale, _ := filepath.Glob(filepath.Join(dir, "restore-*.snap.tmp")); len(stale) > 0 {
		for _, p := range stale {
			_ = os.Remove(p)
		}
	}
	m, found, err := readMeta(dir)
	if err != nil {
		return nodeMeta{}, err
	}
	if found && m.ID != name {
		return nodeMeta{}, fmt.Errorf("%w: %s was created by node %q, not %q", ErrWrongNode, metaPath(dir), m.ID, name)
	}
	if !found {
		m = nodeMeta{ID: name, RaftID: name}
	}
	if m.Nonce == "" {
		m.Nonce = randomHex(16)
		if err := writeMeta(dir, m); err != nil {
			return nodeMeta{}, err
		}
	}
	return m, nil
}
