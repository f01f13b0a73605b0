//! Unit tests of configuration loading, validation and redaction.
use super::*;

fn from_toml(text: &str) -> Result<Config, ConfigError> {
    Config::from_figment(Figment::new().merge(Toml::string(text)))
}

const MINIMAL: &str = r#"
    [database]
    url = "postgres://outbox:s3cret@127.0.0.1:5432/outbox"
    [kafka]
    bootstrap_servers = "127.0.0.1:9092"
"#;

#[test]
fn minimal_config_is_valid_with_defaults() {
    let c = from_toml(MINIMAL).unwrap();
    assert_eq!(c.database.table, "outbox");
    assert_eq!(c.relay.batch_size, 500);
    assert_eq!(c.headers.source, "outbox-relay");
}

#[test]
fn every_problem_is_reported_together() {
    let err = from_toml(
        r#"
        [database]
        url = "postgres://u:p@h/db"
        table = "outbox; drop table users"
        tabel = "x"
        [relay]
        batch_size = 0
        "#,
    )
    .unwrap_err();
    let all = err.to_string();
    assert!(all.contains("unknown key `database.tabel`"), "{all}");
    assert!(all.contains("database.table"), "{all}");
    assert!(all.contains("kafka.bootstrap_servers is missing"), "{all}");
    assert!(all.contains("relay.batch_size"), "{all}");
    assert_eq!(err.problems.len(), 4, "{all}");
}

#[test]
fn properties_contradicting_acks_all_or_idempotence_are_refused() {
    let err = from_toml(&format!(
        "{MINIMAL}\n[kafka.properties]\nacks = 1\n\"enable.idempotence\" = false\n\"linger.ms\" = 5\n"
    ))
    .unwrap_err();
    assert_eq!(err.problems.len(), 2, "{err}");
    assert!(err.to_string().contains("acks=all"));
    assert!(err.to_string().contains("idempotence"));
    assert!(from_toml(&format!("{MINIMAL}\n[kafka.properties]\nacks = \"all\"\n")).is_ok());
}

#[test]
fn secrets_never_appear_in_debug_or_redacted_toml() {
    let mut c = from_toml(MINIMAL).unwrap();
    c.kafka.properties.insert(
        "sasl.password".into(),
        PropertyValue::Text("hunter2".into()),
    );
    let debug = format!("{c:?}");
    let toml = c.to_redacted_toml();
    for out in [&debug, &toml] {
        assert!(!out.contains("s3cret"), "{out}");
        assert!(out.contains("outbox:***@127.0.0.1"), "{out}");
    }
    assert!(!toml.contains("hunter2"), "{toml}");
}

#[test]
#[allow(clippy::result_large_err)] // figment::Jail's signature
fn environment_overrides_the_file() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("OUTBOX_RELAY__KAFKA__BOOTSTRAP_SERVERS", "10.0.0.1:9092");
        jail.set_env("OUTBOX_RELAY__RELAY__BATCH_SIZE", "42");
        let f = Figment::new()
            .merge(Toml::string(MINIMAL))
            .merge(Env::prefixed(ENV_PREFIX).split("__"));
        let c = Config::from_figment(f).unwrap();
        assert_eq!(c.kafka.bootstrap_servers, "10.0.0.1:9092");
        assert_eq!(c.relay.batch_size, 42);
        Ok(())
    });
}

#[test]
fn identifiers_reject_injection_and_accept_plain_names() {
    assert!(check_identifier("outbox_2").is_ok());
    assert!(check_identifier("_private").is_ok());
    for bad in ["", "1abc", "a-b", "a\"b", "x; drop", &"a".repeat(64)] {
        assert!(check_identifier(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn url_redaction_keeps_user_and_host() {
    assert_eq!(redact_url("postgres://u:p@h:5/d"), "postgres://u:***@h:5/d");
    assert_eq!(redact_url("postgres://u@h/d"), "postgres://u@h/d");
    assert_eq!(redact_url("postgres://h/d?x=@"), "postgres://h/d?x=@");
}

/// Every kind of secret the configuration can hold, each a distinct word to look for.
pub(crate) const SECRETS_TOML: &str = r#"
    [database]
    url = "postgres://outbox:dbpass1@127.0.0.1:5432/outbox?sslpassword=dbpass2"
    [kafka]
    bootstrap_servers = "127.0.0.1:9092"
    [kafka.properties]
    "sasl.password" = "kafkapass1"
    "sasl.jaas.config" = "org.apache.kafka.common.security.plain.PlainLoginModule required password=\"kafkapass2\";"
    "ssl.key.password" = "kafkapass3"
    "ssl.key.pem" = "-----BEGIN PRIVATE KEY-----kafkapass4"
    "sasl.oauthbearer.client.secret" = "kafkapass5"
    "sasl.oauthbearer.token.endpoint.url" = "https://client:kafkapass6@idp.example/token"
    "sasl.username" = "visible-user"
    [registry]
    url = "https://registry.example:8081"
    username = "key"
    password = "regpass1"
"#;

#[test]
fn no_secret_appears_when_the_whole_config_is_formatted() {
    let mut c = from_toml(SECRETS_TOML).unwrap();
    // Credentials in the registry URL are refused by validation, but a config can be printed
    // before it is validated.
    c.registry.url = "https://key:regpass2@registry.example:8081".into();
    let outputs = [
        format!("{c:?}"),
        format!("{c:#?}"),
        c.to_redacted_toml(),
        format!("{} {}", c.database.url, c.registry.password),
    ];
    for out in &outputs {
        for n in 1..=6 {
            for secret in [
                format!("dbpass{n}"),
                format!("kafkapass{n}"),
                format!("regpass{n}"),
            ] {
                assert!(!out.contains(&secret), "{secret} shows in:\n{out}");
            }
        }
        assert!(out.contains("outbox:***@127.0.0.1"), "{out}");
    }
    assert!(
        outputs[0].contains("visible-user"),
        "only secrets are hidden"
    );
    assert!(outputs[0].contains("https://client:***@idp.example/token"));
}

#[test]
fn topic_tables_resolve_over_the_defaults_and_unknown_topic_keys_are_refused() {
    let c = from_toml(&format!(
        "{MINIMAL}\n[registry]\nurl = \"http://127.0.0.1:8081\"\n\
         [topic_defaults]\nmax_attempts = 3\n\
         [topics.\"mcp.conversations\"]\nformat = \"avro\"\nschema_version = 2\n"
    ))
    .unwrap();
    let policies = c.topic_policies();
    let p = policies.get("mcp.conversations");
    assert_eq!(p.format, Format::Avro);
    assert_eq!(p.selection, Selection::Version(2));
    assert_eq!(p.retry.max_attempts, 3);
    assert_eq!(policies.get("elsewhere").format, Format::RawJson);

    let err = from_toml(&format!(
        "{MINIMAL}\n[topics.\"t\"]\nformat = \"avro\"\nfromat = \"x\"\n"
    ))
    .unwrap_err();
    assert!(
        err.to_string().contains("unknown key `topics.t.fromat`"),
        "{err}"
    );
}

#[test]
fn serialization_and_retry_problems_are_reported_together() {
    let err = from_toml(&format!(
        "{MINIMAL}\n[retry]\nbase_ms = 0\n\
         [topics.\"a\"]\nformat = \"protobuf\"\nschema_id = 1\nschema_version = 1\n\
         [topics.\"b c\"]\nsubject_strategy = \"record\"\nformat = \"avro\"\n\
         dead_letter_topic = \"no/slash\"\n\
         [topics.\"k\"]\nkey_format = \"registry\"\n"
    ))
    .unwrap_err();
    let all = err.to_string();
    for expected in [
        "retry.base_ms must be greater than 0",
        "topics.\"a\".format = \"protobuf\" needs registry.url",
        "schema_id and schema_version are exclusive",
        "topics.\"b c\": only letters",
        "need record_name",
        "dead_letter_topic",
        "topics.\"k\": key_format = \"registry\" serializes keys in the topic's format",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
}

#[test]
fn registry_password_is_redacted_in_config_check_output() {
    let c = from_toml(&format!(
        "{MINIMAL}\n[registry]\nurl = \"https://r:8081\"\nusername = \"key\"\npassword = \"p4ss\"\n"
    ))
    .unwrap();
    let toml = c.to_redacted_toml();
    assert!(!toml.contains("p4ss"), "{toml}");
    assert!(toml.contains("username = \"key\""), "{toml}");
}

#[test]
fn topic_limit_checks_are_on_by_default_and_config_check_shows_the_switch() {
    let on = from_toml(MINIMAL).unwrap();
    assert!(on.kafka.check_topic_limits);
    assert!(
        on.to_redacted_toml().contains("check_topic_limits = true"),
        "{}",
        on.to_redacted_toml()
    );
    let off = from_toml(&format!("{MINIMAL}\ncheck_topic_limits = false\n")).unwrap();
    assert!(!off.kafka.check_topic_limits);
}
