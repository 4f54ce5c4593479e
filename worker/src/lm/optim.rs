//! AdamW over the LoRA adapters, global-norm gradient clipping and the warmup-then-cosine
//! schedule, with the semantics of `torch.optim.AdamW`, `torch.nn.utils.clip_grad_norm_` and
//! `transformers.get_cosine_schedule_with_warmup`.
//!
//! Written here rather than taken from burn: burn's clipping is per tensor, not global, and its
//! optimizer state is keyed by random parameter ids, which a resumed trial cannot match. Ours is
//! keyed by adapter name (`layers.3.q_proj.lora_A`), so a checkpoint restores it exactly.

use std::collections::BTreeMap;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use super::model::{set_trainable, CausalLm};

/// Gradients of the adapters by name, on the inner (non-autodiff) backend.
pub type AdapterGrads<B> = BTreeMap<String, Tensor<B, 2>>;

/// The adapter names with which gradients and optimizer state are keyed.
pub fn adapter_key(layer: usize, projection: &str, which: &str) -> String {
    format!("layers.{layer}.{projection}.lora_{which}")
}

/// Reads the adapters' gradients out of a backward pass.
pub fn adapter_grads<AB: AutodiffBackend>(model: &CausalLm<AB>, grads: &AB::Gradients) -> AdapterGrads<AB::InnerBackend> {
    let mut out = BTreeMap::new();
    for (layer, projection, lora) in model.adapters() {
        for (which, param) in [("A", &lora.a), ("B", &lora.b)] {
            if let Some(g) = param.val().grad(grads) {
                out.insert(adapter_key(layer, projection, which), g);
            }
        }
    }
    out
}

/// Adds `more` into `sum` (gradient accumulation).
pub fn accumulate<B: Backend>(sum: &mut AdapterGrads<B>, more: AdapterGrads<B>) {
    for (name, g) in more {
        let total = match sum.remove(&name) {
            Some(prev) => prev + g,
            None => g,
        };
        sum.insert(name, total);
    }
}

/// Scales the gradients so their global L2 norm is at most `max_norm`; returns the norm before
/// clipping. As `clip_grad_norm_`: the factor is `max_norm / (norm + 1e-6)`, capped at 1.
pub fn clip_global_norm<B: Backend>(grads: &mut AdapterGrads<B>, max_norm: f64) -> f64 {
    let squares: Vec<f64> = grads.values().map(|g| g.clone().powi_scalar(2).sum().into_scalar().elem::<f64>()).collect();
    let norm = squares.iter().sum::<f64>().sqrt();
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        for g in grads.values_mut() {
            *g = g.clone() * factor;
        }
    }
    norm
}

/// Learning rate at optimizer step `step` (0-based): linear warmup from 0, then cosine to 0.
pub fn cosine_with_warmup(peak: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return peak * step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    peak * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

/// AdamW hyperparameters (torch's defaults but for the learning rate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// AdamW state: both moments of every adapter, and the step count.
#[derive(Debug, Clone)]
pub struct AdamW<B: Backend> {
    /// Hyperparameters.
    pub config: AdamWConfig,
    /// Steps taken.
    pub steps: u64,
    /// `(m, v)` by adapter name.
    pub moments: BTreeMap<String, (Tensor<B, 2>, Tensor<B, 2>)>,
}

impl<B: Backend> AdamW<B> {
    /// A fresh optimizer.
    pub fn new(config: AdamWConfig) -> Self {
        AdamW { config, steps: 0, moments: BTreeMap::new() }
    }

    /// One update of every adapter that has a gradient, at learning rate `lr`.
    pub fn step<AB: AutodiffBackend<InnerBackend = B>>(&mut self, model: &mut CausalLm<AB>, grads: &AdapterGrads<B>, lr: f64) {
        self.steps += 1;
        let c = self.config;
        let t = self.steps as i32;
        let (bias1, bias2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for (layer, projection, lora) in model.adapters_mut() {
            for (which, param) in [("A", &mut lora.a), ("B", &mut lora.b)] {
                let name = adapter_key(layer, projection, which);
                let Some(g) = grads.get(&name) else { continue };
                let p = param.val().inner();
                let (m, v) = match self.moments.remove(&name) {
                    Some(state) => state,
                    None => (g.zeros_like(), g.zeros_like()),
                };
                let m = m * c.beta1 + g.clone() * (1.0 - c.beta1);
                let v = v * c.beta2 + g.clone().powi_scalar(2) * (1.0 - c.beta2);
                let denom = (v.clone() / bias2).sqrt() + c.eps;
                let p = p * (1.0 - lr * c.weight_decay) - (m.clone() / bias1) / denom * lr;
                set_trainable(param, Tensor::from_inner(p));
                self.moments.insert(name, (m, v));
            }
        }
    }
}
