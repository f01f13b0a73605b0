//! The Kafka producer: built with `acks=all` and idempotence, fed claimed rows, and the single
//! place where Kafka errors are classified into what the relay must do. The Kafka mechanics of a
//! batch live here too: its delivery reports ([`reports`]), the one-at-a-time resend that finds
//! the culprit of a refused record batch ([`resend`]), the probe that tells an outage from a
//! row's fault ([`Producer::probe`]), and dead-letter copies ([`Producer::dead_letter`]).

use std::collections::{BTreeSet, HashMap};
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
mod dead_letter;
mod replicas;
mod reports;
pub mod resend;
mod topic_limits;
pub use context::{KafkaHealth, RelayContext};
pub use dead_letter::DeadLetter;
pub use reports::{delivery_report, reports, Reports};
pub use topic_limits::TopicLimits;

use replicas::{Degraded, PartitionReplicas};

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
/// A `Retry` while Kafka does not answer a metadata request, or while a partition of the row's
/// topic has fewer in-sync replicas than its `min.insync.replicas` ([`Producer::cluster_state`]:
/// the cause of `NOT_ENOUGH_REPLICAS`, and of the message timeouts it turns into once
/// librdkafka's own retries run out), is turned into `Outage` by the relay, so a broker outage
/// or a degraded cluster burns no attempts.
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

/// What a probe found: can the cluster take the relay's records?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// A broker answers, and no partition probed lacks in-sync replicas.
    Answers,
    /// No broker answers a metadata request.
    Unreachable,
    /// A broker answers, but a partition probed has fewer in-sync replicas than its topic's
    /// `min.insync.replicas`: no `acks=all` record can be written there.
    Degraded,
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No answer, or no broker in it.
    #[error("{0}")]
    Kafka(#[from] KafkaError),
    /// No answer, and a broker refused the connection meanwhile (authentication, TLS): the
    /// refusal, which says more than the request's timeout.
    #[error("{refusal} (metadata request: {kafka})")]
    Refused { refusal: String, kafka: KafkaError },
    /// Kafka answers, but partitions found degraded still lack in-sync replicas.
    #[error("Kafka answers but cannot take acks=all records: {0}")]
    Degraded(String),
}

/// The replicas of each topic's partitions, as a metadata answer lists them.
type Replicas = HashMap<String, Vec<PartitionReplicas>>;

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

/// A row whose topic is no Kafka topic name (written before migration 0004's CHECK, or with it
/// dropped) is refused here, before librdkafka sees it: librdkafka reports such a topic as
/// `InvalidTopic` only while it has not looked the name up yet, and as a local `UnknownTopic`
/// (a retry: the topic may be created) once any metadata request has named it.
fn invalid_topic(topic: &str) -> Result<(), ProduceError> {
    crate::config::check_topic_name(topic).map_err(|why| {
        ProduceError::BadRow(format!(
            "InvalidTopic: {topic:?} is not a Kafka topic name: {why}"
        ))
    })
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
    /// Topics found with partitions under `min.insync.replicas`, until they are not.
    degraded: Arc<Degraded>,
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
            degraded: Arc::default(),
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

    /// Does Kafka answer a metadata request, and do the partitions found degraded (see
    /// [`Producer::cluster_state`]) have their in-sync replicas back? (Blocking call run off
    /// the async threads.) A producer that hit a fatal error is replaced first.
    pub async fn probe(&self) -> Result<(), ProbeError> {
        let degraded = self.degraded.topics();
        let topics = degraded.iter().map(|(t, _)| t.clone()).collect();
        let replicas =
            self.replicas(topics, true)
                .await
                .map_err(|kafka| match self.health.refusal() {
                    Some(refusal) => ProbeError::Refused { refusal, kafka },
                    None => ProbeError::Kafka(kafka),
                })?;
        let mut still = Vec::new();
        for (topic, min_isr) in &degraded {
            let under = replicas
                .get(topic)
                .map(|partitions| replicas::under_min_isr(partitions, *min_isr))
                .unwrap_or_default();
            if under.is_empty() {
                self.degraded.recovered(topic);
            } else {
                still.push(replicas::describe(topic, *min_isr, &under));
            }
        }
        if still.is_empty() {
            Ok(())
        } else {
            Err(ProbeError::Degraded(still.join("; ")))
        }
    }

    /// Whether partitions were found degraded and have not been seen recovered since.
    pub fn is_degraded(&self) -> bool {
        !self.degraded.is_empty()
    }

    /// Can the cluster take records for `topics`? Unreachable when no broker answers a metadata
    /// request; degraded when a partition of one of them has fewer in-sync replicas than its
    /// topic's `min.insync.replicas` (described through `limits`, only for a topic with a
    /// replica out of sync; a topic whose minimum is unknown is not checked, nor one whose
    /// replicas are all in sync, even if fewer than its minimum: that is its configuration, not
    /// an outage). A degraded topic is remembered, said once at WARN, and fails
    /// [`Producer::probe`] until its partitions have their replicas back.
    pub async fn cluster_state(
        &self,
        topics: &BTreeSet<&str>,
        limits: &TopicLimits,
    ) -> ClusterState {
        let names = topics.iter().map(|t| (*t).to_owned()).collect();
        let Ok(replicas) = self.replicas(names, false).await else {
            return ClusterState::Unreachable;
        };
        let mut state = ClusterState::Answers;
        for &topic in topics {
            let Some(partitions) = replicas.get(topic) else {
                continue;
            };
            if partitions.iter().all(|p| p.in_sync >= p.replicas) {
                continue;
            }
            let Some(min_isr) = limits.min_insync_replicas(topic).await else {
                continue;
            };
            let under = replicas::under_min_isr(partitions, min_isr);
            if !under.is_empty() {
                self.degraded.note(topic, min_isr, &under);
                state = ClusterState::Degraded;
            }
        }
        state
    }

    /// Metadata requests: one for every topic with `every_topic` (or when `topics` is empty),
    /// else one per topic of `topics` (clusters may hold many topics); and the replicas of
    /// `topics`' partitions in the answers.
    async fn replicas(
        &self,
        topics: Vec<String>,
        every_topic: bool,
    ) -> Result<Replicas, KafkaError> {
        self.replace_if_fatal()?;
        let producer = self.current();
        let timeout = self.metadata_timeout;
        tokio::task::spawn_blocking(move || {
            let client = producer.client();
            let requests: Vec<Option<&str>> = if every_topic || topics.is_empty() {
                vec![None]
            } else {
                topics.iter().map(|t| Some(t.as_str())).collect()
            };
            let mut out = Replicas::new();
            for request in requests {
                let m = client.fetch_metadata(request, timeout)?;
                if m.brokers().is_empty() {
                    return Err(KafkaError::MetadataFetch(RDKafkaErrorCode::AllBrokersDown));
                }
                for t in m.topics() {
                    if t.error().is_some() || !topics.iter().any(|name| name == t.name()) {
                        continue;
                    }
                    let partitions = t
                        .partitions()
                        .iter()
                        .map(|p| PartitionReplicas {
                            partition: p.id(),
                            replicas: p.replicas().len(),
                            in_sync: p.isr().len(),
                        })
                        .collect();
                    out.insert(t.name().to_owned(), partitions);
                }
            }
            Ok(out)
        })
        .await
        .unwrap_or(Err(KafkaError::Canceled))
    }

    /// Hands one row's record to librdkafka, waiting while its queue is full. `encoded` holds
    /// the serialized key and value; where it has none, the row's own key and JSON text are sent.
    pub async fn enqueue(
        &self,
        row: &ClaimedRow,
        encoded: &Encoded,
    ) -> Result<DeliveryFuture, ProduceError> {
        invalid_topic(&row.topic)?;
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
        // Most rows carry no headers of their own (jsonb prints that as `{}`): no parse then.
        let own: serde_json::Map<String, serde_json::Value> = if row.headers == "{}" {
            serde_json::Map::new()
        } else {
            serde_json::from_str(&row.headers)
                .map_err(|_| ProduceError::BadRow("headers must be a JSON object".into()))?
        };
        let mut event_id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let event_id = row.event_id.hyphenated().encode_lower(&mut event_id);
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
    fn a_topic_that_is_no_kafka_topic_name_is_a_bad_row_to_park_naming_invalid_topic() {
        let err = invalid_topic("bad topic!").unwrap_err();
        assert_eq!(err.disposition(), Disposition::Park);
        let reason = err.to_string();
        assert!(
            reason.starts_with("InvalidTopic: \"bad topic!\""),
            "{reason}"
        );
        assert!(invalid_topic("mcp.conversations").is_ok());
    }

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
            (C::NotEnoughReplicasAfterAppend, Disposition::Retry),
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
