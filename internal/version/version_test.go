package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.4.0"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "3f2a9c1d0b4e5f60718293a4b5c6d7e8f9012345"}, {Key: "vcs.modified", Value: "true"}}}
	i := fromBuildInfo(bi)
	if got, want := i.Short(), "v1.4.0+3f2a9c1d0b4e-dirty"; got != want {
		t.Errorf("Short() = %q, want %q", got, want)
	}
	if got, want := i.String(), "v1.4.0, revision 3f2a9c1d0b4e5f60718293a4b5c6d7e8f9012345 (modified), go1.26.8"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	dev := fromBuildInfo(&debug.BuildInfo{GoVersion: "go1.26.8"})
	if dev.Short() != "(devel)" || !strings.Contains(dev.String(), "revision unknown") {
		t.Errorf("a build without module version or VCS: %q / %q", dev.Short(), dev.String())
	}
	if g := Get(); g.GoVersion == "" || g.Version == "" {
		t.Errorf("Get() = %+v: want at least the Go and module versions", g)
	}
}
