"""runs/search with the filter grammar, order_by and paging (protocol reference §1.4)."""

from __future__ import annotations

import math

import mlflow
import pytest
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException

from compat_util import error_code

N = 25
BASE_T = 1_700_000_000_000


@pytest.fixture(scope="module")
def runs25(server):
    """25 finished runs in a fresh experiment, created with explicit start times.

    run i: run_name "run-{i:02d}", metrics.m = i, metrics.sq = i*i (i < 20 only),
    params.p = str(i % 3), params.only_even set for even i, tags.parity = even/odd,
    tags.`dotted.key` = "d{i}", start_time = BASE_T + i.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=server.url)
    exp_id = client.create_experiment("search-runs-25")
    ids = []
    for i in range(N):
        run = client.create_run(exp_id, run_name=f"run-{i:02d}", start_time=BASE_T + i)
        rid = run.info.run_id
        metrics = [Metric("m", float(i), BASE_T + i, 0)]
        if i < 20:
            metrics.append(Metric("sq", float(i * i), BASE_T + i, 0))
        params = [Param("p", str(i % 3))]
        if i % 2 == 0:
            params.append(Param("only_even", "yes"))
        tags = [RunTag("parity", "even" if i % 2 == 0 else "odd"), RunTag("dotted.key", f"d{i}")]
        client.log_batch(rid, metrics=metrics, params=params, tags=tags)
        status = "FAILED" if i == 7 else "FINISHED"
        client.set_terminated(rid, status=status, end_time=BASE_T + 1000 + i)
        ids.append(rid)
    return exp_id, ids


def _search(client, exp_id, flt="", order_by=None, **kw):
    return client.search_runs([exp_id], filter_string=flt, order_by=order_by, **kw)


def _idx(runs, ids):
    return [ids.index(r.info.run_id) for r in runs]


def test_default_order_is_start_time_desc(client, runs25):
    exp_id, ids = runs25
    runs = _search(client, exp_id)
    assert _idx(runs, ids) == list(reversed(range(N)))
    r = runs[0]
    assert r.data.metrics == {"m": 24.0}
    assert r.data.params == {"p": "0", "only_even": "yes"}
    assert r.data.tags["parity"] == "even"
    assert r.info.run_name == "run-24"


@pytest.mark.parametrize("flt,expected", [
    ("metrics.m > 20", {21, 22, 23, 24}),
    ("metrics.m >= 20", {20, 21, 22, 23, 24}),
    ("metrics.m < 2", {0, 1}),
    ("metric.m <= 1", {0, 1}),
    ("metrics.m = 5", {5}),
    ("metrics.m != 5", set(range(N)) - {5}),
    ("metrics.sq > 300", {18, 19}),  # runs without sq never match
    ("params.p = '1'", {1, 4, 7, 10, 13, 16, 19, 22}),
    ("param.p != '0'", {i for i in range(N) if i % 3 != 0}),
    ("params.p = \"2\"", {i for i in range(N) if i % 3 == 2}),
    ("params.only_even = 'yes' AND metrics.m < 6", {0, 2, 4}),
    ("params.only_even IS NULL AND metrics.m < 6", {1, 3, 5}),
    ("params.only_even IS NOT NULL AND metrics.m < 6", {0, 2, 4}),
    ("tags.parity = 'odd' AND metrics.m > 18", {19, 21, 23}),
    ("tag.parity LIKE 'ev%' AND metrics.m < 5", {0, 2, 4}),
    ("tags.parity ILIKE 'EV%' AND metrics.m < 5", {0, 2, 4}),
    ("tags.parity LIKE 'EV%'", set()),  # LIKE is case-sensitive
    ("tags.`dotted.key` = 'd3'", {3}),
    ("tags.\"dotted.key\" LIKE 'd2_'", {20, 21, 22, 23, 24}),
    ("attributes.run_name = 'run-03'", {3}),
    ("attributes.run_name LIKE 'run-1%'", set(range(10, 20))),
    ("attributes.run_name ILIKE 'RUN-0%'", set(range(10))),
    ("run_name != 'run-00' AND metrics.m < 3", {1, 2}),
    ("attributes.`Run name` = 'run-04'", {4}),
    ("attributes.status = 'FAILED'", {7}),
    ("attributes.status != 'FAILED' AND metrics.m < 9 AND metrics.m > 5", {6, 8}),
    (f"attributes.start_time >= {BASE_T + 22}", {22, 23, 24}),
    (f"attributes.start_time < {BASE_T + 2}", {0, 1}),
    (f"attributes.end_time > {BASE_T + 1023}", {24}),
    ("metrics.m >= 5 AND params.p = '2' AND tags.parity = 'odd'", {5, 11, 17, 23}),
    ("tags.parity = 'none'", set()),
    ("params.missing = 'x'", set()),
])
def test_filters(client, runs25, flt, expected):
    exp_id, ids = runs25
    got = set(_idx(_search(client, exp_id, flt), ids))
    assert got == expected, flt


def test_filter_run_id_in(client, runs25):
    exp_id, ids = runs25
    flt = f"attributes.run_id IN ('{ids[2]}', '{ids[5]}')"
    assert set(_idx(_search(client, exp_id, flt), ids)) == {2, 5}
    flt = f"attributes.run_id = '{ids[9]}'"
    assert _idx(_search(client, exp_id, flt), ids) == [9]
    flt = f"attributes.run_id NOT IN ('{ids[0]}') AND metrics.m < 3"
    assert set(_idx(_search(client, exp_id, flt), ids)) == {1, 2}


@pytest.mark.parametrize("order_by,expected", [
    (["metrics.m DESC"], list(reversed(range(N)))),
    (["metrics.m ASC"], list(range(N))),
    (["metrics.m"], list(range(N))),
    (["attributes.start_time ASC"], list(range(N))),
    (["start_time DESC"], list(reversed(range(N)))),
    (["attributes.run_name DESC"], list(reversed(range(N)))),
    (["params.p ASC", "metrics.m DESC"],
     sorted(range(N), key=lambda i: (str(i % 3), -i))),
    (["tags.parity DESC", "metrics.m ASC"],
     [i for i in range(N) if i % 2] + [i for i in range(N) if i % 2 == 0]),
])
def test_order_by(client, runs25, order_by, expected):
    exp_id, ids = runs25
    assert _idx(_search(client, exp_id, order_by=order_by), ids) == expected


def test_order_by_metric_missing_values_last(client, runs25):
    exp_id, ids = runs25
    got = _idx(_search(client, exp_id, order_by=["metrics.sq DESC"]), ids)
    assert got[:20] == list(reversed(range(20)))
    assert set(got[20:]) == set(range(20, 25))


@pytest.mark.parametrize("page_size", [10, 7, 1, 25, 100])
def test_paging(client, runs25, page_size):
    exp_id, ids = runs25
    seen = []
    token = None
    calls = 0
    while True:
        page = client.search_runs([exp_id], order_by=["metrics.m DESC"],
                                  max_results=page_size, page_token=token)
        calls += 1
        assert len(page) <= page_size
        seen.extend(_idx(page, ids))
        token = page.token
        if not token:
            break
        assert calls <= N + 2
    assert seen == list(reversed(range(N)))
    assert calls in (math.ceil(N / page_size), math.ceil(N / page_size) + 1)


def test_paging_with_filter(client, runs25):
    exp_id, ids = runs25
    p1 = client.search_runs([exp_id], "tags.parity = 'even'", max_results=5,
                            order_by=["metrics.m ASC"])
    assert _idx(p1, ids) == [0, 2, 4, 6, 8] and p1.token
    p2 = client.search_runs([exp_id], "tags.parity = 'even'", max_results=5,
                            order_by=["metrics.m ASC"], page_token=p1.token)
    assert _idx(p2, ids) == [10, 12, 14, 16, 18] and p2.token
    p3 = client.search_runs([exp_id], "tags.parity = 'even'", max_results=5,
                            order_by=["metrics.m ASC"], page_token=p2.token)
    assert _idx(p3, ids) == [20, 22, 24]
    assert not p3.token


def test_pandas_search_runs(tracking_uri, runs25):
    exp_id, ids = runs25
    df = mlflow.search_runs(experiment_ids=[exp_id])
    assert len(df) == N
    for col in ("run_id", "experiment_id", "status", "start_time", "end_time", "artifact_uri",
                "metrics.m", "params.p", "tags.parity", "tags.mlflow.runName"):
        assert col in df.columns, col
    assert set(df["run_id"]) == set(ids)
    df = mlflow.search_runs(experiment_ids=[exp_id], filter_string="metrics.m < 3",
                            order_by=["metrics.m DESC"])
    assert list(df["metrics.m"]) == [2.0, 1.0, 0.0]
    assert list(df["params.p"]) == ["2", "1", "0"]
    assert list(df["tags.mlflow.runName"]) == ["run-02", "run-01", "run-00"]
    runs = mlflow.search_runs(experiment_ids=[exp_id], output_format="list", max_results=3)
    assert len(runs) == 3
    df = mlflow.search_runs(experiment_names=["search-runs-25"], filter_string="metrics.m = 4")
    assert list(df["run_id"]) == [ids[4]]


def test_search_multiple_experiments(client, uniq):
    a = client.create_experiment(f"multi-a-{uniq}")
    b = client.create_experiment(f"multi-b-{uniq}")
    ra = client.create_run(a).info.run_id
    rb = client.create_run(b).info.run_id
    got = {r.info.run_id for r in client.search_runs([a, b])}
    assert got == {ra, rb}
    assert {r.info.run_id for r in client.search_runs([b])} == {rb}


def test_search_view_type(client, runs25, uniq):
    exp_id = client.create_experiment(f"viewtype-{uniq}")
    r1 = client.create_run(exp_id).info.run_id
    r2 = client.create_run(exp_id).info.run_id
    client.delete_run(r2)
    ids = lambda vt: {r.info.run_id for r in client.search_runs([exp_id], run_view_type=vt)}  # noqa: E731
    assert ids(ViewType.ACTIVE_ONLY) == {r1}
    assert ids(ViewType.DELETED_ONLY) == {r2}
    assert ids(ViewType.ALL) == {r1, r2}


@pytest.mark.parametrize("flt", [
    "metrics.m >",
    "metrics.m > 'abc' OR metrics.m < 3",
    "foo.bar = 1",
    "params.p > = '1'",
])
def test_bad_filter(client, runs25, flt):
    exp_id, _ = runs25
    with pytest.raises(MlflowException) as ei:
        _search(client, exp_id, flt)
    assert error_code(ei.value) == "INVALID_PARAMETER_VALUE"
    assert ei.value.get_http_status_code() == 400
