//! One LoRA training job: its config, its data, the loop, checkpoints and resume.
//!
//! Determinism: the base, the adapters' initialisation, the batch order (a permutation per epoch
//! drawn from the seed) and the dropout stream of each step (the backend reseeded from the seed and
//! the step) all derive from `train.seed`, so a run is reproducible and a resumed run continues
//! exactly where the checkpoint left it: a checkpoint holds the adapters, both AdamW moments and
//! the step, and the step alone fixes the data position and the learning rate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use rand::seq::SliceRandom as _;
use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::base;
use super::eval::{evaluate, EvalSet};
use super::hf::{self, read_safetensors, write_safetensors, HfError};
use super::model::{set_trainable, CausalLm, LoraConfig, ModelConfig};
use super::optim::{accumulate, adapter_grads, clip_global_norm, cosine_with_warmup, AdamW, AdamWConfig, AdapterGrads};
use super::peft;
use super::tokenizer::TextTokenizer;
use crate::data::jsonl::{read_jsonl, Record, Role};
use crate::data::korean_tasks::{self, Example, TaskKind};

/// A training job, as read from `worker train --config FILE` (TOML) or a study's `run.config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The base model: `builtin` (the shipped tiny Korean base) or a Hugging Face folder.
    #[serde(default = "default_base")]
    pub base: String,
    /// What to train on.
    #[serde(default)]
    pub data: DataConfig,
    /// The adapters.
    #[serde(default = "default_lora")]
    pub lora: LoraConfig,
    /// The optimisation.
    #[serde(default)]
    pub train: OptimConfig,
    /// Where metrics, checkpoints and the adapter go.
    #[serde(default = "default_output")]
    pub output_dir: PathBuf,
    /// Also write the base with the adapter merged in (`merged/`, a Hugging Face folder).
    #[serde(default)]
    pub merge: bool,
}

fn default_base() -> String {
    "builtin".into()
}
fn default_output() -> PathBuf {
    "lora-out".into()
}
fn default_lora() -> LoraConfig {
    LoraConfig { rank: 16, alpha: 32.0, dropout: 0.0, use_rslora: false, target_modules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"].map(String::from).to_vec() }
}

/// Training data: synthetic Korean tasks, users' JSONL, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Synthetic tasks (`num2sino`, `sino2num`, `date`, `native`, `josa`, `jamo_dec`, `jamo_com`).
    pub tasks: Vec<String>,
    /// Training examples per task.
    pub train_per_task: usize,
    /// Held-out examples per task, graded by exact match.
    pub test_per_task: usize,
    /// Largest number of the number-reading tasks.
    pub max_number: u64,
    /// A JSONL file of `{"text"}`, `{"instruction","input","output"}` or `{"messages"}` records.
    pub jsonl: Option<PathBuf>,
    /// Share of the JSONL records held out for the evaluation loss.
    pub eval_fraction: f64,
    /// Longest sequence in tokens; longer examples are cut, raw text is split into windows of it.
    pub max_seq_len: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig { tasks: vec!["num2sino".into(), "native".into()], train_per_task: 20_000, test_per_task: 200, max_number: 9999, jsonl: None, eval_fraction: 0.05, max_seq_len: 128 }
    }
}

/// Optimisation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Peak learning rate.
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Steps of linear warmup before the cosine decay.
    pub warmup_steps: u64,
    /// Optimizer steps in the run.
    pub max_steps: u64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Global gradient-norm clip (0: none).
    pub max_grad_norm: f64,
    /// Seed of everything random.
    pub seed: u64,
    /// Evaluate (and checkpoint) every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Parts each micro-batch is split into, whose forward and backward passes run on threads of
    /// their own; their gradients are summed in order. On a CPU a single pass keeps about one core
    /// busy, so two parts use two. Results depend on this number, never on the machine's cores.
    /// Used only without LoRA dropout (the CPU backend has one random generator per process, so
    /// parallel dropout draws would interleave).
    pub shards: usize,
}

/// One pass per micro-batch on a GPU; two threads' worth on a CPU.
#[cfg(feature = "cuda")]
const DEFAULT_SHARDS: usize = 1;
#[cfg(not(feature = "cuda"))]
const DEFAULT_SHARDS: usize = 2;

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig { learning_rate: 2e-3, weight_decay: 0.0, warmup_steps: 30, max_steps: 600, batch_size: 32, grad_accum: 1, max_grad_norm: 1.0, seed: 42, eval_every: 100, shards: DEFAULT_SHARDS }
    }
}

/// A config that cannot run; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not TOML/JSON, or an unknown or mistyped field.
    #[error("{0}")]
    Parse(String),
    /// A value out of range.
    #[error("{0}")]
    Invalid(String),
}

impl TrainConfig {
    /// Reads a TOML file.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?;
        let config: TrainConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; messages name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        self.lora.validate().map_err(ConfigError::Invalid)?;
        let t = &self.train;
        if !(t.learning_rate.is_finite() && t.learning_rate > 0.0 && t.learning_rate < 1.0) {
            return bad(format!("`train.learning_rate` must be in (0, 1), got {}", t.learning_rate));
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return bad(format!("`train.weight_decay` must be >= 0, got {}", t.weight_decay));
        }
        if t.max_steps == 0 || t.batch_size == 0 || t.grad_accum == 0 || t.shards == 0 {
            return bad("`train.max_steps`, `train.batch_size`, `train.grad_accum` and `train.shards` must be at least 1".into());
        }
        if t.warmup_steps > t.max_steps {
            return bad(format!("`train.warmup_steps` ({}) exceeds `train.max_steps` ({})", t.warmup_steps, t.max_steps));
        }
        if !(t.max_grad_norm.is_finite() && t.max_grad_norm >= 0.0) {
            return bad(format!("`train.max_grad_norm` must be >= 0, got {}", t.max_grad_norm));
        }
        let d = &self.data;
        for task in &d.tasks {
            if TaskKind::parse(task).is_none() {
                let known: Vec<&str> = TaskKind::ALL.iter().map(|t| t.name()).collect();
                return bad(format!("`data.tasks`: unknown task {task:?} (expected one of {})", known.join(", ")));
            }
        }
        if d.tasks.is_empty() && d.jsonl.is_none() {
            return bad("`data` needs `tasks` or a `jsonl` file".into());
        }
        if !d.tasks.is_empty() && (d.train_per_task == 0 || d.test_per_task == 0) {
            return bad("`data.train_per_task` and `data.test_per_task` must be at least 1".into());
        }
        if d.max_seq_len < 8 {
            return bad(format!("`data.max_seq_len` must be at least 8, got {}", d.max_seq_len));
        }
        if !(0.0..1.0).contains(&d.eval_fraction) {
            return bad(format!("`data.eval_fraction` must be in [0, 1), got {}", d.eval_fraction));
        }
        Ok(())
    }

    /// The config with a trial's params applied: `learning_rate` (or `lr`), `rank` (or `lora_r`),
    /// `alpha` (or `lora_alpha`), `dropout` (or `lora_dropout`), `warmup_steps`, `weight_decay`,
    /// `batch_size`, `max_steps`, `seed`. Unknown params are an error, so a typo in a study's space
    /// fails the trial instead of being ignored.
    pub fn with_params(mut self, params: &serde_json::Map<String, serde_json::Value>) -> Result<Self, ConfigError> {
        for (name, value) in params {
            let number = || value.as_f64().ok_or_else(|| ConfigError::Invalid(format!("param `{name}` must be a number, got {value}")));
            let count = || -> Result<u64, ConfigError> {
                let v = number()?;
                if v < 0.0 || v.fract() != 0.0 {
                    return Err(ConfigError::Invalid(format!("param `{name}` must be a whole number, got {value}")));
                }
                Ok(v as u64)
            };
            match name.as_str() {
                "learning_rate" | "lr" => self.train.learning_rate = number()?,
                "rank" | "lora_r" | "lora_rank" => self.lora.rank = count()? as usize,
                "alpha" | "lora_alpha" => self.lora.alpha = number()?,
                "dropout" | "lora_dropout" => self.lora.dropout = number()?,
                "warmup_steps" | "warmup" => self.train.warmup_steps = count()?,
                "weight_decay" => self.train.weight_decay = number()?,
                "batch_size" => self.train.batch_size = count()? as usize,
                "max_steps" | "steps" => self.train.max_steps = count()?,
                "seed" => self.train.seed = count()?,
                other => return Err(ConfigError::Invalid(format!("param `{other}` is not a parameter of the korean-lora trainer"))),
            }
        }
        self.train.warmup_steps = self.train.warmup_steps.min(self.train.max_steps);
        self.validate()?;
        Ok(self)
    }
}

/// One training sequence: token ids and the loss weight of predicting each next token.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    /// Token ids.
    pub ids: Vec<u32>,
    /// `mask[i]` weighs the prediction of `ids[i]` from the tokens before it.
    pub mask: Vec<f32>,
}

/// Everything a run trains and evaluates on.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Training sequences.
    pub train: Vec<Sequence>,
    /// What is evaluated.
    pub eval: EvalSet,
}

/// Why data could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A bad JSONL file.
    #[error(transparent)]
    Jsonl(#[from] crate::data::jsonl::DataError),
    /// Nothing to train on.
    #[error("{0}")]
    Empty(String),
}

fn cut(mut seq: Sequence, max_len: usize) -> Sequence {
    seq.ids.truncate(max_len);
    seq.mask.truncate(max_len);
    seq
}

/// The sequences of one record: a raw text becomes windows of `max_len`; instructions and chats
/// become one exchange with the loss on the answer.
fn record_sequences(tokenizer: &TextTokenizer, record: &Record, max_len: usize) -> Vec<Sequence> {
    match record {
        Record::Text(text) => {
            let mut ids = tokenizer.encode(text);
            ids.push(tokenizer.end_of_text);
            ids.chunks(max_len).filter(|c| c.len() > 1).map(|c| Sequence { ids: c.to_vec(), mask: vec![1.0; c.len()] }).collect()
        }
        Record::Instruction { instruction, input, output } => {
            let prompt = match input.as_deref().filter(|i| !i.trim().is_empty()) {
                Some(input) => format!("{instruction}\n\n{input}"),
                None => instruction.clone(),
            };
            let (ids, mask) = tokenizer.encode_exchange(&prompt, output);
            vec![cut(Sequence { ids, mask }, max_len)]
        }
        Record::Chat(messages) => {
            let (last, context) = messages.split_last().expect("a chat has an answer (checked when parsed)");
            debug_assert_eq!(last.role, Role::Assistant);
            let (ids, mask) = tokenizer.encode_turns(&TextTokenizer::chat_prompt(context), &last.content);
            vec![cut(Sequence { ids, mask }, max_len)]
        }
    }
}

/// The examples of the configured synthetic tasks, split into train and test.
pub fn task_examples(data: &DataConfig, seed: u64) -> (Vec<Example>, BTreeMap<TaskKind, Vec<Example>>) {
    let mut train = Vec::new();
    let mut test = BTreeMap::new();
    for name in &data.tasks {
        let task = TaskKind::parse(name).expect("validated task name");
        let split = korean_tasks::generate(task, seed, data.train_per_task, data.test_per_task, data.max_number);
        train.extend(split.train);
        test.insert(task, split.test);
    }
    (train, test)
}

/// Tokenizes the configured data.
pub fn prepare_data(config: &TrainConfig, tokenizer: &TextTokenizer) -> Result<Dataset, DataError> {
    let data = &config.data;
    let (examples, tests) = task_examples(data, config.train.seed);
    let mut train: Vec<Sequence> = examples
        .iter()
        .map(|e| {
            let (ids, mask) = tokenizer.encode_exchange(&e.prompt, &e.answer);
            cut(Sequence { ids, mask }, data.max_seq_len)
        })
        .collect();
    // The loss is also watched on a slice of the graded test examples (with their answers).
    let mut eval_sequences: Vec<Sequence> = tests
        .values()
        .flat_map(|t| t.iter().take(64))
        .map(|e| {
            let (ids, mask) = tokenizer.encode_exchange(&e.prompt, &e.answer);
            cut(Sequence { ids, mask }, data.max_seq_len)
        })
        .collect();
    if let Some(path) = &data.jsonl {
        let records = read_jsonl(path)?;
        // Every k-th record is held out: deterministic, and spread over the whole file.
        let every = if data.eval_fraction > 0.0 { (1.0 / data.eval_fraction).round().max(2.0) as usize } else { usize::MAX };
        for (i, record) in records.iter().enumerate() {
            let sequences = record_sequences(tokenizer, record, data.max_seq_len);
            if every != usize::MAX && i % every == every - 1 {
                eval_sequences.extend(sequences);
            } else {
                train.extend(sequences);
            }
        }
    }
    train.retain(|s| s.mask.iter().skip(1).any(|&m| m > 0.0));
    if train.is_empty() {
        return Err(DataError::Empty("no training sequences: the data is empty or every answer was cut by `data.max_seq_len`".into()));
    }
    Ok(Dataset { train, eval: EvalSet { sequences: eval_sequences, tasks: tests } })
}

/// Batches of token ids, targets (next tokens) and weights, right-padded.
pub(crate) fn batch_tensors<B: Backend>(seqs: &[&Sequence], pad: u32, device: &B::Device) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>, Tensor<B, 2>) {
    let len = seqs.iter().map(|s| s.ids.len() - 1).max().unwrap_or(1).max(1);
    let mut inputs = Vec::with_capacity(seqs.len() * len);
    let mut targets = Vec::with_capacity(seqs.len() * len);
    let mut weights = Vec::with_capacity(seqs.len() * len);
    for s in seqs {
        for i in 0..len {
            let has = i + 1 < s.ids.len();
            inputs.push(if i < s.ids.len() { s.ids[i] } else { pad } as i32);
            targets.push(if has { s.ids[i + 1] } else { pad } as i32);
            weights.push(if has { s.mask[i + 1] } else { 0.0 });
        }
    }
    let shape = [seqs.len(), len];
    (
        Tensor::from_data(TensorData::new(inputs, shape), device),
        Tensor::from_data(TensorData::new(targets, shape), device),
        Tensor::from_data(TensorData::new(weights, shape), device),
    )
}

/// The order in which training sequences are visited: a fresh permutation per epoch, drawn from
/// (seed, epoch) only, so the position of step `s` is known without replaying the steps before it.
#[derive(Debug)]
pub struct BatchOrder {
    seed: u64,
    len: usize,
    epoch: Option<(u64, Vec<usize>)>,
}

impl BatchOrder {
    /// The order over `len` sequences.
    pub fn new(seed: u64, len: usize) -> Self {
        BatchOrder { seed, len, epoch: None }
    }

    /// The sequence index at global position `position`.
    pub fn at(&mut self, position: u64) -> usize {
        let epoch = position / self.len as u64;
        if self.epoch.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let mut perm: Vec<usize> = (0..self.len).collect();
            perm.shuffle(&mut ChaCha8Rng::seed_from_u64(self.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            self.epoch = Some((epoch, perm));
        }
        self.epoch.as_ref().expect("just set").1[(position % self.len as u64) as usize]
    }
}

/// What the loop tells its observer and what the observer decides.
pub trait Observer {
    /// After every optimizer step.
    fn on_step(&mut self, _step: u64, _loss: f64, _lr: f64) {}
    /// Whether to evaluate (and checkpoint) after `step`, besides `train.eval_every`.
    fn wants_eval(&mut self, _step: u64) -> bool {
        false
    }
    /// After an evaluation at `step` with the checkpoint written there; `false` stops the run.
    fn on_eval(&mut self, _step: u64, _metrics: &BTreeMap<String, f64>, _checkpoint: &Path) -> bool {
        true
    }
    /// Polled before every step; `true` stops the run (pruned, preempted, cancelled).
    fn should_stop(&mut self) -> bool {
        false
    }
}

/// An observer that watches nothing.
pub struct Silent;
impl Observer for Silent {}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    /// The last step trained.
    pub step: u64,
    /// Whether it ran to `max_steps` (false when stopped).
    pub finished: bool,
    /// The last evaluation's metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Trainable (adapter) parameters.
    pub adapter_params: usize,
    /// Parameters of the base.
    pub base_params: usize,
    /// Training tokens per second (inputs, padding excluded) over the run.
    pub tokens_per_s: f64,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A bad config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Bad data.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A model or adapter folder that cannot be read or written.
    #[error(transparent)]
    Model(#[from] HfError),
    /// The tokenizer.
    #[error(transparent)]
    Tokenizer(#[from] super::tokenizer::TokenizerError),
    /// A checkpoint that does not belong to this run.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint folder.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Writing outputs.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The loss became NaN or infinite.
    #[error("the loss diverged ({loss}) at step {step}: lower `train.learning_rate`")]
    Diverged {
        /// The step.
        step: u64,
        /// The loss seen.
        loss: f64,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io { path: path.to_owned(), source }
}

/// The state file of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    step: u64,
    optimizer_steps: u64,
    /// The config the run was started with (output folder, evaluation period and length aside);
    /// a resume must match it.
    config: serde_json::Value,
}

fn fingerprint(config: &TrainConfig) -> serde_json::Value {
    let mut c = config.clone();
    c.output_dir = PathBuf::new();
    c.train.eval_every = 0;
    // A trial promoted past a rung resumes with a larger `max_steps` (ASHA's promotion form).
    c.train.max_steps = 0;
    serde_json::to_value(c).expect("config json")
}

/// Writes a checkpoint: the adapter (PEFT format), the AdamW moments and the step.
fn save_checkpoint<AB: AutodiffBackend>(dir: &Path, config: &TrainConfig, model: &CausalLm<AB>, optim: &AdamW<AB::InnerBackend>, step: u64) -> Result<(), TrainError> {
    peft::save_adapter(dir, model, &config.lora, &config.base)?;
    let mut tensors = BTreeMap::new();
    for (name, (m, v)) in &optim.moments {
        for (suffix, t) in [("m", m), ("v", v)] {
            let dims = t.dims().to_vec();
            tensors.insert(format!("{name}.{suffix}"), (t.clone().into_data().convert::<f32>().to_vec().expect("f32"), dims));
        }
    }
    write_safetensors(&dir.join("optimizer.safetensors"), &tensors, None)?;
    let state = CheckpointState { step, optimizer_steps: optim.steps, config: fingerprint(config) };
    let path = dir.join("trainer_state.json");
    std::fs::write(&path, serde_json::to_string_pretty(&state).expect("json")).map_err(io_err(&path))
}

/// Restores a checkpoint into a model with fresh adapters and a fresh optimizer; returns its step.
fn load_checkpoint<AB: AutodiffBackend>(dir: &Path, config: &TrainConfig, model: &mut CausalLm<AB>, optim: &mut AdamW<AB::InnerBackend>) -> Result<u64, TrainError> {
    let bad = |message: String| TrainError::Checkpoint { path: dir.to_owned(), message };
    let path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| bad(format!("trainer_state.json: {e}")))?;
    let state: CheckpointState = serde_json::from_str(&text).map_err(|e| bad(format!("trainer_state.json: {e}")))?;
    if state.config != fingerprint(config) {
        return Err(bad("it was written by a run with a different config".into()));
    }
    let device = model.embed_tokens.val().device();
    let adapter = read_safetensors(&dir.join(peft::WEIGHTS_FILE))?;
    let adapters = peft::adapter_tensors(model);
    if adapters.keys().ne(adapter.keys()) {
        return Err(bad("its adapter does not have this run's layers".into()));
    }
    for (layer, projection, lora) in model.adapters_mut() {
        for (which, param) in [("A", &mut lora.a), ("B", &mut lora.b)] {
            let key = peft::key(layer, projection, which);
            let (data, shape) = &adapter[&key];
            let value = Tensor::<AB, 2>::from_data(TensorData::new(hf::transpose(data, shape[0], shape[1]), [shape[1], shape[0]]), &device);
            set_trainable(param, value);
        }
    }
    let moments = read_safetensors(&dir.join("optimizer.safetensors"))?;
    optim.moments.clear();
    let names: Vec<String> = moments.keys().filter_map(|k| k.strip_suffix(".m").map(str::to_owned)).collect();
    for name in names {
        let get = |suffix: &str| -> Result<Tensor<AB::InnerBackend, 2>, TrainError> {
            let (data, shape) = moments.get(&format!("{name}.{suffix}")).ok_or_else(|| bad(format!("optimizer state lacks `{name}.{suffix}`")))?;
            Ok(Tensor::from_data(TensorData::new(data.clone(), [shape[0], shape[1]]), &device))
        };
        optim.moments.insert(name.clone(), (get("m")?, get("v")?));
    }
    optim.steps = state.optimizer_steps;
    Ok(state.step)
}

/// Loads the base model and its tokenizer.
pub fn load_base<B: Backend>(base: &str, device: &B::Device) -> Result<(ModelConfig, CausalLm<B>, TextTokenizer), TrainError> {
    if base == "builtin" {
        return base::load_builtin(device);
    }
    let folder = Path::new(base);
    let (config, model) = hf::load_model(folder, device)?;
    let tokenizer = TextTokenizer::from_file(&folder.join("tokenizer.json"))?;
    Ok((config, model, tokenizer))
}

/// The loss of one micro-batch (divided by `accum`, the micro-batches per step) and its adapter
/// gradients. With `shards > 1` the batch is cut into that many consecutive parts, each run on
/// its own thread through its own copy of the model, with fresh autodiff leaves for the adapters
/// so that the parts' graphs share no node and never wait on one another's lock. Each part's loss
/// is its summed cross-entropy over the whole batch's token count, so the parts' gradients,
/// summed in order, are the gradient of the batch's mean loss.
pub fn micro_batch_grads<AB: AutodiffBackend>(model: &CausalLm<AB>, seqs: &[&Sequence], pad: u32, device: &AB::Device, shards: usize, accum: f64) -> (f64, AdapterGrads<AB::InnerBackend>) {
    if shards <= 1 || seqs.len() < 2 {
        let (inputs, targets, weights) = batch_tensors::<AB>(seqs, pad, device);
        let loss = model.masked_loss(inputs, targets, weights) / accum;
        let value = loss.clone().into_scalar().elem::<f64>();
        return (value, adapter_grads(model, &loss.backward()));
    }
    // The batch's loss positions, as `masked_loss` counts them (at least 1).
    let count: f64 = seqs.iter().map(|s| s.mask.iter().skip(1).map(|&m| m as f64).sum::<f64>()).sum::<f64>().max(1.0);
    let per_shard = seqs.len().div_ceil(shards);
    let inner = model.valid();
    let parts: Vec<(f64, AdapterGrads<AB::InnerBackend>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = seqs
            .chunks(per_shard)
            .map(|part| {
                let (inner, device) = (inner.clone(), device.clone());
                scope.spawn(move || {
                    let mut local = CausalLm::<AB>::from_inner(inner);
                    for (_, _, lora) in local.adapters_mut() {
                        let (a, b) = (lora.a.val(), lora.b.val());
                        set_trainable(&mut lora.a, a);
                        set_trainable(&mut lora.b, b);
                    }
                    let (inputs, targets, weights) = batch_tensors::<AB>(part, pad, &device);
                    let loss = local.masked_loss_sum(inputs, targets, weights) / (count * accum);
                    let value = loss.clone().into_scalar().elem::<f64>();
                    (value, adapter_grads(&local, &loss.backward()))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a training shard panicked")).collect()
    });
    let mut grads = BTreeMap::new();
    let mut loss = 0.0;
    for (value, part) in parts {
        loss += value;
        accumulate(&mut grads, part);
    }
    (loss, grads)
}

/// Runs one training job on `device`: trains, evaluates every `train.eval_every` steps and when
/// the observer asks, checkpoints at each evaluation into `output_dir/checkpoints/step-N`, and
/// writes the final adapter (PEFT format) to `output_dir/adapter` and `metrics.json`.
///
/// With `resume`, training continues from that checkpoint's step.
pub fn train<AB: AutodiffBackend>(config: &TrainConfig, device: &AB::Device, resume: Option<&Path>, observer: &mut dyn Observer) -> Result<TrainSummary, TrainError> {
    config.validate()?;
    let t = &config.train;
    let (model_config, base_model, tokenizer) = load_base::<AB>(&config.base, device)?;
    if config.data.max_seq_len > model_config.max_position_embeddings {
        return Err(ConfigError::Invalid(format!("`data.max_seq_len` {} exceeds the base model's `max_position_embeddings` {}", config.data.max_seq_len, model_config.max_position_embeddings)).into());
    }
    let data = prepare_data(config, &tokenizer)?;
    if data.train.iter().any(|s| s.ids.iter().any(|&id| id as usize >= model_config.vocab_size)) {
        return Err(ConfigError::Invalid(format!("the tokenizer yields ids beyond the model's `vocab_size` {}", model_config.vocab_size)).into());
    }
    let mut model = base_model.add_lora(&config.lora, t.seed);
    let mut optim = AdamW::<AB::InnerBackend>::new(AdamWConfig { weight_decay: t.weight_decay, ..AdamWConfig::default() });
    let mut step = 0;
    if let Some(dir) = resume {
        step = load_checkpoint(dir, config, &mut model, &mut optim)?;
    }
    std::fs::create_dir_all(&config.output_dir).map_err(io_err(&config.output_dir))?;
    let mut order = BatchOrder::new(t.seed, data.train.len());
    // Parallel dropout draws would interleave in the CPU backend's one generator: one pass then.
    let shards = if config.lora.dropout > 0.0 { 1 } else { t.shards };
    let mut metrics = BTreeMap::new();
    let started = Instant::now();
    let mut tokens = 0usize;
    let mut loss_sum = 0.0;
    let mut loss_count = 0u64;
    let mut finished = true;
    let mut evaluated_at = None;
    while step < t.max_steps {
        if observer.should_stop() {
            finished = false;
            break;
        }
        // The dropout stream of this step depends on (seed, step) only, so resume replays it.
        // (burn's CPU backend keeps one generator per process: one job trains at a time.)
        AB::seed(device, t.seed.wrapping_mul(1_000_003).wrapping_add(step));
        let mut grads = BTreeMap::new();
        let mut step_loss = 0.0;
        for micro in 0..t.grad_accum {
            let first = (step * t.grad_accum as u64 + micro as u64) * t.batch_size as u64;
            let seqs: Vec<&Sequence> = (0..t.batch_size as u64).map(|j| &data.train[order.at(first + j)]).collect();
            tokens += seqs.iter().map(|s| s.ids.len() - 1).sum::<usize>();
            let (loss, micro_grads) = micro_batch_grads(&model, &seqs, tokenizer.end_of_text, device, shards, t.grad_accum as f64);
            step_loss += loss;
            accumulate(&mut grads, micro_grads);
        }
        if !step_loss.is_finite() {
            return Err(TrainError::Diverged { step: step + 1, loss: step_loss });
        }
        if t.max_grad_norm > 0.0 {
            clip_global_norm(&mut grads, t.max_grad_norm);
        }
        let lr = cosine_with_warmup(t.learning_rate, step, t.warmup_steps, t.max_steps);
        optim.step(&mut model, &grads, lr);
        step += 1;
        loss_sum += step_loss;
        loss_count += 1;
        observer.on_step(step, step_loss, lr);
        let scheduled = t.eval_every > 0 && step % t.eval_every == 0;
        if scheduled || observer.wants_eval(step) || step == t.max_steps {
            metrics = evaluate(&model.valid(), &tokenizer, &data.eval, t.batch_size);
            metrics.insert("train_loss".into(), loss_sum / loss_count.max(1) as f64);
            metrics.insert("learning_rate".into(), lr);
            metrics.insert("tokens_per_s".into(), tokens as f64 / started.elapsed().as_secs_f64());
            (loss_sum, loss_count) = (0.0, 0);
            let dir = config.output_dir.join("checkpoints").join(format!("step-{step}"));
            save_checkpoint(&dir, config, &model, &optim, step)?;
            evaluated_at = Some(step);
            if !observer.on_eval(step, &metrics, &dir) {
                finished = step == t.max_steps;
                break;
            }
        }
    }
    // A run stopped from outside (pruned, cancelled) ends at once: no extra evaluation.
    if finished && evaluated_at != Some(step) && step > 0 {
        metrics = evaluate(&model.valid(), &tokenizer, &data.eval, t.batch_size);
    }
    let tokens_per_s = tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let adapter_dir = config.output_dir.join("adapter");
    peft::save_adapter(&adapter_dir, &model, &config.lora, &config.base)?;
    if config.merge {
        let merged = config.output_dir.join("merged");
        hf::save_model(&merged, &model_config, &model)?;
        tokenizer.save(&merged.join("tokenizer.json"))?;
    }
    let summary = TrainSummary { step, finished, metrics, adapter_params: model.num_adapter_params(), base_params: model_config.num_params(), tokens_per_s };
    let path = config.output_dir.join("metrics.json");
    let body = serde_json::json!({ "step": summary.step, "finished": summary.finished, "metrics": summary.metrics, "adapter_params": summary.adapter_params, "base_params": summary.base_params, "tokens_per_s": summary.tokens_per_s });
    std::fs::write(&path, serde_json::to_string_pretty(&body).expect("json")).map_err(io_err(&path))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lm::CpuTrainBackend;

    /// Sharded passes are a way to use more cores, not another objective: the summed gradients of
    /// the parts are those of one pass over the whole batch, with sequences of different lengths
    /// (so each part pads differently) and an uneven last part.
    #[test]
    fn sharded_passes_give_the_gradients_of_one_pass() {
        let device = Default::default();
        let mut config = base::BaseRecipe::default().model;
        (config.vocab_size, config.num_hidden_layers) = (64, 2);
        let lora = LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, use_rslora: false, target_modules: vec!["q_proj".into(), "o_proj".into(), "down_proj".into()] };
        let mut model = CausalLm::<CpuTrainBackend>::random(&config, 5, 0.02, &device).add_lora(&lora, 5);
        // Non-zero B, so that A gets a gradient too.
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for (_, _, l) in model.adapters_mut() {
            let dims = l.b.val().dims();
            let values: Vec<f32> = (0..dims[0] * dims[1]).map(|_| rand::Rng::random_range(&mut rng, -0.1..0.1)).collect();
            set_trainable(&mut l.b, Tensor::from_data(TensorData::new(values, dims), &device));
        }
        let seqs: Vec<Sequence> = (0..7u32)
            .map(|i| {
                let len = 5 + (i as usize * 3) % 9;
                let ids: Vec<u32> = (0..len as u32).map(|j| (i * 7 + j * 3) % 64).collect();
                let mask = (0..len).map(|j| if j >= len / 2 { 1.0 } else { 0.0 }).collect();
                Sequence { ids, mask }
            })
            .collect();
        let refs: Vec<&Sequence> = seqs.iter().collect();
        let (loss, whole) = micro_batch_grads(&model, &refs, 0, &device, 1, 2.0);
        assert_eq!(whole.len(), 12, "A and B of three projections in two layers");
        for shards in [2, 3] {
            let (sharded_loss, parts) = micro_batch_grads(&model, &refs, 0, &device, shards, 2.0);
            assert!((sharded_loss - loss).abs() < 1e-5 * loss.abs(), "{shards} shards: loss {sharded_loss} vs {loss}");
            assert_eq!(parts.keys().collect::<Vec<_>>(), whole.keys().collect::<Vec<_>>());
            for (name, g) in &whole {
                let (a, b): (Vec<f32>, Vec<f32>) = (g.to_data().to_vec().unwrap(), parts[name].to_data().to_vec().unwrap());
                let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert!(scale > 0.0, "{name} has a gradient");
                let diff = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(diff <= 1e-4 * scale, "{shards} shards, {name}: max diff {diff} of {scale}");
            }
        }
    }
}
