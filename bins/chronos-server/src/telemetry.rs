//! Logging: `tracing`, human-readable or JSON (`log_format`). `RUST_LOG`
//! overrides the default `info` filter.
//!
//! The server logs to stdout; the other commands log to stderr, so what they
//! print (tables, the configuration) stays clean on stdout. In JSON each line
//! carries its fields flattened, plus the current span and the span list: an
//! HTTP request's `request_id`, a sync's or a channel registration's
//! `calendar_id`. No secret is ever a field: tokens and keys are newtypes whose
//! `Debug`/`Display` print `***` (a test scans a full scenario's debug logs),
//! and a URL in any line has its password replaced by `***` (`Redacting`).
//!
//! Traces (the `otel` feature, [`otel`]): when an OTLP endpoint is set in the
//! environment, `serve` also exports its spans (each HTTP request, each sync)
//! over OTLP/HTTP, and every JSON line inside a span carries that span's
//! `trace_id` and `span_id`.

use crate::config::LogFormat;
use std::io::IsTerminal as _;
use sync_domain::redact::redact_urls_in;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[cfg(feature = "otel")]
pub mod otel;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// The server's own output.
    Stdout,
    /// For commands whose stdout is their answer.
    Stderr,
}

/// Passes every log line through [`redact_urls_in`]: a library that logs a
/// URL (reqwest's `starting new connection: http://user:password@…` at debug
/// level) cannot print the password in it.
struct Redacting<M>(M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }
}

/// See [`Redacting`]. The formatter writes each line in one call.
struct RedactingWriter<W>(W);

impl<W: std::io::Write> std::io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The common case (no URL in the line) costs one scan.
        if !buf.windows(3).any(|w| w == b"://") {
            return self.0.write(buf);
        }
        let line = String::from_utf8_lossy(buf);
        self.0.write_all(redact_urls_in(&line).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// The trace exporter `serve` installs beside the logs ([`otel::TraceExport`]).
#[cfg(feature = "otel")]
pub use otel::TraceExport;

/// Built without the `otel` feature: there is never an exporter.
#[cfg(not(feature = "otel"))]
#[derive(Debug)]
pub enum TraceExport {}

/// The trace exporter the environment asks for: `None` unless an
/// `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
/// set; a malformed `OTEL_*` variable is an error naming it. Exports run on
/// `runtime`.
#[cfg(feature = "otel")]
pub fn traces_from_env(runtime: &tokio::runtime::Handle) -> Result<Option<TraceExport>, String> {
    otel::TraceExport::from_env(runtime)
}

/// Without the `otel` feature the `OTEL_*` variables are not read.
#[cfg(not(feature = "otel"))]
pub fn traces_from_env(_runtime: &tokio::runtime::Handle) -> Result<Option<TraceExport>, String> {
    Ok(None)
}

/// For `config --check`: where traces would be exported, or why the
/// `OTEL_*` variables would stop `serve`.
#[cfg(feature = "otel")]
pub fn describe_trace_export() -> Result<String, String> {
    otel::ExportSettings::from_env(|name| std::env::var(name).ok()).map(|settings| {
        settings.map_or_else(
            || {
                "off (no OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)"
                    .to_owned()
            },
            |s| {
                format!(
                    "exporting to {}",
                    sync_domain::redact::redact_url(s.endpoint.as_str())
                )
            },
        )
    })
}

/// Without the `otel` feature nothing is exported, whatever `OTEL_*` says.
#[cfg(not(feature = "otel"))]
pub fn describe_trace_export() -> Result<String, String> {
    Ok("off (built without the `otel` feature)".to_owned())
}

/// What [`init`] installed; [`Telemetry::shutdown`] flushes the traces.
#[derive(Debug)]
pub struct Telemetry {
    traces: Option<TraceExport>,
}

impl Telemetry {
    /// Exports the spans not yet sent and stops the exporter (graceful
    /// shutdown; bounded in time). Call it while the runtime still runs.
    pub fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(traces) = self.traces {
            traces.shutdown();
        }
        #[cfg(not(feature = "otel"))]
        let _ = self.traces;
    }
}

/// Installs the global subscriber (once; later calls are ignored, as in
/// tests), with `traces` exporting spans when given.
pub fn init(format: LogFormat, target: LogTarget, traces: Option<TraceExport>) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a terminal, never into files or pipes.
    let ansi = match target {
        LogTarget::Stdout => std::io::stdout().is_terminal(),
        LogTarget::Stderr => std::io::stderr().is_terminal(),
    };
    let writer = match target {
        LogTarget::Stdout => BoxMakeWriter::new(Redacting(std::io::stdout)),
        LogTarget::Stderr => BoxMakeWriter::new(Redacting(std::io::stderr)),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(true)
        .with_ansi(ansi);
    let fmt = match format {
        LogFormat::Pretty => fmt.boxed(),
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(true);
            // Trace ids when there are traces; otherwise the plain format.
            #[cfg(feature = "otel")]
            let json = otel::WithTraceIds {
                format: json,
                enabled: traces.is_some(),
            };
            fmt.json().event_format(json).boxed()
        }
    };
    // Not an `Option` layer: that would not pass the dispatch on to the layers
    // that need it (`on_register_dispatch`).
    #[cfg(feature = "otel")]
    let traces_layer = traces.as_ref().map_or_else(
        || tracing_subscriber::layer::Identity::new().boxed(),
        TraceExport::layers,
    );
    #[cfg(not(feature = "otel"))]
    let traces_layer = tracing_subscriber::layer::Identity::new();
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(traces_layer)
        .with(fmt)
        .try_init()
        .is_ok();
    #[cfg(feature = "otel")]
    if let Some(traces) = &traces
        && installed
    {
        traces.announce();
    }
    let _ = installed;
    Telemetry { traces }
}
