//! Least privilege (`outbox-relay grants`): an owner role runs the migrations, the relay role
//! delivers with SELECT, UPDATE, DELETE on the outbox (and what its companions need), and the
//! application role can only insert or publish. Each test makes its own roles and schema, with
//! the shared role `outbox` (CREATEROLE) as the administrator, and drops them at the end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use outbox_relay::config::{
    Config, DatabaseConfig, DatabaseUrl, HttpConfig, KafkaConfig, OnDelivered, RelayConfig,
};
use sqlx::postgres::{PgPool, PgPoolOptions};
use uuid::Uuid;

use crate::harness::{
    consume_all, create_topic, database_url, kafka_bootstrap, log_dir, wait_until, RunningRelay,
};

/// One test's roles and schema; dropped (with everything in the schema) when it goes.
struct Roles {
    schema: String,
    owner: String,
    relay: String,
    app: String,
    topic: String,
    password: String,
    dir: PathBuf,
}

/// The test database's URL as another role.
fn url_as(role: &str, password: &str) -> String {
    let url = database_url();
    let (scheme, rest) = url.split_once("://").unwrap();
    let (_, host) = rest.rsplit_once('@').unwrap();
    format!("{scheme}://{role}:{password}@{host}")
}

fn psql(url: &str, sql: &str) -> Output {
    let mut child = Command::new("psql")
        .args(["-qX", "-v", "ON_ERROR_STOP=1", url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run psql");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn cli(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_outbox-relay"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run outbox-relay")
}

fn assert_ok(out: &Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

impl Roles {
    /// `grants --part setup` as the administrator, `migrate` as the owner, `grants --part
    /// tables` as the owner: the README's order.
    async fn create(name: &str) -> Self {
        let suffix = &Uuid::new_v4().simple().to_string()[..10];
        let roles = Self {
            schema: format!("roles_{suffix}"),
            owner: format!("own_{suffix}"),
            relay: format!("rel_{suffix}"),
            app: format!("app_{suffix}"),
            topic: format!("it-roles-{suffix}"),
            password: format!("pw-{suffix}"),
            dir: log_dir(name),
        };
        create_topic(&roles.topic, 1).await;
        let admin = database_url();
        let grants = |part: &str| {
            let out = cli(
                &roles.config_file("admin", &admin),
                &[
                    "grants",
                    "--owner",
                    &roles.owner,
                    "--relay",
                    &roles.relay,
                    "--app",
                    &roles.app,
                    "--part",
                    part,
                ],
            );
            assert_ok(&out, "outbox-relay grants");
            String::from_utf8(out.stdout).unwrap()
        };
        assert_ok(&psql(&admin, &grants("setup")), "the setup part");
        for role in [&roles.owner, &roles.relay, &roles.app] {
            assert_ok(
                &psql(
                    &admin,
                    &format!("ALTER ROLE \"{role}\" PASSWORD '{}';", roles.password),
                ),
                "ALTER ROLE",
            );
        }
        let owner_url = roles.url(&roles.owner);
        assert_ok(
            &cli(&roles.config_file("owner", &owner_url), &["migrate"]),
            "migrate as the owner",
        );
        assert_ok(&psql(&owner_url, &grants("tables")), "the tables part");
        roles
    }

    fn url(&self, role: &str) -> String {
        url_as(role, &self.password)
    }

    fn config_file(&self, name: &str, url: &str) -> PathBuf {
        let path = self.dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[database]\nurl = {url:?}\nschema = {:?}\n\n[kafka]\nbootstrap_servers = {:?}\n\n\
                 [http]\nlisten = \"\"\n",
                self.schema,
                kafka_bootstrap()
            ),
        )
        .unwrap();
        path
    }

    async fn pool(&self, role: &str) -> PgPool {
        PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.url(role))
            .await
            .unwrap_or_else(|e| panic!("connect as {role}: {e}"))
    }

    fn relay_config(&self, on_delivered: OnDelivered, poll_interval_ms: u64) -> Config {
        Config {
            database: DatabaseConfig {
                url: DatabaseUrl::new(self.url(&self.relay)),
                schema: self.schema.clone(),
                max_connections: 8,
                ..DatabaseConfig::default()
            },
            kafka: KafkaConfig {
                bootstrap_servers: kafka_bootstrap(),
                ..KafkaConfig::default()
            },
            relay: RelayConfig {
                batch_size: 100,
                concurrency: 2,
                poll_interval_ms,
                shutdown_timeout_ms: 20_000,
                on_delivered,
            },
            http: HttpConfig {
                listen: String::new(),
                ..HttpConfig::default()
            },
            ..Config::default()
        }
    }

    /// Two events from the application role: a plain INSERT and the publish function.
    async fn publish_two(&self, app: &PgPool, n: i32) {
        sqlx::query(&format!(
            "INSERT INTO \"{}\".outbox (topic, key, payload) VALUES ($1, 'k', $2)",
            self.schema
        ))
        .bind(&self.topic)
        .bind(serde_json::json!({ "n": n }))
        .execute(app)
        .await
        .expect("the application role inserts");
        let id: Uuid = sqlx::query_scalar(&format!(
            "SELECT \"{}\".outbox_publish($1, 'k', $2)",
            self.schema
        ))
        .bind(&self.topic)
        .bind(serde_json::json!({ "n": n + 1 }))
        .fetch_one(app)
        .await
        .expect("the application role publishes");
        assert!(!id.is_nil());
    }

    async fn count(&self, owner: &PgPool, sql_where: &str) -> i64 {
        sqlx::query_scalar(&format!(
            "SELECT count(*) FROM \"{}\".outbox WHERE {sql_where}",
            self.schema
        ))
        .fetch_one(owner)
        .await
        .unwrap()
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        let out = psql(
            &database_url(),
            &format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE; DROP ROLE IF EXISTS \"{}\", \"{}\", \"{}\";",
                self.schema, self.owner, self.relay, self.app
            ),
        );
        if !out.status.success() && !std::thread::panicking() {
            panic!("cleanup: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// The SQLSTATE of a refused statement.
fn refused(result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>) -> String {
    let e = result.expect_err("the statement is refused");
    let code = e
        .as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned());
    assert_eq!(
        code.as_deref(),
        Some("42501"),
        "insufficient_privilege: {e}"
    );
    e.to_string()
}

#[tokio::test]
async fn relay_role_delivers_and_marks_rows_and_wakes_up_on_an_applications_insert() {
    let roles = Roles::create("roles_mark").await;
    let (owner, app) = (roles.pool(&roles.owner).await, roles.pool(&roles.app).await);
    roles.publish_two(&app, 1).await;
    // A long poll interval: the third row can only come in time through the wakeup.
    let relay = RunningRelay::start(&roles.relay_config(OnDelivered::Mark, 60_000));
    wait_until(Duration::from_secs(60), "2 rows delivered", || async {
        roles.count(&owner, "status = 'delivered'").await == 2
    })
    .await;
    let armed_sql = format!("SELECT armed FROM \"{}\".outbox_wakeup", roles.schema);
    wait_until(
        Duration::from_secs(30),
        "the relay armed the wakeup",
        || async {
            sqlx::query_scalar::<_, bool>(&armed_sql)
                .fetch_one(&owner)
                .await
                .unwrap()
        },
    )
    .await;
    sqlx::query(&format!(
        "INSERT INTO \"{}\".outbox (topic, payload) VALUES ($1, '{{\"n\": 3}}')",
        roles.schema
    ))
    .bind(&roles.topic)
    .execute(&app)
    .await
    .unwrap();
    wait_until(
        Duration::from_secs(20),
        "the third row delivered well before the 60 s poll",
        || async { roles.count(&owner, "status = 'delivered'").await == 3 },
    )
    .await;
    assert_eq!(
        roles
            .count(
                &owner,
                "kafka_offset IS NOT NULL AND delivered_at IS NOT NULL"
            )
            .await,
        3
    );
    relay.stop().await;
    assert_eq!(consume_all(&roles.topic).await.len(), 3);

    // The operators' commands as the relay role.
    let relay_file = roles.config_file("relay", &roles.url(&roles.relay));
    let status = assert_ok(&cli(&relay_file, &["status"]), "status as the relay role");
    assert!(!status.is_empty());
    assert_ok(&cli(&relay_file, &["parked"]), "parked as the relay role");
}

#[tokio::test]
async fn relay_role_deletes_delivered_rows_into_the_log_and_replays_parked_ones() {
    let roles = Roles::create("roles_delete").await;
    let (owner, app) = (roles.pool(&roles.owner).await, roles.pool(&roles.app).await);
    roles.publish_two(&app, 1).await;
    // A parked row (written by the owner), for `replay` as the relay role.
    let parked: i64 = sqlx::query_scalar(&format!(
        "INSERT INTO \"{}\".outbox (topic, payload, status, last_error) \
         VALUES ($1, '{{\"n\": 9}}', 'parked', 'test') RETURNING id",
        roles.schema
    ))
    .bind(&roles.topic)
    .fetch_one(&owner)
    .await
    .unwrap();
    let relay = RunningRelay::start(&roles.relay_config(OnDelivered::Delete, 20));
    let logged = format!("SELECT count(*) FROM \"{}\".outbox_delivered", roles.schema);
    let log_count = || async {
        sqlx::query_scalar::<_, i64>(&logged)
            .fetch_one(&owner)
            .await
            .unwrap()
    };
    wait_until(
        Duration::from_secs(60),
        "2 rows in the delivery log",
        || async { log_count().await == 2 },
    )
    .await;
    let relay_file = roles.config_file("relay", &roles.url(&roles.relay));
    let out = assert_ok(
        &cli(&relay_file, &["replay", "--id", &parked.to_string()]),
        "replay as the relay role",
    );
    assert!(out.contains(&parked.to_string()), "{out}");
    wait_until(
        Duration::from_secs(60),
        "the replayed row delivered",
        || async { log_count().await == 3 },
    )
    .await;
    relay.stop().await;
    assert_eq!(
        roles.count(&owner, "true").await,
        0,
        "delivered rows are deleted"
    );
    assert_eq!(consume_all(&roles.topic).await.len(), 3);
}

#[tokio::test]
async fn relay_role_cannot_drop_the_table_insert_into_it_or_create_in_the_schema() {
    let roles = Roles::create("roles_relay_limits").await;
    let relay = roles.pool(&roles.relay).await;
    let s = &roles.schema;
    let why = refused(
        sqlx::query(&format!("DROP TABLE \"{s}\".outbox"))
            .execute(&relay)
            .await,
    );
    assert!(why.contains("must be owner"), "{why}");
    refused(
        sqlx::query(&format!(
            "INSERT INTO \"{s}\".outbox (topic, payload) VALUES ('t', '{{}}')"
        ))
        .execute(&relay)
        .await,
    );
    refused(
        sqlx::query(&format!("CREATE TABLE \"{s}\".mine (x int)"))
            .execute(&relay)
            .await,
    );
    refused(
        sqlx::query(&format!("SELECT \"{s}\".outbox_publish('t', NULL, '{{}}')"))
            .execute(&relay)
            .await,
    );
    // What it does need works: a claim-shaped read and an update.
    sqlx::query(&format!(
        "SELECT id FROM \"{s}\".outbox WHERE status = 'pending' FOR UPDATE SKIP LOCKED"
    ))
    .execute(&relay)
    .await
    .expect("the relay reads and locks rows");
}

#[tokio::test]
async fn application_role_can_insert_and_publish_but_cannot_select_update_or_delete() {
    let roles = Roles::create("roles_app_limits").await;
    let (owner, app) = (roles.pool(&roles.owner).await, roles.pool(&roles.app).await);
    roles.publish_two(&app, 1).await;
    let batch: Vec<Uuid> = sqlx::query_scalar(&format!(
        "SELECT * FROM \"{}\".outbox_publish_batch($1)",
        roles.schema
    ))
    .bind(serde_json::json!([{ "topic": roles.topic, "payload": {} }]))
    .fetch_all(&app)
    .await
    .expect("the application role publishes a batch");
    assert_eq!(batch.len(), 1);
    assert_eq!(roles.count(&owner, "status = 'pending'").await, 3);
    let s = &roles.schema;
    for sql in [
        format!("SELECT * FROM \"{s}\".outbox"),
        format!("UPDATE \"{s}\".outbox SET attempts = 0"),
        format!("DELETE FROM \"{s}\".outbox"),
        format!("INSERT INTO \"{s}\".outbox (topic, payload) VALUES ('t', '{{}}') RETURNING id"),
        format!("UPDATE \"{s}\".outbox_wakeup SET armed = true"),
        format!("CREATE TABLE \"{s}\".mine (x int)"),
    ] {
        refused(sqlx::query(&sql).execute(&app).await);
    }
    assert_eq!(roles.count(&owner, "true").await, 3, "nothing changed");
}
