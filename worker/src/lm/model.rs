//! A Llama/Qwen2-architecture decoder in burn, with LoRA adapters built into its linear layers.
//!
//! It computes what Hugging Face's `Qwen2ForCausalLM` / `LlamaForCausalLM` compute: RMSNorm in
//! f32, rotary embeddings with `rotate_half` (not burn's interleaved pairs, so HF checkpoints load
//! without permuting q/k), grouped-query attention, SwiGLU, a tied or untied head, and a KV cache
//! for generation. Weights are held in burn's `[in, out]` layout; [`super::hf`] converts from and
//! to HF's `[out, in]`.
//!
//! No file IO here: loading and saving live in [`super::hf`] and [`super::peft`].

use burn::module::{Module, Param, ParamId};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, silu};
use burn::tensor::module::{attention, embedding};
use burn::tensor::ops::AttentionModuleOptions;
use rand::Rng as _;
use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The architecture, read from and written to a Hugging Face `config.json` (Qwen2 or Llama).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Tokens in the vocabulary (rows of the embedding).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU hidden layer.
    pub intermediate_size: usize,
    /// Decoder blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than the query heads).
    pub num_key_value_heads: usize,
    /// Longest sequence the rotary tables cover.
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// Rotary base.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    /// Whether the output head shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v. Qwen2 always has them (its config has no such field); Llama reads
    /// `attention_bias`. Filled in by [`ModelConfig::from_hf_json`].
    #[serde(default)]
    pub attention_bias: bool,
    /// `qwen2` or `llama`; decides the default of `attention_bias`.
    #[serde(default = "default_model_type")]
    pub model_type: String,
}

fn default_max_positions() -> usize {
    2048
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_model_type() -> String {
    "qwen2".into()
}

/// A `config.json` this loader cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON, or a field missing or of the wrong type.
    #[error("config.json: {0}")]
    Json(#[from] serde_json::Error),
    /// A value out of range.
    #[error("config.json: {0}")]
    Invalid(String),
}

impl ModelConfig {
    /// Reads a Hugging Face `config.json`, accepting the Qwen2 and Llama model types.
    pub fn from_hf_json(text: &str) -> Result<Self, ConfigError> {
        let raw: serde_json::Value = serde_json::from_str(text)?;
        let mut config: ModelConfig = serde_json::from_value(raw.clone())?;
        config.attention_bias = match config.model_type.as_str() {
            "qwen2" => true,
            "llama" | "mistral" => raw.get("attention_bias").and_then(|v| v.as_bool()).unwrap_or(false),
            other => return Err(ConfigError::Invalid(format!("`model_type` {other:?} is not supported (qwen2, llama, mistral)"))),
        };
        if let Some(scaling) = raw.get("rope_scaling").filter(|v| !v.is_null()) {
            return Err(ConfigError::Invalid(format!("`rope_scaling` {scaling} is not supported")));
        }
        // transformers 5 writes the rotary settings as `rope_parameters`.
        if let Some(rope) = raw.get("rope_parameters").filter(|v| !v.is_null()) {
            let kind = rope.get("rope_type").and_then(|v| v.as_str()).unwrap_or("default");
            if kind != "default" {
                return Err(ConfigError::Invalid(format!("`rope_parameters.rope_type` {kind:?} is not supported (only \"default\")")));
            }
            if let Some(theta) = rope.get("rope_theta").and_then(|v| v.as_f64()) {
                config.rope_theta = theta;
            }
        }
        if raw.get("use_sliding_window").and_then(|v| v.as_bool()) == Some(true) {
            return Err(ConfigError::Invalid("`use_sliding_window` = true is not supported".into()));
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the shapes fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_hidden_layers == 0 || self.intermediate_size == 0 {
            return bad("`vocab_size`, `hidden_size`, `intermediate_size` and `num_hidden_layers` must be positive".into());
        }
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!("`hidden_size` {} must be a multiple of `num_attention_heads` {}", self.hidden_size, self.num_attention_heads));
        }
        if self.num_key_value_heads == 0 || !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return bad(format!("`num_attention_heads` {} must be a multiple of `num_key_value_heads` {}", self.num_attention_heads, self.num_key_value_heads));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!("the head size {} must be even for rotary embeddings", self.head_dim()));
        }
        Ok(())
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The HF `config.json` text for this architecture.
    pub fn to_hf_json(&self) -> String {
        let architecture = if self.model_type == "llama" { "LlamaForCausalLM" } else { "Qwen2ForCausalLM" };
        let mut value = serde_json::to_value(self).expect("a config should serialize");
        let obj = value.as_object_mut().expect("a config is an object");
        obj.insert("architectures".into(), serde_json::json!([architecture]));
        obj.insert("hidden_act".into(), "silu".into());
        obj.insert("torch_dtype".into(), "float32".into());
        if self.model_type == "qwen2" {
            obj.remove("attention_bias");
        }
        serde_json::to_string_pretty(&value).expect("a config should serialize")
    }

    /// Parameters of the base model.
    pub fn num_params(&self) -> usize {
        let (d, f, v, l) = (self.hidden_size, self.intermediate_size, self.vocab_size, self.num_hidden_layers);
        let kv = self.num_key_value_heads * self.head_dim();
        let attn = d * d * 2 + d * kv * 2 + if self.attention_bias { d + 2 * kv } else { 0 };
        let block = attn + 3 * d * f + 2 * d;
        let head = if self.tie_word_embeddings { 0 } else { d * v };
        v * d + l * block + d + head
    }
}

/// Which linear layers get adapters, and their size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank r of the update `B·A`.
    pub rank: usize,
    /// Scale numerator: the update is multiplied by `alpha / r` (or `alpha / sqrt(r)` with rsLoRA).
    pub alpha: f64,
    /// Dropout on the adapter's input during training.
    #[serde(default)]
    pub dropout: f64,
    /// rsLoRA scaling (`alpha / sqrt(r)`), which keeps large ranks stable.
    #[serde(default)]
    pub use_rslora: bool,
    /// Projections that get adapters: any of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj.
    pub target_modules: Vec<String>,
}

/// Every projection name a decoder block has, in HF order.
pub const PROJECTIONS: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

impl LoraConfig {
    /// The multiplier of `x·A·B`.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }

    /// Checks rank, alpha, dropout and target names; messages name the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.rank == 0 {
            return Err("`lora.rank` must be at least 1".into());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(format!("`lora.alpha` must be positive, got {}", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("`lora.dropout` must be in [0, 1), got {}", self.dropout));
        }
        if self.target_modules.is_empty() {
            return Err("`lora.target_modules` must name at least one projection".into());
        }
        for name in &self.target_modules {
            if !PROJECTIONS.contains(&name.as_str()) {
                return Err(format!("`lora.target_modules`: unknown projection {name:?} (expected one of {})", PROJECTIONS.join(", ")));
            }
        }
        Ok(())
    }
}

/// The adapter of one linear layer: `x·A·B·scale`, with `A: [in, r]` and `B: [r, out]`.
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    /// Down projection, initialised like PEFT (Kaiming-uniform with a = sqrt(5)).
    pub a: Param<Tensor<B, 2>>,
    /// Up projection, initialised to zero so a fresh adapter changes nothing.
    pub b: Param<Tensor<B, 2>>,
    /// `alpha / r` (or `alpha / sqrt(r)`).
    pub scale: f64,
    /// Dropout probability on the adapter's input during training.
    pub dropout: f64,
}

/// A frozen linear layer with an optional trainable LoRA adapter; names as in HF (`q_proj`, ...).
#[derive(Module, Debug)]
pub struct LoraLinear<B: Backend> {
    /// `[in, out]`, frozen.
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`, frozen.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// The adapter, when this projection is a LoRA target.
    pub lora: Option<Lora<B>>,
}

impl<B: Backend> LoraLinear<B> {
    /// A frozen layer from its weight (`[in, out]`) and bias.
    pub fn frozen(weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Self {
        LoraLinear {
            weight: Param::from_tensor(weight).set_require_grad(false),
            bias: bias.map(|b| Param::from_tensor(b).set_require_grad(false)),
            lora: None,
        }
    }

    /// # Shapes
    /// `x: [batch, seq, in]` -> `[batch, seq, out]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, seq, d_in] = x.dims();
        // One [batch·seq, in] × [in, out] product: a broadcast batched matmul would copy the
        // weight once per sequence.
        let x = x.reshape([batch * seq, d_in]);
        let mut y = x.clone().matmul(self.weight.val());
        if let Some(bias) = &self.bias {
            y = y + bias.val().unsqueeze();
        }
        if let Some(lora) = &self.lora {
            let x = burn::nn::DropoutConfig::new(lora.dropout).init().forward(x);
            let delta = x.matmul(lora.a.val()).matmul(lora.b.val());
            y = y + delta * lora.scale;
        }
        let d_out = y.dims()[1];
        y.reshape([batch, seq, d_out])
    }

    /// The weight with the adapter folded in (`W + scale·A·B`), for a merged model.
    pub fn merged_weight(&self) -> Tensor<B, 2> {
        match &self.lora {
            Some(lora) => self.weight.val() + lora.a.val().matmul(lora.b.val()) * lora.scale,
            None => self.weight.val(),
        }
    }
}

/// RMSNorm as HF computes it: `x / sqrt(mean(x²) + eps) * weight`.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// `[hidden]`, frozen.
    pub weight: Param<Tensor<B, 1>>,
    /// Added to the mean square.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// # Shapes
    /// `x: [batch, seq, hidden]` -> same
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let inv_rms = x.clone().powi_scalar(2).mean_dim(2).add_scalar(self.eps).sqrt().recip();
        x * inv_rms * self.weight.val().unsqueeze()
    }
}

/// Keys and values of the positions seen so far, one entry per layer: `[batch, kv_heads, len, head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache.
    pub fn new(layers: usize) -> Self {
        KvCache { layers: vec![None; layers] }
    }

    /// Positions cached so far.
    pub fn len(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map_or(0, |(k, _)| k.dims()[2])
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Self-attention with rotary embeddings and grouped-query heads.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Query projection.
    pub q_proj: LoraLinear<B>,
    /// Key projection.
    pub k_proj: LoraLinear<B>,
    /// Value projection.
    pub v_proj: LoraLinear<B>,
    /// Output projection.
    pub o_proj: LoraLinear<B>,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
}

/// HF's `rotate_half` (`[x1, x2] -> [-x2, x1]` over the last dimension) as a `[d, d]` matrix,
/// so that rotating is one contiguous matmul instead of strided slices and a concatenation.
pub fn rotate_half_matrix(head_dim: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let mut m = vec![0.0; head_dim * head_dim];
    for i in 0..half {
        // out[i] = -x[i + half]; out[i + half] = x[i]  (out = x · M, so M[row = input, col = output]).
        m[(i + half) * head_dim + i] = -1.0;
        m[i * head_dim + i + half] = 1.0;
    }
    m
}

impl<B: Backend> Attention<B> {
    /// # Shapes
    /// `x: [batch, seq, hidden]`, `cos`/`sin: [seq, head_dim]` for the positions of `x` -> `[batch, seq, hidden]`
    fn forward(&self, x: Tensor<B, 3>, rope: &Rope<B>, cache: Option<&mut Option<(Tensor<B, 4>, Tensor<B, 4>)>>) -> Tensor<B, 3> {
        let [batch, seq, hidden] = x.dims();
        let head_dim = hidden / self.heads;
        // Rotary embeddings are applied in the contiguous [batch, seq, heads, head_dim] layout;
        // elementwise ops on the transposed layout take burn-flex's slow strided path.
        let rotate = |t: Tensor<B, 3>, heads: usize| {
            let t = t.reshape([batch, seq, heads, head_dim]);
            let rotated = t.clone().reshape([batch * seq * heads, head_dim]).matmul(rope.rotate.clone()).reshape([batch, seq, heads, head_dim]);
            (t * rope.cos.clone() + rotated * rope.sin.clone()).swap_dims(1, 2)
        };
        let q = rotate(self.q_proj.forward(x.clone()), self.heads);
        let k = rotate(self.k_proj.forward(x.clone()), self.kv_heads);
        let v = self.v_proj.forward(x).reshape([batch, seq, self.kv_heads, head_dim]).swap_dims(1, 2);
        let (k, v) = match cache {
            Some(slot) => {
                let (k, v) = match slot.take() {
                    Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
                    None => (k, v),
                };
                *slot = Some((k.clone(), v.clone()));
                (k, v)
            }
            None => (k, v),
        };
        let total = k.dims()[2];
        let rep = self.heads / self.kv_heads;
        let expand = |t: Tensor<B, 4>| {
            if rep == 1 {
                t
            } else {
                t.unsqueeze_dim::<5>(2).expand([batch, self.kv_heads, rep, total, head_dim]).reshape([batch, self.heads, total, head_dim])
            }
        };
        // Causal masking is only needed when queries attend to each other; a decoding step's
        // single query sees every cached key.
        let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: seq > 1 };
        assert!(seq == total || seq == 1, "a cached forward takes all positions at once (prefill) or one at a time");
        let out = attention(q, expand(k), expand(v), None, None, options);
        self.o_proj.forward(out.swap_dims(1, 2).reshape([batch, seq, hidden]))
    }
}

/// The rotary tables for the positions of one forward pass, shaped to broadcast over
/// `[batch, seq, heads, head_dim]`.
struct Rope<B: Backend> {
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
    rotate: Tensor<B, 2>,
}

/// SwiGLU: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Gate projection.
    pub gate_proj: LoraLinear<B>,
    /// Up projection.
    pub up_proj: LoraLinear<B>,
    /// Down projection.
    pub down_proj: LoraLinear<B>,
}

/// One pre-norm decoder block.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Attention.
    pub self_attn: Attention<B>,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
    /// MLP.
    pub mlp: Mlp<B>,
}

/// The causal language model.
#[derive(Module, Debug)]
pub struct CausalLm<B: Backend> {
    /// `[vocab, hidden]`, frozen.
    pub embed_tokens: Param<Tensor<B, 2>>,
    /// Decoder blocks.
    pub layers: Vec<Block<B>>,
    /// Final norm.
    pub norm: RmsNorm<B>,
    /// `[hidden, vocab]`; `None` when tied to the embedding.
    pub lm_head: Option<Param<Tensor<B, 2>>>,
    /// Rotary cosines, `[max_positions, head_dim]`.
    pub rope_cos: Tensor<B, 2>,
    /// Rotary sines, `[max_positions, head_dim]`.
    pub rope_sin: Tensor<B, 2>,
    /// [`rotate_half_matrix`], `[head_dim, head_dim]`.
    pub rope_rotate: Tensor<B, 2>,
}

/// HF's rotary tables: `inv_freq[i] = theta^(-2i/d)`, angles `pos·inv_freq` repeated twice.
pub fn rope_tables(head_dim: usize, positions: usize, theta: f64) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(positions * head_dim);
    let mut sin = Vec::with_capacity(positions * head_dim);
    // f32 like HF's default (inv_freq and the angle product are float32 there).
    let inv_freq: Vec<f32> = (0..half).map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32)).collect();
    for pos in 0..positions {
        for _repeat in 0..2 {
            for f in &inv_freq {
                let angle = pos as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    (cos, sin)
}

/// The weights of a model, by HF name, in burn's layout (linear weights `[in, out]`).
pub type NamedWeights = std::collections::BTreeMap<String, (Vec<f32>, Vec<usize>)>;

impl<B: Backend> CausalLm<B> {
    /// A model from named weights (HF names without the `model.` prefix dropped: exactly as HF
    /// stores them, e.g. `model.layers.0.self_attn.q_proj.weight`), linear weights already `[in, out]`.
    pub fn from_weights(config: &ModelConfig, weights: &mut NamedWeights, device: &B::Device) -> Result<Self, String> {
        let d = config.hidden_size;
        let kv = config.num_key_value_heads * config.head_dim();
        let f = config.intermediate_size;
        let matrix = |weights: &mut NamedWeights, name: &str, shape: [usize; 2]| -> Result<Tensor<B, 2>, String> { Ok(Tensor::from_data(take(weights, name, &shape)?, device)) };
        let vector = |weights: &mut NamedWeights, name: &str, len: usize| -> Result<Tensor<B, 1>, String> { Ok(Tensor::from_data(take(weights, name, &[len])?, device)) };
        let frozen_vector = |weights: &mut NamedWeights, name: &str| -> Result<Param<Tensor<B, 1>>, String> { Ok(Param::from_tensor(vector(weights, name, d)?).set_require_grad(false)) };
        let embed = matrix(weights, "model.embed_tokens.weight", [config.vocab_size, d])?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mut linear = |name: &str, shape: [usize; 2], bias: bool| -> Result<LoraLinear<B>, String> {
                let bias = if bias { Some(vector(weights, &format!("{p}.{name}.bias"), shape[1])?) } else { None };
                Ok(LoraLinear::frozen(matrix(weights, &format!("{p}.{name}.weight"), shape)?, bias))
            };
            let bias = config.attention_bias;
            let self_attn = Attention {
                q_proj: linear("self_attn.q_proj", [d, d], bias)?,
                k_proj: linear("self_attn.k_proj", [d, kv], bias)?,
                v_proj: linear("self_attn.v_proj", [d, kv], bias)?,
                o_proj: linear("self_attn.o_proj", [d, d], false)?,
                heads: config.num_attention_heads,
                kv_heads: config.num_key_value_heads,
            };
            let mlp = Mlp { gate_proj: linear("mlp.gate_proj", [d, f], false)?, up_proj: linear("mlp.up_proj", [d, f], false)?, down_proj: linear("mlp.down_proj", [f, d], false)? };
            layers.push(Block {
                input_layernorm: RmsNorm { weight: frozen_vector(weights, &format!("{p}.input_layernorm.weight"))?, eps: config.rms_norm_eps },
                self_attn,
                post_attention_layernorm: RmsNorm { weight: frozen_vector(weights, &format!("{p}.post_attention_layernorm.weight"))?, eps: config.rms_norm_eps },
                mlp,
            });
        }
        let norm = RmsNorm { weight: frozen_vector(weights, "model.norm.weight")?, eps: config.rms_norm_eps };
        let lm_head = if config.tie_word_embeddings {
            // Some tied checkpoints store the head anyway; it equals the embedding.
            weights.remove("lm_head.weight");
            None
        } else {
            Some(Param::from_tensor(matrix(weights, "lm_head.weight", [d, config.vocab_size])?).set_require_grad(false))
        };
        let (cos, sin) = rope_tables(config.head_dim(), config.max_position_embeddings, config.rope_theta);
        let positions = [config.max_position_embeddings, config.head_dim()];
        Ok(CausalLm {
            embed_tokens: Param::from_tensor(embed).set_require_grad(false),
            layers,
            norm,
            lm_head,
            rope_cos: Tensor::from_data(TensorData::new(cos, positions), device),
            rope_sin: Tensor::from_data(TensorData::new(sin, positions), device),
            rope_rotate: Tensor::from_data(TensorData::new(rotate_half_matrix(config.head_dim()), [config.head_dim(), config.head_dim()]), device),
        })
    }

    /// A randomly initialised model (normal with std `init_std`, norms at one), reproducible from `seed`.
    pub fn random(config: &ModelConfig, seed: u64, init_std: f64, device: &B::Device) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut weights = NamedWeights::new();
        for (name, shape) in hf_shapes(config) {
            let len: usize = shape.iter().product();
            let data: Vec<f32> = if name.ends_with("norm.weight") {
                vec![1.0; len]
            } else if name.ends_with(".bias") {
                vec![0.0; len]
            } else {
                (0..len).map(|_| (normal(&mut rng) * init_std) as f32).collect()
            };
            weights.insert(name, (data, shape));
        }
        CausalLm::from_weights(config, &mut weights, device).expect("shapes made from the config should fit it")
    }

    /// Hidden states after the final norm.
    ///
    /// # Shapes
    /// `tokens: [batch, seq]` -> `[batch, seq, hidden]`
    pub fn hidden(&self, tokens: Tensor<B, 2, Int>, mut cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        let [_, seq] = tokens.dims();
        let start = cache.as_ref().map_or(0, |c| c.len());
        let max = self.rope_cos.dims()[0];
        assert!(start + seq <= max, "sequence of {} positions exceeds the model's {max}", start + seq);
        let head_dim = self.rope_cos.dims()[1];
        let rope = Rope {
            cos: self.rope_cos.clone().narrow(0, start, seq).reshape([1, seq, 1, head_dim]),
            sin: self.rope_sin.clone().narrow(0, start, seq).reshape([1, seq, 1, head_dim]),
            rotate: self.rope_rotate.clone(),
        };
        let mut x = embedding(self.embed_tokens.val(), tokens);
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_mut().map(|c| &mut c.layers[i]);
            let h = layer.self_attn.forward(layer.input_layernorm.forward(x.clone()), &rope, slot);
            x = x + h;
            let m = &layer.mlp;
            let normed = layer.post_attention_layernorm.forward(x.clone());
            let h = m.down_proj.forward(silu(m.gate_proj.forward(normed.clone())) * m.up_proj.forward(normed));
            x = x + h;
        }
        self.norm.forward(x)
    }

    /// Logits over the vocabulary.
    ///
    /// # Shapes
    /// `tokens: [batch, seq]` -> `[batch, seq, vocab]`
    pub fn forward(&self, tokens: Tensor<B, 2, Int>, cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        let h = self.hidden(tokens, cache);
        let [batch, seq, hidden] = h.dims();
        let h = h.reshape([batch * seq, hidden]);
        let logits = match &self.lm_head {
            Some(head) => h.matmul(head.val()),
            None => h.matmul(self.embed_tokens.val().transpose()),
        };
        let vocab = logits.dims()[1];
        logits.reshape([batch, seq, vocab])
    }

    /// Mean cross-entropy of next-token prediction over the positions whose `weights` are 1.
    ///
    /// # Shapes
    /// `tokens, targets: [batch, seq]` (targets are the next tokens), `weights: [batch, seq]` -> `[1]`
    pub fn masked_loss(&self, tokens: Tensor<B, 2, Int>, targets: Tensor<B, 2, Int>, weights: Tensor<B, 2>) -> Tensor<B, 1> {
        let count = weights.clone().sum().clamp_min(1.0);
        self.masked_loss_sum(tokens, targets, weights) / count
    }

    /// Summed (not averaged) cross-entropy over the positions whose `weights` are 1: the part of
    /// a batch's loss that one shard of it contributes.
    ///
    /// # Shapes
    /// as [`Self::masked_loss`]
    pub fn masked_loss_sum(&self, tokens: Tensor<B, 2, Int>, targets: Tensor<B, 2, Int>, weights: Tensor<B, 2>) -> Tensor<B, 1> {
        let [batch, seq] = tokens.dims();
        let logits = self.forward(tokens, None);
        let vocab = logits.dims()[2];
        let log_probs = log_softmax(logits.reshape([batch * seq, vocab]), 1);
        let picked = log_probs.gather(1, targets.reshape([batch * seq, 1])).reshape([batch * seq]);
        (picked * weights.reshape([batch * seq])).sum().neg()
    }

    /// Adds fresh adapters (A random from `seed`, B zero, as PEFT does) to the target projections.
    pub fn add_lora(mut self, lora: &LoraConfig, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4c6f_5241);
        for layer in self.layers.iter_mut() {
            for (name, linear) in layer.projections_mut() {
                if !lora.target_modules.iter().any(|t| t == name) {
                    continue;
                }
                let [d_in, d_out] = linear.weight.val().dims();
                let device = linear.weight.val().device();
                // PEFT: nn.init.kaiming_uniform_(lora_A, a=sqrt(5)) -> U(-1/sqrt(in), 1/sqrt(in)).
                let bound = 1.0 / (d_in as f64).sqrt();
                let a: Vec<f32> = (0..d_in * lora.rank).map(|_| rng.random_range(-bound..bound) as f32).collect();
                linear.lora = Some(Lora {
                    a: Param::from_tensor(Tensor::from_data(TensorData::new(a, [d_in, lora.rank]), &device)),
                    b: Param::from_tensor(Tensor::zeros([lora.rank, d_out], &device)),
                    scale: lora.scale(),
                    dropout: lora.dropout,
                });
            }
        }
        self
    }

    /// Adapters by layer and projection name, for the optimizer and for saving.
    pub fn adapters_mut(&mut self) -> Vec<(usize, &'static str, &mut Lora<B>)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            for (name, linear) in layer.projections_mut() {
                if let Some(lora) = linear.lora.as_mut() {
                    out.push((i, name, lora));
                }
            }
        }
        out
    }

    /// Adapters by layer and projection name.
    pub fn adapters(&self) -> Vec<(usize, &'static str, &Lora<B>)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for (name, linear) in layer.projections() {
                if let Some(lora) = linear.lora.as_ref() {
                    out.push((i, name, lora));
                }
            }
        }
        out
    }

    /// Trainable adapter parameters.
    pub fn num_adapter_params(&self) -> usize {
        self.adapters().iter().map(|(_, _, l)| l.a.val().dims().iter().product::<usize>() + l.b.val().dims().iter().product::<usize>()).sum()
    }
}

impl<B: Backend> Block<B> {
    /// The seven projections with their HF names.
    pub fn projections(&self) -> [(&'static str, &LoraLinear<B>); 7] {
        let (a, m) = (&self.self_attn, &self.mlp);
        [("q_proj", &a.q_proj), ("k_proj", &a.k_proj), ("v_proj", &a.v_proj), ("o_proj", &a.o_proj), ("gate_proj", &m.gate_proj), ("up_proj", &m.up_proj), ("down_proj", &m.down_proj)]
    }

    /// The seven projections with their HF names, mutable.
    pub fn projections_mut(&mut self) -> [(&'static str, &mut LoraLinear<B>); 7] {
        let (a, m) = (&mut self.self_attn, &mut self.mlp);
        [
            ("q_proj", &mut a.q_proj),
            ("k_proj", &mut a.k_proj),
            ("v_proj", &mut a.v_proj),
            ("o_proj", &mut a.o_proj),
            ("gate_proj", &mut m.gate_proj),
            ("up_proj", &mut m.up_proj),
            ("down_proj", &mut m.down_proj),
        ]
    }
}

/// The HF module holding a projection: `self_attn` or `mlp`.
pub fn hf_group(projection: &str) -> &'static str {
    match projection {
        "gate_proj" | "up_proj" | "down_proj" => "mlp",
        _ => "self_attn",
    }
}

/// HF tensor names and their shapes in burn's layout (linear weights `[in, out]`).
pub fn hf_shapes(config: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let d = config.hidden_size;
    let kv = config.num_key_value_heads * config.head_dim();
    let f = config.intermediate_size;
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![config.vocab_size, d])];
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        out.push((format!("{p}.input_layernorm.weight"), vec![d]));
        out.push((format!("{p}.self_attn.q_proj.weight"), vec![d, d]));
        out.push((format!("{p}.self_attn.k_proj.weight"), vec![d, kv]));
        out.push((format!("{p}.self_attn.v_proj.weight"), vec![d, kv]));
        if config.attention_bias {
            out.push((format!("{p}.self_attn.q_proj.bias"), vec![d]));
            out.push((format!("{p}.self_attn.k_proj.bias"), vec![kv]));
            out.push((format!("{p}.self_attn.v_proj.bias"), vec![kv]));
        }
        out.push((format!("{p}.self_attn.o_proj.weight"), vec![d, d]));
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![d]));
        out.push((format!("{p}.mlp.gate_proj.weight"), vec![d, f]));
        out.push((format!("{p}.mlp.up_proj.weight"), vec![d, f]));
        out.push((format!("{p}.mlp.down_proj.weight"), vec![f, d]));
    }
    out.push(("model.norm.weight".to_string(), vec![d]));
    if !config.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![d, config.vocab_size]));
    }
    out
}

/// Removes the tensor `name` from `weights`, checking its shape.
fn take(weights: &mut NamedWeights, name: &str, shape: &[usize]) -> Result<TensorData, String> {
    let (data, got) = weights.remove(name).ok_or_else(|| format!("missing tensor `{name}`"))?;
    if got != shape {
        return Err(format!("tensor `{name}` has shape {got:?}, expected {shape:?}"));
    }
    Ok(TensorData::new(data, shape.to_vec()))
}

/// A standard normal sample (Box-Muller), so initialisation depends on the seed alone.
pub(crate) fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Replaces a parameter's value, keeping its id and making it trainable.
pub(crate) fn set_trainable<B: Backend, const D: usize>(param: &mut Param<Tensor<B, D>>, value: Tensor<B, D>) {
    let id: ParamId = param.id;
    *param = Param::initialized(id, value.detach().require_grad());
}
