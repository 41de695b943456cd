//! Retention: old rows deleted in small batches, so no table grows forever.
//!
//! - published outbox rows after `RETENTION_OUTBOX_HOURS`;
//! - inbox rows after `RETENTION_INBOX_HOURS` (longer than any redelivery
//!   can arrive; even later, the business guards hold: a payment is decided
//!   once per order by the ledger's primary key, and a final order status
//!   never changes);
//! - replayed dead letters after `RETENTION_DEAD_LETTERS_HOURS`;
//! - the service's own rows ([`Sweep`]s given by its `persistence`), e.g.
//!   idempotency keys after `RETENTION_IDEMPOTENCY_HOURS` (at least 24).
//!
//! Each statement removes at most `RETENTION_BATCH_SIZE` rows per
//! transaction, so the sweep never holds many locks or a long transaction.

use crate::{DbError, Pool};
use shop_runtime::{ConfigError, Env};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often and how much to delete.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// `{PREFIX}RETENTION_INTERVAL_MS`: time between sweeps.
    pub interval: Duration,
    /// `{PREFIX}RETENTION_BATCH_SIZE`: rows per statement.
    pub batch_size: i64,
    /// `{PREFIX}RETENTION_OUTBOX_HOURS`: age of published outbox rows.
    pub outbox: Duration,
    /// `{PREFIX}RETENTION_INBOX_HOURS`: age of inbox rows.
    pub inbox: Duration,
    /// `{PREFIX}RETENTION_DEAD_LETTERS_HOURS`: age of replayed dead letters.
    pub dead_letters: Duration,
    /// `{PREFIX}RETENTION_IDEMPOTENCY_HOURS`: age of idempotency keys.
    pub idempotency: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let hours = |h: u64| Duration::from_secs(h * 3600);
        Self {
            interval: Duration::from_secs(60),
            batch_size: 1_000,
            outbox: hours(24),
            inbox: hours(7 * 24),
            dead_letters: hours(30 * 24),
            idempotency: hours(48),
        }
    }
}

impl RetentionConfig {
    /// Reads the `RETENTION_*` variables.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let hours = |name: &str, default: Duration, at_least: u64| {
            let value: u64 = env.parse_or(name, default.as_secs() / 3600)?;
            if value < at_least {
                return Err(env.invalid(
                    name,
                    &value.to_string(),
                    &format!("must be at least {at_least}"),
                ));
            }
            Ok(Duration::from_secs(value * 3600))
        };
        let batch_size: i64 = env.parse_or("RETENTION_BATCH_SIZE", defaults.batch_size)?;
        if !(1..=100_000).contains(&batch_size) {
            return Err(env.invalid(
                "RETENTION_BATCH_SIZE",
                &batch_size.to_string(),
                "must be 1..=100000",
            ));
        }
        Ok(Self {
            interval: env.millis_or("RETENTION_INTERVAL_MS", defaults.interval)?,
            batch_size,
            outbox: hours("RETENTION_OUTBOX_HOURS", defaults.outbox, 1)?,
            inbox: hours("RETENTION_INBOX_HOURS", defaults.inbox, 1)?,
            dead_letters: hours("RETENTION_DEAD_LETTERS_HOURS", defaults.dead_letters, 1)?,
            idempotency: hours("RETENTION_IDEMPOTENCY_HOURS", defaults.idempotency, 24)?,
        })
    }
}

/// Which age a sweep statement uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Age {
    Outbox,
    Inbox,
    DeadLetters,
    Idempotency,
}

/// One kind of old row to remove: a statement that takes the cutoff age in
/// milliseconds (`$1`) and the batch size (`$2`), and touches at most that
/// many rows.
#[derive(Debug, Clone, Copy)]
pub struct Sweep {
    pub name: &'static str,
    pub age: Age,
    pub sql: &'static str,
}

/// The messaging tables' sweeps, in every service.
pub const MESSAGING: [Sweep; 3] = [
    Sweep {
        name: "published outbox rows",
        age: Age::Outbox,
        // Published: behind the relay's cursor and not waiting for a
        // retry (a retried row that went out has `retry_at` cleared).
        // Oldest first, by id: parked and set-aside rows stay.
        sql: "DELETE FROM outbox WHERE id IN (
                  SELECT o.id FROM outbox o CROSS JOIN outbox_relay c
                  WHERE o.created_at < now() - $1::bigint * interval '1 millisecond'
                    AND o.parked_at IS NULL AND o.retry_at IS NULL
                    AND pg_visible_in_snapshot(o.txid, c.lo)
                  ORDER BY o.id
                  LIMIT $2)",
    },
    Sweep {
        name: "inbox rows",
        age: Age::Inbox,
        sql: "DELETE FROM inbox WHERE event_id IN (
                  SELECT event_id FROM inbox
                  WHERE processed_at < now() - $1::bigint * interval '1 millisecond'
                  LIMIT $2)",
    },
    Sweep {
        name: "replayed dead letters",
        age: Age::DeadLetters,
        sql: "DELETE FROM dead_letters WHERE id IN (
                  SELECT id FROM dead_letters
                  WHERE replayed_at < now() - $1::bigint * interval '1 millisecond'
                  LIMIT $2)",
    },
];

/// Deletes old rows of one database.
#[derive(Debug, Clone)]
pub struct Retention {
    pool: Pool,
    config: RetentionConfig,
    sweeps: Vec<Sweep>,
}

impl Retention {
    /// The messaging sweeps plus the service's own `sweeps`.
    pub fn new(pool: Pool, config: RetentionConfig, sweeps: &[Sweep]) -> Self {
        Self {
            pool,
            config,
            sweeps: MESSAGING.iter().chain(sweeps).copied().collect(),
        }
    }

    fn age(&self, age: Age) -> Duration {
        match age {
            Age::Outbox => self.config.outbox,
            Age::Inbox => self.config.inbox,
            Age::DeadLetters => self.config.dead_letters,
            Age::Idempotency => self.config.idempotency,
        }
    }

    /// One sweep of every kind, batch after batch until none is full;
    /// returns how many rows each removed or changed.
    pub async fn sweep(&self) -> Result<Vec<(&'static str, u64)>, DbError> {
        let client = self.pool.get().await?;
        let mut done = Vec::with_capacity(self.sweeps.len());
        for sweep in &self.sweeps {
            let age_ms = i64::try_from(self.age(sweep.age).as_millis()).unwrap_or(i64::MAX);
            let statement = client.prepare_cached(sweep.sql).await?;
            let mut total = 0;
            loop {
                let n = client
                    .execute(&statement, &[&age_ms, &self.config.batch_size])
                    .await?;
                total += n;
                if n < u64::try_from(self.config.batch_size).unwrap_or(u64::MAX) {
                    break;
                }
            }
            if total > 0 {
                metrics::counter!("shop_retention_rows_total", "kind" => sweep.name)
                    .increment(total);
                tracing::info!(kind = sweep.name, rows = total, "retention sweep");
            }
            done.push((sweep.name, total));
        }
        Ok(done)
    }

    /// Sweeps every `RETENTION_INTERVAL_MS` until `shutdown`; a failed sweep
    /// is logged and tried again at the next interval.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(self.config.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = every.tick() => {}
            }
            if let Err(e) = self.sweep().await {
                tracing::warn!(error = %e, "retention sweep failed, trying again later");
            }
        }
    }
}
