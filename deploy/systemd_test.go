package deploy

// These tests parse every deployment file and check the wiring between their parts: that the
// StatefulSet names its headless Service, that probes hit the gRPC port, that --data-dir is where
// the volume is mounted, that the dashboard asks only for metrics limiterd exports, and so on.
// Each check runs on the real files (which must pass) and on copies broken on purpose (which must
// fail), so a check that cannot fail is caught too.

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

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
