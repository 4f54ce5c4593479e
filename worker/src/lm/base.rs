//! The built-in tiny Korean base: a byte-level BPE trained on the shipped Korean text (the corpus,
//! the tax rulings and the hanja readings) and a small Qwen2-architecture model pretrained from
//! scratch on it (the continued-pretraining stage), so the demo and the tests need no download.
//!
//! `worker base --out worker/models/ko-tiny` rebuilds it in a few minutes on a CPU; the result is
//! committed, and `base = "builtin"` loads it from there (or from `$WORKER_BUILTIN_BASE`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, ModuleMapper, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::hf;
use super::model::{CausalLm, ModelConfig};
use super::optim::cosine_with_warmup;
use super::tokenizer::TextTokenizer;
use super::training::{batch_tensors, BatchOrder, Sequence, TrainError};
use crate::data::shipped;

/// How the built-in base is made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseRecipe {
    /// The architecture (its `vocab_size` is the tokenizer's).
    pub model: ModelConfig,
    /// Tokens per pretraining window.
    pub seq_len: usize,
    /// Windows per step.
    pub batch_size: usize,
    /// Pretraining steps.
    pub steps: u64,
    /// Peak learning rate (warmup, then cosine).
    pub learning_rate: f64,
    /// Seed of the initialisation and the batch order.
    pub seed: u64,
    /// What the tokenizer and the model are trained on; a recipe without it (written before
    /// there was a choice) was trained on the corpus.
    #[serde(default = "PretrainingText::corpus")]
    pub text: PretrainingText,
}

/// The shipped text a base is pretrained on: [`shipped::korean_corpus`] or
/// [`shipped::pretraining_texts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PretrainingText {
    /// The corpus's paragraphs only.
    Corpus,
    /// The corpus, the tax rulings and the hanja readings, as the committed base.
    AllShipped,
}

impl PretrainingText {
    fn corpus() -> Self {
        PretrainingText::Corpus
    }

    /// The documents, in order.
    pub fn documents(self) -> Vec<String> {
        match self {
            PretrainingText::Corpus => shipped::korean_corpus(),
            PretrainingText::AllShipped => shipped::pretraining_texts(),
        }
    }
}

impl Default for BaseRecipe {
    fn default() -> Self {
        BaseRecipe {
            model: ModelConfig {
                vocab_size: 2048,
                hidden_size: 128,
                intermediate_size: 384,
                num_hidden_layers: 4,
                num_attention_heads: 4,
                num_key_value_heads: 2,
                max_position_embeddings: 256,
                rope_theta: 10_000.0,
                rms_norm_eps: 1e-6,
                tie_word_embeddings: true,
                attention_bias: true,
                model_type: "qwen2".into(),
            },
            seq_len: 128,
            batch_size: 16,
            steps: 480,
            learning_rate: 3e-3,
            seed: 7,
            // The corpus writes numbers in digits, so on it alone the BPE splits most of their
            // readings into bytes (BENCHMARKS.md, "Exact match on the built-in base").
            text: PretrainingText::AllShipped,
        }
    }
}

/// Where the committed built-in base lives.
pub fn builtin_dir() -> PathBuf {
    match std::env::var_os("WORKER_BUILTIN_BASE") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join("ko-tiny"),
    }
}

/// Loads the built-in base and its tokenizer.
pub fn load_builtin<B: Backend>(device: &B::Device) -> Result<(ModelConfig, CausalLm<B>, TextTokenizer), TrainError> {
    let dir = builtin_dir();
    let (config, model) = hf::load_model(&dir, device)?;
    let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
    Ok((config, model, tokenizer))
}

/// Makes every float parameter trainable (the base is frozen by construction).
struct Unfreeze;
impl<B: Backend> ModuleMapper<B> for Unfreeze {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.set_require_grad(true)
    }
}

/// Trains the tokenizer on the recipe's shipped text, pretrains the model on it and writes a
/// Hugging Face folder to `out`; calls `progress(step, loss)` after each step. Returns the final
/// loss.
pub fn build_base<AB: AutodiffBackend>(out: &Path, recipe: &BaseRecipe, device: &AB::Device, mut progress: impl FnMut(u64, f64)) -> Result<f64, TrainError> {
    let documents = recipe.text.documents();
    let tokenizer = TextTokenizer::train(&documents, recipe.model.vocab_size)?;
    let mut config = recipe.model.clone();
    config.vocab_size = tokenizer.vocab_size();
    // Windows of `seq_len + 1` tokens over the concatenated documents (separated by <|endoftext|>).
    let mut stream = Vec::new();
    for text in &documents {
        stream.extend(tokenizer.encode(text));
        stream.push(tokenizer.end_of_text);
    }
    let windows: Vec<Sequence> = stream.chunks(recipe.seq_len + 1).filter(|c| c.len() > 1).map(|c| Sequence { ids: c.to_vec(), mask: vec![1.0; c.len()] }).collect();
    let mut model = CausalLm::<AB>::random(&config, recipe.seed, 0.02, device).map(&mut Unfreeze);
    let mut optim = AdamWConfig::new().with_weight_decay(0.01).with_epsilon(1e-8).init::<AB, CausalLm<AB>>();
    let mut order = BatchOrder::new(recipe.seed, windows.len());
    let started = Instant::now();
    let mut last = f64::NAN;
    for step in 0..recipe.steps {
        let batch: Vec<&Sequence> = (0..recipe.batch_size as u64).map(|j| &windows[order.at(step * recipe.batch_size as u64 + j)]).collect();
        let (inputs, targets, weights) = batch_tensors::<AB>(&batch, tokenizer.end_of_text, device);
        let loss = model.masked_loss(inputs, targets, weights);
        last = loss.clone().into_scalar().elem::<f64>();
        if !last.is_finite() {
            return Err(TrainError::Diverged { step: step + 1, loss: last });
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let lr = cosine_with_warmup(recipe.learning_rate, step, recipe.steps / 20, recipe.steps);
        model = optim.step(lr, model, grads);
        progress(step + 1, last);
    }
    tracing::info!(steps = recipe.steps, loss = last, seconds = started.elapsed().as_secs_f64(), "pretrained the built-in base");
    hf::save_model(out, &config, &model.valid())?;
    tokenizer.save(&out.join("tokenizer.json"))?;
    let recipe_path = out.join("recipe.json");
    std::fs::write(&recipe_path, serde_json::to_string_pretty(recipe).expect("json")).map_err(|source| TrainError::Io { path: recipe_path, source })?;
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_recipe_is_the_default() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/ko-tiny");
        let committed = std::fs::read_to_string(dir.join("recipe.json")).expect("the committed recipe");
        let recipe: BaseRecipe = serde_json::from_str(&committed).expect("the committed recipe parses");
        assert_eq!(recipe, BaseRecipe::default());
        assert_eq!(recipe.text, PretrainingText::AllShipped);

        // Its tokenizer is today's: the counter an answer copies is the prompt's own tokens.
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json")).expect("the committed tokenizer");
        let counter = tokenizer.encode("마리");
        assert!(tokenizer.encode("40마리").ends_with(&counter));
        assert!(tokenizer.encode("마흔 마리").ends_with(&[tokenizer.encode(" "), counter].concat()));
    }

    #[test]
    fn a_recipe_without_a_text_was_pretrained_on_the_corpus() {
        let corpus_only = BaseRecipe { text: PretrainingText::Corpus, ..BaseRecipe::default() };
        let json = serde_json::to_string(&corpus_only).unwrap();
        assert!(json.contains(r#""text":"corpus""#), "{json}");
        let mut older: serde_json::Value = serde_json::from_str(&json).unwrap();
        older.as_object_mut().unwrap().remove("text");
        assert_eq!(serde_json::from_value::<BaseRecipe>(older).unwrap(), corpus_only);
    }
}
