//! Evaluation: held-out loss and perplexity, and exact match with greedy decoding per task, with a
//! 95% Wilson confidence interval and the trivial baseline beside it.

use std::collections::BTreeMap;

use burn::prelude::*;

use super::generate::{generate, SamplingConfig};
use super::model::CausalLm;
use super::tokenizer::TextTokenizer;
use super::training::{batch_tensors, Sequence};
use crate::data::korean_tasks::{self, Example, TaskKind};

/// What a run is evaluated on.
#[derive(Debug, Clone, Default)]
pub struct EvalSet {
    /// Held-out sequences for the loss.
    pub sequences: Vec<Sequence>,
    /// Held-out examples per task, graded by exact match.
    pub tasks: BTreeMap<TaskKind, Vec<Example>>,
}

/// The 95% Wilson score interval of `correct` successes in `n` trials.
pub fn wilson_interval(correct: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_963_984_540_054_f64;
    let (trials, p) = (n as f64, correct as f64 / n as f64);
    let denom = 1.0 + z * z / trials;
    let center = (p + z * z / (2.0 * trials)) / denom;
    let half = z * (p * (1.0 - p) / trials + z * z / (4.0 * trials * trials)).sqrt() / denom;
    // At 0 or n successes the bound is exactly 0 or 1; the formula leaves rounding dust there.
    let low = if correct == 0 { 0.0 } else { (center - half).max(0.0) };
    let high = if correct == n { 1.0 } else { (center + half).min(1.0) };
    (low, high)
}

/// Token-weighted mean loss over `sequences`.
pub fn heldout_loss<B: Backend>(model: &CausalLm<B>, sequences: &[Sequence], pad: u32, batch: usize) -> f64 {
    let device = model.embed_tokens.val().device();
    let (mut total, mut weight) = (0.0, 0.0);
    for chunk in sequences.chunks(batch.max(1)) {
        let refs: Vec<&Sequence> = chunk.iter().collect();
        let (inputs, targets, weights) = batch_tensors::<B>(&refs, pad, &device);
        let w: f64 = weights.clone().sum().into_scalar().elem();
        let loss: f64 = model.masked_loss(inputs, targets, weights).into_scalar().elem();
        total += loss * w;
        weight += w;
    }
    if weight > 0.0 {
        total / weight
    } else {
        f64::NAN
    }
}

/// The model's greedy answer to `prompt`.
pub fn answer<B: Backend>(model: &CausalLm<B>, tokenizer: &TextTokenizer, prompt: &str, max_new_tokens: usize) -> String {
    let (ids, _) = tokenizer.encode_exchange(prompt, "");
    // encode_exchange appends the answer's `<|im_end|>`; the prompt ends before it.
    let prompt_ids = &ids[..ids.len() - 1];
    let config = SamplingConfig { max_new_tokens, ..SamplingConfig::default() };
    tokenizer.decode(&generate(model, prompt_ids, &[tokenizer.im_end, tokenizer.end_of_text], &config))
}

/// Loss, perplexity and per-task exact match (`eval_exact_match_<task>` with `_ci_low`,
/// `_ci_high` and `baseline_exact_match_<task>`); `eval_exact_match` is the mean over tasks.
pub fn evaluate<B: Backend>(model: &CausalLm<B>, tokenizer: &TextTokenizer, set: &EvalSet, batch: usize) -> BTreeMap<String, f64> {
    let mut metrics = BTreeMap::new();
    if !set.sequences.is_empty() {
        let loss = heldout_loss(model, &set.sequences, tokenizer.end_of_text, batch);
        metrics.insert("eval_loss".into(), loss);
        metrics.insert("eval_perplexity".into(), loss.exp());
    }
    let mut accuracies = Vec::new();
    for (task, examples) in &set.tasks {
        let longest = examples.iter().map(|e| tokenizer.encode(&e.answer).len()).max().unwrap_or(0);
        let correct = examples.iter().filter(|e| korean_tasks::grade(*task, &answer(model, tokenizer, &e.prompt, longest + 4), &e.answer)).count();
        let name = task.name();
        let accuracy = correct as f64 / examples.len().max(1) as f64;
        let (low, high) = wilson_interval(correct, examples.len());
        metrics.insert(format!("eval_exact_match_{name}"), accuracy);
        metrics.insert(format!("eval_exact_match_{name}_ci_low"), low);
        metrics.insert(format!("eval_exact_match_{name}_ci_high"), high);
        metrics.insert(format!("baseline_exact_match_{name}"), korean_tasks::trivial_baseline(*task, examples));
        accuracies.push(accuracy);
    }
    if !accuracies.is_empty() {
        metrics.insert("eval_exact_match".into(), accuracies.iter().sum::<f64>() / accuracies.len() as f64);
    }
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_matches_the_formula_on_known_values() {
        // statsmodels proportion_confint(95, 100, method="wilson") = (0.8882, 0.9785)
        let (low, high) = wilson_interval(95, 100);
        assert!((low - 0.88825).abs() < 1e-4 && (high - 0.97846).abs() < 1e-4, "{low} {high}");
        let (low, high) = wilson_interval(0, 50);
        assert_eq!(low, 0.0);
        assert!((high - 0.07135).abs() < 1e-4, "{high}");
        let (low, high) = wilson_interval(50, 50);
        assert!((low - 0.92865).abs() < 1e-4, "{low}");
        assert_eq!(high, 1.0);
    }
}
