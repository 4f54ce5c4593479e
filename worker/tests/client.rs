//! `TrackerClient` against the real tracker served in-process on `127.0.0.1:0` (temp SQLite store,
//! temp artifact root), plus a few canned-reply servers for the retry and auth paths.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use worker::{metric, ClientError, RetryPolicy, RunStatus, TrackerClient};

/// A tracker on `127.0.0.1:0`; stops when dropped.
struct Tracker {
    base: String,
    artifact_root: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    // Last: the files go after the server has been told to stop.
    _dir: tempfile::TempDir,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn start_tracker() -> Tracker {
    use tracker::store::{BackendUri, Store};
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&BackendUri::Sqlite(dir.path().join("mlflow.db"))).await.expect("open sqlite store");
    let artifact_root = dir.path().join("artifacts");
    let artifacts = tracker::artifacts::Artifacts::open(artifact_root.to_str().expect("utf-8 temp path")).expect("artifact root");
    let state = tracker::AppState::new(store, artifacts, tracker::auth::Auth::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tracker::serve(listener, tracker::router(state), async {
        let _ = rx.await;
    }));
    Tracker { base: format!("http://{addr}"), artifact_root, shutdown: Some(tx), _dir: dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_tracking_flow_against_the_real_tracker() {
    let server = start_tracker().await;
    let client = TrackerClient::new(&server.base).expect("client");

    // Experiment get-or-create is idempotent.
    let exp = client.get_or_create_experiment("worker-client").await.expect("create experiment");
    assert_eq!(exp.name, "worker-client");
    assert_eq!(exp.lifecycle_stage, "active");
    let again = client.get_or_create_experiment("worker-client").await.expect("get experiment");
    assert_eq!(again.experiment_id, exp.experiment_id);
    assert!(client.get_experiment_by_name("no-such-experiment").await.expect("lookup").is_none());

    // Run.
    let run = client.create_run(&exp.experiment_id, Some("trial-1"), [("study", "s1"), ("mlflow.user", "tester")]).await.expect("create run");
    let run_id = run.info.run_id.clone();
    assert_eq!(run.info.run_name, "trial-1");
    assert_eq!(run.info.status, "RUNNING");
    assert_eq!(run.info.experiment_id, exp.experiment_id);
    assert_eq!(run.info.user_id, "tester");
    assert_eq!(run.info.artifact_uri, format!("mlflow-artifacts:/{}/{run_id}/artifacts", exp.experiment_id));

    // Params (more than one batch's worth), a single param, a tag.
    let params: Vec<(String, String)> = (0..150).map(|i| (format!("p{i:03}"), format!("v{i}"))).collect();
    client.log_params(&run_id, params.clone()).await.expect("log 150 params");
    client.log_param(&run_id, "lr", "0.001").await.expect("log param");
    client.log_param(&run_id, "lr", "0.001").await.expect("same param value again is accepted");
    client.set_tag(&run_id, "phase", "warmup").await.expect("set tag");
    client.set_tag(&run_id, "phase", "train").await.expect("overwrite tag");

    // 2500 metric points: three log-batch calls; history in order across several pages.
    let points: Vec<_> = (0..2500i64)
        .map(|step| {
            let mut m = metric("loss", 1.0 / (step + 1) as f64, step);
            m.timestamp = 1_700_000_000_000 + step;
            m
        })
        .collect();
    client.log_batch(&run_id, &points, &[], &[worker::tag("batch", "yes")]).await.expect("log 2500 metrics");
    client.log_metric(&run_id, "nan_metric", f64::NAN, 0).await.expect("log NaN");
    let history = client.metric_history(&run_id, "loss").await.expect("history");
    assert_eq!(history.len(), 2500);
    for (i, m) in history.iter().enumerate() {
        assert_eq!((m.key.as_str(), m.step, m.timestamp, m.value), ("loss", i as i64, 1_700_000_000_000 + i as i64, 1.0 / (i + 1) as f64), "point {i}");
    }
    let paged = client.metric_history_paged(&run_id, "loss", 700).await.expect("paged history");
    assert_eq!(paged, history, "following page tokens (700 per page) gives the same history");
    assert!(client.metric_history(&run_id, "no-such-key").await.expect("unknown key").is_empty());
    let nan = client.metric_history(&run_id, "nan_metric").await.expect("nan history");
    assert_eq!(nan.len(), 1);
    assert!(nan[0].value.is_nan());

    let got = client.get_run(&run_id).await.expect("get run");
    let param = |k: &str| got.data.params.iter().find(|p| p.key == k).map(|p| p.value.clone());
    assert_eq!(got.data.params.len(), 151);
    assert_eq!(param("p000").as_deref(), Some("v0"));
    assert_eq!(param("p149").as_deref(), Some("v149"));
    assert_eq!(param("lr").as_deref(), Some("0.001"));
    let tag = |k: &str| got.data.tags.iter().find(|t| t.key == k).map(|t| t.value.clone());
    assert_eq!(tag("phase").as_deref(), Some("train"));
    assert_eq!(tag("study").as_deref(), Some("s1"));
    assert_eq!(tag("batch").as_deref(), Some("yes"));
    let latest = got.data.metrics.iter().find(|m| m.key == "loss").expect("latest loss");
    assert_eq!(latest.step, 2499);

    // Artifact round trip: a 5 MiB (+ odd tail) file of non-repeating bytes, streamed both ways.
    let work = tempfile::tempdir().expect("temp dir");
    let src = work.path().join("checkpoint.bin");
    let size = 5 * 1024 * 1024 + 12_345;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    std::fs::write(&src, &data).expect("write source file");
    client.upload_artifact(&run_id, &src, "checkpoints/step 100/model.bin").await.expect("upload");
    let on_disk = server.artifact_root.join(&exp.experiment_id).join(&run_id).join("artifacts/checkpoints/step 100/model.bin");
    assert_eq!(std::fs::metadata(&on_disk).expect("stored file").len(), size as u64, "stored at the MLflow layout");
    let dest = work.path().join("downloaded/model.bin");
    let n = client.download_artifact(&run_id, "checkpoints/step 100/model.bin", &dest).await.expect("download");
    assert_eq!(n, size as u64);
    assert!(std::fs::read(&dest).expect("read download") == data, "downloaded bytes differ from the upload");
    assert!(!work.path().join("downloaded/.model.bin.part").exists(), "temporary file left behind");
    let missing = client.download_artifact(&run_id, "nope.bin", &work.path().join("nope.bin")).await.expect_err("missing artifact");
    assert!(missing.is_not_found(), "{missing:?}");
    assert!(!work.path().join("nope.bin").exists());
    assert!(matches!(client.upload_artifact(&run_id, &src, "../escape.bin").await, Err(ClientError::InvalidArgument(_))));

    // End the run.
    let info = client.set_terminated(&run_id, RunStatus::Finished).await.expect("terminate");
    assert_eq!(info.status, "FINISHED");
    assert!(info.end_time.is_some_and(|t| t >= info.start_time));
    assert_eq!(client.get_run(&run_id).await.expect("get run").info.status.parse::<RunStatus>(), Ok(RunStatus::Finished));

    // Errors carry MLflow's codes.
    let err = client.get_run("0123456789abcdef0123456789abcdef").await.expect_err("unknown run");
    assert_eq!(err.error_code(), Some("RESOURCE_DOES_NOT_EXIST"), "{err:?}");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
    assert!(!err.is_transient());
    let err = client.log_param(&run_id, "lr", "0.1").await.expect_err("param change");
    assert_eq!(err.error_code(), Some("INVALID_PARAMETER_VALUE"), "{err:?}");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(400));
    assert!(matches!(&err, ClientError::Api { message, .. } if !message.is_empty()));
    let err = client.log_params(&run_id, [("p000", "changed")]).await.expect_err("param change in a batch");
    assert_eq!(err.error_code(), Some("INVALID_PARAMETER_VALUE"), "{err:?}");
    let err = client.log_metric("0123456789abcdef0123456789abcdef", "loss", 1.0, 0).await.expect_err("metric on unknown run");
    assert!(err.is_not_found(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_get_or_create_yields_one_experiment() {
    let server = start_tracker().await;
    let client = TrackerClient::new(&server.base).expect("client");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.get_or_create_experiment("raced").await })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("task").expect("get or create").experiment_id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every caller gets the same experiment: {ids:?}");
}

/// A server that answers each connection with the next canned response (one request per
/// connection) and records the request heads it saw.
async fn canned_server(replies: Vec<&'static str>) -> (String, tokio::task::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let handle = tokio::spawn(async move {
        let mut heads = Vec::new();
        for reply in replies {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut chunk).await.expect("read");
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            heads.push(String::from_utf8_lossy(&buf).into_owned());
            sock.write_all(reply.as_bytes()).await.expect("write");
            sock.shutdown().await.ok();
        }
        heads
    });
    (base, handle)
}

const UNAVAILABLE: &str = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 66\r\n\r\n{\"error_code\":\"TEMPORARILY_UNAVAILABLE\",\"message\":\"database busy\"}";
const THROTTLED: &str = "HTTP/1.1 429 Too Many Requests\r\nretry-after: 0\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

fn fast_retries(n: u32) -> RetryPolicy {
    RetryPolicy { max_retries: n, initial_backoff: Duration::from_millis(5), max_backoff: Duration::from_millis(20) }
}

#[tokio::test]
async fn retries_503_and_429_then_succeeds_with_credentials() {
    let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}";
    let (base, server) = canned_server(vec![UNAVAILABLE, THROTTLED, ok]).await;
    let client = TrackerClient::new(&base).expect("client").with_token("secret-token").with_retry(fast_retries(3));
    client.set_tag("r1", "k", "v").await.expect("third attempt succeeds");
    let heads = server.await.expect("server");
    assert_eq!(heads.len(), 3);
    for head in &heads {
        assert!(head.starts_with("POST /api/2.0/mlflow/runs/set-tag "), "{head}");
        assert!(head.to_ascii_lowercase().contains("authorization: bearer secret-token"), "{head}");
    }
}

#[tokio::test]
async fn retries_are_bounded_and_other_errors_are_not_retried() {
    // 503 three times with two retries allowed: the third 503 is returned, typed.
    let (base, server) = canned_server(vec![UNAVAILABLE, UNAVAILABLE, UNAVAILABLE]).await;
    let client = TrackerClient::new(&base).expect("client").with_retry(fast_retries(2));
    let err = client.get_run("r1").await.expect_err("still unavailable");
    assert_eq!(err.error_code(), Some("TEMPORARILY_UNAVAILABLE"));
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));
    assert!(err.is_transient());
    assert_eq!(server.await.expect("server").len(), 3);

    // A 500 with a non-JSON body is returned at once, with a code derived from the status.
    let broken = "HTTP/1.1 500 Internal Server Error\r\nconnection: close\r\ncontent-length: 7\r\n\r\nboom!!!";
    let (base, server) = canned_server(vec![broken]).await;
    let client = TrackerClient::new(&base).expect("client").with_retry(fast_retries(3));
    let err = client.get_run("r1").await.expect_err("500");
    assert!(matches!(&err, ClientError::Api { error_code, message, .. } if error_code == "INTERNAL_ERROR" && message == "boom!!!"), "{err:?}");
    assert_eq!(server.await.expect("server").len(), 1, "a 500 is not retried");

    // Basic credentials from the MLflow variables.
    let ok = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
    let (base, server) = canned_server(vec![ok]).await;
    let vars = [("MLFLOW_TRACKING_URI", base.as_str()), ("MLFLOW_TRACKING_USERNAME", "alice"), ("MLFLOW_TRACKING_PASSWORD", "pw")];
    let client = TrackerClient::from_vars(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())).expect("client");
    client.set_tag("r1", "k", "v").await.expect("empty 200 body reads as {}");
    let heads = server.await.expect("server");
    // base64("alice:pw") = YWxpY2U6cHc=
    assert!(heads[0].to_ascii_lowercase().contains("authorization: basic ywxpy2u6chc="), "{}", heads[0]);
}

#[tokio::test]
async fn connection_refused_is_retried_then_reported_as_transport() {
    // Bind and drop to get a port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr").port();
    let client = TrackerClient::new(&format!("http://127.0.0.1:{port}")).expect("client").with_retry(fast_retries(2));
    let started = std::time::Instant::now();
    let err = client.get_run("r1").await.expect_err("nothing listens");
    assert!(matches!(&err, ClientError::Transport(e) if e.is_connect()), "{err:?}");
    assert!(err.is_transient());
    // Two backoff waits (5 ms, 10 ms) happened.
    assert!(started.elapsed() >= Duration::from_millis(15));
}
