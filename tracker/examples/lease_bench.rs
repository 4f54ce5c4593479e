//! Lease and report round trips of many simulated workers against one study.
//!
//! ```sh
//! cargo run --release -p tracker --example lease_bench -- --workers 1000 --seconds 30
//! cargo run --release -p tracker --example lease_bench -- --backend postgresql://postgres@127.0.0.1:55432/postgres
//! ```
//!
//! Starts the tracker on 127.0.0.1 on its own runtime in this process (a temp SQLite file and
//! artifact folder, or a fresh database on the given Postgres server), creates a study with ASHA,
//! registers `--workers` simulated workers, then runs them over real HTTP: each leases a trial,
//! reports one step every `--step-ms` (with jitter, so workers do not beat in lockstep), follows
//! the decision, and completes the trial at the maximum resource. Prints p50, p99 and max latency per call and the
//! trials scheduled per second, and the server's own latency quantiles from its `/metrics`
//! histogram. Client and server share the machine's cores.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};
use tracker::artifacts::Artifacts;
use tracker::auth::Auth;
use tracker::store::{BackendUri, Store};
use tracker::studies::LeaseTiming;
use tracker::AppState;

struct Args {
    backend: Option<String>,
    workers: usize,
    seconds: u64,
    step_ms: u64,
}

fn args() -> Args {
    let mut a = Args { backend: None, workers: 1000, seconds: 30, step_ms: 1000 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--backend" => a.backend = Some(value()),
            "--workers" => a.workers = value().parse().expect("--workers N"),
            "--seconds" => a.seconds = value().parse().expect("--seconds N"),
            "--step-ms" => a.step_ms = value().parse().expect("--step-ms N"),
            other => panic!("unknown flag {other}; use --backend URL, --workers N, --seconds N, --step-ms N"),
        }
    }
    a
}

#[derive(Default)]
struct Latencies {
    lease: Vec<f64>,
    report: Vec<f64>,
    complete: Vec<f64>,
}

fn summary(name: &str, v: &mut [f64]) {
    if v.is_empty() {
        println!("{name:<9} no calls");
        return;
    }
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    println!("{name:<9} {:>8} calls  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms", v.len(), q(0.5), q(0.99), v[v.len() - 1]);
}

async fn open_store(backend: &Option<String>, dir: &std::path::Path) -> Store {
    match backend {
        None => Store::open(&BackendUri::Sqlite(dir.join("bench.db"))).await.expect("sqlite store"),
        Some(admin) => {
            let name = database_name();
            drop_database(admin).await;
            sqlx::query(&format!("create database \"{name}\"")).execute(&mut admin_connection(admin).await).await.expect("create database");
            let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
            Store::open(&BackendUri::Postgres(format!("{base}/{name}"))).await.expect("postgres store")
        }
    }
}

/// Starts the tracker on its own runtime (two worker threads, as `tracker serve` has on this
/// machine) in a thread of this process, and returns its base URL. The simulated workers run on
/// the main runtime, so their tasks do not queue in the server's scheduler; they still share
/// the machine's cores with it.
fn start_server(backend: Option<String>, dir: std::path::PathBuf) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("server runtime");
        rt.block_on(async move {
            let store = open_store(&backend, &dir).await;
            let artifacts = Artifacts::open(dir.join("artifacts").to_str().unwrap()).expect("artifacts");
            let state = AppState::with_lease_timing(store, artifacts, Auth::default(), LeaseTiming { lease_ttl: Duration::from_secs(60) });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(format!("http://{}", listener.local_addr().unwrap())).unwrap();
            tracker::serve(listener, tracker::router(state), std::future::pending()).await
        })
    });
    rx.recv().expect("server started")
}

/// The server's own view of a route's latency, from its `/metrics` histogram: the upper bounds
/// of the buckets that hold the median and the 99th percentile.
fn server_quantiles(metrics: &str, route_suffix: &str) -> Option<(f64, f64)> {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in metrics.lines().filter(|l| l.starts_with("tracker_http_request_duration_seconds_bucket{")) {
        let route = line.split("route=\"").nth(1)?.split('"').next()?;
        if !route.ends_with(route_suffix) {
            continue;
        }
        let le = line.split("le=\"").nth(1)?.split('"').next()?;
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
        let count: f64 = line.rsplit(' ').next()?.parse().ok()?;
        match buckets.iter_mut().find(|b| b.0 == le) {
            Some(b) => b.1 += count,
            None => buckets.push((le, count)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    let at = |q: f64| buckets.iter().find(|b| b.1 >= q * total).map(|b| b.0 * 1e3);
    Some((at(0.5)?, at(0.99)?))
}

#[tokio::main]
async fn main() {
    let a = args();
    // Owned here, so the database and artifacts are removed when the bench ends (the server's
    // thread never returns).
    let dir = tempfile::tempdir().expect("temp dir");
    let base = start_server(a.backend.clone(), dir.path().to_owned());
    let metrics_url = format!("{base}/metrics");

    let client = reqwest::Client::builder().pool_max_idle_per_host(a.workers).build().unwrap();
    let post = move |path: &str, body: Value| {
        let (client, url) = (client.clone(), format!("{base}/api/tracker/{path}"));
        async move {
            let t = Instant::now();
            let r = client.post(url).json(&body).send().await.expect("request");
            let status = r.status();
            let body: Value = r.json().await.expect("json body");
            assert!(status.is_success(), "{status}: {body}");
            (body, t.elapsed().as_secs_f64() * 1e3)
        }
    };
    let spec = json!({
        "name": "bench",
        "objective": {"metric": "loss", "direction": "minimize"},
        "space": {"lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": true}, "rank": {"type": "categorical", "choices": [4, 8, 16, 32]}},
        "sampler": "random",
        "scheduler": {"kind": "asha", "min_resource": 1, "max_resource": 9, "reduction_factor": 3},
        "max_trials": 1_000_000,
        "run": {"command": ["true"]}
    });
    post("studies/create", json!({ "spec": spec })).await;

    // Workers register before the measured phase: 1,000 agents registering in the same
    // millisecond is a start-up burst, not the steady lease and report traffic measured here.
    let registered: Vec<_> = (0..a.workers).map(|w| tokio::spawn(post.clone()("workers/register", json!({"worker_id": format!("bench-{w}")})))).collect();
    for r in registered {
        r.await.expect("register");
    }

    let lat: Arc<Mutex<Latencies>> = Arc::default();
    let trials_done: Arc<Mutex<u64>> = Arc::default();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for w in 0..a.workers {
        let (post, lat, trials_done) = (post.clone(), lat.clone(), trials_done.clone());
        let step_ms = a.step_ms;
        tasks.push(tokio::spawn(async move {
            let id = format!("bench-{w}");
            // Spread the first leases over one step.
            let first: u64 = rand::rng().random_range(0..step_ms.max(1));
            tokio::time::sleep(Duration::from_millis(first)).await;
            while Instant::now() < deadline {
                let (l, ms) = post("workers/lease", json!({"worker_id": id})).await;
                lat.lock().unwrap().lease.push(ms);
                let Some(asg) = l.get("assignment").cloned() else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let (n, lease_id) = (asg["trial"].as_u64().unwrap(), asg["lease_id"].as_str().unwrap().to_owned());
                let lr = asg["params"]["lr"].as_f64().unwrap();
                let mut stopped = false;
                for step in 1..=9u64 {
                    let jitter: u64 = rand::rng().random_range(step_ms / 2..=step_ms * 3 / 2 + 1);
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                    let value = (lr.log10() + 3.0).powi(2) + 1.0 / step as f64;
                    let (r, ms) = post(&format!("studies/bench/trials/{n}/report"), json!({"lease_id": lease_id, "step": step, "value": value})).await;
                    lat.lock().unwrap().report.push(ms);
                    if r["decision"] != "continue" {
                        stopped = true;
                        break;
                    }
                }
                if !stopped {
                    let (_, ms) = post(&format!("studies/bench/trials/{n}/complete"), json!({"lease_id": lease_id})).await;
                    lat.lock().unwrap().complete.push(ms);
                }
                *trials_done.lock().unwrap() += 1;
            }
        }));
    }
    for t in tasks {
        t.await.expect("worker task");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut l = std::mem::take(&mut *lat.lock().unwrap());
    let backend = a.backend.as_deref().map_or("sqlite", |_| "postgres");
    println!("{backend}: {} workers, {:.0} s, one report per worker every ~{} ms", a.workers, elapsed, a.step_ms);
    summary("lease", &mut l.lease);
    summary("report", &mut l.report);
    summary("complete", &mut l.complete);
    let metrics = reqwest::get(&metrics_url).await.expect("metrics").text().await.expect("metrics body");
    for (name, suffix) in [("lease", "workers/lease"), ("report", "/report")] {
        if let Some((p50, p99)) = server_quantiles(&metrics, suffix) {
            println!("{name:<9} in the server (histogram bucket bounds): p50 <= {p50:.1} ms  p99 <= {p99:.1} ms");
        }
    }
    let calls = l.lease.len() + l.report.len() + l.complete.len();
    let done = *trials_done.lock().unwrap();
    println!("trials finished {done} ({:.1}/s), protocol calls {calls} ({:.0}/s)", done as f64 / elapsed, calls as f64 / elapsed);
    if let Some(admin) = &a.backend {
        // Left behind, each run's database adds to the server's autovacuum rounds and slows the
        // runs after it.
        drop_database(admin).await;
    }
}

/// The database this run creates on the `--backend` server, and drops at the end.
fn database_name() -> String {
    format!("lease_bench_{}", std::process::id())
}

async fn admin_connection(admin: &str) -> sqlx::AnyConnection {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(admin).await.expect("connect to Postgres")
}

/// Drops this run's database if it exists; `force` closes the connections still open to it (the
/// tracker's pool, at the end of a run).
async fn drop_database(admin: &str) {
    let sql = format!("drop database if exists \"{}\" with (force)", database_name());
    if let Err(e) = sqlx::query(&sql).execute(&mut admin_connection(admin).await).await {
        eprintln!("could not drop the bench database: {e}");
    }
}
