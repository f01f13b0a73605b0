//! `[registry]`: the Confluent-compatible Schema Registry the relay serializes through.

use std::path::PathBuf;

use std::fmt;

use serde::{Deserialize, Serialize};

use super::secret::{redact_url, Secret};

/// `[registry]`
#[derive(Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct RegistryConfig {
    /// Base URL, e.g. `http://127.0.0.1:8081`. Empty: no registry (only `raw-json` topics).
    /// Credentials go in `username`/`password`, never in the URL.
    #[serde(serialize_with = "redacted_url")]
    pub url: String,
    /// Basic-auth user (e.g. an API key).
    pub username: String,
    /// Basic-auth password (e.g. an API secret). Redacted everywhere.
    pub password: Secret,
    /// A file holding `password` (e.g. a mounted Kubernetes secret), read at load; one trailing
    /// newline is trimmed. Exclusive with `password`.
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA that signed the registry's TLS certificate (default: system roots).
    pub ca_location: Option<PathBuf>,
    /// Timeout of one registry request, in milliseconds.
    pub timeout_ms: u64,
    /// How long a subject's resolved "latest" version is reused before asking again, in
    /// milliseconds. While the registry is unreachable the last answer keeps being used.
    pub latest_ttl_ms: u64,
    /// At startup, register every schema file under `schemas_dir` (`<subject>.avsc`,
    /// `<subject>.json`, `<subject>.proto`). Off by default; schemas are never registered at
    /// produce time.
    pub auto_register: bool,
    /// Directory of schema files for `auto_register`.
    pub schemas_dir: PathBuf,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            username: String::new(),
            password: Secret::default(),
            password_file: None,
            ca_location: None,
            timeout_ms: 5_000,
            latest_ttl_ms: 60_000,
            auto_register: false,
            schemas_dir: PathBuf::from("schemas"),
        }
    }
}

fn redacted_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

/// By hand, so that credentials someone put in the URL (refused by validation, but a config can
/// be printed before it is validated) never show.
impl fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &redact_url(&self.url))
            .field("username", &self.username)
            .field("password", &self.password)
            .field("password_file", &self.password_file)
            .field("ca_location", &self.ca_location)
            .field("timeout_ms", &self.timeout_ms)
            .field("latest_ttl_ms", &self.latest_ttl_ms)
            .field("auto_register", &self.auto_register)
            .field("schemas_dir", &self.schemas_dir)
            .finish()
    }
}

impl RegistryConfig {
    pub fn is_configured(&self) -> bool {
        !self.url.trim().is_empty()
    }

    pub(super) fn problems(&self, out: &mut Vec<String>) {
        if !self.is_configured() {
            return;
        }
        let url = self.url.trim();
        let Some(rest) = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
        else {
            out.push(format!(
                "registry.url must start with http:// or https:// (got {:?})",
                redact_userinfo(url)
            ));
            return;
        };
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if authority.contains('@') {
            out.push(format!(
                "registry.url must not carry credentials (got {:?}); set registry.username and registry.password",
                redact_userinfo(url)
            ));
        }
        if authority.is_empty() {
            out.push("registry.url has no host".into());
        }
        if !self.password.expose().is_empty() && self.username.is_empty() {
            out.push("registry.password is set but registry.username is empty".into());
        }
        if let Some(ca) = &self.ca_location {
            if !ca.exists() {
                out.push(format!(
                    "registry.ca_location {} does not exist",
                    ca.display()
                ));
            }
        }
        if self.timeout_ms == 0 {
            out.push("registry.timeout_ms must be greater than 0".into());
        }
        if self.auto_register && !self.schemas_dir.is_dir() {
            out.push(format!(
                "registry.auto_register is on but registry.schemas_dir {} is not a directory",
                self.schemas_dir.display()
            ));
        }
    }
}

/// `scheme://***@host…` for a URL that (wrongly) carries credentials.
fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end + 3], &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_registry_url_are_refused_and_redacted() {
        let c = RegistryConfig {
            url: "https://key:topsecret@registry.internal:8081".into(),
            ..RegistryConfig::default()
        };
        let mut p = Vec::new();
        c.problems(&mut p);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("must not carry credentials"), "{p:?}");
        assert!(!p[0].contains("topsecret"), "{p:?}");
    }

    #[test]
    fn the_registry_password_never_prints() {
        let c = RegistryConfig {
            url: "http://127.0.0.1:8081".into(),
            username: "u".into(),
            password: Secret::new("hunter2"),
            ..RegistryConfig::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!toml::to_string(&c).unwrap().contains("hunter2"));
    }
}
