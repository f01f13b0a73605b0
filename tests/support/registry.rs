//! The Schema Registry side: a relay config wired to a registry double, and a runner for
//! `tests/interop/decode.py` (confluent-kafka's own deserializers).

use std::path::PathBuf;

use outbox_relay::config::{Config, Format, TopicConfig};
use outbox_relay_testkit::SchemaRegistryDouble;
use tokio::sync::OnceCell;

use super::kafka_bootstrap;
use super::outbox::TestOutbox;

/// `outbox.config()` with `[registry] url` pointing at `double`.
pub fn registry_config(outbox: &TestOutbox, double: &SchemaRegistryDouble) -> Config {
    let mut config = outbox.config();
    config.registry.url = double.url();
    config
}

/// A topic table with this format and nothing else set.
pub fn topic(format: Format) -> TopicConfig {
    TopicConfig {
        format: Some(format),
        ..TopicConfig::default()
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The interop venv's python, made (or checked) once per test binary by `scripts/py-env`.
async fn python() -> &'static PathBuf {
    static PYTHON: OnceCell<PathBuf> = OnceCell::const_new();
    PYTHON
        .get_or_init(|| async {
            let out = tokio::process::Command::new(repo().join("scripts/py-env"))
                .output()
                .await
                .expect("run scripts/py-env");
            assert!(
                out.status.success(),
                "scripts/py-env failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8(out.stdout).unwrap();
            let venv = stdout.lines().last().expect("venv path").trim();
            PathBuf::from(venv).join("bin/python")
        })
        .await
}

/// Runs `tests/interop/decode.py` on `topic` (value `format`, string keys) against `registry`;
/// returns its JSON lines. Asynchronous on purpose: the in-process double must keep answering
/// the script while it runs.
pub async fn decode_with_confluent(
    registry: &str,
    topic: &str,
    format: &str,
) -> Vec<serde_json::Value> {
    decode_with_confluent_keys(registry, topic, format, "string").await
}

/// [`decode_with_confluent`], with the key decoded as `key_format` too.
pub async fn decode_with_confluent_keys(
    registry: &str,
    topic: &str,
    format: &str,
    key_format: &str,
) -> Vec<serde_json::Value> {
    let out = tokio::process::Command::new(python().await)
        .arg(repo().join("tests/interop/decode.py"))
        .args(["--bootstrap", &kafka_bootstrap()])
        .args(["--registry", registry])
        .args(["--topic", topic])
        .args(["--format", format])
        .args(["--key-format", key_format])
        .output()
        .await
        .expect("run decode.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "decode.py exited {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}
