"""Datasets (log_input) and logged models (pyfunc log_model / load_model) through the
unmodified mlflow client (protocol reference §1.3). The registry is in test_registry.py."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from compat_util import error_code


class AddN(mlflow.pyfunc.PythonModel):
    def __init__(self, n):
        self.n = n

    def predict(self, context, model_input, params=None):
        return model_input.apply(lambda col: col + self.n)


def _log_model(n=1, name="m"):
    # pip_requirements given so that the client does not infer them in a subprocess
    return mlflow.pyfunc.log_model(name=name, python_model=AddN(n),
                                   pip_requirements=["mlflow==3.17.2"])


def _predict_df():
    return pd.DataFrame({"x": [1.0, 2.0, 3.0]})


# ---------------------------------------------------------------- datasets


def test_log_input_pandas_dataset(client, experiment_id):
    df = pd.DataFrame({"a": [1, 2, 3], "b": [0.1, 0.2, 0.3], "y": [0, 1, 0]})
    ds = mlflow.data.from_pandas(df, name="train-ds", targets="y")
    with mlflow.start_run() as run:
        mlflow.log_input(ds, context="training", tags={"extra": "t"})
    got = client.get_run(run.info.run_id)
    inputs = got.inputs.dataset_inputs
    assert len(inputs) == 1
    d = inputs[0].dataset
    assert d.name == "train-ds"
    assert d.digest == ds.digest
    assert d.source_type == ds.source._get_source_type()
    assert json.loads(d.schema)["mlflow_colspec"]
    assert json.loads(d.profile)["num_rows"] == 3
    tags = {t.key: t.value for t in inputs[0].tags}
    assert tags["mlflow.data.context"] == "training"
    assert tags["extra"] == "t"
    # logging the same dataset again does not duplicate it
    with mlflow.start_run(run_id=run.info.run_id):
        mlflow.log_input(ds, context="training")
    assert len(client.get_run(run.info.run_id).inputs.dataset_inputs) == 1


def test_log_input_numpy_two_datasets(client, experiment_id):
    a = mlflow.data.from_numpy(np.arange(12, dtype=np.float64).reshape(4, 3), name="np-train")
    b = mlflow.data.from_numpy(np.ones((2, 2)), name="np-eval")
    with mlflow.start_run() as run:
        mlflow.log_input(a, context="training")
        mlflow.log_input(b, context="eval")
    got = client.get_run(run.info.run_id).inputs.dataset_inputs
    by_name = {di.dataset.name: di for di in got}
    assert set(by_name) == {"np-train", "np-eval"}
    assert by_name["np-train"].dataset.digest == a.digest
    ctx = {t.key: t.value for t in by_name["np-eval"].tags}["mlflow.data.context"]
    assert ctx == "eval"
    # search_runs returns inputs too
    runs = client.search_runs([experiment_id])
    assert {di.dataset.name for di in runs[0].inputs.dataset_inputs} == {"np-train", "np-eval"}


# ---------------------------------------------------------------- logged models


def test_pyfunc_log_and_load_model(client, experiment_id, tmp_path):
    with mlflow.start_run() as run:
        mlflow.log_metric("acc", 0.9, step=1)
        info = _log_model(n=10)
    assert info.model_id.startswith("m-")
    assert info.model_uri == f"models:/{info.model_id}"
    lm = client.get_logged_model(info.model_id)
    assert lm.status.to_proto() == 2 or str(lm.status).endswith("READY")
    assert lm.experiment_id == experiment_id
    assert lm.source_run_id == run.info.run_id
    assert lm.name == "m"
    assert lm.artifact_location == f"mlflow-artifacts:/{experiment_id}/models/{info.model_id}/artifacts"
    # the run records the model as an output
    outs = client.get_run(run.info.run_id).outputs.model_outputs
    assert [o.model_id for o in outs] == [info.model_id]
    # load back and predict, by models:/<model_id> and by runs:/<run_id>/<name>
    model = mlflow.pyfunc.load_model(info.model_uri)
    out = model.predict(_predict_df())
    assert list(out["x"]) == [11.0, 12.0, 13.0]
    by_run = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/m")
    assert list(by_run.predict(_predict_df())["x"]) == [11.0, 12.0, 13.0]
    assert by_run.metadata.model_id == info.model_id
    # and the artifacts are downloadable as a folder
    local = mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri, dst_path=str(tmp_path))
    assert (tmp_path / "MLmodel").exists() or any(p.name == "MLmodel" for p in tmp_path.rglob("*"))
    assert local


def test_search_logged_models(client, experiment_id):
    with mlflow.start_run():
        info = _log_model(n=1, name="searchable")
    found = client.search_logged_models(experiment_ids=[experiment_id])
    assert info.model_id in {m.model_id for m in found}


def test_sklearn_log_model_if_available(client, experiment_id):
    sklearn = pytest.importorskip("sklearn")
    from sklearn.linear_model import LinearRegression

    X = np.array([[0.0], [1.0], [2.0]])
    y = np.array([1.0, 3.0, 5.0])
    m = LinearRegression().fit(X, y)
    with mlflow.start_run():
        mlflow.log_metric("r2", 1.0)
        info = mlflow.sklearn.log_model(m, name="lr")
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    assert np.allclose(loaded.predict(np.array([[3.0]])), [7.0])
    assert sklearn


def test_logged_model_params_tags_metrics(client, experiment_id):
    with mlflow.start_run() as run:
        mlflow.log_metric("acc", 0.5, step=0)
        mlflow.log_metric("acc", 0.75, step=1)
        info = mlflow.pyfunc.log_model(name="tagged", python_model=AddN(3),
                                       pip_requirements=["mlflow==3.17.2"],
                                       params={"lr": "0.1", "depth": 4},
                                       tags={"team": "a"}, model_type="adder", step=1)
    lm = client.get_logged_model(info.model_id)
    assert lm.params == {"lr": "0.1", "depth": "4"}
    assert lm.tags["team"] == "a"
    assert lm.model_type == "adder"
    assert lm.source_run_id == run.info.run_id
    assert lm.creation_timestamp and lm.last_updated_timestamp >= lm.creation_timestamp
    # log_model links the run's metrics to the model (log-batch with model_id)
    assert {(m.key, m.value, m.step) for m in lm.metrics} >= {("acc", 0.75, 1)}
    assert all(m.model_id == info.model_id for m in lm.metrics)
    # the run records the model as an output at the given step
    outs = client.get_run(run.info.run_id).outputs.model_outputs
    assert [(o.model_id, o.step) for o in outs] == [(info.model_id, 1)]

    client.set_logged_model_tags(info.model_id, {"team": "b", "extra": "x"})
    assert {k: v for k, v in client.get_logged_model(info.model_id).tags.items()
            if not k.startswith("mlflow.")} == {"team": "b", "extra": "x"}
    client.delete_logged_model_tag(info.model_id, "extra")
    assert "extra" not in client.get_logged_model(info.model_id).tags


def test_log_metric_with_model_id(client, experiment_id):
    with mlflow.start_run():
        info = _log_model(n=1, name="metric-target")
        mlflow.log_metric("val_loss", 0.25, step=3, model_id=info.model_id)
    lm = client.get_logged_model(info.model_id)
    assert [(m.key, m.value, m.step) for m in lm.metrics if m.key == "val_loss"] == [
        ("val_loss", 0.25, 3)]


def test_search_logged_models_filter(client, experiment_id):
    with mlflow.start_run() as run:
        a = _log_model(n=1, name="alpha")
        b = _log_model(n=2, name="beta")
    found = client.search_logged_models(experiment_ids=[experiment_id],
                                        filter_string="name = 'beta'")
    assert [m.model_id for m in found] == [b.model_id]
    found = client.search_logged_models(
        experiment_ids=[experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'")
    assert {m.model_id for m in found} == {a.model_id, b.model_id}
    # the fluent variant returns a DataFrame (or a list)
    models = mlflow.search_logged_models(experiment_ids=[experiment_id], output_format="list")
    assert {a.model_id, b.model_id} <= {m.model_id for m in models}


def test_create_finalize_logged_model_by_hand(client, experiment_id):
    lm = client.create_logged_model(experiment_id, name="manual", params={"p": "1"},
                                    tags={"t": "v"})
    assert lm.model_id.startswith("m-")
    assert str(lm.status).endswith("PENDING")
    assert lm.artifact_location == f"mlflow-artifacts:/{experiment_id}/models/{lm.model_id}/artifacts"
    done = client.finalize_logged_model(lm.model_id, "READY")
    assert str(done.status).endswith("READY")
    assert str(client.get_logged_model(lm.model_id).status).endswith("READY")


def test_unknown_logged_model(client):
    with pytest.raises(MlflowException) as ei:
        client.get_logged_model("m-" + "0" * 32)
    assert error_code(ei.value) == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException):
        mlflow.pyfunc.load_model("models:/m-" + "0" * 32)
