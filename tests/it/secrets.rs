//! `config check` prints no secret, whatever kind it is.

use std::process::Command;

#[test]
fn config_check_output_shows_no_secret_of_any_kind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(
        &path,
        r#"
        [database]
        url = "postgres://outbox:dbpass1@127.0.0.1:5432/outbox?password=dbpass2"
        [kafka]
        bootstrap_servers = "127.0.0.1:9092"
        [kafka.properties]
        "sasl.password" = "kafkapass1"
        "sasl.jaas.config" = "PlainLoginModule required password=\"kafkapass2\";"
        "ssl.key.password" = "kafkapass3"
        "ssl.key.pem" = "-----BEGIN PRIVATE KEY-----kafkapass4"
        "sasl.oauthbearer.client.secret" = "kafkapass5"
        "sasl.oauthbearer.token.endpoint.url" = "https://client:kafkapass6@idp.example/token"
        [registry]
        url = "https://registry.example:8081"
        username = "key"
        password = "regpass1"
        "#,
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outbox-relay"));
    cmd.args(["--config", path.to_str().unwrap(), "config", "check"]);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OUTBOX_RELAY")) {
        cmd.env_remove(k);
    }
    let out = cmd.output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    for secret in ["dbpass", "kafkapass", "regpass"] {
        assert!(!all.contains(secret), "{secret} shows in:\n{all}");
    }
    assert!(all.contains("\"sasl.password\" = \"***\""), "{all}");
}
