//! Shared state handed to every handler (STYLE §2.4: nothing in process globals).

use std::sync::Arc;

use tessera_auth::Auth;
use tessera_store::Database;

use crate::config::Config;

/// Everything handlers need, behind one reference count: axum clones the state for every
/// request (the handler's copy, and again in extractors), and with one `Arc` that is one
/// atomic increment instead of one per field, on cache lines both cores write.
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl AppState {
    /// The state from its parts.
    #[must_use]
    pub fn new(inner: AppStateInner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct AppStateInner {
    /// The authentication service.
    pub auth: Arc<Auth<Database>>,
    /// The resolved configuration.
    pub config: Arc<Config>,
    /// Per-client-IP rate limits.
    pub limits: Arc<crate::ratelimit::RateLimits>,
    /// The Fetch-Metadata/`Origin` half of the CSRF defence for cookie mode.
    pub csrf: Arc<crate::session::CsrfGuard>,
    /// This server's metrics registry.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Ids for requests that arrive without one.
    pub request_ids: Arc<crate::telemetry::RequestIds>,
    /// The logins (and current-password checks) running to their end, their clients gone
    /// or not (`routes::login_to_completion`); shutdown waits for them before the database
    /// closes.
    pub logins: tokio_util::task::TaskTracker,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// The database.
    #[must_use]
    pub fn db(&self) -> &Database {
        self.auth.store()
    }
}
