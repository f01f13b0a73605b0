//! Tests for the Avro encoder: every mapping rule in the module docs, decoded back with
//! `apache_avro` so the bytes are proven to be what the reference implementation reads.
// `from_avro_datum` / `to_avro_datum` are deprecated in apache-avro 0.22 in favour of the
// `GenericDatum*` builders; the one-call forms keep these tests short.
#![allow(deprecated)]

use apache_avro::types::Value as Avro;
use apache_avro::{from_avro_datum, Schema};
use serde_json::{json, Value};

use super::AvroEncoder;

/// Encodes `payload` and decodes it back with apache_avro against the same schema.
pub(super) fn round_trip(schema: &str, payload: Value) -> Avro {
    let enc = AvroEncoder::new(schema).expect("schema compiles");
    let mut out = Vec::new();
    enc.encode(&payload, &mut out)
        .unwrap_or_else(|e| panic!("encode failed: {e}"));
    let parsed = Schema::parse_str(schema).unwrap();
    let mut reader = out.as_slice();
    let value = from_avro_datum(&parsed, &mut reader, None).expect("apache_avro decodes our bytes");
    assert!(reader.is_empty(), "trailing bytes after the datum");
    value
}

pub(super) fn encode_err(schema: &str, payload: Value) -> String {
    let enc = AvroEncoder::new(schema).expect("schema compiles");
    let mut out = Vec::new();
    let err = enc
        .encode(&payload, &mut out)
        .expect_err("encode should fail");
    assert!(
        out.is_empty(),
        "a failed encode leaves the buffer as it was"
    );
    err.to_string()
}

fn record(fields: &[(&str, Avro)]) -> Avro {
    Avro::Record(
        fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

pub(super) fn field_of(value: &Avro, name: &str) -> Avro {
    match value {
        Avro::Record(fields) => fields
            .iter()
            .find(|(k, _)| k == name)
            .expect("field")
            .1
            .clone(),
        other => panic!("not a record: {other:?}"),
    }
}

const EVENT: &str = r#"{
  "type": "record", "name": "Event", "namespace": "com.example",
  "fields": [
    {"name": "id", "type": "long"},
    {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["CREATED", "DELETED"]}},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "attrs", "type": {"type": "map", "values": "int"}},
    {"name": "meta", "type": {"type": "record", "name": "Meta", "fields": [
        {"name": "source", "type": "string"},
        {"name": "score", "type": "double"}]}},
    {"name": "note", "type": ["null", "string"], "default": null}
  ]}"#;

#[test]
fn nested_records_arrays_maps_and_enums_decode_to_the_same_values() {
    let payload = json!({"id": 7, "kind": "DELETED", "tags": ["a", "b"], "attrs": {"x": 1},
                         "meta": {"source": "db", "score": 2}, "note": "hi"});
    let got = round_trip(EVENT, payload);
    let expected = record(&[
        ("id", Avro::Long(7)),
        ("kind", Avro::Enum(1, "DELETED".into())),
        (
            "tags",
            Avro::Array(vec![Avro::String("a".into()), Avro::String("b".into())]),
        ),
        (
            "attrs",
            Avro::Map([("x".to_owned(), Avro::Int(1))].into_iter().collect()),
        ),
        (
            "meta",
            record(&[
                ("source", Avro::String("db".into())),
                ("score", Avro::Double(2.0)),
            ]),
        ),
        ("note", Avro::Union(1, Box::new(Avro::String("hi".into())))),
    ]);
    assert_eq!(got, expected);
}

#[test]
fn bytes_equal_apache_avro_own_encoding_of_the_same_value() {
    // One map entry, so apache_avro's HashMap order cannot differ from ours.
    let payload = json!({"id": -300, "kind": "CREATED", "tags": ["t"], "attrs": {"b": 70000},
                         "meta": {"source": "", "score": -0.5}, "note": null});
    let enc = AvroEncoder::new(EVENT).unwrap();
    let mut ours = Vec::new();
    enc.encode(&payload, &mut ours).unwrap();
    let schema = Schema::parse_str(EVENT).unwrap();
    let value = from_avro_datum(&schema, &mut ours.as_slice(), None).unwrap();
    let theirs = apache_avro::to_avro_datum(&schema, value).unwrap();
    assert_eq!(ours, theirs);
}

#[test]
fn json_key_order_does_not_change_the_bytes() {
    let enc = AvroEncoder::new(EVENT).unwrap();
    let a = json!({"id": 1, "kind": "CREATED", "tags": [], "attrs": {"a": 1, "b": 2}, "meta": {"source": "s", "score": 1}});
    let b = json!({"meta": {"score": 1, "source": "s"}, "attrs": {"b": 2, "a": 1}, "tags": [], "kind": "CREATED", "id": 1});
    let (mut x, mut y) = (Vec::new(), Vec::new());
    enc.encode(&a, &mut x).unwrap();
    enc.encode(&b, &mut y).unwrap();
    assert_eq!(x, y);
}

#[test]
fn encode_appends_to_what_is_already_in_the_buffer() {
    let enc = AvroEncoder::new(r#""long""#).unwrap();
    let mut out = vec![0xAA];
    enc.encode(&json!(1), &mut out).unwrap();
    assert_eq!(out, vec![0xAA, 0x02]);
}

#[test]
fn unknown_enum_symbol_names_the_field_and_the_symbols() {
    let payload = json!({"id": 1, "kind": "UPDATED", "tags": [], "attrs": {}, "meta": {"source": "s", "score": 1}});
    let msg = encode_err(EVENT, payload);
    assert_eq!(
        msg,
        "field `kind`: `UPDATED` is not a symbol of enum `com.example.Kind`; allowed: CREATED, DELETED"
    );
}

#[test]
fn missing_field_without_default_is_named_and_with_default_takes_it() {
    let payload =
        json!({"id": 1, "kind": "CREATED", "tags": [], "attrs": {}, "meta": {"score": 1}});
    let msg = encode_err(EVENT, payload);
    assert!(
        msg.starts_with("field `meta.source`: missing required field"),
        "{msg}"
    );
    let ok = json!({"id": 1, "kind": "CREATED", "tags": [], "attrs": {}, "meta": {"source": "s", "score": 1}});
    assert_eq!(
        field_of(&round_trip(EVENT, ok), "note"),
        Avro::Union(0, Box::new(Avro::Null))
    );
}

#[test]
fn field_not_in_the_schema_is_refused_rather_than_dropped() {
    let payload = json!({"id": 1, "kind": "CREATED", "tags": [], "attrs": {}, "extra": true,
                         "meta": {"source": "s", "score": 1}});
    let msg = encode_err(EVENT, payload);
    assert!(
        msg.starts_with("field `extra`: not in the schema of record `com.example.Event`"),
        "{msg}"
    );
}

#[test]
fn errors_inside_arrays_and_maps_carry_index_and_key_in_the_path() {
    let payload = json!({"id": 1, "kind": "CREATED", "tags": ["a", 5], "attrs": {}, "meta": {"source": "s", "score": 1}});
    assert_eq!(
        encode_err(EVENT, payload),
        "field `tags[1]`: expected a string, got a number"
    );
    let payload = json!({"id": 1, "kind": "CREATED", "tags": [], "attrs": {"k": "v"}, "meta": {"source": "s", "score": 1}});
    assert_eq!(
        encode_err(EVENT, payload),
        "field `attrs.k`: expected an int, got a string"
    );
}

#[test]
fn defaults_of_every_kind_are_written_for_missing_fields() {
    let schema = r#"{"type": "record", "name": "D", "fields": [
        {"name": "n", "type": "int", "default": 42},
        {"name": "b", "type": "bytes", "default": "\u00ff\u0001"},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}, "default": "B"},
        {"name": "r", "type": {"type": "record", "name": "R", "fields": [{"name": "x", "type": "string"}]},
         "default": {"x": "dflt"}},
        {"name": "u", "type": ["string", "null"], "default": "s"},
        {"name": "j", "type": "string", "outbox.json": true, "default": "{}"}
    ]}"#;
    let got = round_trip(schema, json!({}));
    let expected = record(&[
        ("n", Avro::Int(42)),
        ("b", Avro::Bytes(vec![0xff, 0x01])),
        ("e", Avro::Enum(1, "B".into())),
        ("r", record(&[("x", Avro::String("dflt".into()))])),
        ("u", Avro::Union(0, Box::new(Avro::String("s".into())))),
        ("j", Avro::String("{}".into())),
    ]);
    assert_eq!(got, expected);
}

#[test]
fn int_fields_reject_fractions_and_values_beyond_32_bits() {
    let schema = r#"{"type": "record", "name": "N", "fields": [{"name": "n", "type": "int"}]}"#;
    assert_eq!(
        encode_err(schema, json!({"n": 1.5})),
        "field `n`: expected an int, got 1.5 which is not an integer"
    );
    assert_eq!(
        encode_err(schema, json!({"n": 1_u64 << 40})),
        "field `n`: 1099511627776 is out of range for an int (32-bit)"
    );
    assert_eq!(
        field_of(&round_trip(schema, json!({"n": 2.0})), "n"),
        Avro::Int(2)
    );
    assert_eq!(
        field_of(&round_trip(schema, json!({"n": i32::MIN})), "n"),
        Avro::Int(i32::MIN)
    );
}

#[test]
fn long_rejects_values_beyond_64_bits_and_strings() {
    assert!(encode_err(r#""long""#, json!(u64::MAX)).contains("out of range for a long"));
    assert_eq!(
        encode_err(r#""long""#, json!("12")),
        "payload: expected a long, got a string"
    );
    assert_eq!(
        round_trip(r#""long""#, json!(i64::MIN)),
        Avro::Long(i64::MIN)
    );
}

#[test]
fn double_and_float_accept_integers_and_float_checks_its_range() {
    assert_eq!(round_trip(r#""double""#, json!(3)), Avro::Double(3.0));
    assert_eq!(round_trip(r#""float""#, json!(1.5)), Avro::Float(1.5));
    assert!(encode_err(r#""float""#, json!(1e300)).contains("out of range for a float"));
    assert_eq!(
        encode_err(r#""double""#, json!("1.0")),
        "payload: expected a double, got a string"
    );
}

#[test]
fn null_and_boolean_need_exactly_their_json_kind() {
    assert_eq!(round_trip(r#""null""#, json!(null)), Avro::Null);
    assert_eq!(round_trip(r#""boolean""#, json!(true)), Avro::Boolean(true));
    assert_eq!(
        encode_err(r#""boolean""#, json!(1)),
        "payload: expected a boolean, got a number"
    );
    assert_eq!(
        encode_err(r#""null""#, json!(0)),
        "payload: expected null, got a number"
    );
}

#[test]
fn bytes_are_the_utf8_of_a_string_or_an_array_of_byte_values() {
    assert_eq!(
        round_trip(r#""bytes""#, json!("hé")),
        Avro::Bytes("hé".as_bytes().to_vec())
    );
    assert_eq!(
        round_trip(r#""bytes""#, json!([0, 255])),
        Avro::Bytes(vec![0, 255])
    );
    assert_eq!(
        encode_err(r#""bytes""#, json!([256])),
        "field `[0]`: expected a byte (0-255)"
    );
}

#[test]
fn fixed_needs_exactly_its_size_in_bytes() {
    let schema = r#"{"type": "fixed", "name": "F", "size": 4}"#;
    assert_eq!(
        round_trip(schema, json!("abcd")),
        Avro::Fixed(4, b"abcd".to_vec())
    );
    assert_eq!(
        encode_err(schema, json!("abc")),
        "payload: fixed `F` needs exactly 4 bytes, got 3"
    );
}

const OPTIONAL: &str = r#"{"type": "record", "name": "O", "namespace": "ns", "fields": [
    {"name": "v", "type": ["null", "int", "string", {"type": "record", "name": "Rec", "fields": [{"name": "a", "type": "int"}]}]}]}"#;

#[test]
fn unions_take_natural_json_in_branch_order() {
    let v = |p| field_of(&round_trip(OPTIONAL, json!({ "v": p })), "v");
    assert_eq!(v(json!(null)), Avro::Union(0, Box::new(Avro::Null)));
    assert_eq!(v(json!(5)), Avro::Union(1, Box::new(Avro::Int(5))));
    assert_eq!(
        v(json!("x")),
        Avro::Union(2, Box::new(Avro::String("x".into())))
    );
    assert_eq!(
        v(json!({"a": 1})),
        Avro::Union(3, Box::new(record(&[("a", Avro::Int(1))])))
    );
}

#[test]
fn unions_take_the_avro_json_wrapper_by_type_full_or_short_name() {
    let v = |p| field_of(&round_trip(OPTIONAL, json!({ "v": p })), "v");
    assert_eq!(
        v(json!({"string": "x"})),
        Avro::Union(2, Box::new(Avro::String("x".into())))
    );
    assert_eq!(v(json!({"int": 3})), Avro::Union(1, Box::new(Avro::Int(3))));
    let rec = Avro::Union(3, Box::new(record(&[("a", Avro::Int(1))])));
    assert_eq!(v(json!({"ns.Rec": {"a": 1}})), rec);
    assert_eq!(v(json!({"Rec": {"a": 1}})), rec);
}

#[test]
fn union_with_no_fitting_branch_says_which_were_tried() {
    assert_eq!(
        encode_err(OPTIONAL, json!({"v": true})),
        "field `v`: expected one of [null, int, string, ns.Rec], got a boolean"
    );
    // Only one branch has the shape of an object, so its own error is reported.
    assert!(
        encode_err(OPTIONAL, json!({"v": {"a": "no"}})).starts_with("field `v.a`: expected an int")
    );
    let msg = encode_err(r#"["int", "float"]"#, json!(1e300));
    assert!(
        msg.starts_with("payload: fits no branch of the union; tried int: "),
        "{msg}"
    );
    assert!(msg.contains("float: 1e+300 is out of range"), "{msg}");
}

#[test]
fn union_of_int_and_long_falls_through_to_long_for_big_numbers() {
    assert_eq!(
        round_trip(r#"["int", "long"]"#, json!(1_i64 << 40)),
        Avro::Union(1, Box::new(Avro::Long(1 << 40)))
    );
    assert_eq!(
        round_trip(r#"["long", "double"]"#, json!(0.5)),
        Avro::Union(1, Box::new(Avro::Double(0.5)))
    );
}

#[test]
fn outbox_json_string_field_writes_any_json_value_as_compact_text() {
    let schema = r#"{"type": "record", "name": "C", "fields": [
        {"name": "parameters", "type": "string", "outbox.json": true},
        {"name": "extra", "type": ["null", "string"], "outbox.json": true, "default": null}]}"#;
    let got = round_trip(
        schema,
        json!({"parameters": {"query": "x", "limit": 10}, "extra": {"string": 1}}),
    );
    assert_eq!(
        field_of(&got, "parameters"),
        Avro::String(r#"{"limit":10,"query":"x"}"#.into())
    );
    // In a free-form union a one-key object is data, not Avro's union wrapper.
    assert_eq!(
        field_of(&got, "extra"),
        Avro::Union(1, Box::new(Avro::String(r#"{"string":1}"#.into())))
    );
    let got = round_trip(schema, json!({"parameters": "plain", "extra": null}));
    assert_eq!(
        field_of(&got, "parameters"),
        Avro::String(r#""plain""#.into())
    );
    assert_eq!(
        field_of(&got, "extra"),
        Avro::Union(0, Box::new(Avro::Null))
    );
}

#[test]
fn string_field_without_outbox_json_requires_a_json_string() {
    let schema =
        r#"{"type": "record", "name": "C", "fields": [{"name": "parameters", "type": "string"}]}"#;
    assert_eq!(
        encode_err(schema, json!({"parameters": {"a": 1}})),
        "field `parameters`: expected a string, got an object"
    );
}

#[test]
fn outbox_json_on_a_non_string_field_is_a_schema_error() {
    let schema = r#"{"type": "record", "name": "C", "fields": [{"name": "n", "type": "int", "outbox.json": true}]}"#;
    let err = AvroEncoder::new(schema).unwrap_err().to_string();
    assert!(
        err.contains("field `n` of `C`") && err.contains("outbox.json"),
        "{err}"
    );
}

#[test]
fn named_references_recursion_and_namespaces_resolve() {
    let schema = r#"{"type": "record", "name": "Node", "namespace": "com.example.list", "fields": [
        {"name": "value", "type": "int"},
        {"name": "meta", "type": {"type": "record", "name": "Meta", "namespace": "com.other", "fields": [{"name": "k", "type": "string"}]}},
        {"name": "meta2", "type": "com.other.Meta"},
        {"name": "next", "type": ["null", "Node"], "default": null}]}"#;
    let payload = json!({"value": 1, "meta": {"k": "a"}, "meta2": {"k": "b"},
                         "next": {"value": 2, "meta": {"k": "c"}, "meta2": {"k": "d"}, "next": null}});
    let got = round_trip(schema, payload);
    let inner = field_of(&got, "next");
    let Avro::Union(1, inner) = inner else {
        panic!("expected the Node branch: {inner:?}")
    };
    assert_eq!(field_of(&inner, "value"), Avro::Int(2));
    assert_eq!(
        field_of(&inner, "next"),
        Avro::Union(0, Box::new(Avro::Null))
    );
    let enc = AvroEncoder::new(schema).unwrap();
    assert_eq!(enc.record_name().as_deref(), Some("com.example.list.Node"));
    let deep = json!({"value": 1, "meta": {"k": "a"}, "meta2": {"k": "b"},
                      "next": {"value": 2, "meta": {"k": "c"}, "meta2": {"k": 9}}});
    assert!(encode_err(schema, deep).starts_with("field `next.meta2.k`: expected a string"));
}

#[test]
fn record_name_and_top_level_fields_are_reported_for_records_and_unions() {
    let enc = AvroEncoder::new(EVENT).unwrap();
    assert_eq!(enc.record_name().as_deref(), Some("com.example.Event"));
    assert!(enc.has_top_level_field("meta") && !enc.has_top_level_field("source"));
    let union = AvroEncoder::new(
        r#"["null", {"type": "record", "name": "A", "fields": [{"name": "a", "type": "int"}]}]"#,
    )
    .unwrap();
    assert_eq!(union.record_name(), None);
    assert!(union.has_top_level_field("a") && !union.has_top_level_field("b"));
    assert_eq!(AvroEncoder::new(r#""string""#).unwrap().record_name(), None);
}

#[test]
fn invalid_schema_text_is_a_schema_error() {
    let err = AvroEncoder::new(r#"{"type": "record", "name": "X"}"#).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("unusable schema: invalid Avro schema"),
        "{err}"
    );
    assert!(AvroEncoder::new("not json").is_err());
    assert!(AvroEncoder::new(
        r#"{"type": "record", "name": "X", "fields": [{"name": "a", "type": "Missing"}]}"#
    )
    .is_err());
}

#[test]
fn encoder_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<AvroEncoder>();
}
