//! Kafka over TLS and SASL, against the test broker's secure listeners (`scripts/stack up`):
//! SASL_SSL with SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN, SSL, each with the test CA; a wrong
//! password and a wrong CA are said clearly, leave every row as it was, and print no secret.
//!
//! `OUTBOX_TEST_KAFKA_SASL_SSL` [127.0.0.1:9094] and `OUTBOX_TEST_KAFKA_SSL` [127.0.0.1:9095]
//! point at the listeners, `OUTBOX_TEST_KAFKA_TLS_DIR` [`$OUTBOX_STACK_DIR/tls`, else
//! /var/tmp/outbox-relay-stack/tls] at the test CA. Topics are created, and records read back,
//! over the PLAINTEXT listener (`OUTBOX_TEST_KAFKA`) of the same broker.

use std::path::{Path, PathBuf};
use std::time::Duration;

use outbox_relay::config::{Config, KafkaSecurity, SaslMechanism, Secret, SecurityProtocol};
use outbox_relay::order_check;
use outbox_relay::produce::connection_config;

use crate::harness::{
    consume_all, http_get, log_dir, spawn_with_filter, wait_for_log, wait_until, RelayProcess,
    RunningRelay, TestOutbox,
};

/// The test user of `scripts/stack` (its header), for every mechanism.
const USER: &str = "relay";
const PASSWORD: &str = "relay-secret";
const WRONG_PASSWORD: &str = "wrong-pass-7d1c";

fn sasl_ssl_bootstrap() -> String {
    std::env::var("OUTBOX_TEST_KAFKA_SASL_SSL").unwrap_or_else(|_| "127.0.0.1:9094".into())
}

fn ssl_bootstrap() -> String {
    std::env::var("OUTBOX_TEST_KAFKA_SSL").unwrap_or_else(|_| "127.0.0.1:9095".into())
}

fn tls_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("OUTBOX_TEST_KAFKA_TLS_DIR") {
        return dir.into();
    }
    let stack =
        std::env::var("OUTBOX_STACK_DIR").unwrap_or_else(|_| "/var/tmp/outbox-relay-stack".into());
    Path::new(&stack).join("tls")
}

/// The test CA's PEM file (the one that signed the broker's certificate).
fn ca() -> PathBuf {
    let ca = tls_dir().join("ca.pem");
    assert!(
        ca.is_file(),
        "{} is missing: run scripts/stack up (it makes the test CA)",
        ca.display()
    );
    ca
}

/// `outbox`'s config on the SASL_SSL listener with `mechanism`.
fn sasl_config(outbox: &TestOutbox, mechanism: SaslMechanism) -> Config {
    let mut config = outbox.config();
    config.kafka.bootstrap_servers = sasl_ssl_bootstrap();
    config.kafka.security = KafkaSecurity {
        protocol: Some(SecurityProtocol::SaslSsl),
        sasl_mechanism: Some(mechanism),
        username: USER.into(),
        password: Secret::new(PASSWORD),
        ca_location: Some(ca()),
        ..KafkaSecurity::default()
    };
    let problems = config.problems();
    assert!(problems.is_empty(), "{problems:?}");
    config
}

/// Rows delivered and marked, and the records in the topic, read back.
async fn delivers(outbox: &TestOutbox, config: &Config) {
    outbox.insert_rows(20, 4).await;
    let relay = RunningRelay::start(config);
    outbox.wait_delivered(20, Duration::from_secs(30)).await;
    relay.stop().await;
    assert_eq!(outbox.count("pending").await, 0, "no row pending");
    assert_eq!(outbox.total_attempts().await, 0, "no failure on the way");
    let records = consume_all(&outbox.topic).await;
    assert_eq!(records.len(), 20);
}

#[tokio::test]
async fn relay_delivers_over_sasl_ssl_with_scram_sha_256() {
    let outbox = TestOutbox::new(2).await;
    delivers(&outbox, &sasl_config(&outbox, SaslMechanism::ScramSha256)).await;
}

#[tokio::test]
async fn relay_delivers_over_sasl_ssl_with_scram_sha_512_and_check_order_reads_back_over_it() {
    let outbox = TestOutbox::new(2).await;
    let config = sasl_config(&outbox, SaslMechanism::ScramSha512);
    delivers(&outbox, &config).await;
    // `check-order`'s consumer connects as the producer does.
    let report = order_check::check_with(
        &outbox.pool,
        &outbox.table_name(),
        connection_config(&config.kafka),
        &outbox.topic,
    )
    .await
    .expect("the topic is read over SASL_SSL");
    assert!(report.problems().is_empty(), "{report}");
}

#[tokio::test]
async fn relay_delivers_over_sasl_ssl_with_plain_and_a_ca_file() {
    let outbox = TestOutbox::new(1).await;
    delivers(&outbox, &sasl_config(&outbox, SaslMechanism::Plain)).await;
}

#[tokio::test]
async fn relay_delivers_over_ssl_with_a_ca_file() {
    let outbox = TestOutbox::new(1).await;
    let mut config = outbox.config();
    config.kafka.bootstrap_servers = ssl_bootstrap();
    config.kafka.security = KafkaSecurity {
        protocol: Some(SecurityProtocol::Ssl),
        ca_location: Some(ca()),
        ..KafkaSecurity::default()
    };
    delivers(&outbox, &config).await;
}

/// A config file for the relay binary on the SASL_SSL listener: `security` is the body of its
/// `[kafka.security]` table; the metadata probe times out after 2 s, so that `/readyz` has its
/// answer soon.
fn secure_config_file(outbox: &TestOutbox, dir: &Path, name: &str, security: &str) -> PathBuf {
    let path = outbox.config_file_in(dir, name, &sasl_ssl_bootstrap(), "");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen("[kafka]\n", "[kafka]\nmetadata_timeout_ms = 2000\n", 1);
    std::fs::write(&path, format!("{text}\n[kafka.security]\n{security}\n")).unwrap();
    path
}

/// Every row as it was inserted: pending, never claimed, no attempt, nothing parked.
async fn untouched(outbox: &TestOutbox, n: i64) {
    assert_eq!(
        outbox.count("pending").await,
        n,
        "{}",
        outbox.describe().await
    );
    assert_eq!(outbox.count("parked").await, 0);
    assert_eq!(outbox.total_attempts().await, 0, "attempts were burned");
    assert_eq!(outbox.claimed_count().await, 0, "rows were claimed");
}

/// `/readyz` answers 503, its body containing `needle`; returns the body.
async fn unready_saying(relay: &RelayProcess, needle: &str) -> String {
    let address = relay.http_address().await;
    wait_until(
        Duration::from_secs(20),
        &format!("/readyz unready, saying {needle:?}"),
        || async {
            let (status, text) = http_get(&address, "/readyz").await;
            status == 503 && text.contains(needle)
        },
    )
    .await;
    let (status, body) = http_get(&address, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    body
}

#[tokio::test]
async fn a_wrong_sasl_password_is_said_clearly_touches_no_row_and_the_right_one_delivers_after_a_restart(
) {
    let outbox = TestOutbox::new(1).await;
    outbox.insert_rows(10, 2).await;
    let dir = log_dir("kafka_wrong_sasl_password");
    let password_file = dir.join("kafka-password");
    std::fs::write(&password_file, format!("{WRONG_PASSWORD}\n")).unwrap();
    let config = secure_config_file(
        &outbox,
        &dir,
        "relay",
        &format!(
            "protocol = \"SASL_SSL\"\nsasl_mechanism = \"SCRAM-SHA-256\"\nusername = \"{USER}\"\n\
             password_file = {password_file:?}\nca_location = {:?}\n",
            ca()
        ),
    );
    let mut relay = RelayProcess::spawn(&config, dir.join("wrong.log"));
    let broker = sasl_ssl_bootstrap();
    // The sentinel: the relay met the broker, which refused it, and it said so.
    let text = wait_for_log(
        &relay.log,
        &[
            "Kafka refused the connection: SASL authentication failed",
            &format!("at broker {broker}"),
            "SASL mechanism SCRAM-SHA-256",
            "user \"relay\"",
        ],
        Duration::from_secs(30),
    )
    .await;
    let body = unready_saying(&relay, "SASL authentication failed").await;
    assert!(body.contains("SCRAM-SHA-256"), "{body}");
    relay.assert_running();
    untouched(&outbox, 10).await;
    for secret in [WRONG_PASSWORD, PASSWORD] {
        assert!(!text.contains(secret), "{secret} in the log:\n{text}");
        assert!(!body.contains(secret), "{secret} in /readyz:\n{body}");
    }
    relay.kill();

    // The credentials fixed (the secret file rewritten), the relay restarted: delivered.
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let relay = RelayProcess::spawn(&config, dir.join("right.log"));
    outbox.wait_delivered(10, Duration::from_secs(30)).await;
    assert_eq!(outbox.total_attempts().await, 0);
    assert_eq!(consume_all(&outbox.topic).await.len(), 10);
    drop(relay);
}

#[tokio::test]
async fn a_wrong_ca_is_a_clear_tls_error_and_touches_no_row() {
    let outbox = TestOutbox::new(1).await;
    outbox.insert_rows(5, 1).await;
    let dir = log_dir("kafka_wrong_ca");
    let other_ca = tls_dir().join("other-ca.pem");
    assert!(
        other_ca.is_file(),
        "{} (scripts/stack up)",
        other_ca.display()
    );
    let config = secure_config_file(
        &outbox,
        &dir,
        "relay",
        &format!(
            "protocol = \"SASL_SSL\"\nsasl_mechanism = \"PLAIN\"\nusername = \"{USER}\"\n\
             password = \"{PASSWORD}\"\nca_location = {other_ca:?}\n"
        ),
    );
    let mut relay = RelayProcess::spawn(&config, dir.join("relay.log"));
    let text = wait_for_log(
        &relay.log,
        &[
            "Kafka refused the connection: the TLS handshake failed",
            &format!("at broker {}", sasl_ssl_bootstrap()),
            "certificate verify failed",
            &format!("CA file {}", other_ca.display()),
        ],
        Duration::from_secs(30),
    )
    .await;
    unready_saying(&relay, "certificate verify failed").await;
    relay.assert_running();
    untouched(&outbox, 5).await;
    assert!(!text.contains(PASSWORD), "{text}");
}

#[tokio::test]
async fn no_secret_reaches_any_log_line_of_a_relay_refused_by_kafka_nor_config_check() {
    let outbox = TestOutbox::new(1).await;
    outbox.insert_rows(3, 1).await;
    let dir = log_dir("kafka_secrets_in_logs");
    // Each secret a distinct word: the Kafka password (wrong), the database password (the test
    // Postgres trusts loopback, so it is not checked, but it is sent), the registry password.
    let secrets = [
        "kafka-secret-4e2a",
        "db-secret-91bf",
        "registry-secret-c07d",
    ];
    let files: Vec<PathBuf> = ["kafka", "db", "registry"]
        .iter()
        .zip(secrets)
        .map(|(name, secret)| {
            let path = dir.join(format!("{name}-password"));
            std::fs::write(&path, format!("{secret}\n")).unwrap();
            path
        })
        .collect();
    let config = secure_config_file(
        &outbox,
        &dir,
        "relay",
        &format!(
            "protocol = \"SASL_SSL\"\nsasl_mechanism = \"PLAIN\"\nusername = \"{USER}\"\n\
             password_file = {:?}\nca_location = {:?}\n\n\
             [kafka.properties]\n\"debug\" = \"security,broker,conf\"\n\n\
             [registry]\nurl = \"http://127.0.0.1:1\"\nusername = \"key\"\npassword_file = {:?}\n",
            files[0],
            ca(),
            files[2]
        ),
    );
    // The database password from its file; the URL carries none.
    let text = std::fs::read_to_string(&config).unwrap();
    let url = format!("url = {:?}\n", outbox.database_url);
    assert!(text.contains(&url), "{text}");
    let bare = outbox.database_url.replace("outbox:outbox@", "outbox@");
    std::fs::write(
        &config,
        text.replacen(
            &url,
            &format!("url = {bare:?}\npassword_file = {:?}\n", files[1]),
            1,
        ),
    )
    .unwrap();

    // Every log line at its most talkative: the relay's debug lines, librdkafka's security,
    // broker and configuration debug lines.
    let log = dir.join("relay.log");
    let child = spawn_with_filter(&config, &log, "debug");
    let mut relay = RelayProcess {
        child,
        log: log.clone(),
    };
    wait_for_log(
        &log,
        &["Kafka refused the connection: SASL authentication failed"],
        Duration::from_secs(30),
    )
    .await;
    let body = unready_saying(&relay, "SASL authentication failed").await;
    relay.assert_running();
    untouched(&outbox, 3).await;
    relay.kill();

    let check = std::process::Command::new(env!("CARGO_BIN_EXE_outbox-relay"))
        .args(["--config", config.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    let check = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.contains("password=***"), "{check}");

    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text.lines().count();
    assert!(lines > 20, "a talkative run: {lines} lines");
    // librdkafka's own configuration dump began (it redacts secrets itself; the relay's rate
    // limit of librdkafka lines keeps one line per facility anyway).
    assert!(text.contains("Client configuration"), "{text}");
    for (what, out) in [
        ("the log", &text),
        ("/readyz", &body),
        ("config check", &check),
    ] {
        for (n, line) in out.lines().enumerate() {
            for secret in secrets {
                assert!(
                    !line.contains(secret),
                    "{secret} in line {} of {what}:\n{line}",
                    n + 1
                );
            }
        }
    }
    println!("{lines} log lines, none with a secret");
}
