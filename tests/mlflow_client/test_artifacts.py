"""The artifact proxy through the unmodified mlflow client (protocol reference
§1.3, artifact layout)."""

from __future__ import annotations

import filecmp
import json
import os
from pathlib import Path

import mlflow
import pytest
import requests
import yaml

from compat_util import json_or_none


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def tree(tmp_path):
    """A folder with subfolders, an empty file, a binary file over 1 MB."""
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "other").mkdir()
    (src / "top.txt").write_text("top level\n")
    (src / "empty.bin").write_bytes(b"")
    (src / "sub" / "a.json").write_text(json.dumps({"a": 1}))
    (src / "sub" / "deeper" / "b.csv").write_text("x,y\n1,2\n")
    (src / "sub" / "deeper" / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (src / "other" / "spaces and ünïcode.txt").write_text("unicode name\n")
    return src


def test_log_artifact_and_list(client, experiment_id, tmp_path, server):
    f = tmp_path / "hello.txt"
    f.write_text("hello world\n")
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(f))
        mlflow.log_artifact(str(f), artifact_path="nested/dir")
    rid = run.info.run_id
    root = client.list_artifacts(rid)
    by_path = {fi.path: fi for fi in root}
    assert set(by_path) == {"hello.txt", "nested"}
    assert by_path["hello.txt"].is_dir is False and by_path["hello.txt"].file_size == 12
    assert by_path["nested"].is_dir is True
    nested = client.list_artifacts(rid, "nested")
    assert [(fi.path, fi.is_dir) for fi in nested] == [("nested/dir", True)]
    leaf = client.list_artifacts(rid, "nested/dir")
    assert [(fi.path, fi.is_dir, fi.file_size) for fi in leaf] == [("nested/dir/hello.txt", False, 12)]
    # listing a path that names a file gives nothing; a missing folder too
    assert client.list_artifacts(rid, "hello.txt") == []
    assert client.list_artifacts(rid, "no/such/dir") == []
    # the bytes land at <artifacts-destination>/<exp>/<run>/artifacts/<path>
    on_disk = server.artifacts_dir / experiment_id / rid / "artifacts"
    assert (on_disk / "hello.txt").read_text() == "hello world\n"
    assert (on_disk / "nested" / "dir" / "hello.txt").read_text() == "hello world\n"


def test_log_artifacts_folder_download_byte_exact(client, experiment_id, tree, tmp_path):
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(tree), artifact_path="data")
        mlflow.log_artifacts(str(tree))  # at the root too
    rid = run.info.run_id

    names = {(fi.path, fi.is_dir) for fi in client.list_artifacts(rid)}
    assert names == {("data", True), ("top.txt", False), ("empty.bin", False), ("sub", True),
                     ("other", True)}
    sub = {(fi.path, fi.is_dir, fi.file_size) for fi in client.list_artifacts(rid, "data/sub")}
    assert sub == {("data/sub/a.json", False, len(json.dumps({"a": 1}))),
                   ("data/sub/deeper", True, None)}
    deeper = {fi.path: fi.file_size for fi in client.list_artifacts(rid, "data/sub/deeper")}
    assert deeper == {"data/sub/deeper/b.csv": 8, "data/sub/deeper/big.bin": 3 * 1024 * 1024 + 17}

    # download a folder
    dst = tmp_path / "dl1"
    dst.mkdir()
    local = Path(client.download_artifacts(rid, "data", str(dst)))
    assert local == dst / "data"
    assert _files(local) == _files(tree)

    # the whole run
    dst = tmp_path / "dl2"
    dst.mkdir()
    local = Path(mlflow.artifacts.download_artifacts(run_id=rid, dst_path=str(dst)))
    got = _files(local)
    want = _files(tree)
    assert {k: v for k, v in got.items() if not k.startswith("data/")} == want
    assert {k[len("data/"):]: v for k, v in got.items() if k.startswith("data/")} == want

    # a single file, by artifact URI
    dst = tmp_path / "dl3"
    dst.mkdir()
    local = Path(mlflow.artifacts.download_artifacts(
        artifact_uri=f"runs:/{rid}/data/sub/deeper/big.bin", dst_path=str(dst)))
    assert local.name == "big.bin"
    assert filecmp.cmp(local, tree / "sub" / "deeper" / "big.bin", shallow=False)

    # a subfolder through the run's artifact_uri
    dst = tmp_path / "dl4"
    dst.mkdir()
    art_uri = client.get_run(rid).info.artifact_uri
    local = Path(mlflow.artifacts.download_artifacts(
        artifact_uri=f"{art_uri}/data/other", dst_path=str(dst)))
    assert _files(local) == _files(tree / "other")


def test_log_text_dict_and_load(client, experiment_id):
    with mlflow.start_run() as run:
        mlflow.log_text("some text\nwith lines\n", "notes/readme.txt")
        mlflow.log_dict({"a": [1, 2], "b": {"c": "d"}}, "cfg/config.json")
        mlflow.log_dict({"y": 1}, "cfg/config.yaml")
    rid = run.info.run_id
    uri = client.get_run(rid).info.artifact_uri
    assert mlflow.artifacts.load_text(f"{uri}/notes/readme.txt") == "some text\nwith lines\n"
    assert mlflow.artifacts.load_dict(f"{uri}/cfg/config.json") == {"a": [1, 2], "b": {"c": "d"}}
    assert yaml.safe_load(mlflow.artifacts.load_text(f"{uri}/cfg/config.yaml")) == {"y": 1}
    assert {fi.path for fi in client.list_artifacts(rid, "cfg")} == {"cfg/config.json", "cfg/config.yaml"}


def test_overwrite_artifact(client, experiment_id, tmp_path):
    f = tmp_path / "v.txt"
    with mlflow.start_run() as run:
        f.write_text("first version, long")
        mlflow.log_artifact(str(f))
        f.write_text("second")
        mlflow.log_artifact(str(f))
    dst = tmp_path / "dl"
    dst.mkdir()
    local = client.download_artifacts(run.info.run_id, "v.txt", str(dst))
    assert Path(local).read_text() == "second"
    assert [fi.file_size for fi in client.list_artifacts(run.info.run_id)] == [6]


def test_raw_artifact_endpoints(client, experiment_id, server):
    """PUT/GET/list/DELETE on /api/2.0/mlflow-artifacts/artifacts directly."""
    run = client.create_run(experiment_id)
    base = f"{server.url}/api/2.0/mlflow-artifacts/artifacts"
    path = f"{experiment_id}/{run.info.run_id}/artifacts"
    body = bytes(range(256)) * 100
    r = requests.put(f"{base}/{path}/raw/x.bin", data=body)
    assert r.status_code == 200, r.text
    r = requests.get(f"{base}/{path}/raw/x.bin")
    assert r.status_code == 200 and r.content == body
    r = requests.get(base, params={"path": f"{path}/raw"})
    assert r.status_code == 200
    assert r.json() == {"files": [{"path": "x.bin", "is_dir": False, "file_size": len(body)}]}
    r = requests.get(base, params={"path": path})
    assert r.json() == {"files": [{"path": "raw", "is_dir": True}]}
    # GET of a missing file: 404 RESOURCE_DOES_NOT_EXIST as JSON
    r = requests.get(f"{base}/{path}/raw/missing.bin")
    assert r.status_code == 404
    assert json_or_none(r.content)["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    # delete, then delete again (still 200)
    r = requests.delete(f"{base}/{path}/raw/x.bin")
    assert r.status_code == 200
    assert requests.get(f"{base}/{path}/raw/x.bin").status_code == 404
    assert not (server.artifacts_dir / path / "raw" / "x.bin").exists()
    r = requests.delete(f"{base}/{path}/raw/never-there.bin")
    assert r.status_code == 200


def test_artifacts_of_deleted_run_still_listed(client, experiment_id, tmp_path):
    f = tmp_path / "k.txt"
    f.write_text("k")
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(f))
    client.delete_run(run.info.run_id)
    assert [fi.path for fi in client.list_artifacts(run.info.run_id)] == ["k.txt"]
