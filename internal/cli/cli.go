// Package cli holds the small helpers the binaries (limiterd, limitctl, limitbench) and the
// client share: comma-separated lists, address resolution from flags and the environment, the
// loopback check that decides where plaintext may go, and token files.
package cli

import (
	"fmt"
	"net"
	"os"
	"strings"
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
