//! The command line: configuration problems are reported together, clearly, with a non-zero exit.

use std::process::Command;

fn config_check(file_text: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, file_text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outbox-relay"));
    cmd.args(["--config", path.to_str().unwrap(), "config", "check"]);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OUTBOX_RELAY")) {
        cmd.env_remove(k);
    }
    cmd.output().unwrap()
}

#[test]
fn bad_config_lists_every_problem_in_one_message_and_exits_non_zero() {
    let out = config_check(
        r#"
        [database]
        url = "postgres://outbox:topsecret@127.0.0.1:5432/outbox"
        table = "outbox; DROP TABLE users"
        pool_size = 3
        [kafka]
        "#,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("3 problems"), "{stderr}");
    assert!(
        stderr.contains("unknown key `database.pool_size`"),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("database.table \"outbox; DROP TABLE users\" is not a valid SQL identifier"),
        "{stderr}"
    );
    assert!(
        stderr.contains("kafka.bootstrap_servers is missing"),
        "{stderr}"
    );
    assert!(!stderr.contains("topsecret"), "{stderr}");
}

#[test]
fn config_check_prints_the_effective_config_with_secrets_redacted() {
    let out = config_check(
        r#"
        [database]
        url = "postgres://outbox:topsecret@127.0.0.1:5432/outbox"
        [kafka]
        bootstrap_servers = "127.0.0.1:9092"
        [kafka.properties]
        "sasl.password" = "hunter2"
        "#,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("postgres://outbox:***@127.0.0.1:5432/outbox"),
        "{stdout}"
    );
    assert!(stdout.contains("batch_size = 2000"), "{stdout}");
    assert!(
        !stdout.contains("topsecret") && !stdout.contains("hunter2"),
        "{stdout}"
    );
}
