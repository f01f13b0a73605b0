//! Postgres over TLS: `database.sslmode` and `database.ssl_root_cert` (or the URL's `sslmode`
//! and `sslrootcert`) on every connection, against the stack's cluster (`scripts/stack up` runs
//! it with `ssl=on` and a certificate for `localhost` only, signed by the CA in
//! `$OUTBOX_STACK_DIR/pg-tls/ca.crt`; `OUTBOX_TEST_PG_CA` names another CA file).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use outbox_relay::config::{Config, SslMode};
use outbox_relay::outbox::{connect_options, migrate_with, Outbox, TableName};

use crate::harness::{
    database_url, kafka_bootstrap, log_dir, spawn_relay_binary, wait_exit, RunningRelay, TestOutbox,
};

/// The CA of the stack's Postgres certificate.
fn stack_ca() -> PathBuf {
    let path = std::env::var_os("OUTBOX_TEST_PG_CA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let dir = std::env::var("OUTBOX_STACK_DIR")
                .unwrap_or_else(|_| "/var/tmp/outbox-relay-stack".into());
            Path::new(&dir).join("pg-tls/ca.crt")
        });
    assert!(
        path.is_file(),
        "{} does not exist: run scripts/stack up (it starts Postgres with ssl=on and writes its CA)",
        path.display()
    );
    path
}

/// The test database's URL with another host name.
fn url_with_host(host: &str) -> String {
    let url = database_url();
    assert!(url.contains("@127.0.0.1:"), "{url}");
    url.replacen("@127.0.0.1:", &format!("@{host}:"), 1)
}

/// A config file for the binary: `database_lines` go into `[database]`.
fn config_file(dir: &Path, url: &str, schema: &str, database_lines: &str) -> PathBuf {
    let path = dir.join("relay.toml");
    std::fs::write(
        &path,
        format!(
            "[database]\nurl = {url:?}\nschema = {schema:?}\n{database_lines}\n\n\
             [kafka]\nbootstrap_servers = {:?}\n\n[http]\nlisten = \"\"\n",
            kafka_bootstrap()
        ),
    )
    .unwrap();
    path
}

fn cli(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_outbox-relay"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run outbox-relay")
}

async fn session_is_tls(store: &Outbox) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .expect("ask pg_stat_ssl")
}

/// `run` with this config: it must exit 1 (a misconfiguration, not an outage to wait out);
/// returns its log.
async fn run_exits_1(config: &Path, dir: &Path) -> String {
    let log = dir.join("relay.log");
    let mut child = spawn_relay_binary(config, &log);
    let exit = wait_exit(&mut child, Duration::from_secs(30)).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if exit.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (status, _) = exit.unwrap_or_else(|| panic!("the relay kept running:\n{text}"));
    assert_eq!(status.code(), Some(1), "{text}");
    text
}

fn wrong_ca(dir: &Path) -> PathBuf {
    let (key, cert) = (dir.join("wrong-ca.key"), dir.join("wrong-ca.crt"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=not the stack's CA", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "{out:?}");
    cert
}

#[tokio::test]
async fn relay_and_migrate_work_over_verify_full_to_localhost_with_the_stack_ca() {
    let ca = stack_ca();
    let outbox = TestOutbox::new(1).await;
    let mut config: Config = outbox.config();
    config.database.url = outbox_relay::config::DatabaseUrl::new(url_with_host("localhost"));
    config.database.sslmode = Some(SslMode::VerifyFull);
    config.database.ssl_root_cert = Some(ca.clone());

    // `migrate` (the binary) over verify-full creates a fresh table.
    let dir = log_dir("pg_tls_verify_full");
    let schema = format!("{}_tls", outbox.schema);
    let file = config_file(
        &dir,
        config.database.url.expose(),
        &schema,
        &format!("sslmode = \"verify-full\"\nssl_root_cert = {:?}", ca),
    );
    let out = cli(&file, &["migrate"]);
    assert!(out.status.success(), "{out:?}");
    let mut fresh = config.database.clone();
    fresh.schema = schema.clone();
    let store = Outbox::connect_lazy(&fresh, 2).unwrap();
    assert!(session_is_tls(&store).await, "the session is encrypted");
    store
        .check_ready()
        .await
        .expect("the migrated table is ready");
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(store.pool())
        .await
        .unwrap();

    // The library's migrate over the same options, then the relay delivers over TLS.
    let table = TableName::new(&outbox.schema, "outbox").unwrap();
    let applied = migrate_with(&connect_options(&config.database).unwrap(), &table)
        .await
        .expect("migrate over verify-full");
    assert_eq!(applied, 0, "the table was already migrated");
    outbox.insert_rows(5, 2).await;
    let relay = RunningRelay::start(&config);
    outbox.wait_delivered(5, Duration::from_secs(60)).await;
    relay.stop().await;
    let mine = Outbox::connect_lazy(&config.database, 2).unwrap();
    assert!(session_is_tls(&mine).await);
}

#[tokio::test]
async fn verify_full_to_127_0_0_1_fails_naming_the_host_name_mismatch() {
    let ca = stack_ca();
    let outbox = TestOutbox::without_kafka().await;
    let dir = log_dir("pg_tls_host_mismatch");
    let file = config_file(
        &dir,
        &database_url(),
        &outbox.schema,
        &format!("sslmode = \"verify-full\"\nssl_root_cert = {:?}", ca),
    );
    let expected = "TLS to Postgres at 127.0.0.1:";
    let names_it = "the server's certificate does not name the host \"127.0.0.1\"";

    let out = cli(&file, &["migrate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(expected), "{stderr}");
    assert!(stderr.contains(names_it), "{stderr}");
    assert!(stderr.contains("IP address mismatch"), "{stderr}");

    let log = run_exits_1(&file, &dir).await;
    assert!(log.contains(names_it), "{log}");
    assert!(log.contains("(sslmode verify-full)"), "{log}");
    assert!(
        !log.contains("Postgres not reachable at startup"),
        "a certificate refused is not waited out as an outage:\n{log}"
    );
}

#[tokio::test]
async fn verify_ca_with_a_wrong_ca_fails_clearly() {
    let outbox = TestOutbox::without_kafka().await;
    let dir = log_dir("pg_tls_wrong_ca");
    let ca = wrong_ca(&dir);
    // Given as URL parameters this time.
    let url = format!(
        "{}?sslmode=verify-ca&sslrootcert={}",
        url_with_host("localhost"),
        ca.display()
    );
    let file = config_file(&dir, &url, &outbox.schema, "");
    let clear = "the server's certificate is not signed by a trusted CA";

    let out = cli(&file, &["status"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(clear), "{stderr}");
    assert!(stderr.contains("(sslmode verify-ca)"), "{stderr}");

    let log = run_exits_1(&file, &dir).await;
    assert!(log.contains(clear), "{log}");
}

#[tokio::test]
async fn require_works_without_a_ca() {
    stack_ca(); // the server has TLS on
    let outbox = TestOutbox::new(1).await;
    let mut config = outbox.config();
    config.database.url =
        outbox_relay::config::DatabaseUrl::new(format!("{}?sslmode=require", database_url()));
    assert!(config.problems().is_empty(), "{:?}", config.problems());
    let store = Outbox::connect_lazy(&config.database, 2).unwrap();
    assert!(session_is_tls(&store).await);
    outbox.insert_rows(3, 1).await;
    let relay = RunningRelay::start(&config);
    outbox.wait_delivered(3, Duration::from_secs(60)).await;
    relay.stop().await;

    // The key form, and sslmode = "disable" for contrast: the same server, no TLS.
    config.database.url = outbox_relay::config::DatabaseUrl::new(database_url());
    config.database.sslmode = Some(SslMode::Disable);
    let plain = Outbox::connect_lazy(&config.database, 2).unwrap();
    assert!(!session_is_tls(&plain).await);
}

#[test]
fn a_tls_setting_given_as_a_key_and_as_a_url_parameter_is_refused() {
    let mut config = Config::default();
    config.kafka.bootstrap_servers = "127.0.0.1:9092".into();
    config.database.url = outbox_relay::config::DatabaseUrl::new(
        "postgres://u:p@localhost:5432/db?sslmode=require&sslrootcert=%2Fnowhere%2Fca.crt",
    );
    config.database.sslmode = Some(SslMode::VerifyFull);
    config.database.ssl_root_cert = Some("/nowhere/ca.crt".into());
    let problems = config.problems().join("\n");
    assert!(
        problems.contains(
            "database.sslmode (\"verify-full\") is refused: database.url has an sslmode parameter too"
        ),
        "{problems}"
    );
    assert!(
        problems.contains(
            "database.ssl_root_cert is refused: database.url has an sslrootcert parameter too"
        ),
        "{problems}"
    );
    assert!(
        problems.contains("the root certificate /nowhere/ca.crt (database.ssl_root_cert or the URL's sslrootcert) does not exist"),
        "{problems}"
    );
    config.database.url =
        outbox_relay::config::DatabaseUrl::new("postgres://u:p@localhost:5432/db?sslmode=verify");
    config.database.sslmode = None;
    config.database.ssl_root_cert = None;
    let problems = config.problems().join("\n");
    assert!(
        problems.contains("database.url: sslmode=\"verify\" is not one of"),
        "{problems}"
    );
}
