//! Serialize: a claimed row's key and payload → record bytes, per its topic's format.
//!
//! `raw-json` sends the payload's JSON text as it is. `avro`, `json-schema` and `protobuf` look
//! the schema up in the Schema Registry (cached: see [`registry`]) and write Confluent's wire
//! format: magic byte 0, the schema id (4 bytes, big-endian), then the encoding (for Protobuf,
//! message indexes first). One file per format: [`avro`], [`json_schema`], [`protobuf`].
//!
//! Errors come out sorted by what the relay must do: [`SerializeError::Poison`] (park the row:
//! it names the subject and the field) or [`SerializeError::Outage`] (the registry is away:
//! touch nothing, pause).

pub mod avro;
pub mod encode_error;
pub mod json_schema;
pub(crate) mod number;
pub mod protobuf;
pub mod references;
pub mod registry;

use std::borrow::Cow;
use std::sync::Arc;

pub use encode_error::{EncodeError, SchemaError};
use registry::{Registry, RegistryError, Schema};

use crate::config::{Config, Format, KeyFormat, Selection, SubjectStrategy, TopicPolicy};
use crate::outbox::ClaimedRow;

/// Why a row could not be serialized.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SerializeError {
    /// The row can never be serialized as it is (unknown subject, payload not matching the
    /// schema, malformed payload): park it with this reason.
    #[error("{0}")]
    Poison(String),
    /// The registry cannot be asked now: the row is not at fault.
    #[error("{0}")]
    Outage(String),
}

impl From<RegistryError> for SerializeError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Outage(_) => Self::Outage(e.to_string()),
            RegistryError::Refused(why) => Self::Poison(why),
        }
    }
}

/// One schema's encoder, built once per schema id.
#[derive(Debug)]
pub enum Encoder {
    Avro(avro::AvroEncoder),
    Json(json_schema::JsonSchemaEncoder),
    Protobuf(protobuf::ProtobufEncoder),
}

impl Encoder {
    /// Parses `schema` (as registered) for `format`.
    pub fn build(format: Format, schema: &str, message: Option<&str>) -> Result<Self, String> {
        let built = match format {
            Format::Avro => avro::AvroEncoder::new(schema).map(Self::Avro),
            Format::JsonSchema => json_schema::JsonSchemaEncoder::new(schema).map(Self::Json),
            Format::Protobuf => protobuf::ProtobufEncoder::new(schema, message).map(Self::Protobuf),
            Format::RawJson => return Err("raw-json has no schema".into()),
        };
        built.map_err(|e| e.to_string())
    }

    pub fn has_top_level_field(&self, name: &str) -> bool {
        match self {
            Self::Avro(e) => e.has_top_level_field(name),
            Self::Json(e) => e.has_top_level_field(name),
            Self::Protobuf(e) => e.has_top_level_field(name),
        }
    }

    /// Appends the encoding of `value` (after the 5-byte header) to `out`. `text`, when given,
    /// is `value`'s own JSON text: JSON Schema sends it as it is, after validating `value`.
    pub fn encode(
        &self,
        value: &serde_json::Value,
        text: Option<&str>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        match (self, text) {
            (Self::Avro(e), _) => e.encode(value, out),
            (Self::Json(e), Some(text)) => e.encode_text(value, text, out),
            (Self::Json(e), None) => e.encode(value, out),
            (Self::Protobuf(e), _) => e.encode(value, out),
        }
    }
}

/// A row's record bytes. `None` means "the row's own text, as it is" (no copy).
#[derive(Debug, Default)]
pub struct Encoded {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// Turns rows into record bytes.
#[derive(Debug)]
pub struct Serializer {
    registry: Option<Arc<Registry>>,
}

impl Serializer {
    /// Builds the registry client if one is configured; contacts nothing.
    pub fn new(config: &Config) -> Result<Self, String> {
        let registry = if config.registry.is_configured() {
            Some(Arc::new(Registry::new(&config.registry)?))
        } else {
            None
        };
        Ok(Self { registry })
    }

    pub fn registry(&self) -> Option<&Registry> {
        self.registry.as_deref()
    }

    /// The key and value bytes of `row` under `policy`.
    pub async fn serialize(
        &self,
        row: &ClaimedRow,
        policy: &TopicPolicy,
    ) -> Result<Encoded, SerializeError> {
        let mut encoded = Encoded::default();
        if policy.format.uses_registry() || row.value_subject.is_some() {
            let schema = self.value_schema(row, policy).await?;
            // Numbers keep their text (serde_json's arbitrary_precision): see `number`.
            let mut value: serde_json::Value = serde_json::from_str(&row.payload)
                .map_err(|e| SerializeError::Poison(format!("payload is not JSON: {e}")))?;
            // The payload's own text, for JSON Schema, which sends it as it is.
            let mut text = Cow::Borrowed(row.payload.as_str());
            if let serde_json::Value::Object(fields) = &mut value {
                // As the seed's publisher does: the event carries its id when its schema has one.
                if !fields.contains_key("event_id")
                    && schema.encoder.has_top_level_field("event_id")
                {
                    let id = row.event_id.hyphenated().to_string();
                    if matches!(schema.encoder, Encoder::Json(_)) {
                        text = Cow::Owned(json_schema::with_event_id(&row.payload, &id));
                    }
                    fields.insert("event_id".into(), serde_json::Value::String(id));
                }
            }
            encoded.value = Some(frame(&schema, &value, Some(&text)).map_err(|e| {
                SerializeError::Poison(format!(
                    "value does not match {} (schema id {}): {e}",
                    self.value_subject_label(row, policy),
                    schema.id
                ))
            })?);
        }
        if let (Some(key), KeyFormat::Registry) = (&row.key, policy.key_format) {
            encoded.key = Some(self.registry_key(row, key, policy).await?);
        }
        Ok(encoded)
    }

    async fn value_schema(
        &self,
        row: &ClaimedRow,
        policy: &TopicPolicy,
    ) -> Result<Arc<Schema>, SerializeError> {
        let registry = self.registry.as_deref().ok_or_else(|| {
            SerializeError::Poison(
                "the row names a value_subject but no registry is configured".into(),
            )
        })?;
        let format = policy.format;
        if !format.uses_registry() {
            return Err(SerializeError::Poison(format!(
                "the row names value_subject `{}` but topic `{}` is raw-json; configure its format",
                row.value_subject.as_deref().unwrap_or_default(),
                row.topic
            )));
        }
        let message = policy.message_name.as_deref();
        if let Some(subject) = &row.value_subject {
            let version = row.value_schema_version.map(|v| v as u32);
            return Ok(registry
                .for_subject(subject, version, format, message)
                .await?);
        }
        let subject = value_subject(&row.topic, policy);
        Ok(match policy.selection {
            Selection::Id(id) => registry.by_id(id, format, message).await?,
            Selection::Version(v) => {
                registry
                    .for_subject(&subject, Some(v), format, message)
                    .await?
            }
            Selection::Latest => {
                registry
                    .for_subject(&subject, None, format, message)
                    .await?
            }
        })
    }

    fn value_subject_label(&self, row: &ClaimedRow, policy: &TopicPolicy) -> String {
        match (&row.value_subject, policy.selection) {
            (Some(s), _) => format!("subject `{s}`"),
            (None, Selection::Id(_)) => "the pinned schema".into(),
            (None, _) => format!("subject `{}`", value_subject(&row.topic, policy)),
        }
    }

    /// The key through the latest schema of `{topic}-key`: as a string if the schema takes
    /// one, otherwise the key text parsed as JSON.
    async fn registry_key(
        &self,
        row: &ClaimedRow,
        key: &str,
        policy: &TopicPolicy,
    ) -> Result<Vec<u8>, SerializeError> {
        let registry = self.registry.as_deref().ok_or_else(|| {
            SerializeError::Poison("key_format = registry needs a registry".into())
        })?;
        let subject = format!("{}-key", row.topic);
        let schema = registry
            // A raw-json topic cannot have registry keys: config refuses it.
            .for_subject(&subject, None, policy.format, None)
            .await?;
        let as_string = serde_json::Value::String(key.to_owned());
        frame(&schema, &as_string, None).or_else(|first| {
            let parsed: serde_json::Value = serde_json::from_str(key).map_err(|_| {
                SerializeError::Poison(format!(
                    "key does not match subject `{subject}` (schema id {}): {first}",
                    schema.id
                ))
            })?;
            frame(&schema, &parsed, Some(key)).map_err(|e| {
                SerializeError::Poison(format!(
                    "key does not match subject `{subject}` (schema id {}): {e}",
                    schema.id
                ))
            })
        })
    }
}

/// The value subject of `topic` under its strategy.
pub fn value_subject<'a>(topic: &'a str, policy: &'a TopicPolicy) -> Cow<'a, str> {
    let record = policy.record_name.as_deref().unwrap_or_default();
    match policy.subject_strategy {
        SubjectStrategy::Topic => Cow::Owned(format!("{topic}-value")),
        SubjectStrategy::Record => Cow::Borrowed(record),
        SubjectStrategy::TopicRecord => Cow::Owned(format!("{topic}-{record}")),
    }
}

/// Zig-zag varint: Avro's `int` and `long`, and Confluent's Protobuf message indexes.
pub(crate) fn write_zigzag(out: &mut Vec<u8>, n: i64) {
    // Reinterpreting the sign bit is what zig-zag encoding does.
    #[allow(clippy::cast_sign_loss)]
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        // Truncation to the low 7 bits is intended.
        #[allow(clippy::cast_possible_truncation)]
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    #[allow(clippy::cast_possible_truncation)]
    out.push(z as u8);
}

/// Confluent framing: magic byte 0, the schema id big-endian, then the encoding.
fn frame(
    schema: &Schema,
    value: &serde_json::Value,
    text: Option<&str>,
) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(128);
    out.push(0);
    out.extend_from_slice(&schema.id.to_be_bytes());
    schema.encoder.encode(value, text, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RetryConfig, TopicConfig};

    fn policy(strategy: SubjectStrategy, record: Option<&str>) -> TopicPolicy {
        TopicConfig {
            format: Some(Format::Avro),
            subject_strategy: Some(strategy),
            record_name: record.map(str::to_owned),
            ..TopicConfig::default()
        }
        .resolve(&TopicConfig::default(), &RetryConfig::default())
    }

    #[tokio::test]
    async fn raw_json_rows_are_sent_as_their_own_text_without_a_parse() {
        let serializer = Serializer::new(&Config::default()).unwrap();
        let raw = TopicConfig::default().resolve(&TopicConfig::default(), &RetryConfig::default());
        assert_eq!(raw.format, Format::RawJson);
        // Not even JSON: proof that nothing on this path parses (or re-prints) the payload.
        for payload in [
            r#"{"n": 123456789012345678901234567890, "d": 0.1000000000000000055511151231257827}"#,
            "not json {",
        ] {
            let row = ClaimedRow {
                id: 1,
                event_id: uuid::Uuid::new_v4(),
                topic: "t".into(),
                key: Some("k".into()),
                payload: payload.into(),
                headers: "{}".into(),
                created_at: chrono::Utc::now(),
                attempts: 0,
                value_subject: None,
                value_schema_version: None,
            };
            let encoded = serializer.serialize(&row, &raw).await.unwrap();
            assert!(
                encoded.value.is_none() && encoded.key.is_none(),
                "{encoded:?}"
            );
        }
    }

    #[test]
    fn subject_strategies_name_subjects_as_confluent_does() {
        let rec = Some("agent.events.ConversationCreated");
        assert_eq!(
            value_subject("mcp.conversations", &policy(SubjectStrategy::Topic, rec)),
            "mcp.conversations-value"
        );
        assert_eq!(
            value_subject("mcp.conversations", &policy(SubjectStrategy::Record, rec)),
            "agent.events.ConversationCreated"
        );
        assert_eq!(
            value_subject(
                "mcp.conversations",
                &policy(SubjectStrategy::TopicRecord, rec)
            ),
            "mcp.conversations-agent.events.ConversationCreated"
        );
    }
}
