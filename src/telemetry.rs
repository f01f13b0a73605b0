//! Logging with `tracing` on stderr: human-readable by default (coloured only when stderr is a
//! terminal), one JSON object per line on request.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `level`.
pub fn init(format: LogFormat, level: &str) {
    // Postgres NOTICEs ("schema already exists, skipping") are noise at info.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::try_new(level)
            .unwrap_or_else(|_| EnvFilter::new("info"))
            .add_directive(
                "sqlx::postgres::notice=warn"
                    .parse()
                    .expect("static directive"),
            )
    });
    // Colour codes only for a person at a terminal: in a file or a pipe they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
