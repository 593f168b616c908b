//! The in-memory view of the revocation log, consulted on every token check.
//!
//! The database's append-only `revocation_events` table is the truth; this cache replays
//! it by id. Writers sync right after appending (so a single instance sees its own
//! revocations at once) and a background task syncs periodically and on notification (so
//! other instances' revocations arrive too). Entries are dropped once every token they
//! could affect has expired, which bounds memory.

use crossbeam_utils::sync::ShardedLock;
use std::collections::HashMap;

use tokio::sync::Mutex;

use crate::error::Result;
use crate::model::{RevocationEvent, RevocationKind};
use crate::store::RevocationStore;

#[derive(Debug, Default)]
struct State {
    last_id: i64,
    jtis: HashMap<String, i64>,
    sessions: HashMap<String, i64>,
    /// user id → (tokens issued at or before this are revoked, forget after)
    users: HashMap<String, (i64, i64)>,
}

/// Why a token is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Its `jti` was revoked.
    Token,
    /// Its session was revoked (logout, reuse detection, admin).
    Session,
    /// All of the user's tokens up to a time were revoked (disabled, password changed).
    User,
}

impl Revoked {
    /// A short reason for logs.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token revoked",
            Self::Session => "session revoked",
            Self::User => "user's tokens revoked",
        }
    }
}

/// Replayed revocation state.
#[derive(Debug, Default)]
pub struct RevocationCache {
    /// Read on every authenticated request: see `ShardedLock` in `token_cache`.
    state: ShardedLock<State>,
    sync_lock: Mutex<()>,
}

impl RevocationCache {
    /// An empty cache (replays from the beginning on first sync).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies events (idempotent; ids must increase but gaps are fine).
    pub fn apply(&self, events: &[RevocationEvent]) {
        let Ok(mut s) = self.state.write() else {
            return;
        };
        for e in events {
            match e.kind {
                RevocationKind::Jti => {
                    s.jtis.insert(e.subject.clone(), e.expires_at);
                }
                RevocationKind::Session => {
                    s.sessions.insert(e.subject.clone(), e.expires_at);
                }
                RevocationKind::User => {
                    let entry = s
                        .users
                        .entry(e.subject.clone())
                        .or_insert((e.created_at, e.expires_at));
                    entry.0 = entry.0.max(e.created_at);
                    entry.1 = entry.1.max(e.expires_at);
                }
            }
            s.last_id = s.last_id.max(e.id);
        }
    }

    /// The id of the newest event applied.
    #[must_use]
    pub fn last_id(&self) -> i64 {
        self.state.read().map_or(0, |s| s.last_id)
    }

    /// Checks a token's identifiers. `iat` is its issue time.
    #[must_use]
    pub fn check(
        &self,
        jti: Option<&str>,
        sid: Option<&str>,
        user: &str,
        iat: i64,
    ) -> Option<Revoked> {
        let Ok(s) = self.state.read() else {
            // A poisoned lock means a writer panicked: fail closed.
            return Some(Revoked::Token);
        };
        if jti.is_some_and(|j| s.jtis.contains_key(j)) {
            return Some(Revoked::Token);
        }
        if sid.is_some_and(|sid| s.sessions.contains_key(sid)) {
            return Some(Revoked::Session);
        }
        if s.users
            .get(user)
            .is_some_and(|(not_before, _)| iat <= *not_before)
        {
            return Some(Revoked::User);
        }
        None
    }

    /// The user-wide cut-off of `user`, if any: their tokens issued at or before it are
    /// revoked.
    #[must_use]
    pub fn user_cutoff(&self, user: &str) -> Option<i64> {
        self.state
            .read()
            .ok()
            .and_then(|s| s.users.get(user).map(|(not_before, _)| *not_before))
    }

    /// Forgets entries whose tokens have all expired.
    pub fn prune(&self, now: i64) {
        if let Ok(mut s) = self.state.write() {
            s.jtis.retain(|_, exp| *exp > now);
            s.sessions.retain(|_, exp| *exp > now);
            s.users.retain(|_, (_, exp)| *exp > now);
        }
    }

    /// Number of live entries (for metrics).
    #[must_use]
    pub fn len(&self) -> usize {
        self.state
            .read()
            .map_or(0, |s| s.jtis.len() + s.sessions.len() + s.users.len())
    }

    /// True when nothing is revoked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pulls and applies every event newer than the last one applied.
    ///
    /// # Errors
    /// Storage failures (the cache keeps its state and catches up next time).
    pub async fn sync<S: RevocationStore>(&self, store: &S, now: i64) -> Result<usize> {
        let _one_at_a_time = self.sync_lock.lock().await;
        let mut total = 0;
        loop {
            let events = store.revocations_since(self.last_id(), now, 1000).await?;
            if events.is_empty() {
                break;
            }
            total += events.len();
            self.apply(&events);
            if events.len() < 1000 {
                break;
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(
        id: i64,
        kind: RevocationKind,
        subject: &str,
        created_at: i64,
        expires_at: i64,
    ) -> RevocationEvent {
        RevocationEvent {
            id,
            kind,
            subject: subject.into(),
            created_at,
            expires_at,
        }
    }

    #[test]
    fn each_kind_revokes_what_it_names() {
        let c = RevocationCache::new();
        c.apply(&[
            ev(1, RevocationKind::Jti, "j1", 10, 100),
            ev(2, RevocationKind::Session, "s1", 10, 100),
            ev(3, RevocationKind::User, "u1", 50, 100),
        ]);
        assert_eq!(c.last_id(), 3);
        assert_eq!(c.check(Some("j1"), None, "u", 0), Some(Revoked::Token));
        assert_eq!(
            c.check(Some("j2"), Some("s1"), "u", 0),
            Some(Revoked::Session)
        );
        assert_eq!(
            c.check(Some("j2"), Some("s2"), "u1", 50),
            Some(Revoked::User)
        );
        assert_eq!(
            c.check(Some("j2"), Some("s2"), "u1", 51),
            None,
            "tokens issued after are fine"
        );
        assert_eq!(c.check(None, None, "u2", 0), None);
    }

    #[test]
    fn pruning_forgets_only_expired_entries() {
        let c = RevocationCache::new();
        c.apply(&[
            ev(1, RevocationKind::Jti, "old", 0, 10),
            ev(2, RevocationKind::Jti, "new", 0, 100),
        ]);
        c.prune(50);
        assert_eq!(c.check(Some("old"), None, "u", 0), None);
        assert_eq!(c.check(Some("new"), None, "u", 0), Some(Revoked::Token));
        assert_eq!(c.len(), 1);
    }
}
