//! The revocation-feed client: polls the issuer's `GET /revocations?since=` and replays the
//! events with the server's own semantics (`tessera_auth::revocation`):
//!
//! * `jti`: that one token;
//! * `session`: every token whose `sid` claim is the subject;
//! * `user`: every token of that user (`uid`, else `sub`) issued at or before `created_at`.
//!
//! Each event is forgotten after its `expires_at`, when every token it could affect has
//! expired. The cursor moves only after a page has been applied, so after an error the next
//! poll resumes from the last event seen: nothing is skipped.
//!
//! One read of the feed at a time, shared: the background poll and every
//! `Verifier::sync_revocations` that arrives before a read sends its first request are
//! answered by that read; one that arrives later is answered by the next read, shared again
//! (see [`Revocations::sync`]). The read runs in a task of its own, so a caller that goes
//! away does not cut it short.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::error::{Error, truncate};
use crate::fetch;

/// How to follow an issuer's revocation feed.
///
/// ```
/// use std::time::Duration;
/// use tessera_axum::RevocationFeed;
///
/// let feed = RevocationFeed::new("orders-api", "the client secret")
///     .poll_interval(Duration::from_millis(1500));
/// # let _ = feed;
/// ```
#[derive(Clone)]
pub struct RevocationFeed {
    pub(crate) url: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_secret: SecretString,
    pub(crate) poll_interval: Duration,
    pub(crate) page_size: u32,
}

impl std::fmt::Debug for RevocationFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationFeed")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

impl RevocationFeed {
    /// Follows the feed as a confidential client (HTTP Basic, RFC 6749 §2.3.1). The URL
    /// defaults to `{issuer_url}/revocations`; the poll interval to 1 s.
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Self {
            url: None,
            client_id: client_id.into(),
            client_secret: SecretString::from(client_secret.into()),
            poll_interval: Duration::from_secs(1),
            page_size: 500,
        }
    }

    /// The feed URL, when it is not `{issuer_url}/revocations`.
    #[must_use]
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// How often to poll: the longest a revocation takes to reach this verifier.
    #[must_use]
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// Events asked for per request (1–1000, default 500).
    #[must_use]
    pub fn page_size(mut self, n: u32) -> Self {
        self.page_size = n;
        self
    }
}

/// Why a token is revoked, for logs.
pub(crate) const TOKEN: &str = "token";
pub(crate) const SESSION: &str = "session";
pub(crate) const USER: &str = "user";

#[derive(Debug, Default)]
struct State {
    jtis: HashMap<String, i64>,
    sessions: HashMap<String, i64>,
    /// user → (tokens issued at or before this are revoked, forget after)
    users: HashMap<String, (i64, i64)>,
}

/// One event as the feed sends it.
#[derive(Debug, Deserialize)]
struct Event {
    id: i64,
    kind: String,
    subject: String,
    created_at: i64,
    expires_at: i64,
}

#[derive(Debug, Deserialize)]
struct Page {
    events: Vec<Event>,
    cursor: i64,
}

/// The replayed revocation state and the poller's position in the feed.
#[derive(Debug)]
pub(crate) struct Revocations {
    url: Url,
    client_id: String,
    client_secret: SecretString,
    poll_interval: Duration,
    page_size: u32,
    http: reqwest::Client,
    state: RwLock<State>,
    cursor: AtomicI64,
    polls: AtomicU64,
    failures: AtomicU64,
    /// Unix time of the last successful poll (`i64::MIN` before the first).
    last_sync: AtomicI64,
    /// Fail closed when the last successful poll (else `started_at`) is older than this
    /// many seconds.
    max_staleness: Option<i64>,
    /// When the verifier was built (its clock).
    started_at: i64,
    clock: Arc<dyn Clock>,
    /// Reads asked for and whether one is under way. Every decision to start a read is made
    /// under this lock, which is never held across an `.await`.
    flight: Mutex<Flight>,
    /// The last finished read, watched by the callers waiting for one.
    finished: watch::Sender<Read>,
    /// The verifier was dropped: a read under way stops at its next page (see
    /// [`Revocations::stop`]).
    stopped: AtomicBool,
    /// When the last read ended, however it ended (cut short included), whoever asked for
    /// it: the poll counts its interval from there (see [`run_poller`]).
    last_read: Mutex<Option<tokio::time::Instant>>,
}

/// The reads of the feed asked for, and whether one is under way.
#[derive(Debug, Default)]
struct Flight {
    /// A read task is running (it holds a [`Landing`]).
    running: bool,
    /// How many times a read was asked for: each caller's ticket is the count after its own.
    asked: u64,
}

/// A finished read: the tickets it answers (every one up to `answered`) and how it ended.
#[derive(Debug)]
struct Read {
    answered: u64,
    outcome: Result<usize, Error>,
    /// The read task ended before the read did (its runtime shut down, or it panicked): the
    /// outcome says nothing about the feed.
    cut_short: bool,
}

impl Revocations {
    pub(crate) fn new(
        feed: RevocationFeed,
        url: Url,
        http: reqwest::Client,
        max_staleness: Option<Duration>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        if feed.poll_interval.is_zero() {
            return Err(Error::config("`poll_interval` must be positive"));
        }
        if !(1..=1000).contains(&feed.page_size) {
            return Err(Error::config("`page_size` must be between 1 and 1000"));
        }
        if let Some(max) = max_staleness
            && (max < feed.poll_interval || max.as_secs() == 0)
        {
            return Err(Error::config(
                "`revocation_feed_max_staleness` must be at least one second and at least the \
                 feed's `poll_interval` (several intervals, so one slow poll does not refuse \
                 requests)",
            ));
        }
        Ok(Self {
            url,
            client_id: feed.client_id,
            client_secret: feed.client_secret,
            poll_interval: feed.poll_interval,
            page_size: feed.page_size,
            http,
            state: RwLock::new(State::default()),
            cursor: AtomicI64::new(0),
            polls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_sync: AtomicI64::new(i64::MIN),
            max_staleness: max_staleness.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            started_at: clock.now(),
            clock,
            flight: Mutex::new(Flight::default()),
            finished: watch::Sender::new(Read {
                answered: 0,
                outcome: Ok(0),
                cut_short: false,
            }),
            stopped: AtomicBool::new(false),
            last_read: Mutex::new(None),
        })
    }

    /// Stops the read under way, if any, at its next page: the verifier is being dropped.
    /// The read runs in a task of its own, which the verifier's drop does not abort (it
    /// aborts the poll), and a long backlog, or a feed that never ends, would otherwise be
    /// read on for nobody.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    /// True when a staleness bound is set and the feed has not been read successfully
    /// within it (never read: not since the verifier started).
    pub(crate) fn is_stale(&self, now: i64) -> bool {
        let Some(max) = self.max_staleness else {
            return false;
        };
        let since = self.last_sync().unwrap_or(self.started_at);
        now.saturating_sub(since) > max
    }

    /// Which revocation applies to a token, if any. `user` is `uid`, else `sub`.
    pub(crate) fn check(
        &self,
        jti: Option<&str>,
        sid: Option<&str>,
        user: Option<&str>,
        iat: i64,
    ) -> Option<&'static str> {
        let Ok(s) = self.state.read() else {
            // A writer panicked mid-update: fail closed.
            return Some(TOKEN);
        };
        if jti.is_some_and(|j| s.jtis.contains_key(j)) {
            return Some(TOKEN);
        }
        if sid.is_some_and(|sid| s.sessions.contains_key(sid)) {
            return Some(SESSION);
        }
        if user
            .and_then(|u| s.users.get(u))
            .is_some_and(|(not_after, _)| iat <= *not_after)
        {
            return Some(USER);
        }
        None
    }

    fn apply(&self, events: &[Event]) {
        let Ok(mut s) = self.state.write() else {
            return;
        };
        for e in events {
            match e.kind.as_str() {
                "jti" => {
                    let exp = s.jtis.entry(e.subject.clone()).or_insert(e.expires_at);
                    *exp = (*exp).max(e.expires_at);
                }
                "session" => {
                    let exp = s.sessions.entry(e.subject.clone()).or_insert(e.expires_at);
                    *exp = (*exp).max(e.expires_at);
                }
                "user" => {
                    let entry = s
                        .users
                        .entry(e.subject.clone())
                        .or_insert((e.created_at, e.expires_at));
                    entry.0 = entry.0.max(e.created_at);
                    entry.1 = entry.1.max(e.expires_at);
                }
                other => {
                    tracing::debug!(kind = %truncate(other, 32), id = e.id, "unknown revocation kind ignored");
                }
            }
        }
    }

    /// Forgets events whose tokens have all expired.
    fn prune(&self, now: i64) {
        if let Ok(mut s) = self.state.write() {
            s.jtis.retain(|_, exp| *exp > now);
            s.sessions.retain(|_, exp| *exp > now);
            s.users.retain(|_, (_, exp)| *exp > now);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.state
            .read()
            .map_or(0, |s| s.jtis.len() + s.sessions.len() + s.users.len())
    }

    pub(crate) fn cursor(&self) -> i64 {
        self.cursor.load(Ordering::Acquire)
    }

    pub(crate) fn polls(&self) -> u64 {
        self.polls.load(Ordering::Relaxed)
    }

    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub(crate) fn last_sync(&self) -> Option<i64> {
        Some(self.last_sync.load(Ordering::Acquire)).filter(|t| *t != i64::MIN)
    }

    /// Reads the feed up to its end and returns the number of new events, sharing the read
    /// with concurrent callers.
    ///
    /// A caller is answered by the first read that starts (sends its first request) after it
    /// asked. Callers that ask before a read starts share it. One that asks while a read is
    /// under way is not answered by that read, whose answer may predate the call and miss a
    /// revocation made just before it: it gets the next read, which everyone asking
    /// meanwhile shares. Any number of concurrent callers thus cost at most two reads (one
    /// at a time), and every caller sees what the feed held when it asked.
    ///
    /// The read runs on the runtime of the caller that started it. When its task ends
    /// before the read does (that runtime shut down: a verifier shared by several runtimes),
    /// each caller it was to answer asks again, once, and so reads on its own runtime: the
    /// end of another caller's runtime says nothing about the feed. Only once, so a caller
    /// whose own runtime is shutting down gets the error rather than spinning.
    ///
    /// # Errors
    /// How the read that answered it ended (see [`Revocations::read_to_end`]);
    /// [`Error::NoRuntime`] outside a Tokio runtime.
    pub(crate) async fn sync(self: &Arc<Self>) -> Result<usize, Error> {
        let mut finished = self.finished.subscribe();
        let mut ticket = self.ask()?;
        let mut again = true;
        loop {
            let (outcome, cut_short) = match finished.wait_for(|read| read.answered >= ticket).await
            {
                Ok(read) => (read.outcome.clone(), read.cut_short),
                // Unreachable: `self` owns the sender. Still an error, not a success.
                Err(_) => return Err(self.ended_early()),
            };
            if !(cut_short && std::mem::take(&mut again)) {
                return outcome;
            }
            ticket = match self.ask() {
                Ok(t) => t,
                // No runtime to read on here: the read's own end is the answer.
                Err(_) => return outcome,
            };
        }
    }

    /// Takes a ticket, and starts a read task unless one is running (which then answers
    /// the ticket, in its current read or the next).
    fn ask(self: &Arc<Self>) -> Result<u64, Error> {
        let (runtime, landing, ticket) = {
            let mut flight = self.flight();
            if flight.running {
                flight.asked = flight.asked.saturating_add(1);
                return Ok(flight.asked);
            }
            let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
            flight.asked = flight.asked.saturating_add(1);
            flight.running = true;
            let landing = Landing {
                feed: Arc::clone(self),
                finished: false,
            };
            (runtime, landing, flight.asked)
        };
        // Spawned after the lock is released: a task dropped at once (its runtime is
        // shutting down) drops its `Landing`, which takes the lock.
        runtime.spawn(landing.run());
        Ok(ticket)
    }

    /// Notes that a read ended now (see [`run_poller`]).
    fn read_ended(&self) {
        *self
            .last_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(tokio::time::Instant::now());
    }

    /// How long until the poll is due: `poll_interval` after the last read ended, zero when
    /// there was none.
    fn until_poll(&self) -> Duration {
        let last = *self
            .last_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        last.map_or(Duration::ZERO, |at| {
            self.poll_interval.saturating_sub(at.elapsed())
        })
    }

    fn flight(&self) -> MutexGuard<'_, Flight> {
        self.flight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The error for callers whose read task ended before the read did.
    fn ended_early(&self) -> Error {
        Error::Fetch {
            url: self.url.to_string(),
            reason: "the feed read ended before its answer (its runtime shut down, or it \
                     panicked)"
                .into(),
        }
    }

    /// Pulls every page after the cursor and applies it. Returns the number of events.
    /// Called by the read task only.
    ///
    /// # Errors
    /// The fetch failure, or [`Error::InvalidDocument`] when a full page does not move the
    /// cursor: a feed that ignores `since` would otherwise be asked again at once, forever,
    /// and what follows that page could never be read.
    async fn read_to_end(&self, now: i64) -> Result<usize, Error> {
        let mut total = 0;
        loop {
            if self.stopped.load(Ordering::Acquire) {
                return Err(Error::Fetch {
                    url: self.url.to_string(),
                    reason: "the verifier was dropped".into(),
                });
            }
            let before = self.cursor();
            let n = self.poll_page().await?;
            total += n;
            if n < usize::try_from(self.page_size).unwrap_or(usize::MAX) {
                break;
            }
            if self.cursor() <= before {
                tracing::warn!(
                    cursor = before,
                    events = n,
                    "the revocation feed sent a full page without moving the cursor (does it ignore `since`?); stopped until the next poll"
                );
                return Err(Error::InvalidDocument {
                    url: self.url.to_string(),
                    reason: "a full page did not move the cursor".into(),
                });
            }
        }
        self.prune(now);
        self.last_sync.store(now, Ordering::Release);
        Ok(total)
    }

    async fn poll_page(&self) -> Result<usize, Error> {
        let since = self.cursor();
        let mut url = self.url.clone();
        url.query_pairs_mut()
            .append_pair("since", &since.to_string())
            .append_pair("limit", &self.page_size.to_string());
        self.polls.fetch_add(1, Ordering::Relaxed);
        let basic = fetch::Basic {
            id: &self.client_id,
            secret: self.client_secret.expose_secret(),
        };
        let (_, body) = fetch::get(
            &self.http,
            &url,
            1024 * 1024,
            "application/json",
            Some(basic),
        )
        .await?;
        let page: Page = serde_json::from_slice(&body).map_err(|e| Error::InvalidDocument {
            url: self.url.to_string(),
            reason: truncate(&e.to_string(), 160),
        })?;
        self.apply(&page.events);
        let last = page.events.iter().map(|e| e.id).max().unwrap_or(since);
        // The server's cursor is the last id it sent (or our `since`); never move backwards.
        self.cursor
            .store(since.max(last).max(page.cursor), Ordering::Release);
        Ok(page.events.len())
    }
}

/// Runs the reads of the feed for [`Revocations::sync`] until no ticket is left unanswered,
/// then clears `running`. Its drop ends the flight however the task ends: finished,
/// panicked, or dropped (its runtime shut down, before it ran or mid-read); in the last
/// cases every ticket handed out is answered with an error, so no caller waits for a read
/// that never comes and the next caller starts a new one.
struct Landing {
    feed: Arc<Revocations>,
    finished: bool,
}

impl Landing {
    async fn run(mut self) {
        let feed = Arc::clone(&self.feed);
        loop {
            // Every ticket handed out before this read sends its first request is answered
            // by it.
            let answers = feed.flight().asked;
            let outcome = feed.read_to_end(feed.clock.now()).await;
            feed.read_ended();
            let stopped = feed.stopped.load(Ordering::Acquire);
            if let Err(e) = &outcome
                && !stopped
            {
                feed.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    error = %e,
                    cursor = feed.cursor(),
                    "revocation feed read failed; the next read resumes from the cursor"
                );
            }
            let mut flight = feed.flight();
            feed.finished.send_replace(Read {
                answered: answers,
                outcome,
                cut_short: false,
            });
            if flight.asked == answers || stopped {
                flight.running = false;
                self.finished = true;
                return;
            }
        }
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.feed.failures.fetch_add(1, Ordering::Relaxed);
        self.feed.read_ended();
        let mut flight = self.feed.flight();
        flight.running = false;
        self.feed.finished.send_replace(Read {
            answered: flight.asked,
            outcome: Err(self.feed.ended_early()),
            cut_short: true,
        });
    }
}

/// The poller: reads the feed `poll_interval` after the last read ended, whoever asked for
/// it (at once when there was none); a failed read is logged by the read, and the next
/// resumes from the cursor. Runs until aborted.
///
/// The interval counts from the last read, not from the start of this task, because the
/// task is started again on the caller's runtime whenever the one it ran on has shut down
/// ([`crate::task`]). A verifier used from a runtime per call (a `block_on` or
/// `#[tokio::main]` per request in a synchronous app) starts it on every call: reading at
/// once each time would read the feed on every call (and, the runtime shutting down with
/// the call, cut most of those reads short). Counting from the last read, cut short or
/// not, keeps that to one read per `poll_interval`. A `sync_revocations` also counts, so
/// the poll does not read again right after it.
pub(crate) async fn run_poller(revocations: Arc<Revocations>) {
    loop {
        let wait = revocations.until_poll();
        if !wait.is_zero() {
            // Looks again on waking: a `sync_revocations` meanwhile moved the time.
            tokio::time::sleep(wait).await;
            continue;
        }
        // Counted and logged by the read; the next poll is the retry.
        let _ = revocations.sync().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revocations() -> Revocations {
        Revocations::new(
            RevocationFeed::new("c", "s"),
            Url::parse("http://127.0.0.1/revocations").unwrap(),
            reqwest::Client::new(),
            None,
            Arc::new(crate::SystemClock),
        )
        .unwrap()
    }

    fn ev(id: i64, kind: &str, subject: &str, created_at: i64, expires_at: i64) -> Event {
        Event {
            id,
            kind: kind.into(),
            subject: subject.into(),
            created_at,
            expires_at,
        }
    }

    #[test]
    fn each_kind_revokes_what_it_names() {
        let r = revocations();
        r.apply(&[
            ev(1, "jti", "j1", 10, 100),
            ev(2, "session", "s1", 10, 100),
            ev(3, "user", "u1", 50, 100),
            ev(4, "future-kind", "x", 0, 100),
        ]);
        assert_eq!(r.check(Some("j1"), None, Some("u"), 0), Some(TOKEN));
        assert_eq!(r.check(Some("j2"), Some("s1"), Some("u"), 0), Some(SESSION));
        assert_eq!(r.check(Some("j2"), Some("s2"), Some("u1"), 50), Some(USER));
        assert_eq!(r.check(Some("j2"), Some("s2"), Some("u1"), 51), None);
        assert_eq!(r.check(None, None, None, 0), None);
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn events_are_forgotten_after_they_expire() {
        let r = revocations();
        r.apply(&[ev(1, "jti", "old", 0, 10), ev(2, "jti", "new", 0, 100)]);
        r.prune(50);
        assert_eq!(r.check(Some("old"), None, None, 0), None);
        assert_eq!(r.check(Some("new"), None, None, 0), Some(TOKEN));
    }

    #[test]
    fn a_later_user_event_moves_the_cut_off_forward_only() {
        let r = revocations();
        r.apply(&[ev(1, "user", "u", 50, 100), ev(2, "user", "u", 40, 90)]);
        assert_eq!(r.check(None, None, Some("u"), 50), Some(USER));
        assert_eq!(r.check(None, None, Some("u"), 51), None);
    }
}
