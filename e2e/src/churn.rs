//! Membership churn in consumer-group mode, and what it costs: replicas
//! join, leave (SIGTERM) and are killed (-9) and restarted while shoppers
//! order, then every replica is restarted one at a time. The figures come
//! from the databases, not from the clients:
//!
//! - **stall per event**: for the service whose membership changed, the
//!   longest any message of its consumed topic waited after the event before
//!   it was applied (its outbox row says when it was written, its inbox row
//!   when it was applied), over the messages written before the next event;
//! - **settle time**: `updated_at − created_at` of every order, the part of
//!   an order's life that crosses Kafka twice.

use crate::Service;
use crate::Stack;
use shop_db::Pool;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A change of a consumer group's membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Event {
    /// A new replica starts.
    Join,
    /// A replica stops with SIGTERM.
    Leave,
    /// A replica is killed with SIGKILL and started again at once.
    KillRestart,
    /// A replica is frozen (SIGSTOP) with its connections open.
    Freeze,
}

impl Event {
    pub fn label(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Leave => "leave (SIGTERM)",
            Self::KillRestart => "kill -9 + restart",
            Self::Freeze => "SIGSTOP",
        }
    }
}

/// One event as it happened.
#[derive(Debug, Clone)]
pub struct Happened {
    pub event: Event,
    pub service: Service,
    /// Seconds since the Unix epoch (the clock PostgreSQL stamps rows with).
    pub at: f64,
    /// The stall it caused, once measured.
    pub stall: Option<Duration>,
}

impl Happened {
    /// `event` of `service`, now.
    pub fn now(event: Event, service: Service) -> Self {
        Self {
            event,
            service,
            at: now(),
            stall: None,
        }
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Time between membership events, so that each one's stall is its own.
pub const GAP: Duration = Duration::from_secs(5);

/// What a rolling restart waits after a new replica is healthy before it
/// restarts the next (a deployment's "ready for" delay).
pub const READY_PAUSE: Duration = Duration::from_secs(2);

/// Runs `cycles` of join, leave and kill -9 + restart on each service, `gap`
/// apart, and returns them in order. The last replica slot joins and leaves;
/// the one before it is killed and restarted. Needs at least two slots, all
/// but the last running.
pub async fn membership_events(stack: &mut Stack, cycles: usize, gap: Duration) -> Vec<Happened> {
    let mut happened = Vec::new();
    for _ in 0..cycles {
        for service in Service::BOTH {
            let last = stack.replicas(service).len() - 1;
            for event in [Event::Join, Event::Leave, Event::KillRestart] {
                let at = now();
                eprintln!("churn: {} of {}", event.label(), service.name());
                match event {
                    Event::Join => stack.replica(service, last).start().await,
                    Event::Leave => {
                        stack.replica(service, last).terminate().await;
                    }
                    Event::KillRestart => {
                        let replica = stack.replica(service, last - 1);
                        replica.kill9().await;
                        replica.start().await;
                    }
                    Event::Freeze => unreachable!("not in the script"),
                }
                happened.push(Happened {
                    event,
                    service,
                    at,
                    stall: None,
                });
                tokio::time::sleep(gap).await;
            }
        }
    }
    happened
}

/// Restarts every running replica of both services, one at a time: SIGTERM,
/// start, healthy, then `pause` before the next (as a deployment waits for
/// a new replica to be ready). Returns the window (epoch seconds).
pub async fn rolling_restart(stack: &mut Stack, pause: Duration) -> (f64, f64) {
    let started = now();
    for service in Service::BOTH {
        let slots = stack.replicas(service).len();
        for slot in 0..slots {
            let replica = stack.replica(service, slot);
            if !replica.is_running() {
                continue;
            }
            eprintln!("churn: rolling restart of {} slot {slot}", service.name());
            replica.terminate().await;
            replica.start().await;
            tokio::time::sleep(pause).await;
        }
    }
    (started, now())
}

/// Fills in each event's stall: the longest any message of the service's
/// consumed topic waited after the event before it was applied, counted
/// from the event or from the message's creation (its outbox row),
/// whichever is later, over the messages created before the next event
/// (or `horizon` after the last one). Counting waits, not gaps between
/// applied messages, keeps a pause in the shoppers' orders from looking
/// like a stall.
pub async fn measure_stalls(
    stack: &Stack,
    happened: &mut [Happened],
    horizon: Duration,
) -> anyhow::Result<()> {
    let kafka = stack.kafka();
    let (orders, payments) = stack.pools().await;
    let mut messages = BTreeMap::new();
    for service in Service::BOTH {
        // The consumer's inbox, and the producer's outbox.
        let (inbox, outbox) = match service {
            Service::Orders => (&orders, &payments),
            Service::Payments => (&payments, &orders),
        };
        messages.insert(
            service,
            waits(inbox, outbox, service.consumes(&kafka)).await?,
        );
    }
    let ends: Vec<f64> = happened
        .iter()
        .skip(1)
        .map(|h| h.at)
        .chain([happened.last().map_or(0.0, |h| h.at) + horizon.as_secs_f64()])
        .collect();
    for (event, end) in happened.iter_mut().zip(ends) {
        let worst = messages[&event.service]
            .iter()
            .filter(|m| m.applied > event.at && m.created < end)
            .map(|m| m.applied - m.created.max(event.at))
            .fold(0.0, f64::max);
        event.stall = Some(Duration::from_secs_f64(worst));
    }
    Ok(())
}

/// One message: when it was written to the outbox and when the consumer
/// applied it (epoch seconds; a message not applied yet counts as applied
/// when it was measured).
struct Applied {
    created: f64,
    applied: f64,
}

/// Every message of `topic` in `outbox`, with when `inbox` applied it.
async fn waits(inbox: &Pool, outbox: &Pool, topic: &str) -> anyhow::Result<Vec<Applied>> {
    let applied: std::collections::HashMap<uuid::Uuid, f64> = inbox
        .get()
        .await?
        .query(
            "SELECT event_id, extract(epoch FROM processed_at)::float8 FROM inbox WHERE topic = $1",
            &[&topic],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let measured = now();
    let rows = outbox
        .get()
        .await?
        .query(
            "SELECT event_id, extract(epoch FROM created_at)::float8 FROM outbox WHERE topic = $1",
            &[&topic],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let id: uuid::Uuid = r.get(0);
            Applied {
                created: r.get(1),
                applied: applied.get(&id).copied().unwrap_or(measured),
            }
        })
        .collect())
}

/// Settle times (seconds) of the orders created in `from..to`, sorted; an
/// order still `NEW` counts as not settled and is left out (the caller
/// checks that none is).
pub async fn settle_times(orders: &Pool, from: f64, to: f64) -> anyhow::Result<Vec<f64>> {
    let client = orders.get().await?;
    let rows = client
        .query(
            "SELECT extract(epoch FROM updated_at - created_at)::float8 FROM orders
             WHERE status <> 'NEW'
               AND created_at >= to_timestamp($1) AND created_at < to_timestamp($2)
             ORDER BY 1",
            &[&from, &to],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The `q` quantile (0..=1) of sorted `values`, by nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50 and max of the stalls of `event`, in seconds, with how many there were.
pub fn stall_figures(happened: &[Happened], event: Event) -> (usize, f64, f64) {
    let mut stalls: Vec<f64> = happened
        .iter()
        .filter(|h| h.event == event)
        .filter_map(|h| h.stall.map(|s| s.as_secs_f64()))
        .collect();
    stalls.sort_by(f64::total_cmp);
    (
        stalls.len(),
        quantile(&stalls, 0.5),
        stalls.last().copied().unwrap_or(0.0),
    )
}

/// The figures as a Markdown table.
pub fn report(happened: &[Happened], rolling: &[f64]) -> String {
    let mut text =
        String::from("| membership event | events | stall p50 | stall max |\n|---|---|---|---|\n");
    for event in [Event::Join, Event::Leave, Event::KillRestart] {
        let (n, p50, max) = stall_figures(happened, event);
        text += &format!("| {} | {n} | {p50:.2} s | {max:.2} s |\n", event.label());
    }
    text += &format!(
        "\n| rolling restart of every replica | orders | settle p50 | settle p99 | settle max |\n|---|---|---|---|---|\n| one at a time | {} | {:.2} s | {:.2} s | {:.2} s |\n",
        rolling.len(),
        quantile(rolling, 0.5),
        quantile(rolling, 0.99),
        rolling.last().copied().unwrap_or(0.0),
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_sorted_values() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((quantile(&v, 0.5) - 50.0).abs() < 1e-9);
        assert!((quantile(&v, 0.99) - 99.0).abs() < 1e-9);
        assert!((quantile(&[1.0, 2.0], 0.5) - 1.0).abs() < 1e-9);
        assert_eq!(quantile(&[], 0.99), 0.0);
    }
}
