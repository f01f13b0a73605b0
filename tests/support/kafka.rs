//! Kafka on the test's side: topics, and readers that return every record of a topic as Kafka
//! holds it (bytes untouched, headers as text), from the real broker, a dedicated one or a mock
//! cluster.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use outbox_relay::config::{Config, PropertyValue};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use uuid::Uuid;

use super::kafka_bootstrap;

/// Creates `topic` with `partitions` partitions on the test Kafka.
pub async fn create_topic(topic: &str, partitions: i32) {
    create_topic_at(&kafka_bootstrap(), topic, partitions).await;
}

/// Creates `topic` on `bootstrap`, with topic-level `configs`.
pub async fn create_topic_with(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let results = admin
        .create_topics(
            &[new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create topic (is Kafka up? scripts/stack up)");
    for r in results {
        r.expect("topic created");
    }
}

/// Creates `topic` on `bootstrap`.
pub async fn create_topic_at(bootstrap: &str, topic: &str, partitions: i32) {
    create_topic_with(bootstrap, topic, partitions, &[]).await;
}

/// Sets a librdkafka pass-through property.
pub fn set_property(config: &mut Config, key: &str, value: &str) {
    config
        .kafka
        .properties
        .insert(key.into(), PropertyValue::Text(value.into()));
}

/// The value of header `name` among a record's headers.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// One record as Kafka holds it: bytes untouched.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn event_id(&self) -> &str {
        self.header("event_id").expect("event_id header")
    }

    /// The key as text; panics if it is not UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .map(|k| std::str::from_utf8(k).expect("utf-8 key"))
    }

    /// The value parsed as JSON (`null` when it is absent or not JSON).
    pub fn json(&self) -> serde_json::Value {
        self.value
            .as_deref()
            .and_then(|v| serde_json::from_slice(v).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// The schema id of the Confluent header (magic byte 0, big-endian u32); panics if the
    /// value is not framed.
    pub fn schema_id(&self) -> u32 {
        let v = self.value.as_deref().expect("a value");
        assert!(
            v.len() >= 5 && v[0] == 0,
            "value not in the Confluent wire format: {v:?}"
        );
        u32::from_be_bytes([v[1], v[2], v[3], v[4]])
    }
}

/// Reads every record of `topic` on `bootstrap`, from the beginning to the high watermarks of
/// this moment, sorted by (partition, offset). Blocking (librdkafka polls): from async code use
/// [`consume_all`], or this on a mock cluster (which lives in the test's process anyway).
pub fn read_records(bootstrap: &str, topic: &str) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("it-reader-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0i64;
    for p in metadata.topics()[0].partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .unwrap();
        remaining += high - low;
        assignment
            .add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    if remaining == 0 {
        return Vec::new();
    }
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::with_capacity(remaining as usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    while remaining > 0 {
        assert!(Instant::now() < deadline, "timed out reading {topic}");
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg.expect("consume");
        let headers = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Record {
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            value: msg.payload().map(<[u8]>::to_vec),
            headers,
        });
        remaining -= 1;
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}

/// Every record of `topic` on the test Kafka ([`read_records`]), off the async runtime's
/// threads (an in-process registry double or relay keeps running meanwhile).
pub async fn consume_all(topic: &str) -> Vec<Record> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_records(&kafka_bootstrap(), &topic))
        .await
        .unwrap()
}

/// Counts how often each event_id was consumed.
pub fn event_id_counts(records: &[Record]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in records {
        *counts.entry(r.event_id().to_owned()).or_insert(0) += 1;
    }
    counts
}
