//! `chronos-server changes tail`: follows the change feed on the configured
//! database and prints each entry as it arrives (SPEC section 8).

use crate::config::Config;
use anyhow::Context as _;
use clap::Subcommand;
use std::io::Write as _;
use std::time::Duration;
use sync_domain::CalendarId;
use sync_domain::changes::{ChangeEntry, ChangeFeed as _, ChangeQuery, EventState, MAX_LIMIT};
use time::format_description::well_known::Rfc3339;

/// `changes` verbs.
#[derive(Debug, Subcommand)]
pub enum ChangesCommand {
    /// Print entries of the change feed as they arrive, until interrupted.
    Tail {
        /// Only this calendar's entries (its UUID).
        #[arg(long)]
        calendar: Option<String>,
        /// Start with the oldest entry kept instead of from now.
        #[arg(long)]
        from_start: bool,
        /// One JSON object per line (the API's entry format) instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// How long each read waits for entries. On PostgreSQL the wait is woken by
/// `NOTIFY` from the servers; on SQLite the server is another process whose
/// commits cannot wake this one, so the CLI re-reads every couple of seconds.
const WAIT: Duration = Duration::from_secs(30);
/// See [`WAIT`].
const SQLITE_WAIT: Duration = Duration::from_secs(2);

/// One readable line for an entry.
pub fn entry_line(entry: &ChangeEntry) -> String {
    let at = entry
        .at
        .format(&Rfc3339)
        .unwrap_or_else(|_| entry.at.to_string());
    let mut line = format!(
        "{:>8}  {at}  {:<28}  calendar={} user={}",
        entry.cursor.to_string(),
        entry.kind.as_str(),
        entry.calendar_id,
        entry.user_id
    );
    if let Some(event_id) = &entry.event_id {
        line.push_str(&format!(" event={event_id}"));
    }
    if let EventState::Present(event) = &entry.event
        && let Some(summary) = &event.summary
    {
        line.push_str(&format!(" summary={summary:?}"));
    }
    line
}

/// Follows the feed until Ctrl-C; a cursor that falls out of the retention
/// (the process was stopped too long) ends it with the API's 410 message.
pub async fn run(config: &Config, command: ChangesCommand) -> anyhow::Result<()> {
    let ChangesCommand::Tail {
        calendar,
        from_start,
        json,
    } = command;
    let calendar_id = calendar
        .as_deref()
        .map(|raw| {
            CalendarId::parse(raw).with_context(|| format!("`{raw}` is not a calendar id (a UUID)"))
        })
        .transpose()?;
    let store = crate::preflight::open_existing_store(config).await?;
    let after = if from_start {
        Some(store.oldest_cursor().await?)
    } else {
        None
    };
    let mut query = ChangeQuery {
        after,
        limit: MAX_LIMIT,
        calendar_id,
        user_id: None,
    };
    let wait = match config.database_url {
        sync_store::DatabaseUrl::Postgres(_) => WAIT,
        sync_store::DatabaseUrl::Sqlite(_) => SQLITE_WAIT,
    };
    // On SQLite `listen_for_changes` returns at once (there is nothing to
    // listen to): only Ctrl-C, or a failed read, may end the tail.
    let listener = async {
        store.listen_for_changes(std::future::pending()).await;
        std::future::pending::<()>().await;
    };
    let follow = async {
        let mut out = std::io::stdout();
        loop {
            let page = store.changes(&query, wait).await?;
            for entry in &page.changes {
                if json {
                    writeln!(out, "{}", serde_json::to_string(entry)?)?;
                } else {
                    writeln!(out, "{}", entry_line(entry))?;
                }
            }
            out.flush()?;
            query.after = Some(page.next_cursor);
        }
        #[allow(unreachable_code)]
        Ok::<(), anyhow::Error>(())
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        () = listener => Ok(()),
        result = follow => result,
    }
}
