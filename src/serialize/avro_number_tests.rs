//! Numbers through the Avro encoder, as table tests: every payload is JSON *text* (what the
//! relay reads from Postgres), so a number's digits reach the encoder as written. Integers are
//! exact or refused, decimals keep their digits or are refused, float/double take the nearest
//! binary value, free-form JSON keeps the number text.
// `from_avro_datum` is deprecated in apache-avro 0.22; the one-call form keeps these short.
#![allow(deprecated)]

use apache_avro::types::Value as Avro;
use apache_avro::{from_avro_datum, Schema};
use serde_json::Value;

use super::AvroEncoder;

/// A record with one field `v` of type `ty` (JSON), the payload `{"v": <text>}`.
fn encode_v(ty: &str, text: &str) -> Result<Avro, String> {
    let schema = format!(r#"{{"type":"record","name":"N","fields":[{{"name":"v","type":{ty}}}]}}"#);
    let enc = AvroEncoder::new(&schema).expect("schema compiles");
    let payload: Value = serde_json::from_str(&format!(r#"{{"v": {text}}}"#))
        .unwrap_or_else(|e| panic!("{text} is JSON: {e}"));
    let mut out = Vec::new();
    enc.encode(&payload, &mut out).map_err(|e| e.to_string())?;
    let parsed = Schema::parse_str(&schema).unwrap();
    let value = from_avro_datum(&parsed, &mut out.as_slice(), None).expect("apache_avro decodes");
    match value {
        Avro::Record(mut fields) => Ok(fields.remove(0).1),
        other => panic!("not a record: {other:?}"),
    }
}

/// The unscaled value of a decoded decimal (big-endian two's complement).
fn unscaled(v: &Avro) -> i128 {
    let Avro::Decimal(d) = v else {
        panic!("not a decimal: {v:?}")
    };
    let bytes: Vec<u8> = d.try_into().expect("decimal bytes");
    let mut n: i128 = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        -1
    } else {
        0
    };
    for b in bytes {
        n = (n << 8) | i128::from(b);
    }
    n
}

/// A number's text as serde_json keeps it: as written, except that an exponent gets its sign
/// (`1e8` → `1e+8`). Postgres prints jsonb numbers without exponents anyway.
fn written(text: &str) -> String {
    serde_json::from_str::<serde_json::Number>(text)
        .unwrap()
        .to_string()
}

#[test]
fn longs_are_exact_or_refused_with_the_field_the_value_and_the_type() {
    let ok: &[(&str, i64)] = &[
        ("9007199254740993", 9_007_199_254_740_993),
        ("9007199254740993.0", 9_007_199_254_740_993),
        ("9.007199254740993e15", 9_007_199_254_740_993),
        ("1e3", 1000),
        ("-0", 0),
        ("-9223372036854775808", i64::MIN),
        ("9223372036854775807", i64::MAX),
        ("92233720368547758.07e2", i64::MAX),
    ];
    for (text, want) in ok {
        assert_eq!(encode_v(r#""long""#, text), Ok(Avro::Long(*want)), "{text}");
    }
    let refused: &[(&str, &str)] = &[
        ("9223372036854775808", "out of range for a long"),
        ("-9223372036854775809", "out of range for a long"),
        ("123456789012345678901234567890", "out of range for a long"),
        ("1e300", "out of range for a long"),
        ("1.0000000000000000001", "not an integer"),
        ("9223372036854775807.5", "not an integer"),
        ("0.5", "not an integer"),
    ];
    for (text, why) in refused {
        let err = encode_v(r#""long""#, text).expect_err(text);
        assert!(err.starts_with("field `v`: "), "{text}: {err}");
        assert!(
            err.contains(&written(text)),
            "{text}: the value as written: {err}"
        );
        assert!(err.contains(why), "{text}: {err}");
    }
}

#[test]
fn ints_and_integer_logical_types_are_exact_or_refused() {
    assert_eq!(encode_v(r#""int""#, "2.0"), Ok(Avro::Int(2)));
    assert_eq!(encode_v(r#""int""#, "-2147483648"), Ok(Avro::Int(i32::MIN)));
    for text in ["2147483648", "2147483647.0000000001", "1e10"] {
        let err = encode_v(r#""int""#, text).expect_err(text);
        assert!(
            err.contains(&written(text)) && err.contains("int"),
            "{text}: {err}"
        );
    }
    let ts = r#"{"type":"long","logicalType":"timestamp-micros"}"#;
    assert_eq!(
        encode_v(ts, "1764000000000000.0"),
        Ok(Avro::TimestampMicros(1_764_000_000_000_000))
    );
    assert!(encode_v(ts, "1764000000000000.5").is_err());
    let date = r#"{"type":"int","logicalType":"date"}"#;
    assert!(encode_v(date, "3000000000").is_err());
}

#[test]
fn decimals_keep_every_digit_given_as_a_number_or_a_string() {
    let dec = r#"{"type":"bytes","logicalType":"decimal","precision":38,"scale":9}"#;
    let ok: &[(&str, i128)] = &[
        (
            "12345678901234567890.123456789",
            12_345_678_901_234_567_890_123_456_789,
        ),
        (
            r#""12345678901234567890.123456789""#,
            12_345_678_901_234_567_890_123_456_789,
        ),
        (
            "-99999999999999999999999999999.999999999",
            -99_999_999_999_999_999_999_999_999_999_999_999_999,
        ),
        ("1e-9", 1),
        ("0.10", 100_000_000),
        ("2.5E+3", 2_500_000_000_000),
    ];
    for (text, want) in ok {
        let got = encode_v(dec, text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(unscaled(&got), *want, "{text}");
    }
    let fixed =
        r#"{"type":"fixed","name":"D","size":16,"logicalType":"decimal","precision":38,"scale":2}"#;
    let got = encode_v(fixed, "123456789012345678901234567890.12").unwrap();
    assert_eq!(unscaled(&got), 12_345_678_901_234_567_890_123_456_789_012);
}

#[test]
fn decimals_that_do_not_fit_are_refused_naming_the_value_precision_and_scale() {
    let dec = r#"{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}"#;
    let refused: &[(&str, &str)] = &[
        // More places than the scale: never rounded.
        ("0.1000000000000000055511151231257827", "decimal(10, 2)"),
        ("12.345", "more than 2 decimal places"),
        // More digits than the precision.
        ("123456789.5", "does not fit decimal(10, 2)"),
        ("1e8", "does not fit decimal(10, 2)"),
        (
            "123456789012345678901234567890",
            "does not fit decimal(10, 2)",
        ),
    ];
    for (text, why) in refused {
        let err = encode_v(dec, text).expect_err(text);
        assert!(err.starts_with("field `v`: "), "{text}: {err}");
        assert!(
            err.contains(&written(text)),
            "{text}: the value as written: {err}"
        );
        assert!(err.contains(why), "{text}: {err}");
    }
}

#[test]
fn floats_and_doubles_take_the_nearest_binary_value_and_refuse_overflow() {
    let ok: &[(&str, &str, Avro)] = &[
        (r#""double""#, "0.1", Avro::Double(0.1)),
        (
            r#""double""#,
            "123456789012345678901234567890",
            Avro::Double(1.234_567_890_123_456_8e29),
        ),
        (
            r#""double""#,
            "9007199254740993",
            Avro::Double(9_007_199_254_740_992.0),
        ),
        (r#""double""#, "1e-400", Avro::Double(0.0)),
        (r#""float""#, "16777217", Avro::Float(16_777_216.0)),
        (r#""float""#, "0.1", Avro::Float(0.1)),
        // Nearest float to the decimal itself, not to its nearest double (double rounding):
        // 1 + 2^-24 + 2^-60 is just above the midpoint between two floats.
        (
            r#""float""#,
            "1.0000000596046447753906250001",
            Avro::Float(1.000_000_1),
        ),
    ];
    for (ty, text, want) in ok {
        assert_eq!(encode_v(ty, text).as_ref(), Ok(want), "{ty} {text}");
    }
    for (ty, text) in [(r#""double""#, "1e400"), (r#""float""#, "1e39")] {
        let err = encode_v(ty, text).expect_err(text);
        assert!(
            err.contains(&written(text)) && err.contains("out of range"),
            "{text}: {err}"
        );
    }
}

#[test]
fn free_form_json_fields_keep_the_exact_number_text() {
    let ty = r#"{"type":"string"},"outbox.json":true"#;
    let text = r#"{"big": 123456789012345678901234567890, "price": 1.50, "tiny": 0.1000000000000000055511151231257827, "n": -0}"#;
    assert_eq!(
        encode_v(ty, text),
        Ok(Avro::String(
            r#"{"big":123456789012345678901234567890,"n":-0,"price":1.50,"tiny":0.1000000000000000055511151231257827}"#
                .into()
        ))
    );
}
