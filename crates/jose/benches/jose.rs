//! Criterion benchmarks: tessera-jose against its peers and against the raw primitive.
//!
//! `cargo bench -p tessera-jose --features bench-jwt-simple` runs, for every algorithm, two
//! groups (without the feature, the same minus jwt-simple):
//!
//! * `sign-<ALG>`: tessera `SigningKey::sign_jwt`, jsonwebtoken `encode` (pre-built
//!   `EncodingKey`), jwt-simple `sign`/`authenticate`, and `floor` = the aws-lc-rs primitive
//!   signing the same signing input with a pre-parsed key.
//! * `verify-<ALG>`: tessera `VerifyingKey::verify_jwt` (owned claims), `tessera-borrowed`
//!   (`verify_jws` + `claims::<Borrowed>()`), jsonwebtoken `decode`, jwt-simple
//!   `verify_token`, and `floor`. For HMAC the floor is everything a minimal correct verifier
//!   must do (base64url-decode the three segments, parse the header and the claims into
//!   borrowed structs, `hmac::verify`, check exp/iss/aud); for signatures it is only
//!   `ParsedPublicKey::verify_sig` on the already-decoded signature.
//!
//! Every verifier checks the same tessera-signed token (same bytes) under equivalent rules:
//! `exp` checked with 30 s of leeway, `iss` and `aud` required and equal. Every signer signs
//! the same claims (9 of them: iss, sub, aud, exp, iat, jti, client_id, scope, roles). Peers
//! that lack an algorithm are skipped: jsonwebtoken and jwt-simple have no ES512.
//!
//! `docs/BENCHMARKS.md` has the figures and how to read them. Set `JOSE_BENCH_QUICK=1` for a
//! short smoke run (noisy figures, same code paths).

// Bench setup builds keys and tokens from constants; a failure there is a broken benchmark,
// and panicking with the reason is the right outcome. The slicing is on tokens this file
// made itself, and the floor's key enum is built once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::large_enum_variant
)]
#![allow(missing_docs, unreachable_pub)]

use std::borrow::Cow;
use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::{hmac, rand as lc_rand, signature as lc};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use tessera_jose::{Algorithm, Audience, Claims, NumericDate, SigningKey, Validation};

// ------------------------------------------------------------------ the token

const ISS: &str = "https://auth.example";
const AUD: &str = "orders-api";
const SUB: &str = "248289761001";
const JTI: &str = "h3Kp9xQ2mN8vR4tY6wZ1aB";
const CLIENT_ID: &str = "web-dashboard";
const SCOPE: &str = "openid profile orders:read";
const ROLES: [&str; 2] = ["admin", "support"];
const TYP: &str = "at+jwt";
const LIFETIME: i64 = 900;
const LEEWAY: u64 = 30;

/// The custom claims, owned (what tessera's `verify_jwt`, jwt-simple and a typical
/// jsonwebtoken user deserialize into).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Custom {
    client_id: String,
    scope: String,
    roles: Vec<String>,
}

/// The custom claims borrowed from the verified payload (tessera's two-step path).
#[derive(Debug, Deserialize)]
struct CustomBorrowed<'a> {
    client_id: &'a str,
    scope: &'a str,
    #[serde(borrow)]
    roles: Vec<&'a str>,
}

/// All nine claims in one struct, in tessera's serialization order (jsonwebtoken).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flat {
    iss: String,
    sub: String,
    aud: String,
    exp: i64,
    iat: i64,
    jti: String,
    client_id: String,
    scope: String,
    roles: Vec<String>,
}

/// The floor's view of the claims: every member borrowed, nothing validated by serde.
#[derive(Deserialize)]
struct FloorClaims<'a> {
    iss: &'a str,
    #[allow(dead_code)]
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    #[allow(dead_code)]
    iat: i64,
    #[allow(dead_code)]
    jti: &'a str,
    #[allow(dead_code)]
    client_id: &'a str,
    #[allow(dead_code)]
    scope: &'a str,
    #[serde(borrow)]
    #[allow(dead_code)]
    roles: Vec<&'a str>,
}

#[derive(Deserialize)]
struct FloorHeader<'a> {
    alg: &'a str,
    #[allow(dead_code)]
    typ: Option<&'a str>,
    #[allow(dead_code)]
    kid: Option<&'a str>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

struct ClaimSet {
    tessera: Claims<'static, Custom>,
    flat: Flat,
    iat: i64,
}

fn custom_claims() -> Custom {
    Custom {
        client_id: CLIENT_ID.into(),
        scope: SCOPE.into(),
        roles: ROLES.iter().map(|r| (*r).to_owned()).collect(),
    }
}

fn claim_set(iat: i64) -> ClaimSet {
    let custom = custom_claims();
    let mut tessera = Claims::new(custom.clone());
    tessera.registered.iss = Some(Cow::Borrowed(ISS));
    tessera.registered.sub = Some(Cow::Borrowed(SUB));
    tessera.registered.aud = Some(Audience::One(Cow::Borrowed(AUD)));
    tessera.registered.exp = Some(NumericDate(iat + LIFETIME));
    tessera.registered.iat = Some(NumericDate(iat));
    tessera.registered.jti = Some(Cow::Borrowed(JTI));
    let flat = Flat {
        iss: ISS.into(),
        sub: SUB.into(),
        aud: AUD.into(),
        exp: iat + LIFETIME,
        iat,
        jti: JTI.into(),
        client_id: custom.client_id,
        scope: custom.scope,
        roles: custom.roles,
    };
    ClaimSet { tessera, flat, iat }
}

// ------------------------------------------------------------------ keys

/// One algorithm's keys for every contender.
struct Keys {
    tessera: SigningKey,
    /// PKCS#8 DER of the private key (asymmetric) or the HMAC secret.
    secret: Vec<u8>,
    /// PKCS#8 PEM of the private key and SPKI PEM of the public key (asymmetric only).
    private_pem: String,
    public_pem: String,
}

fn keys(alg: Algorithm, rsa_der: &[u8]) -> Keys {
    let tessera = match alg.key_kind() {
        tessera_jose::KeyKind::Hmac => {
            let len = match alg {
                Algorithm::Hs256 => 32,
                Algorithm::Hs384 => 48,
                _ => 64,
            };
            let secret: Vec<u8> = (0..len).map(|i| (i * 29 + 7) as u8).collect();
            SigningKey::from_hmac_secret(alg, &secret).unwrap()
        }
        tessera_jose::KeyKind::Rsa => SigningKey::from_der(alg, rsa_der).unwrap(),
        _ => SigningKey::generate(alg).unwrap(),
    };
    let secret = tessera.to_secret_bytes().unwrap().to_vec();
    let (private_pem, public_pem) = if alg.is_symmetric() {
        (String::new(), String::new())
    } else {
        (
            tessera.to_pkcs8_pem().unwrap().to_string(),
            tessera.verifying_key().to_public_pem().unwrap(),
        )
    };
    Keys {
        tessera,
        secret,
        private_pem,
        public_pem,
    }
}

// ------------------------------------------------------------------ floor

enum FloorSigner {
    Hmac(hmac::Key),
    Rsa(lc::RsaKeyPair, &'static dyn lc::RsaEncoding),
    Ec(lc::EcdsaKeyPair),
    Ed(lc::Ed25519KeyPair),
}

impl FloorSigner {
    fn new(alg: Algorithm, secret: &[u8]) -> Self {
        match alg {
            Algorithm::Hs256 => Self::Hmac(hmac::Key::new(hmac::HMAC_SHA256, secret)),
            Algorithm::Hs384 => Self::Hmac(hmac::Key::new(hmac::HMAC_SHA384, secret)),
            Algorithm::Hs512 => Self::Hmac(hmac::Key::new(hmac::HMAC_SHA512, secret)),
            Algorithm::Rs256
            | Algorithm::Rs384
            | Algorithm::Rs512
            | Algorithm::Ps256
            | Algorithm::Ps384
            | Algorithm::Ps512 => {
                let padding: &'static dyn lc::RsaEncoding = match alg {
                    Algorithm::Rs256 => &lc::RSA_PKCS1_SHA256,
                    Algorithm::Rs384 => &lc::RSA_PKCS1_SHA384,
                    Algorithm::Rs512 => &lc::RSA_PKCS1_SHA512,
                    Algorithm::Ps256 => &lc::RSA_PSS_SHA256,
                    Algorithm::Ps384 => &lc::RSA_PSS_SHA384,
                    _ => &lc::RSA_PSS_SHA512,
                };
                Self::Rsa(lc::RsaKeyPair::from_pkcs8(secret).unwrap(), padding)
            }
            Algorithm::Es256 | Algorithm::Es384 | Algorithm::Es512 => {
                let sa = match alg {
                    Algorithm::Es256 => &lc::ECDSA_P256_SHA256_FIXED_SIGNING,
                    Algorithm::Es384 => &lc::ECDSA_P384_SHA384_FIXED_SIGNING,
                    _ => &lc::ECDSA_P521_SHA512_FIXED_SIGNING,
                };
                Self::Ec(lc::EcdsaKeyPair::from_pkcs8(sa, secret).unwrap())
            }
            Algorithm::EdDsa => Self::Ed(lc::Ed25519KeyPair::from_pkcs8(secret).unwrap()),
        }
    }

    /// The public key in the form `ParsedPublicKey::new` takes (asymmetric only).
    fn public_key(&self, alg: Algorithm) -> Option<lc::ParsedPublicKey> {
        use aws_lc_rs::signature::KeyPair as _;
        let valg: &'static dyn lc::VerificationAlgorithm = match alg {
            Algorithm::Rs256 => &lc::RSA_PKCS1_2048_8192_SHA256,
            Algorithm::Rs384 => &lc::RSA_PKCS1_2048_8192_SHA384,
            Algorithm::Rs512 => &lc::RSA_PKCS1_2048_8192_SHA512,
            Algorithm::Ps256 => &lc::RSA_PSS_2048_8192_SHA256,
            Algorithm::Ps384 => &lc::RSA_PSS_2048_8192_SHA384,
            Algorithm::Ps512 => &lc::RSA_PSS_2048_8192_SHA512,
            Algorithm::Es256 => &lc::ECDSA_P256_SHA256_FIXED,
            Algorithm::Es384 => &lc::ECDSA_P384_SHA384_FIXED,
            Algorithm::Es512 => &lc::ECDSA_P521_SHA512_FIXED,
            Algorithm::EdDsa => &lc::ED25519,
            _ => return None,
        };
        let bytes = match self {
            Self::Hmac(_) => return None,
            Self::Rsa(kp, _) => kp.public_key().as_ref().to_vec(),
            Self::Ec(kp) => kp.public_key().as_ref().to_vec(),
            Self::Ed(kp) => kp.public_key().as_ref().to_vec(),
        };
        Some(lc::ParsedPublicKey::new(valg, &bytes).unwrap())
    }

    /// Signs `msg` into `out` (for RSA) and returns the signature length.
    fn sign(&self, msg: &[u8], out: &mut [u8]) -> usize {
        match self {
            Self::Hmac(k) => hmac::sign(k, msg).as_ref().len(),
            Self::Rsa(kp, padding) => {
                let n = kp.public_modulus_len();
                kp.sign(*padding, &lc_rand::SystemRandom::new(), msg, &mut out[..n])
                    .unwrap();
                n
            }
            Self::Ec(kp) => kp
                .sign(&lc_rand::SystemRandom::new(), msg)
                .unwrap()
                .as_ref()
                .len(),
            Self::Ed(kp) => kp.sign(msg).as_ref().len(),
        }
    }
}

/// The HMAC verify floor: decode, parse header and claims (borrowed), verify the tag, check
/// exp/iss/aud. No duplicate detection, no claim type checks, no size caps.
fn hmac_floor_verify(key: &hmac::Key, token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let mut hbuf = [0u8; 256];
    let mut pbuf = [0u8; 1024];
    let mut sbuf = [0u8; 64];
    let (Ok(hn), Ok(pn), Ok(sn)) = (
        URL_SAFE_NO_PAD.decode_slice(h, &mut hbuf),
        URL_SAFE_NO_PAD.decode_slice(p, &mut pbuf),
        URL_SAFE_NO_PAD.decode_slice(s, &mut sbuf),
    ) else {
        return false;
    };
    let Ok(header) = serde_json::from_slice::<FloorHeader<'_>>(&hbuf[..hn]) else {
        return false;
    };
    if !header.alg.starts_with("HS") {
        return false;
    }
    let signing_input = &token.as_bytes()[..h.len() + 1 + p.len()];
    if hmac::verify(key, signing_input, &sbuf[..sn]).is_err() {
        return false;
    }
    let Ok(claims) = serde_json::from_slice::<FloorClaims<'_>>(&pbuf[..pn]) else {
        return false;
    };
    let now = unix_now();
    now < claims.exp + LEEWAY as i64 && claims.iss == ISS && claims.aud == AUD
}

// ------------------------------------------------------------------ peers

type SignFn = Box<dyn Fn() -> usize>;
type VerifyFn = Box<dyn Fn(&str) -> bool>;

/// jwt-simple, with its default features (BoringSSL), when the bench is built with
/// `--features bench-jwt-simple`. BoringSSL takes minutes to build and needs cmake, clang and
/// libclang-dev, so the workspace's tests and lints leave it out.
#[cfg(feature = "bench-jwt-simple")]
mod jwt_simple_peer {
    use super::{
        AUD, Algorithm, Custom, ISS, JTI, Keys, LEEWAY, LIFETIME, SUB, SignFn, TYP, VerifyFn,
        custom_claims,
    };
    use jwt_simple::prelude as js;
    use jwt_simple::prelude::{
        ECDSAP256KeyPairLike as _, ECDSAP256PublicKeyLike as _, ECDSAP384KeyPairLike as _,
        ECDSAP384PublicKeyLike as _, EdDSAKeyPairLike as _, EdDSAPublicKeyLike as _, MACLike as _,
        RSAKeyPairLike as _, RSAPublicKeyLike as _,
    };

    fn js_verify_options() -> js::VerificationOptions {
        js::VerificationOptions {
            allowed_issuers: Some(std::iter::once(ISS.to_owned()).collect()),
            allowed_audiences: Some(std::iter::once(AUD.to_owned()).collect()),
            time_tolerance: Some(js::Duration::from_secs(LEEWAY)),
            ..Default::default()
        }
    }

    /// jwt-simple's signer and verifier for `alg`, if it has the algorithm.
    ///
    /// `sign_with_options` takes the claims by value and `verify_token` takes the options by
    /// value, so each call clones them: that is the cost of using its API with claims and
    /// options prepared once.
    pub(crate) fn pair(alg: Algorithm, keys: &Keys, iat: i64) -> Option<(SignFn, VerifyFn)> {
        let secs = |s: i64| js::Duration::from_secs(u64::try_from(s).unwrap());
        let claims = &js::JWTClaims {
            issued_at: Some(secs(iat)),
            expires_at: Some(secs(iat + LIFETIME)),
            invalid_before: None,
            issuer: Some(ISS.into()),
            subject: Some(SUB.into()),
            audiences: Some(js::Audiences::AsString(AUD.into())),
            jwt_id: Some(JTI.into()),
            nonce: None,
            custom: custom_claims(),
        };
        let kid = keys.tessera.kid().map(str::to_owned);
        let header = js::HeaderOptions {
            signature_type: Some(TYP.into()),
            ..Default::default()
        };
        macro_rules! mac {
            ($key:ty) => {{
                let mut key = <$key>::from_bytes(&keys.secret);
                if let Some(kid) = &kid {
                    key = key.with_key_id(kid);
                }
                let key2 = key.clone();
                let (c, h) = (claims.clone(), header.clone());
                let sign: SignFn =
                    Box::new(move || key.authenticate_with_options(c.clone(), &h).unwrap().len());
                let opts = js_verify_options();
                let verify: VerifyFn =
                    Box::new(move |t| key2.verify_token::<Custom>(t, Some(opts.clone())).is_ok());
                Some((sign, verify))
            }};
        }
        macro_rules! pair {
            ($kp:ty, $pk:ty) => {{
                let mut kp = <$kp>::from_pem(&keys.private_pem).unwrap();
                if let Some(kid) = &kid {
                    kp = kp.with_key_id(kid);
                }
                let pk = <$pk>::from_pem(&keys.public_pem).unwrap();
                let (c, h) = (claims.clone(), header.clone());
                let sign: SignFn =
                    Box::new(move || kp.sign_with_options(c.clone(), &h).unwrap().len());
                let opts = js_verify_options();
                let verify: VerifyFn =
                    Box::new(move |t| pk.verify_token::<Custom>(t, Some(opts.clone())).is_ok());
                Some((sign, verify))
            }};
        }
        match alg {
            Algorithm::Hs256 => mac!(js::HS256Key),
            Algorithm::Hs384 => mac!(js::HS384Key),
            Algorithm::Hs512 => mac!(js::HS512Key),
            Algorithm::Rs256 => pair!(js::RS256KeyPair, js::RS256PublicKey),
            Algorithm::Rs384 => pair!(js::RS384KeyPair, js::RS384PublicKey),
            Algorithm::Rs512 => pair!(js::RS512KeyPair, js::RS512PublicKey),
            Algorithm::Ps256 => pair!(js::PS256KeyPair, js::PS256PublicKey),
            Algorithm::Ps384 => pair!(js::PS384KeyPair, js::PS384PublicKey),
            Algorithm::Ps512 => pair!(js::PS512KeyPair, js::PS512PublicKey),
            Algorithm::Es256 => pair!(js::ES256KeyPair, js::ES256PublicKey),
            Algorithm::Es384 => pair!(js::ES384KeyPair, js::ES384PublicKey),
            Algorithm::EdDsa => pair!(js::Ed25519KeyPair, js::Ed25519PublicKey),
            _ => None,
        }
    }
}

/// Without the feature there is no jwt-simple contender.
#[cfg(not(feature = "bench-jwt-simple"))]
mod jwt_simple_peer {
    use super::{Algorithm, Keys, SignFn, VerifyFn};

    pub(crate) fn pair(_alg: Algorithm, _keys: &Keys, _iat: i64) -> Option<(SignFn, VerifyFn)> {
        None
    }
}

/// jsonwebtoken's signer and verifier for `alg`, if it has the algorithm.
fn jsonwebtoken_pair(alg: Algorithm, keys: &Keys, claims: &Flat) -> Option<(SignFn, VerifyFn)> {
    use jsonwebtoken as jwt;
    let jalg = match alg {
        Algorithm::Hs256 => jwt::Algorithm::HS256,
        Algorithm::Hs384 => jwt::Algorithm::HS384,
        Algorithm::Hs512 => jwt::Algorithm::HS512,
        Algorithm::Rs256 => jwt::Algorithm::RS256,
        Algorithm::Rs384 => jwt::Algorithm::RS384,
        Algorithm::Rs512 => jwt::Algorithm::RS512,
        Algorithm::Ps256 => jwt::Algorithm::PS256,
        Algorithm::Ps384 => jwt::Algorithm::PS384,
        Algorithm::Ps512 => jwt::Algorithm::PS512,
        Algorithm::Es256 => jwt::Algorithm::ES256,
        Algorithm::Es384 => jwt::Algorithm::ES384,
        Algorithm::EdDsa => jwt::Algorithm::EdDSA,
        _ => return None,
    };
    let (enc, dec) = match alg.key_kind() {
        tessera_jose::KeyKind::Hmac => (
            jwt::EncodingKey::from_secret(&keys.secret),
            jwt::DecodingKey::from_secret(&keys.secret),
        ),
        tessera_jose::KeyKind::Rsa => (
            jwt::EncodingKey::from_rsa_pem(keys.private_pem.as_bytes()).unwrap(),
            jwt::DecodingKey::from_rsa_pem(keys.public_pem.as_bytes()).unwrap(),
        ),
        tessera_jose::KeyKind::Ec => (
            jwt::EncodingKey::from_ec_pem(keys.private_pem.as_bytes()).unwrap(),
            jwt::DecodingKey::from_ec_pem(keys.public_pem.as_bytes()).unwrap(),
        ),
        tessera_jose::KeyKind::Okp => (
            jwt::EncodingKey::from_ed_pem(keys.private_pem.as_bytes()).unwrap(),
            jwt::DecodingKey::from_ed_pem(keys.public_pem.as_bytes()).unwrap(),
        ),
    };
    let mut header = jwt::Header::new(jalg);
    header.typ = Some(TYP.into());
    header.kid = keys.tessera.kid().map(str::to_owned);
    let claims = claims.clone();
    let sign: SignFn = Box::new(move || jwt::encode(&header, &claims, &enc).unwrap().len());
    let mut validation = jwt::Validation::new(jalg);
    validation.leeway = LEEWAY;
    validation.set_issuer(&[ISS]);
    validation.set_audience(&[AUD]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let verify: VerifyFn = Box::new(move |t| jwt::decode::<Flat>(t, &dec, &validation).is_ok());
    Some((sign, verify))
}

// ------------------------------------------------------------------ benches

fn quick() -> bool {
    std::env::var_os("JOSE_BENCH_QUICK").is_some()
}

fn bench_alg(c: &mut Criterion, alg: Algorithm, rsa_der: &[u8]) {
    let keys = keys(alg, rsa_der);
    let iat = unix_now();
    let claims = claim_set(iat);
    let validation = Validation::new()
        .with_issuer(ISS)
        .with_audience(AUD)
        .with_leeway(LEEWAY);
    let signer = keys.tessera.clone();
    let verifier = keys.tessera.verifying_key();
    let token = signer.sign_jwt(&claims.tessera, Some(TYP)).unwrap();
    let floor = FloorSigner::new(alg, &keys.secret);
    let floor_public = floor.public_key(alg);
    let hmac_key = match &floor {
        FloorSigner::Hmac(k) => Some(k.clone()),
        _ => None,
    };
    let js_pair = jwt_simple_peer::pair(alg, &keys, claims.iat);
    let jwt_pair = jsonwebtoken_pair(alg, &keys, &claims.flat);

    // The signing input and signature of the shared token, for the floors.
    let dot = token.rfind('.').unwrap();
    let signing_input = token.as_bytes()[..dot].to_vec();
    let signature = URL_SAFE_NO_PAD.decode(&token[dot + 1..]).unwrap();

    // Every contender must accept the shared token before its speed means anything.
    let now = unix_now();
    verifier
        .verify_jwt::<Custom>(&token, &validation, now)
        .unwrap();
    if let Some(k) = &hmac_key {
        assert!(hmac_floor_verify(k, &token), "{alg}: hmac floor");
    }
    if let Some(pk) = &floor_public {
        pk.verify_sig(&signing_input, &signature).unwrap();
    }
    if let Some((_, v)) = &jwt_pair {
        assert!(v(&token), "{alg}: jsonwebtoken rejects the token");
    }
    if let Some((_, v)) = &js_pair {
        assert!(v(&token), "{alg}: jwt-simple rejects the token");
    }
    if alg == Algorithm::Hs256 {
        eprintln!("shared token ({} bytes): {token}", token.len());
    } else {
        eprintln!("{alg}: shared token is {} bytes", token.len());
    }

    let slow = !alg.is_symmetric();
    let configure = |g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>| {
        if quick() {
            g.warm_up_time(Duration::from_millis(200));
            g.measurement_time(Duration::from_millis(400));
            g.sample_size(10);
        } else if slow {
            g.warm_up_time(Duration::from_millis(500));
            g.measurement_time(Duration::from_millis(1500));
            g.sample_size(30);
            g.sampling_mode(SamplingMode::Flat);
        } else {
            g.warm_up_time(Duration::from_millis(800));
            g.measurement_time(Duration::from_secs(2));
            g.sample_size(50);
        }
    };

    // ---- sign
    let mut g = c.benchmark_group(format!("sign-{alg}"));
    configure(&mut g);
    g.bench_function("tessera", |b| {
        b.iter(|| {
            signer
                .sign_jwt(black_box(&claims.tessera), Some(TYP))
                .unwrap()
        });
    });
    if let Some((s, _)) = &jwt_pair {
        g.bench_function("jsonwebtoken", |b| b.iter(s));
    }
    if let Some((s, _)) = &js_pair {
        g.bench_function("jwt-simple", |b| b.iter(s));
    }
    let mut sig_buf = vec![0u8; 1024];
    g.bench_function("floor", |b| {
        b.iter(|| floor.sign(black_box(&signing_input), &mut sig_buf));
    });
    g.finish();

    // ---- verify + validate
    let mut g = c.benchmark_group(format!("verify-{alg}"));
    configure(&mut g);
    g.bench_function("tessera", |b| {
        b.iter(|| {
            verifier
                .verify_jwt::<Custom>(black_box(&token), &validation, unix_now())
                .unwrap()
        });
    });
    g.bench_function("tessera-borrowed", |b| {
        b.iter(|| {
            let jws = verifier
                .verify_jws(black_box(&token), &validation.limits)
                .unwrap();
            let claims = jws
                .claims::<CustomBorrowed<'_>>(&validation, unix_now())
                .unwrap();
            claims.custom.roles.len() + claims.custom.scope.len() + claims.custom.client_id.len()
        });
    });
    if let Some((_, v)) = &jwt_pair {
        g.bench_function("jsonwebtoken", |b| b.iter(|| v(black_box(&token))));
    }
    if let Some((_, v)) = &js_pair {
        g.bench_function("jwt-simple", |b| b.iter(|| v(black_box(&token))));
    }
    if let Some(k) = &hmac_key {
        g.bench_function("floor", |b| {
            b.iter(|| hmac_floor_verify(k, black_box(&token)));
        });
    }
    if let Some(pk) = &floor_public {
        g.bench_function("floor", |b| {
            b.iter(|| {
                pk.verify_sig(black_box(&signing_input), black_box(&signature))
                    .is_ok()
            });
        });
    }
    g.finish();
}

fn all(c: &mut Criterion) {
    // One 2048-bit RSA key serves the six RSA algorithms (the alg binding is per key object).
    let rsa_der = SigningKey::generate(Algorithm::Rs256)
        .unwrap()
        .to_secret_bytes()
        .unwrap()
        .to_vec();
    if cfg!(not(feature = "bench-jwt-simple")) {
        eprintln!(
            "jwt-simple is left out: `cargo bench -p tessera-jose --features bench-jwt-simple` \
             includes it (it builds BoringSSL: needs cmake, clang and libclang-dev)"
        );
    }
    let only = std::env::var("JOSE_BENCH_ALGS").ok();
    for alg in Algorithm::ALL {
        if let Some(only) = &only
            && !only
                .split(',')
                .any(|a| a.eq_ignore_ascii_case(alg.as_str()))
        {
            continue;
        }
        bench_alg(c, alg, &rsa_der);
    }
}

criterion_group!(benches, all);
criterion_main!(benches);
