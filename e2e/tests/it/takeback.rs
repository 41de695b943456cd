//! Orders taken back, on the real binaries: cancels racing their payment,
//! expiry while payments is down, a refund storm, and every topic replayed
//! from offset 0 after the inbox rows are gone. Each ends with the
//! invariant check (`balance = top-ups − FINISHED`, one ledger decision and
//! at most one refund per order).

use futures::StreamExt;
use shop_e2e::invariant;
use shop_e2e::{Stack, StackOptions, load};
use shop_proto::error_code::ErrorCode;
use shop_proto::orders::{
    CancelOrderRequest, CancelReason, GetOrderRequest, OrderStatus, RefundOrderRequest,
};
use shop_proto::payments::GetAccountRequest;
use shop_testkit::scalar;
use std::time::Duration;
use uuid::Uuid;

const SETTLE: Duration = Duration::from_secs(120);

async fn settle(stack: &Stack) -> invariant::Summary {
    invariant::settled_and_consistent(stack, SETTLE).await
}

async fn balance(stack: &Stack, user: &str) -> i64 {
    stack
        .payments_client()
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

async fn order(stack: &Stack, id: &str) -> shop_proto::orders::Order {
    stack
        .orders_client()
        .get_order(GetOrderRequest {
            order_id: id.to_owned(),
        })
        .await
        .expect("order")
        .into_inner()
        .order
        .expect("order")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancels_racing_their_payment_always_win_and_only_paid_orders_refuse() {
    let stack = Stack::start().await;
    let users: Vec<String> = (0..4).map(|_| Uuid::new_v4().to_string()).collect();
    for user in &users {
        stack.open_account(user, 1_000_000).await;
    }
    let client = stack.orders_client();
    // Each order is cancelled 0–270 ms after it was accepted: some cancels
    // find the payment decided (a refund), some find the order FINISHED.
    let outcomes: Vec<(String, Result<bool, ErrorCode>)> = futures::stream::iter(0..200_usize)
        .map(|i| {
            let mut client = client.clone();
            let user = users[i % users.len()].clone();
            async move {
                let key = Uuid::new_v4().to_string();
                let id = load::create_order(&mut client, &user, 100 + i as i64, &key).await;
                tokio::time::sleep(Duration::from_millis((i % 10) as u64 * 30)).await;
                let answer = client
                    .cancel_order(CancelOrderRequest {
                        order_id: id.clone(),
                        user_id: user,
                    })
                    .await;
                let outcome = match answer {
                    Ok(r) => Ok(r.into_inner().accepted),
                    Err(status) => Err(ErrorCode::of(&status).unwrap_or(ErrorCode::Internal)),
                };
                (id, outcome)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let summary = settle(&stack).await;

    let (mut cancelled, mut refused) = (0, 0);
    for (id, outcome) in &outcomes {
        let order = order(&stack, id).await;
        match outcome {
            Ok(true) => {
                cancelled += 1;
                assert_eq!(order.status(), OrderStatus::Cancelled, "{order:?}");
                assert_eq!(order.cancel_reason(), CancelReason::CancelledByUser);
            }
            Err(ErrorCode::OrderNotCancellable) => {
                refused += 1;
                assert_eq!(order.status(), OrderStatus::Finished, "{order:?}");
            }
            other => panic!("cancel of {id} answered {other:?}"),
        }
    }
    let (_, payments) = stack.pools().await;
    let refunded = scalar(
        &payments,
        "SELECT count(*) FROM refunds WHERE kind = 'CANCELLATION'",
    )
    .await;
    let voided = scalar(
        &payments,
        "SELECT count(*) FROM payments WHERE outcome = 'VOIDED'",
    )
    .await;
    eprintln!(
        "200 cancels: {cancelled} accepted ({voided} voided before the payment, {refunded} refunded after it), {refused} refused (FINISHED); {summary:?}"
    );
    assert_eq!(cancelled + refused, 200);
    assert!(cancelled > 0, "some cancels won the race");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unpaid_orders_expire_while_payments_is_down_and_no_money_moves_for_them() {
    let mut options = StackOptions::default();
    options
        .env
        .push(("PAYMENT_TIMEOUT_MS".to_owned(), "2000".to_owned()));
    let mut stack = Stack::start_with(options).await;
    let user = Uuid::new_v4().to_string();
    stack.open_account(&user, 10_000).await;
    assert!(stack.payments.terminate().await.success());

    let client = stack.orders_client();
    let ids = load::create_orders(&client, std::slice::from_ref(&user), 10, 5, |_| 700).await;
    let (orders, payments) = stack.pools().await;
    shop_testkit::eventually("every order expires", Duration::from_secs(20), || async {
        (scalar(
            &orders,
            "SELECT count(*) FROM orders WHERE status = 'CANCELLING' AND cancel_reason = 'EXPIRED'
               AND updated_at - created_at >= interval '2 seconds'",
        )
        .await
            == 10)
            .then_some(())
    })
    .await;

    // The customer cancels one of them while it expires: the cancel is
    // accepted and the order ends theirs.
    let taken = stack
        .orders_client()
        .cancel_order(CancelOrderRequest {
            order_id: ids[0].clone(),
            user_id: user.clone(),
        })
        .await
        .expect("cancel answered")
        .into_inner();
    assert!(taken.accepted, "{taken:?}");

    // Payments comes back and sees the old requests first: all past their
    // deadline, so voided, never debited; then the cancellations.
    stack.payments.start().await;
    let summary = settle(&stack).await;
    for (n, id) in ids.iter().enumerate() {
        let order = order(&stack, id).await;
        assert_eq!(order.status(), OrderStatus::Cancelled, "{order:?}");
        let reason = if n == 0 {
            CancelReason::CancelledByUser
        } else {
            CancelReason::Expired
        };
        assert_eq!(order.cancel_reason(), reason, "{order:?}");
    }
    assert_eq!(balance(&stack, &user).await, 10_000, "no money moved");
    assert_eq!(
        scalar(
            &payments,
            "SELECT count(*) FROM payments WHERE outcome = 'VOIDED'"
        )
        .await,
        10
    );
    assert_eq!(scalar(&payments, "SELECT count(*) FROM refunds").await, 0);
    eprintln!("expired: {summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_storm_and_a_replay_of_every_topic_without_inbox_rows_credit_once() {
    let mut stack = Stack::start().await;
    let user = Uuid::new_v4().to_string();
    stack.open_account(&user, 5_000).await;
    let client = stack.orders_client();
    let ids = load::create_orders(&client, std::slice::from_ref(&user), 5, 5, |_| 1_000).await;
    settle(&stack).await;
    assert_eq!(balance(&stack, &user).await, 0);

    // Twenty refunds of each order at once: one is accepted, the rest see it
    // REFUNDING or REFUNDED; the amount comes back once.
    let answers: Vec<(String, bool)> = futures::stream::iter(
        ids.iter()
            .flat_map(|id| std::iter::repeat_n(id.clone(), 20)),
    )
    .map(|id| {
        let mut client = client.clone();
        let user = user.clone();
        async move {
            let taken = client
                .refund_order(RefundOrderRequest {
                    order_id: id.clone(),
                    user_id: user,
                })
                .await
                .expect("refund answered")
                .into_inner();
            (id, taken.accepted)
        }
    })
    .buffer_unordered(25)
    .collect()
    .await;
    for id in &ids {
        let accepted = answers.iter().filter(|(i, a)| i == id && *a).count();
        assert_eq!(accepted, 1, "one refund of {id} accepted");
    }
    settle(&stack).await;
    for id in &ids {
        assert_eq!(order(&stack, id).await.status(), OrderStatus::Refunded);
    }
    assert_eq!(balance(&stack, &user).await, 5_000, "credited back once");

    // The retention sweep has removed every inbox row, and both consumer
    // groups start again from offset 0: every request, payment, cancellation
    // and refund is applied again, and the ledger's keys keep it at once.
    let (orders, payments) = stack.pools().await;
    let applied = (
        scalar(&orders, "SELECT count(*) FROM inbox").await,
        scalar(&payments, "SELECT count(*) FROM inbox").await,
    );
    stack.orders.kill9().await;
    stack.payments.kill9().await;
    for pool in [&orders, &payments] {
        pool.get()
            .await
            .expect("db")
            .batch_execute("DELETE FROM inbox")
            .await
            .expect("inbox emptied");
    }
    let kafka = stack.kafka();
    for (service, topic) in [
        ("orders", &kafka.topics.results),
        ("payments", &kafka.topics.requests),
    ] {
        shop_e2e::chaos::faults::rewind(
            &kafka.brokers,
            &stack.consumer_group(service),
            topic,
            kafka.topics.partitions,
        )
        .await;
    }
    stack.payments.start().await;
    stack.orders.start().await;
    shop_testkit::eventually("both topics are applied again", SETTLE, || async {
        let now = (
            scalar(&orders, "SELECT count(*) FROM inbox").await,
            scalar(&payments, "SELECT count(*) FROM inbox").await,
        );
        (now.0 >= applied.0 && now.1 >= applied.1).then_some(())
    })
    .await;
    settle(&stack).await;
    assert_eq!(
        balance(&stack, &user).await,
        5_000,
        "nothing credited twice"
    );
    assert_eq!(scalar(&payments, "SELECT count(*) FROM refunds").await, 5);
    for id in &ids {
        assert_eq!(order(&stack, id).await.status(), OrderStatus::Refunded);
    }
}
