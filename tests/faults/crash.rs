//! The relay binary killed or stopped mid-run: nothing lost, duplicates only among rows that
//! were in flight, acknowledged rows marked on a graceful stop.

use std::collections::HashSet;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::{
    consume_all, event_id_counts, kafka_bootstrap, signal, spawn_relay_binary, wait_exit,
    TestOutbox,
};

#[tokio::test]
async fn kill_9_mid_run_then_restart_delivers_every_row_with_duplicates_only_among_in_flight_rows()
{
    const ROWS: i64 = 10_000;
    let outbox = TestOutbox::new(3).await;
    outbox.insert_rows(ROWS, 200).await;
    let dir = tempfile::tempdir().unwrap();
    let config = outbox.config_file(&dir, &kafka_bootstrap(), "");
    let c = outbox.config().relay;
    let in_flight_bound = i64::from(c.batch_size * c.concurrency);

    let mut relay = spawn_relay_binary(&config, &dir.path().join("first.log"));
    outbox.wait_delivered(1_000, Duration::from_secs(60)).await;
    signal(&relay, Signal::SIGKILL);
    relay.wait().unwrap();
    // Postgres rolls back the dead relay's batches once it notices its connections closed:
    // wait until no row is locked any more, so the marks read next are final.
    outbox
        .wait_until(
            Duration::from_secs(60),
            "the dead relay's locks to go",
            || async { outbox.locked_count().await == 0 },
        )
        .await;
    let marked_before_kill: HashSet<String> =
        outbox.delivered_positions().await.into_keys().collect();
    assert!(
        (marked_before_kill.len() as i64) < ROWS,
        "the run finished before the kill; nothing was tested"
    );

    let mut relay = spawn_relay_binary(&config, &dir.path().join("second.log"));
    outbox.wait_delivered(ROWS, Duration::from_secs(120)).await;
    signal(&relay, Signal::SIGTERM);
    wait_exit(&mut relay, Duration::from_secs(30))
        .await
        .expect("relay exits");

    let counts = event_id_counts(&consume_all(&outbox.topic).await);
    let duplicated: Vec<&String> = counts
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(id, _)| id)
        .collect();
    let extra: usize = counts.values().map(|n| n - 1).sum();
    println!(
        "kill -9 after {} of {ROWS} rows were marked: {} rows produced twice ({extra} extra records); \
         in-flight bound {in_flight_bound}",
        marked_before_kill.len(),
        duplicated.len()
    );
    assert_eq!(counts.len() as i64, ROWS, "rows lost");
    assert!(
        duplicated
            .iter()
            .all(|id| !marked_before_kill.contains(*id)),
        "a row already marked delivered before the kill was produced again"
    );
    assert!(
        extra as i64 <= in_flight_bound,
        "{extra} duplicates exceed what can be in flight"
    );
    assert_eq!(outbox.count("delivered").await, ROWS);
}

#[tokio::test]
async fn sigterm_during_a_run_exits_within_the_bound_and_leaves_no_acknowledged_row_unmarked() {
    const ROWS: i64 = 20_000;
    let outbox = TestOutbox::new(3).await;
    outbox.insert_rows(ROWS, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let config = outbox.config_file(&dir, &kafka_bootstrap(), "");
    let bound = Duration::from_millis(outbox.config().relay.shutdown_timeout_ms);
    let log = dir.path().join("relay.log");

    let mut relay = spawn_relay_binary(&config, &log);
    outbox.wait_delivered(500, Duration::from_secs(60)).await;
    signal(&relay, Signal::SIGTERM);
    let (status, took) = wait_exit(&mut relay, bound + Duration::from_secs(5))
        .await
        .expect("relay did not exit within the shutdown bound");
    println!("SIGTERM → exit in {took:?} (bound {bound:?}), status {status}");
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(took <= bound);

    let delivered = outbox.delivered_positions().await;
    assert!(
        (delivered.len() as i64) < ROWS,
        "the run finished before SIGTERM; nothing was tested"
    );
    let in_kafka = consume_all(&outbox.topic).await;
    let unmarked: Vec<_> = in_kafka
        .iter()
        .filter(|r| delivered.get(r.event_id()) != Some(&(r.partition, r.offset)))
        .collect();
    assert!(
        unmarked.is_empty(),
        "{} acknowledged rows left unmarked",
        unmarked.len()
    );
    assert_eq!(in_kafka.len(), delivered.len());
}
