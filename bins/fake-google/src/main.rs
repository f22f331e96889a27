//! `chronos-fake-google`: Google Calendar's HTTP surface, faked, for trying
//! Chronos locally (see `docs/fake-google.md`).

use clap::Parser;
use fake_google::FakeGoogle;
use std::net::TcpListener;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// A stand-in for Google Calendar over HTTP (token endpoint, events, channels, push).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Listen address.
    #[arg(long, env = "FAKE_GOOGLE_BIND", default_value = "127.0.0.1:8090")]
    bind: String,
    /// Events per `events.list` page at most (Google's default is 250).
    #[arg(long, env = "FAKE_GOOGLE_PAGE_SIZE", default_value_t = 250)]
    page_size: usize,
    /// Delay added to every Calendar API call, in milliseconds.
    #[arg(long, env = "FAKE_GOOGLE_DELAY_MS", default_value_t = 0)]
    delay_ms: u64,
    /// HTTP worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let google = FakeGoogle::default();
    google.calendar().set_page_size(cli.page_size);
    if cli.delay_ms > 0 {
        google
            .calendar()
            .set_delay(Some(Duration::from_millis(cli.delay_ms)));
    }
    let listener = TcpListener::bind(&cli.bind)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cli.bind))?;
    let (server, port) = fake_google::server(listener, &google, cli.workers)?;
    tracing::info!(
        port,
        api_base_url = %google.api_base_url(),
        token_url = %google.api_base_url().replace("/calendar/v3", "/token"),
        "chronos-fake-google listening"
    );
    server.await?;
    Ok(())
}
