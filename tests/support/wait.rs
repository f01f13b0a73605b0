//! The one polling primitive. Waits are safety nets, not timed assertions: a timeout says what
//! was awaited (and, through [`crate::harness::TestOutbox::wait_until`], the rows' state).

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a wait looks again.
const EVERY: Duration = Duration::from_millis(50);

/// Polls `check` every 50 ms until it returns true: `Ok`, or `Err(elapsed)` after `timeout`.
pub async fn poll_until<F, Fut>(timeout: Duration, mut check: F) -> Result<(), Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        if start.elapsed() >= timeout {
            return Err(start.elapsed());
        }
        tokio::time::sleep(EVERY).await;
    }
    Ok(())
}

/// Polls `check` until it returns true; panics with `what` after `timeout`. For waits on
/// something other than an outbox's rows (a log line, a process).
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    if let Err(waited) = poll_until(timeout, check).await {
        panic!("timed out after {waited:?} waiting for {what}");
    }
}
