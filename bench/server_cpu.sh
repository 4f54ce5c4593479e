#!/usr/bin/env bash
# CPU time (user + system, in seconds) that a tracker binary spends serving phases of
# bench/mlflow_bench.py, with the phases' own results. Comparing two builds this way is steadier
# than comparing their throughput on a shared machine, whose speed drifts from minute to minute.
#
#   bash bench/server_cpu.sh TRACKER_BIN [PHASES] [ROUNDS]      (default phases a,b; 1 round)
#
# Alternate two binaries round by round to compare them:
#   for r in 1 2; do for b in /tmp/tracker-before /tmp/tracker-after; do bash bench/server_cpu.sh $b a,b; done; done
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$1"
PHASES="${2:-a,b}"
ROUNDS="${3:-1}"
PORT=5091
TICKS="$(getconf CLK_TCK)"
for round in $(seq 1 "$ROUNDS"); do
    WORK="$(mktemp -d)"
    "$BIN" serve --port "$PORT" --backend-store-uri "sqlite://$WORK/t.db" --artifacts-destination "$WORK/artifacts" >"$WORK/server.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.5; done
    before=$(awk '{print $14 + $15}' "/proc/$SERVER/stat")
    python3 "$ROOT/bench/mlflow_bench.py" --base-url "http://127.0.0.1:$PORT" --only "$PHASES" >"$WORK/bench.log" 2>&1
    after=$(awk '{print $14 + $15}' "/proc/$SERVER/stat")
    kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
    echo "== $BIN, phases $PHASES, round $round: server CPU $(awk -v t=$((after - before)) -v hz="$TICKS" 'BEGIN { printf "%.2f", t / hz }') s"
    sed -n '/==== SUMMARY ====/,$p' "$WORK/bench.log" | grep -v '^====\|^server'
    rm -rf "$WORK"
done
