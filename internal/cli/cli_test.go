package cli

import (
	"testing"
	"time"
)

func TestResolveAddrs_FlagThenEnvThenDefault(t *testing.T) {
	cases := []struct {
		flag    string
		flagSet bool
		env     string
		want    []string
	}{
		{"a:1,b:2", true, "c:3", []string{"a:1", "b:2"}},
		{"a:1", false, "c:3, d:4,c:3", []string{"c:3", "d:4"}},
		{"a:1", false, "  ", []string{"a:1"}},
	}
	for _, c := range cases {
		got, err := ResolveAddrs(c.flag, c.flagSet, c.env, "X_ADDR")
		if err != nil || len(got) != len(c.want) {
			t.Fatalf("%+v: got %v %v", c, got, err)
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Fatalf("%+v: got %v", c, got)
			}
		}
	}
	if _, err := ResolveAddrs(",", true, "", "X_ADDR"); err == nil {
		t.Fatalf("an empty list was accepted")
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7401": true, "127.3.2.1:1": true, "localhost:7401": true, "[::1]:7401": true,
		"10.0.0.7:7401": false, "172.17.0.1:7401": false, "node-1.limiter:7401": false, "garbage": false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestParseToken_FirstLineTrimmed(t *testing.T) {
	for in, want := range map[string]string{"abc\n": "abc", "  abc  \nsecond line": "abc", "abc": "abc", "\nabc": "", "": ""} {
		if got := ParseToken([]byte(in)); got != want {
			t.Errorf("ParseToken(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSplitList_TrimsAndDropsBlanks(t *testing.T) {
	got := SplitList(" a, ,b,, c ")
	if len(got) != 3 || got[0] != "a" || got[1] != "b" || got[2] != "c" {
		t.Fatalf("SplitList = %q", got)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"512MiB": 512 << 20, "1GiB": 1 << 30, "64K": 64 << 10, "1000": 1000, " 2 G ": 2 << 30, "7B": 7} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MiB", "-1MiB", "0", "1.5GiB", "12 apples", "99999999999999GiB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}

func TestParseDuration_DaysAndWeeksToo(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"1s": time.Second, "90m": 90 * time.Minute, "1d": 24 * time.Hour, "2w": 14 * 24 * time.Hour,
		"1d12h": 36 * time.Hour, " 7d ": 7 * 24 * time.Hour, "0s": 0,
	} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "soon", "1x", "d", "-1s", "1d-1h", "99999999999999w", "1dfoo"} {
		if got, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, got)
		}
	}
}
