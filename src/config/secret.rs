//! Secrets: one redacting type, [`Secret`], and the rules that say what is secret.
//!
//! Every secret of the configuration is printed through here: the database URL's password (and
//! secret-looking query parameters), the registry password, credentials inside any URL, and
//! pass-through librdkafka properties whose names look secret ([`is_secret_property`]). `Debug`,
//! `Display` and serialized output (`config check`) show `***`.

use std::fmt;
use std::path::Path;

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

/// Reads the secret of a `*_file` key: the file's contents, one trailing newline (`\n` or
/// `\r\n`) trimmed, as Kubernetes secrets mounted as files and `echo` leave it.
pub fn read_secret_file(path: &Path) -> std::io::Result<Secret> {
    let mut text = std::fs::read_to_string(path)?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(Secret(text))
}

/// `key_file` (a path) into `secret` (the value of `key`): both set is a problem, and so is a
/// file that cannot be read.
pub(super) fn load_secret_file(
    key: &str,
    secret: &mut Secret,
    file: Option<&Path>,
    out: &mut Vec<String>,
) {
    let Some(path) = file else { return };
    if !secret.expose().is_empty() {
        out.push(format!("{key} and {key}_file are both set; keep one"));
        return;
    }
    match read_secret_file(path) {
        Ok(s) => *secret = s,
        Err(e) => out.push(format!(
            "{key}_file {}: cannot read it ({e})",
            path.display()
        )),
    }
}

/// Does this URL carry a password (in its user info, or as a `password` query parameter)?
pub(super) fn url_has_password(url: &str) -> bool {
    let Some(scheme_end) = url.find("://") else {
        return false;
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let in_userinfo = rest[..authority_end]
        .rfind('@')
        .is_some_and(|at| rest[..at].contains(':'));
    let query = rest[authority_end..]
        .split_once('?')
        .map(|(_, q)| q.split('#').next().unwrap_or_default())
        .unwrap_or_default();
    in_userinfo
        || query
            .split('&')
            .any(|pair| pair.split('=').next() == Some("password"))
}

/// `url` with `password=<password>` (percent-encoded) added to its query.
pub(super) fn url_with_password(url: &str, password: &Secret) -> String {
    let (base, fragment) = match url.find('#') {
        Some(h) => (&url[..h], &url[h..]),
        None => (url, ""),
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut encoded = String::with_capacity(password.0.len() * 3);
    for b in password.0.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{base}{sep}password={encoded}{fragment}")
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
    fn a_secret_file_loses_one_trailing_newline_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for (written, read) in [
            ("pw\n", "pw"),
            ("pw\r\n", "pw"),
            ("pw\n\n", "pw\n"),
            (" pw ", " pw "),
            ("pw", "pw"),
        ] {
            let path = dir.path().join("secret");
            std::fs::write(&path, written).unwrap();
            assert_eq!(
                read_secret_file(&path).unwrap().expose(),
                read,
                "{written:?}"
            );
        }
    }

    #[test]
    fn a_password_from_a_file_goes_into_the_url_query_percent_encoded() {
        let pw = Secret::new("p@ss w&rd/=");
        let url = url_with_password("postgres://outbox@127.0.0.1:5432/outbox", &pw);
        assert_eq!(
            url,
            "postgres://outbox@127.0.0.1:5432/outbox?password=p%40ss%20w%26rd%2F%3D"
        );
        assert!(url_has_password(&url));
        assert_eq!(
            url_with_password("postgres://h/d?sslmode=require", &Secret::new("x")),
            "postgres://h/d?sslmode=require&password=x"
        );
        assert!(!redact_url(&url).contains("p%40ss"));
        let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        assert_eq!(options.get_username(), "outbox");
        assert!(
            format!("{options:?}").contains(r#"password: Some("p@ss w&rd/=")"#),
            "sqlx decodes it back"
        );
        for (url, has) in [
            ("postgres://u:p@h/d", true),
            ("postgres://u@h/d", false),
            ("postgres://h/d?user=u&password=p", true),
            ("postgres://h/d?sslpassword=p", false),
        ] {
            assert_eq!(url_has_password(url), has, "{url}");
        }
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
