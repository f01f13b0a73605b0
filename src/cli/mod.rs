//! The `outbox-relay` command line: one file per subcommand.

mod config_check;
mod migrate;
mod run;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "outbox-relay",
    version,
    about = "Postgres outbox → Kafka relay (acks=all)"
)]
pub struct Cli {
    /// Config file (TOML). Default: config/relay.toml if it exists.
    #[arg(long, short, global = true, env = "OUTBOX_RELAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format; overrides `log.format`.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Relay pending rows to Kafka until SIGTERM/SIGINT.
    Run,
    /// Create the schema and outbox table, or bring them up to date.
    Migrate,
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print it, secrets redacted.
    Check,
}

impl Cli {
    /// Loads the configuration named by the flags.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        Ok(config)
    }
}

/// Runs the chosen subcommand.
pub async fn dispatch(command: &Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Run => run::run(config).await,
        Command::Migrate => migrate::migrate(&config).await,
        Command::Config(ConfigCommand::Check) => {
            config_check::check(&config);
            Ok(())
        }
    }
}
