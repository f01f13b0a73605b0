//! Refusals the relay can foresee: a topic's configuration (described through the admin API and
//! cached) says what its broker will refuse, so a row that breaks it is parked before it is
//! produced, with a reason naming the limit and the value, and without dragging the other records
//! of its produce batch down with it.
//!
//! Foreseen: a `created_at` outside the topic's timestamp window (CreateTime topics), a row
//! without a key on a compacted topic. Not foreseen: the size of a record, see README
//! ("Refused before producing"). Whatever is not foreseen is still isolated by the batch's
//! one-at-a-time resend.
//!
//! A topic's limits are cached for [`GOOD_FOR`]; a topic that cannot be described (unknown yet,
//! no permission, Kafka away) is produced without prechecks for [`UNKNOWN_FOR`] before the next
//! try. A describe waits at most `kafka.metadata_timeout_ms`, and only the row that asked waits:
//! meanwhile the other batches use what the cache held (nothing, for a topic never described).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::{debug, info, warn};

use super::context::RateLimiter;
use crate::config::KafkaConfig;
use crate::outbox::ClaimedRow;

/// How long a topic's described limits are trusted.
const GOOD_FOR: Duration = Duration::from_secs(60);
/// How long a topic that could not be described goes without prechecks before the next try.
const UNKNOWN_FOR: Duration = Duration::from_secs(10);
/// In the row's favour, for clock skew between relay and broker.
const CLOCK_SKEW_MARGIN_MS: i64 = 5_000;

const TIMESTAMP_TYPE: &str = "message.timestamp.type";
const AFTER_MAX: &str = "message.timestamp.after.max.ms";
const BEFORE_MAX: &str = "message.timestamp.before.max.ms";
/// Before Kafka 3.6 the one window, both ways; removed in Kafka 4.0.
const DIFFERENCE_MAX: &str = "message.timestamp.difference.max.ms";
const CLEANUP_POLICY: &str = "cleanup.policy";
const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";

/// A describe that listed no configs: the topic does not exist (yet).
const NO_CONFIGS: &str = "the broker listed no configs for the topic (unknown topic?)";

/// One limit of a topic: its config name and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limit {
    pub(crate) name: &'static str,
    pub(crate) value: i64,
}

/// What a topic's configuration lets the relay foresee.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    /// How far a record's timestamp may lie ahead of the broker's clock (CreateTime topics).
    pub(crate) after: Option<Limit>,
    /// How far it may lie behind.
    pub(crate) before: Option<Limit>,
    /// `cleanup.policy`, when it compacts (the topic refuses records without a key).
    pub(crate) compacting_policy: Option<String>,
    /// `min.insync.replicas`: fewer in-sync replicas and the topic refuses `acks=all` records
    /// (not a precheck: how the relay tells a degraded cluster, see `produce::replicas`).
    pub(crate) min_insync_replicas: Option<i32>,
}

impl Limits {
    /// A topic's limits from its config entries (name, value), as `describe_configs` lists them.
    ///
    /// The timestamp window holds only for `message.timestamp.type = CreateTime` (the default);
    /// each side is `message.timestamp.{after,before}.max.ms`, or, when that is absent or left
    /// at its "no limit" default (`i64::MAX`, Kafka 3.6–3.9), `message.timestamp.difference.max.ms`
    /// (the broker does the same). A value that does not parse, or `i64::MAX`, is no limit.
    pub(crate) fn from_entries<'a>(
        entries: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Self {
        let mut log_append_time = false;
        let (mut after, mut before, mut difference) = (None, None, None);
        let mut compacting_policy = None;
        let mut min_insync_replicas = None;
        let ms = |v: Option<&str>| v.and_then(|v| v.trim().parse::<i64>().ok());
        for (name, value) in entries {
            match name {
                TIMESTAMP_TYPE => {
                    log_append_time = value.is_some_and(|v| v.trim() == "LogAppendTime");
                }
                AFTER_MAX => after = ms(value),
                BEFORE_MAX => before = ms(value),
                DIFFERENCE_MAX => difference = ms(value),
                CLEANUP_POLICY => {
                    compacting_policy = value
                        .filter(|v| v.split(',').any(|p| p.trim() == "compact"))
                        .map(str::to_owned);
                }
                MIN_INSYNC_REPLICAS => {
                    min_insync_replicas = value.and_then(|v| v.trim().parse::<i32>().ok());
                }
                _ => {}
            }
        }
        let side = |own: Option<i64>, own_name: &'static str| {
            if log_append_time {
                return None;
            }
            let limit = match own {
                Some(v) if v != i64::MAX => Limit {
                    name: own_name,
                    value: v,
                },
                _ => Limit {
                    name: DIFFERENCE_MAX,
                    value: difference?,
                },
            };
            (limit.value != i64::MAX && limit.value >= 0).then_some(limit)
        };
        Self {
            after: side(after, AFTER_MAX),
            before: side(before, BEFORE_MAX),
            compacting_policy,
            min_insync_replicas,
        }
    }
}

/// Why `topic` will refuse a record with this timestamp and key, or None.
fn refusal(
    topic: &str,
    limits: &Limits,
    created_at_ms: i64,
    has_key: bool,
    now_ms: i64,
) -> Option<String> {
    if let (Some(policy), false) = (&limits.compacting_policy, has_key) {
        return Some(format!(
            "refused before producing: the row has no key and topic {topic:?} has \
             {CLEANUP_POLICY} = {policy}, which refuses records without a key"
        ));
    }
    let ahead = created_at_ms.saturating_sub(now_ms);
    let (distance, way, limit) = if ahead > 0 {
        (ahead, "ahead of", limits.after?)
    } else {
        (ahead.saturating_neg(), "behind", limits.before?)
    };
    if distance <= limit.value.saturating_add(CLOCK_SKEW_MARGIN_MS) {
        return None;
    }
    let created_at = DateTime::<Utc>::from_timestamp_millis(created_at_ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| format!("{created_at_ms} ms"));
    Some(format!(
        "refused before producing: created_at {created_at} is {distance} ms {way} now; topic \
         {topic:?} allows {} = {}",
        limit.name, limit.value
    ))
}

/// A topic's cached answer: its limits (None: unknown, no precheck), good until `until`.
struct Cached {
    limits: Option<Limits>,
    until: Instant,
    /// A describe failure was said at WARN and the topic has not been described since.
    failing: bool,
}

/// The topics' limits, described through an admin client built from the producer's librdkafka
/// settings (so the same security properties apply), and cached per topic.
pub struct TopicLimits {
    /// None when `kafka.check_topic_limits` is off.
    inner: Option<Inner>,
}

struct Inner {
    admin: AdminClient<AdminContext>,
    timeout: Duration,
    cache: RwLock<HashMap<String, Cached>>,
}

impl TopicLimits {
    /// Contacts nothing yet; a topic is described when its first row comes.
    pub fn new(kafka: &KafkaConfig) -> Result<Self, KafkaError> {
        if !kafka.check_topic_limits {
            return Ok(Self { inner: None });
        }
        let mut config = super::client_config(kafka);
        // This handle never produces: no producer id for it.
        config.set("enable.idempotence", "false");
        Ok(Self {
            inner: Some(Inner {
                admin: config.create_with_context(AdminContext::default())?,
                timeout: Duration::from_millis(kafka.metadata_timeout_ms),
                cache: RwLock::default(),
            }),
        })
    }

    /// Why `row`'s topic will refuse its record, foreseen: the reason to park it with, or None
    /// (also when the topic's limits are unknown). On a cache hit: one read lock, no allocation
    /// unless the row is refused.
    pub async fn refusal_for(&self, row: &ClaimedRow) -> Option<String> {
        let inner = self.inner.as_ref()?;
        let (created_at, has_key) = (row.created_at.timestamp_millis(), row.key.is_some());
        {
            let cache = inner.cache.read().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = cache.get(row.topic.as_str()) {
                if c.until > Instant::now() {
                    let limits = c.limits.as_ref()?;
                    return refusal(&row.topic, limits, created_at, has_key, now_ms());
                }
            }
        }
        let limits = inner.refresh(&row.topic).await?;
        refusal(&row.topic, &limits, created_at, has_key, now_ms())
    }

    /// `topic`'s `min.insync.replicas`, from its described configs (cached like its limits);
    /// None when unknown (the prechecks are off, or the topic cannot be described).
    pub async fn min_insync_replicas(&self, topic: &str) -> Option<i32> {
        let inner = self.inner.as_ref()?;
        {
            let cache = inner.cache.read().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = cache.get(topic).filter(|c| c.until > Instant::now()) {
                return c.limits.as_ref()?.min_insync_replicas;
            }
        }
        inner.refresh(topic).await?.min_insync_replicas
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl Inner {
    /// Describes `topic` unless another caller is doing it (then: what the cache holds).
    async fn refresh(&self, topic: &str) -> Option<Limits> {
        {
            let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let c = cache.entry(topic.to_owned()).or_insert(Cached {
                limits: None,
                until: now,
                failing: false,
            });
            if c.until > now {
                return c.limits.clone();
            }
            // A lease: while this describe runs, the others use the old answer. If this caller
            // is dropped midway, the lease runs out and the next one describes.
            c.until = now + self.timeout + Duration::from_secs(1);
        }
        let described = self.describe(topic).await;
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        let c = cache.get_mut(topic)?;
        let now = Instant::now();
        match described {
            Ok(limits) => {
                if c.failing {
                    info!(%topic, "the topic's configs can be described again; its rows are \
                        checked against its limits before producing");
                }
                debug!(%topic, ?limits, "topic limits described");
                *c = Cached {
                    limits: Some(limits),
                    until: now + GOOD_FOR,
                    failing: false,
                };
            }
            Err(why) => {
                if c.failing || why == NO_CONFIGS {
                    debug!(%topic, error = %why, "topic configs not described");
                } else {
                    warn!(%topic, error = %why, retry_in = ?UNKNOWN_FOR,
                        "cannot describe the topic's configs: its rows are produced without \
                         prechecks meanwhile (a refusal by Kafka still parks only the culprit)");
                }
                *c = Cached {
                    limits: None,
                    until: now + UNKNOWN_FOR,
                    failing: c.failing || why != NO_CONFIGS,
                };
            }
        }
        c.limits.clone()
    }

    async fn describe(&self, topic: &str) -> Result<Limits, String> {
        let options = AdminOptions::new().request_timeout(Some(self.timeout));
        let resource = ResourceSpecifier::Topic(topic);
        let described = tokio::time::timeout(
            self.timeout + Duration::from_secs(1),
            self.admin.describe_configs([&resource], &options),
        )
        .await
        .map_err(|_| format!("no answer within {:?}", self.timeout))?
        .map_err(|e| e.to_string())?;
        match described.into_iter().next() {
            // rdkafka does not surface the resource's own error code: an unknown topic comes
            // back as a resource without entries.
            Some(Ok(config)) if config.entries.is_empty() => Err(NO_CONFIGS.into()),
            Some(Ok(config)) => Ok(Limits::from_entries(
                config
                    .entries
                    .iter()
                    .map(|e| (e.name.as_str(), e.value.as_deref())),
            )),
            Some(Err(code)) => Err(format!("{code:?} ({code})")),
            None => Err("an empty answer".into()),
        }
    }
}

/// The admin client's librdkafka lines, rate limited like the producer's. Its global errors are
/// at DEBUG: the producer's context already speaks for the cluster.
#[derive(Default)]
struct AdminContext {
    limiter: RateLimiter,
}

impl ClientContext for AdminContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let Some(suppressed) = self.limiter.admit(&format!("log:{fac}"), Instant::now()) else {
            return;
        };
        match level {
            RDKafkaLogLevel::Debug => {
                debug!(target: "librdkafka", facility = fac, suppressed, "{log_message}")
            }
            RDKafkaLogLevel::Info | RDKafkaLogLevel::Notice => {
                info!(target: "librdkafka", facility = fac, suppressed, "{log_message}")
            }
            _ => warn!(target: "librdkafka", facility = fac, suppressed, "{log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code: Option<RDKafkaErrorCode> = error.rdkafka_error_code();
        debug!(target: "librdkafka", error = %error, ?code, "admin client: {reason}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(entries: &[(&str, &str)]) -> Limits {
        Limits::from_entries(entries.iter().map(|(k, v)| (*k, Some(*v))))
    }

    fn limit(name: &'static str, value: i64) -> Option<Limit> {
        Some(Limit { name, value })
    }

    #[test]
    fn config_entries_become_limits() {
        let max = i64::MAX.to_string();
        let cases: &[(&[(&str, &str)], Limits)] = &[
            // Kafka 4: after/before only.
            (
                &[
                    (TIMESTAMP_TYPE, "CreateTime"),
                    (AFTER_MAX, "3600000"),
                    (BEFORE_MAX, &max),
                    (CLEANUP_POLICY, "delete"),
                ],
                Limits {
                    after: limit(AFTER_MAX, 3_600_000),
                    ..Limits::default()
                },
            ),
            // Kafka 3.6–3.9: the new ones at their default fall back to difference.
            (
                &[
                    (AFTER_MAX, &max),
                    (BEFORE_MAX, "86400000"),
                    (DIFFERENCE_MAX, "600000"),
                ],
                Limits {
                    after: limit(DIFFERENCE_MAX, 600_000),
                    before: limit(BEFORE_MAX, 86_400_000),
                    ..Limits::default()
                },
            ),
            // Before 3.6: difference only, both ways.
            (
                &[(DIFFERENCE_MAX, "1000")],
                Limits {
                    after: limit(DIFFERENCE_MAX, 1000),
                    before: limit(DIFFERENCE_MAX, 1000),
                    ..Limits::default()
                },
            ),
            // LogAppendTime: the broker sets the timestamp, no window.
            (
                &[
                    (TIMESTAMP_TYPE, "LogAppendTime"),
                    (AFTER_MAX, "1000"),
                    (BEFORE_MAX, "1000"),
                ],
                Limits::default(),
            ),
            // Unparsable values are no limit.
            (&[(AFTER_MAX, "soon"), (BEFORE_MAX, "")], Limits::default()),
            (
                &[(CLEANUP_POLICY, "compact")],
                Limits {
                    compacting_policy: Some("compact".into()),
                    ..Limits::default()
                },
            ),
            (
                &[(CLEANUP_POLICY, "delete, compact")],
                Limits {
                    compacting_policy: Some("delete, compact".into()),
                    ..Limits::default()
                },
            ),
            (&[(CLEANUP_POLICY, "delete")], Limits::default()),
            (
                &[(MIN_INSYNC_REPLICAS, "2")],
                Limits {
                    min_insync_replicas: Some(2),
                    ..Limits::default()
                },
            ),
            (&[(MIN_INSYNC_REPLICAS, "two")], Limits::default()),
            (&[], Limits::default()),
        ];
        for (entries, want) in cases {
            assert_eq!(&limits(entries), want, "{entries:?}");
        }
    }

    #[test]
    fn an_entry_without_a_value_is_no_limit() {
        let l = Limits::from_entries([(AFTER_MAX, None), (CLEANUP_POLICY, None)]);
        assert_eq!(l, Limits::default());
    }

    #[test]
    fn refusals_name_the_topic_the_limit_and_the_value() {
        let now = DateTime::parse_from_rfc3339("2026-12-02T00:00:00Z")
            .unwrap()
            .timestamp_millis();
        let l = Limits {
            after: limit(AFTER_MAX, 3_600_000),
            before: limit(BEFORE_MAX, 86_400_000),
            ..Limits::default()
        };
        let compact = Limits {
            compacting_policy: Some("compact,delete".into()),
            ..Limits::default()
        };
        let hour = 3_600_000;
        let cases: &[(&Limits, i64, bool, Option<&str>)] = &[
            (&l, now, true, None),
            (&l, now + hour, true, None),
            // The margin is in the row's favour.
            (&l, now + hour + 5_000, true, None),
            (
                &l,
                now + hour + 5_001,
                true,
                Some(
                    "refused before producing: created_at 2026-12-02T01:00:05.001Z is 3605001 ms \
                     ahead of now; topic \"orders\" allows message.timestamp.after.max.ms = 3600000",
                ),
            ),
            (
                &l,
                now + 30 * 24 * hour,
                false,
                Some(
                    "refused before producing: created_at 2027-01-01T00:00:00Z is 2592000000 ms \
                     ahead of now; topic \"orders\" allows message.timestamp.after.max.ms = 3600000",
                ),
            ),
            (&l, now - 24 * hour - 5_000, true, None),
            (
                &l,
                now - 48 * hour,
                true,
                Some(
                    "refused before producing: created_at 2026-11-30T00:00:00Z is 172800000 ms \
                     behind now; topic \"orders\" allows message.timestamp.before.max.ms = 86400000",
                ),
            ),
            // No window: anything goes.
            (&compact, now + 1000 * 24 * hour, true, None),
            (
                &compact,
                now,
                false,
                Some(
                    "refused before producing: the row has no key and topic \"orders\" has \
                     cleanup.policy = compact,delete, which refuses records without a key",
                ),
            ),
            (&Limits::default(), now, false, None),
            (&l, i64::MAX, true, Some("")),
        ];
        for &(limits, created_at, has_key, want) in cases {
            let got = refusal("orders", limits, created_at, has_key, now);
            match (want, &got) {
                (Some(""), Some(_)) => {} // refused; the text does not matter here
                _ => assert_eq!(
                    got.as_deref(),
                    want,
                    "created_at {created_at}, key {has_key}"
                ),
            }
        }
    }
}
