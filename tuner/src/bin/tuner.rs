//! `tuner stdio --sampler <random|grid|qmc|tpe|gp|auto>`: the JSON-lines subprocess protocol of
//! `shared/bench/hpo_bench.py`, so any harness can drive the samplers. The only IO in the crate.
//!
//! Requests (one JSON object per line on stdin), replies (one line each on stdout):
//! ```text
//! {"op":"init","space":SPACE,"seed":3,"n_trials":100,"direction":"minimize"} -> {"ok":true}
//! {"op":"ask"}                                  -> {"trial_id":0,"params":{...}}
//! {"op":"tell","trial_id":0,"value":1.7}        -> {"ok":true}   (value null => failed)
//! {"op":"close"}                                -> {"ok":true}   (then exit)
//! ```
//! Extensions for schedulers (LCSim): `init` may carry
//! `"scheduler": {"type": "fifo"|"asha"|"asha_promote"|"hyperband"|"hyperband_promote"|"median",
//! "min_resource": 1, "max_resource": 81, "reduction_factor": 3, "extrapolate": false}` (rungs
//! judged by the curve's extrapolated final value, see `tuner::curve`) and `"multi_fidelity": true`
//! (or `{"min_points": 10, "random_fraction": 0.1}`)
//! (BOHB-like: the sampler models the highest rung with enough results, extrapolated too when
//! the scheduler extrapolates);
//! `{"op":"report","trial_id":0,"step":3,"value":0.4}` -> `{"decision":"continue"|"stop"|"pause",
//! "next_milestone":9}`; `{"op":"next_job"}` -> `{"trial_id":..,"params":..,"resume_from":step|null,
//! "until":step|null}`; `tell` may carry `"state":"pruned"`.
//! Errors are `{"error":"message"}`. Python's `NaN`/`Infinity` tokens are accepted (NaN =
//! failed, infinities clamp to the largest finite double).

use std::io::{BufRead, Write};

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use tuner::sampler::MultiFidelitySampler;
use tuner::scheduler::{AshaConfig, AshaScheduler, AshaMode};
use tuner::{Decision, Direction, Job, Outcome, SamplerKind, SchedulerKind, SearchSpace, Study};

#[derive(Parser)]
#[command(name = "tuner", about = "Deterministic hyperparameter search")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Speak the JSON-lines protocol on stdin/stdout.
    Stdio {
        /// random, grid, qmc, tpe, gp or auto.
        #[arg(long, default_value = "auto")]
        sampler: SamplerKind,
    },
}

fn main() {
    let cli = Cli::parse();
    let Cmd::Stdio { sampler } = cli.cmd;
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let mut study: Option<Study> = None;
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let (reply, close) = match parse_line(&line) {
            Ok(msg) => {
                let close = msg.get("op").and_then(Value::as_str) == Some("close");
                (handle(sampler, &mut study, &msg).unwrap_or_else(|e| json!({ "error": e })), close)
            }
            Err(e) => (json!({ "error": e }), false),
        };
        if writeln!(out, "{reply}").and_then(|_| out.flush()).is_err() || close {
            break;
        }
    }
}

/// Parses one request, accepting Python's non-standard `NaN`, `Infinity` and `-Infinity`.
fn parse_line(line: &str) -> Result<Value, String> {
    serde_json::from_str(line).or_else(|e| {
        let fixed = line.replace("-Infinity", "-1.7976931348623157e308").replace("Infinity", "1.7976931348623157e308").replace("NaN", "null");
        serde_json::from_str(&fixed).map_err(|_| format!("invalid JSON: {e}"))
    })
}

fn handle(kind: SamplerKind, study: &mut Option<Study>, msg: &Value) -> Result<Value, String> {
    let op = msg.get("op").and_then(Value::as_str).ok_or("`op` must be a string")?;
    if op == "init" {
        *study = Some(init(kind, msg)?);
        return Ok(json!({"ok": true}));
    }
    if op == "close" {
        return Ok(json!({"ok": true}));
    }
    let s = study.as_mut().ok_or("`init` must come first")?;
    let trial_id = || msg.get("trial_id").and_then(Value::as_u64).ok_or("`trial_id` must be a non-negative integer");
    match op {
        "ask" => {
            let (n, params) = s.ask();
            Ok(json!({"trial_id": n, "params": params}))
        }
        "next_job" => Ok(match s.next_job() {
            Job::New { number, params, until } => {
                json!({"trial_id": number, "params": params, "resume_from": null, "until": until})
            }
            Job::Resume { number, params, from_step, until } => {
                json!({"trial_id": number, "params": params, "resume_from": from_step, "until": until})
            }
        }),
        "tell" => {
            let n = trial_id()?;
            let outcome = match (msg.get("state").and_then(Value::as_str), msg.get("value")) {
                (Some("pruned"), _) => Outcome::Pruned,
                (Some("failed"), _) | (_, None | Some(Value::Null)) => Outcome::Failed,
                (_, Some(v)) => Outcome::Complete(v.as_f64().ok_or("`value` must be a number or null")?),
            };
            s.tell(n, outcome).map_err(|e| e.to_string())?;
            Ok(json!({"ok": true}))
        }
        "report" => {
            let n = trial_id()?;
            let step = msg.get("step").and_then(Value::as_u64).ok_or("`step` must be a non-negative integer")?;
            let value = msg.get("value").and_then(Value::as_f64).unwrap_or(f64::NAN);
            Ok(match s.report(n, step, value).map_err(|e| e.to_string())? {
                Decision::Continue { next_milestone } => json!({"decision": "continue", "next_milestone": next_milestone}),
                Decision::Stop => json!({"decision": "stop"}),
                Decision::Pause => json!({"decision": "pause"}),
            })
        }
        other => Err(format!("unknown op `{other}`")),
    }
}

fn init(kind: SamplerKind, msg: &Value) -> Result<Study, String> {
    let space = SearchSpace::from_json(msg.get("space").ok_or("`space` is required")?).map_err(|e| e.to_string())?;
    let seed = match msg.get("seed") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_u64().ok_or("`seed` must be a non-negative integer")?,
    };
    let n_trials = msg.get("n_trials").and_then(Value::as_u64).map(|n| n as usize);
    let direction = match msg.get("direction").and_then(Value::as_str) {
        None | Some("minimize") => Direction::Minimize,
        Some("maximize") => Direction::Maximize,
        Some(other) => return Err(format!("`direction` must be \"minimize\" or \"maximize\", got {other:?}")),
    };
    let (sched_kind, config) = match msg.get("scheduler") {
        None | Some(Value::Null) => (SchedulerKind::Fifo, AshaConfig::default()),
        Some(v) => {
            let num = |k: &str, d: u64| v.get(k).and_then(Value::as_u64).unwrap_or(d);
            let c = AshaConfig {
                min_resource: num("min_resource", 1),
                max_resource: num("max_resource", 81),
                reduction_factor: num("reduction_factor", 3),
                extrapolate: v.get("extrapolate").and_then(Value::as_bool).unwrap_or(false),
            };
            if c.reduction_factor < 2 {
                return Err("`scheduler.reduction_factor` must be >= 2".into());
            }
            if c.min_resource == 0 || c.min_resource >= c.max_resource {
                return Err("`scheduler.min_resource` must be in 1..max_resource".into());
            }
            let k = match v.get("type").and_then(Value::as_str).unwrap_or("asha") {
                "fifo" => SchedulerKind::Fifo,
                "asha" => SchedulerKind::AshaStop(c),
                "asha_promote" => SchedulerKind::AshaPromote(c),
                "hyperband" => SchedulerKind::Hyperband(c),
                "hyperband_promote" => SchedulerKind::HyperbandPromote(c),
                "median" => SchedulerKind::Median,
                other => return Err(format!("unknown `scheduler.type` {other:?}")),
            };
            (k, c)
        }
    };
    let mut sampler = kind.build(seed, n_trials);
    // `"multi_fidelity": true`, or an object overriding `min_points` / `random_fraction`.
    let mf = msg.get("multi_fidelity").cloned().unwrap_or(Value::Null);
    if mf == Value::Bool(true) || mf.is_object() {
        let mut budgets = AshaScheduler::new(config, AshaMode::Stop).milestones().to_vec();
        budgets.push(config.max_resource);
        let mut m = MultiFidelitySampler::new(sampler, budgets);
        m.extrapolate = config.extrapolate;
        if let Some(k) = mf.get("min_points").and_then(Value::as_u64) {
            m.min_points = k as usize;
        }
        if let Some(f) = mf.get("random_fraction").and_then(Value::as_f64) {
            if !(0.0..=1.0).contains(&f) {
                return Err("`multi_fidelity.random_fraction` must be in [0, 1]".into());
            }
            m.random_fraction = f;
        }
        sampler = Box::new(m);
    }
    Ok(Study::new(space, direction, seed, sampler, sched_kind.build(seed)))
}
