//! `worker train`, `worker generate` and `worker base`: the LoRA trainer from the command line,
//! with a progress bar and readable errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use worker::data::jsonl::{Message, Role};
use worker::lm::base::{build_base, BaseRecipe, PretrainingText};
use worker::lm::generate::{generate as generate_tokens, SamplingConfig};
use worker::lm::peft::load_adapter;
use worker::lm::tokenizer::TextTokenizer;
use worker::lm::training::{load_base, train as run_training, Observer, TrainConfig};
use worker::lm::{Backend, TrainBackend};

/// Draws the progress bar and prints each evaluation.
struct ProgressObserver {
    bar: ProgressBar,
}

impl Observer for ProgressObserver {
    fn on_step(&mut self, step: u64, loss: f64, lr: f64) {
        self.bar.set_position(step);
        self.bar.set_message(format!("loss {loss:.4} lr {lr:.2e}"));
    }

    fn on_eval(&mut self, step: u64, metrics: &BTreeMap<String, f64>, checkpoint: &Path) -> bool {
        let shown: Vec<String> = metrics
            .iter()
            .filter(|(k, _)| !k.ends_with("_ci_low") && !k.ends_with("_ci_high") && !k.starts_with("baseline_"))
            .map(|(k, v)| format!("{k}={v:.4}"))
            .collect();
        // `suspend` rather than `println`: a hidden bar (output not a terminal) would drop the line.
        self.bar.suspend(|| println!("step {step}: {} (checkpoint {})", shown.join(" "), checkpoint.display()));
        true
    }
}

/// `worker train --config FILE`.
pub(crate) fn train(config: PathBuf, resume: Option<PathBuf>, output_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let mut config = TrainConfig::from_toml_file(&config)?;
    if let Some(dir) = output_dir {
        config.output_dir = dir;
    }
    let bar = ProgressBar::new(config.train.max_steps);
    bar.set_style(ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg} (eta {eta})").expect("a valid template").progress_chars("=> "));
    if let Some(dir) = &resume {
        println!("resuming from {}", dir.display());
    }
    let mut observer = ProgressObserver { bar: bar.clone() };
    let summary = run_training::<TrainBackend>(&config, &Default::default(), resume.as_deref(), &mut observer)?;
    bar.finish_and_clear();
    println!("trained {} steps: {} adapter parameters on a {}-parameter base, {:.0} tokens/s", summary.step, summary.adapter_params, summary.base_params, summary.tokens_per_s);
    for (key, value) in &summary.metrics {
        println!("  {key} = {value:.4}");
    }
    println!("adapter: {}", config.output_dir.join("adapter").display());
    println!("metrics: {}", config.output_dir.join("metrics.json").display());
    Ok(())
}

/// `worker generate --base DIR --adapter DIR --prompt TEXT`.
pub(crate) fn generate(base: &str, adapter: Option<&Path>, prompt: &str, raw: bool, sampling: &SamplingConfig) -> anyhow::Result<()> {
    let device = Default::default();
    let (_, model, tokenizer) = load_base::<Backend>(base, &device)?;
    let model = match adapter {
        Some(dir) => load_adapter(dir, model).with_context(|| format!("adapter {}", dir.display()))?.1,
        None => model,
    };
    let text = if raw { prompt.to_owned() } else { TextTokenizer::chat_prompt(&[Message { role: Role::User, content: prompt.to_owned() }]) };
    let ids = tokenizer.encode(&text);
    anyhow::ensure!(!ids.is_empty(), "the prompt is empty");
    let max_positions = model.rope_cos.dims()[0];
    anyhow::ensure!(ids.len() < max_positions, "the prompt is {} tokens; the model reads at most {max_positions}", ids.len());
    let out = generate_tokens(&model, &ids, &[tokenizer.im_end, tokenizer.end_of_text], sampling);
    println!("{}", tokenizer.decode(&out));
    Ok(())
}

/// `worker base --out DIR`.
pub(crate) fn base(out: &Path, steps: Option<u64>, text: PretrainingText) -> anyhow::Result<()> {
    let mut recipe = BaseRecipe { text, ..BaseRecipe::default() };
    if let Some(steps) = steps {
        recipe.steps = steps;
    }
    let bar = ProgressBar::new(recipe.steps);
    bar.set_style(ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} pretraining steps {msg} (eta {eta})").expect("a valid template").progress_chars("=> "));
    let loss = build_base::<TrainBackend>(out, &recipe, &Default::default(), |step, loss| {
        bar.set_position(step);
        bar.set_message(format!("loss {loss:.3}"));
    })?;
    bar.finish_and_clear();
    println!("built-in base written to {} (final pretraining loss {loss:.3})", out.display());
    Ok(())
}
