//! `tessera-server`: Tessera's HTTP server.
//!
//! Routes, request extraction, the single error-to-response mapping ([`error::AppError`]),
//! configuration loading ([`config`]) and telemetry. The domain lives in `tessera-auth`;
//! this crate only speaks HTTP. Entry points: [`prepare`] builds the state from a
//! [`config::Config`] (opening the database, loading keys, bootstrapping the first admin),
//! [`app`] builds the router, and [`run`] serves it on a bound listener until a shutdown
//! future resolves (mini-redis style), which is also how tests start it on port 0.

pub mod config;
pub mod error;
pub mod extract;
pub mod files;
pub mod listen;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
mod routes;
pub mod session;
mod shard;
pub mod state;
pub mod telemetry;
pub mod timestamp;
pub mod tls;
pub mod token_request;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::routing::{delete, get, post, put};
use secrecy::ExposeSecret;
use tessera_auth::keys::{KeySchedule, KeySource};
use tessera_auth::password::PasswordHasher;
use tessera_auth::store::{KeyStore as _, MetaStore as _, UserStore as _};
use tessera_auth::{Auth, AuthConfig, AuthParts, Bootstrapped, SharedClock};
use tessera_jose::crypto::{self, SealingKey};
use tessera_store::Database;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use zeroize::Zeroizing;

use crate::config::{Config, DatabaseConfig, SigningConfig};
use crate::error::AppError;
pub use crate::state::{AppState, AppStateInner};

/// Why the server could not start. The message says what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// The prepared server: state plus what the operator must be told once.
#[derive(Debug)]
pub struct Prepared {
    /// Handler state.
    pub state: AppState,
    /// Set when this start created the first admin.
    pub bootstrap: Option<Bootstrapped>,
    /// Warnings to print at startup (e.g. a generated master key).
    pub warnings: Vec<String>,
}

/// Opens the database (migrating it), loads or creates the master key and signing keys,
/// replays revocations and creates the first admin on an empty database.
///
/// # Errors
/// [`StartError`] saying what failed and how to fix it.
pub async fn prepare(config: Config, clock: SharedClock) -> Result<Prepared, StartError> {
    let (state, warnings) = open_for(config, clock, true).await?;
    let bootstrap_pw = state
        .config
        .bootstrap_admin_password
        .as_ref()
        .map(|p| Zeroizing::new(p.expose_secret().to_owned()));
    let bootstrap = state
        .auth
        .bootstrap_admin(bootstrap_pw)
        .await
        .map_err(|e| StartError(format!("cannot create the first admin: {e}")))?;
    Ok(Prepared {
        state,
        bootstrap,
        warnings,
    })
}

/// Like [`prepare`] without creating the first admin: for administrative commands working
/// on the database directly.
///
/// # Errors
/// [`StartError`] saying what failed and how to fix it.
pub async fn open(
    config: Config,
    clock: SharedClock,
) -> Result<(AppState, Vec<String>), StartError> {
    open_for(config, clock, false).await
}

/// [`open`]; `serving` also creates the first signing key on an empty database and rotates
/// to the configured `signing.alg` when no usable key has it. A command does neither: its
/// configuration need not be the servers' (`tessera users add` run before the first
/// `serve`, with the default RS256, made every server sign with RS256 until it rotated).
async fn open_for(
    config: Config,
    clock: SharedClock,
    serving: bool,
) -> Result<(AppState, Vec<String>), StartError> {
    let mut warnings = Vec::new();
    ensure_data_dir(&config.data_dir)?;
    let db = match &config.database {
        DatabaseConfig::Sqlite(path) => Database::open_sqlite(path).await.map_err(|e| {
            StartError(format!(
                "cannot open the SQLite database {}: {e} ({})",
                path.display(),
                source_text(&e)
            ))
        })?,
        DatabaseConfig::Url(url) => {
            Database::connect(url.expose_secret(), config.db_max_connections)
                .await
                .map_err(|e| {
                    StartError(format!(
                        "cannot connect to the database: {e} ({})",
                        source_text(&e)
                    ))
                })?
        }
    };
    let (master, generated) = load_master_key(&config)?;
    let stored_keys = db.list_signing_keys().await.map_err(|e| {
        StartError(format!(
            "cannot read the signing keys: {e} ({})",
            source_text(&e)
        ))
    })?;
    let fingerprint = master_key_fingerprint(&master);
    let recorded = db.get_meta(MASTER_KEY_CHECK).await.map_err(|e| {
        StartError(format!(
            "cannot read the database's master-key check: {e} ({})",
            source_text(&e)
        ))
    })?;
    if let Some(recorded) = &recorded
        && !crypto::constant_time_eq(recorded.as_bytes(), fingerprint.as_bytes())
    {
        // Whatever the signing mode: the master key also seals TOTP secrets and keys the
        // recovery codes and refresh successors, which a database in HMAC mode holds too.
        return Err(StartError(if generated {
            format!(
                "{} is missing, but this database was created with a master key; restore master.key from backup or set TESSERA_MASTER_KEY (or TESSERA_MASTER_KEY_FILE) to that key",
                config.master_key_path().display()
            )
        } else {
            format!(
                "the master key from {} is not the one this database was created with; restore {} from backup or set TESSERA_MASTER_KEY to the right key",
                master_key_origin(&config),
                config.master_key_path().display()
            )
        }));
    }
    let sealing_key = Zeroizing::new(crypto::hmac_sha256(
        master.as_slice(),
        b"tessera/key-sealing/v1",
    ));
    let sealing = SealingKey::new(sealing_key.as_slice()).map_err(|e| StartError(e.to_string()))?;
    if generated {
        let path = config.master_key_path();
        // A database restored without its master key: a new key would unseal nothing, and
        // written next to it, would stand in for the real one at the next start. Signing
        // keys show it; so do users, whose TOTP secrets and recovery codes depend on the
        // key, in a database from before the check was recorded (in HMAC signing mode it
        // holds no signing key). A new database has neither.
        let users = if stored_keys.is_empty() && recorded.is_none() {
            db.count_users().await.map_err(|e| {
                StartError(format!("cannot count the users: {e} ({})", source_text(&e)))
            })?
        } else {
            0
        };
        if !stored_keys.is_empty() || users > 0 {
            let what = if stored_keys.is_empty() {
                format!("{users} user(s) whose second factors are sealed")
            } else {
                format!("{} signing key(s) sealed", stored_keys.len())
            };
            return Err(StartError(format!(
                "{} is missing, but the database holds {what} with the master key it was \
                 created with; restore master.key from backup or set TESSERA_MASTER_KEY (or \
                 TESSERA_MASTER_KEY_FILE) to that key",
                path.display(),
            )));
        }
        let text = Zeroizing::new(tessera_jose::base64url::encode(master.as_slice()));
        write_secret_file(&path, text.as_bytes())?;
        warnings.push(format!(
            "generated a master key in {} (mode 0600); back it up, or set TESSERA_MASTER_KEY / TESSERA_MASTER_KEY_FILE",
            path.display()
        ));
    }
    // Before anything is recorded: a configured key that does not open the stored signing
    // keys (in any signing mode) is not the database's.
    check_master_key(&config, &sealing, &stored_keys)?;
    if recorded.is_none() {
        // First start with this key (a new database, or one from before the check existed):
        // record it once the key is known to be the database's (the checks above) and on
        // disk. Read back, so that of two instances starting at once on a new database
        // with different keys, the one that lost is refused now, not at its next start.
        let stored = db
            .set_meta_if_absent(MASTER_KEY_CHECK, &fingerprint)
            .await
            .map_err(|e| {
                StartError(format!(
                    "cannot record the database's master-key check: {e} ({})",
                    source_text(&e)
                ))
            })?;
        if !crypto::constant_time_eq(stored.as_bytes(), fingerprint.as_bytes()) {
            return Err(StartError(format!(
                "another instance initialized this database with a different master key at the same time; give every instance the same TESSERA_MASTER_KEY (the master key from {} was not used)",
                master_key_origin(&config)
            )));
        }
    }
    if matches!(config.database, DatabaseConfig::Url(_)) && config.master_key.is_none() {
        warnings.push(
            "no master_key configured: instances sharing this database must all use the same one; set TESSERA_MASTER_KEY (or _FILE) on every instance".into(),
        );
    }
    let refresh_secret = Zeroizing::new(crypto::hmac_sha256(
        master.as_slice(),
        b"tessera/refresh-successor-secret/v1",
    ));
    let key_source = match &config.signing {
        SigningConfig::Hmac(k) => KeySource::Hmac(k.clone()),
        SigningConfig::Stored { alg, rsa_bits } => KeySource::Stored {
            alg: *alg,
            rsa_bits: *rsa_bits,
            sealing,
        },
    };
    let params = config.hash_params;
    let (concurrency, queue) = (config.max_concurrent_hashes, config.max_queued_logins);
    let nice = config.password_hash_nice;
    let hasher = tokio::task::spawn_blocking(move || {
        PasswordHasher::with_priority(params, concurrency, queue, nice)
    })
    .await
    .map_err(|e| StartError(e.to_string()))?
    .map_err(|e| StartError(e.to_string()))?;
    let auth_config = AuthConfig {
        issuer: config.issuer.clone(),
        audience: config.audience.clone(),
        profile: config.profile,
        access_token_ttl: config.access_token_ttl,
        refresh_idle_ttl: config.refresh_token_ttl,
        session_max_age: config.session_max_age,
        refresh_grace: config.refresh_grace_period,
        leeway: config.leeway,
        registration_open: config.registration_open,
        default_client: config.default_client(),
        password_policy: config.password_policy.clone(),
        security: config.security.clone(),
        token_cache_entries: config.token_cache_entries,
    };
    let key_schedule = KeySchedule {
        publish_ahead: config.key_publish_ahead,
        retain_after_retire: config.access_token_ttl
            + i64::try_from(config.leeway).unwrap_or(30)
            + 60,
        jwks_max_age: config.jwks_max_age,
    };
    let metrics = Arc::new(metrics::Metrics::new());
    let auth = Auth::start(AuthParts {
        store: db,
        config: auth_config,
        clock,
        hasher,
        key_source,
        key_schedule,
        refresh_secret,
        account_secret: Zeroizing::new(crypto::hmac_sha256(
            master.as_slice(),
            b"tessera/account-secret/v1",
        )),
        create_signing_keys: serving,
    })
    .await
    .map_err(|e| StartError(format!("cannot start: {e}")))?
    .with_observer(Arc::clone(&metrics) as Arc<dyn tessera_auth::audit::AuditObserver>);
    let csrf = session::CsrfGuard::new(&config.cors_allowed_origins).map_err(StartError)?;
    Ok((
        AppState::new(AppStateInner {
            csrf: Arc::new(csrf),
            auth: Arc::new(auth),
            metrics,
            request_ids: Arc::new(telemetry::RequestIds::new().map_err(StartError)?),
            limits: Arc::new(ratelimit::RateLimits::new(&config)),
            config: Arc::new(config),
            logins: tokio_util::task::TaskTracker::new(),
        }),
        warnings,
    ))
}

fn source_text(e: &dyn std::error::Error) -> String {
    e.source().map(ToString::to_string).unwrap_or_default()
}

fn ensure_data_dir(dir: &Path) -> Result<(), StartError> {
    if dir.exists() && !dir.is_dir() {
        return Err(StartError(format!(
            "the data directory {} is not a directory; point --data-dir (TESSERA_DATA_DIR) at a \
             directory, or move that file away",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        StartError(format!(
            "cannot create the data directory {}: {e}",
            dir.display()
        ))
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(dir)
            && meta.permissions().mode() & 0o077 != 0
        {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    Ok(())
}

/// The largest `master.key` (a key is 44 characters of base64, or 64 hex digits).
const MAX_MASTER_KEY_FILE: u64 = 4096;

/// The master key from configuration or from `<data_dir>/master.key`; `true` with a new
/// random key when neither exists. The caller writes it to that file once it knows the
/// database holds no signing key sealed with another one.
fn load_master_key(config: &Config) -> Result<(Zeroizing<[u8; 32]>, bool), StartError> {
    if let Some(mk) = &config.master_key {
        return config::decode_master_key(mk.expose_secret())
            .map(|key| (key, false))
            .map_err(|e| StartError(format!("`master_key`: {e}")));
    }
    let path = config.master_key_path();
    match files::read_regular_text(&path, MAX_MASTER_KEY_FILE) {
        Ok(text) => config::decode_master_key(&text)
            .map(|key| (key, false))
            .map_err(|e| {
                StartError(format!(
                    "{}: {e}; restore it from backup (without it, stored signing keys cannot be read)",
                    path.display()
                ))
            }),
        Err(files::ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Zeroizing::new(
                crypto::random_array::<32>().map_err(|e| StartError(e.to_string()))?,
            );
            Ok((key, true))
        }
        Err(e) => Err(StartError(format!("cannot read {}: {e}", path.display()))),
    }
}

/// The `meta` key under which a database records which master key it was created with.
const MASTER_KEY_CHECK: &str = "master_key_check";

/// What a database records of its master key: a MAC under it of a fixed label, which tells
/// whether a key is the same without revealing anything of it.
fn master_key_fingerprint(master: &[u8; 32]) -> String {
    tessera_jose::base64url::encode(crypto::hmac_sha256(master, b"tessera/master-key-check/v1"))
}

/// Where the master key in use came from, for messages.
fn master_key_origin(config: &Config) -> String {
    if config.master_key.is_some() {
        "the configured master_key (TESSERA_MASTER_KEY, TESSERA_MASTER_KEY_FILE or the config file)"
            .to_owned()
    } else {
        config.master_key_path().display().to_string()
    }
}

/// Refuses a master key that does not unseal the stored signing keys (every one was sealed
/// with the same key), with what to do instead of the key ring's "cannot unseal".
fn check_master_key(
    config: &Config,
    sealing: &SealingKey,
    stored: &[tessera_auth::model::StoredKey],
) -> Result<(), StartError> {
    let Some(key) = stored
        .iter()
        .rev()
        .find(|k| !k.sealed_private_key.is_empty())
    else {
        return Ok(());
    };
    if sealing
        .open(key.kid.as_bytes(), &key.sealed_private_key)
        .is_ok()
    {
        return Ok(());
    }
    let from = master_key_origin(config);
    Err(StartError(format!(
        "the master key from {from} does not unseal the stored signing key {}: it is not the \
         key this database was sealed with; restore {} from backup or set TESSERA_MASTER_KEY \
         to the right key",
        key.kid,
        config.master_key_path().display()
    )))
}

/// Writes a generated first-admin password to `<data_dir>/initial-admin-password` (mode
/// 0600, never over an existing file) and returns that path: for a server whose stderr is
/// no terminal (a service manager or a container keeps it as the log) or carries JSON log
/// lines, where the password must not be printed.
///
/// # Errors
/// [`StartError`] saying what could not be created or written.
pub fn save_initial_admin_password(
    config: &Config,
    password: &str,
) -> Result<std::path::PathBuf, StartError> {
    ensure_data_dir(&config.data_dir)?;
    let path = config.data_dir.join("initial-admin-password");
    let mut content = Zeroizing::new(String::with_capacity(password.len() + 1));
    content.push_str(password);
    content.push('\n');
    write_secret_file(&path, content.as_bytes())?;
    Ok(path)
}

fn write_secret_file(path: &Path, content: &[u8]) -> Result<(), StartError> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| StartError(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(content)
        .and_then(|()| f.sync_all())
        .map_err(|e| StartError(format!("cannot write {}: {e}", path.display())))?;
    // The new directory entry too: without it, a crash could lose the file after the keys
    // sealed with its content were committed.
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StartError(format!("cannot sync {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// The server's HTTP service: the router, inside the per-request layer
/// ([`telemetry::ObserveLayer`]) and, when origins are configured, CORS.
pub type App = telemetry::Observe<tower::util::Either<tower_http::cors::Cors<Router>, Router>>;

/// The router being built and the templates of its routes (the metric labels; see
/// [`metrics::RouteTable`]). Every route is added through [`Routes::route`] or
/// [`Routes::merge`], so the router and the table cannot disagree.
struct Routes {
    router: Router<AppState>,
    table: metrics::RouteTable,
}

impl Routes {
    fn new() -> Self {
        Self {
            router: Router::new(),
            table: metrics::RouteTable::default(),
        }
    }

    fn route(
        mut self,
        path: &'static str,
        method_router: axum::routing::MethodRouter<AppState>,
    ) -> Self {
        self.table.add(path);
        self.router = self.router.route(path, method_router);
        self
    }

    /// Merges a router whose routes are `templates` (one built elsewhere, or with its own
    /// route layers).
    fn merge(mut self, router: Router<AppState>, templates: &[&'static str]) -> Self {
        for t in templates {
            self.table.add(t);
        }
        self.router = self.router.merge(router);
        self
    }

    fn templates(&self) -> Vec<&'static str> {
        self.table.templates().collect()
    }
}

/// The content security policy of the interactive docs (`/docs`, Swagger UI): its own
/// scripts, styles and images only (the bundle sets styles from script, and draws icons as
/// `data:` images), requests ("Try it out") to this server only, never framed. A page
/// that shows whatever the API answers, and holds the tokens pasted into "Authorize",
/// gets no inline or foreign script.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The router with every route, and its route table.
fn routes(state: &AppState) -> Routes {
    let config = &state.config;
    let pages = Routes::new()
        .route(
            "/login",
            get(routes::pages::login_page).post(routes::pages::login_submit),
        )
        // A form's URL stays in the address bar after the POST; opening it again (Enter,
        // a restored tab) is a GET, answered by going back to its page, not a JSON 405.
        .route(
            "/login/mfa",
            post(routes::pages::login_submit).get(routes::pages::to_login),
        )
        // Where the sign-in page's forms post: under `/session`, so that the refresh cookie
        // comes along and a session the browser still holds ends with its access cookie
        // expired. `POST /login` and `/login/mfa` stay for pages served before.
        .route(
            "/session/login",
            post(routes::pages::login_submit).get(routes::pages::to_login),
        )
        .route(
            "/session/login/mfa",
            post(routes::pages::login_submit).get(routes::pages::to_login),
        )
        .route("/account", get(routes::pages::account_page))
        .route("/session/resume", get(routes::pages::resume))
        .route(
            "/session/end",
            post(routes::pages::sign_out).get(routes::pages::to_account),
        )
        .route(
            "/account/logout",
            post(routes::pages::sign_out_moved).get(routes::pages::to_account),
        )
        .route(
            "/account/password",
            post(routes::pages::change_password).get(routes::pages::to_account),
        )
        .route(
            "/account/sessions/{id}/revoke",
            post(routes::pages::revoke_session).get(routes::pages::to_account),
        )
        .route(
            "/account/sessions/revoke-all",
            post(routes::pages::revoke_all).get(routes::pages::to_account),
        )
        .route(
            "/account/totp",
            post(routes::pages::begin_totp).get(routes::pages::to_account),
        )
        .route(
            "/account/totp/confirm",
            post(routes::pages::confirm_totp).get(routes::pages::to_account),
        )
        .route(
            "/account/totp/disable",
            post(routes::pages::disable_totp).get(routes::pages::to_account),
        )
        .route("/assets/tessera.css", get(routes::pages::stylesheet));
    let page_templates = pages.templates();
    let pages = pages
        .router
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::pages::page_headers,
        ));
    let mut all = Routes::new()
        .route("/token", post(routes::oauth::token))
        .route("/revoke", post(routes::oauth::revoke))
        .route("/introspect", post(routes::oauth::introspect))
        .route("/revocations", get(routes::feed::revocations))
        .route("/logout", post(routes::oauth::logout))
        .route("/session", post(routes::session::create))
        .route("/session/refresh", post(routes::session::refresh))
        .route("/session/logout", post(routes::session::logout))
        .route("/users/me", get(routes::users::me))
        .route("/users/me/password", post(routes::account::change_password))
        .route("/users/me/sessions", get(routes::account::list_sessions))
        .route(
            "/users/me/sessions/{id}",
            delete(routes::account::revoke_session),
        )
        .route("/users/me/mfa/totp", post(routes::account::begin_totp))
        .route(
            "/users/me/mfa/totp/confirm",
            post(routes::account::confirm_totp),
        )
        .route(
            "/users/me/mfa/totp/disable",
            post(routes::account::disable_totp),
        )
        .route("/users", post(routes::users::register))
        .route("/.well-known/jwks.json", get(routes::meta::jwks))
        .route(
            "/.well-known/oauth-authorization-server",
            get(routes::meta::oauth_metadata),
        )
        .route(
            "/.well-known/openid-configuration",
            get(routes::meta::openid_configuration),
        )
        .route("/healthz", get(routes::meta::healthz))
        .route("/readyz", get(routes::meta::readyz))
        .route(
            "/admin/users",
            get(routes::admin::list_users).post(routes::admin::create_user),
        )
        .route(
            "/admin/users/{user}",
            get(routes::admin::show_user).delete(routes::admin::delete_user),
        )
        .route("/admin/users/{user}/roles", put(routes::admin::set_roles))
        .route(
            "/admin/users/{user}/disable",
            post(routes::admin::disable_user),
        )
        .route(
            "/admin/users/{user}/enable",
            post(routes::admin::enable_user),
        )
        .route(
            "/admin/users/{user}/password",
            post(routes::admin::reset_password),
        )
        .route(
            "/admin/users/{user}/unlock",
            post(routes::admin::unlock_user),
        )
        .route(
            "/admin/users/{user}/sessions",
            delete(routes::admin::revoke_user_sessions),
        )
        .route(
            "/admin/users/{user}/mfa/reset",
            post(routes::admin::reset_mfa),
        )
        .route("/admin/audit", get(routes::admin::audit))
        .route("/admin/sessions", get(routes::admin::list_sessions))
        .route(
            "/admin/sessions/{id}",
            delete(routes::admin::revoke_session),
        )
        .route("/admin/keys", get(routes::admin::list_keys))
        .route("/admin/keys/rotate", post(routes::admin::rotate_keys))
        .merge(pages, &page_templates)
        // The routes `SwaggerUi` adds for these two paths (utoipa-swagger-ui's axum module).
        .merge(
            Router::from(utoipa_swagger_ui::SwaggerUi::new("/docs").url(
                "/openapi.json",
                <openapi::ApiDoc as utoipa::OpenApi>::openapi(),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(DOCS_CSP),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::X_FRAME_OPTIONS,
                HeaderValue::from_static("DENY"),
            )),
            &["/docs", "/docs/", "/docs/{*rest}", "/openapi.json"],
        );
    if config.metrics_enabled && config.metrics_listen.is_none() {
        all = all.route("/metrics", get(metrics::metrics_handler));
    }
    all.router = all
        .router
        .fallback(|| async { AppError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            AppError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this method is not allowed here",
            )
        });
    all
}

/// The server's HTTP service: every route, the per-request layer around them (request ids,
/// metrics, logs, panics, the request timeout, security headers, the body limit; see
/// [`telemetry::ObserveLayer`]) and CORS for the configured origins.
pub fn app(state: AppState) -> App {
    let config = Arc::clone(&state.config);
    let Routes { router, table } = routes(&state);
    tower::ServiceBuilder::new()
        .layer(telemetry::ObserveLayer::new(
            Arc::clone(&state.metrics),
            Arc::clone(&state.request_ids),
            table,
            Duration::from_secs(config.request_timeout),
            config
                .tls
                .is_some()
                .then(|| HeaderValue::from_static(tls::HSTS)),
            Some(config.max_body_bytes),
        ))
        .layer(cors(&config.cors_allowed_origins))
        .service(router.with_state(state))
}

/// CORS for the configured origins only, with credentials (cookie mode from another origin
/// of the same site). No origins configured: no CORS headers at all (same-origin only).
/// Never `*`: config resolution refuses it, and a wildcard cannot carry credentials anyway.
fn cors(origins: &[String]) -> tower::util::Either<CorsLayer, tower::layer::util::Identity> {
    use axum::http::Method;
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return tower::util::Either::Right(tower::layer::util::Identity::new());
    }
    tower::util::Either::Left(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static(session::CSRF_HEADER),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// The service of the separate metrics listener (`metrics.listen`): `GET /metrics` only,
/// under the same per-request layer as [`app`] (request ids, the log line, metrics, the
/// timeout, `Cache-Control: no-store`...). Its requests are counted under their own route
/// templates (`/metrics`; anything else is unmatched), never under an API route's.
pub fn metrics_app(state: AppState) -> App {
    let config = Arc::clone(&state.config);
    let (counters, ids) = (Arc::clone(&state.metrics), Arc::clone(&state.request_ids));
    let Routes { router, table } = Routes::new().route("/metrics", get(metrics::metrics_handler));
    let router = router
        .fallback(|| async { AppError::not_found("route") })
        .with_state(state);
    tower::Layer::layer(
        &telemetry::ObserveLayer::new(
            counters,
            ids,
            table,
            Duration::from_secs(config.request_timeout),
            // Plain HTTP only: HSTS would be ignored (RFC 6797 §8.1).
            None,
            Some(config.max_body_bytes),
        ),
        tower::util::Either::Right(router),
    )
}

/// How [`serve`] runs, beyond the main listener.
#[derive(Debug)]
pub struct ServeOptions {
    /// A bound listener for `GET /metrics` (`metrics.listen`), if any.
    pub metrics_listener: Option<TcpListener>,
    /// Native TLS on the main listener, or plain HTTP.
    pub tls: Option<tls::TlsFiles>,
    /// How long in-flight requests may take after the shutdown signal.
    pub shutdown_timeout: Duration,
    /// How long a connection with no request in flight may go without starting one
    /// (`limits.idle_timeout`).
    pub idle_timeout: Duration,
    /// Notified to cut the shutdown deadline short (the CLI: a second SIGINT or SIGTERM):
    /// the remaining connections are closed and background tasks stopped at once, and the
    /// database gets a second to close cleanly.
    pub force_shutdown: Option<Arc<tokio::sync::Notify>>,
}

impl ServeOptions {
    /// Options from the configuration: binds `metrics.listen` when it is set.
    ///
    /// # Errors
    /// If the metrics address cannot be bound.
    pub async fn from_config(config: &Config) -> std::io::Result<Self> {
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot listen on {addr} (`metrics.listen`): {e}"),
                )
            })?),
            None => None,
        };
        Ok(Self {
            metrics_listener,
            tls: config.tls.clone(),
            shutdown_timeout: Duration::from_secs(config.shutdown_timeout),
            idle_timeout: Duration::from_secs(config.idle_timeout),
            force_shutdown: None,
        })
    }
}

/// Serves `state` on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish (within `shutdown_timeout`) and closes the database. The
/// metrics listener and TLS come from the configuration ([`ServeOptions::from_config`]).
/// Background upkeep (revocation sync, key schedule, pruning) runs for as long as the
/// server does.
///
/// # Errors
/// The metrics address cannot be bound; a TLS certificate that cannot be loaded. (Errors
/// accepting a connection are logged and retried, not returned.)
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let options = ServeOptions::from_config(&state.config).await?;
    serve(listener, state, options, shutdown).await
}

/// [`run`] with explicit options (a pre-bound metrics listener, TLS files).
///
/// Shutdown, step by step (each logged): stop accepting on every listener; let requests in
/// flight finish, closing idle keep-alive connections at once; after `shutdown_timeout`,
/// close whatever connections remain; stop background tasks; close the database pool. The
/// last two get what is left of the deadline, at least a second each, so a hung database
/// cannot hold the exit.
///
/// # Errors
/// A TLS certificate that cannot be loaded. (Errors accepting a connection are logged and
/// retried, not returned.)
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = match &options.tls {
        Some(files) => {
            let loaded = tls::load(files).map_err(|e| std::io::Error::other(e.0))?;
            tls::warn_if_key_exposed(&files.key);
            tls::note_validity(files, &loaded, &state.metrics);
            Some((listen::TlsConfig::new(loaded.config), loaded.dates))
        }
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut upkeep = tokio::spawn(upkeep(state.clone(), stop_rx.clone()));
    let tls = match (options.tls, tls) {
        (Some(files), Some((config, dates))) => {
            tokio::spawn(tls::watch(
                files,
                config.clone(),
                dates,
                Arc::clone(&state.metrics),
                stop_rx.clone(),
            ));
            Some(config)
        }
        // Operators send SIGHUP out of habit (logrotate, config management); its default
        // action would terminate the server, so take it and say there is nothing to do.
        _ => {
            tokio::spawn(ignore_hangups(stop_rx.clone()));
            None
        }
    };
    let connections = Arc::new(listen::Connections::default());
    let (accepting_tx, accepting_rx) = tokio::sync::watch::channel(false);
    let metrics_loop = options.metrics_listener.map(|l| {
        tokio::spawn(listen::accept_loop(
            l,
            None,
            Arc::new(metrics_app(state.clone())),
            Arc::clone(&connections),
            options.idle_timeout,
            accepting_rx.clone(),
        ))
    });
    let main_loop = tokio::spawn(listen::accept_loop(
        listener,
        tls,
        Arc::new(app(state.clone())),
        Arc::clone(&connections),
        options.idle_timeout,
        accepting_rx,
    ));

    shutdown.await;
    let deadline = options.shutdown_timeout;
    let deadline_at = tokio::time::Instant::now() + deadline;
    tracing::info!(
        in_flight_connections = connections.count(),
        deadline_secs = deadline.as_secs(),
        "shutting down: stopped accepting connections; finishing in-flight requests"
    );
    let _ = accepting_tx.send(true);
    connections.drain();
    // The loops return at once; their listeners close with them, so new connections are
    // refused rather than left waiting in the backlog.
    let _ = main_loop.await;
    if let Some(task) = metrics_loop {
        let _ = task.await;
    }
    let force = async {
        match &options.force_shutdown {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    };
    let mut forced = false;
    let finished = tokio::select! {
        done = tokio::time::timeout(deadline, connections.closed()) => {
            if done.is_err() {
                tracing::warn!(
                    deadline_secs = deadline.as_secs(),
                    open_connections = connections.count(),
                    "shutdown deadline reached; closing the remaining connections"
                );
            }
            done.is_ok()
        }
        () = force => {
            forced = true;
            tracing::warn!(
                open_connections = connections.count(),
                "second shutdown signal: closing the remaining connections now"
            );
            connections.count() == 0
        }
    };
    if finished {
        tracing::info!("in-flight requests finished");
    } else {
        connections.abort_all();
        // An aborted task ends at its next await; one stuck in blocking code must not hold
        // the exit forever.
        if tokio::time::timeout(Duration::from_secs(1), connections.closed())
            .await
            .is_err()
        {
            tracing::warn!(
                open_connections = connections.count(),
                "connections still closing; going on with the shutdown"
            );
        }
    }
    // The rest is bounded too. Background work stops at its next await, but a database that
    // hangs (a stopped server, a network path dropping packets) can hold a query, or the
    // pool's close, for as long as TCP keeps the connection. Each step gets what is left of
    // the deadline, at least a second; after a second signal, background tasks are stopped
    // at once (100 ms) and the database gets a second to close.
    let tail_end = || deadline_at.max(tokio::time::Instant::now() + TAIL_FLOOR);
    let force = options.force_shutdown.as_deref();
    // Logins run to their end even when their clients have gone (`login_to_completion`):
    // each holds a lockout reservation, counted as a failure until its end resolves it. Cut
    // off by the exit, a login with the right password stayed counted, and after a restart
    // during a burst of logins, the next few sign-ins of that name could lock it. So they
    // finish before the database closes, within the deadline itself (no floor: past it, or
    // after a second signal, they are not waited for).
    state.logins.close();
    let until = if forced {
        tokio::time::Instant::now()
    } else {
        deadline_at
    };
    if within(
        until,
        Duration::ZERO,
        &mut forced,
        force,
        state.logins.wait(),
    )
    .await
    .is_none()
    {
        tracing::warn!(
            running = state.logins.len(),
            "logins still running at the shutdown deadline; their attempts stay counted against the lockout until its window ends"
        );
    }
    let _ = stop_tx.send(true);
    // After a second signal, upkeep gets only the moment it needs to see the stop (aborting
    // it is harmless: a write it had begun rolls back), so that a healthy one is not
    // reported as stuck.
    let until = if forced {
        tokio::time::Instant::now() + UPKEEP_GRACE
    } else {
        tail_end()
    };
    if within(until, UPKEEP_GRACE, &mut forced, force, &mut upkeep)
        .await
        .is_some()
    {
        tracing::info!("background tasks stopped; closing the database");
    } else {
        upkeep.abort();
        tracing::warn!(
            "background tasks still busy (waiting on the database?); stopped them; closing the database"
        );
    }
    let until = if forced {
        tokio::time::Instant::now() + TAIL_FLOOR
    } else {
        tail_end()
    };
    if within(until, TAIL_FLOOR, &mut forced, force, state.db().close())
        .await
        .is_some()
    {
        tracing::info!("database closed");
    } else {
        // Nothing committed is lost: SQLite replays its WAL on the next start, and
        // PostgreSQL rolls back whatever this process left open.
        tracing::warn!("the database did not close in time; exiting without waiting for it");
    }
    Ok(())
}

/// How long background tasks get to stop after a second signal.
const UPKEEP_GRACE: Duration = Duration::from_millis(100);

/// The least time the last shutdown steps (stopping background tasks, closing the
/// database) each get, even past the deadline.
const TAIL_FLOOR: Duration = Duration::from_secs(1);

/// Runs `work` until `until`; a second signal (`force`, if not already `forced`) sets
/// `forced` and cuts the wait to `grace` from then. `None` if `work` did not finish in time.
async fn within<F: Future>(
    mut until: tokio::time::Instant,
    grace: Duration,
    forced: &mut bool,
    force: Option<&tokio::sync::Notify>,
    work: F,
) -> Option<F::Output> {
    let mut work = std::pin::pin!(work);
    loop {
        let signal = async {
            match force {
                Some(n) if !*forced => n.notified().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            out = &mut work => return Some(out),
            () = tokio::time::sleep_until(until) => return None,
            () = signal => {
                *forced = true;
                tracing::warn!("second shutdown signal: cutting the remaining shutdown steps short");
                until = until.min(tokio::time::Instant::now() + grace);
            }
        }
    }
}

/// Without TLS there is nothing to reload: log each SIGHUP instead of letting its default
/// action stop the process.
async fn ignore_hangups(mut stop: tokio::sync::watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            got = hup.recv() => {
                if got.is_none() {
                    return;
                }
                tracing::info!("SIGHUP received: TLS is off, nothing to reload");
            }
        }
    }
}

/// Periodic work: pull revocations and key changes made elsewhere (at once when PostgreSQL
/// announces them, and at least every second), rotate keys on schedule, rebuild the key ring
/// when the schedule says, and prune expired rows.
async fn upkeep(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let wake = Arc::new(tokio::sync::Notify::new());
    if let Some(listener) = state.db().change_listener() {
        tokio::spawn(listen_for_changes(
            listener,
            Arc::clone(&wake),
            stop.clone(),
        ));
    }
    let interval = Duration::from_secs(1);
    let mut last_prune = std::time::Instant::now();
    let mut last_shrink = std::time::Instant::now();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(interval) => {}
            () = wake.notified() => {}
        }
        match state.auth.sync().await {
            Ok(()) if failing => {
                tracing::info!("database reachable again; state re-synced");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(error = %e, "background sync failed; serving from memory and retrying every second");
                failing = true;
            }
            Err(_) => {}
        }
        let now = state.auth.now();
        if let Err(e) = state
            .auth
            .keys()
            .rotate_if_due(state.db(), now, state.config.key_rotate_every)
            .await
        {
            tracing::warn!(error = %e, "scheduled key rotation failed; will retry");
        }
        if last_shrink.elapsed() >= ratelimit::SHRINK_EVERY {
            last_shrink = std::time::Instant::now();
            state.limits.shrink();
        }
        if last_prune.elapsed() >= Duration::from_secs(600) {
            last_prune = std::time::Instant::now();
            match tessera_auth::store::RevocationStore::prune(state.db(), now).await {
                Ok(n) if n > 0 => {
                    tracing::info!(rows = n, "pruned expired sessions and revocations")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "prune failed"),
            }
            if let Err(e) = state.auth.keys().delete_expired(state.db(), now).await {
                tracing::warn!(error = %e, "deleting expired keys failed");
            }
        }
    }
}

/// Wakes the upkeep loop whenever another instance changes revocations or keys, and after
/// every reconnect (notifications sent while disconnected are lost, so it re-syncs).
async fn listen_for_changes(
    mut listener: tessera_store::ChangeListener,
    wake: Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let change = tokio::select! {
            _ = stop.changed() => return,
            c = listener.changed() => c,
        };
        match change {
            Ok(_) => wake.notify_one(),
            Err(e) => {
                tracing::debug!(error = %e, "change listener disconnected; retrying");
                tokio::select! {
                    _ = stop.changed() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}
