//! Shared state handed to every handler (STYLE §2.4: nothing in process globals).

use std::sync::Arc;

use tessera_auth::Auth;
use tessera_store::Database;

use crate::config::Config;

/// Everything handlers need.
#[derive(Clone)]
pub struct AppState {
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
