//! The verified-token cache: a token presented again skips the signature check.
//!
//! Entries are keyed by the SHA-256 of the exact token bytes, so a token that differs in any
//! byte is a different entry (and a collision would need a SHA-256 collision). An entry
//! holds the verified header and payload, not a verdict: claims are decoded and validated
//! (`exp`, `nbf`...) again on every hit, and revocation is checked on every hit. An entry
//! made under one key set is not used once the set has changed. Memory is bounded: at
//! most `capacity` entries, the oldest evicted first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tessera_jose::VerifiedJws;

use crate::verifier::AccessInfo;

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) jws: Arc<VerifiedJws>,
    pub(crate) info: Arc<AccessInfo>,
    pub(crate) epoch: u64,
}

#[derive(Debug)]
pub(crate) struct TokenCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<[u8; 32], Entry>,
    /// Insertion order, for eviction; holds exactly the keys of `map`.
    order: VecDeque<[u8; 32]>,
}

impl TokenCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The entry for a token digest made under key-set `epoch`.
    pub(crate) fn get(&self, digest: &[u8; 32], epoch: u64) -> Option<Entry> {
        let inner = self.inner.lock().ok()?;
        inner.map.get(digest).filter(|e| e.epoch == epoch).cloned()
    }

    pub(crate) fn insert(&self, digest: [u8; 32], entry: Entry) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some(slot) = inner.map.get_mut(&digest) {
            // Same token under a newer key set: replace in place, keep its place in line.
            *slot = entry;
            return;
        }
        while inner.map.len() >= self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.map.remove(&oldest);
        }
        inner.map.insert(digest, entry);
        inner.order.push_back(digest);
    }

    pub(crate) fn len(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.map.len())
    }
}
