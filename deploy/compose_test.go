package deploy

// These tests parse every deployment file and check the wiring between their parts: that the
// StatefulSet names its headless Service, that probes hit the gRPC port, that --data-dir is where
// the volume is mounted, that the dashboard asks only for metrics limiterd exports, and so on.
// Each check runs on the real files (which must pass) and on copies broken on purpose (which must
// fail), so a check that cannot fail is caught too.

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

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
