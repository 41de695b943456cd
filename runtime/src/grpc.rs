//! gRPC server plumbing shared by the services: standard health
//! (`grpc.health.v1`), reflection (v1 and v1alpha, for old and new grpcurl),
//! serving on a given listener until a token is cancelled, and the health
//! check client that `make up` and container health checks run.

use crate::traces::GrpcServerTraces;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Router;
use tower::layer::util::{Identity, Stack};

/// A service's gRPC router: every call traced ([`GrpcServerTraces`]).
pub type GrpcRouter = Router<Stack<GrpcServerTraces, Identity>>;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Why the server could not be built or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// What `grpc.health.v1` reports for one service (and the whole server).
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    service: String,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Health {
    /// SERVING: the service and everything behind it work.
    pub async fn serving(&self) {
        self.set(ServingStatus::Serving).await;
    }

    /// NOT_SERVING: a part of the service is dead; callers and supervisors
    /// should stop sending it work.
    pub async fn not_serving(&self) {
        self.set(ServingStatus::NotServing).await;
    }

    async fn set(&self, status: ServingStatus) {
        // For alerts: 1 while SERVING, 0 once NOT_SERVING.
        metrics::gauge!("shop_serving").set(f64::from(u8::from(status == ServingStatus::Serving)));
        self.reporter
            .set_service_status(&self.service, status)
            .await;
        self.reporter.set_service_status("", status).await;
    }
}

/// A router that traces every call but health checks and reflection
/// ([`GrpcServerTraces`]), already serves health (for `service` once
/// [`Health::serving`] is called), and reflection that advertises `service` (a full
/// name such as `shop.orders.v1.Orders`) besides health and reflection
/// itself; every shop type stays describable.
pub fn base_router(service: &str) -> Result<(Health, GrpcRouter), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(shop_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(service)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
    };
    let router = tonic::transport::Server::builder()
        .layer(GrpcServerTraces)
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?);
    let health = Health {
        reporter,
        service: service.to_owned(),
    };
    Ok((health, router))
}

/// How long a stopping server waits for open connections to finish their
/// calls. tonic's graceful shutdown waits for every connection to close, and
/// one that was accepted at the moment of shutdown (a client's health probe
/// mid-handshake) may never get its GOAWAY; past this bound the server gives
/// up on them, and the process exit that follows closes their sockets.
pub const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves until `shutdown` is cancelled, then drains in-flight calls for at
/// most [`DRAIN`].
pub async fn serve(
    router: GrpcRouter,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let serving = router.serve_with_incoming_shutdown(
        TcpListenerStream::new(listener),
        shutdown.clone().cancelled_owned(),
    );
    let drain_deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN).await;
    };
    tokio::select! {
        served = serving => served?,
        () = drain_deadline => tracing::warn!(
            drain = ?DRAIN,
            "connections still open after the drain; leaving them to the process exit"
        ),
    }
    Ok(())
}

/// Asks a server's `grpc.health.v1.Health/Check` whether `service` serves
/// (the empty name means the whole server). Used by `make up` and Docker
/// health checks, which have no grpcurl.
pub async fn check_health(
    addr: std::net::SocketAddr,
    service: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?
        .into_inner()
        .status();
    anyhow::ensure!(
        status == ServingStatus::Serving,
        "{addr} reports {status:?}"
    );
    Ok(())
}
