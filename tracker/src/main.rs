//! `tracker`: the tracking server's command line.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracker::artifacts::Artifacts;
use tracker::store::{BackendUri, Store};
use tracker::AppState;

#[derive(Parser)]
#[command(name = "tracker", version, about = "MLflow-compatible tracking server, model registry and tuning service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the server (the flags of `mlflow server`).
    Serve(ServeArgs),
    /// Creates, lists and revokes API tokens (works on the store directly; the server may run).
    #[command(subcommand)]
    Token(TokenCommand),
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Token(cmd) => token(cmd).await,
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
    let app = tracker::router(AppState::new(store, artifacts, auth));
    tracker::serve(listener, app, shutdown_signal()).await?;
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
