//! `chronos-server calendars …`: the operator's versions of the internal API,
//! acting on the database directly through the store, printed as tables.

use crate::config::Config;
use anyhow::Context as _;
use clap::Subcommand;
use std::io::IsTerminal as _;
use std::sync::Arc;
#[cfg(test)]
use sync_domain::admin::ChannelView;
use sync_domain::admin::{CalendarAdmin as _, CalendarView, StopOutcome, stop_channel};
use sync_domain::channel::PushMode;
use sync_domain::ports::{CalendarApi, Clock, SystemClock};
use sync_domain::{CalendarId, GoogleCalendarId, RefreshToken, UserId};
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

/// `users` verbs.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Store or replace a user's Google credentials: the refresh token is read
    /// from standard input (never an argument: it stays out of shell history and `ps`).
    SetCredentials {
        /// The user's id.
        user_id: String,
    },
}

/// The refresh token from standard input: the first non-empty line, trimmed.
fn read_refresh_token(input: &mut dyn std::io::Read) -> anyhow::Result<RefreshToken> {
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .context("reading the refresh token from standard input")?;
    let token = text.lines().map(str::trim).find(|l| !l.is_empty());
    let Some(token) = token else {
        anyhow::bail!(
            "no refresh token on standard input (e.g. `chronos-server users set-credentials alice < token.txt`)"
        );
    };
    Ok(RefreshToken::new(token.to_owned()))
}

/// Runs one `users` verb; returns what to print.
pub async fn run_users(config: &Config, command: UsersCommand) -> anyhow::Result<String> {
    match command {
        UsersCommand::SetCredentials { user_id } => {
            let user = UserId::parse(user_id)?;
            // The database first: no token is asked for a command that cannot store it.
            let store = crate::preflight::open_existing_store(config).await?;
            if std::io::stdin().is_terminal() {
                eprintln!("paste {user}'s refresh token, then Enter and Ctrl-D:");
            }
            let token = read_refresh_token(&mut std::io::stdin().lock())?;
            store.put_credentials(&user, &token).await?;
            Ok(format!("stored Google credentials for {user}"))
        }
    }
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

/// Longest last error shown in the `calendars list` table (`show` prints it whole).
const ERROR_WIDTH: usize = 60;

/// An error on one line, cut to `width` characters.
fn one_line(error: &str, width: usize) -> String {
    let line = error.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= width {
        return line;
    }
    let mut cut: String = line.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// How far off an instant is, roughly: `3d 4h`, `5h 2m`, `40s`.
fn span(seconds: i64) -> String {
    let s = seconds.unsigned_abs();
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3_600, (s % 3_600) / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{s}s")
    }
}

/// A channel's expiry with how far off it is: `2026-12-17T10:00:00Z (in 6d 23h)`,
/// or `(expired 2h 5m ago)`.
fn expiry(at: Option<OffsetDateTime>, now: OffsetDateTime) -> String {
    let Some(at) = at else {
        return "-".to_owned();
    };
    let seconds = (at - now).whole_seconds();
    let relative = if seconds >= 0 {
        format!("in {}", span(seconds))
    } else {
        format!("EXPIRED {} ago", span(seconds))
    };
    format!("{} ({relative})", when(Some(at)))
}

/// The `calendars list` table: everything an operator checks at a glance,
/// one calendar a line: its state, last sync, channel expiry (or `polling`)
/// and last error (cut to one short line; `calendars show` prints it whole).
pub fn calendars_table(calendars: &[CalendarView], now: OffsetDateTime) -> String {
    if calendars.is_empty() {
        return "no calendars connected".to_owned();
    }
    let rows: Vec<Vec<String>> = calendars
        .iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                c.user_id.clone(),
                c.google_calendar_id.clone(),
                c.sync_state.to_string(),
                when(c.last_sync_at),
                match (&c.channel, c.push_mode) {
                    (_, PushMode::Polling) => PushMode::Polling.to_string(),
                    (Some(ch), PushMode::Push) => expiry(ch.expires_at, now),
                    (None, PushMode::Push) => "-".to_owned(),
                },
                c.last_error
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), |e| one_line(e, ERROR_WIDTH)),
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
        vec!["state".to_owned(), c.sync_state.to_string()],
        vec![
            "full sync complete".to_owned(),
            c.full_sync_complete.to_string(),
        ],
        vec!["last sync".to_owned(), when(c.last_sync_at)],
        vec!["push mode".to_owned(), c.push_mode.to_string()],
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
    let store = crate::preflight::open_existing_store(config).await?;
    match command {
        CalendarsCommand::List { user } => {
            let user = user.map(UserId::parse).transpose()?;
            let calendars = store.calendars(user.as_ref()).await?;
            let views: Vec<CalendarView> = calendars.into_iter().map(Into::into).collect();
            Ok(calendars_table(&views, SystemClock.now()))
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
            let mut lines = vec![format!("disconnected {id}")];
            let missing = crate::preflight::google_settings_missing(config);
            if !missing.is_empty() {
                // The channels are retired (due for a stop); a running server
                // with the Google settings stops them.
                for channel in &channels {
                    lines.push(format!(
                        "channel {} retired; the running server stops it at Google ({} not set here)",
                        channel.channel_id,
                        missing.join(", ")
                    ));
                }
                return Ok(lines.join("\n"));
            }
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let google: Arc<dyn CalendarApi> = crate::app::google_client(
                config,
                &store,
                Arc::clone(&clock),
                Arc::new(crate::entropy::OsEntropy),
            )?;
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
    use sync_domain::SyncState;

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

    fn view(state: SyncState, channel: Option<ChannelView>, error: Option<&str>) -> CalendarView {
        CalendarView {
            id: CalendarId::parse("6f1c2b8e-1d2a-4c59-9a39-4f3f7a1c0d11").unwrap(),
            user_id: "user-1".into(),
            google_calendar_id: "primary".into(),
            sync_state: state,
            last_sync_at: Some(time::macros::datetime!(2026-12-01 10:00 UTC)),
            full_sync_complete: true,
            channel,
            last_error: error.map(str::to_owned),
            push_mode: PushMode::Push,
        }
    }

    #[test]
    fn list_shows_state_last_sync_expiry_and_error_at_a_glance() {
        let now = time::macros::datetime!(2026-12-01 12:00 UTC);
        let healthy = view(
            SyncState::Idle,
            Some(ChannelView {
                id: "ch-1".into(),
                expires_at: Some(time::macros::datetime!(2026-12-08 11:00 UTC)),
            }),
            None,
        );
        let failing = view(
            SyncState::Failing,
            Some(ChannelView {
                id: "ch-2".into(),
                expires_at: Some(time::macros::datetime!(2026-12-01 10:00 UTC)),
            }),
            Some(
                "Google: rate limited\n(retry after 30s) and a very long explanation that goes on and on",
            ),
        );
        let out = calendars_table(&[healthy, failing], now);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].contains("STATE") && lines[0].contains("LAST ERROR"));
        assert!(lines[1].contains("idle"), "{out}");
        assert!(lines[1].contains("2026-12-01T10:00:00Z"), "{out}");
        assert!(
            lines[1].contains("2026-12-08T11:00:00Z (in 6d 23h)"),
            "{out}"
        );
        assert!(lines[2].contains("failing"), "{out}");
        assert!(lines[2].contains("(EXPIRED 2h 0m ago)"), "{out}");
        assert!(
            lines[2].contains("Google: rate limited (retry after 30s)"),
            "{out}"
        );
        assert!(lines[2].ends_with('…'), "{out}");
    }

    #[test]
    fn list_says_when_nothing_is_connected() {
        let now = time::macros::datetime!(2026-12-01 12:00 UTC);
        assert_eq!(calendars_table(&[], now), "no calendars connected");
    }
}
