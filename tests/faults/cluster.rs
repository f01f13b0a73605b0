//! A three-broker KRaft cluster (replication factor 3, `min.insync.replicas = 2`, a controller of
//! its own) under a relay binary and a steady writer: the leader of a partition SIGKILLed, two
//! brokers of three down, a rolling restart of all three. Each run ends with the order checker:
//! nothing lost, no key reordered, nothing parked.
//!
//! The cluster lives in `OUTBOX_TEST_CLUSTER_DIR` (default `/var/tmp/outbox-relay-res-cluster`)
//! on ports 19092–19095, is started once per test and stopped when the test ends. Figures
//! (election and resume times, duplicates, attempts) are printed, never asserted.

use std::time::{Duration, Instant};

use crate::harness::{
    database_url, http_get, log_count, log_dir, wait_for_log, wait_until, DedicatedCluster,
    RelayProcess, TestOutbox, Writer,
};

const CLUSTER_PORT: u16 = 19092;
const PARTITIONS: i32 = 3;
const KEYS: i64 = 300;

fn cluster_dir() -> String {
    std::env::var("OUTBOX_TEST_CLUSTER_DIR")
        .unwrap_or_else(|_| "/var/tmp/outbox-relay-res-cluster".into())
}

/// The cluster, an outbox whose topic is replicated on it, and a config for the relay binary.
async fn setup(
    name: &str,
    delivery_timeout_ms: Option<u64>,
) -> (
    DedicatedCluster,
    TestOutbox,
    std::path::PathBuf,
    RelayProcess,
) {
    let cluster = DedicatedCluster::start(&cluster_dir(), CLUSTER_PORT).await;
    let bootstrap = cluster.bootstrap();
    let outbox = TestOutbox::table_only(&database_url(), &bootstrap).await;
    cluster.create_topic(&outbox.topic, PARTITIONS).await;
    let dir = log_dir(name);
    let config = outbox.config_file_in(&dir, "relay", &bootstrap, "");
    if let Some(ms) = delivery_timeout_ms {
        outbox.set_delivery_timeout(&config, ms);
    }
    let relay = RelayProcess::spawn(&config, dir.join("relay.log"));
    (cluster, outbox, dir, relay)
}

/// Rows delivered to `partition`.
async fn delivered_to(outbox: &TestOutbox, partition: i32) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {} WHERE status = 'delivered' AND kafka_partition = $1",
        outbox.table()
    ))
    .bind(partition)
    .fetch_one(&outbox.pool)
    .await
    .unwrap()
}

/// Everything delivered once the writer stops, nothing parked, and the order checker's verdict:
/// nothing lost, nothing reordered, nothing unknown. Returns the sum of attempts and the
/// report's duplicates, for the caller to print.
async fn drain_and_check(
    outbox: &TestOutbox,
    relay: &mut RelayProcess,
    writer: Writer,
    what: &str,
) -> (i64, u64) {
    let committed = writer.stop().await;
    let drained = outbox.wait_no_pending(Duration::from_secs(180)).await;
    relay.assert_running();
    let (rows, delivered, parked, attempts) = outbox.tally().await;
    let report = outbox.check_order().await;
    println!(
        "{what}: {committed} rows written, drained {drained:?} after the writer stopped; \
         parked {parked}, sum(attempts) {attempts}, duplicates {}\n{report}",
        report.duplicates
    );
    assert_eq!(rows, committed, "rows in the outbox vs rows written");
    assert_eq!(delivered, rows, "rows not delivered");
    assert_eq!(parked, 0, "rows parked");
    assert_eq!(report.lost, 0, "lost: {:?}", report.lost_ids);
    assert_eq!(report.reordered, 0, "{:?}", report.reordered_examples);
    assert_eq!(report.mismatched, 0, "{:?}", report.mismatched_ids);
    assert_eq!(report.unknown, 0);
    assert_eq!(report.distinct_event_ids as i64, rows);
    (attempts, report.duplicates)
}

#[tokio::test]
async fn killing_the_leader_of_a_partition_under_load_loses_nothing_and_delivery_goes_on_after_the_election(
) {
    let (cluster, outbox, _dir, mut relay) = setup("cluster_leader_killed", None).await;
    let writer = Writer::start(&outbox, 50, Duration::from_millis(100), KEYS, i64::MAX);
    outbox.wait_delivered(1_000, Duration::from_secs(60)).await;

    let leader = cluster.leader_of(&outbox.topic, 0).await;
    cluster.kill(leader).await;
    let killed = Instant::now();
    let new_leader = cluster
        .wait_for_new_leader(&outbox.topic, 0, leader, Duration::from_secs(60))
        .await;
    let elected = killed.elapsed();
    // Delivery goes on after the election, on the very partition whose leader died.
    let on_partition = delivered_to(&outbox, 0).await;
    outbox
        .wait_until(
            Duration::from_secs(90),
            "rows delivered to partition 0 under its new leader",
            || async { delivered_to(&outbox, 0).await >= on_partition + 300 },
        )
        .await;
    let resumed = killed.elapsed();
    relay.assert_running();

    // The killed broker comes back before the order check: the checker's consumer reads the
    // topic from a whole cluster (one of its connections to a dead broker failed a run once:
    // "BrokerTransportFailure"), and delivery is already shown to have gone on without it.
    cluster.start_broker(leader).await;
    cluster
        .wait_until_in_sync(&outbox.topic, Duration::from_secs(120))
        .await;
    let (attempts, duplicates) =
        drain_and_check(&outbox, &mut relay, writer, "leader killed").await;
    println!(
        "broker {leader} (leader of partition 0) SIGKILLed: broker {new_leader} elected after \
         {elected:?}, 300 more rows on partition 0 {resumed:?} after the kill; sum(attempts) \
         {attempts}, duplicates {duplicates}; relay log: {} 'delivery failed' lines",
        log_count(&relay.log, "delivery failed"),
    );
}

#[tokio::test]
async fn with_two_brokers_down_the_relay_waits_for_the_cluster_without_burning_attempts_and_resumes_when_one_returns(
) {
    // Records refused with NOT_ENOUGH_REPLICAS are retried by librdkafka until this timeout:
    // the relay sees the failures (and the timeouts they turn into) well within the outage.
    let (cluster, outbox, _dir, mut relay) = setup("cluster_degraded", Some(10_000)).await;
    let writer = Writer::start(&outbox, 50, Duration::from_millis(100), KEYS, i64::MAX);
    outbox.wait_delivered(1_000, Duration::from_secs(60)).await;

    cluster.stop(2).await;
    cluster.stop(3).await;
    let down = Instant::now();
    let isr: Vec<usize> = cluster
        .partitions(&outbox.topic)
        .await
        .iter()
        .map(|p| p.isr.len())
        .collect();
    // The sentinel: the relay found the cluster degraded; at that moment the rows it could not
    // deliver are pending, without an attempt counted.
    wait_for_log(
        &relay.log,
        &["Kafka cluster degraded", &outbox.topic],
        Duration::from_secs(90),
    )
    .await;
    let detected = down.elapsed();
    let (_, delivered_at_detection, parked, attempts) = outbox.tally().await;
    let pending = outbox.count("pending").await;
    assert!(pending > 0, "no row waiting: the outage proved nothing");
    assert_eq!(parked, 0, "a degraded cluster parked rows");
    assert_eq!(attempts, 0, "a degraded cluster burned attempts");
    // Its pause: the probe finds the partitions still short of in-sync replicas, and /readyz
    // says so.
    wait_for_log(
        &relay.log,
        &["Kafka cluster still degraded", "min.insync.replicas"],
        Duration::from_secs(30),
    )
    .await;
    let http = relay.http_address().await;
    let readyz = std::cell::RefCell::new(String::new());
    wait_until(
        Duration::from_secs(30),
        "/readyz unready (degraded)",
        || async {
            let (status, body) = http_get(&http, "/readyz").await;
            *readyz.borrow_mut() = body;
            status == 503 && readyz.borrow().contains("cannot take acks=all records")
        },
    )
    .await;
    // Hold the outage for two more delivery timeouts (a relay that kept claiming would burn
    // attempts meanwhile); the proof is the sum of attempts at the end, which never decreases.
    tokio::time::sleep(Duration::from_secs(20)).await;
    relay.assert_running();
    let delivered_while_down = outbox.count("delivered").await - delivered_at_detection;
    let pending_at_return = outbox.count("pending").await;

    let back = Instant::now();
    cluster.start_broker(2).await;
    wait_for_log(
        &relay.log,
        &["Kafka cluster recovered", &outbox.topic],
        Duration::from_secs(90),
    )
    .await;
    let recovered = back.elapsed();
    let base = outbox.count("delivered").await;
    outbox
        .wait_delivered(base + 500, Duration::from_secs(90))
        .await;
    let resumed = back.elapsed();
    wait_until(Duration::from_secs(30), "/readyz ready again", || async {
        http_get(&http, "/readyz").await.0 == 200
    })
    .await;

    let (attempts, duplicates) =
        drain_and_check(&outbox, &mut relay, writer, "two brokers down").await;
    println!(
        "brokers 2 and 3 stopped (ISR sizes then {isr:?}): degraded found {detected:?} after, \
         {pending_at_return} rows pending when broker 2 returned, {delivered_while_down} marked \
         while down; broker 2 back → recovered {recovered:?}, 500 more rows delivered \
         {resumed:?}; sum(attempts) {attempts}, duplicates {duplicates}; relay log: {} \
         'still degraded', {} 'not reachable' lines; /readyz while degraded: {}",
        log_count(&relay.log, "Kafka cluster still degraded"),
        log_count(&relay.log, "not reachable"),
        readyz.borrow(),
    );
    assert_eq!(attempts, 0, "a degraded cluster burned attempts");
}

#[tokio::test]
async fn a_rolling_restart_of_all_three_brokers_under_load_loses_nothing_and_reorders_nothing() {
    let (cluster, outbox, _dir, mut relay) = setup("cluster_rolling_restart", None).await;
    // Lighter than the others: three restarts take a while, and the drain must stay short.
    let writer = Writer::start(&outbox, 30, Duration::from_millis(100), KEYS, i64::MAX);
    outbox.wait_delivered(1_000, Duration::from_secs(60)).await;

    let mut steps = Vec::new();
    for broker in 1..=3 {
        let started = Instant::now();
        cluster.stop(broker).await;
        // Delivery goes on with this broker away...
        let base = outbox.count("delivered").await;
        outbox
            .wait_delivered(base + 300, Duration::from_secs(90))
            .await;
        cluster.start_broker(broker).await;
        // ...and the next one stops only once every replica is back in sync.
        cluster
            .wait_until_in_sync(&outbox.topic, Duration::from_secs(120))
            .await;
        relay.assert_running();
        steps.push(started.elapsed());
    }

    let (attempts, duplicates) =
        drain_and_check(&outbox, &mut relay, writer, "rolling restart").await;
    println!(
        "rolling restart of brokers 1, 2, 3 under load: steps took {steps:?}; sum(attempts) \
         {attempts}, duplicates {duplicates}; relay log: {} 'delivery failed' lines",
        log_count(&relay.log, "delivery failed"),
    );
}
