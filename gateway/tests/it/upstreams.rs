//! What a client sees when a service misbehaves on a real socket: one that
//! accepts the call and never answers (the deadline passes), and one that
//! reads the call and then drops the connection. Never a 500; a write whose
//! outcome is unknown says so and asks for a retry with the same key.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use shop_gateway::problem::Problem;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tower::ServiceExt;

const USER: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

/// An upstream that accepts connections and reads forever, answering nothing.
async fn silent_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("port");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                while matches!(socket.read(&mut buffer).await, Ok(n) if n > 0) {}
            });
        }
    });
    format!("http://{addr}")
}

/// An upstream that reads the start of the call, then drops the connection.
async fn dropping_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("port");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buffer = [0u8; 4096];
            let _ = socket.read(&mut buffer).await;
            drop(socket);
        }
    });
    format!("http://{addr}")
}

fn app(upstream: &str) -> Router {
    crate::router::app_with(&crate::router::env(&[
        ("GATEWAY_ORDERS_URL", upstream),
        ("GATEWAY_PAYMENTS_URL", upstream),
        ("GATEWAY_UPSTREAM_TIMEOUT_MS", "300"),
    ]))
}

async fn problem(app: Router, request: Request<Body>) -> (StatusCode, Option<String>, Problem) {
    let response = app.oneshot(request).await.expect("infallible");
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let problem = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("a problem document: {}", String::from_utf8_lossy(&body)));
    (status, retry_after, problem)
}

fn create_order() -> Request<Body> {
    Request::post("/api/v1/orders")
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", crate::router::token(USER)),
        )
        .header("idempotency-key", "order-1")
        .body(Body::from(format!(
            "{{\"user_id\":\"{USER}\",\"amount\":100,\"description\":\"x\"}}"
        )))
        .expect("request")
}

/// `GET /api/v1/accounts/{USER}` with the user's own token.
pub fn get_account() -> Request<Body> {
    Request::get(format!("/api/v1/accounts/{USER}"))
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", crate::router::token(USER)),
        )
        .body(Body::empty())
        .expect("request")
}

#[tokio::test]
async fn a_silent_service_is_504_and_a_write_is_reported_as_an_unknown_outcome() {
    let upstream = silent_upstream().await;
    let (status, retry_after, p) = problem(app(&upstream), create_order()).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(p.code, "OUTCOME_UNKNOWN");
    assert!(p.detail.contains("same Idempotency-Key"), "{}", p.detail);
    assert_eq!(retry_after.as_deref(), Some("1"));

    let (status, _, p) = problem(app(&upstream), get_account()).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(p.code, "UPSTREAM_TIMEOUT");
}

#[tokio::test]
async fn a_service_that_drops_the_connection_is_never_a_500() {
    let upstream = dropping_upstream().await;
    let (status, _, p) = problem(app(&upstream), create_order()).await;
    assert!([502, 503, 504].contains(&status.as_u16()), "{status} {p:?}");
    assert_ne!(p.code, "INTERNAL");
    if status == StatusCode::GATEWAY_TIMEOUT {
        assert_eq!(p.code, "OUTCOME_UNKNOWN");
    }
    let (status, _, p) = problem(app(&upstream), get_account()).await;
    assert!([502, 503, 504].contains(&status.as_u16()), "{status} {p:?}");
    assert_ne!(p.code, "INTERNAL");
}
