//! Domain types. Validated values get newtypes with parse constructors, so an invalid
//! username or role cannot exist past the edge of the system.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::AuthError;

/// A user's stable identifier (UUIDv7, time-ordered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub Uuid);

impl UserId {
    /// A fresh id.
    #[must_use]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses the hyphenated form.
    ///
    /// # Errors
    /// [`AuthError::InvalidRequest`] when `s` is not a UUID.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| AuthError::InvalidRequest("not a valid user id".into()))
    }
}

impl Default for UserId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A session (refresh-token family) identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub Uuid);

impl SessionId {
    /// A fresh id.
    #[must_use]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses the hyphenated form.
    ///
    /// # Errors
    /// [`AuthError::InvalidRequest`] when `s` is not a UUID.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| AuthError::InvalidRequest("not a valid session id".into()))
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A username: 1–64 characters of ASCII letters, digits and `. _ - @ +`, stored lowercase
/// so that `Alice` and `alice` are one account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    /// Maximum length in bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates and normalizes a username.
    ///
    /// # Errors
    /// [`AuthError::InvalidRequest`] saying what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        if s.is_empty() {
            return Err(AuthError::InvalidRequest(
                "username must not be empty".into(),
            ));
        }
        if s.len() > Self::MAX_LEN {
            return Err(AuthError::InvalidRequest(format!(
                "username must be at most {} characters",
                Self::MAX_LEN
            )));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'+'))
        {
            return Err(AuthError::InvalidRequest(
                "username may contain only letters, digits and . _ - @ +".into(),
            ));
        }
        Ok(Self(s.to_ascii_lowercase()))
    }

    /// [`Username::parse`] for a name being given to a new user: it must not also read as a
    /// user id. Every command and endpoint that takes "a username or an id" tries the id
    /// first, so a user named like another's id would make them act on that other user,
    /// and could not itself be reached by name.
    ///
    /// # Errors
    /// As [`Username::parse`], and [`AuthError::UnusableUsername`] for a name that is a UUID.
    pub fn parse_new(s: &str) -> Result<Self, AuthError> {
        let name = Self::parse(s)?;
        if UserId::parse(s).is_ok() {
            return Err(AuthError::UnusableUsername(
                "username must not be a UUID (it would read as a user id); choose another",
            ));
        }
        Ok(name)
    }

    /// The normalized username.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Username {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A role name: 1–64 characters of lowercase letters, digits and `_ - : .`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Role(String);

impl Role {
    /// The role that may use the admin API.
    pub const ADMIN: &'static str = "admin";

    /// Validates a role name.
    ///
    /// # Errors
    /// [`AuthError::InvalidRequest`] saying what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'_' | b'-' | b':' | b'.')
            });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(AuthError::InvalidRequest(format!(
                "role `{}` is invalid: use 1-64 lowercase letters, digits and _ - : .",
                s.chars().take(64).collect::<String>()
            )))
        }
    }

    /// The role name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a list, dropping duplicates and keeping order.
    ///
    /// # Errors
    /// The first invalid role.
    pub fn parse_all<I, S>(roles: I) -> Result<Vec<Self>, AuthError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out: Vec<Self> = Vec::new();
        for r in roles {
            let role = Self::parse(r.as_ref())?;
            if !out.contains(&role) {
                out.push(role);
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An OAuth client identifier: 1–64 ASCII letters, digits and `. _ -` (case-sensitive,
/// RFC 6749 §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ClientId(String);

impl ClientId {
    /// Validates a client id.
    ///
    /// # Errors
    /// [`AuthError::InvalidRequest`] saying what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(AuthError::InvalidRequest(
                "a client id is 1-64 letters, digits, dots, underscores or hyphens".into(),
            ))
        }
    }

    /// The id.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A registered OAuth client.
#[derive(Clone, PartialEq, Eq)]
pub struct Client {
    /// Client id.
    pub id: ClientId,
    /// SHA-256 of the client secret (confidential clients only).
    pub secret_hash: Option<Vec<u8>>,
    /// Scopes the client may be granted.
    pub scopes: Vec<String>,
    /// Confidential clients authenticate (RFC 6749 §2.1) and may use `client_credentials`.
    pub confidential: bool,
    /// Registration time.
    pub created_at: i64,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("scopes", &self.scopes)
            .field("confidential", &self.confidential)
            .finish_non_exhaustive()
    }
}

/// A stored user.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// Stable id.
    pub id: UserId,
    /// Normalized username.
    pub username: Username,
    /// PHC-format password hash.
    pub password_hash: String,
    /// Roles, in order; the first is the primary `role`.
    pub roles: Vec<Role>,
    /// A disabled user cannot log in or refresh, and their tokens are refused.
    pub disabled: bool,
    /// Creation time (Unix seconds).
    pub created_at: i64,
    /// Last change time.
    pub updated_at: i64,
    /// When the password was last set.
    pub password_changed_at: i64,
    /// Whether a TOTP second factor is active.
    pub totp_enabled: bool,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("roles", &self.roles)
            .field("disabled", &self.disabled)
            .field("totp_enabled", &self.totp_enabled)
            .finish_non_exhaustive()
    }
}

impl User {
    /// The primary role: the first one, if any.
    #[must_use]
    pub fn primary_role(&self) -> Option<&Role> {
        self.roles.first()
    }

    /// True if the user has `role`.
    #[must_use]
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.as_str() == role)
    }
}

/// Request metadata recorded with sessions and audit events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMeta {
    /// Client IP as the server determined it.
    pub ip: Option<String>,
    /// `User-Agent`, truncated.
    pub user_agent: Option<String>,
    /// The request id (`x-request-id`).
    pub request_id: Option<String>,
}

/// A login session: one refresh-token family (RFC 9700 §4.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Session id (the `sid` claim of its access tokens).
    pub id: SessionId,
    /// Owner.
    pub user_id: UserId,
    /// The OAuth client it was issued to.
    pub client_id: String,
    /// Granted scope (space separated).
    pub scope: String,
    /// Authentication methods used at login (`pwd`, `otp`...).
    pub amr: Vec<String>,
    /// Login time.
    pub created_at: i64,
    /// Last refresh.
    pub last_used_at: i64,
    /// Expires if not refreshed before this (moves on every refresh).
    pub idle_expires_at: i64,
    /// Expires at this time whatever happens (never moves).
    pub absolute_expires_at: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
    /// Why it was revoked.
    pub revoke_reason: Option<String>,
    /// Client IP at login.
    pub ip: Option<String>,
    /// User agent at login.
    pub user_agent: Option<String>,
}

impl Session {
    /// True if the session can still be refreshed at `now`.
    #[must_use]
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && now < self.idle_expires_at && now < self.absolute_expires_at
    }
}

/// What kind of thing a revocation event revokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationKind {
    /// One access token, by `jti`.
    Jti,
    /// Every access token of a session, by `sid`.
    Session,
    /// Every access token of a user issued at or before the event time.
    User,
}

impl RevocationKind {
    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Jti => "jti",
            Self::Session => "session",
            Self::User => "user",
        }
    }

    /// Parses the stored name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "jti" => Some(Self::Jti),
            "session" => Some(Self::Session),
            "user" => Some(Self::User),
            _ => None,
        }
    }
}

/// One entry of the append-only revocation log that every instance (and every verifier
/// following the revocation feed) replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationEvent {
    /// Monotonic id; the feed cursor.
    pub id: i64,
    /// What is revoked.
    pub kind: RevocationKind,
    /// The `jti`, session id or user id.
    pub subject: String,
    /// When the revocation happened (for `User`: tokens issued at or before this are dead).
    pub created_at: i64,
    /// After this, every token it could affect has expired and it can be forgotten.
    pub expires_at: i64,
}

/// A stored signing key (private part sealed under the master key).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Key id (RFC 7638 thumbprint).
    pub kid: String,
    /// JWA algorithm name.
    pub alg: String,
    /// AES-256-GCM-sealed PKCS#8, bound to the kid.
    pub sealed_private_key: Vec<u8>,
    /// Public JWK JSON.
    pub public_jwk: String,
    /// When it was created.
    pub created_at: i64,
    /// When it starts signing (it is published before that).
    pub activates_at: i64,
    /// When it stops signing, if scheduled.
    pub retires_at: Option<i64>,
    /// When it leaves the JWKS (every token it signed has expired), if scheduled.
    pub expires_at: Option<i64>,
    /// Emergency revocation time: tokens it signed stop verifying.
    pub revoked_at: Option<i64>,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("activates_at", &self.activates_at)
            .field("retires_at", &self.retires_at)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// A security event for the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When it happened.
    pub at: i64,
    /// What happened (`login`, `refresh_reuse`, `logout`, `user_created`...).
    pub event: String,
    /// `success` or `failure` (or another short outcome word).
    pub outcome: String,
    /// The user concerned, if known.
    pub user_id: Option<String>,
    /// The username concerned, if known (also for unknown users).
    pub username: Option<String>,
    /// The OAuth client.
    pub client_id: Option<String>,
    /// Client IP.
    pub ip: Option<String>,
    /// User agent.
    pub user_agent: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// Extra detail as a JSON object (reasons, the actor of an admin action...).
    pub detail: serde_json::Value,
}

/// An audit row as stored, with its place in the hash chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Row id.
    pub id: i64,
    /// The event.
    pub event: AuditEvent,
    /// Hash of the previous row (zeros for the first).
    pub prev_hash: Vec<u8>,
    /// SHA-256 over `prev_hash` and this row's canonical JSON.
    pub hash: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_normalized_and_checked() {
        assert_eq!(Username::parse("Alice.B@x").unwrap().as_str(), "alice.b@x");
        assert!(Username::parse("").is_err());
        assert!(Username::parse("a b").is_err());
        assert!(Username::parse("a/b").is_err());
        assert!(Username::parse(&"a".repeat(65)).is_err());
        assert!(Username::parse("ünicode").is_err());
        // A new user's name must not read as an id; an existing one still parses (logins).
        for id in [
            "0192f0c4-5a1b-7c3d-8e4f-a0b1c2d3e4f5",
            "0192F0C45A1B7C3D8E4FA0B1C2D3E4F5",
        ] {
            assert!(Username::parse(id).is_ok());
            let e = Username::parse_new(id).unwrap_err().to_string();
            assert!(e.contains("UUID"), "{e}");
        }
        assert!(Username::parse_new("alice").is_ok());
    }

    #[test]
    fn roles_are_checked_and_deduplicated() {
        let roles = Role::parse_all(["admin", "user", "admin"]).unwrap();
        assert_eq!(roles.len(), 2);
        assert!(Role::parse("Admin").is_err());
        assert!(Role::parse("").is_err());
    }

    #[test]
    fn session_liveness() {
        let s = Session {
            id: SessionId::new(),
            user_id: UserId::new(),
            client_id: "c".into(),
            scope: String::new(),
            amr: vec![],
            created_at: 0,
            last_used_at: 0,
            idle_expires_at: 100,
            absolute_expires_at: 200,
            revoked_at: None,
            revoke_reason: None,
            ip: None,
            user_agent: None,
        };
        assert!(s.is_live(99));
        assert!(!s.is_live(100));
    }
}

/// A user's TOTP state as stored (secrets sealed under the master key).
#[derive(Clone, PartialEq, Eq)]
pub struct TotpState {
    /// The active secret, if TOTP is on.
    pub secret: Option<Vec<u8>>,
    /// A secret awaiting confirmation with a first code.
    pub pending: Option<Vec<u8>>,
    /// The last accepted time step (codes at or before it are refused).
    pub last_step: i64,
}

impl fmt::Debug for TotpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TotpState")
            .field("active", &self.secret.is_some())
            .field("pending", &self.pending.is_some())
            .field("last_step", &self.last_step)
            .finish()
    }
}

/// A pending second-factor login: the password was right, a code is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaChallenge {
    /// The user who passed the password step.
    pub user_id: UserId,
    /// The client of the login.
    pub client_id: String,
    /// The scope granted at the password step.
    pub scope: String,
    /// Creation time.
    pub created_at: i64,
    /// Expiry (short).
    pub expires_at: i64,
    /// Wrong codes presented so far.
    pub attempts: i64,
}

/// Failed-attempt bookkeeping for one throttle key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// Consecutive failures in the current window.
    pub failures: i64,
    /// Attempts are refused until then.
    pub locked_until: i64,
    /// Time of the last failure.
    pub last_failure_at: i64,
}

/// The answer to reserving an attempt against a throttle key
/// ([`crate::store::SecurityStore::reserve_attempt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The attempt may be checked. It is already counted as a failure (`attempts` in the
    /// window, this one included) until a success clears the key; `lock` is the lock in
    /// seconds that counting it set (it reached the threshold), 0 if none.
    Admitted {
        /// Attempts counted in the window, this one included.
        attempts: i64,
        /// The lock this attempt's count set, in seconds (0: none).
        lock: i64,
    },
    /// The key is locked until `until`: the attempt must not be checked.
    Refused {
        /// When the lock ends.
        until: i64,
    },
}
