//! The gateway balances its calls over every replica listed in a service's
//! URL, and a replica that stops costs no request beyond those in flight.
//! The replicas here are two gRPC servers on real sockets that implement the
//! Payments API by counting calls and answering "no such account".

use crate::upstreams::get_account;
use axum::http::StatusCode;
use shop_proto::payments as pb;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

#[derive(Clone, Default)]
struct CountingReplica(Arc<AtomicUsize>);

#[tonic::async_trait]
impl pb::payments_server::Payments for CountingReplica {
    async fn create_account(
        &self,
        _: tonic::Request<pb::CreateAccountRequest>,
    ) -> Result<tonic::Response<pb::CreateAccountResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not here"))
    }

    async fn get_account(
        &self,
        _: tonic::Request<pb::GetAccountRequest>,
    ) -> Result<tonic::Response<pb::GetAccountResponse>, tonic::Status> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(tonic::Status::not_found("account not found"))
    }

    async fn top_up(
        &self,
        _: tonic::Request<pb::TopUpRequest>,
    ) -> Result<tonic::Response<pb::TopUpResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not here"))
    }
}

/// Serves a replica until `stop`; returns its URL and the server's task.
async fn replica(
    counter: CountingReplica,
    stop: CancellationToken,
) -> (
    String,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("port");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::payments_server::PaymentsServer::new(counter))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.cancelled_owned(),
            ),
    );
    (format!("http://{addr}"), server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_reach_every_replica_and_a_stopped_one_is_skipped() {
    let (a, b) = (CountingReplica::default(), CountingReplica::default());
    let stop_b = CancellationToken::new();
    let (url_a, _server_a) = replica(a.clone(), CancellationToken::new()).await;
    let (url_b, server_b) = replica(b.clone(), stop_b.clone()).await;
    let app = crate::router::app_with(&crate::router::env(&[(
        "GATEWAY_PAYMENTS_URL",
        &format!("{url_a},{url_b}"),
    )]));
    for _ in 0..40 {
        let response = app
            .clone()
            .oneshot(get_account())
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
    let (on_a, on_b) = (a.0.load(Ordering::SeqCst), b.0.load(Ordering::SeqCst));
    assert_eq!(on_a + on_b, 40);
    assert!(
        on_a > 0 && on_b > 0,
        "both replicas get calls: {on_a} and {on_b}"
    );

    // Replica b stops (gracefully, as on SIGTERM). Calls keep coming; only
    // those before the gateway's second failed probe (500 ms apart) may fail,
    // with 503 (retry), and from then on every call is served by replica a.
    stop_b.cancel();
    server_b.await.expect("task").expect("replica b stops");
    let stopped = std::time::Instant::now();
    let mut last_failure = None;
    while stopped.elapsed() < std::time::Duration::from_secs(3) {
        let response = app
            .clone()
            .oneshot(get_account())
            .await
            .expect("infallible");
        match response.status() {
            StatusCode::NOT_FOUND => {}
            StatusCode::SERVICE_UNAVAILABLE => last_failure = Some(stopped.elapsed()),
            other => panic!("a call failed with {other}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    if let Some(at) = last_failure {
        assert!(
            at < std::time::Duration::from_millis(2_000),
            "calls still failed {at:?} after the stop"
        );
    }
    println!("last failed call after the stop: {last_failure:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_replica_down_calls_fail_at_once_with_503() {
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let (url_a, server_a) = replica(CountingReplica::default(), stop_a.clone()).await;
    let (url_b, server_b) = replica(CountingReplica::default(), stop_b.clone()).await;
    let app = crate::router::app_with(&crate::router::env(&[(
        "GATEWAY_PAYMENTS_URL",
        &format!("{url_a},{url_b}"),
    )]));
    let response = app
        .clone()
        .oneshot(get_account())
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    stop_a.cancel();
    stop_b.cancel();
    server_a.await.expect("task").expect("a stops");
    server_b.await.expect("task").expect("b stops");
    // Past the second failed probe of both (500 ms apart), every replica is
    // down: the balancer keeps them all, so a call is refused at once
    // instead of waiting for a replica until its deadline (5 s).
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let response = app
            .clone()
            .oneshot(get_account())
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "answered after {:?}",
            started.elapsed()
        );
    }
}
