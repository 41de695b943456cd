//! The expiry of unpaid orders: every so often, orders still NEW
//! `ORDERS_PAYMENT_TIMEOUT_MS` after they were created are cancelled with
//! reason EXPIRED, exactly as a customer's cancel ([`orders::expire`]): the
//! ledger voids a payment not yet decided, so the customer is never charged
//! for them, even if payments comes back later and sees the old request.
//! Every replica sweeps; `FOR UPDATE SKIP LOCKED` keeps them apart, and the
//! state is checked when the sweep runs, so nothing is ever un-scheduled.
//! Each payment request tells the ledger to pay before the expiry minus
//! [`ExpiryConfig::clock_margin`], so hosts whose clocks differ by less than
//! that never debit an order after it expired.

use crate::orders;
use shop_db::Pool;
use shop_db::outbox::RelayWake;
use shop_runtime::{ConfigError, Env};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `ORDERS_PAYMENT_TIMEOUT_MS` and how often to look.
#[derive(Debug, Clone)]
pub struct ExpiryConfig {
    /// How long an order may wait for its payment (default 15 min).
    pub timeout: Duration,
    /// Time between sweeps: a tenth of the timeout, 100 ms to 10 s.
    pub interval: Duration,
    /// Orders expired per transaction.
    pub batch_size: i64,
    /// How much earlier than the expiry the ledger stops debiting (each
    /// payment request's `pay_before`): clocks of the orders and payments
    /// hosts may differ by this much without an order being debited after
    /// it expired. A tenth of the timeout, at most 5 s.
    pub clock_margin: Duration,
}

impl Default for ExpiryConfig {
    fn default() -> Self {
        Self::with_timeout(Duration::from_secs(15 * 60))
    }
}

impl ExpiryConfig {
    /// Sweeps for `timeout`, at a tenth of it.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            timeout,
            interval: (timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(10)),
            batch_size: 500,
            clock_margin: (timeout / 10).min(Duration::from_secs(5)),
        }
    }

    /// Reads `{PREFIX}PAYMENT_TIMEOUT_MS`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let default = Self::default();
        let timeout = env.millis_or("PAYMENT_TIMEOUT_MS", default.timeout)?;
        if timeout.is_zero() {
            return Err(env.invalid(
                "PAYMENT_TIMEOUT_MS",
                "0",
                "an order needs some time to be paid",
            ));
        }
        Ok(Self::with_timeout(timeout))
    }
}

/// Sweeps until `shutdown`. A database error is logged and the next sweep
/// tries again: expiry is late, never lost.
pub async fn run(
    pool: Pool,
    config: ExpiryConfig,
    requests_topic: String,
    relay: RelayWake,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!(
        timeout_ms = config.timeout.as_millis() as u64,
        "order expiry sweep started"
    );
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(config.interval) => {}
        }
        // A full batch means more are waiting (after an outage): go on at once.
        loop {
            match sweep(&pool, &config, &requests_topic).await {
                Ok(0) => break,
                Ok(n) => {
                    metrics::counter!("shop_order_expiries_total").increment(n as u64);
                    relay.wake();
                    if (n as i64) < config.batch_size || shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "expiry sweep failed; trying again");
                    break;
                }
            }
        }
    }
}

/// One transaction of expiries; returns how many orders it cancelled.
async fn sweep(pool: &Pool, config: &ExpiryConfig, topic: &str) -> anyhow::Result<usize> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let n = orders::expire(&tx, topic, config.timeout, config.batch_size).await?;
    tx.commit().await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_runs_at_a_tenth_of_the_timeout_within_bounds() {
        assert_eq!(ExpiryConfig::default().interval, Duration::from_secs(10));
        assert_eq!(
            ExpiryConfig::with_timeout(Duration::from_secs(2)).interval,
            Duration::from_millis(200)
        );
        assert_eq!(
            ExpiryConfig::with_timeout(Duration::from_millis(300)).interval,
            Duration::from_millis(100)
        );
        assert_eq!(ExpiryConfig::default().clock_margin, Duration::from_secs(5));
        assert_eq!(
            ExpiryConfig::with_timeout(Duration::from_secs(2)).clock_margin,
            Duration::from_millis(200)
        );
        let env = Env::from_pairs("ORDERS_", [("ORDERS_PAYMENT_TIMEOUT_MS", "0")]);
        assert!(ExpiryConfig::from_env(&env).is_err());
    }
}
