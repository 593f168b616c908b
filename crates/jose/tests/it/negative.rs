//! The negative corpus: attacks on keys built here, one table line per attack.
//!
//! Each line names the attack, the verifier it targets, how the token is built, and the exact
//! `Error` it must produce, so a test fails when a token is accepted *or* refused for another
//! reason than the one intended. Every verifier is first shown to accept an honest token
//! ([`honest_tokens_verify`]), so the refusals below are about the attack, not the setup.
//!
//! New attacks: one more line in [`CASES`]. Bug and fuzz regressions: a `#[test]` at the
//! bottom, named `issue_<n>_<what>` or `fuzz_<what>`.

use std::sync::LazyLock;

use tessera_jose::{
    Algorithm, Error, Jwk, JwkSecret, JwkSet, KeySet, Limits, NoCustomClaims, Part, Segment,
    SigningKey, Validation, VerifyingKey, base64url,
};

use crate::common::{NOW, key};

const ISS: &str = "https://issuer.example";
const AUD: &str = "orders-api";

/// The keys under attack, and the attacker's own key.
struct Fx {
    rs256: SigningKey,
    es256: SigningKey,
    es384: SigningKey,
    es512: SigningKey,
    hs256: SigningKey,
    set: KeySet,
    attacker: SigningKey,
}

static FX: LazyLock<Fx> = LazyLock::new(|| {
    let rs256 = key(Algorithm::Rs256).clone().with_kid("rsa-1");
    let es256 = key(Algorithm::Es256).clone().with_kid("ec-1");
    let set = KeySet::new([rs256.verifying_key(), es256.verifying_key()]).unwrap();
    Fx {
        es384: key(Algorithm::Es384).clone().with_kid("ec-384"),
        es512: key(Algorithm::Es512).clone().with_kid("ec-521"),
        hs256: key(Algorithm::Hs256).clone().with_kid("hmac-1"),
        attacker: SigningKey::generate(Algorithm::Es256)
            .unwrap()
            .with_kid("ec-1"),
        rs256,
        es256,
        set,
    }
});

/// Which verifier a token is presented to. All use [`validation`] at [`NOW`].
#[derive(Debug, Clone, Copy)]
enum Via {
    Rs256,
    Es256,
    Es384,
    Es512,
    Hs256,
    /// The key set {RS256 `rsa-1`, ES256 `ec-1`}, selecting by `kid`.
    Set,
    /// The RS256 key with a 1 MiB token cap, to reach the checks behind the size cap.
    Rs256Uncapped,
}

/// Strict rules: issuer, audience and `typ` are all required.
fn validation() -> Validation {
    Validation::new()
        .with_issuer(ISS)
        .with_audience(AUD)
        .with_required_typ("at+jwt")
}

impl Via {
    fn verify(self, token: &str) -> Result<(), Error> {
        let fx = &*FX;
        let mut v = validation();
        let key = match self {
            Self::Rs256 => &fx.rs256,
            Self::Es256 => &fx.es256,
            Self::Es384 => &fx.es384,
            Self::Es512 => &fx.es512,
            Self::Hs256 => &fx.hs256,
            Self::Set => {
                return fx
                    .set
                    .verify_jwt::<NoCustomClaims>(token, &v, NOW)
                    .map(drop);
            }
            Self::Rs256Uncapped => {
                v.limits = Limits {
                    max_token_len: 1 << 20,
                    ..Limits::default()
                };
                &fx.rs256
            }
        };
        key.verifying_key()
            .verify_jwt::<NoCustomClaims>(token, &v, NOW)
            .map(drop)
    }

    fn signer(self) -> &'static SigningKey {
        let fx = &*FX;
        match self {
            Self::Rs256 | Self::Set | Self::Rs256Uncapped => &fx.rs256,
            Self::Es256 => &fx.es256,
            Self::Es384 => &fx.es384,
            Self::Es512 => &fx.es512,
            Self::Hs256 => &fx.hs256,
        }
    }
}

// ------------------------------------------------------------------ token building

fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64url::encode(bytes)
}

/// A JSON object from `base` members, edited: `(name, raw)` replaces or appends, an empty
/// `raw` removes, and a `+` before the name appends even if the name exists (duplicates).
/// Names are written raw, so JSON escapes like `\u0065xp` stay escapes.
fn object(base: &[(&str, String)], edits: &[(&str, &str)]) -> String {
    let mut members: Vec<(String, String)> = base
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    for &(name, raw) in edits {
        if let Some(dup) = name.strip_prefix('+') {
            members.push((dup.to_owned(), raw.to_owned()));
        } else if raw.is_empty() {
            members.retain(|(k, _)| k != name);
        } else if let Some(m) = members.iter_mut().find(|(k, _)| k == name) {
            m.1 = raw.to_owned();
        } else {
            members.push((name.to_owned(), raw.to_owned()));
        }
    }
    let body: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn header(key: &SigningKey, edits: &[(&str, &str)]) -> String {
    let base = [
        ("alg", format!("\"{}\"", key.algorithm())),
        ("typ", "\"at+jwt\"".to_owned()),
        ("kid", format!("\"{}\"", key.kid().unwrap())),
    ];
    object(&base, edits)
}

fn claims(edits: &[(&str, &str)]) -> String {
    let base = [
        ("iss", format!("\"{ISS}\"")),
        ("aud", format!("\"{AUD}\"")),
        ("sub", "\"alice\"".to_owned()),
        ("exp", (NOW + 600).to_string()),
        ("nbf", (NOW - 10).to_string()),
        ("iat", (NOW - 10).to_string()),
        ("jti", "\"j-1\"".to_owned()),
    ];
    object(&base, edits)
}

/// Signs exactly these header and claims bytes with `key` (attackers control both).
fn sign_raw(key: &SigningKey, header_json: &str, claims_json: &str) -> String {
    let input = format!("{}.{}", b64(header_json), b64(claims_json));
    let sig = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64(sig))
}

/// An honestly signed token for `via`'s key, with header and claim edits.
fn token(via: Via, h: &[(&str, &str)], c: &[(&str, &str)]) -> String {
    let key = via.signer();
    sign_raw(key, &header(key, h), &claims(c))
}

fn rs(h: &[(&str, &str)], c: &[(&str, &str)]) -> String {
    token(Via::Rs256, h, c)
}

/// A token with the given header and no signature computation at all.
fn unsigned(header_json: &str, signature: &str) -> String {
    format!("{}.{}.{signature}", b64(header_json), b64(claims(&[])))
}

/// The token with its signature segment replaced by `sig`.
fn with_signature(token: &str, sig: &[u8]) -> String {
    let (input, _) = token.rsplit_once('.').unwrap();
    format!("{input}.{}", b64(sig))
}

fn signature_of(token: &str) -> Vec<u8> {
    base64url::decode(token.rsplit_once('.').unwrap().1).unwrap()
}

/// An HMAC token keyed with the RS256 key's *public* material (the classic confusion).
fn confused(alg: Algorithm, secret: &[u8]) -> String {
    let mac = SigningKey::from_hmac_secret(alg, secret).unwrap();
    let h = format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"rsa-1"}}"#);
    sign_raw(&mac, &h, &claims(&[]))
}

fn rs256_public_pem() -> String {
    FX.rs256.verifying_key().to_public_pem().unwrap()
}

fn rs256_public_jwk() -> String {
    FX.rs256.to_public_jwk().unwrap().to_json()
}

/// The (r, s) of a fixed-size ECDSA signature, re-encoded as an ASN.1 DER SEQUENCE.
fn der_ecdsa(sig: &[u8]) -> Vec<u8> {
    fn int(x: &[u8]) -> Vec<u8> {
        let start = x.iter().position(|&b| b != 0).unwrap_or(x.len() - 1);
        let mut v = x[start..].to_vec();
        if v[0] & 0x80 != 0 {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, u8::try_from(v.len()).unwrap()];
        out.extend(v);
        out
    }
    let (r, s) = sig.split_at(sig.len() / 2);
    let body = [int(r), int(s)].concat();
    let mut out = vec![0x30, u8::try_from(body.len()).unwrap()];
    out.extend(body);
    out
}

/// Sets an unused trailing bit of segment `index`: same bytes under a lenient decoder, but
/// not the canonical encoding (RFC 7515 §2 via RFC 4648 §3.5).
fn non_canonical(token: &str, index: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut segments: Vec<String> = token.split('.').map(str::to_owned).collect();
    let seg = &mut segments[index];
    assert_ne!(seg.len() % 4, 0, "segment {index} has no unused bits");
    let last = seg.pop().unwrap();
    let pos = ALPHABET
        .iter()
        .position(|&c| char::from(c) == last)
        .unwrap();
    seg.push(char::from(ALPHABET[pos ^ 1]));
    segments.join(".")
}

/// A token whose claims JSON length is not a multiple of 3, so its payload has unused bits.
fn rs_with_unused_payload_bits() -> String {
    let mut c = claims(&[]);
    while c.len().is_multiple_of(3) {
        c.push(' ');
    }
    sign_raw(&FX.rs256, &header(&FX.rs256, &[]), &c)
}

/// The public key of the attacker as the base64 (not url) DER an `x5c` chain would carry.
fn attacker_spki_base64() -> String {
    let pem = FX.attacker.verifying_key().to_public_pem().unwrap();
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

/// The attacker signs with their own key under the victim's `kid` and points at their key.
fn embedded(member: &str, value: &str) -> String {
    let h = header(&FX.attacker, &[(member, value)]);
    sign_raw(&FX.attacker, &h, &claims(&[]))
}

// ------------------------------------------------------------------ the corpus

struct Case {
    name: &'static str,
    via: Via,
    token: fn() -> String,
    expect: fn(&Error) -> bool,
}

macro_rules! case {
    ($name:literal, $via:ident, $token:expr, $($pattern:tt)+) => {
        Case {
            name: $name,
            via: Via::$via,
            token: $token,
            expect: |e| matches!(e, $($pattern)+),
        }
    };
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    // ---- alg: none, every spelling, with and without a signature (RFC 7515 App. A.5)
    case!("alg none, no signature", Rs256, || unsigned(r#"{"alg":"none"}"#, ""), Error::UnsupportedAlgorithm { alg } if alg == "none"),
    case!("alg None, no signature", Rs256, || unsigned(r#"{"alg":"None"}"#, ""), Error::UnsupportedAlgorithm { alg } if alg == "None"),
    case!("alg NONE, no signature", Rs256, || unsigned(r#"{"alg":"NONE"}"#, ""), Error::UnsupportedAlgorithm { alg } if alg == "NONE"),
    case!("alg nOnE, no signature", Rs256, || unsigned(r#"{"alg":"nOnE"}"#, ""), Error::UnsupportedAlgorithm { alg } if alg == "nOnE"),
    case!("alg none, real signature", Rs256, || unsigned(r#"{"alg":"none"}"#, rs(&[], &[]).rsplit_once('.').unwrap().1), Error::UnsupportedAlgorithm { alg } if alg == "none"),
    case!("alg None, real signature", Rs256, || unsigned(r#"{"alg":"None"}"#, rs(&[], &[]).rsplit_once('.').unwrap().1), Error::UnsupportedAlgorithm { .. }),
    case!("alg NONE, real signature", Rs256, || unsigned(r#"{"alg":"NONE"}"#, rs(&[], &[]).rsplit_once('.').unwrap().1), Error::UnsupportedAlgorithm { .. }),
    case!("alg nOnE, real signature", Rs256, || unsigned(r#"{"alg":"nOnE"}"#, rs(&[], &[]).rsplit_once('.').unwrap().1), Error::UnsupportedAlgorithm { .. }),
    case!("alg none with the victim's kid, key set", Set, || unsigned(r#"{"alg":"none","kid":"rsa-1"}"#, ""), Error::UnsupportedAlgorithm { .. }),

    // ---- algorithm confusion: HMAC keyed with the RS256 public key (PEM text, JWK JSON)
    case!("HS256 keyed with the RS256 public PEM", Rs256, || confused(Algorithm::Hs256, rs256_public_pem().as_bytes()), Error::AlgorithmMismatch { expected: Algorithm::Rs256, found: Algorithm::Hs256 }),
    case!("HS384 keyed with the RS256 public PEM", Rs256, || confused(Algorithm::Hs384, rs256_public_pem().as_bytes()), Error::AlgorithmMismatch { expected: Algorithm::Rs256, found: Algorithm::Hs384 }),
    case!("HS512 keyed with the RS256 public PEM", Rs256, || confused(Algorithm::Hs512, rs256_public_pem().as_bytes()), Error::AlgorithmMismatch { expected: Algorithm::Rs256, found: Algorithm::Hs512 }),
    case!("HS256 keyed with the RS256 public JWK", Rs256, || confused(Algorithm::Hs256, rs256_public_jwk().as_bytes()), Error::AlgorithmMismatch { expected: Algorithm::Rs256, found: Algorithm::Hs256 }),
    case!("HS384 keyed with the RS256 public JWK", Rs256, || confused(Algorithm::Hs384, rs256_public_jwk().as_bytes()), Error::AlgorithmMismatch { expected: Algorithm::Rs256, found: Algorithm::Hs384 }),
    case!("HS512 keyed with the RS256 public JWK", Rs256, || confused(Algorithm::Hs512, rs256_public_jwk().as_bytes()), Error::AlgorithmMismatch { expected: Algorithm::Rs256, found: Algorithm::Hs512 }),
    case!("HS256 keyed with the public PEM, key set", Set, || confused(Algorithm::Hs256, rs256_public_pem().as_bytes()), Error::AlgorithmMismatch { expected: Algorithm::Rs256, found: Algorithm::Hs256 }),
    case!("ES256 token to the RS256 key", Rs256, || token(Via::Es256, &[], &[]), Error::AlgorithmMismatch { expected: Algorithm::Rs256, found: Algorithm::Es256 }),
    case!("PS256 header over an RS256 signature", Rs256, || rs(&[("alg", r#""PS256""#)], &[]), Error::AlgorithmMismatch { expected: Algorithm::Rs256, found: Algorithm::Ps256 }),
    case!("RS256 token claiming the EC key's kid", Set, || rs(&[("kid", r#""ec-1""#)], &[]), Error::AlgorithmMismatch { expected: Algorithm::Es256, found: Algorithm::Rs256 }),

    // ---- ECDSA signature forms (CVE-2022-21449 and RFC 7518 §3.4)
    case!("ES256 all-zero signature", Es256, || with_signature(&token(Via::Es256, &[], &[]), &[0; 64]), Error::InvalidSignature),
    case!("ES384 all-zero signature", Es384, || with_signature(&token(Via::Es384, &[], &[]), &[0; 96]), Error::InvalidSignature),
    case!("ES512 all-zero signature", Es512, || with_signature(&token(Via::Es512, &[], &[]), &[0; 132]), Error::InvalidSignature),
    case!("ES256 DER-encoded signature", Es256, || { let t = token(Via::Es256, &[], &[]); with_signature(&t, &der_ecdsa(&signature_of(&t))) }, Error::InvalidSignature),
    case!("ES256 signature with a leading zero byte", Es256, || { let t = token(Via::Es256, &[], &[]); with_signature(&t, &[&[0][..], &signature_of(&t)].concat()) }, Error::InvalidSignature),
    case!("ES256 signature truncated to 63 bytes", Es256, || { let t = token(Via::Es256, &[], &[]); with_signature(&t, &signature_of(&t)[..63]) }, Error::InvalidSignature),

    // ---- crit (RFC 7515 §4.1.11)
    case!("unknown crit member", Rs256, || rs(&[("crit", r#"["exp"]"#), ("exp", "1")], &[]), Error::UnknownCritical { name } if name == "exp"),
    case!("empty crit list", Rs256, || rs(&[("crit", "[]")], &[]), Error::UnknownCritical { name } if name == "crit"),
    case!("crit is not a list", Rs256, || rs(&[("crit", r#""exp""#)], &[]), Error::UnknownCritical { name } if name == "crit"),
    case!("crit b64 with an unencoded payload", Rs256, || { let h = b64(header(&FX.rs256, &[("b64", "false"), ("crit", r#"["b64"]"#)])); format!("{h}.{{\"sub\":\"x\"}}.AAAA") }, Error::UnknownCritical { name } if name == "b64"),

    // ---- structure and size caps
    case!("empty token", Rs256, || String::new(), Error::SegmentCount { found: 1 }),
    case!("one segment", Rs256, || rs(&[], &[]).split('.').next().unwrap().to_owned(), Error::SegmentCount { found: 1 }),
    case!("two segments", Rs256, || rs(&[], &[]).rsplit_once('.').unwrap().0.to_owned(), Error::SegmentCount { found: 2 }),
    case!("four segments", Rs256, || format!("{}.AAAA", rs(&[], &[])), Error::SegmentCount { found: 4 }),
    case!("five segments", Rs256, || format!("{}..", rs(&[], &[])), Error::SegmentCount { found: 4 }),
    case!("100k dots", Rs256, || ".".repeat(100_000), Error::TokenTooLarge { len: 100_000, max: 8192 }),
    case!("100k dots past the size cap", Rs256Uncapped, || ".".repeat(100_000), Error::SegmentCount { found: 4 }),
    case!("header over the cap", Rs256, || rs(&[("pad", &format!("\"{}\"", "x".repeat(1600)))], &[]), Error::HeaderTooLarge { max: 2048, .. }),
    case!("token over the cap", Rs256, || rs(&[], &[("pad", &format!("\"{}\"", "x".repeat(8000)))]), Error::TokenTooLarge { max: 8192, .. }),

    // ---- strict base64url (RFC 7515 §2)
    case!("padded header", Rs256, || rs(&[], &[]).replacen('.', "=.", 1), Error::Base64 { segment: Segment::Header }),
    case!("padded payload", Rs256, || { let t = rs(&[], &[]); let (i, s) = t.rsplit_once('.').unwrap(); format!("{i}=.{s}") }, Error::Base64 { segment: Segment::Payload }),
    case!("padded signature", Rs256, || format!("{}==", rs(&[], &[])), Error::Base64 { segment: Segment::Signature }),
    case!("non-canonical bits in the header", Rs256, || non_canonical(&rs(&[], &[]), 0), Error::Base64 { segment: Segment::Header }),
    case!("non-canonical bits in the payload", Rs256, || non_canonical(&rs_with_unused_payload_bits(), 1), Error::Base64 { segment: Segment::Payload }),
    case!("non-canonical bits in the signature", Rs256, || non_canonical(&rs(&[], &[]), 2), Error::Base64 { segment: Segment::Signature }),
    case!("standard alphabet (+ and /)", Rs256, || rs(&[], &[]).replacen('.', ".+/", 1), Error::Base64 { segment: Segment::Payload }),
    case!("leading space", Rs256, || format!(" {}", rs(&[], &[])), Error::Base64 { segment: Segment::Header }),
    case!("trailing newline", Rs256, || format!("{}\n", rs(&[], &[])), Error::Base64 { segment: Segment::Signature }),
    case!("space inside the payload", Rs256, || rs(&[], &[]).replacen('.', ". ", 1), Error::Base64 { segment: Segment::Payload }),
    case!("tab before the signature", Rs256, || { let t = rs(&[], &[]); let (i, s) = t.rsplit_once('.').unwrap(); format!("{i}.\t{s}") }, Error::Base64 { segment: Segment::Signature }),

    // ---- header shape
    case!("header is not an object", Rs256, || sign_raw(&FX.rs256, r#"["RS256"]"#, &claims(&[])), Error::MalformedHeader { .. }),
    case!("header is not UTF-8", Rs256, || format!("{}.{}.AAAA", b64([0xff, 0xfe]), b64(claims(&[]))), Error::MalformedHeader { .. }),
    case!("header without alg", Rs256, || rs(&[("alg", "")], &[]), Error::MalformedHeader { .. }),
    case!("alg is a number", Rs256, || rs(&[("alg", "256")], &[]), Error::MalformedHeader { .. }),
    case!("alg in lower case", Rs256, || rs(&[("alg", r#""rs256""#)], &[]), Error::UnsupportedAlgorithm { alg } if alg == "rs256"),
    case!("alg with a trailing space", Rs256, || rs(&[("alg", r#""RS256 ""#)], &[]), Error::UnsupportedAlgorithm { .. }),
    case!("kid is a number", Set, || rs(&[("kid", "1")], &[]), Error::MalformedHeader { .. }),

    // ---- duplicate members, escaped or not (RFC 7515 §5.2, RFC 7519 §4)
    case!("duplicate alg in the header", Rs256, || rs(&[("+alg", r#""RS256""#)], &[]), Error::DuplicateMember { part: Part::Header, name } if name == "alg"),
    case!("escaped duplicate alg (al\\u0067: none)", Rs256, || rs(&[(r"+al\u0067", r#""none""#)], &[]), Error::DuplicateMember { part: Part::Header, name } if name == "alg"),
    case!("escaped duplicate kid in the header", Set, || rs(&[(r"+\u006bid", r#""ec-1""#)], &[]), Error::DuplicateMember { part: Part::Header, name } if name == "kid"),
    case!("duplicate exp in the claims", Rs256, || rs(&[], &[("+exp", "99999999999")]), Error::DuplicateMember { part: Part::Claims, name } if name == "exp"),
    case!("escaped duplicate exp (\\u0065xp)", Rs256, || rs(&[], &[(r"+\u0065xp", "99999999999")]), Error::DuplicateMember { part: Part::Claims, name } if name == "exp"),
    case!("duplicate sub in the claims", Rs256, || rs(&[], &[("+sub", r#""admin""#)]), Error::DuplicateMember { part: Part::Claims, name } if name == "sub"),
    case!("escaped duplicate custom claim", Rs256, || rs(&[], &[("role", r#""user""#), (r"+r\u006fle", r#""admin""#)]), Error::DuplicateMember { part: Part::Claims, name } if name == "role"),

    // ---- claim types (RFC 7519 §4.1)
    case!("exp is a string", Rs256, || rs(&[], &[("exp", r#""99999999999""#)]), Error::InvalidClaimType { claim: "exp", .. }),
    case!("exp is a bool", Rs256, || rs(&[], &[("exp", "true")]), Error::InvalidClaimType { claim: "exp", .. }),
    case!("exp is null", Rs256, || rs(&[], &[("exp", "null")]), Error::InvalidClaimType { claim: "exp", .. }),
    case!("exp beyond 2^53", Rs256, || rs(&[], &[("exp", "1e300")]), Error::InvalidClaimType { claim: "exp", .. }),
    case!("nbf is a string", Rs256, || rs(&[], &[("nbf", r#""0""#)]), Error::InvalidClaimType { claim: "nbf", .. }),
    case!("iat is an array", Rs256, || rs(&[], &[("iat", "[0]")]), Error::InvalidClaimType { claim: "iat", .. }),
    case!("sub is a number", Rs256, || rs(&[], &[("sub", "42")]), Error::InvalidClaimType { claim: "sub", .. }),
    case!("iss is an array", Rs256, || rs(&[], &[("iss", &format!("[\"{ISS}\"]"))]), Error::InvalidClaimType { claim: "iss", .. }),
    case!("aud array with a number", Rs256, || rs(&[], &[("aud", &format!("[\"{AUD}\",1]"))]), Error::InvalidClaimType { claim: "aud", .. }),
    case!("aud is an object", Rs256, || rs(&[], &[("aud", "{}")]), Error::InvalidClaimType { claim: "aud", .. }),
    case!("claims are an array", Rs256, || sign_raw(&FX.rs256, &header(&FX.rs256, &[]), "[]"), Error::MalformedClaims { .. }),
    case!("claims have trailing data", Rs256, || sign_raw(&FX.rs256, &header(&FX.rs256, &[]), &format!("{} {{}}", claims(&[]))), Error::MalformedClaims { .. }),

    // ---- keys carried or named by the token: signed by the attacker, embedding their key
    case!("jwk header with the attacker's key", Es256, || embedded("jwk", &FX.attacker.to_public_jwk().unwrap().to_json()), Error::InvalidSignature),
    case!("jwk header with the attacker's key, key set", Set, || embedded("jwk", &FX.attacker.to_public_jwk().unwrap().to_json()), Error::InvalidSignature),
    case!("jku header to the attacker's JWKS", Es256, || embedded("jku", r#""https://attacker.example/jwks.json""#), Error::InvalidSignature),
    case!("x5u header to the attacker's certificate", Es256, || embedded("x5u", r#""https://attacker.example/cert.pem""#), Error::InvalidSignature),
    case!("x5c header with the attacker's key", Es256, || embedded("x5c", &format!("[\"{}\"]", attacker_spki_base64())), Error::InvalidSignature),
    case!("jwk header, attacker's own kid, key set", Set, || { let h = header(&FX.attacker, &[("kid", r#""attacker""#), ("jwk", &FX.attacker.to_public_jwk().unwrap().to_json())]); sign_raw(&FX.attacker, &h, &claims(&[])) }, Error::UnknownKid { kid: Some(k) } if k == "attacker"),

    // ---- kid injection against a key set
    case!("kid path traversal", Set, || rs(&[("kid", r#""../../dev/null""#)], &[]), Error::UnknownKid { kid: Some(k) } if k == "../../dev/null"),
    case!("kid SQL injection", Set, || rs(&[("kid", r#""' OR '1'='1""#)], &[]), Error::UnknownKid { kid: Some(k) } if k == "' OR '1'='1"),
    case!("kid with a NUL suffix", Set, || rs(&[("kid", r#""rsa-1\u0000""#)], &[]), Error::UnknownKid { .. }),
    case!("no kid with two keys", Set, || rs(&[("kid", "")], &[]), Error::UnknownKid { kid: None }),

    // ---- signature tampering
    case!("signature swapped from another token", Rs256, || { let other = rs(&[], &[("sub", r#""mallory""#)]); with_signature(&rs(&[], &[]), &signature_of(&other)) }, Error::InvalidSignature),
    case!("payload swapped under a valid signature", Rs256, || { let t = rs(&[], &[]); let (h, rest) = t.split_once('.').unwrap(); let (_, s) = rest.split_once('.').unwrap(); format!("{h}.{}.{s}", b64(claims(&[("sub", r#""admin""#)]))) }, Error::InvalidSignature),
    case!("truncated signature", Rs256, || { let t = rs(&[], &[]); with_signature(&t, &signature_of(&t)[..255]) }, Error::InvalidSignature),
    case!("empty signature", Rs256, || { let t = rs(&[], &[]); t[..=t.rfind('.').unwrap()].to_owned() }, Error::InvalidSignature),
    case!("bit-flipped signature", Rs256, || { let t = rs(&[], &[]); let mut s = signature_of(&t); s[10] ^= 1; with_signature(&t, &s) }, Error::InvalidSignature),
    case!("bit-flipped HMAC tag", Hs256, || { let t = token(Via::Hs256, &[], &[]); let mut s = signature_of(&t); s[31] ^= 0x80; with_signature(&t, &s) }, Error::InvalidSignature),
    case!("HMAC tag truncated to 16 bytes", Hs256, || { let t = token(Via::Hs256, &[], &[]); with_signature(&t, &signature_of(&t)[..16]) }, Error::InvalidSignature),

    // ---- claim validation (RFC 7519 §4.1, RFC 8725 §3.11)
    case!("expired beyond the leeway", Rs256, || rs(&[], &[("exp", &(NOW - 31).to_string())]), Error::Expired { now: NOW, leeway: 30, .. }),
    case!("nbf in the future", Rs256, || rs(&[], &[("nbf", &(NOW + 31).to_string())]), Error::NotYetValid { now: NOW, .. }),
    case!("iat in the future", Rs256, || rs(&[], &[("iat", &(NOW + 31).to_string())]), Error::IssuedInFuture { now: NOW, .. }),
    case!("missing exp", Rs256, || rs(&[], &[("exp", "")]), Error::MissingClaim { claim: "exp" }),
    case!("wrong iss", Rs256, || rs(&[], &[("iss", r#""https://evil.example""#)]), Error::IssuerMismatch { found, .. } if found == "https://evil.example"),
    case!("missing iss", Rs256, || rs(&[], &[("iss", "")]), Error::MissingClaim { claim: "iss" }),
    case!("wrong aud", Rs256, || rs(&[], &[("aud", r#""billing-api""#)]), Error::AudienceMismatch { .. }),
    case!("aud array without ours", Rs256, || rs(&[], &[("aud", r#"["a","b"]"#)]), Error::AudienceMismatch { .. }),
    case!("missing aud", Rs256, || rs(&[], &[("aud", "")]), Error::MissingClaim { claim: "aud" }),
    case!("wrong typ (an ID token)", Rs256, || rs(&[("typ", r#""JWT""#)], &[]), Error::TypeMismatch { found: Some(t), .. } if t == "JWT"),
    case!("missing typ", Rs256, || rs(&[("typ", "")], &[]), Error::TypeMismatch { found: None, .. }),
];

#[test]
fn honest_tokens_verify() {
    for via in [
        Via::Rs256,
        Via::Es256,
        Via::Es384,
        Via::Es512,
        Via::Hs256,
        Via::Set,
        Via::Rs256Uncapped,
    ] {
        via.verify(&token(via, &[], &[]))
            .unwrap_or_else(|e| panic!("{via:?}: {e}"));
    }
    // And the variations the corpus relies on are not refused for themselves.
    Via::Rs256.verify(&rs_with_unused_payload_bits()).unwrap();
    Via::Rs256
        .verify(&rs(&[("typ", r#""application/AT+JWT""#)], &[]))
        .unwrap();
    Via::Rs256
        .verify(&rs(&[], &[("role", r#""user""#)]))
        .unwrap();
    Via::Rs256
        .verify(&rs(&[], &[("aud", &format!("[\"x\",\"{AUD}\"]"))]))
        .unwrap();
    Via::Set.verify(&token(Via::Es256, &[], &[])).unwrap();
}

#[test]
fn every_attack_in_the_corpus_is_refused_for_its_reason() {
    let mut failures = Vec::new();
    for case in CASES {
        let token = (case.token)();
        match case.via.verify(&token) {
            Ok(()) => failures.push(format!("{}: ACCEPTED", case.name)),
            Err(e) if (case.expect)(&e) => {}
            Err(e) => failures.push(format!("{}: refused for another reason: {e:?}", case.name)),
        }
    }
    let mut names: Vec<_> = CASES.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), CASES.len(), "case names must be unique");
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn key_sets_refuse_ambiguous_or_mixed_keys() {
    let rs = FX.rs256.verifying_key();
    let es = FX.es256.verifying_key();
    let hs = FX.hs256.verifying_key();
    assert!(matches!(
        KeySet::new([rs.clone(), es.clone().with_kid("rsa-1")]),
        Err(Error::InvalidKeySet { .. })
    ));
    assert!(matches!(
        KeySet::new([rs.clone(), hs]),
        Err(Error::InvalidKeySet { .. })
    ));
    assert!(matches!(
        KeySet::new([rs, es.without_kid()]),
        Err(Error::InvalidKeySet { .. })
    ));
}

/// Wycheproof `json_web_key_test.json` tcId 4 ("rejectsDuplicateKid") is refused upstream
/// for a reason it does not test: its second key's `k` has non-canonical trailing bits. With
/// that one character made canonical, the set is refused for the duplicate `kid` itself.
#[test]
fn wycheproof_duplicate_kid_set_is_refused_for_the_duplicate() {
    let set = |second_k: &str| {
        JwkSet::from_json(&format!(
            r#"{{"keys":[
                {{"kty":"oct","alg":"HS256","use":"sig","kid":"kid-aes-sign","k":"-ebuDNsVZ2iJtoZ-akfXTSCt4UO2cruLCsbWlBinggE"}},
                {{"kty":"oct","alg":"HS256","use":"sig","kid":"kid-aes-sign","k":"{second_k}"}}
            ]}}"#
        ))
        .and_then(|s| KeySet::from_jwks(&s))
    };
    assert!(matches!(
        set("-xxuDNsVZ2iJtos-akfXTSCt4UO2cruLCsbWlBingge"),
        Err(Error::InvalidKey { .. })
    ));
    assert!(matches!(
        set("-xxuDNsVZ2iJtos-akfXTSCt4UO2cruLCsbWlBinggc"),
        Err(Error::InvalidKeySet { .. })
    ));
}

/// Keys the attacker would like a verifier to build are refused at construction.
#[test]
fn weak_and_misused_keys_are_refused_at_construction() {
    for (alg, len) in [
        (Algorithm::Hs256, 31),
        (Algorithm::Hs384, 47),
        (Algorithm::Hs512, 63),
    ] {
        assert!(matches!(
            VerifyingKey::from_hmac_secret(alg, &vec![7; len]),
            Err(Error::WeakKey { .. })
        ));
    }
    assert!(matches!(
        VerifyingKey::from_hmac_secret(Algorithm::Rs256, &[7; 64]),
        Err(Error::KeyAlgorithmMismatch { .. })
    ));
    // A public PEM is never an HMAC secret through the PEM constructors.
    assert!(matches!(
        VerifyingKey::from_pem(Algorithm::Hs256, &rs256_public_pem()),
        Err(Error::KeyAlgorithmMismatch { .. })
    ));
    assert!(matches!(
        VerifyingKey::from_pem(Algorithm::Es256, &rs256_public_pem()),
        Err(Error::KeyAlgorithmMismatch { .. })
    ));
}

// ------------------------------------------------------------------ regressions

/// Found by `properties::claim_validation_and_error_messages_never_panic`: with a caller
/// clock at an extreme (here `i64::MIN`), formatting `NotYetValid` computed `nbf - now` and
/// overflowed (a panic in debug builds, a wrong number in release). The messages now
/// saturate.
#[test]
fn proptest_time_error_messages_do_not_overflow_at_extreme_clocks() {
    let token = token(Via::Hs256, &[], &[("nbf", &NOW.to_string())]);
    let err = FX
        .hs256
        .verifying_key()
        .verify_jwt::<NoCustomClaims>(&token, &Validation::new(), i64::MIN)
        .unwrap_err();
    assert!(matches!(err, Error::NotYetValid { now: i64::MIN, .. }));
    assert!(err.to_string().contains(&i64::MAX.to_string()), "{err}");

    for err in [
        Error::Expired {
            exp: -(1 << 53),
            now: i64::MAX,
            leeway: 0,
        },
        Error::NotYetValid {
            nbf: 1 << 53,
            now: i64::MIN,
            leeway: 0,
        },
        Error::IssuedInFuture {
            iat: 1 << 53,
            now: i64::MIN,
            leeway: 0,
        },
    ] {
        assert!(err.to_string().contains(&i64::MAX.to_string()), "{err}");
    }
}

/// RFC 7518 §2 (`Base64urlUInt`): an RSA JWK's integers use the minimum number of octets.
/// The private ones (`d`, `p`, `q`, `dp`, `dq`, `qi`) with a leading zero octet were
/// accepted; a modulus or exponent with one was refused only by aws-lc, as "inconsistent
/// components", which does not tell the user what to fix (§6.3.1.1 names the 257-octet
/// modulus some libraries emit). Every RSA integer member is now checked here and refused
/// with the rule it breaks.
#[test]
fn rsa_jwk_integers_with_a_leading_zero_octet_are_refused() {
    let with_leading_zero = |b64: &str| {
        let mut bytes = vec![0];
        bytes.extend(base64url::decode(b64).unwrap());
        base64url::encode(bytes)
    };
    let public = FX.rs256.to_public_jwk().unwrap();
    // The canonical JWK loads and names the same key as the PEM.
    let from_pem = VerifyingKey::from_pem(Algorithm::Rs256, &rs256_public_pem()).unwrap();
    let canonical = VerifyingKey::from_jwk(
        &Jwk {
            kid: None,
            ..public.clone()
        },
        None,
    )
    .unwrap();
    assert_eq!(canonical.kid(), from_pem.kid());

    let mut padded_n = public.clone();
    padded_n.n = Some(with_leading_zero(public.n.as_deref().unwrap()));
    let mut padded_e = public;
    padded_e.e = Some("AAEAAQ".to_owned());
    for jwk in [padded_n, padded_e] {
        assert!(
            matches!(
                VerifyingKey::from_jwk(&jwk, None),
                Err(Error::InvalidKey { ref reason }) if reason.contains("leading zero")
            ),
            "{:?}",
            VerifyingKey::from_jwk(&jwk, None).map(|k| k.kid().map(str::to_owned))
        );
    }

    let private = FX.rs256.to_private_jwk().unwrap();
    assert!(SigningKey::from_jwk(&private, None).is_ok());
    for member in ["d", "p", "q", "dp", "dq", "qi"] {
        let mut jwk = private.clone();
        let slot = match member {
            "d" => &mut jwk.d,
            "p" => &mut jwk.p,
            "q" => &mut jwk.q,
            "dp" => &mut jwk.dp,
            "dq" => &mut jwk.dq,
            _ => &mut jwk.qi,
        };
        let padded = with_leading_zero(slot.as_ref().unwrap().expose());
        *slot = Some(JwkSecret::new(padded));
        assert!(
            matches!(
                SigningKey::from_jwk(&jwk, None),
                Err(Error::InvalidKey { ref reason }) if reason.contains("leading zero")
            ),
            "{member}"
        );
    }
}

/// RFC 7519 §2 allows fractional NumericDates. Every one was rounded down, which for `nbf`
/// widened the validity window: with no leeway, a token whose `nbf` was half a second ahead
/// was accepted. `nbf` now rounds up (exact against a whole-second clock); `exp` still rounds
/// down.
///
/// `iat` rounds down too: it is the second the token was issued in. User-wide revocation
/// cut-offs (tessera-auth's and tessera-axum's) revoke the tokens "issued at or before second
/// T"; an `iat` of T.5 rounded up to T + 1 would escape a cut-off at T though the token may
/// well predate the revocation, so rounding it up widened validity instead of narrowing it.
#[test]
fn fractional_nbf_is_not_rounded_into_validity_and_iat_keeps_its_second() {
    let strict = Validation::new().with_leeway(0);
    let verify = |claims: &[(&str, &str)]| {
        FX.hs256
            .verifying_key()
            .verify_jwt::<NoCustomClaims>(&token(Via::Hs256, &[], claims), &strict, NOW)
            .map(|c| c.claims.registered.iat)
    };
    let half_past = format!("{NOW}.5");
    let half_before = format!("{}.5", NOW - 1);
    assert_eq!(
        verify(&[("nbf", &half_past)]),
        Err(Error::NotYetValid {
            nbf: NOW + 1,
            now: NOW,
            leeway: 0
        })
    );
    assert_eq!(
        verify(&[("exp", &half_past)]),
        Err(Error::Expired {
            exp: NOW,
            now: NOW,
            leeway: 0
        })
    );
    // Issued during the second `NOW`: `iat` is `NOW`, which a cut-off at `NOW` covers.
    assert_eq!(
        verify(&[("iat", &half_past)]),
        Ok(Some(tessera_jose::NumericDate(NOW)))
    );
    assert_eq!(
        verify(&[("iat", &half_before)]),
        Ok(Some(tessera_jose::NumericDate(NOW - 1)))
    );
    // A whole second ahead is still issued in the future.
    assert!(matches!(
        verify(&[("iat", &format!("{}.5", NOW + 1))]),
        Err(Error::IssuedInFuture { iat, .. }) if iat == NOW + 1
    ));
    // Already past: accepted.
    verify(&[("nbf", &half_before), ("iat", &half_before)]).unwrap();
}

/// RFC 7517 §4.3: a private JWK meant only for signing says `"key_ops":["sign"]`. Its public
/// copy kept only the operations literally named `verify`, so it was published with
/// `"key_ops":[]`, which no verifier (this crate's included) accepts: a JWKS built with
/// `JwkSet::to_public` could not be loaded. The public half now gets `["verify"]`.
#[test]
fn a_signing_only_jwk_publishes_a_public_jwk_that_verifies() {
    let mut private = FX.es256.to_private_jwk().unwrap();
    private.key_use = None;
    private.key_ops = Some(vec!["sign".to_owned()]);
    let signer = SigningKey::from_jwk(&private, None).unwrap();
    let published = JwkSet {
        keys: vec![private],
    }
    .to_public();
    assert_eq!(
        published.keys[0].key_ops.as_deref(),
        Some(&["verify".to_owned()][..])
    );
    let set = KeySet::from_jwks(&published).unwrap();
    let token = signer.sign_jws(b"{}", None, None).unwrap();
    set.verify_jws(&token, &Limits::default()).unwrap();
}

/// `JwkSet::to_public` round trip with a key-agreement key. A WebCrypto-style ECDH private
/// JWK (`"key_ops":["deriveKey","deriveBits"]`, no `use`, no `alg`) next to a signing key:
/// the private set loads strictly (the ECDH key is skipped as meant for encryption), and so
/// must the published set. `to_public` dropped the key-agreement operations, leaving
/// `"key_ops":[]`, an EC key that says nothing about its purpose, which `KeySet::from_jwks`
/// then tried to load as an ES256 verifying key and refused, taking the set down with it.
#[test]
fn a_published_set_with_an_ecdh_key_loads_like_its_private_set() {
    let signing = FX.es256.to_private_jwk().unwrap();
    let mut ecdh = SigningKey::generate(Algorithm::Es256)
        .unwrap()
        .to_private_jwk()
        .unwrap();
    ecdh.key_use = None;
    ecdh.alg = None;
    ecdh.kid = Some("ecdh-1".into());
    ecdh.key_ops = Some(vec!["deriveKey".into(), "deriveBits".into()]);
    let private = JwkSet {
        keys: vec![signing, ecdh],
    };
    assert_eq!(KeySet::from_jwks(&private).unwrap().len(), 1);
    let published = private.to_public();
    let set = KeySet::from_jwks(&published).unwrap();
    assert_eq!(
        published.keys[1].key_ops.as_deref(),
        Some(&["deriveKey".to_owned(), "deriveBits".to_owned()][..])
    );
    assert_eq!(set.len(), 1);
    set.verify_jwt::<NoCustomClaims>(&token(Via::Es256, &[], &[]), &validation(), NOW)
        .unwrap();
    // Every operation's public counterpart, in order and without duplicates.
    let mut all = FX.es256.to_private_jwk().unwrap();
    all.key_ops = Some(
        [
            "sign",
            "verify",
            "encrypt",
            "decrypt",
            "wrapKey",
            "unwrapKey",
            "deriveKey",
            "deriveBits",
            "other",
        ]
        .map(str::to_owned)
        .to_vec(),
    );
    assert_eq!(
        all.to_public().unwrap().key_ops.unwrap(),
        ["verify", "encrypt", "wrapKey", "deriveKey", "deriveBits"]
    );
}

/// RFC 4055 §1.2: a public key whose SubjectPublicKeyInfo names `id-RSASSA-PSS` is for
/// RSASSA-PSS only, and parameters restrict it further (§3.1): every signature must use
/// their hash, mask generation function and trailer field, and a salt at least their
/// `saltLength` long (§3.3). Such a key was read as a plain RSA key and accepted for RS256
/// (PKCS#1 v1.5) or any PS algorithm; then only its hash was read, so a key whose MGF1 hash
/// is SHA-1 (OpenSSL's `rsa_pss_keygen_md:sha256` alone), or whose minimum salt is longer
/// than the hash, was still accepted for PS256. Now it serves only the PS algorithm its
/// parameters fit (RFC 7518 §3.5: MGF1 with the same hash, salt as long as the hash).
#[test]
fn rsassa_pss_only_public_keys_serve_only_their_pss_algorithms() {
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let len = content.len();
        let mut out = vec![tag];
        match len {
            0..=0x7f => out.push(u8::try_from(len).unwrap()),
            0x80..=0xff => out.extend([0x81, u8::try_from(len).unwrap()]),
            _ => out.extend([
                0x82,
                u8::try_from(len >> 8).unwrap(),
                u8::try_from(len & 0xff).unwrap(),
            ]),
        }
        out.extend_from_slice(content);
        out
    }
    const PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
    const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
    const SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
    const SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
    const MGF1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08];
    // The RS256 key's SubjectPublicKeyInfo: SEQUENCE { rsaEncryption, BIT STRING }.
    let pem = rs256_public_pem();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let b64url = b64.replace('+', "-").replace('/', "_").replace('=', "");
    let spki = base64url::decode(b64url).unwrap();
    assert_eq!(&spki[..2], &[0x30, 0x82]);
    let body = &spki[4..];
    let bit_string = &body[2 + usize::from(body[1])..];
    let with_pss = |params: &[u8]| {
        let alg = tlv(0x30, &[tlv(0x06, PSS), params.to_vec()].concat());
        tlv(0x30, &[alg, bit_string.to_vec()].concat())
    };
    let unrestricted = with_pss(&[]);
    // RSASSA-PSS-params fields (RFC 4055 §3.1), hash identifiers with NULL parameters as
    // OpenSSL writes them or without any.
    let hash_id = |oid: &[u8]| tlv(0x30, &[tlv(0x06, oid), vec![0x05, 0x00]].concat());
    let hash = |oid: &[u8]| tlv(0xa0, &hash_id(oid));
    let mgf1 = |oid: &[u8]| tlv(0xa1, &tlv(0x30, &[tlv(0x06, MGF1), hash_id(oid)].concat()));
    let int = |tag: u8, v: u8| tlv(tag, &tlv(0x02, &[v]));
    let params = |fields: &[Vec<u8>]| with_pss(&tlv(0x30, &fields.concat()));
    let sha256 = params(&[hash(SHA256), mgf1(SHA256)]);
    let sha256_no_null = with_pss(&tlv(
        0x30,
        &[
            tlv(0xa0, &tlv(0x30, &tlv(0x06, SHA256))),
            tlv(
                0xa1,
                &tlv(
                    0x30,
                    &[tlv(0x06, MGF1), tlv(0x30, &tlv(0x06, SHA256))].concat(),
                ),
            ),
        ]
        .concat(),
    ));
    let sha256_salt_32 = params(&[hash(SHA256), mgf1(SHA256), int(0xa2, 32), int(0xa3, 1)]);
    let sha512 = params(&[hash(SHA512), mgf1(SHA512), int(0xa2, 64)]);
    // What `openssl genpkey -algorithm RSA-PSS -pkeyopt rsa_pss_keygen_md:sha256` writes:
    // MGF1 stays SHA-1 (the default), which PS256 (MGF1 with SHA-256) does not fit, and
    // OpenSSL itself refuses to sign with MGF1-SHA-256 under that key.
    let sha256_mgf1_sha1 = params(&[hash(SHA256)]);
    let sha256_mgf1_sha384 = params(&[hash(SHA256), mgf1(SHA384)]);
    // A minimum salt longer than PS256's 32 octets (RFC 4055 §3.3).
    let sha256_salt_33 = params(&[hash(SHA256), mgf1(SHA256), int(0xa2, 33)]);
    let sha256_trailer_2 = params(&[hash(SHA256), mgf1(SHA256), int(0xa3, 2)]);
    let out_of_order = params(&[mgf1(SHA256), hash(SHA256)]);
    let sha1_default = with_pss(&tlv(0x30, &[]));
    for (der, alg, usable) in [
        (&unrestricted, Algorithm::Ps256, true),
        (&unrestricted, Algorithm::Ps512, true),
        (&unrestricted, Algorithm::Rs256, false),
        (&unrestricted, Algorithm::Rs512, false),
        (&sha256, Algorithm::Ps256, true),
        (&sha256, Algorithm::Ps384, false),
        (&sha256, Algorithm::Rs256, false),
        (&sha256_no_null, Algorithm::Ps256, true),
        (&sha256_salt_32, Algorithm::Ps256, true),
        (&sha512, Algorithm::Ps512, true),
        (&sha512, Algorithm::Ps256, false),
        (&sha256_mgf1_sha1, Algorithm::Ps256, false),
        (&sha256_mgf1_sha384, Algorithm::Ps256, false),
        (&sha256_mgf1_sha384, Algorithm::Ps384, false),
        (&sha256_salt_33, Algorithm::Ps256, false),
        (&sha256_trailer_2, Algorithm::Ps256, false),
        (&out_of_order, Algorithm::Ps256, false),
        (&sha1_default, Algorithm::Ps256, false),
    ] {
        let key = VerifyingKey::from_public_der(alg, der);
        if usable {
            assert_eq!(
                key.unwrap().thumbprint().unwrap(),
                FX.rs256.verifying_key().thumbprint().unwrap()
            );
        } else {
            assert!(
                matches!(key, Err(Error::KeyAlgorithmMismatch { .. })),
                "{alg}: {:?}",
                key.map(|k| k.algorithm())
            );
        }
    }
    // The hand-written reader of RSASSA-PSS-params on every truncation and every bit flip
    // of the AlgorithmIdentifier of two restricted keys: never a panic, never an RS
    // algorithm, and never more than one PS algorithm for a key with parameters.
    for der in [&sha256_salt_32, &sha512, &sha256_no_null] {
        let alg_end = 4 + 2 + usize::from(der[5]);
        let mut variants: Vec<Vec<u8>> = (0..der.len()).map(|n| der[..n].to_vec()).collect();
        for byte in 0..alg_end {
            for bit in 0..8 {
                let mut v = der.clone();
                v[byte] ^= 1 << bit;
                variants.push(v);
            }
        }
        for v in &variants {
            let fits: Vec<Algorithm> = [
                Algorithm::Ps256,
                Algorithm::Ps384,
                Algorithm::Ps512,
                Algorithm::Rs256,
            ]
            .into_iter()
            .filter(|alg| VerifyingKey::from_public_der(*alg, v).is_ok())
            .collect();
            assert!(
                fits.len() <= 1 && !fits.contains(&Algorithm::Rs256),
                "{fits:?} for {v:02x?}"
            );
        }
    }
}

/// RFC 7518 §6.3.2: `d` is required in an RSA private key, and the CRT members come all
/// together or not at all. A JWK with the public members plus `p` and `q` but no `d` was
/// loaded as a public key without looking at them, so private members that belong to no key
/// at all (here: another key's primes) went unnoticed. Any private member now makes the JWK
/// a private key that must be complete and match its public members.
#[test]
fn an_rsa_jwk_with_crt_members_but_no_d_is_refused() {
    let private = FX.rs256.to_private_jwk().unwrap();
    let other = SigningKey::generate(Algorithm::Rs256)
        .unwrap()
        .to_private_jwk()
        .unwrap();
    for donor in [&private, &other] {
        let mut jwk = private.to_public().unwrap();
        jwk.p = donor.p.clone();
        jwk.q = donor.q.clone();
        assert!(
            matches!(
                VerifyingKey::from_jwk(&jwk, None),
                Err(Error::InvalidKey { ref reason }) if reason.contains("`d`")
            ),
            "{:?}",
            VerifyingKey::from_jwk(&jwk, None).map(|k| k.algorithm())
        );
        assert!(matches!(
            SigningKey::from_jwk(&jwk, None),
            Err(Error::InvalidKey { .. })
        ));
    }
    // The complete private JWK still verifies, and its public half alone too.
    VerifyingKey::from_jwk(&private, None).unwrap();
    VerifyingKey::from_jwk(&private.to_public().unwrap(), None).unwrap();
}

/// A SubjectPublicKeyInfo with bytes after it was refused ("trailing data after public key"),
/// but a PKCS#1 RSAPublicKey (the `RSA PUBLIC KEY` PEM, or the key inside an SPKI's BIT
/// STRING) was read up to its exponent and whatever followed was ignored, inside the
/// SEQUENCE or after it. Both are now refused the same way.
#[test]
fn rsa_public_keys_with_trailing_data_are_refused() {
    let pem = rs256_public_pem();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let spki = base64url::decode(b64.replace('+', "-").replace('/', "_").replace('=', "")).unwrap();
    // SEQUENCE { AlgorithmIdentifier (15 bytes), BIT STRING { 0x00, RSAPublicKey } }
    assert_eq!(spki[..4], [0x30, 0x82, 0x01, 0x22]);
    let pkcs1 = &spki[4 + 15 + 5..];
    assert_eq!(pkcs1[..4], [0x30, 0x82, 0x01, 0x0a]);
    let fingerprint = FX.rs256.verifying_key().thumbprint().unwrap();
    let load = |der: &[u8]| VerifyingKey::from_public_der(Algorithm::Rs256, der);
    assert_eq!(load(pkcs1).unwrap().thumbprint().unwrap(), fingerprint);

    let after = [pkcs1, &[0x00, 0x00][..]].concat();
    // The same RSAPublicKey with an extra INTEGER inside its SEQUENCE (length 0x010a + 3).
    let inside = [
        &[0x30, 0x82, 0x01, 0x0d][..],
        &pkcs1[4..],
        &[0x02, 0x01, 0x07],
    ]
    .concat();
    // And as the BIT STRING of an SPKI (lengths grown by 2).
    let in_spki = [
        &[0x30, 0x82, 0x01, 0x24][..],
        &spki[4..19],
        &[0x03, 0x82, 0x01, 0x11, 0x00],
        &after,
    ]
    .concat();
    for (what, der) in [
        ("after", &after),
        ("inside", &inside),
        ("in an SPKI", &in_spki),
    ] {
        assert!(
            matches!(load(der), Err(Error::InvalidKey { .. })),
            "{what}: {:?}",
            load(der).map(|k| k.algorithm())
        );
    }
}

/// RFC 7517 §4.2–4.4: `use`, `key_ops` and `alg` each say what a key is for. A JWK Set that
/// publishes a signing key next to an encryption key marked only by `alg` (`RSA-OAEP`) or
/// `key_ops` (`["deriveKey"]`), both without `use`, could not be loaded by the strict
/// `KeySet::from_jwks` at all: only `use: enc` keys were skipped, so the encryption key
/// failed as "unsupported algorithm" or "key_ops does not permit verify" and took the set
/// down with it. Such keys are now skipped like `use: enc` ones; keys whose members
/// disagree are still refused.
#[test]
fn encryption_keys_marked_by_alg_or_key_ops_are_skipped_by_strict_jwks_loading() {
    let signing = FX.es256.to_public_jwk().unwrap();
    let mut by_alg = FX.rs256.to_public_jwk().unwrap();
    by_alg.key_use = None;
    by_alg.alg = Some("RSA-OAEP".into());
    by_alg.kid = Some("enc-rsa".into());
    let mut by_ops = FX.es384.to_public_jwk().unwrap();
    by_ops.key_use = None;
    by_ops.alg = None;
    by_ops.key_ops = Some(vec!["deriveKey".into(), "deriveBits".into()]);
    by_ops.kid = Some("enc-ecdh".into());
    let set = KeySet::from_jwks(&JwkSet {
        keys: vec![signing.clone(), by_alg.clone(), by_ops],
    })
    .unwrap();
    assert_eq!(set.len(), 1);
    set.verify_jwt::<NoCustomClaims>(&token(Via::Es256, &[], &[]), &validation(), NOW)
        .unwrap();

    // Members that disagree are not "meant for encryption": the set is refused.
    let mut mixed = by_alg;
    mixed.key_ops = Some(vec!["verify".into()]);
    let mut sig_but_aes = FX.es384.to_public_jwk().unwrap();
    sig_but_aes.alg = Some("A256GCM".into());
    for odd in [mixed, sig_but_aes] {
        assert!(
            KeySet::from_jwks(&JwkSet {
                keys: vec![signing.clone(), odd],
            })
            .is_err()
        );
    }
}
