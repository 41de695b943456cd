//! The Payments gRPC API against a real PostgreSQL, over a real socket.

use crate::helpers::spawn_app;
use shop_proto::error_code::ErrorCode;
use shop_proto::payments::{
    CreateAccountRequest, GetAccountRequest, TopUpRequest, payments_client::PaymentsClient,
};
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

async fn open(client: &mut PaymentsClient<Channel>, user: &str) {
    client
        .create_account(CreateAccountRequest {
            user_id: user.to_owned(),
            idempotency_key: String::new(),
        })
        .await
        .expect("account opens");
}

async fn top_up(
    client: &mut PaymentsClient<Channel>,
    user: &str,
    amount: i64,
    key: &str,
) -> Result<i64, tonic::Status> {
    let resp = client
        .top_up(TopUpRequest {
            user_id: user.to_owned(),
            amount,
            idempotency_key: key.to_owned(),
        })
        .await?;
    Ok(resp.into_inner().account.expect("account").balance)
}

async fn balance(client: &mut PaymentsClient<Channel>, user: &str) -> Result<i64, tonic::Status> {
    let resp = client
        .get_account(GetAccountRequest {
            user_id: user.to_owned(),
        })
        .await?;
    Ok(resp.into_inner().account.expect("account").balance)
}

fn assert_status(result: Result<i64, tonic::Status>, code: Code, error_code: ErrorCode) {
    let status = result.expect_err("must fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(ErrorCode::of(&status), Some(error_code), "{status:?}");
}

#[tokio::test]
async fn create_get_and_top_up() {
    let mut app = spawn_app().await;
    let user = Uuid::new_v4().to_string();
    let created = app
        .client
        .create_account(CreateAccountRequest {
            user_id: user.clone(),
            idempotency_key: String::new(),
        })
        .await
        .expect("opens")
        .into_inner()
        .account
        .expect("account");
    assert_eq!(created.user_id, user);
    assert_eq!(created.balance, 0);
    assert!(created.created_at.is_some());

    assert_eq!(
        top_up(&mut app.client, &user, 500, "").await.expect("ok"),
        500
    );
    assert_eq!(
        top_up(&mut app.client, &user, 250, "").await.expect("ok"),
        750
    );
    assert_eq!(balance(&mut app.client, &user).await.expect("ok"), 750);

    let credits: i64 = app
        .pool
        .get()
        .await
        .expect("conn")
        .query_one("SELECT count(*) FROM credits", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(credits, 2, "every credit is a ledger row");
    app.stop().await;
}

#[tokio::test]
async fn duplicate_account_is_already_exists_unless_same_key() {
    let mut app = spawn_app().await;
    let user = Uuid::new_v4().to_string();
    let req = |key: &str| CreateAccountRequest {
        user_id: user.clone(),
        idempotency_key: key.to_owned(),
    };
    app.client.create_account(req("k1")).await.expect("opens");
    let replay = app.client.create_account(req("k1")).await;
    assert!(replay.is_ok(), "same key replays: {replay:?}");
    for key in ["", "k2"] {
        let status = app.client.create_account(req(key)).await.expect_err("dup");
        assert_eq!(status.code(), Code::AlreadyExists);
        assert_eq!(ErrorCode::of(&status), Some(ErrorCode::AccountExists));
    }
    app.stop().await;
}

#[tokio::test]
async fn unknown_account_is_not_found() {
    let mut app = spawn_app().await;
    let user = Uuid::new_v4().to_string();
    assert_status(
        balance(&mut app.client, &user).await,
        Code::NotFound,
        ErrorCode::AccountNotFound,
    );
    assert_status(
        top_up(&mut app.client, &user, 10, "").await,
        Code::NotFound,
        ErrorCode::AccountNotFound,
    );
    app.stop().await;
}

#[tokio::test]
async fn invalid_arguments_are_refused_and_change_nothing() {
    let mut app = spawn_app().await;
    let user = Uuid::new_v4().to_string();
    open(&mut app.client, &user).await;

    for bad in ["", "not-a-uuid", "1234"] {
        assert_status(
            balance(&mut app.client, bad).await,
            Code::InvalidArgument,
            ErrorCode::ValidationFailed,
        );
        let status = app
            .client
            .create_account(CreateAccountRequest {
                user_id: bad.to_owned(),
                idempotency_key: String::new(),
            })
            .await
            .expect_err("bad uuid");
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    for amount in [0, -1, -1_000, 1_000_000_000_001, i64::MAX, i64::MIN] {
        assert_status(
            top_up(&mut app.client, &user, amount, "").await,
            Code::InvalidArgument,
            ErrorCode::InvalidAmount,
        );
    }
    assert_status(
        top_up(&mut app.client, &user, 1, &"k".repeat(256)).await,
        Code::InvalidArgument,
        ErrorCode::ValidationFailed,
    );
    assert_eq!(balance(&mut app.client, &user).await.expect("ok"), 0);
    app.stop().await;
}

#[tokio::test]
async fn balance_overflow_is_a_clear_error_and_changes_nothing() {
    let mut app = spawn_app().await;
    let user = Uuid::new_v4().to_string();
    open(&mut app.client, &user).await;
    let near_max = i64::MAX - 10;
    app.pool
        .get()
        .await
        .expect("conn")
        .execute(
            "UPDATE accounts SET balance = $1 WHERE user_id = $2",
            &[&near_max, &Uuid::parse_str(&user).expect("uuid")],
        )
        .await
        .expect("set balance");
    assert_eq!(
        top_up(&mut app.client, &user, 10, "")
            .await
            .expect("fits exactly"),
        i64::MAX
    );
    assert_status(
        top_up(&mut app.client, &user, 1, "").await,
        Code::FailedPrecondition,
        ErrorCode::BalanceOverflow,
    );
    assert_eq!(balance(&mut app.client, &user).await.expect("ok"), i64::MAX);
    app.stop().await;
}

#[tokio::test]
async fn hundred_concurrent_top_ups_sum_exactly() {
    let mut app = spawn_app().await;
    let user = Uuid::new_v4().to_string();
    open(&mut app.client, &user).await;
    let calls = (1..=100i64).map(|i| {
        let mut client = app.client.clone();
        let user = user.clone();
        async move { top_up(&mut client, &user, i, "").await }
    });
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(balance(&mut app.client, &user).await.expect("ok"), 5050);
    app.stop().await;
}

#[tokio::test]
async fn idempotent_top_up_credits_once() {
    let mut app = spawn_app().await;
    let user = Uuid::new_v4().to_string();
    open(&mut app.client, &user).await;
    assert_eq!(
        top_up(&mut app.client, &user, 300, "pay-1")
            .await
            .expect("ok"),
        300
    );
    assert_eq!(
        top_up(&mut app.client, &user, 200, "").await.expect("ok"),
        500
    );
    // The replay returns the original result, not the current balance.
    assert_eq!(
        top_up(&mut app.client, &user, 300, "pay-1")
            .await
            .expect("replay"),
        300
    );
    assert_status(
        top_up(&mut app.client, &user, 301, "pay-1").await,
        Code::FailedPrecondition,
        ErrorCode::IdempotencyKeyReused,
    );
    // Concurrent requests with one fresh key credit exactly once.
    let calls = (0..20).map(|_| {
        let mut client = app.client.clone();
        let user = user.clone();
        async move { top_up(&mut client, &user, 1_000, "pay-2").await }
    });
    let results = futures::future::join_all(calls).await;
    assert!(
        results.iter().all(|r| r.as_ref().ok() == Some(&1_500)),
        "{results:?}"
    );
    assert_eq!(balance(&mut app.client, &user).await.expect("ok"), 1_500);

    // Keys are scoped per user.
    let other = Uuid::new_v4().to_string();
    open(&mut app.client, &other).await;
    assert_eq!(
        top_up(&mut app.client, &other, 7, "pay-1")
            .await
            .expect("ok"),
        7
    );
    app.stop().await;
}

#[tokio::test]
async fn health_reports_serving() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let app = spawn_app().await;
    let channel = Channel::from_shared(format!("http://{}", app.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connects");
    let mut health = HealthClient::new(channel);
    for service in ["", "shop.payments.v1.Payments"] {
        let resp = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .expect("health answers")
            .into_inner();
        assert_eq!(resp.status(), ServingStatus::Serving, "service {service:?}");
    }
    app.stop().await;
}
