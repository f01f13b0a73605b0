//! Watching the workers: one that panics or meets a store error waiting cannot heal ends the
//! whole relay with an error (a non-zero exit), after the others drained their batches.
//!
//! A panic is a bug: the worker's state is unknown, and restarting it in place would hide the
//! bug behind a loop of restarts. Its batch's transaction rolls back (its rows go again, same
//! `event_id`), the other workers stop claiming and finish what they hold, and the process exits
//! 1, so the supervisor (systemd, Kubernetes) restarts it with fresh state and the crash shows.

use std::time::Duration;

use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::error;

use super::RelayError;
use crate::outbox::StoreError;

/// Waits for every worker. `stop` (cancelled by a signal, or here on a failure) makes the
/// others finish; they get `bound` after it to drain.
pub(super) async fn supervise(
    mut workers: JoinSet<Result<(), StoreError>>,
    stop: CancellationToken,
    bound: Duration,
) -> Result<(), RelayError> {
    let deadline = async {
        stop.cancelled().await;
        tokio::time::sleep(bound).await;
    };
    tokio::pin!(deadline);
    let mut failure: Option<RelayError> = None;
    loop {
        tokio::select! {
            joined = workers.join_next() => {
                let failed = match joined {
                    None => break,
                    Some(Ok(Ok(()))) => continue,
                    Some(Ok(Err(e))) => RelayError::Store(e),
                    Some(Err(e)) => RelayError::WorkerPanicked(panic_text(e)),
                };
                error!(error = %failed, "relay worker stopped; stopping the others");
                stop.cancel();
                failure.get_or_insert(failed);
            },
            () = &mut deadline => {
                let in_flight = workers.len();
                workers.abort_all();
                return Err(failure.unwrap_or(RelayError::ShutdownTimedOut(bound, in_flight)));
            }
        }
    }
    failure.map_or(Ok(()), Err)
}

fn panic_text(e: JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-text panic payload)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_worker_ends_the_relay_with_an_error_after_the_others_drain() {
        let stop = CancellationToken::new();
        let mut workers = JoinSet::new();
        workers.spawn(async { panic!("injected worker bug") });
        let drained = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let (stop, drained) = (stop.clone(), drained.clone());
            workers.spawn(async move {
                stop.cancelled().await;
                drained.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            });
        }
        let result = supervise(workers, stop.clone(), Duration::from_secs(5)).await;
        let Err(RelayError::WorkerPanicked(why)) = result else {
            panic!("expected WorkerPanicked, got {result:?}");
        };
        assert!(why.contains("injected worker bug"), "{why}");
        assert!(stop.is_cancelled(), "the other workers were told to stop");
        assert!(drained.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_worker_that_meets_a_missing_table_ends_the_relay_with_that_error() {
        let stop = CancellationToken::new();
        let mut workers = JoinSet::new();
        workers.spawn(async { Err(StoreError::NotMigrated("no table t".into())) });
        let result = supervise(workers, stop, Duration::from_secs(5)).await;
        assert!(
            matches!(&result, Err(RelayError::Store(StoreError::NotMigrated(m))) if m == "no table t"),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn workers_that_stop_on_shutdown_end_the_relay_ok() {
        let stop = CancellationToken::new();
        let mut workers = JoinSet::new();
        for _ in 0..3 {
            let stop = stop.clone();
            workers.spawn(async move {
                stop.cancelled().await;
                Ok(())
            });
        }
        stop.cancel();
        assert!(supervise(workers, stop, Duration::from_secs(5))
            .await
            .is_ok());
    }
}
