//! The producer side (issue G): the SQL publish functions of migration 0006, the GRANT script
//! for an application role, and the Rust API over them, against the real Postgres.

use outbox_relay::publish::{Event, PublishError, Publisher};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Row as _};
use uuid::Uuid;

use crate::harness::{database_url, TestOutbox};

fn publisher(outbox: &TestOutbox) -> Publisher {
    Publisher::new(&outbox.table_name())
}

/// Calls `"schema".outbox_publish(...)` with SQL `args` and returns the refusal's
/// (SQLSTATE, COLUMN, message).
async fn refusal(outbox: &TestOutbox, args: &str) -> (String, Option<String>, String) {
    let sql = format!("SELECT \"{}\".outbox_publish({args})", outbox.schema);
    let err = sqlx::query(&sql).execute(&outbox.pool).await.unwrap_err();
    let db = err.as_database_error().expect("a database error");
    let pg = db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .unwrap();
    (
        db.code().unwrap().into_owned(),
        pg.column().map(str::to_owned),
        db.message().to_owned(),
    )
}

#[tokio::test]
async fn each_refused_input_raises_22023_naming_its_field_and_writes_nothing() {
    let outbox = TestOutbox::without_kafka().await;
    let long_key = format!("'{}'", "k".repeat(1025));
    let cases: &[(&str, &str, &str)] = &[
        ("'', 'k', '{}'", "topic", "topic: must not be empty"),
        ("'a b', 'k', '{}'", "topic", "topic: \"a b\" is not a Kafka topic name"),
        ("'..', 'k', '{}'", "topic", "topic: \"..\" is not a Kafka topic name"),
        (&format!("'{}', 'k', '{{}}'", "t".repeat(250)), "topic", "topic: "),
        (&format!("'t', {long_key}, '{{}}'"), "key", "key: 1025 bytes, more than 1024"),
        ("'t', 'k', NULL", "payload", "payload: must not be null"),
        ("'t', 'k', '{\"event_id\": 7}'", "payload", "payload.event_id: must be a UUID string"),
        ("'t', 'k', '{}', '[\"a\"]'", "headers", "headers: must be a JSON object of strings, got array"),
        ("'t', 'k', '{}', '{\"h\": [\"a\"]}'", "headers", "headers.h: must be a string, got array"),
        ("'t', 'k', '{}', '{\"event_id\": \"x\"}'", "headers", "headers.event_id: reserved"),
        ("'t', 'k', '{}', '{\"outbox.id\": \"1\"}'", "headers", "headers.outbox.id: reserved"),
        ("'t', 'k', '{}', '{}', ''", "value_subject", "value_subject: must not be empty"),
        ("'t', 'k', '{}', '{}', 's', 0", "value_schema_version", "value_schema_version: must be positive"),
        ("'t', 'k', '{}', '{}', NULL, 2", "value_schema_version", "value_schema_version: needs value_subject"),
        (
            "'t', 'k', '{\"event_id\": \"0b6f3c1e-5a7d-4e8f-9a21-3c4d5e6f7a01\"}', '{}', NULL, NULL, \
             '0b6f3c1e-5a7d-4e8f-9a21-3c4d5e6f7a02'",
            "event_id",
            "event_id: 0b6f3c1e-5a7d-4e8f-9a21-3c4d5e6f7a02 differs from payload.event_id",
        ),
    ];
    for (args, field, message) in cases {
        let (code, column, text) = refusal(&outbox, args).await;
        assert_eq!(code, "22023", "{args}: {text}");
        assert_eq!(column.as_deref(), Some(*field), "{args}: {text}");
        assert!(text.starts_with(message), "{args}: {text}");
    }
    let deep = format!("{}1{}", "[".repeat(101), "]".repeat(101));
    let (_, column, text) = refusal(&outbox, &format!("'t', 'k', '{deep}'")).await;
    assert_eq!(column.as_deref(), Some("payload"));
    assert_eq!(
        text,
        "payload: nests more than 100 levels of arrays and objects"
    );
    assert_eq!(outbox.rows().await.len(), 0);
}

#[tokio::test]
async fn size_limits_come_from_settings_with_defaults() {
    let outbox = TestOutbox::without_kafka().await;
    let big = format!("{{\"s\": \"{}\"}}", "x".repeat(1_048_576));
    let (_, column, text) = refusal(&outbox, &format!("'t', 'k', '{big}'")).await;
    assert_eq!(column.as_deref(), Some("payload"));
    assert!(
        text.starts_with("payload: 1048585 bytes, more than outbox.max_payload_bytes (1048576)"),
        "{text}"
    );

    let mut conn = outbox.pool.acquire().await.unwrap();
    let call = format!(
        "SELECT \"{}\".outbox_publish('t', 'k', $1, $2)",
        outbox.schema
    );
    sqlx::query("SET outbox.max_payload_bytes = 20")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("SET outbox.max_headers_bytes = 10")
        .execute(&mut *conn)
        .await
        .unwrap();
    let payload = json!({"s": "12345678901234"}); // {"s": "12345678901234"}: 23 bytes
    let err = sqlx::query(&call)
        .bind(&payload)
        .bind(json!({}))
        .execute(&mut *conn)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("payload: 23 bytes, more than outbox.max_payload_bytes (20)"),
        "{err}"
    );
    let err = sqlx::query(&call)
        .bind(json!({}))
        .bind(json!({"h": "0123456789"}))
        .execute(&mut *conn)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("headers: 19 bytes, more than outbox.max_headers_bytes (10)"),
        "{err}"
    );
    // Under the limits it is written.
    sqlx::query(&call)
        .bind(json!({"s": 1}))
        .bind(json!({"h": "v"}))
        .execute(&mut *conn)
        .await
        .unwrap();
    assert_eq!(outbox.rows().await.len(), 1);
}

#[tokio::test]
async fn a_batch_with_one_bad_event_writes_none_and_names_its_index() {
    let outbox = TestOutbox::without_kafka().await;
    let mut conn = outbox.pool.acquire().await.unwrap();
    let events = [
        Event::new("t", json!({"n": 1})).key("a"),
        Event::new("t", json!({"n": 2})).header("h", "v"),
        Event::new("t", json!({"n": 3})).header("event_id", "mine"),
    ];
    let err = publisher(&outbox)
        .publish_batch(&mut conn, &events)
        .await
        .unwrap_err();
    match err {
        PublishError::Refused { field, message } => {
            assert_eq!(field.as_deref(), Some("headers"));
            assert!(
                message.starts_with("events[2].headers.event_id: reserved"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    let sql = format!(
        "SELECT * FROM \"{}\".outbox_publish_batch($1)",
        outbox.schema
    );
    for (events, message) in [
        (
            json!({"topic": "t"}),
            "events: must be a JSON array of events, got object",
        ),
        (
            json!([{"topic": "t", "value": {}}]),
            "events[0].value: unknown field",
        ),
        (
            json!([{"topic": 5, "payload": {}}]),
            "events[0].topic: must be a string, got number",
        ),
        (
            json!([{"topic": "t"}]),
            "events[0].payload: must not be null",
        ),
        (
            json!([{"topic": "t", "payload": {}, "event_id": "nope"}]),
            "events[0].event_id: must be a UUID",
        ),
    ] {
        let err = sqlx::query(&sql)
            .bind(&events)
            .execute(&mut *conn)
            .await
            .unwrap_err();
        let db = err.as_database_error().unwrap();
        assert_eq!(db.code().as_deref(), Some("22023"), "{events}");
        assert!(
            db.message().starts_with(message),
            "{events}: {}",
            db.message()
        );
    }
    assert_eq!(outbox.rows().await.len(), 0);
}

#[tokio::test]
async fn a_batch_is_written_in_order_with_the_ids_it_returned() {
    let outbox = TestOutbox::without_kafka().await;
    let given = Uuid::now_v7();
    let events: Vec<Event> = (0..50)
        .map(|n| {
            let payload = if n == 7 {
                json!({"n": n, "event_id": given.to_string()})
            } else {
                json!({"n": n})
            };
            Event::new("t", payload)
                .key(format!("k{}", n % 3))
                .header("n", n.to_string())
        })
        .collect();
    let mut tx = outbox.pool.begin().await.unwrap();
    let ids = publisher(&outbox)
        .publish_batch(&mut tx, &events)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(ids.len(), 50);
    assert_eq!(ids[7], given, "the payload's event_id is the row's");
    assert!(ids.iter().all(|id| id.get_version_num() == 7));
    let rows = sqlx::query(&format!(
        "SELECT event_id, payload, headers, key FROM {} ORDER BY id",
        outbox.table()
    ))
    .fetch_all(&outbox.pool)
    .await
    .unwrap();
    for (n, row) in rows.iter().enumerate() {
        assert_eq!(row.get::<Uuid, _>("event_id"), ids[n]);
        assert_eq!(row.get::<serde_json::Value, _>("payload")["n"], json!(n));
        assert_eq!(
            row.get::<serde_json::Value, _>("headers"),
            json!({"n": n.to_string()})
        );
        assert_eq!(
            row.get::<Option<String>, _>("key"),
            Some(format!("k{}", n % 3))
        );
    }
}

#[tokio::test]
async fn the_sql_function_without_an_event_id_makes_a_uuid_v7_and_keeps_the_overrides() {
    let outbox = TestOutbox::without_kafka().await;
    let id: Uuid = sqlx::query_scalar(&format!(
        "SELECT \"{}\".outbox_publish(topic => 't', key => NULL, payload => '{{}}', \
         value_subject => 's-value', value_schema_version => 3)",
        outbox.schema
    ))
    .fetch_one(&outbox.pool)
    .await
    .unwrap();
    assert_eq!(id.get_version_num(), 7);
    let (subject, version, key): (Option<String>, Option<i32>, Option<String>) =
        sqlx::query_as(&format!(
            "SELECT value_subject, value_schema_version, key FROM {} WHERE event_id = $1",
            outbox.table()
        ))
        .bind(id)
        .fetch_one(&outbox.pool)
        .await
        .unwrap();
    assert_eq!(
        (subject.as_deref(), version, key),
        (Some("s-value"), Some(3), None)
    );
}

/// An application role made by the test, dropped at the end.
struct AppRole {
    name: String,
}

impl AppRole {
    async fn create(outbox: &TestOutbox) -> Self {
        let name = format!("app_{}", &outbox.schema[2..]);
        sqlx::query(&format!("CREATE ROLE \"{name}\" LOGIN PASSWORD 'app'"))
            .execute(&outbox.pool)
            .await
            .expect("CREATE ROLE: the test role needs CREATEROLE (scripts/stack up grants it)");
        Self { name }
    }

    async fn drop(self, outbox: &TestOutbox) {
        let schema = &outbox.schema;
        for sql in [
            format!("REVOKE ALL ON SCHEMA \"{schema}\" FROM \"{}\"", self.name),
            format!(
                "REVOKE ALL ON ALL FUNCTIONS IN SCHEMA \"{schema}\" FROM \"{}\"",
                self.name
            ),
            format!("DROP ROLE \"{}\"", self.name),
        ] {
            sqlx::query(&sql).execute(&outbox.pool).await.unwrap();
        }
    }
}

#[tokio::test]
async fn the_granted_app_role_publishes_but_cannot_read_or_write_the_table() {
    let outbox = TestOutbox::without_kafka().await;
    let role = AppRole::create(&outbox).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/migrations/grant_publisher.sql"
    );
    let out = std::process::Command::new("psql")
        .arg(database_url())
        .args(["-X", "-q", "-v", &format!("schema={}", outbox.schema)])
        .args(["-v", "table=outbox", "-v", &format!("role={}", role.name)])
        .args(["-f", script])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let options: PgConnectOptions = database_url().parse().unwrap();
    let mut app = options
        .username(&role.name)
        .password("app")
        .connect()
        .await
        .unwrap();
    let publisher = publisher(&outbox);
    let mut tx = app.begin().await.unwrap();
    let one = publisher
        .publish(&mut tx, &Event::new("t", json!({"n": 1})))
        .await
        .unwrap();
    let two = publisher
        .publish_batch(&mut tx, &[Event::new("t", json!({"n": 2}))])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let table = outbox.table();
    let select = sqlx::query(&format!("SELECT count(*) FROM {table}"))
        .execute(&mut app)
        .await
        .unwrap_err();
    assert!(
        select
            .to_string()
            .contains("permission denied for table outbox"),
        "{select}"
    );
    let insert = sqlx::query(&format!(
        "INSERT INTO {table} (topic, payload) VALUES ('t', '{{}}')"
    ))
    .execute(&mut app)
    .await
    .unwrap_err();
    assert!(
        insert
            .to_string()
            .contains("permission denied for table outbox"),
        "{insert}"
    );
    let check = sqlx::query(&format!(
        "SELECT \"{}\".outbox_publish_check('t', NULL, '{{}}', NULL, NULL, NULL, NULL)",
        outbox.schema
    ))
    .execute(&mut app)
    .await
    .unwrap_err();
    assert!(
        check.to_string().contains("permission denied for function"),
        "{check}"
    );
    app.close().await.unwrap();

    let ids: Vec<Uuid> = outbox.rows().await.iter().map(|r| r.event_id).collect();
    assert_eq!(ids, vec![one, two[0]]);
    role.drop(&outbox).await;
}

#[tokio::test]
async fn a_role_without_the_grant_cannot_publish() {
    let outbox = TestOutbox::without_kafka().await;
    let role = AppRole::create(&outbox).await;
    // USAGE on the schema alone: EXECUTE was revoked from PUBLIC by the migration.
    sqlx::query(&format!(
        "GRANT USAGE ON SCHEMA \"{}\" TO \"{}\"",
        outbox.schema, role.name
    ))
    .execute(&outbox.pool)
    .await
    .unwrap();
    let options: PgConnectOptions = database_url().parse().unwrap();
    let mut app = options
        .username(&role.name)
        .password("app")
        .connect()
        .await
        .unwrap();
    let err = publisher(&outbox)
        .publish(&mut app, &Event::new("t", json!({})))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("permission denied for function outbox_publish"),
        "{err}"
    );
    app.close().await.unwrap();
    role.drop(&outbox).await;
}

#[tokio::test]
async fn migrate_refuses_a_table_name_too_long_for_its_function_names() {
    let schema = format!("t_{}", &Uuid::new_v4().simple().to_string()[..12]);
    let table = outbox_relay::outbox::TableName::new(&schema, &"t".repeat(50)).unwrap();
    let err = outbox_relay::outbox::migrate(&database_url(), &table)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is longer than 49 bytes"), "{err}");
}
