package deploy

// These tests parse every deployment file and check the wiring between their parts: that the
// StatefulSet names its headless Service, that probes hit the gRPC port, that --data-dir is where
// the volume is mounted, that the dashboard asks only for metrics limiterd exports, and so on.
// Each check runs on the real files (which must pass) and on copies broken on purpose (which must
// fail), so a check that cannot fail is caught too.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"

	"gopkg.in/yaml.v3"
)

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
