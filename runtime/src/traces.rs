//! Trace context across the hops, written once: W3C `traceparent` in and out
//! of HTTP and gRPC headers and Kafka header values, and the gRPC server and
//! client spans (`rpc.*` semantic conventions) as tower layers.
//!
//! With traces off ([`crate::telemetry`] without an endpoint) nothing here
//! records anything: the hop spans are not even created ([`when_on`]), so
//! logs stay as they were, extraction finds no context, and
//! [`traceparent_of`] returns `None`.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use std::task::{Context as TaskContext, Poll};
use tonic::codegen::http;
use tracing::Instrument as _;
use tracing::instrument::Instrumented;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans are exported (set once by [`crate::telemetry::init`]).
pub fn enabled() -> bool {
    ON.load(std::sync::atomic::Ordering::Relaxed)
}

pub(crate) fn enable() {
    ON.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// `make()`'s span when traces are on, else a disabled one (no cost, and
/// no span fields in the log lines).
pub fn when_on(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if enabled() {
        make()
    } else {
        tracing::Span::none()
    }
}

/// The W3C `traceparent` of `span`, when it has a valid trace context.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// Makes `span` a child of the context `traceparent` carries (nothing if
/// it is absent or malformed).
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(traceparent) = traceparent {
        let context = extract(&OneHeader(traceparent));
        if context.span().span_context().is_valid() {
            let _ = span.set_parent(context);
        }
    }
}

/// Links `span` to the context `traceparent` carries (nothing if malformed).
pub fn add_link(span: &tracing::Span, traceparent: &str) {
    let context = extract(&OneHeader(traceparent));
    let linked = context.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

fn extract(carrier: &dyn Extractor) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(carrier))
}

/// A lone `traceparent` value (an outbox column, a Kafka header).
struct OneHeader<'a>(&'a str);

impl Extractor for OneHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// HTTP (and so gRPC metadata) headers, read.
struct ReadHeaders<'a>(&'a http::HeaderMap);

impl Extractor for ReadHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// HTTP headers, written.
struct WriteHeaders<'a>(&'a mut http::HeaderMap);

impl Injector for WriteHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Makes `span` a child of the trace context in `headers`, if any (an HTTP
/// client's or the gateway's).
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let context = extract(&ReadHeaders(headers));
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// Writes `span`'s trace context into `headers`.
pub fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut WriteHeaders(headers));
    });
}

/// The span of one gRPC call, named `package.Service/Method`; `None` for
/// health checks and reflection, which would drown the traces.
fn rpc_span(path: &str, kind: &'static str) -> Option<tracing::Span> {
    let name = path.trim_start_matches('/');
    if !enabled() || name.starts_with("grpc.") {
        return None;
    }
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    Some(tracing::info_span!(
        "grpc",
        otel.name = name,
        otel.kind = kind,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
    ))
}

/// Server spans: every call becomes a SERVER span, child of the caller's
/// context from the request's metadata, and the handler's spans its
/// children. `tonic::transport::Server::builder().layer(GrpcServerTraces)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcServerTraces;

impl<S> tower::Layer<S> for GrpcServerTraces {
    type Service = GrpcServerTraced<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerTraced(inner)
    }
}

/// A gRPC server with [`GrpcServerTraces`].
#[derive(Debug, Clone)]
pub struct GrpcServerTraced<S>(S);

impl<S, B> tower::Service<http::Request<B>> for GrpcServerTraced<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let span = rpc_span(request.uri().path(), "server").unwrap_or_else(tracing::Span::none);
        set_parent_from_headers(&span, request.headers());
        self.0.call(request).instrument(span)
    }
}

/// A gRPC channel whose calls are CLIENT spans, children of the caller's
/// current span, with their context sent in the request's metadata.
#[derive(Debug, Clone)]
pub struct GrpcClientTraced<S>(S);

impl<S> GrpcClientTraced<S> {
    /// Traces the calls made over `channel`.
    pub fn new(channel: S) -> Self {
        Self(channel)
    }
}

impl<S, B> tower::Service<http::Request<B>> for GrpcClientTraced<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let Some(span) = rpc_span(request.uri().path(), "client") else {
            return self.0.call(request).instrument(tracing::Span::none());
        };
        inject(&span, request.headers_mut());
        self.0.call(request).instrument(span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_traces_nothing_is_made_up() {
        let span = tracing::info_span!("untraced");
        assert_eq!(traceparent_of(&span), None);
        set_parent(&span, Some("garbage"));
        add_link(
            &span,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
    }

    #[test]
    fn health_checks_and_reflection_have_no_span() {
        assert!(rpc_span("/grpc.health.v1.Health/Check", "server").is_none());
        assert!(
            rpc_span(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                "server"
            )
            .is_none()
        );
    }
}
