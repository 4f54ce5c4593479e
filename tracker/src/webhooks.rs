//! Webhook delivery: a background task that POSTs the pending deliveries of the outbox
//! (`store::webhooks`), signed with HMAC-SHA256 of the body, and retries failures with
//! exponential backoff. It runs beside the request handlers and never holds a registry change up:
//! a change only inserts its deliveries and wakes the task.
//!
//! Each request carries `Content-Type: application/json`, `X-Tracker-Event: <action>`,
//! `X-Tracker-Delivery: <delivery id>` and `X-Tracker-Signature: sha256=<hex HMAC-SHA256 of the
//! body with the webhook's secret>`. A 2xx answer delivers; anything else (or no answer within
//! [`REQUEST_TIMEOUT`]) is retried after [`BACKOFF_BASE`] · 2^(attempt-1), capped at
//! [`BACKOFF_MAX`], for at most [`MAX_ATTEMPTS`] attempts. Every attempt is recorded.

use std::sync::{Arc, Weak};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;

use crate::app::App;
use crate::store::now_ms;
use crate::store::webhooks::{Attempt, DueDelivery};

/// Attempts per delivery before it is marked failed.
pub const MAX_ATTEMPTS: i64 = 8;
/// The wait after the first failed attempt; it doubles after each further one.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(600);
/// How long a receiver may take to answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the outbox is polled when nothing wakes the task (changes made by another replica
/// or by `tracker model promote` on the command line).
const POLL: Duration = Duration::from_secs(1);
/// How long a claimed delivery is reserved for its sender.
const CLAIM: Duration = Duration::from_secs(60);

/// `sha256=<hex>`: the signature header's value for `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether a webhook URL is acceptable: absolute http or https with a host.
pub fn validate_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| format!("Invalid webhook url '{url}': {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("Invalid webhook url '{url}': the scheme must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("Invalid webhook url '{url}': no host"));
    }
    Ok(())
}

/// The wait before attempt `attempts + 1`, after `attempts` failed ones.
pub fn backoff(attempts: i64) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX)
}

/// The handle of the delivery task kept in the application state.
#[derive(Debug, Default)]
pub struct Dispatcher {
    wake: Arc<Notify>,
}

impl Dispatcher {
    /// Tells the task that deliveries may be waiting.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Starts the delivery task for `app`; it ends when the application state is dropped. Does
    /// nothing outside a Tokio runtime.
    pub fn start(app: &Arc<App>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no Tokio runtime: webhook deliveries will not be sent by this process");
            return;
        };
        let wake = app.webhooks.wake.clone();
        runtime.spawn(run(Arc::downgrade(app), wake));
    }
}

async fn run(app: Weak<App>, wake: Arc<Notify>) {
    let client = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).redirect(reqwest::redirect::Policy::none()).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook client could not be built; no deliveries will be sent");
            return;
        }
    };
    loop {
        let wait = {
            let Some(app) = app.upgrade() else { return };
            match deliver_due(&app, &client).await {
                Ok(()) => match app.store.next_delivery_due().await {
                    Ok(Some(at)) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)).min(POLL),
                    Ok(None) => POLL,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the webhook outbox failed; will retry");
                        POLL
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "delivering webhooks failed; will retry");
                    POLL
                }
            }
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sends every delivery due now, a few at a time.
async fn deliver_due(app: &App, client: &reqwest::Client) -> crate::store::Result<()> {
    loop {
        let due = app.store.due_deliveries(now_ms(), 16).await?;
        if due.is_empty() {
            return Ok(());
        }
        let mut claimed = Vec::with_capacity(due.len());
        for d in due {
            if app.store.claim_delivery(&d, now_ms() + CLAIM.as_millis() as i64).await? {
                claimed.push(d);
            }
        }
        let sent = futures::future::join_all(claimed.iter().map(|d| send(client, d))).await;
        for (d, attempt) in claimed.iter().zip(sent) {
            let delivered = attempt.status_code.is_some_and(|s| (200..300).contains(&s));
            let retry_at = (!delivered && attempt.attempt < MAX_ATTEMPTS).then(|| now_ms() + backoff(attempt.attempt).as_millis() as i64);
            if !delivered {
                tracing::info!(delivery = d.id, attempt = attempt.attempt, status = ?attempt.status_code, error = ?attempt.error, "webhook delivery failed");
            }
            app.store.record_attempt(d.id, &attempt, delivered, retry_at).await?;
        }
    }
}

/// One attempt at a delivery.
async fn send(client: &reqwest::Client, d: &DueDelivery) -> Attempt {
    let started_at = now_ms();
    let clock = std::time::Instant::now();
    let result = client
        .post(&d.url)
        .header("content-type", "application/json")
        .header("x-tracker-event", &d.event)
        .header("x-tracker-delivery", d.id.to_string())
        .header("x-tracker-signature", signature(&d.secret, d.payload.as_bytes()))
        .body(d.payload.clone())
        .send()
        .await;
    let duration_ms = clock.elapsed().as_millis() as i64;
    let (status_code, error) = match result {
        Ok(resp) => (Some(i64::from(resp.status().as_u16())), None),
        Err(e) => (None, Some(error_chain(&e))),
    };
    Attempt { attempt: d.attempts + 1, started_at, duration_ms, status_code, error }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(signature("Jefe", b"what do ya want for nothing?"), "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn urls_must_be_http() {
        assert!(validate_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(validate_url("https://deploy.example.com/argo?x=1").is_ok());
        for bad in ["ftp://x/y", "file:///etc/passwd", "not a url", "", "http://", "javascript:alert(1)"] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(40), BACKOFF_MAX);
    }
}
