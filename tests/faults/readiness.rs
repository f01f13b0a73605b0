//! `/readyz` follows Kafka: a relay on a dedicated broker turns unready (503, the body naming
//! Kafka and since when) when the broker is killed, and ready again once it is back, while
//! `/healthz` stays 200 (waiting for a dependency is not a reason to restart the relay).

use std::time::{Duration, Instant};

use crate::harness::{
    database_url, http_get, log_dir, wait_until, DedicatedKafka, RelayProcess, TestOutbox,
};

// The same dedicated broker as the outage tests (fault tests run one at a time).
const KAFKA_DIR: &str = "/var/tmp/outbox-relay-res-kafka";
const KAFKA_PORT: u16 = 19092;

#[tokio::test]
async fn readyz_turns_unready_naming_kafka_while_its_broker_is_killed_and_ready_again_after() {
    let kafka = DedicatedKafka::start(KAFKA_DIR, KAFKA_PORT).await;
    let bootstrap = kafka.bootstrap();
    let outbox = TestOutbox::at(&database_url(), &bootstrap, 1).await;
    let dir = log_dir("readyz_kafka_killed");
    let config = outbox.config_file_in(&dir, "relay", &bootstrap, "");
    let mut relay = RelayProcess::spawn(&config, dir.join("relay.log"));
    let address = relay.http_address().await;
    wait_until(Duration::from_secs(60), "ready", || async {
        http_get(&address, "/readyz").await.0 == 200
    })
    .await;
    outbox.deliver_raw_sentinel().await;

    kafka.kill().await;
    let killed = Instant::now();
    let last = std::cell::RefCell::new(String::new());
    wait_until(Duration::from_secs(60), "unready", || async {
        let (status, text) = http_get(&address, "/readyz").await;
        *last.borrow_mut() = text;
        status == 503
    })
    .await;
    let body = last.into_inner();
    let unready_after = killed.elapsed();
    println!("unready {unready_after:?} after the kill: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false);
    assert_eq!(v["dependencies"]["kafka"]["up"], false, "{body}");
    assert!(
        v["dependencies"]["kafka"]["down_since"].is_string(),
        "{body}"
    );
    assert_eq!(v["dependencies"]["postgres"]["up"], true, "{body}");
    assert!(
        v["reasons"][0]
            .as_str()
            .unwrap_or("")
            .starts_with("kafka down since "),
        "{body}"
    );
    let (health, text) = http_get(&address, "/healthz").await;
    assert_eq!(
        health, 200,
        "waiting for Kafka is not a reason to restart: {text}"
    );

    kafka.up().await;
    let back = Instant::now();
    wait_until(Duration::from_secs(120), "ready again", || async {
        http_get(&address, "/readyz").await.0 == 200
    })
    .await;
    println!(
        "ready again {:?} after the broker's restart",
        back.elapsed()
    );
    // And it relays again.
    outbox.deliver_raw_sentinel().await;
    relay.assert_running();
}
