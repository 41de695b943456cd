//! The outbox relay. It does not update the rows it publishes: it reads the
//! outbox between two PostgreSQL snapshots and keeps one cursor
//! (`outbox_relay`, see `db/sql/messaging_cursor.sql`), the way PgQ reads
//! its queues. Every outbox row carries its writing transaction (`txid`). A
//! row is behind the cursor once that transaction is visible in the
//! cursor's snapshot `lo`; the **window** being published holds the rows
//! visible in snapshot `hi` and not in `lo`, in the order of their
//! transaction ids, then row ids (one walk of the `outbox_txid` index,
//! however many rows are behind the cursor), and (`after_txid`,
//! `after_id`) says how far into it the relay has got. A transaction
//! still in flight when `hi` was taken is in neither: it falls into the
//! next window, so a row that commits late is never skipped (a plain
//! `id > last_id` cursor would skip it).
//!
//! **Order.** Windows follow commit order: a window holds only
//! transactions that committed before its snapshot. Within one, rows go
//! out in the order their transactions took their ids, then in insert
//! order. Two events about one key therefore keep their order whenever the
//! second's transaction took its id after the first committed, which is
//! how every writer here is built: an API call's first write is the row it
//! changes (so it waits for, and follows, the transaction before it), and
//! an inbox batch follows the previous batch of its partition. Events of
//! unrelated transactions have no order to keep.
//!
//! One pass ([`Relay::publish_batch`]):
//!
//! 1. **read** (`WINDOW`, one statement): take or renew the cursor's lease,
//!    open a window if none is open (`hi` = the statement's own snapshot),
//!    and read up to `RELAY_BATCH_SIZE` rows of it after the cursor. Only
//!    the lease holder reads: one relay per database publishes at a time,
//!    and a crashed holder's lease simply expires (`RELAY_LEASE_MS`);
//! 2. **publish** them with the idempotent producer and await every
//!    delivery report, renewing the lease meanwhile (every third of
//!    `RELAY_LEASE_MS`), so a slow publish never loses the cursor;
//! 3. **advance** (`ADVANCE`, one statement whatever the batch size): move
//!    the cursor past what was published, or close the window (`lo = hi`)
//!    when it is exhausted. Only the holder can move the cursor.
//!
//! A row the broker refuses for what it is (too large, invalid) is set
//! aside (`retry_at`) so the cursor moves on: a separate retry path
//! ([`Relay::retry_batch`]) publishes set-aside rows with a backoff of
//! their own and parks one after `RELAY_MAX_ATTEMPTS`, so one bad row
//! never throttles the rest. When the broker itself fails (a timeout, no
//! leader, the broker down) the cursor stops before the first failed row
//! and the relay backs off.
//!
//! A crash between publish and advance only means a re-publish, which
//! consumers deduplicate by event id (their inbox). [`Relay::run`] makes
//! passes while there is work, then waits for a wake-up from a writer in
//! this process ([`RelayWake`]), a NOTIFY on [`CHANNEL`] from outside, or
//! the polling interval. A replica that does not hold the cursor passes its
//! own writers' wake-ups on to the holder with a NOTIFY.

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

/// The relay's histogram and its bucket bounds (seconds): commit → publish.
pub const HISTOGRAMS: &[(&str, &[f64])] = &[(
    "shop_outbox_publish_delay_seconds",
    &[
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0,
    ],
)];

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

crate::from_db_errors!(RelayError);

/// Takes (or renews) the cursor's lease, opens a window when none is open,
/// and reads the next rows of it: one walk of the `outbox_txid` index from
/// the cursor on (the lateral join makes the cursor's values the index
/// scan's bounds, however many rows lie behind it). Always returns one row at least: the
/// first column says whether this relay holds the cursor; the others are
/// NULL when the window has nothing more. Within one statement the
/// data-modifying CTE and the query share a snapshot: a window opened here
/// (`hi`) is exactly what the query sees.
const WINDOW: &str = "WITH cursor AS (
         UPDATE outbox_relay
         SET holder = $1,
             leased_until = clock_timestamp() + $2::bigint * interval '1 millisecond',
             hi = coalesce(hi, pg_current_snapshot())
         WHERE single = true
           AND (holder = $1 OR leased_until IS NULL OR leased_until < clock_timestamp())
         RETURNING lo, hi, after_txid, after_id)
     SELECT EXISTS (SELECT 1 FROM cursor) AS holding,
            o.id, o.event_id, o.topic, o.key, o.event_type, o.payload, o.traceparent, o.waited
     FROM (SELECT 1) AS one
     LEFT JOIN LATERAL (
         SELECT w.* FROM cursor c CROSS JOIN LATERAL (
             SELECT o.txid, o.id, o.event_id, o.topic, o.key, o.event_type, o.payload,
                    o.traceparent, extract(epoch FROM clock_timestamp() - o.created_at)::float8 AS waited
             FROM outbox o
             WHERE (o.txid, o.id) > (c.after_txid, c.after_id)
               AND o.txid < pg_snapshot_xmax(c.hi)
               AND pg_visible_in_snapshot(o.txid, c.hi)
               AND NOT pg_visible_in_snapshot(o.txid, c.lo)
             ORDER BY o.txid, o.id
             LIMIT $3::bigint) w) o ON true
     ORDER BY o.txid, o.id";

/// Moves the cursor: past row `$3` within the window, or (`$2`) closes the
/// window. Also renews the lease. Fenced by the holder: a relay that lost
/// the lease moves nothing.
const ADVANCE: &str = "UPDATE outbox_relay
     SET lo = CASE WHEN $2 THEN hi ELSE lo END,
         hi = CASE WHEN $2 THEN NULL ELSE hi END,
         after_txid = CASE WHEN $2 THEN pg_snapshot_xmin(hi)
                           ELSE (SELECT txid FROM outbox WHERE id = $3::bigint) END,
         after_id = CASE WHEN $2 THEN 0 ELSE $3::bigint END,
         leased_until = clock_timestamp() + $4::bigint * interval '1 millisecond'
     WHERE holder = $1";

/// Extends the holder's lease while the broker answers.
const RENEW: &str = "UPDATE outbox_relay
     SET leased_until = clock_timestamp() + $2::bigint * interval '1 millisecond'
     WHERE holder = $1";

/// Extends the lease of retried rows still being published.
const RENEW_ROWS: &str =
    "UPDATE outbox SET retry_at = clock_timestamp() + $2::bigint * interval '1 millisecond'
     WHERE id = ANY($1) AND retry_at IS NOT NULL";

/// Which lease a publish renews while the broker answers.
#[derive(Debug, Clone, Copy)]
enum Lease {
    /// The cursor's (a pass over the window).
    Cursor,
    /// The retried rows' own (`retry_at`).
    Rows,
}

/// Lets the cursor go on shutdown, so another replica takes it at once.
const RELEASE: &str =
    "UPDATE outbox_relay SET holder = NULL, leased_until = NULL WHERE holder = $1";

/// Claims set-aside rows whose backoff is over; `retry_at` is their lease.
/// Only the few rows of the partial index `outbox_retry` are read: ordering
/// by id, or comparing with the volatile `clock_timestamp()`, would walk
/// the whole outbox every poll (230 ms a poll with 1,000,000 rows).
const RETRY_CLAIM: &str =
    "UPDATE outbox SET retry_at = clock_timestamp() + $2::bigint * interval '1 millisecond'
     WHERE id IN (
         SELECT id FROM outbox
         WHERE retry_at <= now() AND parked_at IS NULL
         ORDER BY retry_at LIMIT $1
         FOR UPDATE SKIP LOCKED)
     RETURNING id, event_id, topic, key, event_type, payload, traceparent,
               extract(epoch FROM clock_timestamp() - created_at)::float8 AS waited";

/// A retried row went out.
const RETRY_PUBLISHED: &str = "UPDATE outbox
     SET retry_at = NULL, published_at = clock_timestamp(), attempts = attempts + 1, last_error = NULL
     WHERE id = ANY($1)";

/// Retried rows that failed for the broker's sake: due again at once (the
/// relay itself backs off).
const RETRY_RELEASE: &str =
    "UPDATE outbox SET retry_at = clock_timestamp(), last_error = $2 WHERE id = ANY($1)";

/// A row refused for itself: its own backoff, parked at the limit.
const SET_ASIDE: &str = "UPDATE outbox
     SET attempts = attempts + 1, last_error = $2,
         retry_at = CASE WHEN attempts + 1 >= $3 THEN NULL
                         ELSE clock_timestamp() + least(power(2, attempts) * 100, 60000) * interval '1 millisecond' END,
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
    /// Seconds from the row's insert to its read.
    waited: f64,
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
            waited: r.try_get("waited")?,
        })
    }
}

/// What one pass over the window did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pass {
    /// This relay holds the cursor.
    holding: bool,
    /// Rows that went out.
    published: usize,
    /// The batch was full: more may be waiting.
    full: bool,
}

/// The outcome of publishing a batch: which rows went out, which the
/// broker refused for themselves, and the first row that failed for the
/// broker's sake (everything from there on must be tried again).
struct Sent<'a> {
    published: Vec<&'a Pending>,
    refused: Vec<(&'a Pending, KafkaError)>,
    broker_failed: Vec<(&'a Pending, KafkaError)>,
}

/// Publishes the outbox of one database.
#[derive(Clone)]
pub struct Relay {
    pool: Pool,
    producer: FutureProducer,
    config: RelayConfig,
    wake: RelayWake,
    /// This relay's name on the cursor's lease.
    holder: Uuid,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.config)
            .field("holder", &self.holder)
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
            holder: Uuid::new_v4(),
        }
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// One pass over the window: reads, publishes and advances one batch;
    /// returns how many events were published (0 also when another relay
    /// holds the cursor). `Err` only when nothing could be published.
    pub async fn publish_batch(&self) -> Result<usize, RelayError> {
        Ok(self.pass().await?.published)
    }

    async fn pass(&self) -> Result<Pass, RelayError> {
        let client = self.pool.get().await?;
        let window = client.prepare_cached(WINDOW).await?;
        let rows = client
            .query(
                &window,
                &[&self.holder, &self.lease_ms(), &self.config.batch_size],
            )
            .await?;
        let holding = match rows.first() {
            Some(row) => row.try_get::<_, bool>("holding")?,
            None => false,
        };
        let mut pending = Vec::with_capacity(rows.len());
        for row in &rows {
            if row.try_get::<_, Option<i64>>("id")?.is_some() {
                pending.push(Pending::try_from(row)?);
            }
        }
        if !holding {
            return Ok(Pass {
                holding,
                published: 0,
                full: false,
            });
        }
        let full = i64::try_from(pending.len()).unwrap_or(i64::MAX) >= self.config.batch_size;
        let read_at = std::time::Instant::now();
        let sent = self.send_all(&client, &pending, Lease::Cursor).await;
        let published = sent.published.len();
        self.record_published(&sent, read_at.elapsed().as_secs_f64());

        // The cursor may move through the rows before the first the broker
        // failed on (in window order); a short batch that all went out
        // closes the window.
        let failed_at = sent
            .broker_failed
            .iter()
            .filter_map(|(failed, _)| pending.iter().position(|p| p.id == failed.id))
            .min();
        let passed = &pending[..failed_at.unwrap_or(pending.len())];
        // The rows the broker refused for themselves go to the retry path,
        // before the cursor moves past them; those after a failure are read
        // again with the rest, next pass.
        let mut set_aside = 0;
        for (p, error) in &sent.refused {
            if passed.iter().any(|q| q.id == p.id) {
                self.set_aside(&client, p, error).await?;
                set_aside += 1;
            }
        }
        let through = passed.last().map(|p| p.id);
        let closes = failed_at.is_none() && !full;
        if closes || through.is_some() {
            let advance = client.prepare_cached(ADVANCE).await?;
            let moved = client
                .execute(
                    &advance,
                    &[
                        &self.holder,
                        &closes,
                        &through.unwrap_or(0),
                        &self.lease_ms(),
                    ],
                )
                .await?;
            if moved == 0 {
                tracing::warn!("the relay lost the outbox cursor's lease; another relay publishes");
            }
        }
        if let Some((_, first)) = sent.broker_failed.first()
            && published == 0
            && set_aside == 0
        {
            return Err(RelayError::Publish {
                failed: sent.broker_failed.len(),
                first: first.clone(),
            });
        }
        Ok(Pass {
            holding,
            published,
            full: full && failed_at.is_none(),
        })
    }

    /// One pass of the retry path: publishes set-aside rows whose backoff
    /// is over (any relay may, the rows are claimed one by one); returns
    /// how many went out. `Err` only when nothing could be published.
    pub async fn retry_batch(&self) -> Result<usize, RelayError> {
        let client = self.pool.get().await?;
        let claim = client.prepare_cached(RETRY_CLAIM).await?;
        let rows = client
            .query(&claim, &[&self.config.batch_size, &self.lease_ms()])
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
        let read_at = std::time::Instant::now();
        let sent = self.send_all(&client, &pending, Lease::Rows).await;
        self.record_published(&sent, read_at.elapsed().as_secs_f64());
        if !sent.published.is_empty() {
            let ids: Vec<i64> = sent.published.iter().map(|p| p.id).collect();
            client.execute(RETRY_PUBLISHED, &[&ids]).await?;
        }
        for (p, error) in &sent.refused {
            self.set_aside(&client, p, error).await?;
        }
        if let Some((_, first)) = sent.broker_failed.first() {
            let ids: Vec<i64> = sent.broker_failed.iter().map(|(p, _)| p.id).collect();
            client
                .execute(RETRY_RELEASE, &[&ids, &first.to_string()])
                .await?;
            if sent.published.is_empty() && sent.refused.is_empty() {
                return Err(RelayError::Publish {
                    failed: sent.broker_failed.len(),
                    first: first.clone(),
                });
            }
        }
        Ok(sent.published.len())
    }

    /// Publishes `pending` and awaits every delivery report, renewing the
    /// `lease` meanwhile.
    async fn send_all<'a>(
        &self,
        client: &deadpool_postgres::Object,
        pending: &'a [Pending],
        lease: Lease,
    ) -> Sent<'a> {
        let deliveries = futures::future::join_all(pending.iter().map(|p| self.send(p)));
        let deliveries = {
            let ids: Vec<i64> = pending.iter().map(|p| p.id).collect();
            let mut tick =
                tokio::time::interval((self.config.lease / 3).max(Duration::from_millis(10)));
            tick.tick().await; // the read itself was the first
            tokio::pin!(deliveries);
            loop {
                tokio::select! {
                    delivered = &mut deliveries => break delivered,
                    _ = tick.tick() => {
                        let renewed = match lease {
                            Lease::Cursor => client.execute(RENEW, &[&self.holder, &self.lease_ms()]).await,
                            Lease::Rows => client.execute(RENEW_ROWS, &[&ids, &self.lease_ms()]).await,
                        };
                        if let Err(e) = renewed {
                            tracing::warn!(error = %e, "cannot renew the relay's lease");
                        }
                    }
                }
            }
        };
        let mut sent = Sent {
            published: Vec::with_capacity(pending.len()),
            refused: Vec::new(),
            broker_failed: Vec::new(),
        };
        for (p, delivery) in pending.iter().zip(deliveries) {
            match delivery {
                Ok(()) => sent.published.push(p),
                // Only an error about the message itself counts toward
                // parking it; anything else (a timeout, a partition
                // without a leader, the broker down) is the broker's
                // trouble: try again.
                Err(e) if is_about_the_message(&e) => sent.refused.push((p, e)),
                Err(e) => sent.broker_failed.push((p, e)),
            }
        }
        sent
    }

    fn record_published(&self, sent: &Sent<'_>, since_read: f64) {
        for p in &sent.published {
            metrics::histogram!("shop_outbox_publish_delay_seconds").record(p.waited + since_read);
        }
        metrics::counter!("shop_outbox_published_total").increment(sent.published.len() as u64);
        metrics::counter!("shop_outbox_publish_failures_total")
            .increment((sent.refused.len() + sent.broker_failed.len()) as u64);
    }

    async fn set_aside(
        &self,
        client: &deadpool_postgres::Object,
        p: &Pending,
        error: &KafkaError,
    ) -> Result<(), RelayError> {
        let parked: bool = client
            .query_one(
                SET_ASIDE,
                &[&p.id, &error.to_string(), &self.config.max_attempts],
            )
            .await?
            .try_get(0)?;
        if parked {
            metrics::counter!("shop_outbox_parked_total").increment(1);
            tracing::error!(outbox_id = p.id, %error, "outbox row parked after repeated publish failures");
        } else {
            tracing::warn!(outbox_id = p.id, %error, "outbox row not published, retrying it later");
        }
        Ok(())
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
    /// Once per polling interval it also retries set-aside rows. On
    /// shutdown it releases the cursor.
    /// Returns an error only when the producer meets a fatal error (the
    /// service then stops, and its supervisor restarts it).
    pub async fn run(
        self,
        listener: &Listener,
        shutdown: CancellationToken,
    ) -> Result<(), RelayError> {
        let mut notifications = listener.subscribe();
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        let mut outcome = Ok(());
        // Set-aside rows are looked for once per polling interval: their
        // own backoff is at least that coarse, and the window's passes
        // stay one statement each way.
        let mut retries_due = tokio::time::Instant::now();
        let mut woken_here = false;
        while !shutdown.is_cancelled() {
            if let Some((code, reason)) = self.producer.client().fatal_error() {
                outcome = Err(RelayError::Fatal(format!("{code:?}: {reason}")));
                break;
            }
            if tokio::time::Instant::now() >= retries_due {
                retries_due = tokio::time::Instant::now() + self.config.poll_interval;
                if let Err(e) = self.retry_batch().await {
                    tracing::warn!(error = %e, "set-aside outbox rows not published yet");
                }
            }
            let pause = match self.pass().await {
                Ok(pass) if pass.full => {
                    backoff.reset();
                    continue;
                }
                Ok(pass) => {
                    if pass.published > 0 {
                        tracing::debug!(published = pass.published, "outbox batch published");
                    }
                    if !pass.holding && woken_here {
                        // Our writers' rows are the holder's to publish: wake it.
                        self.notify_holder().await;
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
            woken_here = false;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
                _ = self.wake.woken() => woken_here = true,
                _ = outbox_notified(&mut notifications) => {}
            }
        }
        let producer = self.producer.clone();
        let flushed =
            tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5))).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "producer flush on shutdown failed");
        }
        self.release().await;
        tracing::info!("outbox relay stopped");
        outcome
    }

    /// A NOTIFY on [`CHANNEL`]: the relay holding the cursor, in another
    /// process, makes a pass now rather than at its next poll.
    async fn notify_holder(&self) {
        if let Err(e) = self.execute("SELECT pg_notify($1, '')", &[&CHANNEL]).await {
            tracing::debug!(error = %e, "cannot wake the relay holding the outbox cursor");
        }
    }

    /// Gives up the cursor's lease, if this relay holds it.
    async fn release(&self) {
        if let Err(e) = self.execute(RELEASE, &[&self.holder]).await {
            tracing::warn!(error = %e, "cannot release the outbox cursor; its lease will expire");
        }
    }

    /// One statement of the relay's own bookkeeping, on a pooled connection.
    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<(), DbError> {
        self.pool.get().await?.execute(sql, params).await?;
        Ok(())
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
