//! Search spaces: the SPACE JSON of `hpo_bench.py`, extended with conditional parameters.
//!
//! This module owns parsing, validation and the value transforms every sampler shares
//! (log scale, int/step grids, activation of conditional parameters). It never samples.
//!
//! JSON form (one object, parameter name -> spec):
//! ```json
//! {"lr":  {"type": "float", "low": 1e-5, "high": 1.0, "log": true},
//!  "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
//!  "momentum": {"type": "float", "low": 0.0, "high": 0.99,
//!               "condition": {"parent": "opt", "values": ["sgd"]}}}
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Parameter values of one trial, keyed by parameter name. Inactive conditional
/// parameters are absent.
pub type Params = BTreeMap<String, Value>;

/// Why a search space was rejected. Every message names the offending field in backticks.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpaceError {
    /// The JSON is not shaped like a SPACE object.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> SpaceError {
    SpaceError::Invalid(msg.into())
}

/// The distribution of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    /// A real number in `[low, high]`, optionally on a log scale or a `step` grid from `low`.
    Float {
        /// Inclusive lower bound.
        low: f64,
        /// Inclusive upper bound.
        high: f64,
        /// Sample uniformly in `ln(x)` (requires `low > 0`; excludes `step`).
        log: bool,
        /// Grid spacing from `low`; values are `low + k * step <= high`.
        step: Option<f64>,
    },
    /// An integer in `[low, high]`, optionally on a log scale or a `step` grid from `low`.
    Int {
        /// Inclusive lower bound.
        low: i64,
        /// Inclusive upper bound (rounded down onto the step grid).
        high: i64,
        /// Sample uniformly in `ln(x)` (requires `low >= 1` and `step == 1`).
        log: bool,
        /// Grid spacing from `low` (>= 1).
        step: i64,
    },
    /// One of a list of JSON scalars.
    Categorical {
        /// The choices, in the order given (the order is used by grid and QMC samplers).
        choices: Vec<Value>,
    },
}

/// A parameter that is only active when a categorical `parent` takes one of `values`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// Name of the categorical parent parameter.
    pub parent: String,
    /// Parent values under which this parameter is active.
    pub values: Vec<Value>,
}

/// One named parameter of a space.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// Parameter name (the key in [`Params`]).
    pub name: String,
    /// Its distribution.
    pub dist: Distribution,
    /// Activation condition; `None` means always active.
    pub condition: Option<Condition>,
}

/// A validated search space. Parameters are stored parents-before-children, and by name
/// among parameters at the same depth, so every sampler iterates them in the same order.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchSpace {
    params: Vec<ParamSpec>,
}

impl Distribution {
    /// Whether the parameter is numeric (float or int).
    pub fn is_numeric(&self) -> bool {
        !matches!(self, Distribution::Categorical { .. })
    }

    /// Bounds of the internal, continuous representation: `ln` for log scale, widened by half a
    /// step for int/step grids so that every grid point owns an equal-width bin (Optuna's rule).
    /// Panics on categorical distributions.
    pub fn internal_bounds(&self) -> (f64, f64) {
        match *self {
            Distribution::Float { low, high, log: true, .. } => (low.ln(), high.ln()),
            Distribution::Float { low, high, step: Some(s), .. } => {
                (low - s / 2.0, grid_high(low, high, s) + s / 2.0)
            }
            Distribution::Float { low, high, .. } => (low, high),
            Distribution::Int { low, high, log: true, .. } => {
                ((low as f64 - 0.5).ln(), (high as f64 + 0.5).ln())
            }
            Distribution::Int { low, high, step, .. } => {
                let hi = low + (high - low) / step * step;
                (low as f64 - step as f64 / 2.0, hi as f64 + step as f64 / 2.0)
            }
            Distribution::Categorical { .. } => panic!("categorical has no internal bounds"),
        }
    }

    /// Maps an internal coordinate (see [`Self::internal_bounds`]) to a valid value of the
    /// distribution: clamps, inverts the log, and rounds onto the int/step grid.
    pub fn from_internal(&self, x: f64) -> Value {
        let (a, b) = self.internal_bounds();
        // NaN would otherwise survive clamp(); map it to the centre, which is always valid.
        let x = if x.is_nan() { (a + b) / 2.0 } else { x.clamp(a, b) };
        match *self {
            Distribution::Float { low, high, log, step } => {
                let v = if log { x.exp() } else { x };
                let v = match step {
                    Some(s) => low + ((v - low) / s).round() * s,
                    None => v,
                };
                let hi = step.map_or(high, |s| grid_high(low, high, s));
                json_f64(v.clamp(low, hi))
            }
            Distribution::Int { low, high, log, step } => {
                let v = if log { x.exp() } else { x };
                let k = ((v - low as f64) / step as f64).round() as i64;
                let hi = low + (high - low) / step * step;
                Value::from((low + k * step).clamp(low, hi))
            }
            Distribution::Categorical { .. } => panic!("categorical has no internal coordinate"),
        }
    }

    /// The internal coordinate of a numeric value, or `None` if it is not a number.
    pub fn to_internal(&self, v: &Value) -> Option<f64> {
        let x = v.as_f64()?;
        match *self {
            Distribution::Float { log: true, .. } | Distribution::Int { log: true, .. } => {
                (x > 0.0).then(|| x.ln())
            }
            Distribution::Categorical { .. } => None,
            _ => Some(x),
        }
    }

    /// The bin of internal coordinates that rounds to the same grid value as internal `x`,
    /// or `None` for continuous distributions. Used for probability masses of discrete values.
    pub fn bin(&self, x: f64) -> Option<(f64, f64)> {
        let (a, b) = self.internal_bounds();
        let v = self.from_internal(x).as_f64()?;
        let (lo, hi) = match *self {
            Distribution::Float { step: Some(s), .. } => (v - s / 2.0, v + s / 2.0),
            Distribution::Int { log: true, .. } => ((v - 0.5).ln(), (v + 0.5).ln()),
            Distribution::Int { step, .. } => (v - step as f64 / 2.0, v + step as f64 / 2.0),
            _ => return None,
        };
        Some((lo.max(a), hi.min(b)))
    }

    /// Whether `v` is a valid value of this distribution (in bounds, on the grid, a choice).
    pub fn contains(&self, v: &Value) -> bool {
        match *self {
            Distribution::Float { low, high, step, .. } => match v.as_f64() {
                Some(x) if x.is_finite() && x >= low && x <= high => match step {
                    Some(s) => {
                        let k = (x - low) / s;
                        (k - k.round()).abs() <= 1e-6 * k.abs().max(1.0)
                    }
                    None => true,
                },
                _ => false,
            },
            Distribution::Int { low, high, step, .. } => match v.as_i64() {
                Some(x) => x >= low && x <= high && (x - low) % step == 0,
                None => false,
            },
            Distribution::Categorical { ref choices } => choices.iter().any(|c| c == v),
        }
    }

    /// Number of distinct values, or `None` for continuous distributions.
    pub fn cardinality(&self) -> Option<u64> {
        match *self {
            Distribution::Float { low, high, step: Some(s), .. } => {
                Some(((high - low) / s + 1e-9).floor() as u64 + 1)
            }
            Distribution::Float { .. } => None,
            Distribution::Int { low, high, step, .. } => Some(((high - low) / step) as u64 + 1),
            Distribution::Categorical { ref choices } => Some(choices.len() as u64),
        }
    }
}

/// Largest grid point `low + k*step` that does not exceed `high`.
fn grid_high(low: f64, high: f64, step: f64) -> f64 {
    low + ((high - low) / step + 1e-9).floor() * step
}

/// A JSON number for a finite float (`Value::from(f64)` maps NaN to null; our values are finite).
fn json_f64(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

impl SearchSpace {
    /// Parses and validates the SPACE JSON (an object of parameter specs).
    pub fn from_json(v: &Value) -> Result<Self, SpaceError> {
        let obj = v.as_object().ok_or_else(|| invalid("search space must be a JSON object"))?;
        let mut params = Vec::with_capacity(obj.len());
        // serde_json's Map is a BTreeMap here, so keys are visited in name order.
        for (name, spec) in obj {
            params.push(parse_param(name, spec)?);
        }
        Self::new(params)
    }

    /// Parses a SPACE JSON string.
    pub fn from_json_str(s: &str) -> Result<Self, SpaceError> {
        let v: Value = serde_json::from_str(s).map_err(|e| invalid(format!("invalid JSON: {e}")))?;
        Self::from_json(&v)
    }

    /// Validates already-built specs: unique names, known categorical parents whose `values`
    /// are among their choices, and no cycles. Reorders parents before children.
    pub fn new(params: Vec<ParamSpec>) -> Result<Self, SpaceError> {
        if params.is_empty() {
            return Err(invalid("search space must have at least one parameter"));
        }
        let mut by_name: BTreeMap<&str, &ParamSpec> = BTreeMap::new();
        for p in &params {
            validate_dist(&p.name, &p.dist)?;
            if by_name.insert(p.name.as_str(), p).is_some() {
                return Err(invalid(format!("`{}` is defined twice", p.name)));
            }
        }
        for p in &params {
            let Some(c) = &p.condition else { continue };
            let parent = by_name.get(c.parent.as_str()).ok_or_else(|| {
                invalid(format!("`{}.condition.parent` names unknown parameter `{}`", p.name, c.parent))
            })?;
            let Distribution::Categorical { choices } = &parent.dist else {
                return Err(invalid(format!(
                    "`{}.condition.parent`: `{}` is not categorical",
                    p.name, c.parent
                )));
            };
            if c.values.is_empty() {
                return Err(invalid(format!("`{}.condition.values` must not be empty", p.name)));
            }
            if let Some(bad) = c.values.iter().find(|v| !choices.contains(v)) {
                return Err(invalid(format!(
                    "`{}.condition.values`: {bad} is not a choice of `{}`",
                    p.name, c.parent
                )));
            }
        }
        // Depth by walking parents; a walk longer than the number of params is a cycle.
        let mut depth: BTreeMap<String, usize> = BTreeMap::new();
        for p in &params {
            let mut d = 0;
            let mut cur: &ParamSpec = p;
            while let Some(c) = &cur.condition {
                d += 1;
                if d > params.len() {
                    return Err(invalid(format!("`{}.condition` forms a cycle", p.name)));
                }
                cur = by_name[c.parent.as_str()];
            }
            depth.insert(p.name.clone(), d);
        }
        drop(by_name);
        let mut params = params;
        params.sort_by(|a, b| depth[&a.name].cmp(&depth[&b.name]).then(a.name.cmp(&b.name)));
        Ok(SearchSpace { params })
    }

    /// Parameters, parents before children.
    pub fn params(&self) -> &[ParamSpec] {
        &self.params
    }

    /// Looks a parameter up by name.
    pub fn get(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Whether any parameter is conditional.
    pub fn is_conditional(&self) -> bool {
        self.params.iter().any(|p| p.condition.is_some())
    }

    /// Whether `spec` is active given the (partial) params chosen so far. Because parents come
    /// first, calling this while filling params in order sees every parent already decided.
    pub fn is_active(&self, spec: &ParamSpec, params: &Params) -> bool {
        match &spec.condition {
            None => true,
            Some(c) => params.get(&c.parent).is_some_and(|v| c.values.contains(v)),
        }
    }

    /// Checks that `params` holds exactly the active parameters, each with a valid value.
    pub fn check(&self, params: &Params) -> Result<(), SpaceError> {
        let mut seen = BTreeSet::new();
        for spec in &self.params {
            let active = self.is_active(spec, params);
            match (active, params.get(&spec.name)) {
                (true, Some(v)) if spec.dist.contains(v) => {}
                (true, Some(v)) => {
                    return Err(invalid(format!("`{}`: {v} is out of range", spec.name)));
                }
                (true, None) => return Err(invalid(format!("`{}` is missing", spec.name))),
                (false, Some(_)) => {
                    return Err(invalid(format!("`{}` is set but inactive", spec.name)));
                }
                (false, None) => {}
            }
            seen.insert(spec.name.as_str());
        }
        if let Some(extra) = params.keys().find(|k| !seen.contains(k.as_str())) {
            return Err(invalid(format!("`{extra}` is not in the search space")));
        }
        Ok(())
    }
}

fn validate_dist(name: &str, d: &Distribution) -> Result<(), SpaceError> {
    match *d {
        Distribution::Float { low, high, log, step } => {
            if !low.is_finite() {
                return Err(invalid(format!("`{name}.low` must be finite")));
            }
            if !high.is_finite() {
                return Err(invalid(format!("`{name}.high` must be finite")));
            }
            if low >= high {
                return Err(invalid(format!("`{name}.low` must be < `{name}.high`")));
            }
            if log && low <= 0.0 {
                return Err(invalid(format!("`{name}.low` must be > 0 when `{name}.log` is true")));
            }
            if let Some(s) = step {
                if !(s.is_finite() && s > 0.0) {
                    return Err(invalid(format!("`{name}.step` must be > 0")));
                }
                if log {
                    return Err(invalid(format!("`{name}.step` cannot be combined with `{name}.log`")));
                }
            }
        }
        Distribution::Int { low, high, log, step } => {
            if low >= high {
                return Err(invalid(format!("`{name}.low` must be < `{name}.high`")));
            }
            if log && low <= 0 {
                return Err(invalid(format!("`{name}.low` must be > 0 when `{name}.log` is true")));
            }
            if step < 1 {
                return Err(invalid(format!("`{name}.step` must be >= 1")));
            }
            if log && step != 1 {
                return Err(invalid(format!("`{name}.step` must be 1 when `{name}.log` is true")));
            }
        }
        Distribution::Categorical { ref choices } => {
            if choices.is_empty() {
                return Err(invalid(format!("`{name}.choices` must not be empty")));
            }
            for (i, c) in choices.iter().enumerate() {
                if c.is_array() || c.is_object() {
                    return Err(invalid(format!("`{name}.choices[{i}]` must be a JSON scalar")));
                }
                if choices[..i].contains(c) {
                    return Err(invalid(format!("`{name}.choices[{i}]` is a duplicate")));
                }
            }
        }
    }
    Ok(())
}

fn parse_param(name: &str, spec: &Value) -> Result<ParamSpec, SpaceError> {
    let obj = spec.as_object().ok_or_else(|| invalid(format!("`{name}` must be an object")))?;
    let ty = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("`{name}.type` must be \"float\", \"int\" or \"categorical\"")))?;
    let num = |field: &str| -> Result<f64, SpaceError> {
        obj.get(field)
            .and_then(Value::as_f64)
            .ok_or_else(|| invalid(format!("`{name}.{field}` must be a number")))
    };
    let int = |field: &str| -> Result<i64, SpaceError> {
        let v = obj.get(field).ok_or_else(|| invalid(format!("`{name}.{field}` must be an integer")))?;
        v.as_i64()
            .or_else(|| v.as_f64().filter(|x| x.fract() == 0.0 && x.abs() < 9e15).map(|x| x as i64))
            .ok_or_else(|| invalid(format!("`{name}.{field}` must be an integer")))
    };
    let log = match obj.get("log") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid(format!("`{name}.log` must be a boolean"))),
    };
    let has_step = !matches!(obj.get("step"), None | Some(Value::Null));
    let dist = match ty {
        "float" => Distribution::Float {
            low: num("low")?,
            high: num("high")?,
            log,
            step: if has_step { Some(num("step")?) } else { None },
        },
        "int" => Distribution::Int {
            low: int("low")?,
            high: int("high")?,
            log,
            step: if has_step { int("step")? } else { 1 },
        },
        "categorical" => Distribution::Categorical {
            choices: obj
                .get("choices")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid(format!("`{name}.choices` must be an array")))?
                .clone(),
        },
        other => {
            return Err(invalid(format!(
                "`{name}.type` must be \"float\", \"int\" or \"categorical\", got {other:?}"
            )))
        }
    };
    let condition = match obj.get("condition") {
        None | Some(Value::Null) => None,
        Some(c) => {
            let parent = c
                .get("parent")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("`{name}.condition.parent` must be a string")))?;
            let values = c
                .get("values")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid(format!("`{name}.condition.values` must be an array")))?;
            Some(Condition { parent: parent.to_owned(), values: values.clone() })
        }
    };
    Ok(ParamSpec { name: name.to_owned(), dist, condition })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        SearchSpace::from_json(&v).unwrap_err().to_string()
    }

    #[test]
    fn parses_bench_space() {
        let s = SearchSpace::from_json(&json!({
            "optimizer": {"type": "categorical", "choices": ["sgd", "adam", "rmsprop"]},
            "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": true},
            "layers": {"type": "int", "low": 1, "high": 8, "log": false},
        }))
        .unwrap();
        let names: Vec<_> = s.params().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["layers", "lr", "optimizer"]);
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err(json!({"x": {"type": "float", "low": 1.0, "high": 1.0}})).contains("`x.low`"));
        assert!(err(json!({"x": {"type": "float", "low": 0.0, "high": 1.0, "log": true}}))
            .contains("`x.low` must be > 0"));
        assert!(err(json!({"c": {"type": "categorical", "choices": []}})).contains("`c.choices`"));
        assert!(err(json!({"x": {"type": "float", "low": 0, "high": 1,
            "condition": {"parent": "nope", "values": ["a"]}}}))
        .contains("`x.condition.parent`"));
        assert!(err(json!({"p": {"type": "int", "low": 0, "high": 3},
            "x": {"type": "float", "low": 0, "high": 1, "condition": {"parent": "p", "values": [1]}}}))
        .contains("not categorical"));
        assert!(err(json!({
            "a": {"type": "categorical", "choices": [1, 2], "condition": {"parent": "b", "values": [1]}},
            "b": {"type": "categorical", "choices": [1, 2], "condition": {"parent": "a", "values": [1]}}}))
        .contains("cycle"));
        assert!(err(json!({"x": {"type": "int", "low": 0, "high": 5, "step": 0}})).contains("`x.step`"));
        assert!(err(json!({"x": {"type": "bool"}})).contains("`x.type`"));
    }

    #[test]
    fn conditions_order_and_activation() {
        let s = SearchSpace::from_json(&json!({
            "a_momentum": {"type": "float", "low": 0.0, "high": 0.9,
                           "condition": {"parent": "opt", "values": ["sgd"]}},
            "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
        }))
        .unwrap();
        assert_eq!(s.params()[0].name, "opt");
        let mut p = Params::new();
        p.insert("opt".into(), json!("adam"));
        assert!(s.check(&p).is_ok());
        p.insert("a_momentum".into(), json!(0.5));
        assert!(s.check(&p).unwrap_err().to_string().contains("inactive"));
        p.insert("opt".into(), json!("sgd"));
        assert!(s.check(&p).is_ok());
    }

    #[test]
    fn int_step_and_log_transforms() {
        let d = Distribution::Int { low: 2, high: 11, log: false, step: 3 };
        assert_eq!(d.internal_bounds(), (0.5, 12.5));
        assert_eq!(d.from_internal(12.4), json!(11));
        assert_eq!(d.from_internal(6.0), json!(5));
        assert_eq!(d.cardinality(), Some(4));
        let d = Distribution::Float { low: 0.0, high: 1.0, log: false, step: Some(0.25) };
        assert_eq!(d.from_internal(0.3), json!(0.25));
        assert!(d.contains(&json!(0.75)) && !d.contains(&json!(0.7)));
        let d = Distribution::Int { low: 1, high: 100, log: true, step: 1 };
        assert_eq!(d.from_internal(f64::NAN).as_i64().map(|v| (1..=100).contains(&v)), Some(true));
    }
}
