"""Scale-out: two tracker replicas on one PostgreSQL database and an S3 emulator (moto in server
mode), behind a round-robin TCP load balancer, with four `worker` agents running a study. One
replica is killed with SIGKILL mid-study and restarted; the study must finish with no attempt
lost, no trial step trained twice, and every checkpoint in the S3 bucket.

Needs `TEST_POSTGRES_URL` (an admin URL: the test makes and drops its own database) and the
debug or release `tracker` and `worker` binaries (`TRACKER_BIN`, `WORKER_BIN`, default beside
each other in target/). `bash tests/run.sh` runs it when `TEST_POSTGRES_URL` is set.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import boto3
import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
BUCKET = "tracker-artifacts"
STUDY = "scale-out"
MAX_RESOURCE = 9
STUDY_DEADLINE_S = 240
LEASE_TTL_S = 10

OBJECTIVE_PY = r'''
import json, math, os, shutil, sys, time

params = json.loads(os.environ["TRIAL_PARAMS"])
checkpoints = os.environ["TRIAL_CHECKPOINT_DIR"]
attempt = int(os.environ["TRIAL_ATTEMPT"])
starts = os.environ["SCALE_OUT_STARTS"]
# One file per process start: two starts of one attempt would leave two files.
open(os.path.join(starts, "%s-%d-%d" % (os.environ["TRIAL_NUMBER"], attempt, os.getpid())), "w").close()

state = {"step": 0, "trained": []}
if os.environ.get("TRIAL_RESUME_STEP"):
    with open(os.path.join(os.environ["TRIAL_RESUME_DIR"], "state.json")) as f:
        state = json.load(f)

for step in range(state["step"] + 1, int(os.environ["TRIAL_MAX_RESOURCE"]) + 1):
    time.sleep(0.2)
    x = math.log10(params["lr"]) + 2.5
    value = x * x + 1.0 / params["layers"] + 2.0 / step
    state["step"] = step
    state["trained"].append([step, attempt])
    final = os.path.join(checkpoints, "step-%d" % step)
    os.makedirs(final + ".tmp", exist_ok=True)
    with open(os.path.join(final + ".tmp", "state.json"), "w") as f:
        json.dump(state, f)
    os.rename(final + ".tmp", final)
    print(json.dumps({"step": step, "value": value, "checkpoint": "step-%d" % step}), flush=True)
'''


def expected_loss(params: dict, step: int) -> float:
    x = math.log10(params["lr"]) + 2.5
    return x * x + 1.0 / params["layers"] + 2.0 / step


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary(name: str) -> str:
    env = os.environ.get(f"{name.upper()}_BIN")
    if env:
        return env
    tracker = os.environ.get("TRACKER_BIN")
    candidates = [Path(tracker).parent / name] if tracker else []
    candidates += [REPO_ROOT / "target" / "debug" / name, REPO_ROOT / "target" / "release" / name]
    for c in candidates:
        if c.exists():
            return str(c)
    pytest.fail(f"no {name} binary: build the workspace or set {name.upper()}_BIN")


def wait_until(what: str, timeout: float, check, diagnose=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{diagnose()}")
        time.sleep(0.2)


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_bytes()[-n:].decode("utf-8", "replace")
    except OSError:
        return ""


class Process:
    """A child process in its own session, with its output in a log file."""

    def __init__(self, name: str, cmd: list[str], log: Path, env: dict[str, str], cwd: Path):
        self.name, self.cmd, self.log_path, self.env, self.cwd = name, cmd, log, env, cwd
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                         cwd=self.cwd, start_new_session=True)

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def describe(self) -> str:
        code = self.proc.poll() if self.proc else None
        return f"--- {self.name} (exit {code}) ---\n{tail(self.log_path)}"


class LoadBalancer:
    """Round-robin TCP load balancer: each new connection goes to the next replica that accepts
    it, as a cloud load balancer does with a dead target; a backend that dies drops its
    connections, and clients reconnect."""

    def __init__(self, backends: list[int]):
        self.backends = backends
        self.connections = [0] * len(backends)  # connections handed to each backend
        self.last_request = [0.0] * len(backends)  # when a client last sent bytes to each backend
        self.next = 0
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _connect_backend(self) -> tuple[int, socket.socket] | None:
        for _ in range(len(self.backends)):
            with self.lock:
                i = self.next
                self.next = (self.next + 1) % len(self.backends)
            try:
                s = socket.create_connection(("127.0.0.1", self.backends[i]), timeout=2)
                s.settimeout(None)
                with self.lock:
                    self.connections[i] += 1
                return i, s
            except OSError:
                continue
        return None

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            picked = self._connect_backend()
            if picked is None:
                client.close()
                continue
            i, backend = picked
            threading.Thread(target=self._pipe, args=(client, backend, i), daemon=True).start()
            threading.Thread(target=self._pipe, args=(backend, client, None), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, to_backend: int | None) -> None:
        try:
            while data := src.recv(65536):
                if to_backend is not None:
                    with self.lock:
                        self.last_request[to_backend] = time.monotonic()
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def counts(self) -> list[int]:
        with self.lock:
            return list(self.connections)

    def close(self) -> None:
        self.closed = True
        self.listener.close()


def psql(admin_url: str, sql: str) -> None:
    exe = shutil.which("psql")
    if exe is None:
        pytest.fail("TEST_POSTGRES_URL is set but psql is not on PATH")
    subprocess.run([exe, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", admin_url, "-c", sql],
                   check=True, capture_output=True, timeout=60)


@pytest.fixture
def postgres_database():
    admin = os.environ.get("TEST_POSTGRES_URL", "").strip()
    if not admin:
        pytest.skip("TEST_POSTGRES_URL is unset: replicas need a shared PostgreSQL")
    name = f"scale_out_{uuid.uuid4().hex[:12]}"
    psql(admin, f'create database "{name}"')
    u = urllib.parse.urlsplit(admin)
    yield urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + name, u.query, u.fragment))
    psql(admin, f'drop database if exists "{name}" with (force)')


@pytest.fixture
def s3_emulator(tmp_path):
    exe = Path(sys.executable).parent / "moto_server"
    if not exe.exists():
        pytest.fail(f"no moto_server beside {sys.executable}: install moto[server] (tests/scale_out/requirements.txt)")
    port = free_port()
    moto = Process("moto", [str(exe), "-H", "127.0.0.1", "-p", str(port)], tmp_path / "moto.log", dict(os.environ), tmp_path)
    endpoint = f"http://127.0.0.1:{port}"
    wait_until("the S3 emulator", 60, lambda: answers(f"{endpoint}/moto-api/"), moto.describe)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    s3.create_bucket(Bucket=BUCKET)
    yield endpoint, s3
    moto.kill(signal.SIGTERM)


def test_study_survives_a_killed_replica(tmp_path, postgres_database, s3_emulator):
    endpoint, s3 = s3_emulator
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1",
               AWS_ENDPOINT_URL=endpoint, RUST_LOG="info", NO_COLOR="1", RUST_BACKTRACE="1")
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(var, None)
    ports = [free_port(), free_port()]
    replicas = []
    for i, port in enumerate(ports):
        cmd = [binary("tracker"), "serve", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", postgres_database,
               "--artifacts-destination", f"s3://{BUCKET}/artifacts",
               "--lease-ttl-s", str(LEASE_TTL_S)]
        replica = Process(f"replica-{i}", cmd, tmp_path / f"replica-{i}.log", env, tmp_path)
        replicas.append(replica)
        # One after the other: the first runs the migrations.
        wait_until(f"replica {i} /health", 60, lambda: answers(f"http://127.0.0.1:{port}/health"), replica.describe)
    lb = LoadBalancer(ports)
    base = f"http://127.0.0.1:{lb.port}"
    starts = tmp_path / "starts"
    starts.mkdir()
    objective = tmp_path / "objective.py"
    objective.write_text(OBJECTIVE_PY)
    workers: list[Process] = []

    def diagnose() -> str:
        try:
            study = requests.get(f"{base}/api/tracker/studies/get", params={"name": STUDY}, timeout=5).text
        except requests.RequestException as e:
            study = f"(studies/get failed: {e})"
        return "\n".join([f"load balancer connections per replica: {lb.counts()}", f"study: {study[:3000]}"]
                         + [p.describe() for p in replicas + workers])

    try:
        spec = {
            "name": STUDY,
            "objective": {"metric": "loss", "direction": "minimize"},
            "space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
                      "layers": {"type": "int", "low": 1, "high": 4}},
            "sampler": "random",
            "scheduler": {"kind": "asha", "min_resource": 1, "max_resource": MAX_RESOURCE, "reduction_factor": 3},
            "max_trials": 12,
            "seed": 3,
            "run": {"command": ["python3", str(objective)], "env": {"SCALE_OUT_STARTS": str(starts)}},
        }
        r = requests.post(f"{base}/api/tracker/studies/create", json={"spec": spec}, timeout=30)
        assert r.status_code == 200, r.text
        for i in range(4):
            cmd = [binary("worker"), "--tracking-uri", base, "--worker-id", f"w{i}", "--exit-when-done",
                   "--stop-grace-s", "2", "--work-dir", str(tmp_path / "work" / f"w{i}")]
            workers.append(Process(f"worker-{i}", cmd, tmp_path / f"worker-{i}.log", env, tmp_path))

        def study() -> dict:
            r = requests.get(f"{base}/api/tracker/studies/get", params={"name": STUDY}, timeout=10)
            assert r.status_code == 200, r.text
            return r.json()

        # Kill replica 0 while trials run and report through both replicas.
        wait_until("trials running and reporting through both replicas", 90,
                   lambda: min(lb.counts()) > 0 and sum(t.get("last_step") is not None for t in study()["trials"]) >= 3,
                   diagnose)
        running_at_kill = [t["number"] for t in study()["trials"] if t["state"] == "running"]
        assert running_at_kill, "the kill must land while trials run"
        before_kill = lb.counts()
        # Freeze replica 0, so that requests (and perhaps a transaction holding the study's row
        # lock) are in flight on it when it dies, then kill it.
        replicas[0].proc.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        wait_until("a request in flight on the frozen replica", 30, lambda: lb.last_request[0] > frozen_at, diagnose)
        time.sleep(0.5)
        replicas[0].kill()
        time.sleep(3)
        after_outage = lb.counts()
        replicas[0].start()
        wait_until("replica 0 back", 60, lambda: answers(f"http://127.0.0.1:{ports[0]}/health"), diagnose)

        final = wait_until("the study to finish", STUDY_DEADLINE_S, lambda: (s := study())["study"]["status"] == "finished" and s, diagnose)
        for w in workers:
            wait_until(f"{w.name} to exit", 60, lambda: w.proc.poll() is not None, diagnose)
            assert w.proc.returncode == 0, diagnose()

        trials = final["trials"]
        assert len(trials) == 12, diagnose()
        problems = []
        for t in trials:
            n = t["number"]
            if t["state"] not in ("complete", "pruned"):
                problems.append(f"trial {n} ended {t['state']}")
            if t["lost"] or t["failures"]:
                problems.append(f"trial {n}: {t['lost']} attempts lost, {t['failures']} failed")
            # Each attempt started exactly one process.
            started = sorted(int(f.name.split("-")[1]) for f in starts.iterdir() if f.name.split("-")[0] == str(n))
            if started != list(range(1, t["attempt"] + 1)):
                problems.append(f"trial {n}: attempts {t['attempt']}, processes started for attempts {started}")
            # The recorded history is the objective's, one point per step.
            r = requests.get(f"{base}/api/2.0/mlflow/metrics/get-history", params={"run_id": t["run_id"], "metric_key": "loss"}, timeout=10)
            history = sorted((m["step"], m["value"]) for m in r.json().get("metrics", []))
            want = [(s, expected_loss(t["params"], s)) for s in range(1, t["last_step"] + 1)]
            if [s for s, _ in history] != [s for s, _ in want] or any(abs(a - b) > 1e-9 for (_, a), (_, b) in zip(history, want)):
                problems.append(f"trial {n}: history {history} != {want}")
            # The last checkpoint is in the bucket, and it trained every step once.
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="artifacts/").get("Contents", [])
                    if t["run_id"] in o["Key"] and o["Key"].endswith(f"{t['checkpoint']}/state.json")]
            if len(keys) != 1:
                problems.append(f"trial {n}: checkpoint {t.get('checkpoint')} found in S3 as {keys}")
                continue
            state = json.loads(s3.get_object(Bucket=BUCKET, Key=keys[0])["Body"].read())
            steps = [s for s, _ in state["trained"]]
            if steps != list(range(1, t["last_step"] + 1)):
                problems.append(f"trial {n}: steps trained {state['trained']}")
        assert not problems, "\n".join(problems) + "\n" + diagnose()
        assert after_outage[1] > before_kill[1], f"replica 1 took the traffic while replica 0 was down: {before_kill} -> {after_outage}"
        felt = [w.name for w in workers if "tracker unavailable; retrying" in w.log_path.read_text()]
        assert felt, "a worker's request was cut by the kill and retried\n" + diagnose()
        print(f"\n12 trials finished; replica 0 killed with trials {running_at_kill} running; "
              f"connections per replica {lb.counts()}")
    finally:
        for p in workers + replicas:
            p.kill()
        lb.close()
