package envoyrls

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"strings"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"gopkg.in/yaml.v3"

	"github.com/limiterd/limiter/bucket"
	"github.com/limiterd/limiter/fsm"
)

// Config is the rate limit configuration of Envoy's global rate limit service, in the
// YAML format of envoyproxy/ratelimit (the common subset): one file per domain, with nested
// descriptors of key and optional value, each with a rate_limit (unit, requests_per_unit),
// shadow_mode or unlimited. Every descriptor with a rate_limit becomes one replicated limit.
type Config struct {
	domains map[string]*treeNode
	rules   []*rule
}

type yamlFile struct {
	Domain      string           `yaml:"domain"`
	Descriptors []yamlDescriptor `yaml:"descriptors"`
}

type yamlDescriptor struct {
	Key         string           `yaml:"key"`
	Value       string           `yaml:"value"`
	RateLimit   *yamlRate        `yaml:"rate_limit"`
	ShadowMode  bool             `yaml:"shadow_mode"`
	Descriptors []yamlDescriptor `yaml:"descriptors"`
	// detailed_metric is accepted for compatibility and not used; replaces is refused (not
	// supported: silently ignoring it would apply both limits).
	Replaces       []map[string]string `yaml:"replaces"`
	DetailedMetric bool                `yaml:"detailed_metric"`
}

type yamlRate struct {
	Unit            string `yaml:"unit"`
	RequestsPerUnit int64  `yaml:"requests_per_unit"`
	Unlimited       bool   `yaml:"unlimited"`
	Name            string `yaml:"name"`
	// Extensions of limiterd (not in envoyproxy/ratelimit's format): admission "local" answers
	// the rule's takes on any member from escrow (README, "Admission modes"); grant_ttl is
	// its grants' lifetime.
	Admission string `yaml:"admission"`
	GrantTTL  string `yaml:"grant_ttl"`
}

// treeNode is one level of a domain's descriptor tree: children by "key_value", and by "key"
// for descriptors without a value (any value).
type treeNode struct {
	children map[string]*treeNode
	rule     *rule
}

// rule is one configured limit.
type rule struct {
	limit     string // the replicated limit's name
	unit      rlsv3.RateLimitResponse_RateLimit_Unit
	rpu       int64
	per       time.Duration
	shadow    bool
	unlimited bool
	name      string // rate_limit.name, echoed in responses
	admission fsm.Admission
	grantTTL  time.Duration
}

var envoyUnits = map[string]struct {
	unit rlsv3.RateLimitResponse_RateLimit_Unit
	per  time.Duration
}{
	"second": {rlsv3.RateLimitResponse_RateLimit_SECOND, time.Second},
	"minute": {rlsv3.RateLimitResponse_RateLimit_MINUTE, time.Minute},
	"hour":   {rlsv3.RateLimitResponse_RateLimit_HOUR, time.Hour},
	"day":    {rlsv3.RateLimitResponse_RateLimit_DAY, 24 * time.Hour},
	"week":   {rlsv3.RateLimitResponse_RateLimit_WEEK, 7 * 24 * time.Hour},
	"month":  {rlsv3.RateLimitResponse_RateLimit_MONTH, 30 * 24 * time.Hour},
	"year":   {rlsv3.RateLimitResponse_RateLimit_YEAR, 365 * 24 * time.Hour},
}

// LoadConfig reads envoyproxy/ratelimit YAML files, one domain each. Errors name the file
// and the descriptor path.
func LoadConfig(paths ...string) (*Config, error) {
	cfg := &Config{domains: map[string]*treeNode{}}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("envoy config: %w", err)
		}
		if err := cfg.add(p, data); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

func (c *Config) add(path string, data []byte) error {
	var f yamlFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("envoy config %s: %w", path, err)
	}
	if f.Domain == "" {
		return fmt.Errorf("envoy config %s: domain is required", path)
	}
	if _, dup := c.domains[f.Domain]; dup {
		return fmt.Errorf("envoy config %s: domain %q is configured twice", path, f.Domain)
	}
	root := &treeNode{children: map[string]*treeNode{}}
	if err := c.addLevel(path, f.Domain, f.Domain, f.Domain, root, f.Descriptors); err != nil {
		return err
	}
	c.domains[f.Domain] = root
	return nil
}

// addLevel adds one level of descriptors. at is the readable path (for messages and limit names);
// uid is the same path with separators no key or value can forge, so two different paths never
// share a limit ("a.b" > "c" and "a" > "b" > "c" read alike but are not the same).
func (c *Config) addLevel(path, domain, at, uid string, n *treeNode, ds []yamlDescriptor) error {
	for _, d := range ds {
		if d.Key == "" {
			return fmt.Errorf("envoy config %s: %s: a descriptor without a key", path, at)
		}
		id := d.Key
		if d.Value != "" {
			id = d.Key + "_" + d.Value
		}
		here := at + "." + id
		if strings.HasSuffix(d.Value, "*") {
			return fmt.Errorf("envoy config %s: %s: wildcard values are not supported; list each value, or leave value out to match any", path, here)
		}
		if len(d.Replaces) > 0 {
			return fmt.Errorf("envoy config %s: %s: replaces is not supported", path, here)
		}
		if _, dup := n.children[id]; dup {
			return fmt.Errorf("envoy config %s: %s: configured twice", path, here)
		}
		child := &treeNode{children: map[string]*treeNode{}}
		n.children[id] = child
		if r := d.RateLimit; r != nil {
			rule := &rule{shadow: d.ShadowMode, unlimited: r.Unlimited, name: r.Name}
			if !r.Unlimited {
				u, ok := envoyUnits[strings.ToLower(r.Unit)]
				if !ok {
					return fmt.Errorf("envoy config %s: %s: rate_limit.unit %q: want second, minute, hour, day, week, month or year", path, here, r.Unit)
				}
				if _, err := bucket.NewLimit(r.RequestsPerUnit, u.per, 0); err != nil {
					return fmt.Errorf("envoy config %s: %s: rate_limit.requests_per_unit: %w", path, here, err)
				}
				rule.unit, rule.per, rule.rpu = u.unit, u.per, r.RequestsPerUnit
				if err := rule.setAdmission(r); err != nil {
					return fmt.Errorf("envoy config %s: %s: rate_limit: %w", path, here, err)
				}
				rule.limit = envoyLimitName(here, uid+"\x00"+d.Key+"\x01"+d.Value)
				c.rules = append(c.rules, rule)
			}
			child.rule = rule
		}
		if err := c.addLevel(path, domain, here, uid+"\x00"+d.Key+"\x01"+d.Value, child, d.Descriptors); err != nil {
			return err
		}
	}
	return nil
}

// envoyLimitName turns a descriptor path into a valid, unique limit name: the readable path with
// other characters replaced, cut to fit, and a hash of the exact path (uid).
func envoyLimitName(path, uid string) string {
	h := fnv.New32a()
	h.Write([]byte(uid))
	var b strings.Builder
	b.WriteString("envoy/")
	for _, r := range path {
		if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-:/", r)) {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	name := b.String()
	if max := fsm.MaxNameLen - 9; len(name) > max {
		name = name[:max]
	}
	return fmt.Sprintf("%s.%08x", name, h.Sum32())
}

// hasDomain reports whether a file configures domain.
func (c *Config) hasDomain(domain string) bool { return c.domains[domain] != nil }

// match finds the rule for a request descriptor's entries, as envoyproxy/ratelimit does: level
// by level, "key_value" first, then "key" (any value). nil means no limit applies.
func (c *Config) match(domain string, keys, values []string) *rule {
	n := c.domains[domain]
	for i := range keys {
		if n == nil {
			return nil
		}
		next := n.children[keys[i]+"_"+values[i]]
		if next == nil {
			next = n.children[keys[i]]
		}
		n = next
	}
	if n == nil {
		return nil
	}
	return n.rule
}

// Limits are the replicated limits the configuration needs. The configuration is their source
// of truth: the member keeps them as configured (re-created when deleted, set back when changed).
func (c *Config) Limits() []fsm.LimitSpec {
	var out []fsm.LimitSpec
	for _, r := range c.rules {
		out = append(out, fsm.LimitSpec{Name: r.limit, Rate: r.rpu, Period: r.per, Admission: r.admission, GrantTTL: r.grantTTL})
	}
	return out
}

// setAdmission reads the admission extension keys of a rate_limit.
func (r *rule) setAdmission(y *yamlRate) error {
	var err error
	if r.admission, err = fsm.ParseAdmission(y.Admission); err != nil {
		return err
	}
	if y.GrantTTL != "" {
		if r.grantTTL, err = time.ParseDuration(y.GrantTTL); err != nil {
			return fmt.Errorf("grant_ttl %q is not a duration like 2s", y.GrantTTL)
		}
	}
	return fsm.LimitSpec{Admission: r.admission, GrantTTL: r.grantTTL}.Check()
}
