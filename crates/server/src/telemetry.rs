//! The tracing subscriber (installed once by the binary) and request logging.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::error::ErrorDetail;

/// Builds and installs the global subscriber: human or JSON lines on stderr, filtered by
/// `RUST_LOG` (default `info`). Call once, from `main`.
///
/// # Errors
/// If a subscriber was already installed.
pub fn init(format: LogFormat) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    }
    .map_err(|e| e.to_string())
}

/// The longest `x-request-id` accepted from a client.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// True for a client-supplied request id worth propagating: 1 to 128 visible ASCII
/// characters (no spaces or control characters, so it cannot forge log lines or headers).
#[must_use]
pub fn is_valid_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.iter().all(u8::is_ascii_graphic)
}

/// Drops an incoming `x-request-id` that is not [valid](is_valid_request_id) (runs before
/// the layer that generates one when missing), so every request ends up with a usable id
/// that is echoed in the response.
pub async fn check_request_id(mut req: Request, next: Next) -> Response {
    let bad = req
        .headers()
        .get_all("x-request-id")
        .iter()
        .enumerate()
        .any(|(i, v)| i > 0 || !is_valid_request_id(v.as_bytes()));
    if bad {
        req.headers_mut().remove("x-request-id");
    }
    next.run(req).await
}

/// Logs each request once (method, matched route, status, latency, request id), logs the
/// internal detail of an error response, and replaces any 5xx body with a generic one that
/// carries the request id. Everything logged while the request is handled is inside a
/// `request` span carrying its id. Never logs headers or bodies (tokens and passwords live
/// there).
pub async fn log_requests(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "<unmatched>".to_owned(), |p| p.as_str().to_owned());
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let span =
        tracing::info_span!("request", request_id = %request_id, method = %method, route = %route);
    let response = next.run(req).instrument(span.clone()).await;
    let _entered = span.enter();
    let status = response.status();
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    if let Some(ErrorDetail(detail)) = response.extensions().get::<ErrorDetail>() {
        tracing::error!(%method, %route, status = status.as_u16(), request_id, error = %detail, "request failed");
    } else if status.is_server_error() {
        tracing::error!(%method, %route, status = status.as_u16(), request_id, latency_ms, "request failed");
    } else {
        tracing::debug!(%method, %route, status = status.as_u16(), request_id, latency_ms, "request");
    }
    if status.is_server_error() {
        return generic_server_error(status, &request_id, response);
    }
    response
}

fn generic_server_error(status: StatusCode, request_id: &str, original: Response) -> Response {
    let (code, description) = if status == StatusCode::SERVICE_UNAVAILABLE {
        (
            "temporarily_unavailable",
            "the service is temporarily unavailable; retry shortly",
        )
    } else {
        ("server_error", "internal error")
    };
    // Keep a 503's own description (it is written for clients), replace everything else.
    if status == StatusCode::SERVICE_UNAVAILABLE
        && original.extensions().get::<ErrorDetail>().is_none()
        && is_json(&original)
    {
        return original;
    }
    let mut res = (
        status,
        axum::Json(serde_json::json!({
            "error": code,
            "error_description": description,
            "request_id": request_id,
        })),
    )
        .into_response();
    for name in ["retry-after", "www-authenticate"] {
        if let Some(v) = original.headers().get(name) {
            res.headers_mut().insert(name, v.clone());
        }
    }
    res.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    res
}

fn is_json(r: &Response<Body>) -> bool {
    r.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_short_visible_ascii() {
        assert!(is_valid_request_id(b"abc-123_XYZ.~"));
        assert!(is_valid_request_id(&[b'a'; 128]));
        assert!(!is_valid_request_id(&[b'a'; 129]));
        assert!(!is_valid_request_id(b""));
        assert!(!is_valid_request_id(b"has space"));
        assert!(!is_valid_request_id(b"line\nbreak"));
        assert!(!is_valid_request_id("caf\u{e9}".as_bytes()));
    }
}
