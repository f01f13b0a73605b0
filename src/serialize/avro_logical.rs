//! Avro logical types from JSON: timestamps and dates from text, decimals from text or numbers.
//! Pure functions with their own error wording, kept apart from the walk so the parsing rules
//! can be read (and tested) on their own.

use chrono::{DateTime, NaiveDate, NaiveDateTime};

use crate::serialize::EncodeError;

/// Unscaled decimals are held in an `i128`, which holds any 38-digit number.
pub(super) const MAX_DECIMAL_PRECISION: usize = 38;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimeUnit {
    Millis,
    Micros,
    Nanos,
}

impl TimeUnit {
    pub(super) fn name(self) -> &'static str {
        match self {
            TimeUnit::Millis => "millis",
            TimeUnit::Micros => "micros",
            TimeUnit::Nanos => "nanos",
        }
    }
}

/// An RFC 3339 string (`2025-11-24T16:00:00.123Z`) → units since the epoch, floored.
/// For `local-timestamp-*` an offset-less `2025-11-24T16:00:00.123` is read as wall-clock time;
/// an offset, if given, is dropped (the wall-clock reading is kept).
pub(super) fn parse_timestamp(s: &str, unit: TimeUnit, local: bool) -> Result<i64, EncodeError> {
    let naive = match DateTime::parse_from_rfc3339(s) {
        Ok(dt) if local => dt.naive_local(),
        Ok(dt) => dt.naive_utc(),
        Err(e) => {
            let wall_clock = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"));
            match wall_clock {
                Ok(n) if local => n,
                _ => {
                    return Err(EncodeError::new(format!(
                    "`{s}` is not an RFC 3339 timestamp ({e}); expected e.g. 2025-11-24T16:00:00Z"
                )))
                }
            }
        }
    };
    let utc = naive.and_utc();
    let out = match unit {
        TimeUnit::Millis => Some(utc.timestamp_millis()),
        TimeUnit::Micros => Some(utc.timestamp_micros()),
        TimeUnit::Nanos => utc.timestamp_nanos_opt(),
    };
    out.ok_or_else(|| EncodeError::new(format!("`{s}` is out of range for timestamp-nanos")))
}

/// `YYYY-MM-DD` → days since 1970-01-01.
pub(super) fn parse_date(s: &str) -> Result<i32, EncodeError> {
    let date = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|e| EncodeError::new(format!("`{s}` is not a date in YYYY-MM-DD form ({e})")))?;
    let days = date.signed_duration_since(NaiveDate::default()).num_days();
    i32::try_from(days).map_err(|_| EncodeError::new(format!("`{s}` is out of range for a date")))
}

pub(super) fn check_time_of_day(n: i64, per_day: i64, unit: &str) -> Result<(), EncodeError> {
    if (0..per_day).contains(&n) {
        Ok(())
    } else {
        Err(EncodeError::new(format!(
            "{n} is not a time of day ({unit} after midnight, 0..{per_day})"
        )))
    }
}

/// Parses `[+-]digits[.digits][e[+-]digits]` into the unscaled value at `scale`, refusing to
/// round (more places than `scale` that are not zeros) or to exceed `precision` digits.
pub(super) fn parse_decimal(
    text: &str,
    precision: usize,
    scale: usize,
) -> Result<i128, EncodeError> {
    let bad = || EncodeError::new(format!("`{text}` is not a decimal number"));
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().map_err(|_| bad())?),
        None => (rest, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty() && frac_part.is_empty()
        || !all_digits(int_part)
        || !all_digits(frac_part)
    {
        return Err(bad());
    }
    // digits × 10^-input_scale, with no leading zeros in `digits`.
    let mut digits: String = format!("{int_part}{frac_part}")
        .trim_start_matches('0')
        .to_owned();
    let frac_len = i64::try_from(frac_part.len()).map_err(|_| bad())?;
    let mut input_scale = frac_len - exponent;
    let target = i64::try_from(scale).map_err(|_| bad())?;
    while input_scale > target {
        if digits.is_empty() {
            input_scale = target;
            break;
        }
        if !digits.ends_with('0') {
            return Err(EncodeError::new(format!(
                "`{text}` has more than {scale} decimal places (the scale of decimal({precision}, {scale})); refusing to round"
            )));
        }
        digits.pop();
        input_scale -= 1;
    }
    let zeros = usize::try_from(target - input_scale).map_err(|_| bad())?;
    let too_many = || {
        EncodeError::new(format!(
            "`{text}` does not fit decimal({precision}, {scale}): at most {} digits before the point",
            precision.saturating_sub(scale)
        ))
    };
    if !digits.is_empty() && digits.len().saturating_add(zeros) > precision {
        return Err(too_many());
    }
    let mut unscaled: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| too_many())?
    };
    for _ in 0..zeros.min(MAX_DECIMAL_PRECISION + 1) {
        unscaled = unscaled.checked_mul(10).ok_or_else(too_many)?;
    }
    Ok(if negative { -unscaled } else { unscaled })
}

/// Big-endian two's complement: minimal length for `bytes`, sign-extended to `size` for `fixed`.
pub(super) fn twos_complement(n: i128, size: Option<usize>) -> Result<Vec<u8>, EncodeError> {
    let full = n.to_be_bytes();
    let pad = if n < 0 { 0xff } else { 0x00 };
    // Drop leading pad bytes while the next byte still carries the right sign bit.
    let mut start = 0;
    while start < full.len() - 1 && full[start] == pad && (full[start + 1] & 0x80) == (pad & 0x80) {
        start += 1;
    }
    let minimal = &full[start..];
    match size {
        None => Ok(minimal.to_vec()),
        Some(size) if minimal.len() <= size => {
            let mut v = vec![pad; size - minimal.len()];
            v.extend_from_slice(minimal);
            Ok(v)
        }
        Some(size) => Err(EncodeError::new(format!(
            "{n} (unscaled) does not fit in {size} bytes"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_scale_up_and_refuse_to_round() {
        assert_eq!(parse_decimal("12.34", 10, 2), Ok(1234));
        assert_eq!(parse_decimal("-12.3", 10, 2), Ok(-1230));
        assert_eq!(parse_decimal("12", 10, 2), Ok(1200));
        assert_eq!(parse_decimal("1.2e1", 10, 2), Ok(1200));
        assert_eq!(parse_decimal("12.340000", 10, 2), Ok(1234));
        assert_eq!(parse_decimal("0", 3, 2), Ok(0));
        assert_eq!(parse_decimal("0.000", 3, 2), Ok(0));
        assert!(parse_decimal("12.345", 10, 2)
            .unwrap_err()
            .message
            .contains("decimal places"));
        assert!(parse_decimal("123.4", 4, 2)
            .unwrap_err()
            .message
            .contains("decimal(4, 2)"));
        assert!(parse_decimal("1e40", 38, 0).is_err());
        assert!(parse_decimal("12a", 10, 2).is_err());
        assert!(parse_decimal(".", 10, 2).is_err());
    }

    #[test]
    fn twos_complement_is_minimal_for_bytes_and_sign_extended_for_fixed() {
        assert_eq!(twos_complement(0, None).unwrap(), vec![0]);
        assert_eq!(twos_complement(127, None).unwrap(), vec![0x7f]);
        assert_eq!(twos_complement(128, None).unwrap(), vec![0x00, 0x80]);
        assert_eq!(twos_complement(-1, None).unwrap(), vec![0xff]);
        assert_eq!(twos_complement(-129, None).unwrap(), vec![0xff, 0x7f]);
        assert_eq!(
            twos_complement(-2, Some(4)).unwrap(),
            vec![0xff, 0xff, 0xff, 0xfe]
        );
        assert!(twos_complement(70_000, Some(2)).is_err());
    }

    #[test]
    fn timestamps_parse_rfc3339_and_floor_to_the_unit() {
        assert_eq!(
            parse_timestamp("1970-01-01T00:00:01.2345Z", TimeUnit::Millis, false),
            Ok(1234)
        );
        assert_eq!(
            parse_timestamp("1970-01-01T01:00:00+01:00", TimeUnit::Micros, false),
            Ok(0)
        );
        assert_eq!(
            parse_timestamp("1969-12-31T23:59:59.9995Z", TimeUnit::Millis, false),
            Ok(-1)
        );
        assert_eq!(
            parse_timestamp("1970-01-01T00:00:00.000000001Z", TimeUnit::Nanos, false),
            Ok(1)
        );
        assert_eq!(
            parse_timestamp("1970-01-01T01:00:00", TimeUnit::Millis, true),
            Ok(3_600_000)
        );
        assert!(parse_timestamp("1970-01-01T01:00:00", TimeUnit::Millis, false).is_err());
        assert!(parse_timestamp("yesterday", TimeUnit::Millis, false).is_err());
    }

    #[test]
    fn dates_count_days_from_the_epoch() {
        assert_eq!(parse_date("1970-01-02"), Ok(1));
        assert_eq!(parse_date("1969-12-31"), Ok(-1));
        assert!(parse_date("2025-13-01").is_err());
    }
}
