//! Tests for the Avro logical types through the whole encoder: timestamps, dates, times,
//! uuid and decimal, decoded back with `apache_avro`.

use apache_avro::types::Value as Avro;
use apache_avro::Decimal;
use serde_json::json;

use super::tests::{encode_err, field_of, round_trip};

fn logical(type_json: &str) -> String {
    format!(
        r#"{{"type": "record", "name": "L", "fields": [{{"name": "v", "type": {type_json}}}]}}"#
    )
}

#[test]
fn timestamps_accept_integers_and_rfc3339_strings() {
    let ms = logical(r#"{"type": "long", "logicalType": "timestamp-millis"}"#);
    assert_eq!(
        field_of(&round_trip(&ms, json!({"v": 1_764_000_000_000_i64})), "v"),
        Avro::TimestampMillis(1_764_000_000_000)
    );
    assert_eq!(
        field_of(
            &round_trip(&ms, json!({"v": "2025-11-24T16:00:00.5Z"})),
            "v"
        ),
        Avro::TimestampMillis(1_764_000_000_500)
    );
    let us = logical(r#"{"type": "long", "logicalType": "timestamp-micros"}"#);
    assert_eq!(
        field_of(&round_trip(&us, json!({"v": "1970-01-01T00:00:01Z"})), "v"),
        Avro::TimestampMicros(1_000_000)
    );
    let local = logical(r#"{"type": "long", "logicalType": "local-timestamp-millis"}"#);
    assert_eq!(
        field_of(
            &round_trip(&local, json!({"v": "1970-01-01T00:00:02"})),
            "v"
        ),
        Avro::LocalTimestampMillis(2000)
    );
    assert!(encode_err(&ms, json!({"v": "last tuesday"}))
        .starts_with("field `v`: `last tuesday` is not an RFC 3339 timestamp"));
}

#[test]
fn dates_accept_day_numbers_and_iso_dates_and_times_accept_integers() {
    let date = logical(r#"{"type": "int", "logicalType": "date"}"#);
    assert_eq!(
        field_of(&round_trip(&date, json!({"v": "2025-11-24"})), "v"),
        Avro::Date(20_416)
    );
    assert_eq!(
        field_of(&round_trip(&date, json!({"v": 3})), "v"),
        Avro::Date(3)
    );
    let tm = logical(r#"{"type": "int", "logicalType": "time-millis"}"#);
    assert_eq!(
        field_of(&round_trip(&tm, json!({"v": 1000})), "v"),
        Avro::TimeMillis(1000)
    );
    assert!(encode_err(&tm, json!({"v": 86_400_000})).contains("is not a time of day"));
    let tu = logical(r#"{"type": "long", "logicalType": "time-micros"}"#);
    assert_eq!(
        field_of(&round_trip(&tu, json!({"v": 5})), "v"),
        Avro::TimeMicros(5)
    );
}

#[test]
fn uuid_strings_are_validated_and_written_canonically() {
    let schema = logical(r#"{"type": "string", "logicalType": "uuid"}"#);
    let id = "2B1F0E4E-8F5C-4A7E-9A8E-2F6C3D1E0B77";
    let expected = uuid::Uuid::parse_str(id).unwrap();
    assert_eq!(
        field_of(&round_trip(&schema, json!({ "v": id })), "v"),
        Avro::Uuid(expected)
    );
    assert!(encode_err(&schema, json!({"v": "not-a-uuid"}))
        .starts_with("field `v`: `not-a-uuid` is not a valid UUID"));
}

#[test]
fn decimals_from_strings_and_numbers_respect_scale_and_precision() {
    let bytes =
        logical(r#"{"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}"#);
    let dec = |n: i64| {
        Avro::Decimal(Decimal::from(
            super::logical::twos_complement(n.into(), None).unwrap(),
        ))
    };
    assert_eq!(
        field_of(&round_trip(&bytes, json!({"v": "12.34"})), "v"),
        dec(1234)
    );
    assert_eq!(
        field_of(&round_trip(&bytes, json!({"v": -1.5})), "v"),
        dec(-150)
    );
    assert!(encode_err(&bytes, json!({"v": "1.234"})).contains("more than 2 decimal places"));
    assert!(encode_err(&bytes, json!({"v": "12345.6"})).contains("does not fit decimal(6, 2)"));
    let fixed = logical(
        r#"{"type": "fixed", "name": "D8", "size": 8, "logicalType": "decimal", "precision": 10, "scale": 3}"#,
    );
    let got = round_trip(&fixed, json!({"v": "-0.001"}));
    let expected = super::logical::twos_complement(-1, Some(8)).unwrap();
    assert_eq!(field_of(&got, "v"), Avro::Decimal(Decimal::from(expected)));
}
