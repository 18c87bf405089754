package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/limiterd/limiter/bucket"
	"github.com/limiterd/limiter/fsm"
	"github.com/limiterd/limiter/internal/cli"
	"github.com/limiterd/limiter/server"
)

// fileConfig is the YAML configuration file (--config). Its keys are the flag names; a flag on
// the command line or in the environment wins over the file. `limits` declares limits that the
// leader creates when they do not exist yet (it never overrides a limit changed since).
type fileConfig struct {
	Flags  map[string]yaml.Node `yaml:",inline"`
	Limits []fileLimit          `yaml:"limits"`
}

type fileLimit struct {
	Name      string `yaml:"name"`
	Rate      int64  `yaml:"rate"`
	Per       string `yaml:"per"`
	Burst     int64  `yaml:"burst"`
	Admission string `yaml:"admission"` // linearizable (default) or local
	GrantTTL  string `yaml:"grant_ttl"` // local only, e.g. 2s
}

// loadConfig reads path, sets every flag the command line and environment left unset, and
// returns the declared limits. Errors name the file and the field.
func loadConfig(path string, fs *pflag.FlagSet) ([]server.LimitDecl, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	var fc fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&fc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	for key, node := range fc.Flags {
		fl := fs.Lookup(key)
		if fl == nil || key == "config" {
			return nil, fmt.Errorf("config %s: line %d: unknown field %q (fields are the flag names, e.g. data-dir, and limits)", path, node.Line, key)
		}
		if node.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("config %s: line %d: field %q: want a single value", path, node.Line, key)
		}
		if fl.Changed {
			continue // the command line or the environment said otherwise
		}
		if err := fs.Set(key, node.Value); err != nil {
			return nil, fmt.Errorf("config %s: line %d: field %q: %w", path, node.Line, key, err)
		}
	}
	var decls []server.LimitDecl
	seen := map[string]bool{}
	for i, l := range fc.Limits {
		field := "limits[" + strconv.Itoa(i) + "]"
		if err := fsm.CheckName(l.Name); err != nil {
			return nil, fmt.Errorf("config %s: %s.name: %w", path, field, err)
		}
		if seen[l.Name] {
			return nil, fmt.Errorf("config %s: %s.name: %q is declared twice", path, field, l.Name)
		}
		seen[l.Name] = true
		per, err := cli.ParseDuration(l.Per)
		if err != nil {
			return nil, fmt.Errorf("config %s: %s.per: %q is not a duration like 1m or 1s", path, field, l.Per)
		}
		if _, err := bucket.NewLimit(l.Rate, per, l.Burst); err != nil {
			return nil, fmt.Errorf("config %s: %s (%s): %w", path, field, l.Name, err)
		}
		spec := fsm.LimitSpec{Name: l.Name, Rate: l.Rate, Period: per, Burst: l.Burst}
		if spec.Admission, err = fsm.ParseAdmission(l.Admission); err != nil {
			return nil, fmt.Errorf("config %s: %s.admission: %w", path, field, err)
		}
		if l.GrantTTL != "" {
			if spec.GrantTTL, err = time.ParseDuration(l.GrantTTL); err != nil {
				return nil, fmt.Errorf("config %s: %s.grant_ttl: %q is not a duration like 2s", path, field, l.GrantTTL)
			}
		}
		if err := spec.Check(); err != nil {
			return nil, fmt.Errorf("config %s: %s (%s): %w", path, field, l.Name, err)
		}
		decls = append(decls, server.LimitDecl{LimitSpec: spec})
	}
	return decls, nil
}
