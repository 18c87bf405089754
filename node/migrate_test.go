package node

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMigrateLog_BothWaysKeepsEveryEntryAndValue(t *testing.T) {
	for _, from := range []string{LogStoreBolt, LogStoreWAL} {
		to := otherKind(from)
		t.Run(from+"-to-"+to, func(t *testing.T) {
			cfg, h := dataDirWithLog(t, from, 30)
			term := currentTerm(t, cfg.DataDir, from)
			rep, err := MigrateLog(cfg.DataDir, to, nil)
			if err != nil {
				t.Fatalf("migrate: %v", err)
			}
			if rep.From != from || rep.Last == 0 || rep.Path != storePath(cfg.DataDir, to) || !exists(rep.Backup) {
				t.Fatalf("report %+v", rep)
			}
			if hasStore(cfg.DataDir, from) || !hasStore(cfg.DataDir, to) {
				t.Fatalf("after migration the data dir does not hold exactly a %s log", to)
			}
			if m, _, _ := readMeta(cfg.DataDir); m.LogStore != to || m.MigratedFrom != "" {
				t.Fatalf("node.json %+v", m)
			}
			// The stores keep a uint64 in opposite byte orders: the term must come out the same.
			if got := currentTerm(t, cfg.DataDir, to); got != term || term == 0 {
				t.Fatalf("current term %d became %d", term, got)
			}
			cfg.LogStore = ""
			h = mustRestartSame(t, cfg, h)
			// and back again, with what the node wrote since (the retry's entry)
			if err := os.RemoveAll(backupPath(cfg.DataDir, from)); err != nil {
				t.Fatal(err)
			}
			if _, err := MigrateLog(cfg.DataDir, from, nil); err != nil {
				t.Fatalf("migrate back: %v", err)
			}
			cfg.LogStore = from
			mustRestartSame(t, cfg, h)
		})
	}
}

func TestMigrateLog_RefusesWhatItCannotDoSafely(t *testing.T) {
	cfg, _ := dataDirWithLog(t, LogStoreBolt, 1)
	for _, tc := range []struct {
		name, to, want string
		setup          func()
	}{
		{"unknown kind", "sqlite", "want bolt or wal", nil},
		{"same kind", LogStoreBolt, "already uses a bolt", nil},
		{"backup in the way", LogStoreWAL, "raft.db.migrated exists", func() {
			if err := os.WriteFile(backupPath(cfg.DataDir, LogStoreBolt), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			_, err := MigrateLog(cfg.DataDir, tc.to, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
			if !hasStore(cfg.DataDir, LogStoreBolt) || exists(tmpPath(cfg.DataDir, LogStoreWAL)) {
				t.Fatalf("a refused migration changed the data dir")
			}
		})
	}
	if _, err := MigrateLog(t.TempDir(), LogStoreWAL, nil); err == nil || !strings.Contains(err.Error(), "node.json") {
		t.Fatalf("a dir without node.json: %v", err)
	}
}

// The helper process: migrates LIMITER_MIGRATE_DIR to LIMITER_MIGRATE_TO and, with
// LIMITER_MIGRATE_KILL_AT, kills itself with SIGKILL right after that step.
func TestMigrateLogHelperProcess(t *testing.T) {
	dir := os.Getenv("LIMITER_MIGRATE_DIR")
	if dir == "" {
		t.Skip("run by TestMigrateLog_Killed*")
	}
	if at := os.Getenv("LIMITER_MIGRATE_KILL_AT"); at != "" {
		migrateStep = func(step string) {
			if step == at {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				time.Sleep(time.Minute)
			}
		}
	}
	fmt.Println("begin")
	if _, err := MigrateLog(dir, os.Getenv("LIMITER_MIGRATE_TO"), nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	os.Exit(0)
}

func migrateInProcess(dir, to, killAt string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestMigrateLogHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "LIMITER_MIGRATE_DIR="+dir, "LIMITER_MIGRATE_TO="+to, "LIMITER_MIGRATE_KILL_AT="+killAt)
	return cmd
}

// A migration killed after any step leaves a data dir that starts with the same state: the old
// log before the commit point, the new one after it. The next migration (or start) finishes or
// discards what the killed one left.
func TestMigrateLog_KilledAfterEachStepLeavesADataDirThatStarts(t *testing.T) {
	for _, from := range []string{LogStoreBolt, LogStoreWAL} {
		to := otherKind(from)
		for _, step := range []string{"copied", "verified", "committed"} {
			t.Run(from+"-to-"+to+"/"+step, func(t *testing.T) {
				cfg, h := dataDirWithLog(t, from, 20)
				out, err := migrateInProcess(cfg.DataDir, to, step).CombinedOutput()
				if ws, ok := exitSignal(err); !ok || ws != syscall.SIGKILL {
					t.Fatalf("the helper was not killed at %s: %v\n%s", step, err, out)
				}
				want := from
				if step == "committed" {
					want = to
				}
				cfg.LogStore = ""
				mustRestartSame(t, cfg, h)
				if hasStore(cfg.DataDir, otherKind(want)) || exists(tmpPath(cfg.DataDir, to)) {
					t.Fatalf("after the start, the data dir still holds the other kind's live or partial files")
				}
				if m, _, _ := readMeta(cfg.DataDir); m.LogStore != want {
					t.Fatalf("node.json records %q, want %q", m.LogStore, want)
				}
			})
		}
	}
}

// Killed at a random moment of the migration (seeded; the seed is printed): inside the copy, the
// verification or the renames. A first, whole run measures how long the migration takes.
func TestMigrateLog_KilledAtRandomMomentsLeavesADataDirThatStarts(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	cfg, h := dataDirWithLog(t, LogStoreBolt, 400)
	from := LogStoreBolt
	var took time.Duration
	killed := 0
	for round := 0; round < 7; round++ {
		to := otherKind(from)
		cmd := migrateInProcess(cfg.DataDir, to, "")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The helper writes a line as the migration begins.
		if _, err := bufio.NewReader(stdout).ReadString('\n'); err != nil {
			t.Fatalf("helper: %v", err)
		}
		began := time.Now()
		var delay time.Duration
		if round == 0 {
			err = cmd.Wait()
			took = time.Since(began)
			t.Logf("a whole migration took %s", took)
		} else {
			delay = time.Duration(rng.Float64() * float64(took))
			time.Sleep(delay)
			_ = cmd.Process.Kill()
			err = cmd.Wait()
			if _, ok := exitSignal(err); ok {
				killed++
			}
		}
		cfg.LogStore = ""
		h = mustRestartSame(t, cfg, h)
		m, _, _ := readMeta(cfg.DataDir)
		t.Logf("round %d: killed %s into it (%v): the data dir holds %s", round, delay, err, m.LogStore)
		from = m.LogStore
		_ = os.RemoveAll(backupPath(cfg.DataDir, otherKind(from)))
	}
	if killed == 0 {
		t.Logf("no kill landed inside a migration in this run")
	}
}

// currentTerm reads raft's current term from a stopped member's store of the given kind.
func currentTerm(t *testing.T, dir, kind string) uint64 {
	t.Helper()
	s := openTracked(t, dir, kind)
	defer s.Close()
	n, err := s.GetUint64([]byte("CurrentTerm"))
	if err != nil {
		t.Fatalf("read the current term: %v", err)
	}
	return n
}

func exitSignal(err error) (syscall.Signal, bool) {
	ee, ok := err.(*exec.ExitError)
	if !ok {
		return 0, false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		return 0, false
	}
	return ws.Signal(), true
}
