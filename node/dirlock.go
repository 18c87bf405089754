//go:build unix

package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDataDir takes an exclusive lock on DIR/LOCK for the life of the process's use of the data
// dir (a running member, or an offline migration): two processes on one data dir would write one
// log from two places. The lock is the kernel's (flock), so it ends with the process.
func lockDataDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", dir, err)
	}
	p := filepath.Join(dir, "LOCK")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("lock data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir %s is %w (%s is locked): stop that limiterd first", dir, errLocked, p)
		}
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	return f, nil
}
