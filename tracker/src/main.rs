//! `tracker`: the tracking server's command line.

mod demo;

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracker::artifacts::Artifacts;
use tracker::store::{BackendUri, Store};
use tracker::studies::{LeaseTiming, SpecFormat, Studies};
use tracker::AppState;

#[derive(Parser)]
#[command(name = "tracker", version, about = "MLflow-compatible tracking server, model registry and tuning service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the whole product on this machine: the tracker on SQLite, local workers, and a Korean
    /// LoRA study to its end, with the best adapter registered and promoted. Run it again to resume.
    Demo(demo::DemoArgs),
    /// Runs the server (the flags of `mlflow server`).
    Serve(ServeArgs),
    /// Creates, lists and revokes API tokens (works on the store directly; the server may run).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Creates and controls studies (works on the store directly; the server may run).
    #[command(subcommand)]
    Study(StudyCommand),
    /// Lists worker agents and resumes paused ones.
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Promotes registered model versions through their gate rules (works on the store directly).
    #[command(subcommand)]
    Model(ModelCommand),
    /// Writes the metadata (one consistent snapshot) and the artifact files into a new folder;
    /// the server may run.
    Backup {
        /// The folder to create (it must not exist or be empty).
        #[arg(long)]
        out: std::path::PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        artifacts: ArtifactArgs,
    },
    /// Restores a backup folder into an empty store and artifact root (SQLite and Postgres
    /// backups restore into either).
    Restore {
        /// The backup folder (made by `tracker backup`).
        #[arg(long)]
        from: std::path::PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        artifacts: ArtifactArgs,
    },
}

#[derive(clap::Args)]
struct ArtifactArgs {
    /// Artifact root: a folder, file:///abs/path or s3://bucket/prefix.
    #[arg(long, default_value = "tracker-data/artifacts", env = "TRACKER_ARTIFACTS_DESTINATION")]
    artifacts_destination: String,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Points an alias at a version if every promotion rule of the model passes; exits 1 naming
    /// the failed rule otherwise, changing nothing.
    Promote {
        /// Registered model name.
        name: String,
        /// The version to promote.
        #[arg(long)]
        version: String,
        /// The alias to point at it (for example `production`).
        #[arg(long)]
        alias: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum StudyCommand {
    /// Creates a study from a spec file (TOML, or JSON).
    Create {
        /// The spec file.
        spec: std::path::PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Lists studies with their trial counts.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Shows a study and its trials.
    Show {
        /// Study name.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Stops handing out new trials; running trials go on.
    Pause {
        /// Study name.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Hands out trials again.
    Resume {
        /// Study name.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Stops every unfinished trial; workers stop them at their next heartbeat.
    Stop {
        /// Study name.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum WorkerCommand {
    /// Lists registered workers.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Lets a worker that was paused for failing trials, or drained, lease again.
    Resume {
        /// Worker id.
        worker_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Takes a worker out of service: its running trials are preempted at its next heartbeat
    /// (stopped and released, to resume elsewhere from their last checkpoint), and it leases
    /// nothing until `tracker worker resume`.
    Drain {
        /// Worker id.
        worker_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Creates a token and prints it once; only its hash is stored.
    Create {
        /// A name for the token: the user or machine that holds it (the basic-auth username).
        #[arg(long)]
        name: String,
        /// read, worker, write or admin; each includes the ones before it.
        #[arg(long, value_parser = tracker::auth::Scope::parse)]
        scope: tracker::auth::Scope,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revokes every active token with this id or name.
    Revoke {
        /// Token id (the part after `trk_`) or name.
        id_or_name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Lists tokens (never their secrets).
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(clap::Args)]
struct StoreArgs {
    /// Metadata store: sqlite:///abs/path.db, sqlite://rel/path.db or postgresql://user:pw@host/db.
    #[arg(long, default_value = "sqlite://tracker-data/tracker.db", env = "TRACKER_BACKEND_STORE_URI")]
    backend_store_uri: String,
}

impl StoreArgs {
    async fn open(&self) -> anyhow::Result<Store> {
        let backend = BackendUri::parse(&self.backend_store_uri).map_err(anyhow::Error::msg)?;
        Store::open(&backend).await.with_context(|| format!("opening the backend store {}", self.backend_store_uri))
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to bind. Binding anything but loopback requires authentication to be configured.
    #[arg(long, default_value = "127.0.0.1", env = "TRACKER_HOST")]
    host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 5000, env = "TRACKER_PORT")]
    port: u16,
    #[command(flatten)]
    store: StoreArgs,
    /// Require a token on every request (see `tracker token create`). Needed to bind anything
    /// but loopback.
    #[arg(long, env = "TRACKER_AUTH")]
    auth: bool,
    /// Artifact root: a folder, file:///abs/path or s3://bucket/prefix.
    #[arg(long, default_value = "tracker-data/artifacts", env = "TRACKER_ARTIFACTS_DESTINATION")]
    artifacts_destination: String,
    /// Seconds a worker's trial lease lives without a report or heartbeat; workers beat every
    /// third of it. A worker silent for longer loses its trial, which resumes elsewhere.
    #[arg(long, default_value_t = 60.0, env = "TRACKER_LEASE_TTL_S")]
    lease_ttl_s: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The demo prints its own progress; the server's request log would drown it.
    let default_filter = if matches!(cli.command, Command::Demo(_)) { "warn" } else { "info,sqlx=warn" };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into()))
        .init();
    match cli.command {
        Command::Demo(args) => demo::demo(args).await,
        Command::Serve(args) => serve(args).await,
        Command::Token(cmd) => token(cmd).await,
        Command::Study(cmd) => study(cmd).await,
        Command::Worker(cmd) => worker(cmd).await,
        Command::Model(cmd) => model(cmd).await,
        Command::Backup { out, store, artifacts } => {
            let (store, artifacts) = (store.open().await?, Artifacts::open(&artifacts.artifacts_destination)?);
            let m = tracker::backup::backup(&store, &artifacts, &out).await?;
            println!("Backed up {} rows and {} artifact files ({} bytes) into {}", m.tables.values().sum::<u64>(), m.artifact_files, m.artifact_bytes, out.display());
            Ok(())
        }
        Command::Restore { from, store, artifacts } => {
            let (store, artifacts) = (store.open().await?, Artifacts::open(&artifacts.artifacts_destination)?);
            let m = tracker::backup::restore(&from, &store, &artifacts).await?;
            println!("Restored {} rows and {} artifact files ({} bytes) from {}", m.tables.values().sum::<u64>(), m.artifact_files, m.artifact_bytes, from.display());
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .or_else(|_| format!("[{}]:{}", args.host, args.port).parse())
        .with_context(|| format!("`--host`: '{}' is not an IP address", args.host))?;
    if !addr.ip().is_loopback() && !args.auth {
        anyhow::bail!(
            "refusing to listen on {addr} without authentication: anyone who can reach it could read and change everything. \
             Pass --auth and give clients a token from `tracker token create`, or bind 127.0.0.1"
        );
    }
    let store = args.store.open().await?;
    if args.auth && store.count_active_tokens().await? == 0 {
        anyhow::bail!("--auth is on but the store has no active token: create one with `tracker token create --name NAME --scope admin`");
    }
    let artifacts = Artifacts::open(&args.artifacts_destination)?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, artifacts = %artifacts.description, "tracker listening");
    let auth = if args.auth { tracker::auth::Auth::required() } else { tracker::auth::Auth::default() };
    if !(args.lease_ttl_s.is_finite() && args.lease_ttl_s >= 1.0) {
        anyhow::bail!("`--lease-ttl-s` must be at least 1 second, got {}", args.lease_ttl_s);
    }
    let timing = LeaseTiming { lease_ttl: std::time::Duration::from_secs_f64(args.lease_ttl_s) };
    // A study that finished just before a crash may not have registered its best trial yet.
    Studies::new(&store, timing).register_finished().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let app = tracker::router(AppState::with_lease_timing(store, artifacts, auth, timing));
    tracker::serve(listener, app, shutdown_signal()).await?;
    Ok(())
}

async fn model(cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Promote { name, version, alias, reason, store } => {
            tracker::http::registry::alias_name(&Some(alias.clone())).map_err(|e| anyhow::anyhow!("{e}"))?;
            let store = store.open().await?;
            let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
            let by = tracker::store::audit::ChangeBy::new(format!("cli:{user}"), reason.as_deref());
            match store.promote(&name, &version, &alias, &by).await.map_err(|e| anyhow::anyhow!("{e}"))? {
                tracker::store::promotion::Promotion::Promoted { previous_version, checks, .. } => {
                    for c in &checks {
                        println!("  pass  {}  ({})", c.rule, c.detail);
                    }
                    let from = previous_version.map_or_else(|| "no version".to_owned(), |v| format!("version {v}"));
                    println!("Promoted '{name}' version {version} to alias '{alias}' (was {from})");
                }
                tracker::store::promotion::Promotion::Refused { failed, .. } => {
                    anyhow::bail!("{}", tracker::http::promotion::refusal_message(&name, &version, &alias, &failed.rule, &failed.detail));
                }
            }
        }
    }
    Ok(())
}

async fn token(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create { name, scope, store } => {
            let store = store.open().await?;
            let new = tracker::auth::generate_token();
            store.insert_token(&new.token_id, &name, &scope.to_string(), &new.secret_hash).await?;
            eprintln!("Created token {} ('{name}', scope {scope}). It is shown only now; store it safely:", new.token_id);
            println!("{}", new.token);
        }
        TokenCommand::Revoke { id_or_name, store } => {
            let revoked = store.open().await?.revoke_tokens(&id_or_name).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("Revoked {revoked} token(s)");
        }
        TokenCommand::List { store } => {
            println!("{:<18} {:<24} {:<8} {:<8}", "ID", "NAME", "SCOPE", "STATE");
            for t in store.open().await?.list_tokens().await? {
                let state = if t.revoked_at.is_some() { "revoked" } else { "active" };
                println!("{:<18} {:<24} {:<8} {:<8}", t.token_id, t.name, t.scope, state);
            }
        }
    }
    Ok(())
}

async fn study(cmd: StudyCommand) -> anyhow::Result<()> {
    let (name, store, action) = match cmd {
        StudyCommand::Create { spec, store } => {
            let text = std::fs::read_to_string(&spec).with_context(|| format!("reading {}", spec.display()))?;
            let spec = tracker::studies::parse_spec(&text, SpecFormat::of(&spec, &text)).map_err(|e| anyhow::anyhow!("{}: {e}", spec.display()))?;
            let store = store.open().await?;
            let info = Studies::new(&store, LeaseTiming::default()).create(spec).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("Created study '{}' in experiment {}. Start workers with `worker --tracking-uri URL --study {}`.", info.name, info.experiment_id, info.name);
            return Ok(());
        }
        StudyCommand::List { store } => {
            let store = store.open().await?;
            let list = Studies::new(&store, LeaseTiming::default()).list().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{:<28} {:<9} {:>7} {:>8} {:>8} {:>7}  {}", "NAME", "STATUS", "TRIALS", "RUNNING", "COMPLETE", "PRUNED", "BEST");
            for s in list {
                let count = |k: &str| s.trial_counts.get(k).copied().unwrap_or(0);
                let total: u64 = s.trial_counts.values().sum();
                let best = s.best.as_ref().and_then(|b| b.value).map_or("-".to_owned(), |v| format!("{v:.6}"));
                println!("{:<28} {:<9} {:>7} {:>8} {:>8} {:>7}  {best}", s.name, s.status, total, count("running"), count("complete"), count("pruned"));
            }
            return Ok(());
        }
        StudyCommand::Show { name, store } => {
            let store = store.open().await?;
            let (s, trials) = Studies::new(&store, LeaseTiming::default()).get(&name).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("study {} ({}), experiment {}, objective {} ({})", s.name, s.status, s.experiment_id, s.spec.objective.metric, s.spec.objective.direction);
            if let Some(r) = &s.registered {
                let promotion = if r.promotion.is_empty() { String::new() } else { format!(": {}", r.promotion) };
                println!("registered trial {} as model '{}' version {}{promotion}", r.trial, r.model, r.version);
            }
            println!("{:>5} {:<9} {:>12} {:>6} {:>7}  {}", "TRIAL", "STATE", "VALUE", "STEP", "ATTEMPT", "PARAMS");
            for t in trials {
                let value = t.value.map_or("-".to_owned(), |v| format!("{v:.6}"));
                let step = t.last_step.map_or("-".to_owned(), |v| v.to_string());
                println!("{:>5} {:<9} {:>12} {:>6} {:>7}  {}", t.number, t.state, value, step, t.attempt, serde_json::to_string(&t.params)?);
            }
            return Ok(());
        }
        StudyCommand::Pause { name, store } => (name, store, "pause"),
        StudyCommand::Resume { name, store } => (name, store, "resume"),
        StudyCommand::Stop { name, store } => (name, store, "stop"),
    };
    let store = store.open().await?;
    let info = Studies::new(&store, LeaseTiming::default()).control(&name, action).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("Study '{}' is {}", info.name, info.status);
    Ok(())
}

async fn worker(cmd: WorkerCommand) -> anyhow::Result<()> {
    match cmd {
        WorkerCommand::List { store } => {
            let store = store.open().await?;
            println!("{:<32} {:<8} {:>14}  {}", "WORKER", "STATUS", "QUICK FAILURES", "LAST SEEN (ms)");
            for w in Studies::new(&store, LeaseTiming::default()).workers().await.map_err(|e| anyhow::anyhow!("{e}"))? {
                println!("{:<32} {:<8} {:>14}  {}", w.worker_id, w.status, w.quick_failures, w.last_seen);
            }
        }
        WorkerCommand::Resume { worker_id, store } => {
            let store = store.open().await?;
            let w = Studies::new(&store, LeaseTiming::default()).resume_worker(&worker_id).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("Worker '{}' is {}", w.worker_id, w.status);
        }
        WorkerCommand::Drain { worker_id, store } => {
            let store = store.open().await?;
            let w = Studies::new(&store, LeaseTiming::default()).drain_worker(&worker_id).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("Worker '{}' is {}: its trials are preempted at its next heartbeat.", w.worker_id, w.status);
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
