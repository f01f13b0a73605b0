//! LISTEN/NOTIFY wakeup: an idle relay arms the outbox's wakeup row (migration 0005) and waits
//! on its channel, so a new row is claimed at its transaction's commit, not at the next poll.
//! Notifications are hints: the relay polls behind them, and a listener that cannot connect
//! only costs latency.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::outbox::Outbox;

/// Listens on the outbox's channel and turns each notification into a permit on `notify`.
/// Runs until `shutdown`; reconnects with a pause after a failure.
pub(super) async fn listen(outbox: Outbox, notify: Arc<Notify>, shutdown: CancellationToken) {
    let mut pause = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let listened = async {
            let channel = outbox.wakeup_channel().await?;
            let mut listener = PgListener::connect_with(outbox.pool()).await?;
            listener.listen(&channel).await?;
            debug!(%channel, "listening for new outbox rows");
            // Whatever was inserted while we were not listening: look once.
            notify.notify_one();
            loop {
                listener.recv().await?;
                notify.notify_one();
            }
            #[allow(unreachable_code)]
            Ok::<(), anyhow::Error>(())
        };
        tokio::select! {
            result = listened => {
                if let Err(e) = result {
                    debug!(error = %e, retry_in = ?pause,
                        "no LISTEN connection for new outbox rows; polling meanwhile");
                }
            }
            () = shutdown.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => return,
        }
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}
