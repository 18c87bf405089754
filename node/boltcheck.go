package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// checkBoltFile validates the header of a bbolt file before bbolt maps it. bbolt (as used by
// raft-boltdb) trusts its meta pages: on a truncated file it maps pages past the end and the
// process dies of SIGBUS instead of returning an error. This check turns that, and a damaged
// header, into an error naming the file. A missing or empty file is fine (bbolt creates it).
func checkBoltFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if fi.Size() == 0 {
		return nil
	}
	m0, err0 := readBoltMeta(f, 0)
	var best *boltMeta
	if err0 == nil {
		best = m0
	}
	if err0 == nil || m0 != nil {
		if m1, err1 := readBoltMeta(f, int64(m0.pageSize)); err1 == nil && (best == nil || m1.txid > best.txid) {
			best = m1
		}
	}
	if best == nil {
		return fmt.Errorf("%s is not a valid Raft log (bbolt header damaged: %v); restore the node from a backup or replace it with a new member", path, err0)
	}
	if need := int64(best.pgid) * int64(best.pageSize); fi.Size() < need {
		return fmt.Errorf("%s is truncated: %d bytes, its header says %d; restore the node from a backup or replace it with a new member", path, fi.Size(), need)
	}
	return nil
}

// boltMeta is the part of bbolt's meta page this check needs. Layout (bbolt v1.3): a 16-byte page
// header, then magic u32, version u32, pageSize u32, flags u32, root bucket (16 bytes),
// freelist pgid u64, high-water pgid u64, txid u64, checksum u64 (FNV-64a of the fields before it).
type boltMeta struct {
	pageSize uint32
	pgid     uint64
	txid     uint64
}

const boltMagic = 0xED0CDAED

func readBoltMeta(r io.ReaderAt, off int64) (*boltMeta, error) {
	buf := make([]byte, 16+64)
	if _, err := r.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("read meta page at %d: %w", off, err)
	}
	b := buf[16:]
	le := binary.LittleEndian
	m := &boltMeta{pageSize: le.Uint32(b[8:]), pgid: le.Uint64(b[40:]), txid: le.Uint64(b[48:])}
	if le.Uint32(b[0:]) != boltMagic {
		return nil, fmt.Errorf("meta page at %d: bad magic", off)
	}
	if m.pageSize < 512 || m.pageSize > 1<<20 || m.pageSize&(m.pageSize-1) != 0 {
		return nil, fmt.Errorf("meta page at %d: implausible page size %d", off, m.pageSize)
	}
	h := fnv.New64a()
	h.Write(b[:56])
	if h.Sum64() != le.Uint64(b[56:]) {
		return m, fmt.Errorf("meta page at %d: checksum mismatch", off)
	}
	return m, nil
}
