//! `tracker demo` end to end: the real binary with real `worker` agents training the Korean LoRA
//! on a study shrunk to seconds (the shipped demo spec with fewer, shorter trials). Ctrl-C
//! mid-study stops everything cleanly and keeps the work; running again resumes and finishes,
//! registers and promotes the best adapter, and prints the summary; a third run only reports.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tracker::store::{BackendUri, Store};

/// Makes sure the `worker` binary is beside this package's `tracker` (a no-op when the workspace
/// build made it already, as `bash tests/run.sh` does).
fn worker_bin() -> PathBuf {
    let tracker = Path::new(env!("CARGO_BIN_EXE_tracker"));
    let worker = tracker.with_file_name("worker");
    if !worker.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo).args(["build", "-p", "worker", "--bin", "worker"]).status().expect("run cargo build -p worker");
        assert!(status.success(), "cargo build -p worker failed");
    }
    worker
}

/// The shipped demo spec, shrunk: 4 trials, milestones at 10 and 20 steps of 4 examples, the
/// full run at 40, two held-out examples per task.
fn tiny_spec(dir: &Path) -> PathBuf {
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/study/demo.toml")).unwrap();
    let mut tiny = spec.clone();
    for (from, to) in [
        ("max_trials = 12", "max_trials = 4"),
        ("min_resource = 50", "min_resource = 10"),
        ("max_resource = 400", "max_resource = 40"),
        ("train_per_task = 10000", "train_per_task = 300"),
        ("test_per_task = 30", "test_per_task = 2"),
        ("batch_size = 16", "batch_size = 4"),
    ] {
        assert!(tiny.contains(from), "the demo spec no longer has `{from}`");
        tiny = tiny.replace(from, to);
    }
    let path = dir.join("tiny.toml");
    std::fs::write(&path, tiny).unwrap();
    path
}

struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Demo {
    /// Starts `tracker demo`, which finds `worker` beside itself, as after `cargo build`.
    fn start(data: &Path, spec: &Path) -> Demo {
        worker_bin();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tracker"))
            .args(["demo", "--port", "0", "--exit-when-done", "--data-dir"])
            .arg(data)
            .arg("--spec")
            .arg(spec)
            .env_remove("RUST_LOG")
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tracker demo");
        let (tx, lines) = mpsc::channel();
        for stream in [Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>, Box::new(child.stderr.take().unwrap())] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Demo { child, lines, seen: Vec::new() }
    }

    /// Waits for a printed line that satisfies `want`.
    fn wait_line(&mut self, what: &str, timeout: Duration, want: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                let hit = want(&line);
                self.seen.push(line);
                if hit {
                    return;
                }
            }
        }
        panic!("no line with {what} within {timeout:?}; printed:\n{}", self.seen.join("\n"));
    }

    /// Waits for the exit and returns everything printed.
    fn finish(mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
                    self.seen.push(line);
                }
                let out = self.seen.join("\n");
                assert!(status.success(), "tracker demo exited with {status}:\n{out}");
                return out;
            }
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("tracker demo still running after {timeout:?}:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn demo_stops_on_ctrl_c_resumes_and_registers_the_best_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let spec = tiny_spec(dir.path());

    // First run: interrupted (SIGINT, as Ctrl-C sends) once a trial has reported.
    let mut first = Demo::start(&data, &spec);
    first.wait_line("a trial's first report", Duration::from_secs(180), |l| l.contains("trial") && l.contains("step   10"));
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    unsafe {
        libc::kill(first.child.id() as libc::pid_t, libc::SIGINT);
    }
    let out = first.finish(Duration::from_secs(60));
    assert!(out.contains("Stopped. Run the same command again to resume"), "{out}");
    assert!(!out.contains("== Study"), "no summary for an unfinished study:\n{out}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(Store::open(&BackendUri::Sqlite(data.join("tracker.db")))).unwrap();
    let trials = rt.block_on(store.list_trials("korean-lora-demo")).unwrap();
    assert!(trials.iter().all(|t| t.state != "running"), "the stopped workers released their trials: {trials:?}");
    let reported_before: Vec<(i64, i64)> = trials.iter().filter_map(|t| t.last_step.map(|s| (t.number, s))).collect();
    assert!(!reported_before.is_empty(), "the interrupted run's reports are kept");

    // Second run: resumes the same study to its end.
    let out = Demo::start(&data, &spec).finish(Duration::from_secs(300));
    assert!(out.contains("Resuming study 'korean-lora-demo' (running;"), "{out}");
    assert!(out.contains("== Study 'korean-lora-demo' finished"), "{out}");
    assert!(out.contains("Best trial: "), "{out}");
    assert!(out.contains("exact match on held-out examples: mean "), "{out}");
    assert!(out.contains("Registered: model 'ko-lora-demo' version 1; promoted to alias 'production'"), "{out}");
    assert!(out.contains("Early stopping: ") && out.contains("of the compute saved"), "{out}");

    let trials = rt.block_on(store.list_trials("korean-lora-demo")).unwrap();
    assert_eq!(trials.len(), 4);
    assert!(trials.iter().all(|t| t.state == "complete" || t.state == "pruned"), "{trials:?}");
    for (number, step) in &reported_before {
        let t = &trials[*number as usize];
        assert!(t.last_step.is_some_and(|s| s >= *step), "trial {number} kept its progress past step {step}: {t:?}");
    }
    let production = rt.block_on(store.get_model_version_by_alias("ko-lora-demo", "production")).unwrap();
    let best = trials.iter().filter(|t| t.state == "complete").min_by(|a, b| a.value.partial_cmp(&b.value).unwrap()).unwrap();
    assert_eq!(production.run_id, best.run_uuid, "the promoted version is the best trial's adapter");

    // Third run: the study is finished, so it only reports.
    let out = Demo::start(&data, &spec).finish(Duration::from_secs(60));
    assert!(out.contains("Resuming study 'korean-lora-demo' (finished;"), "{out}");
    assert!(!out.contains("Started "), "no worker starts for a finished study:\n{out}");
    assert!(out.contains("Best trial: "), "{out}");
}

#[test]
fn demo_explains_a_missing_worker_binary_and_a_bad_spec() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tracker")).arg("demo").args(args).env("RUST_BACKTRACE", "0").output().expect("run tracker demo")
    };
    let data = dir.path().join("d");
    let out = run(&["--port", "0", "--data-dir", data.to_str().unwrap(), "--worker-bin", "/nonexistent/worker"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no worker binary at /nonexistent/worker") && err.contains("cargo build --release"), "{err}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\nmax_trials = 0\n").unwrap();
    let out = run(&["--port", "0", "--data-dir", data.to_str().unwrap(), "--spec", bad.to_str().unwrap(), "--worker-bin", env!("CARGO_BIN_EXE_tracker")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:"), "{err}");
}
