//! The outbox relay: in one transaction it claims a batch of unpublished
//! rows (`ORDER BY id FOR UPDATE SKIP LOCKED`), publishes them with an
//! idempotent producer, awaits every delivery report, marks them published
//! and commits. Several relays may run at once; a crash before the commit
//! only means a re-publish, which consumers deduplicate by event id (their
//! inbox). Wake-ups come from the outbox trigger's NOTIFY, with polling as
//! the fallback.

use crate::backoff::Backoff;
use crate::headers;
use crate::listen::{Listener, Notification};
use crate::outbox::CHANNEL;
use crate::{DbError, Pool};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use shop_runtime::{ConfigError, Env};
use std::time::Duration;
use tokio::sync::broadcast::{Receiver, error::RecvError};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How the relay batches, polls and backs off.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// `{PREFIX}RELAY_BATCH_SIZE`: rows claimed per transaction.
    pub batch_size: i64,
    /// `{PREFIX}RELAY_POLL_INTERVAL_MS`: fallback polling when no NOTIFY arrives.
    pub poll_interval: Duration,
    /// First and largest delay after a failed batch.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl RelayConfig {
    /// Reads the `RELAY_*` variables.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let batch_size: i64 = env.parse_or("RELAY_BATCH_SIZE", 100)?;
        if !(1..=10_000).contains(&batch_size) {
            return Err(env.invalid(
                "RELAY_BATCH_SIZE",
                &batch_size.to_string(),
                "must be 1..=10000",
            ));
        }
        Ok(Self {
            batch_size,
            poll_interval: env.millis_or("RELAY_POLL_INTERVAL_MS", Duration::from_secs(1))?,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        })
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 100,
            poll_interval: Duration::from_secs(1),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// Why a batch was not (fully) published.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{failed} event(s) not published: {first}")]
    Publish { failed: usize, first: KafkaError },
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

struct Pending {
    id: i64,
    event_id: String,
    topic: String,
    key: Vec<u8>,
    event_type: String,
    payload: Vec<u8>,
    traceparent: Option<String>,
}

/// Publishes the outbox of one database.
#[derive(Clone)]
pub struct Relay {
    pool: Pool,
    producer: FutureProducer,
    config: RelayConfig,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay over `pool`'s outbox.
    pub fn new(pool: Pool, producer: FutureProducer, config: RelayConfig) -> Self {
        Self {
            pool,
            producer,
            config,
        }
    }

    /// Claims, publishes and marks one batch; returns how many were published.
    pub async fn publish_batch(&self) -> Result<usize, RelayError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                "SELECT id, event_id, topic, key, event_type, payload, traceparent FROM outbox
                 WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                &[&self.config.batch_size],
            )
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let pending = rows
            .iter()
            .map(|r| {
                Ok(Pending {
                    id: r.try_get("id")?,
                    event_id: r.try_get::<_, Uuid>("event_id")?.to_string(),
                    topic: r.try_get("topic")?,
                    key: r.try_get("key")?,
                    event_type: r.try_get("event_type")?,
                    payload: r.try_get("payload")?,
                    traceparent: r.try_get("traceparent")?,
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;

        let deliveries = futures::future::join_all(pending.iter().map(|p| self.send(p))).await;
        let mut published = Vec::with_capacity(pending.len());
        let mut first_error = None;
        let mut failed = 0;
        for (p, delivery) in pending.iter().zip(deliveries) {
            match delivery {
                Ok(()) => published.push(p.id),
                Err(e) => {
                    failed += 1;
                    tx.execute(
                        "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
                        &[&p.id, &e.to_string()],
                    )
                    .await?;
                    first_error.get_or_insert(e);
                }
            }
        }
        tx.execute(
            "UPDATE outbox SET published_at = now(), attempts = attempts + 1, last_error = NULL
             WHERE id = ANY($1)",
            &[&published],
        )
        .await?;
        tx.commit().await?;
        metrics::counter!("shop_outbox_published_total").increment(published.len() as u64);
        metrics::counter!("shop_outbox_publish_failures_total").increment(failed as u64);
        match first_error {
            None => Ok(published.len()),
            Some(first) => Err(RelayError::Publish { failed, first }),
        }
    }

    async fn send(&self, p: &Pending) -> Result<(), KafkaError> {
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: headers::EVENT_ID,
                value: Some(&p.event_id),
            })
            .insert(Header {
                key: headers::EVENT_TYPE,
                value: Some(&p.event_type),
            });
        if let Some(tp) = &p.traceparent {
            headers = headers.insert(Header {
                key: headers::TRACEPARENT,
                value: Some(tp),
            });
        }
        let record = FutureRecord::to(&p.topic)
            .key(&p.key)
            .payload(&p.payload)
            .headers(headers);
        self.producer
            .send(record, Duration::from_secs(5))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }

    /// Publishes until `shutdown`: drains the outbox, then waits for a
    /// NOTIFY (or the polling interval); backs off after failures.
    pub async fn run(self, listener: &Listener, shutdown: CancellationToken) {
        let mut wake = listener.subscribe();
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        while !shutdown.is_cancelled() {
            let pause = match self.publish_batch().await {
                Ok(0) => {
                    backoff.reset();
                    self.config.poll_interval
                }
                Ok(n) => {
                    tracing::debug!(published = n, "outbox batch published");
                    backoff.reset();
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay failed, backing off");
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
                _ = outbox_written(&mut wake) => {}
            }
        }
        if let Err(e) = self.producer.flush(Duration::from_secs(5)) {
            tracing::warn!(error = %e, "producer flush on shutdown failed");
        }
        tracing::info!("outbox relay stopped");
    }
}

/// Resolves when the outbox may have new rows: its NOTIFY, a listener resync,
/// or missed notifications. Never resolves once the listener is gone (the
/// polling interval takes over).
async fn outbox_written(wake: &mut Receiver<Notification>) {
    loop {
        match wake.recv().await {
            Ok(Notification::Notify { channel, .. }) if channel != CHANNEL => continue,
            Ok(_) | Err(RecvError::Lagged(_)) => return,
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}
