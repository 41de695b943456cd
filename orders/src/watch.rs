//! WatchOrder, behind the gateway's SSE: the order's current state first,
//! then every change, ending after a final status. Changes arrive as Postgres NOTIFYs (so any replica's
//! update reaches every watcher); a periodic re-read covers a lost listener.

use crate::domain::Order;
use crate::orders::{self, OrderError};
use crate::persistence::STATUS_CHANNEL;
use shop_db::Pool;
use shop_db::listen::{Listener, Notification};
use shop_proto::values::OrderId;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Re-read the order at least this often, whatever the notifications say.
const RECHECK: Duration = Duration::from_secs(5);

/// Starts watching; fails at once (before any stream) if the order is unknown.
pub async fn watch(
    pool: Pool,
    listener: &Listener,
    id: OrderId,
    shutdown: CancellationToken,
) -> Result<mpsc::Receiver<Result<Order, OrderError>>, OrderError> {
    // Subscribe before the first read so no change can slip in between.
    let mut changes = listener.subscribe();
    let first = read(&pool, id).await?;
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let id_text = id.to_string();
        let mut last = first.clone();
        if tx.send(Ok(first)).await.is_err() || last.status.is_final() {
            return;
        }
        // One interval for the whole watch: unrelated notifications do not
        // postpone the periodic re-read.
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        recheck.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                _ = recheck.tick() => {}
                n = changes.recv() => match n {
                    Ok(Notification::Notify { channel, payload }) if channel != STATUS_CHANNEL || payload != id_text => continue,
                    _ => {}
                },
            }
            match read(&pool, id).await {
                Ok(order) if order != last => {
                    last = order.clone();
                    if tx.send(Ok(order)).await.is_err() || last.status.is_final() {
                        return;
                    }
                }
                Ok(_) => {}
                // The next notification or re-read tries again.
                Err(OrderError::Db(e)) if e.is_transient() => {
                    tracing::warn!(order_id = %id, error = %e, "cannot re-read a watched order, will retry");
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// The order as it is now, on a connection of its own.
async fn read(pool: &Pool, id: OrderId) -> Result<Order, OrderError> {
    let client = pool.get().await?;
    orders::get(&client, id).await
}
