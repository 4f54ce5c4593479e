//! Text generation with the KV cache: greedy decoding for evaluation, and temperature, top-k and
//! top-p sampling for serving. Sampling draws from a seeded ChaCha stream, so a seed reproduces.

use burn::prelude::*;
use rand::Rng as _;
use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::model::{CausalLm, KvCache};

/// How to pick the next tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingConfig {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Sample instead of taking the most likely token.
    pub do_sample: bool,
    /// Softmax temperature when sampling.
    pub temperature: f64,
    /// Keep only the `top_k` most likely tokens when sampling (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` when sampling.
    pub top_p: f64,
    /// Seed of the sampling stream.
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig { max_new_tokens: 64, do_sample: false, temperature: 1.0, top_k: 0, top_p: 1.0, seed: 0 }
    }
}

/// The last position's logits of a `[1, seq, vocab]` tensor.
fn last_logits<B: Backend>(logits: Tensor<B, 3>) -> Vec<f32> {
    let [_, seq, vocab] = logits.dims();
    logits.narrow(1, seq - 1, 1).reshape([vocab]).into_data().convert::<f32>().to_vec().expect("f32 logits")
}

/// Index of the largest value (the first one on ties, as `torch.argmax`).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

fn sample(logits: &[f32], config: &SamplingConfig, rng: &mut ChaCha8Rng) -> usize {
    let temperature = config.temperature.max(1e-5);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b)));
    if config.top_k > 0 {
        order.truncate(config.top_k);
    }
    let max = logits[order[0]] as f64;
    let weights: Vec<f64> = order.iter().map(|&i| ((logits[i] as f64 - max) / temperature).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut kept = 0;
    let mut mass = 0.0;
    for w in &weights {
        kept += 1;
        mass += w / total;
        if mass >= config.top_p {
            break;
        }
    }
    let kept_total: f64 = weights[..kept].iter().sum();
    let mut draw = rng.random::<f64>() * kept_total;
    for (w, &i) in weights[..kept].iter().zip(&order) {
        draw -= w;
        if draw <= 0.0 {
            return i;
        }
    }
    order[kept - 1]
}

/// Continues `prompt` until a `stop` token (not included) or `max_new_tokens`; returns the new tokens.
pub fn generate<B: Backend>(model: &CausalLm<B>, prompt: &[u32], stop: &[u32], config: &SamplingConfig) -> Vec<u32> {
    let device = model.embed_tokens.val().device();
    let mut cache = KvCache::new(model.layers.len());
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let max_positions = model.rope_cos.dims()[0];
    let budget = config.max_new_tokens.min(max_positions.saturating_sub(prompt.len()));
    let mut out = Vec::new();
    if prompt.is_empty() || budget == 0 {
        return out;
    }
    let ids: Vec<i32> = prompt.iter().map(|&t| t as i32).collect();
    let mut input = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, prompt.len()]), &device);
    for _ in 0..budget {
        let logits = last_logits(model.forward(input, Some(&mut cache)));
        let next = if config.do_sample { sample(&logits, config, &mut rng) } else { argmax(&logits) } as u32;
        if stop.contains(&next) {
            break;
        }
        out.push(next);
        input = Tensor::from_data(TensorData::new(vec![next as i32], [1, 1]), &device);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_respects_top_k_and_top_p() {
        let logits = [0.0, 5.0, 4.9, -3.0];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let top1 = SamplingConfig { do_sample: true, top_k: 1, ..Default::default() };
        assert!((0..50).all(|_| sample(&logits, &top1, &mut rng) == 1));
        let top2 = SamplingConfig { do_sample: true, top_k: 2, ..Default::default() };
        let picks: Vec<usize> = (0..200).map(|_| sample(&logits, &top2, &mut rng)).collect();
        assert!(picks.iter().all(|&p| p == 1 || p == 2) && picks.contains(&1) && picks.contains(&2));
        let nucleus = SamplingConfig { do_sample: true, top_p: 0.3, ..Default::default() };
        assert!((0..50).all(|_| sample(&logits, &nucleus, &mut rng) == 1), "the top token alone holds over 30%");
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }
}
