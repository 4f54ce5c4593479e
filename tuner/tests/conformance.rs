//! Conformance suite every sampler must pass (in the spirit of Optuna's `BasicSamplerTestCase`):
//! valid params on every kind of parameter, on empty histories, with NaN and infinite values,
//! failed and pruned trials, and with pending trials; never a panic; deterministic.

use serde_json::{json, Value};
use tuner::sampler::{MultiFidelitySampler, TpeConfig, TpeSampler};
use tuner::scheduler::Fifo;
use tuner::{trial_rng, Direction, History, Outcome, Params, Sampler, SamplerKind, SearchSpace, Study, TrialState, TrialView};

/// Every sampler under test, by name. `multifidelity` wraps TPE as `tuner stdio --multi_fidelity` does.
fn samplers(seed: u64) -> Vec<(&'static str, Box<dyn Sampler>)> {
    vec![
        ("random", SamplerKind::Random.build(seed, None)),
        ("grid", SamplerKind::Grid.build(seed, None)),
        ("qmc", SamplerKind::Qmc.build(seed, None)),
        ("tpe", SamplerKind::Tpe.build(seed, None)),
        ("gp", SamplerKind::Gp.build(seed, None)),
        ("auto", SamplerKind::Auto.build(seed, Some(50))),
        (
            "multifidelity",
            Box::new(MultiFidelitySampler::new(Box::new(TpeSampler::new(seed, TpeConfig::default())), vec![1, 3, 9, 27])),
        ),
    ]
}

/// One parameter of every kind, plus a two-level conditional tree.
fn mixed_space() -> SearchSpace {
    SearchSpace::from_json(&json!({
        "u": {"type": "float", "low": -2.0, "high": 3.0},
        "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": true},
        "q": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.25},
        "n": {"type": "int", "low": -3, "high": 4},
        "width": {"type": "int", "low": 16, "high": 1024, "log": true},
        "s": {"type": "int", "low": 2, "high": 11, "step": 3},
        "opt": {"type": "categorical", "choices": ["sgd", "adam", 7, true]},
        "momentum": {"type": "float", "low": 0.0, "high": 0.99, "condition": {"parent": "opt", "values": ["sgd"]}},
        "sched": {"type": "categorical", "choices": ["cos", "step"], "condition": {"parent": "opt", "values": ["sgd", 7]}},
        "gamma": {"type": "float", "low": 0.1, "high": 0.9, "condition": {"parent": "sched", "values": ["step"]}},
    }))
    .unwrap()
}

fn unconditional_space() -> SearchSpace {
    SearchSpace::from_json(&json!({
        "x": {"type": "float", "low": -5.0, "high": 10.0},
        "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": true},
        "k": {"type": "int", "low": 1, "high": 8},
        "c": {"type": "categorical", "choices": ["a", "b", "c"]},
    }))
    .unwrap()
}

/// A deterministic objective over both spaces, finite everywhere.
fn objective(p: &Params) -> f64 {
    let mut v = 0.0;
    for (k, x) in p {
        v += match x {
            Value::Number(n) => {
                let f = n.as_f64().unwrap();
                if k == "lr" || k == "width" {
                    (f.ln() + 3.0).powi(2) * 0.1
                } else {
                    (f - 0.3).powi(2)
                }
            }
            Value::String(s) => s.len() as f64 * 0.1,
            _ => 0.5,
        };
    }
    v
}

/// A history with every kind of trial: complete (finite, +inf, -inf), NaN (recorded failed),
/// failed, pruned with intermediate values, and pending.
fn messy_history(space: &SearchSpace, n: u64) -> Vec<TrialView> {
    let mut study = Study::new(space.clone(), Direction::Minimize, 5, SamplerKind::Random.build(5, None), Box::new(Fifo));
    for i in 0..n {
        let (num, p) = study.ask();
        let outcome = match i % 9 {
            3 => Outcome::Complete(f64::NAN),
            4 => Outcome::Complete(f64::INFINITY),
            5 => Outcome::Failed,
            6 => {
                study.report(num, 1, objective(&p) + 1.0).unwrap();
                Outcome::Pruned
            }
            7 if i > 20 => Outcome::Complete(f64::NEG_INFINITY),
            8 => continue, // stays pending
            _ => Outcome::Complete(objective(&p)),
        };
        study.tell(num, outcome).unwrap();
    }
    study.trials().to_vec()
}

fn assert_valid(space: &SearchSpace, p: &Params, ctx: &str) {
    if let Err(e) = space.check(p) {
        panic!("{ctx}: invalid params {p:?}: {e}");
    }
}

#[test]
fn empty_history_gives_valid_params() {
    for space in [mixed_space(), unconditional_space()] {
        for (name, s) in samplers(1) {
            for number in 0..5 {
                let p = s.sample(&space, &History::new(Direction::Minimize, &[]), number, &mut trial_rng(1, number));
                assert_valid(&space, &p, name);
            }
        }
    }
}

#[test]
fn messy_histories_give_valid_deterministic_params() {
    for space in [mixed_space(), unconditional_space()] {
        for (name, s) in samplers(2) {
            for n in [1, 12, 40] {
                let trials = messy_history(&space, n);
                for dir in [Direction::Minimize, Direction::Maximize] {
                    let h = History::new(dir, &trials);
                    let a = s.sample(&space, &h, n, &mut trial_rng(2, n));
                    assert_valid(&space, &a, &format!("{name} n={n}"));
                    let b = s.sample(&space, &h, n, &mut trial_rng(2, n));
                    assert_eq!(a, b, "{name}: same history and rng must give the same params");
                }
            }
        }
    }
}

#[test]
fn all_values_non_finite_or_failed_does_not_panic() {
    let space = unconditional_space();
    for (name, s) in samplers(3) {
        let mut study = Study::new(space.clone(), Direction::Minimize, 3, s, Box::new(Fifo));
        for i in 0..25 {
            let (n, p) = study.ask();
            assert_valid(&space, &p, name);
            let o = match i % 3 {
                0 => Outcome::Complete(f64::NAN),
                1 => Outcome::Failed,
                _ => Outcome::Complete(f64::INFINITY),
            };
            study.tell(n, o).unwrap();
        }
        assert!(study.trials().iter().filter(|t| t.state == TrialState::Failed).count() >= 16);
    }
}

#[test]
fn constant_values_do_not_panic() {
    let space = unconditional_space();
    for (name, s) in samplers(4) {
        let mut study = Study::new(space.clone(), Direction::Minimize, 4, s, Box::new(Fifo));
        for _ in 0..20 {
            let (n, p) = study.ask();
            assert_valid(&space, &p, name);
            study.tell(n, Outcome::Complete(1.0)).unwrap();
        }
    }
}

/// Endpoints of every numeric range are reachable, and int/step/categorical values are all
/// proposed: catches half-open ranges and off-by-one bins.
#[test]
fn whole_range_is_covered_on_empty_history() {
    let space = SearchSpace::from_json(&json!({
        "k": {"type": "int", "low": 1, "high": 4},
        "s": {"type": "int", "low": 0, "high": 9, "step": 3},
        "q": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.5},
        "c": {"type": "categorical", "choices": ["a", "b", "c"]},
    }))
    .unwrap();
    for (name, s) in samplers(5) {
        if name == "grid" {
            continue; // the grid is checked exactly below
        }
        let mut seen: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
        for number in 0..200 {
            // Pending-only history: model-based samplers stay in their start-up design.
            let p = s.sample(&space, &History::new(Direction::Minimize, &[]), number, &mut trial_rng(5, number));
            for (k, v) in p {
                seen.entry(k).or_default().insert(v.to_string());
            }
        }
        assert_eq!(seen["k"].len(), 4, "{name}: {:?}", seen["k"]);
        assert_eq!(seen["s"].len(), 4, "{name}: {:?}", seen["s"]);
        assert_eq!(seen["q"].len(), 3, "{name}: {:?}", seen["q"]);
        assert_eq!(seen["c"].len(), 3, "{name}: {:?}", seen["c"]);
    }
}

#[test]
fn grid_visits_every_point_once_then_falls_back() {
    let space = SearchSpace::from_json(&json!({
        "k": {"type": "int", "low": 1, "high": 3},
        "c": {"type": "categorical", "choices": ["a", "b"]},
    }))
    .unwrap();
    let mut study = Study::new(space.clone(), Direction::Minimize, 0, SamplerKind::Grid.build(0, None), Box::new(Fifo));
    let mut points = std::collections::BTreeSet::new();
    for _ in 0..6 {
        // Pending trials count as visited, so asking without telling still gives distinct points.
        let (_, p) = study.ask();
        assert!(points.insert(serde_json::to_string(&p).unwrap()), "grid repeated {p:?}");
    }
    assert_eq!(points.len(), 6);
    let (_, p) = study.ask();
    assert_valid(&space, &p, "grid fallback");
}

/// Log parameters are sampled uniformly in ln(x): about half of the draws fall below the
/// geometric midpoint. A sampler that ignored `log` would put ~0.1% there.
#[test]
fn log_parameters_are_log_uniform_at_start() {
    let space = SearchSpace::from_json(&json!({"lr": {"type": "float", "low": 1e-6, "high": 1.0, "log": true}})).unwrap();
    for (name, s) in samplers(6) {
        if name == "grid" {
            continue;
        }
        let below = (0..400)
            .filter(|&n| {
                let p = s.sample(&space, &History::new(Direction::Minimize, &[]), n, &mut trial_rng(6, n));
                p["lr"].as_f64().unwrap() < 1e-3
            })
            .count();
        assert!((160..=240).contains(&below), "{name}: {below}/400 below the log midpoint");
    }
}

/// With the model active, several pending trials must not collapse onto one point
/// (constant liar / distinct quasi-random indices).
#[test]
fn pending_trials_get_distinct_params() {
    let space = SearchSpace::from_json(&json!({
        "x": {"type": "float", "low": -5.0, "high": 5.0},
        "y": {"type": "float", "low": -5.0, "high": 5.0},
    }))
    .unwrap();
    for (name, s) in samplers(7) {
        let mut study = Study::new(space.clone(), Direction::Minimize, 7, s, Box::new(Fifo));
        for _ in 0..15 {
            let (n, p) = study.ask();
            let v = p["x"].as_f64().unwrap().powi(2) + p["y"].as_f64().unwrap().powi(2);
            study.tell(n, Outcome::Complete(v)).unwrap();
        }
        let batch: Vec<Params> = (0..6).map(|_| study.ask().1).collect();
        for i in 0..batch.len() {
            for j in 0..i {
                assert_ne!(batch[i], batch[j], "{name}: pending trials {i} and {j} got the same params");
            }
        }
    }
}

/// Inactive conditional parameters are never set, and active ones always are; the model-based
/// samplers also learn the conditional branch (proposals concentrate on the good parent value).
#[test]
fn conditional_parameters_follow_their_parent() {
    let space = SearchSpace::from_json(&json!({
        "kind": {"type": "categorical", "choices": ["a", "b"]},
        "xa": {"type": "float", "low": 0.0, "high": 1.0, "condition": {"parent": "kind", "values": ["a"]}},
        "xb": {"type": "float", "low": 0.0, "high": 1.0, "condition": {"parent": "kind", "values": ["b"]}},
    }))
    .unwrap();
    for (name, s) in samplers(8) {
        let mut study = Study::new(space.clone(), Direction::Minimize, 8, s, Box::new(Fifo));
        let mut late_b = 0;
        for i in 0..60 {
            let (n, p) = study.ask();
            assert_valid(&space, &p, name);
            let v = match p["kind"].as_str().unwrap() {
                "a" => 1.0 + p["xa"].as_f64().unwrap(),
                _ => (p["xb"].as_f64().unwrap() - 0.7).abs(),
            };
            if i >= 30 && p["kind"] == "b" {
                late_b += 1;
            }
            study.tell(n, Outcome::Complete(v)).unwrap();
        }
        if matches!(name, "tpe" | "auto" | "gp") {
            assert!(late_b >= 20, "{name}: only {late_b}/30 late proposals on the better branch");
        }
    }
}

/// Model-based samplers beat random search on a smooth function (fixed seeds, so this is a
/// deterministic regression check, not a flaky statistical one).
#[test]
fn model_based_samplers_beat_random_on_a_quadratic() {
    let space = SearchSpace::from_json(&json!({
        "x": {"type": "float", "low": -5.0, "high": 5.0},
        "y": {"type": "float", "low": -5.0, "high": 5.0},
        "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": true},
    }))
    .unwrap();
    let f = |p: &Params| {
        (p["x"].as_f64().unwrap() - 1.0).powi(2)
            + (p["y"].as_f64().unwrap() + 2.0).powi(2)
            + (p["lr"].as_f64().unwrap().log10() + 2.0).powi(2)
    };
    let run = |kind: SamplerKind, seed: u64| {
        let mut st = Study::new(space.clone(), Direction::Minimize, seed, kind.build(seed, Some(40)), Box::new(Fifo));
        for _ in 0..40 {
            let (n, p) = st.ask();
            st.tell(n, Outcome::Complete(f(&p))).unwrap();
        }
        st.best().unwrap().value.unwrap()
    };
    let median = |kind| {
        let mut v: Vec<f64> = (0..5).map(|s| run(kind, s)).collect();
        v.sort_by(f64::total_cmp);
        v[2]
    };
    let random = median(SamplerKind::Random);
    for kind in [SamplerKind::Tpe, SamplerKind::Gp, SamplerKind::Auto] {
        let m = median(kind);
        assert!(m < random * 0.5, "{kind:?}: median best {m} vs random {random}");
    }
}

/// The BOHB-like wrapper shows its inner sampler the highest budget with enough results, each
/// trial `Complete` with its value at that budget; trials still training act as pending.
#[test]
fn multifidelity_models_the_highest_budget_with_enough_points() {
    use std::sync::Mutex;
    use tuner::TunerRng;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Vec<(u64, TrialState, Option<f64>)>>>);
    impl Sampler for Recorder {
        fn sample(&self, space: &SearchSpace, h: &History<'_>, n: u64, rng: &mut TunerRng) -> Params {
            self.0.lock().unwrap().push(h.trials.iter().map(|t| (t.number, t.state, t.value)).collect());
            SamplerKind::Random.build(0, None).sample(space, h, n, rng)
        }
    }
    let rec = std::sync::Arc::new(Recorder::default());
    struct Shared(std::sync::Arc<Recorder>);
    impl Sampler for Shared {
        fn sample(&self, s: &SearchSpace, h: &History<'_>, n: u64, r: &mut TunerRng) -> Params {
            self.0.sample(s, h, n, r)
        }
    }
    let mut mf = MultiFidelitySampler::new(Box::new(Shared(rec.clone())), vec![1, 3, 9]);
    mf.min_points = 3;
    mf.random_fraction = 0.0;
    // One parameter: the wrapper needs max(min_points, d + 2) = 3 results at a budget.
    let space = SearchSpace::from_json(&json!({"x": {"type": "float", "low": 0.0, "high": 1.0}})).unwrap();
    let mk = |number: u64, state: TrialState, reports: &[(u64, f64)], value: Option<f64>| TrialView {
        number,
        params: Params::new(),
        state,
        value,
        intermediate: reports.iter().copied().collect(),
    };
    let trials = vec![
        mk(0, TrialState::Complete, &[(1, 0.9), (3, 0.5), (9, 0.4)], Some(0.4)),
        mk(1, TrialState::Pruned, &[(1, 0.8), (3, 0.7)], None),
        mk(2, TrialState::Paused, &[(1, 0.3), (3, 0.2)], None),
        mk(3, TrialState::Pruned, &[(1, 0.95)], None),
        mk(4, TrialState::Running, &[(1, 0.6)], None),
        mk(5, TrialState::Failed, &[(1, 0.1), (3, 0.1)], None),
    ];
    mf.sample(&space, &History::new(Direction::Minimize, &trials), 6, &mut trial_rng(0, 6));
    // Budget 9 has one result (< 3); budget 3 has three (0, 1, 2; the failed one is excluded).
    // Trial 4 is still running below 3, so it is pending; 3 stopped below 3 and is left out.
    let seen = rec.0.lock().unwrap().pop().unwrap();
    // With too few results at every budget, only the pending trials are passed on.
    let mut strict = MultiFidelitySampler::new(Box::new(Shared(rec.clone())), vec![1, 3, 9]);
    strict.random_fraction = 0.0;
    strict.sample(&space, &History::new(Direction::Minimize, &trials), 6, &mut trial_rng(0, 6));
    assert_eq!(rec.0.lock().unwrap().pop().unwrap(), vec![(4, TrialState::Running, None)]);
    assert_eq!(
        seen,
        vec![
            (0, TrialState::Complete, Some(0.5)),
            (1, TrialState::Complete, Some(0.7)),
            (2, TrialState::Complete, Some(0.2)),
            (4, TrialState::Running, None),
        ]
    );
}
