//! A fake Google Calendar for tests here and in other crates (feature `fakes`).
//!
//! It models calendars per (user, Google calendar id), each with its events
//! and a change log: every create, update or delete bumps the calendar's
//! version and stamps the event with it. A sync token encodes the version it
//! was issued at, so an incremental `list_events` returns exactly the events
//! changed since (cancelled ones included); pages have a configurable size.
//! Tests can invalidate sync tokens (the next incremental call gets
//! `FullSyncRequired`), queue errors for the next calls of a method, slow every
//! call down, and read back every watch and stop.

use crate::events::parse_event;
use async_trait::async_trait;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use sync_domain::EventStatus;
use sync_domain::calendar::{
    CalendarApi, CalendarListEntry, EventsPage, EventsQuery, GoogleError, GoogleEvent,
    WatchRequest, WatchedChannel,
};
use sync_domain::ids::{ChannelId, GoogleCalendarId, ResourceId, UserId};
use sync_domain::ports::{ChannelHandle, Clock, SystemClock};
use time::format_description::well_known::Rfc3339;

/// The calls of [`CalendarApi`], to aim injected failures and count calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FakeMethod {
    /// `events.watch`.
    Watch,
    /// `channels.stop`.
    StopChannel,
    /// `events.list`.
    ListEvents,
    /// `calendarList.list`.
    ListCalendars,
}

/// One `events.watch` the fake granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeWatch {
    pub user_id: UserId,
    pub calendar: GoogleCalendarId,
    pub request: WatchRequest,
    pub granted: WatchedChannel,
}

/// One `events.list` call as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeListCall {
    pub user_id: UserId,
    pub calendar: GoogleCalendarId,
    pub query: EventsQuery,
}

/// Google's default page size for `events.list`.
const DEFAULT_PAGE_SIZE: usize = 250;
/// Longest channel lifetime the fake grants unless told otherwise.
const DEFAULT_MAX_CHANNEL_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Google Calendar in memory; cheap to clone (clones share the state).
#[derive(Clone)]
pub struct FakeGoogleCalendar {
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for FakeGoogleCalendar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("FakeGoogleCalendar")
            .field("calendars", &state.calendars.len())
            .field("open_channels", &state.open.len())
            .finish_non_exhaustive()
    }
}

impl Default for FakeGoogleCalendar {
    fn default() -> Self {
        Self::new()
    }
}

struct State {
    calendars: BTreeMap<(UserId, GoogleCalendarId), FakeCalendar>,
    page_size: usize,
    max_channel_ttl: Duration,
    failures: HashMap<FakeMethod, VecDeque<GoogleError>>,
    delay: Option<Duration>,
    calls: HashMap<FakeMethod, usize>,
    watches: Vec<FakeWatch>,
    stops: Vec<ChannelHandle>,
    open: Vec<ChannelHandle>,
    list_calls: Vec<FakeListCall>,
    next_serial: u64,
}

struct FakeCalendar {
    serial: u64,
    summary: Option<String>,
    primary: bool,
    access_role: Option<String>,
    push_supported: bool,
    /// Bumped by every change; sync tokens carry it.
    version: u64,
    /// Bumped by `invalidate_sync_tokens`; tokens of an older epoch are dead.
    epoch: u64,
    events: BTreeMap<String, StoredEvent>,
}

struct StoredEvent {
    version: u64,
    json: Value,
}

impl FakeCalendar {
    fn new(serial: u64, calendar: &GoogleCalendarId) -> Self {
        Self {
            serial,
            summary: Some(calendar.as_str().to_owned()),
            primary: calendar.as_str() == "primary",
            access_role: Some("owner".to_owned()),
            push_supported: true,
            version: 0,
            epoch: 0,
            events: BTreeMap::new(),
        }
    }

    fn sync_token(&self) -> String {
        Self::token_at(self.epoch, self.version)
    }

    fn token_at(epoch: u64, version: u64) -> String {
        format!("fake-sync:{epoch}:{version}")
    }
}

/// Where a page starts: changes in `(since, snapshot]`, ids after `after`.
struct Cursor {
    epoch: u64,
    since: u64,
    snapshot: u64,
    after: Option<String>,
}

fn full_sync_required() -> GoogleError {
    GoogleError::FullSyncRequired
}

fn parse_sync_token(token: &str) -> Option<(u64, u64)> {
    let rest = token.strip_prefix("fake-sync:")?;
    let (epoch, version) = rest.split_once(':')?;
    Some((epoch.parse().ok()?, version.parse().ok()?))
}

fn page_token(cursor: &Cursor, last_id: &str) -> String {
    format!(
        "fake-page:{}:{}:{}:{last_id}",
        cursor.epoch, cursor.since, cursor.snapshot
    )
}

fn parse_page_token(token: &str) -> Option<Cursor> {
    let mut parts = token.strip_prefix("fake-page:")?.splitn(4, ':');
    Some(Cursor {
        epoch: parts.next()?.parse().ok()?,
        since: parts.next()?.parse().ok()?,
        snapshot: parts.next()?.parse().ok()?,
        after: Some(parts.next()?.to_owned()),
    })
}

impl FakeGoogleCalendar {
    /// An empty Google using the system clock (for channel expirations and `updated`).
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty Google reading time from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                calendars: BTreeMap::new(),
                page_size: DEFAULT_PAGE_SIZE,
                max_channel_ttl: DEFAULT_MAX_CHANNEL_TTL,
                failures: HashMap::new(),
                delay: None,
                calls: HashMap::new(),
                watches: Vec::new(),
                stops: Vec::new(),
                open: Vec::new(),
                list_calls: Vec::new(),
                next_serial: 1,
            })),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock already failed; keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn with_calendar<T>(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
        change: impl FnOnce(&mut FakeCalendar) -> T,
    ) -> T {
        let mut state = self.lock();
        let state = &mut *state;
        let key = (user_id.clone(), calendar.clone());
        let entry = state.calendars.entry(key).or_insert_with(|| {
            state.next_serial += 1;
            FakeCalendar::new(state.next_serial, calendar)
        });
        change(entry)
    }

    // ---- Calendars ----

    /// Creates an empty calendar for the user (no-op if it exists).
    pub fn add_calendar(&self, user_id: &UserId, calendar: &GoogleCalendarId) {
        self.with_calendar(user_id, calendar, |_| ());
    }

    /// Creates (or updates) a calendar with the fields `calendarList.list` shows.
    pub fn add_calendar_entry(&self, user_id: &UserId, entry: &CalendarListEntry) {
        self.with_calendar(user_id, &entry.id, |cal| {
            cal.summary.clone_from(&entry.summary);
            cal.primary = entry.primary;
            cal.access_role.clone_from(&entry.access_role);
        });
    }

    /// Deletes a calendar: every later call about it gets `NotFound`.
    pub fn remove_calendar(&self, user_id: &UserId, calendar: &GoogleCalendarId) {
        self.lock()
            .calendars
            .remove(&(user_id.clone(), calendar.clone()));
    }

    /// Whether `events.watch` works on this calendar (else `PushNotSupported`).
    pub fn set_push_supported(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
        supported: bool,
    ) {
        self.with_calendar(user_id, calendar, |cal| cal.push_supported = supported);
    }

    // ---- Events ----

    /// Creates or replaces an event from its JSON (`id` required), as a user
    /// editing it at Google would: a new version, `updated`, `etag` and a
    /// default `status: confirmed`. Creates the calendar if needed. Returns the
    /// calendar's new version.
    pub fn put_event(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
        mut event: Value,
    ) -> u64 {
        let id = event
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_default();
        let updated = self.clock.now().format(&Rfc3339).unwrap_or_default();
        self.with_calendar(user_id, calendar, |cal| {
            cal.version += 1;
            if let Some(fields) = event.as_object_mut() {
                fields
                    .entry("kind")
                    .or_insert_with(|| json!("calendar#event"));
                fields
                    .entry("status")
                    .or_insert_with(|| json!(EventStatus::Confirmed.as_str()));
                fields.insert("updated".into(), json!(updated));
                fields.insert("etag".into(), json!(format!("\"{}\"", cal.version)));
            }
            cal.events.insert(
                id,
                StoredEvent {
                    version: cal.version,
                    json: event,
                },
            );
            cal.version
        })
    }

    /// Creates a confirmed event with a summary; returns the calendar's new version.
    pub fn create_event(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
        id: &str,
        summary: &str,
    ) -> u64 {
        self.put_event(
            user_id,
            calendar,
            json!({"id": id, "status": EventStatus::Confirmed.as_str(), "summary": summary,
                   "start": {"dateTime": "2030-01-01T09:00:00Z"},
                   "end": {"dateTime": "2030-01-01T10:00:00Z"}}),
        )
    }

    /// Changes an event's summary (creating it if absent); returns the new version.
    pub fn update_event(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
        id: &str,
        summary: &str,
    ) -> u64 {
        let existing = self.with_calendar(user_id, calendar, |cal| {
            cal.events.get(id).map(|stored| stored.json.clone())
        });
        let mut event = existing.unwrap_or_else(|| json!({"id": id}));
        event["summary"] = json!(summary);
        event["status"] = json!(EventStatus::Confirmed.as_str());
        self.put_event(user_id, calendar, event)
    }

    /// Cancels an event (Google keeps it as `status: cancelled`); returns the
    /// new version, or `None` if there was no such event.
    pub fn delete_event(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
        id: &str,
    ) -> Option<u64> {
        let existing = self.with_calendar(user_id, calendar, |cal| {
            cal.events.get(id).map(|stored| stored.json.clone())
        })?;
        let mut event = existing;
        event["status"] = json!(EventStatus::Cancelled.as_str());
        Some(self.put_event(user_id, calendar, event))
    }

    /// Forgets cancelled events entirely, as Google eventually does; a full
    /// sync no longer lists them, and older sync tokens get `FullSyncRequired`.
    pub fn purge_cancelled(&self, user_id: &UserId, calendar: &GoogleCalendarId) {
        self.with_calendar(user_id, calendar, |cal| {
            let before = cal.events.len();
            cal.events.retain(|_, stored| {
                stored.json.get("status") != Some(&json!(EventStatus::Cancelled.as_str()))
            });
            // Like Google: once deletions are forgotten, a sync token from
            // before them could no longer report them, so it answers 410.
            if cal.events.len() != before {
                cal.epoch += 1;
            }
        });
    }

    /// Every event Google holds for the calendar, cancelled ones included, by
    /// id (empty for an unknown calendar).
    pub fn events(&self, user_id: &UserId, calendar: &GoogleCalendarId) -> Vec<GoogleEvent> {
        self.lock()
            .calendars
            .get(&(user_id.clone(), calendar.clone()))
            .map(|cal| {
                cal.events
                    .values()
                    .filter_map(|stored| parse_event(stored.json.clone()).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The sync token a complete pass would end with now (`None` for an unknown calendar).
    pub fn current_sync_token(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
    ) -> Option<String> {
        self.lock()
            .calendars
            .get(&(user_id.clone(), calendar.clone()))
            .map(FakeCalendar::sync_token)
    }

    /// Kills every sync token issued so far: the next incremental call gets `FullSyncRequired`.
    pub fn invalidate_sync_tokens(&self, user_id: &UserId, calendar: &GoogleCalendarId) {
        self.with_calendar(user_id, calendar, |cal| cal.epoch += 1);
    }

    /// Events per page at most (`maxResults` may ask for fewer); at least 1.
    pub fn set_page_size(&self, size: usize) {
        self.lock().page_size = size.max(1);
    }

    /// Longest channel lifetime granted (Google grants the smaller of this and `params.ttl`).
    pub fn set_max_channel_ttl(&self, ttl: Duration) {
        self.lock().max_channel_ttl = ttl;
    }

    // ---- Failures and delays ----

    /// The next calls of `method` fail with these errors, in order, one per call.
    pub fn fail_next(&self, method: FakeMethod, errors: impl IntoIterator<Item = GoogleError>) {
        self.lock()
            .failures
            .entry(method)
            .or_default()
            .extend(errors);
    }

    /// The next `times` calls of `method` fail with `error`.
    pub fn fail_next_n(&self, method: FakeMethod, times: usize, error: &GoogleError) {
        self.fail_next(method, std::iter::repeat_n(error.clone(), times));
    }

    /// Every call sleeps this long (`tokio::time::sleep`) before answering; `None` for no delay.
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.lock().delay = delay;
    }

    // ---- What was called ----

    /// How many times `method` was called (failed calls included).
    pub fn calls(&self, method: FakeMethod) -> usize {
        self.lock().calls.get(&method).copied().unwrap_or(0)
    }

    /// Every channel granted by `watch`, in order.
    pub fn watches(&self) -> Vec<FakeWatch> {
        self.lock().watches.clone()
    }

    /// Every successful `stop_channel`, in order (unknown channels included: Google's 404 counts as stopped).
    pub fn stops(&self) -> Vec<ChannelHandle> {
        self.lock().stops.clone()
    }

    /// Channels granted and not stopped yet: empty when every channel was cleaned up.
    pub fn open_channels(&self) -> Vec<ChannelHandle> {
        self.lock().open.clone()
    }

    /// Every `list_events` call, in order.
    pub fn list_calls(&self) -> Vec<FakeListCall> {
        self.lock().list_calls.clone()
    }

    /// Counts the call, then waits the configured delay and returns an injected failure, if any.
    async fn enter(&self, method: FakeMethod) -> Result<(), GoogleError> {
        let (delay, failure) = {
            let mut state = self.lock();
            *state.calls.entry(method).or_default() += 1;
            let failure = state
                .failures
                .get_mut(&method)
                .and_then(VecDeque::pop_front);
            (state.delay, failure)
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        failure.map_or(Ok(()), Err)
    }
}

#[async_trait]
impl CalendarApi for FakeGoogleCalendar {
    async fn watch(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
        request: &WatchRequest,
    ) -> Result<WatchedChannel, GoogleError> {
        self.enter(FakeMethod::Watch).await?;
        let now = self.clock.now();
        let mut state = self.lock();
        let cal = state
            .calendars
            .get(&(user_id.clone(), calendar.clone()))
            .ok_or(GoogleError::NotFound)?;
        if !cal.push_supported {
            return Err(GoogleError::PushNotSupported);
        }
        let resource_id = ResourceId::parse(format!("fake-resource-{}", cal.serial))
            .map_err(|e| GoogleError::Transient(e.to_string()))?;
        if state
            .watches
            .iter()
            .any(|w| w.request.channel_id == request.channel_id)
        {
            return Err(GoogleError::Other {
                status: 400,
                reason: "channelIdNotUnique".to_owned(),
                message: format!("Channel id {} not unique", request.channel_id),
            });
        }
        let lifetime = request.ttl.min(state.max_channel_ttl);
        // Google reports expirations in whole milliseconds.
        let at = now + lifetime;
        let expires_at = at.replace_millisecond(at.millisecond()).ok();
        let granted = WatchedChannel {
            channel_id: request.channel_id.clone(),
            resource_id: resource_id.clone(),
            expires_at,
        };
        state.watches.push(FakeWatch {
            user_id: user_id.clone(),
            calendar: calendar.clone(),
            request: request.clone(),
            granted: granted.clone(),
        });
        state.open.push(ChannelHandle {
            channel_id: request.channel_id.clone(),
            resource_id,
        });
        Ok(granted)
    }

    async fn stop_channel(
        &self,
        _user_id: &UserId,
        channel_id: &ChannelId,
        resource_id: &ResourceId,
    ) -> Result<(), GoogleError> {
        self.enter(FakeMethod::StopChannel).await?;
        let mut state = self.lock();
        let handle = ChannelHandle {
            channel_id: channel_id.clone(),
            resource_id: resource_id.clone(),
        };
        state.open.retain(|open| *open != handle);
        state.stops.push(handle);
        Ok(())
    }

    async fn list_events(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
        query: &EventsQuery,
    ) -> Result<EventsPage, GoogleError> {
        self.lock().list_calls.push(FakeListCall {
            user_id: user_id.clone(),
            calendar: calendar.clone(),
            query: query.clone(),
        });
        self.enter(FakeMethod::ListEvents).await?;
        let state = self.lock();
        let cal = state
            .calendars
            .get(&(user_id.clone(), calendar.clone()))
            .ok_or(GoogleError::NotFound)?;
        let incremental = query.sync_token.is_some();
        let cursor = match (&query.page_token, &query.sync_token) {
            (Some(page), _) => parse_page_token(page).ok_or_else(|| GoogleError::Other {
                status: 400,
                reason: "invalid".to_owned(),
                message: "Invalid page token value.".to_owned(),
            })?,
            (None, Some(sync)) => {
                let (epoch, version) = parse_sync_token(sync).ok_or_else(full_sync_required)?;
                if version > cal.version {
                    return Err(full_sync_required());
                }
                Cursor {
                    epoch,
                    since: version,
                    snapshot: cal.version,
                    after: None,
                }
            }
            (None, None) => Cursor {
                epoch: cal.epoch,
                since: 0,
                snapshot: cal.version,
                after: None,
            },
        };
        if incremental && cursor.epoch != cal.epoch {
            return Err(full_sync_required());
        }
        let limit = usize::try_from(query.max_results.clamp(1, crate::MAX_EVENTS_PAGE))
            .unwrap_or(DEFAULT_PAGE_SIZE)
            .min(state.page_size);
        let start = cursor
            .after
            .as_ref()
            .map_or(Bound::Unbounded, |after| Bound::Excluded(after.clone()));
        let mut matching = cal
            .events
            .range((start, Bound::Unbounded))
            .filter(|(_, stored)| {
                stored.version > cursor.since && stored.version <= cursor.snapshot
            });
        let page: Vec<(&String, &StoredEvent)> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        let items = page
            .iter()
            .map(|(_, stored)| parse_event(stored.json.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let last_id = page.last().map(|(id, _)| id.as_str());
        Ok(match (more, last_id) {
            (true, Some(last_id)) => EventsPage {
                items,
                next_page_token: Some(page_token(&cursor, last_id)),
                next_sync_token: None,
                skipped: Vec::new(),
            },
            _ => EventsPage {
                items,
                next_page_token: None,
                next_sync_token: Some(FakeCalendar::token_at(cal.epoch, cursor.snapshot)),
                skipped: Vec::new(),
            },
        })
    }

    async fn list_calendars(
        &self,
        user_id: &UserId,
    ) -> Result<Vec<CalendarListEntry>, GoogleError> {
        self.enter(FakeMethod::ListCalendars).await?;
        let state = self.lock();
        Ok(state
            .calendars
            .iter()
            .filter(|((owner, _), _)| owner == user_id)
            .map(|((_, id), cal)| CalendarListEntry {
                id: id.clone(),
                summary: cal.summary.clone(),
                primary: cal.primary,
                access_role: cal.access_role.clone(),
            })
            .collect())
    }
}
