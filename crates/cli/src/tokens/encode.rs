//! `tessera token encode`: build a claims set from flags and sign it with a key that must
//! fit `--alg`.

use serde_json::{Map, Value};
use tessera_jose::{Algorithm, JwkSet, SigningKey};

use super::input::{self, KeyFile};
use super::{EncodeArgs, time};
use crate::exit::Failure;
use crate::output;

/// The registered claims of RFC 7519 §4.1 and the flag that sets each one.
const REGISTERED: [(&str, &str); 7] = [
    ("iss", "--iss"),
    ("sub", "--sub"),
    ("aud", "--aud"),
    ("exp", "--exp"),
    ("nbf", "--nbf"),
    ("iat", "--iat (set to now by default; --no-iat omits it)"),
    ("jti", "--jti"),
];

pub(super) fn run(args: &EncodeArgs) -> Result<(), Failure> {
    let alg = input::algorithm(&args.alg)?;
    let key = signing_key(args, alg)?;
    let key = match &args.kid {
        Some(kid) => key.with_kid(kid.clone()),
        None => key,
    };
    let claims = claims(args)?;
    if !claims.contains_key("exp") {
        crate::output::errln!(
            "warning: no --exp, so this token never expires; Tessera's verifiers (and \
             `tessera token verify`) refuse tokens without exp: pass e.g. --exp +1h"
        );
    }
    let token = key
        .sign_jwt(&claims, args.typ.as_deref())
        .map_err(|e| Failure::usage(format!("{e}")))?;
    output::line(token)
}

/// The signing key from `--key` or `--secret`; the library refuses a key that does not fit
/// the algorithm.
fn signing_key(args: &EncodeArgs, alg: Algorithm) -> Result<SigningKey, Failure> {
    let fix = "; pass a key made for that algorithm (`tessera keys generate --alg ...`)";
    if let Some(spec) = &args.secret {
        let secret = input::secret(spec)?;
        return SigningKey::from_hmac_secret(alg, &secret)
            .map_err(|e| Failure::usage(format!("--secret: {e}{fix}")));
    }
    let Some(path) = &args.key else {
        return Err(Failure::usage(
            "no signing key: pass --key FILE (a private JWK or PEM) or --secret SPEC (HMAC)",
        ));
    };
    let shown = path.display();
    match input::key_file(path)? {
        KeyFile::Pem(text) => SigningKey::from_pem(alg, &text),
        KeyFile::Jwk(jwk) => SigningKey::from_jwk(&jwk, Some(alg)),
        KeyFile::Jwks(set) => {
            let jwk = pick(&set, args.kid.as_deref(), &shown.to_string())?;
            SigningKey::from_jwk(jwk, Some(alg))
        }
    }
    .map_err(|e| Failure::usage(format!("{shown}: {e}{fix}")))
}

/// The one key of a JWK Set to sign with: the one with `--kid`, or the only one.
fn pick<'s>(
    set: &'s JwkSet,
    kid: Option<&str>,
    shown: &str,
) -> Result<&'s tessera_jose::Jwk, Failure> {
    match (kid, set.keys.as_slice()) {
        (Some(kid), _) => set.find(kid).ok_or_else(|| {
            Failure::usage(format!("{shown} has no key with kid `{kid}`; check --kid"))
        }),
        (None, [only]) => Ok(only),
        (None, _) => Err(Failure::usage(format!(
            "{shown} is a JWK Set with {} keys: choose one with --kid",
            set.keys.len()
        ))),
    }
}

/// The claims set: registered claims from their flags, then `--json`, then each `--claim`.
fn claims(args: &EncodeArgs) -> Result<Map<String, Value>, Failure> {
    let now = args.now.unwrap_or_else(time::now);
    let mut claims = Map::new();
    let mut put = |name: &str, value: Value| {
        claims.insert(name.to_owned(), value);
    };
    if let Some(iss) = &args.iss {
        put("iss", Value::from(iss.as_str()));
    }
    if let Some(sub) = &args.sub {
        put("sub", Value::from(sub.as_str()));
    }
    match args.aud.as_slice() {
        [] => {}
        [one] => put("aud", Value::from(one.as_str())),
        many => put("aud", Value::from(many.to_vec())),
    }
    if let Some(spec) = &args.exp {
        put("exp", Value::from(time::parse_spec("--exp", spec, now)?));
    }
    if let Some(spec) = &args.nbf {
        put("nbf", Value::from(time::parse_spec("--nbf", spec, now)?));
    }
    match (&args.iat, args.no_iat) {
        (Some(spec), _) => put("iat", Value::from(time::parse_spec("--iat", spec, now)?)),
        (None, false) => put("iat", Value::from(now)),
        (None, true) => {}
    }
    if let Some(jti) = &args.jti {
        put("jti", Value::from(jti.as_str()));
    }

    let mut extra: Vec<(String, Value, &str)> = Vec::new();
    if let Some(text) = &args.json {
        let object: Map<String, Value> = serde_json::from_str(text).map_err(|e| {
            Failure::usage(format!(
                "--json must be one JSON object ({e}), e.g. '{{\"role\":\"admin\"}}'"
            ))
        })?;
        extra.extend(object.into_iter().map(|(k, v)| (k, v, "--json")));
    }
    for item in &args.claims {
        let Some((name, raw)) = item.split_once('=') else {
            return Err(Failure::usage(format!(
                "--claim `{item}` is not KEY=VALUE (e.g. --claim role=admin, --claim 'n=[1,2]')"
            )));
        };
        // A value that is valid JSON is taken as JSON (numbers, booleans, arrays, objects,
        // quoted strings); anything else is a string.
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::from(raw));
        extra.push((name.to_owned(), value, "--claim"));
    }
    for (name, value, flag) in extra {
        if name.is_empty() {
            return Err(Failure::usage(format!("{flag}: a claim name is empty")));
        }
        if let Some((_, own)) = REGISTERED.iter().find(|(r, _)| *r == name) {
            return Err(Failure::usage(format!(
                "{flag} sets `{name}`, a registered claim: set it with {own} instead"
            )));
        }
        if claims.contains_key(&name) {
            return Err(Failure::usage(format!(
                "{flag} sets `{name}` a second time; give each claim once"
            )));
        }
        claims.insert(name, value);
    }
    Ok(claims)
}
