//! Logs, traces and metrics.
//!
//! - Logs: `tracing` to stdout, human or JSON ([`crate::config::LogFormat`]).
//! - Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are exported over OTLP/gRPC. The W3C
//!   trace-context propagator is installed either way, so a `traceparent` that arrives on a request
//!   is passed on to the next gRPC call and Kafka event even when this process exports nothing.
//! - Metrics: one process-wide Prometheus recorder, rendered by the admin server's `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::{propagation::TextMapCompositePropagator, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{CommonOptions, LogFormat};

/// Keeps the trace exporter alive; flushes pending spans when dropped.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
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
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
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
