//! Fault tests on the real binaries: kill -9 at random instants, a frozen
//! broker, graceful shutdown. Each ends with the invariant check.

use shop_e2e::invariant::{self, pending_orders};
use shop_e2e::{Stack, load};
use shop_proto::orders::{OrderStatus, WatchOrderRequest};
use std::time::Duration;
use uuid::Uuid;

const SETTLE: Duration = Duration::from_secs(120);

async fn assert_settled_and_consistent(stack: &Stack, expected_orders: usize) {
    let summary = invariant::settled_and_consistent(stack, SETTLE).await;
    assert_eq!(summary.orders, expected_orders, "{summary:?}");
    eprintln!("settled: {summary:?}");
}

fn users(n: usize) -> Vec<String> {
    (0..n).map(|_| Uuid::new_v4().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_nine_while_500_orders_flow_loses_nothing_and_debits_nothing_twice() {
    let mut stack = Stack::start().await;
    let users = users(10);
    // Eight funded accounts (some will run dry), two users without an account.
    for user in &users[..8] {
        stack.open_account(user, 20_000).await;
    }
    let client = stack.orders_client();
    let load_users = users.clone();
    let load = tokio::spawn(async move {
        load::create_orders(&client, &load_users, 500, 8, |i| {
            100 + (i as i64 * 37) % 900
        })
        .await
    });

    for round in 0..10 {
        tokio::time::sleep(Duration::from_millis(300 + round * 50)).await;
        let victim = if round % 2 == 0 {
            &mut stack.payments
        } else {
            &mut stack.orders
        };
        victim.kill9().await;
        victim.start().await;
    }
    let created = load.await.expect("load finished");
    let unique: std::collections::HashSet<_> = created.iter().collect();
    assert_eq!(unique.len(), 500, "every accepted order is distinct");
    assert_settled_and_consistent(&stack, 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_broker_delays_payment_but_loses_nothing() {
    let stack = Stack::start().await;
    let user = Uuid::new_v4().to_string();
    stack.open_account(&user, 1_000).await;
    let client = stack.orders_client();
    let users = vec![user.clone()];
    load::create_orders(&client, &users, 3, 3, |_| 100).await;
    assert_settled_and_consistent(&stack, 3).await;

    stack.broker.pause();
    // No Kafka call on the request path: orders are accepted while the broker is frozen.
    let during = load::create_orders(&client, &users, 5, 5, |_| 100).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // the length of the outage being simulated
    let (orders_pool, _) = stack.pools().await;
    assert_eq!(
        pending_orders(&orders_pool).await,
        5,
        "orders stay NEW while the broker is frozen"
    );
    stack.broker.resume();

    assert_settled_and_consistent(&stack, 8).await;
    assert_eq!(during.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_stops_both_services_cleanly_and_a_restart_carries_on() {
    let mut stack = Stack::start().await;
    let user = Uuid::new_v4().to_string();
    stack.open_account(&user, 500).await;
    let client = stack.orders_client();
    let users = vec![user.clone()];
    let ids = load::create_orders(&client, &users, 2, 1, |_| 300).await;

    for service in [&mut stack.orders, &mut stack.payments] {
        let status = service.terminate().await;
        assert!(
            status.success(),
            "clean exit: {status:?}\n{}",
            service.log_tail()
        );
        assert!(
            service.log_text().contains("stopped"),
            "{}",
            service.log_tail()
        );
    }
    stack.payments.start().await;
    stack.orders.start().await;
    assert_settled_and_consistent(&stack, 2).await;

    // Exactly one of two 300s fits in 500; watching shows the final states.
    let mut finished = 0;
    for id in ids {
        let mut watch = stack
            .orders_client()
            .watch_order(WatchOrderRequest { order_id: id })
            .await
            .expect("watch")
            .into_inner();
        let state = watch
            .message()
            .await
            .expect("stream")
            .expect("state")
            .order
            .expect("order");
        finished += usize::from(state.status() == OrderStatus::Finished);
        assert!(watch.message().await.expect("end").is_none());
    }
    assert_eq!(finished, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_on_both_topics_is_dead_lettered_counted_and_passed() {
    let stack = Stack::start().await;
    let kafka = stack.kafka();
    let user = Uuid::new_v4().to_string();
    stack.open_account(&user, 1_000).await;
    for topic in [&kafka.topics.requests, &kafka.topics.results] {
        shop_testkit::produce_raw(&kafka, topic, &user, b"\xff\xfe not protobuf", &[]).await;
    }
    // Orders behind the poison (same key, same partition) still settle.
    let client = stack.orders_client();
    load::create_orders(&client, std::slice::from_ref(&user), 3, 1, |_| 100).await;
    assert_settled_and_consistent(&stack, 3).await;

    let (orders_metrics, payments_metrics) = stack.metrics;
    for (addr, topic) in [
        (payments_metrics, &kafka.topics.requests),
        (orders_metrics, &kafka.topics.results),
    ] {
        let line = format!("shop_dead_letters_total{{topic=\"{topic}\"}} 1");
        shop_testkit::eventually(&format!("{line} at {addr}"), SETTLE, || async {
            Stack::scrape(addr).await.contains(&line).then_some(())
        })
        .await;
    }
    let text = Stack::scrape(payments_metrics).await;
    assert!(text.contains("shop_outbox_published_total"), "{text}");
    assert!(text.contains("shop_inbox_applied_total"), "{text}");
    // The operational gauges: backlog, lag per partition, dead letters, and
    // how long orders take to settle.
    for (addr, line) in [
        (payments_metrics, "shop_dead_letters_pending 1"),
        (payments_metrics, "shop_outbox_backlog 0"),
        (orders_metrics, "shop_inbox_lag{"),
        (orders_metrics, "shop_order_settle_seconds_count 3"),
        (orders_metrics, "shop_outbox_oldest_unpublished_seconds 0"),
    ] {
        shop_testkit::eventually(&format!("{line} at {addr}"), SETTLE, || async {
            Stack::scrape(addr).await.contains(line).then_some(())
        })
        .await;
    }
}
