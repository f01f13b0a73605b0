//! The options of every connection the relay opens (its pool, the LISTEN connection and the
//! leader's session, which take the pool's options, and the CLI commands): `database.url`, then
//! `database.sslmode` and `database.ssl_root_cert` over it. The URL's own `sslmode` and
//! `sslrootcert` parameters work too (sqlx reads them); the configuration refuses a setting
//! given both ways.

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::StoreError;
use crate::config::{DatabaseConfig, SslMode};

/// The URL's options with the configured TLS settings applied.
pub fn connect_options(config: &DatabaseConfig) -> Result<PgConnectOptions, StoreError> {
    let mut options: PgConnectOptions = config
        .url
        .expose()
        .parse()
        .map_err(StoreError::InvalidUrl)?;
    if let Some(mode) = config.sslmode {
        options = options.ssl_mode(match mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        });
    }
    if let Some(cert) = &config.ssl_root_cert {
        options = options.ssl_root_cert(cert);
    }
    Ok(options)
}

fn mode_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

/// A TLS error met while connecting, explained for an operator: which server, which sslmode,
/// and what to change. `None` for any other error.
pub fn tls_failure(e: &sqlx::Error, options: &PgConnectOptions) -> Option<String> {
    let sqlx::Error::Tls(source) = e else {
        return None;
    };
    let reason = source.to_string();
    let host = options.get_host();
    let mode = mode_name(options.get_ssl_mode());
    // OpenSSL says "Hostname mismatch" for a name and "IP address mismatch" for an address.
    let what = if reason.contains("Hostname mismatch") || reason.contains("IP address mismatch") {
        format!(
            "the server's certificate does not name the host {host:?} (sslmode verify-full checks \
             the host name of database.url against the certificate: connect to a name the \
             certificate holds, or use verify-ca)"
        )
    } else if reason.contains("certificate verify failed") {
        "the server's certificate is not signed by a trusted CA (database.ssl_root_cert or the \
         URL's sslrootcert names the CA file; unset, the system's roots are used)"
            .to_owned()
    } else if reason.contains("does not support TLS") {
        format!(
            "the server does not accept TLS connections, and sslmode {mode} requires one (turn \
             ssl on in the server, or lower database.sslmode)"
        )
    } else {
        "the TLS handshake failed".to_owned()
    };
    Some(format!(
        "TLS to Postgres at {host}:{} failed (sslmode {mode}): {what}: {reason}",
        options.get_port()
    ))
}

/// True when a TLS error came from the connection itself (reset, closed, timed out): Postgres
/// is away, not misconfigured.
pub(super) fn tls_error_is_io(source: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(source);
    while let Some(e) = next {
        if e.is::<std::io::Error>() {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseUrl;

    fn config(url: &str) -> DatabaseConfig {
        DatabaseConfig {
            url: DatabaseUrl::new(url),
            ..DatabaseConfig::default()
        }
    }

    #[test]
    fn the_configured_sslmode_and_root_certificate_apply_over_the_url() {
        let mut c = config("postgres://u:p@localhost:5432/db");
        assert_eq!(
            mode_name(connect_options(&c).unwrap().get_ssl_mode()),
            "prefer"
        );
        c.sslmode = Some(SslMode::VerifyFull);
        c.ssl_root_cert = Some("/tmp/ca.crt".into());
        let o = connect_options(&c).unwrap();
        assert_eq!(mode_name(o.get_ssl_mode()), "verify-full");
        let url = config("postgres://u:p@localhost:5432/db?sslmode=verify-ca&sslrootcert=/x.pem");
        assert_eq!(
            mode_name(connect_options(&url).unwrap().get_ssl_mode()),
            "verify-ca"
        );
    }

    #[test]
    fn a_tls_error_without_an_io_cause_is_explained_and_other_errors_are_not() {
        let o = connect_options(&config(
            "postgres://u@127.0.0.1:5442/db?sslmode=verify-full",
        ))
        .unwrap();
        let e = sqlx::Error::Tls(
            "error:0A000086:SSL routines::certificate verify failed (Hostname mismatch)".into(),
        );
        let text = tls_failure(&e, &o).unwrap();
        assert!(
            text.starts_with("TLS to Postgres at 127.0.0.1:5442 failed (sslmode verify-full): the server's certificate does not name the host \"127.0.0.1\""),
            "{text}"
        );
        let sqlx::Error::Tls(source) = &e else {
            unreachable!()
        };
        assert!(!tls_error_is_io(source.as_ref()));
        let io: Box<dyn std::error::Error + Send + Sync> = Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert!(tls_error_is_io(io.as_ref()));
        assert!(tls_failure(&sqlx::Error::PoolTimedOut, &o).is_none());
    }
}
