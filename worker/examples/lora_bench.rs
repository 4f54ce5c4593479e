//! LoRA training throughput of the burn trainer, to run side by side with `bench/lora_torch.py`
//! (PyTorch + PEFT) on the same model, batch and data shape:
//!
//! ```text
//! cargo run --release -p worker --example lora_bench -- --vocab 2000 --hidden 128 --intermediate 352 \
//!     --layers 4 --heads 4 --kv-heads 2 --seq 64 --batch 16 --steps 30 --rank 8 --alpha 16
//! ```
//!
//! Random tokens, loss on every position, the trainer's sharded forward and backward passes
//! (`--shards`, its `train.shards`), AdamW, global-norm clip 1.0, constant learning rate; the
//! first 3 steps are warm-up. Prints one JSON line like the PyTorch script.

use std::time::Instant;

use clap::Parser;
use rand::Rng as _;
use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;
use worker::lm::model::{CausalLm, LoraConfig, ModelConfig};
use worker::lm::optim::{clip_global_norm, AdamW, AdamWConfig};
use worker::lm::training::{micro_batch_grads, Sequence};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 2000)]
    vocab: usize,
    #[arg(long, default_value_t = 128)]
    hidden: usize,
    #[arg(long, default_value_t = 352)]
    intermediate: usize,
    #[arg(long, default_value_t = 4)]
    layers: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    #[arg(long, default_value_t = 2)]
    kv_heads: usize,
    #[arg(long, default_value_t = 64)]
    seq: usize,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Parts of the batch run on threads of their own (the trainer's `train.shards`).
    #[arg(long, default_value_t = 2)]
    shards: usize,
    #[arg(long, default_value_t = 30)]
    steps: usize,
    #[arg(long, default_value_t = 8)]
    rank: usize,
    #[arg(long, default_value_t = 16.0)]
    alpha: f64,
    #[arg(long, default_value = "q_proj,k_proj,v_proj,o_proj")]
    targets: String,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

type Train = worker::lm::TrainBackend;

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok()).map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let a = Args::parse();
    let config = ModelConfig {
        vocab_size: a.vocab,
        hidden_size: a.hidden,
        intermediate_size: a.intermediate,
        num_hidden_layers: a.layers,
        num_attention_heads: a.heads,
        num_key_value_heads: a.kv_heads,
        max_position_embeddings: a.seq.max(128),
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-6,
        tie_word_embeddings: false,
        attention_bias: true,
        model_type: "qwen2".into(),
    };
    let lora = LoraConfig { rank: a.rank, alpha: a.alpha, dropout: 0.0, use_rslora: false, target_modules: a.targets.split(',').map(str::to_owned).collect() };
    let device = Default::default();
    let mut model = CausalLm::<Train>::random(&config, a.seed, 0.02, &device).add_lora(&lora, a.seed);
    let mut optim = AdamW::new(AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() });
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    let warmup = 3;
    let mut started = Instant::now();
    for step in 0..a.steps + warmup {
        if step == warmup {
            started = Instant::now();
        }
        let batch: Vec<Sequence> = (0..a.batch).map(|_| Sequence { ids: (0..=a.seq).map(|_| rng.random_range(0..a.vocab as u32)).collect(), mask: vec![1.0; a.seq + 1] }).collect();
        let refs: Vec<&Sequence> = batch.iter().collect();
        let (_, mut grads) = micro_batch_grads(&model, &refs, 0, &device, a.shards, 1.0);
        clip_global_norm(&mut grads, 1.0);
        optim.step(&mut model, &grads, a.lr);
    }
    let seconds = started.elapsed().as_secs_f64();
    let tokens = (a.steps * a.batch * a.seq) as f64;
    let line = serde_json::json!({
        "impl": "burn-flex",
        "backend": if cfg!(feature = "cuda") { "cuda" } else { "flex" },
        "tokens_per_s": tokens / seconds,
        "step_ms_mean": seconds * 1000.0 / a.steps as f64,
        "steps": a.steps,
        "trainable_params": model.num_adapter_params(),
        "total_params": config.num_params() + model.num_adapter_params(),
        "peak_rss_mb": peak_rss_mb(),
        "config": {"vocab": a.vocab, "hidden": a.hidden, "intermediate": a.intermediate, "layers": a.layers, "heads": a.heads, "kv_heads": a.kv_heads, "seq": a.seq, "batch": a.batch, "shards": a.shards, "rank": a.rank, "alpha": a.alpha, "targets": a.targets},
    });
    println!("{line}");
}
