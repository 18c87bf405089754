package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Progress display intervals: redraw in place on a terminal, a plain line otherwise.
const (
	ttyInterval  = 250 * time.Millisecond
	lineInterval = 5 * time.Second
	barWidth     = 24
)

// progress shows a running phase on stderr: elapsed/total (or requests done/total), the current
// ops/s over the last interval and the errors so far. It reads the workers' live counters,
// which the workers update with uncontended atomic adds.
type progress struct {
	w     io.Writer
	tty   bool
	name  string
	lives []live
	sch   *schedule
	total time.Duration // 0: counted in requests (closed loop with --requests)
	reqs  int64
	warm  time.Duration

	done chan struct{}
	wg   sync.WaitGroup

	lastOps  int64
	lastTime time.Time
	width    int // length of the last line drawn on a terminal
}

// isTerminal reports whether f is a character device (a terminal), without cgo or ioctls.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// startProgress starts the display of phase name, or returns an inactive one when
// cfg.Progress is nil. Stop it with stop.
func startProgress(cfg *Config, name string, lives []live, sch *schedule, total time.Duration) *progress {
	p := &progress{w: cfg.Progress, tty: cfg.ProgressTTY, name: name, lives: lives, sch: sch,
		total: total, reqs: cfg.Requests, warm: cfg.Warmup, done: make(chan struct{}), lastTime: sch.start}
	if p.w == nil {
		return p
	}
	every := lineInterval
	if p.tty {
		every = ttyInterval
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				return
			case now := <-t.C:
				p.draw(now, false)
			}
		}
	}()
	return p
}

// stop ends the display and draws the final state (on a terminal, ending the line).
func (p *progress) stop() {
	if p.w == nil {
		return
	}
	close(p.done)
	p.wg.Wait()
	p.draw(time.Now(), true)
}

// totals sums the workers' live counters.
func (p *progress) totals() (ops, errs int64) {
	for i := range p.lives {
		ops += p.lives[i].ops.Load()
		errs += p.lives[i].errs.Load()
	}
	return ops, errs
}

// draw writes one progress line.
func (p *progress) draw(now time.Time, final bool) {
	ops, errs := p.totals()
	rate := 0.0
	if dt := now.Sub(p.lastTime).Seconds(); dt > 0 {
		rate = float64(ops-p.lastOps) / dt
	}
	p.lastOps, p.lastTime = ops, now
	elapsed := now.Sub(p.sch.start)

	var frac float64
	var where string
	switch {
	case p.total > 0:
		frac = elapsed.Seconds() / p.total.Seconds()
		where = fmt.Sprintf("%s/%s", fmtSeconds(min(elapsed, p.total)), fmtSeconds(p.total))
	default:
		done := min(max(p.sch.tickets.Load(), 0), p.reqs)
		frac = float64(done) / float64(p.reqs)
		where = fmt.Sprintf("%s/%s req", fmtCount(done), fmtCount(p.reqs))
	}
	frac = min(max(frac, 0), 1)
	phase := p.name
	if elapsed < p.warm && !final {
		phase += " (warmup)"
	}
	filled := int(frac * barWidth)
	bar := strings.Repeat("=", filled) + strings.Repeat(" ", barWidth-filled)
	line := fmt.Sprintf("%-18s [%s] %s  %s ops/s  errors %s", phase, bar, where, fmtCount(int64(rate)), fmtCount(errs))
	if !p.tty {
		fmt.Fprintln(p.w, line)
		return
	}
	pad := ""
	if n := p.width - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	p.width = len(line)
	end := ""
	if final {
		end = "\n"
	}
	fmt.Fprintf(p.w, "\r%s%s%s", line, pad, end)
}

// fmtSeconds formats d as seconds with one decimal, e.g. "4.2s".
func fmtSeconds(d time.Duration) string {
	return fmt.Sprintf("%.1fs", d.Seconds())
}
