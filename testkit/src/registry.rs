//! The registry's state and its REST semantics, free of any networking: one request in
//! (method, decoded path segments, query, body), one `(status, JSON body)` out. Confluent's
//! status codes, error codes and messages are copied where our clients look at them.

use std::collections::{BTreeMap, HashMap};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use prost::Message as _;
use serde_json::{json, Value};

/// A refusal, shaped like Confluent's `{"error_code": N, "message": "..."}` body.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: u16,
    pub(crate) code: u32,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: u16, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn body(&self) -> Value {
        json!({ "error_code": self.code, "message": self.message })
    }

    fn not_found_path() -> Self {
        Self::new(404, 404, "HTTP 404 Not Found")
    }

    fn method_not_allowed() -> Self {
        Self::new(405, 405, "HTTP 405 Method Not Allowed")
    }

    fn subject_not_found(subject: &str) -> Self {
        Self::new(404, 40401, format!("Subject '{subject}' not found."))
    }

    fn invalid_schema(message: impl Into<String>) -> Self {
        Self::new(422, 42201, message)
    }
}

type Reply = Result<Value, ApiError>;

const COMPATIBILITY_LEVELS: [&str; 7] = [
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
];

/// A schema as first registered, plus the form used to recognise it again.
struct Stored {
    schema_type: String,
    text: String,
    fingerprint: String,
}

#[derive(Default)]
pub(crate) struct Registry {
    /// Index + 1 is the global schema id.
    schemas: Vec<Stored>,
    /// Each subject's schema ids; index + 1 is the version.
    subjects: BTreeMap<String, Vec<u32>>,
    global_compatibility: Option<String>,
    subject_compatibility: HashMap<String, String>,
}

impl Registry {
    /// Registers `text` under `subject` (idempotently) and returns its global id.
    pub(crate) fn register(
        &mut self,
        subject: &str,
        schema_type: &str,
        text: &str,
    ) -> Result<u32, ApiError> {
        let fingerprint = validate(schema_type, text)?;
        let id = match self.find(schema_type, &fingerprint) {
            Some(id) => id,
            None => {
                self.schemas.push(Stored {
                    schema_type: schema_type.to_owned(),
                    text: text.to_owned(),
                    fingerprint,
                });
                self.schemas.len() as u32
            }
        };
        let versions = self.subjects.entry(subject.to_owned()).or_default();
        if !versions.contains(&id) {
            versions.push(id);
        }
        Ok(id)
    }

    fn find(&self, schema_type: &str, fingerprint: &str) -> Option<u32> {
        let index = self
            .schemas
            .iter()
            .position(|s| s.schema_type == schema_type && s.fingerprint == fingerprint)?;
        Some(index as u32 + 1)
    }

    /// Answers one REST request. `path` holds the percent-decoded segments.
    pub(crate) fn handle(
        &mut self,
        method: &str,
        path: &[String],
        query: &HashMap<String, String>,
        body: &[u8],
    ) -> Reply {
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        match (method, segments.as_slice()) {
            ("GET", ["subjects"]) => Ok(json!(self.subjects.keys().collect::<Vec<_>>())),
            ("GET", ["schemas", "types"]) => Ok(json!(["JSON", "PROTOBUF", "AVRO"])),
            ("GET", ["schemas", "ids", id]) => {
                self.schema_by_id(id, query.get("format").map(String::as_str))
            }
            ("GET", ["schemas", "ids", id, "versions"]) => self.versions_of_id(id),
            ("GET", ["schemas", "ids", id, "subjects"]) => {
                let versions = self.versions_of_id(id)?;
                let subjects: Vec<&Value> = versions
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| &v["subject"])
                    .collect();
                Ok(json!(subjects))
            }
            ("GET", ["subjects", subject, "versions"]) => Ok(json!((1..=self
                .versions(subject)?
                .len())
                .collect::<Vec<_>>())),
            ("POST", ["subjects", subject, "versions"]) => {
                let (schema_type, text) = parse_schema_request(body)?;
                let id = self.register(subject, &schema_type, &text)?;
                Ok(json!({ "id": id }))
            }
            ("GET", ["subjects", subject, "versions", version]) => {
                let version = parse_version(version)?;
                let versions = self.versions(subject)?;
                let index = match version {
                    None => versions.len() - 1,
                    Some(v) if v as usize <= versions.len() => v as usize - 1,
                    Some(v) => {
                        return Err(ApiError::new(404, 40402, format!("Version {v} not found.")))
                    }
                };
                self.version_object(subject, index, query.get("format").map(String::as_str))
            }
            ("POST", ["subjects", subject]) => {
                let (schema_type, text) = parse_schema_request(body)?;
                let fingerprint = validate(&schema_type, &text)?;
                let versions = self.versions(subject)?;
                let index = self
                    .find(&schema_type, &fingerprint)
                    .and_then(|id| versions.iter().position(|v| *v == id))
                    .ok_or_else(|| ApiError::new(404, 40403, "Schema not found"))?;
                self.version_object(subject, index, query.get("format").map(String::as_str))
            }
            ("DELETE", ["subjects", subject]) => {
                let count = self.versions(subject)?.len();
                self.subjects.remove(*subject);
                Ok(json!((1..=count).collect::<Vec<_>>()))
            }
            ("GET", ["config"]) => Ok(json!({ "compatibilityLevel": self.global_level() })),
            ("PUT", ["config"]) => {
                let level = parse_compatibility(body)?;
                self.global_compatibility = Some(level.clone());
                Ok(json!({ "compatibility": level }))
            }
            ("GET", ["config", subject]) => match self.subject_compatibility.get(*subject) {
                Some(level) => Ok(json!({ "compatibilityLevel": level })),
                None if query.get("defaultToGlobal").is_some_and(|v| v == "true") => {
                    Ok(json!({ "compatibilityLevel": self.global_level() }))
                }
                None => Err(ApiError::new(
                    404,
                    40408,
                    format!(
                        "Subject '{subject}' does not have subject-level compatibility configured"
                    ),
                )),
            },
            ("PUT", ["config", subject]) => {
                let level = parse_compatibility(body)?;
                self.subject_compatibility
                    .insert((*subject).to_owned(), level.clone());
                Ok(json!({ "compatibility": level }))
            }
            (
                _,
                ["subjects"]
                | ["schemas", "ids", _]
                | ["schemas", "ids", _, "versions" | "subjects"],
            )
            | (_, ["subjects", _, "versions"] | ["subjects", _, "versions", _] | ["subjects", _])
            | (_, ["config"] | ["config", _]) => Err(ApiError::method_not_allowed()),
            _ => Err(ApiError::not_found_path()),
        }
    }

    fn global_level(&self) -> &str {
        self.global_compatibility.as_deref().unwrap_or("BACKWARD")
    }

    fn versions(&self, subject: &str) -> Result<&Vec<u32>, ApiError> {
        self.subjects
            .get(subject)
            .ok_or_else(|| ApiError::subject_not_found(subject))
    }

    fn stored(&self, id: &str) -> Result<(u32, &Stored), ApiError> {
        let not_found = || ApiError::new(404, 40403, format!("Schema {id} not found"));
        let id: u32 = id.parse().map_err(|_| not_found())?;
        let stored = id
            .checked_sub(1)
            .and_then(|i| self.schemas.get(i as usize))
            .ok_or_else(not_found)?;
        Ok((id, stored))
    }

    fn schema_by_id(&self, id: &str, format: Option<&str>) -> Reply {
        let (_, stored) = self.stored(id)?;
        let text = match (stored.schema_type.as_str(), format) {
            ("PROTOBUF", Some("serialized")) => serialized_descriptor(&stored.text)?,
            _ => stored.text.clone(),
        };
        let mut body = json!({ "schema": text, "references": [] });
        if stored.schema_type != "AVRO" {
            body["schemaType"] = json!(stored.schema_type);
        }
        Ok(body)
    }

    fn versions_of_id(&self, id: &str) -> Reply {
        let (id, _) = self.stored(id)?;
        let found: Vec<Value> = self
            .subjects
            .iter()
            .filter_map(|(subject, ids)| {
                let index = ids.iter().position(|i| *i == id)?;
                Some(json!({ "subject": subject, "version": index + 1 }))
            })
            .collect();
        Ok(json!(found))
    }

    fn version_object(&self, subject: &str, index: usize, format: Option<&str>) -> Reply {
        let id = self.subjects[subject][index];
        let mut body = self.schema_by_id(&id.to_string(), format)?;
        body["subject"] = json!(subject);
        body["version"] = json!(index + 1);
        body["id"] = json!(id);
        Ok(body)
    }
}

/// `None` means latest.
fn parse_version(version: &str) -> Result<Option<u32>, ApiError> {
    match version {
        "latest" | "-1" => Ok(None),
        v => match v.parse::<i32>() {
            Ok(n) if n >= 1 => Ok(Some(n as u32)),
            _ => Err(ApiError::new(
                422,
                42202,
                format!(
                    "The specified version '{v}' is not a valid version id. Allowed values are \
                     between [1, 2^31-1] and the string \"latest\""
                ),
            )),
        },
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, 400, format!("Invalid request body: {e}")))
}

/// Reads `{"schema", "schemaType"?, "references"?}`, as sent to register and lookup.
fn parse_schema_request(body: &[u8]) -> Result<(String, String), ApiError> {
    let body = parse_body(body)?;
    let text = body
        .get("schema")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid_schema("Empty schema"))?;
    let schema_type = match body.get("schemaType") {
        None | Some(Value::Null) => "AVRO",
        Some(t) => t
            .as_str()
            .ok_or_else(|| ApiError::invalid_schema("Invalid schemaType"))?,
    };
    let has_references = body
        .get("references")
        .and_then(Value::as_array)
        .is_some_and(|r| !r.is_empty());
    if has_references {
        return Err(ApiError::invalid_schema(
            "references are not supported by this test double",
        ));
    }
    Ok((schema_type.to_owned(), text.to_owned()))
}

fn parse_compatibility(body: &[u8]) -> Result<String, ApiError> {
    let body = parse_body(body)?;
    let level = body
        .get("compatibility")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if COMPATIBILITY_LEVELS.contains(&level) {
        Ok(level.to_owned())
    } else {
        Err(ApiError::new(422, 42203, "Invalid compatibility level"))
    }
}

/// Checks that `text` is a schema of `schema_type` and returns the form it is recognised by:
/// Avro and JSON Schema compare as parsed JSON (so whitespace and key order don't matter),
/// Protobuf as trimmed text.
pub(crate) fn validate(schema_type: &str, text: &str) -> Result<String, ApiError> {
    let invalid = |why: String| ApiError::invalid_schema(format!("Invalid schema {text}: {why}"));
    match schema_type {
        "AVRO" => {
            let value: Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
            check_avro(&value).map_err(invalid)?;
            Ok(value.to_string())
        }
        "JSON" => {
            let value: Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
            if !(value.is_object() || value.is_boolean()) {
                return Err(invalid("a JSON Schema is an object or a boolean".into()));
            }
            Ok(value.to_string())
        }
        "PROTOBUF" => {
            compile_protobuf(text).map_err(invalid)?;
            Ok(text.trim().to_owned())
        }
        other => Err(ApiError::invalid_schema(format!(
            "Invalid schema type {other}"
        ))),
    }
}

const AVRO_PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// A shallow Avro check: enough to refuse what is obviously not a schema.
fn check_avro(value: &Value) -> Result<(), String> {
    match value {
        Value::String(name) if AVRO_PRIMITIVES.contains(&name.as_str()) => Ok(()),
        Value::String(name) => Err(format!("undefined name: \"{name}\"")),
        Value::Array(branches) => branches.iter().try_for_each(check_avro),
        Value::Object(object) => {
            let kind = object.get("type").ok_or("no \"type\" property")?;
            match kind.as_str() {
                Some("record" | "error") => {
                    if !object.get("name").is_some_and(Value::is_string) {
                        return Err("a record needs a \"name\"".into());
                    }
                    let fields = object
                        .get("fields")
                        .and_then(Value::as_array)
                        .ok_or("a record needs \"fields\"")?;
                    fields.iter().try_for_each(|field| {
                        field
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or("a field needs a \"name\"")?;
                        field.get("type").ok_or("a field needs a \"type\"")?;
                        Ok(())
                    })
                }
                Some("enum" | "fixed" | "array" | "map") => Ok(()),
                Some(name) if AVRO_PRIMITIVES.contains(&name) => Ok(()),
                // Named-type references are accepted without resolving them.
                Some(_) => Ok(()),
                None => check_avro(kind),
            }
        }
        _ => Err("not an Avro schema".into()),
    }
}

/// Resolves our one in-memory file, then the well-known `google/protobuf/*.proto` imports.
struct SchemaFile(protox::file::File);

impl protox::file::FileResolver for SchemaFile {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        if name == self.0.name() {
            Ok(self.0.clone())
        } else {
            protox::file::GoogleFileResolver::new().open_file(name)
        }
    }
}

/// The name Confluent gives a schema's file when it has none of its own.
const SCHEMA_FILE_NAME: &str = "default";

/// Compiles a Protobuf schema given either as `.proto` text or, as confluent-kafka's Python
/// serializer registers it, as the base64 of a serialized `FileDescriptorProto`.
fn compile_protobuf(text: &str) -> Result<prost_types::FileDescriptorProto, String> {
    let file = match protox::file::File::from_source(SCHEMA_FILE_NAME, text) {
        Ok(file) => file,
        Err(parse_error) => {
            let bytes = BASE64
                .decode(text.trim())
                .map_err(|_| parse_error.to_string())?;
            let proto = prost_types::FileDescriptorProto::decode(bytes.as_slice())
                .map_err(|e| e.to_string())?;
            protox::file::File::from_file_descriptor_proto(proto)
        }
    };
    let name = file.name().to_owned();
    let mut compiler = protox::Compiler::with_file_resolver(SchemaFile(file));
    compiler.open_file(&name).map_err(|e| e.to_string())?;
    compiler
        .file_descriptor_set()
        .file
        .into_iter()
        .find(|f| f.name() == name)
        .ok_or_else(|| "compiled set lacks the schema's file".to_owned())
}

/// `?format=serialized`: the base64 of the schema's serialized `FileDescriptorProto`.
fn serialized_descriptor(text: &str) -> Result<String, ApiError> {
    let proto = compile_protobuf(text).map_err(|e| ApiError::new(500, 50001, e))?;
    Ok(BASE64.encode(proto.encode_to_vec()))
}
