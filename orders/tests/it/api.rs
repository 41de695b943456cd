//! The Orders gRPC API against a real PostgreSQL, over a real socket.

use crate::helpers::{TestApp, spawn_app};
use shop_proto::error_code::ErrorCode;
use shop_proto::orders::{
    CreateOrderRequest, GetOrderRequest, ListOrdersRequest, Order, OrderStatus,
};
use tonic::Code;
use uuid::Uuid;

fn create_req(user: &str, amount: i64, description: &str, key: &str) -> CreateOrderRequest {
    CreateOrderRequest {
        user_id: user.to_owned(),
        amount,
        description: description.to_owned(),
        idempotency_key: key.to_owned(),
    }
}

async fn create(app: &mut TestApp, req: CreateOrderRequest) -> Result<Order, tonic::Status> {
    Ok(app
        .client
        .create_order(req)
        .await?
        .into_inner()
        .order
        .expect("order"))
}

fn assert_status<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    error_code: ErrorCode,
) {
    let status = result.expect_err("must fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(ErrorCode::of(&status), Some(error_code), "{status:?}");
}

#[tokio::test]
async fn create_writes_the_order_and_its_event_in_one_transaction() {
    let mut app = spawn_app().await;
    let user = Uuid::new_v4().to_string();
    let order = create(&mut app, create_req(&user, 250, "book", ""))
        .await
        .expect("created");
    assert_eq!(order.status(), OrderStatus::New);
    assert_eq!(order.amount, 250);
    assert_eq!(order.description, "book");
    assert_eq!(order.user_id, user);

    let got = app
        .client
        .get_order(GetOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .order
        .expect("order");
    assert_eq!(got, order);
    assert_eq!(app.scalar("SELECT count(*) FROM orders").await, 1);
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM outbox WHERE event_type = 'shop.events.v1.PaymentRequested'"
        )
        .await,
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn invalid_requests_are_refused_and_write_nothing() {
    let mut app = spawn_app().await;
    let user = Uuid::new_v4().to_string();
    for amount in [0, -5, 1_000_000_000_001] {
        assert_status(
            create(&mut app, create_req(&user, amount, "x", "")).await,
            Code::InvalidArgument,
            ErrorCode::InvalidAmount,
        );
    }
    for req in [
        create_req("nope", 1, "x", ""),
        create_req(&user, 1, &"d".repeat(1001), ""),
        create_req(&user, 1, "x", &"k".repeat(256)),
    ] {
        assert_status(
            create(&mut app, req).await,
            Code::InvalidArgument,
            ErrorCode::ValidationFailed,
        );
    }
    assert_status(
        app.client
            .get_order(GetOrderRequest {
                order_id: "123".into(),
            })
            .await,
        Code::InvalidArgument,
        ErrorCode::ValidationFailed,
    );
    assert_status(
        app.client
            .get_order(GetOrderRequest {
                order_id: Uuid::new_v4().to_string(),
            })
            .await,
        Code::NotFound,
        ErrorCode::OrderNotFound,
    );
    assert_eq!(app.scalar("SELECT count(*) FROM orders").await, 0);
    assert_eq!(app.scalar("SELECT count(*) FROM outbox").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn idempotency_key_returns_the_same_order_and_refuses_a_different_request() {
    let mut app = spawn_app().await;
    let user = Uuid::new_v4().to_string();
    let first = create(&mut app, create_req(&user, 100, "tea", "k-1"))
        .await
        .expect("created");
    let again = create(&mut app, create_req(&user, 100, "tea", "k-1"))
        .await
        .expect("replayed");
    assert_eq!(first.order_id, again.order_id);
    assert_status(
        create(&mut app, create_req(&user, 101, "tea", "k-1")).await,
        Code::FailedPrecondition,
        ErrorCode::IdempotencyKeyReused,
    );
    // Concurrent requests with one fresh key create exactly one order.
    let calls = (0..10).map(|_| {
        let mut client = app.client.clone();
        let req = create_req(&user, 7, "coffee", "k-2");
        async move {
            client
                .create_order(req)
                .await
                .map(|r| r.into_inner().order.expect("order").order_id)
        }
    });
    let ids: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("ok"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    // Keys are scoped per user.
    let other = Uuid::new_v4().to_string();
    let theirs = create(&mut app, create_req(&other, 100, "tea", "k-1"))
        .await
        .expect("created");
    assert_ne!(theirs.order_id, first.order_id);
    assert_eq!(app.scalar("SELECT count(*) FROM orders").await, 3);
    assert_eq!(app.scalar("SELECT count(*) FROM outbox").await, 3);
    app.stop().await;
}

#[tokio::test]
async fn list_pages_newest_first_without_gaps_or_repeats() {
    let mut app = spawn_app().await;
    let user = Uuid::new_v4().to_string();
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(
            create(&mut app, create_req(&user, 10 + i, "item", ""))
                .await
                .expect("created")
                .order_id,
        );
    }
    create(
        &mut app,
        create_req(&Uuid::new_v4().to_string(), 1, "not mine", ""),
    )
    .await
    .expect("other");
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = app
            .client
            .list_orders(ListOrdersRequest {
                user_id: user.clone(),
                limit: 3,
                cursor: cursor.clone(),
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.orders.len() <= 3);
        seen.extend(page.orders.into_iter().map(|o| o.order_id));
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    created.reverse();
    assert_eq!(seen, created);

    for (limit, cursor) in [(101, ""), (1, "garbage")] {
        assert_status(
            app.client
                .list_orders(ListOrdersRequest {
                    user_id: user.clone(),
                    limit,
                    cursor: cursor.into(),
                })
                .await,
            Code::InvalidArgument,
            ErrorCode::ValidationFailed,
        );
    }
    app.stop().await;
}
