//! Kafka unreachable at start-up: the relay waits, says so, and delivers once it is up.

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{
    consume_all, kafka_bootstrap, log_count, signal, spawn_with_filter, wait_exit, wait_for_log,
    wait_until, TestOutbox,
};

/// Forwards every connection on `listener` to the real broker.
async fn proxy(listener: TcpListener) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(kafka_bootstrap()).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[tokio::test]
async fn kafka_unreachable_at_startup_is_retried_and_rows_are_delivered_once_it_is_up() {
    let outbox = TestOutbox::new(1).await;
    outbox.insert_rows(100, 10).await;
    // A port with nothing behind it yet: the relay's only bootstrap address.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let bootstrap = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let config = outbox.config_file(
        &dir,
        &bootstrap,
        "[kafka.properties]\n\"reconnect.backoff.max.ms\" = 500\n",
    );
    let log = dir.path().join("relay.log");
    // Debug for the relay's loop: after the first, failed probes are logged at debug level.
    let mut relay = spawn_with_filter(&config, &log, "info,outbox_relay::relay=debug");

    let text = wait_for_log(&log, &["Kafka not reachable"], Duration::from_secs(30)).await;
    assert!(
        text.contains(&bootstrap),
        "the log line names the address:\n{text}"
    );
    // A second probe: the relay had another turn after the first failure, and still claimed
    // nothing (a claim leaves its trace on the rows, see `claimed_count`).
    wait_until(Duration::from_secs(30), "a second failed probe", || async {
        log_count(&log, "Kafka still not reachable") >= 1
    })
    .await;
    assert_eq!(
        outbox.claimed_count().await,
        0,
        "rows were claimed while Kafka was down"
    );
    assert_eq!(outbox.count("delivered").await, 0);
    assert_eq!(
        outbox.total_attempts().await,
        0,
        "the outage burned attempts"
    );

    // Kafka "comes up" at the bootstrap address.
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let proxy = tokio::spawn(proxy(listener));
    outbox.wait_delivered(100, Duration::from_secs(60)).await;
    signal(&relay, Signal::SIGTERM);
    let (status, _) = wait_exit(&mut relay, Duration::from_secs(30))
        .await
        .expect("relay exits");
    proxy.abort();
    assert!(status.success());
    assert_eq!(consume_all(&outbox.topic).await.len(), 100);
    assert_eq!(
        outbox.total_attempts().await,
        0,
        "the outage burned attempts"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("Kafka answers again"), "{text}");
}
