//! Logs and traces: structured logs on stderr (human-readable or JSON lines), and OpenTelemetry
//! traces exported over OTLP/gRPC when an endpoint is configured.
//!
//! A trace crosses the service like this: the RPC layer ([`crate::grpc::observe`]) opens a
//! server span whose parent is the W3C `traceparent` the client sent (if any); the writer opens
//! a `log.append` span under each traced command; the event stores the command span's
//! `traceparent`, so the projection (and any subscriber) continues the same trace when it
//! applies the event, however much later and in whatever process.
//!
//! With no endpoint configured nothing here costs anything on the hot paths: no spans are
//! made (see [`enabled`]) and events carry no trace context.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Whether spans are exported. Set once, at start-up.
static TRACING: AtomicBool = AtomicBool::new(false);

/// True when traces are exported: only then do the RPC layer, the writer and the projection
/// make spans.
pub fn enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// How log lines are written on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One readable line per event (the default).
    #[default]
    Human,
    /// One JSON object per line, with the span's fields, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<LogFormat, String> {
        match text {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected human or json)"
            )),
        }
    }
}

/// What [`init`] set up; dropping it flushes the spans not yet exported.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("inventory: flushing traces failed: {error}");
        }
    }
}

/// Installs the global subscriber: log lines filtered by `filter` (an `EnvFilter` directive
/// such as `info` or `inventory=debug`), and, when `otlp_endpoint` is given, the OpenTelemetry
/// layer exporting this crate's spans to it. Must run inside the tokio runtime (the OTLP
/// exporter's channel lives there). `service_name` is used unless `OTEL_SERVICE_NAME` is set.
pub fn init(
    format: LogFormat,
    filter: &str,
    otlp_endpoint: Option<&str>,
    service_name: &str,
) -> Result<Telemetry, String> {
    let log_filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|error| format!("invalid log filter {filter:?}: {error}"))?;
    let log_layer = match format {
        // Colour codes only on a terminal: in a file or a log collector they are noise.
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_filter(log_filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(log_filter)
            .boxed(),
    };
    let Some(endpoint) = otlp_endpoint else {
        tracing_subscriber::registry()
            .with(log_layer)
            .try_init()
            .map_err(|error| error.to_string())?;
        return Ok(Telemetry { provider: None });
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|error| format!("cannot export traces to {endpoint}: {error}"))?;
    let service_name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service_name.into());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name)
                .build(),
        )
        .build();
    let tracer = provider.tracer("inventory");
    // Only this crate's spans are exported: the libraries' own (h2, hyper, tonic) would add
    // several spans per request that say nothing about inventory.
    let trace_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target("inventory", tracing::Level::INFO),
        );
    tracing_subscriber::registry()
        .with(log_layer)
        .with(trace_layer)
        .try_init()
        .map_err(|error| error.to_string())?;
    TRACING.store(true, Ordering::Relaxed);
    tracing::info!(endpoint, "exporting traces over OTLP");
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// Sets `span`'s parent to the W3C trace context in `carrier` (`traceparent`, `tracestate`),
/// if it holds a valid one; otherwise the span starts a new trace.
pub fn set_remote_parent(span: &tracing::Span, carrier: &dyn Extractor) {
    let context = TraceContextPropagator::new().extract(carrier);
    if opentelemetry::trace::TraceContextExt::span(&context)
        .span_context()
        .is_valid()
    {
        // Fails only when the span was already started with a parent; ours are new.
        let _ = span.set_parent(context);
    }
}

/// The W3C `traceparent` of `span`, to store with the events it causes.
pub fn traceparent(span: &tracing::Span) -> Option<Arc<str>> {
    let mut carrier = TraceParent(None);
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.0.map(Arc::from)
}

/// The span of the projection applying one event: a child of the span that stored
/// `traceparent` with the event. `None` when tracing is off or the event carries no trace
/// context.
pub fn projection_span(traceparent: Option<&str>) -> Option<tracing::Span> {
    let traceparent = traceparent.filter(|_| enabled())?;
    let span = tracing::info_span!("projection.apply");
    set_remote_parent(&span, &TraceParent(Some(traceparent.to_owned())));
    Some(span)
}

/// A carrier holding only `traceparent`.
struct TraceParent(Option<String>);

impl Injector for TraceParent {
    fn set(&mut self, key: &str, value: String) {
        if key == "traceparent" {
            self.0 = Some(value);
        }
    }
}

impl Extractor for TraceParent {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent")
            .then_some(self.0.as_deref())
            .flatten()
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}
