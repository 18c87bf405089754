package deploy

// These tests parse every deployment file and check the wiring between their parts: that the
// StatefulSet names its headless Service, that probes hit the gRPC port, that --data-dir is where
// the volume is mounted, that the dashboard asks only for metrics limiterd exports, and so on.
// Each check runs on the real files (which must pass) and on copies broken on purpose (which must
// fail), so a check that cannot fail is caught too.

import (
	"bufio"
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
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"

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
}

// labelValues are the values the dashboard may match for these labels.
var labelValues = map[string][]string{
	"result": {"allowed", "denied", "error", "ok"},
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

// ---- Kubernetes -------------------------------------------------------------------------------

type objectMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type labelSelector struct {
	MatchLabels      map[string]string `yaml:"matchLabels"`
	MatchExpressions []any             `yaml:"matchExpressions"`
}

type k8sService struct {
	APIVersion string     `yaml:"apiVersion"`
	Metadata   objectMeta `yaml:"metadata"`
	Spec       struct {
		Type                     string            `yaml:"type"`
		ClusterIP                string            `yaml:"clusterIP"`
		PublishNotReadyAddresses bool              `yaml:"publishNotReadyAddresses"`
		Selector                 map[string]string `yaml:"selector"`
		Ports                    []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort any    `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type k8sConfigMap struct {
	APIVersion string            `yaml:"apiVersion"`
	Metadata   objectMeta        `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
}

type k8sProbe struct {
	GRPC *struct {
		Port    int     `yaml:"port"`
		Service *string `yaml:"service"`
	} `yaml:"grpc"`
	HTTPGet   any `yaml:"httpGet"`
	TCPSocket any `yaml:"tcpSocket"`
	Exec      any `yaml:"exec"`
}

type k8sContainer struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			FieldRef *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	StartupProbe   *k8sProbe `yaml:"startupProbe"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		RunAsUser                *int  `yaml:"runAsUser"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		SubPath   string `yaml:"subPath"`
	} `yaml:"volumeMounts"`
}

type k8sStatefulSet struct {
	APIVersion string     `yaml:"apiVersion"`
	Metadata   objectMeta `yaml:"metadata"`
	Spec       struct {
		ServiceName         string        `yaml:"serviceName"`
		Replicas            *int          `yaml:"replicas"`
		PodManagementPolicy string        `yaml:"podManagementPolicy"`
		Selector            labelSelector `yaml:"selector"`
		Template            struct {
			Metadata objectMeta `yaml:"metadata"`
			Spec     struct {
				SecurityContext struct {
					RunAsNonRoot *bool `yaml:"runAsNonRoot"`
					RunAsUser    *int  `yaml:"runAsUser"`
					FSGroup      *int  `yaml:"fsGroup"`
				} `yaml:"securityContext"`
				Containers []k8sContainer `yaml:"containers"`
				Volumes    []struct {
					Name      string `yaml:"name"`
					ConfigMap *struct {
						Name  string `yaml:"name"`
						Items []struct {
							Key  string `yaml:"key"`
							Path string `yaml:"path"`
						} `yaml:"items"`
					} `yaml:"configMap"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata objectMeta `yaml:"metadata"`
			Spec     struct {
				AccessModes []string `yaml:"accessModes"`
				Resources   struct {
					Requests map[string]string `yaml:"requests"`
				} `yaml:"resources"`
			} `yaml:"spec"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

type k8sPDB struct {
	APIVersion string     `yaml:"apiVersion"`
	Metadata   objectMeta `yaml:"metadata"`
	Spec       struct {
		MaxUnavailable any           `yaml:"maxUnavailable"`
		MinAvailable   any           `yaml:"minAvailable"`
		Selector       labelSelector `yaml:"selector"`
	} `yaml:"spec"`
}

type k8sManifests struct {
	services     []k8sService
	configMaps   []k8sConfigMap
	statefulSets []k8sStatefulSet
	pdbs         []k8sPDB
	unknown      []string
}

func parseK8s(data []byte) (*k8sManifests, error) {
	m := &k8sManifests{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for n := 0; ; n++ {
		var doc yaml.Node
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			return m, nil
		} else if err != nil {
			return nil, fmt.Errorf("document %d: %w", n, err)
		}
		if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
			continue // an empty document
		}
		var head struct {
			Kind     string     `yaml:"kind"`
			Metadata objectMeta `yaml:"metadata"`
		}
		if err := doc.Decode(&head); err != nil {
			return nil, fmt.Errorf("document %d: %w", n, err)
		}
		var err error
		switch head.Kind {
		case "Service":
			var s k8sService
			err = doc.Decode(&s)
			m.services = append(m.services, s)
		case "ConfigMap":
			var c k8sConfigMap
			err = doc.Decode(&c)
			m.configMaps = append(m.configMaps, c)
		case "StatefulSet":
			var s k8sStatefulSet
			err = doc.Decode(&s)
			m.statefulSets = append(m.statefulSets, s)
		case "PodDisruptionBudget":
			var p k8sPDB
			err = doc.Decode(&p)
			m.pdbs = append(m.pdbs, p)
		default:
			m.unknown = append(m.unknown, head.Kind+"/"+head.Metadata.Name)
		}
		if err != nil {
			return nil, fmt.Errorf("document %d (%s %s): %w", n, head.Kind, head.Metadata.Name, err)
		}
	}
}

// selects reports whether a selector (non-empty, all equality) picks pods with these labels.
func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func checkK8s(m *k8sManifests) problems {
	var p problems
	if len(m.unknown) > 0 {
		p.addf("objects this test does not know: %v", m.unknown)
	}
	if len(m.statefulSets) != 1 || len(m.configMaps) != 1 || len(m.pdbs) != 1 || len(m.services) != 2 {
		p.addf("want 1 StatefulSet, 1 ConfigMap, 1 PodDisruptionBudget and 2 Services; have %d, %d, %d, %d",
			len(m.statefulSets), len(m.configMaps), len(m.pdbs), len(m.services))
		if len(m.statefulSets) == 0 {
			return p
		}
	}
	sts := &m.statefulSets[0]
	if sts.APIVersion != "apps/v1" {
		p.addf("StatefulSet apiVersion %q, want apps/v1", sts.APIVersion)
	}
	podLabels := sts.Spec.Template.Metadata.Labels
	pod := &sts.Spec.Template.Spec
	name := sts.Metadata.Name

	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != replicas {
		p.addf("StatefulSet replicas: want %d", replicas)
	}
	if sts.Spec.PodManagementPolicy != "Parallel" {
		p.addf("StatefulSet podManagementPolicy %q: want Parallel (with OrderedReady pod 0 waits for a quorum that never comes)",
			sts.Spec.PodManagementPolicy)
	}
	if len(sts.Spec.Selector.MatchExpressions) > 0 || !selects(sts.Spec.Selector.MatchLabels, podLabels) {
		p.addf("StatefulSet selector %v does not match the pod labels %v", sts.Spec.Selector.MatchLabels, podLabels)
	}

	// Containers and their ports.
	if len(pod.Containers) != 1 {
		p.addf("want one container, have %d", len(pod.Containers))
		return p
	}
	c := &pod.Containers[0]
	portName := map[string]string{} // number -> name
	named := map[string]int{}
	for _, cp := range c.Ports {
		if cp.Name == "" {
			p.addf("container port %d has no name", cp.ContainerPort)
		} else if _, dup := named[cp.Name]; dup {
			p.addf("container port name %q is used twice", cp.Name)
		}
		named[cp.Name] = cp.ContainerPort
		portName[strconv.Itoa(cp.ContainerPort)] = cp.Name
	}
	for _, want := range []string{raftPort, apiPort, metricsPort} {
		if portName[want] == "" {
			p.addf("no named container port %s", want)
		}
	}

	// Services.
	var headless *k8sService
	for i := range m.services {
		s := &m.services[i]
		if s.APIVersion != "v1" {
			p.addf("Service %s apiVersion %q, want v1", s.Metadata.Name, s.APIVersion)
		}
		if s.Metadata.Name == sts.Spec.ServiceName {
			headless = s
		}
		if !selects(s.Spec.Selector, podLabels) {
			p.addf("Service %s selector %v does not match the pod labels %v", s.Metadata.Name, s.Spec.Selector, podLabels)
		}
		for _, sp := range s.Spec.Ports {
			switch tp := sp.TargetPort.(type) {
			case string:
				if _, ok := named[tp]; !ok {
					p.addf("Service %s port %s: targetPort %q is no container port", s.Metadata.Name, sp.Name, tp)
				}
			case int:
				if portName[strconv.Itoa(tp)] == "" {
					p.addf("Service %s port %s: targetPort %d is no container port", s.Metadata.Name, sp.Name, tp)
				}
			case nil:
				if portName[strconv.Itoa(sp.Port)] == "" {
					p.addf("Service %s port %d is no container port", s.Metadata.Name, sp.Port)
				}
			}
		}
	}
	if headless == nil {
		p.addf("StatefulSet serviceName %q matches no Service", sts.Spec.ServiceName)
	} else {
		if headless.Spec.ClusterIP != "None" {
			p.addf("Service %s (the StatefulSet's serviceName) is not headless (clusterIP: None)", headless.Metadata.Name)
		}
		if !headless.Spec.PublishNotReadyAddresses {
			p.addf("Service %s must set publishNotReadyAddresses: members must find each other before they are ready", headless.Metadata.Name)
		}
		hasRaft := false
		for _, sp := range headless.Spec.Ports {
			hasRaft = hasRaft || strconv.Itoa(sp.Port) == raftPort
		}
		if !hasRaft {
			p.addf("Service %s has no port %s (Raft)", headless.Metadata.Name, raftPort)
		}
	}

	// Environment used in the args.
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env[e.Name] = "fieldRef:" + e.ValueFrom.FieldRef.FieldPath
		} else {
			env[e.Name] = e.Value
		}
	}
	if env["POD_NAME"] != "fieldRef:metadata.name" {
		p.addf("env POD_NAME must come from fieldRef metadata.name, is %q", env["POD_NAME"])
	}
	if env["NAMESPACE"] != "fieldRef:metadata.namespace" {
		p.addf("env NAMESPACE must come from fieldRef metadata.namespace, is %q", env["NAMESPACE"])
	}

	// Flags.
	if len(c.Command) > 0 {
		p.addf("container sets command %v: leave the image's ENTRYPOINT (/limiterd) and set args", c.Command)
	}
	fl, err := parseFlags(c.Args)
	if err != nil {
		p.addf("args: %v", err)
		return p
	}
	checkAddrFlags(&p, "args", fl)
	dns := func(pod string) string {
		return fmt.Sprintf("%s.%s.$(NAMESPACE).svc.cluster.local", pod, sts.Spec.ServiceName)
	}
	if fl["id"] != "$(POD_NAME)" {
		p.addf("--id=%q: want $(POD_NAME), the pod's stable name", fl["id"])
	}
	if want := dns("$(POD_NAME)") + ":" + raftPort; fl["raft-addr"] != want {
		p.addf("--raft-addr=%q: want %q", fl["raft-addr"], want)
	}
	if want := dns("$(POD_NAME)") + ":" + apiPort; fl["api-advertise"] != want {
		p.addf("--api-advertise=%q: want %q", fl["api-advertise"], want)
	}
	var wantPeers []peer
	for i := range replicas {
		pod := fmt.Sprintf("%s-%d", name, i)
		wantPeers = append(wantPeers, peer{pod, dns(pod) + ":" + raftPort})
	}
	for _, f := range []string{"bootstrap", "raft-peer-addrs"} {
		got, err := parsePeers(fl[f])
		if err != nil {
			p.addf("--%s: %v", f, err)
		} else if !slices.Equal(got, wantPeers) {
			p.addf("--%s=%q: want every pod of the StatefulSet at its stable DNS name: %v", f, fl[f], wantPeers)
		}
	}
	if _, ok := fl["join"]; ok {
		p.addf("--join and --bootstrap are exclusive")
	}

	// Data volume.
	mounts := map[string]string{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.Name] = vm.MountPath
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 {
		p.addf("want one volumeClaimTemplate, have %d", len(sts.Spec.VolumeClaimTemplates))
	} else {
		vct := sts.Spec.VolumeClaimTemplates[0]
		mp, ok := mounts[vct.Metadata.Name]
		switch {
		case !ok:
			p.addf("volumeClaimTemplate %q is mounted nowhere", vct.Metadata.Name)
		case mp != fl["data-dir"]:
			p.addf("--data-dir=%q but volumeClaimTemplate %q is mounted at %q", fl["data-dir"], vct.Metadata.Name, mp)
		}
		if vct.Spec.Resources.Requests["storage"] == "" || !slices.Contains(vct.Spec.AccessModes, "ReadWriteOnce") {
			p.addf("volumeClaimTemplate %q: want ReadWriteOnce and a storage request", vct.Metadata.Name)
		}
	}

	// Config file from the ConfigMap.
	checkK8sConfig(&p, m, c, fl["config"])

	// Probes: grpc.health.v1 on the API port.
	for _, pr := range []struct {
		name     string
		probe    *k8sProbe
		required bool
	}{{"readinessProbe", c.ReadinessProbe, true}, {"livenessProbe", c.LivenessProbe, true}, {"startupProbe", c.StartupProbe, false}} {
		switch {
		case pr.probe == nil:
			if pr.required {
				p.addf("no %s", pr.name)
			}
		case pr.probe.GRPC == nil || pr.probe.HTTPGet != nil || pr.probe.TCPSocket != nil || pr.probe.Exec != nil:
			p.addf("%s: want a grpc probe only", pr.name)
		case strconv.Itoa(pr.probe.GRPC.Port) != apiPort:
			p.addf("%s: grpc port %d, want %s", pr.name, pr.probe.GRPC.Port, apiPort)
		case pr.name == "livenessProbe" && (pr.probe.GRPC.Service == nil || *pr.probe.GRPC.Service != "liveness"):
			p.addf("%s: want grpc service \"liveness\" (SERVING whenever the process answers), not the node's serving status", pr.name)
		case pr.name != "livenessProbe" && pr.probe.GRPC.Service != nil && *pr.probe.GRPC.Service != "":
			p.addf("%s: grpc service %q; limiterd reports whether the node can serve on service \"\"", pr.name, *pr.probe.GRPC.Service)
		}
	}

	// Resources and security.
	for _, k := range []string{"cpu", "memory"} {
		if c.Resources.Requests[k] == "" {
			p.addf("no resources.requests.%s", k)
		}
	}
	if c.Resources.Limits["memory"] == "" {
		p.addf("no resources.limits.memory")
	}
	sc := pod.SecurityContext
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		p.addf("pod securityContext: want runAsNonRoot: true")
	}
	if sc.RunAsUser == nil || strconv.Itoa(*sc.RunAsUser) != imageUID || c.SecurityContext.RunAsUser != nil {
		p.addf("pod securityContext: want runAsUser %s (the image's USER), set on the pod only", imageUID)
	}
	if sc.FSGroup == nil || *sc.FSGroup == 0 {
		p.addf("pod securityContext: want a non-zero fsGroup so the volume is writable")
	}
	if r := c.SecurityContext.ReadOnlyRootFilesystem; r == nil || !*r {
		p.addf("container securityContext: want readOnlyRootFilesystem: true")
	}
	if a := c.SecurityContext.AllowPrivilegeEscalation; a == nil || *a {
		p.addf("container securityContext: want allowPrivilegeEscalation: false")
	}

	// Disruption budget.
	for _, pdb := range m.pdbs {
		if pdb.APIVersion != "policy/v1" {
			p.addf("PodDisruptionBudget apiVersion %q, want policy/v1", pdb.APIVersion)
		}
		if v, ok := pdb.Spec.MaxUnavailable.(int); !ok || v != 1 || pdb.Spec.MinAvailable != nil {
			p.addf("PodDisruptionBudget %s: want maxUnavailable: 1 (and no minAvailable)", pdb.Metadata.Name)
		}
		if len(pdb.Spec.Selector.MatchExpressions) > 0 || !selects(pdb.Spec.Selector.MatchLabels, podLabels) {
			p.addf("PodDisruptionBudget %s selector %v does not match the pod labels %v", pdb.Metadata.Name, pdb.Spec.Selector.MatchLabels, podLabels)
		}
	}
	return p
}

// checkK8sConfig follows --config to a volume mount, the mount to a configMap volume, the volume to
// the ConfigMap and the key, and checks the config it holds.
func checkK8sConfig(p *problems, m *k8sManifests, c *k8sContainer, config string) {
	if config == "" {
		p.addf("no --config")
		return
	}
	sts := &m.statefulSets[0]
	var volName, key string
	for _, vm := range c.VolumeMounts {
		switch {
		case vm.SubPath != "" && vm.MountPath == config:
			volName, key = vm.Name, vm.SubPath
		case vm.SubPath == "" && filepath.Dir(config) == filepath.Clean(vm.MountPath):
			volName, key = vm.Name, filepath.Base(config)
		}
	}
	if volName == "" {
		p.addf("--config=%s is in no volume mount", config)
		return
	}
	for _, v := range sts.Spec.Template.Spec.Volumes {
		if v.Name != volName {
			continue
		}
		if v.ConfigMap == nil {
			p.addf("volume %q (holding --config) is not a configMap volume", volName)
			return
		}
		if len(v.ConfigMap.Items) > 0 { // items rename keys to paths
			path := key
			key = ""
			for _, it := range v.ConfigMap.Items {
				if it.Path == path {
					key = it.Key
				}
			}
		}
		for _, cm := range m.configMaps {
			if cm.Metadata.Name != v.ConfigMap.Name {
				continue
			}
			text, ok := cm.Data[key]
			if !ok {
				p.addf("--config=%s: ConfigMap %s has no key %q", config, cm.Metadata.Name, key)
				return
			}
			checkLimiterdConfig(p, "ConfigMap "+cm.Metadata.Name+" "+key, text)
			return
		}
		p.addf("volume %q names ConfigMap %q, which is not defined", volName, v.ConfigMap.Name)
		return
	}
	p.addf("volume mount %q (holding --config) has no volume", volName)
}

func loadK8s(t *testing.T) *k8sManifests {
	t.Helper()
	m, err := parseK8s(readFile(t, k8sFile))
	if err != nil {
		t.Fatalf("%s: %v", k8sFile, err)
	}
	return m
}

func TestK8sManifests(t *testing.T) {
	expectClean(t, k8sFile, checkK8s(loadK8s(t)))
}

// setArg replaces --flag's value (or removes the flag when value is "").
func setArg(c *k8sContainer, flag, value string) {
	var out []string
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--"+flag+"=") {
			if value == "" {
				continue
			}
			a = "--" + flag + "=" + value
		}
		out = append(out, a)
	}
	c.Args = out
}

func TestK8sChecksCatchBrokenWiring(t *testing.T) {
	sts := func(m *k8sManifests) *k8sStatefulSet { return &m.statefulSets[0] }
	ctr := func(m *k8sManifests) *k8sContainer { return &sts(m).Spec.Template.Spec.Containers[0] }
	headless := func(m *k8sManifests) *k8sService {
		for i := range m.services {
			if m.services[i].Spec.ClusterIP == "None" {
				return &m.services[i]
			}
		}
		t.Fatal("no headless Service")
		return nil
	}
	for _, tc := range []struct {
		name, want string
		mutate     func(m *k8sManifests)
	}{
		{"serviceName renamed", "matches no Service", func(m *k8sManifests) { sts(m).Spec.ServiceName = "limiterd-peers" }},
		{"headless Service renamed", "matches no Service", func(m *k8sManifests) { headless(m).Metadata.Name = "other" }},
		{"headless not headless", "not headless", func(m *k8sManifests) { headless(m).Spec.ClusterIP = "" }},
		{"not-ready pods unpublished", "publishNotReadyAddresses", func(m *k8sManifests) { headless(m).Spec.PublishNotReadyAddresses = false }},
		{"headless without raft port", "no port 7000", func(m *k8sManifests) { headless(m).Spec.Ports = headless(m).Spec.Ports[1:] }},
		{"service selector off", "does not match the pod labels", func(m *k8sManifests) {
			m.services[1].Spec.Selector = map[string]string{"app": "other"}
		}},
		{"service targetPort unknown", "is no container port", func(m *k8sManifests) { m.services[1].Spec.Ports[0].TargetPort = "api" }},
		{"replicas 5", "replicas", func(m *k8sManifests) { n := 5; sts(m).Spec.Replicas = &n }},
		{"ordered pods", "Parallel", func(m *k8sManifests) { sts(m).Spec.PodManagementPolicy = "OrderedReady" }},
		{"sts selector off", "StatefulSet selector", func(m *k8sManifests) {
			sts(m).Spec.Template.Metadata.Labels = map[string]string{"app": "x"}
		}},
		{"port unnamed", "has no name", func(m *k8sManifests) { ctr(m).Ports[1].Name = "" }},
		{"metrics port missing", "no named container port 9400", func(m *k8sManifests) { ctr(m).Ports[2].ContainerPort = 9090 }},
		{"readiness probe on metrics", "readinessProbe: grpc port 9400", func(m *k8sManifests) { ctr(m).ReadinessProbe.GRPC.Port = 9400 }},
		{"liveness probe tcp", "livenessProbe: want a grpc probe", func(m *k8sManifests) {
			ctr(m).LivenessProbe.GRPC = nil
			ctr(m).LivenessProbe.TCPSocket = map[string]any{"port": 7400}
		}},
		{"no liveness probe", "no livenessProbe", func(m *k8sManifests) { ctr(m).LivenessProbe = nil }},
		{"claim renamed", "mounted nowhere", func(m *k8sManifests) { sts(m).Spec.VolumeClaimTemplates[0].Metadata.Name = "state" }},
		{"data dir elsewhere", "--data-dir", func(m *k8sManifests) { setArg(ctr(m), "data-dir", "/var/lib/limiterd") }},
		{"config path wrong", "--config=/etc/limiter/config.yaml is in no volume mount", func(m *k8sManifests) {
			setArg(ctr(m), "config", "/etc/limiter/config.yaml")
		}},
		{"config key wrong", "has no key", func(m *k8sManifests) { setArg(ctr(m), "config", "/etc/limiterd/limits.yaml") }},
		{"config map renamed", "not defined", func(m *k8sManifests) { m.configMaps[0].Metadata.Name = "limiterd-cfg" }},
		{"no config flag", "no --config", func(m *k8sManifests) { setArg(ctr(m), "config", "") }},
		{"config has a bad duration", "not a positive Go duration", func(m *k8sManifests) {
			m.configMaps[0].Data["config.yaml"] = "limits:\n  - name: a\n    rate: 1\n    per: 1 minute\n"
		}},
		{"config has an unknown key", "does not parse", func(m *k8sManifests) {
			m.configMaps[0].Data["config.yaml"] = "limits:\n  - name: a\n    rate: 1\n    period: 1m\n"
		}},
		{"id not the pod name", "--id", func(m *k8sManifests) { setArg(ctr(m), "id", "$(HOSTNAME)") }},
		{"raft addr through the wrong service", "--raft-addr", func(m *k8sManifests) {
			setArg(ctr(m), "raft-addr", "$(POD_NAME).limiterd.$(NAMESPACE).svc.cluster.local:7000")
		}},
		{"bootstrap misses a pod", "--bootstrap", func(m *k8sManifests) {
			setArg(ctr(m), "bootstrap", "limiterd-0=limiterd-0.limiterd-headless.$(NAMESPACE).svc.cluster.local:7000,limiterd-1=limiterd-1.limiterd-headless.$(NAMESPACE).svc.cluster.local:7000")
		}},
		{"no raft-peer-addrs", "--raft-peer-addrs", func(m *k8sManifests) { setArg(ctr(m), "raft-peer-addrs", "") }},
		{"api on loopback", "listens on 127.0.0.1 only", func(m *k8sManifests) { setArg(ctr(m), "api-addr", "127.0.0.1:7400") }},
		{"metrics port differs", "--metrics-addr", func(m *k8sManifests) { setArg(ctr(m), "metrics-addr", "0.0.0.0:9090") }},
		{"namespace env missing", "NAMESPACE", func(m *k8sManifests) { ctr(m).Env = ctr(m).Env[:1] }},
		{"runs as root", "runAsNonRoot", func(m *k8sManifests) { f := false; sts(m).Spec.Template.Spec.SecurityContext.RunAsNonRoot = &f }},
		{"no fsGroup", "fsGroup", func(m *k8sManifests) { sts(m).Spec.Template.Spec.SecurityContext.FSGroup = nil }},
		{"writable root", "readOnlyRootFilesystem", func(m *k8sManifests) { ctr(m).SecurityContext.ReadOnlyRootFilesystem = nil }},
		{"no memory limit", "limits.memory", func(m *k8sManifests) { delete(ctr(m).Resources.Limits, "memory") }},
		{"no cpu request", "requests.cpu", func(m *k8sManifests) { delete(ctr(m).Resources.Requests, "cpu") }},
		{"pdb selector off", "PodDisruptionBudget limiterd selector", func(m *k8sManifests) {
			m.pdbs[0].Spec.Selector.MatchLabels = map[string]string{"app.kubernetes.io/name": "limiter"}
		}},
		{"pdb allows two down", "maxUnavailable: 1", func(m *k8sManifests) { m.pdbs[0].Spec.MaxUnavailable = 2 }},
		{"pdb missing", "want 1 StatefulSet", func(m *k8sManifests) { m.pdbs = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := loadK8s(t)
			tc.mutate(m)
			expectProblem(t, checkK8s(m), tc.want)
		})
	}
}

// ---- docker compose ---------------------------------------------------------------------------

type composeService struct {
	Image       string `yaml:"image"`
	Command     any    `yaml:"command"`
	Entrypoint  any    `yaml:"entrypoint"`
	User        string `yaml:"user"`
	Healthcheck *struct {
		Test    any  `yaml:"test"`
		Disable bool `yaml:"disable"`
	} `yaml:"healthcheck"`
	Volumes  []any `yaml:"volumes"`
	Ports    []any `yaml:"ports"`
	Networks any   `yaml:"networks"`
}

type composeProject struct {
	Services map[string]*composeService `yaml:"services"`
	Volumes  map[string]any             `yaml:"volumes"`
	Networks map[string]any             `yaml:"networks"`
}

func parseCompose(data []byte) (*composeProject, error) {
	var c composeProject
	if err := yaml.Unmarshal(data, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// strList reads a compose list-or-string field.
func strList(v any) ([]string, bool) {
	switch v := v.(type) {
	case string:
		return strings.Fields(v), false
	case []any:
		var out []string
		for _, e := range v {
			out = append(out, fmt.Sprint(e))
		}
		return out, true
	}
	return nil, false
}

type composeMount struct{ source, target string }

func composeMounts(vols []any) []composeMount {
	var out []composeMount
	for _, v := range vols {
		switch v := v.(type) {
		case string:
			parts := strings.Split(v, ":")
			if len(parts) >= 2 {
				out = append(out, composeMount{parts[0], parts[1]})
			} else {
				out = append(out, composeMount{"", parts[0]})
			}
		case map[string]any:
			out = append(out, composeMount{fmt.Sprint(v["source"]), fmt.Sprint(v["target"])})
		}
	}
	return out
}

type composePort struct{ hostIP, published, target string }

func composePorts(ports []any) []composePort {
	var out []composePort
	for _, v := range ports {
		switch v := v.(type) {
		case string:
			v, _, _ = strings.Cut(v, "/")
			parts := strings.Split(v, ":")
			switch len(parts) {
			case 3:
				out = append(out, composePort{parts[0], parts[1], parts[2]})
			case 2:
				out = append(out, composePort{"", parts[0], parts[1]})
			default:
				out = append(out, composePort{"", "", parts[0]})
			}
		case map[string]any:
			ip, _ := v["host_ip"].(string)
			out = append(out, composePort{ip, fmt.Sprint(v["published"]), fmt.Sprint(v["target"])})
		}
	}
	return out
}

func composeNetworks(v any) []string {
	switch v := v.(type) {
	case []any:
		var out []string
		for _, n := range v {
			out = append(out, fmt.Sprint(n))
		}
		return out
	case map[string]any:
		var out []string
		for n := range v {
			out = append(out, n)
		}
		return out
	}
	return nil
}

func checkCompose(c *composeProject) problems {
	var p problems
	var names []string
	for n := range c.Services {
		names = append(names, n)
	}
	slices.Sort(names)
	if len(names) != replicas {
		p.addf("want %d services, have %v", replicas, names)
	}
	var wantPeers []peer // from limiter-1's --bootstrap; every member must have the same
	published := map[string][]string{}
	volumeUsers := map[string]string{}
	for i, name := range names {
		s := c.Services[name]
		who := "service " + name
		if s.Image != "${LIMITERD_IMAGE:-limiterd:dev}" {
			p.addf("%s: image %q, want ${LIMITERD_IMAGE:-limiterd:dev}", who, s.Image)
		}
		if s.Entrypoint != nil {
			p.addf("%s: sets entrypoint; the image's /limiterd is the entrypoint", who)
		}
		if s.User == "0" || s.User == "root" || strings.HasPrefix(s.User, "0:") {
			p.addf("%s: runs as root; the named volume is seeded writable for the image's user", who)
		}
		args, _ := strList(s.Command)
		fl, err := parseFlags(args)
		if err != nil {
			p.addf("%s: command: %v", who, err)
			continue
		}
		checkAddrFlags(&p, who, fl)

		// Membership: the service names are the Raft host names.
		peers, err := parsePeers(fl["bootstrap"])
		if err != nil {
			p.addf("%s: --bootstrap: %v", who, err)
			continue
		}
		var hosts []string
		var self *peer
		for j := range peers {
			h, port, _ := net.SplitHostPort(peers[j].addr)
			hosts = append(hosts, h)
			if port != raftPort {
				p.addf("%s: --bootstrap member %s on port %s, want %s", who, peers[j].id, port, raftPort)
			}
			if h == name {
				self = &peers[j]
			}
		}
		sortedHosts := slices.Clone(hosts)
		slices.Sort(sortedHosts)
		if !slices.Equal(sortedHosts, names) {
			p.addf("%s: --bootstrap hosts %v, want the service names %v", who, hosts, names)
		}
		if i == 0 {
			wantPeers = peers
		} else if !slices.Equal(peers, wantPeers) {
			p.addf("%s: --bootstrap differs from %s's", who, names[0])
		}
		if pa, err := parsePeers(fl["raft-peer-addrs"]); err != nil || !slices.Equal(pa, peers) {
			p.addf("%s: --raft-peer-addrs=%q: want the --bootstrap list (dial members by service name)", who, fl["raft-peer-addrs"])
		}
		if self == nil {
			p.addf("%s: --bootstrap does not list this service", who)
		} else {
			if fl["id"] != self.id {
				p.addf("%s: --id=%q, but --bootstrap names this service %q", who, fl["id"], self.id)
			}
			if fl["raft-addr"] != self.addr {
				p.addf("%s: --raft-addr=%q, want %q as in --bootstrap", who, fl["raft-addr"], self.addr)
			}
		}
		if want := name + ":" + apiPort; fl["api-advertise"] != want {
			p.addf("%s: --api-advertise=%q, want %q", who, fl["api-advertise"], want)
		}

		// Health check: exec form (the image has no shell), limitctl health on the API port.
		if s.Healthcheck == nil || s.Healthcheck.Disable {
			p.addf("%s: no healthcheck", who)
		} else {
			test, isList := strList(s.Healthcheck.Test)
			if !isList || len(test) == 0 || test[0] != "CMD" {
				p.addf("%s: healthcheck test %v: want [\"CMD\", ...] (a FROM scratch image has no shell)", who, test)
			} else {
				hfl, herr := parseFlags(slices.DeleteFunc(slices.Clone(test[2:]), func(a string) bool { return a == "health" }))
				if test[1] != "/limitctl" || !slices.Contains(test, "health") || herr != nil || hfl["addr"] != "127.0.0.1:"+apiPort {
					p.addf("%s: healthcheck test %v: want /limitctl --addr 127.0.0.1:%s health", who, test, apiPort)
				}
			}
		}

		// Data volume: a named volume of its own at --data-dir.
		var data *composeMount
		for _, m := range composeMounts(s.Volumes) {
			if m.target == fl["data-dir"] {
				data = &m
			}
		}
		switch {
		case fl["data-dir"] == "":
			p.addf("%s: no --data-dir", who)
		case data == nil:
			p.addf("%s: no volume mounted at --data-dir=%s", who, fl["data-dir"])
		case strings.ContainsAny(data.source, "/.~") || data.source == "":
			p.addf("%s: %s is a bind mount or anonymous; want a named volume", who, data.target)
		default:
			if _, ok := c.Volumes[data.source]; !ok {
				p.addf("%s: volume %q is not declared under volumes:", who, data.source)
			}
			if other, ok := volumeUsers[data.source]; ok {
				p.addf("%s: volume %q is shared with %s", who, data.source, other)
			}
			volumeUsers[data.source] = name
		}

		// Published ports: loopback, API on 7401.., metrics on 9401...
		for _, pt := range composePorts(s.Ports) {
			if pt.hostIP != "127.0.0.1" {
				p.addf("%s: port %s published on %q, want 127.0.0.1 only", who, pt.target, pt.hostIP)
			}
			published[pt.target] = append(published[pt.target], pt.published)
		}

		nets := composeNetworks(s.Networks)
		if len(nets) != 1 {
			p.addf("%s: want it on one project network, it is on %v", who, nets)
		}
		for _, n := range nets {
			if _, ok := c.Networks[n]; !ok {
				p.addf("%s: network %q is not declared under networks:", who, n)
			}
		}
	}
	for port, base := range map[string]int{apiPort: 7401, metricsPort: 9401} {
		var want []string
		for i := range replicas {
			want = append(want, strconv.Itoa(base+i))
		}
		got := slices.Clone(published[port])
		slices.Sort(got)
		if !slices.Equal(got, want) {
			p.addf("container port %s is published on %v, want %v", port, published[port], want)
		}
	}
	if len(published[raftPort]) > 0 {
		p.addf("Raft port %s is published on the host; keep it on the project network", raftPort)
	}
	return p
}

func loadCompose(t *testing.T) *composeProject {
	t.Helper()
	c, err := parseCompose(readFile(t, composeFile))
	if err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	return c
}

func TestCompose(t *testing.T) {
	c := loadCompose(t)
	expectClean(t, composeFile, checkCompose(c))
	if s := c.Services["limiter-1"]; s == nil || s.Healthcheck == nil {
		t.Fatal("the YAML merge key (<<: *limiterd) was not applied")
	}
}

func TestComposeChecksCatchBrokenWiring(t *testing.T) {
	setFlag := func(s *composeService, flag, value string) {
		args, _ := strList(s.Command)
		var out []any
		for _, a := range args {
			if strings.HasPrefix(a, "--"+flag+"=") {
				if value == "" {
					continue
				}
				a = "--" + flag + "=" + value
			}
			out = append(out, a)
		}
		s.Command = out
	}
	for _, tc := range []struct {
		name, want string
		mutate     func(c *composeProject)
	}{
		{"two services", "want 3 services", func(c *composeProject) { delete(c.Services, "limiter-3") }},
		{"bootstrap with a wrong host", "want the service names", func(c *composeProject) {
			setFlag(c.Services["limiter-2"], "bootstrap", "n1=limiter-1:7000,n2=limiter-2:7000,n3=limiter3:7000")
		}},
		{"bootstrap missing", "--bootstrap", func(c *composeProject) { setFlag(c.Services["limiter-1"], "bootstrap", "") }},
		{"id not in bootstrap", "--id", func(c *composeProject) { setFlag(c.Services["limiter-3"], "id", "n4") }},
		{"raft addr differs", "--raft-addr", func(c *composeProject) { setFlag(c.Services["limiter-1"], "raft-addr", "limiter-2:7000") }},
		{"peer addrs missing", "--raft-peer-addrs", func(c *composeProject) { setFlag(c.Services["limiter-1"], "raft-peer-addrs", "") }},
		{"no healthcheck", "no healthcheck", func(c *composeProject) { c.Services["limiter-2"].Healthcheck = nil }},
		{"shell healthcheck", "no shell", func(c *composeProject) {
			c.Services["limiter-2"].Healthcheck.Test = "/limitctl --addr 127.0.0.1:7400 health"
		}},
		{"healthcheck wrong port", "want /limitctl", func(c *composeProject) {
			c.Services["limiter-2"].Healthcheck.Test = []any{"CMD", "/limitctl", "--addr", "127.0.0.1:9400", "health"}
		}},
		{"no volume", "no volume mounted", func(c *composeProject) { c.Services["limiter-1"].Volumes = nil }},
		{"bind mount", "want a named volume", func(c *composeProject) { c.Services["limiter-1"].Volumes = []any{"./data:/data"} }},
		{"shared volume", "is shared", func(c *composeProject) { c.Services["limiter-2"].Volumes = []any{"limiter-1-data:/data"} }},
		{"undeclared volume", "not declared under volumes", func(c *composeProject) { delete(c.Volumes, "limiter-3-data") }},
		{"data dir elsewhere", "no volume mounted at --data-dir=/var/lib/limiterd", func(c *composeProject) {
			setFlag(c.Services["limiter-1"], "data-dir", "/var/lib/limiterd")
		}},
		{"api published on every interface", "want 127.0.0.1 only", func(c *composeProject) {
			c.Services["limiter-1"].Ports[0] = "7401:7400"
		}},
		{"api ports clash", "container port 7400 is published on", func(c *composeProject) {
			c.Services["limiter-2"].Ports[0] = "127.0.0.1:7401:7400"
		}},
		{"metrics not published", "container port 9400", func(c *composeProject) { c.Services["limiter-3"].Ports = c.Services["limiter-3"].Ports[:1] }},
		{"metrics on another port", "--metrics-addr", func(c *composeProject) { setFlag(c.Services["limiter-3"], "metrics-addr", "0.0.0.0:9090") }},
		{"image hard-coded", "image", func(c *composeProject) { c.Services["limiter-1"].Image = "limiterd:latest" }},
		{"undeclared network", "not declared under networks", func(c *composeProject) { c.Networks = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := loadCompose(t)
			tc.mutate(c)
			expectProblem(t, checkCompose(c), tc.want)
		})
	}
}

// ---- Dockerfile and build script --------------------------------------------------------------

type instruction struct{ cmd, args string }

// parseDockerfile returns the instructions, continuation lines joined, comments dropped.
func parseDockerfile(text string) []instruction {
	var out []instruction
	var cur strings.Builder
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if s, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

func checkDockerfile(text string) problems {
	var p problems
	ins := parseDockerfile(text)
	if len(ins) == 0 || ins[0].cmd != "FROM" || ins[0].args != "scratch" {
		p.addf("the Dockerfile must start FROM scratch (no base image can be pulled)")
	}
	var user, entrypoint, dataOwner string
	exposed, volumes, copied := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for i, in := range ins {
		switch in.cmd {
		case "FROM":
			if i > 0 {
				p.addf("a second FROM (%s): the image is one stage of prebuilt binaries", in.args)
			}
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entrypoint = in.args
		case "EXPOSE":
			for _, f := range strings.Fields(in.args) {
				exposed[strings.TrimSuffix(f, "/tcp")] = true
			}
		case "VOLUME":
			var vs []string
			if json.Unmarshal([]byte(in.args), &vs) != nil {
				vs = strings.Fields(in.args)
			}
			for _, v := range vs {
				volumes[strings.TrimSuffix(v, "/")] = true
			}
		case "COPY", "ADD":
			f := strings.Fields(in.args)
			var chown string
			for len(f) > 0 && strings.HasPrefix(f[0], "--") {
				if v, ok := strings.CutPrefix(f[0], "--chown="); ok {
					chown = v
				}
				f = f[1:]
			}
			if len(f) < 2 {
				p.addf("%s %s: want sources and a destination", in.cmd, in.args)
				continue
			}
			dest := strings.TrimSuffix(f[len(f)-1], "/")
			for _, src := range f[:len(f)-1] {
				copied[filepath.Base(strings.TrimSuffix(src, "/"))+"->"+dest] = true
			}
			if dest == "/data" {
				dataOwner = chown
			}
		case "RUN":
			p.addf("RUN %s: a FROM scratch image has no shell", in.args)
		}
	}
	for _, b := range []string{"limiterd", "limitctl"} {
		if !copied[b+"->/"+b] {
			p.addf("no COPY %s /%s", b, b)
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	if _, err := strconv.Atoi(uid); err != nil || uid == "0" || uid != imageUID {
		p.addf("USER %q: want the numeric non-root %s:%s (the image has no /etc/passwd)", user, imageUID, imageUID)
	}
	if dataOwner != user || dataOwner == "" {
		p.addf("/data is owned by %q, not by USER %q: a named volume seeded from it would not be writable", dataOwner, user)
	}
	var ep []string
	if err := json.Unmarshal([]byte(entrypoint), &ep); err != nil || !slices.Equal(ep, []string{"/limiterd"}) {
		p.addf("ENTRYPOINT %s: want [\"/limiterd\"] (exec form, so limiterd gets SIGTERM)", entrypoint)
	}
	for _, port := range []string{raftPort, apiPort, metricsPort} {
		if !exposed[port] {
			p.addf("port %s is not EXPOSEd", port)
		}
	}
	if !volumes["/data"] {
		p.addf("/data is not a VOLUME")
	}
	return p
}

func checkBuildScript(script, gitignore string) problems {
	var p problems
	var code []string
	for _, l := range strings.Split(script, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			code = append(code, l)
		}
	}
	script = strings.Join(code, "\n")
	for _, want := range []string{"CGO_ENABLED=0", "./cmd/limiterd", "./cmd/limitctl", "deploy/.build", "docker build", "-f deploy/Dockerfile", "limiterd:dev"} {
		if !strings.Contains(script, want) {
			p.addf("%s does not contain %q", buildScript, want)
		}
	}
	ignored := false
	for _, l := range strings.Split(gitignore, "\n") {
		l = strings.Trim(strings.TrimSpace(l), "/")
		ignored = ignored || l == ".build"
	}
	if !ignored {
		p.addf(".gitignore does not ignore .build")
	}
	return p
}

func TestDockerfile(t *testing.T) {
	expectClean(t, dockerfile, checkDockerfile(string(readFile(t, dockerfile))))
	expectClean(t, buildScript, checkBuildScript(string(readFile(t, buildScript)), string(readFile(t, ".gitignore"))))
}

func TestDockerfileChecksCatchBrokenWiring(t *testing.T) {
	df := string(readFile(t, dockerfile))
	for _, tc := range []struct{ name, old, new, want string }{
		{"base image", "FROM scratch", "FROM debian:bookworm-slim", "FROM scratch"},
		{"root", "USER 65532:65532", "USER 0:0", "USER"},
		{"data owned by root", "COPY --chown=65532:65532 data/ /data/", "COPY data/ /data/", "/data is owned"},
		{"shell entrypoint", `ENTRYPOINT ["/limiterd"]`, "ENTRYPOINT /limiterd", "ENTRYPOINT"},
		{"metrics not exposed", "EXPOSE 7000 7400 9400", "EXPOSE 7000 7400", "port 9400"},
		{"no volume", `VOLUME ["/data"]`, "", "/data is not a VOLUME"},
		{"limitctl missing", "COPY limitctl /limitctl", "", "no COPY limitctl"},
		{"shell command", "STOPSIGNAL SIGTERM", "RUN mkdir /tmp", "no shell"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(df, tc.old) {
				t.Fatalf("the Dockerfile no longer contains %q: update this test", tc.old)
			}
			expectProblem(t, checkDockerfile(strings.Replace(df, tc.old, tc.new, 1)), tc.want)
		})
	}
	script, gi := string(readFile(t, buildScript)), string(readFile(t, ".gitignore"))
	expectProblem(t, checkBuildScript(strings.ReplaceAll(script, "CGO_ENABLED=0 ", ""), gi), "CGO_ENABLED=0")
	expectProblem(t, checkBuildScript(script, "# nothing\n"), ".gitignore")
}

// ---- systemd ----------------------------------------------------------------------------------

type unitFile map[string]map[string][]string // section -> key -> values in order

func parseUnit(text string) (unitFile, error) {
	u := unitFile{}
	section := ""
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				return nil, fmt.Errorf("line %d: %q is no key=value in a section", n+1, line)
			}
			k = strings.TrimSpace(k)
			u[section][k] = append(u[section][k], strings.TrimSpace(v))
		}
	}
	return u, nil
}

// systemdSeconds reads a systemd time span such as 30, 30s, 1min or 1min 30s.
func systemdSeconds(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	s = strings.NewReplacer("min", "m", " ", "").Replace(s)
	return time.ParseDuration(s)
}

func checkUnit(text string) problems {
	var p problems
	u, err := parseUnit(text)
	if err != nil {
		p.addf("%v", err)
		return p
	}
	svc := u["Service"]
	if svc == nil {
		p.addf("no [Service] section")
		return p
	}
	if u["Install"]["WantedBy"] == nil {
		p.addf("no [Install] WantedBy=")
	}
	one := func(k string) string {
		if v := svc[k]; len(v) > 0 {
			return v[len(v)-1]
		}
		return ""
	}
	exec := strings.Fields(one("ExecStart"))
	if len(exec) == 0 || !filepath.IsAbs(exec[0]) || filepath.Base(exec[0]) != "limiterd" {
		p.addf("ExecStart=%q: want an absolute path to limiterd", one("ExecStart"))
	} else if fl, err := parseFlags(exec[1:]); err != nil {
		p.addf("ExecStart: %v", err)
	} else if sd := one("StateDirectory"); sd == "" || fl["data-dir"] != "/var/lib/"+sd {
		p.addf("ExecStart --data-dir=%q is not the StateDirectory=%q (/var/lib/%s)", fl["data-dir"], sd, sd)
	}
	if !slices.Contains(svc["EnvironmentFile"], "-/etc/limiterd/limiterd.env") {
		p.addf("no EnvironmentFile=-/etc/limiterd/limiterd.env")
	}
	if one("KillSignal") != "SIGTERM" {
		p.addf("KillSignal=%q, want SIGTERM (limiterd hands leadership over on it)", one("KillSignal"))
	}
	if d, err := systemdSeconds(one("TimeoutStopSec")); err != nil || d < 15*time.Second {
		p.addf("TimeoutStopSec=%q: want at least 15s (5 s handover + 5 s stop, with room)", one("TimeoutStopSec"))
	}
	if one("Restart") != "on-failure" {
		p.addf("Restart=%q, want on-failure", one("Restart"))
	}
	if one("DynamicUser") != "yes" && (one("User") == "" || one("User") == "root") {
		p.addf("want DynamicUser=yes or a dedicated User=")
	}
	for k, want := range map[string]string{
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"PrivateDevices": "yes", "MemoryDenyWriteExecute": "yes", "LockPersonality": "yes",
		"RestrictNamespaces": "yes", "RestrictRealtime": "yes", "RestrictSUIDSGID": "yes",
		"ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
		"SystemCallArchitectures": "native",
	} {
		if got := one(k); got != want {
			p.addf("%s=%q, want %s", k, got, want)
		}
	}
	if v := svc["CapabilityBoundingSet"]; !slices.Equal(v, []string{""}) {
		p.addf("CapabilityBoundingSet=%q: want it empty (no capabilities)", v)
	}
	if fams := strings.Fields(one("RestrictAddressFamilies")); !slices.Equal(fams, []string{"AF_INET", "AF_INET6", "AF_UNIX"}) {
		p.addf("RestrictAddressFamilies=%q, want AF_INET AF_INET6 AF_UNIX", one("RestrictAddressFamilies"))
	}
	if f := svc["SystemCallFilter"]; len(f) == 0 || f[0] != "@system-service" {
		p.addf("SystemCallFilter=%q: want @system-service first", f)
	}
	for k := range u["Unit"] {
		if _, ok := map[string]bool{"Description": true, "Documentation": true, "Wants": true, "After": true,
			"Requires": true, "StartLimitIntervalSec": true, "StartLimitBurst": true}[k]; !ok {
			p.addf("[Unit] %s: does it belong in [Service]?", k)
		}
	}
	return p
}

func TestSystemdUnit(t *testing.T) {
	expectClean(t, systemdFile, checkUnit(string(readFile(t, systemdFile))))
}

func TestSystemdChecksCatchBrokenWiring(t *testing.T) {
	unit := string(readFile(t, systemdFile))
	for _, tc := range []struct{ name, old, new, want string }{
		{"no ExecStart", "ExecStart=", "#ExecStart=", "ExecStart"},
		{"data dir elsewhere", "--data-dir=/var/lib/limiterd", "--data-dir=/srv/limiterd", "StateDirectory"},
		{"kill with SIGKILL", "KillSignal=SIGTERM", "KillSignal=SIGKILL", "KillSignal"},
		{"short stop timeout", "TimeoutStopSec=30s", "TimeoutStopSec=5s", "TimeoutStopSec"},
		{"always restart", "Restart=on-failure", "Restart=always", "Restart="},
		{"env file required", "EnvironmentFile=-/etc/limiterd/limiterd.env", "EnvironmentFile=/etc/limiterd/limiterd.env", "EnvironmentFile"},
		{"runs as root", "DynamicUser=yes", "User=root", "DynamicUser"},
		{"capabilities kept", "CapabilityBoundingSet=\n", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n", "CapabilityBoundingSet"},
		{"no ProtectSystem", "ProtectSystem=strict", "ProtectSystem=full", "ProtectSystem"},
		{"no ProtectHome", "ProtectHome=yes\n", "", "ProtectHome"},
		{"no PrivateTmp", "PrivateTmp=yes", "PrivateTmp=no", "PrivateTmp"},
		{"no NoNewPrivileges", "NoNewPrivileges=yes\n", "", "NoNewPrivileges"},
		{"netlink allowed", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK", "RestrictAddressFamilies"},
		{"no syscall filter", "SystemCallFilter=@system-service\n", "", "SystemCallFilter"},
		{"W^X off", "MemoryDenyWriteExecute=yes", "MemoryDenyWriteExecute=no", "MemoryDenyWriteExecute"},
		{"no LockPersonality", "LockPersonality=yes\n", "", "LockPersonality"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(unit, tc.old) {
				t.Fatalf("the unit no longer contains %q: update this test", tc.old)
			}
			expectProblem(t, checkUnit(strings.Replace(unit, tc.old, tc.new, 1)), tc.want)
		})
	}
}

// ---- Grafana dashboard ------------------------------------------------------------------------

type dashPanel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"` // inside a collapsed row
}

type dashboard struct {
	UID           string      `json:"uid"`
	Title         string      `json:"title"`
	SchemaVersion int         `json:"schemaVersion"`
	Panels        []dashPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Query      any    `json:"query"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

// promAggregations may be written op by (labels) (expr), with the clause before the parenthesis.
var promAggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
}

var promKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"bool": true, "and": true, "or": true, "unless": true, "offset": true, "atan2": true, "inf": true, "nan": true,
}

// promMetricNames returns the metric names a PromQL expression selects: identifiers that are not
// functions, keywords, label names (inside {} or after by/without/on/ignoring/group_*), or inside
// strings and range brackets.
func promMetricNames(expr string) ([]string, error) {
	var names []string
	r := []rune(expr)
	braces, brackets := 0, 0
	labelList := false // inside by (...), without (...), on (...), ...
	pendingLabelList := false
	for i := 0; i < len(r); {
		c := r[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for ; j < len(r) && r[j] != c; j++ {
				if r[j] == '\\' && c != '`' {
					j++
				}
			}
			if j >= len(r) {
				return nil, fmt.Errorf("unterminated string in %q", expr)
			}
			i = j + 1
			continue
		case c == '{':
			braces++
		case c == '}':
			braces--
		case c == '[':
			brackets++
		case c == ']':
			brackets--
		case c == '(':
			if pendingLabelList {
				labelList, pendingLabelList = true, false
			}
		case c == ')':
			labelList = false
		case unicode.IsLetter(c) || c == '_' || c == ':':
			j := i
			for j < len(r) && (unicode.IsLetter(r[j]) || unicode.IsDigit(r[j]) || r[j] == '_' || r[j] == ':') {
				j++
			}
			word := string(r[i:j])
			k := j
			for k < len(r) && unicode.IsSpace(r[k]) {
				k++
			}
			isCall := k < len(r) && r[k] == '('
			switch {
			case braces > 0 || brackets > 0 || labelList:
			case promKeywords[strings.ToLower(word)]:
				switch strings.ToLower(word) {
				case "by", "without", "on", "ignoring", "group_left", "group_right":
					pendingLabelList = true
				}
			case isCall || promAggregations[strings.ToLower(word)]:
			default:
				names = append(names, word)
			}
			i = j
			continue
		case unicode.IsDigit(c) || c == '.':
			j := i
			for j < len(r) && (unicode.IsLetter(r[j]) || unicode.IsDigit(r[j]) || r[j] == '.' || r[j] == '_') {
				j++ // numbers, and durations such as 5m
			}
			i = j
			continue
		}
		if braces < 0 || brackets < 0 {
			return nil, fmt.Errorf("unbalanced brackets in %q", expr)
		}
		i++
	}
	if braces != 0 || brackets != 0 {
		return nil, fmt.Errorf("unbalanced brackets in %q", expr)
	}
	return names, nil
}

// labelValuesSelector returns the series selector of a label_values(selector, label) variable
// query, or the query itself.
func labelValuesSelector(q string) string {
	q = strings.TrimSpace(q)
	if inner, ok := strings.CutPrefix(q, "label_values("); ok {
		inner = strings.TrimSuffix(inner, ")")
		if i := strings.LastIndex(inner, ","); i >= 0 {
			return strings.TrimSpace(inner[:i])
		}
	}
	return q
}

var labelMatcher = regexp.MustCompile(`\b([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"`)

func checkDashboard(data []byte) problems {
	var p problems
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		p.addf("does not parse: %v", err)
		return p
	}
	if d.SchemaVersion < 36 || d.SchemaVersion > 41 {
		p.addf("schemaVersion %d: want 36..41", d.SchemaVersion)
	}
	if d.UID == "" || d.Title == "" {
		p.addf("want a uid and a title")
	}
	vars := map[string]bool{}
	var exprs []string
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Type == "query" {
			q := v.Definition
			if m, ok := v.Query.(map[string]any); ok {
				q, _ = m["query"].(string)
			} else if s, ok := v.Query.(string); ok {
				q = s
			}
			exprs = append(exprs, labelValuesSelector(q))
		}
	}
	if !vars["datasource"] {
		p.addf("no datasource variable")
	}
	allowed := map[string]bool{}
	for _, m := range exportedMetrics {
		allowed[m] = true
	}
	used := map[string]bool{}
	ids := map[int]string{}
	var visit func(ps []dashPanel)
	visit = func(ps []dashPanel) {
		for _, pn := range ps {
			who := fmt.Sprintf("panel %d %q", pn.ID, pn.Title)
			if other, dup := ids[pn.ID]; dup || pn.ID == 0 {
				p.addf("%s: id 0 or taken by %q", who, other)
			}
			ids[pn.ID] = pn.Title
			if g := pn.GridPos; g == nil || g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
				p.addf("%s: bad gridPos", who)
			}
			visit(pn.Panels)
			if pn.Type == "row" {
				continue
			}
			if pn.Datasource == nil || pn.Datasource.UID != "${datasource}" {
				p.addf("%s: datasource is not the ${datasource} variable", who)
			}
			if len(pn.Targets) == 0 {
				p.addf("%s: no queries", who)
			}
			for _, tg := range pn.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					p.addf("%s: query %s is empty", who, tg.RefID)
				}
				exprs = append(exprs, tg.Expr)
			}
		}
	}
	visit(d.Panels)
	for _, e := range exprs {
		names, err := promMetricNames(e)
		if err != nil {
			p.addf("%v", err)
			continue
		}
		if len(names) == 0 {
			p.addf("query %q selects no metric", e)
		}
		for _, n := range names {
			if !allowed[n] {
				p.addf("query %q uses metric %q, which limiterd does not export", e, n)
			}
			used[n] = true
		}
		for _, m := range labelMatcher.FindAllStringSubmatch(e, -1) {
			vals, ok := labelValues[m[1]]
			if !ok {
				continue
			}
			for _, v := range strings.Split(m[3], "|") {
				if !slices.Contains(vals, v) {
					p.addf("query %q matches %s=%q; the values are %v", e, m[1], v, vals)
				}
			}
		}
	}
	for _, m := range exportedMetrics {
		if !used[m] {
			p.addf("no panel shows %s", m)
		}
	}
	return p
}

func TestDashboard(t *testing.T) {
	expectClean(t, dashboardFile, checkDashboard(readFile(t, dashboardFile)))
}

func TestDashboardChecksCatchBrokenWiring(t *testing.T) {
	dash := string(readFile(t, dashboardFile))
	for _, tc := range []struct{ name, old, new, want string }{
		{"renamed metric", "limiterd_apply_lag", "limiterd_raft_apply_lag", `metric "limiterd_raft_apply_lag"`},
		{"histogram without _bucket", "limiterd_batch_takes_bucket", "limiterd_batch_takes", `metric "limiterd_batch_takes"`},
		{"a foreign metric", "max by (instance) (limiterd_buckets", "max by (instance) (go_goroutines", `metric "go_goroutines"`},
		{"a metric left out", "limiterd_local_denials_total", "limiterd_lease_reads_total", "no panel shows limiterd_local_denials_total"},
		{"unknown result", `result=\"denied\"`, `result=\"rejected\"`, `result="rejected"`},
		{"unknown state", `state=\"leader\"`, `state=\"Leader\"`, `state="Leader"`},
		{"duplicate id", `"id": 3,`, `"id": 2,`, "taken by"},
		{"old schema", `"schemaVersion": 39`, `"schemaVersion": 16`, "schemaVersion"},
		{"unbalanced", "sum by (result) (rate(limiterd_requests_total{", "sum by (result) (rate(limiterd_requests_total{{", "unbalanced"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(dash, tc.old) {
				t.Fatalf("the dashboard no longer contains %q: update this test", tc.old)
			}
			expectProblem(t, checkDashboard([]byte(strings.Replace(dash, tc.old, tc.new, 1))), tc.want)
		})
	}
}

func TestPromMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`histogram_quantile(0.99, sum by (method, le) (rate(limiterd_request_duration_seconds_bucket{instance=~"$instance"}[$__rate_interval])))`: {"limiterd_request_duration_seconds_bucket"},
		`max by (instance, state) (limiterd_raft_state{state!="shutdown"}) == 1`:                                                                  {"limiterd_raft_state"},
		`sum(rate(a{result="denied"}[5m])) / sum(rate(b[5m])) > bool 0.5`:                                                                         {"a", "b"},
		labelValuesSelector(`label_values(limiterd_raft_term{job="x"}, instance)`):                                                                {"limiterd_raft_term"},
		`x * on (instance) group_left (state) y offset 5m`:                                                                                        {"x", "y"},
	} {
		got, err := promMetricNames(expr)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("promMetricNames(%q) = %v, %v; want %v", expr, got, err, want)
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
