//! Running it for months: `/metrics` scraped during a run and checked against the table, the
//! held-keys gauge and `status` exiting 1 on a held key, `/healthz` and `/readyz`, and the
//! Grafana dashboard and Prometheus alerts referring only to metrics the relay exports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use outbox_relay::metrics::METRICS;

use crate::harness::{
    create_topic, create_topic_with, http_get, kafka_bootstrap, log_dir, parse_scrape, wait_until,
    RelayProcess, TestOutbox,
};

fn big_payload(bytes: usize) -> serde_json::Value {
    let mut s = String::with_capacity(bytes);
    while s.len() < bytes {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    serde_json::json!({ "blob": s })
}

/// The sum of the series of `name` whose labels include every one of `labels`.
fn value(scrape: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .iter()
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series.as_str(), ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v)
        .sum()
}

async fn scrape(address: &str) -> (String, BTreeMap<String, f64>) {
    let (status, text) = http_get(address, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    let parsed = parse_scrape(&text);
    (text, parsed)
}

/// Per topic: (delivered, parked, sum of attempts) in the table.
async fn table_counts(outbox: &TestOutbox) -> BTreeMap<String, (i64, i64, i64)> {
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT topic, count(*) FILTER (WHERE status = 'delivered'), \
                count(*) FILTER (WHERE status = 'parked'), coalesce(sum(attempts), 0)::bigint \
         FROM {} GROUP BY topic",
        outbox.table()
    ))
    .fetch_all(&outbox.pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(t, d, p, a)| (t, (d, p, a)))
        .collect()
}

/// A run with deliveries, a poison row copied to a dead-letter topic and holding its key, and
/// a row that is retried once and then parked. Returns the relay and its endpoint's address.
struct Scenario {
    outbox: TestOutbox,
    relay: RelayProcess,
    address: String,
    config: std::path::PathBuf,
    small: String,
    late: String,
}

async fn scenario(name: &str) -> Scenario {
    let outbox = TestOutbox::new(3).await;
    let small = format!("{}-small", outbox.topic);
    let dlt = format!("{}-dlt", outbox.topic);
    let late = format!("{}-late", outbox.topic);
    create_topic_with(
        &kafka_bootstrap(),
        &small,
        1,
        &[("max.message.bytes", "2000")],
    )
    .await;
    create_topic(&dlt, 1).await;
    let dir = log_dir(name);
    let config = outbox.config_file_in(
        &dir,
        "relay",
        &kafka_bootstrap(),
        &format!(
            "[topics.{small:?}]\ndead_letter_topic = {dlt:?}\n\n\
             [topics.{late:?}]\nretry_base_ms = 100\nretry_cap_ms = 200\nmax_attempts = 2\n"
        ),
    );
    outbox.set_delivery_timeout(&config, 1_500);
    outbox.insert_rows(40, 7).await;
    // Kafka refuses it (the topic takes 2,000 bytes per batch): parked, holding key k.
    let poison = outbox.insert(&small, Some("k"), big_payload(6_000)).await;
    outbox
        .insert(&small, Some("k"), serde_json::json!({"behind": true}))
        .await;
    // Its topic does not exist: a transient failure, retried once, then parked.
    let lost = outbox
        .insert(&late, None, serde_json::json!({"late": true}))
        .await;
    let relay = RelayProcess::spawn(&config, dir.join("relay.log"));
    let address = relay.http_address().await;
    outbox
        .wait_status(poison, "parked", Duration::from_secs(60))
        .await;
    outbox
        .wait_status(lost, "parked", Duration::from_secs(60))
        .await;
    outbox.wait_delivered(40, Duration::from_secs(60)).await;
    // Claimed after everything above reached its state.
    outbox.deliver_raw_sentinel().await;
    Scenario {
        outbox,
        relay,
        address,
        config,
        small,
        late,
    }
}

fn status_command(config: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_outbox-relay"))
        .args(["--config", config.to_str().unwrap(), "status"])
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_counters_match_the_table_and_a_held_key_shows_in_the_gauges_and_fails_status() {
    let mut s = scenario("ops_metrics_vs_table").await;

    // The table gauges come from the stats leader, refreshed every second here: wait for a
    // refresh after the sentinel's delivery.
    let last = std::cell::RefCell::new(BTreeMap::new());
    wait_until(
        Duration::from_secs(30),
        "the table gauges of the final state",
        || async {
            let m = scrape(&s.address).await.1;
            let done = value(&m, "outbox_relay_held_keys", &[]) == 1.0
                && value(&m, "outbox_relay_rows", &[("status", "parked")]) == 2.0
                && value(&m, "outbox_relay_rows", &[("status", "pending")]) == 1.0;
            *last.borrow_mut() = m;
            done
        },
    )
    .await;
    let m = last.into_inner();
    let table = table_counts(&s.outbox).await;
    println!("table (delivered, parked, attempts) by topic: {table:?}");
    for (topic, &(delivered, parked, attempts)) in &table {
        let t = [("topic", topic.as_str())];
        assert_eq!(
            value(&m, "outbox_relay_rows_delivered_total", &t),
            delivered as f64,
            "delivered rows of {topic}"
        );
        assert_eq!(
            value(&m, "outbox_relay_rows_parked_total", &t),
            parked as f64,
            "parked rows of {topic}"
        );
        // Every reschedule and every park counts one attempt.
        assert_eq!(
            value(&m, "outbox_relay_rows_retried_total", &t),
            (attempts - parked) as f64,
            "retries of {topic}"
        );
    }
    assert_eq!(table[&s.outbox.topic].0, 41, "40 rows and the sentinel");
    assert_eq!(
        value(
            &m,
            "outbox_relay_rows_parked_total",
            &[("topic", &s.small), ("reason", "kafka")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "outbox_relay_rows_parked_total",
            &[("topic", &s.late), ("reason", "retries_exhausted")]
        ),
        1.0
    );
    assert_eq!(
        value(&m, "outbox_relay_rows_retried_total", &[("topic", &s.late)]),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "outbox_relay_rows_dead_lettered_total",
            &[("topic", &s.small)]
        ),
        1.0
    );
    assert_eq!(value(&m, "outbox_relay_rows_behind_held_keys", &[]), 1.0);
    assert_eq!(
        value(&m, "outbox_relay_rows", &[("status", "pending")]),
        1.0
    );
    assert_eq!(
        value(&m, "outbox_relay_oldest_due_pending_age_seconds", &[]),
        0.0,
        "the only pending row is held, not claimable"
    );
    assert_eq!(value(&m, "outbox_relay_ready", &[]), 1.0);
    assert_eq!(
        value(&m, "outbox_relay_workers_running", &[]),
        1.0,
        "the pipeline"
    );
    assert!(value(&m, "outbox_relay_commit_to_ack_seconds_count", &[]) >= 41.0);

    let (health, body) = http_get(&s.address, "/healthz").await;
    assert_eq!(health, 200, "{body}");
    let (ready, body) = http_get(&s.address, "/readyz").await;
    assert_eq!(ready, 200, "{body}");

    let held = status_command(&s.config, &["--max-held-keys", "0"]);
    let out = String::from_utf8_lossy(&held.stdout);
    println!("{out}");
    assert_eq!(
        held.status.code(),
        Some(1),
        "{out}{}",
        String::from_utf8_lossy(&held.stderr)
    );
    assert!(
        out.contains("held keys: 1 (1 pending row(s) waiting behind them)"),
        "{out}"
    );
    assert!(
        String::from_utf8_lossy(&held.stderr).contains("1 held key(s) exceed --max-held-keys 0")
    );
    let json = status_command(&s.config, &["--json"]);
    assert_eq!(json.status.code(), Some(0), "no threshold given");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        (
            v["held_keys"].as_i64(),
            v["parked"].as_i64(),
            v["pending"].as_i64()
        ),
        (Some(1), Some(2), Some(1))
    );
    let small = v["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == s.small.as_str())
        .expect("a line for the small topic");
    assert_eq!(
        (small["parked"].as_i64(), small["held_back"].as_i64()),
        (Some(1), Some(1))
    );
    let main = v["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == s.outbox.topic.as_str())
        .unwrap();
    assert!(main["last_delivered_at"].is_string(), "{main}");
    s.relay.assert_running();
}

/// Metric names in PromQL text: identifiers starting with the relay's prefix.
fn referenced(expr: &str, into: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(at) = rest.find("outbox_relay_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        into.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
}

fn dashboard_exprs(v: &serde_json::Value, into: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(e)) => {
                        referenced(e, into)
                    }
                    _ => dashboard_exprs(v, into),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| dashboard_exprs(i, into)),
        _ => {}
    }
}

fn alert_exprs(y: &yaml_rust2::Yaml, into: &mut BTreeSet<String>) {
    use yaml_rust2::Yaml;
    match y {
        Yaml::Hash(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    (Some("expr"), Yaml::String(e)) => referenced(e, into),
                    _ => alert_exprs(v, into),
                }
            }
        }
        Yaml::Array(items) => items.iter().for_each(|i| alert_exprs(i, into)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alerts_use_is_one_the_running_relay_exports() {
    let s = scenario("ops_dashboard_names").await;
    let (text, _) = scrape(&s.address).await;
    // Names as the exporter declares them (`# TYPE name kind`); a histogram's series are
    // name_bucket, name_sum and name_count.
    let mut exported = BTreeSet::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let mut parts = line.split_whitespace();
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        exported.insert(name.to_owned());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                exported.insert(format!("{name}{suffix}"));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/outbox-relay.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut in_dashboard = BTreeSet::new();
    dashboard_exprs(&dashboard, &mut in_dashboard);
    let alerts = yaml_rust2::YamlLoader::load_from_str(
        &std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).unwrap(),
    )
    .expect("the alert rules are YAML");
    let mut in_alerts = BTreeSet::new();
    alerts
        .iter()
        .for_each(|doc| alert_exprs(doc, &mut in_alerts));
    println!("dashboard uses {in_dashboard:?}\nalerts use {in_alerts:?}");
    assert!(in_dashboard.len() >= 15, "{in_dashboard:?}");
    assert!(in_alerts.len() >= 6, "{in_alerts:?}");

    // A counter with labels appears with its first increment: this run has none of these.
    let first_event_only = ["outbox_relay_out_of_order_total"];
    let known: BTreeSet<&str> = METRICS.iter().map(|m| m.0).collect();
    for name in in_dashboard.iter().chain(&in_alerts) {
        if first_event_only.contains(&name.as_str()) {
            assert!(
                known.contains(name.as_str()),
                "{name} is not a relay metric"
            );
            continue;
        }
        assert!(
            exported.contains(name),
            "{name} is used by the dashboard or the alerts but the relay does not export it; \
             exported: {exported:?}"
        );
    }
    // And every metric the relay has is on the dashboard.
    for &(name, kind, _, _) in METRICS {
        let shown = if kind == "histogram" {
            in_dashboard.iter().any(|n| n.starts_with(name))
        } else {
            in_dashboard.contains(name)
        };
        assert!(shown, "{name} is missing from the dashboard");
    }
}
