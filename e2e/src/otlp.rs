//! An OTLP/gRPC trace receiver on a free port, for tests and the benchmark:
//! it keeps every span the real exporters send it.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One received span, with the service that sent it.
#[derive(Debug, Clone)]
pub struct Received {
    pub service: String,
    pub name: String,
    pub kind: i32,
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    pub parent_span_id: Vec<u8>,
    pub attributes: HashMap<String, String>,
    /// (trace id, span id) of each linked span.
    pub links: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Received {
    /// Whether this is `service`'s span `name` of `kind`.
    pub fn is(&self, service: &str, kind: SpanKind, name: &str) -> bool {
        self.service == service && self.kind == kind as i32 && self.name == name
    }
}

/// An OTLP trace receiver: keeps every span it is sent.
#[derive(Debug, Clone, Default)]
pub struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
    /// Spans received, kept or not.
    received: Arc<std::sync::atomic::AtomicUsize>,
    /// Only count (the benchmark): a long run would hold millions.
    count_only: bool,
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        let spans: usize = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.received
            .fetch_add(spans, std::sync::atomic::Ordering::Relaxed);
        if self.count_only {
            return Ok(tonic::Response::new(ExportTraceServiceResponse::default()));
        }
        let mut kept = self.spans.lock().expect("spans");
        for resource in request.resource_spans {
            let service = resource
                .resource
                .map(|r| attributes(&r.attributes))
                .and_then(|a| a.get("service.name").cloned())
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    kept.push(Received {
                        service: service.clone(),
                        name: span.name.clone(),
                        kind: span.kind,
                        trace_id: span.trace_id.clone(),
                        span_id: span.span_id.clone(),
                        parent_span_id: span.parent_span_id.clone(),
                        attributes: attributes(&span.attributes),
                        links: span
                            .links
                            .iter()
                            .map(|l| (l.trace_id.clone(), l.span_id.clone()))
                            .collect(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    /// Serves on a free port; returns the receiver and its endpoint URL.
    pub async fn start() -> (Self, String) {
        Self::serve(Self::default()).await
    }

    /// Like [`Receiver::start`], but only counts what it receives.
    pub async fn start_counting() -> (Self, String) {
        Self::serve(Self {
            count_only: true,
            ..Self::default()
        })
        .await
    }

    async fn serve(receiver: Self) -> (Self, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("port");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (receiver, url)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().expect("spans").clone()
    }

    /// How many spans were received so far.
    pub fn count(&self) -> usize {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }
}
