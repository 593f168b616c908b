//! The authentication service: every use case, independent of HTTP and SQL.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;
use tessera_jose::{Algorithm, Audience, Claims, NumericDate, RequiredClaim, Validation};
use zeroize::Zeroizing;

use crate::audit;
use crate::clock::SharedClock;
use crate::error::{AuthError, Result};
use crate::keys::{KeyInfo, KeyManager, KeyRing, KeySchedule, KeySource};
use crate::model::{
    AuditEvent, Client, ClientId, RequestMeta, RevocationKind, Role, Session, SessionId, User,
    UserId, Username,
};
use crate::password::{PasswordHasher, PasswordPolicy};
use crate::revocation::RevocationCache;
use crate::security::{AttemptGates, Reserved};
use crate::store::{RotateOutcome, RotateRequest, Store, StoreErrorKind};
use crate::token_cache::{CachedToken, VerifiedTokenCache};
use crate::tokens::{self, ACCESS_TOKEN_TYP, AccessTokenClaims};

/// Which token shape to issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// RFC 9068 access tokens: `sub` is the user id, `aud` is set.
    #[default]
    Standard,
    /// Tokens the seed tutorial's resource server verifies unchanged:
    /// `jwt.decode(token, SECRET_KEY, algorithms=["HS256"])`, then `sub` (the username) and
    /// `role`. No `aud` (PyJWT refuses an audience it was not told to expect).
    Tutorial,
}

/// An OAuth client as a request identified (and, for a confidential client, authenticated)
/// it: the built-in public client used when a request names none (the tutorial's flow), or
/// a registered one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPolicy {
    /// Client id.
    pub id: String,
    /// Scopes it may be granted.
    pub scopes: Vec<String>,
    /// Whether it authenticated with a secret.
    pub confidential: bool,
}

/// Configuration of the service.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `iss` of issued tokens, and required on verification.
    pub issuer: String,
    /// `aud` of issued tokens, and required on verification (ignored in the tutorial profile).
    pub audience: String,
    /// Token shape.
    pub profile: Profile,
    /// Access-token lifetime in seconds.
    pub access_token_ttl: i64,
    /// A session expires if not refreshed for this long (seconds).
    pub refresh_idle_ttl: i64,
    /// A session expires this long after login whatever happens (seconds).
    pub session_max_age: i64,
    /// Grace window for retried refreshes (seconds; 0 disables).
    pub refresh_grace: i64,
    /// Clock skew tolerated when verifying tokens (seconds).
    pub leeway: u64,
    /// Whether `POST /users` self-registration is open.
    pub registration_open: bool,
    /// The client used when a request names none.
    pub default_client: ClientPolicy,
    /// Rules for new passwords.
    pub password_policy: PasswordPolicy,
    /// Lockout and second-factor limits.
    pub security: crate::security::SecurityPolicy,
    /// Capacity of the verified-token cache in tokens (0 disables it); see
    /// [`crate::token_cache`].
    pub token_cache_entries: usize,
}

/// A token endpoint success (RFC 6749 §5.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenResponse {
    /// The access token (a JWT).
    pub access_token: String,
    /// Always `bearer` (lowercase, as the tutorial's clients expect; RFC 6749 §7.1 says the
    /// value is case-insensitive).
    pub token_type: &'static str,
    /// Access-token lifetime in seconds.
    pub expires_in: i64,
    /// The refresh token, when one is issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Seconds until the refresh token expires, with it: its session's idle expiry, which
    /// never passes the absolute one (`session_max_age` after login). Not part of the token
    /// response (RFC 6749 §5.1 has no such member); cookie mode sets the refresh cookie's
    /// `Max-Age` from it, so that the cookie does not outlive its session.
    #[serde(skip)]
    pub refresh_expires_in: Option<i64>,
    /// Granted scope. Omitted when empty (a client with no scopes): the scope grammar needs
    /// at least one scope-token (RFC 6749 §3.3), and §5.1 lets the answer leave out a scope
    /// identical to the one requested.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

/// A password-grant request (RFC 6749 §4.3.2).
#[derive(Debug)]
pub struct PasswordGrant {
    /// Username as typed.
    pub username: String,
    /// Password.
    pub password: Zeroizing<String>,
    /// Requested scope, space separated.
    pub scope: Option<String>,
    /// The client, as resolved by [`Auth::authenticate_client`].
    pub client: ClientPolicy,
    /// A second factor sent with the password (one-step MFA login): a TOTP code or a
    /// recovery code. The only way in while the username is locked.
    pub second_factor: Option<SecondFactor>,
}

/// A second factor presented at login.
#[derive(Debug, Clone)]
pub enum SecondFactor {
    /// A TOTP code (RFC 6238).
    Otp(Zeroizing<String>),
    /// A single-use recovery code.
    RecoveryCode(Zeroizing<String>),
}

pub use crate::context::{AccessContext, AccessContextParts, Items};

/// Who performed an administrative action, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A user through the API.
    User {
        /// Their id.
        id: String,
        /// Their username.
        username: String,
    },
    /// The command line, on the server's host.
    Cli,
    /// The server itself (bootstrap, schedules).
    System,
}

impl Actor {
    pub(crate) fn detail_with<const N: usize>(
        &self,
        extra: [(&str, serde_json::Value); N],
    ) -> serde_json::Value {
        let mut d = self.detail();
        if let Some(obj) = d.as_object_mut() {
            for (k, v) in extra {
                obj.insert(k.to_owned(), v);
            }
        }
        d
    }

    fn detail(&self) -> serde_json::Value {
        match self {
            Self::User { id, username } => serde_json::json!({"actor": username, "actor_id": id}),
            Self::Cli => serde_json::json!({"actor": "cli"}),
            Self::System => serde_json::json!({"actor": "system"}),
        }
    }
}

/// An RFC 7662 introspection result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Introspection {
    /// Whether the token is currently active.
    pub active: bool,
    /// The token's type as RFC 6749 §5.1 defines it (RFC 7662 §2.2): `bearer` for an access
    /// token; none for a refresh token, which is not presented as a bearer credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    /// Which kind of token this is: `access_token` or `refresh_token` (the values of RFC
    /// 7009's `token_type_hint`). An extension member (RFC 7662 §2.2 allows them), named as
    /// Ory Hydra names it: `token_type` cannot say it, being the §5.1 type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_use: Option<&'static str>,
    /// Granted scope; `None` for a token granted none (an empty string is no scope list,
    /// RFC 6749 §3.3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Client id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The resource owner's username (RFC 7662 §2.2); absent for a client-credentials
    /// token, which has no resource owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Audience.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issue time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Token id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Session id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// The outcome of first-start bootstrap.
#[derive(Debug)]
pub struct Bootstrapped {
    /// The admin username.
    pub username: String,
    /// The generated password, if one was generated (shown once).
    pub generated_password: Option<Zeroizing<String>>,
}

/// Everything needed to build [`Auth`].
pub struct AuthParts<S> {
    /// Storage.
    pub store: S,
    /// Configuration.
    pub config: AuthConfig,
    /// Time source.
    pub clock: SharedClock,
    /// Password hasher.
    pub hasher: PasswordHasher,
    /// Where signing keys come from.
    pub key_source: KeySource,
    /// Key lifecycle timing.
    pub key_schedule: KeySchedule,
    /// 32 secret bytes from which refresh-token successors are derived (from the master key).
    pub refresh_secret: Zeroizing<[u8; 32]>,
    /// 32 secret bytes from which the TOTP sealing key and the recovery-code pepper are
    /// derived (from the master key).
    pub account_secret: Zeroizing<[u8; 32]>,
    /// Create signing keys at start: the first one on an empty database, and a rotation
    /// to `key_source`'s algorithm when no usable key has it. For the server, not for
    /// administrative commands, whose `signing.alg` need not be the servers' (see
    /// [`KeyManager::load`]).
    pub create_signing_keys: bool,
}

/// The authentication service.
pub struct Auth<S> {
    store: S,
    config: AuthConfig,
    clock: SharedClock,
    hasher: PasswordHasher,
    keys: KeyManager,
    revocations: RevocationCache,
    token_cache: VerifiedTokenCache,
    refresh_secret: Zeroizing<[u8; 32]>,
    validation: Validation,
    pub(crate) totp_sealing: tessera_jose::crypto::SealingKey,
    pub(crate) recovery_pepper: Zeroizing<[u8; 32]>,
    /// Keys the hash that stands for an unknown username in the audit log.
    unknown_username_key: Zeroizing<[u8; 32]>,
    /// Keys the hash that stands for a username in its throttle key
    /// ([`Auth::username_throttle_key`]).
    throttle_name_key: Zeroizing<[u8; 32]>,
    observer: Option<Arc<dyn audit::AuditObserver>>,
    pub(crate) attempt_gates: AttemptGates,
}

impl<S> std::fmt::Debug for Auth<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

const MAX_ROLES: usize = 32;
/// How long after its password hash a login sent with a second factor while the username
/// is locked is answered at the earliest, when it does not log in: far more than the code
/// check that a right password leads to takes, so that the time of the answer does not
/// tell a right password from a wrong one.
pub const LOCKOUT_ANSWER_FLOOR: std::time::Duration = std::time::Duration::from_millis(250);
/// How far a refresh within the grace window follows its chain to the newest token (see
/// [`RotateOutcome::Superseded`]): more rotations than this within one window are no
/// client's parallel requests.
const MAX_CHAIN_HOPS: usize = 8;

impl<S: Store> Auth<S> {
    /// Loads keys (creating the first on an empty database) and replays revocations.
    ///
    /// # Errors
    /// Storage failures, or keys that cannot be unsealed with the configured master key.
    pub async fn start(parts: AuthParts<S>) -> Result<Self> {
        let now = parts.clock.now();
        let keys = KeyManager::load(
            &parts.store,
            parts.key_source,
            parts.key_schedule,
            now,
            parts.create_signing_keys,
        )
        .await?;
        let mut validation = Validation::new()
            .with_leeway(parts.config.leeway)
            .with_issuer(parts.config.issuer.clone())
            .with_required_typ(ACCESS_TOKEN_TYP)
            .require(RequiredClaim::Sub)
            .require(RequiredClaim::Jti)
            .require(RequiredClaim::Iat);
        if parts.config.profile == Profile::Standard {
            validation = validation.with_audience(parts.config.audience.clone());
        }
        let totp_sealing =
            tessera_jose::crypto::SealingKey::new(&tessera_jose::crypto::hmac_sha256(
                parts.account_secret.as_slice(),
                b"tessera/totp-sealing/v1",
            ))
            .map_err(AuthError::internal)?;
        let recovery_pepper = Zeroizing::new(tessera_jose::crypto::hmac_sha256(
            parts.account_secret.as_slice(),
            b"tessera/recovery-codes/v1",
        ));
        let unknown_username_key = Zeroizing::new(tessera_jose::crypto::hmac_sha256(
            parts.account_secret.as_slice(),
            b"tessera/audit-unknown-username/v1",
        ));
        // Its own key, derived like the one above: a throttle key and an audit row of the
        // same name do not share a value, so neither can be matched against the other.
        let throttle_name_key = Zeroizing::new(tessera_jose::crypto::hmac_sha256(
            parts.account_secret.as_slice(),
            b"tessera/throttle-username/v1",
        ));
        let token_cache = VerifiedTokenCache::new(parts.config.token_cache_entries)?;
        let auth = Self {
            unknown_username_key,
            throttle_name_key,
            token_cache,
            totp_sealing,
            recovery_pepper,
            store: parts.store,
            config: parts.config,
            clock: parts.clock,
            hasher: parts.hasher,
            keys,
            revocations: RevocationCache::new(),
            refresh_secret: parts.refresh_secret,
            validation,
            observer: None,
            attempt_gates: AttemptGates::default(),
        };
        auth.revocations.sync(&auth.store, now).await?;
        Ok(auth)
    }

    /// Tells `observer` about every audit event from now on (metrics).
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn audit::AuditObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The current time.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The password hasher.
    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    /// The key ring in force.
    pub fn key_ring(&self) -> Arc<KeyRing> {
        self.keys.current()
    }

    /// The key manager.
    pub fn keys(&self) -> &KeyManager {
        &self.keys
    }

    /// The revocation cache.
    pub fn revocations(&self) -> &RevocationCache {
        &self.revocations
    }

    /// The verified-token cache.
    pub fn token_cache(&self) -> &VerifiedTokenCache {
        &self.token_cache
    }

    /// Pulls revocations and key changes made elsewhere, and prunes expired state.
    ///
    /// # Errors
    /// Storage failures (state is kept and caught up on the next call).
    pub async fn sync(&self) -> Result<()> {
        let now = self.now();
        self.revocations.sync(&self.store, now).await?;
        self.revocations.prune(now);
        self.keys.reload(&self.store, now).await?;
        Ok(())
    }

    // ------------------------------------------------------------------ bootstrap

    /// On an empty user table, creates `admin` with the `admin` role and the given password,
    /// or a random one that is returned to be shown once.
    ///
    /// # Errors
    /// Storage failures; [`AuthError::WeakPassword`] if a given password fails the policy.
    pub async fn bootstrap_admin(
        &self,
        password: Option<Zeroizing<String>>,
    ) -> Result<Option<Bootstrapped>> {
        if self.store.count_users().await? > 0 {
            return Ok(None);
        }
        let (password, generated) = match password {
            Some(p) => {
                self.config
                    .password_policy
                    .check_blocking(p.clone(), Some("admin".into()))
                    .await?;
                (p, false)
            }
            None => {
                let bytes =
                    tessera_jose::crypto::random_array::<18>().map_err(AuthError::internal)?;
                (Zeroizing::new(tessera_jose::base64url::encode(bytes)), true)
            }
        };
        let username = Username::parse("admin")?;
        let roles = vec![Role::parse(Role::ADMIN)?];
        match self
            .insert_user(
                username,
                password.clone(),
                roles,
                &Actor::System,
                &RequestMeta::default(),
            )
            .await
        {
            Ok(_) => {}
            // Another instance bootstrapped first.
            Err(AuthError::AlreadyExists(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
        Ok(Some(Bootstrapped {
            username: "admin".into(),
            generated_password: generated.then_some(password),
        }))
    }

    // ------------------------------------------------------------------ token endpoint

    /// The resource-owner password grant (RFC 6749 §4.3). Unknown users and wrong
    /// passwords take the same time and get the same error.
    ///
    /// # Errors
    /// [`AuthError::InvalidCredentials`], [`AuthError::AccountDisabled`],
    /// [`AuthError::InvalidScope`], [`AuthError::Unavailable`], storage failures.
    #[tracing::instrument(skip_all, fields(client_id))]
    pub async fn password_grant(
        &self,
        req: PasswordGrant,
        meta: &RequestMeta,
    ) -> Result<TokenResponse> {
        let client = &req.client;
        tracing::Span::current().record("client_id", client.id.as_str());
        let scope = self.grant_scope(client, req.scope.as_deref())?;
        let username = Username::parse(&req.username).ok();
        let audit_name = username
            .as_ref()
            .map_or_else(|| truncate(&req.username, 64), |u| u.to_string());
        // The lockout is per username, existing or not, so it reveals nothing.
        let throttle_key = self.username_throttle_key(&audit_name);
        // OWASP Authentication Cheat Sheet, "Account Lockout": the attempt is reserved
        // (counted as a failure) before the password is checked, in one statement with the
        // check of the lock. Guesses sent at once each take their own count, and the one
        // that reaches the threshold locks the name before it is checked, so no more than
        // `lockout_threshold` passwords are ever checked before the lock holds; the rest
        // are refused unchecked. A right password clears the count.
        // Held until the attempt is resolved (see `AttemptGates`).
        let _turn = self
            .attempt_gates
            .enter(&throttle_key, &self.config.security)
            .await;
        // The user is read with the reservation, in one step (`reserve_login`).
        let (reserved, user) = self.reserve_login(&throttle_key, username.as_ref()).await?;
        let admission = match reserved {
            Reserved::Admitted(a) => a,
            Reserved::Refused { retry_after } => {
                // While a username is locked, the password alone neither logs in nor
                // reveals whether it was right (the answer is the same `Locked`, and it is
                // not even checked). An account with a second factor can still sign in by
                // sending the code with the password, which a password-guessing attacker
                // cannot; the code is bounded by the user's code lock.
                //
                // A right password goes on to the code check (a reservation, a lookup, an
                // audit write) where a wrong one is refused at once: without more, the
                // response time would tell them apart, and a script could test passwords
                // without end while the name is locked. So every refusal on this path is
                // answered no sooner than `LOCKOUT_ANSWER_FLOOR` after the hash, whatever
                // it found (OWASP Authentication Cheat Sheet, "Account Lockout").
                if let Some(factor) = &req.second_factor {
                    let verification = self
                        .hasher
                        .verify(
                            req.password.clone(),
                            user.as_ref().map(|u| u.password_hash.as_str()),
                        )
                        .await?;
                    let answer_at = tokio::time::Instant::now() + LOCKOUT_ANSWER_FLOOR;
                    if let Some(u) = user
                        .as_ref()
                        .filter(|u| verification.matches && u.totp_enabled && !u.disabled)
                        && let Some(response) = self
                            .second_factor_login(u, factor, &client.id, &scope, meta, true)
                            .await?
                    {
                        return Ok(response);
                    }
                    tokio::time::sleep_until(answer_at).await;
                }
                return Err(AuthError::Locked { retry_after });
            }
        };
        // Unknown users are checked against a dummy hash: the same work and answer.
        let verification = match self
            .hasher
            .verify(
                req.password.clone(),
                user.as_ref().map(|u| u.password_hash.as_str()),
            )
            .await
        {
            Ok(v) => v,
            Err(e) => {
                // Not checked (the hashing queue full): no guess was answered.
                self.attempt_unchecked(&throttle_key, admission).await;
                return Err(e);
            }
        };
        let mut user = match user {
            Some(u) if verification.matches => u,
            known => {
                // Recorded under the user when the name exists (for `audit list --user`);
                // the answer and the work done are the same either way. An unknown name
                // is recorded as a keyed hash: it is often a password typed into the wrong
                // field (OWASP Logging Cheat Sheet), and the hash still tells repeated
                // attempts on one name apart from attempts on many.
                let known = known.as_ref();
                let audit_name = match known {
                    Some(_) => audit_name,
                    None => self.unknown_username(&audit_name),
                };
                self.attempt_failed(
                    &throttle_key,
                    admission,
                    meta,
                    known,
                    Some(&audit_name),
                    Some(&client.id),
                )
                .await;
                self.audit(
                    meta,
                    "login",
                    "failure",
                    known,
                    Some(audit_name),
                    Some(&client.id),
                    serde_json::json!({"reason": "invalid_credentials"}),
                )
                .await;
                return Err(AuthError::InvalidCredentials);
            }
        };
        // The right password is no failed guess: its reservation, and the failures before
        // it, are cleared (as a successful login always did), whatever comes next (a
        // second factor has its own lock). A login that goes straight on to its session
        // clears them in the session's transaction (`start_session`): one commit fewer per
        // login, and the clear stands only if the login does.
        if user.disabled || user.totp_enabled {
            self.store.clear_throttle(&throttle_key).await?;
        }
        if user.disabled {
            self.audit(
                meta,
                "login",
                "failure",
                Some(&user),
                None,
                Some(&client.id),
                serde_json::json!({"reason": "disabled"}),
            )
            .await;
            return Err(AuthError::AccountDisabled);
        }
        if verification.needs_rehash {
            let password = req.password;
            // Only over the hash just checked: a password changed meanwhile stays changed
            // (this login then fails in `start_session`).
            let upgraded = match self.hasher.hash(password.clone()).await {
                Ok(h) => match self
                    .store
                    .rehash_password(user.id, &user.password_hash, &h, self.now())
                    .await
                {
                    Ok(true) => {
                        user.password_hash = h;
                        true
                    }
                    Ok(false) => false,
                    Err(e) => {
                        tracing::warn!(target: "tessera::auth", error = %e, "could not store the upgraded password hash");
                        false
                    }
                },
                Err(e) => {
                    tracing::warn!(target: "tessera::auth", error = %e, "could not rehash password");
                    false
                }
            };
            // Not upgraded here, and the stored hash may have been replaced meanwhile: by a
            // password change (`start_session` then ends this login), or by another login
            // of the same user that upgraded the same hash first. That one's hash accepts
            // this password, so this login goes on under it rather than being refused the
            // right password by `start_session`'s re-read. Best effort: a failure here
            // leaves the hash checked, and `start_session` decides.
            if !upgraded
                && let Ok(Some(current)) = self.store.find_user_by_id(user.id).await
                && current.password_hash != user.password_hash
                && self
                    .hasher
                    .verify(password, Some(&current.password_hash))
                    .await
                    .is_ok_and(|v| v.matches)
            {
                user.password_hash = current.password_hash;
            }
        }
        if user.totp_enabled {
            if let Some(factor) = &req.second_factor {
                return match self
                    .second_factor_login(&user, factor, &client.id, &scope, meta, false)
                    .await?
                {
                    Some(response) => Ok(response),
                    None => Err(AuthError::InvalidGrant(
                        "the code is wrong, expired or already used",
                    )),
                };
            }
            let token = self.start_mfa_challenge(&user, &client.id, &scope).await?;
            // (`start_mfa_challenge` reads the user again once the challenge is stored, and
            // ends it if the password changed or the user was disabled meanwhile.)
            self.audit(
                meta,
                "login",
                "mfa_required",
                Some(&user),
                None,
                Some(&client.id),
                serde_json::json!({}),
            )
            .await;
            return Err(AuthError::MfaRequired { mfa_token: token });
        }
        self.start_session(
            &user,
            &client.id,
            &scope,
            vec!["pwd".into()],
            meta,
            serde_json::json!({}),
            &[&throttle_key],
        )
        .await
    }

    /// Starts a session for a user who has just signed in, and records the `login` /
    /// `success` audit event (with `detail`) in the same transaction, which also clears the
    /// login's throttle keys (`clear`).
    // Each argument is one fact about this login, from its two callers; a struct would only
    // rename them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start_session(
        &self,
        user: &User,
        client_id: &str,
        scope: &str,
        amr: Vec<String>,
        meta: &RequestMeta,
        detail: serde_json::Value,
        clear: &[&str],
    ) -> Result<TokenResponse> {
        let now = self.now();
        let absolute = now.saturating_add(self.config.session_max_age);
        let session = Session {
            id: SessionId::new(),
            user_id: user.id,
            client_id: client_id.to_owned(),
            scope: scope.to_owned(),
            amr,
            created_at: now,
            last_used_at: now,
            idle_expires_at: now
                .saturating_add(self.config.refresh_idle_ttl)
                .min(absolute),
            absolute_expires_at: absolute,
            revoked_at: None,
            revoke_reason: None,
            ip: meta.ip.clone(),
            user_agent: meta.user_agent.clone(),
        };
        let refresh = tokens::new_refresh_token()?;
        // Signed first: a signing failure leaves no session behind.
        let (access_token, expires_in) = self.issue_access_token(user, &session, scope, now)?;
        let event = self.audit_event(
            meta,
            "login",
            "success",
            Some(user),
            None,
            Some(client_id),
            detail,
        );
        let stored = match self
            .store
            .create_session_audited(
                &session,
                &tokens::refresh_token_hash(&refresh),
                &event,
                audit::chain_hash,
                clear,
            )
            .await
        {
            Ok(stored) => stored,
            Err(e) => {
                // A user deleted while this login was being checked (here or on another
                // instance): the session's foreign key refuses it, and the login fails as
                // one for an unknown user does, not with a 500.
                if matches!(self.store.find_user_by_id(user.id).await, Ok(None)) {
                    return Err(AuthError::InvalidCredentials);
                }
                return Err(e.into());
            }
        };
        // Logged once stored: the login has happened only if its transaction committed.
        log_audit(&event);
        self.observe_audit(&event);
        // `user` was read before the password was checked, which takes a while (and may
        // wait in the hashing queue). A password change or a disable that committed
        // meanwhile, here or on another instance, ended the user's sessions before this one
        // existed, so it would have outlived them, signed in with the old password or for
        // a disabled account. The store read the user again with the session, so that a
        // change not visible to that read commits after the session, and ends it like the
        // others (both first update the user, then revoke the sessions;
        // `StoredLogin::user`). The hash is compared, not `password_changed_at`, which has
        // one-second resolution.
        let current = stored.user?;
        if let Some(reason) = match &current {
            None => Some("user_deleted"),
            Some(u) if u.disabled => Some("user_disabled"),
            Some(u) if u.password_hash != user.password_hash => Some("password_changed"),
            Some(_) => None,
        } {
            self.revoke_session_internal(session.id, reason).await?;
            // The `login` / `success` row went in with the session; this row says the login
            // was refused after all, and why (`audit list --user` would otherwise show a
            // success for a login that got no tokens).
            self.audit(
                meta,
                "login",
                "failure",
                Some(user),
                None,
                Some(client_id),
                serde_json::json!({"reason": reason, "session": session.id.to_string()}),
            )
            .await;
            return Err(if reason == "user_disabled" {
                AuthError::AccountDisabled
            } else {
                AuthError::InvalidCredentials
            });
        }
        Ok(TokenResponse {
            access_token,
            token_type: "bearer",
            expires_in,
            refresh_token: Some(refresh),
            refresh_expires_in: Some(session.idle_expires_at.saturating_sub(now).max(0)),
            scope: scope.to_owned(),
        })
    }

    /// The refresh-token grant (RFC 6749 §6) with rotation, reuse detection and a grace
    /// window (RFC 9700 §4.14.2).
    ///
    /// # Errors
    /// [`AuthError::InvalidGrant`], [`AuthError::RefreshReused`],
    /// [`AuthError::RefreshSuperseded`], [`AuthError::InvalidScope`], storage failures.
    #[tracing::instrument(skip_all)]
    pub async fn refresh_grant(
        &self,
        refresh_token: &str,
        scope: Option<&str>,
        client: &ClientPolicy,
        meta: &RequestMeta,
    ) -> Result<TokenResponse> {
        if !tokens::looks_like_refresh_token(refresh_token) {
            return Err(AuthError::InvalidGrant(
                "refresh token is invalid or expired",
            ));
        }
        let now = self.now();
        // RFC 6749 §6: a requested scope must be within the session's. Checked before the
        // token is rotated: a refusal must leave it usable, or the client, which never saw
        // a successor, would be treated as a thief (reuse) once the grace window passed.
        // (Checked again after the rotation, against the session it returned.) Only for a
        // token the rotation would accept: a rotated one (reuse, or a retry in the grace
        // window, which rotates nothing) or one of an ended session must get the
        // rotation's answer -- reuse detection, `invalid_grant` -- whatever scope it asks.
        if let Some(requested) = scope
            && let Some((session, None)) = self
                .store
                .find_refresh_token(&tokens::refresh_token_hash(refresh_token))
                .await?
            && session.client_id == client.id
            && session.is_live(now)
        {
            check_narrower_scope(&session.scope, requested)?;
        }
        // The token presented, then (after `Superseded`) each successor along its chain.
        let mut presented = Zeroizing::new(refresh_token.to_owned());
        let mut hops = 0;
        let (session, owner, successor) = loop {
            let successor = tokens::successor_token(&self.refresh_secret, &presented);
            let req = RotateRequest {
                parent_hash: tokens::refresh_token_hash(&presented),
                successor_hash: tokens::refresh_token_hash(&successor),
                now,
                grace_secs: self.config.refresh_grace,
                idle_ttl_secs: self.config.refresh_idle_ttl,
                revocation_expires_at: self.revocation_horizon(now),
                // RFC 6749 §6: the refresh token is bound to the client it was issued to, and
                // a confidential client must authenticate (it did, to be resolved as itself).
                client_id: client.id.clone(),
            };
            match self.store.rotate_refresh_token(&req).await? {
                RotateOutcome::Rotated { session, user } => break (session, user, successor),
                RotateOutcome::GraceRetry(s) => {
                    if hops > 0 {
                        tracing::info!(target: "tessera::auth", session = %s.id, hops, "refresh token rotated within the grace window answered with the newest of its chain");
                    }
                    let user = self.store.find_user_by_id(s.user_id).await?;
                    break (s, user, successor);
                }
                // Rotated within the grace window, and its successor used in turn: several
                // requests of one client (browser tabs, parallel calls) that left holding
                // this token while a later one already rotated its successor. They get the
                // chain's newest token, not a revoked session. Each link is checked by the
                // store as the presented token was (rotated within the window, successor
                // the derived one), so this reaches only tokens of the same chain, and a
                // replay after the window is still reuse (RFC 9700 §4.14.2).
                RotateOutcome::Superseded(_) if hops < MAX_CHAIN_HOPS => {
                    hops += 1;
                    presented = Zeroizing::new(successor);
                }
                // Not reuse (the session stays), and not a reason for a browser to drop its
                // cookies: its jar already holds the newer token a parallel request received.
                RotateOutcome::Superseded(_) => return Err(AuthError::RefreshSuperseded),
                RotateOutcome::Reused(s) => {
                    self.sync_revocations().await;
                    tracing::warn!(target: "tessera::auth", session = %s.id, user = %s.user_id, "refresh token reuse detected; session revoked");
                    let user = self.store.find_user_by_id(s.user_id).await.ok().flatten();
                    self.audit(
                        meta,
                        "refresh_reuse",
                        "failure",
                        user.as_ref(),
                        None,
                        Some(&s.client_id),
                        serde_json::json!({"session": s.id.to_string()}),
                    )
                    .await;
                    return Err(AuthError::RefreshReused);
                }
                RotateOutcome::Invalid(reason) => return Err(AuthError::InvalidGrant(reason)),
            }
        };
        let user = match owner {
            Some(u) if !u.disabled => u,
            _ => {
                self.revoke_session_internal(session.id, "user disabled or deleted")
                    .await?;
                return Err(AuthError::InvalidGrant(
                    "refresh token is invalid or expired",
                ));
            }
        };
        // RFC 6749 §6: a narrower scope may be requested, never a wider one.
        let granted = match scope {
            None => session.scope.clone(),
            Some(requested) => check_narrower_scope(&session.scope, requested)?,
        };
        let (access_token, expires_in) = self.issue_access_token(&user, &session, &granted, now)?;
        Ok(TokenResponse {
            access_token,
            token_type: "bearer",
            expires_in,
            refresh_token: Some(successor),
            // The rotation moved the idle expiry on, never past the absolute one; both are
            // taken anyway, should a store not cap it.
            refresh_expires_in: Some(
                session
                    .idle_expires_at
                    .min(session.absolute_expires_at)
                    .saturating_sub(now)
                    .max(0),
            ),
            scope: granted,
        })
    }

    fn issue_access_token(
        &self,
        user: &User,
        session: &Session,
        scope: &str,
        now: i64,
    ) -> Result<(String, i64)> {
        let exp = now
            .saturating_add(self.config.access_token_ttl)
            .min(session.absolute_expires_at.max(now + 1));
        let tutorial = self.config.profile == Profile::Tutorial;
        let user_id = user.id.to_string();
        let mut claims = Claims::new(AccessTokenClaims {
            client_id: Cow::Borrowed(&session.client_id),
            scope: Cow::Borrowed(scope),
            preferred_username: Some(Cow::Borrowed(user.username.as_str())),
            roles: user
                .roles
                .iter()
                .map(|r| Cow::Borrowed(r.as_str()))
                .collect(),
            role: user.primary_role().map(|r| Cow::Borrowed(r.as_str())),
            sid: Some(Cow::Owned(session.id.to_string())),
            uid: tutorial.then_some(Cow::Borrowed(user_id.as_str())),
            amr: session
                .amr
                .iter()
                .map(|a| Cow::Borrowed(a.as_str()))
                .collect(),
            auth_time: Some(session.created_at),
        });
        claims.registered.iss = Some(Cow::Borrowed(&self.config.issuer));
        claims.registered.sub = Some(Cow::Borrowed(if tutorial {
            user.username.as_str()
        } else {
            user_id.as_str()
        }));
        if !tutorial {
            claims.registered.aud = Some(Audience::One(Cow::Borrowed(&self.config.audience)));
        }
        claims.registered.iat = Some(NumericDate(now));
        claims.registered.exp = Some(NumericDate(exp));
        claims.registered.jti = Some(Cow::Owned(tokens::new_jti()?));
        let ring = self.keys.current();
        let token = ring
            .signer
            .sign_jwt(&claims, Some(ACCESS_TOKEN_TYP))
            .map_err(AuthError::internal)?;
        Ok((token, exp - now))
    }

    // ------------------------------------------------------------------ clients

    /// Identifies and authenticates the client of a request (RFC 6749 §2.3.1). No id means
    /// the built-in public client. A confidential client must present its secret; a public
    /// client must not present one. Unknown clients and wrong secrets get the same error.
    ///
    /// # Errors
    /// [`AuthError::InvalidClient`]; storage failures.
    pub async fn authenticate_client(
        &self,
        id: Option<&str>,
        secret: Option<&str>,
    ) -> Result<ClientPolicy> {
        let default = &self.config.default_client;
        let Some(id) = id.filter(|i| *i != default.id) else {
            if secret.is_some() {
                return Err(AuthError::InvalidClient(
                    "the built-in public client has no secret",
                ));
            }
            return Ok(default.clone());
        };
        let client = match ClientId::parse(id) {
            Ok(cid) => self.store.find_client(&cid).await?,
            Err(_) => None,
        };
        // Hash whatever was presented even for unknown clients, so timing says nothing.
        let presented = secret.map(|s| tessera_jose::crypto::sha256(s.as_bytes()));
        let Some(client) = client else {
            return Err(AuthError::InvalidClient("unknown client or wrong secret"));
        };
        match (&client.secret_hash, presented) {
            (Some(stored), Some(given))
                if tessera_jose::crypto::constant_time_eq(stored, &given) => {}
            (None, None) => {}
            (Some(_), None) => {
                return Err(AuthError::InvalidClient("this client must authenticate"));
            }
            _ => return Err(AuthError::InvalidClient("unknown client or wrong secret")),
        }
        Ok(ClientPolicy {
            id: client.id.to_string(),
            scopes: client.scopes.clone(),
            confidential: client.confidential,
        })
    }

    /// The client-credentials grant (RFC 6749 §4.4): a confidential client gets a token for
    /// itself (`sub` = client id), limited to its scopes, without a refresh token.
    ///
    /// # Errors
    /// [`AuthError::InvalidClient`] for a public client ("unauthorized_client" in spirit),
    /// [`AuthError::InvalidScope`].
    pub async fn client_credentials_grant(
        &self,
        client: &ClientPolicy,
        scope: Option<&str>,
        meta: &RequestMeta,
    ) -> Result<TokenResponse> {
        if !client.confidential {
            return Err(AuthError::Forbidden(
                "only confidential clients may use client_credentials",
            ));
        }
        let scope = self.grant_scope(client, scope)?;
        let now = self.now();
        let exp = now.saturating_add(self.config.access_token_ttl);
        let mut claims = Claims::new(AccessTokenClaims {
            client_id: Cow::Borrowed(&client.id),
            scope: Cow::Borrowed(&scope),
            preferred_username: None,
            roles: Vec::new(),
            role: None,
            sid: None,
            uid: None,
            amr: Vec::new(),
            auth_time: None,
        });
        claims.registered.iss = Some(Cow::Borrowed(&self.config.issuer));
        claims.registered.sub = Some(Cow::Borrowed(&client.id));
        if self.config.profile == Profile::Standard {
            claims.registered.aud = Some(Audience::One(Cow::Borrowed(&self.config.audience)));
        }
        claims.registered.iat = Some(NumericDate(now));
        claims.registered.exp = Some(NumericDate(exp));
        claims.registered.jti = Some(Cow::Owned(tokens::new_jti()?));
        let token = self
            .keys
            .current()
            .signer
            .sign_jwt(&claims, Some(ACCESS_TOKEN_TYP))
            .map_err(AuthError::internal)?;
        self.audit(
            meta,
            "client_credentials",
            "success",
            None,
            None,
            Some(&client.id),
            serde_json::json!({"scope": scope}),
        )
        .await;
        Ok(TokenResponse {
            access_token: token,
            token_type: "bearer",
            expires_in: exp - now,
            refresh_token: None,
            refresh_expires_in: None,
            scope,
        })
    }

    /// Registers a client. A confidential client gets a 256-bit secret, returned once and
    /// stored as its SHA-256.
    ///
    /// # Errors
    /// [`AuthError::AlreadyExists`], [`AuthError::InvalidRequest`]; storage failures.
    pub async fn create_client(
        &self,
        id: &str,
        scopes: &[String],
        confidential: bool,
        actor: &Actor,
    ) -> Result<(Client, Option<Zeroizing<String>>)> {
        let cid = ClientId::parse(id)?;
        if cid.as_str() == self.config.default_client.id {
            return Err(AuthError::AlreadyExists(
                "client (the built-in public client)",
            ));
        }
        let mut scope_list: Vec<String> = Vec::new();
        for s in scopes.iter().flat_map(|s| s.split_whitespace()) {
            if !s
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
            {
                return Err(AuthError::InvalidRequest(format!(
                    "`{}` is not a valid scope (RFC 6749 §3.3)",
                    truncate(s, 64)
                )));
            }
            if !scope_list.iter().any(|x| x == s) {
                scope_list.push(s.to_owned());
            }
        }
        let secret = if confidential {
            let bytes = tessera_jose::crypto::random_array::<32>().map_err(AuthError::internal)?;
            Some(Zeroizing::new(tessera_jose::base64url::encode(bytes)))
        } else {
            None
        };
        let client = Client {
            id: cid,
            secret_hash: secret
                .as_ref()
                .map(|s| tessera_jose::crypto::sha256(s.as_bytes()).to_vec()),
            scopes: scope_list,
            confidential,
            created_at: self.now(),
        };
        self.store
            .insert_client(&client)
            .await
            .map_err(|e| match e.kind() {
                StoreErrorKind::Conflict => AuthError::AlreadyExists("client"),
                _ => AuthError::Storage(e),
            })?;
        let detail = actor.detail_with([
            ("scopes", serde_json::json!(client.scopes)),
            ("confidential", serde_json::json!(confidential)),
        ]);
        self.audit(
            &RequestMeta::default(),
            "client_created",
            "success",
            None,
            None,
            Some(client.id.as_str()),
            detail,
        )
        .await;
        Ok((client, secret))
    }

    /// Registered clients.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn list_clients(&self) -> Result<Vec<Client>> {
        Ok(self.store.list_clients().await?)
    }

    /// Deletes a client: it can no longer authenticate, and its sessions can no longer be
    /// refreshed (access tokens already issued expire on their own).
    ///
    /// # Errors
    /// [`AuthError::NotFound`]; storage failures.
    pub async fn delete_client(&self, id: &str, actor: &Actor) -> Result<()> {
        let cid = ClientId::parse(id)?;
        if !self.store.delete_client(&cid).await? {
            return Err(AuthError::NotFound("client"));
        }
        self.audit(
            &RequestMeta::default(),
            "client_deleted",
            "success",
            None,
            None,
            Some(cid.as_str()),
            actor.detail(),
        )
        .await;
        Ok(())
    }

    // ------------------------------------------------------------------ verification

    /// Verifies an access token and checks revocation, from memory only (no database
    /// round trip): the hot path of every protected request.
    ///
    /// # Errors
    /// [`AuthError::InvalidToken`] with the precise reason (for logs, never for clients).
    pub fn authenticate(&self, token: &str) -> Result<AccessContext> {
        self.authenticate_shared(token).map(Arc::unwrap_or_clone)
    }

    /// [`Auth::authenticate`], sharing the context with the verified-token cache instead of
    /// copying it: the allocation-free path for a token seen before.
    ///
    /// A token seen before costs a cache lookup instead of a signature verification. The
    /// cache is keyed by the exact token bytes and holds only tokens that passed full
    /// verification; every hit re-checks `exp`/`nbf`/`iat` against the clock (same leeway),
    /// that the key that verified it is still in the key ring, and revocation — the same
    /// in-memory revocation check as a miss. Nothing on this path touches the database.
    ///
    /// # Errors
    /// As [`Auth::authenticate`].
    pub fn authenticate_shared(&self, token: &str) -> Result<Arc<AccessContext>> {
        self.authenticate_bytes(token.as_bytes())
    }

    /// [`Auth::authenticate_shared`] for a token as the request carried it (the bytes of an
    /// `Authorization` header). A cached token is found without looking at the bytes twice;
    /// anything else must be UTF-8 before it is parsed (and then base64url, which the
    /// verifier enforces).
    ///
    /// # Errors
    /// As [`Auth::authenticate`].
    pub fn authenticate_bytes(&self, token: &[u8]) -> Result<Arc<AccessContext>> {
        let now = self.now();
        let ring = self.keys.current_guard();
        if let Some(verdict) = self
            .token_cache
            .with_hit(token, |hit| self.recheck_cached(hit, &ring, now))
        {
            return verdict;
        }
        let token = std::str::from_utf8(token)
            .map_err(|_| AuthError::InvalidToken("the token is not valid UTF-8".into()))?;
        let jws = ring
            .verifier
            .verify_jws(token, &self.validation.limits)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        let claims: Claims<'_, AccessTokenClaims<'_>> = jws
            .claims(&self.validation, now)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        let reg = &claims.registered;
        let c = &claims.custom;
        let sub = reg.sub.as_deref().unwrap_or_default();
        let user_id = c.uid.as_deref().unwrap_or(sub);
        let iat = reg.iat.map_or(0, |d| d.0);
        // An empty `jti` is no identifier: it is treated as absent here, on a cache hit
        // and in revocation alike, so the three agree (RFC 7519 §4.1.7).
        let jti = reg.jti.as_deref().filter(|j| !j.is_empty());
        if let Some(why) = self.revocations.check(jti, c.sid.as_deref(), user_id, iat) {
            return Err(AuthError::InvalidToken(why.as_str().into()));
        }
        let context = Arc::new(AccessContext::verified(
            AccessContextParts {
                user_id,
                username: c.preferred_username.as_deref().unwrap_or(sub),
                roles: c.roles.iter().map(AsRef::as_ref),
                scope: &c.scope,
                client_id: &c.client_id,
                session_id: c.sid.as_deref(),
                jti: jti.unwrap_or_default(),
                issued_at: iat,
                expires_at: reg.exp.map_or(0, |d| d.0),
                amr: c.amr.iter().map(AsRef::as_ref),
                is_client: c.sid.is_none() && c.preferred_username.is_none(),
            },
            token,
            jws.header().kid(),
        ));
        // `exp` is required, so a token always has one. A token without `kid` is not
        // cached: a hit could not tell which key verified it (a one-key set accepts it,
        // whichever key that is), so it could outlive its key's revocation. Every token
        // Tessera signs carries a `kid`.
        if let Some(exp) = reg.exp
            && jws.header().kid().is_some()
        {
            self.token_cache.insert(
                CachedToken {
                    context: Arc::clone(&context),
                    exp: exp.0,
                    nbf: reg.nbf.map(|d| d.0),
                    iat: reg.iat.map(|d| d.0),
                },
                now.saturating_sub(self.leeway_secs()),
            );
        }
        Ok(context)
    }

    /// What must still hold for a cached token at `now`: the checks of
    /// `Validation::validate` that depend on time, the key, and revocation.
    fn recheck_cached(
        &self,
        hit: &CachedToken,
        ring: &KeyRing,
        now: i64,
    ) -> Result<Arc<AccessContext>> {
        let leeway = self.leeway_secs();
        // RFC 7519 §4.1.4: the current time MUST be before `exp`.
        if now >= hit.exp.saturating_add(leeway) {
            return Err(AuthError::InvalidToken("token expired (cached)".into()));
        }
        // RFC 7519 §4.1.5: not before `nbf`.
        if hit.nbf.is_some_and(|nbf| now.saturating_add(leeway) < nbf) {
            return Err(AuthError::InvalidToken(
                "token not yet valid (cached)".into(),
            ));
        }
        // RFC 7519 §4.1.6: issued in the future (the clock moved back).
        if hit.iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
            return Err(AuthError::InvalidToken(
                "token issued in the future (cached)".into(),
            ));
        }
        // The key that verified it must still verify (a revoked key stops its tokens).
        // Only tokens with a `kid` are cached (see `authenticate_bytes`).
        let key_in_force = hit
            .context
            .kid()
            .is_some_and(|kid| ring.verifier.find(kid).is_some());
        if !key_in_force {
            return Err(AuthError::InvalidToken(
                "signing key no longer in force (cached)".into(),
            ));
        }
        let ctx = &hit.context;
        if let Some(why) = self.revocations.check(
            Some(ctx.jti()).filter(|j| !j.is_empty()),
            ctx.session_id(),
            ctx.user_id(),
            ctx.issued_at,
        ) {
            return Err(AuthError::InvalidToken(why.as_str().into()));
        }
        Ok(Arc::clone(ctx))
    }

    fn leeway_secs(&self) -> i64 {
        i64::try_from(self.validation.leeway).unwrap_or(i64::MAX)
    }

    // ------------------------------------------------------------------ revocation

    /// RFC 7009 revocation of an access token (its `jti`) or a refresh token (its whole
    /// session). Unknown, invalid or already-revoked tokens succeed silently (§2.2).
    ///
    /// # Errors
    /// [`AuthError::Forbidden`] if the token belongs to another client; storage failures.
    pub async fn revoke_token(
        &self,
        token: &str,
        hint: Option<&str>,
        client_id: Option<&str>,
        meta: &RequestMeta,
    ) -> Result<()> {
        let as_refresh = hint == Some("refresh_token") || tokens::looks_like_refresh_token(token);
        if as_refresh && tokens::looks_like_refresh_token(token) {
            let hash = tokens::refresh_token_hash(token);
            if let Some((session, _)) = self.store.find_refresh_token(&hash).await? {
                if client_id.is_some_and(|c| c != session.client_id) {
                    return Err(AuthError::Forbidden("token was issued to another client"));
                }
                if self
                    .revoke_session_internal(session.id, "revoked")
                    .await?
                    .is_some()
                {
                    self.audit(meta, "revoke", "success", None, None, Some(&session.client_id), serde_json::json!({"session": session.id.to_string(), "token_type": "refresh_token"})).await;
                }
            }
            return Ok(());
        }
        // An access token: verify its signature (so nobody can fill the denylist with
        // made-up ids), then deny its jti until it expires.
        let ring = self.keys.current();
        let Ok(jws) = ring.verifier.verify_jws(token, &self.validation.limits) else {
            return Ok(());
        };
        let lax = Validation {
            leeway: u64::MAX / 4,
            ..self.validation.clone()
        };
        let Ok(claims) = jws.claims::<AccessTokenClaims<'_>>(&lax, self.now()) else {
            return Ok(());
        };
        if client_id.is_some_and(|c| c != claims.custom.client_id) {
            return Err(AuthError::Forbidden("token was issued to another client"));
        }
        let now = self.now();
        let exp = claims.registered.exp.map_or(now, |d| d.0);
        // An empty (or absurd) `jti` identifies nothing (see `revocable_jti`): there is
        // nothing to deny, and the answer is still 200 (§2.2). Such a token ends with its
        // session (its refresh token revoked, or `/logout`) or its user's revocation.
        if let Some(jti) = claims.registered.jti.as_deref().and_then(revocable_jti)
            && exp.saturating_add(i64::try_from(self.config.leeway).unwrap_or(0)) > now
        {
            self.store
                .append_revocation(
                    RevocationKind::Jti,
                    jti,
                    now,
                    exp.saturating_add(i64::try_from(self.config.leeway).unwrap_or(0)),
                )
                .await?;
            self.sync_revocations().await;
            self.audit(
                meta,
                "revoke",
                "success",
                None,
                None,
                Some(&claims.custom.client_id),
                serde_json::json!({"jti": jti, "token_type": "access_token"}),
            )
            .await;
        }
        Ok(())
    }

    /// The session a refresh token belongs to (live or not), without using it; `None` for a
    /// token that is not one of ours.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn refresh_token_session(&self, token: &str) -> Result<Option<SessionId>> {
        if !tokens::looks_like_refresh_token(token) {
            return Ok(None);
        }
        Ok(self
            .store
            .find_refresh_token(&tokens::refresh_token_hash(token))
            .await?
            .map(|(s, _)| s.id))
    }

    /// RFC 7662 introspection of an access or refresh token.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn introspect(&self, token: &str) -> Result<Introspection> {
        if tokens::looks_like_refresh_token(token) {
            let hash = tokens::refresh_token_hash(token);
            let now = self.now();
            return Ok(match self.store.find_refresh_token(&hash).await? {
                Some((s, None)) if s.is_live(now) => {
                    let user = self.store.find_user_by_id(s.user_id).await?;
                    match user {
                        Some(u) if !u.disabled => Introspection {
                            active: true,
                            token_use: Some("refresh_token"),
                            scope: Some(s.scope.clone()).filter(|s| !s.is_empty()),
                            client_id: Some(s.client_id.clone()),
                            username: Some(u.username.to_string()),
                            sub: Some(u.id.to_string()),
                            iss: Some(self.config.issuer.clone()),
                            exp: Some(s.idle_expires_at.min(s.absolute_expires_at)),
                            iat: Some(s.last_used_at),
                            sid: Some(s.id.to_string()),
                            ..Introspection::default()
                        },
                        _ => Introspection::default(),
                    }
                }
                _ => Introspection::default(),
            });
        }
        let Ok(ctx) = self.authenticate(token) else {
            return Ok(Introspection::default());
        };
        // RFC 7662 §2.2: `active` says the token has not expired. The leeway of
        // `authenticate` absorbs other hosts' clock skew; this answer is the issuer's own
        // clock, and an active token with an `exp` in the past would contradict itself.
        if ctx.expires_at <= self.now() {
            return Ok(Introspection::default());
        }
        let tutorial = self.config.profile == Profile::Tutorial;
        Ok(Introspection {
            active: true,
            token_type: Some("bearer"),
            token_use: Some("access_token"),
            // RFC 7662 §2.2: `scope` is a list of scope-tokens (RFC 6749 §3.3), so none
            // at all is no `scope`, not an empty string.
            scope: Some(ctx.scope().to_owned()).filter(|s| !s.is_empty()),
            client_id: Some(ctx.client_id().to_owned()),
            sub: Some(if tutorial {
                ctx.username().to_owned()
            } else {
                ctx.user_id().to_owned()
            }),
            // RFC 7662 §2.2: `username` names the resource owner who authorized the token.
            // A client-credentials token has none (its `sub` is the client, RFC 6749 §4.4),
            // and `client_id` already says which client it is.
            username: (!ctx.is_client).then(|| ctx.username().to_owned()),
            aud: (!tutorial).then(|| self.config.audience.clone()),
            iss: Some(self.config.issuer.clone()),
            exp: Some(ctx.expires_at),
            iat: Some(ctx.issued_at),
            jti: Some(ctx.jti()).filter(|j| !j.is_empty()).map(str::to_owned),
            sid: ctx.session_id().map(str::to_owned),
        })
    }

    /// Logs out the caller's session (its refresh token and access tokens die), or with
    /// `all`, every session of the user. Returns the number of sessions ended.
    ///
    /// # Errors
    /// [`AuthError::InvalidRequest`] for a token with neither a session nor a `jti` the
    /// revocation log can record (one that is not empty and is at most 255 bytes of visible
    /// ASCII): nothing could end it alone, and it is not recorded; storage failures.
    pub async fn logout(&self, ctx: &AccessContext, all: bool, meta: &RequestMeta) -> Result<u64> {
        let now = self.now();
        let n = if all {
            let user = UserId::parse(ctx.user_id())?;
            let n = self
                .store
                .revoke_user_sessions(
                    user,
                    None,
                    now,
                    "logout_all",
                    self.revocation_horizon(now),
                    false,
                )
                .await?;
            self.sync_revocations().await;
            n
        } else {
            let sid = ctx.session_id().and_then(|s| SessionId::parse(s).ok());
            let jti = revocable_jti(ctx.jti());
            if sid.is_none() && jti.is_none() {
                // Nothing names this token alone: answering success would leave it working.
                // (Every token Tessera signs has a `jti`; only a holder of the key makes one
                // without.)
                return Err(AuthError::InvalidRequest(
                    "this access token has no session and no usable `jti`, so it cannot be revoked alone; it ends at its `exp`".into(),
                ));
            }
            let mut n = 0;
            if let Some(sid) = sid {
                n = u64::from(self.revoke_session_internal(sid, "logout").await?.is_some());
            }
            // The presented access token dies too, even one without a session.
            if let Some(jti) = jti {
                self.store
                    .append_revocation(
                        RevocationKind::Jti,
                        jti,
                        now,
                        ctx.expires_at
                            .saturating_add(i64::try_from(self.config.leeway).unwrap_or(0)),
                    )
                    .await?;
                self.sync_revocations().await;
            }
            n
        };
        let user = UserId::parse(ctx.user_id()).ok();
        let user = match user {
            Some(id) => self.store.find_user_by_id(id).await.ok().flatten(),
            None => None,
        };
        self.audit(
            meta,
            "logout",
            "success",
            user.as_ref(),
            None,
            Some(ctx.client_id()),
            serde_json::json!({"all": all, "sessions": n}),
        )
        .await;
        Ok(n)
    }

    /// Revokes one session by id (admin or the owner). Returns the session if it was live.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn revoke_session(
        &self,
        id: SessionId,
        reason: &str,
        actor: &Actor,
        meta: &RequestMeta,
    ) -> Result<Option<Session>> {
        let s = self.revoke_session_internal(id, reason).await?;
        if let Some(s) = &s {
            let detail = actor.detail_with([("session", serde_json::json!(s.id.to_string()))]);
            let user = self.store.find_user_by_id(s.user_id).await.ok().flatten();
            self.audit(
                meta,
                "session_revoked",
                "success",
                user.as_ref(),
                None,
                Some(&s.client_id),
                detail,
            )
            .await;
        }
        Ok(s)
    }

    /// Revokes every session of a user. Returns how many were revoked.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn revoke_all_sessions(
        &self,
        user: &User,
        actor: &Actor,
        meta: &RequestMeta,
    ) -> Result<u64> {
        let now = self.now();
        let n = self
            .store
            .revoke_user_sessions(
                user.id,
                None,
                now,
                "revoked_all",
                self.revocation_horizon(now),
                false,
            )
            .await?;
        self.sync_revocations().await;
        let detail = actor.detail_with([("sessions", serde_json::json!(n))]);
        self.audit(
            meta,
            "sessions_revoked",
            "success",
            Some(user),
            None,
            None,
            detail,
        )
        .await;
        Ok(n)
    }

    async fn revoke_session_internal(
        &self,
        id: SessionId,
        reason: &str,
    ) -> Result<Option<Session>> {
        let now = self.now();
        let s = self
            .store
            .revoke_session(id, now, reason, self.revocation_horizon(now))
            .await?;
        self.sync_revocations().await;
        Ok(s)
    }

    /// Until when a revocation made now must be remembered: the longest an access token
    /// issued before now can live, plus the leeway verifiers allow.
    fn revocation_horizon(&self, now: i64) -> i64 {
        now.saturating_add(self.config.access_token_ttl)
            .saturating_add(i64::try_from(self.config.leeway).unwrap_or(0))
            .saturating_add(1)
    }

    async fn sync_revocations(&self) {
        if let Err(e) = self.revocations.sync(&self.store, self.now()).await {
            tracing::error!(target: "tessera::auth", error = %e, "revocation sync failed; will retry in the background");
        }
    }

    // ------------------------------------------------------------------ users

    /// Self-service registration (`registration = "open"`), with the `user` role.
    ///
    /// # Errors
    /// [`AuthError::RegistrationClosed`], [`AuthError::AlreadyExists`],
    /// [`AuthError::WeakPassword`], [`AuthError::InvalidRequest`].
    pub async fn register(
        &self,
        username: &str,
        password: Zeroizing<String>,
        meta: &RequestMeta,
    ) -> Result<User> {
        if !self.config.registration_open {
            return Err(AuthError::RegistrationClosed);
        }
        let username = Username::parse_new(username)?;
        self.insert_user(
            username,
            password,
            vec![Role::parse("user")?],
            &Actor::System,
            meta,
        )
        .await
    }

    /// Creates a user (admin API and CLI).
    ///
    /// # Errors
    /// [`AuthError::AlreadyExists`], [`AuthError::WeakPassword`], [`AuthError::InvalidRequest`].
    pub async fn create_user(
        &self,
        username: &str,
        password: Zeroizing<String>,
        roles: &[String],
        actor: &Actor,
        meta: &RequestMeta,
    ) -> Result<User> {
        let username = Username::parse_new(username)?;
        let roles = parse_roles(roles)?;
        self.insert_user(username, password, roles, actor, meta)
            .await
    }

    async fn insert_user(
        &self,
        username: Username,
        password: Zeroizing<String>,
        roles: Vec<Role>,
        actor: &Actor,
        meta: &RequestMeta,
    ) -> Result<User> {
        self.config
            .password_policy
            .check_blocking(password.clone(), Some(username.to_string()))
            .await?;
        if self.store.find_user_by_username(&username).await?.is_some() {
            return Err(AuthError::AlreadyExists("user"));
        }
        let hash = self.hasher.hash(password).await?;
        let now = self.now();
        let user = User {
            totp_enabled: false,
            id: UserId::new(),
            username,
            password_hash: hash,
            roles,
            disabled: false,
            created_at: now,
            updated_at: now,
            password_changed_at: now,
        };
        self.store
            .insert_user(&user)
            .await
            .map_err(|e| match e.kind() {
                StoreErrorKind::Conflict => AuthError::AlreadyExists("user"),
                _ => AuthError::Storage(e),
            })?;
        let detail = actor.detail_with([("roles", serde_json::json!(user.roles))]);
        self.audit(
            meta,
            "user_created",
            "success",
            Some(&user),
            None,
            None,
            detail,
        )
        .await;
        Ok(user)
    }

    /// Finds a user by username or id.
    ///
    /// # Errors
    /// [`AuthError::NotFound`]; storage failures.
    pub async fn find_user(&self, name_or_id: &str) -> Result<User> {
        let by_id = match UserId::parse(name_or_id) {
            Ok(id) => self.store.find_user_by_id(id).await?,
            Err(_) => None,
        };
        let user = match by_id {
            Some(u) => Some(u),
            None => match Username::parse(name_or_id) {
                Ok(name) => self.store.find_user_by_username(&name).await?,
                Err(_) => None,
            },
        };
        user.ok_or(AuthError::NotFound("user"))
    }

    /// All users.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn list_users(&self) -> Result<Vec<User>> {
        Ok(self.store.list_users().await?)
    }

    /// Replaces a user's roles. Takes effect in tokens at the next refresh or login.
    ///
    /// # Errors
    /// [`AuthError::NotFound`], [`AuthError::InvalidRequest`]; storage failures.
    pub async fn set_roles(
        &self,
        user: &User,
        roles: &[String],
        actor: &Actor,
        meta: &RequestMeta,
    ) -> Result<User> {
        let roles = parse_roles(roles)?;
        if !self
            .store
            .update_user_roles(user.id, &roles, self.now())
            .await?
        {
            return Err(AuthError::NotFound("user"));
        }
        let detail = actor.detail_with([("roles", serde_json::json!(roles))]);
        self.audit(
            meta,
            "roles_changed",
            "success",
            Some(user),
            None,
            None,
            detail,
        )
        .await;
        self.find_user(&user.id.to_string()).await
    }

    /// Disables or enables a user. Disabling ends every session and kills every access
    /// token already issued: by session, and by a user-wide cut-off that also catches a
    /// login racing the change. That cut-off has one-second resolution, like `iat`, so it
    /// covers the whole second of the disable: enabling answers only once the clock has
    /// left that second (at most about a second later), or a login right after it would
    /// get a token dead on arrival.
    ///
    /// # Errors
    /// [`AuthError::NotFound`]; storage failures.
    pub async fn set_disabled(
        &self,
        user: &User,
        disabled: bool,
        actor: &Actor,
        meta: &RequestMeta,
    ) -> Result<User> {
        let now = self.now();
        // Disabling ends the sessions, the access tokens (user-wide cut-off) and the logins
        // half done in the same transaction as the flag: apart, a failure part-way left the
        // user disabled with tokens still accepted until they expired.
        let found = if disabled {
            self.store
                .disable_user(user.id, now, self.revocation_horizon(now))
                .await?
        } else {
            self.store.update_user_disabled(user.id, false, now).await?
        };
        if !found {
            return Err(AuthError::NotFound("user"));
        }
        if disabled {
            self.sync_revocations().await;
        }
        if !disabled && let Some(cutoff) = self.revocations.user_cutoff(&user.id.to_string()) {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(1100);
            while self.now() <= cutoff && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        let event = if disabled {
            "user_disabled"
        } else {
            "user_enabled"
        };
        self.audit(
            meta,
            event,
            "success",
            Some(user),
            None,
            None,
            actor.detail(),
        )
        .await;
        self.find_user(&user.id.to_string()).await
    }

    /// Sets a new password (admin reset, CLI, or the user's own change), ending the user's
    /// other sessions (`keep` is the caller's own session, if any) and with them their access
    /// tokens (every user token carries its session id).
    ///
    /// # Errors
    /// [`AuthError::WeakPassword`], [`AuthError::NotFound`]; storage failures.
    pub async fn set_password(
        &self,
        user: &User,
        password: Zeroizing<String>,
        keep: Option<SessionId>,
        actor: &Actor,
        meta: &RequestMeta,
    ) -> Result<()> {
        self.config
            .password_policy
            .check_blocking(password.clone(), Some(user.username.to_string()))
            .await?;
        let hash = self.hasher.hash(password).await?;
        let now = self.now();
        // One transaction ends the other sessions (and with them their access tokens) and
        // the logins half done (password checked, code not yet sent) with the change. Apart,
        // a failure or a crash between them left the password changed and a session or
        // challenge of the old one alive, which nothing would end: the refresh grant does
        // not look at the password, and `password_changed_at` has one-second resolution,
        // too coarse to tell a challenge issued just before the change from one just after.
        if !self
            .store
            .change_password(user.id, &hash, now, keep, self.revocation_horizon(now))
            .await?
        {
            return Err(AuthError::NotFound("user"));
        }
        self.sync_revocations().await;
        self.audit(
            meta,
            "password_changed",
            "success",
            Some(user),
            None,
            None,
            actor.detail(),
        )
        .await;
        Ok(())
    }

    /// Deletes a user, their sessions and (through revocation) their tokens.
    ///
    /// # Errors
    /// [`AuthError::NotFound`]; storage failures.
    pub async fn delete_user(&self, user: &User, actor: &Actor, meta: &RequestMeta) -> Result<()> {
        let now = self.now();
        self.store
            .revoke_user_sessions(
                user.id,
                None,
                now,
                "user_deleted",
                self.revocation_horizon(now),
                true,
            )
            .await?;
        if !self.store.delete_user(user.id).await? {
            return Err(AuthError::NotFound("user"));
        }
        self.sync_revocations().await;
        self.audit(
            meta,
            "user_deleted",
            "success",
            Some(user),
            None,
            None,
            actor.detail(),
        )
        .await;
        Ok(())
    }

    /// Live sessions, optionally of one user.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn list_sessions(&self, user: Option<&User>) -> Result<Vec<Session>> {
        Ok(self
            .store
            .list_live_sessions(user.map(|u| u.id), self.now())
            .await?)
    }

    // ------------------------------------------------------------------ keys

    /// Rotates the signing key (published now, signing after the publish delay, or at once
    /// with `immediate`).
    ///
    /// # Errors
    /// [`AuthError::InvalidRequest`] in HMAC mode; storage failures.
    pub async fn rotate_keys(&self, immediate: bool, actor: &Actor) -> Result<KeyInfo> {
        let info = self.keys.rotate(&self.store, self.now(), immediate).await?;
        let detail = actor.detail_with([
            ("kid", serde_json::json!(info.kid)),
            ("activates_at", serde_json::json!(info.activates_at)),
        ]);
        self.audit(
            &RequestMeta::default(),
            "key_rotated",
            "success",
            None,
            None,
            None,
            detail,
        )
        .await;
        Ok(info)
    }

    /// Emergency revocation of a signing key: tokens it signed stop verifying on every
    /// instance (within a second); if it was signing, a new key takes over at once.
    ///
    /// # Errors
    /// [`AuthError::NotFound`]; storage failures.
    pub async fn revoke_key(&self, kid: &str, actor: &Actor) -> Result<()> {
        self.keys.revoke(&self.store, kid, self.now()).await?;
        let detail = actor.detail_with([("kid", serde_json::json!(kid))]);
        self.audit(
            &RequestMeta::default(),
            "key_revoked",
            "success",
            None,
            None,
            None,
            detail,
        )
        .await;
        Ok(())
    }

    /// The algorithm tokens are signed with now.
    pub fn signing_algorithm(&self) -> Algorithm {
        self.keys.current().signer.algorithm()
    }

    // ------------------------------------------------------------------ helpers

    fn grant_scope(&self, client: &ClientPolicy, requested: Option<&str>) -> Result<String> {
        match requested.map(normalize_scope) {
            None => Ok(client.scopes.join(" ")),
            Some(s) if s.is_empty() => Ok(client.scopes.join(" ")),
            Some(s) => {
                if let Some(bad) = s
                    .split_whitespace()
                    .find(|w| !client.scopes.iter().any(|c| c == w))
                {
                    return Err(AuthError::InvalidScope(truncate(bad, 64)));
                }
                Ok(s)
            }
        }
    }

    /// Appends an audit event (best effort: a failure is logged as an error, never hidden).
    #[allow(
        clippy::too_many_arguments,
        reason = "one call shape for every audit site"
    )]
    pub async fn audit(
        &self,
        meta: &RequestMeta,
        event: &str,
        outcome: &str,
        user: Option<&User>,
        username: Option<String>,
        client_id: Option<&str>,
        detail: serde_json::Value,
    ) {
        let e = self.audit_event(meta, event, outcome, user, username, client_id, detail);
        // Logged first: the line stays even if the write fails or the request goes away
        // while it runs.
        log_audit(&e);
        if let Err(err) = self.store.append_audit(&e, audit::chain_hash).await {
            tracing::error!(target: "tessera::auth", error = %err, event = %e.event, "could not write audit event");
        }
        self.observe_audit(&e);
    }

    /// What the audit log records for a username that names no user: `unknown:` and the
    /// first 12 bytes, in hex, of HMAC-SHA256 of the name (lowercased, as usernames are
    /// compared) under a key derived from the master key. The same name always gives the
    /// same text, on every instance; the text does not give the name back, and without the
    /// master key a stolen log cannot test guesses. `:` is never part of a username.
    #[must_use]
    pub fn unknown_username(&self, typed: &str) -> String {
        let mac = tessera_jose::crypto::hmac_sha256(
            self.unknown_username_key.as_slice(),
            typed.to_lowercase().as_bytes(),
        );
        let mut text = String::from("unknown:");
        for b in mac.iter().take(12) {
            text.push_str(&format!("{b:02x}"));
        }
        text
    }

    /// The throttle key of a username's password checks (logins and password changes): one
    /// lockout per name, whether or not a user has it (`username:` and 64 hex digits).
    ///
    /// # Security
    /// The name is not stored as typed: what is typed in the username field is often a
    /// password (OWASP Logging Cheat Sheet), and a throttle row lives as long as its
    /// failures count. The key holds HMAC-SHA256 of the name, lowercased as usernames are
    /// compared, under a key derived from the master key: the same on every instance
    /// sharing the database (the master key is checked against the database at start), so
    /// the lockout holds across them, and without the master key a copy of the table
    /// cannot test guesses. Rows of the earlier `user:<name>` form are deleted by the
    /// migration that introduced this one, and by every prune after it (an instance of
    /// an earlier version may still write them during a rolling upgrade); nothing reads
    /// them.
    #[must_use]
    pub fn username_throttle_key(&self, username: &str) -> String {
        let mac = tessera_jose::crypto::hmac_sha256(
            self.throttle_name_key.as_slice(),
            username.to_lowercase().as_bytes(),
        );
        let mut key = String::with_capacity(USERNAME_THROTTLE_PREFIX.len() + 2 * mac.len());
        key.push_str(USERNAME_THROTTLE_PREFIX);
        for b in mac {
            key.push_str(&format!("{b:02x}"));
        }
        key
    }

    /// An audit event as [`Auth::audit`] records it.
    #[allow(clippy::too_many_arguments)]
    fn audit_event(
        &self,
        meta: &RequestMeta,
        event: &str,
        outcome: &str,
        user: Option<&User>,
        username: Option<String>,
        client_id: Option<&str>,
        detail: serde_json::Value,
    ) -> AuditEvent {
        AuditEvent {
            at: self.now(),
            event: event.to_owned(),
            outcome: outcome.to_owned(),
            user_id: user.map(|u| u.id.to_string()),
            username: username.or_else(|| user.map(|u| u.username.to_string())),
            client_id: client_id.map(str::to_owned),
            ip: meta.ip.clone(),
            user_agent: meta.user_agent.clone(),
            request_id: meta.request_id.clone(),
            detail,
        }
    }

    /// Tells the observer (the metrics) about an audit event.
    fn observe_audit(&self, e: &AuditEvent) {
        if let Some(observer) = &self.observer {
            observer.observe(e);
        }
    }
}

/// An audit event's line in the log, under the target `audit`.
fn log_audit(e: &AuditEvent) {
    tracing::info!(target: "audit", event = %e.event, outcome = %e.outcome, user = e.username.as_deref(), client = e.client_id.as_deref(), ip = e.ip.as_deref(), request_id = e.request_id.as_deref(), "audit");
}

fn parse_roles(roles: &[String]) -> Result<Vec<Role>> {
    if roles.len() > MAX_ROLES {
        return Err(AuthError::InvalidRequest(format!(
            "at most {MAX_ROLES} roles"
        )));
    }
    Role::parse_all(roles)
}

/// The longest `jti` the revocation log records. Tessera's own are 22 characters; a longer
/// one comes from a token signed outside the server.
const MAX_JTI_LEN: usize = 255;

/// `jti` if it can name one token in the revocation log: not empty (an empty identifier
/// names nothing, RFC 7519 §4.1.7, and is treated as absent when tokens are checked), at
/// most [`MAX_JTI_LEN`] bytes, visible ASCII (it is shown in the feed and the audit log).
fn revocable_jti(jti: &str) -> Option<&str> {
    (!jti.is_empty() && jti.len() <= MAX_JTI_LEN && jti.bytes().all(|b| b.is_ascii_graphic()))
        .then_some(jti)
}

/// How [`Auth::username_throttle_key`]'s keys begin. Not `user:`, the form that held the
/// name as typed, so that rows of that form can be told apart and deleted.
pub(crate) const USERNAME_THROTTLE_PREFIX: &str = "username:";

/// The scope a refresh may ask for (RFC 6749 §6): `requested`, normalized, if every value
/// of it is in the session's `granted` scope. A blank one (only spaces) names no scope
/// token (§3.3 needs at least one) and means the session's, as an omitted one does, and as
/// it does in the password grant.
fn check_narrower_scope(granted: &str, requested: &str) -> Result<String> {
    let allowed: Vec<&str> = granted.split_whitespace().collect();
    let wanted = normalize_scope(requested);
    if wanted.is_empty() {
        return Ok(granted.to_owned());
    }
    if let Some(bad) = wanted.split_whitespace().find(|s| !allowed.contains(s)) {
        return Err(AuthError::InvalidScope(truncate(bad, 64)));
    }
    Ok(wanted)
}

/// Splits on spaces, drops duplicates, keeps order (RFC 6749 §3.3).
fn normalize_scope(s: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for w in s.split_whitespace() {
        if !out.contains(&w) {
            out.push(w);
        }
    }
    out.join(" ")
}

/// Truncates text for logs and audit rows, replacing control characters (NUL bytes cannot
/// be stored in PostgreSQL text, and newlines would forge log lines).
fn truncate(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_normalized() {
        assert_eq!(normalize_scope("  b a  b "), "b a");
        assert_eq!(normalize_scope(""), "");
    }
}
