//! Logs and traces: `tracing` with `RUST_LOG` filtering, text or JSON lines on stderr, and
//! OpenTelemetry export over OTLP when the standard variables ask for it.
//!
//! - Nothing is exported (and nothing complains) unless `OTEL_EXPORTER_OTLP_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set.
//! - `OTEL_EXPORTER_OTLP_PROTOCOL` (or `..._TRACES_PROTOCOL`): `grpc` or `http/protobuf` (the
//!   OpenTelemetry default).
//! - `OTEL_SERVICE_NAME` (default `telemetry-node`); the node name is the `service.instance.id`.
//! - `OTEL_TRACES_SAMPLER` / `_ARG` as the SDK reads them; unset, a parent-based ratio of
//!   [`DEFAULT_TRACE_RATIO`], so a million samples a second (250 batches) is not a million spans.
//! - Only this project's spans are exported (ractor's own actor-lifetime spans are not).
//! - [`Observability::shutdown`] flushes the last spans on exit.

use anyhow::{bail, Context};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;
use crate::DEFAULT_LOG_FILTER;

/// Share of root traces sampled when `OTEL_TRACES_SAMPLER` is unset.
pub const DEFAULT_TRACE_RATIO: f64 = 0.01;

/// What must be shut down on exit.
pub struct Observability {
    provider: Option<SdkTracerProvider>,
}

impl Observability {
    /// Flushes and stops the trace exporter, if any.
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                eprintln!("telemetry-node: trace export shutdown: {e}");
            }
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn tracer_provider(node: &str) -> anyhow::Result<Option<SdkTracerProvider>> {
    if env("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        && env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    {
        return Ok(None);
    }
    let protocol = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http/protobuf".into());
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = match protocol.as_str() {
        "grpc" => builder.with_tonic().build(),
        "http/protobuf" => builder.with_http().build(),
        other => bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported: use grpc or http/protobuf"
        ),
    }
    .context("building the OTLP span exporter")?;
    let mut resource =
        Resource::builder().with_attribute(KeyValue::new("service.instance.id", node.to_string()));
    if env("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("telemetry-node");
    }
    let mut provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build());
    if env("OTEL_TRACES_SAMPLER").is_none() {
        provider = provider.with_sampler(Sampler::ParentBased(Box::new(
            Sampler::TraceIdRatioBased(DEFAULT_TRACE_RATIO),
        )));
    }
    Ok(Some(provider.build()))
}

/// Installs the global subscriber; call inside the Tokio runtime (the gRPC exporter needs it).
pub fn init(format: LogFormat, node: &str) -> anyhow::Result<Observability> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // RUST_LOG filters the log lines only; spans for export have their own filter below.
    let fmt = match format {
        LogFormat::Text => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_filter(filter)
            .boxed(),
    };
    let provider = tracer_provider(node)?;
    let otel = provider.as_ref().map(|p| {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("telemetry-node"))
            .with_filter(filter_fn(|m| {
                m.target().starts_with("telemetry") && *m.level() <= tracing::Level::INFO
            }))
    });
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .context("installing the log subscriber")?;
    Ok(Observability { provider })
}
