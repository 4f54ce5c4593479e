"""The model registry through the unmodified mlflow client (protocol reference §1.3 registry rows,
§1.4 registry filters, §4.9 alias hydration).

Every test makes its own registered models under unique names; the logged models they register
come from one module-scoped fixture, since logging a pyfunc model takes a second or two.
"""

from __future__ import annotations

import time

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from compat_util import error_code, skip_on_mlflow


class AddN(mlflow.pyfunc.PythonModel):
    def __init__(self, n):
        self.n = n

    def predict(self, context, model_input, params=None):
        return model_input.apply(lambda col: col + self.n)


def _predict(uri: str) -> list[float]:
    model = mlflow.pyfunc.load_model(uri)
    return list(model.predict(pd.DataFrame({"x": [1.0, 2.0, 3.0]}))["x"])


def _code(fn, *args, **kwargs) -> str | None:
    with pytest.raises(MlflowException) as ei:
        fn(*args, **kwargs)
    return error_code(ei.value)


@pytest.fixture(scope="module")
def logged(server):
    """Three pyfunc models AddN(1), AddN(2), AddN(3), each logged as "m" in its own run of a
    fresh experiment. Returns {n: (run_id, ModelInfo)} and the experiment id."""
    mlflow.set_tracking_uri(server.url)
    mlflow.set_registry_uri(server.url)
    client = MlflowClient(server.url, server.url)
    exp_id = client.create_experiment("registry-sources")
    out = {}
    for n in (1, 2, 3):
        with mlflow.start_run(experiment_id=exp_id) as run:
            # pip_requirements given so that the client does not infer them in a subprocess
            info = mlflow.pyfunc.log_model(name="m", python_model=AddN(n),
                                           pip_requirements=["mlflow==3.17.2"])
        out[n] = (run.info.run_id, info)
    return {"exp_id": exp_id, **out}


# ---------------------------------------------------------------- registered models


def test_create_get_registered_model(client, uniq):
    name = f"rm-{uniq}"
    before = int(time.time() * 1000)
    rm = client.create_registered_model(name, tags={"owner": "me", "k.dot": "v v"},
                                        description="first")
    assert rm.name == name
    assert rm.description == "first"
    assert rm.tags == {"owner": "me", "k.dot": "v v"}
    assert rm.creation_timestamp >= before - 5000
    assert rm.last_updated_timestamp >= rm.creation_timestamp
    got = client.get_registered_model(name)
    assert got.name == name and got.description == "first"
    assert got.tags == {"owner": "me", "k.dot": "v v"}
    assert got.creation_timestamp == rm.creation_timestamp
    assert got.latest_versions == []
    assert got.aliases == {}
    # without tags or description
    bare = client.create_registered_model(f"{name}-bare")
    assert bare.tags == {} and not bare.description


def test_duplicate_registered_model(client, uniq):
    name = f"dup-{uniq}"
    client.create_registered_model(name)
    with pytest.raises(MlflowException) as ei:
        client.create_registered_model(name)
    assert error_code(ei.value) == "RESOURCE_ALREADY_EXISTS"
    assert ei.value.get_http_status_code() == 400


def test_update_registered_model_description(client, uniq):
    name = f"desc-{uniq}"
    rm = client.create_registered_model(name, description="old")
    time.sleep(0.01)
    upd = client.update_registered_model(name, description="new desc")
    assert upd.name == name and upd.description == "new desc"
    got = client.get_registered_model(name)
    assert got.description == "new desc"
    assert got.last_updated_timestamp >= rm.last_updated_timestamp
    client.update_registered_model(name, description="")
    assert not client.get_registered_model(name).description


def test_registered_model_tags(client, uniq):
    name = f"rmtags-{uniq}"
    client.create_registered_model(name, tags={"a": "1"})
    client.set_registered_model_tag(name, "b", "2")
    client.set_registered_model_tag(name, "a", "changed")  # overwrite
    client.set_registered_model_tag(name, "empty", "")
    assert client.get_registered_model(name).tags == {"a": "changed", "b": "2", "empty": ""}
    client.delete_registered_model_tag(name, "a")
    assert client.get_registered_model(name).tags == {"b": "2", "empty": ""}
    assert _code(client.set_registered_model_tag, f"nope-{uniq}", "k", "v") == "RESOURCE_DOES_NOT_EXIST"


def test_search_registered_models_filters_order_paging(client, uniq):
    prefix = f"srm-{uniq}-"
    for i in range(5):
        client.create_registered_model(f"{prefix}{i}",
                                       tags={"i": str(i), "parity": "odd" if i % 2 else "even"})
    client.create_registered_model(f"other-{uniq}")

    def names(**kw):
        return [m.name for m in client.search_registered_models(**kw)]

    assert set(names(filter_string=f"name LIKE '{prefix}%'")) == {f"{prefix}{i}" for i in range(5)}
    assert names(filter_string=f"name = '{prefix}2'") == [f"{prefix}2"]
    assert names(filter_string=f"name LIKE '{prefix}%'", order_by=["name DESC"]) == [
        f"{prefix}{i}" for i in (4, 3, 2, 1, 0)]
    assert names(filter_string=f"name ILIKE '{prefix.upper()}%' AND tags.i = '1'") == [f"{prefix}1"]
    assert names(filter_string=f"name LIKE '{prefix}%' AND tags.parity = 'odd'",
                 order_by=["name ASC"]) == [f"{prefix}1", f"{prefix}3"]
    assert names(filter_string=f"name LIKE '{prefix}%' AND tag.parity != 'odd'",
                 order_by=["name ASC"]) == [f"{prefix}0", f"{prefix}2", f"{prefix}4"]
    assert names(filter_string=f"name != '{prefix}0' AND name LIKE '{prefix}%'",
                 order_by=["name ASC"]) == [f"{prefix}{i}" for i in range(1, 5)]
    assert names(filter_string=f"name = 'nothing-{uniq}'") == []
    # without a filter: every model, ours included
    assert {f"{prefix}0", f"other-{uniq}"} <= set(names(max_results=1000))
    # order by last update time (created in order, never updated since); MLflow accepts
    # `timestamp` and `last_updated_timestamp` here, not `creation_timestamp`
    assert names(filter_string=f"name LIKE '{prefix}%'",
                 order_by=["last_updated_timestamp DESC", "name DESC"]) == [
        f"{prefix}{i}" for i in (4, 3, 2, 1, 0)]
    assert names(filter_string=f"name LIKE '{prefix}%'",
                 order_by=["timestamp ASC", "name ASC"]) == [f"{prefix}{i}" for i in range(5)]

    # paging with max_results + page_token: 2 + 2 + 1, no repeats, last page without a token
    seen, token, pages = [], None, 0
    while True:
        page = client.search_registered_models(filter_string=f"name LIKE '{prefix}%'",
                                               order_by=["name ASC"], max_results=2,
                                               page_token=token)
        pages += 1
        assert len(page) <= 2
        seen.extend(m.name for m in page)
        token = page.token
        if not token:
            break
        assert pages < 10
    assert seen == [f"{prefix}{i}" for i in range(5)]
    assert pages == 3


def test_search_registered_models_bad_input(client):
    assert _code(client.search_registered_models, filter_string="name === 'x'") == \
        "INVALID_PARAMETER_VALUE"
    assert _code(client.search_registered_models, filter_string="version_number = 1") == \
        "INVALID_PARAMETER_VALUE"
    assert _code(client.search_registered_models, order_by=["nope DESC"]) == \
        "INVALID_PARAMETER_VALUE"
    assert _code(client.search_registered_models, max_results=1001) == "INVALID_PARAMETER_VALUE"


def test_rename_registered_model(client, logged, uniq):
    name = f"ren-{uniq}"
    rid, info = logged[1]
    client.create_registered_model(name, tags={"t": "1"})
    client.create_model_version(name, source=info.model_uri, run_id=rid, model_id=info.model_id)
    client.create_model_version(name, source=info.model_uri, run_id=rid, model_id=info.model_id)
    client.set_registered_model_alias(name, "champ", "2")
    # (MlflowClient 3.17 drops the response and returns None)
    client.rename_registered_model(name, f"{name}-new")
    assert _code(client.get_registered_model, name) == "RESOURCE_DOES_NOT_EXIST"
    got = client.get_registered_model(f"{name}-new")
    assert got.tags == {"t": "1"}
    # the versions moved with it
    vs = client.search_model_versions(f"name = '{name}-new'")
    assert sorted(v.version for v in vs) == ["1", "2"]
    assert all(v.name == f"{name}-new" for v in vs)
    assert client.get_model_version(f"{name}-new", "2").name == f"{name}-new"
    assert client.search_model_versions(f"name = '{name}'") == []
    # renaming onto an existing model fails, and so does renaming a missing one
    client.create_registered_model(f"{name}-taken")
    assert _code(client.rename_registered_model, f"{name}-new", f"{name}-taken") == \
        "RESOURCE_ALREADY_EXISTS"
    assert _code(client.rename_registered_model, f"nope-{uniq}", f"x-{uniq}") == \
        "RESOURCE_DOES_NOT_EXIST"


def test_rename_keeps_aliases(client, logged, uniq):
    name = f"renal-{uniq}"
    rid, info = logged[2]
    client.create_registered_model(name)
    client.create_model_version(name, source=info.model_uri, run_id=rid, model_id=info.model_id)
    client.set_registered_model_alias(name, "champ", "1")
    client.rename_registered_model(name, f"{name}-new")
    assert client.get_registered_model(f"{name}-new").aliases == {"champ": "1"}
    assert client.get_model_version_by_alias(f"{name}-new", "champ").version == "1"


def test_delete_registered_model(client, logged, uniq):
    name = f"delrm-{uniq}"
    rid, info = logged[1]
    client.create_registered_model(name, tags={"a": "b"})
    client.create_model_version(name, source=info.model_uri, run_id=rid, model_id=info.model_id)
    client.set_registered_model_alias(name, "x", "1")
    client.delete_registered_model(name)
    assert _code(client.get_registered_model, name) == "RESOURCE_DOES_NOT_EXIST"
    assert _code(client.get_model_version, name, "1") == "RESOURCE_DOES_NOT_EXIST"
    assert client.search_model_versions(f"name = '{name}'") == []
    assert client.search_registered_models(filter_string=f"name = '{name}'") == []
    assert _code(client.delete_registered_model, name) == "RESOURCE_DOES_NOT_EXIST"
    # the name is free again, and the new model starts from version 1 with no tags or aliases
    client.create_registered_model(name)
    assert client.get_registered_model(name).tags == {}
    mv = client.create_model_version(name, source=info.model_uri, run_id=rid, model_id=info.model_id)
    assert mv.version == "1"
    assert client.get_registered_model(name).aliases == {}


# ---------------------------------------------------------------- model versions


def test_create_model_version_fields(client, logged, uniq):
    name = f"mv-{uniq}"
    rid, info = logged[1]
    client.create_registered_model(name)
    before = int(time.time() * 1000)
    mv = client.create_model_version(name, source=info.model_uri, run_id=rid,
                                     model_id=info.model_id, tags={"v": "one"},
                                     description="v1 desc")
    assert mv.name == name
    assert mv.version == "1"
    assert mv.status == "READY"
    assert mv.current_stage == "None"
    assert mv.source == info.model_uri
    assert mv.run_id == rid
    assert mv.tags == {"v": "one"}
    assert mv.description == "v1 desc"
    assert mv.creation_timestamp >= before - 5000
    assert mv.last_updated_timestamp >= mv.creation_timestamp
    assert mv.aliases == []
    got = client.get_model_version(name, "1")
    assert (got.name, got.version, got.source, got.run_id, got.status, got.current_stage,
            got.description, got.tags) == (name, "1", info.model_uri, rid, "READY", "None",
                                           "v1 desc", {"v": "one"})
    # creating a version bumps the registered model's last_updated_timestamp
    rm = client.get_registered_model(name)
    assert rm.last_updated_timestamp >= mv.creation_timestamp
    assert [(v.version, v.current_stage) for v in rm.latest_versions] == [("1", "None")]


def test_version_numbers_increase_and_are_not_reused(client, logged, uniq):
    name = f"vnum-{uniq}"
    rid, info = logged[1]
    client.create_registered_model(name)
    versions = [client.create_model_version(name, source=info.model_uri, run_id=rid,
                                    model_id=info.model_id).version
                for _ in range(3)]
    assert versions == ["1", "2", "3"]
    client.delete_model_version(name, "3")
    assert client.create_model_version(name, source=info.model_uri, run_id=rid,
                                    model_id=info.model_id).version == "4"


def test_register_model_fluent(client, logged, uniq):
    """mlflow.register_model creates the registered model when missing, tolerates
    RESOURCE_ALREADY_EXISTS when it exists, and resolves runs:/ URIs to the logged model."""
    name = f"fluent-{uniq}"
    rid1, info1 = logged[1]
    rid2, info2 = logged[2]
    mv1 = mlflow.register_model(info1.model_uri, name)
    assert (mv1.name, mv1.version, mv1.status) == (name, "1", "READY")
    assert mv1.source == info1.model_uri
    assert mv1.run_id == rid1  # the server fills it from the logged model
    mv2 = mlflow.register_model(info2.model_uri, name, tags={"via": "fluent"})
    assert mv2.version == "2"
    assert client.get_model_version(name, "2").tags == {"via": "fluent"}
    # a runs:/ URI is looked up among the run's logged models (logged-models/search)
    mv3 = mlflow.register_model(f"runs:/{rid2}/m", name)
    assert mv3.version == "3"
    assert mv3.source == info2.model_uri
    assert mv3.run_id == rid2
    assert client.get_registered_model(name).name == name
    # register_model records the version on the logged model
    lm = client.get_logged_model(info2.model_id)
    assert name in lm.tags.get("mlflow.modelVersions", "")


def test_update_model_version_description(client, logged, uniq):
    name = f"mvdesc-{uniq}"
    rid, info = logged[1]
    client.create_registered_model(name)
    mv = client.create_model_version(name, source=info.model_uri, run_id=rid,
                                    model_id=info.model_id)
    assert not mv.description
    upd = client.update_model_version(name, "1", description="mv desc")
    assert upd.description == "mv desc" and upd.version == "1"
    got = client.get_model_version(name, "1")
    assert got.description == "mv desc"
    assert got.last_updated_timestamp >= mv.last_updated_timestamp
    assert _code(client.update_model_version, name, "9", description="x") == \
        "RESOURCE_DOES_NOT_EXIST"


def test_model_version_tags(client, logged, uniq):
    name = f"mvtags-{uniq}"
    rid, info = logged[1]
    client.create_registered_model(name)
    client.create_model_version(name, source=info.model_uri, run_id=rid,
                                model_id=info.model_id, tags={"a": "1"})
    client.create_model_version(name, source=info.model_uri, run_id=rid,
                                    model_id=info.model_id)
    client.set_model_version_tag(name, "1", "t", "x")
    client.set_model_version_tag(name, "1", "a", "2")
    client.set_model_version_tag(name, "2", "only2", "y")
    assert client.get_model_version(name, "1").tags == {"a": "2", "t": "x"}
    assert client.get_model_version(name, "2").tags == {"only2": "y"}
    client.delete_model_version_tag(name, "1", "t")
    assert client.get_model_version(name, "1").tags == {"a": "2"}
    # tags are not shared with the registered model
    assert client.get_registered_model(name).tags == {}
    assert _code(client.set_model_version_tag, name, "7", "k", "v") == "RESOURCE_DOES_NOT_EXIST"


def test_delete_model_version(client, logged, uniq):
    name = f"delmv-{uniq}"
    rid, info = logged[1]
    client.create_registered_model(name)
    for _ in range(3):
        client.create_model_version(name, source=info.model_uri, run_id=rid,
                                    model_id=info.model_id)
    client.set_registered_model_alias(name, "on2", "2")
    client.set_registered_model_alias(name, "on3", "3")
    client.delete_model_version(name, "2")  # DELETE with a JSON body
    assert _code(client.get_model_version, name, "2") == "RESOURCE_DOES_NOT_EXIST"
    assert sorted(v.version for v in client.search_model_versions(f"name='{name}'")) == ["1", "3"]
    # the alias that pointed at it is gone, the other stays
    assert client.get_registered_model(name).aliases == {"on3": "3"}
    assert _code(client.delete_model_version, name, "2") == "RESOURCE_DOES_NOT_EXIST"
    assert _code(client.delete_model_version, f"nope-{uniq}", "1") == "RESOURCE_DOES_NOT_EXIST"


def test_search_model_versions_filters_order_paging(client, logged, uniq):
    name_a, name_b = f"smv-{uniq}-a", f"smv-{uniq}-b"
    (rid1, info1), (rid2, info2) = logged[1], logged[2]
    client.create_registered_model(name_a)
    client.create_registered_model(name_b)
    for i in range(5):  # a: versions 1..5 from alternating runs
        rid, info = (rid1, info1) if i % 2 == 0 else (rid2, info2)
        client.create_model_version(name_a, source=info.model_uri, run_id=rid,
                                    model_id=info.model_id, tags={"i": str(i)})
    client.create_model_version(name_b, source=info2.model_uri, run_id=rid2,
                                model_id=info2.model_id)

    def vers(flt, **kw):
        return [(v.name, v.version) for v in client.search_model_versions(flt, **kw)]

    assert sorted(vers(f"name = '{name_a}'")) == [(name_a, str(v)) for v in range(1, 6)]
    assert sorted(vers(f"name LIKE 'smv-{uniq}-%'")) == sorted(
        [(name_a, str(v)) for v in range(1, 6)] + [(name_b, "1")])
    assert sorted(vers(f"name ILIKE 'SMV-{uniq}-B'")) == [(name_b, "1")]
    assert sorted(vers(f"name = '{name_a}' AND run_id = '{rid1}'")) == [
        (name_a, "1"), (name_a, "3"), (name_a, "5")]
    assert sorted(vers(f"name LIKE 'smv-{uniq}-%' AND run_id IN ('{rid2}')")) == sorted(
        [(name_a, "2"), (name_a, "4"), (name_b, "1")])
    assert sorted(vers(f"name = '{name_a}' AND tags.i = '3'")) == [(name_a, "4")]
    assert sorted(vers(f"name = '{name_a}' AND version_number > 3")) == [(name_a, "4"), (name_a, "5")]
    assert sorted(vers(f"name = '{name_a}' AND source_path = '{info2.model_uri}'")) == [
        (name_a, "2"), (name_a, "4")]
    assert vers(f"name = 'nope-{uniq}'") == []

    # ordering
    assert vers(f"name = '{name_a}'", order_by=["version_number ASC"]) == [
        (name_a, str(v)) for v in range(1, 6)]
    assert vers(f"name = '{name_a}'", order_by=["version_number DESC"]) == [
        (name_a, str(v)) for v in range(5, 0, -1)]
    assert vers(f"name LIKE 'smv-{uniq}-%'", order_by=["name DESC", "version_number ASC"]) == \
        [(name_b, "1")] + [(name_a, str(v)) for v in range(1, 6)]

    # paging: 2 + 2 + 1
    seen, token, pages = [], None, 0
    while True:
        page = client.search_model_versions(f"name = '{name_a}'", max_results=2,
                                            order_by=["version_number ASC"], page_token=token)
        pages += 1
        assert len(page) <= 2
        seen.extend(v.version for v in page)
        token = page.token
        if not token:
            break
        assert pages < 10
    assert seen == ["1", "2", "3", "4", "5"]
    assert pages == 3


def test_search_model_versions_bad_input(client):
    assert _code(client.search_model_versions, "name === 'x'") == "INVALID_PARAMETER_VALUE"
    assert _code(client.search_model_versions, "name = 'x'", order_by=["nope"]) == \
        "INVALID_PARAMETER_VALUE"
    assert _code(client.search_model_versions, "name = 'x'", max_results=0) == \
        "INVALID_PARAMETER_VALUE"


def test_get_model_version_download_uri(client, logged, uniq):
    name = f"dl-{uniq}"
    rid, info = logged[2]
    exp_id = logged["exp_id"]
    client.create_registered_model(name)
    client.create_model_version(name, source=info.model_uri, run_id=rid, model_id=info.model_id)
    # a models:/m-... source resolves to the logged model's artifact location
    want = f"mlflow-artifacts:/{exp_id}/models/{info.model_id}/artifacts"
    assert client.get_model_version_download_uri(name, "1") == want
    assert client.get_logged_model(info.model_id).artifact_location == want
    # MLflow returns a runs:/ source as given (and then cannot load it through models:/NAME/2,
    # since a 3.x model's files are not under the run); resolving it on the server to the run's
    # logged model "m" is better, so either answer passes
    mv = client.create_model_version(name, source=f"runs:/{rid}/m", run_id=rid)
    assert mv.source == f"runs:/{rid}/m"
    assert client.get_model_version_download_uri(name, "2") in (f"runs:/{rid}/m", want)
    assert _code(client.get_model_version_download_uri, name, "9") == "RESOURCE_DOES_NOT_EXIST"


def test_model_version_source_must_match_run_or_model(client, logged, uniq):
    """MLflow's server checks that a version's source lies inside the run or logged model the
    request names, so a registered model cannot be pointed at someone else's artifacts or at
    server-local files (server/handlers.py `_validate_source_run` / `_validate_source_model`)."""
    name = f"srcval-{uniq}"
    (rid1, info1), (rid2, info2) = logged[1], logged[2]
    client.create_registered_model(name)
    bad = [
        dict(source=info1.model_uri),                                  # models:/m-... without model_id
        dict(source=info1.model_uri, model_id=info2.model_id),         # model_id of another model
        dict(source=f"runs:/{rid1}/m", run_id=rid2),                   # run_id of another run
        dict(source=f"runs:/{rid1}/m"),                                # runs:/ without run_id
        dict(source="/etc/passwd", run_id=rid1),                       # a server-local path
        dict(source=f"mlflow-artifacts:/{logged['exp_id']}/{rid1}/artifacts/../../../x",
             run_id=rid1),                                             # escapes the run
    ]
    for kw in bad:
        assert _code(client.create_model_version, name, **kw) == "INVALID_PARAMETER_VALUE", kw
    assert client.search_model_versions(f"name = '{name}'") == []
    # inside the run's own artifact root is fine
    art = client.get_run(rid1).info.artifact_uri
    mv = client.create_model_version(name, source=f"{art}/m", run_id=rid1)
    assert (mv.version, mv.source, mv.run_id) == ("1", f"{art}/m", rid1)


def test_copy_model_version(client, logged, uniq):
    """copy_model_version registers `models:/<src>/<v>` as the source of a new version."""
    src, dst = f"cpsrc-{uniq}", f"cpdst-{uniq}"
    rid, info = logged[3]
    client.create_registered_model(src)
    client.create_model_version(src, source=info.model_uri, run_id=rid, model_id=info.model_id)
    mv = client.copy_model_version(f"models:/{src}/1", dst)
    assert (mv.name, mv.version) == (dst, "1")
    assert mv.source == f"models:/{src}/1"
    assert mv.run_id == rid
    assert client.get_model_version_download_uri(dst, "1") == \
        client.get_model_version_download_uri(src, "1")
    assert _predict(f"models:/{dst}/1") == [4.0, 5.0, 6.0]


# ---------------------------------------------------------------- aliases


def test_aliases_set_move_delete(client, logged, uniq):
    name = f"alias-{uniq}"
    rid, info = logged[1]
    client.create_registered_model(name)
    for _ in range(3):
        client.create_model_version(name, source=info.model_uri, run_id=rid,
                                    model_id=info.model_id)
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "2")
    client.set_registered_model_alias(name, "also-two", "2")
    mv = client.get_model_version_by_alias(name, "champion")
    assert (mv.name, mv.version) == (name, "1")
    assert mv.aliases == ["champion"]
    assert sorted(client.get_model_version(name, "2").aliases) == ["also-two", "challenger"]
    assert client.get_model_version(name, "3").aliases == []
    assert client.get_registered_model(name).aliases == {
        "champion": "1", "challenger": "2", "also-two": "2"}

    # moving an alias: it leaves the old version
    client.set_registered_model_alias(name, "champion", "3")
    assert client.get_model_version_by_alias(name, "champion").version == "3"
    assert client.get_model_version(name, "1").aliases == []
    assert client.get_model_version(name, "3").aliases == ["champion"]

    # deleting
    client.delete_registered_model_alias(name, "champion")  # DELETE with a JSON body
    assert client.get_registered_model(name).aliases == {"challenger": "2", "also-two": "2"}
    # MLflow answers INVALID_PARAMETER_VALUE for an unknown alias; either code is a client error
    assert _code(client.get_model_version_by_alias, name, "champion") in (
        "INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST")
    # deleting an alias that is not set is a no-op
    client.delete_registered_model_alias(name, "champion")
    # the reserved alias "latest" names the highest version
    assert client.get_model_version_by_alias(name, "latest").version == "3"


def test_alias_errors(client, logged, uniq):
    name = f"aliaserr-{uniq}"
    rid, info = logged[1]
    client.create_registered_model(name)
    client.create_model_version(name, source=info.model_uri, run_id=rid,
                                    model_id=info.model_id)
    # an alias on a missing version or model
    assert _code(client.set_registered_model_alias, name, "a", "5") == "RESOURCE_DOES_NOT_EXIST"
    assert _code(client.set_registered_model_alias, f"nope-{uniq}", "a", "1") == \
        "RESOURCE_DOES_NOT_EXIST"
    assert _code(client.get_model_version_by_alias, f"nope-{uniq}", "a") == \
        "RESOURCE_DOES_NOT_EXIST"
    # reserved names: "latest" (any case) and version-like "v<digits>"
    for alias in ("latest", "LATEST", "v1", "V12"):
        assert _code(client.set_registered_model_alias, name, alias, "1") == \
            "INVALID_PARAMETER_VALUE", alias
    assert client.get_registered_model(name).aliases == {}


def test_aliases_hydrated_in_search_registered_models(client, logged, uniq):
    name = f"hydr-{uniq}"
    rid, info = logged[1]
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(name, source=info.model_uri, run_id=rid,
                                    model_id=info.model_id)
    client.set_registered_model_alias(name, "prod", "2")
    client.set_registered_model_alias(name, "old", "1")
    [rm] = client.search_registered_models(filter_string=f"name = '{name}'")
    assert rm.aliases == {"prod": "2", "old": "1"}


@skip_on_mlflow("search_model_versions returns empty aliases (mlflow#9783, protocol §4.9)")
def test_aliases_hydrated_in_search_model_versions(client, logged, uniq):
    name = f"hydrmv-{uniq}"
    rid, info = logged[1]
    client.create_registered_model(name)
    for _ in range(3):
        client.create_model_version(name, source=info.model_uri, run_id=rid,
                                    model_id=info.model_id)
    client.set_registered_model_alias(name, "prod", "2")
    client.set_registered_model_alias(name, "old", "1")
    client.set_registered_model_alias(name, "older", "1")
    got = {v.version: sorted(v.aliases)
           for v in client.search_model_versions(f"name = '{name}'")}
    assert got == {"1": ["old", "older"], "2": ["prod"], "3": []}


# ---------------------------------------------------------------- stages (deprecated, still used)


def test_stages_transition_and_latest_versions(client, logged, uniq):
    name = f"stage-{uniq}"
    rid, info = logged[1]
    client.create_registered_model(name)
    for _ in range(4):
        client.create_model_version(name, source=info.model_uri, run_id=rid,
                                    model_id=info.model_id)

    mv = client.transition_model_version_stage(name, "1", "Staging")
    assert (mv.version, mv.current_stage) == ("1", "Staging")
    # stage names are case-insensitive on input and canonical on output
    assert client.transition_model_version_stage(name, "2", "production").current_stage == \
        "Production"
    client.transition_model_version_stage(name, "3", "Staging")

    # latest per stage: highest version in each stage; "None" counts as a stage
    latest = {v.current_stage: v.version for v in client.get_latest_versions(name)}
    assert latest == {"Staging": "3", "Production": "2", "None": "4"}
    assert [(v.version, v.current_stage) for v in client.get_latest_versions(name, ["Staging"])] == \
        [("3", "Staging")]
    got = {(v.version, v.current_stage)
           for v in client.get_latest_versions(name, ["Staging", "Production"])}
    assert got == {("3", "Staging"), ("2", "Production")}
    assert client.get_latest_versions(name, ["Archived"]) == []
    rm = client.get_registered_model(name)
    assert {v.current_stage: v.version for v in rm.latest_versions} == latest

    # archive_existing_versions moves the others in the target stage to Archived
    mv = client.transition_model_version_stage(name, "4", "Staging", archive_existing_versions=True)
    assert mv.current_stage == "Staging"
    stages = {v.version: v.current_stage for v in client.search_model_versions(f"name='{name}'")}
    assert stages == {"1": "Archived", "2": "Production", "3": "Archived", "4": "Staging"}
    # without the flag, the others stay where they are
    client.transition_model_version_stage(name, "1", "Production")
    assert client.get_model_version(name, "2").current_stage == "Production"
    latest = {v.current_stage: v.version for v in client.get_latest_versions(name)}
    assert latest == {"Staging": "4", "Production": "2", "Archived": "3"}

    # back to None
    client.transition_model_version_stage(name, "1", "None")
    assert client.get_model_version(name, "1").current_stage == "None"


def test_stage_errors(client, logged, uniq):
    name = f"stageerr-{uniq}"
    rid, info = logged[1]
    client.create_registered_model(name)
    client.create_model_version(name, source=info.model_uri, run_id=rid,
                                    model_id=info.model_id)
    assert _code(client.transition_model_version_stage, name, "1", "Bogus") == \
        "INVALID_PARAMETER_VALUE"
    assert _code(client.transition_model_version_stage, name, "9", "Staging") == \
        "RESOURCE_DOES_NOT_EXIST"
    assert _code(client.get_latest_versions, f"nope-{uniq}") == "RESOURCE_DOES_NOT_EXIST"
    assert client.get_model_version(name, "1").current_stage == "None"


# ---------------------------------------------------------------- loading through the registry


def test_load_model_through_registry(client, logged, uniq, tmp_path):
    name = f"load-{uniq}"
    (rid1, info1), (rid2, info2) = logged[1], logged[2]
    mlflow.register_model(info1.model_uri, name)
    mlflow.register_model(info2.model_uri, name)
    assert _predict(f"models:/{name}/1") == [2.0, 3.0, 4.0]
    assert _predict(f"models:/{name}/2") == [3.0, 4.0, 5.0]
    client.set_registered_model_alias(name, "prod", "1")
    assert _predict(f"models:/{name}@prod") == [2.0, 3.0, 4.0]
    client.set_registered_model_alias(name, "prod", "2")  # move it: the URI follows
    assert _predict(f"models:/{name}@prod") == [3.0, 4.0, 5.0]
    client.transition_model_version_stage(name, "1", "Production")
    assert _predict(f"models:/{name}/Production") == [2.0, 3.0, 4.0]
    assert _predict(f"models:/{name}/latest") == [3.0, 4.0, 5.0]
    # and the files download through the registry URI
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/1",
                                                dst_path=str(tmp_path))
    assert any(p.name == "MLmodel" for p in tmp_path.rglob("*")), local


def test_load_missing_registry_uri(client, uniq):
    with pytest.raises(MlflowException) as ei:
        mlflow.pyfunc.load_model(f"models:/nope-{uniq}/1")
    assert error_code(ei.value) == "RESOURCE_DOES_NOT_EXIST"


# ---------------------------------------------------------------- errors


def test_unknown_registered_model(client, logged, uniq):
    rid, info = logged[1]
    missing = f"nope-{uniq}"
    assert _code(client.get_registered_model, missing) == "RESOURCE_DOES_NOT_EXIST"
    assert _code(client.update_registered_model, missing, description="x") == \
        "RESOURCE_DOES_NOT_EXIST"
    assert _code(client.delete_registered_model_tag, missing, "k") == "RESOURCE_DOES_NOT_EXIST"
    assert _code(client.create_model_version, missing, source=info.model_uri, run_id=rid,
                                    model_id=info.model_id) == \
        "RESOURCE_DOES_NOT_EXIST"
    assert _code(client.get_model_version, missing, "1") == "RESOURCE_DOES_NOT_EXIST"
    assert client.search_model_versions(f"name='{missing}'") == []
    with pytest.raises(MlflowException) as ei:
        client.get_registered_model(missing)
    assert ei.value.get_http_status_code() == 404


def test_bad_version_and_name(client, logged, uniq):
    name = f"badv-{uniq}"
    rid, info = logged[1]
    client.create_registered_model(name)
    client.create_model_version(name, source=info.model_uri, run_id=rid,
                                    model_id=info.model_id)
    assert _code(client.get_model_version, name, "not-a-number") == "INVALID_PARAMETER_VALUE"
    assert _code(client.get_model_version, name, "2") == "RESOURCE_DOES_NOT_EXIST"
    assert _code(client.create_registered_model, "") == "INVALID_PARAMETER_VALUE"
