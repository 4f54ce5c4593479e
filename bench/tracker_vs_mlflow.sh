#!/usr/bin/env bash
# Runs bench/mlflow_bench.py against our tracker and against `mlflow server` (SQLite) in one go,
# on the same machine, one server at a time, and prints both JSON result files.
#
#   bash bench/tracker_vs_mlflow.sh [OUT_DIR]            (default: bench/results)
#
# Needs: a release build (`cargo build --release -p tracker`) and a venv with mlflow==3.17.2
# (default .venv, as tests/run.sh makes it; override with MLFLOW_VENV=/path).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/bench/results}"
VENV="${MLFLOW_VENV:-$ROOT/.venv}"
TRACKER="${TRACKER_BIN:-$ROOT/target/release/tracker}"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

wait_up() {
    for _ in $(seq 1 120); do
        curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0
        sleep 0.5
    done
    echo "server on port $1 did not come up" >&2
    return 1
}

echo "== ours: $TRACKER"
"$TRACKER" serve --port 5081 --backend-store-uri "sqlite://$WORK/ours.db" --artifacts-destination "$WORK/ours-artifacts" >"$WORK/ours.log" 2>&1 &
OURS=$!
wait_up 5081
python3 "$ROOT/bench/mlflow_bench.py" --base-url http://127.0.0.1:5081 --json-out "$OUT/ours.json"
kill "$OURS"; wait "$OURS" 2>/dev/null || true

echo "== mlflow server $("$VENV/bin/python" -c 'import mlflow; print(mlflow.__version__)')"
"$VENV/bin/mlflow" server --host 127.0.0.1 --port 5082 --backend-store-uri "sqlite:///$WORK/mlflow.db" \
    --artifacts-destination "$WORK/mlflow-artifacts" >"$WORK/mlflow.log" 2>&1 &
MLF=$!
wait_up 5082
python3 "$ROOT/bench/mlflow_bench.py" --base-url http://127.0.0.1:5082 --json-out "$OUT/mlflow.json"
kill "$MLF"; wait "$MLF" 2>/dev/null || true
echo "results in $OUT/ours.json and $OUT/mlflow.json"
