//! Outages under load, on real services of the test's own: a Kafka broker killed with -9 for
//! 30 s, and a PostgreSQL cluster crashed (`pg_ctl -m immediate stop`) twice. The relay binary
//! rides them out by itself: nothing lost, no key reordered, nothing parked, no attempt burned.
//!
//! Figures (time to drain, time to resume, duplicates) are printed, never asserted.

use std::time::{Duration, Instant};

use crate::harness::{
    database_url, kafka_bootstrap, log_count, log_dir, DedicatedKafka, DedicatedPostgres,
    RelayProcess, TestOutbox, Writer,
};

const KAFKA_DIR: &str = "/var/tmp/outbox-relay-res-kafka";
const KAFKA_PORT: u16 = 19092;
const PG_DIR: &str = "/var/tmp/outbox-relay-res-pg";
const PG_PORT: u16 = 15432;
const KEYS: i64 = 500;

#[tokio::test]
async fn kafka_broker_killed_for_30_s_under_load_then_restarted_loses_nothing_and_burns_no_attempt()
{
    let kafka = DedicatedKafka::start(KAFKA_DIR, KAFKA_PORT).await;
    let bootstrap = kafka.bootstrap();
    let outbox = TestOutbox::at(&database_url(), &bootstrap, 3).await;
    let dir = log_dir("kafka_outage");
    // Records time out in librdkafka well within the outage, so the relay sees delivery
    // failures (not just slow acknowledgements) while the broker is away.
    let config = outbox.config_file_in(&dir, "relay", &bootstrap, "");
    outbox.set_delivery_timeout(&config, 10_000);
    let mut relay = RelayProcess::spawn(&config, dir.as_path().join("relay.log"));
    let writer = Writer::start(&outbox, 50, Duration::from_millis(100), KEYS, i64::MAX);
    outbox.wait_delivered(1_000, Duration::from_secs(60)).await;

    kafka.kill().await;
    let delivered_at_kill = outbox.count("delivered").await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    relay.assert_running();
    let delivered_while_down = outbox.count("delivered").await - delivered_at_kill;
    let pending_at_restart = outbox.count("pending").await;

    let restart = Instant::now();
    kafka.up().await;
    let answered = restart.elapsed();
    let committed = writer.stop().await;
    let drained = outbox.wait_no_pending(Duration::from_secs(300)).await;
    relay.assert_running();

    let (rows, delivered, parked, attempts) = outbox.tally().await;
    let report = outbox.check_order().await;
    println!(
        "kafka killed for 30 s: {committed} rows written, {pending_at_restart} pending at restart, \
         {delivered_while_down} marked while down (in flight at the kill); restart → broker \
         answers {answered:?}, → all delivered {:?}; parked {parked}, sum(attempts) {attempts}; \
         duplicates {}; relay log: {} 'not reachable' lines, {} 'delivery failed' lines\n{report}",
        answered + drained,
        report.duplicates,
        log_count(&relay.log, "not reachable"),
        log_count(&relay.log, "delivery failed"),
    );
    assert_eq!(rows, committed, "rows in the outbox vs rows written");
    assert_eq!(delivered, rows, "rows not delivered");
    assert_eq!(parked, 0, "an outage parked rows");
    assert_eq!(attempts, 0, "an outage burned attempts");
    assert_eq!(report.lost, 0, "lost: {:?}", report.lost_ids);
    assert_eq!(report.reordered, 0, "{:?}", report.reordered_examples);
    assert_eq!(report.unknown, 0);
    assert_eq!(report.distinct_event_ids as i64, rows);
}

#[tokio::test]
async fn postgres_crashed_twice_under_load_the_relay_reconnects_by_itself_and_loses_nothing() {
    let pg = DedicatedPostgres::start(PG_DIR, PG_PORT).await;
    let bootstrap = kafka_bootstrap();
    let outbox = TestOutbox::at(&pg.url(), &bootstrap, 3).await;
    let dir = log_dir("postgres_crash");
    let config = outbox.config_file_in(&dir, "relay", &bootstrap, "");
    let mut relay = RelayProcess::spawn(&config, dir.as_path().join("relay.log"));
    let writer = Writer::start(&outbox, 50, Duration::from_millis(100), KEYS, i64::MAX);
    outbox.wait_delivered(1_000, Duration::from_secs(60)).await;

    let mut resumed_after = Vec::new();
    for round in 1..=2 {
        pg.crash().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        relay.assert_running();
        pg.up().await;
        let started = Instant::now();
        let base = std::cell::Cell::new(None);
        outbox
            .wait_until(Duration::from_secs(60), "a connection again", || async {
                base.set(outbox.try_count("delivered").await);
                base.get().is_some()
            })
            .await;
        outbox
            .wait_delivered(base.get().unwrap() + 1, Duration::from_secs(120))
            .await;
        let resumed = started.elapsed();
        println!("postgres crash {round}: delivery resumed {resumed:?} after the start");
        resumed_after.push(resumed);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let failed_inserts = writer.failed.load(std::sync::atomic::Ordering::SeqCst);
    let committed = writer.stop().await;
    let drained = outbox.wait_no_pending(Duration::from_secs(300)).await;
    relay.assert_running();

    let (rows, delivered, parked, attempts) = outbox.tally().await;
    let report = outbox.check_order().await;
    println!(
        "postgres crashed twice: {committed} rows acknowledged to the writer ({failed_inserts} \
         inserts failed while down), {rows} in the outbox; delivery resumed {resumed_after:?} \
         after each start; drained {drained:?} after the writer stopped; parked {parked}, \
         sum(attempts) {attempts}; duplicates {}; relay log: {} 'Postgres unavailable' lines\n\
         {report}",
        report.duplicates,
        log_count(&relay.log, "Postgres unavailable"),
    );
    // A commit whose acknowledgement was lost in the crash may still have committed.
    assert!(rows >= committed, "committed rows vanished");
    assert_eq!(delivered, rows, "rows not delivered");
    assert_eq!(parked, 0, "an outage parked rows");
    assert_eq!(attempts, 0, "an outage burned attempts");
    assert_eq!(report.lost, 0, "lost: {:?}", report.lost_ids);
    assert_eq!(report.reordered, 0, "{:?}", report.reordered_examples);
    assert_eq!(report.unknown, 0);
    assert_eq!(report.distinct_event_ids as i64, rows);
}
