//! The seed's event catalogue (`schemas/`): one Avro value schema per topic, one example payload
//! per event type. Every example encodes with the relay's own encoder for its topic's schema and
//! decodes back, with `apache_avro`, to the same event. Pure: no Postgres, Kafka or registry.

// `from_avro_datum` is deprecated in apache-avro 0.22; the one-call form keeps this short.
#![allow(deprecated)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use apache_avro::schema::RecordSchema;
use apache_avro::types::Value as Avro;
use apache_avro::{from_avro_datum, Schema};
use outbox_relay::serialize::avro::AvroEncoder;
use serde_json::{json, Value};

/// (event type, topic, record full name), as the seed's MCP and Evolution publishers emit them.
#[rustfmt::skip]
const EVENTS: &[(&str, &str, &str)] = &[
    ("conversation_created", "mcp.conversations", "agent_orchestration.events.mcp.ConversationCreated"),
    ("message_added", "mcp.messages", "agent_orchestration.events.mcp.MessageAdded"),
    ("response_generated", "mcp.responses", "agent_orchestration.events.mcp.ResponseGenerated"),
    ("capability_invoked", "mcp.capabilities", "agent_orchestration.events.mcp.CapabilityInvoked"),
    ("capability_completed", "mcp.capabilities", "agent_orchestration.events.mcp.CapabilityCompleted"),
    ("evolution_proposal_created", "evolution.proposals", "agent_orchestration.events.evolution.EvolutionProposalCreated"),
    ("evolution_validation_started", "evolution.validations", "agent_orchestration.events.evolution.EvolutionValidationStarted"),
    ("evolution_validation_completed", "evolution.validations", "agent_orchestration.events.evolution.EvolutionValidationCompleted"),
    ("evolution_applied", "evolution.implementations", "agent_orchestration.events.evolution.EvolutionApplied"),
];

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

/// The value schema text of `topic` (topic subject strategy: `<topic>-value`).
fn schema_text(topic: &str) -> String {
    let path = schemas_dir().join(format!("{topic}-value.avsc"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn example(event_type: &str) -> Value {
    let path = schemas_dir()
        .join("examples")
        .join(format!("{event_type}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn encode(topic: &str, payload: &Value) -> Result<Vec<u8>, String> {
    let encoder = AvroEncoder::new(&schema_text(topic)).expect("the topic's schema compiles");
    let mut out = Vec::new();
    encoder
        .encode(payload, &mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Decodes `bytes` with apache_avro; returns the record schema of the branch written (the
/// schema itself when it is a record) and the record's fields.
fn decode(topic: &str, bytes: &[u8]) -> (RecordSchema, Vec<(String, Avro)>) {
    let schema = Schema::parse_str(&schema_text(topic)).unwrap();
    let mut reader = bytes;
    let value = from_avro_datum(&schema, &mut reader, None).expect("apache_avro decodes the bytes");
    assert!(reader.is_empty(), "{topic}: trailing bytes after the datum");
    let (record_schema, value) = match (&schema, value) {
        (Schema::Union(u), Avro::Union(i, v)) => (u.variants()[i as usize].clone(), *v),
        (Schema::Record(_), v) => (schema.clone(), v),
        (s, v) => panic!("{topic}: unexpected schema/value shape {s:?} / {v:?}"),
    };
    match (record_schema, value) {
        (Schema::Record(r), Avro::Record(fields)) => (r, fields),
        (s, v) => panic!("{topic}: not a record: {s:?} / {v:?}"),
    }
}

/// The decoded record as the JSON event it came from. Free-form fields (`"outbox.json": true`)
/// must be JSON text on the wire and are parsed back; the typed fields must carry the logical
/// types the catalogue promises consumers.
fn as_event(record: &RecordSchema, fields: Vec<(String, Avro)>) -> Value {
    let mut event = serde_json::Map::new();
    for (name, value) in fields {
        let field = &record.fields[record.lookup[&name]];
        let json_text = field.custom_attributes.get("outbox.json") == Some(&Value::Bool(true));
        let decoded = match (name.as_str(), value) {
            (_, Avro::String(text)) if json_text => serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{name} is not JSON text ({e}): {text:?}")),
            ("event_id", Avro::Uuid(u)) => json!(u.hyphenated().to_string()),
            ("type", Avro::Enum(_, symbol)) => json!(symbol),
            ("timestamp", Avro::TimestampMillis(ms)) => json!(ms),
            (name @ ("event_id" | "type" | "timestamp"), other) => {
                panic!("{name} decoded as {other:?}, not its catalogue type")
            }
            (_, other) => plain(&name, other),
        };
        event.insert(name, decoded);
    }
    Value::Object(event)
}

fn plain(name: &str, value: Avro) -> Value {
    match value {
        Avro::String(s) => json!(s),
        Avro::Int(i) => json!(i),
        Avro::Long(i) => json!(i),
        Avro::Double(d) => json!(d),
        Avro::Boolean(b) => json!(b),
        Avro::Array(items) => Value::Array(items.into_iter().map(|v| plain(name, v)).collect()),
        other => panic!("{name}: no catalogue field decodes as {other:?}"),
    }
}

#[test]
fn every_example_payload_encodes_for_its_topic_and_decodes_back_to_the_same_event() {
    for &(event_type, topic, record_name) in EVENTS {
        let payload = example(event_type);
        let bytes = encode(topic, &payload).unwrap_or_else(|e| panic!("{event_type}: {e}"));
        let (record, fields) = decode(topic, &bytes);
        assert_eq!(
            record.name.fullname(None),
            record_name,
            "{event_type}: union branch written"
        );
        assert_eq!(
            as_event(&record, fields),
            payload,
            "{event_type} on {topic}"
        );
    }
}

#[test]
fn free_form_objects_travel_as_their_compact_json_text() {
    let payload = example("capability_completed");
    let (_, fields) = decode(
        "mcp.capabilities",
        &encode("mcp.capabilities", &payload).unwrap(),
    );
    let result = fields
        .iter()
        .find(|(n, _)| n == "result")
        .map(|(_, v)| v.clone());
    assert_eq!(
        result,
        Some(Avro::String(r#"{"hits":3,"top":["a","b","c"]}"#.into()))
    );
}

#[test]
fn a_conversation_created_without_metadata_gets_the_seeds_default_of_an_empty_object() {
    let mut payload = example("conversation_created");
    payload.as_object_mut().unwrap().remove("metadata");
    let (record, fields) = decode(
        "mcp.conversations",
        &encode("mcp.conversations", &payload).unwrap(),
    );
    assert_eq!(as_event(&record, fields)["metadata"], json!({}));
}

#[test]
fn an_event_whose_type_names_the_other_event_of_its_topic_is_refused() {
    // The single-symbol `type` enums make the type and the fields agree, so a mislabelled
    // event is parked instead of reaching consumers under the wrong type.
    let mut payload = example("capability_completed");
    payload["type"] = json!("capability_invoked");
    let err = encode("mcp.capabilities", &payload).expect_err("a mislabelled event is refused");
    assert!(!err.is_empty());
    let mut payload = example("evolution_validation_started");
    payload["type"] = json!("evolution_validation_completed");
    encode("evolution.validations", &payload).expect_err("a mislabelled event is refused");
}

#[test]
fn an_event_with_a_field_the_seed_does_not_declare_is_refused() {
    let mut payload = example("message_added");
    payload["sentiment"] = json!("positive");
    let err = encode("mcp.messages", &payload).expect_err("unknown fields are never dropped");
    assert!(err.contains("sentiment"), "{err}");
}

#[test]
fn the_catalogue_has_one_schema_per_seed_topic_and_one_example_per_event_type() {
    let names = |dir: PathBuf, ext: &str| -> BTreeSet<String> {
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == ext))
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    let subjects: BTreeSet<String> = EVENTS
        .iter()
        .map(|(_, t, _)| format!("{t}-value"))
        .collect();
    assert_eq!(names(schemas_dir(), "avsc"), subjects);
    // auto_register would register a `.json` or `.proto` beside them as a schema too.
    assert!(names(schemas_dir(), "json").is_empty());
    assert!(names(schemas_dir(), "proto").is_empty());
    let types: BTreeSet<String> = EVENTS.iter().map(|(e, _, _)| e.to_string()).collect();
    assert_eq!(names(schemas_dir().join("examples"), "json"), types);
}
