//! A catalogue change that the registry refuses as incompatible stops the relay at start-up
//! with the registry's own reason, before it claims any row.

use std::time::Duration;

use outbox_relay::config::Format;
use outbox_relay::relay::Relay;
use outbox_relay_testkit::SchemaRegistryDouble;
use tokio_util::sync::CancellationToken;

use crate::harness::TestOutbox;
use crate::harness::{registry_config, topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_catalogue_change_makes_auto_register_fail_with_the_registry_reason() {
    let outbox = TestOutbox::new(1).await;
    let double = SchemaRegistryDouble::start().await;
    let subject = format!("{}-value", outbox.topic);
    // What is deployed: version 1.
    double.register(
        &subject,
        "AVRO",
        r#"{"type": "record", "name": "Order", "namespace": "it.compat",
            "fields": [{"name": "n", "type": "long"}]}"#,
    );
    // The catalogue adds a field without a default: new readers cannot read version 1.
    let schemas = tempfile::tempdir().unwrap();
    std::fs::write(
        schemas.path().join(format!("{subject}.avsc")),
        r#"{"type": "record", "name": "Order", "namespace": "it.compat",
            "fields": [{"name": "n", "type": "long"}, {"name": "channel", "type": "string"}]}"#,
    )
    .unwrap();
    let mut config = registry_config(&outbox, &double);
    config.registry.auto_register = true;
    config.registry.schemas_dir = schemas.path().to_owned();
    config
        .topics
        .insert(outbox.topic.clone(), topic(Format::Avro));
    outbox.insert_rows(3, 1).await;

    let relay = Relay::new(&config).expect("relay builds");
    // A relay that got past registration would run until cancelled: bound the wait.
    let error = tokio::time::timeout(Duration::from_secs(60), relay.run(CancellationToken::new()))
        .await
        .expect("the relay stops at start-up instead of running")
        .expect_err("an incompatible schema must stop the relay");
    let text = error.to_string();
    assert!(
        text.contains("auto-registration from")
            && text.contains(&format!("registering subject `{subject}`"))
            && text.contains("Schema being registered is incompatible with an earlier schema")
            && text.contains("channel")
            && text.contains("409"),
        "{text}"
    );
    assert_eq!(outbox.count("pending").await, 3, "no row was claimed");
    let versions = reqwest::get(format!("{}/subjects/{subject}/versions", double.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(versions, "[1]");
}
