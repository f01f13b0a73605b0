//! Secrets: one redacting type, [`Secret`], and the rules that say what is secret.
//!
//! Every secret of the configuration is printed through here: the database URL's password (and
//! secret-looking query parameters), the registry password, credentials inside any URL, and
//! pass-through librdkafka properties whose names look secret ([`is_secret_property`]). `Debug`,
//! `Display` and serialized output (`config check`) show `***`.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// A secret string: `***` in `Debug`, `Display` and serialized output (`""` when empty, so a
/// reader can tell "not set" from "set").
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself; only to hand it to the client that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    fn shown(&self) -> &'static str {
        if self.0.is_empty() {
            ""
        } else {
            "***"
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.shown())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.shown())
    }
}

/// librdkafka properties whose values are secrets: any name containing `password`, `secret`,
/// `credential` or `jaas`, private keys and PEM material (`*.key`, `*.pem`, `ssl.key.*` but not
/// `ssl.key.location`, a path), `sasl.oauthbearer.config`, and `*token` values.
pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k.contains("credential")
        || k.contains("jaas")
        || k.ends_with(".pem")
        || k.ends_with(".key")
        || k.ends_with("token")
        || (k.starts_with("ssl.key.") && k != "ssl.key.location")
        || k == "sasl.oauthbearer.config"
}

/// `url` with the password of its user info and the values of secret-looking query parameters
/// (`password`, `sslpassword`, `*secret*`, `*token*`) replaced by `***`. Text that is not a URL
/// is returned as it is.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let mut out = url[..scheme_end + 3].to_owned();
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => {
                out.push_str(&rest[..colon]);
                out.push_str(":***");
                out.push_str(&rest[at..authority_end]);
            }
            None => out.push_str(&rest[..authority_end]),
        },
        None => out.push_str(&rest[..authority_end]),
    }
    let tail = &rest[authority_end..];
    let Some(q) = tail.find('?') else {
        out.push_str(tail);
        return out;
    };
    out.push_str(&tail[..=q]);
    let (query, fragment) = match tail[q + 1..].find('#') {
        Some(h) => (&tail[q + 1..q + 1 + h], &tail[q + 1 + h..]),
        None => (&tail[q + 1..], ""),
    };
    let params: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_param(name) => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    out.push_str(&params.join("&"));
    out.push_str(fragment);
    out
}

fn is_secret_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("password") || n.contains("secret") || n.contains("token") || n == "sslkey"
}

/// How a pass-through property's value may be shown: `***` if its name looks secret, else the
/// value with any URL credentials redacted.
pub(super) fn shown_property(key: &str, value: &str) -> String {
    if is_secret_property(key) {
        Secret::new(value).to_string()
    } else {
        redact_url(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_redaction_hides_passwords_and_secret_query_parameters() {
        assert_eq!(redact_url("postgres://u:p@h:5/d"), "postgres://u:***@h:5/d");
        assert_eq!(redact_url("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(redact_url("postgres://h/d?x=@"), "postgres://h/d?x=@");
        assert_eq!(
            redact_url("postgres://h/d?user=u&password=pw&sslmode=require"),
            "postgres://h/d?user=u&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("https://id:sec@idp/token?client_secret=s#x"),
            "https://id:***@idp/token?client_secret=***#x"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn secret_looking_property_names_are_recognised() {
        for k in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.jaas.config",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
            "ssl.key.pem",
            "ssl_key.pem",
            "ssl.key",
        ] {
            assert!(is_secret_property(k), "{k}");
        }
        for k in [
            "linger.ms",
            "sasl.username",
            "ssl.key.location",
            "security.protocol",
        ] {
            assert!(!is_secret_property(k), "{k}");
        }
    }
}
