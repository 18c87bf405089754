package deploy

// These tests parse every deployment file and check the wiring between their parts: that the
// StatefulSet names its headless Service, that probes hit the gRPC port, that --data-dir is where
// the volume is mounted, that the dashboard asks only for metrics limiterd exports, and so on.
// Each check runs on the real files (which must pass) and on copies broken on purpose (which must
// fail), so a check that cannot fail is caught too.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const (
	k8sFile       = "k8s/limiterd.yaml"
	composeFile   = "compose/docker-compose.yml"
	dockerfile    = "Dockerfile"
	buildScript   = "build-image.sh"
	systemdFile   = "systemd/limiterd.service"
	dashboardFile = "grafana/limiterd-dashboard.json"

	raftPort    = "7000"
	apiPort     = "7400"
	metricsPort = "9400"
	replicas    = 3
	imageUID    = "65532" // the Dockerfile's USER; k8s runs the pods as it too
)

// exportedMetrics are the series limiterd serves on /metrics (server/metrics.go): the dashboard
// may use these and no others.
var exportedMetrics = []string{
	"limiterd_requests_total",
	"limiterd_request_duration_seconds_bucket",
	"limiterd_batch_takes_bucket",
	"limiterd_raft_state",
	"limiterd_raft_term",
	"limiterd_raft_commit_index",
	"limiterd_raft_applied_index",
	"limiterd_apply_lag",
	"limiterd_leader_changes_total",
	"limiterd_buckets",
	"limiterd_request_ids",
	"limiterd_snapshot_duration_seconds_bucket",
	"limiterd_lease_held",
	"limiterd_local_denials_total",
	"limiterd_lease_reads_total",
	"limiterd_decisions_total",
	"limiterd_limit_decisions_total",
	"limiterd_envoy_rule_decisions_total",
	"limiterd_envoy_unknown_domain_total",
	"raft_commitTime", // hashicorp/raft's own, bridged (server.BridgeRaftMetrics)
}

// labelValues are the values the dashboard may match for these labels.
var labelValues = map[string][]string{
	"result": {"allowed", "denied", "shadow_denied", "error", "ok"},
	"source": {"take", "takemany", "local", "envoy"},
	"state":  {"follower", "candidate", "leader", "shutdown"},
}

// problems collects what a check found wrong.
type problems []string

func (p *problems) addf(format string, a ...any) { *p = append(*p, fmt.Sprintf(format, a...)) }

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// expectClean fails the test with every problem found.
func expectClean(t *testing.T, what string, p problems) {
	t.Helper()
	for _, s := range p {
		t.Errorf("%s: %s", what, s)
	}
}

// expectProblem fails the test unless some problem contains want.
func expectProblem(t *testing.T, p problems, want string) {
	t.Helper()
	for _, s := range p {
		if strings.Contains(s, want) {
			return
		}
	}
	if len(p) == 0 {
		t.Errorf("the broken file passed every check (want a problem containing %q)", want)
		return
	}
	t.Errorf("no problem contains %q; got:\n  %s", want, strings.Join(p, "\n  "))
}

// ---- flags ------------------------------------------------------------------------------------

// parseFlags reads --name=value and --name value arguments. A repeated flag is an error.
func parseFlags(args []string) (map[string]string, error) {
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "--") {
			return nil, fmt.Errorf("argument %q is not a --flag", a)
		}
		name, val, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !ok {
			if i+1 >= len(args) || strings.HasPrefix(args[i+1], "--") {
				return nil, fmt.Errorf("flag --%s has no value", name)
			}
			i++
			val = args[i]
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("flag --%s given twice", name)
		}
		out[name] = val
	}
	return out, nil
}

type peer struct{ id, addr string }

// parsePeers reads a --bootstrap or --raft-peer-addrs value: id=host:port,...
func parsePeers(s string) ([]peer, error) {
	var out []peer
	for _, part := range strings.Split(s, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || id == "" {
			return nil, fmt.Errorf("%q: want id=host:port", part)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("%q: %v", part, err)
		}
		out = append(out, peer{id, addr})
	}
	return out, nil
}

func portOf(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return p
}

// checkAddrFlags checks the listen flags every member needs against the ports the deployment
// wires up (container ports, published ports, probes).
func checkAddrFlags(p *problems, who string, fl map[string]string) {
	for _, f := range []struct{ flag, port string }{
		{"raft-bind", raftPort}, {"api-addr", apiPort}, {"metrics-addr", metricsPort},
	} {
		v, ok := fl[f.flag]
		switch {
		case !ok:
			p.addf("%s: no --%s", who, f.flag)
		case portOf(v) != f.port:
			p.addf("%s: --%s=%s does not listen on port %s", who, f.flag, v, f.port)
		default:
			if h, _, _ := net.SplitHostPort(v); h != "0.0.0.0" && h != "" && h != "::" {
				p.addf("%s: --%s=%s listens on %s only, not on every interface", who, f.flag, v, h)
			}
		}
	}
}

// limiterdConfig is limiterd's --config file, as far as the deployment shows it.
type limiterdConfig struct {
	Limits []struct {
		Name  string `yaml:"name"`
		Rate  int64  `yaml:"rate"`
		Per   string `yaml:"per"`
		Burst *int64 `yaml:"burst"`
	} `yaml:"limits"`
}

func checkLimiterdConfig(p *problems, where, text string) {
	var c limiterdConfig
	dec := yaml.NewDecoder(strings.NewReader(text))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		p.addf("%s: limiterd config does not parse: %v", where, err)
		return
	}
	if len(c.Limits) == 0 {
		p.addf("%s: limiterd config has no limits", where)
	}
	seen := map[string]bool{}
	for i, l := range c.Limits {
		if l.Name == "" || seen[l.Name] {
			p.addf("%s: limit %d: empty or repeated name %q", where, i, l.Name)
		}
		seen[l.Name] = true
		if l.Rate <= 0 {
			p.addf("%s: limit %q: rate %d is not positive", where, l.Name, l.Rate)
		}
		if d, err := time.ParseDuration(l.Per); err != nil || d <= 0 {
			p.addf("%s: limit %q: per %q is not a positive Go duration", where, l.Name, l.Per)
		}
		if l.Burst != nil && *l.Burst <= 0 {
			p.addf("%s: limit %q: burst %d is not positive", where, l.Name, *l.Burst)
		}
	}
}

// ---- every file parses ------------------------------------------------------------------------

func TestEveryFileParses(t *testing.T) {
	var yamls, jsons int
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != "." {
			return filepath.SkipDir // .build
		}
		switch filepath.Ext(path) {
		case ".yaml", ".yml":
			yamls++
			dec := yaml.NewDecoder(bytes.NewReader(readFile(t, path)))
			for n := 0; ; n++ {
				var doc yaml.Node
				if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
					break
				} else if err != nil {
					t.Errorf("%s: document %d: %v", path, n, err)
					break
				}
			}
		case ".json":
			jsons++
			var v any
			if err := json.Unmarshal(readFile(t, path), &v); err != nil {
				t.Errorf("%s: %v", path, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if yamls < 2 || jsons < 1 {
		t.Errorf("found %d YAML and %d JSON files; want the k8s and compose YAML and the dashboard", yamls, jsons)
	}
	if out, err := exec.Command("bash", "-n", buildScript).CombinedOutput(); err != nil {
		if _, lerr := exec.LookPath("bash"); lerr == nil {
			t.Errorf("bash -n %s: %v\n%s", buildScript, err, out)
		}
	}
}

// ---- across files -----------------------------------------------------------------------------

// TestSameUserEverywhere: the image's USER, the k8s pod's runAsUser and fsGroup agree, so the data
// volume the pod writes is the one the image's user owns.
func TestSameUserEverywhere(t *testing.T) {
	var user string
	for _, in := range parseDockerfile(string(readFile(t, dockerfile))) {
		if in.cmd == "USER" {
			user = in.args
		}
	}
	sc := loadK8s(t).statefulSets[0].Spec.Template.Spec.SecurityContext
	if sc.RunAsUser == nil || sc.FSGroup == nil || user != fmt.Sprintf("%d:%d", *sc.RunAsUser, *sc.FSGroup) {
		t.Errorf("Dockerfile USER %q differs from the pod's runAsUser:fsGroup", user)
	}
}
