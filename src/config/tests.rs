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
    assert_eq!(c.relay.batch_size, 2000);
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
    // Exclusive with the pass-through `sasl.password`, printed all the same.
    c.kafka.security.password = Secret::new("kafkapass7");
    let outputs = [
        format!("{c:?}"),
        format!("{c:#?}"),
        c.to_redacted_toml(),
        format!(
            "{} {} {}",
            c.database.url, c.registry.password, c.kafka.security.password
        ),
    ];
    for out in &outputs {
        for n in 1..=7 {
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

const SASL_SSL: &str = r#"
    [kafka.security]
    protocol = "SASL_SSL"
    sasl_mechanism = "SCRAM-SHA-256"
    username = "relay"
    password = "relay-secret"
"#;

#[test]
fn kafka_security_keys_map_to_librdkafka_for_the_producer_and_the_other_clients() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let c = from_toml(&format!(
        "{MINIMAL}{SASL_SSL}ca_location = {ca:?}\n[kafka.properties]\n\"linger.ms\" = 7\n\
         \"ssl.endpoint.identification.algorithm\" = \"https\"\n"
    ))
    .unwrap();
    for client in [
        crate::produce::client_config(&c.kafka),
        crate::produce::connection_config(&c.kafka),
    ] {
        for (key, value) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-256"),
            ("sasl.username", "relay"),
            ("sasl.password", "relay-secret"),
            ("ssl.ca.location", ca.to_str().unwrap()),
            ("ssl.endpoint.identification.algorithm", "https"),
        ] {
            assert_eq!(client.get(key), Some(value), "{key}");
        }
    }
    assert_eq!(
        crate::produce::connection_config(&c.kafka).get("linger.ms"),
        None,
        "a producer property stays with the producer"
    );
    assert!(!format!("{c:?}").contains("relay-secret"));
    assert!(!c.to_redacted_toml().contains("relay-secret"));
}

#[test]
fn a_kafka_security_key_and_the_same_pass_through_property_are_refused_together() {
    let err = from_toml(&format!(
        "{MINIMAL}{SASL_SSL}[kafka.properties]\n\"sasl.password\" = \"other\"\n\
         \"sasl.mechanisms\" = \"PLAIN\"\n\"security.protocol\" = \"SASL_SSL\"\n"
    ))
    .unwrap_err();
    let all = err.to_string();
    for key in [
        "kafka.security.password and kafka.properties.\"sasl.password\" are both set",
        "kafka.security.sasl_mechanism and kafka.properties.\"sasl.mechanisms\" are both set",
        "kafka.security.protocol and kafka.properties.\"security.protocol\" are both set",
    ] {
        assert!(all.contains(key), "{key:?} in:\n{all}");
    }
    assert_eq!(err.problems.len(), 3, "{all}");
    assert!(!all.contains("other"), "{all}");
    // The pass-through alone still works, for everything else too.
    from_toml(&format!(
        "{MINIMAL}[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\
         \"sasl.mechanisms\" = \"OAUTHBEARER\"\n\"sasl.oauthbearer.config\" = \"x\"\n"
    ))
    .unwrap();
}

#[test]
fn a_sasl_protocol_without_mechanism_or_username_is_refused() {
    let err = from_toml(&format!(
        "{MINIMAL}[kafka.security]\nprotocol = \"SASL_PLAINTEXT\"\n"
    ))
    .unwrap_err();
    assert!(
        err.to_string().contains(
            "kafka.security.protocol = \"SASL_PLAINTEXT\" needs kafka.security.sasl_mechanism"
        ),
        "{err}"
    );
    let err = from_toml(&format!(
        "{MINIMAL}[kafka.security]\nprotocol = \"SASL_SSL\"\nsasl_mechanism = \"PLAIN\"\n"
    ))
    .unwrap_err();
    let all = err.to_string();
    assert!(
        all.contains("\"PLAIN\" needs kafka.security.username"),
        "{all}"
    );
    assert!(
        all.contains("\"PLAIN\" needs kafka.security.password"),
        "{all}"
    );
    let err = from_toml(&format!(
        "{MINIMAL}[kafka.security]\nprotocol = \"SSL\"\nusername = \"u\"\nca_location = \"/nonexistent/ca.pem\"\n"
    ))
    .unwrap_err();
    let all = err.to_string();
    assert!(
        all.contains("kafka.security.username is set but the protocol is SSL"),
        "{all}"
    );
    assert!(
        all.contains("/nonexistent/ca.pem is not a readable file"),
        "{all}"
    );
    let err = from_toml(&format!("{MINIMAL}[kafka.security]\nprotocol = \"TLS\"\n")).unwrap_err();
    assert!(err.to_string().contains("SASL_SSL"), "{err}");
}

#[test]
fn secrets_come_from_files_with_one_trailing_newline_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (kafka, registry, db) = (
        file("kafka", "kafka-from-file\n"),
        file("registry", "registry-from-file\n"),
        file("db", "db from/file\n"),
    );
    let c = from_toml(&format!(
        "[database]\nurl = \"postgres://outbox@127.0.0.1:5432/outbox\"\npassword_file = {db:?}\n\
         [kafka]\nbootstrap_servers = \"127.0.0.1:9092\"\n\
         [kafka.security]\nprotocol = \"SASL_SSL\"\nsasl_mechanism = \"PLAIN\"\nusername = \"u\"\n\
         password_file = {kafka:?}\n\
         [registry]\nurl = \"http://127.0.0.1:8081\"\nusername = \"u\"\npassword_file = {registry:?}\n"
    ))
    .unwrap();
    assert_eq!(c.kafka.security.password.expose(), "kafka-from-file");
    assert_eq!(c.registry.password.expose(), "registry-from-file");
    assert_eq!(
        c.database.url.expose(),
        "postgres://outbox@127.0.0.1:5432/outbox?password=db%20from%2Ffile"
    );
    let shown = format!("{c:?}\n{}", c.to_redacted_toml());
    for secret in [
        "kafka-from-file",
        "registry-from-file",
        "db%20from",
        "db from",
    ] {
        assert!(!shown.contains(secret), "{secret} in:\n{shown}");
    }
    assert!(shown.contains("password=***"), "{shown}");
}

#[test]
fn a_missing_secret_file_or_a_key_set_twice_is_refused_naming_the_key_and_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let present = dir.path().join("present");
    std::fs::write(&present, "x").unwrap();
    let missing = dir.path().join("missing");
    let err = from_toml(&format!(
        "[database]\nurl = \"postgres://outbox:inline@127.0.0.1:5432/outbox\"\npassword_file = {present:?}\n\
         [kafka]\nbootstrap_servers = \"127.0.0.1:9092\"\n\
         [kafka.security]\nprotocol = \"SASL_SSL\"\nsasl_mechanism = \"PLAIN\"\nusername = \"u\"\n\
         password_file = {missing:?}\n\
         [registry]\nurl = \"http://127.0.0.1:8081\"\nusername = \"u\"\npassword = \"inline2\"\n\
         password_file = {present:?}\n"
    ))
    .unwrap_err();
    let all = err.to_string();
    for expected in [
        format!(
            "kafka.security.password_file {}: cannot read it",
            missing.display()
        ),
        "registry.password and registry.password_file are both set; keep one".into(),
        "database.password_file is set and database.url carries a password too".into(),
    ] {
        assert!(all.contains(&expected), "{expected:?} in:\n{all}");
    }
    assert!(!all.contains("inline"), "{all}");
}
