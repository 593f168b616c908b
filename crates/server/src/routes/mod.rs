//! HTTP handlers, grouped by concern. Handlers are thin: they parse the request, call the
//! domain service and shape the response.

pub(crate) mod account;
pub(crate) mod admin;
pub(crate) mod feed;
pub(crate) mod meta;
pub(crate) mod oauth;
pub(crate) mod pages;
pub(crate) mod session;
pub(crate) mod users;

use serde::Serialize;
use tessera_auth::model::{Session, User};

use crate::error::AppError;

/// The most items one page of a list endpoint (`/admin/audit`, `/revocations`) may hold.
pub(crate) const MAX_PAGE_LIMIT: u32 = 1000;

/// The `limit` query parameter of a list endpoint: `default` when absent, else a whole
/// number from 1 to [`MAX_PAGE_LIMIT`]. Taken as text, so that every value outside the range
/// (0, negative, too large, not a number) gets the same answer naming the range, not a
/// deserializer's message or a silent clamp.
///
/// # Errors
/// 400 `invalid_request` naming the allowed range.
pub(crate) fn page_limit(raw: Option<&str>, default: u32) -> Result<u32, AppError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    raw.parse::<u32>()
        .ok()
        .filter(|n| raw.bytes().all(|b| b.is_ascii_digit()) && (1..=MAX_PAGE_LIMIT).contains(n))
        .ok_or_else(|| {
            AppError::invalid_request(format!(
                "`limit` must be a whole number from 1 to {MAX_PAGE_LIMIT} (default {default})"
            ))
        })
}

/// A user as the APIs show it (never the password hash).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct UserView {
    id: String,
    username: String,
    role: Option<String>,
    roles: Vec<String>,
    disabled: bool,
    created_at: i64,
    updated_at: i64,
    password_changed_at: i64,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.to_string(),
            username: u.username.to_string(),
            role: u.primary_role().map(ToString::to_string),
            roles: u.roles.iter().map(ToString::to_string).collect(),
            disabled: u.disabled,
            created_at: u.created_at,
            updated_at: u.updated_at,
            password_changed_at: u.password_changed_at,
        }
    }
}

/// A session as the APIs show it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SessionView {
    id: String,
    user_id: String,
    client_id: String,
    scope: String,
    created_at: i64,
    last_used_at: i64,
    idle_expires_at: i64,
    absolute_expires_at: i64,
    ip: Option<String>,
    user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    current: Option<bool>,
}

impl SessionView {
    pub(crate) fn new(s: &Session, current: Option<&str>) -> Self {
        Self {
            id: s.id.to_string(),
            user_id: s.user_id.to_string(),
            client_id: s.client_id.clone(),
            scope: s.scope.clone(),
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            idle_expires_at: s.idle_expires_at,
            absolute_expires_at: s.absolute_expires_at,
            ip: s.ip.clone(),
            user_agent: s.user_agent.clone(),
            current: current.map(|c| c == s.id.to_string()),
        }
    }
}

/// Runs a login (password or second factor) to its end, even if the client goes away or
/// the request times out first. Its attempt was reserved against the lockout before the
/// check, counted as a failure until a right answer clears it: a login dropped half way
/// left it counted, so that a client whose requests were cut off (a flaky network, its own
/// timeouts) locked its own name out after `lockout.threshold` of them, right password or
/// not. Run to the end, a right answer clears its count, and a session nobody received
/// idles out. The task is tracked in `logins`, which shutdown waits for before it closes the
/// database: a login cut off there stayed counted too. The current password a signed-in user
/// gives (a password change, TOTP enrolment and removal) is reserved the same way, against
/// the session's lock, and runs here too: cut off, it locked the owner's session out of its
/// own password checks.
pub(crate) async fn login_to_completion<T: Send + 'static>(
    logins: &tokio_util::task::TaskTracker,
    login: impl Future<Output = T> + Send + 'static,
) -> Result<T, AppError> {
    // In the request's span: its log lines keep the request id.
    logins
        .spawn(tracing::Instrument::in_current_span(login))
        .await
        .map_err(|e| AppError::internal(format!("login task ended abnormally: {e}")))
}
