//! Limits of a row, enforced where it is written (migration 0004), rows written before them
//! still flowing, capped reasons; and a relay that meets a table it cannot use says so and exits.

use std::time::Duration;

use outbox_relay::outbox::{migrate, migrate_to, TableName};
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::harness::{
    create_topic, database_url, kafka_bootstrap, spawn_relay_binary, wait_exit, RunningRelay,
    TestOutbox,
};

/// A test outbox whose table is migrated only up to `version`.
async fn outbox_at(version: i64) -> TestOutbox {
    let suffix = Uuid::new_v4().simple().to_string();
    let schema = format!("t_{}", &suffix[..12]);
    let table = TableName::new(&schema, "outbox").unwrap();
    migrate_to(&database_url(), &table, version).await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&database_url())
        .await
        .unwrap();
    let topic = format!("it-{}", &suffix[..12]);
    create_topic(&topic, 1).await;
    TestOutbox {
        schema,
        topic,
        pool,
        database_url: database_url(),
        bootstrap: kafka_bootstrap(),
    }
}

async fn insert(
    outbox: &TestOutbox,
    topic: &str,
    key: &str,
    payload: &str,
    headers: &str,
) -> Result<i64, String> {
    sqlx::query_scalar(&format!(
        "INSERT INTO {} (topic, key, payload, headers) VALUES ($1, $2, $3::jsonb, $4::jsonb) \
         RETURNING id",
        outbox.table()
    ))
    .bind(topic)
    .bind(key)
    .bind(payload)
    .bind(headers)
    .fetch_one(&outbox.pool)
    .await
    .map_err(|e| e.to_string())
}

fn nested(levels: usize) -> String {
    format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
}

#[tokio::test]
async fn each_limit_is_refused_at_insert_with_a_constraint_naming_the_field_and_the_limit() {
    let outbox = TestOutbox::new(1).await;
    let t = outbox.topic.clone();
    let cases = [
        (
            t.as_str(),
            "k".repeat(1025),
            "{}".to_owned(),
            "{}",
            "outbox_key_at_most_1024_bytes",
        ),
        (
            &t,
            "k".into(),
            "{}".into(),
            r#"{"h": ["x"]}"#,
            "outbox_headers_are_flat_strings",
        ),
        (
            &t,
            "k".into(),
            nested(101),
            "{}",
            "outbox_payload_nests_at_most_100_levels",
        ),
        (
            "no spaces allowed",
            "k".into(),
            "{}".into(),
            "{}",
            "outbox_topic_is_a_kafka_topic_name",
        ),
        (
            &"t".repeat(250),
            "k".into(),
            "{}".into(),
            "{}",
            "outbox_topic_is_a_kafka_topic_name",
        ),
    ];
    for (topic, key, payload, headers, constraint) in &cases {
        let err = insert(&outbox, topic, key, payload, headers)
            .await
            .expect_err(constraint);
        assert!(
            err.contains(constraint),
            "expected {constraint}, got: {err}"
        );
    }
    // Right at each limit, the row is accepted.
    insert(
        &outbox,
        &t,
        &"k".repeat(1024),
        &nested(100),
        r#"{"h": "x"}"#,
    )
    .await
    .unwrap();
    insert(&outbox, &"t".repeat(249), "k", "{}", "{}")
        .await
        .unwrap();
}

#[tokio::test]
async fn rows_written_before_the_limits_still_flow_and_a_huge_reason_is_capped() {
    let outbox = outbox_at(3).await;
    let t = outbox.topic.clone();
    // A long but compressible key fitted the old index; an array header passed the lax CHECK
    // and quotes a 200 KB value in its reason.
    let long_key = "k".repeat(5000);
    let long = insert(&outbox, &t, &long_key, r#"{"n": 1}"#, "{}")
        .await
        .unwrap();
    let huge = format!(r#"{{"h": ["{}"]}}"#, "v".repeat(200_000));
    let bad = insert(&outbox, &t, "other", r#"{"n": 2}"#, &huge)
        .await
        .unwrap();
    let table = TableName::new(&outbox.schema, "outbox").unwrap();
    // 0004 and every later migration ran (the refusal below shows 0004's).
    assert!(migrate(&database_url(), &table).await.unwrap() >= 1);
    // Written after the migration, the same key is refused.
    assert!(insert(&outbox, &t, &long_key, "{}", "{}").await.is_err());
    let sentinel = insert(&outbox, &t, "sentinel", r#"{"n": 3}"#, "{}")
        .await
        .unwrap();

    let relay = RunningRelay::start(&outbox.config());
    outbox.wait_delivered(2, Duration::from_secs(60)).await;
    relay.stop().await;
    let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(&format!(
        "SELECT id, status, last_error FROM {} ORDER BY id",
        outbox.table()
    ))
    .fetch_all(&outbox.pool)
    .await
    .unwrap();
    let status = |id: i64| rows.iter().find(|r| r.0 == id).unwrap();
    assert_eq!(status(long).1, "delivered", "{rows:?}");
    assert_eq!(status(sentinel).1, "delivered", "{rows:?}");
    let (_, state, error) = status(bad);
    assert_eq!(state, "parked");
    let error = error.as_deref().unwrap();
    assert!(error.len() < 1100, "last_error is {} bytes", error.len());
    assert!(
        error.starts_with("header \"h\" must be a string"),
        "{error}"
    );
    assert!(error.ends_with("bytes more)"), "{error}");
}

fn relay_exit(outbox: &TestOutbox) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = outbox.config_file(&dir, &kafka_bootstrap(), "");
    let log = dir.path().join("relay.log");
    let mut relay = spawn_relay_binary(&config, &log);
    let rt = tokio::runtime::Handle::current();
    let status =
        tokio::task::block_in_place(|| rt.block_on(wait_exit(&mut relay, Duration::from_secs(30))));
    let text = std::fs::read_to_string(&log).unwrap();
    match status {
        Some((status, _)) => (status.code(), text),
        None => {
            let _ = relay.kill();
            panic!("the relay kept running against an unusable table:\n{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_against_a_schema_without_the_table_exits_non_zero_naming_the_table_and_migrate() {
    let outbox = outbox_at(0).await;
    let (code, log) = relay_exit(&outbox);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(&format!("\"{}\".\"outbox\" does not exist", outbox.schema)),
        "{log}"
    );
    assert!(log.contains("outbox-relay migrate"), "{log}");
    assert!(!log.contains("Postgres unavailable"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_against_a_table_behind_its_migrations_exits_non_zero_naming_the_versions() {
    let outbox = outbox_at(3).await;
    let (code, log) = relay_exit(&outbox);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "is at migration 3, this relay needs {}",
            outbox_relay::outbox::LATEST_VERSION
        )),
        "{log}"
    );
    assert!(log.contains("outbox-relay migrate"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_not_answering_at_startup_is_waited_for_with_a_log_line_and_sigterm_exits_0() {
    let outbox = TestOutbox::new(1).await;
    let dir = tempfile::tempdir().unwrap();
    let config = outbox.config_file(&dir, &kafka_bootstrap(), "");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &database_url(),
        &format!("postgres://outbox:outbox@127.0.0.1:{port}/outbox"),
    );
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("relay.log");
    let mut relay = spawn_relay_binary(&config, &log);
    let start = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("Postgres not reachable at startup") {
            break;
        }
        assert!(
            relay.try_wait().unwrap().is_none(),
            "the relay exited:\n{text}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no log line:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    crate::harness::signal(&relay, nix::sys::signal::Signal::SIGTERM);
    let (status, _) = wait_exit(&mut relay, Duration::from_secs(30))
        .await
        .expect("the relay exits on SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_table_dropped_under_a_running_relay_ends_run_with_an_error_naming_it() {
    let outbox = TestOutbox::new(1).await;
    outbox.insert_rows(5, 2).await;
    let relay = outbox_relay::relay::Relay::new(&outbox.config()).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(async move { relay.run(stop).await });
    outbox.wait_delivered(5, Duration::from_secs(60)).await;
    sqlx::query(&format!("DROP TABLE {}", outbox.table()))
        .execute(&outbox.pool)
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("run ends by itself, not retrying a missing table forever")
        .unwrap();
    let err = ended.expect_err("a missing table is not Ok").to_string();
    assert!(
        err.contains("outbox") && err.contains("does not exist"),
        "{err}"
    );
}
