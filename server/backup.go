package server

import (
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/limiterd/limiter/api/limiterpb"
	"github.com/limiterd/limiter/fsm"
	"github.com/limiterd/limiter/node"
)

// maxRestoreBytes bounds an uploaded snapshot (it is spooled to a temporary file first).
const maxRestoreBytes = 8 << 30

// leaderOnlyStream refuses a streaming call on a node that is not the ready leader, naming the
// leader (streams are not forwarded).
func (s *Server) leaderOnlyStream(ss grpc.ServerStream) error {
	if s.node.IsLeader() {
		return nil
	}
	return s.unavailable(ss.Context(), node.ErrNotLeader)
}

// chunkWriter sends what is written as SnapshotChunk messages.
type chunkWriter struct {
	stream limiterpb.Admin_SaveSnapshotServer
	n      int64
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	const max = 1 << 20
	for off := 0; off < len(p); off += max {
		end := min(off+max, len(p))
		if err := w.stream.Send(&limiterpb.SnapshotChunk{Data: p[off:end]}); err != nil {
			return off, err
		}
	}
	w.n += int64(len(p))
	return len(p), nil
}

// SaveSnapshot implements Admin.SaveSnapshot.
func (s *Server) SaveSnapshot(req *limiterpb.SaveSnapshotRequest, stream limiterpb.Admin_SaveSnapshotServer) error {
	if err := s.leaderOnlyStream(stream); err != nil {
		return err
	}
	ctx, cancel := withTimeout(stream.Context())
	defer cancel()
	var snap *fsm.Snapshot
	if err := s.node.Read(ctx, func() { snap = s.node.FSM().Snapshot() }); err != nil {
		return s.toStatus(ctx, err)
	}
	w := &chunkWriter{stream: stream}
	if err := snap.Persist(w); err != nil {
		return status.Errorf(codes.Unavailable, "stream snapshot: %v", err)
	}
	s.log.Info("snapshot saved by a client", "bytes", w.n)
	return nil
}

// RestoreSnapshot implements Admin.RestoreSnapshot: spool the upload, verify it by restoring it
// into a scratch state machine, and only then hand it to Raft, which installs it on every member.
func (s *Server) RestoreSnapshot(stream limiterpb.Admin_RestoreSnapshotServer) error {
	if err := s.leaderOnlyStream(stream); err != nil {
		return err
	}
	// Spool into the data dir: the container image has no /tmp (FROM scratch, read-only root),
	// and the data dir is where a snapshot of this size is known to fit.
	f, err := os.CreateTemp(s.node.DataDir(), "restore-*.snap.tmp")
	if err != nil {
		return status.Errorf(codes.Internal, "spool snapshot: %v", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	var size int64
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if size += int64(len(chunk.GetData())); size > maxRestoreBytes {
			return status.Errorf(codes.InvalidArgument, "snapshot larger than %d bytes", int64(maxRestoreBytes))
		}
		if _, err := f.Write(chunk.GetData()); err != nil {
			return status.Errorf(codes.Internal, "spool snapshot: %v", err)
		}
	}
	scratch, err := fsm.New(s.node.FSM().Config()) // verified under this cluster's parameters
	if err != nil {
		return status.Errorf(codes.Internal, "%v", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return status.Errorf(codes.Internal, "%v", err)
	}
	if err := scratch.Restore(f, 0); err != nil {
		return status.Errorf(codes.InvalidArgument, "not a valid limiter snapshot, nothing was changed: %v", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return status.Errorf(codes.Internal, "%v", err)
	}
	ctx := stream.Context()
	if err := s.node.RestoreSnapshot(ctx, f, size); err != nil {
		return s.toStatus(ctx, fmt.Errorf("restore: %w", err))
	}
	st := scratch.Stats()
	s.log.Warn("replicated state replaced by a restored snapshot", "bytes", size, "limits", st.Limits, "buckets", st.Buckets)
	return stream.SendAndClose(&limiterpb.RestoreSnapshotResponse{Limits: int64(st.Limits), Buckets: int64(st.Buckets), Bytes: size})
}
