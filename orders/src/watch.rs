//! WatchOrder, behind the gateway's SSE: the order's current state first,
//! then every change, ending after a final status. Changes arrive as
//! Postgres NOTIFYs (so any replica's update reaches every watcher); a
//! periodic re-read covers a lost listener.
//!
//! One task per process reads the status notifications and wakes only the
//! watchers of the orders named in them: a change costs one map lookup per
//! order, not one wake-up per watcher.

use crate::domain::Order;
use crate::orders::{self, OrderError};
use crate::persistence::STATUS_CHANNEL;
use shop_db::Pool;
use shop_db::listen::{Listener, Notification};
use shop_proto::values::OrderId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Re-read the order at least this often, whatever the notifications say.
const RECHECK: Duration = Duration::from_secs(5);

/// The watchers of each order in this process, woken by the status
/// notifications of their order only.
#[derive(Debug, Clone, Default)]
pub struct Watchers {
    by_order: Arc<Mutex<HashMap<Uuid, Vec<Arc<Notify>>>>>,
}

impl Watchers {
    /// Routes `listener`'s status notifications to the watchers until
    /// `shutdown`.
    pub fn spawn(listener: &Listener, shutdown: CancellationToken) -> Self {
        let watchers = Self::default();
        let mut notifications = listener.subscribe();
        let routing = watchers.clone();
        tokio::spawn(async move {
            loop {
                let notification = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    n = notifications.recv() => n,
                };
                match notification {
                    Ok(Notification::Notify { channel, payload }) if channel == STATUS_CHANNEL => {
                        routing.wake(payload.split(',').filter_map(|id| id.parse().ok()));
                    }
                    Ok(Notification::Notify { .. }) => {}
                    // Listening restarted or this task fell behind: any
                    // change may have been missed, so every watcher re-reads.
                    Ok(Notification::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        routing.wake_all();
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        watchers
    }

    /// Registers a watcher of `id`; it is woken until the guard drops.
    fn register(&self, id: OrderId) -> Registration {
        let wake = Arc::new(Notify::new());
        self.lock()
            .entry(*id.as_uuid())
            .or_default()
            .push(wake.clone());
        Registration {
            watchers: self.clone(),
            id: *id.as_uuid(),
            wake,
        }
    }

    fn wake(&self, ids: impl Iterator<Item = Uuid>) {
        let by_order = self.lock();
        for id in ids {
            for wake in by_order.get(&id).into_iter().flatten() {
                wake.notify_one();
            }
        }
    }

    fn wake_all(&self) {
        for wake in self.lock().values().flatten() {
            wake.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Vec<Arc<Notify>>>> {
        // The map stays consistent whatever a panicking holder did.
        self.by_order.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One watcher's place in [`Watchers`]; dropping it unregisters.
struct Registration {
    watchers: Watchers,
    id: Uuid,
    wake: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut by_order = self.watchers.lock();
        if let Some(wakes) = by_order.get_mut(&self.id) {
            wakes.retain(|wake| !Arc::ptr_eq(wake, &self.wake));
            if wakes.is_empty() {
                by_order.remove(&self.id);
            }
        }
    }
}

/// Starts watching; fails at once (before any stream) if the order is unknown.
pub async fn watch(
    pool: Pool,
    watchers: &Watchers,
    id: OrderId,
    shutdown: CancellationToken,
) -> Result<mpsc::Receiver<Result<Order, OrderError>>, OrderError> {
    // Register before the first read so no change can slip in between (a
    // wake-up is kept until the watcher waits for it).
    let registration = watchers.register(id);
    let first = read(&pool, id).await?;
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
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
                () = registration.wake.notified() => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `registration` was woken (its permit is kept until awaited).
    async fn woken(registration: &Registration) -> bool {
        tokio::time::timeout(Duration::from_millis(50), registration.wake.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_change_wakes_only_the_watchers_of_its_order_until_they_go() {
        let watchers = Watchers::default();
        let (a, b) = (OrderId::new(), OrderId::new());
        let (first_of_a, second_of_a, of_b) = (
            watchers.register(a),
            watchers.register(a),
            watchers.register(b),
        );

        watchers.wake([*a.as_uuid()].into_iter());
        assert!(woken(&first_of_a).await && woken(&second_of_a).await);
        assert!(
            !woken(&of_b).await,
            "another order's change wakes nobody else"
        );

        // A resync (or a lagged router) wakes every watcher.
        watchers.wake_all();
        assert!(woken(&first_of_a).await && woken(&of_b).await);

        drop((first_of_a, second_of_a));
        assert!(
            !watchers.lock().contains_key(a.as_uuid()),
            "unregistered on drop"
        );
        assert_eq!(watchers.lock()[b.as_uuid()].len(), 1);
    }
}
