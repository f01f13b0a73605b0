//! The Schema Registry client: its REST API through `reqwest`, behind our own caches so that in
//! steady state no row costs a registry call.
//!
//! - by id: a schema id never changes meaning, so its encoder is cached for good — per (id,
//!   format, message): a row whose topic is written in another format than the schema's type
//!   is refused whether the id was cached or not;
//! - by subject and pinned version: the id is cached for good too;
//! - by subject, latest: the id is reused for `registry.latest_ttl_ms`, then asked again; while
//!   the registry does not answer, the last answer keeps being used (and is asked again once
//!   per TTL, not once per row).
//!
//! Registry answers are classified once, here, on the HTTP status first and the body's
//! `error_code` second (see [`classify_status`]): no answer, timeouts, 5xx, 408, 429 and
//! refused credentials (401, 403) are an [`RegistryError::Outage`] (not the row's fault); every
//! other 4xx is about what the row asked for (its subject, version or id) and parks it, as does
//! an unusable schema. Subjects are percent-encoded in request paths and bounded in length
//! ([`MAX_SUBJECT_LEN`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::Encoder;
use crate::config::{Format, RegistryConfig};

/// The longest subject name the relay asks the registry for. A longer one (from a row's
/// `value_subject`) is refused before any request, so that the row is parked with a reason
/// rather than drawing a 414 or a truncated lookup.
pub const MAX_SUBJECT_LEN: usize = 255;

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

/// What a registry HTTP status means for the relay, before any text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The registry (or the way to it) is not working: pause, touch no row.
    Outage,
    /// The registry refused our credentials: pause, touch no row; the operator must act.
    Credentials,
    /// The registry answered about what was asked (a subject, version or id): park the row.
    Refused,
}

/// Sorts an HTTP status from the registry. The status decides; the body only adds words.
pub fn classify_status(status: u16) -> Verdict {
    match status {
        401 | 403 => Verdict::Credentials,
        // Request timeout and rate limiting are the registry's state, not the row's.
        408 | 429 => Verdict::Outage,
        400..=499 => Verdict::Refused,
        // 5xx, and anything a registry should not answer (1xx, 3xx after redirects).
        _ => Verdict::Outage,
    }
}

/// A registry error body: Confluent's `{"error_code": 40401, "message": "…"}`; either part may
/// be missing (a real registry's 401 may carry only `message`), or the body may not be JSON.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    error_code: Option<i64>,
    message: Option<String>,
}

/// The words for a failed answer: its message and error code when the body has them.
fn describe(status: u16, body: &str) -> String {
    let parsed: ErrorBody = serde_json::from_str(body).unwrap_or_default();
    let message = parsed
        .message
        .map(|m| m.trim().trim_end_matches('.').to_owned())
        .filter(|m| !m.is_empty());
    let mut text = match message {
        Some(m) => m,
        None => {
            // No JSON message: a short, single-line excerpt of what came back.
            let excerpt: String = body.chars().take(200).collect();
            let excerpt = excerpt.split_whitespace().collect::<Vec<_>>().join(" ");
            if excerpt.is_empty() {
                "no message".to_owned()
            } else {
                excerpt
            }
        }
    };
    match parsed.error_code {
        Some(code) => {
            let _ = write!(text, " (HTTP {status}, error {code})");
        }
        None => {
            let _ = write!(text, " (HTTP {status})");
        }
    }
    text
}

/// The registry error for an HTTP answer `status` with `body`; `what` names what was asked.
pub fn classify(status: u16, body: &str, what: &str) -> RegistryError {
    let detail = describe(status, body);
    match classify_status(status) {
        Verdict::Refused => RegistryError::Refused(format!("{what}: {detail}")),
        Verdict::Credentials => RegistryError::Outage(format!(
            "{what}: the registry refused our credentials: {detail}; check registry.username \
             and registry.password"
        )),
        Verdict::Outage => RegistryError::Outage(format!("{what}: {detail}")),
    }
}

/// Percent-encodes one path segment: everything but RFC 3986's unreserved characters, so
/// that `/`, `?`, `#` and `%` in a subject stay inside its segment.
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Refuses a subject the relay will not ask for.
fn check_subject(subject: &str) -> Result<(), RegistryError> {
    let chars = subject.chars().count();
    if subject.is_empty() {
        return Err(RegistryError::Refused("the subject name is empty".into()));
    }
    if chars > MAX_SUBJECT_LEN {
        let start: String = subject.chars().take(40).collect();
        return Err(RegistryError::Refused(format!(
            "subject `{start}…` is {chars} characters long; the limit is {MAX_SUBJECT_LEN}"
        )));
    }
    Ok(())
}

/// A schema as the registry serves it (`/schemas/ids/{id}`, `/subjects/{s}/versions/{v}`).
#[derive(Debug, Deserialize)]
pub(crate) struct Registered {
    #[serde(default)]
    id: Option<u32>,
    pub(crate) schema: String,
    /// Absent means Avro.
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    pub(crate) references: Vec<Reference>,
}

/// A schema reference as the registry serves it: the name the referring schema uses, and the
/// subject and version it names.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Reference {
    pub(crate) name: String,
    pub(crate) subject: String,
    pub(crate) version: u32,
}

impl Registered {
    fn schema_type(&self) -> &str {
        self.schema_type.as_deref().unwrap_or("AVRO")
    }
}

#[derive(Debug, Deserialize)]
struct RegisteredId {
    id: u32,
}

/// A schema as the relay uses it: its registry id and a ready encoder.
#[derive(Debug)]
pub struct Schema {
    pub id: u32,
    pub encoder: Encoder,
}

/// A schema id, the format it is used for (its registry schema type), and the Protobuf message
/// chosen in it (None: the first, or not Protobuf).
type SchemaKey = (u32, &'static str, Option<String>);

#[derive(Default)]
struct SubjectCache {
    latest: Option<(u32, Instant)>,
    versions: HashMap<u32, u32>,
}

/// A Schema Registry with caches.
pub struct Registry {
    client: reqwest::Client,
    username: String,
    password: Option<String>,
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

const ACCEPT: &str = "application/vnd.schemaregistry.v1+json, application/json";

impl Registry {
    /// Builds the HTTP client (basic auth, CA file, timeout); contacts nothing.
    pub fn new(config: &RegistryConfig) -> Result<Self, String> {
        let url = config.url.trim().trim_end_matches('/').to_owned();
        let mut client =
            reqwest::Client::builder().timeout(Duration::from_millis(config.timeout_ms));
        if let Some(ca) = &config.ca_location {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("cannot read registry.ca_location {}: {e}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("registry.ca_location {}: {e}", ca.display()))?;
            client = client.add_root_certificate(cert);
        }
        let client = client
            .build()
            .map_err(|e| format!("cannot build the registry client: {e}"))?;
        Ok(Self {
            client,
            username: config.username.clone(),
            password: Some(config.password.expose().to_owned()).filter(|p| !p.is_empty()),
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

    /// One request; `path` is already encoded. Ok(body) on 2xx, the classified error otherwise.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
        what: &str,
    ) -> Result<String, RegistryError> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.url))
            .header(reqwest::header::ACCEPT, ACCEPT);
        if !self.username.is_empty() {
            request = request.basic_auth(&self.username, self.password.as_deref());
        }
        if let Some(body) = body {
            request = request
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/vnd.schemaregistry.v1+json",
                )
                .body(body);
        }
        let response = request.send().await.map_err(|e| no_answer(&e, what))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| no_answer(&e, what))?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(classify(status, &text, what))
        }
    }

    /// A JSON answer of type `T`; an unreadable 2xx body is the registry's fault (outage).
    pub(crate) async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
    ) -> Result<T, RegistryError> {
        let text = self.call(reqwest::Method::GET, path, None, what).await?;
        serde_json::from_str(&text).map_err(|e| {
            RegistryError::Outage(format!(
                "{what}: the registry's answer is not readable: {e}"
            ))
        })
    }

    /// Does the registry answer (`GET /subjects`)?
    pub async fn probe(&self) -> Result<(), RegistryError> {
        self.get::<serde_json::Value>("/subjects", "listing subjects")
            .await
            .map(|_| ())
            // Whatever the probe is told, it is not a row's fault: an answer that is not 2xx
            // means the registry is not usable yet.
            .map_err(|e| match e {
                RegistryError::Refused(why) => RegistryError::Outage(why),
                outage => outage,
            })
    }

    /// The schema with this id, for a topic written in `format`.
    pub async fn by_id(
        &self,
        id: u32,
        format: Format,
        message: Option<&str>,
    ) -> Result<Arc<Schema>, RegistryError> {
        let key = (id, format.schema_type(), message.map(str::to_owned));
        if let Some(s) = self.by_id.read().expect("cache lock").get(&key) {
            crate::metrics::registry_cache(true);
            return Ok(Arc::clone(s));
        }
        crate::metrics::registry_cache(false);
        let what = format!("schema id {id}");
        let registered: Registered = self.get(&format!("/schemas/ids/{id}"), &what).await?;
        self.remember(registered, id, format, message, &what).await
    }

    /// The schema of `subject` at `version` (None: the latest), for a topic written in `format`.
    pub async fn for_subject(
        &self,
        subject: &str,
        version: Option<u32>,
        format: Format,
        message: Option<&str>,
    ) -> Result<Arc<Schema>, RegistryError> {
        check_subject(subject)?;
        let (cached, stale) = self.cached_id(subject, version);
        if let Some(id) = cached {
            return self.by_id(id, format, message).await;
        }
        crate::metrics::registry_cache(false);
        let what = match version {
            Some(v) => format!("subject `{subject}` version {v}"),
            None => format!("subject `{subject}` (latest version)"),
        };
        let path = format!(
            "/subjects/{}/versions/{}",
            encode_segment(subject),
            version.map_or_else(|| "latest".to_owned(), |v| v.to_string())
        );
        let registered: Registered = match self.get(&path, &what).await {
            Ok(r) => r,
            Err(e) => {
                return match (e, stale) {
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
        let id = registered.id.ok_or_else(|| {
            RegistryError::Outage(format!("{what}: the registry's answer has no schema id"))
        })?;
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
        registered: Registered,
        id: u32,
        format: Format,
        message: Option<&str>,
        what: &str,
    ) -> Result<Arc<Schema>, RegistryError> {
        let key = (id, format.schema_type(), message.map(str::to_owned));
        if let Some(s) = self.by_id.read().expect("cache lock").get(&key) {
            return Ok(Arc::clone(s));
        }
        // The type check comes first: it holds on every path, since every cache entry is made
        // here and keyed by the format it was checked for.
        check_type(registered.schema_type(), format, id, what)?;
        let referenced = self
            .references
            .resolve(self, &registered.references, what)
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
        if format == Format::RawJson {
            return Err(RegistryError::Refused("raw-json has no schema".into()));
        }
        check_subject(subject)?;
        let mut body = serde_json::json!({ "schema": schema });
        if format != Format::Avro {
            body["schemaType"] = serde_json::Value::from(format.schema_type());
        }
        let what = format!("registering subject `{subject}`");
        let text = self
            .call(
                reqwest::Method::POST,
                &format!("/subjects/{}/versions", encode_segment(subject)),
                Some(body.to_string()),
                &what,
            )
            .await?;
        serde_json::from_str::<RegisteredId>(&text)
            .map(|r| r.id)
            .map_err(|e| {
                RegistryError::Outage(format!(
                    "{what}: the registry's answer is not readable: {e}"
                ))
            })
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

/// The registry's schema type must be the topic's format.
fn check_type(schema_type: &str, format: Format, id: u32, what: &str) -> Result<(), RegistryError> {
    if schema_type.eq_ignore_ascii_case(format.schema_type()) {
        return Ok(());
    }
    Err(RegistryError::Refused(format!(
        "{what} (id {id}) is a {schema_type} schema, but the topic is configured as {}",
        format.schema_type()
    )))
}

/// No HTTP answer: connection refused, timeout, TLS, a body cut off. Never the row's fault.
fn no_answer(e: &reqwest::Error, what: &str) -> RegistryError {
    use std::error::Error as _;
    let mut text = if e.is_timeout() {
        "no answer within registry.timeout_ms".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    RegistryError::Outage(format!("{what}: {text}"))
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
