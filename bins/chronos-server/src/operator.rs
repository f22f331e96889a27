//! `chronos-server calendars …`: the operator's versions of the internal API,
//! acting on the database directly through the store, printed as tables.

use crate::config::Config;
use anyhow::Context as _;
use clap::Subcommand;
use std::sync::Arc;
use sync_domain::admin::{CalendarAdmin as _, CalendarView, StopOutcome, stop_channel};
use sync_domain::ports::{CalendarApi, Clock, SystemClock};
use sync_domain::{CalendarId, GoogleCalendarId, UserId};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `calendars` verbs.
#[derive(Debug, Subcommand)]
pub enum CalendarsCommand {
    /// List connected calendars (all, or one user's).
    List {
        /// Only this user's calendars.
        #[arg(long)]
        user: Option<String>,
    },
    /// Show one calendar.
    Show {
        /// The calendar's id (UUID).
        id: String,
    },
    /// Connect a calendar; the server's workers then sync it and register its channel.
    Connect {
        /// The owner (user id).
        #[arg(long)]
        user: String,
        /// Google's calendar id, e.g. `primary`.
        #[arg(long)]
        calendar: String,
    },
    /// Request a sync now.
    Sync {
        /// The calendar's id (UUID).
        id: String,
    },
    /// Disconnect a calendar: stop its channel at Google (or leave it for the
    /// server to stop), delete its state and mirrored events.
    Disconnect {
        /// The calendar's id (UUID).
        id: String,
    },
}

fn when(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "-".to_owned())
}

/// Renders rows as an aligned text table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(headers.iter().map(|h| (*h).to_owned()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

/// The `calendars list` table: everything an operator checks at a glance.
pub fn calendars_table(calendars: &[CalendarView]) -> String {
    let rows: Vec<Vec<String>> = calendars
        .iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                c.user_id.clone(),
                c.google_calendar_id.clone(),
                c.sync_state.clone(),
                when(c.last_sync_at),
                match (&c.channel, c.push_mode.as_str()) {
                    (Some(ch), _) => when(ch.expires_at),
                    (None, "polling") => "polling".to_owned(),
                    (None, _) => "-".to_owned(),
                },
                c.last_error.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "USER",
            "GOOGLE CALENDAR",
            "STATE",
            "LAST SYNC",
            "CHANNEL EXPIRES",
            "LAST ERROR",
        ],
        &rows,
    )
}

/// One calendar as `key  value` lines.
pub fn calendar_details(c: &CalendarView) -> String {
    let rows = vec![
        vec!["id".to_owned(), c.id.to_string()],
        vec!["user".to_owned(), c.user_id.clone()],
        vec!["google calendar".to_owned(), c.google_calendar_id.clone()],
        vec!["state".to_owned(), c.sync_state.clone()],
        vec![
            "full sync complete".to_owned(),
            c.full_sync_complete.to_string(),
        ],
        vec!["last sync".to_owned(), when(c.last_sync_at)],
        vec!["push mode".to_owned(), c.push_mode.clone()],
        vec![
            "channel".to_owned(),
            c.channel
                .as_ref()
                .map_or("-".to_owned(), |ch| ch.id.clone()),
        ],
        vec![
            "channel expires".to_owned(),
            when(c.channel.as_ref().and_then(|ch| ch.expires_at)),
        ],
        vec![
            "last error".to_owned(),
            c.last_error.clone().unwrap_or_else(|| "-".to_owned()),
        ],
    ];
    table(&["FIELD", "VALUE"], &rows)
}

fn parse_id(raw: &str) -> anyhow::Result<CalendarId> {
    CalendarId::parse(raw).with_context(|| format!("`{raw}` is not a calendar id (a UUID)"))
}

/// Runs one `calendars` verb against the configured database; returns what to print.
pub async fn run(config: &Config, command: CalendarsCommand) -> anyhow::Result<String> {
    let store = crate::app::open_store(config).await?;
    match command {
        CalendarsCommand::List { user } => {
            let user = user.map(UserId::parse).transpose()?;
            let calendars = store.calendars(user.as_ref()).await?;
            let views: Vec<CalendarView> = calendars.into_iter().map(Into::into).collect();
            Ok(calendars_table(&views))
        }
        CalendarsCommand::Show { id } => {
            let id = parse_id(&id)?;
            let calendar = store
                .calendar(id)
                .await?
                .with_context(|| format!("no calendar {id}"))?;
            Ok(calendar_details(&calendar.into()))
        }
        CalendarsCommand::Connect { user, calendar } => {
            let user = UserId::parse(user)?;
            let google = GoogleCalendarId::parse(calendar)?;
            let (view, created) = store.connect(&user, &google).await?;
            let verb = if created {
                "connected"
            } else {
                "already connected"
            };
            Ok(format!("{verb}\n{}", calendar_details(&view)))
        }
        CalendarsCommand::Sync { id } => {
            let id = parse_id(&id)?;
            if !store.request_sync(id).await? {
                anyhow::bail!("no calendar {id}");
            }
            Ok(format!(
                "sync requested for {id}; a running server performs it"
            ))
        }
        CalendarsCommand::Disconnect { id } => {
            let id = parse_id(&id)?;
            let channels = store
                .disconnect_calendar(id)
                .await?
                .with_context(|| format!("no calendar {id}"))?;
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let google: Arc<dyn CalendarApi> =
                crate::app::google_client(config, &store, Arc::clone(&clock))?;
            let mut lines = vec![format!("disconnected {id}")];
            for channel in &channels {
                let outcome =
                    stop_channel(&store, google.as_ref(), channel, clock.now(), 0.5).await?;
                lines.push(match outcome {
                    StopOutcome::Stopped => format!("channel {} stopped", channel.channel_id),
                    StopOutcome::RetryAt(at) => format!(
                        "channel {} could not be stopped now; the server retries from {}",
                        channel.channel_id,
                        when(Some(at))
                    ),
                });
            }
            Ok(lines.join("\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let out = table(
            &["A", "BB"],
            &[
                vec!["long".into(), "x".into()],
                vec!["s".into(), "yy".into()],
            ],
        );
        assert_eq!(out, "A     BB\nlong  x\ns     yy");
    }
}
