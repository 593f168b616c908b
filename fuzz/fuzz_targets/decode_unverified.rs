//! `decode_unverified` (the diagnostics decoder behind `tessera token decode`) and the
//! structural parser, under the default caps and with the caps lifted.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_jose::{Limits, Unverified, decode_unverified};

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let uncapped = Limits {
        max_token_len: usize::MAX,
        max_header_len: usize::MAX,
    };
    for limits in [Limits::default(), uncapped] {
        match decode_unverified(token, &limits) {
            Ok(parts) => {
                let _ = (
                    parts.header.to_string(),
                    parts.claims.map(|c| c.to_string()),
                );
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        let _ = Unverified::parse(token, &limits).map_err(|e| e.to_string());
    }
});
