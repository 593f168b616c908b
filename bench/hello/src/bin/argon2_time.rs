//! One Argon2id hash at Tessera's production cost (OWASP: m = 19 MiB, t = 2, p = 1), timed
//! with the same crate and build profile as Tessera's: the unit of the login target
//! ("cores ÷ one hash time").
//!
//! Usage: `argon2-time [N] [THREADS]` (default 30 hashes, one thread). With THREADS > 1,
//! THREADS threads hash N times each, all at once, as a server's hashing pool does when
//! logins saturate it; the median is then over every hash, and `rate_per_s` is the hashes
//! completed per second of wall time, which is what the cores really deliver when the hashes
//! share the memory bus and the last-level cache (19 MiB each). Prints
//! `median_ms=… min_ms=… max_ms=… hashes=… threads=… rate_per_s=…`.

use std::time::Instant;

use argon2::{Algorithm, Argon2, Block, Params, Version};

/// Hashes `n` times after one unmeasured hash; the times in milliseconds. The 19 MiB of
/// working memory are allocated once and reused, as Tessera's hashing threads do: that is
/// the hash itself, the tightest unit. (`hash_password_into`, which allocates and faults in
/// fresh memory for every hash, took 20.0-20.7 ms against 18.9-19.1 ms alone, and 32.1 ms
/// against 28.4 ms two at once, on the AMD guest of 2026-12-03: a looser bound.)
fn hash_times(n: usize, seed: u64) -> Result<Vec<f64>, String> {
    let params =
        Params::new(19 * 1024, 2, 1, Some(32)).map_err(|e| format!("invalid parameters: {e}"))?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut memory = vec![Block::new(); argon2.params().block_count()];
    let mut out = [0u8; 32];
    let mut times = Vec::with_capacity(n);
    for i in 0..=n {
        let salt = (u128::from(seed) << 64 | i as u128).to_le_bytes();
        let start = Instant::now();
        argon2
            .hash_password_into_with_memory(
                b"quartz lantern under a staple moon",
                &salt,
                &mut out,
                &mut memory,
            )
            .map_err(|e| format!("hashing failed: {e}"))?;
        // The first hash warms the allocator and the page cache; it is not counted.
        if i > 0 {
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(times)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(30)
        .max(1);
    let threads: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1)
        .clamp(1, 64);
    let start = Instant::now();
    let results: Vec<Result<Vec<f64>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| scope.spawn(move || hash_times(n, t as u64)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a hashing thread panicked".into()))
            })
            .collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let mut times = Vec::with_capacity(n * threads);
    for r in results {
        match r {
            Ok(t) => times.extend(t),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
    }
    times.sort_by(f64::total_cmp);
    // Every hash the threads made, the unmeasured first ones included, over the wall time.
    let rate = (threads * (n + 1)) as f64 / wall;
    println!(
        "median_ms={:.2} min_ms={:.2} max_ms={:.2} hashes={} threads={threads} rate_per_s={rate:.1}",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        times.len()
    );
}
