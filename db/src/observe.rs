//! Gauges read from the database every few seconds, for dashboards and
//! alerts: the outbox backlog and the age of its oldest unpublished row,
//! parked outbox rows, and dead letters waiting for a replay.

use crate::{DbError, Pool};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const EVERY: Duration = Duration::from_secs(5);

/// Reads the gauges every five seconds until `shutdown`.
pub async fn run(pool: Pool, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = every.tick() => {}
        }
        if let Err(e) = read(&pool).await {
            tracing::debug!(error = %e, "cannot read the messaging gauges");
        }
    }
}

async fn read(pool: &Pool) -> Result<(), DbError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT
                 -- Rows ahead of the relay's cursor and set-aside rows:
                 -- an index range from the cursor on (outbox_txid), plus
                 -- the few of outbox_retry.
                 (SELECT count(*) FROM outbox_pending),
                 coalesce((SELECT extract(epoch FROM now() - min(created_at))::float8
                  FROM outbox_pending), 0),
                 (SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL),
                 (SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL)",
        )
        .await?;
    let row = client.query_one(&statement, &[]).await?;
    let backlog: i64 = row.try_get(0)?;
    let oldest: f64 = row.try_get(1)?;
    let parked: i64 = row.try_get(2)?;
    let dead_letters: i64 = row.try_get(3)?;
    metrics::gauge!("shop_outbox_backlog").set(backlog as f64);
    metrics::gauge!("shop_outbox_oldest_unpublished_seconds").set(oldest);
    metrics::gauge!("shop_outbox_parked").set(parked as f64);
    metrics::gauge!("shop_dead_letters_pending").set(dead_letters as f64);
    Ok(())
}
