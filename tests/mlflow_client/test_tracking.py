"""Runs, params, metrics, tags, log-batch and metric history through the
unmodified mlflow client (protocol reference §1.3)."""

from __future__ import annotations

import math
import re
import time

import mlflow
import pytest
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException

from compat_util import error_code

DBL_MAX = 1.7976931348623157e308


# ---------------------------------------------------------------- fluent runs


def test_start_run_without_experiment_uses_default(tracking_uri, client):
    with mlflow.start_run() as run:
        assert run.info.experiment_id == "0"
    got = client.get_run(run.info.run_id)
    assert got.info.experiment_id == "0"
    assert got.info.artifact_uri == f"mlflow-artifacts:/0/{run.info.run_id}/artifacts"
    assert got.info.status == "FINISHED"


def test_start_end_run_fields(client, experiment_id):
    before = int(time.time() * 1000)
    run = mlflow.start_run(run_name="r1")
    info = run.info
    assert re.fullmatch(r"[0-9a-f]{32}", info.run_id)
    assert info.experiment_id == experiment_id
    assert info.run_name == "r1"
    assert info.status == "RUNNING"
    assert info.lifecycle_stage == "active"
    assert info.artifact_uri == f"mlflow-artifacts:/{experiment_id}/{info.run_id}/artifacts"
    assert info.start_time >= before - 5000
    assert info.end_time is None or info.end_time == 0
    assert run.data.tags["mlflow.runName"] == "r1"
    assert "mlflow.user" in run.data.tags
    assert run.data.tags["mlflow.source.type"] in ("LOCAL", "NOTEBOOK", "JOB", "PROJECT")
    assert mlflow.active_run().info.run_id == info.run_id
    mlflow.end_run()
    assert mlflow.active_run() is None

    got = client.get_run(info.run_id)
    assert got.info.status == "FINISHED"
    assert got.info.end_time >= got.info.start_time
    assert got.info.run_name == "r1"
    assert got.data.tags["mlflow.runName"] == "r1"
    assert mlflow.last_active_run().info.run_id == info.run_id


def test_generated_run_name(client, experiment_id):
    with mlflow.start_run() as run:
        pass
    got = client.get_run(run.info.run_id)
    assert got.info.run_name  # server generated, e.g. "resilient-gull-593"
    assert got.data.tags["mlflow.runName"] == got.info.run_name


@pytest.mark.parametrize("status", ["FAILED", "KILLED", "FINISHED"])
def test_end_run_status(client, experiment_id, status):
    mlflow.start_run()
    run_id = mlflow.active_run().info.run_id
    mlflow.end_run(status=status)
    assert client.get_run(run_id).info.status == status


def test_exception_in_context_marks_failed(client, experiment_id):
    with pytest.raises(ZeroDivisionError):
        with mlflow.start_run() as run:
            1 / 0  # noqa: B018
    assert client.get_run(run.info.run_id).info.status == "FAILED"


def test_start_run_tags_and_description(client, experiment_id):
    with mlflow.start_run(run_name="tagged", tags={"a": "1", "b": "two"},
                          description="hello") as run:
        pass
    got = client.get_run(run.info.run_id)
    assert got.data.tags["a"] == "1" and got.data.tags["b"] == "two"
    assert got.data.tags["mlflow.note.content"] == "hello"


def test_nested_runs(client, experiment_id):
    with mlflow.start_run(run_name="parent") as parent:
        with mlflow.start_run(run_name="child", nested=True) as child:
            pass
    got = client.get_run(child.info.run_id)
    assert got.data.tags["mlflow.parentRunId"] == parent.info.run_id
    found = client.search_runs([experiment_id],
                               filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert [r.info.run_id for r in found] == [child.info.run_id]


def test_resume_run(client, experiment_id):
    with mlflow.start_run() as run:
        mlflow.log_param("p", "1")
    with mlflow.start_run(run_id=run.info.run_id) as again:
        assert again.info.run_id == run.info.run_id
        mlflow.log_metric("m", 2.0)
    got = client.get_run(run.info.run_id)
    assert got.data.params == {"p": "1"}
    assert got.data.metrics == {"m": 2.0}
    assert got.info.status == "FINISHED"


def test_client_create_run_update_terminate(client, experiment_id):
    run = client.create_run(experiment_id, run_name="cr", tags={"x": "y"}, start_time=1_700_000_000_000)
    assert run.info.status == "RUNNING"
    assert run.info.start_time == 1_700_000_000_000
    assert run.info.run_name == "cr"
    assert run.data.tags["x"] == "y"
    client.update_run(run.info.run_id, name="renamed")
    got = client.get_run(run.info.run_id)
    assert got.info.run_name == "renamed"
    assert got.data.tags["mlflow.runName"] == "renamed"
    assert got.info.status == "RUNNING"
    client.set_terminated(run.info.run_id, status="KILLED", end_time=1_700_000_001_000)
    got = client.get_run(run.info.run_id)
    assert got.info.status == "KILLED"
    assert got.info.end_time == 1_700_000_001_000
    client.update_run(run.info.run_id, status="FINISHED")
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert RunStatus.to_string(RunStatus.FINISHED) == "FINISHED"


def test_get_unknown_run(client):
    with pytest.raises(MlflowException) as ei:
        client.get_run("0" * 32)
    assert error_code(ei.value) == "RESOURCE_DOES_NOT_EXIST"
    assert ei.value.get_http_status_code() == 404


def test_create_run_unknown_experiment(client):
    with pytest.raises(MlflowException) as ei:
        client.create_run("987654321")
    assert error_code(ei.value) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


# ---------------------------------------------------------------- params


def test_params(client, experiment_id):
    with mlflow.start_run() as run:
        mlflow.log_param("lr", 0.01)
        mlflow.log_param("n", 5)
        mlflow.log_param("name", "resnet")
        mlflow.log_param("lr", 0.01)  # same value again: fine
        mlflow.log_params({"a": "1", "b": True, "long": "x" * 6000})
        mlflow.log_params({"a": "1"})  # same value through log-batch: fine
        with pytest.raises(MlflowException) as ei:
            mlflow.log_param("lr", 0.02)
        assert error_code(ei.value) == "INVALID_PARAMETER_VALUE"
        assert ei.value.get_http_status_code() == 400
        with pytest.raises(MlflowException) as ei:
            mlflow.log_params({"a": "2"})
        assert error_code(ei.value) == "INVALID_PARAMETER_VALUE"
    params = client.get_run(run.info.run_id).data.params
    assert params == {"lr": "0.01", "n": "5", "name": "resnet", "a": "1", "b": "True",
                      "long": "x" * 6000}


def test_param_via_client_and_unknown_run(client, experiment_id):
    run = client.create_run(experiment_id)
    client.log_param(run.info.run_id, "k", "v")
    client.log_param(run.info.run_id, "k", "v")
    with pytest.raises(MlflowException) as ei:
        client.log_param(run.info.run_id, "k", "w")
    assert error_code(ei.value) == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as ei:
        client.log_param("f" * 32, "k", "v")
    assert error_code(ei.value) == "RESOURCE_DOES_NOT_EXIST"
    assert client.get_run(run.info.run_id).data.params == {"k": "v"}


# ---------------------------------------------------------------- metrics


def test_metrics_steps_timestamps_and_latest(client, experiment_id):
    with mlflow.start_run() as run:
        mlflow.log_metric("loss", 1.0, step=0, timestamp=1000)
        mlflow.log_metric("loss", 3.0, step=2, timestamp=1001)
        mlflow.log_metric("loss", 5.0, step=1, timestamp=1002)
        mlflow.log_metric("acc", 0.5)
        mlflow.log_metric("int_metric", 7)
        mlflow.log_metrics({"m1": 1.5, "m2": -2.25}, step=3)
    got = client.get_run(run.info.run_id)
    # latest = the value at the highest step
    assert got.data.metrics["loss"] == 3.0
    assert got.data.metrics["acc"] == 0.5
    assert got.data.metrics["int_metric"] == 7.0
    assert got.data.metrics["m1"] == 1.5 and got.data.metrics["m2"] == -2.25
    hist = client.get_metric_history(run.info.run_id, "loss")
    assert sorted((m.step, m.timestamp, m.value) for m in hist) == [
        (0, 1000, 1.0), (1, 1002, 5.0), (2, 1001, 3.0)]
    assert all(m.key == "loss" for m in hist)
    m2 = client.get_metric_history(run.info.run_id, "m2")
    assert [(m.step, m.value) for m in m2] == [(3, -2.25)]
    assert client.get_metric_history(run.info.run_id, "no-such-key") == []


def test_metric_latest_same_step_uses_timestamp(client, experiment_id):
    run = client.create_run(experiment_id)
    rid = run.info.run_id
    client.log_metric(rid, "m", 10.0, timestamp=2000, step=5)
    client.log_metric(rid, "m", 20.0, timestamp=3000, step=5)
    client.log_metric(rid, "m", 30.0, timestamp=1000, step=4)
    assert client.get_run(rid).data.metrics["m"] == 20.0
    assert len(client.get_metric_history(rid, "m")) == 3


def test_metric_nan_and_inf(client, experiment_id):
    run = client.create_run(experiment_id)
    rid = run.info.run_id
    client.log_metric(rid, "nan", float("nan"), step=0)
    client.log_metric(rid, "pinf", float("inf"), step=0)
    client.log_metric(rid, "ninf", float("-inf"), step=0)
    client.log_batch(rid, metrics=[
        Metric("bnan", float("nan"), 1, 0),
        Metric("bpinf", float("inf"), 1, 0),
        Metric("bninf", float("-inf"), 1, 0),
    ])
    m = client.get_run(rid).data.metrics
    assert math.isnan(m["nan"]) and math.isnan(m["bnan"])
    assert m["pinf"] == DBL_MAX and m["bpinf"] == DBL_MAX
    assert m["ninf"] == -DBL_MAX and m["bninf"] == -DBL_MAX
    h = client.get_metric_history(rid, "nan")
    assert len(h) == 1 and math.isnan(h[0].value)
    assert [x.value for x in client.get_metric_history(rid, "pinf")] == [DBL_MAX]
    assert [x.value for x in client.get_metric_history(rid, "bninf")] == [-DBL_MAX]


def test_metric_extreme_values(client, experiment_id):
    run = client.create_run(experiment_id)
    rid = run.info.run_id
    vals = {"tiny": 5e-324, "big": 1.5e300, "neg": -0.0, "prec": 0.1 + 0.2, "huge_step": 1.0}
    for k, v in vals.items():
        client.log_metric(rid, k, v, step=(2**40 if k == "huge_step" else 0))
    m = client.get_run(rid).data.metrics
    for k, v in vals.items():
        assert m[k] == v, k
    assert client.get_metric_history(rid, "huge_step")[0].step == 2**40


def test_metric_unknown_run(client):
    with pytest.raises(MlflowException) as ei:
        client.log_metric("e" * 32, "m", 1.0)
    assert error_code(ei.value) == "RESOURCE_DOES_NOT_EXIST"


def test_async_logging(client, experiment_id):
    with mlflow.start_run() as run:
        for i in range(20):
            mlflow.log_metric("x", float(i), step=i, synchronous=False)
        mlflow.log_param("p", "v", synchronous=False)
        mlflow.set_tag("t", "v", synchronous=False)
        mlflow.flush_async_logging()
    got = client.get_run(run.info.run_id)
    assert got.data.metrics["x"] == 19.0
    assert got.data.params["p"] == "v" and got.data.tags["t"] == "v"
    assert [m.value for m in sorted(client.get_metric_history(run.info.run_id, "x"),
                                    key=lambda m: m.step)] == [float(i) for i in range(20)]


# ---------------------------------------------------------------- log_batch


def test_log_batch_chunked(client, experiment_id):
    """3000 metrics: the client splits them into log-batch calls of 1000."""
    run = client.create_run(experiment_id)
    rid = run.info.run_id
    ts = int(time.time() * 1000)
    metrics = [Metric(f"k{i % 1500}", float(i), ts + i, i // 1500) for i in range(3000)]
    params = [Param(f"p{i}", str(i)) for i in range(150)]  # > 100 params+tags: chunked too
    tags = [RunTag(f"t{i}", f"v{i}") for i in range(30)]
    client.log_batch(rid, metrics=metrics, params=params, tags=tags)
    got = client.get_run(rid)
    assert len(got.data.metrics) == 1500
    assert got.data.metrics["k0"] == 1500.0  # step 1 beats step 0
    assert got.data.metrics["k1499"] == 2999.0
    assert len(got.data.params) == 150 and got.data.params["p149"] == "149"
    assert all(got.data.tags[f"t{i}"] == f"v{i}" for i in range(30))
    h = client.get_metric_history(rid, "k7")
    assert sorted((m.step, m.value) for m in h) == [(0, 7.0), (1, 1507.0)]


def test_log_batch_same_key_many_steps(client, experiment_id):
    run = client.create_run(experiment_id)
    rid = run.info.run_id
    client.log_batch(rid, metrics=[Metric("s", i * 0.5, 1000 + i, i) for i in range(2500)])
    h = client.get_metric_history(rid, "s")
    assert len(h) == 2500
    assert sorted(m.step for m in h) == list(range(2500))
    assert client.get_run(rid).data.metrics["s"] == 2499 * 0.5


def test_log_batch_param_conflict(client, experiment_id):
    run = client.create_run(experiment_id)
    rid = run.info.run_id
    client.log_batch(rid, params=[Param("p", "1")])
    with pytest.raises(MlflowException) as ei:
        client.log_batch(rid, params=[Param("p", "2")])
    assert error_code(ei.value) == "INVALID_PARAMETER_VALUE"
    assert client.get_run(rid).data.params == {"p": "1"}


def test_metric_history_paging_over_25000(client, experiment_id):
    """get_metric_history asks for pages of 25000 and follows next_page_token."""
    run = client.create_run(experiment_id)
    rid = run.info.run_id
    n = 30_500
    base = 1_700_000_000_000
    client.log_batch(rid, metrics=[Metric("long", float(i), base + i, i) for i in range(n)])
    client.log_metric(rid, "other", 1.0)
    h = client.get_metric_history(rid, "long")
    assert len(h) == n
    steps = [m.step for m in h]
    assert len(set(steps)) == n
    assert sorted(steps) == list(range(n))
    assert all(m.value == float(m.step) and m.timestamp == base + m.step for m in h)
    assert all(m.key == "long" for m in h)
    # MLflow orders by (timestamp, step, value)
    assert steps == list(range(n))


# ---------------------------------------------------------------- tags


def test_tags_set_delete(client, experiment_id):
    with mlflow.start_run() as run:
        mlflow.set_tag("a", "1")
        mlflow.set_tag("a", "2")  # tags are mutable
        mlflow.set_tags({"b": "x", "c": 3})
        mlflow.set_tag("empty", "")
        mlflow.set_tag("k.with.dots", "v")
        mlflow.delete_tag("b")
    tags = client.get_run(run.info.run_id).data.tags
    assert tags["a"] == "2" and tags["c"] == "3" and tags["empty"] == "" and tags["k.with.dots"] == "v"
    assert "b" not in tags
    client.set_tag(run.info.run_id, "after", "end")
    client.delete_tag(run.info.run_id, "a")
    tags = client.get_run(run.info.run_id).data.tags
    assert tags["after"] == "end" and "a" not in tags
    with pytest.raises(MlflowException) as ei:
        client.delete_tag(run.info.run_id, "never-set")
    assert error_code(ei.value) == "RESOURCE_DOES_NOT_EXIST"


def test_long_tag_value(client, experiment_id):
    run = client.create_run(experiment_id)
    v = "y" * 8000
    client.set_tag(run.info.run_id, "long", v)
    assert client.get_run(run.info.run_id).data.tags["long"] == v


# ---------------------------------------------------------------- delete/restore


def test_delete_restore_run(client, experiment_id):
    from mlflow.entities import ViewType

    keep = client.create_run(experiment_id).info.run_id
    gone = client.create_run(experiment_id).info.run_id
    client.delete_run(gone)
    assert client.get_run(gone).info.lifecycle_stage == "deleted"
    ids = lambda vt: {r.info.run_id for r in client.search_runs([experiment_id], run_view_type=vt)}  # noqa: E731
    assert ids(ViewType.ACTIVE_ONLY) == {keep}
    assert ids(ViewType.DELETED_ONLY) == {gone}
    assert ids(ViewType.ALL) == {keep, gone}
    client.restore_run(gone)
    assert client.get_run(gone).info.lifecycle_stage == "active"
    assert ids(ViewType.ACTIVE_ONLY) == {keep, gone}
    assert ids(ViewType.DELETED_ONLY) == set()
    mlflow.delete_run(keep)
    assert client.get_run(keep).info.lifecycle_stage == "deleted"
