package node

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// raftLogger sends hashicorp/raft's logs (hclog) to the node's slog logger, so they come out in
// the same format (text or JSON) with the node ID on every line, under "component": the logger
// name ("raft", "raft.net", ...).
type raftLogger struct {
	l     *slog.Logger
	name  string
	level *atomic.Int32 // an hclog.Level
	args  []any
}

func newRaftLogger(l *slog.Logger, level hclog.Level) *raftLogger {
	lv := &atomic.Int32{}
	lv.Store(int32(level))
	return &raftLogger{l: l, name: "raft", level: lv}
}

func toSlog(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace, hclog.Debug:
		return slog.LevelDebug
	case hclog.Info, hclog.NoLevel, hclog.DefaultLevel:
		return slog.LevelInfo
	case hclog.Warn:
		return slog.LevelWarn
	}
	return slog.LevelError
}

func (r *raftLogger) enabled(level hclog.Level) bool {
	return level != hclog.Off && level >= hclog.Level(r.level.Load())
}

func (r *raftLogger) Log(level hclog.Level, msg string, args ...interface{}) {
	if level == hclog.Warn && msg == fallbackAddrMsg {
		// With --raft-peer-addrs, a member without an override is dialed at its configured address
		// by design; raft warns about it on every message, which would drown every other line.
		level = hclog.Debug
	}
	if !r.enabled(level) {
		return
	}
	all := append(append([]any{"component", r.name}, r.args...), args...)
	for i := 1; i < len(all); i += 2 {
		all[i] = plain(all[i])
	}
	r.l.Log(context.Background(), toSlog(level), msg, all...)
}

// fallbackAddrMsg is what raft's NetworkTransport logs when the ServerAddressProvider has no
// override for a server and it dials the configured address instead.
const fallbackAddrMsg = "unable to get address for server, using fallback address"

// plain renders the values hashicorp/raft logs (hclog.Format, Stringers, errors) as text, so a
// JSON handler does not print them as empty objects.
func plain(v any) any {
	switch x := v.(type) {
	case hclog.Format:
		if len(x) > 0 {
			if f, ok := x[0].(string); ok {
				return fmt.Sprintf(f, x[1:]...)
			}
		}
		return fmt.Sprint(x...)
	case error:
		return x.Error()
	case fmt.Stringer:
		return x.String()
	}
	return v
}

func (r *raftLogger) Trace(msg string, args ...interface{}) { r.Log(hclog.Trace, msg, args...) }
func (r *raftLogger) Debug(msg string, args ...interface{}) { r.Log(hclog.Debug, msg, args...) }
func (r *raftLogger) Info(msg string, args ...interface{})  { r.Log(hclog.Info, msg, args...) }
func (r *raftLogger) Warn(msg string, args ...interface{})  { r.Log(hclog.Warn, msg, args...) }
func (r *raftLogger) Error(msg string, args ...interface{}) { r.Log(hclog.Error, msg, args...) }
func (r *raftLogger) IsTrace() bool                         { return r.enabled(hclog.Trace) }
func (r *raftLogger) IsDebug() bool                         { return r.enabled(hclog.Debug) }
func (r *raftLogger) IsInfo() bool                          { return r.enabled(hclog.Info) }
func (r *raftLogger) IsWarn() bool                          { return r.enabled(hclog.Warn) }
func (r *raftLogger) IsError() bool                         { return r.enabled(hclog.Error) }
func (r *raftLogger) ImpliedArgs() []interface{}            { return r.args }
func (r *raftLogger) Name() string                          { return r.name }
func (r *raftLogger) SetLevel(level hclog.Level)            { r.level.Store(int32(level)) }
func (r *raftLogger) GetLevel() hclog.Level                 { return hclog.Level(r.level.Load()) }

func (r *raftLogger) With(args ...interface{}) hclog.Logger {
	c := *r
	c.args = append(append([]any{}, r.args...), args...)
	return &c
}

func (r *raftLogger) Named(name string) hclog.Logger {
	c := *r
	c.name = r.name + "." + name
	return &c
}

func (r *raftLogger) ResetNamed(name string) hclog.Logger {
	c := *r
	c.name = name
	return &c
}

func (r *raftLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(r.StandardWriter(opts), "", 0)
}

func (r *raftLogger) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		r.Info(strings.TrimSpace(string(p)))
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
