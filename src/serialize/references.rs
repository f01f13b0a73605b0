//! Confluent schema references: a registered schema may name other registered schemas
//! (`references: [{name, subject, version}]`) — Protobuf imports by file name, Avro named types
//! by full name, JSON Schema `$ref`s by URL or relative name. They are fetched by subject and
//! version, recursively (dependencies first, each once), and kept for good: a subject's
//! numbered version never changes meaning.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::registry::{encode_segment, Reference, Registered, Registry, RegistryError};
use super::{avro, json_schema, protobuf, Encoder};
use crate::config::Format;

/// How deep references may nest before the schema is refused (a cycle, or a mistake).
const MAX_DEPTH: usize = 16;

/// One referenced schema: the name the referring schema knows it by, and its text.
#[derive(Debug, Clone)]
pub struct Referenced {
    pub name: String,
    pub schema: String,
}

/// Referenced schemas by (subject, version), fetched once.
#[derive(Default)]
pub(crate) struct ReferenceCache {
    by_version: RwLock<HashMap<(String, u32), Arc<Registered>>>,
}

impl ReferenceCache {
    /// Every schema `references` leads to, dependencies first, each once. `what` names the
    /// referring schema in errors.
    pub(crate) async fn resolve(
        &self,
        registry: &Registry,
        references: &[Reference],
        what: &str,
    ) -> Result<Vec<Referenced>, RegistryError> {
        let mut out = Vec::new();
        // An explicit stack instead of recursion (async recursion needs boxing): each entry is
        // a reference and whether its own references were already pushed.
        let mut stack: Vec<(Reference, bool, usize)> = references
            .iter()
            .rev()
            .map(|r| (r.clone(), false, 0))
            .collect();
        let mut seen: Vec<(String, u32)> = Vec::new();
        while let Some((reference, expanded, depth)) = stack.pop() {
            let key = (reference.subject.clone(), reference.version);
            if seen.contains(&key) {
                continue;
            }
            if depth > MAX_DEPTH {
                return Err(RegistryError::Refused(format!(
                    "{what}: schema references nest deeper than {MAX_DEPTH} levels"
                )));
            }
            let fetched = self.fetch(registry, &reference, what).await?;
            if expanded || fetched.references.is_empty() {
                seen.push(key);
                out.push(Referenced {
                    name: reference.name.clone(),
                    schema: fetched.schema.clone(),
                });
            } else {
                stack.push((reference, true, depth));
                for inner in fetched.references.iter().rev() {
                    stack.push((inner.clone(), false, depth + 1));
                }
            }
        }
        Ok(out)
    }

    async fn fetch(
        &self,
        registry: &Registry,
        reference: &Reference,
        what: &str,
    ) -> Result<Arc<Registered>, RegistryError> {
        let key = (reference.subject.clone(), reference.version);
        if let Some(s) = self.by_version.read().expect("cache lock").get(&key) {
            return Ok(Arc::clone(s));
        }
        let path = format!(
            "/subjects/{}/versions/{}",
            encode_segment(&reference.subject),
            reference.version
        );
        let about = format!(
            "{what}: reference `{}` (subject `{}` version {})",
            reference.name, reference.subject, reference.version
        );
        let fetched: Registered = registry.get(&path, &about).await?;
        let fetched = Arc::new(fetched);
        self.by_version
            .write()
            .expect("cache lock")
            .insert(key, Arc::clone(&fetched));
        Ok(fetched)
    }
}

impl Encoder {
    /// As [`Encoder::build`], with the schema's resolved references.
    pub fn build_with_references(
        format: Format,
        schema: &str,
        message: Option<&str>,
        referenced: &[Referenced],
    ) -> Result<Self, String> {
        if referenced.is_empty() {
            return Self::build(format, schema, message);
        }
        let built = match format {
            Format::Avro => {
                let texts: Vec<&str> = referenced.iter().map(|r| r.schema.as_str()).collect();
                avro::AvroEncoder::with_references(schema, &texts).map(Self::Avro)
            }
            Format::Protobuf => {
                let imports: Vec<(String, String)> = referenced
                    .iter()
                    .map(|r| (r.name.clone(), r.schema.clone()))
                    .collect();
                protobuf::ProtobufEncoder::with_imports(schema, message, &imports)
                    .map(Self::Protobuf)
            }
            Format::JsonSchema => {
                let references: Vec<(String, String)> = referenced
                    .iter()
                    .map(|r| (r.name.clone(), r.schema.clone()))
                    .collect();
                json_schema::JsonSchemaEncoder::with_references(schema, &references).map(Self::Json)
            }
            Format::RawJson => return Err("raw-json has no schema".into()),
        };
        built.map_err(|e| e.to_string())
    }
}
