//! The claim at the store level, on real Postgres and without Kafka: `Outbox::claim` in several
//! transactions held open at once, as concurrent relay batches (or relays) hold them. Claims
//! are disjoint; one key's rows travel in one lane (a later row is never claimed while an
//! earlier row of its key is claimed elsewhere, backs off, or is parked holding the key); rows
//! not yet due are not claimed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use outbox_relay::outbox::{ClaimedRow, Delivered, Failed, Outbox, Parked, RELAY_SESSION};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Postgres, Transaction};

use crate::harness::{database_url, TestOutbox};

type Tx = Transaction<'static, Postgres>;

/// The relay's store on `outbox`'s table, with a pool large enough for `connections`
/// transactions open at once.
async fn store(outbox: &TestOutbox, connections: u32) -> Outbox {
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect(&database_url())
        .await
        .unwrap();
    Outbox::with_pool(pool, outbox.table_name())
}

/// Opens `n` transactions and claims up to `limit` rows in each, all at the same moment (the
/// claims run concurrently); the transactions stay open, their rows locked.
async fn claim_at_once(store: &Outbox, n: usize, limit: u32) -> Vec<(Tx, Vec<ClaimedRow>)> {
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (store, barrier) = (store.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                let mut tx = store.begin().await.unwrap();
                barrier.wait().await;
                let rows = store.claim(&mut tx, limit, &[]).await.unwrap().rows;
                (tx, rows)
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn ids(rows: &[ClaimedRow]) -> Vec<i64> {
    rows.iter().map(|r| r.id).collect()
}

/// Pending rows per (topic, key), in id order.
async fn pending_by_key(outbox: &TestOutbox) -> HashMap<(String, String), Vec<i64>> {
    let mut by_key: HashMap<(String, String), Vec<i64>> = HashMap::new();
    for r in outbox.rows().await {
        if let (Some(key), "pending") = (r.key, r.status.as_str()) {
            by_key.entry((r.topic, key)).or_default().push(r.id);
        }
    }
    by_key
}

fn delivered(rows: &[ClaimedRow]) -> Vec<Delivered> {
    rows.iter()
        .map(|r| Delivered {
            id: r.id,
            partition: 0,
            offset: r.id,
        })
        .collect()
}

async fn insert_at(outbox: &TestOutbox, key: Option<&str>, set: &str) -> i64 {
    let id = outbox
        .insert(&outbox.topic, key, serde_json::json!({}))
        .await;
    if !set.is_empty() {
        sqlx::query(&format!(
            "UPDATE {} SET {set} WHERE id = $1",
            outbox.table()
        ))
        .bind(id)
        .execute(&outbox.pool)
        .await
        .unwrap();
    }
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_row_of_a_key_is_not_claimed_while_an_earlier_one_is_claimed_by_another_open_transaction(
) {
    let outbox = TestOutbox::without_kafka().await;
    let store = store(&outbox, 4).await;
    let first = insert_at(&outbox, Some("k"), "").await;
    let second = insert_at(&outbox, Some("k"), "").await;
    let other = insert_at(&outbox, Some("j"), "").await;

    let mut a = store.begin().await.unwrap();
    assert_eq!(
        ids(&store.claim(&mut a, 1, &[]).await.unwrap().rows),
        [first]
    );
    let mut b = store.begin().await.unwrap();
    // Row `other` (a later id, another key) is claimed: this claim looked past row `second`.
    assert_eq!(
        ids(&store.claim(&mut b, 10, &[]).await.unwrap().rows),
        [other],
        "row {second} of key k was claimed while row {first} was claimed by another transaction"
    );

    // Once the first row is delivered (and B, which may hold the rows it left out locked, has
    // ended), the key's next row is the head of its lane.
    b.rollback().await.unwrap();
    store
        .mark_delivered(&mut a, &delivered_ids(&[first]))
        .await
        .unwrap();
    a.commit().await.unwrap();
    let mut c = store.begin().await.unwrap();
    assert_eq!(
        ids(&store.claim(&mut c, 10, &[]).await.unwrap().rows),
        [second, other]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_behind_this_relays_batches_in_flight_are_claimed_and_rows_behind_others_make_a_blocked_claim(
) {
    let outbox = TestOutbox::without_kafka().await;
    let store = store(&outbox, 4).await;
    let first = insert_at(&outbox, Some("k"), "").await;
    let second = insert_at(&outbox, Some("k"), "").await;
    let third = insert_at(&outbox, Some("k"), "").await;

    // A batch in flight holds the first row.
    let mut a = store.begin().await.unwrap();
    assert_eq!(
        ids(&store.claim(&mut a, 1, &[]).await.unwrap().rows),
        [first]
    );

    // Told that the row is its own batch in flight, the next claim takes the key's later rows
    // (they will go to Kafka behind it).
    let mut b = store.begin().await.unwrap();
    let mine = store.claim(&mut b, 10, &[first]).await.unwrap();
    assert_eq!(ids(&mine.rows), [second, third]);
    b.rollback().await.unwrap();

    // Not told so (the row is held elsewhere: another relay instance), it takes nothing, and
    // says that due rows were there: a blocked claim, not an empty one.
    let mut c = store.begin().await.unwrap();
    let theirs = store.claim(&mut c, 10, &[]).await.unwrap();
    assert!(theirs.rows.is_empty(), "{:?}", ids(&theirs.rows));
    assert_eq!(theirs.candidates, 2, "the two later rows were due");
    c.rollback().await.unwrap();
    a.rollback().await.unwrap();

    // Nothing due at all: an empty claim.
    let mut d = store.begin().await.unwrap();
    store.claim(&mut d, 10, &[]).await.unwrap();
    let mut e = store.begin().await.unwrap();
    let after = store.claim(&mut e, 10, &[]).await.unwrap();
    assert_eq!((after.rows.len(), after.candidates), (0, 0));
}

fn delivered_ids(ids: &[i64]) -> Vec<Delivered> {
    ids.iter()
        .map(|&id| Delivered {
            id,
            partition: 0,
            offset: id,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_behind_a_backing_off_or_key_holding_row_and_rows_not_yet_due_are_not_claimed() {
    let outbox = TestOutbox::without_kafka().await;
    let store = store(&outbox, 2).await;
    let later = "next_attempt_at = now() + interval '1 hour'";
    let backing_off = insert_at(
        &outbox,
        Some("slow"),
        &format!("attempts = 1, last_error = 'test: backing off', {later}"),
    )
    .await;
    let behind_backing_off = insert_at(&outbox, Some("slow"), "").await;
    let holding = insert_at(
        &outbox,
        Some("held"),
        "status = 'parked', holds_key = true, attempts = 1, last_error = 'test: poison'",
    )
    .await;
    let behind_holding = insert_at(&outbox, Some("held"), "").await;
    let skipped = insert_at(
        &outbox,
        Some("skip"),
        "status = 'parked', holds_key = false, attempts = 1, last_error = 'test: poison'",
    )
    .await;
    let behind_skipped = insert_at(&outbox, Some("skip"), "").await;
    let not_due_keyed = insert_at(&outbox, Some("early"), later).await;
    let behind_not_due = insert_at(&outbox, Some("early"), "").await;
    let not_due = insert_at(&outbox, None, later).await;
    let sentinel = insert_at(&outbox, Some("sentinel"), "").await;

    let mut tx = store.begin().await.unwrap();
    let claimed = ids(&store.claim(&mut tx, 100, &[]).await.unwrap().rows);
    tx.rollback().await.unwrap();
    println!(
        "claimed {claimed:?}; backing off {backing_off} (then {behind_backing_off}), holding \
         {holding} (then {behind_holding}), skipped {skipped}, not due {not_due_keyed} (then \
         {behind_not_due}) and {not_due}"
    );
    // The sentinel (the latest id) is claimed: the claim passed every row above.
    assert_eq!(claimed, [behind_skipped, sentinel]);

    // Due now: the unkeyed row and the head of key `early` (then its next row) are claimed.
    sqlx::query(&format!(
        "UPDATE {} SET next_attempt_at = now() WHERE id = ANY($1)",
        outbox.table()
    ))
    .bind([not_due_keyed, not_due])
    .execute(&outbox.pool)
    .await
    .unwrap();
    let mut tx = store.begin().await.unwrap();
    let claimed = ids(&store.claim(&mut tx, 100, &[]).await.unwrap().rows);
    assert_eq!(
        claimed,
        [
            behind_skipped,
            not_due_keyed,
            behind_not_due,
            not_due,
            sentinel
        ]
    );
}

/// Many rounds of eight concurrent claims over interleaved keyed and unkeyed rows, until the
/// table is drained. In each round, with every transaction open: no row is claimed twice, one
/// key's claimed rows are all in one transaction, and they are the key's earliest pending rows.
/// Between rounds the driver acts as the relay would: it marks most rows delivered, reschedules
/// a few (due at once, an attempt more) leaving the later rows of their key in that batch
/// untouched, and parks a few without holding the key. Every row ends delivered or parked, and
/// each key's rows were delivered in id order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_are_disjoint_and_keep_each_key_in_one_lane_until_the_table_is_drained() {
    const ROWS: i64 = 3_000;
    const TXS: usize = 8;
    let outbox = TestOutbox::without_kafka().await;
    let store = store(&outbox, TXS as u32 + 1).await;
    sqlx::query(&format!(
        "INSERT INTO {} (topic, key, payload) \
         SELECT $1, CASE WHEN i % 4 = 0 THEN NULL ELSE 'k' || (i % 61) END, '{{}}' \
         FROM generate_series(1, $2) AS i",
        outbox.table()
    ))
    .bind(&outbox.topic)
    .bind(ROWS)
    .execute(&outbox.pool)
    .await
    .unwrap();

    let mut rng = StdRng::seed_from_u64(8);
    let mut delivered_order: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let (mut rounds, mut parked, mut rescheduled) = (0, 0, 0);
    while outbox.count("pending").await > 0 {
        rounds += 1;
        assert!(rounds < 1_000, "the table does not drain");
        let heads = pending_by_key(&outbox).await;
        let limit = rng.gen_range(5..=60);
        let claims = claim_at_once(&store, TXS, limit).await;

        let mut seen = HashSet::new();
        let mut lane_of: HashMap<&str, usize> = HashMap::new();
        let mut claimed_of_key: HashMap<&str, Vec<i64>> = HashMap::new();
        for (t, (_, rows)) in claims.iter().enumerate() {
            for r in rows {
                assert!(
                    seen.insert(r.id),
                    "round {rounds}: row {} claimed twice",
                    r.id
                );
                let Some(key) = r.key.as_deref() else {
                    continue;
                };
                let lane = *lane_of.entry(key).or_insert(t);
                assert_eq!(
                    lane, t,
                    "round {rounds}: key {key} claimed by transactions {lane} and {t}"
                );
                claimed_of_key.entry(key).or_default().push(r.id);
            }
        }
        assert!(!seen.is_empty(), "round {rounds}: nothing claimed");
        for (key, claimed) in &claimed_of_key {
            let pending = &heads[&(outbox.topic.clone(), (*key).to_owned())];
            assert_eq!(
                claimed.as_slice(),
                &pending[..claimed.len()],
                "round {rounds}: key {key}: claimed {claimed:?}, not its earliest pending rows \
                 {pending:?}"
            );
        }

        for (mut tx, rows) in claims {
            let (mut ok, mut failed, mut poison) = (Vec::new(), Vec::new(), Vec::new());
            let mut failed_keys = HashSet::new();
            for r in &rows {
                if r.key.as_ref().is_some_and(|k| failed_keys.contains(k)) {
                    continue; // behind a failure of its key in this batch: untouched
                }
                match rng.gen_range(0..100) {
                    0..=5 => {
                        failed_keys.extend(r.key.clone());
                        failed.push(Failed {
                            id: r.id,
                            error: "test: retry".into(),
                            delay: Duration::ZERO,
                        });
                    }
                    6 => poison.push(Parked {
                        id: r.id,
                        error: "test: poison".into(),
                        holds_key: false,
                    }),
                    _ => ok.push(r.clone()),
                }
            }
            store
                .mark_delivered(&mut tx, &delivered(&ok))
                .await
                .unwrap();
            store.reschedule(&mut tx, &failed).await.unwrap();
            store.park(&mut tx, &poison).await.unwrap();
            tx.commit().await.unwrap();
            for r in &ok {
                if let Some(k) = &r.key {
                    delivered_order.entry(k.clone()).or_default().push(r.id);
                }
            }
            rescheduled += failed.len();
            parked += poison.len();
        }
    }
    println!(
        "{ROWS} rows drained in {rounds} rounds of {TXS} concurrent claims; {rescheduled} \
         reschedules, {parked} parked"
    );
    for (key, order) in &delivered_order {
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "key {key} delivered out of id order: {order:?}"
        );
    }
    let (rows, delivered, parked_rows, _) = outbox.tally().await;
    assert_eq!(rows, ROWS);
    assert_eq!(delivered + parked_rows, ROWS);
    assert_eq!(parked_rows, parked as i64);
    assert!(
        rescheduled > 0 && parked > 0,
        "the run exercised no failure"
    );
}

/// Rows a plan handled: over every step, (rows out + rows its filters removed) × its runs. Linear
/// work for a 500-row claim stays in the thousands; reading the backlog costs its size, and a
/// scan per key or per candidate makes millions.
fn rows_handled(plan: &serde_json::Value) -> i64 {
    let n = |field: &str| plan[field].as_f64().unwrap_or(0.0);
    let own = (n("Actual Rows") + n("Rows Removed by Filter") + n("Rows Removed by Join Filter"))
        * n("Actual Loops");
    let children: i64 = plan["Plans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(rows_handled)
        .sum();
    own as i64 + children
}

/// What the planner knew when it first planned the claim.
#[derive(Debug, Clone)]
enum Stats {
    /// A new table, never analyzed (3 rows in it).
    NeverAnalyzed,
    /// ANALYZE ran while the table held 60 rows (autovacuum does, early in a table's life).
    AnalyzedAt60Rows,
    /// ANALYZE ran after the relay had deleted (`on_delivered = "delete"`) 2,000 rows but 3:
    /// dead rows fill the pages it measured.
    AnalyzedAmongDeletedRows,
}

/// Runs `sql` (one statement or several) on `conn`.
async fn run(conn: &mut sqlx::PgConnection, sql: &str) {
    sqlx::Executor::execute(conn, sql).await.unwrap();
}

/// Plans the claim on a new table as `stats` says, under the session `settings`, fills the
/// table with 20,000 pending rows (1,000 keys) behind a row not yet due, and returns the rows
/// handled by one claim of 500.
/// Autovacuum is off for the table, so no ANALYZE replans it behind the test's back.
async fn claim_work_after_growth(stats: Stats, settings: &[(&str, &str)]) -> i64 {
    use sqlx::Connection;

    let outbox = TestOutbox::without_kafka().await;
    let table = outbox.table();
    let mut conn = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    run(
        &mut conn,
        &format!("ALTER TABLE {table} SET (autovacuum_enabled = off)"),
    )
    .await;
    for (name, value) in settings {
        run(&mut conn, &format!("SET {name} = {value}")).await;
    }
    match stats {
        Stats::NeverAnalyzed => outbox.insert_rows(3, 1_000).await,
        Stats::AnalyzedAt60Rows => {
            outbox.insert_rows(60, 1_000).await;
            run(&mut conn, &format!("ANALYZE {table}")).await;
        }
        Stats::AnalyzedAmongDeletedRows => {
            outbox.insert_rows(2_000, 1_000).await;
            run(
                &mut conn,
                &format!(
                    "DELETE FROM {table} WHERE id <= (SELECT max(id) - 3 FROM {table}); \
                     ANALYZE {table}"
                ),
            )
            .await;
        }
    }
    let claim_sql = outbox.store().claim_sql().to_owned();
    run(
        &mut conn,
        &format!("PREPARE claim(bigint, bigint[]) AS {claim_sql}"),
    )
    .await;
    // Postgres weighs a generic plan after five custom ones: six runs, as a relay makes in
    // its first second.
    for _ in 0..6 {
        run(&mut conn, "BEGIN; EXECUTE claim(500, '{}'); ROLLBACK").await;
    }

    // A row not yet due (a deferred topic's, say) below the claim, pending outside it: the
    // claim must probe its keys for earlier rows held elsewhere, as when another relay holds
    // some (with nothing below it outside the claim, it skips the probes).
    run(
        &mut conn,
        &format!(
            "INSERT INTO {table} (topic, key, payload, next_attempt_at) \
             VALUES ('{}', 'deferred', '{{}}', now() + interval '1 hour')",
            outbox.topic
        ),
    )
    .await;
    outbox.insert_rows(20_000, 1_000).await;
    let (plan,): (serde_json::Value,) =
        sqlx::query_as("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE claim(500, '{}')")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let root = &plan[0]["Plan"];
    assert_eq!(
        root["Actual Rows"], 500,
        "the claim took a full batch: {plan:#}"
    );
    rows_handled(root)
}

/// Postgres keeps a prepared statement's generic plan for the connection's life; planned while
/// the table was new and never analyzed, it estimates one row everywhere. The claim's shape
/// keeps even that plan linear: per-key work once per key, no join back to the table (the
/// probes once ran for every candidate, 500 × 250 of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generic_claim_plan_made_on_a_new_empty_table_stays_linear_once_the_table_fills() {
    let work = claim_work_after_growth(
        Stats::NeverAnalyzed,
        &[("plan_cache_mode", "force_generic_plan"), ("jit", "off")],
    )
    .await;
    assert!(work <= 100_000, "one claim of 500 handled {work} rows");
}

/// An outbox table's statistics are stale by nature (a queue: rows come and go faster than
/// autovacuum analyzes). Planned from the statistics of a small table, or of pages full of
/// deleted rows, a claim under Postgres's defaults scans the table once per key, or reads and
/// sorts the whole backlog for every batch. Under the relay's session settings (whose plans are
/// generic: made once, from the statistics of the young table) each claim reads about its
/// batch, whatever the statistics say, and not the 20,000 rows of the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relays_claim_reads_about_its_batch_not_the_backlog_whatever_the_stale_statistics() {
    // About its batch: 500 candidates, a probe or two each. Reading the backlog once is 20,000.
    const BOUND: i64 = 12_000;
    let relay = claim_work_after_growth(Stats::NeverAnalyzed, RELAY_SESSION).await;
    assert!(
        relay <= BOUND,
        "NeverAnalyzed: one claim of 500 handled {relay} rows"
    );
    for stats in [Stats::AnalyzedAt60Rows, Stats::AnalyzedAmongDeletedRows] {
        let name = format!("{stats:?}");
        let relay = claim_work_after_growth(stats.clone(), RELAY_SESSION).await;
        assert!(
            relay <= BOUND,
            "{name}: one claim of 500 handled {relay} rows"
        );
        // The sentinel: from statistics taken among deleted rows, Postgres's defaults read and
        // sort the backlog, so the settings are what avoids it. (The 60-row case trapped the
        // defaults when run alone but not within the parallel suite, so it has no sentinel
        // here; without `enable_seqscan = off` the relay's own generic plan handled 20,066,003
        // rows there, checked by hand: BENCHMARKS.md, stop 17.)
        if matches!(stats, Stats::AnalyzedAmongDeletedRows) {
            let defaults = claim_work_after_growth(stats, &[("jit", "off")]).await;
            assert!(
                defaults > BOUND,
                "{name}: under the defaults a claim handled only {defaults} rows: the scenario no \
                 longer shows the trap"
            );
        }
    }
}

/// Runs of the plan's steps that read `index` (its name ends so).
fn index_loops(plan: &serde_json::Value, index: &str) -> i64 {
    let own = match plan["Index Name"].as_str() {
        Some(name) if name.ends_with(index) => plan["Actual Loops"].as_i64().unwrap_or(0),
        _ => 0,
    };
    let children: i64 = plan["Plans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| index_loops(p, index))
        .sum();
    own + children
}

/// Probes of the pending-key index made by one claim of 500 (the statement `claim`, prepared
/// on `conn`), told that `in_flight` are its relay's own batches.
async fn claim_probes(conn: &mut sqlx::PgConnection, in_flight: &[i64]) -> i64 {
    let held: Vec<String> = in_flight.iter().map(i64::to_string).collect();
    run(conn, "BEGIN").await;
    let (plan,): (serde_json::Value,) = sqlx::query_as(&format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE claim(500, '{{{}}}')",
        held.join(",")
    ))
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    run(conn, "ROLLBACK").await;
    index_loops(&plan[0]["Plan"], "pending_key_idx")
}

/// The claim's per-key probes (one per key of the batch: is an earlier row of it held
/// elsewhere?) run only when some pending row below the batch is neither in it nor in this
/// relay's batches in flight. A relay alone on its table, as in a drain, skips them: they were
/// half of a 500-row claim's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_probes_its_keys_only_when_a_pending_row_below_it_is_held_elsewhere() {
    use sqlx::Connection;

    let outbox = TestOutbox::without_kafka().await;
    outbox.insert_rows(600, 100).await;
    let store = store(&outbox, 2).await;
    // A batch in flight: the first 100 rows (every key's first row), locked by its open
    // transaction.
    let mut batch = store.begin().await.unwrap();
    let in_flight = ids(&store.claim(&mut batch, 100, &[]).await.unwrap().rows);
    assert_eq!(in_flight.len(), 100);

    let mut conn = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    for (name, value) in RELAY_SESSION {
        run(&mut conn, &format!("SET {name} = {value}")).await;
    }
    let claim_sql = store.claim_sql().to_owned();
    run(
        &mut conn,
        &format!("PREPARE claim(bigint, bigint[]) AS {claim_sql}"),
    )
    .await;
    // The rows below the claim are this relay's own batch: no probe.
    let own = claim_probes(&mut conn, &in_flight).await;
    assert_eq!(own, 0, "probes with only our own batch below");
    // The same rows, held by another relay: each key is probed (and found held).
    let foreign = claim_probes(&mut conn, &[]).await;
    assert!(
        foreign >= 100,
        "{foreign} probes with another relay's batch below"
    );
    batch.rollback().await.unwrap();
}
