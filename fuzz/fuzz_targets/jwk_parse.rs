//! JWK and JWK Set parsing, then key construction for every algorithm; also the PEM and DER
//! key readers (the DER reader is hand-written), since keys arrive by those routes too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_jose::{Algorithm, Jwk, JwkSet, KeySet, SigningKey, VerifyingKey};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(jwk) = Jwk::from_json(text) {
            let _ = (
                jwk.thumbprint(),
                jwk.to_public(),
                jwk.algorithm(),
                jwk.is_private(),
            );
            let _ = Jwk::from_json(&jwk.to_json());
            for alg in std::iter::once(None).chain(Algorithm::ALL.map(Some)) {
                verifier(VerifyingKey::from_jwk(&jwk, alg));
                signer(SigningKey::from_jwk(&jwk, alg));
            }
        }
        if let Ok(set) = JwkSet::from_json(text) {
            let _ = (set.to_public(), set.to_json());
            let _ = KeySet::from_jwks(&set).map(|s| s.to_public_jwks());
            let _ = KeySet::from_jwks_lenient(&set).map(|(s, skipped)| (s.len(), skipped.len()));
        }
        if text.contains("-----BEGIN") {
            for alg in Algorithm::ALL {
                verifier(VerifyingKey::from_pem(alg, text));
                signer(SigningKey::from_pem(alg, text));
            }
        }
    }
    for alg in Algorithm::ALL {
        verifier(VerifyingKey::from_public_der(alg, data));
        signer(SigningKey::from_der(alg, data));
    }
});

fn verifier(key: Result<VerifyingKey, tessera_jose::Error>) {
    match key {
        Ok(k) => {
            let _ = k.verify_signature(b"message", &[0u8; 64]);
            let _ = (k.to_jwk(), k.thumbprint(), k.to_public_pem());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fn signer(key: Result<SigningKey, tessera_jose::Error>) {
    match key {
        Ok(k) => {
            let token = k
                .sign_jws(b"message", None, None)
                .expect("a built key signs");
            assert!(
                k.verifying_key()
                    .verify_jws(&token, &Default::default())
                    .is_ok(),
                "a key must verify its own signature"
            );
            let _ = (k.to_private_jwk(), k.to_public_jwk(), k.to_pkcs8_pem());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
