//! Interoperability with the tutorial's stack and a second Rust JWT library:
//!
//! * PyJWT's `PyJWKClient` verifies Tessera access tokens from the running server's JWKS,
//!   with audience and issuer checks on;
//! * the tutorial's own `get_current_user`, unchanged, accepts tokens of `tessera serve`
//!   run with the tutorial profile and the same HMAC secret;
//! * tessera-axum's `hmac_secret` accepts the same tokens (no Python needed);
//! * tokens signed by PyJWT and by the `jsonwebtoken` crate are accepted by tessera-axum,
//!   and tampered ones are not.
//!
//! Python runs in a virtualenv under the target directory, made once with pinned versions
//! and reused. Without `python3` (or when the venv cannot be made, e.g. offline) the Python
//! cases SKIP with a banner on stderr, unless `TESSERA_REQUIRE_PYTHON=1`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};
use tessera_auth::Profile;
use tessera_axum::{Error, Verifier};
use tessera_jose::{Algorithm, Limits, NoCustomClaims, SigningKey, Unverified};
use tessera_server::config::{Config, Sources};
use tessera_testkit::{TestApp, spawn_app, spawn_app_with};

use crate::{flip, unix_now};

/// Pinned so a PyPI release cannot change what these tests mean. PyJWT 2.10.1 fixes the
/// 2.10.0 issuer-check bug (CVE-2024-53861).
const PINS: &[&str] = &["PyJWT==2.10.1", "cryptography==44.0.2", "fastapi==0.115.12"];

/// An HMAC secret for the tutorial profile (the tutorial's own is 19 bytes, too short for
/// HS256 under RFC 7518 §3.2).
const TUTORIAL_SECRET: &str = "tutorial-secret-that-is-at-least-32-bytes-long";

/// The venv's python, or `None` (after a loud banner) when Python is unavailable.
fn python() -> Option<&'static Path> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON
        .get_or_init(|| match make_venv() {
            Ok(p) => Some(p),
            Err(why) => {
                if std::env::var("TESSERA_REQUIRE_PYTHON").as_deref() == Ok("1") {
                    panic!("TESSERA_REQUIRE_PYTHON=1 but Python is unavailable: {why}");
                }
                // Straight to the process's stderr: libtest captures `eprintln!` of
                // passing tests, and this must be seen.
                let _ = writeln!(
                    std::io::stderr(),
                    "\n############################################################################\n\
                     ##  SKIPPED: Python interoperability tests (PyJWT, the tutorial's code).\n\
                     ##  {why}\n\
                     ##  Install python3 with venv and pip, or set TESSERA_REQUIRE_PYTHON=1\n\
                     ##  to make this an error.\n\
                     ############################################################################\n"
                );
                None
            }
        })
        .as_deref()
}

fn make_venv() -> Result<PathBuf, String> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tessera-interop-venv");
    let python = dir.join("bin").join("python");
    let marker = dir.join("tessera-pins.txt");
    let pins = PINS.join("\n");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == pins) && python.exists() {
        return Ok(python);
    }
    let ok = |c: &mut Command| c.output().map_err(|e| e.to_string());
    let version = ok(Command::new("python3").arg("--version"))
        .map_err(|e| format!("python3 not found: {e}"))?;
    if !version.status.success() {
        return Err("python3 --version failed".into());
    }
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let venv = ok(Command::new("python3").args(["-m", "venv"]).arg(&tmp))?;
    if !venv.status.success() {
        return Err(format!(
            "python3 -m venv failed: {}",
            String::from_utf8_lossy(&venv.stderr).trim()
        ));
    }
    let pip = ok(Command::new(tmp.join("bin").join("python"))
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--timeout",
            "60",
        ])
        .args(PINS))?;
    if !pip.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(format!(
            "pip install {} failed: {}",
            PINS.join(" "),
            String::from_utf8_lossy(&pip.stderr).trim()
        ));
    }
    std::fs::write(tmp.join("tessera-pins.txt"), &pins).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(|e| e.to_string())?;
    Ok(python)
}

/// Runs a Python script with arguments and returns its stdout as JSON.
async fn run_python(python: &Path, script: &str, args: &[&str]) -> Value {
    let out = tokio::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("not JSON: {stdout}"))
}

const PYJWKCLIENT: &str = r#"
import json, sys
import jwt

jwks_url, token, issuer, audience = sys.argv[1:5]
client = jwt.PyJWKClient(jwks_url)

def check(token, audience=audience, issuer=issuer):
    try:
        key = client.get_signing_key_from_jwt(token)
        header = jwt.get_unverified_header(token)
        if header.get("typ") != "at+jwt":
            return "wrong typ"
        claims = jwt.decode(
            token, key.key, algorithms=["ES256"], audience=audience, issuer=issuer,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
        return claims
    except jwt.PyJWTError as e:
        return type(e).__name__

tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
print(json.dumps({
    "good": check(token),
    "wrong_audience": check(token, audience="billing-api"),
    "wrong_issuer": check(token, issuer="https://evil.test"),
    "tampered": check(tampered),
}))
"#;

#[tokio::test]
async fn pyjwt_verifies_tessera_access_tokens_through_pyjwkclient() {
    let Some(python) = python() else { return };
    let app = spawn_app().await;
    let tokens = app.admin_login().await;
    let out = run_python(
        python,
        PYJWKCLIENT,
        &[
            &app.url("/.well-known/jwks.json"),
            &tokens.access_token,
            &app.base,
            &app.base,
        ],
    )
    .await;
    assert_eq!(out["good"]["iss"], app.base.as_str(), "{out}");
    assert_eq!(out["good"]["preferred_username"], "admin");
    assert_eq!(out["wrong_audience"], "InvalidAudienceError");
    assert_eq!(out["wrong_issuer"], "InvalidIssuerError");
    assert_eq!(out["tampered"], "InvalidSignatureError");
}

/// The tutorial's FastAPI dependency, copied verbatim (only the imports and settings it
/// relies on are set up around it).
const TUTORIAL_GET_CURRENT_USER: &str = r#"
import asyncio, json, sys
from typing import Annotated
from fastapi import FastAPI, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordBearer
from pydantic import BaseModel
import jwt

SECRET_KEY = sys.argv[1]
ALGORITHM = "HS256"
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="token")

class User(BaseModel):
    username: str
    role: str

# ---- from the tutorial, unchanged ----
async def get_current_user(token: Annotated[str, Depends(oauth2_scheme)]):
    credentials_exception = HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="Could not validate credentials",
        headers={"WWW-Authenticate": "Bearer"},
    )
    try:
        payload = jwt.decode(token, SECRET_KEY, algorithms=[ALGORITHM])
        username: str = payload.get("sub")
        role: str = payload.get("role")
        if username is None:
            raise credentials_exception
        user = User(username=username, role=role)
    except jwt.ExpiredSignatureError:
        raise credentials_exception
    except jwt.InvalidTokenError:
        raise credentials_exception
    return user
# ---- end of the tutorial's code ----

def outcome(token):
    try:
        return asyncio.run(get_current_user(token)).model_dump()
    except HTTPException as e:
        return e.status_code

print(json.dumps({"good": outcome(sys.argv[2]), "forged": outcome(sys.argv[3])}))
"#;

/// A Tessera server in the tutorial profile whose HMAC key comes from the real config loader
/// (`TESSERA_SIGNING__SECRET`, as `tessera serve` reads it), with the user `johndoe`; returns
/// it with a genuine access token and one forged with another secret.
async fn tutorial_server() -> (TestApp, String, String) {
    let loaded = Config::load(&Sources {
        file: None,
        env: vec![
            ("TESSERA_PROFILE".into(), "tutorial".into()),
            ("TESSERA_SIGNING__ALG".into(), "HS256".into()),
            ("TESSERA_SIGNING__SECRET".into(), TUTORIAL_SECRET.into()),
        ],
        overrides: vec![],
    })
    .unwrap();
    assert_eq!(loaded.profile, Profile::Tutorial);
    let app = spawn_app_with(|c| {
        c.profile = loaded.profile;
        c.signing = loaded.signing.clone();
    })
    .await;
    app.create_user("johndoe", "correct horse battery", &["user"])
        .await;
    let tokens = app.login("johndoe", "correct horse battery").await;
    let other = SigningKey::from_hmac_secret(Algorithm::Hs256, &[7; 32]).unwrap();
    let forged = other
        .sign_jws(
            json!({"sub": "johndoe", "role": "admin", "exp": unix_now() + 600})
                .to_string()
                .as_bytes(),
            Some("JWT"),
            None,
        )
        .unwrap();
    (app, tokens.access_token, forged)
}

#[tokio::test]
async fn the_tutorials_get_current_user_accepts_tokens_of_the_tutorial_profile() {
    let Some(python) = python() else { return };
    let (_app, token, forged) = tutorial_server().await;
    let out = run_python(
        python,
        TUTORIAL_GET_CURRENT_USER,
        &[TUTORIAL_SECRET, &token, &forged],
    )
    .await;
    assert_eq!(out["good"], json!({"username": "johndoe", "role": "user"}));
    assert_eq!(out["forged"], 401);
}

/// The setup docs/integrations.md gives for the tutorial profile, against `tessera serve`
/// with a configured secret, whose tokens carry the key's thumbprint as `kid`. Needs no
/// Python.
#[tokio::test]
async fn hmac_secret_verifier_accepts_tokens_of_tessera_serve_with_a_configured_secret() {
    let (app, token, forged) = tutorial_server().await;
    let header_kid = Unverified::parse(&token, &Limits::default())
        .unwrap()
        .header()
        .kid()
        .map(str::to_owned);
    assert!(header_kid.is_some(), "the server's tokens carry a kid");

    // These are plain JWTs to the tutorial, so the `typ` rule is off; there is no `aud`.
    let v = Verifier::builder()
        .hmac_secret(Algorithm::Hs256, TUTORIAL_SECRET.as_bytes())
        .issuer(&app.base)
        .accept_any_typ()
        .build()
        .unwrap();
    let user = v.verify::<NoCustomClaims>(&token).await.unwrap();
    assert_eq!(user.subject(), Some("johndoe"));
    assert_eq!(user.roles(), ["user"]);
    assert!(v.verify::<NoCustomClaims>(&forged).await.is_err());
    // A token naming another kid is still refused.
    let wrong_kid = SigningKey::from_hmac_secret(Algorithm::Hs256, TUTORIAL_SECRET.as_bytes())
        .unwrap()
        .with_kid("another-key")
        .sign_jws(
            json!({"sub": "johndoe", "iss": app.base, "exp": unix_now() + 600})
                .to_string()
                .as_bytes(),
            None,
            None,
        )
        .unwrap();
    assert!(matches!(
        v.verify::<NoCustomClaims>(&wrong_kid).await,
        Err(Error::Token(tessera_jose::Error::UnknownKid { .. }))
    ));
}

const PYJWT_SIGN: &str = r#"
import json, sys
import jwt

pem, secret, claims = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
print(json.dumps({
    "es256": jwt.encode(claims, pem, algorithm="ES256", headers={"kid": "k1", "typ": "at+jwt"}),
    "hs256": jwt.encode(claims, secret, algorithm="HS256", headers={"typ": "at+jwt"}),
}))
"#;

const ISS: &str = "https://issuer.test";
const AUD: &str = "orders-api";
const HMAC_SECRET: &str = "a-shared-hmac-secret-of-at-least-32-bytes";

fn other_libraries_claims() -> Value {
    let now = unix_now();
    json!({"iss": ISS, "aud": AUD, "sub": "alice", "exp": now + 300, "iat": now,
           "roles": ["user"], "scope": "orders:read"})
}

async fn assert_accepted_and_tamper_refused(
    es: &Verifier,
    hs: &Verifier,
    es_token: &str,
    hs_token: &str,
) {
    let user = es.verify::<NoCustomClaims>(es_token).await.unwrap();
    assert_eq!(user.subject(), Some("alice"));
    assert!(user.has_scope("orders:read"));
    hs.verify::<NoCustomClaims>(hs_token).await.unwrap();
    for (v, token) in [(es, es_token), (hs, hs_token)] {
        let payload_at = token.find('.').unwrap() + 3;
        for i in [3, payload_at, token.len() - 5] {
            assert!(
                matches!(
                    v.verify::<NoCustomClaims>(&flip(token, i)).await,
                    Err(Error::Token(_))
                ),
                "byte {i} of {token} changed and still accepted"
            );
        }
    }
}

fn verifiers(key: &SigningKey) -> (Verifier, Verifier) {
    let es = Verifier::builder()
        .key(key.verifying_key())
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap();
    let hs = Verifier::builder()
        .hmac_secret(Algorithm::Hs256, HMAC_SECRET.as_bytes())
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap();
    (es, hs)
}

#[tokio::test]
async fn tokens_signed_by_pyjwt_are_accepted_and_tampered_ones_are_not() {
    let Some(python) = python() else { return };
    let key = SigningKey::generate(Algorithm::Es256)
        .unwrap()
        .with_kid("k1");
    let pem = key.to_pkcs8_pem().unwrap();
    let claims = other_libraries_claims().to_string();
    let out = run_python(python, PYJWT_SIGN, &[&pem, HMAC_SECRET, &claims]).await;
    let (es, hs) = verifiers(&key);
    assert_accepted_and_tamper_refused(
        &es,
        &hs,
        out["es256"].as_str().unwrap(),
        out["hs256"].as_str().unwrap(),
    )
    .await;
}

#[tokio::test]
async fn tokens_signed_by_the_jsonwebtoken_crate_are_accepted_and_tampered_ones_are_not() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let key = SigningKey::generate(Algorithm::Es256)
        .unwrap()
        .with_kid("k1");
    let pem = key.to_pkcs8_pem().unwrap();
    let claims = other_libraries_claims();
    let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("k1".into());
    header.typ = Some("at+jwt".into());
    let es_token = encode(
        &header,
        &claims,
        &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    let hs_token = encode(
        &header,
        &claims,
        &EncodingKey::from_secret(HMAC_SECRET.as_bytes()),
    )
    .unwrap();
    let (es, hs) = verifiers(&key);
    assert_accepted_and_tamper_refused(&es, &hs, &es_token, &hs_token).await;
    // Algorithm confusion: an HS256 token "signed" with the public key is refused by the
    // ES256 verifier before any cryptography.
    let public_pem = key.verifying_key().to_public_pem().unwrap();
    let confused = encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(public_pem.as_bytes()),
    )
    .unwrap();
    assert!(es.verify::<NoCustomClaims>(&confused).await.is_err());
}
