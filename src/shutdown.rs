//! SIGTERM/SIGINT handling: the first signal asks the relay to drain and stop; a second one
//! exits at once.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Exit code used when a second signal cuts the drain short.
pub const EXIT_ON_SECOND_SIGNAL: i32 = 130;

/// Cancels `token` on the first SIGTERM or SIGINT; exits the process on the second.
pub fn on_signals(token: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        info!("shutdown requested: no new claims; finishing in-flight batches (signal again to exit now)");
        token.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        warn!("second signal: exiting without waiting; unmarked rows stay pending");
        std::process::exit(EXIT_ON_SECOND_SIGNAL);
    });
    Ok(())
}
