//! Full verification of untrusted compact tokens: `Unverified::parse`, signature checks under
//! fixed keys of every key type, a key set, then claims parsing and validation.
//!
//! Input modes (first byte):
//! * `0x01`: the rest is `header JSON 0x00 payload JSON`, which this target encodes and signs
//!   with the fixed HS256 key, so the header and claims parsers see validly signed input.
//! * `0x02`: like `0x01`, but the next 8 bytes are the clock (`now`, little-endian i64).
//! * anything else: the whole input is the token text.

#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use tessera_jose::{
    Jwk, KeySet, Limits, NoCustomClaims, SigningKey, Unverified, Validation, VerifyingKey,
    base64url,
};

const NOW: i64 = 1_700_000_000;

/// Keys from the RFC examples, so every run (and every reproduction) uses the same ones.
const HS256_JWK: &str = r#"{"kty":"oct","alg":"HS256","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}"#;
const PUBLIC_JWKS: [&str; 4] = [
    // RFC 7515 A.2 (RS256)
    r#"{"kty":"RSA","alg":"RS256","kid":"rs","n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ","e":"AQAB"}"#,
    // RFC 7515 A.3 (ES256)
    r#"{"kty":"EC","crv":"P-256","kid":"es256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#,
    // RFC 7515 A.4 (ES512)
    r#"{"kty":"EC","crv":"P-521","kid":"es512","x":"AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvLFV1jSfS9tsz4qUxcWceqwQGk","y":"ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3kyMj2"}"#,
    // RFC 8037 A.2 (EdDSA)
    r#"{"kty":"OKP","crv":"Ed25519","kid":"ed","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
];

struct Keys {
    hs256_signer: SigningKey,
    hs256: VerifyingKey,
    public: Vec<VerifyingKey>,
    set: KeySet,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let hs = Jwk::from_json(HS256_JWK).expect("fixed HS256 JWK");
    let hs256_signer = SigningKey::from_jwk(&hs, None).expect("fixed HS256 key");
    let public: Vec<VerifyingKey> = PUBLIC_JWKS
        .iter()
        .map(|j| VerifyingKey::from_jwk(&Jwk::from_json(j).expect("fixed JWK"), None))
        .collect::<Result<_, _>>()
        .expect("fixed public keys");
    Keys {
        hs256: hs256_signer.verifying_key(),
        set: KeySet::new(public.clone()).expect("fixed key set"),
        hs256_signer,
        public,
    }
});

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((1, rest)) => check(&signed(rest), NOW),
        Some((2, rest)) if rest.len() >= 8 => {
            let (clock, rest) = rest.split_at(8);
            let now = i64::from_le_bytes(clock.try_into().expect("8 bytes"));
            check(&signed(rest), now);
        }
        _ => {
            if let Ok(token) = std::str::from_utf8(data) {
                check(token, NOW);
            }
        }
    }
});

/// `header 0x00 payload`, encoded and signed with the fixed HS256 key.
fn signed(input: &[u8]) -> String {
    let (header, payload) = match input.iter().position(|&b| b == 0) {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &b""[..]),
    };
    let mut token = base64url::encode(header);
    token.push('.');
    base64url::encode_into(payload, &mut token);
    let sig = KEYS
        .hs256_signer
        .sign(token.as_bytes())
        .expect("HMAC never fails");
    token.push('.');
    base64url::encode_into(sig, &mut token);
    token
}

fn check(token: &str, now: i64) {
    let keys = &*KEYS;
    let limits = Limits::default();
    match Unverified::parse(token, &limits) {
        Ok(u) => {
            let _ = (
                u.header().kid(),
                u.header().typ(),
                u.payload_unverified().len(),
            );
            let _ = keys.set.select(u.header());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    for key in std::iter::once(&keys.hs256).chain(&keys.public) {
        match key.verify_jws(token, &limits) {
            Ok(jws) => claims(&jws, now),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    if let Ok(jws) = keys.set.verify_jws(token, &limits) {
        claims(&jws, now);
    }
    let _ = keys
        .hs256
        .verify_jwt::<BTreeMap<String, serde_json::Value>>(token, &Validation::new(), now)
        .map_err(|e| e.to_string());
}

fn claims(jws: &tessera_jose::VerifiedJws, now: i64) {
    let validations = [
        Validation::new(),
        Validation::new()
            .with_issuer("joe")
            .with_audience("api")
            .with_required_typ("at+jwt")
            .with_leeway(u64::MAX),
        Validation::new().danger_allow_missing_exp().with_leeway(0),
    ];
    for v in &validations {
        let _ = jws
            .claims::<NoCustomClaims>(v, now)
            .map_err(|e| e.to_string());
        let _ = jws
            .claims::<BTreeMap<String, serde_json::Value>>(v, now)
            .map_err(|e| e.to_string());
        // Borrowed custom claims (fails, without panicking, on escaped names).
        let _ = jws
            .claims::<BTreeMap<&str, &RawValue>>(v, now)
            .map_err(|e| e.to_string());
    }
}
