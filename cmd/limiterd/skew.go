package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"sync/atomic"
	"time"
)

// skewedClock is the fault-injection clock behind the hidden --clock-skew-file flag. The file
// holds {"offset_ns": N, "drift_ppm": N}: offset moves only the wall clock (as a clock reset or
// NTP step would), drift speeds up or slows down both the wall and the monotonic clock (as a
// fast or slow oscillator would). The file is re-read every 20 ms.
type skewedClock struct {
	start    time.Time
	offset   atomic.Int64
	driftPPM atomic.Int64
}

func newSkewedClock(ctx context.Context, path string, log *slog.Logger) *skewedClock {
	c := &skewedClock{start: time.Now()}
	c.load(path, log)
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				c.load(path, log)
			}
		}
	}()
	return c
}

func (c *skewedClock) load(path string, log *slog.Logger) {
	b, err := os.ReadFile(path)
	if err != nil {
		return // absent means no skew yet
	}
	var s struct {
		OffsetNS int64 `json:"offset_ns"`
		DriftPPM int64 `json:"drift_ppm"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		log.Warn("clock skew file unreadable", "file", path, "err", err)
		return
	}
	c.offset.Store(s.OffsetNS)
	c.driftPPM.Store(s.DriftPPM)
}

// mono is the drifting monotonic clock: elapsed time since start, scaled by the drift.
func (c *skewedClock) mono() time.Duration {
	el := time.Since(c.start)
	return el + time.Duration(int64(el)/1_000_000*c.driftPPM.Load())
}

// now is the skewed wall clock: start + drifting elapsed time + offset.
func (c *skewedClock) now() time.Time {
	return c.start.Round(0).Add(c.mono() + time.Duration(c.offset.Load()))
}
