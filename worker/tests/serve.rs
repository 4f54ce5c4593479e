//! `worker serve` against the real tracker (in-process, a temp SQLite file, over TCP on
//! 127.0.0.1): it serves the version an alias points at, answers exactly what the adapter
//! generates locally, refuses bad requests with 400, and switches to the new version when the
//! alias moves while requests keep arriving, none of them refused.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::module::Param;
use burn::prelude::*;
use rand::Rng as _;
use rand::SeedableRng as _;
use serde_json::{json, Value};
use tracker::artifacts::Artifacts;
use tracker::auth::Auth;
use tracker::store::{BackendUri, Store};
use worker::data::jsonl::{Message, Role};
use worker::lm::base::load_builtin;
use worker::lm::generate::{generate, SamplingConfig};
use worker::lm::model::LoraConfig;
use worker::lm::peft::{load_adapter, save_adapter};
use worker::lm::tokenizer::TextTokenizer;
use worker::lm::CpuBackend;
use worker::serve::{ModelRef, ServeConfig, Server};
use worker::TrackerClient;

const MODEL: &str = "ko-lora";
const PROMPT: &str = "다음 숫자를 한글로 읽으세요: 2024";
const NEW_TOKENS: usize = 12;

/// The real tracker on an ephemeral port; it stops when the test's runtime ends.
async fn start_tracker(dir: &Path) -> TrackerClient {
    let store = Store::open(&BackendUri::Sqlite(dir.join("tracker.db"))).await.expect("open the sqlite store");
    let root = dir.join("artifacts");
    std::fs::create_dir_all(&root).expect("artifact root");
    let artifacts = Artifacts::open(root.to_str().expect("utf-8 temp path")).expect("open the artifact root");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(tracker::serve(listener, tracker::router(tracker::AppState::new(store, artifacts, Auth::default())), std::future::pending()));
    TrackerClient::new(&format!("http://{addr}")).expect("client")
}

/// A LoRA adapter on the built-in base with seeded random A and B (a fresh adapter's B is zero
/// and would change nothing), saved in PEFT format; returns its folder and the text it answers
/// [`PROMPT`] with, greedily.
fn make_adapter(dir: &Path, seed: u64) -> (PathBuf, String) {
    let device = Default::default();
    let (_, base, tokenizer) = load_builtin::<CpuBackend>(&device).expect("the built-in base loads");
    let lora = LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, use_rslora: false, target_modules: vec!["q_proj".into(), "v_proj".into()] };
    let mut model = base.clone().add_lora(&lora, seed);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for (_, _, adapter) in model.adapters_mut() {
        let dims = adapter.b.val().dims();
        let values: Vec<f32> = (0..dims[0] * dims[1]).map(|_| rng.random_range(-0.5f32..0.5)).collect();
        adapter.b = Param::from_tensor(Tensor::from_data(TensorData::new(values, dims), &device));
    }
    let folder = dir.join(format!("adapter-{seed}"));
    save_adapter(&folder, &model, &lora, "builtin").expect("save the adapter");
    // What serving must answer: the saved files loaded back, as the server loads them.
    let (_, reloaded) = load_adapter(&folder, base).expect("load the adapter back");
    let ids = tokenizer.encode(&TextTokenizer::chat_prompt(&[Message { role: Role::User, content: PROMPT.into() }]));
    let greedy = SamplingConfig { max_new_tokens: NEW_TOKENS, ..Default::default() };
    let out = generate(&reloaded, &ids, &[tokenizer.im_end, tokenizer.end_of_text], &greedy);
    (folder, tokenizer.decode(&out))
}

/// Uploads an adapter folder as a run's `adapter/` artifacts and registers it as the next version.
async fn register(client: &TrackerClient, experiment_id: &str, folder: &Path) -> String {
    let run = client.create_run(experiment_id, Some("adapter"), Vec::<(String, String)>::new()).await.expect("create run");
    let run_id = run.info.run_id;
    client.upload_artifact_tree(&run_id, folder, "adapter").await.expect("upload the adapter");
    client.create_model_version(MODEL, &format!("runs:/{run_id}/adapter"), &run_id).await.expect("create version").version
}

async fn post(http: &reqwest::Client, url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let resp = http.post(url).header("content-type", "application/json").body(body).send().await.expect("request sent");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_from_the_alias_and_follows_it_when_it_moves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let client = start_tracker(dir.path()).await;
    let (first, first_text) = make_adapter(dir.path(), 1);
    let (second, second_text) = make_adapter(dir.path(), 2);
    assert_ne!(first_text, second_text, "the two adapters must answer differently for the switch to show");

    let experiment = client.get_or_create_experiment("serving").await.expect("experiment").experiment_id;
    client.create_registered_model(MODEL).await.expect("create model");
    assert_eq!(register(&client, &experiment, &first).await, "1");
    assert_eq!(register(&client, &experiment, &second).await, "2");
    client.set_model_alias(MODEL, "production", "1").await.expect("set alias");

    let config = |uri: &str| ServeConfig {
        model: uri.parse::<ModelRef>().expect("model uri"),
        base: None,
        cache_dir: dir.path().join("cache"),
        poll: Duration::from_millis(200),
        max_concurrent: 2,
    };
    // Unknown aliases and models are refused at start with the tracker's answer.
    for (uri, needle) in [("models:/ko-lora@staging", "staging"), ("models:/nope@production", "nope"), ("models:/ko-lora/9", "9")] {
        let err = format!("{:#}", Server::start(client.clone(), config(uri)).await.err().expect("refused"));
        assert!(err.contains(&format!("resolving {uri}")) && err.contains(needle), "{err}");
    }

    let server = Server::start(client.clone(), config("models:/ko-lora@production")).await.expect("serve starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base_url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(worker::serve::run(server, listener, std::future::pending()));
    let http = reqwest::Client::new();
    let generate_url = format!("{base_url}/generate");
    let request = json!({"prompt": PROMPT, "max_new_tokens": NEW_TOKENS}).to_string();

    let (status, reply) = post(&http, &generate_url, request.clone()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["generated_text"], first_text.as_str());
    assert_eq!(reply["model_version"], "1");
    assert!(reply["tokens_generated"].as_u64().unwrap() >= 1 && reply["inference_time"].as_f64().unwrap() > 0.0, "{reply}");
    let sampled = json!({"prompt": PROMPT, "max_length": 60, "do_sample": true, "temperature": 0.8, "top_k": 20, "top_p": 0.9, "seed": 4}).to_string();
    let (status, a) = post(&http, &generate_url, sampled.clone()).await;
    let (_, b) = post(&http, &generate_url, sampled).await;
    assert_eq!((status, &a["generated_text"]), (200, &b["generated_text"]), "a seeded sample repeats");

    for (body, needle) in [
        (json!({"prompt": PROMPT, "top_p": 2.0}).to_string(), "top_p"),
        (json!({"prompt": PROMPT, "num_beams": 4}).to_string(), "num_beams"),
        (json!({"max_length": 20}).to_string(), "prompt"),
        (json!({"prompt": PROMPT, "max_length": 3}).to_string(), "max_length"),
        ("{not json".to_owned(), "invalid request body"),
    ] {
        let (status, reply) = post(&http, &generate_url, body).await;
        assert_eq!((status, reply["error_code"].as_str()), (400, Some("INVALID_PARAMETER_VALUE")), "{reply}");
        assert!(reply["message"].as_str().unwrap().contains(needle), "{reply}");
    }
    let health: Value = http.get(format!("{base_url}/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!((health["status"].as_str(), health["version"].as_str()), (Some("ok"), Some("1")));

    // Requests keep coming while the alias moves: every one is answered, by one version or the
    // other, with that version's text; once version 2 answers, version 1 never does again.
    let load = {
        let (http, url, request) = (http.clone(), generate_url.clone(), request.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let (status, reply) = post(&http, &url, request.clone()).await;
                seen.push((status, reply.clone()));
                if reply["model_version"] == "2" && seen.iter().filter(|(_, r)| r["model_version"] == "2").count() >= 3 {
                    break;
                }
            }
            seen
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.set_model_alias(MODEL, "production", "2").await.expect("move alias");
    let seen = load.await.expect("load task");
    let versions: Vec<&str> = seen.iter().map(|(_, r)| r["model_version"].as_str().unwrap_or("?")).collect();
    assert_eq!(versions.last(), Some(&"2"), "the server never switched: {versions:?}");
    let switch = versions.iter().position(|v| *v == "2").unwrap();
    assert!(versions[..switch].iter().all(|v| *v == "1") && versions[switch..].iter().all(|v| *v == "2"), "{versions:?}");
    for (status, reply) in &seen {
        assert_eq!(*status, 200, "a request failed during the switch: {reply}");
        let expected = if reply["model_version"] == "1" { &first_text } else { &second_text };
        assert_eq!(reply["generated_text"], expected.as_str(), "{reply}");
    }

    let metrics = http.get(format!("{base_url}/metrics")).send().await.unwrap().text().await.unwrap();
    for line in ["worker_serve_model_version 2", "worker_serve_reloads_total{outcome=\"ok\"} 1", "worker_serve_requests_total{outcome=\"bad_request\"} 5"] {
        assert!(metrics.lines().any(|l| l == line), "no '{line}' in\n{metrics}");
    }
    let ok = format!("worker_serve_requests_total{{outcome=\"ok\"}} {}", 3 + seen.len());
    assert!(metrics.lines().any(|l| l == ok), "no '{ok}' in\n{metrics}");
}
