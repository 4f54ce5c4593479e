//! The `tuner stdio` binary speaks hpo_bench.py's JSON-lines protocol (and the scheduler
//! extension used by tuner/bench/lc_tuner.py).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

fn session(sampler: &str, requests: &[Value]) -> Vec<Value> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tuner"))
        .args(["stdio", "--sampler", sampler])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("tuner binary starts");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut replies = Vec::new();
    for r in requests {
        writeln!(stdin, "{r}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        replies.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:?}: {e}")));
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    replies
}

fn space() -> Value {
    json!({"x0": {"type": "float", "low": -5.0, "high": 10.0, "log": false},
           "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": true},
           "layers": {"type": "int", "low": 1, "high": 8, "log": false},
           "opt": {"type": "categorical", "choices": ["sgd", "adam", "rmsprop"]}})
}

#[test]
fn ask_tell_protocol_with_pending_and_failed_trials() {
    for sampler in ["random", "grid", "tpe", "gp", "auto"] {
        let mut req = vec![json!({"op": "init", "space": space(), "seed": 3, "n_trials": 30, "direction": "minimize"})];
        for i in 0..15 {
            req.push(json!({"op": "ask"}));
            req.push(json!({"op": "ask"}));
            req.push(json!({"op": "tell", "trial_id": 2 * i, "value": if i % 5 == 4 { Value::Null } else { json!(i as f64) }}));
            req.push(json!({"op": "tell", "trial_id": 2 * i + 1, "value": 0.5}));
        }
        req.push(json!({"op": "close"}));
        let rep = session(sampler, &req);
        assert_eq!(rep[0], json!({"ok": true}));
        for (i, r) in rep[1..rep.len() - 1].chunks(4).enumerate() {
            assert_eq!(r[0]["trial_id"], json!(2 * i), "{sampler}");
            assert_eq!(r[1]["trial_id"], json!(2 * i + 1), "{sampler}");
            let p = &r[0]["params"];
            let x = p["x0"].as_f64().unwrap();
            assert!((-5.0..=10.0).contains(&x) && p["layers"].is_i64(), "{sampler}: {p}");
            assert_eq!(r[2], json!({"ok": true}));
        }
        assert_eq!(rep.last().unwrap(), &json!({"ok": true}));
    }
}

#[test]
fn errors_are_replies_not_crashes() {
    let rep = session(
        "tpe",
        &[
            json!({"op": "ask"}),
            json!({"op": "init", "space": {"x": {"type": "float", "low": 1, "high": 0}}}),
            json!({"op": "init", "space": space()}),
            json!({"op": "tell", "trial_id": 99, "value": 1.0}),
            json!({"op": "frobnicate"}),
            json!({"op": "close"}),
        ],
    );
    assert!(rep[0]["error"].as_str().unwrap().contains("init"));
    assert!(rep[1]["error"].as_str().unwrap().contains("`x.low`"));
    assert_eq!(rep[2], json!({"ok": true}));
    assert!(rep[3]["error"].as_str().unwrap().contains("unknown trial 99"));
    assert!(rep[4]["error"].is_string());
}

#[test]
fn scheduler_extension_reports_and_resumes() {
    let init = json!({"op": "init", "space": space(), "seed": 1,
                      "scheduler": {"type": "asha_promote", "min_resource": 1, "max_resource": 9, "reduction_factor": 3}});
    let mut req = vec![init];
    for (i, v) in [0.3, 0.1, 0.2].iter().enumerate() {
        req.push(json!({"op": "next_job"}));
        req.push(json!({"op": "report", "trial_id": i, "step": 1, "value": v}));
    }
    req.push(json!({"op": "next_job"}));
    req.push(json!({"op": "report", "trial_id": 1, "step": 2, "value": 0.08}));
    req.push(json!({"op": "report", "trial_id": 1, "step": 3, "value": 0.05}));
    req.push(json!({"op": "tell", "trial_id": 0, "state": "pruned"}));
    let rep = session("random", &req);
    assert_eq!(rep[1]["until"], json!(1));
    assert_eq!(rep[1]["resume_from"], Value::Null);
    assert_eq!(rep[2], json!({"decision": "pause"}));
    assert_eq!(rep[7], json!({"trial_id": 1, "params": rep[3]["params"], "resume_from": 1, "until": 3}));
    assert_eq!(rep[8], json!({"decision": "continue", "next_milestone": 3}));
    assert_eq!(rep[9], json!({"decision": "pause"}));
    assert_eq!(rep[10], json!({"ok": true}));
}
