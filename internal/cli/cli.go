// Package cli holds the small helpers the binaries (limiterd, limitctl, limitbench) and the
// client share: comma-separated lists, address resolution from flags and the environment, the
// loopback check that decides where plaintext may go, and token files.
package cli

import (
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// SplitList splits a comma-separated list, trimming blanks and dropping empty entries.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// ResolveAddrs picks the node addresses for a command-line tool: the flag's value when the flag
// was given (flagSet), else the environment variable's value (envName, for messages) when it is
// not blank, else the flag's default. Lists are comma-separated; blanks are trimmed and empty
// entries and duplicates dropped.
func ResolveAddrs(flag string, flagSet bool, env, envName string) ([]string, error) {
	from, list := "--addr", flag
	if !flagSet && strings.TrimSpace(env) != "" {
		from, list = envName, env
	}
	var addrs []string
	seen := map[string]bool{}
	for _, a := range SplitList(list) {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			// A gRPC target without a port would be dialled on 443: say so instead.
			return nil, fmt.Errorf("%s: %q is not host:port (limiterd serves gRPC on 7400 unless told otherwise, e.g. %s:7400)", from, a, strings.Trim(a, "[]:"))
		}
		if !seen[a] {
			seen[a] = true
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("no node addresses in %s", from)
	}
	return addrs, nil
}

// IsLoopback reports whether a host:port names this machine (localhost or a loopback IP).
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// ParseToken reads a token file's content: its first line, trimmed.
func ParseToken(content []byte) string {
	first, _, _ := strings.Cut(string(content), "\n")
	return strings.TrimSpace(first)
}

// ReadToken reads a token file (its first line, trimmed).
func ReadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return ParseToken(b), nil
}

// ParseSize reads a byte size: a number with an optional unit, B, KiB, MiB, GiB (or K, M, G,
// also powers of 1024), e.g. 512MiB.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	var n int64
	if _, err := fmt.Sscanf(t, "%d", &n); err != nil || n <= 0 || fmt.Sprint(n) != t || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want a positive number with an optional unit (KiB, MiB, GiB), e.g. 512MiB", s)
	}
	return n * mult, nil
}

// ParseDuration reads a duration as time.ParseDuration does, and also in days and weeks, which
// rate limits are often given in: "1d" is 24h, "1w" 168h, and "1d12h" 36h. Negative values are
// refused.
func ParseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i > 0 && i < len(t) && (t[i] == 'd' || t[i] == 'w') {
		n, err := strconv.ParseInt(t[:i], 10, 64)
		unit := 24 * time.Hour
		if t[i] == 'w' {
			unit *= 7
		}
		if err != nil || n > int64(math.MaxInt64/unit) {
			return 0, fmt.Errorf("duration %q is too long", s)
		}
		d := time.Duration(n) * unit
		if rest := t[i+1:]; rest != "" {
			r, err := time.ParseDuration(rest)
			if err != nil || r < 0 || d > math.MaxInt64-r {
				return 0, fmt.Errorf("invalid duration %q", s)
			}
			d += r
		}
		return d, nil
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (e.g. 1s, 1m, 1h, 1d, 1w)", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("invalid duration %q: negative", s)
	}
	return d, nil
}

// DurationFlag is a pflag.Value read with ParseDuration (days and weeks too).
type DurationFlag struct{ D *time.Duration }

func (f DurationFlag) String() string {
	if f.D == nil {
		return "0s"
	}
	return f.D.String()
}
func (f DurationFlag) Set(s string) error {
	d, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*f.D = d
	return nil
}
func (f DurationFlag) Type() string { return "duration" }
