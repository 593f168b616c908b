//! Account security: TOTP second factor (RFC 6238) with recovery codes, the per-username
//! lockout, password changes and self-service session management.
//!
//! Lockout (OWASP Authentication Cheat Sheet, "Account Lockout"): failures are counted per
//! *username*, whether or not it exists, so a lockout tells an attacker nothing. After
//! `lockout_threshold` failures within `failure_window`, attempts are refused for
//! `lockout_base`, doubling with each further failure up to `lockout_max` (bounded: nobody is
//! locked out for long). Attempts during a lock are not counted; attempts admitted before it
//! and checked after (a burst of concurrent guesses) are counted and get the lock's answer
//! whatever the password. A password change checks the current password against the same
//! per-username lock. An admin can unlock, and an
//! account with a second factor can always log in with password + code, which an attacker
//! guessing passwords cannot produce.

use serde::Serialize;
use totp_rs::{Algorithm as TotpAlgorithm, Builder as TotpBuilder, Totp};
use zeroize::Zeroizing;

use crate::error::{AuthError, Result};
use crate::model::{MfaChallenge, RequestMeta, Session, SessionId, User, UserId};
use crate::service::{
    AccessContext, Actor, Auth, ClientPolicy, SecondFactor, TokenResponse, user_throttle_key,
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
    /// The failures of `t` that still count at `now`: none once the last one is older than
    /// `failure_window`, when the next failure restarts the count (as
    /// [`crate::store::SecurityStore::record_failure`] does), though the row remains.
    ///
    /// A lock is written just after the failure that earns it, in a second statement: a row
    /// read in between has the count of a lock it does not show yet. Its last failure is
    /// then not counted as seen, so a failure the caller counts after it gets the lock's
    /// answer from [`Auth::count_failure`], as it would a moment later. (Once written, a
    /// lock ends after the failure that earned it: `locked_until > last_failure_at`.)
    #[must_use]
    pub fn counted_failures(&self, t: &crate::model::Throttle, now: i64) -> i64 {
        if t.last_failure_at < now - self.failure_window {
            0
        } else if self.lock_for(t.failures) > 0 && t.locked_until <= t.last_failure_at {
            t.failures - 1
        } else {
            t.failures
        }
    }

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

    /// Counts a failure against a throttle key and locks it when the threshold is reached
    /// (audited as `lockout`).
    ///
    /// `seen` is the failure count the caller read for the key before this attempt was
    /// checked (0 without a row); the key was not locked then. Returns the lock in seconds
    /// when failures counted since that read had locked the key: the attempt raced them
    /// (it was admitted before the lock) and must get the lock's answer, not "wrong", so
    /// that a burst of concurrent guesses learns nothing more than the first
    /// `lockout_threshold` of them. (A failure after a lock has expired, with no other
    /// failure in between, is answered as a failure, as before the lock.)
    pub(crate) async fn count_failure(
        &self,
        key: &str,
        seen: i64,
        meta: &RequestMeta,
        user: Option<&User>,
        username: Option<&str>,
        client_id: Option<&str>,
    ) -> Option<i64> {
        let policy = &self.config().security;
        let now = self.now();
        match self
            .store()
            .record_failure(key, now, now - policy.failure_window)
            .await
        {
            Ok(failures) => {
                let lock = policy.lock_for(failures);
                if lock > 0 {
                    if let Err(e) = self.store().set_locked_until(key, now + lock).await {
                        tracing::warn!(target: "tessera::auth", error = %e, "could not store a lockout");
                    }
                    tracing::warn!(target: "tessera::auth", failures, lock_seconds = lock, "too many failed attempts; locked");
                    self.audit(meta, "lockout", "locked", user, username.map(str::to_owned), client_id, serde_json::json!({"failures": failures, "seconds": lock, "key": key.split(':').next().unwrap_or_default()})).await;
                }
                let before = failures.saturating_sub(1);
                (before > seen && policy.lock_for(before) > 0).then_some(lock)
            }
            Err(e) => {
                tracing::warn!(target: "tessera::auth", error = %e, "could not count a failed attempt");
                None
            }
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
        let mfa_key = format!("mfa:{}", challenge.user_id);
        let seen = self.mfa_lock(&mfa_key, now).await?;
        let user = match self.store().find_user_by_id(challenge.user_id).await? {
            Some(u) if !u.disabled => u,
            Some(_) => return Err(AuthError::AccountDisabled),
            None => return Err(invalid),
        };
        // The challenge stands for the password checked when it was issued: a password
        // changed since (the owner's answer to a leaked password) ends it, as it ends
        // every session, so whoever knew the old password cannot finish the login with a
        // code. Neither code nor challenge is used up.
        if user.password_changed_at > challenge.created_at {
            return Err(invalid);
        }
        if !self.check_second_factor(&user, &factor).await? {
            let attempts = self.store().fail_mfa_challenge(&hash).await?;
            if attempts >= self.config().security.mfa_challenge_attempts {
                // Burn the challenge: the password must be entered again.
                self.store()
                    .consume_mfa_challenge(&hash, now, i64::MAX)
                    .await?;
            }
            if let Some(retry_after) = self
                .mfa_failure(&user, &factor, &client.id, seen, meta)
                .await
            {
                return Err(AuthError::TooManyAttempts { retry_after });
            }
            return Err(AuthError::InvalidGrant(
                "the code is wrong, expired or already used",
            ));
        }
        // Read again once the code has been checked: wrong codes sent at once with this one,
        // on this challenge or on others, may have locked the user's codes meanwhile, and
        // then a right code gets the lock's answer like the rest of the burst.
        self.mfa_lock(&mfa_key, self.now()).await?;
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
        let mfa_key = format!("mfa:{}", user.id);
        let seen = match self.mfa_lock(&mfa_key, self.now()).await {
            Ok(seen) => seen,
            Err(AuthError::TooManyAttempts { .. }) if during_lockout => return Ok(None),
            Err(e) => return Err(e),
        };
        if !self.check_second_factor(user, factor).await? {
            if let Some(retry_after) = self.mfa_failure(user, factor, client_id, seen, meta).await
                && !during_lockout
            {
                return Err(AuthError::TooManyAttempts { retry_after });
            }
            return Ok(None);
        }
        // As in `mfa_grant`: a right code raced by wrong ones that locked the codes meanwhile
        // gets the lock's answer.
        match self.mfa_lock(&mfa_key, self.now()).await {
            Ok(_) => {}
            Err(AuthError::TooManyAttempts { .. }) if during_lockout => return Ok(None),
            Err(e) => return Err(e),
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

    /// The failures counted against a user's codes (`key`), or
    /// [`AuthError::TooManyAttempts`] while they are locked.
    async fn mfa_lock(&self, key: &str, now: i64) -> Result<i64> {
        match self.store().find_throttle(key).await? {
            Some(t) if t.locked_until > now => Err(AuthError::TooManyAttempts {
                retry_after: t.locked_until - now,
            }),
            t => Ok(t.map_or(0, |t| self.config().security.counted_failures(&t, now))),
        }
    }

    /// Counts and audits a wrong second factor; the lock, if failures counted since `seen`
    /// had set one (see [`Auth::count_failure`]).
    async fn mfa_failure(
        &self,
        user: &User,
        factor: &SecondFactor,
        client_id: &str,
        seen: i64,
        meta: &RequestMeta,
    ) -> Option<i64> {
        let lock = self
            .count_failure(
                &format!("mfa:{}", user.id),
                seen,
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
        lock
    }

    /// Both factors passed: clears the throttles and starts the session. Tokens carry
    /// `amr: ["pwd", "otp"]`, or `["pwd", "mfa"]` with a recovery code (RFC 8176 §2).
    async fn finish_mfa_login(
        &self,
        user: &User,
        factor: &SecondFactor,
        client_id: &str,
        scope: &str,
        meta: &RequestMeta,
        during_lockout: bool,
    ) -> Result<TokenResponse> {
        self.store()
            .clear_throttle(&format!("mfa:{}", user.id))
            .await?;
        self.store()
            .clear_throttle(&user_throttle_key(user.username.as_str()))
            .await?;
        let amr = match factor {
            SecondFactor::Otp(_) => vec!["pwd".into(), "otp".into()],
            SecondFactor::RecoveryCode(_) => vec!["pwd".into(), "mfa".into()],
        };
        let mut detail = serde_json::json!({"mfa": factor.method()});
        if during_lockout && let Some(o) = detail.as_object_mut() {
            o.insert("during_lockout".into(), serde_json::Value::Bool(true));
        }
        self.start_session(user, client_id, scope, amr, meta, detail)
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
    /// for a wrong password, [`AuthError::Locked`] while the username is locked.
    pub async fn begin_totp(
        &self,
        user: &User,
        password: Zeroizing<String>,
        meta: &RequestMeta,
    ) -> Result<TotpEnrollment> {
        if user.totp_enabled {
            return Err(AuthError::AlreadyExists(
                "TOTP enrolment (disable it first)",
            ));
        }
        self.check_current_password(
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
    /// # Errors
    /// [`AuthError::InvalidRequest`] without a pending enrolment or with a wrong code.
    pub async fn confirm_totp(
        &self,
        user: &User,
        code: &str,
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
    /// names it in the audit log, `reason` a wrong password). It is checked as a login
    /// checks it, so it counts against and obeys the username's lockout (OWASP
    /// Authentication Cheat Sheet, "Account Lockout"): otherwise a stolen access token, or a
    /// script in a cookie-mode page, would be a password oracle without limit. Returns
    /// whether the username has a failure count (which a password change then clears).
    ///
    /// # Errors
    /// [`AuthError::Locked`] while the username is locked, or when this failure locks it;
    /// [`AuthError::InvalidCredentials`] for a wrong password.
    async fn check_current_password(
        &self,
        user: &User,
        password: Zeroizing<String>,
        (event, reason): (&'static str, &'static str),
        meta: &RequestMeta,
    ) -> Result<bool> {
        let pw_ok = self
            .hasher()
            .verify(password, Some(&user.password_hash))
            .await?
            .matches;
        // Read once the password has been checked, as at login (see `password_grant`).
        let key = user_throttle_key(user.username.as_str());
        let now = self.now();
        let throttle = self.store().find_throttle(&key).await?;
        if let Some(t) = &throttle
            && t.locked_until > now
        {
            return Err(AuthError::Locked {
                retry_after: t.locked_until - now,
            });
        }
        if pw_ok {
            return Ok(throttle.is_some());
        }
        let seen = throttle
            .as_ref()
            .map_or(0, |t| self.config().security.counted_failures(t, now));
        let lock = self
            .count_failure(&key, seen, meta, Some(user), None, None)
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
        Err(lock.map_or(AuthError::InvalidCredentials, |retry_after| {
            AuthError::Locked { retry_after }
        }))
    }

    /// Turns TOTP off; needs the password and a current code.
    ///
    /// # Errors
    /// [`AuthError::InvalidCredentials`] for a wrong password or code.
    pub async fn disable_totp(
        &self,
        user: &User,
        password: Zeroizing<String>,
        code: &str,
        meta: &RequestMeta,
    ) -> Result<()> {
        if !user.totp_enabled {
            return Err(AuthError::InvalidRequest("TOTP is not enabled".into()));
        }
        // The code counts against the user's code lock, as at login: otherwise a stolen
        // password would try codes here without limit.
        self.check_current_password(user, password, ("mfa_disable", "wrong_password"), meta)
            .await?;
        let now = self.now();
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
        let seen = self.mfa_lock(&mfa_key, now).await?;
        if !self.accept_totp(user, code, false).await? {
            let lock = self
                .count_failure(&mfa_key, seen, meta, Some(user), None, None)
                .await;
            failure("wrong_code").await;
            return Err(lock.map_or(AuthError::InvalidCredentials, |retry_after| {
                AuthError::TooManyAttempts { retry_after }
            }));
        }
        // As at login: wrong codes sent at once with this one may have locked the codes.
        self.mfa_lock(&mfa_key, self.now()).await?;
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

    /// Lifts a lockout (admin), for the username's password attempts and the user's codes.
    /// Returns whether there was anything to lift; only then is it audited (a user with no
    /// lockout and no failed attempts is already in the state asked for).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn unlock(&self, user: &User, actor: &Actor, meta: &RequestMeta) -> Result<bool> {
        let a = self
            .store()
            .clear_throttle(&user_throttle_key(user.username.as_str()))
            .await?;
        let b = self
            .store()
            .clear_throttle(&format!("mfa:{}", user.id))
            .await?;
        if !(a || b) {
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
        Ok(a || b)
    }

    /// When a username is locked until, if it is.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn locked_until(&self, username: &str) -> Result<Option<i64>> {
        let now = self.now();
        Ok(self
            .store()
            .find_throttle(&user_throttle_key(username))
            .await?
            .map(|t| t.locked_until)
            .filter(|t| *t > now))
    }

    /// The caller changes their own password: the current one is required, and every other
    /// session ends (the caller's stays).
    ///
    /// # Errors
    /// [`AuthError::InvalidCredentials`] for a wrong current password;
    /// [`AuthError::WeakPassword`].
    pub async fn change_password(
        &self,
        ctx: &AccessContext,
        current: Zeroizing<String>,
        new: Zeroizing<String>,
        meta: &RequestMeta,
    ) -> Result<()> {
        let user = self.user_of(ctx).await?;
        let counted = self
            .check_current_password(
                &user,
                current,
                ("password_change", "wrong_current_password"),
                meta,
            )
            .await?;
        if counted {
            self.store()
                .clear_throttle(&user_throttle_key(user.username.as_str()))
                .await?;
        }
        let keep = ctx.session_id().and_then(|s| SessionId::parse(s).ok());
        let actor = Actor::User {
            id: ctx.user_id().to_owned(),
            username: ctx.username().to_owned(),
        };
        self.set_password(&user, new, keep, &actor, meta).await
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
        let username = crate::model::Username::parse_new(username)?;
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
    fn failures_older_than_the_window_no_longer_count() {
        // The row outlives the window (it is pruned later), but the next failure restarts
        // the count at 1: a caller that took its stale count for the current one would
        // answer up to that many raced failures truthfully.
        let p = SecurityPolicy::default();
        let t = crate::model::Throttle {
            failures: 11,
            locked_until: 1_000 + p.lock_for(11),
            last_failure_at: 1_000,
        };
        assert_eq!(p.counted_failures(&t, 1_000 + p.failure_window), 11);
        assert_eq!(p.counted_failures(&t, 1_001 + p.failure_window), 0);
    }

    #[test]
    fn a_lock_not_written_yet_leaves_its_failure_unseen() {
        // The failure that earns a lock is counted, then the lock written: a reader in
        // between must not take that failure as seen, or its own next failure would be
        // answered truthfully although it came after the lock was earned.
        let p = SecurityPolicy::default();
        let at = p.lockout_threshold;
        let pending = crate::model::Throttle {
            failures: at,
            locked_until: 0,
            last_failure_at: 1_000,
        };
        assert_eq!(p.counted_failures(&pending, 1_000), at - 1);
        let written = crate::model::Throttle {
            locked_until: 1_000 + p.lock_for(at),
            ..pending
        };
        assert_eq!(p.counted_failures(&written, 1_000), at);
        // Below the threshold there is no lock to wait for.
        let below = crate::model::Throttle {
            failures: at - 1,
            ..pending
        };
        assert_eq!(p.counted_failures(&below, 1_000), at - 1);
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
