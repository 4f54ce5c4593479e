//! `tracker demo`: the whole product on one machine in one command.
//!
//! It serves the tracker (SQLite and an artifact folder under `--data-dir`), creates the Korean
//! LoRA study of `examples/study/demo.toml` (or `--spec`), starts local `worker` agents as child
//! processes (the trainer lives in the worker, so the tracker stays free of it), prints each
//! trial's progress, and once the study ends prints a summary: the best trial and its params,
//! its exact match, the registered and promoted version, and the compute that early stopping
//! saved. Everything it makes stays in `--data-dir`, so running it again resumes the study:
//! finished trials are kept and interrupted ones go on from their last checkpoint.
//!
//! Ctrl-C (or SIGTERM) stops the workers (each releases its trial, which stays queued), then the
//! server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use api::studies::{StudyInfo, TrialInfo};
use tokio::process::{Child, Command};
use tracker::artifacts::Artifacts;
use tracker::store::{BackendUri, Store};
use tracker::studies::{LeaseTiming, SpecFormat, Studies};
use tracker::AppState;

/// The study the demo runs unless `--spec` names another.
const DEMO_SPEC: &str = include_str!("../../examples/study/demo.toml");
/// How often the demo looks at the study.
const POLL: Duration = Duration::from_secs(2);
/// How long stopped workers get to release their trials before they are killed.
const WORKER_STOP_GRACE: Duration = Duration::from_secs(30);
/// The demo's worker ids: `demo-0`, `demo-1`, ...
const WORKER_PREFIX: &str = "demo-";
/// The folder of the workers' logs, in the data folder.
const WORKER_LOGS: &str = "logs";
/// Short leases: a worker that died with the demo (SIGKILL) gives its trial back this soon.
const LEASE_TTL: Duration = Duration::from_secs(20);

#[derive(clap::Args)]
pub(crate) struct DemoArgs {
    /// Where the database, artifacts, worker folders and logs go; running again with the same
    /// folder resumes.
    #[arg(long, default_value = "tracker-demo")]
    data_dir: PathBuf,
    /// Port of the tracker and its UI on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 5000)]
    port: u16,
    /// Local worker agents to start.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// The `worker` binary [default: `worker` beside this binary].
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// Another study spec (TOML, YAML or JSON) instead of the built-in Korean LoRA study.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Exit after the summary instead of keeping the UI up until Ctrl-C.
    #[arg(long)]
    exit_when_done: bool,
}

pub(crate) async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let text = match &args.spec {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        None => DEMO_SPEC.to_owned(),
    };
    let spec_source = args.spec.as_ref().map_or_else(|| "examples/study/demo.toml".to_owned(), |p| p.display().to_string());
    let format = args.spec.as_deref().map_or(SpecFormat::Toml, |path| SpecFormat::of(path, &text));
    let spec = tracker::studies::parse_spec(&text, format).map_err(|e| anyhow::anyhow!("{spec_source}: {e}"))?;
    if args.workers == 0 {
        anyhow::bail!("`--workers` must be at least 1");
    }
    let worker_bin = find_worker_bin(args.worker_bin.as_deref())?;

    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let store = Store::open(&BackendUri::Sqlite(data_dir.join("tracker.db"))).await?;
    let artifacts = Artifacts::open(data_dir.join("artifacts").to_str().context("the data folder's path is not UTF-8")?)?;
    let timing = LeaseTiming { lease_ttl: LEASE_TTL };
    let studies = Studies::new(&store, timing);
    studies.register_finished().await.map_err(|e| anyhow::anyhow!("{e}"))?;

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{} (pass --port to use another)", args.port))?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tracker::serve(listener, tracker::router(AppState::with_lease_timing(store.clone(), artifacts, Default::default(), timing)), async {
        let _ = server_stopped.await;
    }));
    println!("Tracker and UI: {base}/   (data in {})", data_dir.display());

    let name = spec.name.clone();
    let info = match studies.info(&name).await {
        Ok(info) => {
            println!("Resuming study '{name}' ({}; {}).", info.status, counts(&info));
            info
        }
        Err(tracker::Error::NotFound(_)) => {
            let info = studies.create(spec).await.map_err(|e| anyhow::anyhow!("{spec_source}: {e}"))?;
            println!("Created study '{name}' from {spec_source}.");
            info
        }
        Err(e) => return Err(anyhow::anyhow!("{e}")),
    };
    println!("Study page: {base}/studies/{name}");

    let mut workers = Vec::new();
    if info.status == "running" {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).div_ceil(args.workers).max(1);
        for i in 0..args.workers {
            // A worker paused by a previous run's failures gets another chance.
            match studies.resume_worker(&format!("{WORKER_PREFIX}{i}")).await {
                Ok(_) | Err(tracker::Error::NotFound(_)) => {}
                Err(e) => return Err(anyhow::anyhow!("{e}")),
            }
            workers.push(spawn_worker(&worker_bin, &base, &name, &data_dir, i, threads)?);
        }
        println!("Started {} worker(s) ({} thread(s) each; logs in {}).", workers.len(), threads, data_dir.join(WORKER_LOGS).display());
    }

    let interrupted = watch(&studies, &name, &mut workers).await?;
    stop_workers(&mut workers).await;
    if interrupted {
        let _ = stop_server.send(());
        let _ = server.await;
        println!("Stopped. Run the same command again to resume: finished trials are kept, interrupted ones go on from their last checkpoint.");
        return Ok(());
    }

    let (info, trials) = studies.get(&name).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    print_summary(&store, &base, &info, &trials, started.elapsed()).await?;
    if !args.exit_when_done {
        println!("\nThe UI stays up at {base}/ ; Ctrl-C stops it.");
        crate::shutdown_signal().await;
    }
    let _ = stop_server.send(());
    let _ = server.await;
    Ok(())
}

/// `worker` beside this binary (`cargo build --release` puts both in target/release), or the
/// one `--worker-bin` names.
fn find_worker_bin(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_owned(),
        None => std::env::current_exe()?.with_file_name(format!("worker{}", std::env::consts::EXE_SUFFIX)),
    };
    if !path.is_file() {
        anyhow::bail!(
            "the demo runs `worker` agents, and there is no worker binary at {}: build both with `cargo build --release` (or pass --worker-bin)",
            path.display()
        );
    }
    Ok(path)
}

fn spawn_worker(bin: &Path, base: &str, study: &str, data_dir: &Path, index: usize, threads: usize) -> anyhow::Result<Child> {
    let id = format!("{WORKER_PREFIX}{index}");
    let logs = data_dir.join(WORKER_LOGS);
    std::fs::create_dir_all(&logs)?;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(logs.join(format!("{id}.log")))?;
    let child = Command::new(bin)
        .args(["--tracking-uri", base, "--worker-id", &id, "--study", study, "--exit-when-done", "--work-dir"])
        .arg(data_dir.join("workers").join(&id))
        .env("RAYON_NUM_THREADS", threads.to_string())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("MLFLOW_TRACKING_TOKEN")
        .env_remove("MLFLOW_TRACKING_USERNAME")
        .env_remove("MLFLOW_TRACKING_PASSWORD")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(child)
}

/// Prints each trial's changes until the study ends and the workers are gone (`false`), or until
/// Ctrl-C or SIGTERM (`true`). Fails when every worker exited while the study still runs.
async fn watch(studies: &Studies<'_>, name: &str, workers: &mut [Child]) -> anyhow::Result<bool> {
    let mut seen: BTreeMap<u64, (String, Option<u64>)> = BTreeMap::new();
    let signal = crate::shutdown_signal();
    tokio::pin!(signal);
    loop {
        let (info, trials) = studies.get(name).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        for t in &trials {
            let now = (t.state.clone(), t.last_step);
            if seen.get(&t.number) != Some(&now) {
                println!("{}", trial_line(&info, t));
                seen.insert(t.number, now);
            }
        }
        let all_exited = workers.iter_mut().all(|w| matches!(w.try_wait(), Ok(Some(_))));
        if info.status != "running" && all_exited {
            return Ok(false);
        }
        if all_exited {
            anyhow::bail!("every worker exited while the study is {}; see their logs beside the database", info.status);
        }
        let agents = studies.workers().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let paused = agents.iter().filter(|w| w.worker_id.starts_with(WORKER_PREFIX) && w.status == "paused").count();
        if info.status == "running" && !workers.is_empty() && paused >= workers.len() {
            anyhow::bail!("the workers were paused because their trials kept failing at once; the reason is in their logs in {WORKER_LOGS}/ under the data folder");
        }
        tokio::select! {
            _ = &mut signal => return Ok(true),
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// SIGTERM to each worker (it releases its trial), then SIGKILL after [`WORKER_STOP_GRACE`].
async fn stop_workers(workers: &mut [Child]) {
    for w in workers.iter() {
        if let Some(pid) = w.id() {
            // SAFETY: kill(2) with a pid of a child this process spawned and has not reaped.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    for w in workers.iter_mut() {
        if tokio::time::timeout(WORKER_STOP_GRACE, w.wait()).await.is_err() {
            let _ = w.kill().await;
        }
    }
}

fn counts(info: &StudyInfo) -> String {
    let parts: Vec<String> = info.trial_counts.iter().filter(|(_, n)| **n > 0).map(|(state, n)| format!("{n} {state}")).collect();
    if parts.is_empty() {
        "no trials yet".into()
    } else {
        parts.join(", ")
    }
}

fn trial_line(info: &StudyInfo, t: &TrialInfo) -> String {
    let step = t.last_step.map_or_else(|| "-".to_owned(), |s| s.to_string());
    let value = t.value.map_or_else(String::new, |v| format!("{} {v:.4}", info.spec.objective.metric));
    format!("[{}] trial {:>2} {:<8} step {:>4}  {value:<22} {}", counts(info), t.number, t.state, step, params_text(&t.params))
}

fn params_text(params: &api::studies::Params) -> String {
    params.iter().map(|(k, v)| format!("{k}={}", param_text(v))).collect::<Vec<_>>().join(" ")
}

fn param_text(v: &serde_json::Value) -> String {
    match v.as_f64() {
        Some(f) if !v.is_i64() && !v.is_u64() => format!("{f:.4}"),
        _ => v.to_string(),
    }
}

async fn print_summary(store: &Store, base: &str, info: &StudyInfo, trials: &[TrialInfo], took: Duration) -> anyhow::Result<()> {
    println!("\n== Study '{}' {}: {} (this run of the demo: {:.1} min) ==", info.name, info.status, counts(info), took.as_secs_f64() / 60.0);
    let Some(best) = &info.best else {
        println!("No trial completed, so there is no best adapter.");
        return Ok(());
    };
    println!("Best trial: {} with {} = {:.4}", best.number, info.spec.objective.metric, best.value.unwrap_or(f64::NAN));
    println!("  params: {}", params_text(&best.params));
    let run = store.get_run(&best.run_id).await?;
    let exact: Vec<String> = run
        .data
        .metrics
        .iter()
        .filter(|m| !m.key.ends_with("_ci_low") && !m.key.ends_with("_ci_high"))
        .filter_map(|m| {
            let task = m.key.strip_prefix("eval_exact_match")?.trim_start_matches('_');
            Some(format!("{} {:.1}%", if task.is_empty() { "mean" } else { task }, m.value * 100.0))
        })
        .collect();
    if !exact.is_empty() {
        println!("  exact match on held-out examples: {}", exact.join(", "));
    }
    println!("  run: {base}/runs/{}", best.run_id);
    match &info.registered {
        Some(r) => {
            let promotion = if r.promotion.is_empty() { String::new() } else { format!("; {}", r.promotion) };
            println!("Registered: model '{}' version {}{promotion}  ({base}/models/{})", r.model, r.version, r.model);
        }
        None if info.spec.register.is_some() => println!("Registered: nothing yet (see the tracker's log)"),
        None => {}
    }
    if let Some(max) = info.spec.scheduler.max_resource {
        let trained: u64 = trials.iter().map(|t| t.last_step.unwrap_or(0)).sum();
        let full = max * trials.len() as u64;
        if full > 0 {
            println!(
                "Early stopping: {trained} training steps instead of {full} for {} full-length trials, {:.0}% of the compute saved",
                trials.len(),
                100.0 * (1.0 - trained as f64 / full as f64)
            );
        }
    }
    println!("Study page: {base}/studies/{}", info.name);
    Ok(())
}
