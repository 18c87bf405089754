#!/usr/bin/env bash
# Linearizable takes on each Raft log store, and gubernator, interleaved in one run.
# Each round starts a fresh `limiterd dev` (3 members, one process, one disk, fsync on) with
# --log-store bolt, then one with --log-store wal, then 3 gubernator peers in one process
# (cmd/limitbench/gubernator, a module of its own), and measures on each: 64 and 256 callers
# against the same run's no-op call, and a lone caller. For limiterd it also prints the commit
# path's medians from raft's own metrics after the 64-caller run.
# Usage: log-stores.sh [ROUNDS] [extra limiterd dev flags...]
# VARIANTS replaces the two limiterd setups, e.g. to compare a setting interleaved on one store:
#   VARIANTS="wal-1=--log-store=wal,--inflight-batches=1 wal-2=--log-store=wal,--inflight-batches=2" \
#   GUBERNATOR=0 log-stores.sh 3
set -euo pipefail
cd "$(dirname "$0")/../../.."
rounds=${1:-3}
shift || true
bin=$(mktemp -d)
go build -o "$bin/" ./cmd/limiterd ./cmd/limitbench
(cd cmd/limitbench/gubernator && go build -o "$bin/gubebench" .)
data=$(mktemp -d)
pid=
stop() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; pid=; fi; }
trap 'stop; rm -rf "$data" "$bin"' EXIT

fmt() { # label: reads a limitbench/gubebench JSON report on stdin
  python3 -c '
import json, sys
r = json.load(sys.stdin); m = r["main"]; b = r.get("baseline")
if m["ops_per_second"] == 0 or (b and b["ops_per_second"] == 0):
    print("%-26s no answers (see the server log)" % sys.argv[1], flush=True); sys.exit(0)
line = "%-26s %8.0f/s  p50 %6.2f ms  p99 %6.2f ms" % (sys.argv[1], m["ops_per_second"], m["latency_us"]["p50"] / 1000, m["latency_us"]["p99"] / 1000)
if b:
    line += "  | no-op %8.0f/s p99 %6.2f ms  ratio %.2fx  p99 ratio %.2fx" % (
        b["ops_per_second"], b["latency_us"]["p99"] / 1000, m["ops_per_second"] / b["ops_per_second"],
        m["latency_us"]["p99"] / b["latency_us"]["p99"])
print(line, flush=True)' "$1"
}

commit_path() { # metrics port: medians (ms) of raft's commit path over its last window
  curl -s "http://127.0.0.1:$1/metrics" | python3 -c '
import re, sys
want = {"raft_commitTime": "commit", "raft_leader_dispatchLog": "leader StoreLogs",
        "raft_replication_appendEntries_rpc": "AppendEntries round trip", "raft_rpc_appendEntries_storeLogs": "follower StoreLogs",
        "raft_fsm_apply": "apply"}
got = {}
for line in sys.stdin:
    m = re.match(r"(\w+)\{(.*)\} (\S+)", line)
    if m and m.group(1) in want and "quantile=\"0.5\"" in m.group(2) and m.group(3) != "NaN":
        got.setdefault(want[m.group(1)], float(m.group(3)))
print("    commit path (medians): " + ", ".join("%s %.2f ms" % (k, got[k]) for k in want.values() if k in got), flush=True)'
}

for i in $(seq "$rounds"); do
  echo "== round $i"
  for variant in ${VARIANTS:-bolt=--log-store=bolt wal=--log-store=wal}; do
    store=${variant%%=*}
    IFS=, read -r -a vflags <<<"${variant#*=}"
    base=$((20000 + RANDOM % 20000))
    "$bin/limiterd" dev --data-dir "$data/$store$i" --port-base "$base" "${vflags[@]}" "$@" >"$data/dev.log" 2>&1 &
    pid=$!
    addr="127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"
    sleep 4
    lb() { "$bin/limitbench" --addr "$addr" -d 6s -o json "$@" 2>/dev/null; }
    lb --baseline -c 64 | fmt "$store, 64 callers"
    commit_path $((base + 2001))
    lb --baseline -c 256 | fmt "$store, 256 callers"
    lb -c 1 | fmt "$store, 1 caller"
    stop
  done
  [ "${GUBERNATOR:-1}" = 1 ] || continue
  base=$((20000 + RANDOM % 20000))
  "$bin/gubebench" serve --peers 3 --port-base "$base" >"$data/gube.log" 2>&1 &
  pid=$!
  for _ in $(seq 50); do grep -q "gRPC on" "$data/gube.log" && break; sleep 0.2; done
  "$bin/gubebench" load --addr "127.0.0.1:$((base + 1))" -c 64 -d 6s --keys 10000 -o json | fmt "gubernator, 64 callers"
  "$bin/gubebench" load --addr "127.0.0.1:$((base + 1))" -c 256 -d 6s --keys 10000 -o json | fmt "gubernator, 256 callers"
  "$bin/gubebench" load --addr "127.0.0.1:$((base + 1))" -c 1 -d 6s --keys 10000 --baseline=false -o json | fmt "gubernator, 1 caller"
  stop
done
