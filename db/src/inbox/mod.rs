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
//!   (see the `shop-service` crate): it never stays up with its pipeline dead.
//! - In group mode, replicas share the partitions (cooperative rebalancing).
//!   A revoked partition's worker stops, stores what it applied and is gone
//!   before the revoke completes, and a worker can never store an offset for
//!   a partition it no longer owns: see [`ownership`].

//!
//! The module's files, in the order a message meets them: `handler.rs` (the
//! contract a service implements: [`Handler`], [`InboxEvent`]), `config.rs`
//! ([`InboxConfig`]), this file (the reader: partitions, backlog, lag),
//! `worker.rs` (one partition's worker: apply, retry, decode, dead-letter)
//! and [`ownership`] (who may store an offset).

mod config;
mod continuity;
mod handler;
pub mod ownership;
mod worker;

pub use config::{Assignment, InboxConfig};
pub use handler::{Delivery, HandleError, Handler, Inbound, InboxEvent, decode_as};

use crate::backoff::Backoff;
use crate::outbox::RelayWake;
use crate::{Pool, kafka};
use continuity::{Continuity, Verdict};
use ownership::Ownership;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

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

    /// Moves what the workers have room for; resumes emptied partitions and
    /// returns them.
    fn drain<H: Handler>(
        &mut self,
        consumer: &InboxConsumer<H>,
        workers: &HashMap<i32, Worker>,
    ) -> Vec<i32> {
        let mut resumed = Vec::new();
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
            resumed.push(*partition);
            false
        });
        resumed
    }
}

/// The reader's handle on one partition's worker.
struct Worker {
    /// The claim it works under.
    epoch: u64,
    sender: mpsc::Sender<OwnedMessage>,
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
        let mut continuity = Continuity::new(this.config.gap_rewind);
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
                _ = drain.tick(), if !backlog.is_empty() => {
                    this.prune(&mut seen_generation, &mut workers, &mut backlog, &mut continuity);
                    // A resumed partition is fetched from the last message
                    // handed out, maybe inside a batch (test-broker defect 1).
                    // A failed seek is caught by the skip check.
                    for partition in backlog.drain(&this, &workers) {
                        // Known only with the repair on.
                        if let Some(next) = continuity.expected(partition) {
                            this.rewind(partition, None, continuity.restart_before(next)).await;
                        }
                    }
                }
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
                    this.prune(&mut seen_generation, &mut workers, &mut backlog, &mut continuity);
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
                                if continuity.is_on() {
                                    continuity.start(partition, this.committed(partition).await);
                                }
                                let (sender, receiver) = mpsc::channel(this.config.batch_size * 2);
                                let epoch = claim.epoch;
                                let work = Arc::clone(&this).work(claim, receiver);
                                partitions.insert(tasks.spawn(work).id(), partition);
                                workers.insert(partition, Worker { epoch, sender });
                            }
                            None => continue, // revoked meanwhile
                        }
                    }
                    match continuity.check(partition, message.offset()) {
                        Verdict::Take => {}
                        Verdict::Drop => continue,
                        Verdict::Rewind(to) => {
                            if !this.rewind(partition, Some(message.offset()), to).await {
                                continuity.rewind_failed(partition);
                            }
                            continue;
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

    /// After an assignment or revocation (the ownership's generation moved
    /// past `seen`), drops the reader's state of partitions this member no
    /// longer owns (or owns under a newer claim): workers, backlog, expected
    /// offsets, applied offsets. The lag gauge of a partition no longer owned
    /// is set to 0 — this member owes nothing on it — and no longer measured,
    /// so summing the gauge over replicas gives the partition's lag.
    fn prune(
        &self,
        seen: &mut u64,
        workers: &mut HashMap<i32, Worker>,
        backlog: &mut Backlog,
        continuity: &mut Continuity,
    ) {
        let generation = self.ownership.generation();
        if generation == *seen {
            return;
        }
        *seen = generation;
        workers.retain(|partition, worker| {
            let owned = self.ownership.epoch(*partition) == Some(worker.epoch);
            if !owned {
                backlog.forget(*partition);
            }
            owned
        });
        continuity.retain(|p| workers.contains_key(&p));
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

    /// The group's committed offset of `partition` (`None`: nothing
    /// committed). A failed read is tried three times; if all fail, `None`
    /// too, and the partition starts from its first message (see
    /// [`continuity`]: it may then store up to `INBOX_GAP_REWIND` offsets
    /// below the committed one until it catches up).
    async fn committed(&self, partition: i32) -> Option<i64> {
        const ATTEMPTS: u32 = 3;
        for attempt in 1..=ATTEMPTS {
            let consumer = Arc::clone(&self.consumer);
            let topic = self.topic.clone();
            let read = tokio::task::spawn_blocking(move || {
                let mut list = TopicPartitionList::new();
                list.add_partition(&topic, partition);
                let committed = consumer
                    .committed_offsets(list, Duration::from_secs(2))
                    .map_err(|e| e.to_string())?;
                let element = committed
                    .find_partition(&topic, partition)
                    .ok_or("the partition is not in the answer")?;
                element.error().map_err(|e| e.to_string())?;
                Ok::<_, String>(match element.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                })
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|read| read);
            match read {
                Ok(offset) => return offset,
                Err(e) if attempt < ATTEMPTS => {
                    tracing::warn!(error = %e, partition, attempt, "cannot read the committed offset, retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, partition, "cannot read the committed offset: the first message decides where the partition starts");
                }
            }
        }
        None
    }

    /// Test-broker defect 1 (see [`continuity`]): fetching restarts at `to`,
    /// because the message at `seen` skipped offsets, or (`None`) because the
    /// partition was resumed. False if the seek failed.
    async fn rewind(&self, partition: i32, seen: Option<i64>, to: i64) -> bool {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        let sought = tokio::task::spawn_blocking(move || {
            consumer.seek(
                &topic,
                partition,
                Offset::Offset(to),
                Duration::from_secs(2),
            )
        })
        .await;
        match sought {
            Ok(Ok(())) => {
                if let Some(seen) = seen {
                    tracing::info!(
                        partition,
                        seen,
                        to,
                        "offsets skipped by the broker: fetching again from earlier"
                    );
                    metrics::counter!("shop_inbox_rewinds_total", "topic" => self.topic.clone())
                        .increment(1);
                }
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, partition, to, "cannot seek back over skipped offsets");
                false
            }
            Err(_) => false,
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
            // From the stored offset; with the gap rewind on, from a batch
            // before it, so a broker with test-broker defect 1 skips nothing
            // (what comes again before it is dropped by the reader).
            let rewind = i64::from(self.config.gap_rewind);
            let start = match rewind {
                0 => Offset::Stored,
                _ => match self.committed(p).await {
                    Some(committed) => Offset::Offset((committed - rewind).max(0)),
                    None => Offset::Stored,
                },
            };
            added
                .add_partition_offset(&self.topic, p, start)
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
}
