package deploy

// These tests parse every deployment file and check the wiring between their parts: that the
// StatefulSet names its headless Service, that probes hit the gRPC port, that --data-dir is where
// the volume is mounted, that the dashboard asks only for metrics limiterd exports, and so on.
// Each check runs on the real files (which must pass) and on copies broken on purpose (which must
// fail), so a check that cannot fail is caught too.

import (
	"bufio"
	"encoding/json"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

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
	var user, entrypoint, dataOwner, labels string
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
		case "LABEL":
			labels += " " + in.args
		}
	}
	for _, l := range []string{"org.opencontainers.image.version=", "org.opencontainers.image.revision="} {
		if !strings.Contains(labels, l) {
			p.addf("no LABEL %s...: an operator cannot tell which version an image holds", l)
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
