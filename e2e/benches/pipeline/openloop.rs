//! The open-loop load generator: requests leave at fixed times whatever the
//! system answers (a closed loop would only measure clients ÷ latency).
//! Many users and a shop's mix: per 20 arrivals, 18 affordable orders, 2
//! orders from users with no money (cancelled), and 1 top-up besides.
//! Every order's create → final time comes from the orders table
//! (`updated_at - created_at`); one order in [`WATCH_EVERY`] is also watched
//! live (SSE through the gateway, `WatchOrder` over gRPC) as a cross-check.

use serde_json::json;
use shop_db::Pool;
use shop_proto::orders::orders_client::OrdersClient;
use shop_proto::orders::{CreateOrderRequest, OrderStatus, WatchOrderRequest};
use shop_proto::payments::TopUpRequest;
use shop_proto::payments::payments_client::PaymentsClient;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::transport::Channel;

/// One order in this many is watched live.
pub const WATCH_EVERY: usize = 20;
/// A step is sustained only if every order settles this soon after the last request.
const MAX_DRAIN: Duration = Duration::from_secs(2);
/// …and its p99 create → final stays under this.
const MAX_P99_MS: f64 = 500.0;
/// …and the generator kept its schedule within this.
const MAX_SEND_LAG: Duration = Duration::from_millis(500);

/// What the load drives.
#[derive(Debug, Clone)]
pub enum Target {
    /// The gateway's REST API, as shoppers use it.
    Gateway {
        http: reqwest::Client,
        base: String,
        /// Each user's bearer token.
        tokens: Arc<HashMap<String, String>>,
    },
    /// The services over gRPC directly.
    Grpc {
        orders: Box<OrdersClient<Channel>>,
        payments: Box<PaymentsClient<Channel>>,
    },
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Gateway { .. } => "gateway",
            Self::Grpc { .. } => "grpc",
        }
    }
}

/// Users with money, and users without.
#[derive(Debug, Clone)]
pub struct Users {
    pub funded: Vec<String>,
    pub broke: Vec<String>,
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// What one step at a fixed rate showed.
#[derive(Debug, Clone)]
pub struct Step {
    pub mode: &'static str,
    pub rate: f64,
    pub orders: usize,
    pub errors: usize,
    pub server_errors: usize,
    pub first_error: Option<String>,
    pub send_lag: Duration,
    /// From the last request until every order of the step was final.
    pub drain: Option<Duration>,
    /// create → final of every order, from the orders table.
    pub table: Latency,
    /// request sent → final status seen on the live stream, sampled.
    pub watched: Latency,
    /// commit → publish of the orders and the payments relay (p50, ms).
    pub relay_p50_ms: (f64, f64),
}

impl Step {
    /// No errors, the schedule kept, no backlog left, p99 bounded.
    pub fn sustained(&self) -> bool {
        self.errors == 0
            && self.send_lag <= MAX_SEND_LAG
            && self.drain.is_some_and(|d| d <= MAX_DRAIN)
            && self.table.p99 <= MAX_P99_MS
    }

    pub fn line(&self) -> String {
        format!(
            "{:>8} {:>6.0}/s {:>7} orders  p50 {:>7.1}  p95 {:>7.1}  p99 {:>7.1}  max {:>7.1} ms  watched p50 {:>7.1} p99 {:>7.1}  drain {:>6}  lag {:>5} ms  errors {}{}  {}",
            self.mode,
            self.rate,
            self.orders,
            self.table.p50,
            self.table.p95,
            self.table.p99,
            self.table.max,
            self.watched.p50,
            self.watched.p99,
            self.drain
                .map_or("never".to_owned(), |d| format!("{} ms", d.as_millis())),
            self.send_lag.as_millis(),
            self.errors,
            self.first_error
                .as_ref()
                .map_or(String::new(), |e| format!(" ({e})")),
            if self.sustained() {
                "sustained"
            } else {
                "NOT sustained"
            },
        )
    }
}

enum Outcome {
    Order {
        id: uuid::Uuid,
        watched_ms: Option<f64>,
    },
    TopUp,
    Failed {
        server_error: bool,
        what: String,
    },
}

/// Runs `rate` orders per second for `duration` against `target`, waits for
/// them to settle and reads their latencies from `orders_db`, and the
/// relays' from the services' metrics endpoints (`metrics`: orders, payments).
pub async fn run_step(
    target: &Target,
    users: &Users,
    (orders_db, _payments_db): (&Pool, &Pool),
    metrics: (SocketAddr, SocketAddr),
    rate: f64,
    duration: Duration,
) -> Step {
    let delays_before = (
        publish_delays(metrics.0).await,
        publish_delays(metrics.1).await,
    );
    let tag = format!(
        "bench {} {rate} {}",
        target.name(),
        uuid::Uuid::new_v4().simple()
    );
    let arrivals = (rate * duration.as_secs_f64()).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = JoinSet::new();
    let mut send_lag = Duration::ZERO;
    let mut outcomes = Vec::with_capacity(arrivals);
    for i in 0..arrivals {
        let at = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(at).await;
        send_lag = send_lag.max(Instant::now().saturating_duration_since(at));
        let funded = &users.funded[i % users.funded.len()];
        let (user, amount) = match i % 20 {
            1 | 11 => (users.broke[i % users.broke.len()].clone(), 100),
            _ => (funded.clone(), 100),
        };
        let key = format!("{tag}-{i}");
        let watch = i % WATCH_EVERY == 0;
        tasks.spawn(order(
            target.clone(),
            user,
            amount,
            tag.clone(),
            key.clone(),
            watch,
        ));
        if i % 20 == 7 {
            tasks.spawn(top_up(
                target.clone(),
                funded.clone(),
                format!("{key}-top-up"),
            ));
        }
        while let Some(done) = tasks.try_join_next() {
            outcomes.push(done.unwrap_or_else(|e| Outcome::Failed {
                server_error: false,
                what: e.to_string(),
            }));
        }
    }
    let last_sent = Instant::now();
    while let Some(done) = tasks.join_next().await {
        outcomes.push(done.unwrap_or_else(|e| Outcome::Failed {
            server_error: false,
            what: e.to_string(),
        }));
    }
    let mut ids = Vec::with_capacity(outcomes.len());
    let mut watched = Vec::new();
    let (mut errors, mut server_errors, mut first_error) = (0, 0, None);
    for outcome in outcomes {
        match outcome {
            Outcome::Order { id, watched_ms } => {
                ids.push(id);
                watched.extend(watched_ms);
            }
            Outcome::TopUp => {}
            Outcome::Failed { server_error, what } => {
                errors += 1;
                server_errors += usize::from(server_error);
                first_error.get_or_insert(what);
            }
        }
    }
    let drain = settle(orders_db, &ids, Duration::from_secs(30))
        .await
        .then(|| last_sent.elapsed());
    watched.sort_by(f64::total_cmp);
    Step {
        mode: target.name(),
        rate,
        orders: ids.len(),
        errors,
        server_errors,
        first_error,
        send_lag,
        drain,
        table: table_latency(orders_db, &ids).await,
        watched: percentiles(&watched),
        relay_p50_ms: (
            median_ms(&delays_before.0, &publish_delays(metrics.0).await),
            median_ms(&delays_before.1, &publish_delays(metrics.1).await),
        ),
    }
}

async fn order(
    target: Target,
    user: String,
    amount: i64,
    description: String,
    key: String,
    watch: bool,
) -> Outcome {
    let sent = Instant::now();
    let created = match &target {
        Target::Gateway { http, base, tokens } => {
            let response = http
                .post(format!("{base}/api/v1/orders"))
                .bearer_auth(tokens.get(&user).map_or("", String::as_str))
                .header("Idempotency-Key", &key)
                .json(&json!({"user_id": user, "amount": amount, "description": description}))
                .send()
                .await;
            match response {
                Ok(r) if r.status().as_u16() == 202 => r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["order_id"].as_str().map(str::to_owned))
                    .ok_or((false, "202 without an order id".to_owned())),
                Ok(r) => Err((r.status().is_server_error(), format!("HTTP {}", r.status()))),
                Err(e) => Err((false, format!("transport: {e}"))),
            }
        }
        Target::Grpc { orders, .. } => orders
            .clone()
            .create_order(CreateOrderRequest {
                user_id: user.clone(),
                amount,
                description,
                idempotency_key: key,
            })
            .await
            .map_err(|s| {
                (
                    matches!(s.code(), tonic::Code::Internal | tonic::Code::Unknown),
                    format!("gRPC {:?}", s.code()),
                )
            })
            .and_then(|r| {
                r.into_inner()
                    .order
                    .map(|o| o.order_id)
                    .ok_or((false, "no order".to_owned()))
            }),
    };
    let id = match created.and_then(|id| {
        uuid::Uuid::parse_str(&id).map_err(|_| (false, format!("bad order id {id:?}")))
    }) {
        Ok(id) => id,
        Err((server_error, what)) => return Outcome::Failed { server_error, what },
    };
    let watched_ms = if watch {
        watch_until_final(&target, &user, &id.to_string())
            .await
            .then(|| sent.elapsed().as_secs_f64() * 1e3)
    } else {
        None
    };
    Outcome::Order { id, watched_ms }
}

/// Follows the order's live status until it is final.
async fn watch_until_final(target: &Target, user: &str, id: &str) -> bool {
    match target {
        Target::Gateway { http, base, tokens } => {
            let Ok(mut response) = http
                .get(format!("{base}/api/v1/orders/{id}/events"))
                .bearer_auth(tokens.get(user).map_or("", String::as_str))
                .send()
                .await
            else {
                return false;
            };
            let mut seen = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                seen.push_str(&String::from_utf8_lossy(&chunk));
                if seen.contains("\"FINISHED\"") || seen.contains("\"CANCELLED\"") {
                    return true;
                }
            }
            false
        }
        Target::Grpc { orders, .. } => {
            let Ok(response) = orders
                .clone()
                .watch_order(WatchOrderRequest {
                    order_id: id.to_owned(),
                })
                .await
            else {
                return false;
            };
            let mut stream = response.into_inner();
            while let Ok(Some(message)) = stream.message().await {
                if message
                    .order
                    .is_some_and(|o| o.status() != OrderStatus::New)
                {
                    return true;
                }
            }
            false
        }
    }
}

async fn top_up(target: Target, user: String, key: String) -> Outcome {
    let failed = match &target {
        Target::Gateway { http, base, tokens } => match http
            .post(format!("{base}/api/v1/accounts/{user}/top-up"))
            .bearer_auth(tokens.get(&user).map_or("", String::as_str))
            .header("Idempotency-Key", &key)
            .json(&json!({"amount": 1_000}))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some((
                r.status().is_server_error(),
                format!("top-up HTTP {}", r.status()),
            )),
            Err(e) => Some((false, format!("top-up transport: {e}"))),
        },
        Target::Grpc { payments, .. } => payments
            .clone()
            .top_up(TopUpRequest {
                user_id: user,
                amount: 1_000,
                idempotency_key: key,
            })
            .await
            .err()
            .map(|s| (false, format!("top-up gRPC {:?}", s.code()))),
    };
    match failed {
        None => Outcome::TopUp,
        Some((server_error, what)) => Outcome::Failed { server_error, what },
    }
}

/// Waits until none of `ids` is NEW; `false` after `deadline`.
async fn settle(db: &Pool, ids: &[uuid::Uuid], deadline: Duration) -> bool {
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        let pending: Option<i64> = match db.get().await {
            Ok(client) => client
                .query_one(
                    "/* bench */ SELECT count(*) FROM orders WHERE id = ANY($1) AND status = 'NEW'",
                    &[&ids],
                )
                .await
                .ok()
                .map(|row| row.get(0)),
            Err(_) => None,
        };
        if pending == Some(0) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn table_latency(db: &Pool, ids: &[uuid::Uuid]) -> Latency {
    let Ok(client) = db.get().await else {
        return Latency::default();
    };
    let row = client
        .query_one(
            "/* bench */ SELECT coalesce(percentile_cont(0.50) WITHIN GROUP (ORDER BY ms), 0)::float8,
                    coalesce(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms), 0)::float8,
                    coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), 0)::float8,
                    coalesce(max(ms), 0)::float8
             FROM (SELECT extract(epoch FROM updated_at - created_at) * 1000 AS ms
                   FROM orders WHERE id = ANY($1) AND status <> 'NEW') AS settled",
            &[&ids],
        )
        .await;
    match row {
        Ok(row) => Latency {
            p50: row.get(0),
            p95: row.get(1),
            p99: row.get(2),
            max: row.get(3),
        },
        Err(_) => Latency::default(),
    }
}

/// The cumulative buckets `(le, count)` of a service's
/// `shop_outbox_publish_delay_seconds` (its relay's commit → publish).
async fn publish_delays(addr: SocketAddr) -> Vec<(f64, f64)> {
    let text = shop_e2e::stack::Stack::scrape(addr).await;
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("shop_outbox_publish_delay_seconds_bucket{")?;
            let (labels, count) = rest.split_once("} ")?;
            let le = labels
                .split(',')
                .find_map(|label| label.trim().strip_prefix("le=\""))?
                .trim_end_matches('"');
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The median, in ms, of what was recorded between two scrapes of a
/// histogram, interpolated within its bucket (0 when nothing was).
fn median_ms(before: &[(f64, f64)], after: &[(f64, f64)]) -> f64 {
    let counts: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let earlier = before
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, m)| *m);
            (*le, n - earlier)
        })
        .collect();
    let total = counts.last().map_or(0.0, |(_, n)| *n);
    if total <= 0.0 {
        return 0.0;
    }
    let half = total / 2.0;
    let mut lower = (0.0, 0.0);
    for (le, n) in counts {
        if n >= half {
            if le.is_infinite() {
                return lower.0 * 1000.0;
            }
            let fraction = if n > lower.1 {
                (half - lower.1) / (n - lower.1)
            } else {
                0.0
            };
            return (lower.0 + (le - lower.0) * fraction) * 1000.0;
        }
        lower = (le, n);
    }
    0.0
}

/// Percentiles of sorted milliseconds.
pub fn percentiles(sorted: &[f64]) -> Latency {
    let at = |p: f64| {
        if sorted.is_empty() {
            return 0.0;
        }
        let i = ((sorted.len() - 1) as f64 * p).round() as usize;
        sorted[i.min(sorted.len() - 1)]
    };
    Latency {
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
        max: sorted.last().copied().unwrap_or(0.0),
    }
}
