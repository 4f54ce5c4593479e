//! Property tests for space validation and sampling.
//!
//! Hand-rolled rather than proptest: each property runs over a few hundred spaces drawn from a
//! seeded ChaCha stream, so a failure prints the case number and reproduces exactly, and the
//! workspace lock file needs no new dependency. (No shrinking; the generated spaces are small.)

use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use tuner::scheduler::Fifo;
use tuner::{Direction, Distribution, History, Outcome, SamplerKind, SearchSpace, Study, TunerRng};

/// A random valid parameter spec (no condition).
fn random_spec(rng: &mut TunerRng) -> Value {
    match rng.random_range(0..6) {
        0 => {
            let low: f64 = rng.random_range(-100.0..100.0);
            json!({"type": "float", "low": low, "high": low + rng.random_range(1e-3..50.0)})
        }
        1 => {
            let low = 10f64.powf(rng.random_range(-8.0..2.0));
            json!({"type": "float", "low": low, "high": low * 10f64.powf(rng.random_range(0.1..6.0)), "log": true})
        }
        2 => {
            let low: f64 = rng.random_range(-10.0..10.0);
            let step = [0.1, 0.25, 0.5, 1.0, 3.0][rng.random_range(0..5)];
            json!({"type": "float", "low": low, "high": low + step * rng.random_range(1..30) as f64, "step": step})
        }
        3 => {
            let low: i64 = rng.random_range(-50..50);
            json!({"type": "int", "low": low, "high": low + rng.random_range(1..100), "step": rng.random_range(1..5)})
        }
        4 => {
            let low: i64 = rng.random_range(1..100);
            json!({"type": "int", "low": low, "high": low + rng.random_range(1..5000), "log": true})
        }
        _ => {
            let n = rng.random_range(1..6);
            let choices: Vec<Value> = (0..n)
                .map(|i| match i % 3 {
                    0 => json!(format!("c{i}")),
                    1 => json!(i),
                    _ => json!(i % 2 == 0),
                })
                .collect();
            json!({"type": "categorical", "choices": choices})
        }
    }
}

/// A random valid space of 1..7 parameters; some are conditional on an earlier categorical.
fn random_space(rng: &mut TunerRng) -> Value {
    let mut m = Map::new();
    let n = rng.random_range(1..8);
    for i in 0..n {
        let mut spec = random_spec(rng);
        let cats: Vec<(String, Vec<Value>)> = m
            .iter()
            .filter(|(_, v)| v["type"] == "categorical")
            .map(|(k, v)| (k.clone(), v["choices"].as_array().unwrap().clone()))
            .collect();
        if !cats.is_empty() && rng.random_bool(0.4) {
            let (parent, choices) = &cats[rng.random_range(0..cats.len())];
            spec["condition"] = json!({"parent": parent, "values": [choices[rng.random_range(0..choices.len())]]});
        }
        m.insert(format!("p{i}"), spec);
    }
    Value::Object(m)
}

#[test]
fn random_valid_spaces_parse_and_every_sampler_stays_valid() {
    let mut rng = TunerRng::seed_from_u64(11);
    for case in 0..150 {
        let js = random_space(&mut rng);
        let space = SearchSpace::from_json(&js).unwrap_or_else(|e| panic!("case {case}: {js} rejected: {e}"));
        for kind in [SamplerKind::Random, SamplerKind::Grid, SamplerKind::Qmc, SamplerKind::Tpe] {
            let mut st = Study::new(space.clone(), Direction::Minimize, case, kind.build(case, None), Box::new(Fifo));
            for i in 0..14 {
                let (n, p) = st.ask();
                if let Err(e) = space.check(&p) {
                    panic!("case {case} {kind:?} trial {i}: {p:?} invalid for {js}: {e}");
                }
                st.tell(n, Outcome::Complete(serde_json::to_string(&p).unwrap().len() as f64)).unwrap();
            }
        }
    }
}

/// The GP is slower, so it gets fewer cases, with the model active (12 finished trials).
#[test]
fn gp_stays_valid_on_random_spaces() {
    let mut rng = TunerRng::seed_from_u64(12);
    for case in 0..25 {
        let js = random_space(&mut rng);
        let space = SearchSpace::from_json(&js).unwrap();
        let mut st = Study::new(space.clone(), Direction::Maximize, case, SamplerKind::Gp.build(case, None), Box::new(Fifo));
        for _ in 0..13 {
            let (n, p) = st.ask();
            assert!(space.check(&p).is_ok(), "case {case}: {p:?} invalid for {js}");
            st.tell(n, Outcome::Complete(serde_json::to_string(&p).unwrap().len() as f64)).unwrap();
        }
    }
}

/// Internal coordinates: every valid value maps into the internal bounds and back to itself,
/// and any internal coordinate (even out of range or NaN) maps to a valid value.
#[test]
fn internal_transform_round_trips() {
    let mut rng = TunerRng::seed_from_u64(13);
    for case in 0..400 {
        let spec = random_spec(&mut rng);
        let space = SearchSpace::from_json(&json!({ "p": spec })).unwrap();
        let dist = &space.params()[0].dist;
        if !dist.is_numeric() {
            continue;
        }
        let (a, b) = dist.internal_bounds();
        assert!(a < b, "case {case}: {spec}");
        for _ in 0..20 {
            let x = a + (b - a) * rng.random::<f64>();
            let v = dist.from_internal(x);
            assert!(dist.contains(&v), "case {case}: {v} from {x} not in {spec}");
            let back = dist.from_internal(dist.to_internal(&v).unwrap());
            assert_eq!(back, v, "case {case}: {spec}");
            if let Some((lo, hi)) = dist.bin(x) {
                // The bin of a grid value contains the coordinate that produced it.
                assert!(lo <= x + 1e-9 && x <= hi + 1e-9, "case {case}: {x} not in bin [{lo}, {hi}] for {spec}");
            }
        }
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, a - 1e6, b + 1e6] {
            assert!(dist.contains(&dist.from_internal(x)), "case {case}: {x} for {spec}");
        }
        if let (Some(c), Distribution::Int { low, high, step, .. }) = (dist.cardinality(), dist) {
            assert_eq!(c as i64, (high - low) / step + 1);
        }
    }
}

/// Breaking a valid spec in one field is always rejected, with a message naming that field.
#[test]
fn invalid_specs_are_rejected_naming_the_field() {
    let mut rng = TunerRng::seed_from_u64(14);
    let mut checked = 0;
    for case in 0..400 {
        let mut spec = random_spec(&mut rng);
        let ty = spec["type"].as_str().unwrap().to_owned();
        let (field, expect) = match (ty.as_str(), rng.random_range(0..3)) {
            ("categorical", 0) => {
                spec["choices"] = json!([]);
                ("choices", "`p.choices`")
            }
            ("categorical", 1) => {
                let c = spec["choices"][0].clone();
                spec["choices"].as_array_mut().unwrap().push(c);
                ("choices", "is a duplicate")
            }
            ("categorical", _) => {
                spec["choices"] = json!([[1, 2]]);
                ("choices", "`p.choices[0]`")
            }
            (_, 0) => {
                spec["high"] = spec["low"].clone();
                ("low/high", "`p.low` must be < `p.high`")
            }
            (_, 1) if spec.get("log") == Some(&json!(true)) => {
                spec["low"] = json!(0);
                ("log", "`p.low` must be > 0")
            }
            (_, _) => {
                spec["step"] = json!(0);
                ("step", "`p.step`")
            }
        };
        let err = SearchSpace::from_json(&json!({ "p": spec })).expect_err(&format!("case {case}: {spec} accepted"));
        assert!(err.to_string().contains(expect), "case {case} ({field}): {spec} -> {err}");
        checked += 1;
    }
    assert_eq!(checked, 400);
}

/// Conditions that point at a missing, non-categorical or cyclic parent are rejected, with the
/// child's `condition` field named.
#[test]
fn invalid_conditions_are_rejected() {
    let cases = [
        (json!({"x": {"type": "float", "low": 0, "high": 1, "condition": {"parent": "nope", "values": ["a"]}}}), "`x.condition.parent`"),
        (
            json!({"p": {"type": "int", "low": 0, "high": 3},
                   "x": {"type": "float", "low": 0, "high": 1, "condition": {"parent": "p", "values": [1]}}}),
            "`x.condition.parent`",
        ),
        (
            json!({"c": {"type": "categorical", "choices": ["a"]},
                   "x": {"type": "float", "low": 0, "high": 1, "condition": {"parent": "c", "values": ["z"]}}}),
            "`x.condition.values`",
        ),
        (
            json!({"c": {"type": "categorical", "choices": ["a"]},
                   "x": {"type": "float", "low": 0, "high": 1, "condition": {"parent": "c", "values": []}}}),
            "`x.condition.values`",
        ),
        (
            json!({"a": {"type": "categorical", "choices": [1], "condition": {"parent": "c", "values": [1]}},
                   "b": {"type": "categorical", "choices": [1], "condition": {"parent": "a", "values": [1]}},
                   "c": {"type": "categorical", "choices": [1], "condition": {"parent": "b", "values": [1]}}}),
            "forms a cycle",
        ),
        (json!({"x": {"type": "float", "low": 0, "high": 1, "log": "yes"}}), "`x.log`"),
        (json!({"x": {"type": "int", "low": 0.5, "high": 3}}), "`x.low`"),
        (json!({"x": {"type": "float", "low": 1e-3, "high": 1, "log": true, "step": 0.1}}), "`x.step`"),
        (json!({"x": {"type": "int", "low": 1, "high": 30, "log": true, "step": 2}}), "`x.step`"),
        (json!({}), "at least one parameter"),
        (json!([1]), "JSON object"),
    ];
    for (js, expect) in cases {
        let err = SearchSpace::from_json(&js).expect_err(&js.to_string()).to_string();
        assert!(err.contains(expect), "{js} -> {err}");
    }
}

/// History views: scores order by direction, NaN ranks worst, `best` ties go to the lower number.
#[test]
fn history_scores_and_best() {
    let space = SearchSpace::from_json(&json!({"x": {"type": "float", "low": 0, "high": 1}})).unwrap();
    for dir in [Direction::Minimize, Direction::Maximize] {
        let mut st = Study::new(space.clone(), dir, 0, SamplerKind::Random.build(0, None), Box::new(Fifo));
        for v in [3.0, f64::NAN, 1.0, 5.0, 1.0] {
            let (n, _) = st.ask();
            st.tell(n, Outcome::Complete(v)).unwrap();
        }
        let best = st.best().unwrap();
        let h: History<'_> = st.history();
        assert_eq!(h.score(f64::NAN), f64::INFINITY);
        match dir {
            Direction::Minimize => assert_eq!(best.number, 2),
            Direction::Maximize => assert_eq!(best.number, 3),
        }
        assert_eq!(h.n_finished(), 4, "NaN is recorded as failed");
    }
}
