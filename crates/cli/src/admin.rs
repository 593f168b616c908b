//! Administration commands: they open the configured database directly (server running
//! or not) and go through the same domain service as the HTTP API, so the rules, audit
//! events and revocations are identical. A running server picks revocations up within a
//! second.

use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use tessera_auth::keys::{KeyInfo, KeyState};
use tessera_auth::model::{RequestMeta, SessionId, User};
use tessera_auth::store::SessionStore as _;
use tessera_auth::{Actor, AuthError, SystemClock};
use tessera_server::AppState;
use tessera_server::config::{DatabaseConfig, SigningConfig};
use zeroize::Zeroizing;

use crate::Cli;
use crate::exit::Failure;
use crate::output::{self, outln};
use crate::tokens::GenerateArgs;

/// `tessera users ...`
#[derive(Debug, Subcommand)]
pub(crate) enum UsersCommand {
    /// Create a user (the password is prompted for, or read with --password-stdin)
    Add {
        /// Username
        #[arg(allow_hyphen_values = true)]
        name: String,
        /// Role (repeatable; the first is the primary role)
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// List users
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show one user
    Show {
        /// Username or id
        #[arg(allow_hyphen_values = true)]
        name: String,
    },
    /// Replace a user's roles
    SetRoles {
        /// Username or id
        #[arg(allow_hyphen_values = true)]
        name: String,
        /// The new roles (none to clear)
        roles: Vec<String>,
    },
    /// Disable a user: ends every session and refuses every token already issued
    Disable {
        /// Username or id
        #[arg(allow_hyphen_values = true)]
        name: String,
    },
    /// Enable a disabled user
    Enable {
        /// Username or id
        #[arg(allow_hyphen_values = true)]
        name: String,
    },
    /// Set a user's password (ends every session)
    Passwd {
        /// Username or id
        #[arg(allow_hyphen_values = true)]
        name: String,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// Delete a user and their sessions
    Delete {
        /// Username or id
        #[arg(allow_hyphen_values = true)]
        name: String,
    },
    /// Lift a login lockout (failed passwords or second-factor codes)
    Unlock {
        /// Username or id
        #[arg(allow_hyphen_values = true)]
        name: String,
    },
    /// Turn a user's TOTP second factor off and delete their recovery codes (for a lost
    /// authenticator; the user enrols again after signing in)
    ResetMfa {
        /// Username or id
        #[arg(allow_hyphen_values = true)]
        name: String,
    },
    /// Import users with existing password hashes from a JSON-lines file
    ///
    /// One object per line: {"username": "alice", "hash": "$2b$12$...", "roles": ["admin"]}
    /// (`roles` optional). bcrypt hashes (passlib and similar, cost 4-15) and Argon2 PHC
    /// strings (m <= 262144 KiB, m x t <= 1048576) are accepted; a bcrypt user's password is
    /// rehashed with Argon2id at their first login.
    /// Every line is checked before anything is written: one bad line imports nothing.
    Import {
        /// The file (`-` for stdin)
        file: PathBuf,
        /// Skip users that already exist instead of refusing the whole import
        #[arg(long)]
        skip_existing: bool,
        /// Check the file and report what would be imported, without writing
        #[arg(long)]
        dry_run: bool,
    },
}

/// Where a new password comes from. Never from an argument (it would land in shell
/// history and `ps`).
#[derive(Debug, Args)]
pub(crate) struct PasswordSource {
    /// Read the password from the first line of stdin
    #[arg(long)]
    password_stdin: bool,
}

/// `tessera keys ...`
#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// List signing keys and their lifecycle state
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Create a new signing key (published now, signing after keys.publish_ahead)
    Rotate {
        /// Start signing with it immediately
        #[arg(long)]
        now: bool,
    },
    /// Print the public JWKS
    ExportJwks,
    /// Revoke a signing key at once: every token it signed stops verifying
    Revoke {
        /// Key id
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
    /// Generate a key file for any algorithm (offline; does not touch the server's keys)
    Generate(GenerateArgs),
}

/// `tessera sessions ...`
#[derive(Debug, Subcommand)]
pub(crate) enum SessionsCommand {
    /// List live sessions
    List {
        /// Only this user's sessions
        #[arg(long, value_name = "NAME", allow_hyphen_values = true)]
        user: Option<String>,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Revoke one session (its refresh token and access tokens)
    Revoke {
        /// Session id
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// Revoke every session of a user
    RevokeAll {
        /// Username or id
        #[arg(allow_hyphen_values = true)]
        name: String,
    },
}

/// `tessera clients ...`
#[derive(Debug, Subcommand)]
pub(crate) enum ClientsCommand {
    /// Register an OAuth client (a confidential client's secret is shown once)
    Add {
        /// Client id (letters, digits, `. _ -`)
        #[arg(allow_hyphen_values = true)]
        name: String,
        /// Scope the client may be granted (repeatable)
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Give the client a secret (required for client_credentials)
        #[arg(long)]
        confidential: bool,
    },
    /// List clients
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Delete a client
    Delete {
        /// Client id
        #[arg(allow_hyphen_values = true)]
        name: String,
    },
}

pub(crate) async fn open(cli: &Cli) -> Result<AppState, Failure> {
    let config = cli.load_config(None)?;
    // An administration command on the embedded database works on what is there: a data
    // directory that does not exist is a mistyped --data-dir (or a command run from the
    // wrong directory), not a request for a new, empty database that the command would
    // then "succeed" on. `tessera serve` creates it; so does `mkdir` for a new one.
    if matches!(config.database, DatabaseConfig::Sqlite(_)) && !config.data_dir.exists() {
        let dir = config.data_dir.display();
        return Err(Failure::usage(format!(
            "the data directory {dir} does not exist: point --data-dir (TESSERA_DATA_DIR) at \
             the server's, or, for a new database, create it first (`mkdir -m 700 {dir}`) or \
             start `tessera serve` once"
        )));
    }
    let (state, _warnings) = tessera_server::open(config, std::sync::Arc::new(SystemClock))
        .await
        .map_err(|e| Failure::refused(e.to_string()))?;
    Ok(state)
}

/// Maps a domain error to an exit code: refusals are 1, bad input is 2.
pub(crate) fn fail(e: AuthError) -> Failure {
    match e {
        AuthError::InvalidRequest(m) => Failure::usage(m),
        AuthError::WeakPassword(m) => Failure::refused(format!("{m}; choose another password")),
        AuthError::AlreadyExists(what) => Failure::refused(format!("{what} already exists")),
        AuthError::NotFound(what) => Failure::refused(format!("{what} not found")),
        AuthError::InvalidClient(m) => Failure::refused(m),
        other => Failure::refused(other.to_string()),
    }
}

pub(crate) const CLI: Actor = Actor::Cli;

pub(crate) fn meta() -> RequestMeta {
    RequestMeta {
        ip: None,
        user_agent: Some("tessera-cli".into()),
        request_id: None,
    }
}

fn read_password(src: &PasswordSource, confirm: bool) -> Result<Zeroizing<String>, Failure> {
    if src.password_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Failure::refused(format!("cannot read the password from stdin: {e}")))?;
        let trimmed = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned());
        if trimmed.is_empty() {
            return Err(Failure::usage("stdin held no password"));
        }
        return Ok(trimmed);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::usage(
            "no terminal to prompt on: pipe the password in with --password-stdin",
        ));
    }
    let first = Zeroizing::new(
        rpassword::prompt_password("Password: ")
            .map_err(|e| Failure::refused(format!("cannot read the password: {e}")))?,
    );
    if confirm {
        let second = Zeroizing::new(
            rpassword::prompt_password("Repeat password: ")
                .map_err(|e| Failure::refused(format!("cannot read the password: {e}")))?,
        );
        if *first != *second {
            return Err(Failure::refused(
                "the passwords do not match; nothing was changed",
            ));
        }
    }
    Ok(first)
}

/// A Unix time as RFC 3339 text (the number when out of range), as every table and
/// `--json` output shows times.
pub(crate) use tessera_server::timestamp::rfc3339_or_seconds as time;

fn opt_time(t: Option<i64>) -> String {
    t.map_or_else(|| "-".to_owned(), time)
}

/// Prints rows as an aligned table.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> Result<(), Failure> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        text.push_str(out.trim_end());
        text.push('\n');
    };
    line(&headers.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
    for r in rows {
        line(r);
    }
    output::write(text.as_bytes())
}

// The `--json` outputs use the HTTP API's field names for the same things (docs/api.md:
// `GET /admin/users`, `/admin/sessions`, `/admin/keys`), so one script reads both; times
// are RFC 3339 text where the API has Unix seconds, as in `audit list --json`.

fn user_json(u: &User) -> serde_json::Value {
    serde_json::json!({
        "id": u.id.to_string(),
        "username": u.username.to_string(),
        "role": u.primary_role().map(ToString::to_string),
        "roles": u.roles,
        "disabled": u.disabled,
        "totp_enabled": u.totp_enabled,
        "created_at": time(u.created_at),
        "updated_at": time(u.updated_at),
        "password_changed_at": time(u.password_changed_at),
    })
}

pub(crate) fn print_json(v: &serde_json::Value) -> Result<(), Failure> {
    outln!(
        "{}",
        serde_json::to_string_pretty(v).map_err(|e| Failure::refused(e.to_string()))?
    )
}

/// `tessera users ...`
pub(crate) async fn users(cli: &Cli, cmd: &UsersCommand) -> Result<(), Failure> {
    // Read the password before opening the database, so a prompt is not delayed.
    let password = match cmd {
        UsersCommand::Add { password, .. } | UsersCommand::Passwd { password, .. } => {
            Some(read_password(password, true)?)
        }
        _ => None,
    };
    // Likewise the import file: a missing file is reported before the database is opened.
    let import_lines = match cmd {
        UsersCommand::Import { file, .. } => Some(crate::import::read(file)?),
        _ => None,
    };
    let state = open(cli).await?;
    let auth = &state.auth;
    match cmd {
        UsersCommand::Add { name, roles, .. } => {
            let pw = password.unwrap_or_default();
            let u = auth
                .create_user(name, pw, roles, &CLI, &meta())
                .await
                .map_err(|e| match e {
                    AuthError::AlreadyExists("user") => Failure::refused(format!(
                        "user `{name}` already exists; `tessera users show {name}` shows it \
                         (`tessera users passwd {name}` sets its password)"
                    )),
                    other => fail(other),
                })?;
            outln!("created user {} ({})", u.username, u.id)?;
        }
        UsersCommand::List { json } => {
            let users = auth.list_users().await.map_err(fail)?;
            if *json {
                print_json(&serde_json::Value::Array(
                    users.iter().map(user_json).collect(),
                ))?;
            } else {
                let rows: Vec<Vec<String>> = users
                    .iter()
                    .map(|u| {
                        vec![
                            u.username.to_string(),
                            u.roles
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(","),
                            if u.disabled {
                                "disabled".into()
                            } else {
                                "active".into()
                            },
                            time(u.created_at),
                            u.id.to_string(),
                        ]
                    })
                    .collect();
                table(&["USERNAME", "ROLES", "STATUS", "CREATED", "ID"], &rows)?;
            }
        }
        UsersCommand::Show { name } => {
            let u = find_user(auth, name).await?;
            let sessions = auth.list_sessions(Some(&u)).await.map_err(fail)?;
            let locked_until = auth.locked_until(u.username.as_str()).await.map_err(fail)?;
            let mut v = user_json(&u);
            if let Some(o) = v.as_object_mut() {
                o.insert("live_sessions".into(), serde_json::json!(sessions.len()));
                o.insert(
                    "locked_until".into(),
                    serde_json::json!(locked_until.map(time)),
                );
            }
            print_json(&v)?;
        }
        UsersCommand::SetRoles { name, roles } => {
            let u = find_user(auth, name).await?;
            let u = auth
                .set_roles(&u, roles, &CLI, &meta())
                .await
                .map_err(fail)?;
            outln!(
                "{} now has roles: {} (tokens pick this up at their next refresh)",
                u.username,
                if u.roles.is_empty() {
                    "(none)".into()
                } else {
                    u.roles
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )?;
        }
        UsersCommand::Disable { name } => {
            let u = find_user(auth, name).await?;
            if u.disabled {
                outln!("{} is already disabled; nothing to do", u.username)?;
                state.db().close().await;
                return Ok(());
            }
            auth.set_disabled(&u, true, &CLI, &meta())
                .await
                .map_err(fail)?;
            outln!(
                "disabled {}; every session and token of theirs is revoked",
                u.username
            )?;
        }
        UsersCommand::Enable { name } => {
            let u = find_user(auth, name).await?;
            if !u.disabled {
                outln!("{} is already enabled; nothing to do", u.username)?;
                state.db().close().await;
                return Ok(());
            }
            auth.set_disabled(&u, false, &CLI, &meta())
                .await
                .map_err(fail)?;
            outln!("enabled {}", u.username)?;
        }
        UsersCommand::Passwd { name, .. } => {
            let u = find_user(auth, name).await?;
            auth.set_password(&u, password.unwrap_or_default(), None, &CLI, &meta())
                .await
                .map_err(fail)?;
            outln!(
                "password of {} changed; their sessions were ended",
                u.username
            )?;
        }
        UsersCommand::Delete { name } => {
            let u = find_user(auth, name).await?;
            auth.delete_user(&u, &CLI, &meta()).await.map_err(fail)?;
            outln!("deleted {}", u.username)?;
        }
        UsersCommand::Unlock { name } => {
            let u = find_user(auth, name).await?;
            if auth.unlock(&u, &CLI, &meta()).await.map_err(fail)? {
                outln!("unlocked {}: failed-attempt counters cleared", u.username)?;
            } else {
                outln!("{} was not locked; nothing to do", u.username)?;
            }
        }
        UsersCommand::ResetMfa { name } => {
            let u = find_user(auth, name).await?;
            // Already in the state asked for: exit 0 and say so, like `unlock` and
            // `disable` (a script resetting a lost authenticator must not fail on a user
            // who never enrolled).
            if u.totp_enabled {
                auth.reset_mfa(&u, &CLI, &meta()).await.map_err(fail)?;
                outln!(
                    "second factor of {} turned off and recovery codes deleted; they sign in with the password and can enrol again",
                    u.username
                )?;
            } else {
                outln!("{} has no second factor; nothing to do", u.username)?;
            }
        }
        UsersCommand::Import {
            skip_existing,
            dry_run,
            ..
        } => {
            let report = crate::import::run(
                &state,
                import_lines.unwrap_or_default(),
                *skip_existing,
                *dry_run,
            )
            .await?;
            outln!("{report}")?;
        }
    }
    state.db().close().await;
    Ok(())
}

/// `tessera keys ...` (except `generate`, which is offline).
pub(crate) async fn keys(cli: &Cli, cmd: &KeysCommand) -> Result<(), Failure> {
    let state = open(cli).await?;
    let auth = &state.auth;
    match cmd {
        KeysCommand::List { json } => {
            // From storage: a database where no key can sign builds no key ring, and the
            // ring's listing was empty for it, every revoked key hidden.
            let keys = auth
                .keys()
                .list(auth.store(), auth.now())
                .await
                .map_err(fail)?;
            if *json {
                let keys: Vec<serde_json::Value> = keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({
                            "kid": k.kid, "alg": k.alg, "state": k.state.as_str(),
                            "created_at": time(k.created_at),
                            "activates_at": time(k.activates_at),
                            "retires_at": k.retires_at.map(time),
                            "expires_at": k.expires_at.map(time),
                        })
                    })
                    .collect();
                print_json(&serde_json::Value::Array(keys))?;
            } else if keys.is_empty() {
                match &state.config.signing {
                    SigningConfig::Hmac(k) => outln!(
                        "no stored keys: tokens are signed with {} from `signing.secret`",
                        k.algorithm()
                    )?,
                    SigningConfig::Stored { .. } => outln!(
                        "no signing keys yet: the first `tessera serve` on this database \
                         creates one with its `signing.alg`"
                    )?,
                }
            } else {
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.kid.clone(),
                            k.alg.clone(),
                            k.state.as_str().to_owned(),
                            time(k.created_at),
                            time(k.activates_at),
                            opt_time(k.retires_at),
                        ]
                    })
                    .collect();
                table(
                    &["KID", "ALG", "STATE", "CREATED", "ACTIVATES", "RETIRES"],
                    &rows,
                )?;
            }
            // On stderr, so that stdout stays the listing (the JSON a script parses); the
            // listing itself succeeded (exit 0).
            if let Some(warning) = signer_warning(&state.config.signing, &keys, *json) {
                crate::output::errln!("warning: {warning}");
            }
        }
        KeysCommand::Rotate { now } => {
            let stored = matches!(state.config.signing, SigningConfig::Stored { .. });
            let keys = auth
                .keys()
                .list(auth.store(), auth.now())
                .await
                .map_err(fail)?;
            // Administrative commands never create the first key: it would have this
            // command's `signing.alg` (the default RS256, say), not the servers'.
            if stored && keys.is_empty() {
                state.db().close().await;
                return Err(Failure::refused(
                    "the database has no signing key yet: start `tessera serve` once (it \
                     creates the first key with its `signing.alg`), then rotate",
                ));
            }
            // Nothing signs and nothing will (every key revoked or expired): a key that
            // waited `keys.publish_ahead` to sign would leave the servers that long with no
            // usable key, so it signs at once.
            let unusable = stored && !has_usable_key(&keys);
            let info = auth
                .rotate_keys(*now || unusable, &CLI)
                .await
                .map_err(fail)?;
            outln!(
                "created key {} ({}), {} at {}; running servers pick it up within a second",
                info.kid,
                info.alg,
                match (*now, unusable) {
                    (true, _) => "signing from now",
                    (false, true) => "signing from now (no key was usable)",
                    (false, false) => "published now, signing",
                },
                time(info.activates_at)
            )?;
        }
        KeysCommand::ExportJwks => outln!("{}", auth.key_ring().jwks_json)?,
        KeysCommand::Revoke { kid } => {
            // From storage, as `keys list`: a database where no key signs builds no ring,
            // and a key already revoked there was revoked again (a new time, a new audit
            // event, "revoked key").
            let already = auth
                .keys()
                .list(auth.store(), auth.now())
                .await
                .map_err(fail)?
                .iter()
                .any(|k| k.kid == *kid && k.state == KeyState::Revoked);
            if already {
                outln!("key {kid} is already revoked; nothing to do")?;
                state.db().close().await;
                return Ok(());
            }
            auth.revoke_key(kid, &CLI).await.map_err(|e| match e {
                AuthError::NotFound(_) => Failure::refused(format!(
                    "no signing key `{kid}`; `tessera keys list` shows their ids (KID)"
                )),
                other => fail(other),
            })?;
            outln!(
                "revoked key {kid}: tokens it signed are refused (running servers within a second); signing uses {}",
                auth.key_ring().signer.kid().unwrap_or("-")
            )?;
        }
        KeysCommand::Generate(_) => {}
    }
    state.db().close().await;
    Ok(())
}

/// `tessera sessions ...`
pub(crate) async fn sessions(cli: &Cli, cmd: &SessionsCommand) -> Result<(), Failure> {
    let state = open(cli).await?;
    let auth = &state.auth;
    match cmd {
        SessionsCommand::List { user, json } => {
            let user = match user {
                Some(u) => Some(find_user(auth, u).await?),
                None => None,
            };
            let sessions = auth.list_sessions(user.as_ref()).await.map_err(fail)?;
            let names = auth.list_users().await.map_err(fail)?;
            let name_of = |id: &tessera_auth::model::UserId| {
                names
                    .iter()
                    .find(|u| u.id == *id)
                    .map_or_else(|| id.to_string(), |u| u.username.to_string())
            };
            if *json {
                let v: Vec<serde_json::Value> = sessions
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "id": s.id.to_string(),
                            "user_id": s.user_id.to_string(),
                            "username": names.iter().find(|u| u.id == s.user_id).map(|u| u.username.to_string()),
                            "client_id": s.client_id,
                            "scope": s.scope,
                            "created_at": time(s.created_at),
                            "last_used_at": time(s.last_used_at),
                            "idle_expires_at": time(s.idle_expires_at),
                            "absolute_expires_at": time(s.absolute_expires_at),
                            "ip": s.ip,
                            "user_agent": s.user_agent,
                        })
                    })
                    .collect();
                print_json(&serde_json::Value::Array(v))?;
            } else {
                let rows: Vec<Vec<String>> = sessions
                    .iter()
                    .map(|s| {
                        vec![
                            s.id.to_string(),
                            name_of(&s.user_id),
                            s.client_id.clone(),
                            time(s.created_at),
                            time(s.last_used_at),
                            s.ip.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                table(
                    &["ID", "USER", "CLIENT", "CREATED", "LAST USED", "IP"],
                    &rows,
                )?;
            }
        }
        SessionsCommand::Revoke { id } => {
            let id = SessionId::parse(id).map_err(|_| {
                Failure::usage(format!(
                    "`{id}` is not a session id (see `tessera sessions list`)"
                ))
            })?;
            match auth
                .revoke_session(id, "cli", &CLI, &meta())
                .await
                .map_err(fail)?
            {
                Some(_) => outln!("revoked session {id}")?,
                // Not live: already ended (revoked or expired) is the state asked for;
                // an id the database does not know is a mistake (a typo must not pass).
                None => match auth
                    .store()
                    .find_session(id)
                    .await
                    .map_err(|e| fail(e.into()))?
                {
                    Some(_) => outln!("session {id} has already ended; nothing to do")?,
                    None => {
                        state.db().close().await;
                        return Err(Failure::refused(format!(
                            "no session {id}; `tessera sessions list` shows the live ones"
                        )));
                    }
                },
            }
        }
        SessionsCommand::RevokeAll { name } => {
            let u = find_user(auth, name).await?;
            let n = auth
                .revoke_all_sessions(&u, &CLI, &meta())
                .await
                .map_err(fail)?;
            if n == 0 {
                outln!("{} has no live sessions; nothing to do", u.username)?;
            } else {
                outln!("revoked {n} session(s) of {}", u.username)?;
            }
        }
    }
    state.db().close().await;
    Ok(())
}

/// `tessera clients ...`
pub(crate) async fn clients(cli: &Cli, cmd: &ClientsCommand) -> Result<(), Failure> {
    let state = open(cli).await?;
    let auth = &state.auth;
    match cmd {
        ClientsCommand::Add {
            name,
            scopes,
            confidential,
        } => {
            let (client, secret) = auth
                .create_client(name, scopes, *confidential, &CLI)
                .await
                .map_err(|e| match e {
                    AuthError::AlreadyExists("client") => Failure::refused(format!(
                        "client `{name}` already exists; choose another id, or delete it first \
                         (`tessera clients delete {name}`)"
                    )),
                    other => fail(other),
                })?;
            // One write, so the secret is either shown with the rest or reported lost.
            let mut text = Zeroizing::new(format!(
                "created {} client {} with scopes: {}\n",
                if client.confidential {
                    "confidential"
                } else {
                    "public"
                },
                client.id,
                if client.scopes.is_empty() {
                    "(none)".to_owned()
                } else {
                    client.scopes.join(" ")
                }
            ));
            if let Some(secret) = &secret {
                text.push_str("client_secret: ");
                text.push_str(secret.as_str());
                text.push('\n');
            }
            output::write(text.as_bytes()).map_err(|f| {
                if secret.is_some() {
                    Failure::refused(format!(
                        "{}; the client {} was created, but its secret was not shown and is \
                         stored only hashed: delete it (`tessera clients delete {}`) and add it \
                         again",
                        f.message(),
                        client.id,
                        client.id
                    ))
                } else {
                    f
                }
            })?;
            if secret.is_some() {
                crate::output::errln!(
                    "The secret is shown only once and stored hashed; keep it somewhere safe."
                );
            }
        }
        ClientsCommand::List { json } => {
            let clients = auth.list_clients().await.map_err(fail)?;
            if *json {
                let v: Vec<serde_json::Value> = clients
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "client_id": c.id.to_string(), "scopes": c.scopes,
                            "confidential": c.confidential, "created_at": time(c.created_at),
                        })
                    })
                    .collect();
                print_json(&serde_json::Value::Array(v))?;
            } else {
                let rows: Vec<Vec<String>> = clients
                    .iter()
                    .map(|c| {
                        vec![
                            c.id.to_string(),
                            if c.confidential {
                                "confidential".into()
                            } else {
                                "public".into()
                            },
                            c.scopes.join(" "),
                            time(c.created_at),
                        ]
                    })
                    .collect();
                table(&["CLIENT_ID", "TYPE", "SCOPES", "CREATED"], &rows)?;
            }
        }
        ClientsCommand::Delete { name } => {
            auth.delete_client(name, &CLI).await.map_err(|e| match e {
                AuthError::NotFound(_) => Failure::refused(format!(
                    "no client `{name}`; `tessera clients list` shows them"
                )),
                other => fail(other),
            })?;
            outln!("deleted client {name}")?;
        }
    }
    state.db().close().await;
    Ok(())
}

/// Whether a key signs or will (is active or next).
fn has_usable_key(keys: &[KeyInfo]) -> bool {
    keys.iter()
        .any(|k| matches!(k.state, KeyState::Active | KeyState::Next))
}

/// What `keys list` warns about on stderr, with what to do: stored keys of which none
/// signs now; for `--json`, no key at all (the text listing says so in its place); in HMAC
/// mode, stored keys that are not used. `None` when a stored key signs.
fn signer_warning(signing: &SigningConfig, keys: &[KeyInfo], json: bool) -> Option<String> {
    if let SigningConfig::Hmac(k) = signing {
        return (!keys.is_empty()).then(|| {
            format!(
                "tokens are signed with {} from `signing.secret`; the stored keys are not used",
                k.algorithm()
            )
        });
    }
    if keys.iter().any(|k| k.state == KeyState::Active) {
        return None;
    }
    let newest = |state: Option<KeyState>| {
        keys.iter()
            .filter(|k| state.is_none_or(|s| k.state == s))
            .max_by(|a, b| (a.activates_at, &a.kid).cmp(&(b.activates_at, &b.kid)))
    };
    if let Some(next) = newest(Some(KeyState::Next)) {
        return Some(format!(
            "no key signs yet: {} signs from {}; `tessera keys rotate --now` creates one \
             that signs at once",
            next.kid,
            time(next.activates_at)
        ));
    }
    match newest(None) {
        Some(last) => Some(format!(
            "no usable signing key: every stored key is revoked, retired or expired; `tessera keys \
             rotate` creates one ({}, the algorithm of the newest) that signs at once, and \
             running servers pick it up within a second",
            last.alg
        )),
        None => json.then(|| {
            "no signing keys yet: the first `tessera serve` on this database creates one \
             with its `signing.alg`"
                .to_owned()
        }),
    }
}

/// The user named `name` (a username or an id), or an error naming what was looked for.
async fn find_user(
    auth: &tessera_auth::Auth<tessera_store::Database>,
    name: &str,
) -> Result<User, Failure> {
    auth.find_user(name).await.map_err(|e| match e {
        AuthError::NotFound(_) => Failure::refused(format!(
            "no user `{name}` (by username or id); `tessera users list` shows them"
        )),
        other => fail(other),
    })
}
