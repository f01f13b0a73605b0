use std::process::ExitCode;

use clap::Parser;
use outbox_relay::cli::{self, Cli};
use outbox_relay::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.load_config() {
        Ok(config) => config,
        Err(e) => {
            eprint!("error: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log.format, &config.log.level);
    match cli::dispatch(&cli.command, config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<cli::UsageError>() {
            Some(usage) => {
                eprintln!("error: {usage}");
                ExitCode::from(2)
            }
            None => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
