package fsm

import (
	"errors"
	"fmt"

	"github.com/limiterd/limiter/bucket"
)

// Sentinel errors returned in command results. Test them with errors.Is.
var (
	// ErrUnknownLimit: a take, peek or delete names a limit that does not exist.
	ErrUnknownLimit = errors.New("unknown limit")
	// ErrInvalidCommand: a name, key, request ID or count is out of bounds.
	ErrInvalidCommand = errors.New("invalid command")
	// ErrRequestIDReused: a request ID already recorded for a request with different content.
	ErrRequestIDReused = errors.New("request ID reused for a different request")
	// ErrCorruptEntry: a committed log entry cannot be decoded. The state machine halts on it,
	// because skipping an entry would make replicas diverge.
	ErrCorruptEntry = errors.New("corrupt log entry")
	// ErrHalted: the state machine stopped applying after a corrupt entry.
	ErrHalted = errors.New("state machine halted")
	// ErrCorruptSnapshot: a snapshot cannot be decoded or fails its checksum.
	ErrCorruptSnapshot = errors.New("corrupt snapshot")
	// ErrTooManyLimits: creating a limit would exceed Config.MaxLimits.
	ErrTooManyLimits = errors.New("too many limits")
)

// errCode is how a recorded error is stored in the exactly-once table and in snapshots.
type errCode byte

const (
	codeNone errCode = iota
	codeUnknownLimit
	codeInvalidCommand
	codeRequestIDReused
	codeInvalidCost
	codeCostExceedsBurst
	codeInvalidLimit
	codeOther
)

var codeSentinels = map[errCode]error{
	codeUnknownLimit:     ErrUnknownLimit,
	codeInvalidCommand:   ErrInvalidCommand,
	codeRequestIDReused:  ErrRequestIDReused,
	codeInvalidCost:      bucket.ErrInvalidCost,
	codeCostExceedsBurst: bucket.ErrCostExceedsBurst,
	codeInvalidLimit:     bucket.ErrInvalidLimit,
}

// recordedError is an error that survives encoding: its sentinel (by code) and its message.
type recordedError struct {
	code errCode
	msg  string
}

func (e *recordedError) Error() string { return e.msg }
func (e *recordedError) Unwrap() error { return codeSentinels[e.code] }

// record turns any error into a recordedError with a stable code.
func record(err error) *recordedError {
	if err == nil {
		return nil
	}
	var re *recordedError
	if errors.As(err, &re) {
		return re
	}
	code := codeOther
	// In code order, not map order: the code is replicated state (it is recorded and snapshotted),
	// so an error matching two sentinels must get the same code on every replica.
	for c := codeNone + 1; c < codeOther; c++ {
		if errors.Is(err, codeSentinels[c]) {
			code = c
			break
		}
	}
	return &recordedError{code: code, msg: err.Error()}
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidCommand, fmt.Sprintf(format, args...))
}
