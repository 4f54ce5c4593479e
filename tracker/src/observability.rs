//! Prometheus metrics of the server itself, served at `/metrics` in the OpenMetrics text format.
//!
//! * `tracker_http_requests_total{method,route,status}`: requests answered;
//! * `tracker_http_request_duration_seconds{method,route}`: latency histogram;
//! * `tracker_db_pool_connections{pool,state}`: open connections of each pool, idle or in use;
//! * `tracker_metric_group_transactions_total` and `tracker_metric_group_requests_total` (SQLite):
//!   transactions the group commit of metric points ran and requests it answered; their ratio is
//!   the requests stored per transaction;
//! * `tracker_study_trials{study,state}`: trials of each study by state;
//! * `tracker_study_waiting_trials{study}`: trials of a running study that a worker could start
//!   now (requeued ones plus those not yet sampled): the queue depth that autoscalers (KEDA, HPA
//!   on external metrics) size GPU worker pools by.
//!
//! `route` is the route's pattern (`/api/2.0/mlflow-artifacts/artifacts/{*path}`), never the raw
//! path, so the number of series stays bounded; requests refused by auth before routing are
//! `(refused)` and unknown endpoints `(unmatched)`.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StudyStateLabels {
    study: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StudyLabels {
    study: String,
}

type LatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Request counters, latency histograms and pool gauges.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
    pool: Family<PoolLabels, Gauge>,
    study_trials: Family<StudyStateLabels, Gauge>,
    study_waiting: Family<StudyLabels, Gauge>,
}

/// The group commit's counts, read from the store at each scrape.
#[derive(Debug)]
struct GroupCommitCollector(Arc<crate::store::GroupCommitCounts>);

impl Collector for GroupCommitCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        for (name, help, value) in [
            ("tracker_metric_group_transactions", "Transactions the group commit of metric points ran", &self.0.transactions),
            ("tracker_metric_group_requests", "Requests of metric points the group commit answered", &self.0.requests),
        ] {
            let counter = ConstCounter::new(value.load(Relaxed));
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        Ok(())
    }
}

impl Metrics {
    /// The metrics of a server over `store`.
    pub fn new(store: &crate::store::Store) -> Self {
        let mut metrics = Metrics::default();
        if let Some(counts) = store.group_commit_counts() {
            metrics.registry.register_collector(Box::new(GroupCommitCollector(counts)));
        }
        metrics
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        // 0.1 ms to 1.6 s in doublings: the server answers most calls well under a millisecond.
        let latency: LatencyFamily = Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 15)));
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register("tracker_http_requests", "HTTP requests answered", requests.clone());
        registry.register("tracker_http_request_duration_seconds", "HTTP request latency", latency.clone());
        registry.register("tracker_db_pool_connections", "Open database connections by pool and state", pool.clone());
        let study_trials = Family::<StudyStateLabels, Gauge>::default();
        let study_waiting = Family::<StudyLabels, Gauge>::default();
        registry.register("tracker_study_trials", "Trials of each study by state", study_trials.clone());
        registry.register("tracker_study_waiting_trials", "Trials of a running study that a worker could start now", study_waiting.clone());
        Metrics { registry, requests, latency, pool, study_trials, study_waiting }
    }
}

impl Metrics {
    fn observe(&self, method: &str, route: String, status: StatusCode, seconds: f64) {
        let labels = RouteLabels { method: method.to_owned(), route };
        self.latency.get_or_create(&labels).observe(seconds);
        self.requests.get_or_create(&RequestLabels { method: labels.method, route: labels.route, status: status.as_u16() }).inc();
    }
}

/// Where the route layer leaves the matched route for [`track`], which runs outside routing.
#[derive(Clone, Default)]
struct RouteSlot(Arc<OnceLock<String>>);

/// Records one request: the outermost layer, so it sees refused and unknown requests too.
pub async fn track(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let slot = RouteSlot::default();
    req.extensions_mut().insert(slot.clone());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let response = next.run(req).await;
    let status = response.status();
    let route = slot.0.get().cloned().unwrap_or_else(|| match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "(refused)".to_owned(),
        _ => "(unmatched)".to_owned(),
    });
    app.metrics.observe(&method, route, status, start.elapsed().as_secs_f64());
    response
}

/// Route layer: passes the matched route pattern to [`track`].
pub async fn record_route(req: Request, next: Next) -> Response {
    if let (Some(slot), Some(path)) = (req.extensions().get::<RouteSlot>(), req.extensions().get::<MatchedPath>()) {
        let _ = slot.0.set(path.as_str().to_owned());
    }
    next.run(req).await
}

/// Sets the study gauges from the store: trials by state, and the waiting trials of running
/// studies. Finished or deleted studies drop out.
async fn study_gauges(app: &AppState) -> crate::Result<()> {
    let counts = app.store.trial_counts().await?;
    let studies = app.store.list_studies().await?;
    app.metrics.study_trials.clear();
    app.metrics.study_waiting.clear();
    for (study, state, n) in &counts {
        app.metrics.study_trials.get_or_create(&StudyStateLabels { study: study.clone(), state: state.clone() }).set(*n);
    }
    for s in studies.iter().filter(|s| s.status == "running") {
        let Ok(spec) = serde_json::from_str::<api::studies::StudySpec>(&s.spec) else { continue };
        let of = |state: &str| counts.iter().filter(|(st, sa, _)| *st == s.name && sa == state).map(|(.., n)| *n).sum::<i64>();
        let created: i64 = counts.iter().filter(|(st, ..)| *st == s.name).map(|(.., n)| *n).sum();
        let not_sampled = (spec.max_trials as i64 - created).max(0);
        let room = spec.max_concurrent.map_or(i64::MAX, |m| (m as i64 - of("running")).max(0));
        app.metrics.study_waiting.get_or_create(&StudyLabels { study: s.name.clone() }).set((of("queued") + not_sampled).min(room));
    }
    Ok(())
}

/// `GET /metrics`.
pub async fn metrics_endpoint(State(app): State<AppState>) -> Response {
    for (pool, size, idle) in app.store.pool_stats() {
        let gauge = |state: &str| app.metrics.pool.get_or_create(&PoolLabels { pool: pool.to_owned(), state: state.to_owned() }).clone();
        gauge("idle").set(idle as i64);
        gauge("in_use").set(size as i64 - idle as i64);
    }
    if let Err(e) = study_gauges(&app).await {
        tracing::warn!(error = %e, "reading the studies for /metrics failed; their gauges are left out");
    }
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &app.metrics.registry) {
        return crate::Error::Internal(anyhow::anyhow!("encoding metrics: {e}")).into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}
