//! Which partitions this member owns, and the fencing that keeps a revoked
//! partition's worker from applying or storing anything once its new owner
//! may have started.
//!
//! Every assignment of a partition is a claim with a fresh epoch and its
//! own stop token. On revoke (librdkafka's rebalance callback, see
//! [`crate::kafka::InboxContext`]) the member, before it lets the partition
//! go:
//!
//! 1. cancels the claim: the worker takes no more messages, drops what is
//!    queued, and finishes (or, past a grace period, abandons) the batch in
//!    flight;
//! 2. waits, up to `INBOX_REVOKE_TIMEOUT_MS`, until the worker is gone;
//! 3. removes the claim, so a worker that outlived the wait can no longer
//!    store an offset ([`Ownership::store_if_owned`] checks the epoch under
//!    the same lock), and the committed offset never moves backwards;
//! 4. commits the stored offsets.
//!
//! A batch applied but not stored is applied again by the new owner, and its
//! inbox rows make that a no-op: exactly once either way.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What a partition's worker holds while it owns the partition.
#[derive(Debug)]
pub struct WorkerClaim {
    pub partition: i32,
    pub epoch: u64,
    /// Cancelled on revoke and on shutdown.
    pub stop: CancellationToken,
    /// Dropped when the worker is gone: the revoke waits for that.
    _alive: mpsc::Sender<()>,
}

struct Claim {
    epoch: u64,
    stop: CancellationToken,
    /// Until a worker takes it.
    alive: Option<mpsc::Sender<()>>,
    /// Disconnected once the worker holding `alive` is gone.
    gone: Option<mpsc::Receiver<()>>,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "epoch {}", self.epoch)
    }
}

/// The partitions of one topic this member owns now.
#[derive(Debug)]
pub struct Ownership {
    claims: Mutex<HashMap<i32, Claim>>,
    next_epoch: AtomicU64,
    /// Bumped on every change, so the reader knows when to prune.
    generation: AtomicU64,
    revoke_timeout_ms: AtomicU64,
    /// Parent of every claim's stop token: cancelled on shutdown.
    root: CancellationToken,
}

impl Default for Ownership {
    fn default() -> Self {
        Self {
            claims: Mutex::default(),
            next_epoch: AtomicU64::new(1),
            generation: AtomicU64::new(0),
            revoke_timeout_ms: AtomicU64::new(5_000),
            root: CancellationToken::new(),
        }
    }
}

impl Ownership {
    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Claim>> {
        self.claims.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long a revoke waits for a partition's worker.
    pub fn set_revoke_timeout(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.revoke_timeout_ms.store(ms, Ordering::Relaxed);
    }

    /// Changes with every assignment or revocation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// This member now owns `partitions` (each gets a new epoch).
    pub fn assign(&self, partitions: impl IntoIterator<Item = i32>) {
        let mut claims = self.claims();
        for partition in partitions {
            let (alive, gone) = mpsc::channel();
            let claim = Claim {
                epoch: self.next_epoch.fetch_add(1, Ordering::Relaxed),
                stop: self.root.child_token(),
                alive: Some(alive),
                gone: Some(gone),
            };
            if let Some(old) = claims.insert(partition, claim) {
                old.stop.cancel();
            }
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The current epoch of `partition`, if this member owns it.
    pub fn epoch(&self, partition: i32) -> Option<u64> {
        self.claims().get(&partition).map(|c| c.epoch)
    }

    /// What a new worker for `partition` needs; `None` if the partition is
    /// not owned, or its claim already has a worker.
    pub fn take_for_worker(&self, partition: i32) -> Option<WorkerClaim> {
        let mut claims = self.claims();
        let claim = claims.get_mut(&partition)?;
        let alive = claim.alive.take()?;
        Some(WorkerClaim {
            partition,
            epoch: claim.epoch,
            stop: claim.stop.clone(),
            _alive: alive,
        })
    }

    /// Runs `store` (storing an offset) only while `claim` is still the
    /// partition's current claim; the revoke cannot slip in between.
    pub fn store_if_owned<T>(&self, claim: &WorkerClaim, store: impl FnOnce() -> T) -> Option<T> {
        let claims = self.claims();
        match claims.get(&claim.partition) {
            Some(current) if current.epoch == claim.epoch => Some(store()),
            _ => None,
        }
    }

    /// Steps 1–3 of a revoke (see the module docs): stops the partitions'
    /// workers, waits for them up to the revoke timeout — only where the
    /// runtime lets this thread block — and drops their claims. Returns the
    /// partitions whose worker was not seen to stop (it outlived the wait,
    /// or nothing could wait); fencing holds for them all the same.
    pub fn revoke(&self, partitions: &[i32]) -> Vec<i32> {
        // Under the lock: stop each worker and take what tells us it is gone
        // (a claim that never got a worker has nothing to wait for).
        let mut waiting: Vec<(i32, mpsc::Receiver<()>)> = Vec::new();
        {
            let mut claims = self.claims();
            for partition in partitions {
                if let Some(claim) = claims.get_mut(partition) {
                    claim.stop.cancel();
                    if claim.alive.is_none()
                        && let Some(gone) = claim.gone.take()
                    {
                        waiting.push((*partition, gone));
                    }
                }
            }
        }
        // Outside the lock: the workers store their last offsets meanwhile.
        let timeout = Duration::from_millis(self.revoke_timeout_ms.load(Ordering::Relaxed));
        let deadline = Instant::now() + timeout;
        let late = wait_blocking(|| {
            waiting
                .iter()
                .filter(|(_, gone)| {
                    let left = deadline.saturating_duration_since(Instant::now());
                    matches!(
                        gone.recv_timeout(left),
                        Err(mpsc::RecvTimeoutError::Timeout)
                    )
                })
                .map(|(partition, _)| *partition)
                .collect::<Vec<_>>()
        })
        .unwrap_or_else(|| waiting.iter().map(|(partition, _)| *partition).collect());
        let mut claims = self.claims();
        for partition in partitions {
            claims.remove(partition);
        }
        self.generation.fetch_add(1, Ordering::Release);
        late
    }

    /// Shutdown: every worker finishes its batch and stops.
    pub fn stop_all(&self) {
        self.root.cancel();
    }
}

/// Runs `wait` where the current thread may block: inside a multi-threaded
/// tokio runtime through `block_in_place` (its other tasks move to another
/// thread, the workers we wait for among them), outside any runtime as is.
/// On a current-thread runtime, blocking would stop the very workers we
/// wait for: then nothing waits and `None` is returned (fencing still holds,
/// but the worker may still be finishing its batch when the partition goes;
/// the services run on the multi-threaded runtime).
pub fn wait_blocking<T>(wait: impl FnOnce() -> T) -> Option<T> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => Some(tokio::task::block_in_place(wait)),
        Ok(_) => None,
        Err(_) => Some(wait()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_claim_can_no_longer_store() {
        let owned = Ownership::default();
        owned.assign([0, 1]);
        let worker = owned.take_for_worker(0).expect("owned");
        assert!(owned.take_for_worker(0).is_none(), "one worker per claim");
        assert_eq!(owned.store_if_owned(&worker, || 7), Some(7));
        drop(worker); // the worker is gone, so the revoke does not wait
        assert!(owned.revoke(&[0]).is_empty());
        assert_eq!(owned.epoch(0), None);
        assert!(owned.epoch(1).is_some(), "other partitions stay");
    }

    #[test]
    fn a_stale_worker_of_a_reassigned_partition_is_fenced() {
        let owned = Ownership::default();
        owned.set_revoke_timeout(Duration::from_millis(50));
        owned.assign([3]);
        let stale = owned.take_for_worker(3).expect("owned");
        // The worker does not stop in time: the revoke gives up on it.
        assert_eq!(owned.revoke(&[3]), vec![3]);
        assert!(stale.stop.is_cancelled());
        owned.assign([3]);
        let fresh = owned.take_for_worker(3).expect("owned again");
        assert!(fresh.epoch > stale.epoch);
        assert_eq!(owned.store_if_owned(&stale, || ()), None, "fenced");
        assert_eq!(owned.store_if_owned(&fresh, || ()), Some(()));
    }

    #[test]
    fn shutdown_stops_every_claim() {
        let owned = Ownership::default();
        owned.assign([0, 1]);
        let a = owned.take_for_worker(0).expect("owned");
        owned.stop_all();
        assert!(a.stop.is_cancelled());
    }
}
