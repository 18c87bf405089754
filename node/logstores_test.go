package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/hashicorp/raft-wal/metadb"
	"go.etcd.io/bbolt"

	"github.com/limiterd/limiter/fsm"
)

// testLogStore is the log store the package's tests run on: LIMITER_LOG_STORE (bolt or wal), or
// the default. CI runs the suites once per kind.
var testLogStore = os.Getenv("LIMITER_LOG_STORE")

// dataDirWithLog runs a single node on a new data dir with the given log store, applies a limit
// and takes on several keys (kept in the log only: no snapshot), stops it, and returns its
// config (for a restart) and its state hash.
func dataDirWithLog(t *testing.T, kind string, takes int) (Config, [32]byte) {
	t.Helper()
	cfg := testConfig(t, "n1", t.TempDir())
	cfg.LogStore = kind
	n := mustStartSingle(t, cfg)
	ctx := context.Background()
	if _, err := n.SetLimit(ctx, fsm.LimitSpec{Name: "l", Rate: 1, Period: time.Hour, Burst: 100}); err != nil {
		t.Fatalf("set limit: %v", err)
	}
	for i := 0; i < takes; i++ {
		out, err := n.Take(ctx, fsm.Take{RequestID: fmt.Sprintf("r%d", i), Items: []fsm.Item{{Limit: "l", Key: fmt.Sprintf("k%d", i%7), Cost: 1}}})
		if err != nil || out.Err != nil {
			t.Fatalf("take: %v %+v", err, out)
		}
	}
	h := mustHash(t, n)
	if err := n.Shutdown(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	cfg.Bootstrap = nil
	return cfg, h
}

func mustHash(t *testing.T, n *Node) [32]byte {
	t.Helper()
	h, err := n.FSM().StateHash()
	if err != nil {
		t.Fatalf("state hash: %v", err)
	}
	return h
}

// mustRestartSame restarts a node from cfg and checks it leads with state hash want, and that a
// retried take is replayed (the exactly-once table came back too); it returns the state hash
// after that retry.
func mustRestartSame(t *testing.T, cfg Config, want [32]byte) [32]byte {
	t.Helper()
	n, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer n.Shutdown()
	deadline := time.Now().Add(10 * time.Second)
	for !n.IsLeader() || n.Raft().AppliedIndex() < n.Raft().LastIndex() {
		if time.Now().After(deadline) {
			t.Fatalf("restarted node did not lead and apply its log")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := mustHash(t, n); got != want {
		t.Fatalf("state after restart differs from before")
	}
	again, err := n.Take(context.Background(), fsm.Take{RequestID: "r0", Items: []fsm.Item{{Limit: "l", Key: "k0", Cost: 1}}})
	if err != nil || !again.Replayed {
		t.Fatalf("retry after restart: %+v %v, want replayed", again, err)
	}
	return mustHash(t, n)
}

func TestLogStore_EachKindRestartsWithItsState(t *testing.T) {
	for _, kind := range []string{LogStoreBolt, LogStoreWAL} {
		t.Run(kind, func(t *testing.T) {
			cfg, h := dataDirWithLog(t, kind, 20)
			if !hasStore(cfg.DataDir, kind) || hasStore(cfg.DataDir, otherKind(kind)) {
				t.Fatalf("data dir does not hold exactly a %s log", kind)
			}
			m, _, err := readMeta(cfg.DataDir)
			if err != nil || m.LogStore != kind {
				t.Fatalf("node.json records %q (%v), want %q", m.LogStore, err, kind)
			}
			cfg.LogStore = "" // an existing data dir needs no flag
			mustRestartSame(t, cfg, h)
		})
	}
}

func TestLogStore_OtherKindIsRefusedNamingFilesAndFix(t *testing.T) {
	for _, kind := range []string{LogStoreBolt, LogStoreWAL} {
		t.Run(kind, func(t *testing.T) {
			cfg, _ := dataDirWithLog(t, kind, 1)
			cfg.LogStore = otherKind(kind)
			n, err := Start(context.Background(), cfg)
			if err == nil {
				n.Shutdown()
				t.Fatalf("a %s data dir started as %s", kind, cfg.LogStore)
			}
			for _, want := range []string{storePath(cfg.DataDir, kind), "limiterd migrate-log --to " + cfg.LogStore} {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("error %q does not say %q", err, want)
				}
			}
			if hasStore(cfg.DataDir, cfg.LogStore) {
				t.Fatalf("the refused start created a %s log", cfg.LogStore)
			}
		})
	}
}

func TestLogStore_DataDirFromBeforeTheChoiceIsBolt(t *testing.T) {
	cfg, h := dataDirWithLog(t, LogStoreBolt, 3)
	m, _, _ := readMeta(cfg.DataDir)
	m.LogStore = "" // as written before log stores could be chosen
	if err := writeMeta(cfg.DataDir, m); err != nil {
		t.Fatal(err)
	}
	mustRestartSame(t, cfg, h)
	if m, _, _ := readMeta(cfg.DataDir); m.LogStore != LogStoreBolt {
		t.Fatalf("node.json records %q after the restart, want bolt", m.LogStore)
	}
	cfg.LogStore = LogStoreWAL
	if n, err := Start(context.Background(), cfg); err == nil {
		n.Shutdown()
		t.Fatalf("an old bolt data dir started as wal")
	}
}

func TestLogStore_BothKindsPresentIsRefused(t *testing.T) {
	cfg, _ := dataDirWithLog(t, LogStoreWAL, 1)
	// A raft.db beside the live wal/ (copied in by hand, say) is not silently ignored.
	if err := os.WriteFile(storePath(cfg.DataDir, LogStoreBolt), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := Start(context.Background(), cfg)
	if err == nil {
		n.Shutdown()
		t.Fatalf("started with both kinds of log present")
	}
	if !strings.Contains(err.Error(), storePath(cfg.DataDir, LogStoreBolt)) {
		t.Fatalf("error %q does not name raft.db", err)
	}
}

func TestLogStore_DataDirInUseIsRefused(t *testing.T) {
	for _, kind := range []string{LogStoreBolt, LogStoreWAL} {
		t.Run(kind, func(t *testing.T) {
			cfg := testConfig(t, "n1", t.TempDir())
			cfg.LogStore = kind
			mustStartSingle(t, cfg)
			second := cfg
			second.RaftAddr = freeAddr(t)
			second.Bootstrap = nil
			start := time.Now()
			n, err := Start(context.Background(), second)
			if err == nil {
				n.Shutdown()
				t.Fatalf("a second node started on a data dir in use")
			}
			if !errors.Is(err, errLocked) || time.Since(start) > 5*time.Second {
				t.Fatalf("got %v after %s, want a prompt in-use error", err, time.Since(start))
			}
			if _, err := MigrateLog(cfg.DataDir, otherKind(kind), nil); !errors.Is(err, errLocked) {
				t.Fatalf("migration of a running node's data dir: %v, want an in-use error", err)
			}
		})
	}
}

// walSegments lists a wal data dir's segment files.
func walSegments(t *testing.T, dir string) []string {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(storePath(dir, LogStoreWAL), "*.wal"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no wal segments in %s: %v", dir, err)
	}
	return segs
}

// mustRefuseNaming starts a node from cfg and checks it is refused with an error naming path.
func mustRefuseNaming(t *testing.T, cfg Config, path string) {
	t.Helper()
	n, err := Start(context.Background(), cfg)
	if err == nil {
		n.Shutdown()
		t.Fatalf("a damaged log was accepted")
	}
	if !strings.Contains(err.Error(), path) {
		t.Fatalf("error %q does not name %s", err, path)
	}
}

func TestLogStore_WALTruncatedSegmentIsRefusedWithItsName(t *testing.T) {
	cfg, _ := dataDirWithLog(t, LogStoreWAL, 10)
	seg := walSegments(t, cfg.DataDir)[0]
	// Cut inside the written entries: raft-wal alone would recover up to the cut and carry on
	// without entries this member acknowledged.
	if err := os.Truncate(seg, 2000); err != nil {
		t.Fatal(err)
	}
	mustRefuseNaming(t, cfg, seg)
}

func TestLogStore_WALMissingSealedSegmentIsRefused(t *testing.T) {
	cfg, _ := dataDirWithLog(t, LogStoreWAL, 1)
	// Fake a sealed segment before the tail in the meta db whose file is gone.
	metaPath := filepath.Join(storePath(cfg.DataDir, LogStoreWAL), metadb.FileName)
	st, err := readWALState(metaPath)
	if err != nil || len(st.Segments) != 1 {
		t.Fatalf("state %+v %v", st, err)
	}
	sealed := st.Segments[0]
	sealed.ID, sealed.SealTime = st.NextSegmentID+5, time.Now()
	st.Segments = append(st.Segments[:0:0], sealed, st.Segments[0])
	writeWALState(t, metaPath, st)
	mustRefuseNaming(t, cfg, fmt.Sprintf("%020d-%016x.wal", sealed.BaseIndex, sealed.ID))
}

func writeWALState(t *testing.T, metaPath string, st any) {
	t.Helper()
	db, err := bbolt.Open(metaPath, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	raw, _ := json.Marshal(st)
	if err := db.Update(func(tx *bbolt.Tx) error { return tx.Bucket([]byte(metadb.MetaBucket)).Put([]byte(metadb.MetaKey), raw) }); err != nil {
		t.Fatal(err)
	}
}

func TestLogStore_WALCorruptMetaDBIsRefusedWithItsName(t *testing.T) {
	cases := map[string]func(t *testing.T, path string){
		"garbage": func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("this is not a bolt database, just garbage bytes......"), 0o600); err != nil {
				t.Fatal(err)
			}
		},
		"truncated": func(t *testing.T, path string) {
			fi, _ := os.Stat(path)
			if err := os.Truncate(path, fi.Size()/3); err != nil {
				t.Fatal(err)
			}
		},
		"empty": func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		},
		"missing": func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		},
		"no buckets": func(t *testing.T, path string) {
			db, err := bbolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			_ = db.Update(func(tx *bbolt.Tx) error { return tx.DeleteBucket([]byte(metadb.MetaBucket)) })
			db.Close()
		},
		"bad state": func(t *testing.T, path string) {
			writeWALState(t, path, "not a state")
		},
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			cfg, _ := dataDirWithLog(t, LogStoreWAL, 3)
			path := filepath.Join(storePath(cfg.DataDir, LogStoreWAL), metadb.FileName)
			damage(t, path)
			mustRefuseNaming(t, cfg, path)
		})
	}
}

// A torn last write (garbage after the last commit, where a crash mid-append leaves it) is what
// raft-wal recovers from by itself: the node starts with every acknowledged entry.
func TestLogStore_WALTornTailIsRecovered(t *testing.T) {
	cfg, h := dataDirWithLog(t, LogStoreWAL, 10)
	seg := walSegments(t, cfg.DataDir)[0]
	f, err := os.OpenFile(seg, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Find the end of the written frames (the rest of the preallocated file is zeros) and write
	// half a frame there.
	buf := make([]byte, 1<<20)
	n, _ := f.ReadAt(buf, 0)
	end := n
	for end > 0 && buf[end-1] == 0 {
		end--
	}
	end = (end + 7) &^ 7
	if _, err := f.WriteAt([]byte{1, 0, 0, 0, 200, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef}, int64(end)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	mustRestartSame(t, cfg, h)
}

func storeLogs(t *testing.T, s raftStore, from, to, term uint64) {
	t.Helper()
	var ls []*raft.Log
	for i := from; i <= to; i++ {
		ls = append(ls, &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: []byte(fmt.Sprintf("e%d-%d", i, term))})
	}
	if err := s.StoreLogs(ls); err != nil {
		t.Fatalf("store %d..%d: %v", from, to, err)
	}
}

func openTracked(t *testing.T, dir, kind string) *trackedStore {
	t.Helper()
	s, path, err := openLogStore(storePath(dir, kind), kind, storeOptions{segmentSize: 1 << 20}, hclog.NewNullLogger())
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	ts, err := newTrackedStore(s, kind, path, 0, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// A follower drops a conflicting suffix (raft's DeleteRange to the end) and restarts: raft-wal
// before v0.4.1 sealed the tail without an index block and the restart panicked in raft.NewRaft
// ("sealed segment has no index block", hashicorp/raft-wal#31). Both stores must reopen with
// the shortened log and take the new suffix.
func TestLogStore_SuffixTruncationThenRestart(t *testing.T) {
	for _, kind := range []string{LogStoreBolt, LogStoreWAL} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			s := openTracked(t, dir, kind)
			storeLogs(t, s, 1, 10, 1)
			if err := s.DeleteRange(8, 10); err != nil {
				t.Fatal(err)
			}
			s.Close()
			s = openTracked(t, dir, kind)
			var l raft.Log
			if last, _ := s.LastIndex(); last != 7 {
				t.Fatalf("last index %d after truncating to 7", last)
			}
			if err := s.GetLog(7, &l); err != nil || string(l.Data) != "e7-1" {
				t.Fatalf("entry 7 after restart: %v %q", err, l.Data)
			}
			storeLogs(t, s, 8, 9, 2)
			s.Close()
			s = openTracked(t, dir, kind)
			defer s.Close()
			if err := s.GetLog(9, &l); err != nil || string(l.Data) != "e9-2" {
				t.Fatalf("entry 9 of the new term after restart: %v %q", err, l.Data)
			}
		})
	}
}

// Compacted entries are gone on both stores (raft-wal keeps them on disk until their segment goes).
func TestLogStore_CompactedEntriesAreNotServed(t *testing.T) {
	for _, kind := range []string{LogStoreBolt, LogStoreWAL} {
		t.Run(kind, func(t *testing.T) {
			s := openTracked(t, t.TempDir(), kind)
			defer s.Close()
			storeLogs(t, s, 1, 20, 1)
			if err := s.DeleteRange(1, 12); err != nil {
				t.Fatal(err)
			}
			var l raft.Log
			if err := s.GetLog(12, &l); !errors.Is(err, raft.ErrLogNotFound) {
				t.Fatalf("compacted entry 12: %v, want ErrLogNotFound", err)
			}
			if err := s.GetLog(13, &l); err != nil {
				t.Fatalf("entry 13: %v", err)
			}
		})
	}
}
