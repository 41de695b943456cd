//! How the gateway is assembled: the API routes with their OpenAPI document
//! (one registration, [`routes::api`]), Swagger UI, the web UI, middleware
//! (metrics, body limit, timeout, request ids, tracing), and serving until
//! shutdown.

use crate::GatewayConfig;
use crate::openapi::{self, Document};
use crate::problem::{ApiError, Call};
use crate::routes::{self, AppState, ops};
use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::HeaderName;
use axum::response::IntoResponse;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa_swagger_ui::SwaggerUi;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The OpenAPI document of every route in [`routes::api`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::api().split_for_parts().1
}

/// [`openapi()`] as YAML, exactly as committed in `openapi.yaml`.
pub fn openapi_yaml() -> String {
    openapi::to_yaml(&openapi())
}

/// Every route with its middleware.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let (api, doc) = routes::api().split_for_parts();
    let limits = std::sync::Arc::clone(&state.limits);
    let app = api
        .merge(routes::undocumented(
            state.auth.mode == crate::auth::Mode::Dev,
        ))
        .fallback(ops::not_found)
        .layer(Extension(Document::new(&doc)))
        .with_state(state);
    app.merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        .layer(axum::middleware::from_fn_with_state(limits, per_ip_limit))
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            request_timeout,
            deadline,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(http_span)
                .on_response(
                    |response: &axum::response::Response, _: Duration, span: &tracing::Span| {
                        span.record("http.response.status_code", response.status().as_u16());
                    },
                ),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// The SERVER span of one request, named by its route template (`POST
/// /api/v1/orders`), child of the client's `traceparent` if it sent one.
/// The path only, never the query: a query may carry a live-status token.
fn http_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    if !shop_runtime::traces::enabled() {
        return tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id = id);
    }
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str());
    let span = tracing::info_span!(
        "http",
        otel.name = %format_args!("{} {route}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = route,
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        request_id = id,
    );
    shop_runtime::traces::set_parent_from_headers(&span, request.headers());
    span
}

/// Writes count against their client IP's rate limit (when the connection's
/// address is known).
async fn per_ip_limit(
    State(limits): State<std::sync::Arc<crate::limits::Limits>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !request.method().is_safe()
        && let Some(axum::extract::ConnectInfo(peer)) = request
            .extensions()
            .get::<axum::extract::ConnectInfo<SocketAddr>>(
        )
        && let Err(limited) = limits.ip_write(peer.ip())
    {
        return limited.into_response();
    }
    next.run(request).await
}

/// The request's deadline (`GATEWAY_REQUEST_TIMEOUT_MS`): a request still
/// unanswered when it passes gets a problem document; for a write the
/// outcome is unknown, so the client is told to retry with the same key.
async fn deadline(
    State(limit): State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let call = if request.method().is_safe() {
        Call::Read
    } else {
        Call::Write
    };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::deadline_passed(call).into_response(),
    }
}

/// A bound, not yet serving, gateway.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    config: GatewayConfig,
}

impl Application {
    /// Binds the listener (upstream channels connect lazily).
    pub async fn build(config: &GatewayConfig) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
        Ok(Self {
            listener,
            config: config.clone(),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`, then drains open requests and event streams.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if self.config.auth.mode == crate::auth::Mode::Dev {
            tracing::warn!(
                "GATEWAY_AUTH=dev: POST /api/v1/dev/tokens gives anyone a token for any user; never face real users with it"
            );
        }
        let state = AppState::new(&self.config, shutdown.clone())?;
        // The rate limiters forget clients that have been quiet, so their
        // memory stays bounded.
        let limits = std::sync::Arc::clone(&state.limits);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = every.tick() => limits.forget_idle(),
                }
            }
        });
        let app = router(state, self.config.request_timeout);
        tracing::info!(addr = %self.listener.local_addr()?, "gateway listening");
        axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// `GET /healthz` on the gateway at `addr` (an unspecified address means this
/// host): what container health checks run, with no curl in the image.
pub async fn check_health(addr: SocketAddr) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(target).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    };
    let head = tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .context("health check timed out")??;
    anyhow::ensure!(
        head.starts_with(b"HTTP/1.1 200"),
        "gateway at {target} is not healthy"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use shop_proto::values::{MAX_AMOUNT, MAX_DESCRIPTION_CHARS, MAX_PAGE};

    #[test]
    fn committed_openapi_yaml_matches_the_code() {
        let committed = include_str!("../../openapi.yaml");
        assert!(
            committed == super::openapi_yaml(),
            "openapi.yaml is stale: run `make openapi` and commit the result"
        );
    }

    /// utoipa's attributes take literals only: this ties each documented
    /// bound to the one constant the code enforces.
    #[test]
    fn documented_limits_are_the_enforced_limits() {
        let doc: serde_json::Value =
            serde_json::from_str(&super::openapi().to_json().expect("json")).expect("parses");
        let schemas = &doc["components"]["schemas"];
        for schema in ["Order", "TopUp", "CreateOrder"] {
            let amount = &schemas[schema]["properties"]["amount"];
            assert_eq!(amount["minimum"], 1, "{schema}.amount");
            assert_eq!(amount["maximum"], MAX_AMOUNT, "{schema}.amount");
        }
        assert_eq!(
            schemas["CreateOrder"]["properties"]["description"]["maxLength"],
            MAX_DESCRIPTION_CHARS
        );
        let list = doc["paths"]["/api/v1/orders"]["get"]["parameters"]
            .as_array()
            .expect("parameters");
        let limit = list
            .iter()
            .find(|p| p["name"] == "limit")
            .expect("limit parameter");
        assert_eq!(limit["schema"]["maximum"], MAX_PAGE);
    }
}
