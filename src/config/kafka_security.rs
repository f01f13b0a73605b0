//! `[kafka.security]`: TLS and SASL for every Kafka client the relay makes (the producer, the
//! admin client of the topic limits, the consumer of `check-order`), in first-class keys for
//! the common case. Anything else (mTLS client certificates, OAUTHBEARER, GSSAPI…) stays
//! available as a pass-through librdkafka property in `[kafka.properties]`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::secret::Secret;
use super::PropertyValue;

/// `[kafka.security]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct KafkaSecurity {
    /// `security.protocol`: `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`. Unset:
    /// librdkafka's default, `PLAINTEXT`.
    pub protocol: Option<SecurityProtocol>,
    /// `sasl.mechanism`: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`. Needed by the `SASL_*`
    /// protocols.
    pub sasl_mechanism: Option<SaslMechanism>,
    /// `sasl.username`.
    pub username: String,
    /// `sasl.password`. Redacted everywhere.
    pub password: Secret,
    /// A file holding `password` (e.g. a mounted Kubernetes secret), read at load; one trailing
    /// newline is trimmed. Exclusive with `password`.
    pub password_file: Option<PathBuf>,
    /// `ssl.ca.location`: PEM file of the CA that signed the brokers' certificates (default:
    /// the system's roots). For `SSL` and `SASL_SSL`.
    pub ca_location: Option<PathBuf>,
}

/// `kafka.security.protocol`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }
}

/// `kafka.security.sasl_mechanism`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Each first-class key and the librdkafka properties (names and aliases) it sets.
const MAPPED: [(&str, &[&str]); 5] = [
    ("protocol", &["security.protocol"]),
    ("sasl_mechanism", &["sasl.mechanism", "sasl.mechanisms"]),
    ("username", &["sasl.username"]),
    ("password", &["sasl.password"]),
    ("ca_location", &["ssl.ca.location"]),
];

impl KafkaSecurity {
    /// The librdkafka properties the first-class keys set (none for the keys left unset).
    pub fn librdkafka_properties(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(p) = self.protocol {
            out.push(("security.protocol", p.as_str().to_owned()));
        }
        if let Some(m) = self.sasl_mechanism {
            out.push(("sasl.mechanism", m.as_str().to_owned()));
        }
        if !self.username.is_empty() {
            out.push(("sasl.username", self.username.clone()));
        }
        if !self.password.expose().is_empty() {
            out.push(("sasl.password", self.password.expose().to_owned()));
        }
        if let Some(ca) = &self.ca_location {
            out.push(("ssl.ca.location", ca.display().to_string()));
        }
        out
    }

    fn is_set(&self, key: &str) -> bool {
        match key {
            "protocol" => self.protocol.is_some(),
            "sasl_mechanism" => self.sasl_mechanism.is_some(),
            "username" => !self.username.is_empty(),
            "password" => !self.password.expose().is_empty() || self.password_file.is_some(),
            "ca_location" => self.ca_location.is_some(),
            _ => false,
        }
    }

    /// What the first-class keys, together with the pass-through `properties`, get wrong.
    pub(super) fn problems(
        &self,
        properties: &BTreeMap<String, PropertyValue>,
        out: &mut Vec<String>,
    ) {
        for (key, names) in MAPPED {
            if !self.is_set(key) {
                continue;
            }
            for name in names.iter().filter(|n| properties.contains_key(**n)) {
                out.push(format!(
                    "kafka.security.{key} and kafka.properties.\"{name}\" are both set; keep \
                     one (kafka.security.{key} is the same librdkafka property)"
                ));
            }
        }
        let passed = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| properties.get(*n))
                .map(|v| v.as_config_string().to_ascii_uppercase())
        };
        let protocol = self
            .protocol
            .map(|p| p.as_str().to_owned())
            .or_else(|| passed(&["security.protocol"]))
            .unwrap_or_else(|| "PLAINTEXT".into());
        let sasl = protocol.starts_with("SASL_");
        let tls = protocol == "SSL" || protocol == "SASL_SSL";
        let mechanism = self
            .sasl_mechanism
            .map(|m| m.as_str().to_owned())
            .or_else(|| passed(&["sasl.mechanism", "sasl.mechanisms"]));
        if sasl {
            match &mechanism {
                None => out.push(format!(
                    "kafka.security.protocol = \"{protocol}\" needs kafka.security.sasl_mechanism \
                     (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
                )),
                Some(m) if m == "PLAIN" || m.starts_with("SCRAM-") => {
                    if self.username.is_empty() && !properties.contains_key("sasl.username") {
                        out.push(format!(
                            "kafka.security.sasl_mechanism = \"{m}\" needs kafka.security.username"
                        ));
                    }
                    if !self.is_set("password") && !properties.contains_key("sasl.password") {
                        out.push(format!(
                            "kafka.security.sasl_mechanism = \"{m}\" needs kafka.security.password \
                             (or kafka.security.password_file)"
                        ));
                    }
                }
                Some(_) => {}
            }
        } else {
            for key in ["sasl_mechanism", "username", "password"] {
                if self.is_set(key) {
                    out.push(format!(
                        "kafka.security.{key} is set but the protocol is {protocol}: SASL settings \
                         are used only with kafka.security.protocol = \"SASL_SSL\" or \
                         \"SASL_PLAINTEXT\""
                    ));
                }
            }
        }
        if let Some(ca) = &self.ca_location {
            if !tls {
                out.push(format!(
                    "kafka.security.ca_location is set but the protocol is {protocol}: a CA is \
                     used only with kafka.security.protocol = \"SSL\" or \"SASL_SSL\""
                ));
            }
            if !ca.is_file() {
                out.push(format!(
                    "kafka.security.ca_location {} is not a readable file",
                    ca.display()
                ));
            }
        }
    }
}
