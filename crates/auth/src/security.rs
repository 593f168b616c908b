//! Account security: TOTP second factor (RFC 6238) with recovery codes, the per-username
//! lockout, password changes and self-service session management.
//!
//! Lockout (OWASP Authentication Cheat Sheet, "Account Lockout"): failures are counted per
//! *username*, whether or not it exists, so a lockout tells an attacker nothing; the count
//! is stored under a keyed hash of the name, not the name as typed
//! ([`Auth::username_throttle_key`]). After `lockout_threshold` failures within
//! `failure_window`, attempts are refused for `lockout_base`, doubling with each further
//! failure up to `lockout_max` (bounded: nobody is locked out for long). Each attempt is
//! reserved (counted as a failure, and the lock set when it reaches the threshold)
//! atomically *before* the password or code is checked, and a success clears the count: a
//! burst of concurrent guesses gets no more than `lockout_threshold` of them checked, and
//! the rest are refused unchecked. Attempts during a lock are neither checked nor counted.
//! The second factor has the same lock per user (`mfa:<user id>`). A signed-in user
//! confirming a change with their password (password change, TOTP enrolment and removal) is
//! bounded per session (`reauth:<session id>`), not by the username's lock, so that
//! attackers locking the name cannot stop the owner securing the account. An admin can
//! unlock, and an account with a second factor can always log in with password + code,
//! which an attacker guessing passwords cannot produce.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use totp_rs::{Algorithm as TotpAlgorithm, Builder as TotpBuilder, Totp};
use zeroize::Zeroizing;

use crate::error::{AuthError, Result};
use crate::model::{
    Attempt, MfaChallenge, RequestMeta, Session, SessionId, User, UserId, Username,
};
use crate::service::{
    AccessContext, Actor, Auth, ClientPolicy, SecondFactor, TokenResponse, USERNAME_THROTTLE_PREFIX,
};
use crate::store::Store;

/// Limits on failed attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityPolicy {
    /// Failures (within the window) before the first lock.
    pub lockout_threshold: i64,
    /// Length of the first lock in seconds; each further failure doubles it.
    pub lockout_base: i64,
    /// Longest lock in seconds.
    pub lockout_max: i64,
    /// Failures older than this many seconds are forgotten.
    pub failure_window: i64,
    /// Lifetime of an MFA login challenge in seconds.
    pub mfa_token_ttl: i64,
    /// Wrong codes one challenge tolerates before it is burnt.
    pub mfa_challenge_attempts: i64,
}

impl Default for SecurityPolicy {
    fn default() -> Self {
        Self {
            lockout_threshold: 5,
            lockout_base: 60,
            lockout_max: 3600,
            failure_window: 3600,
            mfa_token_ttl: 300,
            mfa_challenge_attempts: 5,
        }
    }
}

impl SecurityPolicy {
    /// The lock, in seconds, after `failures` consecutive failures (0 when below the
    /// threshold).
    #[must_use]
    pub fn lock_for(&self, failures: i64) -> i64 {
        if failures < self.lockout_threshold {
            return 0;
        }
        let doublings = u32::try_from((failures - self.lockout_threshold).min(30)).unwrap_or(30);
        self.lockout_base
            .saturating_mul(1i64 << doublings)
            .min(self.lockout_max)
    }
}

/// What `POST /users/me/mfa/totp` returns: the secret for manual entry and the
/// `otpauth://` URI for authenticator apps (render it as a QR code).
#[derive(Debug, Clone, Serialize)]
pub struct TotpEnrollment {
    /// The secret, base32 without padding.
    pub secret: String,
    /// `otpauth://totp/...` (Key Uri Format).
    pub otpauth_uri: String,
}

/// Per throttle key, how many of this instance's attempts may be reserved and checked at
/// once: `lockout_threshold - 1`, so that a burst of logins with the right password (a
/// service account, a load test) queues here instead of counting up to the threshold with
/// its reservations and locking the name before any of them is checked. Not a security
/// bound (other instances have their own): that is the store's reservation.
#[derive(Debug, Default)]
pub(crate) struct AttemptGates {
    gates: Mutex<HashMap<String, Weak<Semaphore>>>,
}

impl AttemptGates {
    /// Waits for a turn for `key`; `None` (no wait) if the map's lock is poisoned.
    pub(crate) async fn enter(
        &self,
        key: &str,
        policy: &SecurityPolicy,
    ) -> Option<OwnedSemaphorePermit> {
        let gate = {
            let mut gates = self.gates.lock().ok()?;
            if let Some(gate) = gates.get(key).and_then(Weak::upgrade) {
                gate
            } else {
                // Keys are attacker-chosen names: forget those nobody is waiting on.
                if gates.len() >= 1024 {
                    gates.retain(|_, g| g.strong_count() > 0);
                }
                let permits = usize::try_from(policy.lockout_threshold.saturating_sub(1))
                    .unwrap_or(0)
                    .max(1);
                let gate = Arc::new(Semaphore::new(permits));
                gates.insert(key.to_owned(), Arc::downgrade(&gate));
                gate
            }
        };
        gate.acquire_owned().await.ok()
    }
}

/// The answer of [`Auth::reserve_attempt`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reserved {
    /// The attempt may be checked.
    Admitted(Admission),
    /// The key is locked: the attempt must not be checked.
    Refused {
        /// Seconds until the lock ends (at least 1).
        retry_after: i64,
    },
}

impl Reserved {
    fn from_attempt(attempt: Attempt, now: i64) -> Self {
        match attempt {
            Attempt::Admitted { attempts, lock } => Self::Admitted(Admission { attempts, lock }),
            Attempt::Refused { until } => Self::Refused {
                retry_after: until.saturating_sub(now).max(1),
            },
        }
    }
}

/// An attempt admitted by [`Auth::reserve_attempt`], counted as a failure until a success
/// clears its key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admission {
    /// Attempts counted in the window, this one included.
    attempts: i64,
    /// The lock (seconds) that counting this attempt set; 0 if none.
    lock: i64,
}

/// The answer to confirming a TOTP enrolment that a newer one has replaced (see
/// [`Auth::confirm_totp`]).
pub const STALE_TOTP_ENROLMENT: &str = "this TOTP setup was replaced by a newer one (started in another tab or window); reload the page and scan the new code";

/// Number of recovery codes issued at enrolment.
pub const RECOVERY_CODES: usize = 10;

/// The grant type completing a login with a second factor.
pub const MFA_GRANT_TYPE: &str = "urn:tessera:params:oauth:grant-type:mfa-otp";

const ISSUER: &str = "Tessera";

fn totp(secret: &[u8], account: &str) -> Result<Totp> {
    TotpBuilder::new()
        .with_algorithm(TotpAlgorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(secret.to_vec())
        .with_account_name(account.replace(':', "_"))
        .with_issuer(Some(ISSUER))
        .build()
        .map_err(|e| AuthError::Internal(format!("TOTP: {e}")))
}

/// Base32 (RFC 4648, no padding) of `bytes`.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(
                ALPHABET
                    .get(((buf >> bits) & 31) as usize)
                    .copied()
                    .unwrap_or(b'A'),
            ));
        }
    }
    if bits > 0 {
        out.push(char::from(
            ALPHABET
                .get(((buf << (5 - bits)) & 31) as usize)
                .copied()
                .unwrap_or(b'A'),
        ));
    }
    out
}

/// A recovery code as the user types it: case, spaces and dashes do not matter.
fn normalize_recovery(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

impl<S: Store> Auth<S> {
    fn recovery_hash(&self, code: &str) -> [u8; 32] {
        tessera_jose::crypto::hmac_sha256(
            self.recovery_pepper.as_slice(),
            normalize_recovery(code).as_bytes(),
        )
    }

    fn seal_totp(&self, user: UserId, secret: &[u8]) -> Result<Vec<u8>> {
        self.totp_sealing
            .seal(user.to_string().as_bytes(), secret)
            .map_err(AuthError::internal)
    }

    fn open_totp(&self, user: UserId, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.totp_sealing
            .open(user.to_string().as_bytes(), sealed)
            .map_err(AuthError::internal)
    }

    /// Reserves an attempt against a throttle key before it is checked (see
    /// [`crate::store::SecurityStore::reserve_attempt`]): the attempt is counted as a
    /// failure at once, so at most `lockout_threshold` attempts are ever checked before the
    /// lock holds, however many arrive at once. `Err(retry_after)` while the key is locked:
    /// the attempt must not be checked. A success must clear the key.
    ///
    /// # Errors
    /// Storage failures.
    pub(crate) async fn reserve_attempt(&self, key: &str) -> Result<Reserved> {
        let now = self.now();
        let attempt = self
            .store()
            .reserve_attempt(key, now, &self.config().security)
            .await?;
        Ok(Reserved::from_attempt(attempt, now))
    }

    /// [`Self::reserve_attempt`] for a password login, and the user named `username` read
    /// with it ([`crate::store::SecurityStore::reserve_login`]).
    ///
    /// # Errors
    /// Storage failures.
    pub(crate) async fn reserve_login(
        &self,
        key: &str,
        username: Option<&Username>,
    ) -> Result<(Reserved, Option<User>)> {
        let now = self.now();
        let (attempt, user) = self
            .store()
            .reserve_login(key, now, &self.config().security, username)
            .await?;
        Ok((Reserved::from_attempt(attempt, now), user))
    }

    /// An admitted attempt could not be checked (the hashing queue full, the database
    /// failing): it is given back, so that an overloaded server does not lock its users
    /// out. Best effort: if even that fails, the attempt stays counted (the strict side).
    pub(crate) async fn attempt_unchecked(&self, key: &str, admission: Admission) {
        if let Err(e) = self.store().release_attempt(key, admission.lock > 0).await {
            tracing::warn!(target: "tessera::auth", error = %e, "an attempt that could not be checked stays counted");
        }
    }

    /// An admitted attempt turned out wrong: it stays counted (it was counted when it was
    /// reserved). If counting it locked the key, the lock is logged and audited now.
    pub(crate) async fn attempt_failed(
        &self,
        key: &str,
        admission: Admission,
        meta: &RequestMeta,
        user: Option<&User>,
        username: Option<&str>,
        client_id: Option<&str>,
    ) {
        let Admission { attempts, lock } = admission;
        if lock > 0 {
            tracing::warn!(target: "tessera::auth", failures = attempts, lock_seconds = lock, "too many failed attempts; locked");
            self.audit(meta, "lockout", "locked", user, username.map(str::to_owned), client_id, serde_json::json!({"failures": attempts, "seconds": lock, "key": throttle_kind(key)})).await;
        }
    }

    /// Creates a single-use, short-lived challenge for the second factor.
    pub(crate) async fn start_mfa_challenge(
        &self,
        user: &User,
        client_id: &str,
        scope: &str,
    ) -> Result<String> {
        let token = crate::tokens::new_refresh_token()?;
        let now = self.now();
        let challenge = MfaChallenge {
            user_id: user.id,
            client_id: client_id.to_owned(),
            scope: scope.to_owned(),
            created_at: now,
            expires_at: now + self.config().security.mfa_token_ttl,
            attempts: 0,
        };
        let hash = crate::tokens::refresh_token_hash(&token);
        if let Err(e) = self.store().insert_mfa_challenge(&hash, &challenge).await {
            // A user deleted meanwhile: refused by the foreign key; the login fails as one
            // for an unknown user does (see `start_session`).
            if matches!(self.store().find_user_by_id(user.id).await, Ok(None)) {
                return Err(AuthError::InvalidCredentials);
            }
            return Err(e.into());
        }
        // As in `start_session`: `user` was read before the password was checked. A password
        // change or a disable that committed meanwhile ended the user's challenges before
        // this one existed; read the user again now that it is stored (a change not visible
        // yet commits after it, and ends it like the others).
        let current = self.store().find_user_by_id(user.id).await?;
        if current
            .as_ref()
            .is_none_or(|u| u.disabled || u.password_hash != user.password_hash)
        {
            self.store()
                .consume_mfa_challenge(&hash, now, i64::MAX)
                .await?;
            return Err(if current.is_some_and(|u| u.disabled) {
                AuthError::AccountDisabled
            } else {
                AuthError::InvalidCredentials
            });
        }
        Ok(token)
    }

    /// Completes a login with a TOTP code or a recovery code
    /// (`grant_type=urn:tessera:params:oauth:grant-type:mfa-otp`). Tokens carry
    /// `amr: ["pwd", "otp"]` (or `["pwd", "mfa"]` with a recovery code).
    ///
    /// # Errors
    /// [`AuthError::InvalidGrant`] for an unknown, expired, used or foreign challenge or a
    /// wrong code; [`AuthError::TooManyAttempts`]; [`AuthError::InvalidRequest`] without a code.
    pub async fn mfa_grant(
        &self,
        mfa_token: &str,
        otp: Option<&str>,
        recovery_code: Option<&str>,
        client: &ClientPolicy,
        meta: &RequestMeta,
    ) -> Result<TokenResponse> {
        let factor = match (otp, recovery_code) {
            (Some(code), None) => SecondFactor::Otp(Zeroizing::new(code.to_owned())),
            (None, Some(code)) => SecondFactor::RecoveryCode(Zeroizing::new(code.to_owned())),
            _ => {
                return Err(AuthError::InvalidRequest(
                    "send exactly one of `otp` and `recovery_code`".into(),
                ));
            }
        };
        let invalid = AuthError::InvalidGrant("mfa_token is invalid, expired or already used");
        if !crate::tokens::looks_like_refresh_token(mfa_token) {
            return Err(invalid);
        }
        let hash = crate::tokens::refresh_token_hash(mfa_token);
        let now = self.now();
        let Some(challenge) = self.store().find_mfa_challenge(&hash, now).await? else {
            return Err(invalid);
        };
        if challenge.client_id != client.id {
            return Err(invalid);
        }
        let user = match self.store().find_user_by_id(challenge.user_id).await? {
            Some(u) if !u.disabled => u,
            Some(_) => return Err(AuthError::AccountDisabled),
            None => return Err(invalid),
        };
        // The challenge stands for the password checked when it was issued: a password
        // changed since (the owner's answer to a leaked password) ends it, as it ends
        // every session, so whoever knew the old password cannot finish the login with a
        // code. That is done exactly by the change itself (`change_password` ends the
        // user's challenges in its transaction) and by `start_mfa_challenge`'s re-read for
        // one issued meanwhile; this one-second comparison only adds to them (it cannot
        // refuse a challenge issued after the change). Neither code nor challenge is used up.
        if user.password_changed_at > challenge.created_at {
            return Err(invalid);
        }
        let mfa_key = format!("mfa:{}", user.id);
        let admission = match self.reserve_attempt(&mfa_key).await? {
            Reserved::Admitted(a) => a,
            Reserved::Refused { retry_after } => {
                return Err(AuthError::TooManyAttempts { retry_after });
            }
        };
        if !self.check_second_factor(&user, &factor).await? {
            let attempts = self.store().fail_mfa_challenge(&hash).await?;
            if attempts >= self.config().security.mfa_challenge_attempts {
                // Burn the challenge: the password must be entered again.
                self.store()
                    .consume_mfa_challenge(&hash, now, i64::MAX)
                    .await?;
            }
            self.mfa_failure(&user, &factor, &client.id, admission, meta)
                .await;
            return Err(AuthError::InvalidGrant(
                "the code is wrong, expired or already used",
            ));
        }
        // Only while fewer than `mfa_challenge_attempts` wrong codes are counted: a right
        // code sent at once with wrong ones must not outrun the burn of the challenge.
        if !self
            .store()
            .consume_mfa_challenge(&hash, now, self.config().security.mfa_challenge_attempts)
            .await?
        {
            return Err(invalid);
        }
        let response = self
            .finish_mfa_login(
                &user,
                &factor,
                &challenge.client_id,
                &challenge.scope,
                meta,
                false,
            )
            .await?;
        Ok(response)
    }

    /// A login with the second factor sent along with a correct password (one step, no
    /// challenge). `None` when the code is wrong (counted against the user's
    /// second-factor throttle) or, during a lockout, when that throttle is locked too.
    ///
    /// # Errors
    /// [`AuthError::TooManyAttempts`] outside a lockout; storage failures.
    pub(crate) async fn second_factor_login(
        &self,
        user: &User,
        factor: &SecondFactor,
        client_id: &str,
        scope: &str,
        meta: &RequestMeta,
        during_lockout: bool,
    ) -> Result<Option<TokenResponse>> {
        let admission = match self.reserve_attempt(&format!("mfa:{}", user.id)).await? {
            Reserved::Admitted(a) => a,
            Reserved::Refused { .. } if during_lockout => return Ok(None),
            Reserved::Refused { retry_after } => {
                return Err(AuthError::TooManyAttempts { retry_after });
            }
        };
        if !self.check_second_factor(user, factor).await? {
            self.mfa_failure(user, factor, client_id, admission, meta)
                .await;
            return Ok(None);
        }
        self.finish_mfa_login(user, factor, client_id, scope, meta, during_lockout)
            .await
            .map(Some)
    }

    /// Checks (and for a TOTP code records, for a recovery code consumes) a second factor.
    async fn check_second_factor(&self, user: &User, factor: &SecondFactor) -> Result<bool> {
        match factor {
            SecondFactor::Otp(code) => self.accept_totp(user, code, false).await,
            SecondFactor::RecoveryCode(code) => Ok(self
                .store()
                .use_recovery_code(user.id, &self.recovery_hash(code), self.now())
                .await?),
        }
    }

    /// Audits a wrong second factor (counted against the user's codes when it was
    /// admitted).
    async fn mfa_failure(
        &self,
        user: &User,
        factor: &SecondFactor,
        client_id: &str,
        admission: Admission,
        meta: &RequestMeta,
    ) {
        self.attempt_failed(
            &format!("mfa:{}", user.id),
            admission,
            meta,
            Some(user),
            None,
            Some(client_id),
        )
        .await;
        self.audit(
            meta,
            "mfa",
            "failure",
            Some(user),
            None,
            Some(client_id),
            serde_json::json!({"method": factor.method()}),
        )
        .await;
    }

    /// Both factors passed: starts the session, clearing the throttles in its transaction.
    /// Tokens carry `amr: ["pwd", "otp"]`, or `["pwd", "mfa"]` with a recovery code
    /// (RFC 8176 §2).
    async fn finish_mfa_login(
        &self,
        user: &User,
        factor: &SecondFactor,
        client_id: &str,
        scope: &str,
        meta: &RequestMeta,
        during_lockout: bool,
    ) -> Result<TokenResponse> {
        let mfa_key = format!("mfa:{}", user.id);
        let user_key = self.username_throttle_key(user.username.as_str());
        let amr = match factor {
            SecondFactor::Otp(_) => vec!["pwd".into(), "otp".into()],
            SecondFactor::RecoveryCode(_) => vec!["pwd".into(), "mfa".into()],
        };
        let mut detail = serde_json::json!({"mfa": factor.method()});
        if during_lockout && let Some(o) = detail.as_object_mut() {
            o.insert("during_lockout".into(), serde_json::Value::Bool(true));
        }
        self.start_session(
            user,
            client_id,
            scope,
            amr,
            meta,
            detail,
            &[&mfa_key, &user_key],
        )
        .await
    }

    /// Checks a TOTP code (±1 step of skew) against the active (or, with `pending`, the
    /// enrolment) secret and records its step, so each code works once (RFC 6238 §5.2).
    async fn accept_totp(&self, user: &User, code: &str, pending: bool) -> Result<bool> {
        let Some(state) = self.store().find_totp(user.id).await? else {
            return Ok(false);
        };
        let sealed = if pending { state.pending } else { state.secret };
        let Some(sealed) = sealed else {
            return Ok(false);
        };
        let secret = self.open_totp(user.id, &sealed)?;
        let now = u64::try_from(self.now()).unwrap_or(0);
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        let Some(step) = totp(&secret, user.username.as_str())?.check(&code, now) else {
            return Ok(false);
        };
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        if pending {
            return Ok(step > state.last_step);
        }
        self.store()
            .advance_totp_step(user.id, step)
            .await
            .map_err(Into::into)
    }

    /// Starts TOTP enrolment: a fresh 160-bit secret, kept (sealed) as pending until a first
    /// code confirms it. Needs the password: a bearer token alone (stolen, or used by a
    /// script in a cookie-mode page) must not turn on a second factor whose secret and
    /// recovery codes only its holder has, locking the owner out of their account.
    ///
    /// # Errors
    /// [`AuthError::AlreadyExists`] if TOTP is already on; [`AuthError::InvalidCredentials`]
    /// for a wrong password, [`AuthError::Locked`] while the session's password checks are
    /// locked (see [`Auth::change_password`]); [`AuthError::NotFound`],
    /// [`AuthError::NoUser`] as [`Auth::user_of`].
    pub async fn begin_totp(
        &self,
        ctx: &AccessContext,
        password: Zeroizing<String>,
        meta: &RequestMeta,
    ) -> Result<TotpEnrollment> {
        let user = &self.user_of(ctx).await?;
        if user.totp_enabled {
            return Err(AuthError::AlreadyExists(
                "TOTP enrolment (disable it first)",
            ));
        }
        self.check_current_password(
            ctx,
            user,
            password,
            ("mfa_enrolment_started", "wrong_password"),
            meta,
        )
        .await?;
        let secret = Zeroizing::new(
            tessera_jose::crypto::random_array::<20>().map_err(AuthError::internal)?,
        );
        let sealed = self.seal_totp(user.id, secret.as_slice())?;
        if !self.store().set_totp_pending(user.id, &sealed).await? {
            return Err(AuthError::NotFound("user"));
        }
        let t = totp(secret.as_slice(), user.username.as_str())?;
        self.audit(
            meta,
            "mfa_enrolment_started",
            "success",
            Some(user),
            None,
            None,
            serde_json::json!({}),
        )
        .await;
        Ok(TotpEnrollment {
            secret: base32(secret.as_slice()),
            otpauth_uri: t.to_url().map_err(|e| AuthError::Internal(e.to_string()))?,
        })
    }

    /// Confirms enrolment with a current code: TOTP is on from now, and the returned
    /// recovery codes (shown once, stored as keyed hashes) each work once.
    ///
    /// `shown_secret` is the secret (base32) the caller was shown when it began, if it sent
    /// it back: a newer enrolment (begun in another tab or window) replaces the pending
    /// secret, and a code for the older one would only be "wrong"; instead the answer says
    /// the setup is out of date ([`STALE_TOTP_ENROLMENT`]).
    ///
    /// # Errors
    /// [`AuthError::InvalidRequest`] without a pending enrolment, for a replaced one, or with
    /// a wrong code.
    pub async fn confirm_totp(
        &self,
        user: &User,
        code: &str,
        shown_secret: Option<&str>,
        meta: &RequestMeta,
    ) -> Result<Vec<String>> {
        let state = self
            .store()
            .find_totp(user.id)
            .await?
            .ok_or(AuthError::NotFound("user"))?;
        let Some(pending) = state.pending.clone() else {
            return Err(AuthError::InvalidRequest(
                "no TOTP enrolment in progress; start one first".into(),
            ));
        };
        let secret = self.open_totp(user.id, &pending)?;
        if let Some(shown) = shown_secret {
            let shown: Zeroizing<String> = Zeroizing::new(
                shown
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .map(|c| c.to_ascii_uppercase())
                    .collect(),
            );
            // The pending secret is compared in constant time, as every secret is here:
            // an early exit at the first differing character would let a caller who sends
            // guesses measure how much of it they have right. Both sides are hashed first,
            // so the time does not depend on the length sent either (`jose::crypto`).
            let expected = Zeroizing::new(base32(&secret));
            if !tessera_jose::crypto::constant_time_eq(
                &tessera_jose::crypto::sha256(shown.as_bytes()),
                &tessera_jose::crypto::sha256(expected.as_bytes()),
            ) {
                return Err(AuthError::InvalidRequest(STALE_TOTP_ENROLMENT.into()));
            }
        }
        let now = u64::try_from(self.now()).unwrap_or(0);
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        let Some(step) = totp(&secret, user.username.as_str())?.check(&code, now) else {
            self.audit(
                meta,
                "mfa_enrolment",
                "failure",
                Some(user),
                None,
                None,
                serde_json::json!({"reason": "wrong_code"}),
            )
            .await;
            return Err(AuthError::InvalidRequest(
                "the code is wrong or expired; enter the current code from your authenticator app"
                    .into(),
            ));
        };
        let mut codes = Vec::with_capacity(RECOVERY_CODES);
        let mut hashes = Vec::with_capacity(RECOVERY_CODES);
        for _ in 0..RECOVERY_CODES {
            // 50 random bits each, as XXXXX-XXXXX.
            let raw =
                base32(&tessera_jose::crypto::random_array::<7>().map_err(AuthError::internal)?);
            let code = format!(
                "{}-{}",
                raw.get(..5).unwrap_or_default(),
                raw.get(5..10).unwrap_or_default()
            );
            hashes.push(self.recovery_hash(&code));
            codes.push(code);
        }
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        if !self
            .store()
            .activate_totp(user.id, &pending, step, &hashes)
            .await?
        {
            return Err(AuthError::InvalidRequest(
                "the enrolment changed meanwhile; start again".into(),
            ));
        }
        self.audit(
            meta,
            "mfa_enabled",
            "success",
            Some(user),
            None,
            None,
            serde_json::json!({"method": "totp"}),
        )
        .await;
        Ok(codes)
    }

    /// Checks the password a signed-in user gives to confirm a sensitive change (`event`
    /// names it in the audit log, `reason` a wrong password).
    ///
    /// # Security
    /// Bounded by a throttle of its own, keyed by the caller's session
    /// ([`reauth_throttle_key`]), not by the username's lockout, which anonymous logins
    /// drive: guesses at the login form must not stop the signed-in owner from changing the
    /// password or managing the second factor, which is how they secure the account. The
    /// bound is still there: a stolen access token, or a script in a cookie-mode page, gets
    /// `lockout_threshold` guesses per session before the same back-off locks that session's
    /// checks (OWASP Authentication Cheat Sheet, "Account Lockout"); new sessions need the
    /// password. Each attempt is reserved before the hash is checked, as at login.
    ///
    /// # Errors
    /// [`AuthError::Locked`] while the session's checks are locked;
    /// [`AuthError::InvalidCredentials`] for a wrong password.
    async fn check_current_password(
        &self,
        ctx: &AccessContext,
        user: &User,
        password: Zeroizing<String>,
        (event, reason): (&'static str, &'static str),
        meta: &RequestMeta,
    ) -> Result<()> {
        let key = reauth_throttle_key(ctx, user);
        let admission = match self.reserve_attempt(&key).await? {
            Reserved::Admitted(a) => a,
            Reserved::Refused { retry_after } => return Err(AuthError::Locked { retry_after }),
        };
        let matches = match self
            .hasher()
            .verify(password, Some(&user.password_hash))
            .await
        {
            Ok(v) => v.matches,
            Err(e) => {
                // Not checked (the hashing queue full): no guess was answered, as at login.
                self.attempt_unchecked(&key, admission).await;
                return Err(e);
            }
        };
        if matches {
            self.store().clear_throttle(&key).await?;
            return Ok(());
        }
        self.attempt_failed(&key, admission, meta, Some(user), None, None)
            .await;
        self.audit(
            meta,
            event,
            "failure",
            Some(user),
            None,
            None,
            serde_json::json!({"reason": reason}),
        )
        .await;
        Err(AuthError::InvalidCredentials)
    }

    /// Turns TOTP off; needs the password and a current code.
    ///
    /// # Errors
    /// [`AuthError::InvalidCredentials`] for a wrong password or code;
    /// [`AuthError::Locked`] while the session's password checks are locked,
    /// [`AuthError::TooManyAttempts`] while the user's codes are; [`AuthError::NotFound`],
    /// [`AuthError::NoUser`] as [`Auth::user_of`].
    pub async fn disable_totp(
        &self,
        ctx: &AccessContext,
        password: Zeroizing<String>,
        code: &str,
        meta: &RequestMeta,
    ) -> Result<()> {
        let user = &self.user_of(ctx).await?;
        if !user.totp_enabled {
            return Err(AuthError::InvalidRequest("TOTP is not enabled".into()));
        }
        // The code counts against the user's code lock, as at login: otherwise a stolen
        // password would try codes here without limit.
        self.check_current_password(ctx, user, password, ("mfa_disable", "wrong_password"), meta)
            .await?;
        let failure = |reason: &'static str| {
            self.audit(
                meta,
                "mfa_disable",
                "failure",
                Some(user),
                None,
                None,
                serde_json::json!({"reason": reason}),
            )
        };
        let mfa_key = format!("mfa:{}", user.id);
        let admission = match self.reserve_attempt(&mfa_key).await? {
            Reserved::Admitted(a) => a,
            Reserved::Refused { retry_after } => {
                return Err(AuthError::TooManyAttempts { retry_after });
            }
        };
        if !self.accept_totp(user, code, false).await? {
            self.attempt_failed(&mfa_key, admission, meta, Some(user), None, None)
                .await;
            failure("wrong_code").await;
            return Err(AuthError::InvalidCredentials);
        }
        self.store().clear_throttle(&mfa_key).await?;
        self.store().disable_totp(user.id).await?;
        self.audit(
            meta,
            "mfa_disabled",
            "success",
            Some(user),
            None,
            None,
            serde_json::json!({}),
        )
        .await;
        Ok(())
    }

    /// Admin reset of a user's second factor (audited).
    ///
    /// # Errors
    /// [`AuthError::NotFound`].
    pub async fn reset_mfa(&self, user: &User, actor: &Actor, meta: &RequestMeta) -> Result<()> {
        if !self.store().disable_totp(user.id).await? {
            return Err(AuthError::NotFound("user"));
        }
        self.audit(
            meta,
            "mfa_reset",
            "success",
            Some(user),
            None,
            None,
            actor.detail_with([]),
        )
        .await;
        Ok(())
    }

    /// Unused recovery codes left for a user.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn recovery_codes_left(&self, user: &User) -> Result<u64> {
        Ok(self.store().count_recovery_codes(user.id).await?)
    }

    /// Lifts a lockout (admin): every throttle key of the user, that is the username's
    /// password attempts, the user's codes, and the password re-checks of their signed-in
    /// callers (`reauth_throttle_key`): the per-user key of tokens without a session, and
    /// the key of every session that can still present an access token. Returns whether
    /// there was anything to lift; only then is it audited (a user with no lockout and no
    /// failed attempts is already in the state asked for).
    ///
    /// The sessions are those live `access_token_ttl` + `leeway` ago, not only now: an
    /// access token does not outlive its session's absolute end, but it may outlive an idle
    /// end (when `refresh_token_ttl` is shorter than `access_token_ttl`), and its session's
    /// lock must not outlast the unlock. Revoked sessions are left out: their tokens are
    /// refused before any password check. Their rows, and those of sessions long ended,
    /// name no one who can use them, and go with the prune once their failures no longer
    /// count.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn unlock(&self, user: &User, actor: &Actor, meta: &RequestMeta) -> Result<bool> {
        let a = self
            .store()
            .clear_throttle(&self.username_throttle_key(user.username.as_str()))
            .await?;
        let b = self
            .store()
            .clear_throttle(&format!("mfa:{}", user.id))
            .await?;
        let mut c = self
            .store()
            .clear_throttle(&reauth_user_key(user.id))
            .await?;
        let config = self.config();
        let token_life = config
            .access_token_ttl
            .saturating_add(i64::try_from(config.leeway).unwrap_or(i64::MAX));
        let since = self.now().saturating_sub(token_life);
        for session in self
            .store()
            .list_live_sessions(Some(user.id), since)
            .await?
        {
            c |= self
                .store()
                .clear_throttle(&reauth_session_key(session.id))
                .await?;
        }
        if !(a || b || c) {
            return Ok(false);
        }
        self.audit(
            meta,
            "unlocked",
            "success",
            Some(user),
            None,
            None,
            actor.detail_with([]),
        )
        .await;
        Ok(true)
    }

    /// When a username is locked until, if it is.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn locked_until(&self, username: &str) -> Result<Option<i64>> {
        let now = self.now();
        Ok(self
            .store()
            .find_throttle(&self.username_throttle_key(username))
            .await?
            .map(|t| t.locked_until)
            .filter(|t| *t > now))
    }

    /// The caller changes their own password: the current one is required, and every other
    /// session ends (the caller's stays). Once the new password is stored it also lifts the
    /// username's lockout: those failures were guesses at the password just replaced (a
    /// refused change replaces nothing and lifts nothing).
    ///
    /// # Security
    /// The current password is checked under the session's own bound, not the username's
    /// lockout, so the owner can change it while attackers keep the name locked; see
    /// `check_current_password` and docs/security.md.
    ///
    /// # Errors
    /// [`AuthError::InvalidCredentials`] for a wrong current password;
    /// [`AuthError::Locked`] after too many wrong ones in this session;
    /// [`AuthError::WeakPassword`].
    pub async fn change_password(
        &self,
        ctx: &AccessContext,
        current: Zeroizing<String>,
        new: Zeroizing<String>,
        meta: &RequestMeta,
    ) -> Result<()> {
        let user = self.user_of(ctx).await?;
        self.check_current_password(
            ctx,
            &user,
            current,
            ("password_change", "wrong_current_password"),
            meta,
        )
        .await?;
        let keep = ctx.session_id().and_then(|s| SessionId::parse(s).ok());
        let actor = Actor::User {
            id: ctx.user_id().to_owned(),
            username: ctx.username().to_owned(),
        };
        self.set_password(&user, new, keep, &actor, meta).await?;
        // Only once the password is replaced: a change refused (a weak new password, a
        // storage failure) leaves the old one in force, and the lock that bounds guesses
        // at it must stay.
        self.store()
            .clear_throttle(&self.username_throttle_key(user.username.as_str()))
            .await?;
        Ok(())
    }

    /// The user behind an access token.
    ///
    /// # Errors
    /// [`AuthError::NotFound`] (deleted since), [`AuthError::NoUser`] for a client token.
    pub async fn user_of(&self, ctx: &AccessContext) -> Result<User> {
        if ctx.is_client {
            return Err(AuthError::NoUser);
        }
        let id = UserId::parse(ctx.user_id())?;
        match self.store().find_user_by_id(id).await? {
            Some(u) if !u.disabled => Ok(u),
            _ => Err(AuthError::NotFound("user")),
        }
    }

    /// The caller's live sessions.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn own_sessions(&self, ctx: &AccessContext) -> Result<Vec<Session>> {
        let user = self.user_of(ctx).await?;
        self.list_sessions(Some(&user)).await
    }

    /// Ends one of the caller's own sessions.
    ///
    /// # Errors
    /// [`AuthError::NotFound`] for an unknown session or someone else's.
    pub async fn revoke_own_session(
        &self,
        ctx: &AccessContext,
        id: SessionId,
        meta: &RequestMeta,
    ) -> Result<()> {
        let user = self.user_of(ctx).await?;
        match self.store().find_session(id).await? {
            Some(s) if s.user_id == user.id && s.revoked_at.is_none() => {}
            _ => return Err(AuthError::NotFound("session")),
        }
        let actor = Actor::User {
            id: ctx.user_id().to_owned(),
            username: ctx.username().to_owned(),
        };
        self.revoke_session(id, "user", &actor, meta).await?;
        Ok(())
    }

    /// Imports a user with an existing password hash (Argon2 PHC, or bcrypt from passlib
    /// and similar systems, upgraded to Argon2id at the first login).
    ///
    /// # Errors
    /// [`AuthError::InvalidRequest`] for an unsupported hash or a bad name/role;
    /// [`AuthError::AlreadyExists`].
    pub async fn import_user(
        &self,
        username: &str,
        hash: &str,
        roles: &[String],
        actor: &Actor,
    ) -> Result<User> {
        if !crate::password::is_supported_hash(hash) {
            return Err(AuthError::InvalidRequest(format!(
                "unsupported password hash: expected {}",
                crate::password::supported_hashes()
            )));
        }
        let username = Username::parse_new(username)?;
        let roles = crate::model::Role::parse_all(roles)?;
        let now = self.now();
        let user = User {
            id: UserId::new(),
            username,
            password_hash: hash.to_owned(),
            roles,
            disabled: false,
            created_at: now,
            updated_at: now,
            password_changed_at: now,
            totp_enabled: false,
        };
        self.store()
            .insert_user(&user)
            .await
            .map_err(|e| match e.kind() {
                crate::store::StoreErrorKind::Conflict => AuthError::AlreadyExists("user"),
                _ => AuthError::Storage(e),
            })?;
        self.audit(
            &RequestMeta::default(),
            "user_imported",
            "success",
            Some(&user),
            None,
            None,
            actor.detail_with([]),
        )
        .await;
        Ok(user)
    }
}

/// What kind of lock a throttle key is, as the `lockout` audit event records it: `user`
/// (a username's password checks; so named since before those keys were hashed, and
/// kept for readers of the audit log), `mfa` or `reauth`.
fn throttle_kind(key: &str) -> &str {
    if key.starts_with(USERNAME_THROTTLE_PREFIX) {
        return "user";
    }
    key.split(':').next().unwrap_or_default()
}

/// The throttle key of the password checks a signed-in caller makes
/// (`check_current_password`), apart from the username's lockout: one per session, or, for
/// a token without a session (Tessera issues none; a holder of an HMAC signing secret can
/// sign one), one per user. Built from the parsed ids, in the form [`Auth::unlock`] clears.
fn reauth_throttle_key(ctx: &AccessContext, user: &User) -> String {
    match ctx.session_id().and_then(|s| SessionId::parse(s).ok()) {
        Some(sid) => reauth_session_key(sid),
        None => reauth_user_key(user.id),
    }
}

/// [`reauth_throttle_key`] of a session.
fn reauth_session_key(session: SessionId) -> String {
    format!("reauth:{session}")
}

/// [`reauth_throttle_key`] of a user's tokens without a session.
fn reauth_user_key(user: UserId) -> String {
    format!("reauth:user:{user}")
}

impl SecondFactor {
    /// How it is named in the audit log.
    fn method(&self) -> &'static str {
        match self {
            Self::Otp(_) => "otp",
            Self::RecoveryCode(_) => "recovery_code",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_backs_off_exponentially_and_is_bounded() {
        let p = SecurityPolicy::default();
        assert_eq!(p.lock_for(4), 0);
        assert_eq!(p.lock_for(5), 60);
        assert_eq!(p.lock_for(6), 120);
        assert_eq!(p.lock_for(10), 1920);
        assert_eq!(p.lock_for(11), 3600);
        assert_eq!(p.lock_for(1000), 3600);
    }

    #[test]
    fn base32_matches_rfc_4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }

    #[test]
    fn recovery_codes_ignore_case_and_dashes() {
        assert_eq!(normalize_recovery("ab12c-de34f"), "AB12CDE34F");
        assert_eq!(normalize_recovery(" AB12C DE34F "), "AB12CDE34F");
    }
}
