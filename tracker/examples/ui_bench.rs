//! Speed of the web UI's two heavy pages, over real HTTP on 127.0.0.1:
//!
//! * the runs page of an experiment holding 10,000 runs, with 20 columns (10 params, 10 metrics),
//!   at the default page size (100 runs) and at the largest (1,000 runs);
//! * the chart of one metric with 1,000,000 points, by step and by time;
//! * the chart of the longest history still read by a scan of its points (102,000 points: fewer
//!   than 400 blocks of 256).
//!
//! ```sh
//! cargo run --release -p tracker --example ui_bench -- --runs 10000 --points 1000000 --repeat 30
//! ```
//!
//! Seeds a temp SQLite store through the store API (not timed), starts the server in this process,
//! then times the first GET of each page, and `--repeat` GETs after two warm-up requests (median,
//! p95, max), in milliseconds, with the targets: 200 ms for the runs page, 300 ms for the chart.
//! A chart of a long history reads the metric's blocks (summaries of 256 points kept while
//! logging), so its first draw costs what later ones do.

use std::time::{Duration, Instant};

use tracker::artifacts::Artifacts;
use tracker::auth::Auth;
use tracker::store::runs::{NewMetric, NewRun};
use tracker::store::{BackendUri, Store};
use tracker::AppState;

struct Args {
    runs: usize,
    points: usize,
    repeat: usize,
}

fn args() -> Args {
    let mut a = Args { runs: 10_000, points: 1_000_000, repeat: 30 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => a.runs = value.parse().expect("--runs N"),
            "--points" => a.points = value.parse().expect("--points N"),
            "--repeat" => a.repeat = value.parse().expect("--repeat N"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// Points of the longest history in logging order that a chart reads by a scan: 399 blocks,
/// one short of the 400 (half the chart's spans) from which it reads the blocks.
const SCANNED_POINTS: i64 = 102_000;

fn metric(key: &str, value: f64, step: i64) -> NewMetric {
    NewMetric { key: key.into(), value, timestamp: 1_700_000_000_000 + step, step, dataset_name: None, dataset_digest: None, model_id: None }
}

/// (first request, median, p95, max, bytes): the first is timed apart, since it meets cold
/// caches.
async fn time_get(client: &reqwest::Client, url: &str, repeat: usize) -> (Duration, Duration, Duration, Duration, usize) {
    let t = Instant::now();
    let mut bytes = client.get(url).send().await.expect("GET").error_for_status().expect("200").bytes().await.expect("body").len();
    let first = t.elapsed();
    for _ in 0..2 {
        bytes = client.get(url).send().await.expect("GET").error_for_status().expect("200").bytes().await.expect("body").len();
    }
    let mut times = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let t = Instant::now();
        let body = client.get(url).send().await.expect("GET").error_for_status().expect("200").bytes().await.expect("body");
        times.push(t.elapsed());
        bytes = body.len();
    }
    times.sort();
    (first, times[times.len() / 2], times[(times.len() * 95).div_ceil(100) - 1], times[times.len() - 1], bytes)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&BackendUri::Sqlite(dir.path().join("ui.db"))).await.expect("open store");
    let seeding = Instant::now();
    let exp = store.create_experiment("ui-bench", None, &[]).await.expect("experiment");
    for i in 0..a.runs {
        let run = store
            .create_run(NewRun { experiment_id: exp.clone(), user_id: "bench".into(), run_name: Some(format!("run-{i}")), start_time: Some(1_700_000_000_000 + i as i64), tags: Vec::new() })
            .await
            .expect("run");
        let params: Vec<(String, String)> = (0..10).map(|p| (format!("p{p}"), format!("{}", (i * 7 + p) % 97))).collect();
        let metrics: Vec<NewMetric> = (0..10).map(|m| metric(&format!("m{m}"), ((i * 13 + m) % 1000) as f64 / 7.0, 1)).collect();
        store.log_batch(&run.info.run_id, &metrics, &params, &[]).await.expect("log batch");
    }
    let big = store
        .create_run(NewRun { experiment_id: exp.clone(), user_id: "bench".into(), run_name: Some("long".into()), start_time: None, tags: Vec::new() })
        .await
        .expect("run");
    for chunk in (0..a.points).collect::<Vec<_>>().chunks(20_000) {
        let batch: Vec<NewMetric> = chunk.iter().map(|&s| metric("loss", 2.0 / (1.0 + s as f64 / 1000.0) + ((s * 7919) % 100) as f64 / 1000.0, s as i64)).collect();
        store.log_batch(&big.info.run_id, &batch, &[], &[]).await.expect("log points");
    }
    let scanned = store
        .create_run(NewRun { experiment_id: exp.clone(), user_id: "bench".into(), run_name: Some("scanned".into()), start_time: None, tags: Vec::new() })
        .await
        .expect("run");
    for chunk in (0..SCANNED_POINTS).collect::<Vec<_>>().chunks(20_000) {
        let batch: Vec<NewMetric> = chunk.iter().map(|&s| metric("loss", 1.0 / (1.0 + s as f64), s)).collect();
        store.log_batch(&scanned.info.run_id, &batch, &[], &[]).await.expect("log points");
    }
    eprintln!("seeded {} runs and a {}-point metric in {:.1} s", a.runs, a.points, seeding.elapsed().as_secs_f64());

    let root = dir.path().join("artifacts");
    std::fs::create_dir_all(&root).expect("artifact root");
    let artifacts = Artifacts::open(root.to_str().expect("utf-8")).expect("artifacts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(tracker::serve(listener, tracker::router(AppState::new(store, artifacts, Auth::default())), std::future::pending()));
    let client = reqwest::Client::new();

    let columns = "params=p0,p1,p2,p3,p4,p5,p6,p7,p8,p9&metrics=m0,m1,m2,m3,m4,m5,m6,m7,m8,m9";
    let pages = [
        ("runs page, 100 of the runs, 20 columns", format!("{base}/experiments/{exp}?{columns}"), 200.0),
        ("runs page, 1000 of the runs, 20 columns", format!("{base}/experiments/{exp}?{columns}&max_results=1000"), 200.0),
        ("runs page sorted by metrics.m3, 100 runs", format!("{base}/experiments/{exp}?{columns}&order_by=metrics.m3%20DESC"), 200.0),
        ("chart of a 1,000,000-point metric", format!("{base}/charts/runs/{}?key=loss", big.info.run_id), 300.0),
        ("the same chart by time", format!("{base}/charts/runs/{}?key=loss&x=time", big.info.run_id), 300.0),
        ("chart of a 102,000-point metric, drawn from a scan", format!("{base}/charts/runs/{}?key=loss", scanned.info.run_id), 300.0),
    ];
    println!("| page | first ms | median ms | p95 ms | max ms | target ms | target / median | bytes |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, url, target) in pages {
        let (first, median, p95, max, bytes) = time_get(&client, &url, a.repeat).await;
        println!("| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {target:.0} | {:.2} | {bytes} |", ms(first), ms(median), ms(p95), ms(max), target / ms(median));
    }
}
