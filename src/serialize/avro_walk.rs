//! The encode walk of [`AvroEncoder`]: one pass over the JSON value, guided by the compiled
//! nodes, writing Avro binary into the caller's buffer. Also owns union branch selection and
//! the wording of type-mismatch errors.

use serde_json::{Map, Value};

use super::logical;
use super::{AvroEncoder, Mode, Node, NodeId, RecordNode, UnionNode, UuidRepr};
use crate::serialize::number;
use crate::serialize::{write_zigzag, EncodeError};

type Result<T = ()> = std::result::Result<T, EncodeError>;

impl AvroEncoder {
    pub(super) fn encode_node(
        &self,
        id: NodeId,
        v: &Value,
        out: &mut Vec<u8>,
        mode: Mode,
    ) -> Result {
        match &self.nodes[id] {
            Node::Null => match v {
                Value::Null => Ok(()),
                _ => Err(mismatch("null", v)),
            },
            Node::Boolean => match v {
                Value::Bool(b) => {
                    out.push(u8::from(*b));
                    Ok(())
                }
                _ => Err(mismatch("a boolean", v)),
            },
            Node::Int => {
                write_zigzag(out, int(v, "an int")?.into());
                Ok(())
            }
            Node::Long => {
                write_zigzag(out, integer(v, "a long")?);
                Ok(())
            }
            Node::Float => {
                let f = float(v, number::nearest_f32, "a float")?;
                out.extend_from_slice(&f.to_le_bytes());
                Ok(())
            }
            Node::Double => {
                let f = float(v, number::nearest_f64, "a double")?;
                out.extend_from_slice(&f.to_le_bytes());
                Ok(())
            }
            Node::String => match v {
                Value::String(s) => {
                    write_bytes(out, s.as_bytes());
                    Ok(())
                }
                _ => Err(mismatch("a string", v)),
            },
            Node::JsonText => match (mode, v) {
                (Mode::Default, Value::String(s)) => {
                    write_bytes(out, s.as_bytes());
                    Ok(())
                }
                _ => {
                    let text = serde_json::to_string(v)
                        .map_err(|e| EncodeError::new(format!("cannot write as JSON text: {e}")))?;
                    write_bytes(out, text.as_bytes());
                    Ok(())
                }
            },
            Node::Bytes => {
                let bytes = byte_string(v, mode)?;
                write_bytes(out, &bytes);
                Ok(())
            }
            Node::Fixed { name, size } => {
                let bytes = byte_string(v, mode)?;
                if bytes.len() != *size {
                    return Err(EncodeError::new(format!(
                        "fixed `{name}` needs exactly {size} bytes, got {}",
                        bytes.len()
                    )));
                }
                out.extend_from_slice(&bytes);
                Ok(())
            }
            Node::Array(items) => {
                let Value::Array(a) = v else {
                    return Err(mismatch("an array", v));
                };
                if !a.is_empty() {
                    write_zigzag(out, len_i64(a.len()));
                    for (i, item) in a.iter().enumerate() {
                        self.encode_node(*items, item, out, mode)
                            .map_err(|e| e.at_index(i))?;
                    }
                }
                out.push(0);
                Ok(())
            }
            Node::Map(values) => {
                let Value::Object(m) = v else {
                    return Err(mismatch("an object (map)", v));
                };
                if !m.is_empty() {
                    write_zigzag(out, len_i64(m.len()));
                    for (k, item) in m {
                        write_bytes(out, k.as_bytes());
                        self.encode_node(*values, item, out, mode)
                            .map_err(|e| e.in_field(k))?;
                    }
                }
                out.push(0);
                Ok(())
            }
            Node::Record(r) => match v {
                Value::Object(m) => self.encode_record(r, m, out, mode),
                _ => Err(mismatch(&format!("an object (record `{}`)", r.name), v)),
            },
            Node::Enum(e) => {
                let Value::String(s) = v else {
                    return Err(mismatch(&format!("a symbol of enum `{}`", e.name), v));
                };
                match e.index.get(s.as_str()) {
                    Some(&i) => {
                        write_zigzag(out, len_i64(i));
                        Ok(())
                    }
                    None => Err(EncodeError::new(format!(
                        "`{s}` is not a symbol of enum `{}`; allowed: {}",
                        e.name,
                        e.symbols.join(", ")
                    ))),
                }
            }
            Node::Union(u) => self.encode_union(u, v, out, mode),
            Node::Decimal {
                precision,
                scale,
                fixed,
            } => {
                // A number's text as written (serde_json's arbitrary_precision): exact digits.
                let text = match v {
                    Value::String(s) => s.as_str(),
                    Value::Number(n) => n.as_str(),
                    _ => return Err(mismatch("a decimal (string or number)", v)),
                };
                let unscaled = logical::parse_decimal(text, *precision, *scale)?;
                match fixed {
                    None => write_bytes(out, &logical::twos_complement(unscaled, None)?),
                    Some(size) => {
                        out.extend_from_slice(&logical::twos_complement(unscaled, Some(*size))?)
                    }
                }
                Ok(())
            }
            Node::Uuid(repr) => {
                let Value::String(s) = v else {
                    return Err(mismatch("a UUID string", v));
                };
                let uuid = uuid::Uuid::parse_str(s)
                    .map_err(|e| EncodeError::new(format!("`{s}` is not a valid UUID: {e}")))?;
                match repr {
                    UuidRepr::String => write_bytes(out, uuid.hyphenated().to_string().as_bytes()),
                    UuidRepr::Bytes => write_bytes(out, uuid.as_bytes()),
                    UuidRepr::Fixed => out.extend_from_slice(uuid.as_bytes()),
                }
                Ok(())
            }
            Node::Date => {
                let days = match v {
                    Value::String(s) => logical::parse_date(s)?,
                    _ => int(v, "a date (days since 1970-01-01 or YYYY-MM-DD)")?,
                };
                write_zigzag(out, days.into());
                Ok(())
            }
            Node::TimeMillis => {
                let ms = int(v, "a time-millis (integer)")?;
                logical::check_time_of_day(ms.into(), 86_400_000, "milliseconds")?;
                write_zigzag(out, ms.into());
                Ok(())
            }
            Node::TimeMicros => {
                let us = integer(v, "a time-micros (integer)")?;
                logical::check_time_of_day(us, 86_400_000_000, "microseconds")?;
                write_zigzag(out, us);
                Ok(())
            }
            Node::Timestamp { unit, local } => {
                let t = match v {
                    Value::String(s) => logical::parse_timestamp(s, *unit, *local)?,
                    _ => integer(v, "a timestamp (integer or RFC 3339 string)")?,
                };
                write_zigzag(out, t);
                Ok(())
            }
        }
    }

    fn encode_record(
        &self,
        r: &RecordNode,
        m: &Map<String, Value>,
        out: &mut Vec<u8>,
        mode: Mode,
    ) -> Result {
        let mut seen = 0;
        for f in &r.fields {
            match m.get(&f.name) {
                Some(value) => {
                    seen += 1;
                    self.encode_node(f.node, value, out, mode)
                        .map_err(|e| e.in_field(&f.name))?;
                }
                None => match &f.default {
                    Some(bytes) => out.extend_from_slice(bytes),
                    None => {
                        return Err(EncodeError::at(
                            f.name.as_str(),
                            format!(
                                "missing required field (record `{}` gives it no default)",
                                r.name
                            ),
                        ))
                    }
                },
            }
        }
        if seen < m.len() {
            // Slow path, only on error: find the first key the record does not declare.
            if let Some(extra) = m.keys().find(|k| !r.index.contains_key(k.as_str())) {
                return Err(EncodeError::at(
                    extra.as_str(),
                    format!(
                        "not in the schema of record `{}` (refusing to drop data)",
                        r.name
                    ),
                ));
            }
        }
        Ok(())
    }

    fn encode_union(&self, u: &UnionNode, v: &Value, out: &mut Vec<u8>, mode: Mode) -> Result {
        let mark = out.len();
        if mode == Mode::Default {
            // The Avro spec: a union's default belongs to its first branch.
            if let Some(first) = u.branches.first() {
                out.push(0);
                if self.encode_node(first.node, v, out, mode).is_ok() {
                    return Ok(());
                }
                out.truncate(mark);
            }
        }
        let mut wrapper_error = None;
        if let (true, Value::Object(m)) = (u.wrapper_form, v) {
            if let (1, Some((key, inner))) = (m.len(), m.iter().next()) {
                if let Some(i) = u
                    .branches
                    .iter()
                    .position(|b| b.names.iter().any(|n| n == key))
                {
                    write_zigzag(out, len_i64(i));
                    match self.encode_node(u.branches[i].node, inner, out, mode) {
                        Ok(()) => return Ok(()),
                        Err(e) => {
                            out.truncate(mark);
                            wrapper_error = Some(e.in_field(key));
                        }
                    }
                }
            }
        }
        let mut failures: Vec<(NodeId, EncodeError)> = Vec::new();
        for (i, b) in u.branches.iter().enumerate() {
            if !self.could_match(b.node, v) {
                continue;
            }
            write_zigzag(out, len_i64(i));
            match self.encode_node(b.node, v, out, mode) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    out.truncate(mark);
                    failures.push((b.node, e));
                }
            }
        }
        if let Some(e) = wrapper_error {
            return Err(e);
        }
        match failures.len() {
            0 => {
                let names: Vec<String> = u.branches.iter().map(|b| self.label(b.node)).collect();
                Err(mismatch(&format!("one of [{}]", names.join(", ")), v))
            }
            // Only one branch had the right shape: its own error is the most useful one.
            1 => Err(failures.remove(0).1),
            _ => {
                let tried: Vec<String> = failures
                    .iter()
                    .map(|(id, e)| match e.path.as_str() {
                        "" => format!("{}: {}", self.label(*id), e.message),
                        p => format!("{}: `{p}` {}", self.label(*id), e.message),
                    })
                    .collect();
                Err(EncodeError::new(format!(
                    "fits no branch of the union; tried {}",
                    tried.join("; ")
                )))
            }
        }
    }

    /// Could `v` possibly encode as this node, judging by its JSON kind alone? Lets unions skip
    /// hopeless branches without building an error.
    fn could_match(&self, id: NodeId, v: &Value) -> bool {
        match &self.nodes[id] {
            Node::Null => v.is_null(),
            Node::Boolean => v.is_boolean(),
            Node::Int
            | Node::Long
            | Node::Float
            | Node::Double
            | Node::TimeMillis
            | Node::TimeMicros => v.is_number(),
            Node::Date | Node::Timestamp { .. } | Node::Decimal { .. } => {
                v.is_number() || v.is_string()
            }
            Node::String | Node::Enum(_) | Node::Uuid(_) => v.is_string(),
            Node::JsonText => true,
            Node::Bytes | Node::Fixed { .. } => v.is_string() || v.is_array(),
            Node::Array(_) => v.is_array(),
            Node::Map(_) | Node::Record(_) => v.is_object(),
            Node::Union(_) => true,
        }
    }

    /// A short human name for a node, for union error messages.
    fn label(&self, id: NodeId) -> String {
        match &self.nodes[id] {
            Node::Null => "null".into(),
            Node::Boolean => "boolean".into(),
            Node::Int => "int".into(),
            Node::Long => "long".into(),
            Node::Float => "float".into(),
            Node::Double => "double".into(),
            Node::Bytes => "bytes".into(),
            Node::String => "string".into(),
            Node::JsonText => "string (outbox.json)".into(),
            Node::Array(_) => "array".into(),
            Node::Map(_) => "map".into(),
            Node::Union(_) => "union".into(),
            Node::Record(r) => r.name.clone(),
            Node::Enum(e) => e.name.clone(),
            Node::Fixed { name, .. } => name.clone(),
            Node::Decimal { .. } => "decimal".into(),
            Node::Uuid(_) => "uuid".into(),
            Node::Date => "date".into(),
            Node::TimeMillis => "time-millis".into(),
            Node::TimeMicros => "time-micros".into(),
            Node::Timestamp { unit, local } => {
                format!(
                    "{}timestamp-{}",
                    if *local { "local-" } else { "" },
                    unit.name()
                )
            }
        }
    }
}

/// "expected X, got Y" with Y the JSON kind of the value.
pub(super) fn mismatch(expected: &str, v: &Value) -> EncodeError {
    let got = match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    EncodeError::new(format!("expected {expected}, got {got}"))
}

/// A JSON number that is exactly an integer (`7`, `7.0`, `7e0`) an `i64` holds, read from its
/// text; anything else is refused with the value as written.
fn integer(v: &Value, expected: &str) -> Result<i64> {
    exact_integer(v, expected, "a long")
}

/// [`integer`], for the 32-bit `int` (and `date`, `time-millis`).
fn int(v: &Value, expected: &str) -> Result<i32> {
    exact_integer(v, expected, "an int (32-bit)")
}

/// The exact integer `v` is, if `T` (named `type_name` in errors) holds it.
fn exact_integer<T: TryFrom<i128>>(v: &Value, expected: &str, type_name: &str) -> Result<T> {
    let Value::Number(n) = v else {
        return Err(mismatch(expected, v));
    };
    let out_of_range = || EncodeError::new(format!("{n} is out of range for {type_name}"));
    match number::integral(n) {
        number::Integral::Int(i) => T::try_from(i).map_err(|_| out_of_range()),
        number::Integral::Huge => Err(out_of_range()),
        number::Integral::Fraction => Err(EncodeError::new(format!(
            "expected {expected}, got {n} which is not an integer"
        ))),
    }
}

/// The nearest binary value to a JSON number (what a float or double field asks for), read
/// once from its text; overflow is refused.
fn float<F>(
    v: &Value,
    nearest: impl Fn(&serde_json::Number) -> Option<F>,
    expected: &str,
) -> Result<F> {
    let Value::Number(n) = v else {
        return Err(mismatch(expected, v));
    };
    nearest(n).ok_or_else(|| {
        let name = expected.trim_start_matches("a ");
        EncodeError::new(format!("{n} is out of range for a {name}"))
    })
}

/// Bytes for `bytes` / `fixed`: payload strings are UTF-8, defaults are code points 0–255
/// (Avro spec); both accept an array of numbers 0–255.
fn byte_string(v: &Value, mode: Mode) -> Result<Vec<u8>> {
    match (v, mode) {
        (Value::String(s), Mode::Payload) => Ok(s.as_bytes().to_vec()),
        (Value::String(s), Mode::Default) => s
            .chars()
            .map(|c| {
                u8::try_from(u32::from(c))
                    .map_err(|_| EncodeError::new("byte default above U+00FF"))
            })
            .collect(),
        (Value::Array(items), _) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_u64()
                    .and_then(|b| u8::try_from(b).ok())
                    .ok_or_else(|| EncodeError::new("expected a byte (0-255)").at_index(i))
            })
            .collect(),
        _ => Err(mismatch("bytes (a string or an array of 0-255)", v)),
    }
}

fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_zigzag(out, len_i64(bytes.len()));
    out.extend_from_slice(bytes);
}
