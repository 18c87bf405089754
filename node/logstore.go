package node

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// raftStore is what a log store kind opens: the Raft log and stable store in one (raft-boltdb's
// BoltStore and raft-wal's WAL both are).
type raftStore interface {
	raft.LogStore
	raft.StableStore
	io.Closer
}

// trackedStore is the Raft log and stable store (raft-boltdb or raft-wal, logstores.go) with the
// outcome of its last write kept, so health can tell a member that cannot write its log (a full
// disk: its own commit and applied indexes both freeze, and look caught up) and a failed append
// can be answered as retryable. The first failure after a success is logged once, with the file.
type trackedStore struct {
	raftStore
	// logs is the log side: raftStore, or a raft.LogCache in front of it. The cache sits inside
	// this wrapper so the errors raft sees are the ones noted here (the cache rewraps them).
	logs raft.LogStore
	kind string // LogStoreBolt or LogStoreWAL
	path string // raft.db, or the WAL's directory
	log  *slog.Logger

	mu       sync.Mutex
	lastErr  error     // the last write's error; nil after a successful write
	since    time.Time // when writes started failing
	failures atomic.Uint64
}

// note records a write's outcome. Only a successful append clears an earlier failure: a small
// overwrite in the stable store (a term, a vote) can succeed in pages bbolt freed earlier while
// appending entries still fails.
func (s *trackedStore) note(err error, appended bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && !appended {
		return nil
	}
	if err == nil {
		if s.lastErr != nil {
			s.log.Info("the Raft log is writable again", "path", s.path, "failed_for", time.Since(s.since).Round(time.Millisecond))
		}
		s.lastErr = nil
		return nil
	}
	s.failures.Add(1)
	if s.lastErr == nil {
		s.since = time.Now()
		s.log.Error("cannot write the Raft log; this member is unhealthy until a write succeeds", "path", s.path, "err", err)
	}
	s.lastErr = err
	return err
}

// writeError reports the last write's error and since when writes have failed (nil when the last
// write succeeded).
func (s *trackedStore) writeError() (error, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr, s.since
}

// failed reports whether err is (or wraps) the error a write of this store returned, i.e. the
// command it belonged to was not appended.
func (s *trackedStore) failed(err error) bool {
	s.mu.Lock()
	last := s.lastErr
	s.mu.Unlock()
	return last != nil && err != nil && (errors.Is(err, last) || err.Error() == last.Error())
}

// newTrackedStore wraps a store, with a cache of the newest cacheSize entries when positive.
func newTrackedStore(store raftStore, kind, path string, cacheSize int, log *slog.Logger) (*trackedStore, error) {
	s := &trackedStore{raftStore: store, logs: store, kind: kind, path: path, log: log}
	if cacheSize > 0 {
		c, err := raft.NewLogCache(cacheSize, store)
		if err != nil {
			return nil, fmt.Errorf("raft log cache: %w", err)
		}
		s.logs = c
	}
	return s, nil
}

func (s *trackedStore) FirstIndex() (uint64, error) { return s.logs.FirstIndex() }
func (s *trackedStore) LastIndex() (uint64, error)  { return s.logs.LastIndex() }
func (s *trackedStore) StoreLog(l *raft.Log) error  { return s.note(s.logs.StoreLog(l), true) }
func (s *trackedStore) StoreLogs(ls []*raft.Log) error {
	return s.note(s.logs.StoreLogs(ls), true)
}
func (s *trackedStore) DeleteRange(min, max uint64) error {
	return s.note(s.logs.DeleteRange(min, max), false)
}
func (s *trackedStore) Set(k, v []byte) error { return s.note(s.raftStore.Set(k, v), false) }
func (s *trackedStore) SetUint64(k []byte, v uint64) error {
	return s.note(s.raftStore.SetUint64(k, v), false)
}

// GetLog hides what a WAL compacted: raft-wal drops whole segments only and keeps serving the
// entries below its first index from the segment that holds them; bolt deletes them. Without
// this a leader on wal would replay a long-compacted log to a new member instead of sending the
// snapshot, as it does on bolt: one behaviour for both stores.
func (s *trackedStore) GetLog(i uint64, l *raft.Log) error {
	if s.kind == LogStoreWAL {
		if first, err := s.raftStore.FirstIndex(); err == nil && i < first {
			return raft.ErrLogNotFound
		}
	}
	return s.logs.GetLog(i, l)
}

// IsMonotonic passes raft-wal's raft.MonotonicLogStore through the wrapper: such a store cannot
// keep a gap, so raft drops every log after installing a snapshot instead of keeping a tail.
func (s *trackedStore) IsMonotonic() bool {
	m, ok := s.logs.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}
