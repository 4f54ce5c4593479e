//! Authentication and scopes.
//!
//! Off by default, which is safe only on loopback: `tracker serve` refuses any other address
//! unless `--auth` is given. With auth on, every request but `/health` and `/version` carries a
//! token, as the mlflow client sends one:
//!
//! * `Authorization: Bearer <token>` from `MLFLOW_TRACKING_TOKEN`, or
//! * `Authorization: Basic` from `MLFLOW_TRACKING_USERNAME` (the token's name) and
//!   `MLFLOW_TRACKING_PASSWORD` (the token).
//!
//! Tokens look like `trk_<id>_<secret>`; the store keeps the id and a SHA-256 of the secret.
//! Scopes form a ladder, each including the ones before it: `read` (gets and searches), `worker`
//! (also logging to runs, uploading artifacts and logged models: what a training job does),
//! `write` (everything in the MLflow API) and `admin` (also token management). A request without
//! credentials gets 401 `UNAUTHENTICATED`; one whose token lacks the scope gets 403
//! `PERMISSION_DENIED`. Both are answered before any handler runs, so they change nothing.

use std::fmt;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::store::Store;
use crate::AppState;

/// What a token may do. Ordered: each scope includes every scope before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Get and search anything.
    Read,
    /// Read, plus log to runs, upload artifacts and logged models.
    Worker,
    /// The whole MLflow API.
    Write,
    /// Also manage tokens.
    Admin,
}

impl Scope {
    /// Parses `read`, `worker`, `write` or `admin`.
    pub fn parse(s: &str) -> Result<Scope, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "read" => Ok(Scope::Read),
            "worker" => Ok(Scope::Worker),
            "write" => Ok(Scope::Write),
            "admin" => Ok(Scope::Admin),
            other => Err(format!("unknown scope '{other}': expected read, worker, write or admin")),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Read => "read",
            Scope::Worker => "worker",
            Scope::Write => "write",
            Scope::Admin => "admin",
        })
    }
}

/// Authentication settings.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// Whether requests must carry a token.
    pub enabled: bool,
}

impl Auth {
    /// Every request but `/health` and `/version` must carry a token.
    pub fn required() -> Self {
        Auth { enabled: true }
    }
}

/// Who made a request, known once the token is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name.
    pub name: String,
    /// The token's scope.
    pub scope: Scope,
}

/// A newly created token: the string shown once to the user, and what the store keeps.
#[derive(Debug)]
pub struct NewToken {
    /// `trk_<id>_<secret>`, to give to the client.
    pub token: String,
    /// The public id.
    pub token_id: String,
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
}

/// Makes a random token: a 64-bit id and a 256-bit secret from the OS-seeded CSPRNG.
pub fn generate_token() -> NewToken {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let (token_id, secret) = (hex::encode(id), hex::encode(secret));
    NewToken { token: format!("trk_{token_id}_{secret}"), secret_hash: hash_secret(&secret), token_id }
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares without an early exit, so the time taken does not reveal how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a token against the store: the principal, or `None` when it is unknown, revoked or wrong.
pub async fn verify_token(store: &Store, token: &str) -> Result<Option<Principal>, Error> {
    let Some((token_id, secret)) = token.trim().strip_prefix("trk_").and_then(|rest| rest.split_once('_')) else {
        return Ok(None);
    };
    let Some((name, scope, stored_hash)) = store.active_token(token_id).await? else {
        return Ok(None);
    };
    if !constant_time_eq(hash_secret(secret).as_bytes(), stored_hash.as_bytes()) {
        return Ok(None);
    }
    let scope = Scope::parse(&scope).map_err(|e| Error::Internal(anyhow::anyhow!("token {token_id} in the store: {e}")))?;
    Ok(Some(Principal { name, scope }))
}

/// The scope a route needs, or `None` for the public ones.
pub fn required_scope(method: &Method, path: &str) -> Option<Scope> {
    if matches!(path, "/health" | "/version") {
        return None;
    }
    let path = path.strip_prefix("/api").or_else(|| path.strip_prefix("/ajax-api")).unwrap_or(path);
    // Webhooks hold signing secrets and make the server send requests: admin only.
    if path.starts_with("/tracker/tokens") || path.starts_with("/tracker/webhooks") {
        return Some(Scope::Admin);
    }
    if method == Method::GET || method == Method::HEAD || path.ends_with("/search") || path.ends_with("/get-latest-versions") {
        return Some(Scope::Read);
    }
    if is_worker_protocol_call(path) {
        return Some(Scope::Worker);
    }
    const WORKER_RUN_CALLS: [&str; 9] =
        ["create", "update", "log-metric", "log-parameter", "log-batch", "set-tag", "delete-tag", "log-inputs", "outputs"];
    let worker_call = match path.strip_prefix("/2.0/mlflow/runs/") {
        Some(call) => WORKER_RUN_CALLS.contains(&call),
        None => {
            (method == Method::PUT && path.starts_with("/2.0/mlflow-artifacts/artifacts/"))
                || (method != Method::DELETE && path.starts_with("/2.0/mlflow/logged-models"))
        }
    };
    Some(if worker_call { Scope::Worker } else { Scope::Write })
}

/// The lease protocol of worker agents (`/tracker/workers/register|lease|heartbeat` and the
/// trial calls); resuming a paused worker is an operator's call, not a worker's.
fn is_worker_protocol_call(path: &str) -> bool {
    if let Some(call) = path.strip_prefix("/tracker/workers/") {
        return matches!(call, "register" | "lease" | "heartbeat");
    }
    let Some(rest) = path.strip_prefix("/tracker/studies/") else { return false };
    let parts: Vec<&str> = rest.split('/').collect();
    matches!(parts[..], [_, "trials", _, "report" | "complete" | "fail" | "release"])
}

/// Reads the credentials of a request: a bearer token, or basic auth whose password is a token.
/// `Err` for a malformed header; `Ok(None)` when there is none.
fn credentials(req: &Request) -> Result<Option<(Option<String>, String)>, Error> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else { return Ok(None) };
    let malformed = || Error::Unauthenticated("Malformed Authorization header: expected 'Bearer <token>' or 'Basic <base64>'".into());
    let value = value.to_str().map_err(|_| malformed())?;
    let (kind, rest) = value.split_once(' ').ok_or_else(malformed)?;
    if kind.eq_ignore_ascii_case("bearer") {
        return Ok(Some((None, rest.trim().to_owned())));
    }
    if kind.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).map_err(|_| malformed())?;
        let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
        let (user, password) = decoded.split_once(':').ok_or_else(malformed)?;
        return Ok(Some((Some(user.to_owned()), password.to_owned())));
    }
    Err(malformed())
}

/// Checks credentials and the scope a route needs before the handler runs.
pub async fn authorize(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    if !app.auth.enabled {
        return next.run(req).await;
    }
    let Some(needed) = required_scope(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    // Owned before any await: a borrowed request would make this future non-Send.
    let creds = credentials(&req);
    match authenticate(&app, creds).await {
        Ok(principal) if principal.scope >= needed => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Ok(principal) => Error::PermissionDenied(format!(
            "Permission denied: token '{}' has scope '{}', but {} {} needs '{needed}'",
            principal.name,
            principal.scope,
            req.method(),
            req.uri().path()
        ))
        .into_response(),
        Err(e) => {
            let mut response = e.into_response();
            if response.status() == axum::http::StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"tracker\""));
            }
            response
        }
    }
}

async fn authenticate(app: &AppState, creds: Result<Option<(Option<String>, String)>, Error>) -> Result<Principal, Error> {
    let Some((user, token)) = creds? else {
        return Err(Error::Unauthenticated(
            "Authentication required: set MLFLOW_TRACKING_TOKEN (or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD) to a token from `tracker token create`".into(),
        ));
    };
    let principal = verify_token(&app.store, &token).await?.ok_or_else(|| Error::Unauthenticated("Invalid or revoked token".into()))?;
    if let Some(user) = user.filter(|u| !u.is_empty() && *u != principal.name) {
        return Err(Error::Unauthenticated(format!("User '{user}' does not match the token's name")));
    }
    Ok(principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_form_a_ladder_and_parse() {
        assert!(Scope::Read < Scope::Worker && Scope::Worker < Scope::Write && Scope::Write < Scope::Admin);
        assert_eq!(Scope::parse(" Worker ").unwrap(), Scope::Worker);
        assert!(Scope::parse("root").unwrap_err().contains("expected read, worker, write or admin"));
    }

    #[test]
    fn routes_need_the_scope_of_what_they_do() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(required_scope(&get, "/health"), None);
        assert_eq!(required_scope(&get, "/version"), None);
        assert_eq!(required_scope(&get, "/metrics"), Some(Scope::Read));
        assert_eq!(required_scope(&get, "/api/2.0/mlflow/runs/get"), Some(Scope::Read));
        assert_eq!(required_scope(&post, "/api/2.0/mlflow/runs/search"), Some(Scope::Read));
        assert_eq!(required_scope(&post, "/ajax-api/2.0/mlflow/registered-models/get-latest-versions"), Some(Scope::Read));
        assert_eq!(required_scope(&post, "/api/2.0/mlflow/runs/log-batch"), Some(Scope::Worker));
        assert_eq!(required_scope(&Method::PUT, "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/a.txt"), Some(Scope::Worker));
        assert_eq!(required_scope(&Method::PATCH, "/api/2.0/mlflow/logged-models/m-1"), Some(Scope::Worker));
        assert_eq!(required_scope(&Method::DELETE, "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/a.txt"), Some(Scope::Write));
        assert_eq!(required_scope(&post, "/api/2.0/mlflow/runs/delete"), Some(Scope::Write));
        assert_eq!(required_scope(&post, "/api/2.0/mlflow/experiments/create"), Some(Scope::Write));
        assert_eq!(required_scope(&post, "/api/2.0/mlflow/registered-models/alias"), Some(Scope::Write));
        assert_eq!(required_scope(&get, "/api/tracker/tokens"), Some(Scope::Admin));
        assert_eq!(required_scope(&get, "/api/tracker/webhooks/list"), Some(Scope::Admin));
        assert_eq!(required_scope(&post, "/api/tracker/models/promote"), Some(Scope::Write));
        assert_eq!(required_scope(&get, "/api/tracker/models/audit"), Some(Scope::Read));
    }

    #[test]
    fn tokens_are_random_and_only_their_hash_matches() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a.token, b.token);
        let secret = a.token.rsplit('_').next().unwrap();
        assert_eq!(secret.len(), 64);
        assert!(constant_time_eq(hash_secret(secret).as_bytes(), a.secret_hash.as_bytes()));
        assert!(!constant_time_eq(hash_secret("guess").as_bytes(), a.secret_hash.as_bytes()));
        assert!(!a.secret_hash.contains(secret));
    }
}
