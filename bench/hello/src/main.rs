//! The hello-world ceiling: `GET /users/me` answers the JSON Tessera's `/users/me` returns,
//! built and serialized per request like Tessera's handler does, with no token check, no
//! middleware and no state. Nothing on the same machine with the same HTTP stack can serve
//! the route faster, so Tessera's throughput is quoted as a fraction of this one's.
//!
//! Usage: `tessera-bench-hello [ADDR]` (default `127.0.0.1:0`); prints
//! `listening on http://ADDR` once bound.

use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

/// The fields of Tessera's `/users/me` answer, in the same order.
#[derive(Serialize)]
struct Me {
    id: String,
    username: String,
    role: Option<String>,
    roles: Vec<String>,
    scope: String,
    client_id: String,
    session_id: Option<String>,
    amr: Vec<String>,
    expires_at: i64,
}

async fn me() -> Json<Me> {
    Json(Me {
        id: "019ab7a3-5f1e-7c22-9a8e-3f0d4c2b1a90".to_owned(),
        username: "bench".to_owned(),
        role: Some("user".to_owned()),
        roles: vec!["user".to_owned()],
        scope: "profile".to_owned(),
        client_id: "tessera".to_owned(),
        session_id: Some("019ab7a3-5f20-7d41-8b1c-6e2f9a3d4c58".to_owned()),
        amr: vec!["pwd".to_owned()],
        expires_at: 1_764_000_000,
    })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let app = Router::new()
        .route("/users/me", get(me))
        .route("/healthz", get(|| async { "ok" }));
    axum::serve(listener, app).await
}
