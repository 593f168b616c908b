//! `tessera token verify`: the algorithm comes from the key (or `--alg`), never from the
//! token; several keys are chosen between by `kid` through `jose`'s `KeySet`.
//!
//! Exit 0 with the verified header and claims on stdout; exit 1 with one line saying why
//! when the token is refused; exit 2 when the keys or flags cannot work.

use std::fmt::Display;

use serde_json::{Map, Value, json};
use tessera_jose::{
    Algorithm, Error, Header, KeySet, Limits, NoCustomClaims, Unverified, Validation, VerifyingKey,
    decode_unverified,
};

use super::input::{self, KeyFile};
use super::{VerifyArgs, jwks_url, time};
use crate::exit::Failure;
use crate::output;

/// Prints the steps of `--explain` to stderr; silent otherwise.
pub(super) struct Explain {
    on: bool,
}

impl Explain {
    /// A step that happened or a fact worth knowing.
    pub(super) fn info(&self, line: impl Display) {
        if self.on {
            crate::output::errln!("explain: {line}");
        }
    }

    /// A check that passed.
    fn ok(&self, line: impl Display) {
        self.info(format_args!("ok: {line}"));
    }

    /// The check that failed; returns the failure to report.
    fn refuse(&self, step: &str, error: &Error, hint: &str) -> Failure {
        self.info(format_args!("FAILED at {step}: {error}"));
        Failure::refused(format!("{error}{hint}"))
    }
}

/// One verification key and where it came from.
struct Candidate {
    key: VerifyingKey,
    source: String,
}

/// What the token is checked against.
enum Verifier {
    /// One key given directly (a JWK, a PEM or a secret): it is used whatever the token's
    /// `kid`, as the user chose it.
    Single(Candidate),
    /// Several keys or a JWK Set: the token's `kid` selects one.
    Set { set: KeySet, keys: Vec<Candidate> },
}

pub(super) async fn run(args: &VerifyArgs) -> Result<(), Failure> {
    let explain = Explain { on: args.explain };
    let alg = args.alg.as_deref().map(input::algorithm).transpose()?;
    let verifier = load_keys(args, alg, &explain).await?;
    let token = input::token(&args.token)?;
    let limits = Limits::default();

    explain.info(format_args!(
        "token: {} bytes{}",
        token.len(),
        if args.token == "-" { " from stdin" } else { "" }
    ));
    let unverified =
        Unverified::parse(&token, &limits).map_err(|e| explain.refuse("structure", &e, ""))?;
    let header = unverified.header();
    explain.ok(format_args!(
        "structure: three segments, header {}",
        header_json(&token, &limits).map_or_else(String::new, |h| format!("(unverified) {h}"))
    ));
    if header.has_embedded_key_reference() {
        explain.info(
            "the header references a key (jwk, jku, x5u, x5c or x5t); it is ignored: only \
             the keys given on the command line are used",
        );
    }
    if let Some(expected) = alg
        && header.algorithm() != expected
    {
        let e = Error::AlgorithmMismatch {
            expected,
            found: header.algorithm(),
        };
        return Err(explain.refuse("--alg", &e, ""));
    }
    let key = select(&verifier, header, &explain)?;
    let jws = unverified
        .verify(key)
        .map_err(|e| explain.refuse("signature", &e, ""))?;
    explain.ok(format_args!("signature verifies ({})", key.algorithm()));

    if args.jws {
        explain.info("--jws: no JWT claim rules applied; printing the payload");
        return print_payload(jws.payload());
    }

    let now = args.now.unwrap_or_else(time::now);
    let mut validation = Validation::new().with_leeway(args.leeway);
    if let Some(iss) = &args.iss {
        validation = validation.with_issuer(iss.clone());
    }
    for aud in &args.aud {
        validation = validation.with_audience(aud.clone());
    }
    if let Some(typ) = &args.typ {
        validation = validation.with_required_typ(typ.clone());
    }
    let claims: Option<Map<String, Value>> = serde_json::from_slice(jws.payload()).ok();
    explain_claims(
        &explain,
        claims.as_ref(),
        jws.header(),
        &validation,
        now,
        args.now.is_some(),
    );
    jws.claims::<NoCustomClaims>(&validation, now)
        .map_err(|e| explain.refuse("claims", &e, &claims_hint(&e)))?;
    explain.ok("claims valid");

    // Both are authentic now: the header was signed, and the claims just validated. The
    // claim rules read only the claims they check, so claims that serde_json cannot read
    // (nested deeper than its 128 levels) validate; printing `{}` for them as verified
    // would misstate the token.
    let header = header_value(&token, &limits);
    let claims = match claims {
        Some(claims) => claims,
        None => serde_json::from_slice(jws.payload()).map_err(|e| {
            Failure::refused(format!(
                "the signature and claim rules pass, but the claims cannot be printed ({e}{}); \
                 nothing is shown rather than incomplete claims (check the signature alone \
                 with --jws, which prints the payload as it is)",
                if is_too_deep(&e) {
                    ": they nest more than 128 levels deep"
                } else {
                    ""
                }
            ))
        })?,
    };
    let dates = time::dates(&claims);
    print_json(&json!({
        "verified": true,
        "header": header,
        "claims": claims,
        "dates": dates,
    }))
}

/// Builds the verifier from `--key`, `--secret` and `--jwks-url`.
async fn load_keys(
    args: &VerifyArgs,
    alg: Option<Algorithm>,
    explain: &Explain,
) -> Result<Verifier, Failure> {
    // Keys given one by one, and keys that came in a JWK Set.
    let mut single = Vec::new();
    let mut from_sets = Vec::new();
    for path in &args.keys {
        let source = path.display().to_string();
        match input::key_file(path)? {
            KeyFile::Pem(text) => {
                let alg = alg.ok_or_else(|| {
                    Failure::usage(format!(
                        "{source} is a PEM key, which does not say which algorithm it is for: \
                         pass --alg (e.g. --alg RS256, --alg PS256, --alg ES256 or --alg EdDSA)"
                    ))
                })?;
                let key = VerifyingKey::from_pem(alg, &text).map_err(|e| key_error(&source, &e))?;
                single.push(Candidate { key, source });
            }
            KeyFile::Jwk(jwk) => {
                if alg.is_none() && input::needs_algorithm(&jwk) {
                    return Err(Failure::usage(format!(
                        "{source} is a {} JWK without `alg`, which fits several algorithms: \
                         pass --alg",
                        jwk.kty
                    )));
                }
                let key = VerifyingKey::from_jwk(&jwk, alg).map_err(|e| key_error(&source, &e))?;
                single.push(Candidate { key, source });
            }
            KeyFile::Jwks(mut set) => {
                input::fill_algorithm(&mut set, alg);
                let keys = KeySet::from_jwks(&set).map_err(|e| key_error(&source, &e))?;
                if keys.is_empty() {
                    return Err(Failure::usage(format!(
                        "{source}: the JWK Set holds no signature verification key"
                    )));
                }
                from_sets.extend(keys.iter().map(|key| Candidate {
                    key: key.clone(),
                    source: source.clone(),
                }));
            }
        }
    }
    if let Some(spec) = &args.secret {
        let alg = alg.ok_or_else(|| {
            Failure::usage(
                "--secret needs --alg (HS256, HS384 or HS512): a secret does not say which \
                 algorithm it is for",
            )
        })?;
        let secret = input::secret(spec)?;
        let key =
            VerifyingKey::from_hmac_secret(alg, &secret).map_err(|e| key_error("--secret", &e))?;
        single.push(Candidate {
            key,
            source: "--secret".to_owned(),
        });
    }
    if let Some(url) = &args.jwks_url {
        let (mut set, unread) = jwks_url::fetch(url, explain).await?;
        // A fetched JWK Set is published: a shared secret in it (`kty: oct`, RFC 7518 §6.4)
        // or a private key (`d` and RSA's other private members, §6.2.2, §6.3.2) is known
        // to whoever can read it, so a token it verifies proves nothing. Such keys are
        // dropped, as tessera-axum drops them from a `jwks_uri`; a secret would otherwise
        // also make a set with public keys unusable (secrets and public keys never share a
        // key set).
        let mut skipped: Vec<(Option<String>, String)> = Vec::new();
        set.keys.retain(|jwk| {
            let what = if jwk.kty == "oct" {
                "a shared secret (kty oct)"
            } else if jwk.is_private() {
                "a private key"
            } else {
                return true;
            };
            crate::output::errln!(
                "warning: {url} publishes {what} (kid {}); it is never used to verify",
                show_kid(jwk.kid.as_deref())
            );
            skipped.push((
                jwk.kid.clone(),
                format!("{what} in a published JWK Set is never used"),
            ));
            false
        });
        input::fill_algorithm(&mut set, alg);
        let mut keys = Vec::new();
        for jwk in &set.keys {
            match VerifyingKey::from_jwk(jwk, None) {
                Ok(key) => keys.push(key),
                Err(e) => skipped.push((jwk.kid.clone(), e.to_string())),
            }
        }
        // RFC 7517 §4.5: the keys of a set have distinct `kid`s. Which of several keys with
        // one `kid` a token means is ambiguous, so all of them are dropped (as tessera-axum
        // does) and the others stay usable.
        let duplicated: Vec<bool> = keys
            .iter()
            .map(|k| keys.iter().filter(|o| o.kid() == k.kid()).count() > 1)
            .collect();
        let mut keys_kept = Vec::new();
        for (key, duplicated) in keys.into_iter().zip(duplicated) {
            if duplicated {
                let kid = key.kid().map(str::to_owned);
                crate::output::errln!(
                    "warning: {url} has several keys with the kid {}; none of them is used",
                    show_kid(kid.as_deref())
                );
                skipped.push((kid, "its kid is not unique in the JWK Set".to_owned()));
            } else {
                keys_kept.push(key);
            }
        }
        let keys = KeySet::new(keys_kept).map_err(|e| key_error(url, &e))?;
        for (kid, e) in &skipped {
            explain.info(format_args!(
                "skipped the key {} of {url}: {e}",
                show_kid(kid.as_deref())
            ));
        }
        if keys.is_empty() {
            // The entries that are not JWKs count among those skipped (their warnings above
            // give every reason); the first reason is a key's, else an entry's.
            let why = skipped
                .first()
                .map(|(_, e)| e.clone())
                .or_else(|| unread.first().map(|(i, e)| format!("entry {i}: {e}")))
                .map_or_else(String::new, |e| format!(" (first skipped: {e})"));
            return Err(Failure::usage(format!(
                "{url} holds no usable signature verification key: {} skipped{why}",
                skipped.len().saturating_add(unread.len())
            )));
        }
        from_sets.extend(keys.iter().map(|key| Candidate {
            key: key.clone(),
            source: url.clone(),
        }));
    }

    if single.len() == 1 && from_sets.is_empty() {
        return single.pop().map(Verifier::Single).ok_or_else(no_key);
    }
    if single.is_empty() && from_sets.is_empty() {
        return Err(no_key());
    }
    let keys: Vec<Candidate> = single.into_iter().chain(from_sets).collect();
    let set = KeySet::new(keys.iter().map(|c| c.key.clone())).map_err(|e| {
        Failure::usage(format!(
            "these keys cannot be used together: {e}; pass fewer keys, or JWKs with \
             distinct kids"
        ))
    })?;
    Ok(Verifier::Set { set, keys })
}

/// Picks the key the token is checked with, explaining the choice.
fn select<'v>(
    verifier: &'v Verifier,
    header: &Header,
    explain: &Explain,
) -> Result<&'v VerifyingKey, Failure> {
    match verifier {
        Verifier::Single(c) => {
            explain.info(format_args!(
                "key: the one key given, from {}: {}, kid {}",
                c.source,
                c.key.algorithm(),
                show_kid(c.key.kid())
            ));
            if let Some(kid) = header.kid()
                && c.key.kid() != Some(kid)
            {
                explain.info(format_args!(
                    "the token's kid {} differs from the key's; with one key the kid does \
                     not choose anything",
                    show_kid(Some(kid))
                ));
            }
            Ok(&c.key)
        }
        Verifier::Set { set, keys } => {
            explain.info(format_args!(
                "keys: {} candidates: {}",
                keys.len(),
                describe(keys)
            ));
            explain.info(format_args!(
                "selecting by the token's kid {} (alg {})",
                show_kid(header.kid()),
                header.algorithm()
            ));
            let key = set.select(header).map_err(|e| {
                let hint = match e {
                    Error::UnknownKid { .. } => format!(" (the keys have kids {})", kids(keys)),
                    _ => String::new(),
                };
                explain.refuse("key selection", &e, &hint)
            })?;
            let source = keys
                .iter()
                .find(|c| c.key.kid() == key.kid())
                .map_or("?", |c| c.source.as_str());
            explain.ok(format_args!(
                "selected kid {} ({}) from {source}",
                show_kid(key.kid()),
                key.algorithm()
            ));
            Ok(key)
        }
    }
}

/// Prints what the claim rules will look at: the clock, each time claim against it, and the
/// issuer, audience and type requirements. The verdict itself comes from `jose`.
fn explain_claims(
    explain: &Explain,
    claims: Option<&Map<String, Value>>,
    header: &Header,
    validation: &Validation,
    now: i64,
    from_flag: bool,
) {
    if !explain.on {
        return;
    }
    explain.info(format_args!(
        "clock: now {now} ({}, {}), leeway {}s",
        time::rfc3339(now).unwrap_or_else(|| "out of range".to_owned()),
        if from_flag {
            "from --now"
        } else {
            "system clock"
        },
        validation.leeway
    ));
    let Some(claims) = claims else {
        explain.info("the payload is not a JSON object, so it holds no JWT claims");
        return;
    };
    for name in time::TIME_CLAIMS {
        match claims.get(name) {
            None if name == "exp" => explain.info("exp: missing (required)"),
            None => {}
            Some(v) => match time::numeric_date(v) {
                Some(t) => explain.info(format_args!(
                    "{name}: {t} ({}), {}",
                    time::rfc3339(t).unwrap_or_else(|| "out of range".to_owned()),
                    time::relative(t, now)
                )),
                None => explain.info(format_args!("{name}: {v} is not a number")),
            },
        }
    }
    let shown = |name: &str| {
        claims
            .get(name)
            .map_or_else(|| "missing".to_owned(), Value::to_string)
    };
    if let Some(iss) = &validation.issuer {
        explain.info(format_args!("iss: {} (required \"{iss}\")", shown("iss")));
    }
    if !validation.audiences.is_empty() {
        explain.info(format_args!(
            "aud: {} (required one of {:?})",
            shown("aud"),
            validation.audiences
        ));
    }
    if let Some(typ) = &validation.required_typ {
        explain.info(format_args!(
            "typ: {} (required \"{typ}\")",
            header
                .typ()
                .map_or_else(|| "missing".to_owned(), |t| format!("\"{t}\""))
        ));
    }
}

fn claims_hint(e: &Error) -> String {
    match e {
        Error::MissingClaim { claim: "exp" } => {
            "; Tessera requires exp (to check only the signature, pass --jws)".to_owned()
        }
        Error::MalformedClaims { .. } => {
            "; the payload is not JWT claims (to check only the signature, pass --jws)".to_owned()
        }
        _ => String::new(),
    }
}

fn key_error(source: &str, e: &Error) -> Failure {
    let hint = match e {
        Error::InvalidKey { .. } => "; pass a JWK, a JWKS or a PEM key (public or private)",
        Error::KeyAlgorithmMismatch { .. } => {
            "; pass the algorithm the key is for with --alg, or a key for that algorithm"
        }
        Error::KeyUsage { .. } => "; pass a key meant for signatures",
        Error::UnsupportedAlgorithm { .. } => "; the key's `alg` must be a JWS algorithm",
        _ => "",
    };
    Failure::usage(format!("{source}: {e}{hint}"))
}

fn no_key() -> Failure {
    Failure::usage(
        "no verification key: pass --key FILE (a JWK, a JWKS or a PEM key), --secret SPEC or \
         --jwks-url URL",
    )
}

fn show_kid(kid: Option<&str>) -> String {
    kid.map_or_else(|| "(none)".to_owned(), |k| format!("`{k}`"))
}

fn kids(keys: &[Candidate]) -> String {
    let mut shown: Vec<String> = keys
        .iter()
        .take(10)
        .map(|c| show_kid(c.key.kid()))
        .collect();
    if keys.len() > 10 {
        shown.push("...".to_owned());
    }
    shown.join(", ")
}

fn describe(keys: &[Candidate]) -> String {
    keys.iter()
        .take(10)
        .map(|c| {
            format!(
                "{} {} from {}",
                show_kid(c.key.kid()),
                c.key.algorithm(),
                c.source
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The header as the token carries it (compact JSON), for display.
fn header_json(token: &str, limits: &Limits) -> Option<String> {
    decode_unverified(token, limits)
        .ok()
        .map(|p| p.header.to_string())
}

fn header_value(token: &str, limits: &Limits) -> Value {
    decode_unverified(token, limits).map_or(Value::Null, |p| p.header)
}

/// True when serde_json gave up on JSON nested deeper than its recursion limit (128).
pub(super) fn is_too_deep(e: &serde_json::Error) -> bool {
    e.to_string().starts_with("recursion limit exceeded")
}

/// The verified payload: pretty-printed if it is JSON, otherwise its bytes as they are.
fn print_payload(payload: &[u8]) -> Result<(), Failure> {
    match serde_json::from_slice::<Value>(payload) {
        Ok(value) => print_json(&value),
        Err(_) => output::write(payload),
    }
}

/// Pretty JSON and a newline on stdout.
pub(super) fn print_json(value: &Value) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::refused(format!("cannot print JSON: {e}")))?;
    output::line(text)
}
