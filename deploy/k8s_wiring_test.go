package deploy

// These tests parse every deployment file and check the wiring between their parts: that the
// StatefulSet names its headless Service, that probes hit the gRPC port, that --data-dir is where
// the volume is mounted, that the dashboard asks only for metrics limiterd exports, and so on.
// Each check runs on the real files (which must pass) and on copies broken on purpose (which must
// fail), so a check that cannot fail is caught too.

import (
	"strings"
	"testing"
)

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
