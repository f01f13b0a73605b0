//! Property test for the Avro encoder: random JSON that fits a non-trivial schema encodes, and
//! apache_avro decodes the bytes to exactly the values that went in.
// `from_avro_datum` is deprecated in apache-avro 0.22 (see avro_tests.rs).
#![allow(deprecated)]

use std::collections::{BTreeMap, HashMap};

use apache_avro::types::Value as Avro;
use apache_avro::{from_avro_datum, Schema};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::AvroEncoder;

const ORDER: &str = r#"{"type": "record", "name": "Order", "namespace": "com.example", "fields": [
  {"name": "id", "type": "long"},
  {"name": "price", "type": "double"},
  {"name": "active", "type": "boolean"},
  {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID", "SHIPPED"]}},
  {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "lines", "type": {"type": "array", "items": {"type": "record", "name": "Line", "fields": [
      {"name": "sku", "type": "string"},
      {"name": "qty", "type": "long"},
      {"name": "note", "type": ["null", "string"], "default": null}]}}},
  {"name": "labels", "type": {"type": "map", "values": "string"}},
  {"name": "customer", "type": ["null", {"type": "record", "name": "Customer", "fields": [
      {"name": "name", "type": "string"}, {"name": "vip", "type": "boolean"}]}], "default": null}
]}"#;

const SYMBOLS: [&str; 3] = ["NEW", "PAID", "SHIPPED"];

/// A JSON value for the schema and the Avro value apache_avro should decode from its bytes.
type Case = (Value, Avro);

fn record(fields: Vec<(&str, Avro)>) -> Avro {
    Avro::Record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn finite_double() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<i32>().prop_map(f64::from),
        proptest::num::f64::NORMAL | proptest::num::f64::ZERO | proptest::num::f64::SUBNORMAL,
    ]
}

/// An optional string written each way a payload may carry it: absent, null, bare, wrapped.
fn note() -> impl Strategy<Value = (Option<Value>, Avro)> {
    let null = Avro::Union(0, Box::new(Avro::Null));
    prop_oneof![
        Just((None, null.clone())),
        Just((Some(Value::Null), null)),
        ".*".prop_map(|s| (Some(json!(s)), Avro::Union(1, Box::new(Avro::String(s))))),
        ".*".prop_map(|s| (
            Some(json!({ "string": s })),
            Avro::Union(1, Box::new(Avro::String(s)))
        )),
    ]
}

fn line() -> impl Strategy<Value = Case> {
    (".*", any::<i64>(), note()).prop_map(|(sku, qty, (note_json, note_avro))| {
        let mut obj = Map::new();
        obj.insert("sku".into(), json!(sku));
        obj.insert("qty".into(), json!(qty));
        if let Some(n) = note_json {
            obj.insert("note".into(), n);
        }
        let avro = record(vec![
            ("sku", Avro::String(sku)),
            ("qty", Avro::Long(qty)),
            ("note", note_avro),
        ]);
        (Value::Object(obj), avro)
    })
}

fn customer() -> impl Strategy<Value = (Option<Value>, Avro)> {
    let null = Avro::Union(0, Box::new(Avro::Null));
    prop_oneof![
        Just((None, null.clone())),
        Just((Some(Value::Null), null)),
        (".*", any::<bool>()).prop_map(|(name, vip)| {
            let avro = record(vec![
                ("name", Avro::String(name.clone())),
                ("vip", Avro::Boolean(vip)),
            ]);
            (
                Some(json!({"name": name, "vip": vip})),
                Avro::Union(1, Box::new(avro)),
            )
        }),
    ]
}

/// Milliseconds as a bare integer or as an RFC 3339 string with millisecond digits.
fn timestamp() -> impl Strategy<Value = Case> {
    (-62_135_596_800_000_i64..253_402_300_799_999, any::<bool>()).prop_map(|(ms, as_text)| {
        let json = if as_text {
            let dt = chrono::DateTime::from_timestamp_millis(ms).expect("in chrono's range");
            json!(dt.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        } else {
            json!(ms)
        };
        (json, Avro::TimestampMillis(ms))
    })
}

fn order() -> impl Strategy<Value = Case> {
    (
        (
            any::<i64>(),
            finite_double(),
            any::<bool>(),
            0..SYMBOLS.len(),
            timestamp(),
        ),
        proptest::collection::vec(line(), 0..4),
        proptest::collection::btree_map("[a-z]{0,6}", ".*", 0..4),
        customer(),
    )
        .prop_map(
            |(
                (id, price, active, status, (at_json, at_avro)),
                lines,
                labels,
                (cust_json, cust_avro),
            )| {
                let labels: BTreeMap<String, String> = labels;
                let mut obj = Map::new();
                obj.insert("id".into(), json!(id));
                obj.insert("price".into(), json!(price));
                obj.insert("active".into(), json!(active));
                obj.insert("status".into(), json!(SYMBOLS[status]));
                obj.insert("at".into(), at_json);
                obj.insert(
                    "lines".into(),
                    Value::Array(lines.iter().map(|(j, _)| j.clone()).collect()),
                );
                obj.insert("labels".into(), json!(labels));
                if let Some(c) = cust_json {
                    obj.insert("customer".into(), c);
                }
                let avro_labels: HashMap<String, Avro> = labels
                    .into_iter()
                    .map(|(k, v)| (k, Avro::String(v)))
                    .collect();
                let avro = record(vec![
                    ("id", Avro::Long(id)),
                    ("price", Avro::Double(price)),
                    ("active", Avro::Boolean(active)),
                    (
                        "status",
                        Avro::Enum(u32::try_from(status).unwrap(), SYMBOLS[status].to_owned()),
                    ),
                    ("at", at_avro),
                    (
                        "lines",
                        Avro::Array(lines.into_iter().map(|(_, a)| a).collect()),
                    ),
                    ("labels", Avro::Map(avro_labels)),
                    ("customer", cust_avro),
                ]);
                (Value::Object(obj), avro)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_json_fitting_the_schema_round_trips_through_avro((payload, expected) in order()) {
        let encoder = AvroEncoder::new(ORDER).unwrap();
        let schema = Schema::parse_str(ORDER).unwrap();
        // Also parse the payload from text, as the relay does with the row's jsonb.
        let payload: Value = serde_json::from_str(&payload.to_string()).unwrap();
        let mut out = Vec::new();
        encoder.encode(&payload, &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut reader = out.as_slice();
        let decoded = from_avro_datum(&schema, &mut reader, None).unwrap();
        prop_assert!(reader.is_empty());
        prop_assert_eq!(decoded, expected);
    }
}
