//! `[retry]`, `[topic_defaults]` and `[topics."name"]`: how each topic's rows are serialized,
//! retried and parked. A topic's table overrides `[topic_defaults]`, which overrides the
//! built-in defaults; [`TopicPolicy`] is the resolved result the relay uses.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::retry::RetryPolicy;

/// `[retry]`: exponential backoff for rows whose delivery failed for a reason that may pass.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct RetryConfig {
    /// First delay, in milliseconds; each further failure doubles it.
    pub base_ms: u64,
    /// Longest delay, in milliseconds.
    pub cap_ms: u64,
    /// Attempts before the row is parked (1 = park at the first failure).
    pub max_attempts: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            base_ms: 1_000,
            cap_ms: 300_000,
            max_attempts: 10,
        }
    }
}

/// How a topic's values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// The payload's JSON text, as it is (no registry).
    RawJson,
    /// Avro binary in Confluent wire format.
    Avro,
    /// JSON text, validated against a JSON Schema, in Confluent wire format.
    JsonSchema,
    /// Protobuf in Confluent wire format (with message indexes).
    Protobuf,
}

impl Format {
    pub fn uses_registry(self) -> bool {
        self != Self::RawJson
    }
    /// The registry's `schemaType` for this format.
    pub fn schema_type(self) -> &'static str {
        match self {
            Self::RawJson => "NONE",
            Self::Avro => "AVRO",
            Self::JsonSchema => "JSON",
            Self::Protobuf => "PROTOBUF",
        }
    }
}

/// Which registry subject holds a topic's schema (Confluent's subject name strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubjectStrategy {
    /// `{topic}-value` / `{topic}-key` (Confluent's default, and the seed's).
    Topic,
    /// `{record_name}`.
    Record,
    /// `{topic}-{record_name}`.
    TopicRecord,
}

/// How a row's key is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyFormat {
    /// The key column's UTF-8 bytes.
    String,
    /// Serialized in the topic's format with the latest schema of the key subject.
    Registry,
}

/// What a parked row does to later rows of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnParked {
    /// Later rows of the key wait until an operator replays or skips the parked row.
    HoldKey,
    /// Later rows of the key go on; the parked row waits alone for a replay.
    Skip,
}

/// `[topic_defaults]` and `[topics."name"]`: every key optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct TopicConfig {
    /// `raw-json` (default), `avro`, `json-schema` or `protobuf`.
    pub format: Option<Format>,
    /// `topic` (default), `record` or `topic-record`.
    pub subject_strategy: Option<SubjectStrategy>,
    /// Record name for the `record` and `topic-record` strategies (e.g. `com.acme.OrderPlaced`).
    pub record_name: Option<String>,
    /// Pin the value schema to this version of its subject (default: the latest version).
    pub schema_version: Option<u32>,
    /// Pin the value schema to this registry id (default: the latest version of the subject).
    pub schema_id: Option<u32>,
    /// Protobuf: the fully qualified message to encode (default: the file's first message).
    pub message_name: Option<String>,
    /// `string` (default) or `registry`.
    pub key_format: Option<KeyFormat>,
    /// `hold-key` (default) or `skip`.
    pub on_parked: Option<OnParked>,
    /// Also produce parked rows to this topic, with the reason in headers (default: none).
    pub dead_letter_topic: Option<String>,
    /// Overrides `retry.base_ms`.
    pub retry_base_ms: Option<u64>,
    /// Overrides `retry.cap_ms`.
    pub retry_cap_ms: Option<u64>,
    /// Overrides `retry.max_attempts`.
    pub max_attempts: Option<u32>,
}

/// Where a topic's value schema comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    Latest,
    Version(u32),
    Id(u32),
}

/// A topic's settings, resolved.
#[derive(Debug, Clone)]
pub struct TopicPolicy {
    pub format: Format,
    pub subject_strategy: SubjectStrategy,
    pub record_name: Option<String>,
    pub selection: Selection,
    pub message_name: Option<String>,
    pub key_format: KeyFormat,
    pub on_parked: OnParked,
    pub dead_letter_topic: Option<String>,
    pub retry: RetryPolicy,
}

impl TopicConfig {
    /// `self` over `defaults` over the built-in defaults.
    pub fn resolve(&self, defaults: &TopicConfig, retry: &RetryConfig) -> TopicPolicy {
        macro_rules! pick {
            ($field:ident) => {
                self.$field.clone().or_else(|| defaults.$field.clone())
            };
        }
        // A pinned schema belongs to one topic: it is never inherited from the defaults.
        let selection = match (self.schema_id, self.schema_version) {
            (Some(id), _) => Selection::Id(id),
            (None, Some(v)) => Selection::Version(v),
            (None, None) => Selection::Latest,
        };
        TopicPolicy {
            format: pick!(format).unwrap_or(Format::RawJson),
            subject_strategy: pick!(subject_strategy).unwrap_or(SubjectStrategy::Topic),
            record_name: pick!(record_name),
            selection,
            message_name: pick!(message_name),
            key_format: pick!(key_format).unwrap_or(KeyFormat::String),
            on_parked: pick!(on_parked).unwrap_or(OnParked::HoldKey),
            dead_letter_topic: pick!(dead_letter_topic),
            retry: RetryPolicy {
                base: Duration::from_millis(pick!(retry_base_ms).unwrap_or(retry.base_ms)),
                cap: Duration::from_millis(pick!(retry_cap_ms).unwrap_or(retry.cap_ms)),
                max_attempts: pick!(max_attempts).unwrap_or(retry.max_attempts),
            },
        }
    }

    /// Problems with this table (`at` is `topic_defaults` or `topics."name"`).
    pub(super) fn problems(&self, at: &str, registry_configured: bool, out: &mut Vec<String>) {
        if self.schema_id.is_some() && self.schema_version.is_some() {
            out.push(format!(
                "{at}: schema_id and schema_version are exclusive (pin one or the other)"
            ));
        }
        if self.schema_version == Some(0) {
            out.push(format!("{at}.schema_version must be at least 1"));
        }
        if let Some(f) = self.format {
            if f.uses_registry() && !registry_configured {
                out.push(format!(
                    "{at}.format = {:?} needs registry.url",
                    f.schema_type().to_lowercase()
                ));
            }
        }
        if self.key_format == Some(KeyFormat::Registry) && !registry_configured {
            out.push(format!("{at}.key_format = \"registry\" needs registry.url"));
        }
        if let Some(name) = &self.dead_letter_topic {
            if let Err(why) = check_topic_name(name) {
                out.push(format!("{at}.dead_letter_topic {name:?}: {why}"));
            }
        }
        if self.retry_base_ms == Some(0) {
            out.push(format!("{at}.retry_base_ms must be greater than 0"));
        }
        if self.max_attempts == Some(0) {
            out.push(format!("{at}.max_attempts must be at least 1"));
        }
        if let (Some(base), Some(cap)) = (self.retry_base_ms, self.retry_cap_ms) {
            if cap < base {
                out.push(format!(
                    "{at}.retry_cap_ms ({cap}) is below retry_base_ms ({base})"
                ));
            }
        }
    }

    /// Problems of the resolved policy of topic `at` that only show once layers are merged.
    pub(super) fn resolved_problems(policy: &TopicPolicy, at: &str, out: &mut Vec<String>) {
        if matches!(
            policy.subject_strategy,
            SubjectStrategy::Record | SubjectStrategy::TopicRecord
        ) && policy.record_name.is_none()
            && policy.format.uses_registry()
        {
            out.push(format!(
                "{at}: the record and topic-record subject strategies need record_name"
            ));
        }
        if policy.key_format == KeyFormat::Registry && policy.format == Format::RawJson {
            out.push(format!(
                "{at}: key_format = \"registry\" serializes keys in the topic's format; \
                 set format (avro, json-schema or protobuf)"
            ));
        }
        if policy.message_name.is_some() && policy.format != Format::Protobuf {
            out.push(format!(
                "{at}.message_name only applies to format = \"protobuf\""
            ));
        }
        if policy.retry.cap < policy.retry.base {
            out.push(format!("{at}: the retry cap is below the retry base"));
        }
    }
}

/// Every topic's resolved policy, built once so that the hot path only looks one up.
#[derive(Debug, Clone)]
pub struct TopicPolicies {
    by_topic: HashMap<String, TopicPolicy>,
    default: TopicPolicy,
}

impl TopicPolicies {
    pub fn new(
        topics: &std::collections::BTreeMap<String, TopicConfig>,
        defaults: &TopicConfig,
        retry: &RetryConfig,
    ) -> Self {
        Self {
            by_topic: topics
                .iter()
                .map(|(name, t)| (name.clone(), t.resolve(defaults, retry)))
                .collect(),
            default: TopicConfig::default().resolve(defaults, retry),
        }
    }

    /// The policy of `topic`: its own, or `[topic_defaults]`'s.
    pub fn get(&self, topic: &str) -> &TopicPolicy {
        self.by_topic.get(topic).unwrap_or(&self.default)
    }
}

impl RetryConfig {
    pub(super) fn problems(&self, out: &mut Vec<String>) {
        if self.base_ms == 0 {
            out.push("retry.base_ms must be greater than 0".into());
        }
        if self.cap_ms < self.base_ms {
            out.push(format!(
                "retry.cap_ms ({}) is below retry.base_ms ({})",
                self.cap_ms, self.base_ms
            ));
        }
        if self.max_attempts == 0 {
            out.push("retry.max_attempts must be at least 1".into());
        }
    }
}

/// A legal Kafka topic name: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn check_topic_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 249 {
        return Err("a topic name has 1 to 249 characters");
    }
    if name == "." || name == ".." {
        return Err("\".\" and \"..\" are not topic names");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("only letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_table_overrides_the_defaults_which_override_the_built_ins() {
        let defaults = TopicConfig {
            format: Some(Format::Avro),
            max_attempts: Some(3),
            on_parked: Some(OnParked::Skip),
            ..TopicConfig::default()
        };
        let topic = TopicConfig {
            on_parked: Some(OnParked::HoldKey),
            schema_version: Some(2),
            ..TopicConfig::default()
        };
        let p = topic.resolve(&defaults, &RetryConfig::default());
        assert_eq!(p.format, Format::Avro);
        assert_eq!(p.on_parked, OnParked::HoldKey);
        assert_eq!(p.selection, Selection::Version(2));
        assert_eq!(p.retry.max_attempts, 3);
        assert_eq!(p.retry.base, Duration::from_millis(1_000));
        assert_eq!(p.subject_strategy, SubjectStrategy::Topic);
        let plain =
            TopicConfig::default().resolve(&TopicConfig::default(), &RetryConfig::default());
        assert_eq!(plain.format, Format::RawJson);
        assert_eq!(plain.on_parked, OnParked::HoldKey);
        assert_eq!(plain.selection, Selection::Latest);
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(check_topic_name("mcp.conversations-dlq_1").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", &"x".repeat(250)] {
            assert!(check_topic_name(bad).is_err(), "{bad:?}");
        }
    }
}
