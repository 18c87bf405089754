//go:build !unix

package node

import "os"

// lockDataDir does not lock on systems without flock; bbolt's own lock still guards raft.db.
func lockDataDir(dir string) (*os.File, error) { return nil, nil }
