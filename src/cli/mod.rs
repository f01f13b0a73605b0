//! The `outbox-relay` command line: one file per subcommand.

mod check_order;
mod config_check;
mod grants;
mod healthcheck;
mod migrate;
mod parked;
mod release_key;
mod replay;
mod run;
mod selector;
mod skip_key;
mod status;

pub use selector::UsageError;

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
    /// List parked rows, counts by reason, and the keys they hold back.
    Parked(parked::ParkedArgs),
    /// Put parked rows back to pending (same event_id, attempts reset).
    Replay(replay::ReplayArgs),
    /// Replay the parked rows holding a key; the rows waiting behind follow in order.
    ReleaseKey(selector::KeyArgs),
    /// Stop parked rows from holding a key (they stay parked); the waiting rows flow.
    SkipKey(selector::KeyArgs),
    /// Read a topic and check that every delivered row is there, in key order.
    CheckOrder(check_order::CheckOrderArgs),
    /// Counts by status, lag, held keys, per topic; exit 1 past the thresholds given.
    Status(status::StatusArgs),
    /// GET the local /healthz (or /readyz with --ready); exit 0 on 200, 1 otherwise.
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Print the SQL of least-privilege roles (owner, relay, application) for the table.
    Grants(grants::GrantsArgs),
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
        Command::Parked(args) => parked::parked(&config, args).await,
        Command::Replay(args) => replay::replay(&config, args).await,
        Command::ReleaseKey(args) => release_key::release_key(&config, args).await,
        Command::SkipKey(args) => skip_key::skip_key(&config, args).await,
        Command::CheckOrder(args) => check_order::check_order(&config, args).await,
        Command::Status(args) => status::status(&config, args).await,
        Command::Healthcheck(args) => healthcheck::healthcheck(&config, args).await,
        Command::Grants(args) => grants::grants(&config, args),
    }
}
