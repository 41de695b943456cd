//! Every API route against every kind of credential: none, malformed,
//! expired, wrongly signed, for another audience, another user's, and the
//! right one. The services are unreachable here, so a request that passes
//! authentication ends at validation or a 503 — what matters is that
//! nothing else gets through. Also: rate limits, and the development token
//! route that exists only in development mode.

use crate::router::{SECRET, app_with, env, token};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tower::ServiceExt;

const USER: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
const OTHER: &str = "9b2e7f4a-0c1d-4e5f-8a9b-0c1d2e3f4a5b";
const ORDER: &str = "01a20313-52c7-766a-a3c1-a455e1fec196";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A token with the given claims, signed with `secret`.
fn forged(secret: &str, exp: u64, aud: &str, sub: &str) -> String {
    let claims = json!({"sub": sub, "iss": "shop", "aud": aud, "exp": exp, "iat": now()});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encodes")
}

/// (method, path, body) of every API route, naming `USER` where a user is named.
fn routes() -> Vec<(&'static str, String, Option<String>)> {
    vec![
        (
            "POST",
            "/api/v1/accounts".into(),
            Some(json!({"user_id": USER}).to_string()),
        ),
        ("GET", format!("/api/v1/accounts/{USER}"), None),
        (
            "POST",
            format!("/api/v1/accounts/{USER}/top-up"),
            Some(json!({"amount": 5}).to_string()),
        ),
        (
            "POST",
            "/api/v1/orders".into(),
            Some(json!({"user_id": USER, "amount": 5}).to_string()),
        ),
        ("GET", format!("/api/v1/orders?user_id={USER}"), None),
        ("GET", format!("/api/v1/orders/{ORDER}"), None),
        ("GET", format!("/api/v1/orders/{ORDER}/events"), None),
        ("POST", format!("/api/v1/orders/{ORDER}/events-token"), None),
    ]
}

async fn call(
    app: axum::Router,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (StatusCode, Option<String>, serde_json::Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .expect("request");
    let response = app.oneshot(request).await.expect("infallible");
    let status = response.status();
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        challenge,
        serde_json::from_slice(&bytes).unwrap_or_default(),
    )
}

#[tokio::test]
async fn every_route_refuses_every_bad_credential_and_accepts_the_right_one() {
    let app = app_with(&env(&[]));
    let bad: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("malformed", Some("not-a-jwt".to_owned())),
        (
            "expired",
            Some(forged(SECRET, now() - 3_600, "shop-api", USER)),
        ),
        (
            "wrong signature",
            Some(forged(
                "another-secret-0123456789abcdefgh",
                now() + 600,
                "shop-api",
                USER,
            )),
        ),
        (
            "wrong audience",
            Some(forged(SECRET, now() + 600, "someone-else", USER)),
        ),
    ];
    for (method, path, body) in routes() {
        for (what, credential) in &bad {
            let (status, challenge, problem) = call(
                app.clone(),
                method,
                &path,
                body.as_deref(),
                credential.as_deref(),
            )
            .await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {what}: {problem}"
            );
            assert_eq!(
                problem["code"], "UNAUTHENTICATED",
                "{method} {path} with {what}"
            );
            assert!(
                challenge.is_some_and(|c| c.starts_with("Bearer")),
                "{method} {path} with {what}: WWW-Authenticate"
            );
        }
        // The right token passes; the services are down, so it ends in 503.
        let (status, _, problem) = call(
            app.clone(),
            method,
            &path,
            body.as_deref(),
            Some(&token(USER)),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {path}: {problem}"
        );
    }
}

#[tokio::test]
async fn another_users_token_cannot_name_this_user() {
    let app = app_with(&env(&[]));
    let theirs = token(OTHER);
    for (method, path, body) in routes() {
        let (status, _, problem) =
            call(app.clone(), method, &path, body.as_deref(), Some(&theirs)).await;
        if path.contains(ORDER) {
            // Whose order it is only the service knows (down here): the
            // end-to-end test shows someone else's order is 404.
            assert_eq!(
                status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{method} {path}: {problem}"
            );
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {problem}");
            assert_eq!(problem["code"], "FORBIDDEN");
        }
    }
    // Naming no user at all means the token's own user.
    let (status, _, _) = call(
        app.clone(),
        "POST",
        "/api/v1/orders",
        Some(r#"{"amount":5}"#),
        Some(&theirs),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _, _) = call(app, "GET", "/api/v1/orders", None, Some(&theirs)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_stream_token_opens_only_its_own_order_and_nothing_else() {
    let app = app_with(&env(&[("GATEWAY_AUTH", "dev")]));
    let config = shop_gateway::GatewayConfig::from_env(&env(&[])).expect("config");
    let user = shop_proto::values::UserId::parse(USER).expect("uuid");
    let order = shop_proto::values::OrderId::parse(ORDER).expect("uuid");
    let stream = config.auth.issue_stream(user, order).expect("signs");
    let path = format!("/api/v1/orders/{ORDER}/events?access_token={stream}");
    let (status, _, _) = call(app.clone(), "GET", &path, None, None).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "accepted, then the service is down"
    );
    let other = format!(
        "/api/v1/orders/{}/events?access_token={stream}",
        uuid::Uuid::now_v7()
    );
    let (status, _, _) = call(app.clone(), "GET", &other, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "another order");
    let (status, _, _) = call(
        app,
        "GET",
        &format!("/api/v1/accounts/{USER}"),
        None,
        Some(&stream),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "not an access token");
}

#[tokio::test]
async fn the_development_token_route_exists_only_in_development_mode() {
    let body = json!({"user_id": USER}).to_string();
    let jwt = app_with(&env(&[]));
    let (status, _, problem) = call(jwt, "POST", "/api/v1/dev/tokens", Some(&body), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    let dev = app_with(&env(&[("GATEWAY_AUTH", "dev")]));
    let (status, _, issued) =
        call(dev.clone(), "POST", "/api/v1/dev/tokens", Some(&body), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(issued["token_type"], "Bearer");
    let access = issued["access_token"].as_str().expect("token");
    let (status, _, _) = call(
        dev,
        "GET",
        &format!("/api/v1/accounts/{USER}"),
        None,
        Some(access),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "the token works");
}

#[tokio::test]
async fn too_many_writes_are_429_until_the_bucket_refills() {
    let app = app_with(&env(&[
        ("GATEWAY_RATE_LIMIT_USER_PER_S", "2"),
        ("GATEWAY_RATE_LIMIT_USER_BURST", "2"),
    ]));
    let mine = token(USER);
    let top_up = format!("/api/v1/accounts/{USER}/top-up");
    let body = json!({"amount": 5}).to_string();
    let mut limited = None;
    for _ in 0..5 {
        let (status, _, problem) =
            call(app.clone(), "POST", &top_up, Some(&body), Some(&mine)).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(problem);
            break;
        }
    }
    let problem = limited.expect("the third write in a burst of two is limited");
    assert_eq!(problem["code"], "RATE_LIMITED");
    // Reads are not limited.
    let (status, _, _) = call(
        app.clone(),
        "GET",
        &format!("/api/v1/accounts/{USER}"),
        None,
        Some(&mine),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // The bucket refills (2 a second): a write passes again within a deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, _) = call(app.clone(), "POST", &top_up, Some(&body), Some(&mine)).await;
        if status != StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the limit never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn without_a_token_nothing_else_about_a_stream_request_is_answered() {
    let app = app_with(&env(&[]));
    let (status, challenge, _) = call(
        app,
        "GET",
        "/api/v1/orders/not-a-uuid/events?x=1",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.is_some());
}
