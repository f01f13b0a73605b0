//! JSON payload → JSON text, after validation against one already-fetched JSON Schema.
//!
//! Owns the validator (compiled once in [`JsonSchemaEncoder::new`]) and the translation of
//! validation errors into [`EncodeError`]s a person can act on: a dotted field path
//! (`changes[2].file`) plus what is wrong. `required` and `additionalProperties` errors point at
//! the missing or unexpected field itself, as the Avro encoder does. The bytes written are the
//! payload's own JSON text as the row holds it ([`JsonSchemaEncoder::encode_text`]; every number
//! as written), or, without that text, its compact JSON text; Confluent's JSON Schema serializer
//! adds nothing else after the 5-byte header. Validation compares numbers exactly (jsonschema's
//! `arbitrary-precision` feature).
//!
//! Remote `$ref`s resolve only to the schema's Confluent references (by their name): there is no
//! I/O here, and any other remote `$ref` makes `new` fail.

use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::LocationSegment;
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use super::{EncodeError, SchemaError};

/// At most this many validation problems are described in one error (the first names the path).
const MAX_REPORTED: usize = 3;

/// Validates and writes JSON payloads for one JSON Schema. Build once per schema id and share.
#[derive(Debug)]
pub struct JsonSchemaEncoder {
    validator: Validator,
    title: Option<String>,
    properties: Vec<String>,
}

impl JsonSchemaEncoder {
    /// Parses and compiles `schema_json`. Fails on invalid JSON, an invalid schema or
    /// references that cannot be resolved offline.
    pub fn new(schema_json: &str) -> Result<Self, SchemaError> {
        Self::with_references(schema_json, &[])
    }

    /// As [`new`](Self::new), with Confluent schema references: (name, schema text). A `$ref`
    /// to a reference's name (as written, or relative to the schema) resolves to its schema;
    /// any other remote `$ref` still fails.
    pub fn with_references(
        schema_json: &str,
        references: &[(String, String)],
    ) -> Result<Self, SchemaError> {
        let schema: Value = serde_json::from_str(schema_json)
            .map_err(|e| SchemaError(format!("JSON Schema is not valid JSON: {e}")))?;
        let mut referenced = Vec::with_capacity(references.len());
        for (name, text) in references {
            let value: Value = serde_json::from_str(text).map_err(|e| {
                SchemaError(format!(
                    "referenced JSON Schema `{name}` is not valid JSON: {e}"
                ))
            })?;
            referenced.push((name.clone(), value));
        }
        let validator = jsonschema::options()
            .with_retriever(References(referenced))
            .build(&schema)
            .map_err(|e| SchemaError(format!("invalid JSON Schema: {e}")))?;
        let title = schema
            .get("title")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        Ok(Self {
            validator,
            title,
            properties,
        })
    }

    /// The schema's `"title"`, which Confluent's record subject strategies use as the name.
    pub fn record_name(&self) -> Option<String> {
        self.title.clone()
    }

    /// Does the schema's top-level `"properties"` declare this name?
    pub fn has_top_level_field(&self, name: &str) -> bool {
        self.properties.iter().any(|p| p == name)
    }

    /// Validates, then appends the compact JSON text of `payload` to `out`.
    /// On error `out` is left as it was.
    pub fn encode(&self, payload: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if !self.validator.is_valid(payload) {
            return Err(self.describe(payload));
        }
        serde_json::to_writer(&mut *out, payload)
            .map_err(|e| EncodeError::new(format!("cannot write as JSON text: {e}")))
    }

    /// Validates `payload`, then appends `text`, its JSON text as the row holds it: the
    /// record carries the payload's exact text (every digit of every number, as written).
    /// On error `out` is left as it was.
    pub fn encode_text(
        &self,
        payload: &Value,
        text: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        if !self.validator.is_valid(payload) {
            return Err(self.describe(payload));
        }
        out.extend_from_slice(text.as_bytes());
        Ok(())
    }

    /// Slow path, only for invalid payloads: the first problem gives the path, a few more are
    /// appended so a person fixing the row sees them together.
    fn describe(&self, payload: &Value) -> EncodeError {
        let mut problems = self
            .validator
            .iter_errors(payload)
            .map(|e| to_encode_error(&e));
        let Some(mut first) = problems.next() else {
            return EncodeError::new("does not match the schema");
        };
        let rest: Vec<EncodeError> = problems.take(MAX_REPORTED - 1).collect();
        for other in rest {
            let at = if other.path.is_empty() {
                "payload".to_owned()
            } else {
                format!("`{}`", other.path)
            };
            first
                .message
                .push_str(&format!("; also {at}: {}", other.message));
        }
        first
    }
}

/// `object_text` (the JSON text of an object) with `"event_id": "<id>"` added as its first
/// member, the rest of the text untouched.
pub(crate) fn with_event_id(object_text: &str, id: &str) -> String {
    let trimmed = object_text.trim_start();
    let Some(rest) = trimmed.strip_prefix('{') else {
        return object_text.to_owned();
    };
    let empty = rest.trim_start().starts_with('}');
    let member = serde_json::to_string(id).unwrap_or_default();
    let separator = if empty { "" } else { ", " };
    format!("{{\"event_id\": {member}{separator}{rest}")
}

fn to_encode_error(e: &ValidationError<'_>) -> EncodeError {
    let path = dotted(e);
    match e.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_owned);
            EncodeError::at(join(&path, &name), "missing required field")
        }
        ValidationErrorKind::AdditionalProperties { unexpected } if !unexpected.is_empty() => {
            let mut err = EncodeError::at(
                join(&path, &unexpected[0]),
                "not in the schema (additionalProperties is false; refusing to drop data)",
            );
            if unexpected.len() > 1 {
                err.message.push_str(&format!(
                    "; other unexpected fields: {}",
                    unexpected[1..].join(", ")
                ));
            }
            err
        }
        // Objects and arrays would be printed whole; the path already says which value it is.
        _ if e.instance().is_object() || e.instance().is_array() => {
            EncodeError::at(path, e.masked_with("the value").to_string())
        }
        _ => EncodeError::at(path, e.to_string()),
    }
}

/// `/changes/2/file` → `changes[2].file`.
fn dotted(e: &ValidationError<'_>) -> String {
    let mut path = String::new();
    for segment in e.instance_path() {
        match segment {
            LocationSegment::Property(name) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&name);
            }
            LocationSegment::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    path
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// Serves a schema's Confluent references to the validator, by name: `$ref: "money.json"`
/// arrives as `json-schema:///money.json`, an absolute name as itself.
struct References(Vec<(String, Value)>);

impl jsonschema::Retrieve for References {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let asked = uri.as_str();
        let relative = asked.strip_prefix("json-schema:///");
        self.0
            .iter()
            .find(|(name, _)| name == asked || Some(name.trim_start_matches("./")) == relative)
            .map(|(_, schema)| schema.clone())
            .ok_or_else(|| format!("`{asked}` is not one of the schema's references").into())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SCHEMA: &str = r#"{
      "$schema": "http://json-schema.org/draft-07/schema#",
      "title": "CapabilityInvoked",
      "type": "object",
      "additionalProperties": false,
      "required": ["event_id", "type", "changes"],
      "properties": {
        "event_id": {"type": "string"},
        "type": {"enum": ["capability_invoked", "capability_failed"]},
        "changes": {"type": "array", "items": {
            "type": "object", "required": ["file"], "properties": {"file": {"type": "string"}}}},
        "metadata": {"type": "object", "properties": {"source": {"type": "string"}}}
      }
    }"#;

    fn encode(payload: Value) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        JsonSchemaEncoder::new(SCHEMA)
            .unwrap()
            .encode(&payload, &mut out)
            .map(|()| out)
    }

    #[test]
    fn valid_payload_is_written_as_compact_json_text() {
        let out =
            encode(json!({"event_id": "e1", "type": "capability_invoked", "changes": []})).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"changes":[],"event_id":"e1","type":"capability_invoked"}"#
        );
    }

    #[test]
    fn missing_required_field_is_named_with_its_path() {
        let err = encode(json!({"type": "capability_invoked", "changes": []})).unwrap_err();
        assert_eq!(err.to_string(), "field `event_id`: missing required field");
        let err = encode(
            json!({"event_id": "e", "type": "capability_invoked", "changes": [{"file": "a"}, {}]}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "field `changes[1].file`: missing required field"
        );
    }

    #[test]
    fn wrong_type_names_the_dotted_instance_path() {
        let payload = json!({"event_id": "e", "type": "capability_invoked", "changes": [], "metadata": {"source": 5}});
        let err = encode(payload).unwrap_err();
        assert_eq!(err.path, "metadata.source");
        assert!(err.message.contains(r#"is not of type "string""#), "{err}");
    }

    #[test]
    fn value_outside_the_enum_is_rejected_with_the_allowed_values() {
        let err = encode(json!({"event_id": "e", "type": "capability_deleted", "changes": []}))
            .unwrap_err();
        assert_eq!(err.path, "type");
        assert!(err.message.contains("capability_invoked"), "{err}");
    }

    #[test]
    fn additional_property_is_refused_when_additional_properties_is_false() {
        let err = encode(
            json!({"event_id": "e", "type": "capability_invoked", "changes": [], "extra": 1}),
        )
        .unwrap_err();
        assert_eq!(err.path, "extra");
        assert!(err.message.starts_with("not in the schema"), "{err}");
    }

    #[test]
    fn several_problems_are_reported_together_and_the_buffer_is_untouched() {
        let mut out = vec![9];
        let enc = JsonSchemaEncoder::new(SCHEMA).unwrap();
        let err = enc
            .encode(&json!({"type": 1, "changes": {}}), &mut out)
            .unwrap_err();
        assert!(err.message.contains("; also "), "{err}");
        assert_eq!(out, vec![9]);
    }

    #[test]
    fn title_and_properties_answer_the_subject_strategy_questions() {
        let enc = JsonSchemaEncoder::new(SCHEMA).unwrap();
        assert_eq!(enc.record_name().as_deref(), Some("CapabilityInvoked"));
        assert!(enc.has_top_level_field("metadata") && !enc.has_top_level_field("source"));
        assert_eq!(
            JsonSchemaEncoder::new(r#"{"type": "string"}"#)
                .unwrap()
                .record_name(),
            None
        );
    }

    #[test]
    fn unusable_schemas_are_schema_errors() {
        assert!(JsonSchemaEncoder::new("{")
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
        let err = JsonSchemaEncoder::new(r#"{"type": "no-such-type"}"#).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unusable schema: invalid JSON Schema"),
            "{err}"
        );
        assert!(JsonSchemaEncoder::new(r#"{"$ref": "https://example.com/other.json"}"#).is_err());
    }

    /// Encodes the payload given as JSON text (what the relay reads from Postgres).
    fn encode_text(schema: &str, text: &str) -> Result<String, EncodeError> {
        let payload: Value = serde_json::from_str(text).expect("JSON");
        let mut out = Vec::new();
        JsonSchemaEncoder::new(schema)
            .unwrap()
            .encode_text(&payload, text, &mut out)
            .map(|()| String::from_utf8(out).unwrap())
    }

    #[test]
    fn the_event_id_is_added_as_the_first_member_and_the_rest_is_untouched() {
        assert_eq!(
            with_event_id(r#"{"n": 1.50, "a": [1e3]}"#, "e-1"),
            r#"{"event_id": "e-1", "n": 1.50, "a": [1e3]}"#
        );
        assert_eq!(with_event_id("{}", "e-1"), r#"{"event_id": "e-1"}"#);
        assert_eq!(with_event_id(" { } ", "e-1"), r#"{"event_id": "e-1" } "#);
    }

    #[test]
    fn numbers_are_sent_with_their_exact_digits() {
        let schema = r#"{"type": "object", "properties": {"n": {"type": "number"}}}"#;
        for text in [
            r#"{"n": 123456789012345678901234567890}"#,
            r#"{"n": 9007199254740993}"#,
            r#"{"n": 0.1000000000000000055511151231257827}"#,
            r#"{"n": 1.50}"#,
            r#"{"n": -0}"#,
        ] {
            let out = encode_text(schema, text).unwrap();
            let want: Value = serde_json::from_str(text).unwrap();
            let digits = &text[6..text.len() - 1];
            assert!(out.contains(digits), "{text} was sent as {out}");
            assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), want);
        }
    }

    #[test]
    fn numeric_keywords_compare_exact_values_not_their_nearest_doubles() {
        let cases = [
            // (schema, instance, valid?)
            (
                r#"{"maximum": 9007199254740992}"#,
                "9007199254740993",
                false,
            ),
            (r#"{"maximum": 9007199254740993}"#, "9007199254740993", true),
            (
                r#"{"exclusiveMinimum": 0.1}"#,
                "0.1000000000000000000001",
                true,
            ),
            (r#"{"minimum": 0.1000000000000000000001}"#, "0.1", false),
            (r#"{"multipleOf": 3}"#, "9007199254740995", false),
            (r#"{"multipleOf": 3}"#, "9007199254740993", true),
            (r#"{"multipleOf": 0.01}"#, "12345678901234567.89", true),
            (
                r#"{"multipleOf": 0.01}"#,
                "0.1000000000000000055511151231257827",
                false,
            ),
            (r#"{"type": "integer"}"#, "1.0000000000000000001", false),
            (
                r#"{"type": "integer"}"#,
                "123456789012345678901234567890",
                true,
            ),
            (r#"{"const": 9007199254740993}"#, "9007199254740992", false),
            (r#"{"enum": [1.5]}"#, "1.50", true),
        ];
        for (schema, instance, valid) in cases {
            let got = encode_text(schema, instance);
            assert_eq!(got.is_ok(), valid, "{schema} with {instance}: {got:?}");
        }
    }

    #[test]
    fn encoder_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<JsonSchemaEncoder>();
    }

    #[test]
    fn a_ref_resolves_to_a_reference_by_name_and_any_other_remote_ref_fails() {
        let priced = r#"{"type":"object","properties":{"price":{"$ref":"money.json"}}}"#;
        let money = r#"{"type":"object","properties":{"cents":{"type":"integer"}}}"#;
        let references = [("money.json".to_owned(), money.to_owned())];
        let encoder = JsonSchemaEncoder::with_references(priced, &references).unwrap();
        let mut out = Vec::new();
        encoder
            .encode(&json!({"price": {"cents": 5}}), &mut out)
            .unwrap();
        let wrong = encoder.encode(&json!({"price": {"cents": "five"}}), &mut Vec::new());
        assert!(wrong.is_err(), "the referenced schema is applied");
        let other = [("other.json".to_owned(), money.to_owned())];
        assert!(JsonSchemaEncoder::with_references(priced, &other).is_err());
        assert!(JsonSchemaEncoder::new(priced).is_err());
    }
}
