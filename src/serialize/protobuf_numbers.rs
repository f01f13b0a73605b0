//! Exact numbers for the Protobuf encoder, a pass over the payload guided by the message
//! descriptor before prost-reflect sees it.
//!
//! prost-reflect reads a JSON number through `f64` whenever it is not a plain integer: `1.0…01`
//! becomes the int64 `1`, `9223372036854775807.5` the int64 `i64::MAX`, `9007199254740993.0`
//! the int64 `9007199254740992`; and with serde_json's `arbitrary_precision` a number whose text
//! is not the shortest form of an `f64` (`2.50`, `1e3`) reaches it as a map it refuses. So this
//! pass, for every number of the payload, by the kind of its field (also repeated, map values,
//! wrappers, `Any`, enums by number):
//! - **integer kinds** (int32/64, uint32/64, sint32/64, fixed32/64, sfixed32/64, enum numbers):
//!   the number must be exactly an integer in range, read from its text; else the row is refused
//!   with the field, the value as written and the type;
//! - **float / double** (and `google.protobuf.Value` numbers, which are doubles): the nearest
//!   binary value, rounded once from the text; overflow is refused.
//!
//! A number that prost-reflect would read right as it is costs nothing more. The others are
//! collected as fixes (their exact integer, or their nearest value in a form prost-reflect reads
//! exactly); only then is the payload copied and the fixes applied.

use std::fmt::{self, Write as _};

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Number, Value};

use super::super::number::{self, Integral};
use super::super::EncodeError;

/// One step from the payload's root to a number.
#[derive(Debug, Clone)]
pub(super) enum Step {
    Key(String),
    Index(usize),
}

/// A number to replace: where, and by what.
pub(super) type Fix = (Vec<Step>, Number);

/// The path walked so far, on the stack: no allocation unless a fix is recorded.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn steps(&self) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut at = self;
        loop {
            match at {
                Path::Root => break,
                Path::Key(parent, k) => {
                    steps.push(Step::Key((*k).to_owned()));
                    at = parent;
                }
                Path::Index(parent, i) => {
                    steps.push(Step::Index(*i));
                    at = parent;
                }
            }
        }
        steps.reverse();
        steps
    }
}

type Result<T = ()> = std::result::Result<T, EncodeError>;

/// Checks every number of `payload` against its field in `message`; returns the fixes that make
/// prost-reflect read each exactly as this module says (empty for almost every payload).
pub(super) fn check(message: &MessageDescriptor, payload: &Value) -> Result<Vec<Fix>> {
    let mut fixes = Vec::new();
    check_message(message, payload, Path::Root, &mut fixes)?;
    Ok(fixes)
}

/// `payload` with `fixes` applied.
pub(super) fn apply(payload: &Value, fixes: Vec<Fix>) -> Value {
    let mut fixed = payload.clone();
    for (steps, number) in fixes {
        let mut at = &mut fixed;
        for step in &steps {
            let next = match step {
                Step::Key(k) => at.get_mut(k.as_str()),
                Step::Index(i) => at.get_mut(*i),
            };
            match next {
                Some(next) => at = next,
                None => unreachable!("a fix's path was walked in this payload"),
            }
        }
        *at = Value::Number(number);
    }
    fixed
}

fn check_message(
    message: &MessageDescriptor,
    v: &Value,
    path: Path<'_>,
    fixes: &mut Vec<Fix>,
) -> Result {
    match message.full_name() {
        "google.protobuf.Value" | "google.protobuf.Struct" | "google.protobuf.ListValue" => {
            return check_free(v, path, fixes)
        }
        "google.protobuf.Int32Value"
        | "google.protobuf.UInt32Value"
        | "google.protobuf.Int64Value"
        | "google.protobuf.UInt64Value"
        | "google.protobuf.FloatValue"
        | "google.protobuf.DoubleValue" => {
            return match message.get_field_by_name("value") {
                Some(field) => check_kind(&field.kind(), v, path, fixes),
                None => Ok(()),
            }
        }
        "google.protobuf.Any" => return check_any(message, v, path, fixes),
        _ => {}
    }
    let Value::Object(fields) = v else {
        return Ok(()); // prost-reflect names the mismatch
    };
    for (key, value) in fields {
        let Some(field) = message
            .get_field_by_name(key)
            .or_else(|| message.get_field_by_json_name(key))
        else {
            continue; // prost-reflect refuses unknown fields
        };
        let here = Path::Key(&path, key);
        check_field(&field, value, here, fixes).map_err(|e| e.in_field(key))?;
    }
    Ok(())
}

fn check_field(field: &FieldDescriptor, v: &Value, path: Path<'_>, fixes: &mut Vec<Fix>) -> Result {
    if field.is_map() {
        let (Kind::Message(entry), Value::Object(entries)) = (field.kind(), v) else {
            return Ok(());
        };
        let kind = entry.map_entry_value_field().kind();
        for (key, value) in entries {
            check_kind(&kind, value, Path::Key(&path, key), fixes).map_err(|e| e.in_field(key))?;
        }
        Ok(())
    } else if field.is_list() {
        let Value::Array(items) = v else {
            return Ok(());
        };
        let kind = field.kind();
        for (i, item) in items.iter().enumerate() {
            check_kind(&kind, item, Path::Index(&path, i), fixes).map_err(|e| e.at_index(i))?;
        }
        Ok(())
    } else {
        check_kind(&field.kind(), v, path, fixes)
    }
}

/// The proto name of an integer kind and its range; `None` for other kinds.
fn integer_kind(kind: &Kind) -> Option<(&'static str, i128, i128)> {
    let i32s = (i128::from(i32::MIN), i128::from(i32::MAX));
    let i64s = (i128::from(i64::MIN), i128::from(i64::MAX));
    let u32s = (0, i128::from(u32::MAX));
    let u64s = (0, i128::from(u64::MAX));
    let (name, (min, max)) = match kind {
        Kind::Int32 => ("int32", i32s),
        Kind::Sint32 => ("sint32", i32s),
        Kind::Sfixed32 => ("sfixed32", i32s),
        Kind::Int64 => ("int64", i64s),
        Kind::Sint64 => ("sint64", i64s),
        Kind::Sfixed64 => ("sfixed64", i64s),
        Kind::Uint32 => ("uint32", u32s),
        Kind::Fixed32 => ("fixed32", u32s),
        Kind::Uint64 => ("uint64", u64s),
        Kind::Fixed64 => ("fixed64", u64s),
        Kind::Enum(_) => ("enum number (int32)", i32s),
        _ => return None,
    };
    Some((name, min, max))
}

fn check_kind(kind: &Kind, v: &Value, path: Path<'_>, fixes: &mut Vec<Fix>) -> Result {
    if let Kind::Message(message) = kind {
        return check_message(message, v, path, fixes);
    }
    let Value::Number(n) = v else {
        return Ok(()); // strings, names, null: prost-reflect reads them exactly or refuses
    };
    if let Some((name, min, max)) = integer_kind(kind) {
        let exact = match number::integral(n) {
            Integral::Int(i) if (min..=max).contains(&i) => i,
            Integral::Int(_) | Integral::Huge => {
                return Err(EncodeError::new(format!("{n} is out of range for {name}")))
            }
            Integral::Fraction => {
                return Err(EncodeError::new(format!("{n} is not an integer ({name})")))
            }
        };
        if n.as_i64().is_none() && n.as_u64().is_none() {
            fixes.push((path.steps(), exact_integer(exact)));
        }
        return Ok(());
    }
    match kind {
        Kind::Double => {
            let f = number::nearest_f64(n)
                .ok_or_else(|| EncodeError::new(format!("{n} is out of range for double")))?;
            if !reads_as(n, f) {
                fixes.push((path.steps(), float_number(f)));
            }
        }
        Kind::Float => {
            let f = number::nearest_f32(n)
                .ok_or_else(|| EncodeError::new(format!("{n} is out of range for float")))?;
            // prost-reflect narrows the f64 it reads: exact when that f64 is `f` itself.
            let read = number::nearest_f64(n);
            #[allow(clippy::cast_possible_truncation)]
            let same = read.is_some_and(|r| r as f32 == f) && read.is_some_and(|r| reads_as(n, r));
            if !same {
                fixes.push((path.steps(), float_number(f64::from(f))));
            }
        }
        _ => {}
    }
    Ok(())
}

/// `google.protobuf.Value` and friends: any JSON, every number a double.
fn check_free(v: &Value, path: Path<'_>, fixes: &mut Vec<Fix>) -> Result {
    match v {
        Value::Number(_) => check_kind(&Kind::Double, v, path, fixes),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_free(item, Path::Index(&path, i), fixes).map_err(|e| e.at_index(i))?;
            }
            Ok(())
        }
        Value::Object(fields) => {
            for (key, value) in fields {
                check_free(value, Path::Key(&path, key), fixes).map_err(|e| e.in_field(key))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `{"@type": ".../pkg.Msg", ...fields}`, or `{"@type": ..., "value": ...}` for a well-known
/// type with a special JSON form.
fn check_any(any: &MessageDescriptor, v: &Value, path: Path<'_>, fixes: &mut Vec<Fix>) -> Result {
    let Some(type_url) = v.get("@type").and_then(Value::as_str) else {
        return Ok(());
    };
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    let Some(packed) = any.parent_pool().get_message_by_name(name) else {
        return Ok(()); // prost-reflect refuses an unknown type
    };
    if packed.full_name().starts_with("google.protobuf.") {
        if let Some(value) = v.get("value") {
            return check_message(&packed, value, Path::Key(&path, "value"), fixes)
                .map_err(|e| e.in_field("value"));
        }
    }
    check_message(&packed, v, path, fixes)
}

fn exact_integer(i: i128) -> Number {
    match (i64::try_from(i), u64::try_from(i)) {
        (Ok(i), _) => Number::from(i),
        (_, Ok(u)) => Number::from(u),
        _ => unreachable!("checked against the kind's 64-bit range"),
    }
}

fn float_number(f: f64) -> Number {
    Number::from_f64(f).unwrap_or_else(|| unreachable!("finite"))
}

/// Does prost-reflect read `n` as `f` (serde_json hands over an integer text as an integer and
/// the shortest text of an `f64` as that `f64`)?
fn reads_as(n: &Number, f: f64) -> bool {
    if n.as_i64().is_some() || n.as_u64().is_some() {
        return true;
    }
    let mut compare = SameText {
        rest: n.as_str(),
        same: true,
    };
    let _ = write!(compare, "{f}");
    compare.same && compare.rest.is_empty()
}

/// Compares what is written to it with a text, without allocating.
struct SameText<'a> {
    rest: &'a str,
    same: bool,
}

impl fmt::Write for SameText<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        match self.rest.strip_prefix(s) {
            Some(rest) if self.same => self.rest = rest,
            _ => self.same = false,
        }
        Ok(())
    }
}
