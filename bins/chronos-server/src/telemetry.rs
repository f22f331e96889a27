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

use crate::config::LogFormat;
use std::io::IsTerminal as _;
use sync_domain::redact::redact_urls_in;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

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

/// Installs the global subscriber (once; later calls are ignored, as in tests).
pub fn init(format: LogFormat, target: LogTarget) {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(true)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}
