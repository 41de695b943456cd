//! The ledger's side of taking an order back, against the real service and
//! broker: each cancellation and refund settled once, whatever arrives first
//! or twice, and a refund of an unpaid order parked instead of credited.

use crate::helpers::{TestApp, spawn_app};
use crate::pipeline::{balance, funded_account, request, send_event};
use prost::Message as _;
use rdkafka::Message as _;
use shop_proto::events::{
    CancellationCompleted, CancellationOutcome, CancellationReason, CancellationRequested,
    PaymentCompleted, PaymentOutcome, RefundCompleted, RefundRequested,
};
use shop_testkit::{eventually, read_topic};
use std::time::{Duration, SystemTime};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

fn cancellation(order: &str, user: &str, amount: i64) -> CancellationRequested {
    CancellationRequested {
        event_id: Uuid::new_v4().to_string(),
        order_id: order.to_owned(),
        user_id: user.to_owned(),
        amount,
        reason: CancellationReason::ByUser.into(),
        requested_at: None,
    }
}

fn refund(order: &str, user: &str, amount: i64) -> RefundRequested {
    RefundRequested {
        event_id: Uuid::new_v4().to_string(),
        order_id: order.to_owned(),
        user_id: user.to_owned(),
        amount,
        requested_at: None,
    }
}

/// The results topic's first `count` records, decoded by their event type.
async fn answers(app: &TestApp, count: usize) -> Vec<Answer> {
    let kafka = app.kafka();
    read_topic(kafka, &kafka.topics.results, count, WAIT)
        .await
        .iter()
        .map(|m| {
            let payload = m.payload().unwrap_or_default();
            let kind = shop_db::headers::get(m, shop_db::headers::EVENT_TYPE).unwrap_or_default();
            match kind.rsplit('.').next() {
                Some("PaymentCompleted") => Answer::Paid(
                    PaymentCompleted::decode(payload)
                        .expect("decodes")
                        .outcome(),
                ),
                Some("CancellationCompleted") => Answer::Cancelled(
                    CancellationCompleted::decode(payload)
                        .expect("decodes")
                        .outcome(),
                ),
                Some("RefundCompleted") => {
                    Answer::Refunded(RefundCompleted::decode(payload).expect("decodes").amount)
                }
                other => panic!("unexpected result type {other:?}"),
            }
        })
        .collect()
}

#[derive(Debug, PartialEq)]
enum Answer {
    Paid(PaymentOutcome),
    Cancelled(CancellationOutcome),
    Refunded(i64),
}

#[tokio::test]
async fn a_cancel_first_voids_the_payment_and_a_late_or_expired_request_is_never_debited() {
    let mut app = spawn_app().await;
    let user = funded_account(&mut app, 1_000).await;
    let (early, late) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    // The cancellation overtakes its payment request (two relays), and a
    // request arrives after its pay_before (payments was down).
    let cancel = cancellation(&early, &user, 300);
    send_event(&app, &user, &cancel.event_id, &cancel).await;
    let pay = request(&early, &user, 300);
    send_event(&app, &user, &pay.event_id, &pay).await;
    let mut expired = request(&late, &user, 300);
    expired.pay_before = Some(shop_proto::time::to_timestamp(
        SystemTime::now() - Duration::from_secs(1),
    ));
    send_event(&app, &user, &expired.event_id, &expired).await;

    // Results are keyed by order: across partitions, in no set order.
    let all = answers(&app, 3).await;
    let count = |a: &Answer| all.iter().filter(|x| *x == a).count();
    assert_eq!(
        count(&Answer::Cancelled(CancellationOutcome::Voided)),
        1,
        "{all:?}"
    );
    assert_eq!(count(&Answer::Paid(PaymentOutcome::Voided)), 2, "{all:?}");
    assert_eq!(balance(&mut app, &user).await, 1_000, "nothing debited");
    app.stop().await;
}

#[tokio::test]
async fn cancels_and_refunds_sent_again_under_new_ids_credit_once() {
    let mut app = spawn_app().await;
    let user = funded_account(&mut app, 1_000).await;
    let (paid, declined, refunded) = (
        Uuid::new_v4().to_string(),
        Uuid::new_v4().to_string(),
        Uuid::new_v4().to_string(),
    );
    for (order, amount) in [(&paid, 300), (&declined, 5_000), (&refunded, 200)] {
        let pay = request(order, &user, amount);
        send_event(&app, &user, &pay.event_id, &pay).await;
    }
    // Each twice, under new event ids (not inbox duplicates: as if orders had
    // written them again): the ledger's keys must still settle them once.
    for _ in 0..2 {
        for (order, amount) in [(&paid, 300), (&declined, 5_000)] {
            let cancel = cancellation(order, &user, amount);
            send_event(&app, &user, &cancel.event_id, &cancel).await;
        }
        let again = refund(&refunded, &user, 200);
        send_event(&app, &user, &again.event_id, &again).await;
    }
    let all = answers(&app, 9).await;
    let count = |a: &Answer| all.iter().filter(|x| *x == a).count();
    assert_eq!(count(&Answer::Paid(PaymentOutcome::Paid)), 2, "{all:?}");
    assert_eq!(count(&Answer::Cancelled(CancellationOutcome::Refunded)), 2);
    assert_eq!(
        count(&Answer::Cancelled(CancellationOutcome::NothingCharged)),
        2
    );
    assert_eq!(count(&Answer::Refunded(200)), 2);
    assert_eq!(
        balance(&mut app, &user).await,
        1_000,
        "each amount back once"
    );
    assert_eq!(app.scalar("SELECT count(*) FROM refunds").await, 2);
    app.stop().await;
}

#[tokio::test]
async fn a_refund_of_an_unpaid_order_is_parked_and_credits_nothing() {
    let mut app = spawn_app().await;
    let user = funded_account(&mut app, 100).await;
    let order = Uuid::new_v4().to_string();
    let pay = request(&order, &user, 5_000);
    send_event(&app, &user, &pay.event_id, &pay).await;
    let wrong = refund(&order, &user, 5_000);
    send_event(&app, &user, &wrong.event_id, &wrong).await;
    eventually("the refund is dead-lettered", WAIT, || {
        let app = &app;
        async move { (app.scalar("SELECT count(*) FROM dead_letters").await == 1).then_some(()) }
    })
    .await;
    assert_eq!(balance(&mut app, &user).await, 100);
    assert_eq!(app.scalar("SELECT count(*) FROM refunds").await, 0);
    app.stop().await;
}
