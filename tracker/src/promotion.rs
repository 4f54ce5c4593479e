//! Promotion gates: the rules stored with a registered model that a version must pass before
//! `promote` points an alias at it. This module parses and judges rules; the store reads the
//! values they need (`store::promotion`).
//!
//! Grammar, one rule per string:
//!
//! * `metrics.<key> <op> <number>`: the latest value of the metric in the version's source run;
//! * `params.<key> <op> <number>`: the param of the source run, read as a number;
//! * `no_regression(metrics.<key>, lower|higher)`: the metric must not be worse than that of the
//!   version now holding the alias, where `lower` (or `min`) means lower is better and `higher`
//!   (or `max`) means higher is better. When no version holds the alias yet, or the holder's
//!   source run lacks the metric, there is nothing to regress against and the version only needs
//!   the metric.
//!
//! `<op>` is one of `>=`, `>`, `<=`, `<`, `==`, `!=`. A missing metric or param, a param that is
//! not a number, and NaN fail every comparison.

use std::fmt;

/// Where a rule reads its value.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// `metrics.<key>`: the latest value of a metric.
    Metric(String),
    /// `params.<key>`: a param, read as a number.
    Param(String),
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Metric(k) => write!(f, "metrics.{k}"),
            Field::Param(k) => write!(f, "params.{k}"),
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
    Ne,
}

impl Op {
    const ALL: [(&'static str, Op); 6] = [(">=", Op::Ge), ("<=", Op::Le), ("==", Op::Eq), ("!=", Op::Ne), (">", Op::Gt), ("<", Op::Lt)];

    /// Whether `left <op> right` holds; false whenever either side is NaN.
    pub fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Op::Ge => left >= right,
            Op::Gt => left > right,
            Op::Le => left <= right,
            Op::Lt => left < right,
            Op::Eq => left == right,
            Op::Ne => !left.is_nan() && !right.is_nan() && left != right,
        }
    }
}

/// A parsed rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// `<field> <op> <number>`.
    Threshold { field: Field, op: Op, value: f64 },
    /// `no_regression(metrics.<key>, lower|higher)`.
    NoRegression { metric: String, lower_is_better: bool },
}

/// Parses one rule; the error says what is wrong with it.
pub fn parse_rule(text: &str) -> Result<Rule, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("a rule is empty".into());
    }
    if let Some(rest) = text.strip_prefix("no_regression") {
        let inner = rest.trim().strip_prefix('(').and_then(|r| r.strip_suffix(')')).ok_or("expected no_regression(metrics.<key>, lower|higher)")?;
        let (field, direction) = inner.rsplit_once(',').ok_or("expected no_regression(metrics.<key>, lower|higher)")?;
        let metric = match parse_field(field.trim())? {
            Field::Metric(k) => k,
            Field::Param(_) => return Err("no_regression compares a metric (metrics.<key>), not a param".into()),
        };
        let lower_is_better = match direction.trim().to_ascii_lowercase().as_str() {
            "lower" | "min" => true,
            "higher" | "max" => false,
            other => return Err(format!("direction '{other}' must be lower or higher")),
        };
        return Ok(Rule::NoRegression { metric, lower_is_better });
    }
    let (at, symbol, op) = Op::ALL
        .iter()
        .filter_map(|(s, op)| text.find(s).map(|i| (i, *s, *op)))
        // The leftmost operator; at one position the two-character one (listed first) wins.
        .min_by_key(|(i, s, _)| (*i, std::cmp::Reverse(s.len())))
        .ok_or("expected '<metrics.key|params.key> <op> <number>' with op one of >=, >, <=, <, ==, !=, or no_regression(metrics.<key>, lower|higher)")?;
    let field = parse_field(text[..at].trim())?;
    let number = text[at + symbol.len()..].trim();
    let value: f64 = number.parse().ok().filter(|v: &f64| v.is_finite()).ok_or_else(|| format!("'{number}' is not a finite number"))?;
    Ok(Rule::Threshold { field, op, value })
}

fn parse_field(text: &str) -> Result<Field, String> {
    let (kind, key) = text.split_once('.').ok_or_else(|| format!("'{text}' must be metrics.<key> or params.<key>"))?;
    let key = key.trim();
    if key.is_empty() || key.contains(['<', '>', '=', '!', '(', ')', ',']) {
        return Err(format!("'{text}' does not name a key"));
    }
    match kind.trim() {
        "metrics" => Ok(Field::Metric(key.to_owned())),
        "params" => Ok(Field::Param(key.to_owned())),
        other => Err(format!("'{other}' must be metrics or params")),
    }
}

/// Parses every rule, refusing the whole list at the first bad one.
pub fn parse_rules(texts: &[String]) -> Result<Vec<Rule>, String> {
    texts.iter().map(|t| parse_rule(t).map_err(|e| format!("Invalid promotion rule '{}': {e}", t.trim()))).collect()
}

/// The outcome of one rule: whether it passed and what it saw.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// The rule as stored.
    pub rule: String,
    /// Whether it passed.
    pub passed: bool,
    /// What it compared, for people.
    pub detail: String,
}

fn show(v: Option<f64>) -> String {
    v.map_or_else(|| "missing".to_owned(), |v| v.to_string())
}

/// Judges a threshold rule on the value found (`None`: missing or not a number).
pub fn judge_threshold(field: &Field, op: Op, bound: f64, found: Option<f64>) -> (bool, String) {
    let passed = found.is_some_and(|v| op.holds(v, bound));
    (passed, format!("{field} is {}", show(found)))
}

/// Judges a no-regression rule: the candidate's value against the holder's (`holder`: `None` when
/// no version holds the alias; its inner `None` when the holder lacks the metric).
pub fn judge_no_regression(metric: &str, lower_is_better: bool, candidate: Option<f64>, holder: Option<(i64, Option<f64>)>) -> (bool, String) {
    match holder {
        None => (candidate.is_some_and(|v| !v.is_nan()), format!("no version holds the alias; metrics.{metric} is {}", show(candidate))),
        Some((version, None)) => (
            candidate.is_some_and(|v| !v.is_nan()),
            format!("version {version} holding the alias has no metrics.{metric}, nothing to regress against; metrics.{metric} is {}", show(candidate)),
        ),
        Some((version, Some(base))) => {
            let passed = candidate.is_some_and(|v| if lower_is_better { v <= base } else { v >= base });
            (passed, format!("metrics.{metric} is {} against {base} of version {version}", show(candidate)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse() {
        assert_eq!(
            parse_rule("metrics.eval_exact_match >= 0.9").unwrap(),
            Rule::Threshold { field: Field::Metric("eval_exact_match".into()), op: Op::Ge, value: 0.9 }
        );
        assert_eq!(parse_rule("params.lora_r<16").unwrap(), Rule::Threshold { field: Field::Param("lora_r".into()), op: Op::Lt, value: 16.0 });
        assert_eq!(parse_rule(" metrics.a/b != -1e3 ").unwrap(), Rule::Threshold { field: Field::Metric("a/b".into()), op: Op::Ne, value: -1000.0 });
        assert_eq!(
            parse_rule("no_regression(metrics.eval_loss, lower)").unwrap(),
            Rule::NoRegression { metric: "eval_loss".into(), lower_is_better: true }
        );
        assert_eq!(parse_rule("no_regression( metrics.acc , HIGHER )").unwrap(), Rule::NoRegression { metric: "acc".into(), lower_is_better: false });
        for bad in ["", "metrics.x", "metrics.x >= abc", "metrics.x >= inf", "tags.x == 1", "metrics. >= 1", "x >= 1", "no_regression(params.x, lower)", "no_regression(metrics.x, sideways)", "no_regression(metrics.x)", "metrics.x >= 1 2"] {
            assert!(parse_rule(bad).is_err(), "{bad} should not parse");
        }
        assert!(parse_rules(&["metrics.a > 1".into(), "nonsense".into()]).unwrap_err().contains("'nonsense'"));
    }

    #[test]
    fn rules_judge() {
        assert!(judge_threshold(&Field::Metric("a".into()), Op::Ge, 0.9, Some(0.9)).0);
        assert!(!judge_threshold(&Field::Metric("a".into()), Op::Ge, 0.9, Some(0.89)).0);
        assert!(!judge_threshold(&Field::Metric("a".into()), Op::Ne, 0.9, Some(f64::NAN)).0);
        assert!(!judge_threshold(&Field::Metric("a".into()), Op::Ge, 0.9, None).0);
        assert!(judge_no_regression("loss", true, Some(0.5), Some((1, Some(0.6)))).0);
        assert!(!judge_no_regression("loss", true, Some(0.7), Some((1, Some(0.6)))).0);
        assert!(!judge_no_regression("acc", false, Some(0.5), Some((1, Some(0.6)))).0);
        assert!(judge_no_regression("acc", false, Some(0.5), None).0);
        assert!(!judge_no_regression("acc", false, None, Some((1, Some(0.6)))).0);
        assert!(judge_no_regression("acc", false, Some(0.1), Some((1, None))).0);
        assert!(!judge_no_regression("acc", false, None, Some((1, None))).0);
    }
}
