//! The producer's librdkafka context: librdkafka's own log lines and global errors, rate
//! limited, and the relay's own word when every broker is down.
//!
//! librdkafka reports `AllBrokersDown` (and each broker's transport failure) at ERROR level,
//! twice per event, every few tens of milliseconds while a broker is away: thousands of lines in
//! one outage. Here each kind of line (a log facility, or an error code) is written at most once
//! per [`WINDOW`]; the next one written says how many were suppressed meanwhile.
//!
//! A broker that refuses the connection (SASL authentication failed, TLS handshake failed) is
//! not an outage that heals by itself: the relay says so once, at ERROR, naming the broker and
//! how it connects (protocol, SASL mechanism and user, CA file; never a secret), and the probes
//! report that reason until Kafka answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::{debug, error, info, warn};

/// At most one line per kind per window.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// Counts lines per kind and says which to write.
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    kinds: Mutex<HashMap<String, (Instant, u64)>>,
    written: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimiter {
    /// `Some(suppressed since the last written line)` if this line is to be written now.
    pub(crate) fn admit(&self, kind: &str, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        match kinds.get_mut(kind) {
            Some((last, suppressed)) if now.duration_since(*last) < WINDOW => {
                *suppressed += 1;
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            Some((last, suppressed)) => {
                self.written.fetch_add(1, Ordering::Relaxed);
                *last = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                self.written.fetch_add(1, Ordering::Relaxed);
                kinds.insert(kind.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

/// The relay producer's context; a replacement producer shares the same [`KafkaHealth`].
#[derive(Debug, Default, Clone)]
pub struct RelayContext(pub(crate) Arc<KafkaHealth>);

/// What librdkafka told us about the cluster, and the rate limiter of its lines.
#[derive(Debug, Default)]
pub struct KafkaHealth {
    limiter: RateLimiter,
    /// Since when no broker answers, as librdkafka told us.
    down_since: Mutex<Option<DateTime<Utc>>>,
    /// How the relay connects, in words (see [`describe_connection`]).
    connection: String,
    /// Why a broker refused the connection, since Kafka last answered.
    refused: Mutex<Option<String>>,
}

/// How a client connects, in words, without any secret: `SASL_SSL, SASL mechanism
/// SCRAM-SHA-256, user "relay", CA file /etc/kafka/ca.pem`.
pub(crate) fn describe_connection(c: &rdkafka::config::ClientConfig) -> String {
    let protocol = c
        .get("security.protocol")
        .unwrap_or("PLAINTEXT")
        .to_ascii_uppercase();
    let mut out = protocol.clone();
    if protocol.starts_with("SASL_") {
        let mechanism = c
            .get("sasl.mechanism")
            .or_else(|| c.get("sasl.mechanisms"))
            .unwrap_or("GSSAPI");
        out.push_str(&format!(", SASL mechanism {mechanism}"));
        if let Some(user) = c.get("sasl.username") {
            out.push_str(&format!(", user {user:?}"));
        }
    }
    if protocol.ends_with("SSL") {
        match c.get("ssl.ca.location") {
            Some(ca) => out.push_str(&format!(", CA file {ca}")),
            None => out.push_str(", CA: the system's roots"),
        }
    }
    out
}

/// The broker a librdkafka error line is about (`sasl_ssl://127.0.0.1:9094/bootstrap: …` →
/// `127.0.0.1:9094`).
fn broker_of(reason: &str) -> Option<&str> {
    let (_, rest) = reason.split_once("://")?;
    let end = rest.find(['/', ' ']).unwrap_or(rest.len());
    Some(&rest[..end])
}

impl KafkaHealth {
    /// The health of a client that connects as `connection` says ([`describe_connection`]).
    pub(crate) fn new(connection: String) -> Self {
        Self {
            connection,
            ..Self::default()
        }
    }

    /// A broker refused the connection (`what`: "SASL authentication failed", "the TLS
    /// handshake failed"): said once, at ERROR, until Kafka answers again.
    pub(crate) fn refused(&self, what: &str, reason: &str) {
        let broker = broker_of(reason).unwrap_or("unknown");
        let line = format!(
            "Kafka refused the connection: {what} at broker {broker} ({}): {reason}",
            self.connection
        );
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if refused.is_none() {
            error!(%broker, connection = %self.connection,
                "{line}; nothing is claimed and no row is touched until Kafka accepts the \
                 connection (check kafka.security and the CA, then restart the relay)");
        }
        *refused = Some(line);
    }

    /// Why a broker refused the connection, if one did since Kafka last answered.
    pub fn refusal(&self) -> Option<String> {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Kafka answered (a probe, a delivery): say so once if it had been unreachable.
    pub(crate) fn kafka_answers(&self) {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let since = self
            .down_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(since) = since {
            let down_for = (Utc::now() - since).to_std().unwrap_or_default();
            info!(since = %since.to_rfc3339(), down_for = ?down_for,
                "Kafka answers again");
        }
    }

    /// librdkafka lines written and suppressed since start, and how many kinds were seen.
    pub fn lines(&self) -> (u64, u64, usize) {
        let l = &self.limiter;
        let kinds = l.kinds.lock().unwrap_or_else(|e| e.into_inner()).len();
        (
            l.written.load(Ordering::Relaxed),
            l.suppressed.load(Ordering::Relaxed),
            kinds,
        )
    }

    /// Since when Kafka has been unreachable, if it is.
    pub fn unreachable_since(&self) -> Option<DateTime<Utc>> {
        *self.down_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// No broker answers: say so once, with since when.
    pub fn all_brokers_down(&self) {
        let mut since = self.down_since.lock().unwrap_or_else(|e| e.into_inner());
        if since.is_none() {
            let now = Utc::now();
            *since = Some(now);
            warn!(since = %now.to_rfc3339(),
                "Kafka unreachable since {}: no broker answers; batches in flight wait for it \
                 (up to message.timeout.ms) and their rows stay pending",
                now.to_rfc3339());
        }
    }
}

impl ClientContext for RelayContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let Some(suppressed) = self.0.limiter.admit(&format!("log:{fac}"), Instant::now()) else {
            return;
        };
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                error!(target: "librdkafka", facility = fac, suppressed, "{log_message}")
            }
            RDKafkaLogLevel::Warning => {
                warn!(target: "librdkafka", facility = fac, suppressed, "{log_message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(target: "librdkafka", facility = fac, suppressed, "{log_message}")
            }
            RDKafkaLogLevel::Debug => {
                debug!(target: "librdkafka", facility = fac, suppressed, "{log_message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        match code {
            Some(RDKafkaErrorCode::AllBrokersDown) => self.0.all_brokers_down(),
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
                self.0.refused("SASL authentication failed", reason)
            }
            Some(RDKafkaErrorCode::SSL) => self.0.refused("the TLS handshake failed", reason),
            _ => {}
        }
        let kind = format!("error:{code:?}");
        if let Some(suppressed) = self.0.limiter.admit(&kind, Instant::now()) {
            // The relay says what it means for the rows (above); librdkafka's own words are
            // kept, at WARN: a global error is not yet a row's failure.
            warn!(target: "librdkafka", error = %error, suppressed,
                "librdkafka: {reason}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_window_then_the_count_of_suppressed_lines() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        assert_eq!(limiter.admit("a", t0), Some(0));
        for i in 1..=50 {
            assert_eq!(limiter.admit("a", t0 + Duration::from_millis(i * 50)), None);
        }
        assert_eq!(limiter.admit("b", t0), Some(0), "kinds are counted apart");
        assert_eq!(limiter.admit("a", t0 + WINDOW), Some(50));
        assert_eq!(limiter.admit("a", t0 + WINDOW), None);
    }

    #[test]
    fn a_refusal_names_the_broker_and_how_the_relay_connects_and_no_secret() {
        let mut c = rdkafka::config::ClientConfig::new();
        c.set("security.protocol", "sasl_ssl")
            .set("sasl.mechanism", "SCRAM-SHA-512")
            .set("sasl.username", "relay")
            .set("sasl.password", "hunter2")
            .set("ssl.ca.location", "/etc/kafka/ca.pem");
        let health = KafkaHealth::new(describe_connection(&c));
        assert_eq!(health.refusal(), None);
        health.refused(
            "SASL authentication failed",
            "sasl_ssl://127.0.0.1:9094/bootstrap: SASL authentication error: Authentication \
             failed during authentication due to invalid credentials with SASL mechanism \
             SCRAM-SHA-512",
        );
        let said = health.refusal().unwrap();
        for part in [
            "SASL authentication failed at broker 127.0.0.1:9094",
            "SASL_SSL, SASL mechanism SCRAM-SHA-512, user \"relay\", CA file /etc/kafka/ca.pem",
        ] {
            assert!(said.contains(part), "{part:?} in {said}");
        }
        assert!(!said.contains("hunter2"), "{said}");
        health.kafka_answers();
        assert_eq!(
            health.refusal(),
            None,
            "Kafka answered: the refusal is over"
        );
        assert_eq!(
            describe_connection(&rdkafka::config::ClientConfig::new()),
            "PLAINTEXT"
        );
    }

    #[tokio::test]
    async fn a_producer_facing_a_closed_port_says_once_that_kafka_is_unreachable_and_rate_limits_librdkafka(
    ) {
        let health = Arc::new(KafkaHealth::default());
        let producer: rdkafka::producer::FutureProducer<RelayContext> =
            rdkafka::config::ClientConfig::new()
                .set("bootstrap.servers", "127.0.0.1:1")
                .set("reconnect.backoff.ms", "10")
                .set("reconnect.backoff.max.ms", "10")
                .create_with_context(RelayContext(Arc::clone(&health)))
                .unwrap();
        let delivery = producer
            .send_result(rdkafka::producer::FutureRecord::<(), _>::to("t").payload("x"))
            .map_err(|(e, _)| e)
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (written, suppressed, kinds) = health.lines();
        println!(
            "librdkafka lines in 3 s: {written} written, {suppressed} suppressed, {kinds} kinds"
        );
        assert!(
            health.unreachable_since().is_some(),
            "the relay said Kafka is unreachable"
        );
        assert_eq!(
            written as usize, kinds,
            "one line per kind within the window"
        );
        assert!(
            suppressed > 0,
            "librdkafka repeated itself and was held back"
        );
        drop(delivery);
    }
}
