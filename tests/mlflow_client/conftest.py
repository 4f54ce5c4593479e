"""Black-box compatibility suite: drives a tracking server with the unmodified
`mlflow` Python client.

Which server runs:

* ``TRACKER_BIN=/path/to/tracker`` (default: ``target/release/tracker`` or
  ``target/debug/tracker`` of this repository, whichever exists, release first):
  ``tracker serve --host 127.0.0.1 --port P --backend-store-uri sqlite:///DB
  --artifacts-destination DIR``.
* ``COMPAT_SERVER=mlflow``: the reference ``mlflow server`` of the venv that runs
  pytest, with the same store layout and ``--serve-artifacts``. Use it to check
  that the tests themselves are right.

``COMPAT_POSTGRES_URL=postgresql://user@host:port/db`` (ours only): instead of a SQLite
file, each server gets a fresh Postgres database, created through that admin
connection with ``psql`` and dropped afterwards.

Every test module gets a fresh server on a free loopback port, with a fresh
SQLite file (or Postgres database) and artifact folder (``COMPAT_SERVER_SCOPE=session`` shares one
server for the whole run, ``function`` starts one per test). Tests only use
unique names, so they do not depend on each other inside a module.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
import requests

# The client reads these lazily, so setting them before any test runs is enough.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"
# A 5xx must fail the test at once instead of being retried for minutes.
os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
# Never let a developer's environment point the fluent API somewhere else.
for _var in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID",
             "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME",
             "MLFLOW_TRACKING_PASSWORD", "MLFLOW_REGISTRY_URI"):
    os.environ.pop(_var, None)

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compat_util import IS_MLFLOW  # noqa: E402


@dataclasses.dataclass
class Server:
    url: str
    root: Path  # temp folder holding the db and the artifact folder
    db_path: Path
    artifacts_dir: Path
    log_path: Path
    kind: str
    store_uri: str
    pg_database: str | None = None  # set when the store is a Postgres database made for it


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tracker_bin() -> str:
    env = os.environ.get("TRACKER_BIN")
    if env:
        return env
    for cand in (REPO_ROOT / "target" / "release" / "tracker",
                 REPO_ROOT / "target" / "debug" / "tracker"):
        if cand.exists():
            return str(cand)
    pytest.exit("no server: set TRACKER_BIN=/path/to/tracker or COMPAT_SERVER=mlflow", returncode=2)


def _postgres_admin_url() -> str | None:
    url = os.environ.get("COMPAT_POSTGRES_URL", "").strip()
    return url or None


def _with_database(url: str, db: str) -> str:
    """`url` with its database name replaced by `db` (query string kept)."""
    u = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + db, u.query, u.fragment))


def _psql(admin_url: str, sql: str) -> None:
    psql = shutil.which("psql")
    if psql is None:
        raise RuntimeError("COMPAT_POSTGRES_URL is set but psql is not on PATH")
    subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", admin_url, "-c", sql],
                   check=True, capture_output=True, timeout=60)


def _backend_uri(db: Path) -> tuple[str, str | None]:
    """The store URI for a new server, and the Postgres database to drop afterwards."""
    admin = _postgres_admin_url()
    if admin is None or IS_MLFLOW:
        return f"sqlite:///{db}", None
    name = f"compat_{uuid.uuid4().hex[:16]}"
    _psql(admin, f'create database "{name}"')
    return _with_database(admin, name), name


def _drop_database(name: str | None) -> None:
    if name is None:
        return
    try:
        _psql(_postgres_admin_url(), f'drop database if exists "{name}" with (force)')
    except Exception as e:  # cleanup only: never fail a test for it
        sys.stderr.write(f"\ncould not drop test database {name}: {e}\n")


def _server_cmd(port: int, store_uri: str, art: Path) -> tuple[list[str], str, float]:
    common = ["--host", "127.0.0.1", "--port", str(port),
              "--backend-store-uri", store_uri,
              "--artifacts-destination", str(art)]
    if IS_MLFLOW:
        mlflow_exe = Path(sys.executable).parent / "mlflow"
        cmd = [str(mlflow_exe), "server", *common, "--serve-artifacts",
               "--workers", os.environ.get("COMPAT_MLFLOW_WORKERS", "2")]
        return cmd, "mlflow", float(os.environ.get("COMPAT_START_TIMEOUT", "180"))
    return ([_tracker_bin(), "serve", *common], "tracker",
            float(os.environ.get("COMPAT_START_TIMEOUT", "60")))


def _start_server(tmp_root: Path) -> tuple[Server, subprocess.Popen]:
    db = tmp_root / "store.db"
    art = tmp_root / "artifacts"
    art.mkdir()
    port = _free_port()
    store_uri, pg_db = _backend_uri(db)
    cmd, kind, timeout = _server_cmd(port, store_uri, art)
    log_path = tmp_root / "server.log"
    env = dict(os.environ)
    env.setdefault("RUST_BACKTRACE", "1")
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            cwd=tmp_root, start_new_session=True)
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            _drop_database(pg_db)
            raise RuntimeError(f"server exited with {proc.returncode}: {' '.join(cmd)}\n"
                               f"{_tail(log_path)}")
        try:
            r = requests.get(f"{url}/health", timeout=2)
            if r.status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            _stop(proc)
            _drop_database(pg_db)
            raise RuntimeError(f"server did not answer /health within {timeout}s: "
                               f"{' '.join(cmd)}\n{_tail(log_path)}")
        time.sleep(0.1)
    return Server(url=url, root=tmp_root, db_path=db, artifacts_dir=art,
                  log_path=log_path, kind=kind, store_uri=store_uri, pg_database=pg_db), proc


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_bytes()[-n:].decode("utf-8", "replace")
    except OSError:
        return ""


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    # The server was started in its own session; signal its process group only
    # (mlflow server forks uvicorn workers).
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def _scope(fixture_name, config):  # noqa: ARG001
    scope = os.environ.get("COMPAT_SERVER_SCOPE", "module")
    return scope if scope in ("session", "package", "module", "class", "function") else "module"


@pytest.fixture(scope=_scope)
def server():
    tmp_root = Path(tempfile.mkdtemp(prefix="mlflow-compat-"))
    srv, proc = _start_server(tmp_root)
    try:
        yield srv
    finally:
        _stop(proc)
        _drop_database(srv.pg_database)
        if proc.returncode not in (0, -signal.SIGTERM, 143, -signal.SIGKILL, None) and not IS_MLFLOW:
            sys.stderr.write(f"\nserver exited with {proc.returncode}\n{_tail(srv.log_path)}\n")
        if os.environ.get("COMPAT_KEEP_TMP"):
            sys.stderr.write(f"\nkept server folder {tmp_root}\n")
        else:
            shutil.rmtree(tmp_root, ignore_errors=True)


@pytest.fixture
def tracking_uri(server):
    """Points the fluent API and MlflowClient() at the server, with a clean fluent state."""
    import mlflow
    import mlflow.tracking.fluent as fluent

    def reset_fluent_state():
        while mlflow.active_run() is not None:
            mlflow.end_run()
        fluent._active_experiment_id = None
        # mlflow.set_experiment also exports MLFLOW_EXPERIMENT_ID, which would outlive the
        # server it names and break the next module's runs in the Default experiment.
        for var in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
            os.environ.pop(var, None)

    reset_fluent_state()
    mlflow.set_tracking_uri(server.url)
    mlflow.set_registry_uri(server.url)
    os.environ["MLFLOW_TRACKING_URI"] = server.url
    yield server.url
    try:
        mlflow.flush_async_logging()
    except Exception:
        pass
    reset_fluent_state()


@pytest.fixture
def client(tracking_uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@pytest.fixture
def uniq():
    """A short unique suffix for names, so tests sharing a server do not collide."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def experiment_id(client, uniq):
    """A fresh experiment, also set as the fluent API's active experiment."""
    import mlflow

    exp_id = client.create_experiment(f"exp-{uniq}")
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def pytest_report_header(config):  # noqa: ARG001
    if IS_MLFLOW:
        return "compat server: reference mlflow server"
    store = "postgres" if _postgres_admin_url() else "sqlite"
    return (f"compat server: {os.environ.get('TRACKER_BIN') or 'repo target/ tracker binary'}"
            f" (store: {store})")
