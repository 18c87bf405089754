package node

import (
	"sync"
	"time"
)

// stampClock gives the leader's stamps from this node's monotonic clock only, so no wall-clock
// step on any node can move replicated time. Every node notes, for the last entry it applied,
// the entry's stamp and its own monotonic time then. On an election win the new leader anchors
// at that stamp plus the monotonic time elapsed since (never behind the log clock), so the
// election gap is counted and nothing else; then it stamps anchor + monotonic elapsed.
// Only a brand-new cluster (log clock 0) starts from the wall clock, so log time reads as Unix
// time. Time while the whole cluster is down is not counted (buckets resume where they were,
// which under-admits for at most one refill period and never over-admits).
type stampClock struct {
	mu        sync.Mutex
	seen      bool          // an entry has been applied in this process
	seenStamp int64         // log clock after the last applied entry
	seenMono  time.Duration // monotonic time when it was applied
	anchored  bool
	base      int64         // stamp at the anchor
	mono      time.Duration // monotonic reading at the anchor
}

// observe records that the log clock was logClock at monotonic time mono (after an apply).
func (c *stampClock) observe(logClock int64, mono time.Duration) {
	c.mu.Lock()
	c.seen, c.seenStamp, c.seenMono = true, logClock, mono
	c.mu.Unlock()
}

func (c *stampClock) anchor(logClock int64, wall time.Time, mono time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	wasAnchored, prevLine := c.anchored, c.base+int64(mono-c.mono)
	switch {
	case logClock == 0:
		c.base = wall.UnixNano() // a new cluster: start log time at the wall clock
	case c.seen:
		c.base = max(logClock, c.seenStamp+int64(mono-c.seenMono))
	default:
		c.base = logClock
	}
	if wasAnchored {
		// Re-anchoring in the same process (a new term after a failed transfer, a restore):
		// never behind the line already stamped from, or a read answered at a later stamp could
		// be followed by a take evaluated earlier.
		c.base = max(c.base, prevLine)
	}
	c.mono, c.anchored = mono, true
}

// estimate is this node's best guess of the log time now, from the last entry it applied and
// its monotonic clock (for stale reads on followers); logClock when it has applied nothing.
func (c *stampClock) estimate(logClock int64, mono time.Duration) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.seen {
		return logClock
	}
	return max(logClock, c.seenStamp+int64(mono-c.seenMono))
}

func (c *stampClock) stamp(wall time.Time, mono time.Duration) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.anchored {
		return wall.UnixNano()
	}
	return c.base + int64(mono-c.mono)
}

// Stamp returns the time the leader would stamp on an entry now.
func (n *Node) Stamp() int64 {
	return max(n.clock.stamp(n.cfg.Now(), n.cfg.Mono()), n.fsm.Clock())
}
