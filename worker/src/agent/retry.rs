//! Riding out a tracker that is down or restarting: transient failures (connection refused, 5xx,
//! 429) are retried with capped exponential backoff; everything else goes back to the caller.
//!
//! This sits above the client's own short [`crate::RetryPolicy`] (under two seconds), which covers
//! a blip; here the agent waits as long as it takes, because a worker should outlive a tracker
//! restart rather than crash.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ClientError;

/// First wait after a transient failure.
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Why [`retrying`] gave up.
#[derive(Debug)]
pub(crate) enum Retry {
    /// The token fired while waiting.
    Cancelled,
    /// A non-transient error, or the last transient one once `give_up_after` had passed.
    Failed(ClientError),
}

/// Capped exponential backoff: 0.5 s, 1 s, 2 s, ... up to 10 s.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff { next: INITIAL_BACKOFF }
    }

    /// The wait before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        d
    }

    pub(crate) fn reset(&mut self) {
        self.next = INITIAL_BACKOFF;
    }
}

/// Calls `call` until it succeeds, fails with a non-transient error, `cancel` fires, or (when
/// given) `give_up_after` has passed.
pub(crate) async fn retrying<T, Fut>(
    what: &str,
    cancel: &CancellationToken,
    give_up_after: Option<Duration>,
    mut call: impl FnMut() -> Fut,
) -> Result<T, Retry>
where
    Fut: Future<Output = Result<T, ClientError>>,
{
    let deadline = give_up_after.map(|d| Instant::now() + d);
    let mut backoff = Backoff::new();
    loop {
        let outcome = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(Retry::Cancelled),
            r = call() => r,
        };
        match outcome {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() => {
                let delay = backoff.next_delay();
                if deadline.is_some_and(|d| Instant::now() + delay > d) {
                    return Err(Retry::Failed(e));
                }
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "{what}: tracker unavailable; retrying");
                tokio::select! {
                    () = cancel.cancelled() => return Err(Retry::Cancelled),
                    () = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => return Err(Retry::Failed(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..7).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, vec![500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        b.reset();
        assert_eq!(b.next_delay(), INITIAL_BACKOFF);
    }
}
