//! End-to-end figures on the real binaries: orders settled per second, and
//! latency from CreateOrder to the final status (via WatchOrder), plus the
//! relay's commit-to-publish latency. Prints figures; asserts nothing timed.
//! Run with `make bench` (ORDERS=n to change the count).

use futures::StreamExt;
use shop_e2e::Stack;
use shop_e2e::load::create_order;
use shop_proto::orders::WatchOrderRequest;
use std::time::{Duration, Instant};
use uuid::Uuid;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let count: usize = std::env::var("ORDERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000);
    let concurrency = 32;
    let stack = Stack::start_with_gateway().await;
    let users: Vec<String> = (0..50).map(|_| Uuid::new_v4().to_string()).collect();
    for user in &users {
        stack.open_account(user, 1_000_000_000).await;
    }
    let client = stack.orders_client();
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(0..count)
        .map(|i| {
            let mut client = client.clone();
            let user = users[i % users.len()].clone();
            async move {
                let t0 = Instant::now();
                let id = create_order(&mut client, &user, 100, &format!("bench-{i}")).await;
                let mut watch = client
                    .watch_order(WatchOrderRequest { order_id: id })
                    .await
                    .expect("watch")
                    .into_inner();
                while let Some(msg) = watch.message().await.expect("stream") {
                    if msg.order.is_some_and(|o| o.status != 1) {
                        break;
                    }
                }
                t0.elapsed()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    latencies.sort();
    let (orders_pool, _) = stack.pools().await;
    let relay_ms: f64 = orders_pool
        .get()
        .await
        .expect("db")
        .query_one(
            "SELECT coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM published_at - created_at) * 1000), 0)::float8 FROM outbox",
            &[],
        )
        .await
        .expect("relay latency")
        .get(0);
    println!(
        "end-to-end pipeline benchmark ({count} orders, {concurrency} concurrent clients, 3 partitions)"
    );
    println!(
        "  settled:            {:.0} orders/s ({:.2} s total)",
        count as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "  create -> final p50 {:>8.1} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3
    );
    println!(
        "  create -> final p95 {:>8.1} ms",
        percentile(&latencies, 0.95).as_secs_f64() * 1e3
    );
    println!(
        "  create -> final p99 {:>8.1} ms",
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );
    println!("  relay commit -> publish p50 {relay_ms:.1} ms");
    gateway_throughput(&stack, &users).await;
}

/// GET /api/v1/accounts/{id} through the gateway (HTTP -> gRPC -> PostgreSQL)
/// from 32 concurrent clients for five seconds.
async fn gateway_throughput(stack: &Stack, users: &[String]) {
    let http = reqwest::Client::new();
    let base = stack.gateway_url();
    let window = Duration::from_secs(5);
    let started = Instant::now();
    let clients = (0..32).map(|c| {
        let http = http.clone();
        let url = format!("{base}/api/v1/accounts/{}", users[c % users.len()]);
        async move {
            let mut latencies = Vec::new();
            while started.elapsed() < window {
                let t0 = Instant::now();
                let ok = http
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                assert!(ok, "gateway request failed");
                latencies.push(t0.elapsed());
            }
            latencies
        }
    });
    let mut latencies: Vec<Duration> = futures::future::join_all(clients)
        .await
        .into_iter()
        .flatten()
        .collect();
    let elapsed = started.elapsed();
    latencies.sort();
    println!("gateway benchmark (GET /api/v1/accounts/{{id}}, 32 concurrent clients, 5 s)");
    println!(
        "  throughput:         {:.0} requests/s",
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  latency p50 {:>8.2} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3
    );
    println!(
        "  latency p99 {:>8.2} ms",
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );
}
