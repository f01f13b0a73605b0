//! The Schema Registry client: lookups through `schema_registry_converter` (async), behind our
//! own caches so that in steady state no row costs a registry call.
//!
//! - by id: a schema id never changes meaning, so its encoder is cached for good;
//! - by subject and pinned version: the id is cached for good too;
//! - by subject, latest: the id is reused for `registry.latest_ttl_ms`, then asked again; while
//!   the registry does not answer, the last answer keeps being used (and is asked again once
//!   per TTL, not once per row).
//!
//! Registry errors are classified once, here: unreachable, timeouts, 5xx, 429 and refused
//! credentials are an [`RegistryError::Outage`] (not the row's fault); an unknown subject,
//! version or id, or an unusable schema, is the row's (or its topic's) problem and parks it.

use std::collections::HashMap;
use std::error::Error as _;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use schema_registry_converter::async_impl::schema_registry::{
    get_all_subjects, get_schema_by_id, get_schema_by_subject_and_version, post_schema, SrSettings,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    RawError, RegisteredSchema, SchemaType, SuppliedSchema,
};

use super::Encoder;
use crate::config::{Format, RegistryConfig};

/// What went wrong talking to the registry, sorted by what the relay must do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The registry cannot be asked right now: pause, touch no row.
    #[error("Schema Registry unavailable: {0}")]
    Outage(String),
    /// The registry answered, and the answer makes the row unserializable: park it.
    #[error("{0}")]
    Refused(String),
}

/// A schema as the relay uses it: its registry id and a ready encoder.
#[derive(Debug)]
pub struct Schema {
    pub id: u32,
    pub encoder: Encoder,
}

/// A schema id, and the Protobuf message chosen in it (None: the first, or not Protobuf).
type SchemaKey = (u32, Option<String>);

#[derive(Default)]
struct SubjectCache {
    latest: Option<(u32, Instant)>,
    versions: HashMap<u32, u32>,
}

/// A Schema Registry with caches.
pub struct Registry {
    settings: SrSettings,
    url: String,
    latest_ttl: Duration,
    by_id: RwLock<HashMap<SchemaKey, Arc<Schema>>>,
    subjects: RwLock<HashMap<String, SubjectCache>>,
    references: super::references::ReferenceCache,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("url", &self.url).finish()
    }
}

impl Registry {
    /// Builds the HTTP client (basic auth, CA file, timeout); contacts nothing.
    pub fn new(config: &RegistryConfig) -> Result<Self, String> {
        let url = config.url.trim().trim_end_matches('/').to_owned();
        let mut builder = SrSettings::new_builder(url.clone());
        if !config.username.is_empty() {
            let password = Some(config.password.expose()).filter(|p| !p.is_empty());
            builder.set_basic_authorization(&config.username, password);
        }
        builder.set_timeout(Duration::from_millis(config.timeout_ms));
        let mut client = reqwest::Client::builder();
        if let Some(ca) = &config.ca_location {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("cannot read registry.ca_location {}: {e}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("registry.ca_location {}: {e}", ca.display()))?;
            client = client.add_root_certificate(cert);
        }
        let settings = builder
            .build_with(client)
            .map_err(|e| format!("cannot build the registry client: {}", e.error))?;
        Ok(Self {
            settings,
            url,
            latest_ttl: Duration::from_millis(config.latest_ttl_ms),
            by_id: RwLock::default(),
            subjects: RwLock::default(),
            references: super::references::ReferenceCache::default(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Does the registry answer (`GET /subjects`)?
    pub async fn probe(&self) -> Result<(), RegistryError> {
        get_all_subjects(&self.settings)
            .await
            .map(|_| ())
            .map_err(|e| classify(&e, "listing subjects"))
    }

    /// The schema with this id, for a topic written in `format`.
    pub async fn by_id(
        &self,
        id: u32,
        format: Format,
        message: Option<&str>,
    ) -> Result<Arc<Schema>, RegistryError> {
        let key = (id, message.map(str::to_owned));
        if let Some(s) = self.by_id.read().expect("cache lock").get(&key) {
            return Ok(Arc::clone(s));
        }
        let registered = get_schema_by_id(id, &self.settings)
            .await
            .map_err(|e| classify(&e, &format!("schema id {id}")))?;
        self.remember(registered, id, format, message, &format!("schema id {id}"))
            .await
    }

    /// The schema of `subject` at `version` (None: the latest), for a topic written in `format`.
    pub async fn for_subject(
        &self,
        subject: &str,
        version: Option<u32>,
        format: Format,
        message: Option<&str>,
    ) -> Result<Arc<Schema>, RegistryError> {
        let (cached, stale) = self.cached_id(subject, version);
        if let Some(id) = cached {
            return self.by_id(id, format, message).await;
        }
        let what = match version {
            Some(v) => format!("subject `{subject}` version {v}"),
            None => format!("subject `{subject}` (latest version)"),
        };
        let registered =
            match get_schema_by_subject_and_version(&self.settings, subject, version).await {
                Ok(r) => r,
                Err(e) => {
                    return match (classify(&e, &what), stale) {
                        // The registry is away: the last known latest is still the best answer,
                        // and it is kept for another TTL, so that rows do not each ask again.
                        (RegistryError::Outage(_), Some(id)) => {
                            self.refresh_latest(subject, id);
                            self.by_id(id, format, message).await
                        }
                        (err, _) => Err(err),
                    };
                }
            };
        let id = registered.id;
        {
            let mut subjects = self.subjects.write().expect("cache lock");
            let entry = subjects.entry(subject.to_owned()).or_default();
            match version {
                Some(v) => {
                    entry.versions.insert(v, id);
                }
                None => entry.latest = Some((id, Instant::now())),
            }
        }
        self.remember(registered, id, format, message, &what).await
    }

    /// Keeps `id` as the subject's latest for another TTL (unless a newer answer came meanwhile).
    fn refresh_latest(&self, subject: &str, id: u32) {
        let mut subjects = self.subjects.write().expect("cache lock");
        if let Some(entry) = subjects.get_mut(subject) {
            if let Some((latest, at)) = &mut entry.latest {
                if *latest == id {
                    *at = Instant::now();
                }
            }
        }
    }

    /// (fresh id, stale id) known for this subject and version.
    fn cached_id(&self, subject: &str, version: Option<u32>) -> (Option<u32>, Option<u32>) {
        let subjects = self.subjects.read().expect("cache lock");
        let Some(entry) = subjects.get(subject) else {
            return (None, None);
        };
        match version {
            Some(v) => (entry.versions.get(&v).copied(), None),
            None => match entry.latest {
                Some((id, at)) if at.elapsed() < self.latest_ttl => (Some(id), None),
                Some((id, _)) => (None, Some(id)),
                None => (None, None),
            },
        }
    }

    async fn remember(
        &self,
        registered: RegisteredSchema,
        id: u32,
        format: Format,
        message: Option<&str>,
        what: &str,
    ) -> Result<Arc<Schema>, RegistryError> {
        let key = (id, message.map(str::to_owned));
        if let Some(s) = self.by_id.read().expect("cache lock").get(&key) {
            return Ok(Arc::clone(s));
        }
        let found = schema_format(&registered.schema_type);
        if found != Some(format) {
            return Err(RegistryError::Refused(format!(
                "{what} (id {id}) is a {} schema, but the topic is configured as {}",
                type_name(&registered.schema_type),
                format.schema_type()
            )));
        }
        let referenced = self
            .references
            .resolve(&self.settings, &registered.references, what)
            .await?;
        let encoder =
            Encoder::build_with_references(format, &registered.schema, message, &referenced)
                .map_err(|why| RegistryError::Refused(format!("{what} (id {id}): {why}")))?;
        let schema = Arc::new(Schema { id, encoder });
        self.by_id
            .write()
            .expect("cache lock")
            .insert(key, Arc::clone(&schema));
        Ok(schema)
    }

    /// Registers `schema` under `subject`; returns its id.
    pub async fn register(
        &self,
        subject: &str,
        format: Format,
        schema: &str,
    ) -> Result<u32, RegistryError> {
        let schema_type = match format {
            Format::Avro => SchemaType::Avro,
            Format::JsonSchema => SchemaType::Json,
            Format::Protobuf => SchemaType::Protobuf,
            Format::RawJson => {
                return Err(RegistryError::Refused("raw-json has no schema".into()));
            }
        };
        post_schema(
            &self.settings,
            subject.to_owned(),
            SuppliedSchema::new(None, schema_type, schema.to_owned()),
        )
        .await
        .map(|r| r.id)
        .map_err(|e| classify(&e, &format!("registering subject `{subject}`")))
    }

    /// Registers every schema file of `dir`: `<subject>.avsc` (Avro), `<subject>.json`
    /// (JSON Schema), `<subject>.proto` (Protobuf). Returns (subject, id) in file-name order.
    pub async fn register_dir(&self, dir: &Path) -> Result<Vec<(String, u32)>, RegistryError> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| RegistryError::Refused(format!("cannot read {}: {e}", dir.display())))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let mut registered = Vec::new();
        for path in files {
            let format = match path.extension().and_then(|e| e.to_str()) {
                Some("avsc") => Format::Avro,
                Some("json") => Format::JsonSchema,
                Some("proto") => Format::Protobuf,
                _ => continue,
            };
            let Some(subject) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).map_err(|e| {
                RegistryError::Refused(format!("cannot read {}: {e}", path.display()))
            })?;
            let id = self.register(subject, format, &text).await?;
            registered.push((subject.to_owned(), id));
        }
        Ok(registered)
    }
}

fn schema_format(t: &SchemaType) -> Option<Format> {
    match t {
        SchemaType::Avro => Some(Format::Avro),
        SchemaType::Json => Some(Format::JsonSchema),
        SchemaType::Protobuf => Some(Format::Protobuf),
        _ => None,
    }
}

fn type_name(t: &SchemaType) -> String {
    match t {
        SchemaType::Avro => "AVRO".into(),
        SchemaType::Json => "JSON".into(),
        SchemaType::Protobuf => "PROTOBUF".into(),
        SchemaType::Other(o) => o.clone(),
        other => format!("{other:?}"),
    }
}

/// The HTTP status in one of the crate's error texts ("… failed with status 404 Not Found").
fn http_status(e: &SRCError) -> Option<u16> {
    let rest = e.error.split("with status ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Sorts a registry error into outage or refusal, once. `what` names what was asked.
pub fn classify(e: &SRCError, what: &str) -> RegistryError {
    let raw = e.source().and_then(|s| s.downcast_ref::<RawError>());
    let detail = match raw {
        Some(r) => format!(
            "{} (error {})",
            r.message.trim_end_matches('.'),
            r.error_code
        ),
        None => e.cause.clone().unwrap_or_else(|| e.error.clone()),
    };
    match http_status(e) {
        // Not found (40401 subject, 40402 version, 40403 schema), invalid (422), conflict (409):
        // the registry answered, and no retry will change the answer.
        Some(400 | 404 | 409 | 422) => RegistryError::Refused(format!("{what}: {detail}")),
        Some(401 | 403) => RegistryError::Outage(format!(
            "{what}: the registry refused our credentials ({detail}); check registry.username \
             and registry.password"
        )),
        Some(status) => RegistryError::Outage(format!("{what}: HTTP {status}: {detail}")),
        // No HTTP answer at all: connection refused, timeout, TLS, unreadable response.
        None => RegistryError::Outage(format!("{what}: {detail}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http_error(status: &str, code: u32, message: &str) -> SRCError {
        SRCError::non_retryable_with_cause(
            serde_json::from_value::<RawError>(
                serde_json::json!({"error_code": code, "message": message}),
            )
            .unwrap(),
            &format!("HTTP request to schema registry failed with status {status}"),
        )
    }

    #[test]
    fn not_found_and_invalid_answers_refuse_the_row() {
        for (status, code) in [
            ("404 Not Found", 40401),
            ("422 Unprocessable Entity", 42201),
        ] {
            let e = classify(
                &http_error(status, code, "Subject 'x' not found."),
                "subject `x`",
            );
            let RegistryError::Refused(text) = e else {
                panic!("{status} must refuse, got {e:?}");
            };
            assert!(
                text.contains("subject `x`") && text.contains(&code.to_string()),
                "{text}"
            );
        }
    }

    #[test]
    fn server_errors_credentials_and_no_answer_are_outages() {
        for status in [
            "500 Internal Server Error",
            "503 Service Unavailable",
            "401 Unauthorized",
            "429 Too Many Requests",
        ] {
            let e = classify(&http_error(status, 50001, "boom"), "subject `x`");
            assert!(matches!(e, RegistryError::Outage(_)), "{status}: {e:?}");
        }
        let refused = SRCError::retryable_with_cause(
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"),
            "error sending request",
        );
        assert!(matches!(classify(&refused, "x"), RegistryError::Outage(_)));
    }
}
