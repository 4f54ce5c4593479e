//! Parser for MLflow search strings: the `filter` and `order_by` fields of `runs/search` and
//! `experiments/search`.
//!
//! Pure: no SQL and no IO. `store::search_sql` turns the AST into SQL. The accepted language
//! follows MLflow's `SearchUtils` / `SearchExperimentsUtils`:
//!
//! * clauses are joined by `AND` (any case); there is no `OR` and no parentheses;
//! * an identifier is `<entity>.<key>` or a bare attribute key. Entity and key may each be
//!   backquoted or double-quoted (`` metrics.`a.b` ``, `params."x y"`, `` `Run name` ``); an
//!   unquoted key runs up to whitespace or a comparator, so `tags.mlflow.runName` has key
//!   `mlflow.runName`;
//! * string values use single or double quotes. Inside a string a doubled quote (`''`) or a
//!   backslash-quote (`\'`) stands for the quote; every other backslash is kept verbatim, as MLflow
//!   does (`'C:\tmp'` is the five characters `C:\tmp`);
//! * numbers are `[+-]digits[.digits][e[+-]digits]` (or `.5`);
//! * comparators are `> >= < <= = !=`, `LIKE`, `ILIKE`, `IN (...)`, `NOT IN (...)`, `IS NULL`,
//!   `IS NOT NULL` (keywords in any case), each allowed only where MLflow allows it.
//!
//! Every error is an [`SearchError`] whose message names the offending token; the HTTP layer
//! answers them with 400 `INVALID_PARAMETER_VALUE`.

use std::fmt;

/// A filter or order_by string that cannot be parsed or names something that cannot be searched.
/// The HTTP layer maps every variant to 400 `INVALID_PARAMETER_VALUE` with `to_string()` as the
/// message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SearchError {
    /// Malformed text: unterminated quote, missing comparator, a clause joined by something
    /// other than `AND`, and so on.
    #[error("{0}")]
    Syntax(String),
    /// Unknown entity type (`foo.x`) or attribute key (`attributes.foo`).
    #[error("{0}")]
    InvalidIdentifier(String),
    /// A comparator the identifier does not support (`metrics.x LIKE ...`).
    #[error("{0}")]
    InvalidComparator(String),
    /// A value of the wrong type (`metrics.x > 'a'`, `params.p = 1`, `status IN ('a')`).
    #[error("{0}")]
    InvalidValue(String),
    /// A malformed or unsupported `order_by` entry.
    #[error("{0}")]
    InvalidOrderBy(String),
}

type Result<T> = std::result::Result<T, SearchError>;

// ---------------------------------------------------------------------------------------------
// AST
// ---------------------------------------------------------------------------------------------

/// Numeric comparison, for metrics and numeric attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumOp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl NumOp {
    /// The SQL operator.
    pub fn as_sql(self) -> &'static str {
        match self {
            NumOp::Gt => ">",
            NumOp::Ge => ">=",
            NumOp::Lt => "<",
            NumOp::Le => "<=",
            NumOp::Eq => "=",
            NumOp::Ne => "<>",
        }
    }
}

/// String comparison. `Like` is case-sensitive, `ILike` case-insensitive; both use SQL LIKE
/// wildcards (`%`, `_`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrOp {
    Eq,
    Ne,
    Like,
    ILike,
}

/// Condition on a string column that also accepts lists (`run_id`, dataset fields).
#[derive(Clone, Debug, PartialEq)]
pub enum StrCond {
    Cmp(StrOp, String),
    /// Non-empty.
    In(Vec<String>),
    /// Non-empty.
    NotIn(Vec<String>),
}

/// Condition on a keyed string value (params and tags).
///
/// `Cmp` requires the key to be present (so `!=` means "present and different"); `IsNull`
/// means the key is absent, `IsNotNull` that it is present.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyCond {
    Cmp(StrOp, String),
    IsNull,
    IsNotNull,
}

/// A numeric literal compared with an integer column: integers stay exact.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    Int(i64),
    Float(f64),
}

/// Searchable and orderable run attributes (`attributes.<key>` or a bare key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunAttribute {
    RunId,
    /// Also spelled `` `Run name` `` / `"Run Name"`.
    RunName,
    Status,
    UserId,
    ArtifactUri,
    LifecycleStage,
    /// Also spelled `created` / `Created`.
    StartTime,
    EndTime,
}

impl RunAttribute {
    /// start_time and end_time; the others are strings.
    pub fn is_numeric(self) -> bool {
        matches!(self, RunAttribute::StartTime | RunAttribute::EndTime)
    }

    /// The canonical MLflow key.
    pub fn name(self) -> &'static str {
        match self {
            RunAttribute::RunId => "run_id",
            RunAttribute::RunName => "run_name",
            RunAttribute::Status => "status",
            RunAttribute::UserId => "user_id",
            RunAttribute::ArtifactUri => "artifact_uri",
            RunAttribute::LifecycleStage => "lifecycle_stage",
            RunAttribute::StartTime => "start_time",
            RunAttribute::EndTime => "end_time",
        }
    }

    fn from_key(key: &str) -> Option<RunAttribute> {
        Some(match key {
            "run_id" => RunAttribute::RunId,
            "run_name" | "run name" | "Run name" | "Run Name" => RunAttribute::RunName,
            "status" => RunAttribute::Status,
            "user_id" => RunAttribute::UserId,
            "artifact_uri" => RunAttribute::ArtifactUri,
            "lifecycle_stage" => RunAttribute::LifecycleStage,
            "start_time" | "created" | "Created" => RunAttribute::StartTime,
            "end_time" => RunAttribute::EndTime,
            _ => return None,
        })
    }
}

const RUN_ATTRIBUTE_KEYS: &str = "['artifact_uri', 'created', 'end_time', 'lifecycle_stage', \
                                  'run_id', 'run_name', 'start_time', 'status', 'user_id']";

/// `datasets.<field>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetField {
    Name,
    Digest,
    /// The `mlflow.data.context` tag of the run's dataset input.
    Context,
}

/// One `AND`-ed clause of a `runs/search` filter.
#[derive(Clone, Debug, PartialEq)]
pub enum RunClause {
    /// The run's latest value of metric `key` compared with `value`. A NaN latest value
    /// satisfies only `Ne`.
    Metric {
        key: String,
        op: NumOp,
        value: f64,
    },
    Param {
        key: String,
        cond: KeyCond,
    },
    Tag {
        key: String,
        cond: KeyCond,
    },
    /// `attr` is a string attribute; `In` / `NotIn` occur only with `RunAttribute::RunId`.
    StringAttribute {
        attr: RunAttribute,
        cond: StrCond,
    },
    /// `attr` is `StartTime` or `EndTime` (a run with no end_time never matches).
    NumericAttribute {
        attr: RunAttribute,
        op: NumOp,
        value: Number,
    },
    /// Matches when some dataset input of the run satisfies `cond`.
    Dataset {
        field: DatasetField,
        cond: StrCond,
    },
}

/// What a `runs/search` order_by entry sorts on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RunOrderKey {
    Metric(String),
    Param(String),
    Tag(String),
    Attribute(RunAttribute),
}

/// One `runs/search` order_by entry. Missing values sort last in both directions (and NaN
/// metrics just before them).
#[derive(Clone, Debug, PartialEq)]
pub struct RunOrder {
    pub key: RunOrderKey,
    pub ascending: bool,
}

/// Searchable and orderable experiment attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExperimentAttribute {
    ExperimentId,
    Name,
    CreationTime,
    LastUpdateTime,
}

impl ExperimentAttribute {
    pub fn name(self) -> &'static str {
        match self {
            ExperimentAttribute::ExperimentId => "experiment_id",
            ExperimentAttribute::Name => "name",
            ExperimentAttribute::CreationTime => "creation_time",
            ExperimentAttribute::LastUpdateTime => "last_update_time",
        }
    }

    fn from_key(key: &str) -> Option<ExperimentAttribute> {
        Some(match key {
            "experiment_id" => ExperimentAttribute::ExperimentId,
            "name" => ExperimentAttribute::Name,
            "creation_time" => ExperimentAttribute::CreationTime,
            "last_update_time" => ExperimentAttribute::LastUpdateTime,
            _ => return None,
        })
    }
}

const EXPERIMENT_ATTRIBUTE_KEYS: &str =
    "['creation_time', 'experiment_id', 'last_update_time', 'name']";

/// One `AND`-ed clause of an `experiments/search` filter.
#[derive(Clone, Debug, PartialEq)]
pub enum ExperimentClause {
    Name(StrOp, String),
    /// `experiment_id = / != / IN / NOT IN`; `ids` is non-empty. `negated` for `!=` / `NOT IN`.
    ExperimentId {
        ids: Vec<i64>,
        negated: bool,
    },
    /// `attr` is `CreationTime` or `LastUpdateTime`.
    NumericAttribute {
        attr: ExperimentAttribute,
        op: NumOp,
        value: Number,
    },
    Tag {
        key: String,
        cond: KeyCond,
    },
}

/// One `experiments/search` order_by entry.
#[derive(Clone, Debug, PartialEq)]
pub struct ExperimentOrder {
    pub attr: ExperimentAttribute,
    pub ascending: bool,
}

// ---------------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------------

/// Parses a `runs/search` filter. An empty or all-whitespace filter yields no clauses.
pub fn parse_run_filter(filter: &str) -> Result<Vec<RunClause>> {
    parse_clauses(filter)?.into_iter().map(run_clause).collect()
}

/// Parses `runs/search` order_by entries (`metrics.acc DESC`, `params.p`, `start_time ASC`, ...).
/// Ascending is the default. The same key twice is an error, as in MLflow.
pub fn parse_run_order_by(order_by: &[String]) -> Result<Vec<RunOrder>> {
    let mut out: Vec<RunOrder> = Vec::with_capacity(order_by.len());
    for text in order_by {
        let (ident, ascending) = parse_order_entry(text)?;
        let key = match run_entity(&ident)? {
            RunEntity::Metric => RunOrderKey::Metric(ident.key),
            RunEntity::Param => RunOrderKey::Param(ident.key),
            RunEntity::Tag => RunOrderKey::Tag(ident.key),
            RunEntity::Attribute => RunOrderKey::Attribute(run_attribute(&ident.key)?),
            RunEntity::Dataset => {
                return Err(SearchError::InvalidOrderBy(format!(
                    "Invalid order_by entity type 'dataset' in order_by clause '{text}'"
                )))
            }
        };
        if out.iter().any(|o| o.key == key) {
            return Err(SearchError::InvalidOrderBy(format!(
                "`order_by` contains duplicate fields: {}",
                py_list(order_by)
            )));
        }
        out.push(RunOrder { key, ascending });
    }
    Ok(out)
}

/// Parses an `experiments/search` filter: attributes `name` (`= != LIKE ILIKE`),
/// `experiment_id` (`= != IN NOT IN`), `creation_time` / `last_update_time` (numeric), and
/// `tags.<key>` (`= != LIKE ILIKE IS NULL IS NOT NULL`).
pub fn parse_experiment_filter(filter: &str) -> Result<Vec<ExperimentClause>> {
    parse_clauses(filter)?
        .into_iter()
        .map(experiment_clause)
        .collect()
}

/// Parses `experiments/search` order_by entries (attributes only).
pub fn parse_experiment_order_by(order_by: &[String]) -> Result<Vec<ExperimentOrder>> {
    let mut out: Vec<ExperimentOrder> = Vec::with_capacity(order_by.len());
    for text in order_by {
        let (ident, ascending) = parse_order_entry(text)?;
        match experiment_entity(&ident)? {
            ExperimentEntity::Attribute => {}
            ExperimentEntity::Tag => {
                return Err(SearchError::InvalidOrderBy(format!(
                    "Invalid order_by entity: tag (in order_by clause '{text}')"
                )))
            }
        }
        let attr = experiment_attribute(&ident.key)?;
        if out.iter().any(|o| o.attr == attr) {
            return Err(SearchError::InvalidOrderBy(format!(
                "`order_by` contains duplicate fields: {}",
                py_list(order_by)
            )));
        }
        out.push(ExperimentOrder { attr, ascending });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Generic clause syntax: identifier, comparator, value
// ---------------------------------------------------------------------------------------------

/// `<entity>.<key>` or `<key>`, quotes removed.
#[derive(Debug, Clone)]
struct Ident {
    entity: Option<String>,
    key: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
    Like,
    ILike,
    In,
    NotIn,
    IsNull,
    IsNotNull,
    /// Recognised as a comparator but never valid (`==`, `<>`, `NOT LIKE`).
    Other(String),
}

impl fmt::Display for Cmp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Eq => "=",
            Cmp::Ne => "!=",
            Cmp::Like => "LIKE",
            Cmp::ILike => "ILIKE",
            Cmp::In => "IN",
            Cmp::NotIn => "NOT IN",
            Cmp::IsNull => "IS NULL",
            Cmp::IsNotNull => "IS NOT NULL",
            Cmp::Other(s) => s,
        })
    }
}

impl Cmp {
    fn num_op(&self) -> Option<NumOp> {
        Some(match self {
            Cmp::Gt => NumOp::Gt,
            Cmp::Ge => NumOp::Ge,
            Cmp::Lt => NumOp::Lt,
            Cmp::Le => NumOp::Le,
            Cmp::Eq => NumOp::Eq,
            Cmp::Ne => NumOp::Ne,
            _ => return None,
        })
    }

    fn str_op(&self) -> Option<StrOp> {
        Some(match self {
            Cmp::Eq => StrOp::Eq,
            Cmp::Ne => StrOp::Ne,
            Cmp::Like => StrOp::Like,
            Cmp::ILike => StrOp::ILike,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
enum ValueKind {
    Str(String),
    Num(f64, Number),
    List(Vec<String>),
    /// Anything else (an unquoted word).
    Bare,
    /// `IS NULL` / `IS NOT NULL` take no value.
    None,
}

#[derive(Debug, Clone)]
struct Value {
    kind: ValueKind,
    /// Source text, for error messages.
    raw: String,
}

#[derive(Debug, Clone)]
struct Clause {
    ident: Ident,
    cmp: Cmp,
    value: Value,
}

const METRIC_COMPARATORS: &str = "['>', '>=', '<', '<=', '=', '!=']";
const KEYED_COMPARATORS: &str = "['=', '!=', 'LIKE', 'ILIKE', 'IS NULL', 'IS NOT NULL']";
const STRING_ATTRIBUTE_COMPARATORS: &str = "['=', '!=', 'LIKE', 'ILIKE', 'IN', 'NOT IN']";
const STRING_COMPARATORS: &str = "['=', '!=', 'LIKE', 'ILIKE']";
const ID_COMPARATORS: &str = "['=', '!=', 'IN', 'NOT IN']";

fn invalid_comparator(cmp: &Cmp, valid: &str) -> SearchError {
    SearchError::InvalidComparator(format!("Invalid comparator '{cmp}' not one of '{valid}'"))
}

fn is_special(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '=' | '!' | '<' | '>' | '(' | ')' | ',' | '\'' | '"' | '`'
        )
}

struct Cursor<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(src: &'a str) -> Self {
        Cursor { src, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    /// Reads while `pred` holds.
    fn take_while(&mut self, pred: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.bump();
        }
        &self.src[start..self.pos]
    }

    /// A run of letters (comparator and connective keywords).
    fn word(&mut self) -> &'a str {
        self.take_while(|c| c.is_ascii_alphabetic())
    }

    /// The next few characters, for error messages.
    fn found(&self) -> String {
        let rest = self.rest().trim();
        if rest.is_empty() {
            "end of input".to_string()
        } else {
            format!("'{rest}'")
        }
    }

    /// A quoted string starting at the current quote character `q`; see the module docs for
    /// escapes. Backquoted identifiers use the same rules.
    fn quoted(&mut self) -> Result<String> {
        let start = self.pos;
        let q = self.bump().expect("quoted() called at a quote");
        let mut out = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(SearchError::Syntax(format!(
                        "Unterminated quoted string starting at {}",
                        &self.src[start..]
                    )))
                }
                Some(c) if c == q => {
                    if self.peek() == Some(q) {
                        self.bump();
                        out.push(q);
                    } else {
                        return Ok(out);
                    }
                }
                Some('\\') => match self.peek() {
                    Some(c) if c == q => {
                        self.bump();
                        out.push(q);
                    }
                    Some('\\') => {
                        self.bump();
                        out.push_str("\\\\");
                    }
                    _ => out.push('\\'),
                },
                Some(c) => out.push(c),
            }
        }
    }

    fn ident(&mut self) -> Result<Ident> {
        let start = self.pos;
        let first = self.ident_part(true)?;
        let ident = if self.peek() == Some('.') {
            self.bump();
            let key = self.ident_part(false)?;
            Ident {
                entity: Some(first),
                key,
            }
        } else {
            Ident {
                entity: None,
                key: first,
            }
        };
        let text = &self.src[start..self.pos];
        if ident.key.is_empty() || ident.entity.as_deref() == Some("") {
            return Err(SearchError::InvalidIdentifier(format!(
                "Invalid identifier '{text}'. Columns should be specified as 'attribute.<key>', \
                 'metric.<key>', 'tag.<key>', 'dataset.<key>', or 'param.<key>'."
            )));
        }
        // An identifier must be followed by whitespace, a comparator or the end.
        match self.peek() {
            None => {}
            Some(c) if c.is_whitespace() || matches!(c, '=' | '!' | '<' | '>') => {}
            Some(_) => {
                return Err(SearchError::Syntax(format!(
                    "Invalid identifier '{}'",
                    self.src[start..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                )))
            }
        }
        Ok(ident)
    }

    /// One part of an identifier: quoted, or bare. A bare entity stops at '.', a bare key does
    /// not (so `tags.mlflow.runName` has key `mlflow.runName`).
    fn ident_part(&mut self, stop_at_dot: bool) -> Result<String> {
        match self.peek() {
            Some('`' | '"') => self.quoted(),
            Some('\'') => Err(SearchError::InvalidIdentifier(format!(
                "Invalid identifier {}: keys are unquoted, backquoted or double-quoted",
                self.found()
            ))),
            _ => Ok(self
                .take_while(|c| !(is_special(c) || (stop_at_dot && c == '.')))
                .to_string()),
        }
    }

    fn comparator(&mut self) -> Result<Cmp> {
        let sym = self.take_while(|c| matches!(c, '=' | '!' | '<' | '>'));
        if !sym.is_empty() {
            return Ok(match sym {
                ">" => Cmp::Gt,
                ">=" => Cmp::Ge,
                "<" => Cmp::Lt,
                "<=" => Cmp::Le,
                "=" => Cmp::Eq,
                "!=" => Cmp::Ne,
                other => Cmp::Other(other.to_string()),
            });
        }
        let before = self.pos;
        let word = self.word().to_ascii_uppercase();
        let cmp = match word.as_str() {
            "LIKE" => Cmp::Like,
            "ILIKE" => Cmp::ILike,
            "IN" => Cmp::In,
            "NOT" => {
                self.skip_ws();
                match self.word().to_ascii_uppercase().as_str() {
                    "IN" => Cmp::NotIn,
                    "LIKE" => Cmp::Other("NOT LIKE".into()),
                    "ILIKE" => Cmp::Other("NOT ILIKE".into()),
                    _ => return Err(self.bad_comparator(before)),
                }
            }
            "IS" => {
                self.skip_ws();
                match self.word().to_ascii_uppercase().as_str() {
                    "NULL" => Cmp::IsNull,
                    "NOT" => {
                        self.skip_ws();
                        match self.word().to_ascii_uppercase().as_str() {
                            "NULL" => Cmp::IsNotNull,
                            _ => return Err(self.bad_comparator(before)),
                        }
                    }
                    _ => return Err(self.bad_comparator(before)),
                }
            }
            _ => return Err(self.bad_comparator(before)),
        };
        // A keyword must end at a word boundary: `LIKEx` is not `LIKE x`.
        if self.peek().is_some_and(|c| !is_special(c)) {
            return Err(self.bad_comparator(before));
        }
        Ok(cmp)
    }

    fn bad_comparator(&mut self, from: usize) -> SearchError {
        self.pos = from;
        SearchError::Syntax(format!(
            "Invalid comparison clause. Expected comparison found {}",
            self.found()
        ))
    }

    fn value(&mut self) -> Result<Value> {
        let start = self.pos;
        let kind = match self.peek() {
            Some('\'' | '"') => ValueKind::Str(self.quoted()?),
            Some('(') => ValueKind::List(self.list()?),
            Some(_) => {
                let word = self.take_while(|c| !is_special(c));
                if word.is_empty() {
                    return Err(SearchError::Syntax(format!(
                        "Invalid comparison clause. Expected value token found {}",
                        self.found()
                    )));
                }
                match parse_number(word) {
                    Some((f, n)) => ValueKind::Num(f, n),
                    None => ValueKind::Bare,
                }
            }
            None => {
                return Err(SearchError::Syntax(
                    "Invalid comparison clause. Expected value token found end of input"
                        .to_string(),
                ))
            }
        };
        Ok(Value {
            kind,
            raw: self.src[start..self.pos].to_string(),
        })
    }

    /// `( 'a', "b" )`, non-empty, strings only.
    fn list(&mut self) -> Result<Vec<String>> {
        let start = self.pos;
        self.bump(); // (
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                Some(')') if items.is_empty() => {
                    return Err(SearchError::InvalidValue(
                        "While parsing a list in the query, expected a non-empty list of string \
                         values, but got empty list"
                            .to_string(),
                    ))
                }
                Some('\'' | '"') => items.push(self.quoted()?),
                _ => return Err(self.ill_formed_list(start)),
            }
            self.skip_ws();
            match self.bump() {
                Some(',') => continue,
                Some(')') => return Ok(items),
                _ => return Err(self.ill_formed_list(start)),
            }
        }
    }

    fn ill_formed_list(&self, start: usize) -> SearchError {
        SearchError::InvalidValue(format!(
            "While parsing a list in the query, expected a non-empty list of string values, but \
             got ill-formed list: {}",
            &self.src[start..]
        ))
    }

    /// Consumes `AND` (any case) followed by whitespace, a quote or the end.
    fn and(&mut self) -> bool {
        let before = self.pos;
        let word = self.word();
        if word.eq_ignore_ascii_case("and")
            && self
                .peek()
                .is_none_or(|c| c.is_whitespace() || matches!(c, '`' | '"'))
        {
            return true;
        }
        self.pos = before;
        false
    }
}

/// `[+-]digits[.digits][e[+-]digits]` or `[+-].digits[...]`; `inf` / `nan` are not numbers.
fn parse_number(word: &str) -> Option<(f64, Number)> {
    let body = word.strip_prefix(['-', '+']).unwrap_or(word);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if !digits(int_part) || !frac_part.is_none_or(digits) {
        return None;
    }
    if int_part.is_empty() && frac_part.is_none_or(str::is_empty) {
        return None;
    }
    if let Some(exp) = exponent {
        let exp = exp.strip_prefix(['-', '+']).unwrap_or(exp);
        if exp.is_empty() || !digits(exp) {
            return None;
        }
    }
    let f: f64 = word.parse().ok()?;
    let n = if frac_part.is_none() && exponent.is_none() {
        word.parse::<i64>()
            .map(Number::Int)
            .unwrap_or(Number::Float(f))
    } else {
        Number::Float(f)
    };
    Some((f, n))
}

/// Splits a filter into syntactic clauses. No knowledge of entities yet.
fn parse_clauses(filter: &str) -> Result<Vec<Clause>> {
    let mut cur = Cursor::new(filter);
    let mut clauses = Vec::new();
    cur.skip_ws();
    if cur.at_end() {
        return Ok(clauses);
    }
    loop {
        cur.skip_ws();
        if cur.at_end() {
            return Err(SearchError::Syntax(format!(
                "Invalid clause(s) in filter string: expected a clause after the trailing 'AND' \
                 in '{filter}'"
            )));
        }
        if matches!(cur.peek(), Some('(' | ')')) {
            return Err(SearchError::Syntax(format!(
                "Invalid clause(s) in filter string: {}",
                cur.found()
            )));
        }
        let ident = cur.ident()?;
        cur.skip_ws();
        let cmp = cur.comparator()?;
        let value = if matches!(cmp, Cmp::IsNull | Cmp::IsNotNull) {
            Value {
                kind: ValueKind::None,
                raw: String::new(),
            }
        } else {
            cur.skip_ws();
            cur.value()?
        };
        clauses.push(Clause { ident, cmp, value });
        let before_ws = cur.pos;
        cur.skip_ws();
        if cur.at_end() {
            return Ok(clauses);
        }
        if cur.pos == before_ws || !cur.and() {
            return Err(SearchError::Syntax(format!(
                "Invalid clause(s) in filter string: {}",
                cur.found()
            )));
        }
    }
}

/// Parses `<identifier> [ASC|DESC]`.
fn parse_order_entry(text: &str) -> Result<(Ident, bool)> {
    let could_not_parse = || {
        SearchError::InvalidOrderBy(format!(
            "Invalid order_by clause '{text}'. Could not be parsed."
        ))
    };
    let mut cur = Cursor::new(text);
    cur.skip_ws();
    if cur.at_end() {
        return Err(could_not_parse());
    }
    let ident = cur.ident().map_err(|e| match e {
        SearchError::Syntax(_) => could_not_parse(),
        other => other,
    })?;
    cur.skip_ws();
    let mut ascending = true;
    if !cur.at_end() {
        let word = cur.take_while(|c| !c.is_whitespace());
        if word.eq_ignore_ascii_case("asc") {
            ascending = true;
        } else if word.eq_ignore_ascii_case("desc") {
            ascending = false;
        } else {
            return Err(SearchError::InvalidOrderBy(format!(
                "Invalid ordering key in order_by clause '{text}'."
            )));
        }
        cur.skip_ws();
        if !cur.at_end() {
            return Err(could_not_parse());
        }
    }
    Ok((ident, ascending))
}

/// Formats strings like a Python list, as MLflow's messages do.
fn py_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
    format!("[{}]", inner.join(", "))
}

// ---------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunEntity {
    Metric,
    Param,
    Tag,
    Attribute,
    Dataset,
}

fn run_entity(ident: &Ident) -> Result<RunEntity> {
    let Some(entity) = ident.entity.as_deref() else {
        return Ok(RunEntity::Attribute);
    };
    Ok(match entity {
        "metric" | "metrics" => RunEntity::Metric,
        "parameter" | "parameters" | "param" | "params" => RunEntity::Param,
        "tag" | "tags" => RunEntity::Tag,
        "attribute" | "attributes" | "attr" | "run" => RunEntity::Attribute,
        "dataset" | "datasets" => RunEntity::Dataset,
        other => {
            return Err(SearchError::InvalidIdentifier(format!(
                "Invalid entity type '{other}'. Valid values are ['metric', 'parameter', 'tag', \
                 'attribute', 'dataset']"
            )))
        }
    })
}

fn run_attribute(key: &str) -> Result<RunAttribute> {
    RunAttribute::from_key(key).ok_or_else(|| {
        SearchError::InvalidIdentifier(format!(
            "Invalid attribute key '{key}' specified. Valid keys are '{RUN_ATTRIBUTE_KEYS}'"
        ))
    })
}

fn quoted_string(value: &Value, what: &str) -> Result<String> {
    match &value.kind {
        ValueKind::Str(s) => Ok(s.clone()),
        _ => Err(SearchError::InvalidValue(format!(
            "Expected a quoted string value for {what} (e.g. 'my-value'). Got value {}",
            value.raw
        ))),
    }
}

fn key_cond(cmp: &Cmp, value: &Value, what: &str) -> Result<KeyCond> {
    Ok(match cmp {
        Cmp::IsNull => KeyCond::IsNull,
        Cmp::IsNotNull => KeyCond::IsNotNull,
        _ => {
            let op = cmp
                .str_op()
                .ok_or_else(|| invalid_comparator(cmp, KEYED_COMPARATORS))?;
            KeyCond::Cmp(op, quoted_string(value, what)?)
        }
    })
}

/// `= != LIKE ILIKE` with a string, or `IN` / `NOT IN` with a list.
fn list_cond(cmp: &Cmp, value: &Value, what: &str, lists_allowed: bool) -> Result<StrCond> {
    match (cmp, &value.kind) {
        (Cmp::In | Cmp::NotIn, ValueKind::List(items)) if lists_allowed => Ok(match cmp {
            Cmp::In => StrCond::In(items.clone()),
            _ => StrCond::NotIn(items.clone()),
        }),
        (Cmp::In | Cmp::NotIn, _) if lists_allowed => Err(SearchError::InvalidValue(format!(
            "Expected a list of quoted string values for {what} with comparator '{cmp}'. Got \
             value {}",
            value.raw
        ))),
        (_, ValueKind::List(_)) => Err(SearchError::InvalidValue(if lists_allowed {
            format!(
                "Comparator '{cmp}' cannot be used with a list of values ({})",
                value.raw
            )
        } else {
            "Only the 'run_id' attribute supports comparison with a list of quoted string values."
                .to_string()
        })),
        (_, ValueKind::Str(s)) => {
            let op = cmp.str_op().expect("comparator validated by caller");
            Ok(StrCond::Cmp(op, s.clone()))
        }
        _ => Err(SearchError::InvalidValue(format!(
            "Expected a quoted string value for {what}. Got value {}",
            value.raw
        ))),
    }
}

fn run_clause(clause: Clause) -> Result<RunClause> {
    let Clause { ident, cmp, value } = clause;
    match run_entity(&ident)? {
        RunEntity::Metric => {
            let op = cmp
                .num_op()
                .ok_or_else(|| invalid_comparator(&cmp, METRIC_COMPARATORS))?;
            match value.kind {
                ValueKind::Num(f, _) => Ok(RunClause::Metric {
                    key: ident.key,
                    op,
                    value: f,
                }),
                _ => Err(SearchError::InvalidValue(format!(
                    "Expected numeric value type for metric. Found {}",
                    value.raw
                ))),
            }
        }
        RunEntity::Param => Ok(RunClause::Param {
            cond: key_cond(&cmp, &value, "param")?,
            key: ident.key,
        }),
        RunEntity::Tag => Ok(RunClause::Tag {
            cond: key_cond(&cmp, &value, "tag")?,
            key: ident.key,
        }),
        RunEntity::Attribute => {
            let attr = run_attribute(&ident.key)?;
            if attr.is_numeric() {
                let op = cmp
                    .num_op()
                    .ok_or_else(|| invalid_comparator(&cmp, METRIC_COMPARATORS))?;
                match value.kind {
                    ValueKind::Num(_, n) => Ok(RunClause::NumericAttribute { attr, op, value: n }),
                    _ => Err(SearchError::InvalidValue(format!(
                        "Expected numeric value type for numeric attribute: {}. Found {}",
                        ident.key, value.raw
                    ))),
                }
            } else {
                if !matches!(
                    cmp,
                    Cmp::Eq | Cmp::Ne | Cmp::Like | Cmp::ILike | Cmp::In | Cmp::NotIn
                ) {
                    return Err(invalid_comparator(&cmp, STRING_ATTRIBUTE_COMPARATORS));
                }
                let cond = list_cond(&cmp, &value, "attributes", attr == RunAttribute::RunId)?;
                Ok(RunClause::StringAttribute { attr, cond })
            }
        }
        RunEntity::Dataset => {
            let field = match ident.key.as_str() {
                "name" => DatasetField::Name,
                "digest" => DatasetField::Digest,
                "context" => DatasetField::Context,
                other => {
                    return Err(SearchError::InvalidIdentifier(format!(
                        "Invalid dataset key '{other}' specified. Valid keys are \
                         '['name', 'digest', 'context']'"
                    )))
                }
            };
            if !matches!(
                cmp,
                Cmp::Eq | Cmp::Ne | Cmp::Like | Cmp::ILike | Cmp::In | Cmp::NotIn
            ) {
                return Err(invalid_comparator(&cmp, STRING_ATTRIBUTE_COMPARATORS));
            }
            Ok(RunClause::Dataset {
                field,
                cond: list_cond(&cmp, &value, "dataset attributes", true)?,
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Experiments
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExperimentEntity {
    Attribute,
    Tag,
}

fn experiment_entity(ident: &Ident) -> Result<ExperimentEntity> {
    match ident.entity.as_deref() {
        None | Some("attribute" | "attributes" | "attr") => Ok(ExperimentEntity::Attribute),
        Some("tag" | "tags") => Ok(ExperimentEntity::Tag),
        Some(other) => Err(SearchError::InvalidIdentifier(format!(
            "Invalid entity type '{other}'. Valid entity types are ('attribute', 'tag', 'tags')"
        ))),
    }
}

fn experiment_attribute(key: &str) -> Result<ExperimentAttribute> {
    ExperimentAttribute::from_key(key).ok_or_else(|| {
        SearchError::InvalidIdentifier(format!(
            "Invalid attribute key '{key}' specified. Valid keys are '{EXPERIMENT_ATTRIBUTE_KEYS}'"
        ))
    })
}

fn experiment_id(s: &str) -> Result<i64> {
    s.trim().parse::<i64>().map_err(|_| {
        SearchError::InvalidValue(format!("Invalid experiment ID '{s}': expected an integer"))
    })
}

fn experiment_clause(clause: Clause) -> Result<ExperimentClause> {
    let Clause { ident, cmp, value } = clause;
    if experiment_entity(&ident)? == ExperimentEntity::Tag {
        return Ok(ExperimentClause::Tag {
            cond: key_cond(&cmp, &value, "tag")?,
            key: ident.key,
        });
    }
    let attr = experiment_attribute(&ident.key)?;
    match attr {
        ExperimentAttribute::Name => {
            let op = cmp
                .str_op()
                .ok_or_else(|| invalid_comparator(&cmp, STRING_COMPARATORS))?;
            match value.kind {
                ValueKind::Str(s) => Ok(ExperimentClause::Name(op, s)),
                _ => Err(SearchError::InvalidValue(format!(
                    "Expected a quoted string value for attributes. Got value {}",
                    value.raw
                ))),
            }
        }
        ExperimentAttribute::ExperimentId => {
            let negated = match cmp {
                Cmp::Eq | Cmp::In => false,
                Cmp::Ne | Cmp::NotIn => true,
                _ => return Err(invalid_comparator(&cmp, ID_COMPARATORS)),
            };
            let ids = match (&cmp, &value.kind) {
                (Cmp::In | Cmp::NotIn, ValueKind::List(items)) => items
                    .iter()
                    .map(|s| experiment_id(s))
                    .collect::<Result<Vec<_>>>()?,
                (Cmp::Eq | Cmp::Ne, ValueKind::Str(s)) => vec![experiment_id(s)?],
                (Cmp::Eq | Cmp::Ne, ValueKind::Num(_, Number::Int(i))) => vec![*i],
                _ => {
                    return Err(SearchError::InvalidValue(format!(
                        "Invalid value {} for experiment_id with comparator '{cmp}'",
                        value.raw
                    )))
                }
            };
            Ok(ExperimentClause::ExperimentId { ids, negated })
        }
        ExperimentAttribute::CreationTime | ExperimentAttribute::LastUpdateTime => {
            let op = cmp
                .num_op()
                .ok_or_else(|| invalid_comparator(&cmp, METRIC_COMPARATORS))?;
            match value.kind {
                ValueKind::Num(_, n) => {
                    Ok(ExperimentClause::NumericAttribute { attr, op, value: n })
                }
                _ => Err(SearchError::InvalidValue(format!(
                    "Expected numeric value type for numeric attribute: {}. Found {}",
                    ident.key, value.raw
                ))),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Model registry
// ---------------------------------------------------------------------------------------------

/// One `AND`-ed clause of a `registered-models/search` or `model-versions/search` filter.
#[derive(Clone, Debug, PartialEq)]
pub enum RegistryClause {
    /// `name` (`= != LIKE ILIKE`).
    Name(StrOp, String),
    /// `version_number` (numeric comparators; model versions only).
    VersionNumber(NumOp, Number),
    /// `run_id` (`= != LIKE ILIKE IN NOT IN`; model versions only).
    RunId(StrCond),
    /// `source_path` (`= != LIKE ILIKE`; model versions only).
    SourcePath(StrOp, String),
    /// `tags.<key>`. Unlike runs, `!=` also matches entities without the tag: the mlflow client
    /// appends `` tag.`mlflow.prompt.is_prompt` != 'true' `` to every registered-model search and
    /// expects ordinary models, which lack the tag, to match.
    Tag { key: String, cond: KeyCond },
}

/// Orderable registry attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryAttribute {
    Name,
    VersionNumber,
    CreationTimestamp,
    LastUpdatedTimestamp,
}

/// One registry order_by entry.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistryOrder {
    pub attr: RegistryAttribute,
    pub ascending: bool,
}

/// Which registry entity a filter or order_by is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryEntity {
    RegisteredModel,
    ModelVersion,
}

impl RegistryEntity {
    fn attribute_keys(self) -> &'static str {
        match self {
            RegistryEntity::RegisteredModel => "['name']",
            RegistryEntity::ModelVersion => "['name', 'version_number', 'run_id', 'source_path']",
        }
    }
}

/// Parses a registry filter: `name`, `tags.<key>`, and for model versions also `version_number`,
/// `run_id` and `source_path`.
pub fn parse_registry_filter(filter: &str, entity: RegistryEntity) -> Result<Vec<RegistryClause>> {
    parse_clauses(filter)?.into_iter().map(|c| registry_clause(c, entity)).collect()
}

/// Parses registry order_by entries: `name`, `creation_timestamp`, `last_updated_timestamp`, and
/// for model versions `version_number`.
pub fn parse_registry_order_by(order_by: &[String], entity: RegistryEntity) -> Result<Vec<RegistryOrder>> {
    let mut out: Vec<RegistryOrder> = Vec::with_capacity(order_by.len());
    for text in order_by {
        let (ident, ascending) = parse_order_entry(text)?;
        if !matches!(ident.entity.as_deref(), None | Some("attribute" | "attributes" | "attr")) {
            return Err(SearchError::InvalidOrderBy(format!("Invalid order by key '{text}' specified")));
        }
        let attr = match (ident.key.as_str(), entity) {
            ("name", _) => RegistryAttribute::Name,
            ("creation_timestamp" | "timestamp", _) => RegistryAttribute::CreationTimestamp,
            ("last_updated_timestamp", _) => RegistryAttribute::LastUpdatedTimestamp,
            ("version_number", RegistryEntity::ModelVersion) => RegistryAttribute::VersionNumber,
            _ => {
                return Err(SearchError::InvalidOrderBy(format!(
                    "Invalid order by key '{}' specified. Valid keys are ['name', 'creation_timestamp', 'last_updated_timestamp']{}",
                    ident.key,
                    if entity == RegistryEntity::ModelVersion { " and 'version_number'" } else { "" }
                )))
            }
        };
        if out.iter().any(|o| o.attr == attr) {
            return Err(SearchError::InvalidOrderBy(format!("`order_by` contains duplicate fields: {}", py_list(order_by))));
        }
        out.push(RegistryOrder { attr, ascending });
    }
    Ok(out)
}

fn registry_clause(clause: Clause, entity: RegistryEntity) -> Result<RegistryClause> {
    let Clause { ident, cmp, value } = clause;
    match ident.entity.as_deref() {
        Some("tag" | "tags") => return Ok(RegistryClause::Tag { cond: key_cond(&cmp, &value, "tag")?, key: ident.key }),
        None | Some("attribute" | "attributes" | "attr") => {}
        Some(other) => {
            return Err(SearchError::InvalidIdentifier(format!(
                "Invalid entity type '{other}'. Valid entity types are ('attribute', 'tag', 'tags')"
            )))
        }
    }
    let string_op = |cmp: &Cmp| cmp.str_op().ok_or_else(|| invalid_comparator(cmp, STRING_COMPARATORS));
    match (ident.key.as_str(), entity) {
        ("name", _) => Ok(RegistryClause::Name(string_op(&cmp)?, quoted_string(&value, "name")?)),
        ("source_path", RegistryEntity::ModelVersion) => {
            Ok(RegistryClause::SourcePath(string_op(&cmp)?, quoted_string(&value, "source_path")?))
        }
        ("run_id", RegistryEntity::ModelVersion) => {
            if cmp.str_op().is_none() && !matches!(cmp, Cmp::In | Cmp::NotIn) {
                return Err(invalid_comparator(&cmp, STRING_ATTRIBUTE_COMPARATORS));
            }
            Ok(RegistryClause::RunId(list_cond(&cmp, &value, "run_id", true)?))
        }
        ("version_number", RegistryEntity::ModelVersion) => {
            let op = cmp.num_op().ok_or_else(|| invalid_comparator(&cmp, METRIC_COMPARATORS))?;
            match value.kind {
                ValueKind::Num(_, n) => Ok(RegistryClause::VersionNumber(op, n)),
                ValueKind::Str(ref s) => match s.trim().parse::<i64>() {
                    Ok(i) => Ok(RegistryClause::VersionNumber(op, Number::Int(i))),
                    Err(_) => Err(SearchError::InvalidValue(format!("Invalid version_number '{s}': expected an integer"))),
                },
                _ => Err(SearchError::InvalidValue(format!("Invalid version_number {}: expected an integer", value.raw))),
            }
        }
        (key, _) => Err(SearchError::InvalidIdentifier(format!(
            "Invalid attribute key '{key}' specified. Valid keys are '{}'",
            entity.attribute_keys()
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn one(filter: &str) -> RunClause {
        let mut v = parse_run_filter(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
        assert_eq!(v.len(), 1, "{filter}: {v:?}");
        v.remove(0)
    }

    fn err(filter: &str) -> SearchError {
        match parse_run_filter(filter) {
            Ok(v) => panic!("{filter} parsed as {v:?}"),
            Err(e) => e,
        }
    }

    fn metric(key: &str, op: NumOp, value: f64) -> RunClause {
        RunClause::Metric {
            key: key.into(),
            op,
            value,
        }
    }

    fn param(key: &str, op: StrOp, v: &str) -> RunClause {
        RunClause::Param {
            key: key.into(),
            cond: KeyCond::Cmp(op, v.into()),
        }
    }

    fn tag(key: &str, op: StrOp, v: &str) -> RunClause {
        RunClause::Tag {
            key: key.into(),
            cond: KeyCond::Cmp(op, v.into()),
        }
    }

    fn sattr(attr: RunAttribute, op: StrOp, v: &str) -> RunClause {
        RunClause::StringAttribute {
            attr,
            cond: StrCond::Cmp(op, v.into()),
        }
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_filter_has_no_clauses() {
        assert_eq!(parse_run_filter("").unwrap(), vec![]);
        assert_eq!(parse_run_filter("   \n\t").unwrap(), vec![]);
        assert_eq!(parse_experiment_filter("").unwrap(), vec![]);
    }

    #[test]
    fn metric_prefixes_and_comparators() {
        assert_eq!(one("metrics.acc > 0.9"), metric("acc", NumOp::Gt, 0.9));
        assert_eq!(one("metric.acc >= 1"), metric("acc", NumOp::Ge, 1.0));
        assert_eq!(one("metrics.acc < 2"), metric("acc", NumOp::Lt, 2.0));
        assert_eq!(one("metrics.acc <= 2"), metric("acc", NumOp::Le, 2.0));
        assert_eq!(one("metrics.acc = 2"), metric("acc", NumOp::Eq, 2.0));
        assert_eq!(one("metrics.acc != 2"), metric("acc", NumOp::Ne, 2.0));
        // No whitespace around the comparator.
        assert_eq!(one("metrics.acc>=-1"), metric("acc", NumOp::Ge, -1.0));
        assert_eq!(one("metrics.acc!=3"), metric("acc", NumOp::Ne, 3.0));
    }

    #[test]
    fn number_forms() {
        for (text, v) in [
            ("0", 0.0),
            ("-3", -3.0),
            ("+3", 3.0),
            ("1.5", 1.5),
            ("-0.25", -0.25),
            (".5", 0.5),
            ("-.5", -0.5),
            ("5.", 5.0),
            ("1e3", 1000.0),
            ("1E3", 1000.0),
            ("2.5e-3", 0.0025),
            ("-1.5E+2", -150.0),
        ] {
            assert_eq!(
                one(&format!("metrics.m = {text}")),
                metric("m", NumOp::Eq, v),
                "{text}"
            );
        }
        // Beyond f64 range is infinite, which compares as expected with the clamped values.
        assert_eq!(
            one("metrics.m < 1e999"),
            metric("m", NumOp::Lt, f64::INFINITY)
        );
        for bad in [
            "inf", "nan", "-inf", "1.2.3", "1e", "e5", "--1", "-", ".", "1x", "0x10",
        ] {
            let e = err(&format!("metrics.m = {bad}"));
            assert!(
                matches!(&e, SearchError::InvalidValue(m) if m.contains(bad)),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn parse_number_int_vs_float() {
        assert_eq!(parse_number("42"), Some((42.0, Number::Int(42))));
        assert_eq!(parse_number("-42"), Some((-42.0, Number::Int(-42))));
        assert_eq!(parse_number("4.0"), Some((4.0, Number::Float(4.0))));
        assert_eq!(parse_number("1e2"), Some((100.0, Number::Float(100.0))));
        // Too big for i64: stays a float.
        assert_eq!(
            parse_number("99999999999999999999"),
            Some((1e20, Number::Float(1e20)))
        );
        assert_eq!(parse_number("abc"), None);
    }

    #[test]
    fn quoted_keys() {
        assert_eq!(one("metrics.`a.b` > 1"), metric("a.b", NumOp::Gt, 1.0));
        assert_eq!(one("metrics.\"a.b\" > 1"), metric("a.b", NumOp::Gt, 1.0));
        assert_eq!(one("params.\"x y\" = 'v'"), param("x y", StrOp::Eq, "v"));
        assert_eq!(one("params.`x y`='v'"), param("x y", StrOp::Eq, "v"));
        assert_eq!(one("`metrics`.`m` = 1"), metric("m", NumOp::Eq, 1.0));
        // Unquoted keys may contain dots and dashes.
        assert_eq!(
            one("tags.mlflow.runName = 'r'"),
            tag("mlflow.runName", StrOp::Eq, "r")
        );
        assert_eq!(
            one("metrics.my-metric > 0"),
            metric("my-metric", NumOp::Gt, 0.0)
        );
        // Doubled backquote inside a backquoted key.
        assert_eq!(one("tags.`a``b` = 'x'"), tag("a`b", StrOp::Eq, "x"));
        // Unicode keys and values.
        assert_eq!(one("tags.café = 'crème'"), tag("café", StrOp::Eq, "crème"));
    }

    #[test]
    fn param_prefixes_and_comparators() {
        for prefix in ["params", "param", "parameter", "parameters"] {
            assert_eq!(
                one(&format!("{prefix}.lr = '0.1'")),
                param("lr", StrOp::Eq, "0.1")
            );
        }
        assert_eq!(one("params.lr != '0.1'"), param("lr", StrOp::Ne, "0.1"));
        assert_eq!(one("params.lr LIKE '0.%'"), param("lr", StrOp::Like, "0.%"));
        assert_eq!(one("params.lr like '0.%'"), param("lr", StrOp::Like, "0.%"));
        assert_eq!(
            one("params.lr ILIKE '0.%'"),
            param("lr", StrOp::ILike, "0.%")
        );
        assert_eq!(
            one("params.lr iLike '0.%'"),
            param("lr", StrOp::ILike, "0.%")
        );
        assert_eq!(
            one("params.lr IS NULL"),
            RunClause::Param {
                key: "lr".into(),
                cond: KeyCond::IsNull
            }
        );
        assert_eq!(
            one("params.lr is  not\tnull"),
            RunClause::Param {
                key: "lr".into(),
                cond: KeyCond::IsNotNull
            }
        );
    }

    #[test]
    fn tag_prefixes_and_comparators() {
        assert_eq!(one("tags.env = 'prod'"), tag("env", StrOp::Eq, "prod"));
        assert_eq!(one("tag.env != 'prod'"), tag("env", StrOp::Ne, "prod"));
        assert_eq!(one("tags.env LIKE 'p%'"), tag("env", StrOp::Like, "p%"));
        assert_eq!(one("tags.env ILIKE 'P%'"), tag("env", StrOp::ILike, "P%"));
        assert_eq!(
            one("tags.env IS NULL"),
            RunClause::Tag {
                key: "env".into(),
                cond: KeyCond::IsNull
            }
        );
        assert_eq!(
            one("tags.`mlflow.user` IS NOT NULL"),
            RunClause::Tag {
                key: "mlflow.user".into(),
                cond: KeyCond::IsNotNull
            }
        );
    }

    #[test]
    fn string_values_and_escapes() {
        assert_eq!(
            one("params.p = \"double\""),
            param("p", StrOp::Eq, "double")
        );
        assert_eq!(one("params.p = ''"), param("p", StrOp::Eq, ""));
        assert_eq!(one("params.p = 'it''s'"), param("p", StrOp::Eq, "it's"));
        assert_eq!(one(r"params.p = 'it\'s'"), param("p", StrOp::Eq, "it's"));
        assert_eq!(
            one(r#"params.p = "say ""hi""""#),
            param("p", StrOp::Eq, "say \"hi\"")
        );
        assert_eq!(one("params.p = \"it's\""), param("p", StrOp::Eq, "it's"));
        // Other backslashes are kept verbatim.
        assert_eq!(
            one(r"params.p = 'C:\tmp'"),
            param("p", StrOp::Eq, r"C:\tmp")
        );
        assert_eq!(one(r"params.p = 'a\\'"), param("p", StrOp::Eq, r"a\\"));
        // Keywords and operators inside strings are just text.
        assert_eq!(
            one("params.p = 'x AND y = 1'"),
            param("p", StrOp::Eq, "x AND y = 1")
        );
    }

    #[test]
    fn attribute_prefixes_and_aliases() {
        for prefix in ["attributes.", "attribute.", "attr.", "run.", ""] {
            assert_eq!(
                one(&format!("{prefix}status = 'FINISHED'")),
                sattr(RunAttribute::Status, StrOp::Eq, "FINISHED"),
                "{prefix}"
            );
        }
        assert_eq!(
            one("run_name = 'a'"),
            sattr(RunAttribute::RunName, StrOp::Eq, "a")
        );
        assert_eq!(
            one("`Run name` = 'a'"),
            sattr(RunAttribute::RunName, StrOp::Eq, "a")
        );
        assert_eq!(
            one("\"Run Name\" LIKE 'a%'"),
            sattr(RunAttribute::RunName, StrOp::Like, "a%")
        );
        assert_eq!(
            one("attributes.`run name` != 'a'"),
            sattr(RunAttribute::RunName, StrOp::Ne, "a")
        );
        assert_eq!(
            one("user_id ILIKE 'A%'"),
            sattr(RunAttribute::UserId, StrOp::ILike, "A%")
        );
        assert_eq!(
            one("artifact_uri LIKE 's3://%'"),
            sattr(RunAttribute::ArtifactUri, StrOp::Like, "s3://%")
        );
        assert_eq!(
            one("lifecycle_stage = 'deleted'"),
            sattr(RunAttribute::LifecycleStage, StrOp::Eq, "deleted")
        );
        assert_eq!(
            one("attr.run_id = 'abc'"),
            sattr(RunAttribute::RunId, StrOp::Eq, "abc")
        );
    }

    #[test]
    fn run_id_lists() {
        assert_eq!(
            one("attributes.run_id IN ('a', \"b\",'c')"),
            RunClause::StringAttribute {
                attr: RunAttribute::RunId,
                cond: StrCond::In(strs(&["a", "b", "c"]))
            }
        );
        assert_eq!(
            one("run_id not in ( 'a' )"),
            RunClause::StringAttribute {
                attr: RunAttribute::RunId,
                cond: StrCond::NotIn(strs(&["a"]))
            }
        );
        assert_eq!(
            one("run_id IN('a')"),
            RunClause::StringAttribute {
                attr: RunAttribute::RunId,
                cond: StrCond::In(strs(&["a"]))
            }
        );
    }

    #[test]
    fn numeric_attributes() {
        assert_eq!(
            one("attributes.start_time > 1000"),
            RunClause::NumericAttribute {
                attr: RunAttribute::StartTime,
                op: NumOp::Gt,
                value: Number::Int(1000)
            }
        );
        assert_eq!(
            one("created <= 5"),
            RunClause::NumericAttribute {
                attr: RunAttribute::StartTime,
                op: NumOp::Le,
                value: Number::Int(5)
            }
        );
        assert_eq!(
            one("Created = 5"),
            RunClause::NumericAttribute {
                attr: RunAttribute::StartTime,
                op: NumOp::Eq,
                value: Number::Int(5)
            }
        );
        assert_eq!(
            one("end_time != 1.5"),
            RunClause::NumericAttribute {
                attr: RunAttribute::EndTime,
                op: NumOp::Ne,
                value: Number::Float(1.5)
            }
        );
    }

    #[test]
    fn datasets() {
        assert_eq!(
            one("datasets.name = 'train'"),
            RunClause::Dataset {
                field: DatasetField::Name,
                cond: StrCond::Cmp(StrOp::Eq, "train".into())
            }
        );
        assert_eq!(
            one("dataset.digest IN ('a','b')"),
            RunClause::Dataset {
                field: DatasetField::Digest,
                cond: StrCond::In(strs(&["a", "b"]))
            }
        );
        assert_eq!(
            one("datasets.context LIKE 'tr%'"),
            RunClause::Dataset {
                field: DatasetField::Context,
                cond: StrCond::Cmp(StrOp::Like, "tr%".into())
            }
        );
        assert_eq!(
            one("datasets.name NOT IN ('x')"),
            RunClause::Dataset {
                field: DatasetField::Name,
                cond: StrCond::NotIn(strs(&["x"]))
            }
        );
    }

    #[test]
    fn and_joins_in_any_case() {
        let v = parse_run_filter(
            "metrics.a > 1 and params.p = 'x' AND tags.t IS NULL And start_time >= 0 aNd `Run name` = 'n'",
        )
        .unwrap();
        assert_eq!(
            v,
            vec![
                metric("a", NumOp::Gt, 1.0),
                param("p", StrOp::Eq, "x"),
                RunClause::Tag {
                    key: "t".into(),
                    cond: KeyCond::IsNull
                },
                RunClause::NumericAttribute {
                    attr: RunAttribute::StartTime,
                    op: NumOp::Ge,
                    value: Number::Int(0)
                },
                sattr(RunAttribute::RunName, StrOp::Eq, "n"),
            ]
        );
        // Whitespace of any kind, leading and trailing.
        assert_eq!(
            parse_run_filter("  metrics.a>1\n\tAND\nmetrics.b<2  ")
                .unwrap()
                .len(),
            2
        );
        // A key named like a keyword.
        assert_eq!(one("params.and = 'x'"), param("and", StrOp::Eq, "x"));
        // IS NULL followed by AND.
        assert_eq!(
            parse_run_filter("tags.a IS NULL AND tags.b IS NOT NULL")
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn syntax_errors() {
        for (filter, needle) in [
            ("metrics.a > 1 OR metrics.b < 2", "OR metrics.b < 2"),
            ("metrics.a > 1 metrics.b < 2", "metrics.b < 2"),
            ("metrics.a > 1 AND", "trailing 'AND'"),
            ("metrics.a > 1 AND   ", "trailing 'AND'"),
            ("(metrics.a > 1)", "(metrics.a > 1)"),
            ("metrics.a > 1)", ")"),
            ("params.p = 'abc", "'abc"),
            ("params.`p = 'abc'", "`p = 'abc'"),
            ("metrics.a", "end of input"),
            ("metrics.a 5", "'5'"),
            ("metrics.a > ", "end of input"),
            ("params.p LIKEx 'a'", "LIKEx"),
            ("params.p IS 'a'", "IS 'a'"),
            ("params.p IS NOT 'a'", "IS NOT 'a'"),
            ("params.p NOT 'a'", "NOT 'a'"),
            ("params.\"p\"x = 'a'", "\"p\"x"),
            ("metrics.a > 1 ANDmetrics.b > 1", "ANDmetrics.b > 1"),
            ("metrics.a > 1, metrics.b > 1", ", metrics.b > 1"),
        ] {
            let e = err(filter);
            assert!(matches!(e, SearchError::Syntax(_)), "{filter}: {e:?}");
            assert!(
                e.to_string().contains(needle),
                "{filter}: {e} lacks {needle}"
            );
        }
    }

    #[test]
    fn identifier_errors() {
        let e = err("foo.a = 'x'");
        assert_eq!(
            e,
            SearchError::InvalidIdentifier(
                "Invalid entity type 'foo'. Valid values are ['metric', 'parameter', 'tag', \
                 'attribute', 'dataset']"
                    .into()
            )
        );
        // Entity names are case-sensitive, as in MLflow.
        assert!(
            matches!(err("METRICS.a > 1"), SearchError::InvalidIdentifier(m) if m.contains("'METRICS'"))
        );
        let e = err("attributes.foo = 'x'");
        assert!(
            matches!(&e, SearchError::InvalidIdentifier(m) if m.starts_with("Invalid attribute key 'foo' specified. Valid keys are")),
            "{e}"
        );
        let e = err("bogus > 1");
        assert!(
            matches!(&e, SearchError::InvalidIdentifier(m) if m.contains("'bogus'")),
            "{e}"
        );
        let e = err("experiment_id = '1'");
        assert!(
            matches!(&e, SearchError::InvalidIdentifier(m) if m.contains("'experiment_id'")),
            "{e}"
        );
        let e = err("datasets.source = 'x'");
        assert!(
            matches!(&e, SearchError::InvalidIdentifier(m) if m.contains("Invalid dataset key 'source'")),
            "{e}"
        );
        let e = err("metrics. > 1");
        assert!(
            matches!(&e, SearchError::InvalidIdentifier(m) if m.contains("Invalid identifier 'metrics.'")),
            "{e}"
        );
        let e = err(".a > 1");
        assert!(matches!(&e, SearchError::InvalidIdentifier(_)), "{e}");
        let e = err("params.'p' = 'x'");
        assert!(
            matches!(&e, SearchError::InvalidIdentifier(m) if m.contains("'p'")),
            "{e}"
        );
    }

    #[test]
    fn comparator_errors() {
        let cases = [
            ("metrics.a LIKE 'x'", "Invalid comparator 'LIKE' not one of '['>', '>=', '<', '<=', '=', '!=']'"),
            ("metrics.a IS NULL", "Invalid comparator 'IS NULL' not one of '['>', '>=', '<', '<=', '=', '!=']'"),
            ("metrics.a IN ('x')", "Invalid comparator 'IN'"),
            ("metrics.a == 1", "Invalid comparator '=='"),
            ("metrics.a <> 1", "Invalid comparator '<>'"),
            ("metrics.a => 1", "Invalid comparator '=>'"),
            ("params.p > 'x'", "Invalid comparator '>' not one of '['=', '!=', 'LIKE', 'ILIKE', 'IS NULL', 'IS NOT NULL']'"),
            ("params.p IN ('x')", "Invalid comparator 'IN'"),
            ("tags.t <= 'x'", "Invalid comparator '<='"),
            ("tags.t NOT LIKE 'x'", "Invalid comparator 'NOT LIKE'"),
            ("status > 'x'", "Invalid comparator '>' not one of '['=', '!=', 'LIKE', 'ILIKE', 'IN', 'NOT IN']'"),
            ("status IS NULL", "Invalid comparator 'IS NULL'"),
            ("start_time LIKE 'x'", "Invalid comparator 'LIKE'"),
            ("start_time IN ('1')", "Invalid comparator 'IN'"),
            ("end_time IS NOT NULL", "Invalid comparator 'IS NOT NULL'"),
            ("datasets.name > 'x'", "Invalid comparator '>'"),
            ("datasets.name IS NULL", "Invalid comparator 'IS NULL'"),
        ];
        for (filter, msg) in cases {
            let e = err(filter);
            assert!(
                matches!(e, SearchError::InvalidComparator(_)),
                "{filter}: {e:?}"
            );
            assert!(e.to_string().starts_with(msg), "{filter}: {e}");
        }
    }

    #[test]
    fn value_errors() {
        let cases = [
            ("metrics.a > 'x'", "Expected numeric value type for metric. Found 'x'"),
            ("metrics.a > abc", "Expected numeric value type for metric. Found abc"),
            ("metrics.a = ('1')", "Expected numeric value type for metric. Found ('1')"),
            ("params.p = 1", "Expected a quoted string value for param (e.g. 'my-value'). Got value 1"),
            ("params.p = abc", "Got value abc"),
            ("tags.t = ('a')", "Expected a quoted string value for tag (e.g. 'my-value'). Got value ('a')"),
            ("status = FINISHED", "Expected a quoted string value for attributes. Got value FINISHED"),
            ("status = 1", "Got value 1"),
            ("status IN ('a')", "Only the 'run_id' attribute supports comparison with a list of quoted string values."),
            ("run_id = ('a')", "cannot be used with a list"),
            ("run_id IN 'a'", "Expected a list of quoted string values"),
            ("run_id IN ()", "expected a non-empty list of string values, but got empty list"),
            ("run_id IN ('a',)", "ill-formed list"),
            ("run_id IN ('a' 'b')", "ill-formed list"),
            ("run_id IN (1, 2)", "ill-formed list"),
            ("run_id IN ('a'", "ill-formed list"),
            ("start_time > '1'", "Expected numeric value type for numeric attribute: start_time. Found '1'"),
            ("created > x", "numeric attribute: created. Found x"),
            ("datasets.name = 1", "Expected a quoted string value for dataset attributes. Got value 1"),
            ("datasets.name IN 'a'", "Expected a list of quoted string values"),
        ];
        for (filter, msg) in cases {
            let e = err(filter);
            assert!(matches!(e, SearchError::InvalidValue(_)), "{filter}: {e:?}");
            assert!(e.to_string().contains(msg), "{filter}: {e}");
        }
    }

    fn orders(v: &[&str]) -> Result<Vec<RunOrder>> {
        parse_run_order_by(&strs(v))
    }

    fn ord(key: RunOrderKey, ascending: bool) -> RunOrder {
        RunOrder { key, ascending }
    }

    #[test]
    fn run_order_by_forms() {
        assert_eq!(orders(&[]).unwrap(), vec![]);
        assert!(
            orders(&["run_name", "metric.`a b` Asc", "`Run name`"]).is_err(),
            "run_name twice must be rejected"
        );
        assert_eq!(
            orders(&[
                "metrics.acc DESC",
                "params.p",
                "tags.t ASC",
                "attributes.start_time",
                "end_time desc",
                "run_name",
                "metric.`a b` Asc",
                "parameter.\"x.y\" DESC",
                "  status  ",
                "attr.user_id",
                "run.artifact_uri",
                "run_id",
                "lifecycle_stage",
                "tags.mlflow.runName",
            ])
            .unwrap(),
            vec![
                ord(RunOrderKey::Metric("acc".into()), false),
                ord(RunOrderKey::Param("p".into()), true),
                ord(RunOrderKey::Tag("t".into()), true),
                ord(RunOrderKey::Attribute(RunAttribute::StartTime), true),
                ord(RunOrderKey::Attribute(RunAttribute::EndTime), false),
                ord(RunOrderKey::Attribute(RunAttribute::RunName), true),
                ord(RunOrderKey::Metric("a b".into()), true),
                ord(RunOrderKey::Param("x.y".into()), false),
                ord(RunOrderKey::Attribute(RunAttribute::Status), true),
                ord(RunOrderKey::Attribute(RunAttribute::UserId), true),
                ord(RunOrderKey::Attribute(RunAttribute::ArtifactUri), true),
                ord(RunOrderKey::Attribute(RunAttribute::RunId), true),
                ord(RunOrderKey::Attribute(RunAttribute::LifecycleStage), true),
                ord(RunOrderKey::Tag("mlflow.runName".into()), true),
            ]
        );
        assert_eq!(
            orders(&["created DESC"]).unwrap(),
            vec![ord(RunOrderKey::Attribute(RunAttribute::StartTime), false)]
        );
        // The same metric key under a different prefix is still a duplicate.
        let e = orders(&["metrics.a", "metric.a DESC"]).unwrap_err();
        assert_eq!(
            e,
            SearchError::InvalidOrderBy(
                "`order_by` contains duplicate fields: ['metrics.a', 'metric.a DESC']".into()
            )
        );
        assert!(orders(&["created", "start_time DESC"]).is_err());
        // Different entities with the same key are fine.
        assert_eq!(
            orders(&["metrics.a", "params.a", "tags.a"]).unwrap().len(),
            3
        );
    }

    #[test]
    fn run_order_by_errors() {
        let cases: [(&str, &str); 9] = [
            ("", "Invalid order_by clause ''. Could not be parsed."),
            ("   ", "Could not be parsed."),
            (
                "metrics.a DESCENDING",
                "Invalid ordering key in order_by clause 'metrics.a DESCENDING'.",
            ),
            (
                "metrics.a b DESC",
                "Invalid ordering key in order_by clause 'metrics.a b DESC'.",
            ),
            (
                "metrics.a DESC ASC",
                "Invalid order_by clause 'metrics.a DESC ASC'. Could not be parsed.",
            ),
            (
                "metrics.a > 1",
                "Invalid ordering key in order_by clause 'metrics.a > 1'.",
            ),
            ("datasets.name", "Invalid order_by entity type 'dataset'"),
            ("foo.a", "Invalid entity type 'foo'"),
            (
                "attributes.bogus",
                "Invalid attribute key 'bogus' specified",
            ),
        ];
        for (text, msg) in cases {
            let e = orders(&[text]).unwrap_err();
            assert!(e.to_string().contains(msg), "{text:?}: {e}");
        }
        assert!(matches!(
            orders(&["metrics.`a"]).unwrap_err(),
            SearchError::InvalidOrderBy(_)
        ));
    }

    #[test]
    fn experiment_filter_forms() {
        let v = parse_experiment_filter(
            "name = 'a' and attribute.name != 'b' AND name LIKE 'c%' AND attributes.name ILIKE 'D%' \
             AND creation_time > 5 AND last_update_time <= 6.5 AND experiment_id = '3' \
             AND experiment_id != 4 AND experiment_id IN ('1', '2') AND experiment_id NOT IN ('9') \
             AND tags.k = 'v' AND tag.`a.b` LIKE 'x%' AND tags.k ILIKE 'V' AND tags.k != 'w' \
             AND tags.missing IS NULL AND tags.k IS NOT NULL",
        )
        .unwrap();
        assert_eq!(
            v,
            vec![
                ExperimentClause::Name(StrOp::Eq, "a".into()),
                ExperimentClause::Name(StrOp::Ne, "b".into()),
                ExperimentClause::Name(StrOp::Like, "c%".into()),
                ExperimentClause::Name(StrOp::ILike, "D%".into()),
                ExperimentClause::NumericAttribute {
                    attr: ExperimentAttribute::CreationTime,
                    op: NumOp::Gt,
                    value: Number::Int(5)
                },
                ExperimentClause::NumericAttribute {
                    attr: ExperimentAttribute::LastUpdateTime,
                    op: NumOp::Le,
                    value: Number::Float(6.5)
                },
                ExperimentClause::ExperimentId {
                    ids: vec![3],
                    negated: false
                },
                ExperimentClause::ExperimentId {
                    ids: vec![4],
                    negated: true
                },
                ExperimentClause::ExperimentId {
                    ids: vec![1, 2],
                    negated: false
                },
                ExperimentClause::ExperimentId {
                    ids: vec![9],
                    negated: true
                },
                ExperimentClause::Tag {
                    key: "k".into(),
                    cond: KeyCond::Cmp(StrOp::Eq, "v".into())
                },
                ExperimentClause::Tag {
                    key: "a.b".into(),
                    cond: KeyCond::Cmp(StrOp::Like, "x%".into())
                },
                ExperimentClause::Tag {
                    key: "k".into(),
                    cond: KeyCond::Cmp(StrOp::ILike, "V".into())
                },
                ExperimentClause::Tag {
                    key: "k".into(),
                    cond: KeyCond::Cmp(StrOp::Ne, "w".into())
                },
                ExperimentClause::Tag {
                    key: "missing".into(),
                    cond: KeyCond::IsNull
                },
                ExperimentClause::Tag {
                    key: "k".into(),
                    cond: KeyCond::IsNotNull
                },
            ]
        );
    }

    #[test]
    fn experiment_filter_errors() {
        let cases: [(&str, &str); 13] = [
            ("metrics.a > 1", "Invalid entity type 'metrics'. Valid entity types are ('attribute', 'tag', 'tags')"),
            ("params.a = 'x'", "Invalid entity type 'params'"),
            ("lifecycle_stage = 'active'", "Invalid attribute key 'lifecycle_stage' specified. Valid keys are '['creation_time', 'experiment_id', 'last_update_time', 'name']'"),
            ("name > 'a'", "Invalid comparator '>' not one of '['=', '!=', 'LIKE', 'ILIKE']'"),
            ("name IS NULL", "Invalid comparator 'IS NULL'"),
            ("name = 1", "Expected a quoted string value for attributes. Got value 1"),
            ("creation_time LIKE '1'", "Invalid comparator 'LIKE'"),
            ("creation_time = 'x'", "Expected numeric value type for numeric attribute: creation_time. Found 'x'"),
            ("experiment_id LIKE '1'", "Invalid comparator 'LIKE' not one of '['=', '!=', 'IN', 'NOT IN']'"),
            ("experiment_id = 'abc'", "Invalid experiment ID 'abc'"),
            ("experiment_id IN ('1', 'x')", "Invalid experiment ID 'x'"),
            ("tags.k > 'a'", "Invalid comparator '>'"),
            ("tags.k = 1", "Expected a quoted string value for tag"),
        ];
        for (filter, msg) in cases {
            let e = parse_experiment_filter(filter).unwrap_err();
            assert!(e.to_string().contains(msg), "{filter}: {e}");
        }
        assert!(matches!(
            parse_experiment_filter("name = 'a' OR name = 'b'").unwrap_err(),
            SearchError::Syntax(_)
        ));
    }

    #[test]
    fn experiment_order_by() {
        let v = parse_experiment_order_by(&strs(&[
            "name",
            "experiment_id DESC",
            "attribute.creation_time asc",
            "last_update_time DESC",
        ]))
        .unwrap();
        assert_eq!(
            v,
            vec![
                ExperimentOrder {
                    attr: ExperimentAttribute::Name,
                    ascending: true
                },
                ExperimentOrder {
                    attr: ExperimentAttribute::ExperimentId,
                    ascending: false
                },
                ExperimentOrder {
                    attr: ExperimentAttribute::CreationTime,
                    ascending: true
                },
                ExperimentOrder {
                    attr: ExperimentAttribute::LastUpdateTime,
                    ascending: false
                },
            ]
        );
        for (text, msg) in [
            ("tags.k", "Invalid order_by entity: tag"),
            ("metrics.k", "Invalid entity type 'metrics'"),
            ("bogus", "Invalid attribute key 'bogus'"),
            ("name sideways", "Invalid ordering key"),
            ("", "Could not be parsed"),
        ] {
            let e = parse_experiment_order_by(&strs(&[text])).unwrap_err();
            assert!(e.to_string().contains(msg), "{text}: {e}");
        }
        assert!(parse_experiment_order_by(&strs(&["name", "name DESC"]))
            .unwrap_err()
            .to_string()
            .contains("duplicate"));
    }

    #[test]
    fn registry_filters_parse_names_tags_versions_and_run_ids() {
        use RegistryEntity::*;
        let c = parse_registry_filter("name = 'm' AND tag.`mlflow.prompt.is_prompt` != 'true'", RegisteredModel).unwrap();
        assert_eq!(c[0], RegistryClause::Name(StrOp::Eq, "m".into()));
        assert_eq!(c[1], RegistryClause::Tag { key: "mlflow.prompt.is_prompt".into(), cond: KeyCond::Cmp(StrOp::Ne, "true".into()) });
        let c = parse_registry_filter("version_number >= 2 and run_id IN ('a','b') and source_path LIKE 'runs:/%'", ModelVersion).unwrap();
        assert_eq!(c[0], RegistryClause::VersionNumber(NumOp::Ge, Number::Int(2)));
        assert_eq!(c[1], RegistryClause::RunId(StrCond::In(vec!["a".into(), "b".into()])));
        assert_eq!(c[2], RegistryClause::SourcePath(StrOp::Like, "runs:/%".into()));
        // Version-only keys are refused for registered models, unknown keys everywhere.
        assert!(matches!(parse_registry_filter("version_number = 1", RegisteredModel), Err(SearchError::InvalidIdentifier(_))));
        assert!(matches!(parse_registry_filter("foo = 'x'", ModelVersion), Err(SearchError::InvalidIdentifier(_))));
        assert!(matches!(parse_registry_filter("name > 'x'", ModelVersion), Err(SearchError::InvalidComparator(_))));
        assert!(matches!(parse_registry_filter("version_number = 'x'", ModelVersion), Err(SearchError::InvalidValue(_))));
    }

    #[test]
    fn registry_order_by_accepts_mlflow_keys() {
        use RegistryEntity::*;
        let o = parse_registry_order_by(&["name DESC".into(), "last_updated_timestamp".into()], RegisteredModel).unwrap();
        assert_eq!(o, vec![
            RegistryOrder { attr: RegistryAttribute::Name, ascending: false },
            RegistryOrder { attr: RegistryAttribute::LastUpdatedTimestamp, ascending: true },
        ]);
        assert!(parse_registry_order_by(&["version_number".into()], RegisteredModel).is_err());
        assert!(parse_registry_order_by(&["version_number DESC".into()], ModelVersion).is_ok());
        assert!(parse_registry_order_by(&["name".into(), "name desc".into()], ModelVersion).is_err());
    }
}
