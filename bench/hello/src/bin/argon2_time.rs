//! One Argon2id hash at Tessera's production cost (OWASP: m = 19 MiB, t = 2, p = 1), timed
//! with the same crate and build profile as Tessera's: the unit of the login target
//! ("cores ÷ one hash time"). Usage: `argon2-time [N]` (default 30 hashes, one at a time);
//! prints `median_ms=… min_ms=… max_ms=…`.

use std::time::Instant;

use argon2::{Algorithm, Argon2, Params, Version};

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(30).max(1);
    let params = match Params::new(19 * 1024, 2, 1, Some(32)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("invalid parameters: {e}");
            std::process::exit(1);
        }
    };
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut out = [0u8; 32];
    let mut times = Vec::with_capacity(n);
    for i in 0..=n {
        let salt = (i as u128).to_le_bytes();
        let start = Instant::now();
        if let Err(e) = argon2.hash_password_into(b"quartz lantern under a staple moon", &salt, &mut out) {
            eprintln!("hashing failed: {e}");
            std::process::exit(1);
        }
        // The first hash warms the allocator and the page cache; it is not counted.
        if i > 0 {
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "median_ms={:.2} min_ms={:.2} max_ms={:.2} hashes={n}",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
}
