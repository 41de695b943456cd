//! The outbox relay. One pass ([`Relay::publish_batch`]):
//!
//! 1. **claim** up to `RELAY_BATCH_SIZE` unpublished rows in one statement,
//!    `ORDER BY id FOR UPDATE SKIP LOCKED`, setting a lease (`claimed_until`)
//!    instead of holding row locks while the broker answers — several relays
//!    may run at once, and a crashed relay's lease simply expires;
//! 2. **publish** them all with the idempotent producer and await every
//!    delivery report, renewing the lease meanwhile (every third of
//!    `RELAY_LEASE_MS`), so the lease can be short: a killed relay's rows are
//!    taken over within seconds, while a slow publish is never claimed twice;
//! 3. **mark** the delivered rows published (`published_at`, wall clock);
//!    a row the broker refuses for what it is (too large, invalid) backs off
//!    on its own and is parked after `RELAY_MAX_ATTEMPTS`, so one bad row
//!    never throttles the rest; rows that failed for the broker's sake (a
//!    timeout, no leader, the broker down) are released, and when nothing at
//!    all was published the relay backs off.
//!
//! A crash between publish and mark only means a re-publish, which consumers
//! deduplicate by event id (their inbox). [`Relay::run`] makes passes while
//! there is work, then waits for a wake-up from a writer in this process
//! ([`RelayWake`]), a NOTIFY on [`CHANNEL`] from outside, or the polling
//! interval.

use crate::backoff::Backoff;
use crate::headers;
use crate::listen::{Listener, Notification};
use crate::outbox::{CHANNEL, RelayWake};
use crate::{DbError, Pool};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use shop_runtime::{ConfigError, Env};
use std::time::Duration;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

/// How the relay batches, polls, leases and backs off.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// `{PREFIX}RELAY_BATCH_SIZE`: rows claimed per pass.
    pub batch_size: i64,
    /// `{PREFIX}RELAY_POLL_INTERVAL_MS`: fallback polling when nothing wakes the relay.
    pub poll_interval: Duration,
    /// `{PREFIX}RELAY_LEASE_MS`: how long a claim lasts unless renewed; the
    /// relay renews it while it awaits the broker, so this bounds only how
    /// long a crashed relay's rows wait for another relay.
    pub lease: Duration,
    /// `{PREFIX}RELAY_MAX_ATTEMPTS`: publishes of one row refused by the
    /// broker for the message itself (too large, invalid) before it is parked.
    pub max_attempts: i32,
    /// First and largest delay after a pass that published nothing.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl RelayConfig {
    /// Reads the `RELAY_*` variables.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let batch_size: i64 = env.parse_or("RELAY_BATCH_SIZE", defaults.batch_size)?;
        if !(1..=10_000).contains(&batch_size) {
            return Err(env.invalid(
                "RELAY_BATCH_SIZE",
                &batch_size.to_string(),
                "must be 1..=10000",
            ));
        }
        let max_attempts: i32 = env.parse_or("RELAY_MAX_ATTEMPTS", defaults.max_attempts)?;
        if !(1..=100).contains(&max_attempts) {
            return Err(env.invalid(
                "RELAY_MAX_ATTEMPTS",
                &max_attempts.to_string(),
                "must be 1..=100",
            ));
        }
        Ok(Self {
            batch_size,
            poll_interval: env.millis_or("RELAY_POLL_INTERVAL_MS", defaults.poll_interval)?,
            lease: env.millis_or("RELAY_LEASE_MS", defaults.lease)?,
            max_attempts,
            ..defaults
        })
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(5),
            max_attempts: 10,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("no event of the batch was published ({failed} failed): {first}")]
    Publish { failed: usize, first: KafkaError },
    #[error("the Kafka producer met a fatal error: {0}")]
    Fatal(String),
}

impl From<tokio_postgres::Error> for RelayError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for RelayError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Db(e.into())
    }
}

const CLAIM: &str =
    "UPDATE outbox SET claimed_until = clock_timestamp() + $2::bigint * interval '1 millisecond'
     WHERE id IN (
         SELECT id FROM outbox
         WHERE published_at IS NULL AND parked_at IS NULL
           AND (claimed_until IS NULL OR claimed_until < clock_timestamp())
         ORDER BY id LIMIT $1
         FOR UPDATE SKIP LOCKED)
     RETURNING id, event_id, topic, key, event_type, payload, traceparent";

/// Returns each row's seconds from its insert (`created_at`, the writing
/// transaction's `clock_timestamp()`) to now: the publish delay.
const MARK_PUBLISHED: &str = "UPDATE outbox
     SET published_at = clock_timestamp(), attempts = attempts + 1, last_error = NULL, claimed_until = NULL
     WHERE id = ANY($1)
     RETURNING extract(epoch FROM published_at - created_at)::float8";

/// Extends the lease of rows still being published.
const RENEW: &str =
    "UPDATE outbox SET claimed_until = clock_timestamp() + $2::bigint * interval '1 millisecond'
     WHERE id = ANY($1) AND published_at IS NULL";

/// Releases rows of a batch that failed as a whole: the broker, not the rows.
const RELEASE: &str = "UPDATE outbox SET claimed_until = NULL, last_error = $2 WHERE id = ANY($1)";

/// A row that failed while others were delivered: its own backoff, parked at the limit.
const ROW_FAILED: &str = "UPDATE outbox
     SET attempts = attempts + 1, last_error = $2,
         claimed_until = clock_timestamp() + least(power(2, attempts) * 100, 60000) * interval '1 millisecond',
         parked_at = CASE WHEN attempts + 1 >= $3 THEN clock_timestamp() END
     WHERE id = $1
     RETURNING parked_at IS NOT NULL";

struct Pending {
    id: i64,
    event_id: String,
    topic: String,
    key: Vec<u8>,
    event_type: String,
    payload: Vec<u8>,
    traceparent: Option<String>,
}

impl TryFrom<&tokio_postgres::Row> for Pending {
    type Error = tokio_postgres::Error;

    fn try_from(r: &tokio_postgres::Row) -> Result<Self, Self::Error> {
        Ok(Self {
            id: r.try_get("id")?,
            event_id: r.try_get::<_, Uuid>("event_id")?.to_string(),
            topic: r.try_get("topic")?,
            key: r.try_get("key")?,
            event_type: r.try_get("event_type")?,
            payload: r.try_get("payload")?,
            traceparent: r.try_get("traceparent")?,
        })
    }
}

/// Publishes the outbox of one database.
#[derive(Clone)]
pub struct Relay {
    pool: Pool,
    producer: FutureProducer,
    config: RelayConfig,
    wake: RelayWake,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay over `pool`'s outbox (ideally [`crate::pool::connect_for_relay`]),
    /// woken by `wake` when this process commits events.
    pub fn new(pool: Pool, producer: FutureProducer, config: RelayConfig, wake: RelayWake) -> Self {
        Self {
            pool,
            producer,
            config,
            wake,
        }
    }

    /// One pass: claims, publishes and marks one batch; returns how many
    /// events were published. `Err` only when nothing could be published.
    pub async fn publish_batch(&self) -> Result<usize, RelayError> {
        let client = self.pool.get().await?;
        let claim = client.prepare_cached(CLAIM).await?;
        let lease_ms = i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX);
        let rows = client
            .query(&claim, &[&self.config.batch_size, &lease_ms])
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut pending = rows
            .iter()
            .map(Pending::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        // RETURNING has no order: publish in outbox order.
        pending.sort_by_key(|p| p.id);

        let deliveries = futures::future::join_all(pending.iter().map(|p| self.send(p)));
        let deliveries = {
            let ids: Vec<i64> = pending.iter().map(|p| p.id).collect();
            let mut renew =
                tokio::time::interval((self.config.lease / 3).max(Duration::from_millis(10)));
            renew.tick().await; // the claim itself was the first
            tokio::pin!(deliveries);
            loop {
                tokio::select! {
                    delivered = &mut deliveries => break delivered,
                    _ = renew.tick() => {
                        let renewed = client.execute(RENEW, &[&ids, &lease_ms]).await;
                        if let Err(e) = renewed {
                            tracing::warn!(error = %e, "cannot renew the relay's lease");
                        }
                    }
                }
            }
        };
        let mut published = Vec::with_capacity(pending.len());
        let mut failed = Vec::new();
        for (p, delivery) in pending.iter().zip(deliveries) {
            match delivery {
                Ok(()) => published.push(p.id),
                Err(e) => failed.push((p.id, e)),
            }
        }
        if !published.is_empty() {
            let mark = client.prepare_cached(MARK_PUBLISHED).await?;
            for row in client.query(&mark, &[&published]).await? {
                if let Ok(delay) = row.try_get::<_, f64>(0) {
                    metrics::histogram!("shop_outbox_publish_delay_seconds").record(delay);
                }
            }
            metrics::counter!("shop_outbox_published_total").increment(published.len() as u64);
        }
        metrics::counter!("shop_outbox_publish_failures_total").increment(failed.len() as u64);
        let Some((_, first)) = failed.first() else {
            return Ok(published.len());
        };
        // Only an error about the message itself counts toward parking it;
        // anything else (a timeout, a partition without a leader, the
        // broker down) is the broker's trouble: release and retry.
        let (own, broker): (Vec<_>, Vec<_>) =
            failed.iter().partition(|(_, e)| is_about_the_message(e));
        if !broker.is_empty() {
            let ids: Vec<i64> = broker.iter().map(|(id, _)| *id).collect();
            let release = client.prepare_cached(RELEASE).await?;
            client
                .execute(&release, &[&ids, &first.to_string()])
                .await?;
        }
        if published.is_empty() && own.is_empty() {
            return Err(RelayError::Publish {
                failed: failed.len(),
                first: first.clone(),
            });
        }
        for (id, error) in own {
            let parked: bool = client
                .query_one(
                    ROW_FAILED,
                    &[id, &error.to_string(), &self.config.max_attempts],
                )
                .await?
                .try_get(0)?;
            if parked {
                metrics::counter!("shop_outbox_parked_total").increment(1);
                tracing::error!(outbox_id = id, %error, "outbox row parked after repeated publish failures");
            } else {
                tracing::warn!(outbox_id = id, %error, "outbox row not published, retrying it later");
            }
        }
        Ok(published.len())
    }

    /// Publishes one row as a PRODUCER span, child of the context stored
    /// with the row (the transaction that wrote it); the message carries the
    /// publish span's own context, so its processing is the publish's child.
    /// Each attempt builds the headers afresh: one `traceparent`, always.
    async fn send(&self, p: &Pending) -> Result<(), KafkaError> {
        let span = shop_runtime::traces::when_on(|| {
            tracing::info_span!(
                "publish",
                otel.name = %format_args!("{} publish", p.topic),
                otel.kind = "producer",
                messaging.system = "kafka",
                messaging.operation.type = "send",
                messaging.destination.name = %p.topic,
                messaging.message.id = %p.event_id,
                event_id = %p.event_id,
            )
        });
        shop_runtime::traces::set_parent(&span, p.traceparent.as_deref());
        // A row without one (a replayed dead letter) starts a trace here.
        let traceparent = shop_runtime::traces::traceparent_of(&span)
            .or_else(|| p.traceparent.clone())
            .unwrap_or_else(headers::new_root);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: headers::EVENT_ID,
                value: Some(&p.event_id),
            })
            .insert(Header {
                key: headers::EVENT_TYPE,
                value: Some(&p.event_type),
            })
            .insert(Header {
                key: headers::TRACEPARENT,
                value: Some(&traceparent),
            });
        let record = FutureRecord::to(&p.topic)
            .key(&p.key)
            .payload(&p.payload)
            .headers(headers);
        self.producer
            .send(record, Duration::from_secs(5))
            .instrument(span)
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }

    /// Publishes until `shutdown`: passes follow each other while batches
    /// come back full; after a short batch the relay waits for a wake-up
    /// (this process's writers, a NOTIFY from outside, or the polling
    /// interval); it backs off only after a pass that published nothing.
    /// Returns an error only when the producer meets a fatal error (the
    /// service then stops, and its supervisor restarts it).
    pub async fn run(
        self,
        listener: &Listener,
        shutdown: CancellationToken,
    ) -> Result<(), RelayError> {
        let mut notifications = listener.subscribe();
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        let full = usize::try_from(self.config.batch_size).unwrap_or(usize::MAX);
        let mut outcome = Ok(());
        while !shutdown.is_cancelled() {
            if let Some((code, reason)) = self.producer.client().fatal_error() {
                outcome = Err(RelayError::Fatal(format!("{code:?}: {reason}")));
                break;
            }
            let pause = match self.publish_batch().await {
                Ok(n) if n >= full => {
                    backoff.reset();
                    continue;
                }
                Ok(n) => {
                    if n > 0 {
                        tracing::debug!(published = n, "outbox batch published");
                    }
                    backoff.reset();
                    self.config.poll_interval
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay published nothing, backing off");
                    let delay = backoff.next_delay();
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
                _ = self.wake.woken() => {}
                _ = outbox_notified(&mut notifications) => {}
            }
        }
        let producer = self.producer.clone();
        let flushed =
            tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5))).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "producer flush on shutdown failed");
        }
        tracing::info!("outbox relay stopped");
        outcome
    }
}

/// True for a publish error that the same message would meet again on any
/// broker (too large, invalid): only those can get a row parked.
fn is_about_the_message(error: &KafkaError) -> bool {
    use rdkafka::error::RDKafkaErrorCode::{
        BadMessage, InvalidMessage, InvalidMessageSize, InvalidRecord, InvalidTopic,
        MessageSizeTooLarge,
    };
    matches!(
        error,
        KafkaError::MessageProduction(
            BadMessage
                | InvalidMessage
                | InvalidMessageSize
                | InvalidRecord
                | InvalidTopic
                | MessageSizeTooLarge
        )
    )
}

/// Resolves when a NOTIFY on the outbox channel (or a listener resync) says
/// there may be new rows; everything already queued is drained, so a burst
/// of notifications makes one pass. Never resolves once the listener is gone
/// (the polling interval takes over).
async fn outbox_notified(notifications: &mut Receiver<Notification>) {
    loop {
        let mut wake = match notifications.recv().await {
            Ok(n) => is_for_the_outbox(&n),
            Err(RecvError::Lagged(_)) => true,
            Err(RecvError::Closed) => std::future::pending().await,
        };
        loop {
            match notifications.try_recv() {
                Ok(n) => wake |= is_for_the_outbox(&n),
                Err(TryRecvError::Lagged(_)) => wake = true,
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        if wake {
            return;
        }
    }
}

fn is_for_the_outbox(n: &Notification) -> bool {
    match n {
        Notification::Notify { channel, .. } => channel == CHANNEL,
        Notification::Resync => true,
    }
}
