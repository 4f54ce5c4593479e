"""Bad input: what the server must refuse, and how (protocol reference §1.1 "Errors").

Through the unmodified client first: inputs a user can pass to the client that only the server
checks. Then raw requests for what the client never sends but other clients might: missing
required fields, wrong types, bad JSON, unknown endpoints. A deterministic client error must
never be a 5xx, since the client retries 5xx with backoff for minutes (§1.1 "Retries").
"""

from __future__ import annotations

import mlflow
import pytest
import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from compat_util import error_code, json_or_none


def _fails(fn, *args, **kwargs) -> MlflowException:
    with pytest.raises(MlflowException) as ei:
        fn(*args, **kwargs)
    return ei.value


def _code(fn, *args, **kwargs) -> str | None:
    return error_code(_fails(fn, *args, **kwargs))


# ---------------------------------------------------------------- through the client


@pytest.mark.parametrize("key", ["../escape", "/abs", "a/../b", "bad\x00key", "semi;colon"])
def test_bad_metric_param_tag_keys(client, experiment_id, key):
    rid = client.create_run(experiment_id).info.run_id
    assert _code(client.log_metric, rid, key, 1.0) == "INVALID_PARAMETER_VALUE"
    assert _code(client.log_param, rid, key, "v") == "INVALID_PARAMETER_VALUE"
    assert _code(client.set_tag, rid, key, "v") == "INVALID_PARAMETER_VALUE"
    assert _code(client.log_batch, rid, metrics=[Metric(key, 1.0, 1, 0)]) == \
        "INVALID_PARAMETER_VALUE"
    data = client.get_run(rid).data
    assert data.metrics == {} and data.params == {}
    assert key not in data.tags


def test_key_length_limits(client, experiment_id):
    rid = client.create_run(experiment_id).info.run_id
    client.log_metric(rid, "k" * 250, 1.0)
    assert _code(client.log_metric, rid, "k" * 251, 1.0) == "INVALID_PARAMETER_VALUE"
    assert _code(client.log_param, rid, "p" * 251, "v") == "INVALID_PARAMETER_VALUE"
    assert _code(client.set_tag, rid, "t" * 251, "v") == "INVALID_PARAMETER_VALUE"
    assert set(client.get_run(rid).data.metrics) == {"k" * 250}


def test_long_values_are_truncated(client, experiment_id):
    """MLflow's server cuts param values to 6000 and tag values to 8000 characters
    (`_validate_length_limit(..., truncate=True)` with MLFLOW_TRUNCATE_LONG_VALUES on by
    default) instead of refusing them."""
    rid = client.create_run(experiment_id).info.run_id
    client.log_param(rid, "p", "x" * 6000)
    client.log_param(rid, "q", "0123456789" * 601)
    client.log_batch(rid, params=[Param("b", "z" * 7000)])
    client.set_tag(rid, "t", "y" * 8000)
    client.set_tag(rid, "u", "abcdefgh" * 1001)
    data = client.get_run(rid).data
    assert data.params["p"] == "x" * 6000
    assert data.params["q"] == ("0123456789" * 601)[:6000]
    assert data.params["b"] == "z" * 6000
    assert data.tags["t"] == "y" * 8000
    assert data.tags["u"] == ("abcdefgh" * 1001)[:8000]


def test_logging_to_deleted_run(client, experiment_id):
    rid = client.create_run(experiment_id).info.run_id
    client.delete_run(rid)
    for fn, args in [(client.log_metric, (rid, "m", 1.0)), (client.log_param, (rid, "p", "v")),
                     (client.set_tag, (rid, "t", "v")),
                     (client.log_batch, (rid, [Metric("m", 1.0, 1, 0)]))]:
        assert _code(fn, *args) == "INVALID_PARAMETER_VALUE", fn.__name__
    client.restore_run(rid)
    client.log_metric(rid, "m", 1.0)
    assert client.get_run(rid).data.metrics == {"m": 1.0}


def test_unknown_run_everywhere(client):
    rid = "a" * 32
    for fn, args in [(client.get_run, (rid,)), (client.log_param, (rid, "p", "v")),
                     (client.set_tag, (rid, "t", "v")), (client.delete_tag, (rid, "t")),
                     (client.log_batch, (rid, [], [Param("p", "v")])),
                     (client.set_terminated, (rid,)), (client.delete_run, (rid,)),
                     (client.restore_run, (rid,))]:
        exc = _fails(fn, *args)
        assert error_code(exc) == "RESOURCE_DOES_NOT_EXIST", fn.__name__
        assert exc.get_http_status_code() == 404, fn.__name__
    # MLflow answers an empty history here, not an error
    assert client.get_metric_history(rid, "m") == []


def test_unknown_experiment_everywhere(client):
    exp = "987654321"
    for fn, args in [(client.get_experiment, (exp,)), (client.delete_experiment, (exp,)),
                     (client.restore_experiment, (exp,)),
                     (client.rename_experiment, (exp, "whatever-name")),
                     (client.set_experiment_tag, (exp, "k", "v"))]:
        assert _code(fn, *args) == "RESOURCE_DOES_NOT_EXIST", fn.__name__


def test_bad_experiment_names(client, uniq):
    assert _code(client.create_experiment, "") == "INVALID_PARAMETER_VALUE"
    assert _code(client.create_experiment, "n" * 501) == "INVALID_PARAMETER_VALUE"
    exp_id = client.create_experiment(f"badname-{uniq}")
    client.create_experiment(f"taken-{uniq}")
    # MLflow answers BAD_REQUEST here (its unique-constraint error), 400 either way
    exc = _fails(client.rename_experiment, exp_id, f"taken-{uniq}")
    assert error_code(exc) in ("RESOURCE_ALREADY_EXISTS", "BAD_REQUEST")
    assert exc.get_http_status_code() == 400
    assert client.get_experiment(exp_id).name == f"badname-{uniq}"


def test_search_runs_bad_arguments(client, experiment_id):
    assert _code(client.search_runs, [experiment_id], max_results=50001) == \
        "INVALID_PARAMETER_VALUE"
    assert _code(client.search_runs, [experiment_id], order_by=["metrics.m SIDEWAYS"]) == \
        "INVALID_PARAMETER_VALUE"
    assert _code(client.search_runs, [experiment_id], order_by=["nope.x"]) == \
        "INVALID_PARAMETER_VALUE"
    assert _code(client.search_runs, [experiment_id], page_token="not a token") == \
        "INVALID_PARAMETER_VALUE"


def test_search_experiments_bad_arguments(client):
    assert _code(client.search_experiments, order_by=["nope DESC"]) == "INVALID_PARAMETER_VALUE"
    assert _code(client.search_experiments, page_token="garbage!") == "INVALID_PARAMETER_VALUE"
    assert _code(client.search_experiments, filter_string="tags.x > 'a'") == \
        "INVALID_PARAMETER_VALUE"


def test_run_in_deleted_experiment_via_fluent(client, uniq):
    exp_id = client.create_experiment(f"fl-del-{uniq}")
    client.delete_experiment(exp_id)
    with pytest.raises(MlflowException):
        mlflow.set_experiment(experiment_id=exp_id)


def test_batch_tag_and_param_validation_is_atomic(client, experiment_id):
    """A log-batch with one bad entry stores nothing of it."""
    rid = client.create_run(experiment_id).info.run_id
    assert _code(client.log_batch, rid, metrics=[Metric("ok", 1.0, 1, 0)],
                 params=[Param("good", "1")], tags=[RunTag("../bad", "x")]) == \
        "INVALID_PARAMETER_VALUE"
    data = client.get_run(rid).data
    assert data.metrics == {} and data.params == {}


# ---------------------------------------------------------------- raw requests


def _api(server, path):
    return f"{server.url}/api/2.0/mlflow/{path}"


def _assert_client_error(r, status, codes):
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = json_or_none(r.content)
    assert isinstance(body, dict), r.text[:300]
    assert body.get("error_code") in codes, body
    assert isinstance(body.get("message"), str)


@pytest.mark.parametrize("path,body", [
    ("experiments/create", {}),
    ("runs/log-metric", {"run_id": "x"}),
    ("runs/log-parameter", {"key": "k", "value": "v"}),
    ("runs/set-tag", {"run_id": "0" * 32, "value": "v"}),
    ("runs/delete", {}),
    ("registered-models/create", {}),
    ("model-versions/create", {"name": "x"}),
])
def test_missing_required_fields(server, path, body):
    r = requests.post(_api(server, path), json=body)
    _assert_client_error(r, 400, {"INVALID_PARAMETER_VALUE", "BAD_REQUEST"})


@pytest.mark.parametrize("path,body", [
    ("experiments/create", {"name": 5}),
    ("experiments/create", {"name": "x", "tags": "notalist"}),
    ("runs/search", {"max_results": "many"}),
    ("runs/search", {"experiment_ids": "0", "max_results": -1}),
])
def test_wrong_types(server, path, body):
    r = requests.post(_api(server, path), json=body)
    _assert_client_error(r, 400, {"INVALID_PARAMETER_VALUE", "BAD_REQUEST"})


def test_malformed_json(server):
    r = requests.post(_api(server, "experiments/create"), data=b"{not json",
                      headers={"Content-Type": "application/json"})
    _assert_client_error(r, 400, {"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "MALFORMED_REQUEST"})


def test_get_with_missing_query_parameter(server):
    r = requests.get(_api(server, "experiments/get"))
    _assert_client_error(r, 400, {"INVALID_PARAMETER_VALUE", "BAD_REQUEST"})
    r = requests.get(_api(server, "metrics/get-history"), params={"run_id": "0" * 32})
    _assert_client_error(r, 400, {"INVALID_PARAMETER_VALUE", "BAD_REQUEST"})


def test_metric_value_not_a_number(server, client, experiment_id):
    rid = client.create_run(experiment_id).info.run_id
    r = requests.post(_api(server, "runs/log-metric"),
                      json={"run_id": rid, "key": "m", "value": "abc", "timestamp": 1})
    _assert_client_error(r, 400, {"INVALID_PARAMETER_VALUE", "BAD_REQUEST"})
    assert client.get_run(rid).data.metrics == {}


def test_run_id_and_run_uuid_disagree(server, client, experiment_id):
    a = client.create_run(experiment_id).info.run_id
    b = client.create_run(experiment_id).info.run_id
    r = requests.post(_api(server, "runs/log-parameter"),
                      json={"run_id": a, "run_uuid": b, "key": "k", "value": "v"})
    # MLflow 3.17 takes run_id and ignores run_uuid (the protocol notes say it rejects the
    # request); either way run_uuid's run must not be written
    assert r.status_code in (200, 400), r.text
    assert client.get_run(b).data.params == {}
    if r.status_code == 200:
        assert client.get_run(a).data.params == {"k": "v"}


def test_log_batch_over_limits(server, client, experiment_id):
    """The client chunks batches; the server enforces the same limits (protocol §1.3 log_batch)."""
    rid = client.create_run(experiment_id).info.run_id
    metrics = [{"key": f"m{i}", "value": 1.0, "timestamp": 1, "step": 0} for i in range(1001)]
    r = requests.post(_api(server, "runs/log-batch"), json={"run_id": rid, "metrics": metrics})
    _assert_client_error(r, 400, {"INVALID_PARAMETER_VALUE"})
    params = [{"key": f"p{i}", "value": "v"} for i in range(101)]
    r = requests.post(_api(server, "runs/log-batch"), json={"run_id": rid, "params": params})
    _assert_client_error(r, 400, {"INVALID_PARAMETER_VALUE"})
    assert client.get_run(rid).data.metrics == {} and client.get_run(rid).data.params == {}


def test_unknown_endpoint(server):
    r = requests.get(_api(server, "no/such/endpoint"))
    assert r.status_code == 404
    body = json_or_none(r.content)
    # MLflow answers its HTML 404 page here; the client maps any 404 to ENDPOINT_NOT_FOUND
    if isinstance(body, dict):
        assert body.get("error_code") in ("ENDPOINT_NOT_FOUND", "NOT_FOUND",
                                          "RESOURCE_DOES_NOT_EXIST")
