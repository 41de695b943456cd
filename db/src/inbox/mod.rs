//! The inbox consumer: applies one topic to one database, exactly once per
//! event id, partitions in parallel.
//!
//! - One reader task takes messages from the consumer and hands each to the
//!   worker of its partition (created on the partition's first message), so
//!   partitions progress independently and order within a partition is kept.
//! - A worker takes what has already arrived for its partition, up to
//!   `INBOX_BATCH_SIZE` messages, and applies it in ONE transaction: a
//!   set-based `INSERT INTO inbox … ON CONFLICT DO NOTHING RETURNING
//!   event_id` sorts new events from duplicates, the service's [`Handler`]
//!   applies the new ones and returns the events to publish in response,
//!   which go to the outbox in the same transaction. Only after the commit is
//!   the partition's highest offset stored (librdkafka commits stored offsets
//!   in the background and on close).
//! - If the batch fails, it is applied again one message at a time, so one
//!   poison message cannot hold back its neighbours. A database error is
//!   never a reason to give up: it retries in place with backoff. Messages
//!   that cannot be decoded or that the handler rejects as permanently
//!   invalid are parked in `dead_letters` after `INBOX_MAX_ATTEMPTS`.
//! - If a worker dies, or the Kafka client meets a fatal error,
//!   [`InboxConsumer::run`] returns an error, and the service stops with it
//!   (see `service.rs`): it never stays up with its pipeline dead.
//! - In group mode, replicas share the partitions (cooperative rebalancing).
//!   A revoked partition's worker stops, stores what it applied and is gone
//!   before the revoke completes, and a worker can never store an offset for
//!   a partition it no longer owns: see [`ownership`].

pub mod ownership;

use crate::backoff::Backoff;
use crate::outbox::{self, NewEvent, RelayWake};
use crate::{CallClient, DbError, Pool, Transaction, dead_letter, headers, kafka};
use ownership::{Ownership, WorkerClaim};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;
use rdkafka::{Offset, TopicPartitionList};
use shop_runtime::{ConfigError, Env};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

/// Where a consumed message came from.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The W3C traceparent of this message's processing: its `apply`
    /// span's when traces are on (a child of the message's own header), else
    /// a child id of the header's trace. Events written in response carry it.
    pub traceparent: Option<String>,
}

/// One decoded event with where it came from.
#[derive(Debug, Clone)]
pub struct Inbound<E> {
    pub event: E,
    pub delivery: Delivery,
}

/// Why a handler did not apply a batch.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth retrying as is (any database failure: down, deadlock, statement
    /// or lock timeout, …): retried in place, never parked.
    #[error("transient: {0}")]
    Transient(String),
    /// The event itself is invalid and will fail again: parked in
    /// `dead_letters` after the configured attempts.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl From<DbError> for HandleError {
    fn from(e: DbError) -> Self {
        Self::Transient(e.to_string())
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

/// What an inbox consumes from its topic: one protobuf message, or several
/// told apart by each record's `event-type` header (the message's full
/// name, set by [`NewEvent::encode`]).
pub trait InboxEvent: Sized + Send + Sync + 'static {
    /// Decodes one record; an error makes it permanently invalid.
    fn decode(event_type: Option<&str>, payload: &[u8]) -> Result<Self, String>;

    /// The event's unique id, used for deduplication.
    fn event_id(&self) -> Option<Uuid>;

    /// The order the event is about, an attribute of its `apply` span.
    fn order_id(&self) -> Option<&str> {
        None
    }
}

/// Decodes `payload` as `M` if `event_type` names `M` (or is absent):
/// `Ok(None)` when it names another message.
pub fn decode_as<M: prost::Message + prost::Name + Default>(
    event_type: Option<&str>,
    payload: &[u8],
) -> Result<Option<M>, String> {
    let name = M::full_name();
    if event_type.is_some_and(|t| t != name) {
        return Ok(None);
    }
    M::decode(payload)
        .map(Some)
        .map_err(|e| format!("undecodable {name}: {e}"))
}

/// Applies the events of one topic inside the inbox transaction.
pub trait Handler: Send + Sync + 'static {
    /// What this handler consumes.
    type Event: InboxEvent;

    /// Applies `events` — new ones only, in partition order — inside `tx`
    /// and returns the events to publish in response (the inbox writes them
    /// to the outbox in the same transaction). The caller commits `tx`.
    fn handle(
        &self,
        tx: &Transaction<'_>,
        events: Vec<Inbound<Self::Event>>,
    ) -> impl Future<Output = Result<Vec<NewEvent>, HandleError>> + Send;
}

/// How a consumer gets its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    /// Kafka group management: replicas share the partitions (the default).
    Group,
    /// This instance reads every partition itself, committing offsets under
    /// the group id, and picks up partitions added later. For a single
    /// instance, and the workaround for brokers that never expire a killed
    /// member (tansu, see docs/architecture.md). Still exactly once with
    /// several instances (the inbox deduplicates), only wasteful.
    All,
}

impl std::fmt::Display for Assignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Group => "group",
            Self::All => "all",
        })
    }
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

/// How the consumer gets partitions, batches and retries.
#[derive(Debug, Clone)]
pub struct InboxConfig {
    /// `{PREFIX}CONSUMER_GROUP`.
    pub group_id: String,
    /// `{PREFIX}CONSUMER_ASSIGNMENT`: `group` (default) or `all`.
    pub assignment: Assignment,
    /// `{PREFIX}INBOX_BATCH_SIZE`: most messages of one partition applied in one transaction.
    pub batch_size: usize,
    /// `{PREFIX}INBOX_MAX_ATTEMPTS`: attempts before an invalid message is dead-lettered.
    pub max_attempts: u32,
    /// First and largest delay between attempts.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// `{PREFIX}INBOX_PARTITION_REFRESH_MS`: in `all` mode, how often to look
    /// for partitions added to the topic.
    pub partition_refresh: Duration,
    /// `{PREFIX}INBOX_REVOKE_TIMEOUT_MS`: how long a revoke (or shutdown)
    /// waits for a partition's worker to finish its batch; half of it is the
    /// grace after which a batch in flight is abandoned (its statement
    /// cancelled, its transaction rolled back).
    pub revoke_timeout: Duration,
}

impl InboxConfig {
    /// Reads `CONSUMER_GROUP`, `CONSUMER_ASSIGNMENT` and the `INBOX_*` variables.
    pub fn from_env(env: &Env, default_group: &str) -> Result<Self, ConfigError> {
        let max_attempts: u32 = env.parse_or("INBOX_MAX_ATTEMPTS", 5)?;
        if max_attempts == 0 {
            return Err(env.invalid("INBOX_MAX_ATTEMPTS", "0", "must be at least 1"));
        }
        let batch_size: usize = env.parse_or("INBOX_BATCH_SIZE", 500)?;
        if !(1..=10_000).contains(&batch_size) {
            return Err(env.invalid(
                "INBOX_BATCH_SIZE",
                &batch_size.to_string(),
                "must be 1..=10000",
            ));
        }
        Ok(Self {
            group_id: env.string_or("CONSUMER_GROUP", default_group),
            assignment: env.parse_or("CONSUMER_ASSIGNMENT", Assignment::Group)?,
            batch_size,
            max_attempts,
            retry_min: Duration::from_millis(50),
            retry_max: Duration::from_secs(5),
            partition_refresh: env
                .millis_or("INBOX_PARTITION_REFRESH_MS", Duration::from_secs(10))?,
            revoke_timeout: env.millis_or("INBOX_REVOKE_TIMEOUT_MS", Duration::from_secs(5))?,
        })
    }
}

/// Why the consumer stopped before it was told to.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("cannot take the partitions of {topic}: {reason}")]
    Partitions { topic: String, reason: String },
    #[error("the worker of {topic}[{partition}] died: {reason}")]
    WorkerDied {
        topic: String,
        partition: i32,
        reason: String,
    },
    #[error("the Kafka consumer of {topic} met a fatal error: {reason}")]
    Fatal { topic: String, reason: String },
}

/// Consumes one topic into one database through a [`Handler`].
pub struct InboxConsumer<H> {
    pool: Pool,
    consumer: Arc<kafka::Consumer>,
    topic: String,
    handler: H,
    config: InboxConfig,
    relay: RelayWake,
    /// The partitions this member owns (shared with the consumer's context).
    ownership: Arc<Ownership>,
    /// The last offset applied per owned partition, for the lag gauge.
    applied: Arc<std::sync::Mutex<HashMap<i32, i64>>>,
}

impl<H> std::fmt::Debug for InboxConsumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxConsumer")
            .field("topic", &self.topic)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Messages of partitions whose worker is full, in order, while those
/// partitions are paused: a slow or stuck partition never blocks the reader,
/// so the others keep flowing and the buffer stays bounded by what was
/// already fetched.
#[derive(Default)]
struct Backlog(HashMap<i32, std::collections::VecDeque<OwnedMessage>>);

impl Backlog {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Gives `message` to its worker, or queues it behind the partition's
    /// backlog (pausing the partition when the backlog starts).
    fn hand_over<H: Handler>(
        &mut self,
        consumer: &InboxConsumer<H>,
        worker: &mpsc::Sender<OwnedMessage>,
        message: OwnedMessage,
    ) {
        let partition = message.partition();
        if let Some(queue) = self.0.get_mut(&partition) {
            queue.push_back(message);
            return;
        }
        match worker.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(message)) => {
                consumer.pause(partition, true);
                self.0.entry(partition).or_default().push_back(message);
            }
            // The worker is gone; the reader reports it.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Drops what is queued for `partition` (revoked, or a new claim).
    fn forget(&mut self, partition: i32) {
        self.0.remove(&partition);
    }

    /// Moves what the workers have room for; resumes emptied partitions.
    fn drain<H: Handler>(&mut self, consumer: &InboxConsumer<H>, workers: &HashMap<i32, Worker>) {
        self.0.retain(|partition, queue| {
            let Some(worker) = workers.get(partition).map(|w| &w.sender) else {
                return false;
            };
            while let Some(message) = queue.pop_front() {
                match worker.try_send(message) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(message)) => {
                        queue.push_front(message);
                        return true;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            consumer.pause(*partition, false);
            false
        });
    }
}

/// The reader's handle on one partition's worker.
struct Worker {
    /// The claim it works under.
    epoch: u64,
    sender: mpsc::Sender<OwnedMessage>,
}

/// What one transaction did.
struct Applied {
    new: usize,
    duplicates: usize,
}

impl<H: Handler> InboxConsumer<H> {
    /// A consumer of `topic`; `consumer` must have been built by
    /// [`crate::kafka::KafkaConfig::consumer`] (offsets stored by hand).
    /// `relay` is woken after a commit that enqueued events.
    pub fn new(
        pool: Pool,
        consumer: kafka::Consumer,
        topic: &str,
        handler: H,
        config: InboxConfig,
        relay: RelayWake,
    ) -> Self {
        let ownership = Arc::clone(consumer.context().ownership());
        ownership.set_revoke_timeout(config.revoke_timeout);
        Self {
            pool,
            ownership,
            consumer: Arc::new(consumer),
            topic: topic.to_owned(),
            handler,
            config,
            relay,
            applied: Arc::default(),
        }
    }

    /// Consumes until `shutdown`; then each worker finishes the batch in
    /// flight and the stored offsets are committed. Returns an error if the
    /// partitions cannot be taken or a worker dies.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), InboxError> {
        let this = Arc::new(self);
        let Some(mut known) = this.take_partitions(&shutdown).await? else {
            return Ok(()); // stopped before it started
        };
        tracing::info!(topic = %this.topic, group = %this.config.group_id, "inbox consumer started");
        let mut workers: HashMap<i32, Worker> = HashMap::new();
        let mut seen_generation = this.ownership.generation();
        let mut backlog = Backlog::default();
        let mut tasks = JoinSet::new();
        let mut partitions = HashMap::new();
        let mut refresh = tokio::time::interval(this.config.partition_refresh);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain = tokio::time::interval(Duration::from_millis(20));
        let mut lag = tokio::time::interval(Duration::from_secs(5));
        lag.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fatal = tokio::time::interval(Duration::from_secs(1));
        let mut errors = Backoff::new(this.config.retry_min, this.config.retry_max);
        let outcome = loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ok(()),
                Some(ended) = tasks.join_next_with_id() => {
                    if shutdown.is_cancelled() {
                        // Workers stop on shutdown too: that is no failure.
                        break Ok(());
                    }
                    match ended {
                        // A worker returns only when its partition is
                        // revoked (or the consumer stops): no failure.
                        Ok((id, ())) => {
                            partitions.remove(&id);
                        }
                        Err(e) => {
                            let partition = partitions.get(&e.id()).copied().unwrap_or(-1);
                            break Err(InboxError::WorkerDied { topic: this.topic.clone(), partition, reason: e.to_string() });
                        }
                    }
                }
                _ = drain.tick(), if !backlog.is_empty() => backlog.drain(&this, &workers),
                _ = lag.tick() => this.measure_lag().await,
                _ = fatal.tick() => {
                    if let Some((code, reason)) = this.consumer.client().fatal_error() {
                        break Err(InboxError::Fatal { topic: this.topic.clone(), reason: format!("{code:?}: {reason}") });
                    }
                }
                _ = refresh.tick(), if this.config.assignment == Assignment::All => {
                    if let Err(e) = this.assign_new_partitions(&mut known).await {
                        tracing::warn!(error = %e, topic = %this.topic, "cannot look for new partitions");
                    }
                }
                received = this.consumer.recv() => {
                    let message = match received {
                        Ok(m) => m.detach(),
                        Err(e) => {
                            tracing::warn!(error = %e, topic = %this.topic, "consumer error");
                            tokio::select! {
                                _ = shutdown.cancelled() => break Ok(()),
                                _ = tokio::time::sleep(errors.next_delay()) => continue,
                            }
                        }
                    };
                    errors.reset();
                    let generation = this.ownership.generation();
                    if generation != seen_generation {
                        seen_generation = generation;
                        this.prune(&mut workers, &mut backlog);
                    }
                    let partition = message.partition();
                    let Some(epoch) = this.ownership.epoch(partition) else {
                        // Fetched before its partition was revoked: its new
                        // owner reads it from the committed offset.
                        continue;
                    };
                    if workers.get(&partition).is_none_or(|w| w.epoch != epoch) {
                        backlog.forget(partition);
                        match this.ownership.take_for_worker(partition) {
                            Some(claim) => {
                                let (sender, receiver) = mpsc::channel(this.config.batch_size * 2);
                                let epoch = claim.epoch;
                                let work = Arc::clone(&this).work(claim, receiver);
                                partitions.insert(tasks.spawn(work).id(), partition);
                                workers.insert(partition, Worker { epoch, sender });
                            }
                            None => continue, // revoked meanwhile
                        }
                    }
                    if let Some(worker) = workers.get(&partition) {
                        backlog.hand_over(&this, &worker.sender, message);
                    }
                }
            }
        };
        // Every worker finishes (or abandons) its batch and stores its offset.
        this.ownership.stop_all();
        drop(workers);
        while let Some(ended) = tasks.join_next().await {
            if let Err(e) = ended {
                tracing::error!(error = %e, "inbox worker failed while stopping");
            }
        }
        let consumer = Arc::clone(&this.consumer);
        let committed =
            tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync))
                .await;
        match committed {
            Ok(Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "final offset commit failed"),
            Err(e) => tracing::warn!(error = %e, "final offset commit did not run"),
        }
        tracing::info!(topic = %this.topic, "inbox consumer stopped");
        outcome
    }

    /// Drops the reader's state of partitions this member no longer owns
    /// (or owns under a newer claim): workers, backlog, applied offsets.
    /// The lag gauge of a partition no longer owned is set to 0 — this
    /// member owes nothing on it — and no longer measured, so summing the
    /// gauge over replicas gives the partition's lag.
    fn prune(&self, workers: &mut HashMap<i32, Worker>, backlog: &mut Backlog) {
        workers.retain(|partition, worker| {
            let owned = self.ownership.epoch(*partition) == Some(worker.epoch);
            if !owned {
                backlog.forget(*partition);
            }
            owned
        });
        let Ok(mut applied) = self.applied.lock() else {
            return;
        };
        applied.retain(|partition, _| {
            let owned = self.ownership.epoch(*partition).is_some();
            if !owned {
                metrics::gauge!("shop_inbox_lag", "topic" => self.topic.clone(), "partition" => partition.to_string())
                    .set(0.0);
            }
            owned
        });
    }

    /// `shop_inbox_lag{topic,partition}`: messages on the broker not yet
    /// applied, per partition this consumer has applied something of.
    async fn measure_lag(&self) {
        let applied: Vec<(i32, i64)> = match self.applied.lock() {
            Ok(applied) => applied.iter().map(|(p, o)| (*p, *o)).collect(),
            Err(_) => return,
        };
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        let measured = tokio::task::spawn_blocking(move || {
            applied
                .into_iter()
                .filter_map(|(partition, offset)| {
                    let (_, high) = consumer
                        .fetch_watermarks(&topic, partition, Duration::from_secs(1))
                        .ok()?;
                    Some((partition, (high - offset - 1).max(0)))
                })
                .collect::<Vec<_>>()
        })
        .await;
        for (partition, lag) in measured.unwrap_or_default() {
            metrics::gauge!("shop_inbox_lag", "topic" => self.topic.clone(), "partition" => partition.to_string())
                .set(lag as f64);
        }
    }

    /// Stops (or resumes) fetching `partition` of the topic.
    fn pause(&self, partition: i32, pause: bool) {
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topic, partition);
        let done = if pause {
            self.consumer.pause(&list)
        } else {
            self.consumer.resume(&list)
        };
        match done {
            Ok(()) if pause => tracing::info!(partition, "partition paused: its worker is behind"),
            Ok(()) => tracing::info!(partition, "partition resumed"),
            Err(e) => {
                tracing::warn!(error = %e, partition, pause, "cannot pause or resume a partition")
            }
        }
    }

    /// Subscribes (`group`) or assigns every partition (`all`), retrying a
    /// few times; returns the partitions taken in `all` mode, or `None` when
    /// shutdown came first.
    async fn take_partitions(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Option<HashSet<i32>>, InboxError> {
        let failed = |reason: String| InboxError::Partitions {
            topic: self.topic.clone(),
            reason,
        };
        if self.config.assignment == Assignment::Group {
            self.consumer
                .subscribe(&[&self.topic])
                .map_err(|e| failed(e.to_string()))?;
            return Ok(Some(HashSet::new()));
        }
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut known = HashSet::new();
            match self.assign_new_partitions(&mut known).await {
                Ok(()) => return Ok(Some(known)),
                Err(_) if shutdown.is_cancelled() => return Ok(None),
                Err(e) if attempt >= 10 => return Err(failed(e)),
                Err(e) => {
                    tracing::warn!(error = %e, attempt, topic = %self.topic, "cannot take partitions yet, retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    }

    /// `all` mode: assigns the topic's partitions not in `known` (from their
    /// stored offsets). A missing topic or one without partitions is an error.
    async fn assign_new_partitions(&self, known: &mut HashSet<i32>) -> Result<(), String> {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        let all = tokio::task::spawn_blocking(move || {
            let metadata = consumer
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            let found = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .ok_or_else(|| format!("topic {topic} is not in the metadata"))?;
            if let Some(e) = found.error() {
                return Err(format!("topic {topic}: {e:?}"));
            }
            let ids: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
            if ids.is_empty() {
                return Err(format!("topic {topic} has no partitions"));
            }
            Ok(ids)
        })
        .await
        .map_err(|e| e.to_string())??;
        let mut added = TopicPartitionList::new();
        for p in all.into_iter().filter(|p| !known.contains(p)) {
            added
                .add_partition_offset(&self.topic, p, Offset::Stored)
                .map_err(|e| e.to_string())?;
        }
        if added.count() == 0 {
            return Ok(());
        }
        self.ownership
            .assign(added.elements().iter().map(|e| e.partition()));
        self.consumer
            .incremental_assign(&added)
            .map_err(|e| e.to_string())?;
        for element in added.elements() {
            known.insert(element.partition());
        }
        tracing::info!(topic = %self.topic, added = added.count(), total = known.len(), "reading partitions");
        Ok(())
    }

    /// One partition's worker: batches of what has already arrived, applied
    /// in order; the offset is stored after each batch's commit.
    async fn work(self: Arc<Self>, claim: WorkerClaim, mut messages: mpsc::Receiver<OwnedMessage>) {
        let partition = claim.partition;
        let stop = claim.stop.clone();
        loop {
            let first = tokio::select! {
                biased;
                // What is queued is dropped: the next owner reads it again.
                _ = stop.cancelled() => return,
                m = messages.recv() => match m {
                    Some(m) => m,
                    None => return,
                },
            };
            let mut batch = vec![first];
            while batch.len() < self.config.batch_size {
                match messages.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            // Past the grace after a revoke, the batch is abandoned: its
            // statement is cancelled and its transaction rolled back (see
            // `attempt`), and the next owner applies it. Had its commit
            // already gone out, the next owner's inbox skips the events.
            let grace = self.config.revoke_timeout / 2;
            let abandon = async {
                stop.cancelled().await;
                tokio::time::sleep(grace).await;
            };
            let applied = tokio::select! {
                applied = self.apply(&batch, &stop) => applied,
                _ = abandon => {
                    tracing::warn!(partition, size = batch.len(), "batch abandoned on revoke");
                    false
                }
            };
            if !applied {
                return;
            }
            if let Some(last) = batch.last() {
                let stored = self.ownership.store_if_owned(&claim, || {
                    self.consumer
                        .store_offset(&self.topic, partition, last.offset())
                });
                match stored {
                    Some(Ok(())) => {
                        if let Ok(mut applied) = self.applied.lock() {
                            applied.insert(partition, last.offset());
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, partition, "cannot store offset");
                    }
                    None => {
                        tracing::info!(partition, "partition revoked: offset not stored");
                        return;
                    }
                }
            }
        }
    }

    /// Applies a batch in one transaction, or else one message at a time.
    /// `false` means shutdown interrupted the retries: store no offset.
    async fn apply(&self, batch: &[OwnedMessage], shutdown: &CancellationToken) -> bool {
        if batch.len() > 1 {
            match self.attempt(batch).await {
                Ok(applied) => {
                    self.count(&applied);
                    return true;
                }
                Err(e) => {
                    metrics::counter!("shop_inbox_batch_fallbacks_total", "topic" => self.topic.clone()).increment(1);
                    tracing::warn!(error = %e, size = batch.len(), "batch failed, applying its messages one at a time");
                }
            }
        }
        for message in batch {
            if !self.process(message, shutdown).await {
                return false;
            }
        }
        true
    }

    fn count(&self, applied: &Applied) {
        metrics::counter!("shop_inbox_applied_total", "topic" => self.topic.clone())
            .increment(applied.new as u64);
        if applied.duplicates > 0 {
            metrics::counter!("shop_inbox_duplicates_total", "topic" => self.topic.clone())
                .increment(applied.duplicates as u64);
            tracing::info!(topic = %self.topic, duplicates = applied.duplicates, "duplicate events skipped");
        }
    }

    /// Applies or parks one message, retrying in place.
    async fn process(&self, message: &OwnedMessage, shutdown: &CancellationToken) -> bool {
        let mut backoff = Backoff::new(self.config.retry_min, self.config.retry_max);
        let mut permanent_failures = 0;
        loop {
            match self.attempt(std::slice::from_ref(message)).await {
                Ok(applied) => {
                    self.count(&applied);
                    return true;
                }
                Err(HandleError::Transient(e)) => {
                    metrics::counter!("shop_inbox_retries_total", "kind" => "transient")
                        .increment(1);
                    tracing::warn!(error = %e, offset = message.offset(), "transient failure, retrying in place");
                }
                Err(HandleError::Permanent(e)) => {
                    metrics::counter!("shop_inbox_retries_total", "kind" => "permanent")
                        .increment(1);
                    permanent_failures += 1;
                    tracing::warn!(error = %e, attempt = permanent_failures, offset = message.offset(), "event failed");
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

    /// One transaction: record the batch's event ids, apply the new events,
    /// enqueue the handler's events, commit; then wake the relay.
    ///
    /// A worker that abandons the batch drops this future: the connection's
    /// [`CallClient`] guard then cancels the statement in flight and discards
    /// the connection, so the transaction ends at once and its inbox rows
    /// no longer hold up the partition's new owner.
    async fn attempt(&self, batch: &[OwnedMessage]) -> Result<Applied, HandleError> {
        let mut client = CallClient::get(&self.pool).await?;
        let applied = self
            .attempt_on(&mut client, batch)
            .instrument(batch_span(batch))
            .await;
        client.release();
        applied
    }

    async fn attempt_on(
        &self,
        client: &mut deadpool_postgres::Client,
        batch: &[OwnedMessage],
    ) -> Result<Applied, HandleError> {
        let mut decoded = Vec::with_capacity(batch.len());
        for message in batch {
            decoded.push(decode::<H>(message)?);
        }
        let ids: Vec<Uuid> = decoded.iter().map(|(id, _)| *id).collect();
        let topics: Vec<&str> = decoded
            .iter()
            .map(|(_, e)| e.delivery.topic.as_str())
            .collect();
        let partitions: Vec<i32> = decoded.iter().map(|(_, e)| e.delivery.partition).collect();
        let offsets: Vec<i64> = decoded.iter().map(|(_, e)| e.delivery.offset).collect();

        let tx = client.transaction().await?;
        let record = tx.prepare_cached(RECORD).await?;
        let fresh: HashSet<Uuid> = tx
            .query(&record, &[&ids, &topics, &partitions, &offsets])
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        let mut first_time = HashSet::new();
        let (new, applying): (Vec<Inbound<H::Event>>, Vec<tracing::Span>) = decoded
            .into_iter()
            .filter(|(id, _)| fresh.contains(id) && first_time.insert(*id))
            .map(|(id, inbound)| traced(id, inbound))
            .unzip();
        let applied = Applied {
            new: new.len(),
            duplicates: batch.len() - new.len(),
        };
        let events = if new.is_empty() {
            Vec::new()
        } else {
            self.handler.handle(&tx, new).await?
        };
        outbox::enqueue_all(&tx, &events).await?;
        tx.commit().await?;
        drop(applying); // each new message's span ends with the commit
        if !events.is_empty() {
            self.relay.wake();
        }
        Ok(applied)
    }
}

/// The CONSUMER span of one batch (`<topic> process`), linked to the context
/// of each message in it: a batch mixes many orders' traces, so it is a
/// root of its own, and each message's `apply` span is linked back to it.
fn batch_span(batch: &[OwnedMessage]) -> tracing::Span {
    let Some(first) = batch.first().filter(|_| shop_runtime::traces::enabled()) else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(
        "process",
        otel.name = %format_args!("{} process", first.topic()),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.destination.name = first.topic(),
        messaging.destination.partition.id = first.partition(),
        messaging.batch.message_count = batch.len(),
    );
    for message in batch {
        if let Some(traceparent) = headers::get(message, headers::TRACEPARENT) {
            shop_runtime::traces::add_link(&span, &traceparent);
        }
    }
    span
}

/// A new message's `apply` span: a child of the message's context (so the
/// order's trace goes on through this service), linked to the batch's span
/// (the current one), open until the batch commits. The message's delivery
/// then carries this span's traceparent for the events written in response.
fn traced<E: InboxEvent>(event_id: Uuid, mut inbound: Inbound<E>) -> (Inbound<E>, tracing::Span) {
    let span = shop_runtime::traces::when_on(|| {
        tracing::info_span!(
            "apply",
            otel.name = %format_args!("{} apply", inbound.delivery.topic),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.destination.name = %inbound.delivery.topic,
            messaging.message.id = %event_id,
            event_id = %event_id,
            order_id = inbound.event.order_id(),
        )
    });
    if let Some(batch) = shop_runtime::traces::traceparent_of(&tracing::Span::current()) {
        shop_runtime::traces::add_link(&span, &batch);
    }
    shop_runtime::traces::set_parent(&span, inbound.delivery.traceparent.as_deref());
    inbound.delivery.traceparent = Some(match shop_runtime::traces::traceparent_of(&span) {
        Some(own) => own,
        None => headers::child_of(inbound.delivery.traceparent.as_deref()),
    });
    (inbound, span)
}

/// Records a batch's event ids; returns the ones not seen before.
const RECORD: &str = "INSERT INTO inbox (event_id, topic, partition, \"offset\")
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::bigint[])
     ON CONFLICT (event_id) DO NOTHING
     RETURNING event_id";

/// The message's event and id; anything wrong with it is permanent.
fn decode<H: Handler>(message: &OwnedMessage) -> Result<(Uuid, Inbound<H::Event>), HandleError> {
    let kind = headers::get(message, headers::EVENT_TYPE);
    let event = H::Event::decode(kind.as_deref(), message.payload().unwrap_or_default())
        .map_err(HandleError::Permanent)?;
    let event_id = event
        .event_id()
        .ok_or_else(|| HandleError::Permanent("event has no valid event_id".to_owned()))?;
    let delivery = Delivery {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        traceparent: headers::get(message, headers::TRACEPARENT),
    };
    Ok((event_id, Inbound { event, delivery }))
}
