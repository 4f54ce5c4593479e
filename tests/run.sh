#!/usr/bin/env bash
# The project's test command: build, Rust tests, then the mlflow-client compatibility suite.
#
#   bash tests/run.sh [extra pytest args...]     (from any directory)
#
# Steps (a failed build or venv stops at once; failed test steps are listed and fail the run at the end):
#   1. cargo build --workspace                   (dev profile; dependencies are optimized, see Cargo.toml)
#   2. cargo test --workspace                    (the Postgres variants run when TEST_POSTGRES_URL
#                                                 and TRACKER_TEST_POSTGRES_URL are set, as .ci/run does)
#   3. a Python venv for the suites (default <repo>/.venv, or $COMPAT_VENV), created if missing and
#      re-installed whenever tests/mlflow_client/requirements.txt or tests/scale_out/requirements.txt
#      changes
#   4. pytest tests/mlflow_client against the freshly built target/debug/tracker, on a SQLite store,
#      then again on Postgres stores when TEST_POSTGRES_URL is set
#   5. pytest tests/scale_out when TEST_POSTGRES_URL is set: two tracker replicas on one Postgres
#      database and an S3 emulator (moto), four worker agents, one replica killed mid-study
#
# Knobs: SKIP_CARGO_TEST=1 skips step 2; COMPAT_VENV=/path picks the venv; PYTHON=python3.x picks the
# interpreter that creates it; CARGO_TARGET_DIR is honoured.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SUITE="$ROOT/tests/mlflow_client"
REQS=("$SUITE/requirements.txt" "$ROOT/tests/scale_out/requirements.txt")
VENV="${COMPAT_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac

START=$SECONDS
step() { printf '\n==> [%4ds] %s\n' "$((SECONDS - START))" "$*"; }
fail() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }
# Test steps record their failure here and the script goes on, so one run shows every failing
# suite; it exits non-zero at the end. A failed build or venv still stops it at once.
FAILED_STEPS=()
failed() { printf '\nFAILED: %s\n' "$*" >&2; FAILED_STEPS+=("$*"); }

step "cargo build --workspace"
cargo build --workspace || fail "cargo build --workspace"

if [[ "${SKIP_CARGO_TEST:-}" == 1 ]]; then
    step "cargo test --workspace: skipped (SKIP_CARGO_TEST=1)"
else
    if [[ -n "${TEST_POSTGRES_URL:-}" ]]; then
        step "cargo test --workspace (Postgres variants on: TEST_POSTGRES_URL is set)"
    else
        step "cargo test --workspace (SQLite only: TEST_POSTGRES_URL is unset)"
    fi
    # --no-fail-fast: a failing test binary does not hide the ones after it.
    cargo test --workspace --no-fail-fast || failed "cargo test --workspace"
fi

TRACKER_BIN="$TARGET_DIR/debug/tracker"
[[ -x "$TRACKER_BIN" ]] || fail "no tracker binary at $TRACKER_BIN after the build"

step "python venv at $VENV (from ${REQS[*]#"$ROOT"/})"
# The stamp holds the hash of the requirements last installed completely, so a changed pin or an
# interrupted install (no stamp) runs pip again; a venv whose interpreter is gone is made anew.
want="$(cat "${REQS[@]}" | sha256sum | cut -d' ' -f1)"
stamp="$VENV/.requirements.sha256"
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" || fail "$PYTHON -m venv $VENV (on Debian: apt-get install python3-venv)"
fi
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQS[@]/#/--requirement=}" \
        || fail "pip install -r ${REQS[*]}"
    echo "$want" >"$stamp"
    echo "installed: $("$VENV/bin/python" -m pip freeze 2>/dev/null | grep -iE '^(mlflow|pandas|numpy|pytest|moto)==' | tr '\n' ' ')"
else
    echo "up to date"
fi

export TRACKER_BIN
unset COMPAT_SERVER COMPAT_POSTGRES_URL
# -p no:cacheprovider: keeps the tree clean (no .pytest_cache), and works on a read-only checkout.
PYTEST=("$VENV/bin/python" -m pytest "$SUITE" -p no:cacheprovider -q -rfEs)

step "pytest tests/mlflow_client against $TRACKER_BIN (SQLite store)"
"${PYTEST[@]}" "$@" || failed "pytest tests/mlflow_client on SQLite (server logs: rerun with COMPAT_KEEP_TMP=1)"

if [[ -n "${TEST_POSTGRES_URL:-}" ]]; then
    # Same suite, each server on a fresh database made through the admin URL (needs psql).
    step "pytest tests/mlflow_client against $TRACKER_BIN (Postgres store)"
    COMPAT_POSTGRES_URL="$TEST_POSTGRES_URL" "${PYTEST[@]}" "$@" \
        || failed "pytest tests/mlflow_client on Postgres (server logs: rerun with COMPAT_KEEP_TMP=1)"
else
    step "pytest tests/mlflow_client on Postgres: skipped (TEST_POSTGRES_URL is unset)"
fi

if [[ -n "${TEST_POSTGRES_URL:-}" ]]; then
    step "pytest tests/scale_out: two replicas on Postgres and an S3 emulator, one killed mid-study"
    "$VENV/bin/python" -m pytest "$ROOT/tests/scale_out" -p no:cacheprovider -q -rfEs \
        || failed "pytest tests/scale_out (logs: the pytest temp folder it names)"
else
    step "pytest tests/scale_out: skipped (TEST_POSTGRES_URL is unset; replicas need a shared Postgres)"
fi

if ((${#FAILED_STEPS[@]})); then
    step "FAILED steps:"
    printf '  - %s\n' "${FAILED_STEPS[@]}"
    exit 1
fi
step "all tests passed"
