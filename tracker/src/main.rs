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
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to bind. Binding anything but loopback requires authentication to be configured.
    #[arg(long, default_value = "127.0.0.1", env = "TRACKER_HOST")]
    host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 5000, env = "TRACKER_PORT")]
    port: u16,
    /// Metadata store: sqlite:///abs/path.db, sqlite://rel/path.db or postgresql://user:pw@host/db.
    #[arg(long, default_value = "sqlite://tracker-data/tracker.db", env = "TRACKER_BACKEND_STORE_URI")]
    backend_store_uri: String,
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
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let backend = BackendUri::parse(&args.backend_store_uri).map_err(anyhow::Error::msg)?;
    let store = Store::open(&backend).await.with_context(|| format!("opening the backend store {}", args.backend_store_uri))?;
    let artifacts = Artifacts::open(&args.artifacts_destination)?;
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .or_else(|_| format!("[{}]:{}", args.host, args.port).parse())
        .with_context(|| format!("`--host`: '{}' is not an IP address", args.host))?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, artifacts = %artifacts.description, "tracker listening");
    let app = tracker::router(AppState::new(store, artifacts, tracker::auth::Auth::default()));
    tracker::serve(listener, app, shutdown_signal()).await?;
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
