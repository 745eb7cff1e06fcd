//! Trace context across threads, the broker log and nodes: a span's W3C `traceparent` travels
//! inside the sample batch (so the collector continues the streamer's trace) and inside the
//! cluster envelope (so a peer continues the caller's), because ractor's own span propagation
//! does not cross nodes. Without an OpenTelemetry exporter these are cheap no-ops.

use std::collections::HashMap;

use opentelemetry::trace::TraceContextExt;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `traceparent` of `span`, if it belongs to a trace.
pub fn traceparent(span: &Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.remove("traceparent")
}

/// Makes `span` a child of the remote `traceparent` (call before entering it) and records its
/// trace id in the span's `trace_id` field, so every log line inside carries it.
pub fn follow(span: &Span, traceparent: Option<&str>) {
    if let Some(tp) = traceparent {
        let carrier = HashMap::from([("traceparent".to_string(), tp.to_string())]);
        let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
        let _ = span.set_parent(cx);
    }
    record_trace_id(span);
}

/// Records the span's trace id in its `trace_id` field (declared `Empty` at creation).
pub fn record_trace_id(span: &Span) {
    let id = span.context().span().span_context().trace_id();
    if id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(id));
    }
}
