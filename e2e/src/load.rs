//! A client that creates orders the way a careful client does: every order
//! under its own idempotency key, retried on transport errors until accepted.

use shop_proto::orders::CreateOrderRequest;
use shop_proto::orders::orders_client::OrdersClient;
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

/// Creates one order, retrying while the service is down; returns its id.
pub async fn create_order(
    client: &mut OrdersClient<Channel>,
    user: &str,
    amount: i64,
    key: &str,
) -> String {
    let request = CreateOrderRequest {
        user_id: user.to_owned(),
        amount,
        description: format!("load {key}"),
        idempotency_key: key.to_owned(),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        match client.create_order(request.clone()).await {
            Ok(response) => return response.into_inner().order.expect("order").order_id,
            Err(status)
                if matches!(
                    status.code(),
                    Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
                ) =>
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "orders unavailable for too long: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("order refused: {status:?}"),
        }
    }
}

/// Creates `count` orders spread over `users` with `concurrency` clients.
pub async fn create_orders(
    client: &OrdersClient<Channel>,
    users: &[String],
    count: usize,
    concurrency: usize,
    amount: impl Fn(usize) -> i64,
) -> Vec<String> {
    use futures::StreamExt;
    let run = uuid::Uuid::new_v4().simple().to_string();
    futures::stream::iter(0..count)
        .map(|i| {
            let mut client = client.clone();
            let user = users[i % users.len()].clone();
            let key = format!("{run}-{i}");
            let amount = amount(i);
            async move { create_order(&mut client, &user, amount, &key).await }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}
