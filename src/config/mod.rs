//! Configuration: defaults → TOML file → environment (`OUTBOX_RELAY__SECTION__KEY`).
//!
//! Unknown keys are rejected, every problem is reported together in one message, and secrets
//! (the database password, the registry and SASL passwords, SASL/SSL secrets in pass-through
//! properties) never reach `Debug` output, logs or `config check`. Secrets may come from files
//! (`*_file` keys), read at load. The doc comment on each field is the config reference.

mod kafka_security;
mod operations;
mod registry;
mod secret;
mod topics;

pub use kafka_security::{KafkaSecurity, SaslMechanism, SecurityProtocol};
pub use operations::{parse_duration, HttpConfig, RetentionConfig};
pub use registry::RegistryConfig;
pub use secret::{is_secret_property, read_secret_file, redact_url, Secret};
pub use topics::{
    check_topic_name, Format, KeyFormat, OnParked, RetryConfig, Selection, SubjectStrategy,
    TopicConfig, TopicPolicies, TopicPolicy,
};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format as _, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize, Serializer};

/// Prefix of environment variables; sections and keys are separated by `__`.
pub const ENV_PREFIX: &str = "OUTBOX_RELAY__";
/// File read when no path is given and it exists.
pub const DEFAULT_PATH: &str = "config/relay.toml";

/// The relay's whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub kafka: KafkaConfig,
    pub relay: RelayConfig,
    pub registry: RegistryConfig,
    pub retry: RetryConfig,
    /// Settings every topic gets unless its own `[topics."name"]` table says otherwise.
    pub topic_defaults: TopicConfig,
    /// Per-topic settings, keyed by topic name.
    pub topics: BTreeMap<String, TopicConfig>,
    pub headers: HeadersConfig,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub retention: RetentionConfig,
}

/// `[database]`: where the outbox table lives.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct DatabaseConfig {
    /// Postgres URL, e.g. `postgres://user:password@127.0.0.1:5432/db`. The password is redacted.
    pub url: DatabaseUrl,
    /// Schema holding the outbox table (created by `migrate` if missing).
    pub schema: String,
    /// Outbox table name.
    pub table: String,
    /// Connection pool size. Each in-flight batch holds one connection.
    pub max_connections: u32,
    /// Time allowed to establish a connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// TLS to Postgres, as libpq's `sslmode`: `disable`, `prefer` (TLS when the server offers
    /// it, unverified), `require` (TLS, unverified), `verify-ca` (TLS, the server's certificate
    /// signed by a trusted CA) or `verify-full` (also naming the host in `database.url`).
    /// Unset: the URL's `sslmode` parameter, else `prefer`. Setting both is refused.
    pub sslmode: Option<SslMode>,
    /// PEM file of the CA that signed the server's certificate, for `verify-ca` and
    /// `verify-full` (unset: the system's roots). The URL's `sslrootcert` parameter is the
    /// same; setting both is refused.
    pub ssl_root_cert: Option<PathBuf>,
    /// A file holding the database password (e.g. a mounted Kubernetes secret), read at load
    /// (one trailing newline trimmed) and added to the connection options (the URL's
    /// `password` parameter); `url` then carries no password.
    pub password_file: Option<PathBuf>,
}

/// `database.sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl DatabaseConfig {
    /// `database.sslmode` and `database.ssl_root_cert` against the URL's own parameters: set
    /// twice is refused, a value the URL spells wrong or a CA file that is not there too.
    fn tls_problems(&self, p: &mut Vec<String>) {
        let params = query_params(self.url.expose());
        let url_has = |names: &[&str]| params.iter().find(|(k, _)| names.contains(&k.as_str()));
        let url_mode = url_has(&["sslmode", "ssl-mode"]);
        let url_cert = url_has(&["sslrootcert", "ssl-root-cert", "ssl-ca"]);
        if let (Some(mode), Some(_)) = (self.sslmode, url_mode) {
            p.push(format!(
                "database.sslmode ({}) is refused: database.url has an sslmode parameter too; set one of them",
                serde_json::to_value(mode).expect("mode serializes")
            ));
        }
        if let (Some(_), Some(_)) = (&self.ssl_root_cert, url_cert) {
            p.push(
                "database.ssl_root_cert is refused: database.url has an sslrootcert parameter \
                 too; set one of them"
                    .into(),
            );
        }
        if let Some((_, mode)) = url_mode {
            const MODES: [&str; 6] = [
                "disable",
                "allow",
                "prefer",
                "require",
                "verify-ca",
                "verify-full",
            ];
            if !MODES.contains(&mode.to_ascii_lowercase().as_str()) {
                p.push(format!(
                    "database.url: sslmode={mode:?} is not one of disable, prefer, require, \
                     verify-ca, verify-full"
                ));
            }
        }
        let cert = self
            .ssl_root_cert
            .clone()
            .or_else(|| url_cert.map(|(_, v)| PathBuf::from(v)));
        if let Some(cert) = cert {
            if !cert.is_file() {
                p.push(format!(
                    "the root certificate {} (database.ssl_root_cert or the URL's sslrootcert) \
                     does not exist",
                    cert.display()
                ));
            }
        }
    }
}

/// A URL's query parameters, percent-decoded (`+` is a space, as in a form).
fn query_params(url: &str) -> Vec<(String, String)> {
    let Some((_, query)) = url.split_once('?') else {
        return Vec::new();
    };
    let query = query.split('#').next().unwrap_or_default();
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex) {
                (b'%', Some(b)) => {
                    out.push(b);
                    i += 3;
                }
                (b'+', _) => {
                    out.push(b' ');
                    i += 1;
                }
                (b, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: DatabaseUrl(String::new()),
            schema: "public".into(),
            table: "outbox".into(),
            max_connections: 8,
            connect_timeout_ms: 5_000,
            sslmode: None,
            ssl_root_cert: None,
            password_file: None,
        }
    }
}

/// `[kafka]`: the producer.
#[derive(Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list. Required.
    pub bootstrap_servers: String,
    /// Kafka `client.id`.
    pub client_id: String,
    /// Timeout of the metadata request used to check that Kafka answers, in milliseconds.
    pub metadata_timeout_ms: u64,
    /// How long librdkafka may try to deliver a record before it reports a failure
    /// (`message.timeout.ms`), in milliseconds. It bounds how long a batch's transaction (its
    /// row locks, its connection) stays open: at most this, plus the time to write the batch's
    /// outcome. At most `relay.shutdown_timeout_ms`, so that a shutdown can wait it out.
    pub delivery_timeout_ms: u64,
    /// Park a row its topic's configuration will refuse (a `created_at` outside the timestamp
    /// window, no key on a compacted topic) before producing it, from the topic's described
    /// configs (cached 60 s). Off: such rows go to Kafka, which refuses them.
    pub check_topic_limits: bool,
    /// TLS and SASL, for every Kafka client of the relay.
    pub security: KafkaSecurity,
    /// librdkafka properties passed through as they are (e.g. `"linger.ms" = 5`,
    /// `"ssl.certificate.location" = "…"`). `acks` and `enable.idempotence` are always `all`
    /// and `true`; a property contradicting them is refused, and so is one that a
    /// `kafka.security` key sets too. Connection properties (`security.*`, `sasl.*`, `ssl.*`,
    /// `socket.*`…) reach every Kafka client of the relay, the others the producer only.
    pub properties: BTreeMap<String, PropertyValue>,
}

/// By hand: a pass-through property whose name looks secret prints as `***`, and URL
/// credentials in any value are redacted.
impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, String> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), secret::shown_property(k, &v.as_config_string())))
            .collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("client_id", &self.client_id)
            .field("metadata_timeout_ms", &self.metadata_timeout_ms)
            .field("delivery_timeout_ms", &self.delivery_timeout_ms)
            .field("check_topic_limits", &self.check_topic_limits)
            .field("security", &self.security)
            .field("properties", &properties)
            .finish()
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: String::new(),
            client_id: "outbox-relay".into(),
            metadata_timeout_ms: 5_000,
            delivery_timeout_ms: 20_000,
            check_topic_limits: true,
            security: KafkaSecurity::default(),
            properties: BTreeMap::new(),
        }
    }
}

/// `relay.batch_size` when unset. A claim costs about the same for 500 rows as for 2,000 up to
/// its per-row work, and one claim runs at a time: 2,000-row batches drained a backlog
/// 1.4–1.8× faster than 500-row ones (BENCHMARKS.md). Latency at low rates does not change
/// (batches are as small as what is due).
pub const DEFAULT_BATCH_SIZE: u32 = 2000;

/// `[relay]`: the claim → produce → mark loop.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct RelayConfig {
    /// Rows claimed per batch (one transaction, one bulk mark).
    pub batch_size: u32,
    /// Batches in flight at once: the relay claims the next batch while earlier ones wait for
    /// Kafka's acknowledgements. Each holds a database connection (its transaction) until its
    /// outcome is written.
    pub concurrency: u32,
    /// Sleep between claims when no row is due, in milliseconds.
    pub poll_interval_ms: u64,
    /// On SIGTERM/SIGINT: how long in-flight batches may take to be acknowledged and marked.
    pub shutdown_timeout_ms: u64,
    /// What a delivered row becomes: `mark` (status `delivered`, with its Kafka partition and
    /// offset, until retention deletes it) or `delete` (deleted at once; its event id, topic,
    /// key, partition and offset are appended to the `<table>_delivered` log).
    pub on_delivered: OnDelivered,
}

/// `relay.on_delivered`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnDelivered {
    /// The row stays, marked delivered: a full audit (payload, headers) until retention.
    #[default]
    Mark,
    /// The row is deleted; only its coordinates stay, in the delivery log. Cheaper for
    /// Postgres; delivered payloads are gone (a delivered row cannot be looked at or replayed).
    Delete,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: DEFAULT_BATCH_SIZE,
            concurrency: 4,
            poll_interval_ms: 100,
            shutdown_timeout_ms: 30_000,
            on_delivered: OnDelivered::Mark,
        }
    }
}

impl RelayConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
}

/// `[headers]`: default headers on every record, after `event_id` and before the row's own.
/// A row header with the same name replaces the default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct HeadersConfig {
    pub source: String,
    pub version: String,
}

impl Default for HeadersConfig {
    fn default() -> Self {
        Self {
            source: "outbox-relay".into(),
            version: "1.0.0".into(),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct LogConfig {
    /// `text` (human-readable) or `json` (one object per line).
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `outbox_relay=debug,rdkafka=warn`. `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A Postgres URL whose password never appears in `Debug`, `Display` or serialized output.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }
    /// The URL with its password; only for opening connections.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The URL with `***` in place of the password.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// A pass-through librdkafka property: written as a string, number or boolean in TOML.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum PropertyValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl PropertyValue {
    pub fn as_config_string(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Integer(i) => i.to_string(),
            Self::Float(f) => f.to_string(),
            Self::Bool(b) => b.to_string(),
        }
    }
}

/// Without its property name a value cannot tell whether it is secret: `KafkaConfig`'s `Debug`
/// redacts by name; on its own, a value only hides URL credentials.
impl fmt::Debug for PropertyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_url(&self.as_config_string()))
    }
}

impl Serialize for PropertyValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_config_string())
    }
}

/// A list of every problem found while loading configuration.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem{}):",
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn one(problem: impl Into<String>) -> Self {
        Self {
            problems: vec![problem.into()],
        }
    }
}

impl Config {
    /// Loads defaults, then the file (`path`, or [`DEFAULT_PATH`] if it exists), then the
    /// environment; rejects unknown keys and validates everything at once.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let file: Option<PathBuf> = match path {
            Some(p) if !p.exists() => {
                return Err(ConfigError::one(format!(
                    "config file {} does not exist",
                    p.display()
                )))
            }
            Some(p) => Some(p.to_owned()),
            None => Some(PathBuf::from(DEFAULT_PATH)).filter(|p| p.exists()),
        };
        let mut figment = Figment::new();
        if let Some(file) = &file {
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        Self::from_figment(figment)
    }

    /// Builds a config from a figment (the file/env layers), rejecting unknown keys.
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let merged: serde_json::Value = figment
            .extract()
            .map_err(|e| ConfigError::one(e.to_string()))?;
        let mut problems = Vec::new();
        let parsed: Result<Config, _> = serde_ignored::deserialize(merged, |path| {
            problems.push(format!("unknown key `{path}`"))
        });
        match parsed {
            Ok(mut config) => {
                problems.extend(config.load_secret_files());
                problems.extend(config.problems());
                if problems.is_empty() {
                    Ok(config)
                } else {
                    Err(ConfigError { problems })
                }
            }
            Err(e) => {
                problems.push(e.to_string());
                Err(ConfigError { problems })
            }
        }
    }

    /// Reads the `*_file` secrets into their keys (`database.password_file` into the
    /// database's connection options); the problems found (a file that cannot be read, a key
    /// and its `_file` both set). `load` and `from_figment` call it.
    pub fn load_secret_files(&mut self) -> Vec<String> {
        let mut p = Vec::new();
        let kafka = &mut self.kafka.security;
        secret::load_secret_file(
            "kafka.security.password",
            &mut kafka.password,
            kafka.password_file.as_deref(),
            &mut p,
        );
        let registry = &mut self.registry;
        secret::load_secret_file(
            "registry.password",
            &mut registry.password,
            registry.password_file.as_deref(),
            &mut p,
        );
        if let Some(path) = &self.database.password_file {
            let url = self.database.url.expose();
            if secret::url_has_password(url) {
                p.push(
                    "database.password_file is set and database.url carries a password too;                      keep one"
                        .into(),
                );
            } else {
                match read_secret_file(path) {
                    Ok(pw) => {
                        self.database.url = DatabaseUrl(secret::url_with_password(url, &pw));
                    }
                    Err(e) => p.push(format!(
                        "database.password_file {}: cannot read it ({e})",
                        path.display()
                    )),
                }
            }
        }
        p
    }

    /// Every invariant the values break, as sentences.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let url = self.database.url.expose();
        if url.is_empty() {
            p.push("database.url is missing (e.g. postgres://user:pass@127.0.0.1:5432/db)".into());
        } else if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            p.push(format!(
                "database.url must start with postgres:// or postgresql:// (got {})",
                self.database.url.redacted()
            ));
        }
        self.database.tls_problems(&mut p);
        for (name, value) in [
            ("database.schema", &self.database.schema),
            ("database.table", &self.database.table),
        ] {
            if let Err(why) = check_identifier(value) {
                p.push(format!(
                    "{name} {value:?} is not a valid SQL identifier: {why}"
                ));
            }
        }
        if self.database.max_connections < self.relay.concurrency + 2 {
            p.push(format!(
                "database.max_connections ({}) must be at least relay.concurrency + 2 ({}): one \
                 per batch in flight, one to claim the next, one to listen for new rows",
                self.database.max_connections,
                self.relay.concurrency + 2
            ));
        }
        if self.kafka.bootstrap_servers.trim().is_empty() {
            p.push("kafka.bootstrap_servers is missing (e.g. \"127.0.0.1:9092\")".into());
        }
        p.extend(producer_guard_problems(&self.kafka.properties));
        self.kafka.security.problems(&self.kafka.properties, &mut p);
        if !(1..=10_000).contains(&self.relay.batch_size) {
            p.push(format!(
                "relay.batch_size must be between 1 and 10000 (got {})",
                self.relay.batch_size
            ));
        }
        if !(1..=64).contains(&self.relay.concurrency) {
            p.push(format!(
                "relay.concurrency must be between 1 and 64 (got {})",
                self.relay.concurrency
            ));
        }
        if self.relay.shutdown_timeout_ms == 0 {
            p.push("relay.shutdown_timeout_ms must be greater than 0".into());
        }
        if self.kafka.delivery_timeout_ms == 0 {
            p.push("kafka.delivery_timeout_ms must be greater than 0".into());
        } else if self.kafka.delivery_timeout_ms > self.relay.shutdown_timeout_ms {
            p.push(format!(
                "kafka.delivery_timeout_ms ({}) must not exceed relay.shutdown_timeout_ms ({}): a \
                 shutdown waits for the batches in flight, and each may wait that long for Kafka",
                self.kafka.delivery_timeout_ms, self.relay.shutdown_timeout_ms
            ));
        }
        if self.relay.poll_interval_ms == 0 {
            p.push("relay.poll_interval_ms must be greater than 0".into());
        }
        self.registry.problems(&mut p);
        self.http.problems(&mut p);
        self.retention.problems(&mut p);
        self.retry.problems(&mut p);
        let registry = self.registry.is_configured();
        self.topic_defaults
            .problems("topic_defaults", registry, &mut p);
        for (field, set) in [
            ("schema_id", self.topic_defaults.schema_id.is_some()),
            (
                "schema_version",
                self.topic_defaults.schema_version.is_some(),
            ),
            ("record_name", self.topic_defaults.record_name.is_some()),
        ] {
            if set {
                p.push(format!(
                    "topic_defaults.{field} is refused: a schema is pinned per topic, in [topics.\"name\"]"
                ));
            }
        }
        for (name, topic) in &self.topics {
            let at = format!("topics.{name:?}");
            if let Err(why) = check_topic_name(name) {
                p.push(format!("{at}: {why}"));
            }
            topic.problems(&at, registry, &mut p);
            TopicConfig::resolved_problems(
                &topic.resolve(&self.topic_defaults, &self.retry),
                &at,
                &mut p,
            );
        }
        TopicConfig::resolved_problems(
            &self
                .topic_defaults
                .resolve(&TopicConfig::default(), &self.retry),
            "topic_defaults",
            &mut p,
        );
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            p.push(format!(
                "log.level {:?} is not a valid filter: {e}",
                self.log.level
            ));
        }
        p
    }

    /// Every topic's resolved settings.
    pub fn topic_policies(&self) -> TopicPolicies {
        TopicPolicies::new(&self.topics, &self.topic_defaults, &self.retry)
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut value = toml::Value::try_from(self).expect("config serializes to TOML");
        if let Some(props) = value
            .get_mut("kafka")
            .and_then(|k| k.get_mut("properties"))
            .and_then(|p| p.as_table_mut())
        {
            for (k, v) in props.iter_mut() {
                let text = match &*v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let shown = secret::shown_property(k, &text);
                if shown != text {
                    *v = toml::Value::String(shown);
                }
            }
        }
        toml::to_string_pretty(&value).expect("TOML value prints")
    }
}

/// Producer properties that would weaken the delivery guarantee, as problems.
fn producer_guard_problems(props: &BTreeMap<String, PropertyValue>) -> Vec<String> {
    let mut p = Vec::new();
    for (key, value) in props {
        let v = value.as_config_string().to_ascii_lowercase();
        let refused = match key.as_str() {
            "acks" | "request.required.acks" => (v != "all" && v != "-1")
                .then(|| "the relay always produces with acks=all".to_owned()),
            "enable.idempotence" => {
                (v != "true").then(|| "the relay always enables idempotence".to_owned())
            }
            "max.in.flight.requests.per.connection" | "max.in.flight" => match v.parse::<u32>() {
                Ok(n) if (1..=5).contains(&n) => None,
                _ => Some("idempotence needs a value between 1 and 5".to_owned()),
            },
            "retries" | "message.send.max.retries" => {
                (v == "0").then(|| "idempotence needs retries; leave it to librdkafka".to_owned())
            }
            "bootstrap.servers" | "metadata.broker.list" => {
                Some("set kafka.bootstrap_servers instead".to_owned())
            }
            "message.timeout.ms" | "delivery.timeout.ms" => {
                Some("set kafka.delivery_timeout_ms instead".to_owned())
            }
            "transactional.id" => {
                Some("transactions are not used; the outbox row is the transaction".to_owned())
            }
            _ => None,
        };
        if let Some(why) = refused {
            p.push(format!(
                "kafka.properties.\"{key}\" = {:?} is refused: {why}",
                secret::shown_property(key, &value.as_config_string())
            ));
        }
    }
    p
}

/// A plain, unquoted-safe SQL identifier: ASCII letter or `_`, then letters, digits or `_`,
/// at most 63 bytes (Postgres' limit). Identifiers are quoted anyway when used.
pub fn check_identifier(s: &str) -> Result<(), &'static str> {
    let mut chars = s.chars();
    match chars.next() {
        None => return Err("it is empty"),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            return Err("it must start with a letter or underscore")
        }
        _ => {}
    }
    if s.len() > 63 {
        return Err("it is longer than 63 bytes");
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("only letters, digits and underscores are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
