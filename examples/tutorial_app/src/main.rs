//! The seed tutorial's FastAPI app, rewritten with Tessera.
//!
//! The tutorial issued its own tokens (`POST /token`) and checked them in
//! `get_current_user` with a shared secret. Here `tessera serve` issues the tokens and this
//! service only verifies them: `Authenticated<User>` is `Depends(get_current_user)`, with
//! the checks the tutorial leaves out (issuer, audience, `typ`, algorithm pinned by the
//! key, revocation).
//!
//! ```sh
//! cargo run --release --bin tessera -- serve           # terminal 1: the auth server
//! cargo run -p tutorial-app                             # terminal 2: this service
//! ```
//!
//! Environment:
//! - `TESSERA_ISSUER`: the issuer URL (default `http://127.0.0.1:8080`); keys come from its
//!   JWKS, found through its metadata document.
//! - `TESSERA_AUDIENCE`: the audience to require (default: the issuer URL, which is what
//!   `tessera serve` puts in `aud` unless configured otherwise).
//! - `TESSERA_JWKS_FILE`: instead of fetching the issuer's JWKS, verify with the keys of
//!   this JWK Set file (e.g. saved from `/.well-known/jwks.json`); no network at all.
//! - `TESSERA_SECRET`: instead of the issuer's JWKS, verify HS256 tokens with this shared
//!   secret, for `tessera serve` run with `TESSERA_PROFILE=tutorial` (no `aud`, plain JWTs).
//! - `TESSERA_FEED_CLIENT_ID` / `TESSERA_FEED_CLIENT_SECRET`: a confidential client to
//!   follow the revocation feed with (logouts then reach this service within a second).
//! - `LISTEN_ADDR`: where to listen (default `127.0.0.1:8000`).

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tessera_axum::tessera_jose::Algorithm;
use tessera_axum::{Authenticated, RequireRole, RevocationFeed, Verifier};

tessera_axum::role!(Admin = "admin");

/// The tutorial's `User` model, read from the token's claims.
#[derive(Debug, Clone, Deserialize, Serialize)]
struct User {
    /// The username (`preferred_username` in standard tokens).
    #[serde(alias = "preferred_username")]
    username: Option<String>,
    /// The primary role.
    role: Option<String>,
}

/// `GET /users/me`: the tutorial's `read_users_me`.
async fn read_users_me(user: Authenticated<User>) -> Json<serde_json::Value> {
    // In the tutorial profile `sub` is the username; in the standard one it is the user id.
    let username = user
        .username
        .clone()
        .or_else(|| user.subject().map(str::to_owned));
    Json(serde_json::json!({ "username": username, "role": user.role }))
}

/// `GET /items`: an admin-only list, one line of authorization.
async fn read_items(admin: RequireRole<Admin, User>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "items": ["a hammer", "a saw"],
        "owner": admin.username.clone().or_else(|| admin.subject().map(str::to_owned)),
    }))
}

/// The routes, for `main` and the tests.
fn app(verifier: Verifier) -> Router {
    Router::new()
        .route("/users/me", get(read_users_me))
        .route("/items", get(read_items))
        .with_state(verifier)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn verifier_from_env() -> anyhow::Result<Verifier> {
    let issuer = env("TESSERA_ISSUER").unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let audience = env("TESSERA_AUDIENCE").unwrap_or_else(|| issuer.clone());
    let mut builder = match (env("TESSERA_SECRET"), env("TESSERA_JWKS_FILE")) {
        // The tutorial profile: HS256 with the shared secret, plain JWTs, no audience.
        (Some(secret), _) => Verifier::builder()
            .hmac_secret(Algorithm::Hs256, secret.as_bytes())
            .issuer(issuer.trim_end_matches('/'))
            .accept_any_typ(),
        // The library reads no files: the application does, and hands over the text.
        (None, Some(path)) => {
            let jwks = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
            Verifier::builder()
                .jwks_json(&jwks)
                .issuer(issuer.trim_end_matches('/'))
                .audience(audience)
        }
        (None, None) => Verifier::builder().issuer_url(&issuer).audience(audience),
    };
    if let (Some(id), Some(secret)) = (
        env("TESSERA_FEED_CLIENT_ID"),
        env("TESSERA_FEED_CLIENT_SECRET"),
    ) {
        let feed = RevocationFeed::new(id, secret)
            .url(format!("{}/revocations", issuer.trim_end_matches('/')));
        builder = builder.revocation_feed(feed);
    }
    builder.build().context("building the token verifier")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tessera::auth=debug".into()),
        )
        .init();
    let verifier = verifier_from_env()?;
    let addr: SocketAddr = env("LISTEN_ADDR")
        .unwrap_or_else(|| "127.0.0.1:8000".into())
        .parse()
        .context("LISTEN_ADDR")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    println!("tutorial-app listening on http://{addr} (GET /users/me, GET /items)");
    axum::serve(listener, app(verifier)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use tessera_jose::SigningKey;

    use super::*;

    const SECRET: &[u8] = b"a-shared-secret-of-at-least-32-bytes!";

    #[tokio::test]
    async fn users_me_and_items_answer_as_the_tutorial_did() {
        let key = SigningKey::from_hmac_secret(Algorithm::Hs256, SECRET).unwrap();
        let verifier = Verifier::builder()
            .hmac_secret(Algorithm::Hs256, SECRET)
            .accept_any_typ()
            .build()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app(verifier)).await });
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let token = |role: &str| {
            let claims = serde_json::json!({"sub": "johndoe", "role": role, "exp": exp});
            key.sign_jws(claims.to_string().as_bytes(), Some("JWT"), None)
                .unwrap()
        };
        let http = reqwest::Client::new();
        let get = |path: &str, token: Option<String>| {
            let mut req = http.get(format!("{base}{path}"));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            req.send()
        };
        let me = get("/users/me", Some(token("user"))).await.unwrap();
        assert_eq!(me.status(), 200);
        let me: serde_json::Value = me.json().await.unwrap();
        assert_eq!(
            me,
            serde_json::json!({"username": "johndoe", "role": "user"})
        );
        assert_eq!(get("/users/me", None).await.unwrap().status(), 401);
        assert_eq!(
            get("/items", Some(token("user"))).await.unwrap().status(),
            403
        );
        assert_eq!(
            get("/items", Some(token("admin"))).await.unwrap().status(),
            200
        );
    }
}
