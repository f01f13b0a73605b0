//! JSON payload → Confluent message indexes + protobuf bytes, for one `.proto` schema text.
//!
//! Owns compiling the registered schema text (in memory, with protox; the well-known
//! `google/protobuf/*.proto` imports resolve, and so do the files of Confluent schema
//! references, by their reference name: see `with_imports`), choosing the message, computing its Confluent message-index path once, and turning JSON
//! into a `DynamicMessage` with prost-reflect's proto3 JSON mapping (field names as in the
//! `.proto` or camelCase; 64-bit integers as numbers or strings; enums by name or number;
//! unknown fields are refused; numbers exact or refused, see `numbers`). Deserializing runs without path tracking; only when it fails is
//! it re-run with `serde_path_to_error` to name the field, so valid rows pay nothing for it.

use prost::Message as _;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
use serde_json::Value;

use super::{write_zigzag, EncodeError, SchemaError};

#[path = "protobuf_numbers.rs"]
mod numbers;

/// The name the registered schema text is compiled under.
const FILE_NAME: &str = "schema.proto";

/// Encodes JSON payloads as one protobuf message type. Build once per schema id and share.
#[derive(Debug)]
pub struct ProtobufEncoder {
    message: MessageDescriptor,
    /// Confluent's message-index prefix, already encoded.
    indexes: Vec<u8>,
    options: DeserializeOptions,
}

impl ProtobufEncoder {
    /// `schema` is the .proto text as registered (proto3). `message`: fully-qualified message
    /// name to use; `None` = the first message declared in the file (Confluent's default).
    pub fn new(schema: &str, message: Option<&str>) -> Result<Self, SchemaError> {
        Self::with_imports(schema, message, &[])
    }

    /// As [`new`](Self::new), with the files `schema` imports by Confluent schema reference:
    /// (import name, .proto text).
    pub fn with_imports(
        schema: &str,
        message: Option<&str>,
        imports: &[(String, String)],
    ) -> Result<Self, SchemaError> {
        let mut resolver = ChainFileResolver::new();
        resolver.add(InMemoryFile {
            source: schema.to_owned(),
        });
        resolver.add(Imports(imports.to_vec()));
        resolver.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler
            .open_file(FILE_NAME)
            .map_err(|e| SchemaError(format!("invalid protobuf schema: {e}")))?;
        let pool = compiler.descriptor_pool();
        let file = pool
            .get_file_by_name(FILE_NAME)
            .ok_or_else(|| SchemaError("protobuf schema file missing after compiling".into()))?;
        let message = match message {
            None => file.messages().next().ok_or_else(|| {
                SchemaError("the protobuf schema declares no message type".into())
            })?,
            Some(name) => {
                let name = name.trim_start_matches('.');
                pool.get_message_by_name(name)
                    .filter(|m| m.parent_file().name() == FILE_NAME)
                    .ok_or_else(|| {
                        SchemaError(format!("the protobuf schema declares no message `{name}`"))
                    })?
            }
        };
        let indexes = confluent_indexes(message.path());
        Ok(Self {
            message,
            indexes,
            options: DeserializeOptions::new().deny_unknown_fields(true),
        })
    }

    /// Full name of the chosen message (for the record subject strategies).
    pub fn record_name(&self) -> Option<String> {
        Some(self.message.full_name().to_owned())
    }

    /// Does the chosen message declare a field with this name (as in the .proto, or its JSON name)?
    pub fn has_top_level_field(&self, name: &str) -> bool {
        self.message.get_field_by_name(name).is_some()
            || self.message.get_field_by_json_name(name).is_some()
    }

    /// Appends Confluent's message-index array, then the protobuf bytes of `payload`.
    /// On error `out` is left as it was.
    pub fn encode(&self, payload: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        // Integers exact or refused, floats rounded once: see `numbers`.
        let fixes = numbers::check(&self.message, payload)?;
        let fixed;
        let payload = if fixes.is_empty() {
            payload
        } else {
            fixed = numbers::apply(payload, fixes);
            &fixed
        };
        let msg =
            DynamicMessage::deserialize_with_options(self.message.clone(), payload, &self.options)
                .map_err(|_| self.locate_error(payload))?;
        out.extend_from_slice(&self.indexes);
        msg.encode(out)
            .map_err(|e| EncodeError::new(format!("cannot encode as protobuf: {e}")))
    }

    /// Slow path: deserialize again with path tracking to name the offending field.
    fn locate_error(&self, payload: &Value) -> EncodeError {
        let mut track = serde_path_to_error::Track::new();
        let de = serde_path_to_error::Deserializer::new(payload, &mut track);
        let mut message =
            match DynamicMessage::deserialize_with_options(self.message.clone(), de, &self.options)
            {
                Ok(_) => "does not fit the protobuf message".to_owned(),
                Err(e) => e.to_string(),
            };
        let mut keys: Vec<String> = Vec::new();
        let mut path = String::new();
        for segment in &track.path() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => path.push_str(&format!("[{index}]")),
                serde_path_to_error::Segment::Map { key }
                | serde_path_to_error::Segment::Enum { variant: key } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                    keys.push(key.clone());
                }
                serde_path_to_error::Segment::Unknown => {}
            }
        }
        // An unknown key fails before it joins the tracked path; prost-reflect quotes it.
        if let Some(key) = message
            .strip_prefix("unrecognized field name '")
            .and_then(|m| m.split('\'').next())
        {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
            message = "not in the schema (refusing to drop data)".to_owned();
        } else if message.starts_with("unrecognized enum value") {
            if let Some(values) = self.enum_values_at(&keys) {
                message.push_str(&format!("; allowed: {values}"));
            }
        }
        EncodeError::at(path, message)
    }

    /// The value names of the enum field reached by following `keys` from the chosen message.
    fn enum_values_at(&self, keys: &[String]) -> Option<String> {
        let mut message = self.message.clone();
        let mut kind = None;
        for key in keys {
            if let Some(prost_reflect::Kind::Message(m)) = &kind {
                message = m.clone();
            }
            let field = message
                .get_field_by_name(key)
                .or_else(|| message.get_field_by_json_name(key))?;
            kind = Some(field.kind());
        }
        match kind? {
            prost_reflect::Kind::Enum(e) => Some(
                e.values()
                    .map(|v| v.name().to_owned())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            _ => None,
        }
    }
}

/// Confluent's message indexes for a message at `path` in its file descriptor (`[4, i]` for
/// top-level message `i`, `[4, i, 3, j]` for its nested message `j`, ...): the indexes `[i, j]`,
/// written as a zig-zag varint count followed by each index as a zig-zag varint — except that
/// the common `[0]` is written as the single byte `0x00`.
fn confluent_indexes(path: &[i32]) -> Vec<u8> {
    let indexes: Vec<i32> = path.iter().skip(1).step_by(2).copied().collect();
    if indexes == [0] {
        return vec![0];
    }
    let mut out = Vec::new();
    write_zigzag(&mut out, i64::try_from(indexes.len()).unwrap_or(i64::MAX));
    for i in indexes {
        write_zigzag(&mut out, i64::from(i));
    }
    out
}

/// Serves the registered schema text as [`FILE_NAME`]; nothing else (no file system access).
struct InMemoryFile {
    source: String,
}

impl FileResolver for InMemoryFile {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name == FILE_NAME {
            File::from_source(name, &self.source)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

/// The files of the schema's references, by the name it imports them under.
struct Imports(Vec<(String, String)>);

impl FileResolver for Imports {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.0.iter().find(|(import, _)| import == name) {
            Some((_, source)) => File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

#[cfg(test)]
#[path = "protobuf_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "protobuf_number_tests.rs"]
mod number_tests;
