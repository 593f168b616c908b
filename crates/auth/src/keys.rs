//! Signing-key lifecycle: generate → published as "next" → active (signs) → retired (still
//! published, still verifies) → expired (gone from the JWKS) — or revoked in an emergency.
//!
//! A key's state is a pure function of its stored timestamps and the current time, so every
//! instance reading the same rows signs with the same key and publishes the same JWKS. The
//! current ring is swapped atomically ([`arc_swap`]) so token checks never wait on a reload.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tessera_jose::crypto::SealingKey;
use tessera_jose::{Algorithm, Jwk, JwkSet, KeySet, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::error::{AuthError, Result};
use crate::model::StoredKey;
use crate::store::{KeyStore, RotateGuard};

/// Where signing keys come from.
pub enum KeySource {
    /// One HMAC secret from configuration (HS* mode). Never published, not rotated here.
    Hmac(SigningKey),
    /// Asymmetric keys stored in the database, private parts sealed under the master key.
    Stored {
        /// The algorithm new keys are generated for.
        alg: Algorithm,
        /// RSA modulus size for generated RSA keys.
        rsa_bits: usize,
        /// The master key that seals private keys at rest.
        sealing: SealingKey,
    },
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hmac(k) => f.debug_tuple("Hmac").field(&k.algorithm()).finish(),
            Self::Stored { alg, .. } => f
                .debug_struct("Stored")
                .field("alg", alg)
                .finish_non_exhaustive(),
        }
    }
}

/// Timing of the key lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySchedule {
    /// A new key is published this long before it signs (≥ the JWKS cache lifetime).
    pub publish_ahead: i64,
    /// A retired key stays published this long (≥ the access-token lifetime + leeway).
    pub retain_after_retire: i64,
    /// `Cache-Control: max-age` for the JWKS (capped at `publish_ahead`).
    pub jwks_max_age: i64,
}

/// The lifecycle state of a key at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published, not yet signing.
    Next,
    /// Signing.
    Active,
    /// No longer signing; still verifies and is published until it expires.
    Retired,
    /// Every token it signed has expired; it can be deleted.
    Expired,
    /// Revoked: tokens it signed no longer verify.
    Revoked,
}

impl KeyState {
    /// Lowercase name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }

    /// The state of `key` at `now`.
    #[must_use]
    pub fn of(key: &StoredKey, now: i64) -> Self {
        if key.revoked_at.is_some_and(|t| t <= now) {
            Self::Revoked
        } else if key.expires_at.is_some_and(|t| t <= now) {
            Self::Expired
        } else if key.retires_at.is_some_and(|t| t <= now) {
            Self::Retired
        } else if key.activates_at <= now {
            Self::Active
        } else {
            Self::Next
        }
    }
}

/// A summary of one key, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: String,
    /// State at the time of the listing.
    pub state: KeyState,
    /// Creation time.
    pub created_at: i64,
    /// Activation time.
    pub activates_at: i64,
    /// Retirement time, if scheduled.
    pub retires_at: Option<i64>,
    /// Removal from the JWKS, if scheduled.
    pub expires_at: Option<i64>,
}

/// The keys in force at one moment.
#[derive(Debug)]
pub struct KeyRing {
    /// The key that signs new tokens.
    pub signer: SigningKey,
    /// Every key whose tokens still verify.
    pub verifier: KeySet,
    /// The public JWKS document (JSON), precomputed.
    pub jwks_json: String,
    /// Seconds until the ring must be rebuilt (the next scheduled state change).
    pub next_change: Option<i64>,
    /// Listing of all stored keys.
    pub keys: Vec<KeyInfo>,
    /// The rows this ring was built from (sorted) and when: a reload that reads the same
    /// rows before `next_change` keeps this ring instead of unsealing and parsing every key
    /// again (an RSA private key check alone is milliseconds of CPU).
    rows: Vec<StoredKey>,
    built_at: i64,
}

impl KeyRing {
    /// True if the ring built from `rows` at `now` would be this one.
    fn is_current(&self, rows: &[StoredKey], now: i64) -> bool {
        self.rows == rows && self.next_change.is_none_or(|d| now < self.built_at + d)
    }
}

/// Holds the current [`KeyRing`] and performs the lifecycle.
#[derive(Debug)]
pub struct KeyManager {
    source: KeySource,
    schedule: KeySchedule,
    ring: ArcSwap<KeyRing>,
    /// The server's (see [`KeyManager::load`]): its `signing.alg` is the one in force.
    create: bool,
}

impl KeyManager {
    /// Loads keys. With `create` (the server), generates the first one on an empty database
    /// (active at once) and rotates to the configured algorithm if no usable key has it.
    /// Without it (an administrative command), the keys are left as they are, and a database
    /// with no usable key keeps a placeholder ring ([`KeyRing::keys`] empty, its signer
    /// published nowhere) until a server creates one. A command's `signing.alg` need not be
    /// the servers' (the default, say): it used to schedule a key of its own algorithm that
    /// every instance then signed with, and to create the first key with it when run
    /// before the first `serve`.
    ///
    /// # Errors
    /// Storage failures; [`AuthError::Internal`] if a stored key cannot be unsealed (wrong
    /// master key).
    pub async fn load<S: KeyStore>(
        store: &S,
        source: KeySource,
        schedule: KeySchedule,
        now: i64,
        create: bool,
    ) -> Result<Self> {
        let ring = build_ring(store, &source, now).await?;
        let manager = Self {
            source,
            schedule,
            ring: ArcSwap::from_pointee(placeholder_ring()?),
            create,
        };
        match ring {
            Some(ring) => manager.ring.store(Arc::new(ring)),
            None if !create => {}
            None => {
                // First start (or every key revoked): create one, unless another instance
                // starting at the same time already did.
                manager
                    .rotate_guarded(store, now, true, RotateGuard::NoUsableKey, None)
                    .await?;
            }
        }
        if let KeySource::Stored { alg, .. } = &manager.source
            && create
        {
            let ring = manager.current();
            let wanted_published = ring.keys.iter().any(|k| {
                k.alg == alg.as_str() && matches!(k.state, KeyState::Active | KeyState::Next)
            });
            if !wanted_published {
                tracing::info!(target: "tessera::keys", alg = %alg, "signing algorithm changed; rotating to a new key");
                manager.rotate(store, now, false).await?;
            }
        }
        Ok(manager)
    }

    /// The ring in force.
    #[must_use]
    pub fn current(&self) -> Arc<KeyRing> {
        self.ring.load_full()
    }

    /// The ring in force, for a moment: no reference count is written (the ring's count is
    /// one cache line every request would otherwise write). Hold it briefly: each thread
    /// has a few such guards before arc-swap falls back to counting.
    #[must_use]
    pub fn current_guard(&self) -> arc_swap::Guard<Arc<KeyRing>> {
        self.ring.load()
    }

    /// The schedule.
    #[must_use]
    pub fn schedule(&self) -> KeySchedule {
        self.schedule
    }

    /// `max-age` for the JWKS response.
    #[must_use]
    pub fn jwks_max_age(&self) -> i64 {
        self.schedule
            .jwks_max_age
            .min(self.schedule.publish_ahead)
            .max(0)
    }

    /// Rebuilds the ring from storage (after a rotation elsewhere, or when the schedule
    /// says a state changed).
    ///
    /// # Errors
    /// Storage or unsealing failures; the previous ring stays in force.
    pub async fn reload<S: KeyStore>(&self, store: &S, now: i64) -> Result<()> {
        let KeySource::Stored { sealing, .. } = &self.source else {
            // One key from configuration: nothing in storage can change it.
            return Ok(());
        };
        let rows = sorted_rows(store).await?;
        if self.current().is_current(&rows, now) {
            return Ok(());
        }
        if let Some(ring) = ring_from_rows(rows, sealing, now)? {
            self.ring.store(Arc::new(ring));
        }
        Ok(())
    }

    /// Every stored key with its state at `now`, in lifecycle order, read from storage.
    /// [`KeyRing::keys`] lists what the ring in force was built from, and a database where
    /// no key can sign (every key revoked, say) builds no ring: an administrative command
    /// keeps the empty placeholder, which would hide those keys.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn list<S: KeyStore>(&self, store: &S, now: i64) -> Result<Vec<KeyInfo>> {
        Ok(sorted_rows(store)
            .await?
            .iter()
            .map(|k| info(k, now))
            .collect())
    }

    /// Creates a new key. It is published at once and signs after `publish_ahead`
    /// (immediately with `immediate`); the key signing now retires when it activates and
    /// leaves the JWKS once every token it signed has expired.
    ///
    /// The server's key has its configured `signing.alg`. An administrative command's has
    /// the algorithm of the newest usable key (the one the servers sign with, or are about
    /// to): its own `signing.alg` need not be the servers', and a rotation run without their
    /// configuration (the default RS256 against ES256 servers) switched every instance to
    /// it, as `keys revoke` did before it kept the revoked key's algorithm. With no usable
    /// key (every one revoked or expired), it has the algorithm of the newest stored key,
    /// the last the servers signed with: that is how a command restores a signer.
    ///
    /// # Errors
    /// [`AuthError::InvalidRequest`] in HMAC mode, or for a command when the database has
    /// no key at all yet (the first is the server's to create); storage failures.
    pub async fn rotate<S: KeyStore>(
        &self,
        store: &S,
        now: i64,
        immediate: bool,
    ) -> Result<KeyInfo> {
        let alg = if self.create || !matches!(self.source, KeySource::Stored { .. }) {
            None
        } else {
            // From storage, not the ring: a ring is built only where some key signs.
            let keys = self.list(store, now).await?;
            let newest = |usable: bool| {
                keys.iter()
                    .filter(|k| !usable || matches!(k.state, KeyState::Active | KeyState::Next))
                    .max_by(|a, b| (a.activates_at, &a.kid).cmp(&(b.activates_at, &b.kid)))
            };
            let newest = newest(true).or_else(|| newest(false)).ok_or_else(|| {
                AuthError::InvalidRequest(
                    "the database has no signing key yet: start `tessera serve` once (it \
                     creates the first key with its `signing.alg`), then rotate"
                        .into(),
                )
            })?;
            Some(newest.alg.parse::<Algorithm>().map_err(|_| {
                AuthError::Internal(format!(
                    "stored key {} has unknown alg {}",
                    newest.kid, newest.alg
                ))
            })?)
        };
        self.rotate_guarded(store, now, immediate, RotateGuard::Always, alg)
            .await?
            .ok_or_else(|| AuthError::Internal("an unguarded rotation was refused".into()))
    }

    /// Rotates on schedule: when the signing key has signed for `rotate_every` (minus the
    /// publish-ahead delay, so the successor signs exactly on time) and no successor is
    /// pending. Safe to call from every instance: the database lets one of them do it.
    /// Returns the new key if this call created it.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn rotate_if_due<S: KeyStore>(
        &self,
        store: &S,
        now: i64,
        rotate_every: i64,
    ) -> Result<Option<KeyInfo>> {
        if !matches!(self.source, KeySource::Stored { .. }) || rotate_every <= 0 {
            return Ok(None);
        }
        let ring = self.current();
        let pending = ring.keys.iter().any(|k| k.state == KeyState::Next);
        let Some(active) = ring
            .keys
            .iter()
            .filter(|k| k.state == KeyState::Active)
            .max_by_key(|k| k.activates_at)
        else {
            return Ok(None);
        };
        let due = active
            .activates_at
            .saturating_add(rotate_every)
            .saturating_sub(self.schedule.publish_ahead);
        if pending || now < due {
            return Ok(None);
        }
        let created = self
            .rotate_guarded(store, now, false, RotateGuard::NoPendingKey, None)
            .await?;
        if let Some(k) = &created {
            tracing::info!(target: "tessera::keys", kid = %k.kid, activates_at = k.activates_at, "scheduled key rotation");
        }
        Ok(created)
    }

    async fn rotate_guarded<S: KeyStore>(
        &self,
        store: &S,
        now: i64,
        immediate: bool,
        guard: RotateGuard,
        alg_of_key: Option<Algorithm>,
    ) -> Result<Option<KeyInfo>> {
        let KeySource::Stored {
            alg,
            rsa_bits,
            sealing,
        } = &self.source
        else {
            return Err(AuthError::InvalidRequest(
                "HMAC signing keys come from `signing.secret`; change the secret to rotate (every token becomes invalid)".into(),
            ));
        };
        let (alg, rsa_bits) = (alg_of_key.unwrap_or(*alg), *rsa_bits);
        // RSA generation takes a while; keep it off the async runtime.
        let key =
            tokio::task::spawn_blocking(move || SigningKey::generate_with_rsa_bits(alg, rsa_bits))
                .await
                .map_err(AuthError::internal)?
                .map_err(AuthError::internal)?;
        let kid = key.kid().unwrap_or_default().to_owned();
        let secret = key.to_secret_bytes().map_err(AuthError::internal)?;
        let sealed = sealing
            .seal(kid.as_bytes(), &secret)
            .map_err(AuthError::internal)?;
        let public_jwk = key.to_public_jwk().map_err(AuthError::internal)?.to_json();
        let activates_at = if immediate {
            now
        } else {
            now + self.schedule.publish_ahead
        };
        let stored = StoredKey {
            kid: kid.clone(),
            alg: alg.to_string(),
            sealed_private_key: sealed,
            public_jwk,
            created_at: now,
            activates_at,
            retires_at: None,
            expires_at: None,
            revoked_at: None,
        };
        if !store
            .rotate_signing_key(&stored, self.schedule.retain_after_retire, guard)
            .await?
        {
            // Another instance got there first: use its key.
            self.reload(store, now).await?;
            return Ok(None);
        }
        tracing::info!(target: "tessera::keys", kid = %kid, alg = %alg, activates_at, "signing key created");
        self.reload(store, now).await?;
        Ok(Some(info(&stored, now)))
    }

    /// Revokes a key at once: tokens it signed stop verifying. If it was signing, a new
    /// key of its algorithm is activated immediately.
    ///
    /// # Errors
    /// [`AuthError::NotFound`] for an unknown kid; storage failures.
    pub async fn revoke<S: KeyStore>(&self, store: &S, kid: &str, now: i64) -> Result<()> {
        let rows = sorted_rows(store).await?;
        if !rows.iter().any(|k| k.kid == kid) {
            return Err(AuthError::NotFound("signing key"));
        }
        // Whether it signs is read from the stored rows (what every instance signs with),
        // not from this process's ring, which may not have caught up with a rotation made
        // elsewhere. The signer is the active key activated last (`ring_from_rows`).
        let signing = rows
            .iter()
            .filter(|k| KeyState::of(k, now) == KeyState::Active)
            .max_by(|a, b| (a.activates_at, &a.kid).cmp(&(b.activates_at, &b.kid)))
            .filter(|k| k.kid == kid);
        if let Some(signing) = signing {
            // The successor has the revoked key's algorithm, the one the servers sign with
            // (and their verifiers may be pinned to), not this process's `signing.alg`: an
            // emergency revocation run without the servers' configuration (the default
            // RS256 against ES256 servers) switched every instance to its algorithm.
            let alg: Algorithm = signing.alg.parse().map_err(|_| {
                AuthError::Internal(format!(
                    "stored key {} has unknown alg {}",
                    signing.kid, signing.alg
                ))
            })?;
            // The successor first, then the revocation. The other way round left a moment
            // (the key generation: up to seconds for RSA) in which the stored keys had no
            // signer, and every instance, finding none, kept its ring: signing with the
            // revoked key and accepting its tokens, for good if this process stopped
            // before the successor was stored. Now the revoked key retires (signs no more)
            // before it is revoked, and a failure in between leaves it retired.
            self.rotate_guarded(store, now, true, RotateGuard::Always, Some(alg))
                .await?
                .ok_or_else(|| AuthError::Internal("an unguarded rotation was refused".into()))?;
        }
        // Re-read: the rotation has just rescheduled this key's retirement.
        let mut key = store
            .list_signing_keys()
            .await?
            .into_iter()
            .find(|k| k.kid == kid)
            .ok_or(AuthError::NotFound("signing key"))?;
        key.revoked_at = Some(now);
        store.update_signing_key(&key).await?;
        self.reload(store, now).await?;
        Ok(())
    }

    /// Deletes keys that have expired (no token they signed can still be valid).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn delete_expired<S: KeyStore>(&self, store: &S, now: i64) -> Result<u32> {
        let mut n = 0;
        for k in store.list_signing_keys().await? {
            if KeyState::of(&k, now) == KeyState::Expired
                && store.delete_signing_key(&k.kid).await?
            {
                n += 1;
            }
        }
        Ok(n)
    }
}

fn info(k: &StoredKey, now: i64) -> KeyInfo {
    KeyInfo {
        kid: k.kid.clone(),
        alg: k.alg.clone(),
        state: KeyState::of(k, now),
        created_at: k.created_at,
        activates_at: k.activates_at,
        retires_at: k.retires_at,
        expires_at: k.expires_at,
    }
}

/// A throwaway ring used only while the first real one is built.
fn placeholder_ring() -> Result<KeyRing> {
    let signer = SigningKey::generate(Algorithm::Hs256).map_err(AuthError::internal)?;
    Ok(KeyRing {
        verifier: KeySet::default(),
        signer,
        jwks_json: r#"{"keys":[]}"#.into(),
        next_change: None,
        keys: Vec::new(),
        rows: Vec::new(),
        built_at: 0,
    })
}

async fn build_ring<S: KeyStore>(
    store: &S,
    source: &KeySource,
    now: i64,
) -> Result<Option<KeyRing>> {
    match source {
        KeySource::Hmac(key) => Ok(Some(KeyRing {
            verifier: KeySet::new([key.verifying_key()]).map_err(AuthError::internal)?,
            signer: key.clone(),
            jwks_json: r#"{"keys":[]}"#.into(),
            next_change: None,
            keys: Vec::new(),
            rows: Vec::new(),
            built_at: now,
        })),
        KeySource::Stored { sealing, .. } => {
            ring_from_rows(sorted_rows(store).await?, sealing, now)
        }
    }
}

/// Every stored key, oldest activation first: JWKS and listings read in lifecycle order.
async fn sorted_rows<S: KeyStore>(store: &S) -> Result<Vec<StoredKey>> {
    let mut stored = store.list_signing_keys().await?;
    stored.sort_by(|a, b| {
        (a.activates_at, a.created_at, &a.kid).cmp(&(b.activates_at, b.created_at, &b.kid))
    });
    Ok(stored)
}

/// The ring in force at `now` given the stored keys; `None` if none of them can sign.
fn ring_from_rows(
    stored: Vec<StoredKey>,
    sealing: &SealingKey,
    now: i64,
) -> Result<Option<KeyRing>> {
    let mut signer: Option<(i64, &StoredKey)> = None;
    let mut verifiers: Vec<VerifyingKey> = Vec::new();
    let mut public: Vec<Jwk> = Vec::new();
    let mut next_change: Option<i64> = None;
    let mut note = |t: Option<i64>| {
        if let Some(t) = t.filter(|t| *t > now) {
            next_change = Some(next_change.map_or(t, |n: i64| n.min(t)));
        }
    };
    for k in &stored {
        note(Some(k.activates_at));
        note(k.retires_at);
        note(k.expires_at);
        let state = KeyState::of(k, now);
        if matches!(state, KeyState::Expired | KeyState::Revoked) {
            continue;
        }
        let alg: Algorithm = k.alg.parse().map_err(|_| {
            AuthError::Internal(format!("stored key {} has unknown alg {}", k.kid, k.alg))
        })?;
        let jwk = Jwk::from_json(&k.public_jwk).map_err(AuthError::internal)?;
        verifiers.push(VerifyingKey::from_jwk(&jwk, Some(alg)).map_err(AuthError::internal)?);
        public.push(jwk);
        if state == KeyState::Active
            && signer.is_none_or(|(t, s)| (k.activates_at, &k.kid) > (t, &s.kid))
        {
            signer = Some((k.activates_at, k));
        }
    }
    let Some((_, active)) = signer else {
        return Ok(None);
    };
    let alg: Algorithm = active.alg.parse().map_err(AuthError::internal)?;
    let der: Zeroizing<Vec<u8>> = sealing
        .open(active.kid.as_bytes(), &active.sealed_private_key)
        .map_err(|e| {
            AuthError::Internal(format!("cannot unseal signing key {}: {e}", active.kid))
        })?;
    let signer = SigningKey::from_secret_bytes(alg, &der)
        .map_err(AuthError::internal)?
        .with_kid(active.kid.clone());
    let jwks_json = serde_json::to_string(&JwkSet { keys: public }).map_err(AuthError::internal)?;
    Ok(Some(KeyRing {
        signer,
        verifier: KeySet::new(verifiers).map_err(AuthError::internal)?,
        jwks_json,
        next_change: next_change.map(|t| t - now),
        keys: stored.iter().map(|k| info(k, now)).collect(),
        rows: stored,
        built_at: now,
    }))
}
