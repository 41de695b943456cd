//! Structured logs and traces.
//!
//! Logs: `RUST_LOG` filters, text or JSON lines on stderr; a line logged
//! inside a traced span carries its `trace_id` and `span_id`, so it leads to
//! its trace.
//!
//! Traces: OpenTelemetry spans exported over OTLP/gRPC, configured by the
//! standard variables and off unless an endpoint is set:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`),
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc`, the only one built in),
//! `OTEL_SERVICE_NAME` (default: the binary's name), `OTEL_TRACES_SAMPLER` /
//! `OTEL_TRACES_SAMPLER_ARG`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT` and the batch processor's `OTEL_BSP_*`.
//! Export is batched on a thread of its own: a request never waits for it,
//! and a collector that is down or slow costs the spans it does not take,
//! which are counted: `shop_trace_spans_ended_total` spans were handed to
//! the exporter, `shop_trace_spans_exported_total` reached the collector,
//! `shop_trace_spans_dropped_total` were lost in failed exports, and the
//! rest of the difference were dropped at a full queue (`OTEL_BSP_*`).

use crate::LogFormat;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

/// The installed telemetry; [`Telemetry::shutdown`] exports what is left.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn tracing(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still queued (bounded by the exporter's timeout).
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = flushed {
                tracing::warn!(error = %e, "cannot export the last spans");
            }
        }
    }
}

/// Installs the global subscriber (once; later calls only return an empty
/// [`Telemetry`]) for the binary `service`. Must run inside the Tokio
/// runtime, whose tasks carry the exporter's connection.
pub fn init(format: LogFormat, service: &str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (provider, refused) = match tracer_provider(service) {
        Ok(provider) => (provider, None),
        Err(e) => (None, Some(e)),
    };
    // Spans only, at INFO and above, whatever RUST_LOG says: the hop spans
    // are INFO; log events never become span events (their fields may be
    // user data), and the HTTP/2 crates' own spans stay out.
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("shop"))
            .with_threads(false)
            .with_level(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.is_span() && *meta.level() <= tracing::Level::INFO
            }))
    });
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs.event_format(WithTraceIds::text()).boxed(),
        LogFormat::Json => logs.json().event_format(WithTraceIds::json()).boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .try_init()
        .is_ok();
    if let Some(e) = refused {
        tracing::error!(error = %e, "traces are off");
    }
    if !installed {
        return Telemetry::default();
    }
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        crate::traces::enable();
    }
    Telemetry { provider }
}

/// The tracer provider the variables ask for; `None` without an endpoint.
fn tracer_provider(service: &str) -> anyhow::Result<Option<SdkTracerProvider>> {
    let configured = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if configured("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| configured("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .is_none()
    {
        return Ok(None);
    }
    let protocol = configured("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| configured("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "grpc".to_owned());
    anyhow::ensure!(
        protocol == "grpc",
        "OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: only `grpc` is built in"
    );
    // The exporter reads the endpoint, timeout and headers variables itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_protocol(opentelemetry_otlp::Protocol::Grpc)
        .build()?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if configured("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_owned());
    }
    // The sampler comes from OTEL_TRACES_SAMPLER(_ARG), parent-based
    // always-on by default; the batch processor from OTEL_BSP_*.
    let batches =
        opentelemetry_sdk::trace::BatchSpanProcessor::builder(CountingExporter(exporter)).build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_span_processor(CountingProcessor(batches))
            .with_resource(resource.build())
            .build(),
    ))
}

/// The batch processor, counting the spans handed to it: those neither
/// exported nor lost in a failed export were dropped at a full queue (or
/// wait in it).
#[derive(Debug)]
struct CountingProcessor<P>(P);

impl<P: opentelemetry_sdk::trace::SpanProcessor> opentelemetry_sdk::trace::SpanProcessor
    for CountingProcessor<P>
{
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        metrics::counter!("shop_trace_spans_ended_total").increment(1);
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource);
    }
}

/// The OTLP exporter, counting the spans a failed export loses.
#[derive(Debug)]
struct CountingExporter<E>(E);

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let exported = self.0.export(batch).await;
        if exported.is_ok() {
            metrics::counter!("shop_trace_spans_exported_total").increment(spans);
        } else {
            metrics::counter!("shop_trace_spans_dropped_total").increment(spans);
        }
        exported
    }

    fn shutdown_with_timeout(&mut self, timeout: std::time::Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource);
    }
}

/// The standard log line, plus the current span's `trace_id` and `span_id`
/// when it is traced.
struct WithTraceIds<F> {
    inner: F,
    json: bool,
}

impl WithTraceIds<tracing_subscriber::fmt::format::Format> {
    fn text() -> Self {
        Self {
            inner: tracing_subscriber::fmt::format(),
            json: false,
        }
    }
}

impl WithTraceIds<tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json>> {
    fn json() -> Self {
        Self {
            inner: tracing_subscriber::fmt::format().json().flatten_event(true),
            json: true,
        }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let ids = ctx.lookup_current().and_then(|span| {
            let extensions = span.extensions();
            let otel = extensions.get::<tracing_opentelemetry::OtelData>()?;
            Some((otel.trace_id()?, otel.span_id()?))
        });
        let Some((trace_id, span_id)) = ids else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let ids = [
            ("trace_id", trace_id.to_string()),
            ("span_id", span_id.to_string()),
        ];
        writer.write_str(&with_fields(&line, self.json, &ids))
    }
}

/// `line` (one formatted log line) with `fields` added: as members of the
/// JSON object, or as `key=value` at the end of a text line.
fn with_fields(line: &str, json: bool, fields: &[(&str, String)]) -> String {
    let body = line.trim_end_matches('\n');
    let mut out = String::with_capacity(body.len() + 64);
    match body.strip_suffix('}').filter(|_| json) {
        Some(object) => {
            out.push_str(object);
            for (key, value) in fields {
                out.push_str(&format!(",\"{key}\":\"{value}\""));
            }
            out.push('}');
        }
        None => {
            out.push_str(body);
            for (key, value) in fields {
                out.push_str(&format!(" {key}={value}"));
            }
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::with_fields;

    #[test]
    fn trace_ids_join_json_and_text_lines() {
        let ids = [("trace_id", "ab".to_owned()), ("span_id", "cd".to_owned())];
        let json = with_fields("{\"level\":\"INFO\",\"message\":\"hi\"}\n", true, &ids);
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("still JSON");
        assert_eq!(parsed["trace_id"], "ab");
        assert_eq!(parsed["span_id"], "cd");
        assert_eq!(parsed["message"], "hi");
        assert_eq!(
            with_fields("INFO hi x=1\n", false, &ids),
            "INFO hi x=1 trace_id=ab span_id=cd\n"
        );
    }
}
