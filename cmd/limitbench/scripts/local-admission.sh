#!/usr/bin/env bash
# Local admission against linearizable takes, interleaved, on one `limiterd dev` (3 nodes, one
# process, one disk, fsync on). Each line is one limitbench run; with --baseline it first measures
# a no-op call (Health/Check) over the same connections. Usage: local-admission.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../../.."
rounds=${1:-3}
bin=$(mktemp -d)
go build -o "$bin/" ./cmd/limiterd ./cmd/limitbench
data=$(mktemp -d)
base=$((20000 + RANDOM % 20000))
"$bin/limiterd" dev --data-dir "$data" --port-base "$base" >"$data/dev.log" 2>&1 &
dev=$!
trap 'kill $dev 2>/dev/null; wait $dev 2>/dev/null || true' EXIT
addr="127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"
sleep 4
run() { # label, limitbench flags...
  local label=$1; shift
  "$bin/limitbench" --addr "$addr" -c 64 -d 6s -o json "$@" 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin); m = r["main"]; b = r.get("baseline")
line = "%-34s calls/s %8.0f  p50 %6.2f ms  p99 %6.2f ms  from-escrow %5.1f%%  under %.2f%%" % (
    sys.argv[1], m["ops_per_second"], m["latency_us"]["p50"] / 1000, m["latency_us"]["p99"] / 1000,
    100 * m["answered_locally"] / max(1, m["operations"]), 100 * m["under_admission"])
if b:
    line += "  | no-op %8.0f/s p99 %6.2f ms  ratio %.2fx  p99 ratio %.2fx" % (
        b["ops_per_second"], b["latency_us"]["p99"] / 1000, m["ops_per_second"] / b["ops_per_second"],
        m["latency_us"]["p99"] / b["latency_us"]["p99"])
print(line)' "$label"
}
for i in $(seq "$rounds"); do
  echo "== round $i"
  run "leader, linearizable, 100 keys" --baseline --limit lin --keys 100
  run "leader, local, 100 keys" --baseline --limit loc --admission local --keys 100
  run "leader, local, 10 keys" --baseline --limit loc10 --admission local --keys 10
  run "spread, linearizable, 100 keys" --spread --limit slin --keys 100
  run "spread, local, 100 keys" --spread --limit sloc --admission local --keys 100
done
