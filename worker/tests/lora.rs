//! The LoRA trainer against references: logits of Hugging Face checkpoints made by
//! `worker/scripts/make_tiny_qwen2.py` (transformers), a PEFT-made adapter, and the trainer's own
//! guarantees (only adapters train, the loss falls, resume equals an uninterrupted run, PEFT names
//! and shapes, clear errors).

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::prelude::*;
use serde_json::Value;
use worker::lm::generate::{generate, SamplingConfig};
use worker::lm::hf::load_model;
use worker::lm::model::{CausalLm, LoraConfig};
use worker::lm::optim::{adapter_grads, AdamW, AdamWConfig};
use worker::lm::peft::{load_adapter, save_adapter};
use worker::lm::tokenizer::TextTokenizer;
use worker::lm::training::{train, DataConfig, OptimConfig, Silent, TrainConfig};
use worker::lm::{CpuBackend, CpuTrainBackend};

/// Training jobs of this file take turns: burn's CPU backend draws dropout masks from one
/// process-wide generator (reseeded per step by the trainer), so two jobs training at once would
/// interleave their draws and neither would be reproducible.
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_job_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    TRAINING.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids_tensor(rows: &[Vec<i64>]) -> Tensor<CpuBackend, 2, Int> {
    let flat: Vec<i32> = rows.iter().flatten().map(|&v| v as i32).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), rows[0].len()]), &Default::default())
}

/// Largest |ours - expected| over the logits of `expected_logits.json`.
fn max_logit_diff(model: &CausalLm<CpuBackend>, expected: &Value) -> f64 {
    let input: Vec<Vec<i64>> = serde_json::from_value(expected["input_ids"].clone()).unwrap();
    let want: Vec<Vec<Vec<f64>>> = serde_json::from_value(expected["logits"].clone()).unwrap();
    let got = model.forward(ids_tensor(&input), None);
    let [b, t, v] = got.dims();
    assert_eq!((b, t, v), (want.len(), want[0].len(), want[0][0].len()));
    let got: Vec<f32> = got.into_data().to_vec().unwrap();
    let want: Vec<f64> = want.into_iter().flatten().flatten().collect();
    got.iter().zip(&want).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max)
}

#[test]
fn hf_checkpoints_load_with_the_logits_of_transformers() {
    for name in ["tiny-qwen2", "tiny-qwen2-bf16"] {
        let dir = fixture(name);
        let (config, model) = load_model::<CpuBackend>(&dir, &Default::default()).unwrap();
        assert!(config.attention_bias, "qwen2 has q/k/v biases");
        let diff = max_logit_diff(&model, &read_json(&dir.join("expected_logits.json")));
        assert!(diff < 1e-4, "{name}: max |logit diff| {diff}");
    }
}

#[test]
fn kv_cache_generation_matches_transformers_greedy_generate() {
    for name in ["tiny-qwen2", "tiny-qwen2-bf16"] {
        let dir = fixture(name);
        let (_, model) = load_model::<CpuBackend>(&dir, &Default::default()).unwrap();
        let expected = read_json(&dir.join("expected_generation.json"));
        let prompt: Vec<u32> = serde_json::from_value(expected["prompt_ids"].clone()).unwrap();
        let want: Vec<u32> = serde_json::from_value(expected["new_ids"].clone()).unwrap();
        let config = SamplingConfig { max_new_tokens: want.len(), ..Default::default() };
        assert_eq!(generate(&model, &prompt, &[], &config), want, "{name}");
    }
}

#[test]
fn tokenizer_json_encodes_as_the_python_tokenizers_library() {
    let dir = fixture("tiny-qwen2");
    let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let check = &read_json(&dir.join("expected_logits.json"))["tokenizer_check"];
    let want: Vec<u32> = serde_json::from_value(check["ids"].clone()).unwrap();
    let text = check["text"].as_str().unwrap();
    assert_eq!(tokenizer.encode(text), want);
    assert_eq!(tokenizer.decode(&want), text);
}

#[test]
fn a_peft_adapter_loads_with_the_logits_of_peft() {
    let (_, base) = load_model::<CpuBackend>(&fixture("tiny-qwen2"), &Default::default()).unwrap();
    let adapter_dir = fixture("peft-reference-adapter");
    let (lora, model) = load_adapter(&adapter_dir, base).unwrap();
    assert_eq!((lora.rank, lora.alpha), (4, 8.0));
    let diff = max_logit_diff(&model, &read_json(&adapter_dir.join("expected_logits.json")));
    assert!(diff < 1e-4, "max |logit diff| {diff}");

    // Saved again by us, it has PEFT's names and shapes, and loads to the same logits.
    let out = tempfile::tempdir().unwrap();
    save_adapter(out.path(), &model, &lora, "tiny-qwen2").unwrap();
    let theirs = safetensors_shapes(&adapter_dir.join("adapter_model.safetensors"));
    let ours = safetensors_shapes(&out.path().join("adapter_model.safetensors"));
    assert_eq!(ours, theirs);
    let config = read_json(&out.path().join("adapter_config.json"));
    assert_eq!((config["peft_type"].as_str(), config["r"].as_u64(), config["task_type"].as_str()), (Some("LORA"), Some(4), Some("CAUSAL_LM")));
    let (_, base) = load_model::<CpuBackend>(&fixture("tiny-qwen2"), &Default::default()).unwrap();
    let (_, reloaded) = load_adapter(out.path(), base).unwrap();
    assert!(max_logit_diff(&reloaded, &read_json(&adapter_dir.join("expected_logits.json"))) < 1e-4);
}

fn safetensors_shapes(path: &Path) -> Vec<(String, Vec<usize>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<usize>)> = file.tensors().into_iter().map(|(k, v)| (k, v.shape().to_vec())).collect();
    out.sort();
    out
}

#[test]
fn a_lora_step_changes_only_the_adapters() {
    let device = Default::default();
    let (_, base) = load_model::<CpuTrainBackend>(&fixture("tiny-qwen2"), &device).unwrap();
    let lora = LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, use_rslora: false, target_modules: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()] };
    let mut model = base.add_lora(&lora, 1);
    let before = worker::lm::hf::merged_weights(&load_model::<CpuBackend>(&fixture("tiny-qwen2"), &device).unwrap().0, &model.valid());
    let frozen_before: Vec<Vec<f32>> = model.layers.iter().map(|l| l.self_attn.q_proj.weight.val().into_data().to_vec().unwrap()).collect();
    let adapters_before: Vec<Vec<f32>> = model.adapters().iter().map(|(_, _, l)| l.b.val().into_data().to_vec().unwrap()).collect();
    assert_eq!(model.num_adapter_params(), 2 * (4 * (64 + 64) + 4 * (64 + 32) + 4 * (160 + 64)));

    let tokens = ids_tensor(&[vec![1, 2, 3, 4, 5, 6], vec![6, 5, 4, 3, 2, 1]]);
    let tokens: Tensor<CpuTrainBackend, 2, Int> = Tensor::from_data(tokens.into_data(), &device);
    let targets = tokens.clone().flip([1]);
    let weights = Tensor::ones([2, 6], &device);
    let loss = model.masked_loss(tokens, targets, weights);
    let grads = adapter_grads(&model, &loss.backward());
    assert_eq!(grads.len(), 2 * 3 * 2, "a gradient for every A and B, none for the base");
    let mut optim = AdamW::new(AdamWConfig::default());
    optim.step(&mut model, &grads, 1e-2);

    let frozen_after: Vec<Vec<f32>> = model.layers.iter().map(|l| l.self_attn.q_proj.weight.val().into_data().to_vec().unwrap()).collect();
    assert_eq!(frozen_before, frozen_after, "base weights are frozen");
    let adapters_after: Vec<Vec<f32>> = model.adapters().iter().map(|(_, _, l)| l.b.val().into_data().to_vec().unwrap()).collect();
    assert!(adapters_before.iter().zip(&adapters_after).all(|(b, a)| b != a), "every B moved off zero");
    // The merged weights differ from the base exactly where adapters sit.
    let after = worker::lm::hf::merged_weights(&load_model::<CpuBackend>(&fixture("tiny-qwen2"), &device).unwrap().0, &model.valid());
    for (name, (data, _)) in &before {
        let changed = after[name].0 != *data;
        let adapted = name.contains("q_proj.weight") || name.contains("v_proj.weight") || name.contains("down_proj.weight");
        assert_eq!(changed, adapted, "{name}");
    }
}

/// A short job on the built-in base.
fn tiny_job(out: &Path, steps: u64) -> TrainConfig {
    TrainConfig {
        base: "builtin".into(),
        data: DataConfig { tasks: vec!["native".into()], train_per_task: 400, test_per_task: 8, max_number: 9999, jsonl: None, eval_fraction: 0.05, max_seq_len: 64 },
        lora: LoraConfig { rank: 4, alpha: 8.0, dropout: 0.1, use_rslora: false, target_modules: vec!["q_proj".into(), "v_proj".into()] },
        train: OptimConfig { learning_rate: 5e-3, weight_decay: 0.01, warmup_steps: 2, max_steps: steps, batch_size: 8, grad_accum: 2, max_grad_norm: 1.0, seed: 3, eval_every: 3, shards: 2 },
        output_dir: out.to_owned(),
        merge: false,
    }
}

#[test]
fn loss_falls_and_resume_equals_an_uninterrupted_run() {
    let _turn = one_job_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    // With dropout (replayed from the step's seed; one pass per micro-batch) and without it (two
    // sharded passes on two threads per micro-batch).
    assert_resume_equals_uninterrupted(dir.path(), &|out: &Path| tiny_job(out, 6));
    assert_resume_equals_uninterrupted(dir.path(), &|out: &Path| {
        let mut job = tiny_job(out, 6);
        job.lora.dropout = 0.0;
        job
    });
}

/// Trains `job` for its 6 steps straight through, and again stopped after the checkpoint at 3
/// and resumed from it; both end with the same adapter and optimizer state, byte for byte.
fn assert_resume_equals_uninterrupted(root: &Path, job: &dyn Fn(&Path) -> TrainConfig) {
    let device = Default::default();
    let dir = tempfile::tempdir_in(root).unwrap();

    // Uninterrupted: 6 steps, checkpoints at 3 and 6.
    let full = train::<CpuTrainBackend>(&job(&dir.path().join("full")), &device, None, &mut Silent).unwrap();
    assert!(full.finished);
    for step in [3, 6] {
        let state = read_json(&dir.path().join(format!("full/checkpoints/step-{step}/trainer_state.json")));
        assert_eq!(state["step"].as_u64(), Some(step));
    }

    // Interrupted after the checkpoint at 3, then resumed from it.
    struct StopAfter(u64);
    impl worker::lm::training::Observer for StopAfter {
        fn on_eval(&mut self, step: u64, _: &std::collections::BTreeMap<String, f64>, _: &Path) -> bool {
            step < self.0
        }
    }
    let first = train::<CpuTrainBackend>(&job(&dir.path().join("split")), &device, None, &mut StopAfter(3)).unwrap();
    assert_eq!((first.step, first.finished), (3, false));
    let resumed = train::<CpuTrainBackend>(&job(&dir.path().join("split")), &device, Some(&dir.path().join("split/checkpoints/step-3")), &mut Silent).unwrap();
    assert_eq!((resumed.step, resumed.finished), (6, true));

    let full_adapter = std::fs::read(dir.path().join("full/adapter/adapter_model.safetensors")).unwrap();
    let resumed_adapter = std::fs::read(dir.path().join("split/adapter/adapter_model.safetensors")).unwrap();
    assert!(full_adapter == resumed_adapter, "the resumed run's adapter equals the uninterrupted run's, byte for byte");
    let full_opt = std::fs::read(dir.path().join("full/checkpoints/step-6/optimizer.safetensors")).unwrap();
    let resumed_opt = std::fs::read(dir.path().join("split/checkpoints/step-6/optimizer.safetensors")).unwrap();
    assert!(full_opt == resumed_opt, "and so are both AdamW moments");
    assert_eq!(full.metrics.get("eval_loss"), resumed.metrics.get("eval_loss"));
}

#[test]
fn training_lowers_the_held_out_loss() {
    let _turn = one_job_at_a_time();
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let mut job = tiny_job(dir.path(), 30);
    job.lora.dropout = 0.0;
    job.train.eval_every = 0;
    job.train.learning_rate = 1e-2;
    // Step 0 (nothing trained) against step 30.
    let mut untrained = job.clone();
    untrained.train.max_steps = 1;
    untrained.train.learning_rate = 1e-9;
    untrained.train.warmup_steps = 1;
    untrained.output_dir = dir.path().join("untrained");
    let before = train::<CpuTrainBackend>(&untrained, &device, None, &mut Silent).unwrap().metrics["eval_loss"];
    let after = train::<CpuTrainBackend>(&job, &device, None, &mut Silent).unwrap().metrics["eval_loss"];
    assert!(after < before * 0.9, "held-out loss {before} -> {after}");
}

#[test]
fn bad_configs_are_refused_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let write = |text: &str| {
        let path = dir.path().join("job.toml");
        std::fs::write(&path, text).unwrap();
        TrainConfig::from_toml_file(&path).unwrap_err().to_string()
    };
    assert!(write("[train]\nlearning_rat = 0.1\n").contains("learning_rat"));
    assert!(write("[train]\nlearning_rate = 5.0\n").contains("`train.learning_rate`"));
    assert!(write("[data]\ntasks = [\"poetry\"]\n").contains("poetry"));
    assert!(write("[lora]\nrank = 0\nalpha = 1.0\ntarget_modules = [\"q_proj\"]\n").contains("`lora.rank`"));
    assert!(write("[lora]\nrank = 4\nalpha = 8.0\ntarget_modules = [\"qproj\"]\n").contains("qproj"));
    assert!(write("[train]\nwarmup_steps = 10\nmax_steps = 5\n").contains("`train.warmup_steps`"));
    assert!(write("[train]\nshards = 0\n").contains("`train.shards`"));
    let mut too_long = tiny_job(&dir.path().join("out"), 4);
    too_long.data.max_seq_len = 100_000;
    let err = train::<CpuTrainBackend>(&too_long, &Default::default(), None, &mut Silent).unwrap_err().to_string();
    assert!(err.contains("`data.max_seq_len`"), "{err}");

    let params: serde_json::Map<String, Value> = serde_json::from_str(r#"{"lr": 0.01, "rank": 8, "alpha": 16, "dropout": 0.05, "warmup_steps": 5}"#).unwrap();
    let config = TrainConfig::from_toml_file(&{
        let p = dir.path().join("ok.toml");
        std::fs::write(&p, "").unwrap();
        p
    })
    .unwrap();
    let tuned = config.clone().with_params(&params).unwrap();
    assert_eq!((tuned.train.learning_rate, tuned.lora.rank, tuned.lora.alpha, tuned.lora.dropout, tuned.train.warmup_steps), (0.01, 8, 16.0, 0.05, 5));
    let typo: serde_json::Map<String, Value> = serde_json::from_str(r#"{"learnin_rate": 0.01}"#).unwrap();
    assert!(config.clone().with_params(&typo).unwrap_err().to_string().contains("learnin_rate"));
    let fractional: serde_json::Map<String, Value> = serde_json::from_str(r#"{"rank": 4.5}"#).unwrap();
    assert!(config.with_params(&fractional).is_err());
}

#[test]
fn malformed_jsonl_fails_the_job_naming_its_lines() {
    let _turn = one_job_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    std::fs::write(&data, "{\"instruction\": \"안녕\", \"output\": \"반가워요\"}\nnot json\n{\"text\": \"좋은 아침\"}\n{\"foo\": 1}\n").unwrap();
    let mut job = tiny_job(&dir.path().join("out"), 2);
    job.data.tasks.clear();
    job.data.jsonl = Some(data);
    let err = train::<CpuTrainBackend>(&job, &Default::default(), None, &mut Silent).unwrap_err().to_string();
    assert!(err.contains("line 2") && err.contains("line 4"), "{err}");
    assert!(!dir.path().join("out/adapter").exists(), "nothing is written for a refused job");
}
