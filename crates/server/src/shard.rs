//! Per-thread shards for the numbers every request writes (request counts, latency
//! histograms, the in-flight gauge, the request-id sequence).
//!
//! One atomic written by every request is one cache line that the cores pass back and forth
//! on every request: each addition waits for the line to come over from the core that wrote
//! it last. With the shards, each thread adds to a line of its own and only a scrape (or the
//! rare reader) visits them all.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many shards each sharded value has. Threads beyond this share shards (still
/// correct: every shard is atomic), which costs contention only on machines with more busy
/// threads than shards.
pub(crate) const SHARDS: usize = 16;

/// Hands out shard indexes to threads as they first ask.
static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard; `usize::MAX` until it first asks.
    static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The calling thread's shard index, below [`SHARDS`].
#[inline]
pub(crate) fn index() -> usize {
    INDEX.with(|cell| {
        let index = cell.get();
        if index < SHARDS {
            index
        } else {
            let new = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            cell.set(new);
            new
        }
    })
}

/// A value on a cache line (pair) of its own: 128 bytes, because Intel's adjacent-line
/// prefetcher pulls lines in pairs.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

/// One `T` per shard; each thread uses its own ([`Sharded::local`]).
#[derive(Debug)]
pub(crate) struct Sharded<T>(Box<[Padded<T>; SHARDS]>);

impl<T: Default> Default for Sharded<T> {
    fn default() -> Self {
        Self(Box::new(std::array::from_fn(|_| Padded::default())))
    }
}

impl<T> Sharded<T> {
    /// The calling thread's shard.
    #[inline]
    #[allow(clippy::indexing_slicing)] // `index()` is below `SHARDS`, the array's length
    pub(crate) fn local(&self) -> &T {
        &self.0[index() % SHARDS].0
    }

    /// Shard number `i` (its own sequence, for values that must be unique).
    #[allow(clippy::indexing_slicing)] // reduced modulo `SHARDS`, the array's length
    pub(crate) fn shard(&self, i: usize) -> &T {
        &self.0[i % SHARDS].0
    }

    /// Every shard, for a reader that adds them up.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|padded| &padded.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn a_thread_keeps_its_shard_and_all_shards_are_summed() {
        let counts = std::sync::Arc::new(Sharded::<AtomicU64>::default());
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let counts = std::sync::Arc::clone(&counts);
                std::thread::spawn(move || {
                    let first = index();
                    for _ in 0..1000 {
                        assert_eq!(index(), first);
                        counts.local().fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let total: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, 20_000);
        assert_eq!(align_of::<Padded<AtomicU64>>(), 128);
    }
}
