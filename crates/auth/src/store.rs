//! The storage boundary: traits the domain needs, implemented by `tessera-store` for SQLite
//! and PostgreSQL. No SQL here, and no database error types leak through.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;

use crate::model::{
    Attempt, AuditEvent, AuditRecord, Client, ClientId, MfaChallenge, RevocationEvent,
    RevocationKind, Role, Session, SessionId, StoredKey, Throttle, TotpState, User, UserId,
    Username,
};
use crate::security::SecurityPolicy;

/// What kind of storage failure happened.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// A uniqueness constraint was violated (e.g. the username exists).
    Conflict,
    /// The database could not be reached or timed out; retrying later may work.
    Unavailable,
    /// Stored data could not be decoded (corruption or a bad manual edit).
    Corrupt,
    /// Anything else.
    Other,
}

/// An opaque storage failure, defined here so the domain never sees driver error types.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    source: Box<dyn StdError + Send + Sync>,
}

impl StoreError {
    /// Wraps a driver error.
    pub fn new(kind: StoreErrorKind, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            kind,
            source: source.into(),
        }
    }

    /// The failure kind.
    #[must_use]
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            StoreErrorKind::Conflict => f.write_str("storage conflict"),
            StoreErrorKind::Unavailable => f.write_str("storage unavailable"),
            StoreErrorKind::Corrupt => f.write_str("stored data is corrupt"),
            StoreErrorKind::Other => f.write_str("storage failure"),
        }
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Users.
pub trait UserStore: Send + Sync {
    /// Inserts a user. [`StoreErrorKind::Conflict`] if the username is taken.
    fn insert_user(&self, user: &User) -> impl Future<Output = StoreResult<()>> + Send;
    /// The user with this (normalized) username.
    fn find_user_by_username(
        &self,
        username: &Username,
    ) -> impl Future<Output = StoreResult<Option<User>>> + Send;
    /// The user with this id.
    fn find_user_by_id(&self, id: UserId)
    -> impl Future<Output = StoreResult<Option<User>>> + Send;
    /// All users, ordered by username.
    fn list_users(&self) -> impl Future<Output = StoreResult<Vec<User>>> + Send;
    /// Number of users.
    fn count_users(&self) -> impl Future<Output = StoreResult<u64>> + Send;
    /// Replaces a user's roles. False if no such user.
    fn update_user_roles(
        &self,
        id: UserId,
        roles: &[Role],
        now: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Sets the disabled flag. False if no such user.
    fn update_user_disabled(
        &self,
        id: UserId,
        disabled: bool,
        now: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Replaces the password hash; `password_changed` is false for a transparent rehash.
    fn update_password_hash(
        &self,
        id: UserId,
        hash: &str,
        now: i64,
        password_changed: bool,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// A transparent rehash (the same password, new parameters): replaces the hash only if
    /// it is still `old_hash`. False if it is not (the password was changed meanwhile, and
    /// a rehash of the old one must not undo that) or there is no such user.
    fn rehash_password(
        &self,
        id: UserId,
        old_hash: &str,
        new_hash: &str,
        now: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Deletes a user and (by cascade) their sessions. False if no such user.
    fn delete_user(&self, id: UserId) -> impl Future<Output = StoreResult<bool>> + Send;
}

/// What [`SessionStore::create_session_audited`] stored and read.
#[derive(Debug)]
pub struct StoredLogin {
    /// The `login` audit row's id.
    pub audit_id: i64,
    /// The session's user, read so that a change to it that this read does not see commits
    /// after the session and so ends it with the user's other sessions (a password change
    /// or a disable first updates the user, then revokes the sessions): read in the
    /// session's own write transaction where no other write can commit before it (SQLite),
    /// after the commit otherwise. `None` if the user is gone. An error here is a read that
    /// failed after the commit: the session and its audit row are stored all the same.
    pub user: StoreResult<Option<User>>,
}

/// How to rotate a refresh token (RFC 9700 §4.14.2), done as one atomic step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateRequest {
    /// SHA-256 of the presented token.
    pub parent_hash: [u8; 32],
    /// SHA-256 of its successor (derived deterministically from the parent, so every
    /// concurrent or retried rotation computes the same one).
    pub successor_hash: [u8; 32],
    /// Current time.
    pub now: i64,
    /// A parent rotated at most this many seconds ago, whose successor is still unused, is
    /// a retry (answered with the same successor), not reuse. 0 disables the window.
    pub grace_secs: i64,
    /// New idle lifetime from `now` (capped by the absolute expiry).
    pub idle_ttl_secs: i64,
    /// `expires_at` for the session revocation event if reuse is detected.
    pub revocation_expires_at: i64,
    /// The client making the request: the token must have been issued to it (RFC 6749 §6),
    /// otherwise the outcome is `Invalid` and nothing changes.
    pub client_id: String,
}

/// The result of [`SessionStore::rotate_refresh_token`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The parent was live and is now rotated; the successor is stored. `user` is the
    /// session's user as read in the same round trip (`None`: the row is gone), so the
    /// grant's common case costs one trip to the database.
    Rotated {
        /// The session, with its idle expiry moved.
        session: Session,
        /// The session's user.
        user: Option<User>,
    },
    /// The parent was rotated within the grace window and its successor is unused: answer
    /// with the same successor again.
    GraceRetry(Session),
    /// The parent was rotated within the grace window and its successor has been used in
    /// turn. Nothing changed: the caller may present the successor (derived from the
    /// parent, and the one the store holds) to reach the newest token of the chain.
    Superseded(Session),
    /// A rotated token was replayed: the session has been revoked in the same transaction
    /// and a revocation event appended.
    Reused(Session),
    /// Unknown token, or its session is revoked or expired.
    Invalid(&'static str),
}

/// Sessions and their refresh tokens.
pub trait SessionStore: Send + Sync {
    /// Stores a new session and its first refresh token (by hash).
    fn create_session(
        &self,
        session: &Session,
        refresh_hash: &[u8; 32],
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// [`SessionStore::create_session`] and [`AuditStore::append_audit`] in one
    /// transaction: a login and its audit row are stored together or not at all, with one
    /// commit instead of two. The login's throttle keys (`clear`, as
    /// [`SecurityStore::clear_throttle`]) are cleared in the same transaction: the success
    /// that clears them is the one stored, and a login costs no commit of its own for it.
    /// Returns the audit row's id and the session's user as it stands once the session is
    /// stored (see [`StoredLogin`]).
    fn create_session_audited(
        &self,
        session: &Session,
        refresh_hash: &[u8; 32],
        event: &AuditEvent,
        chain: ChainFn,
        clear: &[&str],
    ) -> impl Future<Output = StoreResult<StoredLogin>> + Send;
    /// Rotates a refresh token atomically; see [`RotateOutcome`].
    fn rotate_refresh_token(
        &self,
        req: &RotateRequest,
    ) -> impl Future<Output = StoreResult<RotateOutcome>> + Send;
    /// The session with this id.
    fn find_session(
        &self,
        id: SessionId,
    ) -> impl Future<Output = StoreResult<Option<Session>>> + Send;
    /// A refresh token (by hash): its session, whether or not still live, and when the token
    /// was rotated (`None` while it is the current one).
    fn find_refresh_token(
        &self,
        hash: &[u8; 32],
    ) -> impl Future<Output = StoreResult<Option<(Session, Option<i64>)>>> + Send;
    /// Live sessions (not revoked, not expired at `now`), optionally of one user, newest first.
    fn list_live_sessions(
        &self,
        user: Option<UserId>,
        now: i64,
    ) -> impl Future<Output = StoreResult<Vec<Session>>> + Send;
    /// How many sessions are live (not revoked, not expired at `now`); for metrics.
    fn count_live_sessions(&self, now: i64) -> impl Future<Output = StoreResult<u64>> + Send;
    /// Revokes a session and appends its revocation event, atomically. Returns the session
    /// if it was live and is now revoked, `None` if unknown or already revoked.
    fn revoke_session(
        &self,
        id: SessionId,
        now: i64,
        reason: &str,
        event_expires_at: i64,
    ) -> impl Future<Output = StoreResult<Option<Session>>> + Send;
    /// Revokes every live session of a user except `keep`, appending one event per session;
    /// with `revoke_user_tokens`, also a user event that kills every access token issued up
    /// to `now`. Returns the number of sessions revoked.
    fn revoke_user_sessions(
        &self,
        user: UserId,
        keep: Option<SessionId>,
        now: i64,
        reason: &str,
        event_expires_at: i64,
        revoke_user_tokens: bool,
    ) -> impl Future<Output = StoreResult<u64>> + Send;
    /// Sets a new password hash (and `password_changed_at`) and, in the same transaction,
    /// ends what the old password opened: every live session of the user except `keep`
    /// (with one revocation event each), their pending MFA challenges and an unconfirmed
    /// TOTP enrolment. All of it or nothing: a failure part-way cannot leave the password
    /// changed and a session or challenge of the old one alive (nothing else would end
    /// it). False, with nothing changed, if there is no such user.
    fn change_password(
        &self,
        user: UserId,
        hash: &str,
        now: i64,
        keep: Option<SessionId>,
        event_expires_at: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Disables a user and, in the same transaction, revokes every live session of theirs
    /// (one event each, and a user event that kills every access token issued up to `now`)
    /// and ends their pending MFA challenges and an unconfirmed TOTP enrolment. All of it or
    /// nothing, as [`SessionStore::change_password`]. False, with nothing changed, if there
    /// is no such user.
    fn disable_user(
        &self,
        user: UserId,
        now: i64,
        event_expires_at: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
}

/// The append-only revocation log.
pub trait RevocationStore: Send + Sync {
    /// Appends an event and returns its id.
    fn append_revocation(
        &self,
        kind: RevocationKind,
        subject: &str,
        created_at: i64,
        expires_at: i64,
    ) -> impl Future<Output = StoreResult<i64>> + Send;
    /// Events with id greater than `after`, oldest first, at most `limit`, skipping events
    /// that expired before `now`.
    fn revocations_since(
        &self,
        after: i64,
        now: i64,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<RevocationEvent>>> + Send;
    /// Deletes expired revocation events, sessions that can never be used again, expired
    /// MFA challenges, throttle rows whose failures no longer count, and throttle rows
    /// keyed by a username as typed (`user:<name>`, the form before
    /// [`crate::Auth::username_throttle_key`]). Returns the number of rows removed.
    fn prune(&self, now: i64) -> impl Future<Output = StoreResult<u64>> + Send;
}

/// When [`KeyStore::rotate_signing_key`] may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateGuard {
    /// Always (a manual rotation).
    Always,
    /// Only if no key is published but not yet signing (a scheduled rotation: another
    /// instance may have done it already).
    NoPendingKey,
    /// Only if no key is active or pending (first start: another instance may have
    /// created the first key already).
    NoUsableKey,
}

/// Signing keys.
pub trait KeyStore: Send + Sync {
    /// Atomically, if `guard` allows at `new.created_at`: schedules the retirement of every
    /// active or pending key at `new.activates_at` (leaving the JWKS `retain_after_retire`
    /// later) and inserts `new`. Concurrent callers on several instances serialize (a
    /// database lock), so a guarded rotation happens once. Returns false if the guard
    /// refused.
    fn rotate_signing_key(
        &self,
        new: &StoredKey,
        retain_after_retire: i64,
        guard: RotateGuard,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Inserts a key.
    fn insert_signing_key(&self, key: &StoredKey) -> impl Future<Output = StoreResult<()>> + Send;
    /// Every stored key, oldest first.
    fn list_signing_keys(&self) -> impl Future<Output = StoreResult<Vec<StoredKey>>> + Send;
    /// Updates a key's schedule (`activates_at`, `retires_at`, `expires_at`, `revoked_at`).
    fn update_signing_key(&self, key: &StoredKey)
    -> impl Future<Output = StoreResult<bool>> + Send;
    /// Deletes a key.
    fn delete_signing_key(&self, kid: &str) -> impl Future<Output = StoreResult<bool>> + Send;
}

/// Small named values (first-start markers and the like).
pub trait MetaStore: Send + Sync {
    /// A value.
    fn get_meta(&self, key: &str) -> impl Future<Output = StoreResult<Option<String>>> + Send;
    /// Sets a value.
    fn set_meta(&self, key: &str, value: &str) -> impl Future<Output = StoreResult<()>> + Send;
    /// Sets a value unless the key has one; returns the value stored (the one given, or
    /// the one that was there), atomically.
    fn set_meta_if_absent(
        &self,
        key: &str,
        value: &str,
    ) -> impl Future<Output = StoreResult<String>> + Send;
}

/// Computes a row's chain hash from the previous row's hash.
pub type ChainFn = fn(prev_hash: &[u8], event: &AuditEvent) -> [u8; 32];

/// The tamper-evident audit log.
pub trait AuditStore: Send + Sync {
    /// Appends an event, chaining its hash to the last row's inside one transaction.
    fn append_audit(
        &self,
        event: &AuditEvent,
        chain: ChainFn,
    ) -> impl Future<Output = StoreResult<i64>> + Send;
    /// Rows with id greater than `after`, oldest first, optionally of one user and since a
    /// time, at most `limit`.
    fn list_audit(
        &self,
        after: i64,
        user_id: Option<&str>,
        since: Option<i64>,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<AuditRecord>>> + Send;
}

/// OAuth clients.
pub trait ClientStore: Send + Sync {
    /// Registers a client. [`StoreErrorKind::Conflict`] if the id is taken.
    fn insert_client(&self, client: &Client) -> impl Future<Output = StoreResult<()>> + Send;
    /// The client with this id.
    fn find_client(
        &self,
        id: &ClientId,
    ) -> impl Future<Output = StoreResult<Option<Client>>> + Send;
    /// All clients, by id.
    fn list_clients(&self) -> impl Future<Output = StoreResult<Vec<Client>>> + Send;
    /// Deletes a client. False if there was none.
    fn delete_client(&self, id: &ClientId) -> impl Future<Output = StoreResult<bool>> + Send;
}

/// Second factors, login challenges and failed-attempt counters.
pub trait SecurityStore: Send + Sync {
    /// The user's TOTP state (`None` if there is no such user).
    fn find_totp(
        &self,
        user: UserId,
    ) -> impl Future<Output = StoreResult<Option<TotpState>>> + Send;
    /// Stores a sealed secret awaiting confirmation. False if no such user.
    fn set_totp_pending(
        &self,
        user: UserId,
        sealed: &[u8],
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Atomically turns TOTP on with `sealed` (which must still be the pending secret),
    /// records `step` as used and replaces the recovery codes. False if the pending secret
    /// changed meanwhile.
    fn activate_totp(
        &self,
        user: UserId,
        sealed: &[u8],
        step: i64,
        recovery_hashes: &[[u8; 32]],
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Turns TOTP off and deletes the recovery codes. False if no such user.
    fn disable_totp(&self, user: UserId) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Records `step` as the last accepted one, only if it is newer (RFC 6238 §5.2: a
    /// code is accepted at most once). False for a replayed or older step.
    fn advance_totp_step(
        &self,
        user: UserId,
        step: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Marks a recovery code used. False if unknown or already used.
    fn use_recovery_code(
        &self,
        user: UserId,
        hash: &[u8; 32],
        now: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Unused recovery codes left.
    fn count_recovery_codes(&self, user: UserId) -> impl Future<Output = StoreResult<u64>> + Send;
    /// Stores a login challenge under the hash of its token.
    fn insert_mfa_challenge(
        &self,
        hash: &[u8; 32],
        challenge: &MfaChallenge,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// An unused, unexpired challenge.
    fn find_mfa_challenge(
        &self,
        hash: &[u8; 32],
        now: i64,
    ) -> impl Future<Output = StoreResult<Option<MfaChallenge>>> + Send;
    /// Counts a wrong code against a challenge; returns the attempts so far.
    fn fail_mfa_challenge(&self, hash: &[u8; 32]) -> impl Future<Output = StoreResult<i64>> + Send;
    /// Marks a challenge used, once, if fewer than `max_attempts` wrong codes have been
    /// counted against it (checked in the same statement, so a right code cannot slip in
    /// between the count that reaches the limit and the burn). False if it was already
    /// used, or has reached `max_attempts`.
    fn consume_mfa_challenge(
        &self,
        hash: &[u8; 32],
        now: i64,
        max_attempts: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// The failed-attempt state of a throttle key.
    fn find_throttle(
        &self,
        key: &str,
    ) -> impl Future<Output = StoreResult<Option<Throttle>>> + Send;
    /// Reserves one attempt against a throttle key, atomically, before the attempt is
    /// checked: refused while the key is locked; otherwise counted at once as a failure
    /// (restarting the count if the last one is older than the policy's `failure_window`),
    /// and, when that count reaches `lockout_threshold`, the key is locked for
    /// [`SecurityPolicy::lock_for`] of it in the same transaction. So concurrent callers
    /// never check more than the threshold's worth of attempts before the lock holds; a
    /// success clears the key ([`SecurityStore::clear_throttle`]).
    fn reserve_attempt(
        &self,
        key: &str,
        now: i64,
        policy: &SecurityPolicy,
    ) -> impl Future<Output = StoreResult<Attempt>> + Send;
    /// [`SecurityStore::reserve_attempt`] for a password login, with the user named
    /// `username` read in the same step (`None` when `username` is): a login needs both
    /// before it checks the password, and one step costs a backend less than two (SQLite
    /// runs them in one command to its writer thread, in the reservation's transaction).
    fn reserve_login(
        &self,
        key: &str,
        now: i64,
        policy: &SecurityPolicy,
        username: Option<&Username>,
    ) -> impl Future<Output = StoreResult<(Attempt, Option<User>)>> + Send;
    /// Forgets a throttle key (success or admin unlock). False if there was nothing.
    fn clear_throttle(&self, key: &str) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Gives back one attempt reserved with [`SecurityStore::reserve_attempt`] that could
    /// not be checked (the hashing queue full, the database failing): one failure fewer,
    /// and, when `lifts_lock`, the lock that reservation set lifted.
    fn release_attempt(
        &self,
        key: &str,
        lifts_lock: bool,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// Everything the domain stores.
pub trait Store:
    UserStore
    + SessionStore
    + RevocationStore
    + KeyStore
    + MetaStore
    + AuditStore
    + ClientStore
    + SecurityStore
    + 'static
{
    /// Checks the database answers.
    fn ping(&self) -> impl Future<Output = StoreResult<()>> + Send;
}
