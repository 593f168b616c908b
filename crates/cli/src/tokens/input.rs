//! What the user hands the token tools: tokens, algorithm names, HMAC secret specs and key
//! files. Every failure here is a usage or configuration problem (exit 2), and no message
//! ever repeats secret material.

use std::io::Read as _;
use std::path::Path;

use tessera_jose::{Algorithm, Jwk, JwkSet, KeyKind, base64url};
use zeroize::Zeroizing;

use crate::exit::Failure;

/// The most read from stdin. Tokens are capped far below this (8 KiB by default); longer
/// input is cut here and then refused by that cap, so nothing unbounded is buffered.
const MAX_STDIN: u64 = 1024 * 1024;

/// The most read from a key or secret file.
const MAX_KEY_FILE: u64 = 1024 * 1024;

/// The token argument, or stdin for `-` (surrounding whitespace, such as the newline `echo`
/// adds, is dropped). An argument is taken exactly as given.
pub(super) fn token(arg: &str) -> Result<String, Failure> {
    if arg == "-" {
        let mut buf = String::new();
        std::io::stdin()
            .take(MAX_STDIN)
            .read_to_string(&mut buf)
            .map_err(|e| Failure::usage(format!("cannot read the token from stdin: {e}")))?;
        let token = buf.trim();
        if token.is_empty() {
            return Err(Failure::usage(
                "stdin held no token: pipe one in, or pass it as the argument",
            ));
        }
        Ok(token.to_owned())
    } else if arg.is_empty() {
        Err(Failure::usage(
            "the token argument is empty: pass a token, or `-` to read it from stdin",
        ))
    } else {
        Ok(arg.to_owned())
    }
}

/// Parses `--alg`, with a hint for near misses.
pub(super) fn algorithm(name: &str) -> Result<Algorithm, Failure> {
    name.parse().map_err(|_| {
        let all = Algorithm::ALL.map(Algorithm::as_str).join(", ");
        let shown: String = name.chars().take(32).collect();
        if name.trim().eq_ignore_ascii_case("none") {
            Failure::usage(format!(
                "`none` (an unsigned token) is never produced or accepted; choose one of {all}"
            ))
        } else if let Some(alg) = Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(name.trim()))
        {
            Failure::usage(format!(
                "unknown algorithm `{shown}`: algorithm names are case-sensitive; did you mean {alg}?"
            ))
        } else {
            Failure::usage(format!(
                "unknown algorithm `{shown}`; choose one of {all}"
            ))
        }
    })
}

/// Decodes a `--secret` spec: `@file` (the file's bytes, one trailing newline removed),
/// `b64:...` (standard or URL-safe base64, padded or not), or the string itself.
pub(super) fn secret(spec: &str) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let bytes = if let Some(path) = spec.strip_prefix('@') {
        let mut bytes = read_file(Path::new(path), "secret file")?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        bytes
    } else if let Some(encoded) = spec.strip_prefix("b64:") {
        decode_base64(encoded).ok_or_else(|| {
            Failure::usage(
                "--secret b64:... is not valid base64 (standard or URL-safe alphabet, \
                 padding optional)",
            )
        })?
    } else {
        Zeroizing::new(spec.as_bytes().to_vec())
    };
    if bytes.is_empty() {
        return Err(Failure::usage(
            "--secret is empty: give the secret as `string`, `@file` or `b64:...`",
        ));
    }
    Ok(bytes)
}

/// Standard or URL-safe base64, padded or not, through the strict decoder of `jose`.
fn decode_base64(encoded: &str) -> Option<Zeroizing<Vec<u8>>> {
    let unpadded = encoded.trim_end_matches('=');
    // Padding is only ever 0–2 characters at the very end.
    if encoded.len() - unpadded.len() > 2 {
        return None;
    }
    let url_safe: Zeroizing<String> = Zeroizing::new(
        unpadded
            .chars()
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                other => other,
            })
            .collect(),
    );
    base64url::decode(url_safe.as_bytes()).map(Zeroizing::new)
}

/// The content of a `--key` file, by what it looks like.
pub(super) enum KeyFile {
    /// One JSON Web Key.
    Jwk(Box<Jwk>),
    /// A JWK Set (`{"keys": [...]}`).
    Jwks(JwkSet),
    /// PEM text (public or private; the parser decides).
    Pem(Zeroizing<String>),
}

/// Reads a key file and tells a JWK, a JWKS and a PEM key apart from their content.
pub(super) fn key_file(path: &Path) -> Result<KeyFile, Failure> {
    let shown = path.display();
    let bytes = read_file(path, "key file")?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        Failure::usage(format!(
            "{shown} is not text: expected a JWK, a JWKS or a PEM key (convert DER with \
             `openssl pkey -inform der -in {shown}`)"
        ))
    })?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            Failure::usage(format!(
                "{shown} is not valid JSON ({e}); expected a JWK, a JWKS or a PEM key"
            ))
        })?;
        if value.get("keys").is_some() {
            JwkSet::from_json(text)
                .map(KeyFile::Jwks)
                .map_err(|e| Failure::usage(format!("{shown}: {e}")))
        } else {
            Jwk::from_json(text)
                .map(|jwk| KeyFile::Jwk(Box::new(jwk)))
                .map_err(|e| Failure::usage(format!("{shown}: {e}")))
        }
    } else if text.contains("-----BEGIN ") {
        Ok(KeyFile::Pem(Zeroizing::new(text.to_owned())))
    } else {
        Err(Failure::usage(format!(
            "{shown} is neither a JWK, a JWKS nor a PEM key (expected JSON or a \
             -----BEGIN ...----- block)"
        )))
    }
}

/// With `--alg`, an RSA or `oct` JWK that does not name its algorithm is taken to be for
/// that algorithm (EC and OKP keys get theirs from the curve). JWKs that name another
/// algorithm keep it.
pub(super) fn fill_algorithm(set: &mut JwkSet, alg: Option<Algorithm>) {
    let Some(alg) = alg else { return };
    for jwk in &mut set.keys {
        let fits = matches!(
            (alg.key_kind(), jwk.kty.as_str()),
            (KeyKind::Rsa, "RSA") | (KeyKind::Hmac, "oct")
        );
        if jwk.alg.is_none() && fits {
            jwk.alg = Some(alg.to_string());
        }
    }
}

/// True for a JWK whose algorithm cannot be known without `--alg`: RSA and `oct` keys
/// without `alg` (an RSA key fits six algorithms, a secret three).
pub(super) fn needs_algorithm(jwk: &Jwk) -> bool {
    jwk.alg.is_none() && matches!(jwk.kty.as_str(), "RSA" | "oct")
}

fn read_file(path: &Path, what: &str) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let shown = path.display();
    let file = std::fs::File::open(path)
        .map_err(|e| Failure::usage(format!("cannot read the {what} {shown}: {e}")))?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::usage(format!("cannot read the {what} {shown}: {e}")))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_KEY_FILE {
        return Err(Failure::usage(format!(
            "the {what} {shown} is over 1 MiB; is it the right file?"
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_secrets_accept_both_alphabets_with_or_without_padding() {
        let expected = b"\xfb\xff\xbf secret?".to_vec();
        for spec in ["+/+/IHNlY3JldD8=", "-_-_IHNlY3JldD8", "+/+/IHNlY3JldD8"] {
            assert_eq!(decode_base64(spec).unwrap().to_vec(), expected, "{spec}");
        }
        assert!(decode_base64("a===").is_none());
        assert!(decode_base64("not base64!").is_none());
    }

    #[test]
    fn algorithm_names_get_hints() {
        assert_eq!(algorithm("ES256").unwrap(), Algorithm::Es256);
        for (name, hint) in [
            ("hs256", "did you mean HS256"),
            ("none", "never produced or accepted"),
            ("XY1", "choose one of HS256"),
        ] {
            let message = format!("{:?}", algorithm(name).unwrap_err());
            assert!(message.contains(hint), "{name}: {message}");
        }
    }
}
