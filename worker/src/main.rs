//! `worker`: the agent that leases trials of the tracker's studies and runs them.
//!
//! ```text
//! worker --tracking-uri http://tracker:5000 --slot 0 --study lora-sweep --label zone=a
//! ```
//!
//! Thin: flags, logging and signals here; everything else in [`worker::agent`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use std::sync::Arc;
use worker::agent::{Agent, AgentConfig};
use worker::lm::generate::SamplingConfig;
use worker::lm::trial::{KoreanLoraTrainer, TRAINER_NAME};
use worker::serve::{ModelRef, ServeConfig, Server};

mod lora_cli;
use worker::TrackerClient;

/// Leases trials of the tracker's studies and runs them.
#[derive(Parser, Debug)]
#[command(name = "worker", version, about, args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand, the flags of `worker run`.
    #[command(flatten)]
    agent: AgentArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent (also what `worker` with no subcommand does).
    Run(AgentArgs),
    /// Train one Korean LoRA job locally, without a tracker: metrics, checkpoints and the adapter
    /// (PEFT format) go to the config's output folder.
    Train(TrainArgs),
    /// Print a completion of a prompt by a base model, with or without an adapter.
    Generate(GenerateArgs),
    /// Rebuild the built-in tiny Korean base (tokenizer and pretrained model) into a folder.
    Base(BaseArgs),
    /// Serve a registered model version over HTTP (POST /generate, GET /health, GET /metrics),
    /// following its alias as it moves.
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// What to serve: models:/NAME@ALIAS (reloaded when the alias moves) or models:/NAME/VERSION.
    #[arg(long, value_parser = |s: &str| s.parse::<ModelRef>())]
    model: ModelRef,
    /// The tracker, e.g. http://tracker:5000. The token comes from MLFLOW_TRACKING_TOKEN (or
    /// MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD).
    #[arg(long, env = "MLFLOW_TRACKING_URI")]
    tracking_uri: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// The base model: `builtin` or a Hugging Face folder [default: the adapter's
    /// base_model_name_or_path].
    #[arg(long)]
    base: Option<String>,
    /// Where downloaded adapters are kept.
    #[arg(long, default_value = "worker-data/models")]
    cache_dir: PathBuf,
    /// Seconds between checks of the alias.
    #[arg(long, default_value_t = 10.0)]
    poll_interval_s: f64,
    /// Generations run at once; more requests wait their turn.
    #[arg(long, default_value_t = 1)]
    max_concurrent: usize,
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// The job: a TOML file (see worker/examples/lora.toml).
    #[arg(long)]
    config: PathBuf,
    /// Continue from this checkpoint folder (`<output>/checkpoints/step-N`).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Overrides the config's `output_dir`.
    #[arg(long)]
    output_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// `builtin` or a Hugging Face model folder.
    #[arg(long, default_value = "builtin")]
    base: String,
    /// A LoRA adapter folder in PEFT format.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// The user's message (wrapped in the chat template unless `--raw`).
    #[arg(long)]
    prompt: String,
    /// Continue the prompt as plain text instead of answering it as a chat message.
    #[arg(long)]
    raw: bool,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Sample instead of greedy decoding.
    #[arg(long)]
    do_sample: bool,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Sample from the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Seed of the sampling stream.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args, Debug)]
struct BaseArgs {
    /// Where to write the model folder.
    #[arg(long, default_value = "worker/models/ko-tiny")]
    out: PathBuf,
    /// Pretraining steps (the recipe's default otherwise).
    #[arg(long)]
    steps: Option<u64>,
    /// The shipped text to train the tokenizer and the model on: the corpus, the tax rulings and
    /// the hanja readings (as the committed base), or the corpus alone.
    #[arg(long, value_enum, default_value = "all-shipped")]
    text: worker::lm::base::PretrainingText,
}

#[derive(Args, Debug)]
struct AgentArgs {
    /// The tracker, e.g. http://tracker:5000 (required). The token comes from
    /// MLFLOW_TRACKING_TOKEN (or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD).
    // Checked in `run` rather than by clap: a required flag in the flattened top-level args would
    // also be demanded when the `run` subcommand carries it.
    #[arg(long, env = "MLFLOW_TRACKING_URI")]
    tracking_uri: Option<String>,
    /// Stable worker id [default: <hostname>-<slot>].
    #[arg(long)]
    worker_id: Option<String>,
    /// Index of this agent on its host (one per GPU, say); part of the default worker id.
    #[arg(long, default_value_t = 0)]
    slot: u32,
    /// Only lease trials of this study.
    #[arg(long)]
    study: Option<String>,
    /// Where trial folders go.
    #[arg(long, default_value = "worker-data")]
    work_dir: PathBuf,
    /// Exit (status 0) once the tracker says no more work will come.
    #[arg(long)]
    exit_when_done: bool,
    /// Seconds a stopped command may take to exit after SIGTERM before it gets SIGKILL.
    #[arg(long, default_value_t = 30.0)]
    stop_grace_s: f64,
    /// A label sent at registration, as key=value; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let args = match cli.command {
        Some(Command::Run(args)) => args,
        None => cli.agent,
        Some(Command::Train(args)) => return lora_cli::train(args.config, args.resume, args.output_dir),
        Some(Command::Generate(a)) => {
            let sampling = SamplingConfig { max_new_tokens: a.max_new_tokens, do_sample: a.do_sample, temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, seed: a.seed };
            return lora_cli::generate(&a.base, a.adapter.as_deref(), &a.prompt, a.raw, &sampling);
        }
        Some(Command::Base(args)) => return lora_cli::base(&args.out, args.steps, args.text),
        Some(Command::Serve(args)) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the tokio runtime")?;
            return runtime.block_on(serve(args));
        }
    };
    // Multi-threaded on purpose: the exec trainer relies on runtime worker threads living as long
    // as the runtime (PR_SET_PDEATHSIG is tied to the thread that spawned the command).
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let uri = args.tracking_uri.clone().context("--tracking-uri (or MLFLOW_TRACKING_URI) is required")?;
    let client = TrackerClient::from_vars(|name| if name == "MLFLOW_TRACKING_URI" { Some(uri.clone()) } else { env(name) })?;
    let worker_id = args.worker_id.clone().unwrap_or_else(|| format!("{}-{}", hostname(), args.slot));
    let stop_grace = Duration::try_from_secs_f64(args.stop_grace_s).map_err(|e| anyhow::anyhow!("`--stop-grace-s`: {e}"))?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let config = AgentConfig {
        worker_id,
        study: args.study,
        work_dir: args.work_dir,
        exit_when_done: args.exit_when_done,
        stop_grace,
        labels: args.labels.into_iter().collect::<BTreeMap<_, _>>(),
        resources: json!({ "slot": args.slot, "cpus": cpus }),
        tracking_uri: uri.clone(),
        tracking_token: env("MLFLOW_TRACKING_TOKEN"),
    };
    tracing::info!(worker_id = %config.worker_id, tracker = %client.base_url(), study = ?config.study, work_dir = %config.work_dir.display(), "worker starting");
    let agent = Agent::new(config, client)?.with_trainer(TRAINER_NAME, Arc::new(KoreanLoraTrainer));

    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: stopping the trial and releasing it (signal again to exit at once)");
        token.cancel();
        wait_for_signal().await;
        // The command dies with us (PR_SET_PDEATHSIG); its lease expires on the tracker.
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    agent.run(shutdown).await
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let uri = args.tracking_uri.clone();
    let client = TrackerClient::from_vars(|name| if name == "MLFLOW_TRACKING_URI" { Some(uri.clone()) } else { env(name) })?;
    let poll = Duration::try_from_secs_f64(args.poll_interval_s).ok().filter(|d| !d.is_zero()).context("`--poll-interval-s` must be a positive number of seconds")?;
    let config = ServeConfig { model: args.model, base: args.base, cache_dir: args.cache_dir, poll, max_concurrent: args.max_concurrent };
    let server = Server::start(client, config).await?;
    let addr = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, version = %server.version(), "listening: POST /generate, GET /health, GET /metrics");
    worker::serve::run(server, listener, wait_for_signal()).await
}

/// SIGTERM or SIGINT.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler should succeed");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler should succeed");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The host name, or `localhost` when it cannot be read.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer it is given.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 { String::from_utf8_lossy(&buf[..buf.iter().position(|&b| b == 0).unwrap_or(buf.len())]).into_owned() } else { String::new() };
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_work_with_and_without_the_run_subcommand() {
        let cli = Cli::try_parse_from(["worker", "--tracking-uri", "http://h:5000", "--label", "zone=a", "--label", "gpu=a100", "--exit-when-done"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.agent.tracking_uri.as_deref(), Some("http://h:5000"));
        assert_eq!(cli.agent.labels, vec![("zone".into(), "a".into()), ("gpu".into(), "a100".into())]);
        assert!(cli.agent.exit_when_done);
        assert_eq!(cli.agent.stop_grace_s, 30.0);
        assert_eq!(cli.agent.work_dir, PathBuf::from("worker-data"));

        let cli = Cli::try_parse_from(["worker", "run", "--tracking-uri", "http://h", "--slot", "3"]).unwrap();
        let Some(Command::Run(args)) = cli.command else { panic!("expected `run`") };
        assert_eq!((args.slot, args.tracking_uri.as_deref()), (3, Some("http://h")));
        assert!(Cli::try_parse_from(["worker", "--slot", "1", "run"]).is_err(), "top-level flags conflict with the subcommand");

        assert!(Cli::try_parse_from(["worker", "--tracking-uri", "http://h", "--label", "novalue"]).is_err());
    }
}
