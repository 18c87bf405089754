// Package version reports what a binary was built from: the main module's version and the VCS
// revision, read from the build information the Go toolchain embeds (no -ldflags needed).
package version

import (
	"fmt"
	"runtime/debug"
)

// Info is a build's version.
type Info struct {
	// Version is the main module's version: a tag when built with `go install ...@vX`, or
	// "(devel)" for a build from a checkout.
	Version string
	// Revision is the VCS commit (empty when the build had no VCS information, as in tests);
	// Modified is set when the working tree had uncommitted changes.
	Revision  string
	Modified  bool
	GoVersion string
}

// Get returns this binary's version.
func Get() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{Version: "unknown"}
	}
	return fromBuildInfo(bi)
}

func fromBuildInfo(bi *debug.BuildInfo) Info {
	i := Info{Version: bi.Main.Version, GoVersion: bi.GoVersion}
	if i.Version == "" {
		i.Version = "(devel)"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Revision = s.Value
		case "vcs.modified":
			i.Modified = s.Value == "true"
		}
	}
	return i
}

// Short is the version and the first 12 characters of the revision, e.g. "(devel)+3f2a9c1d0b4e"
// or "v1.4.0" (with "-dirty" when the tree was modified): what Status and metrics carry.
func (i Info) Short() string {
	s := i.Version
	if i.Revision != "" {
		s += "+" + i.Revision[:min(12, len(i.Revision))]
	}
	if i.Modified {
		s += "-dirty"
	}
	return s
}

// String is the line --version prints.
func (i Info) String() string {
	rev := i.Revision
	if rev == "" {
		rev = "unknown"
	}
	if i.Modified {
		rev += " (modified)"
	}
	return fmt.Sprintf("%s, revision %s, %s", i.Version, rev, i.GoVersion)
}
