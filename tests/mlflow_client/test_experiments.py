"""Experiments through the unmodified mlflow client (protocol reference §1.3)."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException

from compat_util import error_code


def test_default_experiment_exists(client):
    exp = client.get_experiment("0")
    assert exp.experiment_id == "0"
    assert exp.name == "Default"
    assert exp.lifecycle_stage == "active"
    assert exp.artifact_location == "mlflow-artifacts:/0"
    by_name = client.get_experiment_by_name("Default")
    assert by_name is not None and by_name.experiment_id == "0"


def test_create_get_with_tags(client, uniq):
    name = f"exp-tags-{uniq}"
    exp_id = client.create_experiment(name, tags={"team": "x", "k.with.dots": "v v"})
    assert isinstance(exp_id, str) and exp_id and exp_id != "0"
    exp = client.get_experiment(exp_id)
    assert exp.name == name
    assert exp.experiment_id == exp_id
    assert exp.lifecycle_stage == "active"
    assert exp.artifact_location == f"mlflow-artifacts:/{exp_id}"
    assert exp.tags["team"] == "x"
    assert exp.tags["k.with.dots"] == "v v"
    assert exp.creation_time and exp.creation_time > 1_500_000_000_000  # ms
    assert exp.last_update_time and exp.last_update_time >= exp.creation_time
    by_name = client.get_experiment_by_name(name)
    assert by_name.experiment_id == exp_id
    assert by_name.tags == exp.tags


def test_ids_are_distinct(client, uniq):
    ids = {client.create_experiment(f"exp-ids-{uniq}-{i}") for i in range(5)}
    assert len(ids) == 5


def test_get_by_name_missing_returns_none(client, uniq):
    assert client.get_experiment_by_name(f"does-not-exist-{uniq}") is None
    assert mlflow.get_experiment_by_name(f"does-not-exist-{uniq}") is None


def test_get_missing_id(client):
    with pytest.raises(MlflowException) as ei:
        client.get_experiment("987654321")
    assert error_code(ei.value) == "RESOURCE_DOES_NOT_EXIST"


def test_duplicate_name(client, uniq):
    name = f"exp-dup-{uniq}"
    client.create_experiment(name)
    with pytest.raises(MlflowException) as ei:
        client.create_experiment(name)
    assert error_code(ei.value) == "RESOURCE_ALREADY_EXISTS"
    assert ei.value.get_http_status_code() == 400


def test_set_experiment_creates_then_reuses(tracking_uri, uniq):
    name = f"exp-set-{uniq}"
    exp = mlflow.set_experiment(name)
    assert exp.name == name
    assert exp.lifecycle_stage == "active"
    again = mlflow.set_experiment(name)
    assert again.experiment_id == exp.experiment_id
    with mlflow.start_run() as run:
        assert run.info.experiment_id == exp.experiment_id
    by_id = mlflow.set_experiment(experiment_id=exp.experiment_id)
    assert by_id.name == name


def test_set_experiment_tag(client, uniq):
    exp_id = client.create_experiment(f"exp-settag-{uniq}")
    client.set_experiment_tag(exp_id, "stage", "dev")
    client.set_experiment_tag(exp_id, "stage", "prod")  # overwrite
    client.set_experiment_tag(exp_id, "other", "")
    tags = client.get_experiment(exp_id).tags
    assert tags["stage"] == "prod"
    assert tags.get("other") == ""
    mlflow.set_experiment(experiment_id=exp_id)
    mlflow.set_experiment_tags({"a": "1", "b": "2"})
    tags = client.get_experiment(exp_id).tags
    assert tags["a"] == "1" and tags["b"] == "2" and tags["stage"] == "prod"


def test_rename(client, uniq):
    exp_id = client.create_experiment(f"exp-ren-{uniq}")
    client.rename_experiment(exp_id, f"exp-renamed-{uniq}")
    assert client.get_experiment(exp_id).name == f"exp-renamed-{uniq}"
    assert client.get_experiment_by_name(f"exp-ren-{uniq}") is None
    assert client.get_experiment_by_name(f"exp-renamed-{uniq}").experiment_id == exp_id


def test_delete_restore(client, uniq):
    name = f"exp-del-{uniq}"
    exp_id = client.create_experiment(name)
    client.delete_experiment(exp_id)
    exp = client.get_experiment(exp_id)
    assert exp.lifecycle_stage == "deleted"
    # a deleted experiment is still found by name, and its name stays taken
    assert client.get_experiment_by_name(name).lifecycle_stage == "deleted"
    with pytest.raises(MlflowException) as ei:
        client.create_experiment(name)
    assert error_code(ei.value) == "RESOURCE_ALREADY_EXISTS"

    active = {e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)}
    deleted = {e.experiment_id for e in client.search_experiments(view_type=ViewType.DELETED_ONLY)}
    every = {e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)}
    assert exp_id not in active and exp_id in deleted and exp_id in every
    assert "0" in active and "0" not in deleted

    client.restore_experiment(exp_id)
    assert client.get_experiment(exp_id).lifecycle_stage == "active"
    active = {e.experiment_id for e in client.search_experiments()}
    assert exp_id in active


def test_create_run_in_deleted_experiment_fails(client, uniq):
    exp_id = client.create_experiment(f"exp-delrun-{uniq}")
    client.delete_experiment(exp_id)
    with pytest.raises(MlflowException) as ei:
        client.create_run(exp_id)
    assert error_code(ei.value) == "INVALID_PARAMETER_VALUE"


def test_search_experiments_filter_order_paging(client, uniq):
    prefix = f"srch-{uniq}-"
    ids = {}
    for i in range(7):
        tags = {"parity": "even" if i % 2 == 0 else "odd", "idx": str(i)}
        ids[i] = client.create_experiment(f"{prefix}{i}", tags=tags)

    res = client.search_experiments(filter_string=f"name LIKE '{prefix}%'")
    assert {e.name for e in res} == {f"{prefix}{i}" for i in range(7)}

    res = client.search_experiments(filter_string=f"name = '{prefix}3'")
    assert [e.experiment_id for e in res] == [ids[3]]

    res = client.search_experiments(filter_string=f"name ILIKE '{prefix.upper()}%'")
    assert len(res) == 7

    res = client.search_experiments(
        filter_string=f"name LIKE '{prefix}%' AND tags.parity = 'even'",
        order_by=["name DESC"])
    assert [e.name for e in res] == [f"{prefix}{i}" for i in (6, 4, 2, 0)]

    res = client.search_experiments(
        filter_string=f"name LIKE '{prefix}%' AND tags.parity != 'even'",
        order_by=["name ASC"])
    assert [e.name for e in res] == [f"{prefix}{i}" for i in (1, 3, 5)]

    res = client.search_experiments(filter_string=f"name LIKE '{prefix}%' AND tags.idx LIKE '%5'")
    assert [e.experiment_id for e in res] == [ids[5]]

    # paging: 3 + 3 + 1, in order, no repeats
    seen = []
    token = None
    pages = 0
    while True:
        page = client.search_experiments(filter_string=f"name LIKE '{prefix}%'",
                                         order_by=["name ASC"], max_results=3,
                                         page_token=token)
        pages += 1
        assert len(page) <= 3
        seen.extend(e.name for e in page)
        token = page.token
        if not token:
            break
        assert pages < 10
    assert seen == [f"{prefix}{i}" for i in range(7)]
    assert pages == 3

    # order by creation time (ids are created in order), ties broken stably
    res = client.search_experiments(filter_string=f"name LIKE '{prefix}%'",
                                    order_by=["creation_time DESC", "name DESC"])
    assert [e.name for e in res] == [f"{prefix}{i}" for i in reversed(range(7))]

    # fluent variant
    df_like = mlflow.search_experiments(filter_string=f"name LIKE '{prefix}%'")
    assert len(df_like) == 7


def test_search_experiments_by_id_and_tag_null(client, uniq):
    a = client.create_experiment(f"sid-{uniq}-a", tags={"only_a": "1"})
    client.create_experiment(f"sid-{uniq}-b")
    res = client.search_experiments(filter_string=f"name LIKE 'sid-{uniq}-%' AND tags.only_a = '1'")
    assert [e.experiment_id for e in res] == [a]
    res = client.search_experiments(filter_string=f"name LIKE 'sid-{uniq}-%' AND tags.only_a ILIKE '1'")
    assert [e.experiment_id for e in res] == [a]


def test_search_experiments_bad_filter(client):
    with pytest.raises(MlflowException) as ei:
        client.search_experiments(filter_string="name === 'x'")
    assert error_code(ei.value) == "INVALID_PARAMETER_VALUE"
