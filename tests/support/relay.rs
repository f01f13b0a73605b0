//! Relays under test: in process ([`RunningRelay`], logging through the test harness) or as the
//! binary ([`RelayProcess`], logging to a file that tests read), and signals to stop them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outbox_relay::config::Config;
use outbox_relay::relay::Relay;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::outbox::TestOutbox;
use super::wait::{poll_until, wait_until};

/// An in-process relay running in the background until [`RunningRelay::stop`].
pub struct RunningRelay {
    pub relay: Arc<Relay>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl RunningRelay {
    pub fn start(config: &Config) -> Self {
        init_logs();
        let relay = Arc::new(Relay::new(config).expect("relay builds"));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (relay, stop) = (Arc::clone(&relay), stop.clone());
            async move { relay.run(stop).await.expect("relay stops cleanly") }
        });
        Self { relay, stop, task }
    }

    /// Stops claiming and returns once every batch in flight has ended.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("relay task");
    }
}

/// Runs an in-process relay on `outbox` until `n` rows are delivered, then stops it.
pub async fn relay_until_delivered(outbox: &TestOutbox, n: i64) {
    let relay = RunningRelay::start(&outbox.config());
    outbox.wait_delivered(n, Duration::from_secs(60)).await;
    relay.stop().await;
}

/// Relay logs through the test harness (shown for failing tests): `outbox_relay=info`, or
/// `OUTBOX_TEST_LOG` (e.g. `OUTBOX_TEST_LOG=debug`).
pub fn init_logs() {
    let filter = std::env::var("OUTBOX_TEST_LOG").unwrap_or_else(|_| "outbox_relay=info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

/// The relay binary, started with a config file; stderr goes to `log`.
pub fn spawn_relay_binary(config: &Path, log: &Path) -> Child {
    spawn_with_filter(config, log, "info")
}

/// As [`spawn_relay_binary`], with a `RUST_LOG` filter of the caller's.
pub fn spawn_with_filter(config: &Path, log: &Path, filter: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_outbox-relay"))
        .args(["--config", config.to_str().unwrap(), "run"])
        .env("RUST_LOG", filter)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn outbox-relay")
}

/// Sends SIGTERM / SIGKILL.
pub fn signal(child: &Child, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
}

/// Waits for the child to exit, up to `timeout`; returns its status and how long it took.
pub async fn wait_exit(
    child: &mut Child,
    timeout: Duration,
) -> Option<(std::process::ExitStatus, Duration)> {
    let start = Instant::now();
    let mut status = None;
    let _ = poll_until(timeout, || {
        status = child.try_wait().unwrap();
        std::future::ready(status.is_some())
    })
    .await;
    status.map(|s| (s, start.elapsed()))
}

/// Waits until the log at `path` has a line containing every one of `needles`; returns the
/// log's text.
pub async fn wait_for_log(path: &Path, needles: &[&str], timeout: Duration) -> String {
    let what = format!("a line with {needles:?} in {}", path.display());
    wait_until(timeout, &what, || async {
        log_lines_with(path, needles) > 0
    })
    .await;
    std::fs::read_to_string(path).unwrap_or_default()
}

fn log_lines_with(path: &Path, needles: &[&str]) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

/// A relay binary that is SIGKILLed when dropped (a failing test leaves no relay behind).
pub struct RelayProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl RelayProcess {
    pub fn spawn(config: &Path, log: PathBuf) -> Self {
        Self {
            child: spawn_relay_binary(config, &log),
            log,
        }
    }

    /// Like `spawn`, with one debug line per batch ("batch done", with its counts) in the log.
    pub fn spawn_logging_batches(config: &Path, log: PathBuf) -> Self {
        Self {
            child: spawn_with_filter(config, &log, "info,outbox_relay::relay::batch=debug"),
            log,
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The address its HTTP endpoint listens on (read from its log; waits for the line).
    pub async fn http_address(&self) -> String {
        http_address(&self.log).await
    }

    /// Panics (with the log's tail) if the relay exited by itself.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "relay exited by itself ({status}); log tail:\n{}",
                log_tail(&self.log, 40)
            );
        }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh directory for one test's configs and relay logs, kept after the run (for reading
/// when something failed): /var/tmp/outbox-relay-test-logs/<name>.
pub fn log_dir(name: &str) -> PathBuf {
    let dir = Path::new("/var/tmp/outbox-relay-test-logs").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// How many lines of a log contain `needle`.
pub fn log_count(path: &Path, needle: &str) -> usize {
    log_lines_with(path, &[needle])
}

/// Rows delivered according to a log's "batch done" lines (see `spawn_logging_batches`), and
/// how many such batches there were.
pub fn batches_logged(path: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut rows = 0;
    let mut batches = 0;
    for line in text.lines().filter(|l| l.contains("batch done")) {
        batches += 1;
        let plain: String = strip_ansi(line);
        if let Some(n) = plain
            .split_whitespace()
            .find_map(|w| w.strip_prefix("delivered="))
            .and_then(|n| n.parse::<u64>().ok())
        {
            rows += n;
        }
    }
    (rows, batches)
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The address a relay's HTTP endpoint listens on, from the `HTTP endpoint listening on …` line
/// of its log (waits up to 30 s for it).
pub async fn http_address(log: &Path) -> String {
    let text = wait_for_log(
        log,
        &["HTTP endpoint listening on "],
        Duration::from_secs(30),
    )
    .await;
    let line = text
        .lines()
        .find(|l| l.contains("HTTP endpoint listening on "))
        .unwrap();
    let rest = line.split("HTTP endpoint listening on ").nth(1).unwrap();
    rest.split(':').take(2).collect::<Vec<_>>().join(":")
}

/// GET `http://{address}{path}`: the status code and the body.
pub async fn http_get(address: &str, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{address}{path}"))
        .await
        .unwrap_or_else(|e| panic!("GET {path} on {address}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// A Prometheus text scrape as `name{labels}` → value (labels as written, in order).
pub fn parse_scrape(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}
