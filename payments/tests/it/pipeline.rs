//! The exactly-once debit: PaymentRequested records produced straight to the
//! real broker, results read back from the results topic, balances checked in
//! the real database.

use crate::helpers::{TestApp, spawn_app, spawn_with};
use prost::Message as _;
use rdkafka::Message as _;
use shop_proto::events::{DeclineReason, PaymentCompleted, PaymentOutcome, PaymentRequested};
use shop_proto::payments::{CreateAccountRequest, GetAccountRequest, TopUpRequest};
use shop_testkit::{eventually, produce_raw, read_topic};
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

pub(crate) async fn funded_account(app: &mut TestApp, balance: i64) -> String {
    let user = Uuid::new_v4().to_string();
    app.client
        .create_account(CreateAccountRequest {
            user_id: user.clone(),
            idempotency_key: String::new(),
        })
        .await
        .expect("account");
    if balance > 0 {
        app.client
            .top_up(TopUpRequest {
                user_id: user.clone(),
                amount: balance,
                idempotency_key: String::new(),
            })
            .await
            .expect("top up");
    }
    user
}

pub(crate) async fn balance(app: &mut TestApp, user: &str) -> i64 {
    app.client
        .get_account(GetAccountRequest {
            user_id: user.to_owned(),
        })
        .await
        .expect("account")
        .into_inner()
        .account
        .expect("account")
        .balance
}

pub(crate) fn request(order_id: &str, user: &str, amount: i64) -> PaymentRequested {
    PaymentRequested {
        event_id: Uuid::new_v4().to_string(),
        order_id: order_id.to_owned(),
        user_id: user.to_owned(),
        amount,
        requested_at: None,
        pay_before: None,
    }
}

async fn send(app: &TestApp, event: &PaymentRequested) {
    send_event(app, &event.user_id, &event.event_id, event).await;
}

/// Produces `event` to the requests topic under `key`, with the headers the
/// orders relay sets.
pub(crate) async fn send_event<M: prost::Message + prost::Name>(
    app: &TestApp,
    key: &str,
    event_id: &str,
    event: &M,
) {
    let kafka = app.kafka();
    produce_raw(
        kafka,
        &kafka.topics.requests,
        key,
        &event.encode_to_vec(),
        &[("event-id", event_id), ("event-type", &M::full_name())],
    )
    .await;
}

async fn results(app: &TestApp, count: usize) -> Vec<PaymentCompleted> {
    let kafka = app.kafka();
    read_topic(kafka, &kafka.topics.results, count, WAIT)
        .await
        .iter()
        .map(|m| PaymentCompleted::decode(m.payload().unwrap_or_default()).expect("decodes"))
        .collect()
}

fn by_order(results: &[PaymentCompleted]) -> HashMap<String, (PaymentOutcome, DeclineReason)> {
    results
        .iter()
        .map(|r| (r.order_id.clone(), (r.outcome(), r.decline_reason())))
        .collect()
}

#[tokio::test]
async fn paid_insufficient_and_unknown_account() {
    let mut app = spawn_app().await;
    let rich = funded_account(&mut app, 1_000).await;
    let nobody = Uuid::new_v4().to_string();
    let (paid, poor, missing) = (
        Uuid::new_v4().to_string(),
        Uuid::new_v4().to_string(),
        Uuid::new_v4().to_string(),
    );
    send(&app, &request(&paid, &rich, 600)).await;
    send(&app, &request(&poor, &rich, 600)).await;
    send(&app, &request(&missing, &nobody, 10)).await;

    let outcomes = by_order(&results(&app, 3).await);
    assert_eq!(
        outcomes[&paid],
        (PaymentOutcome::Paid, DeclineReason::Unspecified)
    );
    assert_eq!(
        outcomes[&poor],
        (PaymentOutcome::Declined, DeclineReason::InsufficientFunds)
    );
    assert_eq!(
        outcomes[&missing],
        (PaymentOutcome::Declined, DeclineReason::AccountNotFound)
    );
    assert_eq!(balance(&mut app, &rich).await, 400);
    assert_eq!(app.scalar("SELECT count(*) FROM payments").await, 3);
    app.stop().await;
}

#[tokio::test]
async fn the_same_request_delivered_three_times_debits_once() {
    let mut app = spawn_app().await;
    let user = funded_account(&mut app, 1_000).await;
    let order = Uuid::new_v4().to_string();
    let event = request(&order, &user, 300);
    for _ in 0..3 {
        send(&app, &event).await;
    }
    // A marker behind the duplicates on the same partition (same key).
    let marker = Uuid::new_v4().to_string();
    send(&app, &request(&marker, &user, 1)).await;
    let outcomes = results(&app, 2).await;
    assert_eq!(outcomes.len(), 2);
    assert_eq!(balance(&mut app, &user).await, 699);
    assert_eq!(app.scalar("SELECT count(*) FROM payments").await, 2);
    assert_eq!(app.scalar("SELECT count(*) FROM inbox").await, 2);
    app.stop().await;
}

#[tokio::test]
async fn a_redelivery_after_the_retention_sweep_debits_nothing_twice() {
    let mut app = spawn_app().await;
    let user = funded_account(&mut app, 1_000).await;
    let order = Uuid::new_v4().to_string();
    let event = request(&order, &user, 300);
    send(&app, &event).await;
    results(&app, 1).await;
    eventually("the answer to be published", WAIT, || {
        let app = &app;
        async move { (app.scalar("SELECT count(*) FROM outbox_pending").await == 0).then_some(()) }
    })
    .await;

    // Everything old enough goes, here at once: inbox and outbox rows, keys.
    let sweep_everything = shop_db::retention::RetentionConfig {
        outbox: Duration::ZERO,
        inbox: Duration::ZERO,
        dead_letters: Duration::ZERO,
        idempotency: Duration::ZERO,
        ..Default::default()
    };
    let retention = shop_db::retention::Retention::new(
        app.pool.clone(),
        sweep_everything,
        &shop_payments::persistence::RETENTION,
    );
    retention.sweep().await.expect("sweep");
    assert_eq!(app.scalar("SELECT count(*) FROM inbox").await, 0);
    assert_eq!(app.scalar("SELECT count(*) FROM outbox").await, 0);
    assert_eq!(
        app.scalar("SELECT count(*) FROM credits WHERE idempotency_key IS NOT NULL")
            .await,
        0
    );

    // The inbox no longer remembers it, but the ledger does.
    send(&app, &event).await;
    let marker = Uuid::new_v4().to_string();
    send(&app, &request(&marker, &user, 1)).await;
    let outcomes = results(&app, 3).await;
    let answers = by_order(&outcomes);
    assert_eq!(
        answers.get(&order).map(|(o, _)| *o),
        Some(PaymentOutcome::Paid),
        "the first decision, again"
    );
    assert_eq!(balance(&mut app, &user).await, 699, "debited once");
    assert_eq!(app.scalar("SELECT count(*) FROM payments").await, 2);
    app.stop().await;
}

#[tokio::test]
async fn the_decision_is_sticky_after_a_later_top_up() {
    let mut app = spawn_app().await;
    let user = funded_account(&mut app, 100).await;
    let order = Uuid::new_v4().to_string();
    send(&app, &request(&order, &user, 500)).await;
    let first = results(&app, 1).await;
    assert_eq!(first[0].outcome(), PaymentOutcome::Declined);

    app.client
        .top_up(TopUpRequest {
            user_id: user.clone(),
            amount: 10_000,
            idempotency_key: String::new(),
        })
        .await
        .expect("top up");
    // Same order, new event id: as if the inbox row had been cleaned up.
    send(&app, &request(&order, &user, 500)).await;
    let both = results(&app, 2).await;
    assert!(
        both.iter()
            .all(|r| r.decline_reason() == DeclineReason::InsufficientFunds),
        "{both:?}"
    );
    assert_eq!(balance(&mut app, &user).await, 10_100);
    assert_eq!(app.scalar("SELECT count(*) FROM payments").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_orders_on_an_account_funded_for_seven() {
    let mut app = spawn_app().await;
    let user = funded_account(&mut app, 700).await;
    let orders: Vec<_> = (0..50)
        .map(|_| request(&Uuid::new_v4().to_string(), &user, 100))
        .collect();
    futures::future::join_all(orders.iter().map(|o| send(&app, o))).await;
    let outcomes = results(&app, 50).await;
    let paid = outcomes
        .iter()
        .filter(|r| r.outcome() == PaymentOutcome::Paid)
        .count();
    let declined = outcomes
        .iter()
        .filter(|r| r.decline_reason() == DeclineReason::InsufficientFunds)
        .count();
    assert_eq!((paid, declined), (7, 43));
    assert_eq!(balance(&mut app, &user).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn poison_message_is_dead_lettered_and_the_partition_moves_on() {
    let mut app = spawn_app().await;
    let user = funded_account(&mut app, 100).await;
    let kafka = app.kafka().clone();
    // Same key as the valid request, so both land on one partition, poison first.
    produce_raw(
        &kafka,
        &kafka.topics.requests,
        &user,
        b"\xff\x00garbage",
        &[],
    )
    .await;
    let order = Uuid::new_v4().to_string();
    send(&app, &request(&order, &user, 40)).await;

    let outcomes = results(&app, 1).await;
    assert_eq!(outcomes[0].order_id, order);
    assert_eq!(balance(&mut app, &user).await, 60);
    assert_eq!(app.scalar("SELECT count(*) FROM dead_letters").await, 1);
    let pool = app.pool.clone();
    assert_eq!(
        app.scalar("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")
            .await,
        1
    );

    let listed = shop_db::dead_letter::list(&pool, Some(&kafka.topics.requests))
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].error.contains("undecodable"), "{:?}", listed[0]);
    assert!(
        shop_db::dead_letter::list(&pool, Some("another.topic"))
            .await
            .expect("list")
            .is_empty(),
        "the topic filter applies"
    );
    // A dry run counts and changes nothing.
    let dry = shop_db::dead_letter::replay(&pool, None, true)
        .await
        .expect("dry run");
    assert_eq!(dry.dead_letters, 1);
    assert_eq!(
        app.scalar("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")
            .await,
        1
    );

    // Replay goes through the outbox back to the topic (and, still garbage,
    // is parked again at its new offset).
    assert_eq!(
        shop_db::dead_letter::replay(&pool, None, false)
            .await
            .expect("replay")
            .dead_letters,
        1
    );
    eventually("the replayed poison to be parked again", WAIT, || {
        let app = &app;
        async move { (app.scalar("SELECT count(*) FROM dead_letters").await == 2).then_some(()) }
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn replaying_the_whole_topic_in_a_new_group_changes_nothing() {
    let mut app = spawn_app().await;
    let user = funded_account(&mut app, 1_000).await;
    for amount in [100, 200, 300, 900] {
        send(&app, &request(&Uuid::new_v4().to_string(), &user, amount)).await;
    }
    results(&app, 4).await;
    assert_eq!(balance(&mut app, &user).await, 400);
    let kafka = app.kafka().clone();
    let db = app.db.clone();
    app.stop().await;

    let group = shop_testkit::unique_group("replay");
    let mut again = spawn_with(db, kafka.clone(), &group).await;
    shop_testkit::wait_group_caught_up(&kafka, &group, &kafka.topics.requests, WAIT).await;
    assert_eq!(balance(&mut again, &user).await, 400);
    assert_eq!(again.scalar("SELECT count(*) FROM payments").await, 4);
    assert_eq!(again.scalar("SELECT count(*) FROM outbox").await, 4);
    again.stop().await;
}
