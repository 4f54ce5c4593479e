//! Metric values come back bit for bit: doubles whose shortest decimal form needs 17 digits,
//! subnormals and the extremes, through JSON in and out and through both databases.

mod common;

use common::Backend;
use serde_json::json;

async fn values_round_trip_exactly(backend: Backend) {
    let Some(s) = common::start(backend).await else { return };
    let exp = s.create_experiment("precision").await;
    let run = s.create_run(&exp).await;
    let values = [1.0 / 11.0, 0.1 + 0.2, 2.0 / 3.0, 1e-300, 5e-324, 123456789.12345679, -0.5, f64::MAX, f64::MIN_POSITIVE];
    for (step, v) in values.iter().enumerate() {
        s.post("runs/log-metric", json!({"run_id": run, "key": "loss", "value": v, "timestamp": 1, "step": step})).await.ok();
    }
    let history = s.get("metrics/get-history", &[("run_id", &run), ("metric_key", "loss")]).await.ok();
    let got: Vec<f64> = history["metrics"].as_array().unwrap().iter().map(|m| m["value"].as_f64().unwrap()).collect();
    for (g, want) in got.iter().zip(values) {
        assert_eq!(g.to_bits(), want.to_bits(), "stored {want:e}, read back {g:e}");
    }
    assert_eq!(got.len(), values.len());
}

#[tokio::test]
async fn metric_values_round_trip_exactly_on_sqlite() {
    values_round_trip_exactly(Backend::Sqlite).await;
}

#[tokio::test]
async fn metric_values_round_trip_exactly_on_postgres() {
    values_round_trip_exactly(Backend::Postgres).await;
}
