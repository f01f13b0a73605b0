//! `[http]` (health, readiness, metrics) and `[retention]` (deleting old delivered rows): what
//! a long-lived deployment needs around the relay.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[http]`: the operations endpoint (`/healthz`, `/readyz`, `/metrics`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct HttpConfig {
    /// `host:port` to listen on; empty turns the endpoint off. Port 0 takes a free port (the
    /// relay logs the one it got).
    pub listen: String,
    /// How often one relay (the holder of an advisory lock) refreshes the gauges read from the
    /// table (rows by status, lag, held keys), in milliseconds.
    pub table_stats_interval_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
            table_stats_interval_ms: 10_000,
        }
    }
}

impl HttpConfig {
    /// The address to listen on; None when the endpoint is off.
    pub fn address(&self) -> Option<SocketAddr> {
        let listen = self.listen.trim();
        (!listen.is_empty()).then(|| listen.parse().ok()).flatten()
    }

    pub fn table_stats_interval(&self) -> Duration {
        Duration::from_millis(self.table_stats_interval_ms)
    }

    pub(super) fn problems(&self, p: &mut Vec<String>) {
        let listen = self.listen.trim();
        if !listen.is_empty() && listen.parse::<SocketAddr>().is_err() {
            p.push(format!(
                "http.listen {listen:?} is not an address such as \"127.0.0.1:9464\" or \
                 \"0.0.0.0:9464\" (empty turns the endpoint off)"
            ));
        }
        if self.table_stats_interval_ms < 1_000 {
            p.push(format!(
                "http.table_stats_interval_ms must be at least 1000 (got {})",
                self.table_stats_interval_ms
            ));
        }
    }
}

/// `[retention]`: delivered rows older than `delivered_after` are deleted, in batches, by one
/// relay at a time. Pending and parked rows are never touched.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct RetentionConfig {
    /// How long a delivered row is kept after its delivery: a number and a unit, `s`, `m`,
    /// `h` or `d` (e.g. `"7d"`, `"36h"`). Empty or `"off"`: delivered rows are kept forever.
    pub delivered_after: String,
    /// Rows looked at (and at most deleted) per statement; each statement is its own short
    /// transaction.
    pub batch_size: u32,
    /// Pause between two passes over the table, once a pass found nothing more to delete, in
    /// milliseconds.
    pub interval_ms: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            delivered_after: "7d".into(),
            batch_size: 1_000,
            interval_ms: 60_000,
        }
    }
}

impl RetentionConfig {
    /// How long delivered rows are kept; None when retention is off.
    pub fn keep_for(&self) -> Option<Duration> {
        parse_duration(&self.delivered_after).ok().flatten()
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    pub(super) fn problems(&self, p: &mut Vec<String>) {
        if let Err(why) = parse_duration(&self.delivered_after) {
            p.push(format!("retention.delivered_after: {why}"));
        }
        if !(1..=100_000).contains(&self.batch_size) {
            p.push(format!(
                "retention.batch_size must be between 1 and 100000 (got {})",
                self.batch_size
            ));
        }
        if self.interval_ms == 0 {
            p.push("retention.interval_ms must be greater than 0".into());
        }
    }
}

/// `"7d"`, `"36h"`, `"90m"`, `"3600s"` → a duration; `""` or `"off"` → None.
pub fn parse_duration(text: &str) -> Result<Option<Duration>, String> {
    let t = text.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as \"7d\", \"36h\" or \"off\""))?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?} has no unit: write a number and one of s, m, h, d (e.g. \"7d\"), \
                 or \"off\""
            ))
        }
    };
    if n == 0 {
        return Err(format!(
            "{text:?} would delete rows as soon as they are delivered; write \"off\" to keep them"
        ));
    }
    Ok(Some(Duration::from_secs(n.saturating_mul(secs))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_number_and_a_unit_and_off_means_never() {
        assert_eq!(
            parse_duration("7d").unwrap(),
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(
            parse_duration("36h").unwrap(),
            Some(Duration::from_secs(36 * 3_600))
        );
        assert_eq!(
            parse_duration("90m").unwrap(),
            Some(Duration::from_secs(5_400))
        );
        assert_eq!(parse_duration("off").unwrap(), None);
        assert_eq!(parse_duration("").unwrap(), None);
        assert!(parse_duration("7").unwrap_err().contains("no unit"));
        assert!(parse_duration("7 weeks").is_err());
        assert!(parse_duration("0d").unwrap_err().contains("\"off\""));
    }

    #[test]
    fn an_empty_listen_address_turns_the_endpoint_off_and_a_bad_one_is_a_problem() {
        let mut http = HttpConfig::default();
        assert_eq!(http.address(), Some("127.0.0.1:9464".parse().unwrap()));
        http.listen = String::new();
        assert_eq!(http.address(), None);
        let mut p = Vec::new();
        http.problems(&mut p);
        assert!(p.is_empty(), "{p:?}");
        http.listen = "localhost".into();
        http.problems(&mut p);
        assert!(p[0].contains("http.listen \"localhost\""), "{p:?}");
    }
}
