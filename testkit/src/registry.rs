//! The registry's state and its REST semantics, free of any networking: one request in
//! (method, decoded path segments, query, body), one `(status, JSON body)` out. Confluent's
//! status codes, error codes and messages are copied where our clients look at them.
//!
//! As strict as a real registry where it matters to a catalogue: a new version is checked for
//! compatibility under the subject's level (BACKWARD by default; see [`crate::compat`]), schema
//! text is served normalized (Avro and JSON Schema as compact JSON with sorted keys, Protobuf as
//! registered), and schema `references` are stored, must name an existing subject and version,
//! and are resolved when a schema is parsed (Avro named types, Protobuf imports by file name).

use std::collections::{BTreeMap, HashMap};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use prost::Message as _;
use serde_json::{json, Value};

use crate::compat::{self, Candidate, Verdict};

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

/// One entry of a schema's `references`: the schema registered as `subject` `version`, known
/// inside the referring schema as `name` (a Protobuf import path, an Avro type's full name, a
/// JSON Schema `$ref` URL).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Reference {
    pub(crate) name: String,
    pub(crate) subject: String,
    pub(crate) version: i64,
}

/// A schema as registered: normalized text, references, and the form used to recognise it.
struct Stored {
    schema_type: String,
    text: String,
    references: Vec<Reference>,
    fingerprint: String,
}

/// A register or lookup request: `{"schema", "schemaType"?, "references"?}`.
pub(crate) struct SchemaRequest {
    pub(crate) schema_type: String,
    pub(crate) text: String,
    pub(crate) references: Vec<Reference>,
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
    /// Registers `request` under `subject` (idempotently) and returns its global id. A new
    /// version must be compatible with the earlier ones under the subject's level.
    pub(crate) fn register(
        &mut self,
        subject: &str,
        request: &SchemaRequest,
    ) -> Result<u32, ApiError> {
        let (text, fingerprint) = self.validate(request)?;
        let existing = self.find(&request.schema_type, &fingerprint);
        let versions = self.subjects.get(subject).cloned().unwrap_or_default();
        if let Some(id) = existing.filter(|id| versions.contains(id)) {
            return Ok(id);
        }
        let level = self.level_of(subject).to_owned();
        match self.check(&level, request, &versions) {
            Verdict::Compatible => {}
            Verdict::Incompatible(messages) => {
                return Err(ApiError::new(
                    409,
                    409,
                    format!(
                        "Schema being registered is incompatible with an earlier schema for \
                         subject \"{subject}\", details: [{}]",
                        messages.join("; ")
                    ),
                ))
            }
            Verdict::NotImplemented(why) => return Err(ApiError::new(422, 42299, why)),
        }
        let id = match existing {
            Some(id) => id,
            None => {
                self.schemas.push(Stored {
                    schema_type: request.schema_type.clone(),
                    text,
                    references: request.references.clone(),
                    fingerprint,
                });
                self.schemas.len() as u32
            }
        };
        self.subjects
            .entry(subject.to_owned())
            .or_default()
            .push(id);
        Ok(id)
    }

    /// Checks `request` against the schemas with these ids (a subject's versions, oldest first).
    fn check(&self, level: &str, request: &SchemaRequest, against: &[u32]) -> Verdict {
        let candidate = |schema_type: &str, text: &str, references: &[Reference]| {
            let avro = (schema_type == "AVRO")
                .then(|| self.parse_avro(text, references).ok())
                .flatten();
            Candidate {
                schema_type: schema_type.to_owned(),
                avro,
            }
        };
        let new = candidate(&request.schema_type, &request.text, &request.references);
        let previous: Vec<Candidate> = against
            .iter()
            .map(|id| {
                let s = &self.schemas[*id as usize - 1];
                candidate(&s.schema_type, &s.text, &s.references)
            })
            .collect();
        compat::check(level, &new, &previous)
    }

    /// Every schema `references` leads to, transitively, dependencies first, as
    /// (reference name, schema id). A reference to a missing subject or version is refused.
    fn resolve(&self, references: &[Reference]) -> Result<Vec<(String, u32)>, ApiError> {
        let mut out: Vec<(String, u32)> = Vec::new();
        self.resolve_into(references, &mut out, 0)?;
        Ok(out)
    }

    fn resolve_into(
        &self,
        references: &[Reference],
        out: &mut Vec<(String, u32)>,
        depth: usize,
    ) -> Result<(), ApiError> {
        if depth > 32 {
            return Err(ApiError::invalid_schema(
                "schema references nest too deeply",
            ));
        }
        for reference in references {
            let id = self.reference_id(reference)?;
            let stored = &self.schemas[id as usize - 1];
            self.resolve_into(&stored.references, out, depth + 1)?;
            if !out.iter().any(|(_, known)| *known == id) {
                out.push((reference.name.clone(), id));
            }
        }
        Ok(())
    }

    fn reference_id(&self, reference: &Reference) -> Result<u32, ApiError> {
        let missing = || {
            ApiError::invalid_schema(format!(
                "Invalid schema: reference `{}` names subject '{}' version {}, which does not \
                 exist",
                reference.name, reference.subject, reference.version
            ))
        };
        let versions = self.subjects.get(&reference.subject).ok_or_else(missing)?;
        let index = match reference.version {
            -1 => versions.len().checked_sub(1),
            v if v >= 1 => Some(v as usize - 1),
            _ => None,
        };
        index
            .and_then(|i| versions.get(i))
            .copied()
            .ok_or_else(missing)
    }

    /// Parses an Avro schema with the named types of its references.
    fn parse_avro(
        &self,
        text: &str,
        references: &[Reference],
    ) -> Result<apache_avro::Schema, String> {
        let referenced: Vec<&str> = self
            .resolve(references)
            .map_err(|e| e.message)?
            .into_iter()
            .map(|(_, id)| self.schemas[id as usize - 1].text.as_str())
            .collect();
        if referenced.is_empty() {
            return apache_avro::Schema::parse_str(text).map_err(|e| e.to_string());
        }
        apache_avro::Schema::parse_str_with_list(text, referenced)
            .map(|(schema, _)| schema)
            .map_err(|e| e.to_string())
    }

    /// The Protobuf files of a schema's references, by import name.
    fn protobuf_imports(
        &self,
        references: &[Reference],
    ) -> Result<Vec<(String, String)>, ApiError> {
        Ok(self
            .resolve(references)?
            .into_iter()
            .map(|(name, id)| (name, self.schemas[id as usize - 1].text.clone()))
            .collect())
    }

    /// Checks that the request holds a schema of its type (references resolved) and returns
    /// (normalized text, fingerprint).
    pub(crate) fn validate(&self, request: &SchemaRequest) -> Result<(String, String), ApiError> {
        let text = &request.text;
        let invalid =
            |why: String| ApiError::invalid_schema(format!("Invalid schema {text}: {why}"));
        self.resolve(&request.references)?;
        let normalized = match request.schema_type.as_str() {
            "AVRO" => {
                let value: Value =
                    serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
                check_avro(&value).map_err(invalid)?;
                self.parse_avro(text, &request.references)
                    .map_err(invalid)?;
                normalize_json(&value)
            }
            "JSON" => {
                let value: Value =
                    serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
                if !(value.is_object() || value.is_boolean()) {
                    return Err(invalid("a JSON Schema is an object or a boolean".into()));
                }
                normalize_json(&value)
            }
            "PROTOBUF" => {
                let imports = self.protobuf_imports(&request.references)?;
                compile_protobuf(text, &imports).map_err(invalid)?;
                text.trim().to_owned()
            }
            other => {
                return Err(ApiError::invalid_schema(format!(
                    "Invalid schema type {other}"
                )))
            }
        };
        let fingerprint = format!(
            "{normalized}\n{}",
            serde_json::to_string(&request.references).expect("references serialize")
        );
        Ok((normalized, fingerprint))
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
                let request = parse_schema_request(body)?;
                let id = self.register(subject, &request)?;
                Ok(json!({ "id": id }))
            }
            ("GET", ["schemas", "ids", id, "referencedby"]) => {
                let (id, _) = self.stored(id)?;
                Ok(json!(self.referenced_by(id)))
            }
            ("GET", ["subjects", subject, "versions", version, "referencedby"]) => {
                let index = self.version_index(subject, version)?;
                Ok(json!(self.referenced_by(self.subjects[*subject][index])))
            }
            ("POST", ["compatibility", "subjects", subject, "versions", version]) => {
                let index = self.version_index(subject, version)?;
                let versions = &self.subjects[*subject];
                // A numbered version is checked alone; `latest` as the level says.
                let against = if parse_version(version)?.is_some() {
                    vec![versions[index]]
                } else {
                    versions.clone()
                };
                self.compatibility_answer(subject, body, &against, query)
            }
            ("POST", ["compatibility", "subjects", subject, "versions"]) => {
                let against = self.subjects.get(*subject).cloned().unwrap_or_default();
                self.compatibility_answer(subject, body, &against, query)
            }
            ("GET", ["subjects", subject, "versions", version]) => {
                let index = self.version_index(subject, version)?;
                self.version_object(subject, index, query.get("format").map(String::as_str))
            }
            ("POST", ["subjects", subject]) => {
                let request = parse_schema_request(body)?;
                let (_, fingerprint) = self.validate(&request)?;
                let versions = self.versions(subject)?;
                let index = self
                    .find(&request.schema_type, &fingerprint)
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
            ("DELETE", ["config"]) => {
                let previous = self.global_level().to_owned();
                self.global_compatibility = None;
                Ok(json!({ "compatibilityLevel": previous }))
            }
            ("DELETE", ["config", subject]) => match self.subject_compatibility.remove(*subject) {
                Some(level) => Ok(json!({ "compatibilityLevel": level })),
                None => Err(no_subject_config(subject)),
            },
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
                None => Err(no_subject_config(subject)),
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
            | (_, ["config"] | ["config", _])
            | (_, ["compatibility", "subjects", _, "versions", ..]) => {
                Err(ApiError::method_not_allowed())
            }
            _ => Err(ApiError::not_found_path()),
        }
    }

    fn global_level(&self) -> &str {
        self.global_compatibility.as_deref().unwrap_or("BACKWARD")
    }

    /// The level that applies to `subject`: its own, else the global one.
    fn level_of(&self, subject: &str) -> &str {
        self.subject_compatibility
            .get(subject)
            .map_or_else(|| self.global_level(), String::as_str)
    }

    /// The index of `version` (a number, `latest` or -1) among the subject's versions.
    fn version_index(&self, subject: &str, version: &str) -> Result<usize, ApiError> {
        let version = parse_version(version)?;
        let versions = self.versions(subject)?;
        match version {
            None => Ok(versions.len() - 1),
            Some(v) if v as usize <= versions.len() => Ok(v as usize - 1),
            Some(v) => Err(ApiError::new(404, 40402, format!("Version {v} not found."))),
        }
    }

    /// The ids of the schemas whose references name a subject version holding `id`.
    fn referenced_by(&self, id: u32) -> Vec<u32> {
        (1..=self.schemas.len() as u32)
            .filter(|other| {
                self.schemas[*other as usize - 1]
                    .references
                    .iter()
                    .any(|r| self.reference_id(r).ok() == Some(id))
            })
            .collect()
    }

    /// `POST /compatibility/...`: `{"is_compatible": bool}`, with `messages` when verbose.
    fn compatibility_answer(
        &self,
        subject: &str,
        body: &[u8],
        against: &[u32],
        query: &HashMap<String, String>,
    ) -> Reply {
        let request = parse_schema_request(body)?;
        self.validate(&request)?;
        let level = self.level_of(subject);
        let messages = match self.check(level, &request, against) {
            Verdict::Compatible => Vec::new(),
            Verdict::Incompatible(messages) => messages,
            Verdict::NotImplemented(why) => return Err(ApiError::new(422, 42299, why)),
        };
        let mut answer = json!({ "is_compatible": messages.is_empty() });
        if query.get("verbose").is_some_and(|v| v == "true") {
            answer["messages"] = json!(messages);
        }
        Ok(answer)
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
            ("PROTOBUF", Some("serialized")) => {
                let imports = self.protobuf_imports(&stored.references)?;
                serialized_descriptor(&stored.text, &imports)?
            }
            _ => stored.text.clone(),
        };
        let mut body = json!({ "schema": text, "references": stored.references });
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
fn parse_schema_request(body: &[u8]) -> Result<SchemaRequest, ApiError> {
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
    let references = match body.get("references") {
        None | Some(Value::Null) => Vec::new(),
        Some(r) => serde_json::from_value(r.clone()).map_err(|e| {
            ApiError::invalid_schema(format!(
                "Invalid references (each is {{\"name\", \"subject\", \"version\"}}): {e}"
            ))
        })?,
    };
    Ok(SchemaRequest {
        schema_type: schema_type.to_owned(),
        text: text.to_owned(),
        references,
    })
}

fn no_subject_config(subject: &str) -> ApiError {
    ApiError::new(
        404,
        40408,
        format!("Subject '{subject}' does not have subject-level compatibility configured"),
    )
}

/// Compact JSON with every object's keys sorted, as a real registry serves Avro and JSON Schema.
fn normalize_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for key in keys {
                    out.insert(key.clone(), sorted(&map[key]));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

fn parse_compatibility(body: &[u8]) -> Result<String, ApiError> {
    let body = parse_body(body)?;
    let level = body
        .get("compatibility")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if compat::LEVELS.contains(&level) {
        Ok(level.to_owned())
    } else {
        Err(ApiError::new(
            422,
            42203,
            format!(
                "Invalid compatibility level {level:?}; valid levels are {}",
                compat::LEVELS.join(", ")
            ),
        ))
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

/// Resolves our one in-memory file, the files of its references by their names, then the
/// well-known `google/protobuf/*.proto` imports.
struct SchemaFile {
    file: protox::file::File,
    imports: Vec<(String, String)>,
}

impl protox::file::FileResolver for SchemaFile {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        if name == self.file.name() {
            return Ok(self.file.clone());
        }
        match self.imports.iter().find(|(import, _)| import == name) {
            Some((_, text)) => protox::file::File::from_source(name, text),
            None => protox::file::GoogleFileResolver::new().open_file(name),
        }
    }
}

/// The name Confluent gives a schema's file when it has none of its own.
const SCHEMA_FILE_NAME: &str = "default";

/// Compiles a Protobuf schema given either as `.proto` text or, as confluent-kafka's Python
/// serializer registers it, as the base64 of a serialized `FileDescriptorProto`.
fn compile_protobuf(
    text: &str,
    imports: &[(String, String)],
) -> Result<prost_types::FileDescriptorProto, String> {
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
    let imports = imports.to_vec();
    let mut compiler = protox::Compiler::with_file_resolver(SchemaFile { file, imports });
    compiler.open_file(&name).map_err(|e| e.to_string())?;
    compiler
        .file_descriptor_set()
        .file
        .into_iter()
        .find(|f| f.name() == name)
        .ok_or_else(|| "compiled set lacks the schema's file".to_owned())
}

/// `?format=serialized`: the base64 of the schema's serialized `FileDescriptorProto`.
fn serialized_descriptor(text: &str, imports: &[(String, String)]) -> Result<String, ApiError> {
    let proto = compile_protobuf(text, imports).map_err(|e| ApiError::new(500, 50001, e))?;
    Ok(BASE64.encode(proto.encode_to_vec()))
}
