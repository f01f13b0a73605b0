//! Tests for the protobuf encoder: JSON mapping, error paths, Confluent message indexes, and
//! decoding our bytes back with prost-reflect.

use prost_reflect::{DynamicMessage, ReflectMessage, Value as Pb};
use serde_json::{json, Value};

use super::ProtobufEncoder;

const PROTO: &str = r#"
syntax = "proto3";
package outbox.events;

import "google/protobuf/timestamp.proto";
import "google/protobuf/struct.proto";

message CapabilityInvoked {
  string conversation_id = 1;
  int64 timestamp = 2;
  Kind kind = 3;
  repeated Change changes = 4;
  Meta meta = 5;
  google.protobuf.Timestamp at = 6;
  google.protobuf.Struct parameters = 7;

  enum Kind { KIND_UNSPECIFIED = 0; SEARCH = 1; WRITE = 2; }
  message Meta { string source = 1; }
}

message Change {
  string file = 1;
  int32 lines = 2;
}
"#;

fn encoder(message: Option<&str>) -> ProtobufEncoder {
    ProtobufEncoder::new(PROTO, message).expect("schema compiles")
}

/// Encodes, checks the index prefix, and decodes the rest back into a message.
fn round_trip(enc: &ProtobufEncoder, payload: Value, prefix: &[u8]) -> DynamicMessage {
    let mut out = Vec::new();
    enc.encode(&payload, &mut out)
        .unwrap_or_else(|e| panic!("encode failed: {e}"));
    assert_eq!(&out[..prefix.len()], prefix, "message-index prefix");
    DynamicMessage::decode(enc.message.clone(), &out[prefix.len()..]).expect("decodes")
}

fn get(msg: &DynamicMessage, field: &str) -> Pb {
    msg.get_field_by_name(field)
        .expect("field exists")
        .into_owned()
}

#[test]
fn nested_repeated_enum_and_int64_fields_decode_to_the_values_sent() {
    let payload = json!({
        "conversation_id": "conv-123",
        "timestamp": 1_764_000_000_000_i64,
        "kind": "WRITE",
        "changes": [{"file": "a.rs", "lines": 3}, {"file": "b.rs"}],
        "meta": {"source": "db"}
    });
    let msg = round_trip(&encoder(None), payload, &[0x00]);
    assert_eq!(get(&msg, "conversation_id"), Pb::String("conv-123".into()));
    assert_eq!(get(&msg, "timestamp"), Pb::I64(1_764_000_000_000));
    assert_eq!(get(&msg, "kind"), Pb::EnumNumber(2));
    let Pb::List(changes) = get(&msg, "changes") else {
        panic!("changes is a list")
    };
    assert_eq!(changes.len(), 2);
    let second = changes[1].as_message().unwrap();
    assert_eq!(get(second, "file"), Pb::String("b.rs".into()));
    let meta = get(&msg, "meta");
    assert_eq!(
        get(meta.as_message().unwrap(), "source"),
        Pb::String("db".into())
    );
}

#[test]
fn int64_is_accepted_as_a_number_or_a_string() {
    let enc = encoder(None);
    let a = round_trip(&enc, json!({"timestamp": 42}), &[0]);
    let b = round_trip(&enc, json!({"timestamp": "42"}), &[0]);
    assert_eq!(get(&a, "timestamp"), Pb::I64(42));
    assert_eq!(a, b);
}

#[test]
fn camel_case_json_names_are_accepted_like_proto_names() {
    let msg = round_trip(&encoder(None), json!({"conversationId": "c"}), &[0]);
    assert_eq!(get(&msg, "conversation_id"), Pb::String("c".into()));
}

#[test]
fn well_known_timestamp_and_struct_take_their_json_forms() {
    let payload =
        json!({"at": "2025-11-24T16:00:00Z", "parameters": {"query": "outbox", "limit": 10}});
    let msg = round_trip(&encoder(None), payload, &[0]);
    let at = get(&msg, "at");
    assert_eq!(
        get(at.as_message().unwrap(), "seconds"),
        Pb::I64(1_764_000_000)
    );
    let params = get(&msg, "parameters");
    assert_eq!(
        params.as_message().unwrap().descriptor().full_name(),
        "google.protobuf.Struct"
    );
}

#[test]
fn unknown_field_is_refused_and_named() {
    let mut out = Vec::new();
    let err = encoder(None)
        .encode(&json!({"conversation_id": "c", "surprise": 1}), &mut out)
        .unwrap_err();
    assert_eq!(err.path, "surprise", "{err}");
    assert_eq!(err.message, "not in the schema (refusing to drop data)");
    assert!(
        out.is_empty(),
        "a failed encode leaves the buffer as it was"
    );
}

#[test]
fn wrong_type_deep_in_a_repeated_message_names_the_dotted_path() {
    let err = encoder(None)
        .encode(
            &json!({"changes": [{"file": "a"}, {"lines": "many"}]}),
            &mut Vec::new(),
        )
        .unwrap_err();
    assert_eq!(err.path, "changes[1].lines", "{err}");
    assert!(
        err.to_string().starts_with("field `changes[1].lines`: "),
        "{err}"
    );
}

#[test]
fn unknown_enum_name_names_the_field_and_the_allowed_values() {
    let err = encoder(None)
        .encode(&json!({"kind": "DELETE"}), &mut Vec::new())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "field `kind`: unrecognized enum value 'DELETE'; allowed: KIND_UNSPECIFIED, SEARCH, WRITE"
    );
    let nested = encoder(None)
        .encode(&json!({"meta": {"x": 1}}), &mut Vec::new())
        .unwrap_err();
    assert_eq!(nested.path, "meta.x", "{nested}");
    assert_eq!(err.path, "kind", "{err}");
}

#[test]
fn second_top_level_message_is_prefixed_with_count_one_index_one() {
    let enc = encoder(Some("outbox.events.Change"));
    let msg = round_trip(&enc, json!({"file": "x"}), &[0x02, 0x02]);
    assert_eq!(get(&msg, "file"), Pb::String("x".into()));
}

#[test]
fn nested_message_is_prefixed_with_its_path_through_the_parents() {
    // Meta is nested message 0 of top-level message 0: indexes [0, 0] → count 2, 0, 0.
    let enc = encoder(Some("outbox.events.CapabilityInvoked.Meta"));
    let msg = round_trip(&enc, json!({"source": "s"}), &[0x04, 0x00, 0x00]);
    assert_eq!(get(&msg, "source"), Pb::String("s".into()));
    assert_eq!(
        super::confluent_indexes(&[4, 1, 3, 2]),
        vec![0x04, 0x02, 0x04]
    );
    assert_eq!(super::confluent_indexes(&[4, 70]), vec![0x02, 0x8c, 0x01]);
}

#[test]
fn record_name_and_top_level_fields_follow_the_chosen_message() {
    let enc = encoder(None);
    assert_eq!(
        enc.record_name().as_deref(),
        Some("outbox.events.CapabilityInvoked")
    );
    assert!(
        enc.has_top_level_field("conversation_id") && enc.has_top_level_field("conversationId")
    );
    assert!(!enc.has_top_level_field("file"));
    assert!(encoder(Some(".outbox.events.Change")).has_top_level_field("file"));
}

#[test]
fn unusable_schemas_are_schema_errors() {
    let bad = ProtobufEncoder::new("syntax = \"proto3\"; message {", None).unwrap_err();
    assert!(
        bad.to_string()
            .starts_with("unusable schema: invalid protobuf schema"),
        "{bad}"
    );
    let empty = ProtobufEncoder::new("syntax = \"proto3\"; package p;", None).unwrap_err();
    assert!(empty.to_string().contains("no message type"), "{empty}");
    let missing = ProtobufEncoder::new(PROTO, Some("outbox.events.Nope")).unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("no message `outbox.events.Nope`"),
        "{missing}"
    );
    let imported = ProtobufEncoder::new(PROTO, Some("google.protobuf.Timestamp")).unwrap_err();
    assert!(imported.to_string().contains("no message"), "{imported}");
    let reference = ProtobufEncoder::new(
        "syntax = \"proto3\"; import \"other.proto\"; message A {}",
        None,
    );
    assert!(reference.is_err());
}

#[test]
fn encoder_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ProtobufEncoder>();
}
