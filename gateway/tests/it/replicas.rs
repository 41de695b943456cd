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

/// A replica served on its own thread and runtime, as a process of its own.
/// Stopping it ends tonic's graceful serve (for at most a second, as
/// `shop_runtime::grpc::serve` bounds its drain) and then drops the runtime,
/// which closes every connection left, as a process exit would.
struct Replica {
    url: String,
    stop: CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

fn replica(counter: CountingReplica) -> Replica {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    listener.set_nonblocking(true).expect("non-blocking");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let listener = TcpListener::from_std(listener).expect("listener");
            let serving = tonic::transport::Server::builder()
                .add_service(pb::payments_server::PaymentsServer::new(counter))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stopped.clone().cancelled_owned(),
                );
            let drain_deadline = async {
                stopped.cancelled().await;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            };
            tokio::select! {
                served = serving => served.expect("replica serves"),
                () = drain_deadline => {}
            }
        });
    });
    Replica { url, stop, thread }
}

impl Replica {
    async fn stop(self) {
        self.stop.cancel();
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("join task")
            .expect("replica thread");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_reach_every_replica_and_a_stopped_one_is_skipped() {
    let (a, b) = (CountingReplica::default(), CountingReplica::default());
    let (replica_a, replica_b) = (replica(a.clone()), replica(b.clone()));
    let app = crate::router::app_with(&crate::router::env(&[(
        "GATEWAY_PAYMENTS_URL",
        &format!("{},{}", replica_a.url, replica_b.url),
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
    // A call queued on b's connection as b's GOAWAY arrives never left the
    // gateway: it too is a 503, never a 504 "no answer in time".
    replica_b.stop().await;
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
    replica_a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_replica_down_calls_fail_at_once_with_503() {
    let (replica_a, replica_b) = (
        replica(CountingReplica::default()),
        replica(CountingReplica::default()),
    );
    let app = crate::router::app_with(&crate::router::env(&[(
        "GATEWAY_PAYMENTS_URL",
        &format!("{},{}", replica_a.url, replica_b.url),
    )]));
    let response = app
        .clone()
        .oneshot(get_account())
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    replica_a.stop().await;
    replica_b.stop().await;
    // Once the gateway's probes (500 ms apart) have found both down, every
    // replica is down: the balancer keeps them all, so a call is refused at
    // once instead of waiting for a replica until its deadline (5 s).
    let stopped = std::time::Instant::now();
    loop {
        let started = std::time::Instant::now();
        let response = app
            .clone()
            .oneshot(get_account())
            .await
            .expect("infallible");
        let answered = started.elapsed();
        if response.status() == StatusCode::SERVICE_UNAVAILABLE
            && answered < std::time::Duration::from_millis(500)
        {
            break;
        }
        assert!(
            stopped.elapsed() < std::time::Duration::from_secs(10),
            "calls still wait for a replica 10 s after both stopped ({} after {answered:?})",
            response.status()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
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
