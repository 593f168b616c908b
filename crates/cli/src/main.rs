//! `tessera`: the server and its command line (STYLE §1: the composition root).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};
use tessera_auth::SystemClock;
use tessera_server::config::{Config, Sources};

mod admin;
mod audit;
mod exit;
mod import;
mod output;
mod tokens;

use exit::Failure;
use output::outln;

/// Tessera: a JWT authentication server and toolkit.
///
/// Configuration comes from defaults, then `--config FILE` (TOML), then `TESSERA_*`
/// environment variables (`TESSERA_SIGNING__ALG=ES256` sets `signing.alg`; `*_FILE`
/// variants read secrets from files), then these flags.
///
/// Exit codes: 0 success, 1 operation refused or failed, 2 usage or configuration error.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, about, long_about = None, propagate_version = true)]
pub(crate) struct Cli {
    /// Directory for the embedded database and generated keys [env: TESSERA_DATA_DIR] [default: ./tessera-data]
    // An empty value is taken here and refused by the configuration, in one line naming
    // `data_dir` and the flag (`path_value` has why).
    #[arg(long, global = true, value_name = "DIR", value_parser = path_value())]
    data_dir: Option<PathBuf>,
    /// Database URL (postgres://... for PostgreSQL) [env: TESSERA_DATABASE_URL] [default: SQLite in the data dir]
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    /// TOML configuration file [env: TESSERA_CONFIG]
    // Read from the environment by `config_file`, not by clap: clap takes an empty
    // `TESSERA_CONFIG=` for a missing value ("a value is required for '--config <FILE>'").
    // An empty `--config ''` is refused by `config_file`, in one line like every other
    // configuration error.
    #[arg(long, global = true, value_name = "FILE", value_parser = path_value())]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing buys nothing"
)]
enum Command {
    /// Run the authentication server
    Serve {
        /// Address to listen on [env: TESSERA_LISTEN] [default: 127.0.0.1:8080]
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Log format: human or json [env: TESSERA_LOG_FORMAT] [default: human]
        #[arg(long, value_name = "FORMAT", value_parser = ["human", "json"])]
        log_format: Option<String>,
    },
    /// Validate the configuration and print it resolved, with secrets redacted
    CheckConfig,
    /// Manage users (works on the database, server running or not)
    #[command(subcommand)]
    Users(admin::UsersCommand),
    /// Manage signing keys, or generate a key file
    #[command(subcommand)]
    Keys(admin::KeysCommand),
    /// List and revoke login sessions
    #[command(subcommand)]
    Sessions(admin::SessionsCommand),
    /// Manage OAuth clients
    #[command(subcommand)]
    Clients(admin::ClientsCommand),
    /// Read and check the tamper-evident audit log
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Encode, decode and verify tokens (offline, no server needed)
    #[command(subcommand)]
    Token(tokens::TokenCommand),
    /// Print shell completions
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
}

impl Cli {
    fn sources(&self, listen: Option<&str>, log_format: Option<&str>) -> Result<Sources, Failure> {
        let mut overrides = Vec::new();
        if let Some(d) = &self.data_dir {
            // `display` would swap bytes that are not UTF-8 for U+FFFD, and so another
            // directory; the configuration holds text.
            let d = d.to_str().ok_or_else(|| {
                Failure::usage(format!(
                    "--data-dir {} is not valid UTF-8; choose a directory whose path is UTF-8",
                    d.display()
                ))
            })?;
            overrides.push(("data_dir".to_owned(), d.to_owned()));
        }
        if let Some(u) = &self.database_url {
            overrides.push(("database_url".to_owned(), u.clone()));
        }
        if let Some(l) = listen {
            overrides.push(("listen".to_owned(), l.to_owned()));
        }
        if let Some(f) = log_format {
            overrides.push(("log_format".to_owned(), f.to_owned()));
        }
        Ok(Sources {
            file: self.config_file()?,
            env: tessera_env()?,
            overrides,
        })
    }

    /// `--config`, else `TESSERA_CONFIG` when it is set and not empty (an empty value, as
    /// `TESSERA_CONFIG=` in a unit file leaves it, means no file).
    ///
    /// An empty `--config ''` is a usage failure (exit 2): the flag is there to name a file,
    /// so an empty one is a mistake (an unset shell variable, `--config "$CONF"`), not a
    /// request for none.
    fn config_file(&self) -> Result<Option<PathBuf>, Failure> {
        match &self.config {
            Some(path) if path.as_os_str().is_empty() => Err(Failure::usage(
                "configuration error: the config file path is empty; give --config the path \
                 of a TOML file, or leave the flag out to use none (set by --config)",
            )),
            Some(path) => Ok(Some(path.clone())),
            None => Ok(std::env::var_os("TESSERA_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)),
        }
    }

    /// The resolved configuration, or a usage failure (exit 2) naming the key.
    pub(crate) fn load_config(&self, listen: Option<&str>) -> Result<Config, Failure> {
        self.load_serve_config(listen, None)
    }

    /// [`Cli::load_config`] with the `serve` flags.
    fn load_serve_config(
        &self,
        listen: Option<&str>,
        log_format: Option<&str>,
    ) -> Result<Config, Failure> {
        Config::load(&self.sources(listen, log_format)?)
            .map_err(|e| Failure::usage(format!("configuration error: {e}")))
    }
}

/// The parser of the path flags: any value, the empty one included. clap's own for
/// `PathBuf` refuses an empty value with its usage error (`a value is required for
/// '--config <FILE>' but none was supplied`, a blank line and a hint: three lines), where
/// every other bad configuration value is one line naming the key and where it was set.
fn path_value() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    clap::builder::TypedValueParser::map(clap::builder::OsStringValueParser::new(), PathBuf::from)
}

/// The `TESSERA_*` environment variables, for the configuration. Other variables are not
/// ours: whatever their bytes (a Latin-1 name left by another program), they are skipped,
/// never read as text (`std::env::vars` panics on the first one that is not UTF-8).
fn tessera_env() -> Result<Vec<(String, String)>, Failure> {
    let mut env = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().filter(|n| n.starts_with("TESSERA_")) else {
            continue;
        };
        // Read by clap as a path, which need not be UTF-8.
        if name == "TESSERA_CONFIG" {
            continue;
        }
        let value = value.into_string().map_err(|_| {
            Failure::usage(format!(
                "configuration error: environment variable {name} is not valid UTF-8; set it \
                 to UTF-8 text or unset it"
            ))
        })?;
        env.push((name.to_owned(), value));
    }
    Ok(env)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::output::errln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli));
    // Dropping the runtime would wait for every blocking task still running, such as the
    // RSA key generation of a rotation whose request the shutdown cut: `serve` has bounded
    // every step that matters (the database is closed or abandoned), so give them a second.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(),
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Serve { listen, log_format } => {
            serve(&cli, listen.as_deref(), log_format.as_deref()).await
        }
        Command::CheckConfig => {
            let config = cli.load_config(None)?;
            let text = serde_json::to_string_pretty(&config.describe())
                .context("printing the configuration")?;
            outln!("{text}")?;
            // Loading the configuration has checked the files; what is left are dates.
            if let Some(files) = &config.tls
                && let Ok(loaded) = tessera_server::tls::load(files)
            {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                for problem in loaded.problems(now) {
                    crate::output::errln!("warning: {problem}");
                }
            }
            crate::output::errln!("configuration is valid");
            Ok(())
        }
        Command::Users(cmd) => admin::users(&cli, cmd).await,
        Command::Keys(admin::KeysCommand::Generate(args)) => tokens::generate_key(args),
        Command::Keys(cmd) => admin::keys(&cli, cmd).await,
        Command::Sessions(cmd) => admin::sessions(&cli, cmd).await,
        Command::Clients(cmd) => admin::clients(&cli, cmd).await,
        Command::Audit(cmd) => audit::run(&cli, cmd).await,
        Command::Token(cmd) => tokens::run(cmd).await,
        Command::Completions { shell } => {
            // Into memory first: `generate` panics when its writer fails.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "tessera", &mut script);
            output::write(&script)
        }
    }
}

async fn serve(cli: &Cli, listen: Option<&str>, log_format: Option<&str>) -> Result<(), Failure> {
    // SIGHUP's default action ends the process. The server takes it once it runs (a
    // certificate reload, or a log line), but starting (migrations, the first key, the
    // bootstrap hash) takes a while; registering a handler now replaces the default for the
    // life of the process (tokio keeps it installed), so a habitual `kill -HUP` in that
    // window is ignored rather than fatal.
    #[cfg(unix)]
    drop(tokio::signal::unix::signal(
        tokio::signal::unix::SignalKind::hangup(),
    ));
    let config = cli.load_serve_config(listen, log_format)?;
    tessera_server::telemetry::init(config.log_format).map_err(Failure::refused)?;
    let addr = config.listen;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Failure::refused(format!(
            "cannot listen on {addr}: {e} (is another server running? set --listen or TESSERA_LISTEN)"
        ))
    })?;
    // Every address is bound before the database is touched: a `metrics.listen` already in
    // use must not stop the server after it has created the first admin and shown its
    // password.
    let options = tessera_server::ServeOptions::from_config(&config)
        .await
        .map_err(|e| Failure::refused(e.to_string()))?;
    let mut config = config;
    if !config.public_url_explicit {
        // Follow the address actually bound (port 0 picks a free one).
        let bound = listener
            .local_addr()
            .map_err(|e| Failure::refused(e.to_string()))?;
        config.set_public_addr(bound);
    }
    let prepared = tessera_server::prepare(config, Arc::new(SystemClock))
        .await
        .map_err(|e| Failure::refused(e.to_string()))?;
    for w in &prepared.warnings {
        tracing::warn!("{w}");
    }
    let state = prepared.state;
    // With JSON logs, stderr carries JSON lines only: the banners become log events. A
    // generated admin password is shown once on the terminal; where stderr is no terminal
    // (a service manager or a container keeps it as the log) or carries JSON lines, it
    // goes to a 0600 file in the data directory instead, and the log names the file.
    let json_logs = state.config.log_format == tessera_server::config::LogFormat::Json;
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if let Some(b) = &prepared.bootstrap {
        match &b.generated_password {
            Some(pw) if json_logs || !terminal => {
                match tessera_server::save_initial_admin_password(&state.config, pw.as_str()) {
                    Ok(path) => tracing::warn!(
                        username = %b.username,
                        path = %path.display(),
                        "created the first admin user; its generated password is in the file \
                         at `path` (mode 0600) and nowhere else: log in, change it \
                         (POST /users/me/password), then delete the file"
                    ),
                    Err(e) => tracing::error!(
                        username = %b.username,
                        "created the first admin user, but could not save its generated \
                         password ({e}); set one with `tessera users passwd {}`, or start \
                         on an empty database with TESSERA_BOOTSTRAP_ADMIN_PASSWORD",
                        b.username
                    ),
                }
            }
            Some(pw) => crate::output::errln!(
                "\n  Created the first admin user.\n    username: {}\n    password: {}\n  This password is shown only once. Log in:\n    curl -s -X POST {}/token -d username={} -d password=<password>\n",
                b.username,
                pw.as_str(),
                state.config.public_url,
                b.username
            ),
            None if json_logs => tracing::info!(
                username = %b.username,
                "created the first admin user with the password from TESSERA_BOOTSTRAP_ADMIN_PASSWORD"
            ),
            None => crate::output::errln!(
                "\n  Created the first admin user `{}` with the password from TESSERA_BOOTSTRAP_ADMIN_PASSWORD.\n",
                b.username
            ),
        }
    }
    let local = listener
        .local_addr()
        .map_err(|e| Failure::refused(e.to_string()))?;
    let metrics_at = match (&options.metrics_listener, state.config.metrics_enabled) {
        (Some(l), _) => l.local_addr().ok().map(|a| format!("http://{a}/metrics")),
        (None, true) => Some("/metrics on the main listener".to_owned()),
        (None, false) => None,
    };
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{local}");
    tracing::info!(
        listen = %local,
        url = %url,
        tls = options.tls.is_some(),
        metrics = metrics_at.as_deref().unwrap_or("off"),
        issuer = %state.config.issuer,
        database = state.db().backend(),
        alg = %state.auth.signing_algorithm(),
        "tessera is ready"
    );
    if !json_logs {
        if let Some(m) = &metrics_at {
            crate::output::errln!("Metrics: {m}");
        }
        crate::output::errln!(
            "Tessera listening on {url} (issuer {})",
            state.config.issuer
        );
    }
    let mut options = options;
    let force = Arc::new(tokio::sync::Notify::new());
    options.force_shutdown = Some(Arc::clone(&force));
    tessera_server::serve(listener, state, options, shutdown_signals(force))
        .await
        .map_err(|e| Failure::refused(format!("server error: {e}")))?;
    // Whether the database closed in time is logged by `serve` ("database closed").
    tracing::info!("shut down");
    Ok(())
}

/// The next delivery of `signal`; never, if it could not be registered.
#[cfg(unix)]
async fn next_of(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Resolves on the first SIGINT or SIGTERM; a second one notifies `force`, which cuts the
/// shutdown deadline short (the database still gets a second to close cleanly).
async fn shutdown_signals(force: Arc<tokio::sync::Notify>) {
    // One receiver per signal for the life of the process: a receiver made anew for the
    // second wait would miss a signal that arrived while the first wait ended (SIGTERM then
    // SIGINT back to back).
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    #[cfg(unix)]
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    let mut next = async move || {
        #[cfg(unix)]
        let ctrl_c = async {
            next_of(int.as_mut()).await;
        };
        #[cfg(not(unix))]
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async {
            next_of(term.as_mut()).await;
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => {},
            () = term => {},
        }
    };
    next().await;
    tracing::info!(
        "shutdown signal received; finishing in-flight requests (a second signal stops them now)"
    );
    tokio::spawn(async move {
        next().await;
        force.notify_one();
    });
}
