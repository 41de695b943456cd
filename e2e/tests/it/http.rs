//! End-to-end through the public REST API: the three real binaries as
//! processes, driven like any HTTP client would.

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop_e2e::Stack;
use shop_testkit::eventually;
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// A client acting as one user (with that user's bearer token).
struct Api {
    base: String,
    http: Client,
    token: String,
}

impl Api {
    async fn new(stack: &Stack, user: &str) -> Self {
        Self {
            base: stack.gateway_url(),
            http: Client::new(),
            token: stack.token(user).await,
        }
    }

    async fn post(
        &self,
        path: &str,
        body: Value,
        key: Option<&str>,
    ) -> (StatusCode, Value, Option<String>) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.expect("gateway answers");
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (status, response.json().await.expect("json body"), location)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("gateway answers");
        (response.status(), response.json().await.expect("json body"))
    }

    async fn open_account(&self, user: &str, balance: i64) {
        let (status, _, _) = self
            .post("/api/v1/accounts", json!({"user_id": user}), None)
            .await;
        assert_eq!(status, StatusCode::CREATED);
        if balance > 0 {
            let (status, body, _) = self
                .post(
                    &format!("/api/v1/accounts/{user}/top-up"),
                    json!({"amount": balance}),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }

    async fn order(&self, user: &str, amount: i64) -> String {
        let (status, body, _) = self
            .post(
                "/api/v1/orders",
                json!({"user_id": user, "amount": amount, "description": "e2e"}),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["order_id"].as_str().expect("order_id").to_owned()
    }

    async fn final_order(&self, id: &str) -> Value {
        eventually(&format!("order {id} to be final"), WAIT, || async move {
            let (_, order) = self.get(&format!("/api/v1/orders/{id}")).await;
            (order["status"] != "NEW").then_some(order)
        })
        .await
    }

    async fn balance(&self, user: &str) -> i64 {
        let (status, body) = self.get(&format!("/api/v1/accounts/{user}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["balance"].as_i64().expect("balance")
    }
}

fn code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_top_up_order_and_final_status() {
    let stack = Stack::start_with_gateway().await;
    let user = Uuid::new_v4().to_string();
    let api = Api::new(&stack, &user).await;

    let (status, account, location) = api
        .post("/api/v1/accounts", json!({"user_id": user}), None)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        location.as_deref(),
        Some(format!("/api/v1/accounts/{user}").as_str())
    );
    assert_eq!(account["balance"], 0);
    let (status, dup, _) = api
        .post("/api/v1/accounts", json!({"user_id": user}), None)
        .await;
    assert_eq!(
        (status, code(&dup)),
        (StatusCode::CONFLICT, "ACCOUNT_EXISTS")
    );

    let top_up = format!("/api/v1/accounts/{user}/top-up");
    let (status, account, _) = api
        .post(&top_up, json!({"amount": 5000}), Some("t-1"))
        .await;
    assert_eq!(
        (status, account["balance"].as_i64()),
        (StatusCode::OK, Some(5000))
    );
    let (status, replay, _) = api
        .post(&top_up, json!({"amount": 5000}), Some("t-1"))
        .await;
    assert_eq!(
        (status, replay["balance"].as_i64()),
        (StatusCode::OK, Some(5000))
    );
    let (status, reused, _) = api
        .post(&top_up, json!({"amount": 6000}), Some("t-1"))
        .await;
    assert_eq!(
        (status, code(&reused)),
        (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED")
    );
    assert_eq!(api.balance(&user).await, 5000);

    let (status, created, location) = api
        .post(
            "/api/v1/orders",
            json!({"user_id": user, "amount": 2000, "description": "book"}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(created["status"], "NEW");
    assert_eq!(created["cancel_reason"], Value::Null);
    let id = created["order_id"].as_str().expect("id").to_owned();
    assert_eq!(
        location.as_deref(),
        Some(format!("/api/v1/orders/{id}").as_str())
    );
    let paid = api.final_order(&id).await;
    assert_eq!(paid["status"], "FINISHED");
    assert_eq!(api.balance(&user).await, 3000);

    let poor = api.order(&user, 10_000).await;
    let cancelled = api.final_order(&poor).await;
    assert_eq!(
        (
            cancelled["status"].as_str(),
            cancelled["cancel_reason"].as_str()
        ),
        (Some("CANCELLED"), Some("INSUFFICIENT_FUNDS"))
    );
    let stranger = Uuid::new_v4().to_string();
    let as_stranger = Api::new(&stack, &stranger).await;
    let orphan = as_stranger.order(&stranger, 10).await;
    let cancelled = as_stranger.final_order(&orphan).await;
    assert_eq!(cancelled["cancel_reason"], "ACCOUNT_NOT_FOUND");
    assert_eq!(api.balance(&user).await, 3000);

    // Nobody reads or changes another user's account or orders.
    let (status, forbidden) = as_stranger.get(&format!("/api/v1/accounts/{user}")).await;
    assert_eq!(
        (status, code(&forbidden)),
        (StatusCode::FORBIDDEN, "FORBIDDEN")
    );
    let (status, forbidden, _) = as_stranger
        .post(
            &format!("/api/v1/accounts/{user}/top-up"),
            json!({"amount": 1}),
            None,
        )
        .await;
    assert_eq!(
        (status, code(&forbidden)),
        (StatusCode::FORBIDDEN, "FORBIDDEN")
    );
    let (status, hidden) = as_stranger.get(&format!("/api/v1/orders/{id}")).await;
    assert_eq!(
        (status, code(&hidden)),
        (StatusCode::NOT_FOUND, "ORDER_NOT_FOUND")
    );
    let (status, forbidden) = as_stranger
        .get(&format!("/api/v1/orders?user_id={user}"))
        .await;
    assert_eq!(
        (status, code(&forbidden)),
        (StatusCode::FORBIDDEN, "FORBIDDEN")
    );
    let anonymous = api
        .http
        .get(format!("{}/api/v1/accounts/{user}", api.base))
        .send()
        .await
        .expect("answers");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    assert_eq!(api.balance(&user).await, 3000, "nothing changed");

    let (status, missing) = as_stranger
        .get(&format!("/api/v1/accounts/{stranger}"))
        .await;
    assert_eq!(
        (status, code(&missing)),
        (StatusCode::NOT_FOUND, "ACCOUNT_NOT_FOUND")
    );
    let (status, missing, _) = as_stranger
        .post(
            &format!("/api/v1/accounts/{stranger}/top-up"),
            json!({"amount": 1}),
            None,
        )
        .await;
    assert_eq!(
        (status, code(&missing)),
        (StatusCode::NOT_FOUND, "ACCOUNT_NOT_FOUND")
    );
    let (status, missing) = api.get(&format!("/api/v1/orders/{}", Uuid::new_v4())).await;
    assert_eq!(
        (status, code(&missing)),
        (StatusCode::NOT_FOUND, "ORDER_NOT_FOUND")
    );
    let (status, bad) = api.get("/api/v1/orders/not-a-uuid").await;
    assert_eq!(
        (status, code(&bad)),
        (StatusCode::BAD_REQUEST, "VALIDATION_FAILED")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_the_status_until_it_is_final() {
    let stack = Stack::start_with_gateway().await;
    let user = Uuid::new_v4().to_string();
    let api = Api::new(&stack, &user).await;
    api.open_account(&user, 1_000).await;
    let id = api.order(&user, 400).await;

    let mut response = api
        .http
        .get(format!("{}/api/v1/orders/{id}/events", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .expect("stream opens");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/event-stream"))
    );
    let mut text = String::new();
    let read_all = async {
        while let Some(chunk) = response.chunk().await.expect("chunk") {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(WAIT, read_all)
        .await
        .expect("the stream ends after a final status");
    let orders: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("order json"))
        .collect();
    assert!(text.contains("event: order"), "{text}");
    assert_eq!(
        orders.last().map(|o| o["status"].clone()),
        Some(json!("FINISHED")),
        "{text}"
    );
    assert!(orders.iter().all(|o| o["order_id"] == id.as_str()));

    // Without a header (as a browser's EventSource), a token for this one
    // order opens it; nothing else does. A reconnect gets the current
    // (final) state again, then the end.
    let unauthenticated = api
        .http
        .get(format!("{}/api/v1/orders/{id}/events", api.base))
        .send()
        .await
        .expect("answers");
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    let (status, stream_token, _) = api
        .post(
            &format!("/api/v1/orders/{id}/events-token"),
            json!({}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{stream_token}");
    let token = stream_token["token"].as_str().expect("token").to_owned();
    let other_order = api.order(&user, 1).await;
    let wrong_order = api
        .http
        .get(format!(
            "{}/api/v1/orders/{other_order}/events?access_token={token}",
            api.base
        ))
        .send()
        .await
        .expect("answers");
    assert_eq!(wrong_order.status(), StatusCode::UNAUTHORIZED);
    let again = api
        .http
        .get(format!(
            "{}/api/v1/orders/{id}/events?access_token={token}",
            api.base
        ))
        .send()
        .await
        .expect("stream opens")
        .text()
        .await
        .expect("body");
    assert!(again.contains("\"status\":\"FINISHED\""), "{again}");

    let (status, missing) = api
        .get(&format!("/api/v1/orders/{}/events", Uuid::new_v4()))
        .await;
    assert_eq!(
        (status, code(&missing)),
        (StatusCode::NOT_FOUND, "ORDER_NOT_FOUND")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_orders_and_pagination() {
    let stack = Stack::start_with_gateway().await;
    let user = Uuid::new_v4().to_string();
    let api = Api::new(&stack, &user).await;
    api.open_account(&user, 100_000).await;

    let body = json!({"user_id": user, "amount": 100, "description": "same"});
    let (s1, first, _) = api.post("/api/v1/orders", body.clone(), Some("o-1")).await;
    let (s2, again, _) = api.post("/api/v1/orders", body, Some("o-1")).await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(first["order_id"], again["order_id"]);
    let (status, reused, _) = api
        .post(
            "/api/v1/orders",
            json!({"user_id": user, "amount": 101, "description": "same"}),
            Some("o-1"),
        )
        .await;
    assert_eq!(
        (status, code(&reused)),
        (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED")
    );

    let mut created = vec![first["order_id"].as_str().expect("id").to_owned()];
    for amount in 1..=4 {
        created.push(api.order(&user, amount).await);
    }
    created.reverse();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = cursor
            .as_ref()
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        let (status, page) = api
            .get(&format!("/api/v1/orders?user_id={user}&limit=2{query}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|o| o["order_id"].as_str().expect("id").to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, created, "newest first, no gaps, no repeats");
}
