//! The benchmark harness runs end to end on a tiny workload and its order check is clean.
//! A correctness check of the harness, not a timed assertion.

use std::process::Command;

use crate::harness::{database_url, kafka_bootstrap};

#[tokio::test]
async fn bench_harness_drains_a_small_backlog_with_a_clean_order_check() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("drain.json");
    let out = tokio::task::spawn_blocking({
        let json = json.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_outbox-bench"))
                .args(["--relay-bin", env!("CARGO_BIN_EXE_outbox-relay")])
                .args([
                    "--database-url",
                    &database_url(),
                    "--bootstrap",
                    &kafka_bootstrap(),
                ])
                .args(["--no-ceilings", "--partitions", "3", "--json"])
                .arg(&json)
                .args(["drain", "--rows", "500"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "outbox-bench failed:\n{text}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let drain = &doc["results"][0];
    assert_eq!(drain["scenario"], "drain", "{doc:#}");
    assert_eq!(drain["details"]["delivered"], 500, "{doc:#}");
    let order = &drain["order_check"];
    assert_eq!(
        (order["lost"].as_u64(), order["reordered"].as_u64()),
        (Some(0), Some(0)),
        "{doc:#}"
    );
    assert!(order["records"].as_u64().unwrap() >= 500, "{doc:#}");
    assert_eq!(doc["order_check_clean"], true);
    assert!(text.contains("drain order check"), "{text}");
}
