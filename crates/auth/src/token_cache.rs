//! The verified-token cache: an access token presented again costs a lookup instead of a
//! signature verification (15 µs for RS256, 30–50 µs for EdDSA and ES256).
//!
//! # What is cached, and what is checked on every hit
//!
//! The key is the exact token: a fast keyed hash (foldhash, seeded from the CSPRNG) picks
//! the slot, and the stored token bytes are compared in full before an entry is used, so a
//! token that differs in any byte (or collides in the hash) is a miss and goes through full
//! verification. Only tokens that passed full verification are inserted, so nobody can fill
//! the cache with made-up values.
//!
//! The hash covers the token's length and its last 64 bytes: the signature, or its end,
//! for every algorithm (43 characters for HS256, 86 for ES256 and EdDSA, 342 for RS256).
//! Hashing the whole of a 600-byte RS256 token cost more than the rest of the lookup. Two
//! tokens with the same tail share a slot and the full comparison tells them apart; tokens
//! that passed verification carry different signatures, so their slots collide no more
//! often than their 64-bit hashes do.
//!
//! The value is the [`AccessContext`] the verification produced, plus the token's `exp`,
//! `nbf` and `iat` and the `kid` of the key that verified it. A hit is not a verdict: the
//! caller re-checks, on every hit, the time claims against the clock (RFC 7519 §4.1.4,
//! §4.1.5, §4.1.6, with the same leeway as full verification), that the verifying key is
//! still in the key ring (a revoked signing key stops its tokens at once), and the
//! in-memory revocation state (the same check the uncached path makes). See
//! [`crate::Auth::authenticate`].
//!
//! # Memory
//!
//! At most `capacity` entries, split over up to 64 independently locked shards (so the two
//! cores rarely wait on each other; lookups share a shard's read lock). A full shard evicts with the CLOCK algorithm (second
//! chance, an approximation of LRU): expired entries and entries not used since the hand
//! last passed go first. Lookups allocate nothing; an insert (a miss) copies the token and
//! the context once.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_utils::sync::ShardedLock;

use crate::context::SharedToken;
use crate::service::AccessContext;

/// How many bytes at the end of a token the slot hash covers.
const HASHED_TAIL: usize = 64;

/// The most shards; fewer when the capacity is small, so the bound stays exact.
const MAX_SHARDS: usize = 64;

/// A verified token's facts, as cached.
#[derive(Debug)]
pub(crate) struct CachedToken {
    /// The caller; it also holds the token and the `kid` (one allocation for all the text
    /// a hit reads; see [`AccessContext`]).
    pub(crate) context: Arc<AccessContext>,
    /// `exp`.
    pub(crate) exp: i64,
    /// `nbf`, if the token had one.
    pub(crate) nbf: Option<i64>,
    /// `iat`.
    pub(crate) iat: Option<i64>,
}

/// A bounded map from exact token bytes to what their verification established.
#[derive(Debug)]
pub struct VerifiedTokenCache {
    /// Read-locked on every lookup: a `ShardedLock`, whose readers each lock a lock of their
    /// own thread's, so hits on one hot token from several cores do not fight over one lock
    /// word (inserts, after a full verification, lock them all).
    shards: Box<[ShardedLock<Shard>]>,
    shard_capacity: usize,
    shard_bits: u32,
    hasher: foldhash::quality::SeedableRandomState,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<u64, Entry, BuildHasherDefault<PrehashedKey>>,
    /// The CLOCK: keys of `map`, the hand at the front.
    clock: VecDeque<u64>,
}

#[derive(Debug)]
struct Entry {
    /// The token, reachable from the entry as well as from the context (the same text,
    /// shared): a lookup reads it, and the context (which the re-checks read), both straight
    /// from the entry and so at the same time, rather than the context first and then the
    /// token through it. With many distinct tokens in use both are usually cache misses; see
    /// docs/BENCHMARKS.md.
    token: SharedToken,
    value: CachedToken,
    /// Set on every hit, cleared when the clock hand passes. Atomic, so that hits share the
    /// shard's read lock (with a single hot token, both cores hit the same shard).
    referenced: AtomicBool,
}

impl VerifiedTokenCache {
    /// A cache holding at most `capacity` tokens (0 disables it).
    ///
    /// # Errors
    /// [`crate::AuthError::Internal`] if the CSPRNG fails while seeding the hash.
    pub fn new(capacity: usize) -> crate::Result<Self> {
        let seed = tessera_jose::crypto::random_array::<8>().map_err(crate::AuthError::internal)?;
        let shards = if capacity == 0 {
            1
        } else {
            // The largest power of two ≤ min(64, capacity): every shard holds at least one.
            let limit = capacity.min(MAX_SHARDS);
            1 << (usize::BITS - 1 - limit.leading_zeros())
        };
        Ok(Self {
            shards: (0..shards)
                .map(|_| ShardedLock::new(Shard::default()))
                .collect(),
            shard_capacity: capacity / shards,
            shard_bits: shards.trailing_zeros(),
            hasher: foldhash::quality::SeedableRandomState::with_seed(
                u64::from_le_bytes(seed),
                foldhash::SharedSeed::global_random(),
            ),
        })
    }

    /// The most entries it holds.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.shard_capacity * self.shards.len()
    }

    /// Entries held now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().map_or(0, |s| s.map.len()))
            .sum()
    }

    /// True when it holds nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Looks `token` up and, on an exact match, runs `check` on the entry (under the shard's
    /// read lock, so keep it short). `None` on a miss.
    pub(crate) fn with_hit<R>(
        &self,
        token: &[u8],
        check: impl FnOnce(&CachedToken) -> R,
    ) -> Option<R> {
        if self.shard_capacity == 0 {
            return None;
        }
        let hash = self.hash(token);
        let shard = self.shard(hash)?.read().ok()?;
        let entry = shard.map.get(&hash)?;
        // The hash only picks the slot: the whole token must match.
        if entry.token.as_bytes() != token {
            return None;
        }
        // Written only when it changes, so steady hits leave the cache line shared.
        if !entry.referenced.load(Ordering::Relaxed) {
            entry.referenced.store(true, Ordering::Relaxed);
        }
        Some(check(&entry.value))
    }

    /// Remembers a token that has just passed full verification (the token is the one its
    /// context holds). `now_minus_leeway` lets eviction recognise entries every later check
    /// would refuse as expired.
    pub(crate) fn insert(&self, value: CachedToken, now_minus_leeway: i64) {
        if self.shard_capacity == 0 {
            return;
        }
        let token = value.context.shared_token();
        let hash = self.hash(token.as_bytes());
        let Some(Ok(mut shard)) = self.shard(hash).map(ShardedLock::write) else {
            return;
        };
        let entry = Entry {
            token,
            value,
            referenced: AtomicBool::new(false),
        };
        if let Some(slot) = shard.map.get_mut(&hash) {
            // The same token verified twice at once, or another one with the same hash:
            // replace it, keeping its place on the clock.
            *slot = entry;
            return;
        }
        shard.make_room(self.shard_capacity, now_minus_leeway);
        shard.map.insert(hash, entry);
        shard.clock.push_back(hash);
    }

    /// The slot hash of a token: its length and its last [`HASHED_TAIL`] bytes (see the
    /// module docs).
    fn hash(&self, token: &[u8]) -> u64 {
        let tail = token
            .get(token.len().saturating_sub(HASHED_TAIL)..)
            .unwrap_or(token);
        self.hasher.hash_one((token.len(), tail))
    }

    /// The shard for a hash: its top bits (the map inside the shard uses the whole hash).
    /// Always `Some`: the index is below `2^shard_bits`, the number of shards.
    fn shard(&self, hash: u64) -> Option<&ShardedLock<Shard>> {
        let index = hash.checked_shr(u64::BITS - self.shard_bits).unwrap_or(0);
        self.shards.get(usize::try_from(index).ok()?)
    }
}

impl Shard {
    /// Evicts until there is room for one more entry: expired or unreferenced entries at
    /// the hand go, referenced ones get a second chance. Two turns of the clock at most.
    fn make_room(&mut self, capacity: usize, now_minus_leeway: i64) {
        let mut steps = 2 * self.clock.len();
        while self.map.len() >= capacity {
            let Some(hash) = self.clock.pop_front() else {
                break;
            };
            let keep = steps > 0
                && self.map.get_mut(&hash).is_some_and(|e| {
                    let live = e.value.exp > now_minus_leeway;
                    let second_chance = *e.referenced.get_mut() && live;
                    *e.referenced.get_mut() = false;
                    second_chance
                });
            steps = steps.saturating_sub(1);
            if keep {
                self.clock.push_back(hash);
            } else {
                self.map.remove(&hash);
            }
        }
    }
}

/// The map's keys are already keyed-hash values: use them as they are.
#[derive(Debug, Default, Clone, Copy)]
struct PrehashedKey(u64);

impl Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (the keys are u64); fold anything else in anyway.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::AccessContextParts;

    fn context(token: &str, n: usize) -> Arc<AccessContext> {
        let parts = AccessContextParts {
            user_id: &format!("user-{n}"),
            username: &format!("name-{n}"),
            roles: ["user"],
            scope: "profile",
            client_id: "tessera",
            session_id: Some(&format!("session-{n}")),
            jti: &format!("jti-{n}"),
            issued_at: 1000,
            expires_at: 2000,
            amr: ["pwd"],
            is_client: false,
        };
        Arc::new(AccessContext::verified(parts, token, Some("k1")))
    }

    fn cached(token: &str, n: usize, exp: i64) -> CachedToken {
        CachedToken {
            context: context(token, n),
            exp,
            nbf: None,
            iat: Some(1000),
        }
    }

    fn hit(cache: &VerifiedTokenCache, token: &str) -> Option<String> {
        cache.with_hit(token.as_bytes(), |c| c.context.user_id().to_owned())
    }

    #[test]
    fn a_token_is_found_only_by_its_exact_bytes() {
        let cache = VerifiedTokenCache::new(16).unwrap();
        cache.insert(cached("aaa.bbb.ccc", 1, 2000), 0);
        assert_eq!(hit(&cache, "aaa.bbb.ccc").as_deref(), Some("user-1"));
        assert_eq!(hit(&cache, "aaa.bbb.ccd"), None);
        assert_eq!(hit(&cache, "aaa.bbb.cc"), None);
        assert_eq!(hit(&cache, ""), None);
    }

    #[test]
    fn tokens_that_share_their_hashed_tail_are_told_apart() {
        let tail = "s".repeat(HASHED_TAIL);
        let a = format!("header-a.payload-a.{tail}");
        let b = format!("header-b.payload-b.{tail}");
        assert_eq!(a.len(), b.len());
        let cache = VerifiedTokenCache::new(16).unwrap();
        assert_eq!(cache.hash(a.as_bytes()), cache.hash(b.as_bytes()));
        cache.insert(cached(&a, 1, 2000), 0);
        // Same slot, other bytes: a miss, never the other token's context.
        assert_eq!(hit(&cache, &b), None);
        assert_eq!(hit(&cache, &a).as_deref(), Some("user-1"));
        // The later one takes the slot; the earlier one is then a miss (verified again).
        cache.insert(cached(&b, 2, 2000), 0);
        assert_eq!(hit(&cache, &b).as_deref(), Some("user-2"));
        assert_eq!(hit(&cache, &a), None);
        // A byte anywhere outside the tail still changes the token.
        let mut c = a.into_bytes();
        c[0] = b'H';
        assert_eq!(cache.with_hit(&c, |_| ()), None);
    }

    #[test]
    fn the_capacity_bound_holds_whatever_is_inserted() {
        for capacity in [1, 3, 64, 100, 1000] {
            let cache = VerifiedTokenCache::new(capacity).unwrap();
            assert!(cache.capacity() <= capacity);
            assert!(cache.capacity() >= capacity / 2, "{capacity}");
            for n in 0..capacity * 5 {
                cache.insert(cached(&format!("token-{n}"), n, 2000), 0);
                assert!(cache.len() <= capacity, "{} > {capacity}", cache.len());
            }
            // Tokens spread over the shards at random, so some may still have room.
            assert!(cache.len() >= cache.capacity() / 2);
            // The newest token is always there.
            let last = capacity * 5 - 1;
            assert!(hit(&cache, &format!("token-{last}")).is_some());
        }
    }

    #[test]
    fn a_disabled_cache_holds_nothing() {
        let cache = VerifiedTokenCache::new(0).unwrap();
        cache.insert(cached("t", 1, 2000), 0);
        assert_eq!(cache.len(), 0);
        assert_eq!(hit(&cache, "t"), None);
    }

    #[test]
    fn a_full_shard_always_makes_room() {
        // One shard of one entry: "used" is referenced and live, so it gets a second chance
        // on the first turn of the clock and goes on the second.
        let cache = VerifiedTokenCache::new(1).unwrap();
        cache.insert(cached("used", 1, 5000), 0);
        assert!(hit(&cache, "used").is_some());
        cache.insert(cached("new", 2, 5000), 0);
        assert_eq!(cache.len(), 1);
        assert!(hit(&cache, "new").is_some());
        assert_eq!(hit(&cache, "used"), None);
    }

    /// `count` tokens with `prefix` that land in the first shard.
    fn in_first_shard(cache: &VerifiedTokenCache, prefix: &str, count: usize) -> Vec<String> {
        (0..)
            .map(|n| format!("{prefix}-{n}"))
            .filter(|t| {
                let hash = cache.hash(t.as_bytes());
                cache
                    .shard(hash)
                    .is_some_and(|s| std::ptr::eq(s, &cache.shards[0]))
            })
            .take(count)
            .collect()
    }

    #[test]
    fn expired_entries_get_no_second_chance() {
        // 64 shards of 2.
        let cache = VerifiedTokenCache::new(128).unwrap();
        let t = in_first_shard(&cache, "t", 3);
        cache.insert(cached(&t[0], 0, 5000), 0);
        cache.insert(cached(&t[1], 1, 100), 0);
        assert!(hit(&cache, &t[0]).is_some());
        assert!(hit(&cache, &t[1]).is_some());
        // Both were used, but t[1] expired: plain CLOCK would evict t[0] after a full turn.
        cache.insert(cached(&t[2], 2, 5000), 200);
        assert!(hit(&cache, &t[0]).is_some());
        assert_eq!(hit(&cache, &t[1]), None);
        assert!(hit(&cache, &t[2]).is_some());
    }

    #[test]
    fn used_entries_get_a_second_chance() {
        // 64 shards of 2.
        let cache = VerifiedTokenCache::new(128).unwrap();
        let t = in_first_shard(&cache, "t", 4);
        cache.insert(cached(&t[0], 0, 5000), 0);
        cache.insert(cached(&t[1], 1, 5000), 0);
        assert!(hit(&cache, &t[0]).is_some());
        // The oldest, t[0], was used since: t[1] goes instead.
        cache.insert(cached(&t[2], 2, 5000), 0);
        assert_eq!(hit(&cache, &t[1]), None);
        assert!(hit(&cache, &t[0]).is_some());
        assert!(hit(&cache, &t[2]).is_some());
    }
}
