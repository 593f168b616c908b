//! One RS256 signature (RSA-2048, PKCS #1 v1.5 with SHA-256) over an access token's signing
//! input, timed with the same crate (aws-lc-rs), version and build profile as Tessera's: the
//! unit of the refresh grant's bound ("cores ÷ one signature time"), since every refresh
//! signs a new access token. Usage: `rs256-sign-time [N]` (default 2000 signatures, one at
//! a time); prints `median_us=… min_us=… max_us=…`.

use std::time::Instant;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000)
        .max(1);
    let key = match RsaKeyPair::generate(KeySize::Rsa2048) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("RSA key generation failed: {e}");
            std::process::exit(1);
        }
    };
    let rng = SystemRandom::new();
    // The size of a Tessera access token's header and payload, base64url-encoded.
    let msg = [b'a'; 594];
    let mut sig = vec![0u8; key.public_modulus_len()];
    let mut times = Vec::with_capacity(n);
    for i in 0..=n {
        let start = Instant::now();
        if let Err(e) = key.sign(&RSA_PKCS1_SHA256, &rng, &msg, &mut sig) {
            eprintln!("signing failed: {e}");
            std::process::exit(1);
        }
        // The first signature warms the caches; it is not counted.
        if i > 0 {
            times.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "median_us={:.1} min_us={:.1} max_us={:.1} signatures={n}",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
}
