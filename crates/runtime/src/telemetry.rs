//! Logs, traces and metrics.
//!
//! - Logs: `tracing` to stdout, human or JSON ([`crate::config::LogFormat`]). A JSON line written
//!   inside a span that has an OpenTelemetry context carries its `trace_id` and `span_id`.
//! - Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are exported over OTLP/gRPC, and
//!   the trace context that arrives (a `traceparent` header, gRPC metadata, an event's envelope) is
//!   continued and passed on to the next gRPC call, event and socket write. A process that
//!   exports nothing has no OpenTelemetry layer and passes no context on (so that spans cost
//!   nothing where nobody looks at them): trace every service of a path, or none.
//! - Metrics: one process-wide Prometheus recorder, rendered by the admin server's `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::{propagation::TextMapCompositePropagator, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer,
    fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter, format::Writer},
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

use crate::config::{CommonOptions, LogFormat};

/// Keeps the trace exporter alive; flushes pending spans when dropped.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports the spans that ended so far and waits for the exporter. It blocks: call it off the
    /// async worker threads (`spawn_blocking`).
    pub fn flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        match &self.provider {
            Some(provider) => provider.force_flush(),
            None => Ok(()),
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {error}");
        }
    }
}

/// Installs logging, tracing export and the metrics recorder for `service`.
///
/// Call once, early in `main`. A bad log filter is a startup error naming `REALCHAT_LOG`.
pub fn init(service: &'static str, options: &CommonOptions) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_new(&options.log_filter).map_err(|e| {
        anyhow::anyhow!(
            "REALCHAT_LOG={:?} is not a valid filter: {e}",
            options.log_filter
        )
    })?;

    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
    ]));

    let provider = match options.otlp_endpoint.as_deref() {
        Some(endpoint) if !endpoint.is_empty() => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .map_err(|e| anyhow::anyhow!("OTEL_EXPORTER_OTLP_ENDPOINT={endpoint:?}: {e}"))?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(Resource::builder().with_service_name(service).build())
                .build();
            opentelemetry::global::set_tracer_provider(provider.clone());
            Some(provider)
        }
        _ => None,
    };
    let otel_layer = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));

    let fmt_layer = match options.log_format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed(),
        LogFormat::Json => json_layer(std::io::stdout).boxed(),
    };

    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))?;

    metrics_handle();
    Ok(TelemetryGuard { provider })
}

/// The JSON log layer: one object per line, the event's fields and its span's, and the trace and
/// span ids of the span the event is in (see [`WithTraceIds`]).
fn json_layer<S, W>(writer: W) -> impl Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .event_format(WithTraceIds(
            tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(true),
        ))
        .with_writer(writer)
}

/// A JSON event format that leads each line with `trace_id` and `span_id` when the event is in a
/// span with an OpenTelemetry context, so a log line finds its trace (and the other way round).
/// Outside such a span (or with no trace export, so no contexts) the line is `F`'s as it is.
struct WithTraceIds<F>(F);

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
        let ids = ctx.parent_span().and_then(|span| {
            let extensions = span.extensions();
            let data = extensions.get::<tracing_opentelemetry::OtelData>()?;
            let (trace_id, span_id) = (data.trace_id()?, data.span_id()?);
            (trace_id != opentelemetry::TraceId::INVALID).then_some((trace_id, span_id))
        });
        let Some((trace_id, span_id)) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => {
                let comma = if rest.starts_with('}') { "" } else { "," };
                write!(
                    writer,
                    "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"{comma}{rest}"
                )
            }
            None => writer.write_str(&line),
        }
    }
}

/// The process-wide Prometheus recorder, installed on first use.
///
/// Services running in one test process share it, which is harmless: metric names are per crate.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = buckets(PrometheusBuilder::new()).build_recorder();
            crate::collectors::describe();
            let handle = recorder.handle();
            // Another recorder can only be installed by a test harness; the handle still renders ours.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Bucket bounds of every duration histogram, in seconds: from a fast path's milliseconds to a
/// broker outage's minute. Histograms, not summaries: buckets add up across replicas, so a
/// dashboard's `histogram_quantile` over `sum by (le)` is the fleet's quantile.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

/// Bucket bounds of every other histogram (counts: a batch's sends, a fan-out's sockets).
pub const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

fn buckets(builder: PrometheusBuilder) -> PrometheusBuilder {
    use metrics_exporter_prometheus::Matcher;
    builder
        .set_buckets(COUNT_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS))
        .unwrap_or_else(|error| unreachable!("the bucket lists are not empty: {error}"))
}

/// Trace context propagation across gRPC, HTTP and Kafka headers.
pub mod propagation {
    use super::*;
    use opentelemetry::propagation::{Extractor, Injector};

    struct HeaderInjector<'a>(&'a mut http::HeaderMap);

    impl Injector for HeaderInjector<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(key.as_bytes()),
                http::HeaderValue::from_str(&value),
            ) {
                self.0.insert(name, value);
            }
        }
    }

    struct HeaderExtractor<'a>(&'a http::HeaderMap);

    impl Extractor for HeaderExtractor<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(http::HeaderName::as_str).collect()
        }
    }

    /// Writes the current span's context into outgoing headers (`traceparent`).
    pub fn inject(headers: &mut http::HeaderMap) {
        let context = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&context, &mut HeaderInjector(headers));
        });
    }

    /// Makes `span` a child of the context carried by incoming headers, if any.
    pub fn adopt(span: &tracing::Span, headers: &http::HeaderMap) {
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(headers))
        });
        // Without a layer that exports, there is no OpenTelemetry context to attach to.
        let _ = span.set_parent(parent);
    }

    /// The current span's W3C `traceparent`, or an empty string when there is none.
    pub fn current_traceparent() -> String {
        let mut headers = http::HeaderMap::new();
        inject(&mut headers);
        headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    /// The only key [`TraceContext::from_traceparent`] is asked for.
    struct Traceparent<'a>(&'a str);

    impl Extractor for Traceparent<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == "traceparent").then_some(self.0)
        }

        fn keys(&self) -> Vec<&str> {
            vec!["traceparent"]
        }
    }

    /// A span's trace context, to be continued elsewhere: in another task (the writer that
    /// commits a batch of sends, the session that writes a socket) or from what a carrier holds
    /// (an event's `traceparent`). Cheap to clone; empty without trace export.
    #[derive(Debug, Clone, Default)]
    pub struct TraceContext(opentelemetry::Context);

    impl TraceContext {
        /// The current span's.
        pub fn current() -> Self {
            Self(tracing::Span::current().context())
        }

        /// The one a W3C `traceparent` names (as events and forwards carry it); empty when it
        /// is empty or malformed.
        pub fn from_traceparent(traceparent: &str) -> Self {
            if traceparent.is_empty() {
                return Self::default();
            }
            use opentelemetry::propagation::TextMapPropagator as _;
            Self(TraceContextPropagator::new().extract(&Traceparent(traceparent)))
        }

        /// Whether it names a span.
        pub fn is_valid(&self) -> bool {
            use opentelemetry::trace::TraceContextExt as _;
            self.0.span().span_context().is_valid()
        }

        /// Makes `span` a child of this context; nothing when it names no span. Call it before
        /// the span is first entered.
        pub fn adopt(&self, span: &tracing::Span) {
            if self.is_valid() {
                let _ = span.set_parent(self.0.clone());
            }
        }

        /// Links `span` to this context (for work done on behalf of several traces at once).
        pub fn link(&self, span: &tracing::Span) {
            use opentelemetry::trace::TraceContextExt as _;
            span.add_link(self.0.span().span_context().clone());
        }
    }

    /// Makes `span` a child of the context in a W3C `traceparent`, if it holds one.
    pub fn adopt_traceparent(span: &tracing::Span, traceparent: &str) {
        TraceContext::from_traceparent(traceparent).adopt(span);
    }

    /// For a span doing the work of several traces at once (the sends of one transaction, the
    /// events of one fetch): a child of the first trace context among `traceparents`, and linked
    /// to the others. Each trace then reaches the shared work, through its parent or a link.
    pub fn adopt_batch<'a>(span: &tracing::Span, traceparents: impl IntoIterator<Item = &'a str>) {
        let mut adopted = false;
        for traceparent in traceparents {
            let context = TraceContext::from_traceparent(traceparent);
            if !context.is_valid() {
                continue;
            }
            if adopted {
                context.link(span);
            } else {
                context.adopt(span);
                adopted = true;
            }
        }
    }

    /// A tonic client interceptor that sends the current trace context with every call.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct GrpcClientPropagation;

    impl tonic::service::Interceptor for GrpcClientPropagation {
        fn call(
            &mut self,
            mut request: tonic::Request<()>,
        ) -> Result<tonic::Request<()>, tonic::Status> {
            let mut headers = http::HeaderMap::new();
            inject(&mut headers);
            for (name, value) in &headers {
                if let (Ok(key), Ok(value)) = (
                    tonic::metadata::MetadataKey::from_bytes(name.as_str().as_bytes()),
                    tonic::metadata::MetadataValue::try_from(value.as_bytes()),
                ) {
                    request.metadata_mut().insert(key, value);
                }
            }
            Ok(request)
        }
    }

    /// The span of one incoming gRPC call, child of the caller's trace; for tonic's `trace_fn`.
    pub fn grpc_server_span(request: &http::Request<()>) -> tracing::Span {
        let span = tracing::info_span!(
            "grpc",
            rpc.method = %request.uri().path(),
            otel.kind = "server",
        );
        adopt(&span, request.headers());
        span
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What the JSON layer wrote, line by line.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn json(&self) -> Vec<serde_json::Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        }
    }

    #[test]
    fn a_json_line_inside_a_span_carries_the_trace_and_span_ids_that_are_propagated() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry()
            .with(json_layer(move || writer.clone()))
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));

        let traceparent = tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside any span");
            let span = tracing::info_span!("work", user.id = "u1");
            span.in_scope(|| {
                tracing::info!(answer = 42, "inside a span");
                propagation::current_traceparent()
            })
        });

        // `00-<trace id>-<span id>-<flags>`
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{traceparent:?}");
        let lines = lines.json();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["message"], "outside any span");
        assert!(lines[0].get("trace_id").is_none(), "{}", lines[0]);
        assert!(lines[0].get("span_id").is_none(), "{}", lines[0]);
        let inside = &lines[1];
        assert_eq!(inside["message"], "inside a span");
        assert_eq!(inside["answer"], 42);
        assert_eq!(inside["span"]["name"], "work");
        assert_eq!(inside["span"]["user.id"], "u1");
        assert_eq!(inside["trace_id"], parts[1], "{inside}");
        assert_eq!(inside["span_id"], parts[2], "{inside}");
    }

    #[test]
    fn without_trace_contexts_a_json_line_is_the_plain_one() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry().with(json_layer(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info_span!("work").in_scope(|| tracing::info!("inside a span"));
        });
        let lines = lines.json();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["message"], "inside a span");
        assert_eq!(lines[0]["span"]["name"], "work");
        assert!(lines[0].get("trace_id").is_none(), "{}", lines[0]);
    }

    /// Keeps what it is given to export.
    #[derive(Debug, Clone, Default)]
    struct Exported(Arc<Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

    impl opentelemetry_sdk::trace::SpanExporter for Exported {
        async fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    #[test]
    fn a_batch_span_is_a_child_of_the_first_trace_and_links_the_others() {
        let exported = Exported::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exported.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let first = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let second = "00-1bf7651916cd43dd8448eb211c80319d-c7ad6b7169203332-01";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(parent: None, "batch");
            propagation::adopt_batch(&span, ["", first, "not a traceparent", second]);
            span.in_scope(|| {});
        });
        let spans = exported.0.lock().unwrap().clone();
        assert_eq!(spans.len(), 1);
        let batch = &spans[0];
        assert_eq!(
            batch.span_context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(batch.parent_span_id.to_string(), "b7ad6b7169203331");
        let links: Vec<String> = batch
            .links
            .iter()
            .map(|l| l.span_context.span_id().to_string())
            .collect();
        assert_eq!(links, ["c7ad6b7169203332"]);
    }
}
