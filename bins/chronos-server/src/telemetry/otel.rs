//! OpenTelemetry traces over OTLP/HTTP (protobuf), configured by the standard
//! variables and off unless an endpoint is set:
//!
//! - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as given) or
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` appended);
//! - `OTEL_EXPORTER_OTLP_HEADERS` / `OTEL_EXPORTER_OTLP_TRACES_HEADERS`
//!   (`key=value,…`, e.g. an API key; never logged);
//! - `OTEL_EXPORTER_OTLP_TIMEOUT` / `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` (ms);
//! - `OTEL_SERVICE_NAME` (default `chronos-server`), `OTEL_RESOURCE_ATTRIBUTES`;
//! - `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` switch it off.
//!
//! Spans are batched (the SDK's own thread) and sent by our reqwest client on
//! the server's runtime; export failures are logged once until an export
//! succeeds again, with the endpoint redacted.

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use sync_domain::redact::redact_url;
use tracing::Subscriber;
use tracing::dispatcher::WeakDispatch;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The service name when neither `OTEL_SERVICE_NAME` nor a `service.name`
/// resource attribute is set.
pub const DEFAULT_SERVICE_NAME: &str = "chronos-server";

/// How long an export may take when no `OTEL_EXPORTER_OTLP_*TIMEOUT` is set.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of a collector's answer that is read (as the SDK's own clients).
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// How long shutdown waits for the last spans to be sent.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the `OTEL_*` variables ask for, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct ExportSettings {
    /// Where spans are POSTed (the full `…/v1/traces` URL).
    pub endpoint: url::Url,
    /// The variable the endpoint came from, for messages.
    pub endpoint_variable: &'static str,
    /// Per export request.
    pub timeout: Duration,
}

impl std::fmt::Debug for ExportSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportSettings")
            .field("endpoint", &redact_url(self.endpoint.as_str()))
            .field("endpoint_variable", &self.endpoint_variable)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A set, non-blank variable.
fn set(lookup: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    lookup(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

impl ExportSettings {
    /// Reads the variables through `lookup` (`std::env::var` in the server):
    /// `None` when no endpoint is set or export is switched off; an error
    /// naming the variable when one is malformed (its value is not shown,
    /// only a redacted URL).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        if set(&lookup, "OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match set(&lookup, "OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => {
                return Err(format!(
                    "OTEL_TRACES_EXPORTER: `{other}` is not supported (use `otlp` or `none`)"
                ));
            }
        }
        let (endpoint_variable, endpoint) =
            if let Some(raw) = set(&lookup, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    parse_endpoint("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &raw)?,
                )
            } else if let Some(raw) = set(&lookup, "OTEL_EXPORTER_OTLP_ENDPOINT") {
                let mut base = parse_endpoint("OTEL_EXPORTER_OTLP_ENDPOINT", &raw)?;
                // The signal path goes below the base, as the OTLP specification says.
                let path = format!("{}/v1/traces", base.path().trim_end_matches('/'));
                base.set_path(&path);
                ("OTEL_EXPORTER_OTLP_ENDPOINT", base)
            } else {
                return Ok(None);
            };
        for variable in [
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ] {
            if let Some(protocol) = set(&lookup, variable)
                && protocol != "http/protobuf"
            {
                return Err(format!(
                    "{variable}: `{protocol}` is not supported (this build exports http/protobuf)"
                ));
            }
        }
        for variable in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some(headers) = set(&lookup, variable) {
                check_headers(variable, &headers)?;
            }
        }
        let mut timeout = DEFAULT_TIMEOUT;
        for variable in [
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        ] {
            if let Some(raw) = set(&lookup, variable) {
                let millis = raw
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| (1..=600_000).contains(ms))
                    .ok_or_else(|| {
                        format!(
                            "{variable}: `{raw}` is not a number of milliseconds from 1 to 600000"
                        )
                    })?;
                timeout = Duration::from_millis(millis);
            }
        }
        Ok(Some(Self {
            endpoint,
            endpoint_variable,
            timeout,
        }))
    }
}

fn parse_endpoint(variable: &str, raw: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(raw)
        .map_err(|e| format!("{variable}: `{}` is not a URL ({e})", redact_url(raw)))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(format!(
            "{variable}: `{}` is not an http(s) URL",
            redact_url(raw)
        ));
    }
    if url.password().is_some() || !url.username().is_empty() {
        return Err(format!(
            "{variable}: `{}` carries credentials in the URL; send them as a header with OTEL_EXPORTER_OTLP_HEADERS",
            redact_url(raw)
        ));
    }
    Ok(url)
}

/// `key=value,…` with valid header names; values are never echoed.
fn check_headers(variable: &str, headers: &str) -> Result<(), String> {
    for (index, pair) in headers.split(',').map(str::trim).enumerate() {
        if pair.is_empty() {
            continue;
        }
        let valid = pair.split_once('=').is_some_and(|(name, _)| {
            let name = name.trim();
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        });
        if !valid {
            return Err(format!(
                "{variable}: entry {} is not of the form name=value",
                index + 1
            ));
        }
    }
    Ok(())
}

/// The exporter `serve` runs: spans batched and sent over OTLP/HTTP.
pub struct TraceExport {
    provider: SdkTracerProvider,
    /// The endpoint, redacted, for log lines.
    shown: String,
    service: String,
}

impl std::fmt::Debug for TraceExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceExport")
            .field("endpoint", &self.shown)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl TraceExport {
    /// From the process environment (see [`ExportSettings::from_env`]).
    pub fn from_env(runtime: &tokio::runtime::Handle) -> Result<Option<Self>, String> {
        let Some(settings) = ExportSettings::from_env(|name| std::env::var(name).ok())? else {
            return Ok(None);
        };
        Self::new(&settings, runtime).map(Some)
    }

    /// An exporter to `settings.endpoint`, its requests sent on `runtime`.
    pub fn new(
        settings: &ExportSettings,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Self, String> {
        let shown = redact_url(settings.endpoint.as_str());
        let client = ExportClient::new(settings.timeout, runtime.clone(), shown.clone())?;
        // Headers, compression and the timeout the SDK reads from the
        // environment itself; the endpoint is the one checked above.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(settings.endpoint.as_str())
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_timeout(settings.timeout)
            .with_http_client(client)
            .build()
            .map_err(|e| {
                let raw = settings.endpoint.as_str();
                format!(
                    "{}: cannot build the OTLP exporter: {}",
                    settings.endpoint_variable,
                    e.to_string().replace(raw, &shown)
                )
            })?;
        let mut resource = Resource::builder();
        let named = Resource::builder()
            .build()
            .get(&opentelemetry::Key::new("service.name"))
            .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
        if !named {
            resource = resource.with_service_name(DEFAULT_SERVICE_NAME);
        }
        let resource = resource
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let service = resource
            .get(&opentelemetry::Key::new("service.name"))
            .map_or_else(
                || DEFAULT_SERVICE_NAME.to_owned(),
                |v| v.as_str().into_owned(),
            );
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        Ok(Self {
            provider,
            shown,
            service,
        })
    }

    /// The layers exporting spans and giving each its ids for the logs; also
    /// makes request handlers honour `traceparent` (the W3C propagator).
    pub fn layers<S>(&self) -> Box<dyn Layer<S> + Send + Sync>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        webhook_http::trace_context::enable();
        let tracer = self.provider.tracer("chronos-server");
        // Probes and scrapes are logged but not exported (webhook-http marks them).
        let exported = tracing_subscriber::filter::filter_fn(|meta| {
            meta.fields()
                .field(webhook_http::trace_context::NOT_EXPORTED_FIELD)
                .is_none()
        });
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_tracked_inactivity(false)
            .and_then(TraceIdsLayer::default())
            .with_filter(exported)
            .boxed()
    }

    /// The startup line saying where spans go.
    pub fn announce(&self) {
        tracing::info!(
            endpoint = %self.shown,
            service = %self.service,
            "exporting traces over OTLP/HTTP"
        );
    }

    /// Sends what is still batched and stops; bounded by [`SHUTDOWN_TIMEOUT`].
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            tracing::warn!(
                endpoint = %self.shown,
                error = %e.to_string().replace(self.shown.as_str(), "***"),
                "traces not all exported at shutdown"
            );
        }
    }
}

/// The OTLP exporter's HTTP client: our reqwest 0.12, each request run on the
/// server's runtime (the SDK's batch thread has none).
struct ExportClient {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
    shown: String,
    /// Whether the last export failed: failures are logged once per outage.
    failing: AtomicBool,
}

impl std::fmt::Debug for ExportClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportClient")
            .field("endpoint", &self.shown)
            .finish_non_exhaustive()
    }
}

impl ExportClient {
    fn new(
        timeout: Duration,
        runtime: tokio::runtime::Handle,
        shown: String,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            // A redirect would carry the headers (API keys) elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build the OTLP HTTP client: {e}"))?;
        Ok(Self {
            http,
            runtime,
            shown,
            failing: AtomicBool::new(false),
        })
    }

    fn outcome(&self, failure: Option<String>) {
        match failure {
            Some(why) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        endpoint = %self.shown,
                        error = %why,
                        "cannot export traces; further failures are not logged until an export succeeds"
                    );
                }
            }
            None => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(endpoint = %self.shown, "exporting traces again");
                }
            }
        }
    }
}

/// A reqwest error and its causes, without the URL (the exporter's endpoint
/// is shown redacted beside it).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    sync_domain::redact::redact_urls_in(&text)
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let http = self.http.clone();
        let sent = self.runtime.spawn(async move {
            let request =
                reqwest::Request::try_from(request).map_err(|e| describe(&e.without_url()))?;
            let response = http
                .execute(request)
                .await
                .map_err(|e| describe(&e.without_url()))?;
            let status = response.status();
            let headers = response.headers().clone();
            // A collector's answer is a few bytes; never hold more than a cap.
            let mut response = response;
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| describe(&e.without_url()))?
            {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(format!(
                        "the collector's answer is over {MAX_ANSWER_BYTES} bytes"
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            let mut answer = Response::new(Bytes::from(body));
            *answer.status_mut() = status;
            *answer.headers_mut() = headers;
            Ok::<_, String>(answer)
        });
        let result = match sent.await {
            Ok(result) => result,
            Err(e) => Err(format!("export task failed: {e}")),
        };
        match &result {
            Ok(response) if response.status().is_success() => self.outcome(None),
            Ok(response) => self.outcome(Some(format!(
                "the collector answered {}",
                response.status()
            ))),
            Err(why) => self.outcome(Some(why.clone())),
        }
        result.map_err(HttpError::from)
    }
}

/// A span's ids as the logs show them (lower-case hex, as in `traceparent`).
#[derive(Debug, Clone)]
struct TraceIds {
    trace_id: String,
    span_id: String,
}

/// Gives each new span its OpenTelemetry ids (kept in the span's extensions
/// for [`WithTraceIds`]). Runs after the OpenTelemetry layer, which starts
/// the span with its parent (a remote `traceparent` or the enclosing span).
#[derive(Default)]
struct TraceIdsLayer {
    dispatch: OnceLock<WeakDispatch>,
}

impl<S> Layer<S> for TraceIdsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(
        &self,
        _attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade) else {
            return;
        };
        let Some(context) = tracing_opentelemetry::get_otel_context(id, &dispatch) else {
            return;
        };
        let span = context.span();
        let span_context = span.span_context();
        if !span_context.is_valid() {
            return;
        }
        let ids = TraceIds {
            trace_id: span_context.trace_id().to_string(),
            span_id: span_context.span_id().to_string(),
        };
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(ids);
        }
    }
}

/// The JSON event format with `trace_id` and `span_id` of the event's span
/// added, when enabled (traces exported) and the span has them.
pub struct WithTraceIds<F> {
    /// The JSON format.
    pub format: F,
    /// Whether to look for ids at all.
    pub enabled: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let ids = self
            .enabled
            .then(|| ctx.event_scope().and_then(|mut scope| scope.next()))
            .flatten()
            .and_then(|span| span.extensions().get::<TraceIds>().cloned());
        let Some(ids) = ids else {
            return self.format.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.format
            .format_event(ctx, Writer::new(&mut line), event)?;
        // The JSON format writes one object and a newline: add two members.
        match line.trim_end().strip_suffix('}') {
            Some(object) => writeln!(
                writer,
                "{object},\"trace_id\":\"{}\",\"span_id\":\"{}\"}}",
                ids.trace_id, ids.span_id
            ),
            None => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Option<ExportSettings>, String> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ExportSettings::from_env(|name| env.get(name).cloned())
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        assert_eq!(settings(&[]).unwrap(), None);
        assert_eq!(settings(&[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
        assert_eq!(
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")]).unwrap(),
            None
        );
    }

    #[test]
    fn the_base_endpoint_gets_the_traces_path() {
        for base in ["http://collector:4318", "http://collector:4318/"] {
            let s = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", base)])
                .unwrap()
                .unwrap();
            assert_eq!(s.endpoint.as_str(), "http://collector:4318/v1/traces");
        }
        let s = settings(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "https://otel.example.com/otlp",
        )])
        .unwrap()
        .unwrap();
        assert_eq!(
            s.endpoint.as_str(),
            "https://otel.example.com/otlp/v1/traces"
        );
    }

    #[test]
    fn the_traces_endpoint_is_used_as_given_and_wins() {
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://traces:4318/custom",
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint.as_str(), "http://traces:4318/custom");
        assert_eq!(s.endpoint_variable, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    }

    #[test]
    fn switched_off_explicitly() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(
            settings(&[endpoint, ("OTEL_SDK_DISABLED", "true")]).unwrap(),
            None
        );
        assert_eq!(
            settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).unwrap(),
            None
        );
    }

    #[test]
    fn each_malformed_variable_is_named_without_its_secret() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        for (pairs, variable) in [
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://x/y")],
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
            (
                vec![(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    "http://u:hunter2@collector:4318",
                )],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                vec![endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                vec![
                    endpoint,
                    ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key hunter2"),
                ],
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (
                vec![endpoint, ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")],
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ),
            (
                vec![endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")],
                "OTEL_TRACES_EXPORTER",
            ),
        ] {
            let err = settings(&pairs).unwrap_err();
            assert!(err.starts_with(variable), "{variable}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn headers_and_timeout_are_accepted() {
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-api-key=abc,authorization=Bearer%20x",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.timeout, Duration::from_millis(2500));
        assert!(!format!("{s:?}").contains("abc"));
    }
}
