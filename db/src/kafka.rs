//! Kafka client configuration: typed settings from the environment
//! (`KAFKA_*`, `TOPIC_*`), clients with the delivery guarantees the outbox
//! and inbox rely on (idempotent `acks=all` producer; consumer whose offsets
//! are stored by hand after the database commit), and topic creation.
//!
//! Any librdkafka property can be overridden with comma-separated `key=value`
//! lists: `{PREFIX}KAFKA_PROPERTIES` (all clients),
//! `{PREFIX}KAFKA_PRODUCER_PROPERTIES` and `{PREFIX}KAFKA_CONSUMER_PROPERTIES`.

use crate::inbox::ownership::{Ownership, wait_blocking};
use rdkafka::ClientConfig;
use rdkafka::TopicPartitionList;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use shop_runtime::{ConfigError, Env};
use std::sync::Arc;
use std::time::Duration;

/// Topic names and their layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// `{PREFIX}TOPIC_REQUESTS`: orders → payments, keyed by user id.
    pub requests: String,
    /// `{PREFIX}TOPIC_RESULTS`: payments → orders, keyed by order id.
    pub results: String,
    /// `{PREFIX}TOPIC_PARTITIONS`: partitions of topics created at start.
    pub partitions: i32,
    /// `{PREFIX}TOPIC_REPLICATION_FACTOR`: replicas of topics created at start.
    pub replication_factor: i32,
}

/// Default name of the orders → payments topic (`PaymentRequested`, keyed by user id).
pub const DEFAULT_REQUESTS_TOPIC: &str = "payments.requests";
/// Default name of the payments → orders topic (`PaymentCompleted`, keyed by order id).
pub const DEFAULT_RESULTS_TOPIC: &str = "payments.results";

/// How to reach the brokers and tune the clients.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `{PREFIX}KAFKA_BROKERS`: bootstrap servers.
    pub brokers: String,
    /// Overrides for every client.
    pub common: Vec<(String, String)>,
    /// Overrides for producers only.
    pub producer: Vec<(String, String)>,
    /// Overrides for consumers only.
    pub consumer: Vec<(String, String)>,
    /// Topic names and layout.
    pub topics: Topics,
    /// `{PREFIX}KAFKA_SESSION_TIMEOUT_MS` (default 6 s): a member that stops
    /// heartbeating this long (killed, frozen, cut off) loses its partitions.
    pub session_timeout: Duration,
    /// `{PREFIX}KAFKA_GROUP_INSTANCE_ID`: static membership, one id per
    /// replica (unset: dynamic membership).
    pub group_instance_id: Option<String>,
}

impl KafkaConfig {
    /// Reads the `KAFKA_*` and `TOPIC_*` variables under the env's prefix.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let props = |name: &str| match env.raw(name) {
            None => Ok(Vec::new()),
            Some(raw) => parse_properties(raw).map_err(|reason| env.invalid(name, raw, &reason)),
        };
        let partitions: i32 = env.parse_or("TOPIC_PARTITIONS", 3)?;
        let replication_factor: i32 = env.parse_or("TOPIC_REPLICATION_FACTOR", 1)?;
        if partitions < 1 {
            return Err(env.invalid(
                "TOPIC_PARTITIONS",
                &partitions.to_string(),
                "must be at least 1",
            ));
        }
        if replication_factor < 1 {
            return Err(env.invalid(
                "TOPIC_REPLICATION_FACTOR",
                &replication_factor.to_string(),
                "must be at least 1",
            ));
        }
        Ok(Self {
            brokers: env.string_or("KAFKA_BROKERS", "127.0.0.1:9092"),
            common: props("KAFKA_PROPERTIES")?,
            producer: props("KAFKA_PRODUCER_PROPERTIES")?,
            consumer: props("KAFKA_CONSUMER_PROPERTIES")?,
            session_timeout: env.millis_or("KAFKA_SESSION_TIMEOUT_MS", Duration::from_secs(6))?,
            group_instance_id: env
                .raw("KAFKA_GROUP_INSTANCE_ID")
                .filter(|id| !id.is_empty())
                .map(str::to_owned),
            topics: Topics {
                requests: env.string_or("TOPIC_REQUESTS", DEFAULT_REQUESTS_TOPIC),
                results: env.string_or("TOPIC_RESULTS", DEFAULT_RESULTS_TOPIC),
                partitions,
                replication_factor,
            },
        })
    }

    fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.common {
            config.set(k, v);
        }
        config
    }

    /// An idempotent producer that waits for all in-sync replicas.
    pub fn producer(&self) -> Result<FutureProducer, KafkaError> {
        let mut config = self.base();
        config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "10000");
        for (k, v) in &self.producer {
            config.set(k, v);
        }
        config.create()
    }

    /// A consumer in `group_id` that never stores an offset by itself: the
    /// inbox stores each offset after its database commit, and librdkafka
    /// commits stored offsets in the background and on close.
    pub fn consumer(&self, group_id: &str) -> Result<Consumer, KafkaError> {
        let mut config = self.base();
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "500")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Rebalances move only the partitions that change owner.
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "session.timeout.ms",
                self.session_timeout.as_millis().to_string(),
            )
            // Members learn of a rebalance from their next heartbeat, and a
            // cooperative rebalance takes two rounds: beat often.
            .set(
                "heartbeat.interval.ms",
                (self.session_timeout.as_millis() / 10)
                    .clamp(100, 1000)
                    .to_string(),
            );
        if let Some(instance) = &self.group_instance_id {
            // Static membership: a restarted replica takes its partitions
            // back without a group-wide rebalance.
            config.set("group.instance.id", instance);
        }
        for (k, v) in &self.consumer {
            config.set(k, v);
        }
        config.create_with_context(InboxContext::default())
    }

    /// Creates `topics` with the configured layout; existing ones are left
    /// alone. A broker that refuses CreateTopics (librdkafka's mock cluster
    /// does not implement it; a locked-down cluster may forbid it) is fine
    /// as long as every topic already exists.
    pub async fn ensure_topics(&self, topics: &[&str]) -> Result<(), KafkaError> {
        // Topics that exist need no CreateTopics (which a broker without a
        // controller, like the mock cluster, only answers with a timeout).
        if self.topics_exist(topics).await == Ok(true) {
            return Ok(());
        }
        let Err(e) = self.create_topics(topics).await else {
            return Ok(());
        };
        match self.topics_exist(topics).await {
            Ok(true) => {
                tracing::warn!(error = %e, "cannot create topics, but they exist: going on");
                Ok(())
            }
            _ => Err(e),
        }
    }

    /// Whether the broker's metadata lists every one of `topics` with partitions.
    async fn topics_exist(&self, topics: &[&str]) -> Result<bool, KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.base().create()?;
        let wanted: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let metadata = admin.inner().fetch_metadata(None, Duration::from_secs(5))?;
            Ok(wanted.iter().all(|t| {
                metadata
                    .topics()
                    .iter()
                    .any(|m| m.name() == t && m.error().is_none() && !m.partitions().is_empty())
            }))
        })
        .await
        .unwrap_or(Ok(false))
    }

    async fn create_topics(&self, topics: &[&str]) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.base().create()?;
        let new: Vec<_> = topics
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    self.topics.partitions,
                    TopicReplication::Fixed(self.topics.replication_factor),
                )
            })
            .collect();
        let options = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            // Bounds the wait for a controller too (a broker without one, like
            // the mock cluster, would otherwise keep us a minute).
            .request_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(&new, &options).await? {
            match result {
                Ok(topic) => tracing::info!(%topic, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                        tracing::error!(%topic, ?code, "cannot create topic");
                    });
                }
            }
        }
        Ok(())
    }
}

/// A consumer whose rebalances go through [`InboxContext`].
pub type Consumer = StreamConsumer<InboxContext>;

/// The consumer's side of partition ownership: librdkafka calls it, on the
/// thread that polls the consumer (the inbox reader), before a rebalance
/// takes effect. On revoke, the partitions' workers stop and store what they
/// applied, and the stored offsets are committed, before librdkafka lets the
/// partitions go (see [`crate::inbox::ownership`]). Rebalances are logged:
/// which partitions this member owns is the first question when a consumer
/// seems stuck.
#[derive(Debug, Clone, Default)]
pub struct InboxContext {
    ownership: Arc<Ownership>,
}

impl InboxContext {
    /// What this member owns now.
    pub fn ownership(&self) -> &Arc<Ownership> {
        &self.ownership
    }
}

impl ClientContext for InboxContext {}

impl ConsumerContext for InboxContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                self.ownership
                    .assign(list.elements().iter().map(|e| e.partition()));
                // A partition this member paused (its worker was full) and
                // lost stays paused in librdkafka when it comes back: resume.
                if let Err(e) = consumer.resume(list) {
                    tracing::warn!(error = %e, "cannot resume assigned partitions");
                }
                tracing::info!(partitions = %describe(list), "partitions assigned");
            }
            Rebalance::Revoke(list) => {
                let partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
                let started = std::time::Instant::now();
                let late = self.ownership.revoke(&partitions);
                // A synchronous network call: off the runtime's core where possible.
                let committed = wait_blocking(|| consumer.commit_consumer_state(CommitMode::Sync))
                    .unwrap_or_else(|| consumer.commit_consumer_state(CommitMode::Async));
                match committed {
                    Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                    // The partitions may already be someone else's (a
                    // lost assignment): their new owner re-applies what was
                    // not committed, which the inbox turns into no-ops.
                    Err(e) => tracing::warn!(error = %e, "commit on revoke failed"),
                }
                if !late.is_empty() {
                    tracing::warn!(?late, "partition workers did not stop in time; fenced");
                }
                tracing::info!(
                    partitions = %describe(list),
                    lost = consumer.assignment_lost(),
                    ms = started.elapsed().as_millis() as u64,
                    "partitions revoked"
                );
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

fn describe(list: &TopicPartitionList) -> String {
    list.elements()
        .iter()
        .map(|e| format!("{}[{}]", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses `a=1,b=2` (whitespace around items is ignored).
pub fn parse_properties(raw: &str) -> Result<Vec<(String, String)>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
            _ => Err(format!("expected key=value, got {item:?}")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_and_refuse_garbage() {
        assert_eq!(
            parse_properties(" batch.num.messages=1, linger.ms = 5 ,"),
            Ok(vec![
                ("batch.num.messages".to_owned(), "1".to_owned()),
                ("linger.ms".to_owned(), "5".to_owned())
            ])
        );
        assert!(parse_properties("nonsense").is_err());
        assert!(parse_properties("=1").is_err());
    }

    #[test]
    fn config_reads_prefixed_variables() {
        let env = Env::from_pairs(
            "ORDERS_",
            [
                ("ORDERS_KAFKA_PRODUCER_PROPERTIES", "batch.num.messages=1"),
                ("ORDERS_TOPIC_PARTITIONS", "6"),
            ],
        );
        let cfg = KafkaConfig::from_env(&env).expect("valid");
        assert_eq!(cfg.brokers, "127.0.0.1:9092");
        assert_eq!(
            cfg.producer,
            vec![("batch.num.messages".to_owned(), "1".to_owned())]
        );
        assert_eq!(cfg.topics.partitions, 6);
        assert_eq!(cfg.topics.requests, DEFAULT_REQUESTS_TOPIC);
        let bad = Env::from_pairs("ORDERS_", [("ORDERS_KAFKA_PROPERTIES", "x")]);
        let err = KafkaConfig::from_env(&bad).expect_err("invalid");
        assert_eq!(err.var, "ORDERS_KAFKA_PROPERTIES");
    }
}
