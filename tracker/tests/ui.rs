//! The web UI over HTTP: an HTML snapshot of every page of a seeded server (run ids and times
//! normalized; `UPDATE_SNAPSHOTS=1` rewrites `tests/snapshots/ui/`), the charts as SVG, and the
//! error states: bad filters, unknown runs, too few runs to compare, refused and cross-site
//! promotions. The browser tests (tests/mlflow_client/test_ui_browser.py) click through the same
//! pages in Chromium.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use common::{Backend, TestServer};
use serde_json::json;

use common::{seed_runs, seed_study, T0};

/// Replaces what changes from run to run (32-hex run ids, wall-clock times) with stable names.
fn normalize(html: &str) -> String {
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut out = String::with_capacity(html.len());
    let bytes = html.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let hex_run = bytes[i..].iter().take_while(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()).count();
        let boundary = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        if hex_run == 32 && boundary && bytes.get(i + 32).is_none_or(|b| !b.is_ascii_alphanumeric()) {
            let n = ids.len();
            let name = ids.entry(html[i..i + 32].to_owned()).or_insert_with(|| format!("RUN{n}"));
            out.push_str(name);
            i += 32;
            continue;
        }
        // `2026-12-01 17:41:41`
        let looks_like_time = html.get(i..i + 19).is_some_and(|s| {
            s.bytes().enumerate().all(|(k, b)| match k {
                4 | 7 => b == b'-',
                10 => b == b' ',
                13 | 16 => b == b':',
                _ => b.is_ascii_digit(),
            })
        });
        if looks_like_time {
            out.push_str("TIME");
            i += 19;
            continue;
        }
        let ch = html[i..].chars().next().expect("a char");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn snapshot_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/ui").join(format!("{name}.html"))
}

#[track_caller]
fn assert_snapshot(name: &str, html: &str) {
    let html = normalize(html);
    let path = snapshot_path(name);
    if std::env::var("UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("snapshot folder");
        std::fs::write(&path, &html).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("no snapshot at {}; run with UPDATE_SNAPSHOTS=1", path.display()));
    if expected != html {
        let line = expected.lines().zip(html.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "page '{name}' differs from {} at line {}:\n  expected: {}\n  got:      {}\n(UPDATE_SNAPSHOTS=1 rewrites it after a deliberate change)",
            path.display(),
            line + 1,
            expected.lines().nth(line).unwrap_or(""),
            html.lines().nth(line).unwrap_or("")
        );
    }
}

/// HTML text back to plain text, for assertions on messages.
fn unescape(html: &str) -> String {
    html.replace("&#39;", "'").replace("&#x27;", "'").replace("&#60;", "<").replace("&lt;", "<").replace("&#62;", ">").replace("&gt;", ">").replace("&#34;", "\"").replace("&quot;", "\"").replace("&#38;", "&").replace("&amp;", "&")
}

async fn page(s: &TestServer, path: &str) -> (u16, String) {
    let resp = s.client.get(s.url(path)).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

async fn every_page_renders_and_matches_its_snapshot(backend: Backend) {
    let Some(s) = common::start(backend).await else { return };
    let (exp, runs) = seed_runs(&s).await;
    seed_study(&s).await;
    s.post("registered-models/create", json!({"name": "ko-lora"})).await.ok();
    for run in &runs[..2] {
        s.post("model-versions/create", json!({"name": "ko-lora", "source": format!("runs:/{run}/adapter"), "run_id": run})).await.ok();
    }
    s.tracker_post("models/rules/set", json!({"name": "ko-lora", "rules": ["metrics.eval_loss <= 5"]})).await;

    let compare = format!("/compare?runs={}&runs={}&runs={}", runs[0], runs[1], runs[2]);
    let run_page = format!("/runs/{}", runs[0]);
    let artifact = format!("/runs/{}?path=adapter&file=adapter/adapter_config.json", runs[0]);
    for (name, path) in [
        ("home", "/".to_owned()),
        ("experiment", format!("/experiments/{exp}?params=lr,rank&metrics=eval_loss,정확도&order_by=params.lr%20ASC")),
        ("run", run_page.clone()),
        ("run_artifact", artifact),
        ("compare", compare.clone()),
        ("study", "/studies/ui-study".to_owned()),
        ("model", "/models/ko-lora".to_owned()),
    ] {
        let (status, html) = page(&s, &path).await;
        assert_eq!(status, 200, "{path}: {html}");
        assert_snapshot(name, &html);
    }

    // Paging: one run per page, three pages, every run once.
    let (_, first) = page(&s, &format!("/experiments/{exp}?max_results=1")).await;
    let next = first.split("href=\"").find_map(|h| h.split_once("\" rel=\"next\"").map(|(href, _)| unescape(href))).expect("a next link");
    let (_, second) = page(&s, &next).await;
    assert!(second.contains("rel=\"next\"") && second.contains("First page"), "{next}: {second}");

    // Charts are SVG with the data's Korean names.
    for path in [
        format!("/charts/runs/{}?key=%EC%A0%95%ED%99%95%EB%8F%84&log=1&smooth=0.5", runs[0]),
        format!("{}&key=eval_loss", compare.replace("/compare", "/charts/compare")),
        format!("{}&param=lr&metric=eval_loss", compare.replace("/compare", "/charts/scatter")),
        format!("{}&metric=eval_loss", compare.replace("/compare", "/charts/parallel")),
        "/charts/studies/ui-study/best".to_owned(),
        "/charts/studies/ui-study/curves".to_owned(),
    ] {
        let resp = s.client.get(s.url(&path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], "image/svg+xml; charset=utf-8");
        let body = resp.text().await.unwrap();
        assert!(body.starts_with("<svg") && body.contains("<path") || body.contains("<polyline"), "{path}: {}", &body[..body.len().min(300)]);
    }
    let (_, korean) = page(&s, &format!("/charts/runs/{}?key=%EC%A0%95%ED%99%95%EB%8F%84", runs[0])).await;
    assert!(korean.contains("정확도"));

    // Error states: a page that says what is wrong, with the right status.
    let (status, html) = page(&s, &format!("/experiments/{exp}?filter=metrics.eval_loss%20%3C")).await;
    assert!(status == 400 && html.contains("class=\"error\"") && html.contains("Filter:"), "{status}: {html}");
    let (status, html) = page(&s, "/runs/0123456789abcdef0123456789abcdef").await;
    assert!(status == 404 && html.contains("404 Not Found"), "{status}");
    let (status, html) = page(&s, &format!("/compare?runs={}", runs[0])).await;
    assert!(status == 400 && html.contains("at least two runs"), "{status}");
    assert_eq!(page(&s, "/studies/nope").await.0, 404);
    assert_eq!(page(&s, "/models/nope").await.0, 404);
    assert_eq!(page(&s, "/charts/runs/x").await.0, 400, "a chart needs its key");

    // Promotion through the form: refused by the gate, then passing, then a cross-site post.
    let form = |version: &str| s.client.post(s.url("/models/ko-lora")).header("content-type", "application/x-www-form-urlencoded").body(format!("version={version}&alias=production&reason=ui"));
    s.tracker_post("models/rules/set", json!({"name": "ko-lora", "rules": ["metrics.eval_loss <= 0.1"]})).await;
    let refused = form("1").send().await.unwrap();
    assert_eq!(refused.status(), 412);
    assert!(unescape(&refused.text().await.unwrap()).contains("refused by rule 'metrics.eval_loss <= 0.1'"));
    s.tracker_post("models/rules/set", json!({"name": "ko-lora", "rules": ["metrics.eval_loss <= 5"]})).await;
    let promoted = form("2").send().await.unwrap();
    assert_eq!(promoted.status(), 200);
    let html = unescape(&promoted.text().await.unwrap());
    assert!(html.contains("Version 2 now holds 'production'") && html.contains("<td>promote</td>"), "{html}");
    let alias = s.get("registered-models/alias", &[("name", "ko-lora"), ("alias", "production")]).await.ok();
    assert_eq!(alias["model_version"]["version"], "2");
    let cross = form("1").header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(cross.status(), 403);
    let bad_alias = s.client.post(s.url("/models/ko-lora")).header("content-type", "application/x-www-form-urlencoded").body("version=1&alias=latest").send().await.unwrap();
    assert_eq!(bad_alias.status(), 400);
    let alias = s.get("registered-models/alias", &[("name", "ko-lora"), ("alias", "production")]).await.ok();
    assert_eq!(alias["model_version"]["version"], "2", "refused forms change nothing");
}

#[tokio::test]
async fn every_page_renders_and_matches_its_snapshot_sqlite() {
    every_page_renders_and_matches_its_snapshot(Backend::Sqlite).await;
}

#[tokio::test]
async fn every_page_renders_and_matches_its_snapshot_postgres() {
    every_page_renders_and_matches_its_snapshot(Backend::Postgres).await;
}

#[test]
fn normalize_replaces_ids_and_times_only() {
    let html = "a 0123456789abcdef0123456789abcdef b 2026-12-01 17:41:41 0123456789abcdef0123456789abcdef ffffffffffffffffffffffffffffffff0 실행";
    assert_eq!(normalize(html), "a RUN0 b TIME RUN0 ffffffffffffffffffffffffffffffff0 실행");
}

/// Long histories reach charts as min-max spans computed in the store, from the blocks kept
/// while logging: every spike survives, and blocks continue across batches.
async fn long_histories_are_charted_from_min_max_spans(backend: Backend) {
    use tracker::store::runs::{NewMetric, POINTS_PER_BLOCK};
    let Some(s) = common::start(backend).await else { return };
    let exp = s.create_experiment("long").await;
    let run = s.create_run(&exp).await;
    let point = |step: i64, value: f64| NewMetric { key: "loss".into(), value, timestamp: T0 + step, step, dataset_name: None, dataset_digest: None, model_id: None };
    let points: Vec<NewMetric> = (0..5000).map(|step| point(step, if step == 2503 { 7777.0 } else { (step % 100) as f64 })).collect();
    s.store.log_batch(&run, &points, &[], &[]).await.unwrap();
    s.store.log_batch(&run, &[point(4000, f64::NAN)], &[], &[]).await.unwrap();

    let spans = s.store.metric_envelope(&run, "loss", false, (0, 10)).await.unwrap();
    assert_eq!(spans.len(), 500);
    let spike = spans.iter().find(|b| b.bucket == 250).unwrap();
    assert_eq!((spike.x_min, spike.x_max, spike.min, spike.max), (2500, 2509, 0.0, 7777.0));
    assert!(spans.iter().all(|b| b.min.is_finite() && b.max.is_finite()), "NaN points are left out");

    // Blocks: 5,001 points are 19 full blocks and one of 137, the NaN point counted but not valued.
    let blocks = s.store.metric_blocks(&run, "loss").await.unwrap();
    assert_eq!(blocks.len(), 20);
    assert!(blocks[..19].iter().all(|b| b.points == POINTS_PER_BLOCK));
    assert_eq!((blocks[19].points, blocks[19].value_points, blocks[19].steps), (137, 136, (4000, 4999)), "the NaN point at step 4000 came last");
    assert_eq!((blocks[9].steps, blocks[9].values), ((2304, 2559), (0.0, 7777.0)), "the block of the spike");

    // Both charts keep their spike, the long one drawn from its blocks: the value
    // axis reaches it (a label of 7000 on the value axis; neither step axis has one).
    let long: Vec<NewMetric> = (0..120_000).map(|step| point(step, if step == 77_777 { 7777.0 } else { (step % 100) as f64 })).collect();
    for batch in long.chunks(10_000) {
        let batch: Vec<NewMetric> = batch.iter().map(|m| NewMetric { key: "long".into(), ..m.clone() }).collect();
        s.store.log_batch(&run, &batch, &[], &[]).await.unwrap();
    }
    assert_eq!(s.store.metric_blocks(&run, "long").await.unwrap().len(), 469);
    for key in ["loss", "long"] {
        let (status, svg) = page(&s, &format!("/charts/runs/{run}?key={key}")).await;
        assert!(status == 200 && svg.starts_with("<svg") && svg.contains("<polyline"), "{status}: {}", &svg[..svg.len().min(200)]);
        assert!(svg.contains("\n7000\n</text>"), "{key}: the spike sets the value axis");
    }
}

#[tokio::test]
async fn long_histories_are_charted_from_min_max_spans_sqlite() {
    long_histories_are_charted_from_min_max_spans(Backend::Sqlite).await;
}

#[tokio::test]
async fn long_histories_are_charted_from_min_max_spans_postgres() {
    long_histories_are_charted_from_min_max_spans(Backend::Postgres).await;
}
