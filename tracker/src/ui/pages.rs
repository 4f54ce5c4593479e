//! The UI's handlers: each reads what its page shows, turns it into plain strings (the templates
//! only lay them out), and renders.

use std::collections::{BTreeMap, BTreeSet};

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use api::mlflow::Run;
use api::studies::TrialInfo;

use super::charts::{self, LineChart, Series};
use super::{render, svg, PageError};
use crate::artifacts::ArtifactPath;
use crate::http::Actor;
use crate::search::{parse_registry_filter, parse_run_filter, parse_run_order_by, RegistryEntity};
use crate::store::audit::ChangeBy;
use crate::store::experiments::ViewType;
use crate::store::promotion::Promotion;
use crate::store::runs::{EnvelopeBucket, MetricBlock};
use crate::studies::{LeaseTiming, Plan, Studies};
use crate::AppState;

type PageResult = Result<Response, PageError>;

/// Runs per page of the runs table unless `max_results` says otherwise.
const RUNS_PER_PAGE: i64 = 100;
/// Most runs one page or comparison may hold.
const MAX_RUNS_PER_PAGE: i64 = 1000;
const MAX_COMPARED: usize = 20;
/// Columns shown by default, per kind, when the user picked none.
const DEFAULT_COLUMNS: usize = 10;
/// Bytes of an artifact shown in a preview.
const PREVIEW_BYTES: usize = 64 * 1024;

// ----- helpers -----

/// The query string's pairs, repeated keys kept (`runs=a&runs=b`).
fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect()
}

fn first(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).filter(|v| !v.trim().is_empty())
}

fn all(pairs: &[(String, String)], key: &str) -> Vec<String> {
    pairs.iter().filter(|(k, _)| k == key).flat_map(|(_, v)| v.split(',')).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect()
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// `2026-12-01 17:41:41` (UTC) from milliseconds since the epoch.
fn fmt_time(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

/// A metric value in at most 6 significant digits; NaN and infinities spelled out.
fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let s = format!("{v:.6}");
    let a = v.abs();
    if a != 0.0 && !(1e-4..1e9).contains(&a) {
        return format!("{v:.4e}");
    }
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

fn run_name(run: &Run) -> String {
    if run.info.run_name.is_empty() {
        run.info.run_id.chars().take(8).collect()
    } else {
        run.info.run_name.clone()
    }
}

fn param_of<'a>(run: &'a Run, key: &str) -> Option<&'a str> {
    run.data.params.iter().find(|p| p.key == key).map(|p| p.value.as_str())
}

fn metric_of(run: &Run, key: &str) -> Option<f64> {
    run.data.metrics.iter().find(|m| m.key == key).map(|m| m.value)
}

/// Loads the runs named by `runs=` (at most [`MAX_COMPARED`]), in the order given.
async fn load_runs(app: &AppState, pairs: &[(String, String)]) -> Result<Vec<Run>, PageError> {
    let mut ids = all(pairs, "runs");
    ids.dedup();
    if ids.len() > MAX_COMPARED {
        return Err(PageError::new(StatusCode::BAD_REQUEST, format!("At most {MAX_COMPARED} runs can be compared; {} were selected.", ids.len())));
    }
    let mut runs = Vec::with_capacity(ids.len());
    for id in &ids {
        runs.push(app.store.get_run(id).await?);
    }
    Ok(runs)
}

fn runs_query(runs: &[Run]) -> String {
    runs.iter().map(|r| format!("runs={}", enc(&r.info.run_id))).collect::<Vec<_>>().join("&")
}

/// Every point of a metric, in step order.
async fn history(app: &AppState, run_id: &str, key: &str) -> Result<Vec<api::mlflow::Metric>, PageError> {
    Ok(app.store.metric_history(run_id, key, None, None).await?.metrics)
}

/// The points a chart draws for one metric: the whole history when short, else its min-max
/// envelope over [`charts::MAX_POINTS_PER_SERIES`]` / 2` spans, so that a million-point history
/// never leaves the database. The envelope comes from the metric's blocks (summaries of 256
/// points kept while logging) when they are fine enough for the spans and in x order, else from
/// a scan of every point (at most about 100,000 points when they were logged in x order).
async fn chart_points(app: &AppState, run_id: &str, key: &str, controls: &ChartControls) -> Result<Vec<(f64, f64)>, PageError> {
    let spans = (charts::MAX_POINTS_PER_SERIES / 2) as i64;
    let blocks = app.store.metric_blocks(run_id, key).await?;
    if blocks.iter().map(|b| b.points).sum::<i64>() <= 4 * spans {
        return Ok(controls.points(&history(app, run_id, key).await?));
    }
    let x_range = |b: &MetricBlock| if controls.by_time { b.timestamps } else { b.steps };
    let lo = blocks.iter().map(|b| x_range(b).0).min().unwrap_or(0);
    let hi = blocks.iter().map(|b| x_range(b).1).max().unwrap_or(0);
    let width = ((hi - lo) / spans).max(1);
    let envelope = match envelope_from_blocks(&blocks, x_range, (lo, width), spans) {
        Some(envelope) => envelope,
        None => app.store.metric_envelope(run_id, key, controls.by_time, (lo, width)).await?,
    };
    let x = |v: i64| if controls.by_time { (v - lo) as f64 / 1000.0 } else { v as f64 };
    Ok(envelope
        .iter()
        .flat_map(|s| {
            let mid = (x(s.x_min) + x(s.x_max)) / 2.0;
            [(mid, s.min), (mid, s.max)]
        })
        .collect())
}

/// The min-max envelope over spans `(origin, width)` folded from a metric's blocks, each block
/// into the span of its middle x, so a point is drawn at most one span from where it was logged.
/// `None` when the blocks cannot stand in for the points: fewer blocks than half the `spans` (too
/// coarse for the chart; a scan then reads at most about 100,000 points), or a block wider than
/// two spans (points logged out of x order, or across a gap).
fn envelope_from_blocks(
    blocks: &[MetricBlock],
    x_range: impl Fn(&MetricBlock) -> (i64, i64),
    (origin, width): (i64, i64),
    spans: i64,
) -> Option<Vec<EnvelopeBucket>> {
    if (blocks.len() as i64) < spans / 2 || blocks.iter().any(|b| x_range(b).1 - x_range(b).0 > 2 * width) {
        return None;
    }
    let mut envelope: BTreeMap<i64, EnvelopeBucket> = BTreeMap::new();
    for b in blocks.iter().filter(|b| b.value_points > 0) {
        let (x_min, x_max) = x_range(b);
        let bucket = (x_min + (x_max - x_min) / 2 - origin) / width;
        envelope
            .entry(bucket)
            .and_modify(|s| {
                s.x_min = s.x_min.min(x_min);
                s.x_max = s.x_max.max(x_max);
                s.min = s.min.min(b.values.0);
                s.max = s.max.max(b.values.1);
            })
            .or_insert(EnvelopeBucket { bucket, x_min, x_max, min: b.values.0, max: b.values.1 });
    }
    Some(envelope.into_values().collect())
}

fn chart_size(pairs: &[(String, String)]) -> (u32, u32) {
    let w = first(pairs, "w").and_then(|w| w.parse().ok()).unwrap_or(720u32).clamp(200, 2000);
    let h = first(pairs, "h").and_then(|h| h.parse().ok()).unwrap_or(360u32).clamp(150, 1500);
    (w, h)
}

/// The x axis, scale and smoothing of metric charts, from `x=`, `log=` and `smooth=`.
#[derive(Debug, Clone)]
pub(super) struct ChartControls {
    pub(super) by_time: bool,
    pub(super) log: bool,
    pub(super) smoothing: f64,
}

impl ChartControls {
    fn from_pairs(pairs: &[(String, String)]) -> Self {
        ChartControls {
            by_time: first(pairs, "x").as_deref() == Some("time"),
            log: matches!(first(pairs, "log").as_deref(), Some("1" | "on" | "true")),
            smoothing: first(pairs, "smooth").and_then(|s| s.parse::<f64>().ok()).filter(|s| s.is_finite()).unwrap_or(0.0).clamp(0.0, 0.99),
        }
    }

    fn query(&self) -> String {
        format!("x={}&log={}&smooth={}", if self.by_time { "time" } else { "step" }, u8::from(self.log), self.smoothing)
    }

    fn points(&self, history: &[api::mlflow::Metric]) -> Vec<(f64, f64)> {
        let t0 = history.iter().map(|m| m.timestamp).min().unwrap_or(0);
        history.iter().map(|m| (if self.by_time { (m.timestamp - t0) as f64 / 1000.0 } else { m.step as f64 }, m.value)).collect()
    }

    fn x_label(&self) -> &'static str {
        if self.by_time {
            "seconds since the first point"
        } else {
            "step"
        }
    }
}

// ----- error page -----

#[derive(Template)]
#[template(path = "error.html")]
pub(super) struct ErrorPage {
    pub(super) status: u16,
    pub(super) reason: String,
    pub(super) message: String,
}

// ----- home -----

pub(super) struct ExperimentRow {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) created: String,
}

pub(super) struct StudyRow {
    pub(super) name: String,
    pub(super) status: String,
    pub(super) trials: u64,
    pub(super) complete: u64,
    pub(super) best: String,
}

pub(super) struct ModelRow {
    pub(super) name: String,
    pub(super) latest: String,
    pub(super) aliases: String,
    pub(super) updated: String,
}

#[derive(Template)]
#[template(path = "home.html")]
pub(super) struct HomePage {
    pub(super) experiments: Vec<ExperimentRow>,
    pub(super) studies: Vec<StudyRow>,
    pub(super) models: Vec<ModelRow>,
}

pub(super) async fn home(State(app): State<AppState>) -> PageResult {
    let exps = app.store.search_experiments(&[], &[], ViewType::ActiveOnly, 1000, None).await?;
    let experiments =
        exps.experiments.iter().map(|e| ExperimentRow { id: e.experiment_id.clone(), name: e.name.clone(), created: fmt_time(e.creation_time) }).collect();
    let studies = Studies::new(&app.store, LeaseTiming::default())
        .list()
        .await?
        .into_iter()
        .map(|s| StudyRow {
            trials: s.trial_counts.values().sum(),
            complete: s.trial_counts.get("complete").copied().unwrap_or(0),
            best: s.best.as_ref().and_then(|b| b.value).map_or("-".into(), fmt_value),
            status: s.status,
            name: s.name,
        })
        .collect();
    let models = app
        .store
        .search_registered_models(&[], &[], 1000, None)
        .await?
        .items
        .into_iter()
        .map(|m| ModelRow {
            latest: m.latest_versions.iter().map(|v| v.version.parse::<i64>().unwrap_or(0)).max().map_or("-".into(), |v| v.to_string()),
            aliases: m.aliases.iter().map(|a| format!("{}→v{}", a.alias, a.version)).collect::<Vec<_>>().join(", "),
            updated: fmt_time(m.last_updated_timestamp),
            name: m.name,
        })
        .collect();
    Ok(render(&HomePage { experiments, studies, models }))
}

// ----- runs of an experiment -----

pub(super) struct Header {
    pub(super) label: String,
    pub(super) href: String,
    pub(super) arrow: String,
}

pub(super) struct RunRow {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) status: String,
    pub(super) started: String,
    pub(super) cells: Vec<String>,
}

#[derive(Template)]
#[template(path = "experiment.html")]
pub(super) struct ExperimentPage {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) filter: String,
    pub(super) order_by: String,
    pub(super) params_text: String,
    pub(super) metrics_text: String,
    pub(super) max_results: i64,
    pub(super) headers: Vec<Header>,
    pub(super) rows: Vec<RunRow>,
    pub(super) next_href: Option<String>,
    pub(super) first_href: Option<String>,
    pub(super) error: Option<String>,
}

pub(super) async fn experiment(State(app): State<AppState>, Path(id): Path<String>, uri: Uri) -> PageResult {
    let pairs = query_pairs(&uri);
    let exp = app.store.get_experiment(&id).await?;
    let filter = first(&pairs, "filter").unwrap_or_default();
    let order_by = first(&pairs, "order_by").unwrap_or_else(|| "attributes.start_time DESC".into());
    let max_results = first(&pairs, "max_results").and_then(|m| m.parse().ok()).unwrap_or(RUNS_PER_PAGE).clamp(1, MAX_RUNS_PER_PAGE);
    let page_token = first(&pairs, "page_token");
    let mut error = None;
    let clauses = parse_run_filter(&filter).map_err(|e| error = Some(format!("Filter: {e}"))).unwrap_or_default();
    let orders = parse_run_order_by(std::slice::from_ref(&order_by)).map_err(|e| error = Some(format!("Sort: {e}"))).unwrap_or_default();
    let page = if error.is_none() {
        match app.store.search_runs(std::slice::from_ref(&id), &clauses, &orders, ViewType::ActiveOnly, max_results, page_token.as_deref()).await {
            Ok(p) => Some(p),
            Err(e) => {
                let e = crate::Error::from(e);
                if e.status_and_code().0.is_server_error() {
                    return Err(e.into());
                }
                error = Some(e.to_string());
                None
            }
        }
    } else {
        None
    };
    let runs = page.as_ref().map_or(&[][..], |p| &p.runs[..]);
    let pick = |key: &str, found: &dyn Fn(&Run) -> Vec<String>| -> Vec<String> {
        let chosen = all(&pairs, key);
        if !chosen.is_empty() {
            return chosen;
        }
        let keys: BTreeSet<String> = runs.iter().flat_map(found).collect();
        keys.into_iter().take(DEFAULT_COLUMNS).collect()
    };
    let params = pick("params", &|r: &Run| r.data.params.iter().map(|p| p.key.clone()).collect());
    let metrics = pick("metrics", &|r: &Run| r.data.metrics.iter().map(|m| m.key.clone()).collect());
    let keep = format!(
        "filter={}&params={}&metrics={}&max_results={max_results}",
        enc(&filter),
        enc(&params.join(",")),
        enc(&metrics.join(","))
    );
    let header = |label: String, column: String| {
        let (arrow, next) = if order_by == format!("{column} DESC") {
            ("▼", format!("{column} ASC"))
        } else if order_by == format!("{column} ASC") {
            ("▲", format!("{column} DESC"))
        } else {
            ("", format!("{column} DESC"))
        };
        Header { label, href: format!("/experiments/{}?{keep}&order_by={}", enc(&id), enc(&next)), arrow: arrow.into() }
    };
    let mut headers = vec![header("Run".into(), "attributes.run_name".into()), header("Status".into(), "attributes.status".into()), header("Started".into(), "attributes.start_time".into())];
    headers.extend(params.iter().map(|p| header(format!("params.{p}"), format!("params.`{p}`"))));
    headers.extend(metrics.iter().map(|m| header(format!("metrics.{m}"), format!("metrics.`{m}`"))));
    let rows = runs
        .iter()
        .map(|r| RunRow {
            id: r.info.run_id.clone(),
            name: run_name(r),
            status: r.info.status.clone(),
            started: fmt_time(r.info.start_time),
            cells: params
                .iter()
                .map(|p| param_of(r, p).unwrap_or("").to_owned())
                .chain(metrics.iter().map(|m| metric_of(r, m).map_or(String::new(), fmt_value)))
                .collect(),
        })
        .collect();
    let base = format!("/experiments/{}?{keep}&order_by={}", enc(&id), enc(&order_by));
    let next_href = page.as_ref().and_then(|p| p.next_page_token.as_ref()).map(|t| format!("{base}&page_token={}", enc(t)));
    let first_href = page_token.is_some().then(|| base.clone());
    let status = if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let page = ExperimentPage {
        id: exp.experiment_id,
        name: exp.name,
        filter,
        order_by,
        params_text: params.join(","),
        metrics_text: metrics.join(","),
        max_results,
        headers,
        rows,
        next_href,
        first_href,
        error,
    };
    let mut response = render(&page);
    *response.status_mut() = status;
    Ok(response)
}

// ----- one run -----

pub(super) struct KeyValue {
    pub(super) key: String,
    pub(super) value: String,
}

pub(super) struct MetricRow {
    pub(super) key: String,
    pub(super) value: String,
    pub(super) step: i64,
    pub(super) chart: String,
}

pub(super) struct ArtifactRow {
    pub(super) name: String,
    pub(super) href: String,
    pub(super) is_dir: bool,
    pub(super) size: String,
}

pub(super) struct Preview {
    pub(super) name: String,
    pub(super) download: String,
    /// `text`, `image` or `binary`.
    pub(super) kind: String,
    pub(super) text: String,
    pub(super) truncated: bool,
}

pub(super) struct InputRow {
    pub(super) name: String,
    pub(super) digest: String,
    pub(super) source_type: String,
    pub(super) context: String,
}

#[derive(Template)]
#[template(path = "run.html")]
pub(super) struct RunPage {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) experiment_id: String,
    pub(super) status: String,
    pub(super) started: String,
    pub(super) ended: String,
    pub(super) params: Vec<KeyValue>,
    pub(super) tags: Vec<KeyValue>,
    pub(super) metrics: Vec<MetricRow>,
    pub(super) by_time: bool,
    pub(super) log: bool,
    pub(super) smoothing: f64,
    pub(super) artifact_dir: String,
    pub(super) parent_href: Option<String>,
    pub(super) artifacts: Vec<ArtifactRow>,
    pub(super) artifacts_note: Option<String>,
    pub(super) preview: Option<Preview>,
    pub(super) inputs: Vec<InputRow>,
}

/// The run's folder in the artifact proxy (`<exp>/<run>/artifacts`), when its artifacts are there.
fn proxy_root(artifact_uri: &str) -> Option<String> {
    let rest = artifact_uri.strip_prefix("mlflow-artifacts:")?;
    let path = match rest.strip_prefix("//") {
        Some(authority_and_path) => authority_and_path.split_once('/').map_or("", |(_, p)| p),
        None => rest,
    };
    Some(path.trim_matches('/').to_owned())
}

fn human_size(bytes: i64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

fn is_text(name: &str) -> bool {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    matches!(ext.as_str(), "txt" | "json" | "jsonl" | "yaml" | "yml" | "toml" | "md" | "csv" | "tsv" | "log" | "py" | "cfg" | "ini" | "xml" | "html") || name == "MLmodel"
}

fn is_image(name: &str) -> bool {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    matches!(ext.as_str(), "png" | "jpg" | "jpeg" | "gif" | "svg" | "webp")
}

async fn preview(app: &AppState, root: &str, file: &str) -> Result<Preview, PageError> {
    use futures::StreamExt as _;
    let full = format!("{root}/{file}");
    let path = ArtifactPath::parse(&full).map_err(crate::Error::from)?;
    let name = file.rsplit('/').next().unwrap_or(file).to_owned();
    let download = format!("/api/2.0/mlflow-artifacts/artifacts/{}", full.split('/').map(enc).collect::<Vec<_>>().join("/"));
    if is_image(&name) {
        return Ok(Preview { name, download, kind: "image".into(), text: String::new(), truncated: false });
    }
    if !is_text(&name) {
        return Ok(Preview { name, download, kind: "binary".into(), text: String::new(), truncated: false });
    }
    let (size, mut stream) = app.artifacts.get(&path).await.map_err(crate::Error::from)?;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.map_err(crate::Error::from)?);
        if bytes.len() >= PREVIEW_BYTES {
            break;
        }
    }
    bytes.truncate(PREVIEW_BYTES);
    let truncated = size as usize > bytes.len();
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if name.ends_with(".json") && !truncated {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            text = serde_json::to_string_pretty(&v).unwrap_or(text);
        }
    }
    Ok(Preview { name, download, kind: "text".into(), text, truncated })
}

pub(super) async fn run(State(app): State<AppState>, Path(id): Path<String>, uri: Uri) -> PageResult {
    let pairs = query_pairs(&uri);
    let run = app.store.get_run(&id).await?;
    let controls = ChartControls::from_pairs(&pairs);
    let mut params: Vec<KeyValue> = run.data.params.iter().map(|p| KeyValue { key: p.key.clone(), value: p.value.clone() }).collect();
    params.sort_by(|a, b| a.key.cmp(&b.key));
    let mut tags: Vec<KeyValue> =
        run.data.tags.iter().filter(|t| !t.key.starts_with("mlflow.log-model")).map(|t| KeyValue { key: t.key.clone(), value: t.value.clone() }).collect();
    tags.sort_by(|a, b| a.key.cmp(&b.key));
    let mut metrics: Vec<MetricRow> = run
        .data
        .metrics
        .iter()
        .map(|m| MetricRow {
            key: m.key.clone(),
            value: fmt_value(m.value),
            step: m.step,
            chart: format!("/charts/runs/{}?key={}&{}", enc(&id), enc(&m.key), controls.query()),
        })
        .collect();
    metrics.sort_by(|a, b| a.key.cmp(&b.key));

    let dir = first(&pairs, "path").unwrap_or_default().trim_matches('/').to_owned();
    let (mut artifacts, mut artifacts_note, mut preview_of, mut parent_href) = (Vec::new(), None, None, None);
    match proxy_root(&run.info.artifact_uri) {
        None => artifacts_note = Some(format!("This run's artifacts are stored at {}, outside this server's artifact proxy.", run.info.artifact_uri)),
        Some(root) => {
            if let Some(file) = first(&pairs, "file") {
                preview_of = Some(preview(&app, &root, file.trim_matches('/')).await?);
            }
            let full = if dir.is_empty() { root.clone() } else { format!("{root}/{dir}") };
            let path = ArtifactPath::parse(&full).map_err(crate::Error::from)?;
            for f in app.artifacts.list(&path).await.map_err(crate::Error::from)? {
                let rel = if dir.is_empty() { f.path.clone() } else { format!("{dir}/{}", f.path) };
                let href = if f.is_dir {
                    format!("/runs/{}?path={}#artifacts", enc(&id), enc(&rel))
                } else {
                    format!("/runs/{}?path={}&file={}#artifacts", enc(&id), enc(&dir), enc(&rel))
                };
                artifacts.push(ArtifactRow { name: f.path.clone(), href, is_dir: f.is_dir, size: f.file_size.map_or(String::new(), human_size) });
            }
            if !dir.is_empty() {
                let parent = dir.rsplit_once('/').map_or("", |(p, _)| p);
                parent_href = Some(format!("/runs/{}?path={}#artifacts", enc(&id), enc(parent)));
            }
        }
    }
    let inputs = run
        .inputs
        .dataset_inputs
        .iter()
        .map(|d| InputRow {
            name: d.dataset.name.clone(),
            digest: d.dataset.digest.clone(),
            source_type: d.dataset.source_type.clone(),
            context: d.tags.iter().map(|t| format!("{}={}", t.key, t.value)).collect::<Vec<_>>().join(", "),
        })
        .collect();
    Ok(render(&RunPage {
        name: run_name(&run),
        id: run.info.run_id.clone(),
        experiment_id: run.info.experiment_id.clone(),
        status: run.info.status.clone(),
        started: fmt_time(run.info.start_time),
        ended: run.info.end_time.map_or("-".into(), fmt_time),
        params,
        tags,
        metrics,
        by_time: controls.by_time,
        log: controls.log,
        smoothing: controls.smoothing,
        artifact_dir: dir,
        parent_href,
        artifacts,
        artifacts_note,
        preview: preview_of,
        inputs,
    }))
}

pub(super) async fn run_chart(State(app): State<AppState>, Path(id): Path<String>, uri: Uri) -> PageResult {
    let pairs = query_pairs(&uri);
    let key = first(&pairs, "key").ok_or_else(|| PageError::new(StatusCode::BAD_REQUEST, "`key` names the metric to draw"))?;
    let controls = ChartControls::from_pairs(&pairs);
    let run = app.store.get_run(&id).await?;
    let points = chart_points(&app, &id, &key, &controls).await?;
    let chart = LineChart {
        title: key.clone(),
        x_label: controls.x_label().into(),
        y_label: key.clone(),
        log_y: controls.log,
        smoothing: controls.smoothing,
        series: vec![Series { name: run_name(&run), points }],
    };
    let (w, h) = chart_size(&pairs);
    Ok(svg(chart.svg(w, h)))
}

// ----- compare -----

pub(super) struct ComparedRun {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) color: String,
}

pub(super) struct ParamDiff {
    pub(super) key: String,
    pub(super) values: Vec<String>,
    pub(super) differs: bool,
}

pub(super) struct NamedChart {
    pub(super) name: String,
    pub(super) src: String,
}

#[derive(Template)]
#[template(path = "compare.html")]
pub(super) struct ComparePage {
    pub(super) runs: Vec<ComparedRun>,
    pub(super) metric_charts: Vec<NamedChart>,
    pub(super) params: Vec<ParamDiff>,
    pub(super) objective: String,
    pub(super) metric_keys: Vec<String>,
    pub(super) scatters: Vec<NamedChart>,
    pub(super) parallel: String,
    pub(super) by_time: bool,
    pub(super) log: bool,
    pub(super) smoothing: f64,
}

fn numeric_params(runs: &[Run]) -> Vec<String> {
    let keys: BTreeSet<&str> = runs.iter().flat_map(|r| r.data.params.iter().map(|p| p.key.as_str())).collect();
    keys.into_iter().filter(|k| runs.iter().any(|r| param_of(r, k).is_some_and(|v| v.trim().parse::<f64>().is_ok()))).map(str::to_owned).collect()
}

pub(super) async fn compare(State(app): State<AppState>, uri: Uri) -> PageResult {
    let pairs = query_pairs(&uri);
    let runs = load_runs(&app, &pairs).await?;
    if runs.len() < 2 {
        return Err(PageError::new(StatusCode::BAD_REQUEST, "Select at least two runs to compare (tick them on an experiment's runs page)."));
    }
    let controls = ChartControls::from_pairs(&pairs);
    let rq = runs_query(&runs);
    let metric_keys: Vec<String> = runs.iter().flat_map(|r| r.data.metrics.iter().map(|m| m.key.clone())).collect::<BTreeSet<_>>().into_iter().collect();
    let objective = first(&pairs, "metric").filter(|m| metric_keys.contains(m)).or_else(|| metric_keys.first().cloned()).unwrap_or_default();
    let param_keys: BTreeSet<String> = runs.iter().flat_map(|r| r.data.params.iter().map(|p| p.key.clone())).collect();
    let params = param_keys
        .into_iter()
        .map(|key| {
            let values: Vec<String> = runs.iter().map(|r| param_of(r, &key).unwrap_or("").to_owned()).collect();
            let differs = values.iter().any(|v| *v != values[0]);
            ParamDiff { key, values, differs }
        })
        .collect();
    let metric_charts = metric_keys
        .iter()
        .map(|k| NamedChart { name: k.clone(), src: format!("/charts/compare?{rq}&key={}&{}", enc(k), controls.query()) })
        .collect();
    let scatters = if objective.is_empty() {
        Vec::new()
    } else {
        numeric_params(&runs)
            .into_iter()
            .map(|p| NamedChart { src: format!("/charts/scatter?{rq}&param={}&metric={}", enc(&p), enc(&objective)), name: p })
            .collect()
    };
    Ok(render(&ComparePage {
        runs: runs.iter().enumerate().map(|(i, r)| ComparedRun { id: r.info.run_id.clone(), name: run_name(r), color: charts::css_color(i) }).collect(),
        parallel: format!("/charts/parallel?{rq}&metric={}", enc(&objective)),
        metric_charts,
        params,
        objective,
        metric_keys,
        scatters,
        by_time: controls.by_time,
        log: controls.log,
        smoothing: controls.smoothing,
    }))
}

pub(super) async fn compare_chart(State(app): State<AppState>, uri: Uri) -> PageResult {
    let pairs = query_pairs(&uri);
    let key = first(&pairs, "key").ok_or_else(|| PageError::new(StatusCode::BAD_REQUEST, "`key` names the metric to draw"))?;
    let controls = ChartControls::from_pairs(&pairs);
    let runs = load_runs(&app, &pairs).await?;
    let mut series = Vec::with_capacity(runs.len());
    for r in &runs {
        series.push(Series { name: run_name(r), points: chart_points(&app, &r.info.run_id, &key, &controls).await? });
    }
    let chart = LineChart { title: key.clone(), x_label: controls.x_label().into(), y_label: key, log_y: controls.log, smoothing: controls.smoothing, series };
    let (w, h) = chart_size(&pairs);
    Ok(svg(chart.svg(w, h)))
}

pub(super) async fn scatter_chart(State(app): State<AppState>, uri: Uri) -> PageResult {
    let pairs = query_pairs(&uri);
    let (Some(param), Some(metric)) = (first(&pairs, "param"), first(&pairs, "metric")) else {
        return Err(PageError::new(StatusCode::BAD_REQUEST, "`param` and `metric` name the axes"));
    };
    let runs = load_runs(&app, &pairs).await?;
    let points: Vec<(f64, f64, String)> = runs
        .iter()
        .filter_map(|r| Some((param_of(r, &param)?.trim().parse::<f64>().ok()?, metric_of(r, &metric)?, run_name(r))))
        .collect();
    let (w, h) = chart_size(&pairs);
    Ok(svg(charts::scatter_svg(&format!("{param} → {metric}"), &param, &metric, &points, w.min(480), h.min(320))))
}

pub(super) async fn parallel_chart(State(app): State<AppState>, uri: Uri) -> PageResult {
    let pairs = query_pairs(&uri);
    let runs = load_runs(&app, &pairs).await?;
    let mut axes = numeric_params(&runs);
    let metric = first(&pairs, "metric");
    if let Some(m) = &metric {
        axes.push(m.clone());
    }
    let lines: Vec<(String, Vec<Option<f64>>)> = runs
        .iter()
        .map(|r| {
            let mut values: Vec<Option<f64>> = axes.iter().take(axes.len() - usize::from(metric.is_some())).map(|p| param_of(r, p).and_then(|v| v.trim().parse().ok())).collect();
            if let Some(m) = &metric {
                values.push(metric_of(r, m));
            }
            (run_name(r), values)
        })
        .collect();
    let (w, h) = chart_size(&pairs);
    Ok(svg(charts::parallel_svg(&axes, &lines, w.max(600), h)))
}

// ----- studies -----

pub(super) struct TrialRow {
    pub(super) number: u64,
    pub(super) run_id: String,
    pub(super) state: String,
    pub(super) value: String,
    pub(super) step: String,
    pub(super) rung: String,
    pub(super) attempt: u32,
    pub(super) worker: String,
    pub(super) params: String,
}

pub(super) struct Importance {
    pub(super) param: String,
    pub(super) score: String,
    pub(super) width: u32,
}

pub(super) struct WorkerRow {
    pub(super) id: String,
    pub(super) status: String,
    pub(super) last_seen: String,
    pub(super) leases: String,
}

#[derive(Template)]
#[template(path = "study.html")]
pub(super) struct StudyPage {
    pub(super) name: String,
    pub(super) status: String,
    pub(super) experiment_id: String,
    pub(super) objective: String,
    pub(super) direction: String,
    pub(super) sampler: String,
    pub(super) scheduler: String,
    pub(super) counts: String,
    pub(super) best: String,
    pub(super) registered: String,
    pub(super) trials: Vec<TrialRow>,
    pub(super) importance: Vec<Importance>,
    pub(super) workers: Vec<WorkerRow>,
    pub(super) live: bool,
}

/// The steps a study's trials are judged at, as the tracker's plan has them, with the full
/// resource last; empty for FIFO and median.
fn milestones(spec: &api::studies::StudySpec) -> Vec<u64> {
    let Ok(plan) = Plan::compile(spec.clone()) else { return Vec::new() };
    let mut marks = plan.milestones().to_vec();
    if let (Some(max), false) = (spec.scheduler.max_resource, marks.is_empty()) {
        marks.push(max);
    }
    marks
}

/// Ranks with ties averaged (for Spearman's correlation).
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|a, b| values[*a].total_cmp(&values[*b]));
    let mut out = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0;
        for k in i..=j {
            out[order[k]] = rank;
        }
        i = j + 1;
    }
    out
}

/// |Spearman's rank correlation| between each param and the objective over trials with a value:
/// a quick, assumption-light reading of which params matter. Categorical values are ranked by
/// their order of first appearance, so only their grouping, not their order, is meaningful.
fn importance(trials: &[TrialInfo]) -> Vec<(String, f64)> {
    let scored: Vec<&TrialInfo> = trials.iter().filter(|t| t.value.is_some_and(f64::is_finite)).collect();
    if scored.len() < 3 {
        return Vec::new();
    }
    let objective = ranks(&scored.iter().map(|t| t.value.unwrap_or(0.0)).collect::<Vec<_>>());
    let keys: BTreeSet<&String> = scored.iter().flat_map(|t| t.params.keys()).collect();
    let mut out = Vec::new();
    for key in keys {
        let mut seen: Vec<String> = Vec::new();
        let xs: Vec<f64> = scored
            .iter()
            .map(|t| match t.params.get(key) {
                Some(serde_json::Value::Number(n)) => n.as_f64().unwrap_or(0.0),
                Some(other) => {
                    let s = other.to_string();
                    let i = seen.iter().position(|v| *v == s).unwrap_or_else(|| {
                        seen.push(s);
                        seen.len() - 1
                    });
                    i as f64
                }
                None => f64::NAN,
            })
            .collect();
        if xs.iter().any(|x| x.is_nan()) {
            continue;
        }
        let rx = ranks(&xs);
        let n = rx.len() as f64;
        let (mx, my) = (rx.iter().sum::<f64>() / n, objective.iter().sum::<f64>() / n);
        let cov: f64 = rx.iter().zip(&objective).map(|(a, b)| (a - mx) * (b - my)).sum();
        let (vx, vy) = (rx.iter().map(|a| (a - mx).powi(2)).sum::<f64>(), objective.iter().map(|b| (b - my).powi(2)).sum::<f64>());
        let rho = if vx > 0.0 && vy > 0.0 { cov / (vx * vy).sqrt() } else { 0.0 };
        out.push((key.clone(), rho.abs()));
    }
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

pub(super) async fn study(State(app): State<AppState>, Path(name): Path<String>, uri: Uri) -> PageResult {
    let pairs = query_pairs(&uri);
    let studies = Studies::new(&app.store, LeaseTiming::default());
    let (info, trials) = studies.get(&name).await?;
    let marks = milestones(&info.spec);
    let rows = trials
        .iter()
        .map(|t| TrialRow {
            number: t.number,
            run_id: t.run_id.clone(),
            state: t.state.clone(),
            value: t.value.map_or("-".into(), fmt_value),
            step: t.last_step.map_or("-".into(), |s| s.to_string()),
            rung: match t.last_step {
                Some(step) if !marks.is_empty() => marks.iter().filter(|m| **m <= step).count().checked_sub(1).map_or("-".into(), |r| r.to_string()),
                _ => "-".into(),
            },
            attempt: t.attempt,
            worker: t.worker_id.clone().unwrap_or_default(),
            params: t.params.iter().map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_owned))).collect::<Vec<_>>().join(" "),
        })
        .collect();
    let importance = importance(&trials)
        .into_iter()
        .map(|(param, score)| Importance { param, score: format!("{score:.2}"), width: (score * 200.0).round() as u32 })
        .collect();
    let mut leases: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in trials.iter().filter(|t| t.state == "running") {
        if let Some(w) = &t.worker_id {
            leases.entry(w.clone()).or_default().push(format!("trial {} (attempt {})", t.number, t.attempt));
        }
    }
    let workers = studies
        .workers()
        .await?
        .into_iter()
        .map(|w| WorkerRow { leases: leases.get(&w.worker_id).map(|l| l.join(", ")).unwrap_or_default(), id: w.worker_id, status: w.status, last_seen: fmt_time(w.last_seen) })
        .collect();
    let s = &info.spec.scheduler;
    let scheduler = match (s.min_resource, s.max_resource) {
        (Some(lo), Some(hi)) => format!("{} (milestones {})", s.kind, marks.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ")).replace(" ()", &format!(" ({lo}..{hi})")),
        _ => s.kind.clone(),
    };
    Ok(render(&StudyPage {
        counts: info.trial_counts.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", "),
        best: info.best.as_ref().map_or("-".into(), |b| format!("trial {}: {} = {}", b.number, info.spec.objective.metric, b.value.map_or("-".into(), fmt_value))),
        registered: info.registered.as_ref().map_or(String::new(), |r| {
            let promotion = if r.promotion.is_empty() { String::new() } else { format!(" ({})", r.promotion) };
            format!("trial {} registered as {} version {}{promotion}", r.trial, r.model, r.version)
        }),
        objective: info.spec.objective.metric.clone(),
        direction: info.spec.objective.direction.clone(),
        sampler: info.spec.sampler.clone(),
        scheduler,
        name: info.name,
        status: info.status,
        experiment_id: info.experiment_id,
        trials: rows,
        importance,
        workers,
        live: first(&pairs, "live").as_deref() == Some("1"),
    }))
}

pub(super) async fn study_best_chart(State(app): State<AppState>, Path(name): Path<String>, uri: Uri) -> PageResult {
    let pairs = query_pairs(&uri);
    let (info, trials) = Studies::new(&app.store, LeaseTiming::default()).get(&name).await?;
    let maximize = info.spec.objective.direction == "maximize";
    let completed = trials.iter().filter(|t| t.state == "complete").filter_map(|t| Some((t.number, t.value?)));
    let points = best_so_far(completed, maximize, trials.last().map(|t| t.number));
    let chart = LineChart {
        title: format!("best {} so far", info.spec.objective.metric),
        x_label: "trial".into(),
        y_label: info.spec.objective.metric.clone(),
        log_y: false,
        smoothing: 0.0,
        series: vec![Series { name: "best".into(), points }],
    };
    let (w, h) = chart_size(&pairs);
    Ok(svg(chart.svg(w, h)))
}

/// The best-so-far curve of completed trials `(number, value)` in trial order, as steps: the best
/// value holds flat until the trial that beats it, and on to `last_trial`.
fn best_so_far(completed: impl Iterator<Item = (u64, f64)>, maximize: bool, last_trial: Option<u64>) -> Vec<(f64, f64)> {
    let mut best: Option<f64> = None;
    let mut points = Vec::new();
    for (number, v) in completed.filter(|(_, v)| v.is_finite()) {
        let x = number as f64;
        let better = best.is_none_or(|b| if maximize { v > b } else { v < b });
        if !better {
            continue;
        }
        if let Some(prev) = best {
            points.push((x, prev));
        }
        best = Some(v);
        points.push((x, v));
    }
    if let (Some(b), Some(last)) = (best, last_trial) {
        if points.last().is_some_and(|p| p.0 < last as f64) {
            points.push((last as f64, b));
        }
    }
    points
}

/// Every trial's reports of the objective by step: ASHA's rungs show as the steps where curves stop.
pub(super) async fn study_curves_chart(State(app): State<AppState>, Path(name): Path<String>, uri: Uri) -> PageResult {
    let pairs = query_pairs(&uri);
    let (info, trials) = Studies::new(&app.store, LeaseTiming::default()).get(&name).await?;
    let mut series = Vec::with_capacity(trials.len());
    for t in &trials {
        let points = history(&app, &t.run_id, &info.spec.objective.metric).await?.iter().map(|m| (m.step as f64, m.value)).collect();
        series.push(Series { name: format!("trial {}", t.number), points });
    }
    let chart = LineChart {
        title: format!("{} by step, per trial", info.spec.objective.metric),
        x_label: "step".into(),
        y_label: info.spec.objective.metric.clone(),
        log_y: false,
        smoothing: 0.0,
        series,
    };
    let (w, h) = chart_size(&pairs);
    Ok(svg(chart.svg(w, h)))
}

// ----- registry -----

pub(super) struct VersionRow {
    pub(super) version: String,
    pub(super) stage: String,
    pub(super) aliases: String,
    pub(super) source: String,
    pub(super) run_id: String,
    pub(super) created: String,
    pub(super) description: String,
}

pub(super) struct AuditRow {
    pub(super) time: String,
    pub(super) actor: String,
    pub(super) action: String,
    pub(super) change: String,
    pub(super) reason: String,
}

pub(super) struct CheckRow {
    pub(super) rule: String,
    pub(super) passed: bool,
    pub(super) detail: String,
}

pub(super) struct Verdict {
    pub(super) promoted: bool,
    pub(super) message: String,
    pub(super) checks: Vec<CheckRow>,
}

#[derive(Template)]
#[template(path = "model.html")]
pub(super) struct ModelPage {
    pub(super) name: String,
    pub(super) description: String,
    pub(super) aliases: Vec<KeyValue>,
    pub(super) versions: Vec<VersionRow>,
    pub(super) rules: Vec<String>,
    pub(super) audit: Vec<AuditRow>,
    pub(super) verdict: Option<Verdict>,
}

async fn model_page(app: &AppState, name: &str, verdict: Option<Verdict>) -> Result<ModelPage, PageError> {
    let model = app.store.get_registered_model(name).await?;
    let filter = format!("name = '{}'", name.replace('\'', "\\'"));
    let clauses = parse_registry_filter(&filter, RegistryEntity::ModelVersion).map_err(|e| PageError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let mut versions = app.store.search_model_versions(&clauses, &[], 1000, None).await?.items;
    versions.sort_by_key(|v| std::cmp::Reverse(v.version.parse::<i64>().unwrap_or(0)));
    let audit = app.store.list_audit(Some(name), 50, None).await?.items;
    Ok(ModelPage {
        description: model.description.clone(),
        aliases: model.aliases.iter().map(|a| KeyValue { key: a.alias.clone(), value: a.version.clone() }).collect(),
        versions: versions
            .iter()
            .map(|v| VersionRow {
                version: v.version.clone(),
                stage: v.current_stage.clone(),
                aliases: v.aliases.join(", "),
                source: v.source.clone(),
                run_id: v.run_id.clone(),
                created: fmt_time(v.creation_timestamp),
                description: v.description.clone(),
            })
            .collect(),
        rules: app.store.get_promotion_rules(name).await?,
        audit: audit
            .iter()
            .map(|e| {
                let change = match (&e.alias, &e.from_stage, &e.to_stage) {
                    (Some(alias), _, _) => format!("{alias}: {} → {}", e.from_version.as_deref().map_or("none".into(), |v| format!("v{v}")), e.to_version.as_deref().map_or("none".into(), |v| format!("v{v}"))),
                    (None, from, to) => format!("v{}: {} → {}", e.version.as_deref().unwrap_or("?"), from.as_deref().unwrap_or("-"), to.as_deref().unwrap_or("-")),
                };
                AuditRow { time: fmt_time(e.timestamp), actor: e.actor.clone(), action: e.action.clone(), change, reason: e.reason.clone() }
            })
            .collect(),
        name: model.name,
        verdict,
    })
}

pub(super) async fn model(State(app): State<AppState>, Path(name): Path<String>) -> PageResult {
    Ok(render(&model_page(&app, &name, None).await?))
}

/// The promote form: gated like `POST /api/tracker/models/promote`; the page shows the verdict.
pub(super) async fn promote(State(app): State<AppState>, Path(name): Path<String>, Actor(actor): Actor, headers: HeaderMap, body: axum::body::Bytes) -> PageResult {
    // A form posted from another site (a page the user happens to visit) must not promote.
    if let (Some(origin), Some(host)) = (headers.get("origin").and_then(|o| o.to_str().ok()), headers.get("host").and_then(|h| h.to_str().ok())) {
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        if origin != "null" && origin_host != host {
            return Err(PageError::new(StatusCode::FORBIDDEN, format!("A promotion form from {origin} was refused: forms are accepted from this server's own pages only.")));
        }
    }
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let version = first(&form, "version").unwrap_or_default();
    let alias = first(&form, "alias").unwrap_or_default();
    let reason = first(&form, "reason");
    let outcome = async {
        let wanted = Some(alias.clone());
        let alias = crate::http::registry::alias_name(&wanted)?;
        if version.is_empty() {
            return Err(crate::Error::InvalidParameter("Choose a version to promote.".into()));
        }
        Ok(app.store.promote(&name, &version, alias, &ChangeBy::new(actor, reason.as_deref())).await?)
    }
    .await;
    let (status, verdict) = match outcome {
        Ok(Promotion::Promoted { previous_version, checks, .. }) => {
            app.webhooks.wake();
            let from = previous_version.map_or("no version".into(), |v| format!("version {v}"));
            let checks = checks.into_iter().map(|c| CheckRow { rule: c.rule, passed: c.passed, detail: c.detail }).collect();
            (StatusCode::OK, Verdict { promoted: true, message: format!("Version {version} now holds '{alias}' (was {from})."), checks })
        }
        Ok(Promotion::Refused { failed, checks }) => {
            let message = crate::http::promotion::refusal_message(&name, &version, &alias, &failed.rule, &failed.detail);
            let checks = checks.into_iter().map(|c| CheckRow { rule: c.rule, passed: c.passed, detail: c.detail }).collect();
            (StatusCode::PRECONDITION_FAILED, Verdict { promoted: false, message, checks })
        }
        Err(e) => {
            let (status, _) = e.status_and_code();
            if status.is_server_error() {
                return Err(e.into());
            }
            (status, Verdict { promoted: false, message: e.to_string(), checks: Vec::new() })
        }
    };
    let mut response = render(&model_page(&app, &name, Some(verdict)).await?);
    *response.status_mut() = status;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_so_far_is_a_step_curve_to_the_last_trial() {
        let completed = [(0, 3.0), (2, 4.0), (3, 2.0), (5, f64::NAN), (6, 1.5)];
        assert_eq!(
            best_so_far(completed.into_iter(), false, Some(8)),
            vec![(0.0, 3.0), (3.0, 3.0), (3.0, 2.0), (6.0, 2.0), (6.0, 1.5), (8.0, 1.5)]
        );
        assert_eq!(best_so_far(completed.into_iter(), true, Some(6)), vec![(0.0, 3.0), (2.0, 3.0), (2.0, 4.0), (6.0, 4.0)]);
        assert!(best_so_far(std::iter::empty(), false, Some(3)).is_empty());
    }

    /// Blocks of 256 steps each, in step order, with values `value(step)`.
    fn blocks_of(steps: std::ops::Range<i64>, value: impl Fn(i64) -> f64) -> Vec<MetricBlock> {
        let steps: Vec<i64> = steps.collect();
        steps
            .chunks(256)
            .map(|c| {
                let values = c.iter().map(|&s| value(s));
                MetricBlock {
                    points: c.len() as i64,
                    value_points: c.len() as i64,
                    steps: (c[0], c[c.len() - 1]),
                    timestamps: (c[0], c[c.len() - 1]),
                    values: (values.clone().fold(f64::MAX, f64::min), values.fold(f64::MIN, f64::max)),
                }
            })
            .collect()
    }

    #[test]
    fn blocks_fold_into_spans_keeping_every_extreme_where_it_was_logged() {
        let value = |s: i64| if s == 77_777 { 7777.0 } else if s == 1_234 { -5.0 } else { (s % 100) as f64 };
        let blocks = blocks_of(0..120_000, value);
        let steps = |b: &MetricBlock| b.steps;
        let width = 120_000 / 800;
        let envelope = envelope_from_blocks(&blocks, steps, (0, width), 800).expect("fine enough and in order");
        assert_eq!(envelope.len(), 469, "a span per block, as blocks are wider than spans");
        let holding = |v: f64| envelope.iter().find(|s| s.min == v || s.max == v).copied().unwrap();
        let (spike, dip) = (holding(7777.0), holding(-5.0));
        assert!(spike.x_min <= 77_777 && 77_777 <= spike.x_max && spike.x_max - spike.x_min < 2 * width, "{spike:?}");
        assert!(dip.x_min <= 1_234 && 1_234 <= dip.x_max, "{dip:?}");
        assert!(envelope.windows(2).all(|w| w[0].bucket < w[1].bucket && w[0].x_max < w[1].x_min));

        // Blocks of NaN points only are left out.
        let mut with_nan = blocks.clone();
        with_nan[10].value_points = 0;
        with_nan[10].values = (f64::MAX, -f64::MAX);
        let envelope = envelope_from_blocks(&with_nan, steps, (0, width), 800).unwrap();
        assert!(envelope.iter().all(|s| s.min >= -5.0 && s.max <= 7777.0));
    }

    #[test]
    fn blocks_too_coarse_or_out_of_order_leave_the_envelope_to_the_points() {
        let steps = |b: &MetricBlock| b.steps;
        let few = blocks_of(0..50_000, |s| s as f64);
        assert!(envelope_from_blocks(&few, steps, (0, 50_000 / 800), 800).is_none(), "196 blocks for 800 spans");
        let mut shuffled = blocks_of(0..1_000_000, |s| s as f64);
        shuffled[3].steps = (768, 100_000);
        assert!(envelope_from_blocks(&shuffled, steps, (0, 1_250), 800).is_none(), "a block wider than two spans");
    }

    #[test]
    fn times_and_values_read_well() {
        assert_eq!(fmt_time(0), "-");
        assert_eq!(fmt_time(1_796_146_901_495), "2026-12-01 17:41:41");
        assert_eq!(fmt_time(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(fmt_value(0.5), "0.5");
        assert_eq!(fmt_value(3.0), "3");
        assert_eq!(fmt_value(f64::NAN), "NaN");
        assert_eq!(fmt_value(1.0e-7), "1.0000e-7");
    }

    #[test]
    fn spearman_importance_ranks_the_param_that_drives_the_objective() {
        let trial = |n: u64, lr: f64, noise: &str, value: f64| TrialInfo {
            number: n,
            run_id: String::new(),
            state: "complete".into(),
            params: [("lr".to_owned(), serde_json::json!(lr)), ("opt".to_owned(), serde_json::json!(noise))].into_iter().collect(),
            value: Some(value),
            last_step: None,
            attempt: 1,
            worker_id: None,
            checkpoint: None,
            failures: 0,
            lost: 0,
            error: None,
        };
        let trials = vec![trial(0, 0.1, "a", 1.0), trial(1, 0.2, "b", 2.0), trial(2, 0.3, "a", 3.0), trial(3, 0.4, "b", 4.0)];
        let imp = importance(&trials);
        assert_eq!(imp[0].0, "lr");
        assert!((imp[0].1 - 1.0).abs() < 1e-12);
        assert!(imp[1].1 < 0.5);
        assert_eq!(ranks(&[3.0, 1.0, 1.0]), vec![2.0, 0.5, 0.5]);
    }

    #[test]
    fn asha_milestones_follow_the_spec() {
        let spec: api::studies::StudySpec = serde_json::from_value(serde_json::json!({
            "name": "s", "objective": {"metric": "m", "direction": "minimize"}, "space": {"lr": {"type": "float", "low": 0.001, "high": 0.1}}, "max_trials": 1,
            "scheduler": {"kind": "asha", "min_resource": 100, "max_resource": 400, "reduction_factor": 2}, "run": {"command": ["x"]}
        }))
        .unwrap();
        assert_eq!(milestones(&spec), vec![100, 200, 400]);
    }
}
