//! The inbox consumer: per message, one transaction records the event id in
//! the `inbox` table (a duplicate is skipped) and runs the service's
//! [`Handler`]; only after the commit is the offset stored. Transient
//! failures retry in place with backoff and never skip ahead; undecodable or
//! permanently failing messages are parked in `dead_letters` after a bounded
//! number of attempts, so a poison message never blocks its partition.

use crate::backoff::Backoff;
use crate::{DbError, Pool, Transaction, dead_letter, headers, kafka};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use shop_runtime::{ConfigError, Env};
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Where a consumed message came from.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The W3C traceparent header, if any.
    pub traceparent: Option<String>,
}

/// Why a handler did not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth retrying as is (database down, deadlock, …): retried in place.
    #[error("transient: {0}")]
    Transient(String),
    /// Will fail again (bad data, broken invariant): dead-lettered after the
    /// configured attempts.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl From<DbError> for HandleError {
    fn from(e: DbError) -> Self {
        if e.is_transient() {
            Self::Transient(e.to_string())
        } else {
            Self::Permanent(e.to_string())
        }
    }
}

impl From<tokio_postgres::Error> for HandleError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError::from(e).into()
    }
}

impl From<deadpool_postgres::PoolError> for HandleError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        DbError::from(e).into()
    }
}

/// Applies one kind of event inside the inbox transaction.
pub trait Handler: Send + Sync + 'static {
    /// The protobuf payload this handler consumes.
    type Event: prost::Message + prost::Name + Default + Send;

    /// The event's unique id, used for deduplication.
    fn event_id(event: &Self::Event) -> Option<Uuid>;

    /// Applies the event; the caller commits `tx` on success.
    fn handle(
        &self,
        tx: &Transaction<'_>,
        event: Self::Event,
        delivery: &Delivery,
    ) -> impl Future<Output = Result<(), HandleError>> + Send;
}

/// How a consumer gets its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    /// Kafka group management: replicas share the partitions (the default).
    Group,
    /// This instance reads every partition itself, committing offsets under
    /// the group id. For a single instance, and the workaround for brokers
    /// that never expire a killed member (tansu, see README). Still exactly
    /// once with several instances (the inbox deduplicates), only wasteful.
    All,
}

impl std::str::FromStr for Assignment {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "group" => Ok(Self::Group),
            "all" => Ok(Self::All),
            other => Err(format!("expected `group` or `all`, got `{other}`")),
        }
    }
}

/// How the consumer gets partitions and retries.
#[derive(Debug, Clone)]
pub struct InboxConfig {
    /// `{PREFIX}CONSUMER_GROUP`.
    pub group_id: String,
    /// `{PREFIX}CONSUMER_ASSIGNMENT`: `group` (default) or `all`.
    pub assignment: Assignment,
    /// `{PREFIX}INBOX_MAX_ATTEMPTS`: attempts before a failing message is dead-lettered.
    pub max_attempts: u32,
    /// First and largest delay between attempts.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl InboxConfig {
    /// Reads `CONSUMER_GROUP` and `INBOX_MAX_ATTEMPTS`.
    pub fn from_env(env: &Env, default_group: &str) -> Result<Self, ConfigError> {
        let max_attempts: u32 = env.parse_or("INBOX_MAX_ATTEMPTS", 5)?;
        if max_attempts == 0 {
            return Err(env.invalid("INBOX_MAX_ATTEMPTS", "0", "must be at least 1"));
        }
        Ok(Self {
            group_id: env.string_or("CONSUMER_GROUP", default_group),
            assignment: env.parse_or("CONSUMER_ASSIGNMENT", Assignment::Group)?,
            max_attempts,
            retry_min: Duration::from_millis(50),
            retry_max: Duration::from_secs(5),
        })
    }
}

/// Consumes one topic into one database through a [`Handler`].
pub struct InboxConsumer<H> {
    pool: Pool,
    consumer: kafka::Consumer,
    topic: String,
    handler: H,
    config: InboxConfig,
}

impl<H> std::fmt::Debug for InboxConsumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxConsumer")
            .field("topic", &self.topic)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

enum Attempt {
    Applied,
    Duplicate,
}

impl<H: Handler> InboxConsumer<H> {
    /// A consumer of `topic`; `consumer` must have been built by
    /// [`crate::kafka::KafkaConfig::consumer`] (offsets stored by hand).
    pub fn new(
        pool: Pool,
        consumer: kafka::Consumer,
        topic: &str,
        handler: H,
        config: InboxConfig,
    ) -> Self {
        Self {
            pool,
            consumer,
            topic: topic.to_owned(),
            handler,
            config,
        }
    }

    /// Consumes until `shutdown`; finishes the message in flight, then
    /// commits the stored offsets.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), KafkaError> {
        self.take_partitions()?;
        tracing::info!(topic = %self.topic, group = %self.config.group_id, "inbox consumer started");
        let mut errors = Backoff::new(self.config.retry_min, self.config.retry_max);
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => break,
                m = self.consumer.recv() => m,
            };
            let message = match received {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, topic = %self.topic, "consumer error");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(errors.next_delay()) => continue,
                    }
                }
            };
            errors.reset();
            if !self.process(&message, &shutdown).await {
                break;
            }
            if let Err(e) = self.consumer.store_offset_from_message(&message) {
                tracing::warn!(error = %e, "cannot store offset (partition revoked?)");
            }
        }
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!(error = %e, "final offset commit failed"),
        }
        tracing::info!(topic = %self.topic, "inbox consumer stopped");
        Ok(())
    }

    fn take_partitions(&self) -> Result<(), KafkaError> {
        match self.config.assignment {
            Assignment::Group => self.consumer.subscribe(&[&self.topic]),
            Assignment::All => {
                let metadata = self
                    .consumer
                    .fetch_metadata(Some(&self.topic), Duration::from_secs(10))?;
                let mut partitions = TopicPartitionList::new();
                for topic in metadata.topics() {
                    for p in topic.partitions() {
                        partitions.add_partition_offset(topic.name(), p.id(), Offset::Stored)?;
                    }
                }
                tracing::info!(topic = %self.topic, partitions = partitions.count(), "reading every partition");
                self.consumer.assign(&partitions)
            }
        }
    }

    /// Applies or parks one message. `false` means shutdown interrupted the
    /// retries: the offset must not be stored.
    async fn process(&self, message: &BorrowedMessage<'_>, shutdown: &CancellationToken) -> bool {
        let delivery = Delivery {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            traceparent: headers::get(message, headers::TRACEPARENT),
        };
        let mut backoff = Backoff::new(self.config.retry_min, self.config.retry_max);
        let mut permanent_failures = 0;
        loop {
            match self.attempt(message, &delivery).await {
                Ok(Attempt::Applied) => {
                    metrics::counter!("shop_inbox_applied_total", "topic" => delivery.topic.clone()).increment(1);
                    return true;
                }
                Ok(Attempt::Duplicate) => {
                    metrics::counter!("shop_inbox_duplicates_total", "topic" => delivery.topic.clone()).increment(1);
                    tracing::info!(topic = %delivery.topic, offset = delivery.offset, "duplicate event skipped");
                    return true;
                }
                Err(HandleError::Transient(e)) => {
                    metrics::counter!("shop_inbox_retries_total", "kind" => "transient")
                        .increment(1);
                    tracing::warn!(error = %e, offset = delivery.offset, "transient failure, retrying in place");
                }
                Err(HandleError::Permanent(e)) => {
                    metrics::counter!("shop_inbox_retries_total", "kind" => "permanent")
                        .increment(1);
                    permanent_failures += 1;
                    tracing::warn!(error = %e, attempt = permanent_failures, offset = delivery.offset, "event failed");
                    if permanent_failures >= self.config.max_attempts {
                        match dead_letter::park(&self.pool, message, &e, permanent_failures).await {
                            Ok(()) => return true,
                            Err(db) => {
                                tracing::warn!(error = %db, "cannot park dead letter, retrying")
                            }
                        }
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    async fn attempt(
        &self,
        message: &BorrowedMessage<'_>,
        delivery: &Delivery,
    ) -> Result<Attempt, HandleError> {
        let expected = <H::Event as prost::Name>::full_name();
        if let Some(kind) = headers::get(message, headers::EVENT_TYPE)
            && kind != expected
        {
            return Err(HandleError::Permanent(format!(
                "unexpected event type {kind:?}, want {expected}"
            )));
        }
        let event = <H::Event as prost::Message>::decode(message.payload().unwrap_or_default())
            .map_err(|e| HandleError::Permanent(format!("undecodable {expected}: {e}")))?;
        let event_id = H::event_id(&event)
            .ok_or_else(|| HandleError::Permanent("event has no valid event_id".to_owned()))?;

        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let recorded = tx
            .execute(
                "INSERT INTO inbox (event_id, topic, partition, \"offset\") VALUES ($1, $2, $3, $4)
                 ON CONFLICT (event_id) DO NOTHING",
                &[
                    &event_id,
                    &delivery.topic,
                    &delivery.partition,
                    &delivery.offset,
                ],
            )
            .await?;
        if recorded == 0 {
            return Ok(Attempt::Duplicate);
        }
        self.handler.handle(&tx, event, delivery).await?;
        tx.commit().await?;
        Ok(Attempt::Applied)
    }
}
