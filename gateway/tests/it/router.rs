//! Router-level tests: validation and error mapping at the edge. The upstream
//! services are deliberately unreachable, so anything that passes validation
//! must come back as a 503 problem document — never a panic or a 500.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use shop_gateway::problem::Problem;
use shop_gateway::routes::AppState;
use shop_gateway::{GatewayConfig, router};
use shop_runtime::Env;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const USER: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

/// The secret the test gateways share, so a token made once works everywhere.
pub const SECRET: &str = "router-tests-secret-0123456789abcdef";

pub fn env(extra: &[(&str, &str)]) -> Env {
    let mut pairs = vec![
        ("GATEWAY_ORDERS_URL", "http://127.0.0.1:1"),
        ("GATEWAY_PAYMENTS_URL", "http://127.0.0.1:1"),
        ("GATEWAY_UPSTREAM_TIMEOUT_MS", "2000"),
        ("GATEWAY_JWT_SECRET", SECRET),
        (
            "GATEWAY_STREAM_TOKEN_SECRET",
            "router-tests-stream-secret-0123456789",
        ),
    ];
    pairs.extend_from_slice(extra);
    Env::from_pairs("GATEWAY_", pairs)
}

pub fn app_with(env: &Env) -> Router {
    let config = GatewayConfig::from_env(env).expect("config");
    let state = AppState::new(&config, CancellationToken::new()).expect("state");
    router(state, Duration::from_secs(10))
}

fn app() -> Router {
    app_with(&env(&[]))
}

/// A valid token for `user`.
pub fn token(user: &str) -> String {
    let config = GatewayConfig::from_env(&env(&[])).expect("config");
    config
        .auth
        .issue(shop_proto::values::UserId::parse(user).expect("uuid"))
        .expect("signs")
}

async fn send(request: Request<Body>) -> (StatusCode, String, Vec<u8>) {
    let response = app().oneshot(request).await.expect("infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, content_type, body)
}

fn post_json(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {}", token(USER)))
        .body(Body::from(body.to_owned()))
        .expect("request")
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::AUTHORIZATION, format!("Bearer {}", token(USER)))
        .body(Body::empty())
        .expect("request")
}

async fn expect_problem(request: Request<Body>, status: u16, code: &str) -> Problem {
    let (got, content_type, body) = send(request).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(got.as_u16(), status, "{text}");
    assert_eq!(content_type, "application/problem+json", "{text}");
    let problem: Problem = serde_json::from_slice(&body).expect("a problem document");
    assert_eq!(problem.code, code, "{text}");
    assert_eq!(problem.status, status);
    problem
}

#[tokio::test]
async fn malformed_json_wrong_type_and_unknown_fields_are_refused() {
    expect_problem(
        post_json("/api/v1/accounts", "{\"user_id\":"),
        400,
        "MALFORMED_JSON",
    )
    .await;
    expect_problem(
        post_json("/api/v1/accounts", "\"an account\""),
        422,
        "VALIDATION_FAILED",
    )
    .await;
    expect_problem(
        post_json(
            "/api/v1/accounts",
            &format!("{{\"user_id\":\"{USER}\",\"admin\":true}}"),
        ),
        422,
        "VALIDATION_FAILED",
    )
    .await;
    expect_problem(
        post_json("/api/v1/accounts", "{\"user_id\":\"not-a-uuid\"}"),
        422,
        "VALIDATION_FAILED",
    )
    .await;
    let text_plain = Request::post("/api/v1/accounts")
        .header(header::AUTHORIZATION, format!("Bearer {}", token(USER)))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(format!("{{\"user_id\":\"{USER}\"}}")))
        .expect("request");
    expect_problem(text_plain, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    let no_type = Request::post("/api/v1/accounts")
        .header(header::AUTHORIZATION, format!("Bearer {}", token(USER)))
        .body(Body::from("{}"))
        .expect("request");
    expect_problem(no_type, 415, "UNSUPPORTED_MEDIA_TYPE").await;
}

#[tokio::test]
async fn every_bad_amount_is_refused() {
    let uri = format!("/api/v1/accounts/{USER}/top-up");
    for amount in ["0", "-1", "1000000000001", "-9223372036854775808"] {
        expect_problem(
            post_json(&uri, &format!("{{\"amount\":{amount}}}")),
            422,
            "INVALID_AMOUNT",
        )
        .await;
    }
    for amount in [
        "1.5",
        "1e-3",
        "\"100\"",
        "99999999999999999999",
        "null",
        "true",
    ] {
        expect_problem(
            post_json(&uri, &format!("{{\"amount\":{amount}}}")),
            422,
            "VALIDATION_FAILED",
        )
        .await;
    }
    expect_problem(post_json(&uri, "{}"), 422, "VALIDATION_FAILED").await;
    // Whole numbers written with a decimal point or an exponent are integers
    // (as JSON Schema says): they pass validation and reach the service.
    for amount in ["203.0", "1e3", "2.5e1"] {
        expect_problem(
            post_json(&uri, &format!("{{\"amount\":{amount}}}")),
            503,
            "UNAVAILABLE",
        )
        .await;
    }
    let orders = |amount: &str| {
        format!("{{\"user_id\":\"{USER}\",\"amount\":{amount},\"description\":\"x\"}}")
    };
    expect_problem(
        post_json("/api/v1/orders", &orders("0")),
        422,
        "INVALID_AMOUNT",
    )
    .await;
    expect_problem(
        post_json("/api/v1/orders", &orders("2.50")),
        422,
        "VALIDATION_FAILED",
    )
    .await;
}

#[tokio::test]
async fn control_characters_and_lone_surrogates_are_refused() {
    for description in ["a\\u0000b", "two\\nlines", "bell\\u0007"] {
        expect_problem(
            post_json(
                "/api/v1/orders",
                &format!(
                    "{{\"user_id\":\"{USER}\",\"amount\":1,\"description\":\"{description}\"}}"
                ),
            ),
            422,
            "VALIDATION_FAILED",
        )
        .await;
    }
    expect_problem(
        post_json(
            "/api/v1/orders",
            &format!("{{\"user_id\":\"{USER}\",\"amount\":1,\"description\":\"\\ud800\"}}"),
        ),
        400,
        "MALFORMED_JSON",
    )
    .await;
    let mut tabbed = post_json(&format!("/api/v1/accounts/{USER}/top-up"), "{\"amount\":1}");
    tabbed.headers_mut().insert(
        "idempotency-key",
        axum::http::HeaderValue::from_static("a\tb"),
    );
    expect_problem(tabbed, 400, "VALIDATION_FAILED").await;
}

#[tokio::test]
async fn oversized_descriptions_bodies_and_keys_are_refused() {
    let long = "d".repeat(1001);
    expect_problem(
        post_json(
            "/api/v1/orders",
            &format!("{{\"user_id\":\"{USER}\",\"amount\":1,\"description\":\"{long}\"}}"),
        ),
        422,
        "VALIDATION_FAILED",
    )
    .await;
    let huge = format!(
        "{{\"user_id\":\"{USER}\",\"amount\":1,\"description\":\"{}\"}}",
        "x".repeat(70_000)
    );
    expect_problem(post_json("/api/v1/orders", &huge), 413, "PAYLOAD_TOO_LARGE").await;
    let mut keyed = post_json("/api/v1/accounts", &format!("{{\"user_id\":\"{USER}\"}}"));
    keyed
        .headers_mut()
        .insert("idempotency-key", "k".repeat(256).parse().expect("header"));
    expect_problem(keyed, 400, "VALIDATION_FAILED").await;
}

#[tokio::test]
async fn bad_path_and_query_parameters_are_400() {
    expect_problem(get("/api/v1/accounts/nope"), 400, "VALIDATION_FAILED").await;
    expect_problem(get("/api/v1/orders/123"), 400, "VALIDATION_FAILED").await;
    expect_problem(get("/api/v1/orders/123/events"), 400, "VALIDATION_FAILED").await;
    expect_problem(
        post_json("/api/v1/accounts/nope/top-up", "{\"amount\":1}"),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    expect_problem(get("/api/v1/orders?user_id=x"), 400, "VALIDATION_FAILED").await;
    expect_problem(get("/api/v1/orders?cursor="), 400, "VALIDATION_FAILED").await;
    for limit in ["0", "101", "-1", "ten"] {
        expect_problem(
            get(&format!("/api/v1/orders?user_id={USER}&limit={limit}")),
            400,
            "VALIDATION_FAILED",
        )
        .await;
    }
    expect_problem(
        get(&format!("/api/v1/orders?user_id={USER}&sort=asc")),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    expect_problem(get("/no/such/route"), 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn valid_requests_with_upstreams_down_are_503_problems() {
    let problem = expect_problem(
        post_json("/api/v1/accounts", &format!("{{\"user_id\":\"{USER}\"}}")),
        503,
        "UNAVAILABLE",
    )
    .await;
    assert!(
        !problem.detail.contains("127.0.0.1"),
        "no internals: {}",
        problem.detail
    );
    expect_problem(get(&format!("/api/v1/orders/{USER}")), 503, "UNAVAILABLE").await;
    expect_problem(
        get(&format!("/api/v1/orders/{USER}/events")),
        503,
        "UNAVAILABLE",
    )
    .await;
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let (status, _, body) = send(get("/healthz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(String::from_utf8_lossy(&body), "{\"status\":\"ok\"}");
    let (status, _, body) = send(get("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("\"orders\":false"));
    let (status, content_type, body) = send(get("/openapi.yaml")).await;
    assert_eq!(
        (status, content_type.as_str()),
        (StatusCode::OK, "application/yaml")
    );
    assert_eq!(
        String::from_utf8_lossy(&body),
        shop_gateway::startup::openapi_yaml()
    );
    let (status, _, body) = send(get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    let (status, _, body) = send(get("/docs/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        String::from_utf8_lossy(&body).contains("swagger"),
        "Swagger UI served from the binary"
    );
    for (path, kind) in [
        ("/", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
    ] {
        let (status, content_type, body) = send(get(path)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(
            !String::from_utf8_lossy(&body).contains("https://"),
            "{path} loads nothing from the internet"
        );
    }
    let (status, _, body) = send(get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains("http_requests_total"));
}
