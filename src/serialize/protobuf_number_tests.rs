//! Numbers through the Protobuf encoder, as table tests on JSON *text* (what the relay reads
//! from Postgres): integer fields (also repeated, map values, wrappers, enums by number) are
//! exact or refused naming the field, the value and the type; float/double fields take the
//! nearest binary value; overflow is refused.

use prost_reflect::{DynamicMessage, Value as Pb};
use serde_json::Value;

use super::ProtobufEncoder;

const PROTO: &str = r#"
syntax = "proto3";
package n;

import "google/protobuf/wrappers.proto";
import "google/protobuf/struct.proto";

message Numbers {
  int32 i32 = 1;
  int64 i64 = 2;
  uint32 u32 = 3;
  uint64 u64 = 4;
  sint64 s64 = 5;
  fixed64 f64 = 6;
  sfixed32 sf32 = 7;
  float fl = 8;
  double db = 9;
  repeated int64 many = 10;
  map<string, uint64> by_name = 11;
  google.protobuf.Int64Value wrapped = 12;
  Color color = 13;
  Inner inner = 14;
  google.protobuf.Struct free = 15;
  google.protobuf.DoubleValue wrapped_double = 16;

  enum Color { COLOR_UNSPECIFIED = 0; RED = 1; }
  message Inner { repeated uint32 counts = 1; }
}
"#;

fn encode(text: &str) -> Result<DynamicMessage, String> {
    let enc = ProtobufEncoder::new(PROTO, None).expect("schema compiles");
    let payload: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{text} is JSON: {e}"));
    let mut out = Vec::new();
    enc.encode(&payload, &mut out).map_err(|e| e.to_string())?;
    assert_eq!(out[0], 0, "message index [0]");
    Ok(DynamicMessage::decode(enc.message.clone(), &out[1..]).expect("decodes"))
}

fn field(msg: &DynamicMessage, path: &[&str]) -> Pb {
    let mut value = msg
        .get_field_by_name(path[0])
        .expect("field exists")
        .into_owned();
    for name in &path[1..] {
        value = value
            .as_message()
            .expect("a message")
            .get_field_by_name(name)
            .expect("field exists")
            .into_owned();
    }
    value
}

/// A number's text as serde_json keeps it: as written, except that an exponent gets its sign
/// (`1e8` → `1e+8`). Postgres prints jsonb numbers without exponents anyway.
fn written(text: &str) -> String {
    serde_json::from_str::<serde_json::Number>(text)
        .unwrap()
        .to_string()
}

#[test]
fn integer_fields_keep_their_exact_value_however_the_number_is_written() {
    let ok: &[(&str, &[&str], Pb)] = &[
        (
            r#"{"i64": 9007199254740993}"#,
            &["i64"],
            Pb::I64(9_007_199_254_740_993),
        ),
        (
            r#"{"i64": 9007199254740993.0}"#,
            &["i64"],
            Pb::I64(9_007_199_254_740_993),
        ),
        (
            r#"{"i64": 9.223372036854775806e18}"#,
            &["i64"],
            Pb::I64(i64::MAX - 1),
        ),
        (
            r#"{"i64": -9223372036854775808}"#,
            &["i64"],
            Pb::I64(i64::MIN),
        ),
        (
            r#"{"i64": "9223372036854775807"}"#,
            &["i64"],
            Pb::I64(i64::MAX),
        ),
        (r#"{"i64": 1e3}"#, &["i64"], Pb::I64(1000)),
        (
            r#"{"u64": 18446744073709551614.0}"#,
            &["u64"],
            Pb::U64(u64::MAX - 1),
        ),
        (
            r#"{"u64": 18446744073709551615}"#,
            &["u64"],
            Pb::U64(u64::MAX),
        ),
        (
            r#"{"s64": -9007199254740993}"#,
            &["s64"],
            Pb::I64(-9_007_199_254_740_993),
        ),
        (
            r#"{"f64": 9007199254740993.00}"#,
            &["f64"],
            Pb::U64(9_007_199_254_740_993),
        ),
        (r#"{"i32": 2.0}"#, &["i32"], Pb::I32(2)),
        (r#"{"sf32": -2147483648}"#, &["sf32"], Pb::I32(i32::MIN)),
        (r#"{"u32": 4294967295}"#, &["u32"], Pb::U32(u32::MAX)),
        (r#"{"color": 1.0}"#, &["color"], Pb::EnumNumber(1)),
        (
            r#"{"wrapped": 9007199254740993.0}"#,
            &["wrapped", "value"],
            Pb::I64(9_007_199_254_740_993),
        ),
    ];
    for (text, path, want) in ok {
        let msg = encode(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(&field(&msg, path), want, "{text}");
    }
    let msg =
        encode(r#"{"many": [9007199254740993.0, 1], "by_name": {"a": 18446744073709551614.0}}"#)
            .unwrap();
    assert_eq!(
        field(&msg, &["many"]),
        Pb::List(vec![Pb::I64(9_007_199_254_740_993), Pb::I64(1)])
    );
    let Pb::Map(by_name) = field(&msg, &["by_name"]) else {
        panic!("a map")
    };
    assert_eq!(by_name.values().next(), Some(&Pb::U64(u64::MAX - 1)));
}

#[test]
fn integer_fields_refuse_what_they_cannot_hold_naming_the_field_the_value_and_the_type() {
    let refused: &[(&str, &str, &str, &str)] = &[
        (
            r#"{"i64": 9223372036854775807.5}"#,
            "i64",
            "9223372036854775807.5",
            "int64",
        ),
        (
            r#"{"i64": 9223372036854775808}"#,
            "i64",
            "9223372036854775808",
            "int64",
        ),
        (
            r#"{"i64": 9.223372036854775808e18}"#,
            "i64",
            "9.223372036854775808e18",
            "int64",
        ),
        (
            r#"{"i64": 1.0000000000000000001}"#,
            "i64",
            "1.0000000000000000001",
            "int64",
        ),
        (
            r#"{"i64": 123456789012345678901234567890}"#,
            "i64",
            "123456789012345678901234567890",
            "int64",
        ),
        (
            r#"{"u64": 18446744073709551616.0}"#,
            "u64",
            "18446744073709551616.0",
            "uint64",
        ),
        (r#"{"u64": -1}"#, "u64", "-1", "uint64"),
        (r#"{"i32": 2147483648}"#, "i32", "2147483648", "int32"),
        (
            r#"{"i32": 2147483647.0000000001}"#,
            "i32",
            "2147483647.0000000001",
            "int32",
        ),
        (r#"{"u32": 4294967296}"#, "u32", "4294967296", "uint32"),
        (r#"{"sf32": 0.5}"#, "sf32", "0.5", "sfixed32"),
        (r#"{"color": 1.5}"#, "color", "1.5", "enum"),
        (r#"{"many": [1, 1e19]}"#, "many[1]", "1e19", "int64"),
        (r#"{"by_name": {"a": 0.1}}"#, "by_name.a", "0.1", "uint64"),
        (
            r#"{"inner": {"counts": [4294967296]}}"#,
            "inner.counts[0]",
            "4294967296",
            "uint32",
        ),
        (
            r#"{"wrapped": 9223372036854775808}"#,
            "wrapped",
            "9223372036854775808",
            "int64",
        ),
    ];
    for (text, path, value, ty) in refused {
        let err = encode(text).expect_err(text);
        assert!(
            err.starts_with(&format!("field `{path}`: ")),
            "{text}: {err}"
        );
        assert!(
            err.contains(&written(value)),
            "{text}: the value as written: {err}"
        );
        assert!(err.contains(ty), "{text}: the type: {err}");
    }
}

#[test]
fn float_and_double_fields_take_the_nearest_binary_value_and_refuse_overflow() {
    let ok: &[(&str, &[&str], Pb)] = &[
        (r#"{"db": 0.1}"#, &["db"], Pb::F64(0.1)),
        (r#"{"db": 2.50}"#, &["db"], Pb::F64(2.5)),
        (r#"{"db": 1e3}"#, &["db"], Pb::F64(1000.0)),
        (
            r#"{"db": 9007199254740993}"#,
            &["db"],
            Pb::F64(9_007_199_254_740_992.0),
        ),
        (
            r#"{"db": 123456789012345678901234567890}"#,
            &["db"],
            Pb::F64(1.234_567_890_123_456_8e29),
        ),
        (r#"{"fl": 16777217}"#, &["fl"], Pb::F32(16_777_216.0)),
        // The nearest float to the decimal itself, not to its nearest double.
        (
            r#"{"fl": 1.0000000596046447753906250001}"#,
            &["fl"],
            Pb::F32(1.000_000_1),
        ),
        (
            r#"{"wrapped_double": 0.30}"#,
            &["wrapped_double", "value"],
            Pb::F64(0.3),
        ),
        (r#"{"db": "1.5"}"#, &["db"], Pb::F64(1.5)),
    ];
    for (text, path, want) in ok {
        let msg = encode(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(&field(&msg, path), want, "{text}");
    }
    for (text, path, value) in [
        (r#"{"db": 1e400}"#, "db", "1e400"),
        (r#"{"fl": 1e39}"#, "fl", "1e39"),
    ] {
        let err = encode(text).expect_err(text);
        assert!(
            err.starts_with(&format!("field `{path}`: ")) && err.contains(&written(value)),
            "{text}: {err}"
        );
        assert!(err.contains("out of range"), "{text}: {err}");
    }
}

#[test]
fn struct_numbers_are_doubles_and_take_the_nearest_value() {
    let msg =
        encode(r#"{"free": {"price": 2.50, "big": 123456789012345678901234567890}}"#).unwrap();
    let free = field(&msg, &["free"]);
    let Pb::Map(fields) = field(free.as_message().unwrap(), &["fields"]) else {
        panic!("Struct.fields is a map")
    };
    let number = |name: &str| {
        let value = &fields[&prost_reflect::MapKey::String(name.into())];
        field(value.as_message().unwrap(), &["number_value"])
    };
    assert_eq!(number("price"), Pb::F64(2.5));
    assert_eq!(number("big"), Pb::F64(1.234_567_890_123_456_8e29));
}
