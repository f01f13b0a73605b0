//! The Kafka producer: built with `acks=all` and idempotence, fed claimed rows, and the single
//! place where Kafka errors are classified into what the relay must do.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;

use crate::config::{HeadersConfig, KafkaConfig};
use crate::outbox::ClaimedRow;
use crate::serialize::Encoded;

mod context;
mod topic_limits;
pub use context::{KafkaHealth, RelayContext};
pub use topic_limits::TopicLimits;

/// What the relay does about a failed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Try this row again later; it costs an attempt.
    Retry,
    /// It can never succeed: park it now with the reason.
    Park,
    /// Not the row's fault (Kafka unreachable, authentication): pause, cost nothing.
    Outage,
    /// Not the row's fault, and about its topic only (the topic's authorization): back off that
    /// topic's rows, cost nothing, let every other topic flow.
    Defer,
}

/// Classifies a Kafka error once, at this boundary.
///
/// | error | disposition |
/// |---|---|
/// | message too large, invalid record/message/timestamp, invalid topic, record list too large | Park |
/// | topic authorization failed | Defer |
/// | all brokers down, authentication, cluster authorization, SSL, fatal | Outage |
/// | anything else (timeouts, not enough replicas, leader changes, unknown topic) | Retry |
///
/// A `Retry` while Kafka does not answer a metadata request is turned into `Outage` by the
/// relay, so a broker outage that surfaces as message timeouts burns no attempts.
pub fn classify(err: &KafkaError) -> Disposition {
    use RDKafkaErrorCode as C;
    let Some(code) = err.rdkafka_error_code() else {
        return match err {
            KafkaError::ClientCreation(_) | KafkaError::ClientConfig(..) => Disposition::Outage,
            _ => Disposition::Retry,
        };
    };
    match code {
        C::MessageSizeTooLarge
        | C::InvalidMessageSize
        | C::InvalidMessage
        | C::InvalidRecord
        | C::InvalidTimestamp
        | C::InvalidTopic
        | C::InvalidArgument
        | C::MessageBatchTooLarge
        | C::UnsupportedForMessageFormat => Disposition::Park,
        C::AllBrokersDown
        | C::Authentication
        | C::SaslAuthenticationFailed
        | C::ClusterAuthorizationFailed
        | C::SSL
        | C::Fatal => Disposition::Outage,
        C::TopicAuthorizationFailed => Disposition::Defer,
        _ => Disposition::Retry,
    }
}

/// librdkafka settings for the relay's producer: our defaults, then `kafka.security`, then the
/// pass-through properties (config validation refused those that `kafka.security` sets too),
/// then the guarded invariants (which config validation already checked).
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("client.id", &kafka.client_id)
        .set("linger.ms", "1")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", kafka.delivery_timeout_ms.to_string());
    for (k, v) in kafka.security.librdkafka_properties() {
        c.set(k, v);
    }
    for (k, v) in &kafka.properties {
        c.set(k, v.as_config_string());
    }
    c.set("acks", "all").set("enable.idempotence", "true");
    c
}

/// librdkafka settings for the relay's other Kafka clients (the consumer of `check-order`):
/// how to reach and authenticate to the brokers, and nothing of the producer's. That is
/// `bootstrap.servers`, `kafka.security`, and the pass-through properties for which
/// [`is_connection_property`] holds.
pub fn connection_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.bootstrap_servers);
    for (k, v) in kafka.security.librdkafka_properties() {
        c.set(k, v);
    }
    for (k, v) in kafka
        .properties
        .iter()
        .filter(|(k, _)| is_connection_property(k))
    {
        c.set(k, v.as_config_string());
    }
    c
}

/// A librdkafka property about the connection to the brokers (TLS, SASL, sockets, addresses,
/// reconnects), which every client of the relay needs, not only the producer.
pub fn is_connection_property(key: &str) -> bool {
    const PREFIXES: [&str; 10] = [
        "security.",
        "sasl.",
        "ssl.",
        "ssl_",
        "enable.ssl.",
        "enable.sasl.",
        "socket.",
        "broker.",
        "client.dns.",
        "reconnect.",
    ];
    PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Why a row was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// Kafka (or librdkafka) refused or lost the record.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The row itself cannot make a record.
    #[error("{0}")]
    BadRow(String),
}

impl ProduceError {
    /// The Kafka error code, when Kafka (the broker or librdkafka) refused the record.
    pub fn kafka_code(&self) -> Option<RDKafkaErrorCode> {
        match self {
            Self::Kafka(e) => e.rdkafka_error_code(),
            Self::BadRow(_) => None,
        }
    }

    pub fn disposition(&self) -> Disposition {
        match self {
            Self::Kafka(e) => classify(e),
            Self::BadRow(_) => Disposition::Park,
        }
    }
}

/// Why Kafka did not answer a metadata request.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No answer, or an error answer.
    #[error("{0}")]
    Kafka(#[from] KafkaError),
    /// No answer, and a broker refused the connection meanwhile (authentication, TLS): the
    /// refusal, which says more than the request's timeout.
    #[error("{refusal} (metadata request: {kafka})")]
    Refused { refusal: String, kafka: KafkaError },
}

/// Waits for a record's delivery report: where Kafka put it (partition, offset), or why not.
pub async fn delivery_report(delivery: DeliveryFuture) -> Result<(i32, i64), ProduceError> {
    match delivery.await {
        Ok(Ok(d)) => Ok((d.partition, d.offset)),
        Ok(Err((e, _))) => Err(e.into()),
        Err(_canceled) => Err(KafkaError::Canceled.into()),
    }
}

/// The relay's producer.
#[derive(Clone)]
pub struct Producer {
    /// Replaced by a new producer after a fatal error (see [`Producer::probe`]).
    inner: Arc<RwLock<FutureProducer<RelayContext>>>,
    health: Arc<KafkaHealth>,
    client_config: ClientConfig,
    headers: HeadersConfig,
    metadata_timeout: Duration,
}

impl Producer {
    pub fn new(kafka: &KafkaConfig, headers: &HeadersConfig) -> Result<Self, KafkaError> {
        let client_config = client_config(kafka);
        let health = Arc::new(KafkaHealth::new(context::describe_connection(
            &client_config,
        )));
        Ok(Self {
            inner: Arc::new(RwLock::new(Self::create(&client_config, &health)?)),
            health,
            client_config,
            headers: headers.clone(),
            metadata_timeout: Duration::from_millis(kafka.metadata_timeout_ms),
        })
    }

    fn create(
        client_config: &ClientConfig,
        health: &Arc<KafkaHealth>,
    ) -> Result<FutureProducer<RelayContext>, KafkaError> {
        client_config.create_with_context(RelayContext(Arc::clone(health)))
    }

    /// What librdkafka told us about the cluster.
    pub fn health(&self) -> &KafkaHealth {
        &self.health
    }

    fn current(&self) -> FutureProducer<RelayContext> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The idempotent producer cannot go on after a fatal error (e.g. its sequence numbers
    /// desynchronized from the broker's): every later record fails with `Fatal`, which the relay
    /// takes for an outage, forever. Put a new producer (a new producer id) in its place; the
    /// rows that failed stayed pending and go again.
    fn replace_if_fatal(&self) -> Result<(), KafkaError> {
        if self.current().client().fatal_error().is_none() {
            return Ok(());
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        // Another caller may have replaced it meanwhile.
        if let Some((code, reason)) = inner.client().fatal_error() {
            tracing::error!(error = %reason, ?code,
                "the Kafka producer hit a fatal error; replacing it with a new producer");
            *inner = Self::create(&self.client_config, &self.health)?;
        }
        Ok(())
    }

    /// Does Kafka answer a metadata request? (Blocking call run off the async threads.) A
    /// producer that hit a fatal error is replaced first. When a broker refused the connection
    /// meanwhile, the error says so.
    pub async fn probe(&self) -> Result<(), ProbeError> {
        self.replace_if_fatal()?;
        let producer = self.current();
        let timeout = self.metadata_timeout;
        let answer = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, timeout)
                .and_then(|m| {
                    if m.brokers().is_empty() {
                        Err(KafkaError::MetadataFetch(RDKafkaErrorCode::AllBrokersDown))
                    } else {
                        Ok(())
                    }
                })
        })
        .await
        .unwrap_or(Err(KafkaError::Canceled));
        answer.map_err(|kafka| match self.health.refusal() {
            Some(refusal) => ProbeError::Refused { refusal, kafka },
            None => ProbeError::Kafka(kafka),
        })
    }

    /// Hands one row's record to librdkafka, waiting while its queue is full. `encoded` holds
    /// the serialized key and value; where it has none, the row's own key and JSON text are sent.
    pub async fn enqueue(
        &self,
        row: &ClaimedRow,
        encoded: &Encoded,
    ) -> Result<DeliveryFuture, ProduceError> {
        let headers = self.headers_for(row)?;
        let payload = encoded.value.as_deref().unwrap_or(row.payload.as_bytes());
        let key = encoded
            .key
            .as_deref()
            .or_else(|| row.key.as_deref().map(str::as_bytes));
        self.send(
            &row.topic,
            key,
            payload,
            headers,
            row.created_at.timestamp_millis(),
        )
        .await
    }

    /// A copy of a parked row for its topic's dead-letter topic: the row's key and JSON text,
    /// with `event_id`, then `outbox.topic`, `outbox.id`, `outbox.error` and `outbox.attempts`,
    /// then the row's own headers.
    pub async fn enqueue_dead_letter(
        &self,
        dead_letter_topic: &str,
        row: &ClaimedRow,
        reason: &str,
        attempts: i32,
    ) -> Result<DeliveryFuture, ProduceError> {
        let own: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&row.headers).unwrap_or_default();
        let event_id = row.event_id.hyphenated().to_string();
        let (id, attempts) = (row.id.to_string(), attempts.to_string());
        let mut headers = OwnedHeaders::new_with_capacity(5 + own.len());
        for (name, value) in [
            ("event_id", event_id.as_str()),
            ("outbox.topic", row.topic.as_str()),
            ("outbox.id", id.as_str()),
            ("outbox.error", reason),
            ("outbox.attempts", attempts.as_str()),
        ] {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        for (name, value) in &own {
            if let (Some(value), false) = (value.as_str(), name == "event_id") {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
        }
        self.send(
            dead_letter_topic,
            row.key.as_deref().map(str::as_bytes),
            row.payload.as_bytes(),
            headers,
            row.created_at.timestamp_millis(),
        )
        .await
    }

    async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: OwnedHeaders,
        timestamp: i64,
    ) -> Result<DeliveryFuture, ProduceError> {
        let mut record = FutureRecord::to(topic)
            .payload(payload)
            .headers(headers)
            .timestamp(timestamp);
        if let Some(key) = key {
            record = record.key(key);
        }
        let producer = self.current();
        loop {
            match producer.send_result(record) {
                Ok(future) => return Ok(future),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// `event_id`, then the default `source` and `version` (unless the row sets them), then the
    /// row's own headers.
    fn headers_for(&self, row: &ClaimedRow) -> Result<OwnedHeaders, ProduceError> {
        let own: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&row.headers)
            .map_err(|_| ProduceError::BadRow("headers must be a JSON object".into()))?;
        let event_id = row.event_id.hyphenated().to_string();
        let mut headers = OwnedHeaders::new_with_capacity(3 + own.len()).insert(Header {
            key: "event_id",
            value: Some(event_id.as_bytes()),
        });
        for (name, value) in [
            ("source", &self.headers.source),
            ("version", &self.headers.version),
        ] {
            if !own.contains_key(name) {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
        }
        for (name, value) in &own {
            let Some(value) = value.as_str() else {
                return Err(ProduceError::BadRow(format!(
                    "header {name:?} must be a string, not {value}"
                )));
            };
            if name != "event_id" {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
        }
        Ok(headers)
    }

    /// Waits up to `timeout` for everything queued to be acknowledged.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.current().flush(Timeout::After(timeout))
    }

    /// Records queued in librdkafka or in flight to a broker, not yet acknowledged.
    pub fn in_flight_count(&self) -> i32 {
        self.current().in_flight_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PropertyValue;

    #[test]
    fn classification_table_is_what_the_docs_say() {
        use RDKafkaErrorCode as C;
        let cases = [
            (C::MessageSizeTooLarge, Disposition::Park),
            (C::InvalidRecord, Disposition::Park),
            (C::InvalidTopic, Disposition::Park),
            (C::AllBrokersDown, Disposition::Outage),
            (C::SaslAuthenticationFailed, Disposition::Outage),
            (C::Authentication, Disposition::Outage),
            (C::SSL, Disposition::Outage),
            (C::TopicAuthorizationFailed, Disposition::Defer),
            (C::MessageTimedOut, Disposition::Retry),
            (C::RequestTimedOut, Disposition::Retry),
            (C::NotEnoughReplicas, Disposition::Retry),
            (C::UnknownTopicOrPartition, Disposition::Retry),
        ];
        for (code, want) in cases {
            assert_eq!(
                classify(&KafkaError::MessageProduction(code)),
                want,
                "{code:?}"
            );
        }
    }

    #[test]
    fn producer_always_runs_with_acks_all_and_idempotence() {
        let mut kafka = KafkaConfig {
            bootstrap_servers: "127.0.0.1:1".into(),
            ..KafkaConfig::default()
        };
        kafka
            .properties
            .insert("linger.ms".into(), PropertyValue::Integer(20));
        let c = client_config(&kafka);
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("linger.ms"), Some("20"));
    }
}
