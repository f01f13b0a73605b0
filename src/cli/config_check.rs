//! `outbox-relay config check`: the effective configuration, secrets redacted.

use crate::config::Config;

pub(super) fn check(config: &Config) {
    println!("# configuration is valid; effective values (secrets redacted):");
    print!("{}", config.to_redacted_toml());
}
