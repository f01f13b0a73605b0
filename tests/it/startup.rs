//! Kafka unreachable at start-up: the relay waits, says so, and delivers once it is up.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{
    consume_all, kafka_bootstrap, signal, spawn_relay_binary, wait_exit, TestOutbox,
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
    let mut relay = spawn_relay_binary(&config, &log);

    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("Kafka not reachable") {
            assert!(
                text.contains(&bootstrap),
                "the log line names the address:\n{text}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no clear log line:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        outbox.count("delivered").await,
        0,
        "a row was marked while Kafka was down"
    );
    let attempts: i64 = sqlx::query_scalar(&format!(
        "SELECT coalesce(sum(attempts), 0) FROM {}",
        outbox.table()
    ))
    .fetch_one(&outbox.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 0, "the outage burned attempts");

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
    assert_eq!(consume_all(&outbox.topic).len(), 100);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("Kafka answers again"), "{text}");
}
