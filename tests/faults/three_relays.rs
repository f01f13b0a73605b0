//! Three relay binaries on one outbox table, one of them SIGKILLed every 1–2 s and restarted
//! until a 50,000-row run over 500 keys is delivered: the row locks are the only lease, so a
//! dead relay's batches go back to pending and the others (or its successor) take them, in key
//! order. Duplicates are expected (rows in flight at each kill) and printed.

use std::time::{Duration, Instant};

use rand::Rng;

use crate::harness::{batches_logged, kafka_bootstrap, log_dir, RelayProcess, TestOutbox, Writer};

const ROWS: i64 = 50_000;
const UP_FRONT: i64 = 25_000;
const KEYS: i64 = 500;
/// Safety net only: the run takes well under this on 2 cores.
const SAFETY_NET: Duration = Duration::from_secs(420);

#[tokio::test]
async fn three_relays_with_one_killed_every_1_to_2_s_lose_nothing_and_keep_every_keys_order() {
    let outbox = TestOutbox::new(6).await;
    // Half in one transaction up front, half written in chunks while the relays run.
    outbox.insert_rows(UP_FRONT, KEYS).await;
    let dir = log_dir("three_relays");
    let bootstrap = kafka_bootstrap();
    let config = outbox.config_file_in(&dir, "relay", &bootstrap, "");
    let log = |name: String| dir.as_path().join(format!("{name}.log"));
    let mut victim = RelayProcess::spawn_logging_batches(&config, log("a-0".into()));
    let mut steady = [
        RelayProcess::spawn_logging_batches(&config, log("b".into())),
        RelayProcess::spawn_logging_batches(&config, log("c".into())),
    ];
    let writer = Writer::start(
        &outbox,
        250,
        Duration::from_millis(100),
        KEYS,
        ROWS - UP_FRONT,
    );

    let start = Instant::now();
    let mut kills = 0u32;
    let mut rng = rand::thread_rng();
    loop {
        let pause = Duration::from_millis(rng.gen_range(1_000..=2_000));
        tokio::time::sleep(pause).await;
        for r in &mut steady {
            r.assert_running();
        }
        let pending = outbox.count("pending").await;
        if writer.is_done() && pending == 0 {
            break;
        }
        assert!(
            start.elapsed() < SAFETY_NET,
            "{pending} rows still pending after {SAFETY_NET:?} ({kills} kills)"
        );
        victim.assert_running();
        victim.kill();
        kills += 1;
        victim = RelayProcess::spawn_logging_batches(&config, log(format!("a-{kills}")));
    }
    let took = start.elapsed();
    let written = writer.stop().await;
    drop(victim);
    drop(steady);

    let (mut victim_rows, mut victim_batches) = (0, 0);
    for i in 0..=kills {
        let (r, b) = batches_logged(&log(format!("a-{i}")));
        victim_rows += r;
        victim_batches += b;
    }
    let steady_rows: Vec<u64> = ["b", "c"]
        .iter()
        .map(|n| batches_logged(&log((*n).into())).0)
        .collect();

    let (rows, delivered, parked, attempts) = outbox.tally().await;
    let report = outbox.check_order().await;
    println!(
        "three relays, one SIGKILLed {kills} times: {rows} rows ({UP_FRONT} up front, {written} \
         while running) delivered in {took:?}; duplicates {}; parked {parked}, sum(attempts) \
         {attempts}; the killed instance's {} lives marked {victim_rows} rows in \
         {victim_batches} batches, the steady ones {steady_rows:?}\n{report}",
        report.duplicates,
        kills + 1,
    );
    assert!(kills >= 3, "only {kills} kills: the run proved little");
    assert_eq!(rows, ROWS);
    assert_eq!(delivered, ROWS);
    assert_eq!(parked, 0);
    assert_eq!(report.lost, 0, "lost: {:?}", report.lost_ids);
    assert_eq!(report.reordered, 0, "{:?}", report.reordered_examples);
    assert_eq!(report.unknown, 0);
    assert_eq!(report.distinct_event_ids as i64, ROWS);
}
