//! Configuration, in two stages (STYLE §5).
//!
//! Stage 1, [`RawConfig`]: layers merged in order — defaults in code, then an optional TOML
//! file, then `TESSERA_*` environment variables (`__` separates nesting levels:
//! `TESSERA_SIGNING__ALG` is `signing.alg`) — and any secret may come from a file named by
//! `<key>_file` / `TESSERA_<KEY>_FILE`. Unknown keys are errors that name the key.
//!
//! Stage 2, [`Config::resolve`]: the semantic checks (durations in range, algorithm and
//! secret consistent, URLs well formed), each error naming the offending key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tessera_auth::password::{HashParams, PasswordPolicy};
use tessera_auth::{ClientPolicy, Profile};
use tessera_jose::{Algorithm, SigningKey};
use zeroize::Zeroizing;

/// A configuration error: one line that names the key (and, once loaded, where it was
/// set: the config file, the environment variable or the flag), and says what to do.
#[derive(Debug)]
pub struct ConfigError {
    message: String,
    /// The dotted key the message is about, when it starts with one (`` `listen` ...``).
    key: Option<String>,
    /// Where the key was set, e.g. "environment variable TESSERA_LISTEN".
    origin: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match &self.origin {
            Some(origin) => write!(f, " (set by {origin})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for ConfigError {}

/// An error about the key its message starts with (`` `signing.alg` = `XX` ...``), if any.
fn err(msg: impl Into<String>) -> ConfigError {
    let message = msg.into();
    let key = message
        .strip_prefix('`')
        .and_then(|rest| rest.split_once('`'))
        .map(|(key, _)| key.to_owned())
        .filter(|k| {
            !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
        });
    ConfigError {
        message,
        key,
        origin: None,
    }
}

/// Where each key of the merged configuration was set, highest layer last.
#[derive(Debug, Default, Clone)]
struct Origins(Vec<(String, String)>);

impl Origins {
    /// Where `key` (dotted) was set: the key itself, or for a section (`lockout`) the keys
    /// in it, from the highest layer that set any.
    fn of(&self, key: &str) -> Option<String> {
        let section = format!("{key}.");
        let mut found: Vec<&str> = Vec::new();
        for (k, origin) in self.0.iter().rev() {
            if (k == key || k.starts_with(&section)) && !found.contains(&origin.as_str()) {
                found.push(origin);
            }
        }
        (!found.is_empty()).then(|| found.join(", "))
    }
}

/// The dotted paths of every value in `table` (sections descended into).
fn leaf_keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => leaf_keys(t, &path, out),
            _ => out.push(
                path.strip_suffix("_file")
                    .map_or(path.clone(), str::to_owned),
            ),
        }
    }
}

/// "line L, column C" of byte offset `at` in `text` (both 1-based).
fn line_column(text: &str, at: usize) -> String {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}")
}

/// Keys whose values are secrets: never printed, and loadable from `<key>_file`.
const SECRET_KEYS: &[&str] = &[
    "database_url",
    "bootstrap_admin_password",
    "master_key",
    "signing.secret",
];

/// Environment variables with the `TESSERA_` prefix that are not configuration keys.
const NON_CONFIG_ENV: &[&str] = &["TESSERA_CONFIG", "TESSERA_LOG"];

/// Prefixes (after `TESSERA_`) reserved for the test and CI harness (`TESSERA_TEST_DATABASE_URL`,
/// `TESSERA_REQUIRE_POSTGRES`...): a server started from a test script inherits them, and they
/// must not be mistaken for (unknown) configuration keys.
const NON_CONFIG_PREFIXES: &[&str] = &["TEST_", "REQUIRE_"];

/// Stage 1: the merged layers, as typed but unchecked values.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<SecretString>,
    public_url: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
    profile: Option<String>,
    access_token_ttl: Option<DurationValue>,
    refresh_token_ttl: Option<DurationValue>,
    session_max_age: Option<DurationValue>,
    refresh_grace_period: Option<DurationValue>,
    leeway: Option<DurationValue>,
    registration: Option<String>,
    bootstrap_admin_password: Option<SecretString>,
    master_key: Option<SecretString>,
    log_format: Option<String>,
    default_scopes: Option<ListValue>,
    signing: Option<RawSigning>,
    keys: Option<RawKeys>,
    limits: Option<RawLimits>,
    database: Option<RawDatabase>,
    trusted_proxies: Option<NumberValue>,
    rate_limits: Option<RawRateLimits>,
    password: Option<RawPassword>,
    lockout: Option<RawLockout>,
    cors: Option<RawCors>,
    metrics: Option<RawMetrics>,
    tls: Option<RawTls>,
    shutdown_timeout: Option<DurationValue>,
    /// Where each key was set (not a configuration key: filled by [`RawConfig::load`]).
    #[serde(skip)]
    origins: Origins,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCors {
    allowed_origins: Option<ListValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    enabled: Option<BoolValue>,
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// A boolean, given as a TOML boolean or (from the environment) `true`/`false`/`1`/`0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BoolValue(bool);

impl<'de> Deserialize<'de> for BoolValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Bool(bool),
            Str(String),
            Other(toml::Value),
        }
        match Repr::deserialize(d)? {
            Repr::Other(v) => Err(wrong_type("true or false", &v)),
            Repr::Bool(b) => Ok(Self(b)),
            Repr::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(Self(true)),
                "false" | "0" | "no" | "off" => Ok(Self(false)),
                _ => Err(serde::de::Error::custom(format!(
                    "`{s}` is not a boolean; use true or false"
                ))),
            },
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimits {
    token_per_minute: Option<NumberValue>,
    mfa_per_minute: Option<NumberValue>,
    registration_per_minute: Option<NumberValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPassword {
    min_length: Option<NumberValue>,
    min_strength: Option<NumberValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLockout {
    threshold: Option<NumberValue>,
    base: Option<DurationValue>,
    max: Option<DurationValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigning {
    alg: Option<String>,
    secret: Option<SecretString>,
    rsa_bits: Option<NumberValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    publish_ahead: Option<DurationValue>,
    jwks_max_age: Option<DurationValue>,
    rotate_every: Option<DurationValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body_bytes: Option<NumberValue>,
    max_concurrent_hashes: Option<NumberValue>,
    max_queued_logins: Option<NumberValue>,
    password_hash_nice: Option<NumberValue>,
    request_timeout: Option<DurationValue>,
    idle_timeout: Option<DurationValue>,
    token_cache_entries: Option<NumberValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    max_connections: Option<NumberValue>,
}

/// A duration: an integer number of seconds, or a string like `90s`, `15m`, `12h`, `30d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationValue(pub i64);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Int(i64),
            Str(String),
            Other(toml::Value),
        }
        let secs = match Repr::deserialize(d)? {
            Repr::Other(v) => {
                return Err(wrong_type(
                    "a duration: whole seconds or a string such as \"90s\", \"15m\", \"12h\"",
                    &v,
                ));
            }
            Repr::Int(n) if n >= 0 => n,
            Repr::Int(_) => {
                return Err(serde::de::Error::custom("a duration must not be negative"));
            }
            Repr::Str(s) => parse_duration(&s).map_err(serde::de::Error::custom)?,
        };
        if secs > MAX_DURATION {
            return Err(serde::de::Error::custom(format!(
                "{secs} s is too long; a duration is at most 100 years ({MAX_DURATION} s)"
            )));
        }
        Ok(Self(secs))
    }
}

/// The longest duration any key accepts: 100 years. Nothing needs more, and it keeps every
/// sum and product the server makes of durations and timestamps far from overflowing
/// (`keys.publish_ahead = 9223372036854775807` overflowed `now + publish_ahead`: a panic).
const MAX_DURATION: i64 = 100 * 365 * 86_400;

/// Parses `30`, `30s`, `15m`, `12h`, `30d`, `2w`.
///
/// # Errors
/// A message describing the accepted forms.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; use e.g. 900, 90s, 15m, 12h, 30d"))?;
    let mult = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        other => {
            return Err(format!(
                "unknown duration unit `{other}`; use s, m, h, d or w"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// A non-negative integer, given as a TOML integer or (from the environment) a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NumberValue(u64);

impl<'de> Deserialize<'de> for NumberValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Int(u64),
            Str(String),
            Other(toml::Value),
        }
        match Repr::deserialize(d)? {
            Repr::Other(v) => Err(wrong_type("a non-negative integer", &v)),
            Repr::Int(n) => Ok(Self(n)),
            Repr::Str(s) => s.trim().parse().map(Self).map_err(|_| {
                serde::de::Error::custom(format!("`{s}` is not a non-negative integer"))
            }),
        }
    }
}

/// A list of strings: a TOML array, or (from the environment) a space- or comma-separated
/// string.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListValue(Vec<String>);

impl<'de> Deserialize<'de> for ListValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            List(Vec<String>),
            Str(String),
            Other(toml::Value),
        }
        Ok(Self(match Repr::deserialize(d)? {
            Repr::Other(toml::Value::Array(_)) => {
                return Err(serde::de::Error::custom(
                    "expected a list of strings, and an element is not a string",
                ));
            }
            Repr::Other(v) => return Err(wrong_type("a list of strings", &v)),
            Repr::List(v) => v,
            Repr::Str(s) => s
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        }))
    }
}

/// The error for a value of the wrong type: what was `expected`, and what was given (the
/// value itself when it is a number or a boolean, its type otherwise). Without it, serde's
/// untagged enums said "data did not match any variant of untagged enum Repr".
fn wrong_type<E: serde::de::Error>(expected: &str, given: &toml::Value) -> E {
    let given = match given {
        toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
            format!("`{given}`")
        }
        toml::Value::Array(_) => "an array".to_owned(),
        other => format!("a {}", other.type_str()),
    };
    E::custom(format!("expected {expected}, not {given}"))
}

/// Where the configuration layers come from.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// The TOML file (`--config`), if any.
    pub file: Option<PathBuf>,
    /// Environment variables (normally `std::env::vars()`).
    pub env: Vec<(String, String)>,
    /// Command-line overrides, as dotted keys (`listen`, `data_dir`, `database_url`).
    pub overrides: Vec<(String, String)>,
}

impl RawConfig {
    /// Merges the layers: TOML file, then environment, then command-line overrides, each
    /// with its `<secret>_file` indirections read (a secret given in a layer, in either
    /// form, replaces the lower layers' value in either form).
    ///
    /// # Errors
    /// Unreadable or invalid files, unknown keys (named), type errors (with the key).
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let mut file = toml::Table::new();
        if let Some(path) = &sources.file {
            let text = read_bounded_text(path, MAX_CONFIG_FILE)
                .map_err(|e| err(format!("cannot read config file {}: {e}", path.display())))?;
            file = text.parse::<toml::Table>().map_err(|e| {
                // One line: toml's own text quotes the line over three more.
                let at = e
                    .span()
                    .map(|s| format!(" at {}", line_column(&text, s.start)))
                    .unwrap_or_default();
                err(format!(
                    "config file {} is not valid TOML{at}: {}; fix the file (TOML: `key = \"text\"`, \
                     `[section]`)",
                    path.display(),
                    e.message().trim_end()
                ))
            })?;
        }
        // Which layer set which key, to name it in errors: the file, then the environment
        // variables, then the flags (the last entry for a key is the one in force).
        let mut origins = Origins::default();
        if let Some(path) = &sources.file {
            let mut keys = Vec::new();
            leaf_keys(&file, "", &mut keys);
            let origin = format!("config file {}", path.display());
            origins
                .0
                .extend(keys.into_iter().map(|k| (k, origin.clone())));
        }
        let mut env = toml::Table::new();
        for (name, value) in &sources.env {
            let Some(rest) = name.strip_prefix("TESSERA_") else {
                continue;
            };
            if NON_CONFIG_ENV.contains(&name.as_str())
                || NON_CONFIG_PREFIXES.iter().any(|p| rest.starts_with(p))
            {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if path.iter().any(String::is_empty) {
                return Err(err(format!(
                    "environment variable {name} is not a valid configuration key"
                )));
            }
            set_path(&mut env, &path, toml::Value::String(value.clone()))
                .map_err(|e| err(format!("{e} (from environment variable {name})")))?;
            let mut dotted = path.join(".");
            if let Some(base) = dotted.strip_suffix("_file") {
                dotted = base.to_owned();
            }
            origins
                .0
                .push((dotted, format!("environment variable {name}")));
        }
        let mut flags = toml::Table::new();
        for (key, value) in &sources.overrides {
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            set_path(&mut flags, &path, toml::Value::String(value.clone()))?;
            origins
                .0
                .push((key.clone(), format!("--{}", key.replace(['_', '.'], "-"))));
        }
        // A secret given in a layer, as itself or as `<key>_file`, replaces whatever a lower
        // layer gave for it in either form: `TESSERA_MASTER_KEY` overrides the file's
        // `master_key_file`, `--database-url` overrides `TESSERA_DATABASE_URL_FILE`. Both
        // forms in one layer stay an error (`resolve_secret_files`).
        for key in SECRET_KEYS {
            if secret_set(&flags, key) {
                remove_secret(&mut env, key);
                remove_secret(&mut file, key);
            } else if secret_set(&env, key) {
                remove_secret(&mut file, key);
            }
        }
        let mut table = file;
        resolve_secret_files(&mut table)?;
        for mut layer in [env, flags] {
            resolve_secret_files(&mut layer)?;
            merge(&mut table, layer);
        }
        let de = toml::Value::Table(table);
        let mut raw: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            // The message alone: toml's Display adds "in `key`" on lines of its own.
            let inner = without_value(&path, e.into_inner().message().trim_end());
            if path == "." || path.is_empty() {
                err(format!("invalid configuration: {inner}"))
            } else {
                let origin = origins.of(&path);
                ConfigError {
                    message: format!("invalid configuration key `{path}`: {inner}"),
                    key: Some(path),
                    origin,
                }
            }
        })?;
        raw.origins = origins;
        Ok(raw)
    }
}

/// A deserializer's message without the value it quotes (serde's `string "..."`): a value
/// put under the wrong key is often a secret (`TESSERA_DATABASE=postgres://user:password@...`
/// meant for `database_url`), and the error goes to a terminal or a log. Where the key is a
/// section, the message says so instead of naming an internal type.
fn without_value(path: &str, message: &str) -> String {
    let quoted = ["invalid type: string \"", "invalid value: string \""]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix).map(|rest| (*prefix, rest)));
    let Some((prefix, rest)) = quoted else {
        return message.to_owned();
    };
    let Some(expected) = rest.rfind("\", expected ").and_then(|i| rest.get(i + 12..)) else {
        return format!(
            "{}a string (not shown)",
            prefix.trim_end_matches("string \"")
        );
    };
    if expected.starts_with("struct ") {
        let env = path.replace('.', "__").to_ascii_uppercase();
        return format!(
            "it is a section, not a single value (the value given is not shown); set the keys \
             in it (`{path}.<key>`, or TESSERA_{env}__<KEY> in the environment)"
        );
    }
    format!(
        "{}a string (not shown), expected {expected}",
        prefix.trim_end_matches("string \"")
    )
}

fn set_path(
    table: &mut toml::Table,
    path: &[String],
    value: toml::Value,
) -> Result<(), ConfigError> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut t = table;
    for p in parents {
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry
            .as_table_mut()
            .ok_or_else(|| err(format!("configuration key `{p}` is not a section")))?;
    }
    t.insert(last.clone(), value);
    Ok(())
}

/// Copies `upper` over `base`: tables are merged key by key, anything else replaced.
fn merge(base: &mut toml::Table, upper: toml::Table) {
    for (key, value) in upper {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(u)) => merge(b, u),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Whether `table` gives the secret `key` (dotted), as itself or as `<key>_file`.
fn secret_set(table: &toml::Table, key: &str) -> bool {
    let path: Vec<&str> = key.split('.').collect();
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut t = table;
    for p in parents {
        match t.get(*p).and_then(toml::Value::as_table) {
            Some(inner) => t = inner,
            None => return false,
        }
    }
    t.contains_key(*last) || t.contains_key(&format!("{last}_file"))
}

/// Removes the secret `key` (dotted) from `table`, in both its forms.
fn remove_secret(table: &mut toml::Table, key: &str) {
    let path: Vec<&str> = key.split('.').collect();
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if let Some(t) = table_at(table, parents) {
        t.remove(*last);
        t.remove(&format!("{last}_file"));
    }
}

fn table_at<'a>(t: &'a mut toml::Table, path: &[&str]) -> Option<&'a mut toml::Table> {
    match path.split_first() {
        None => Some(t),
        Some((first, rest)) => table_at(t.get_mut(*first)?.as_table_mut()?, rest),
    }
}

fn resolve_secret_files(table: &mut toml::Table) -> Result<(), ConfigError> {
    for key in SECRET_KEYS {
        let path: Vec<&str> = key.split('.').collect();
        let Some((last, parents)) = path.split_last() else {
            continue;
        };
        let Some(t) = table_at(table, parents) else {
            continue;
        };
        let file_key = format!("{last}_file");
        if let Some(v) = t.remove(&file_key) {
            let file = v
                .as_str()
                .ok_or_else(|| err(format!("configuration key `{key}_file` must be a path")))?;
            if t.contains_key(*last) {
                return Err(err(format!(
                    "both `{key}` and `{key}_file` are set; keep one"
                )));
            }
            let content = read_secret_file(file)
                .map_err(|e| err(format!("cannot read `{key}_file` ({file}): {e}")))?;
            let content = content.strip_suffix('\n').unwrap_or(&content);
            let content = content.strip_suffix('\r').unwrap_or(content);
            t.insert((*last).to_owned(), toml::Value::String(content.to_owned()));
        }
    }
    Ok(())
}

/// The largest file a `<secret>_file` may name (a secret or a database URL is far smaller).
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// The largest configuration file.
const MAX_CONFIG_FILE: u64 = 1024 * 1024;

/// Reads a secret file, refusing one larger than [`MAX_SECRET_FILE`] (or endless, like
/// `/dev/zero`, which was read until memory ran out) and one that is not UTF-8.
fn read_secret_file(path: &str) -> Result<String, String> {
    read_bounded_text(Path::new(path), MAX_SECRET_FILE)
}

/// Reads at most `limit` bytes of UTF-8 text from `path`; a larger file is an error.
/// A FIFO, a device or a socket is refused without blocking ([`crate::files`]).
fn read_bounded_text(path: &Path, limit: u64) -> Result<String, String> {
    crate::files::read_regular_text(path, limit)
        .map(|text| text.as_str().to_owned())
        .map_err(|e| e.to_string())
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Which database to use.
#[derive(Clone)]
pub enum DatabaseConfig {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A database URL (PostgreSQL, or an explicit `sqlite:` URL).
    Url(SecretString),
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            Self::Url(_) => f.write_str("Url(<redacted>)"),
        }
    }
}

/// Where the signing keys come from.
#[derive(Clone)]
pub enum SigningConfig {
    /// An HMAC secret from configuration.
    Hmac(SigningKey),
    /// Asymmetric keys generated and stored in the database.
    Stored {
        /// Algorithm.
        alg: Algorithm,
        /// RSA modulus size.
        rsa_bits: usize,
    },
}

impl fmt::Debug for SigningConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hmac(k) => f.debug_tuple("Hmac").field(&k.algorithm()).finish(),
            Self::Stored { alg, rsa_bits } => f
                .debug_struct("Stored")
                .field("alg", alg)
                .field("rsa_bits", rsa_bits)
                .finish(),
        }
    }
}

impl SigningConfig {
    /// The signing algorithm.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Hmac(k) => k.algorithm(),
            Self::Stored { alg, .. } => *alg,
        }
    }
}

/// Stage 2: the checked configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// Data directory (SQLite file, generated master key).
    pub data_dir: PathBuf,
    /// Database.
    pub database: DatabaseConfig,
    /// Public base URL (no trailing slash).
    pub public_url: String,
    /// False when `public_url` was derived from `listen` (it then follows the address
    /// actually bound, e.g. with port 0).
    pub public_url_explicit: bool,
    /// Token issuer.
    pub issuer: String,
    /// Token audience.
    pub audience: String,
    /// Token profile.
    pub profile: Profile,
    /// Access-token lifetime (s).
    pub access_token_ttl: i64,
    /// Refresh idle lifetime (s).
    pub refresh_token_ttl: i64,
    /// Absolute session lifetime (s).
    pub session_max_age: i64,
    /// Refresh grace window (s).
    pub refresh_grace_period: i64,
    /// Verification leeway (s).
    pub leeway: u64,
    /// Open self-registration.
    pub registration_open: bool,
    /// Bootstrap admin password.
    pub bootstrap_admin_password: Option<SecretString>,
    /// Master key (32 bytes), if configured; otherwise one is generated in the data dir.
    pub master_key: Option<SecretString>,
    /// Log format.
    pub log_format: LogFormat,
    /// Signing keys.
    pub signing: SigningConfig,
    /// Publish-ahead delay for new keys (s).
    pub key_publish_ahead: i64,
    /// JWKS `max-age` (s).
    pub jwks_max_age: i64,
    /// Automatic rotation period of stored signing keys (s); 0 disables it.
    pub key_rotate_every: i64,
    /// Scopes of the default public client.
    pub default_scopes: Vec<String>,
    /// Maximum request body for form/JSON endpoints.
    pub max_body_bytes: usize,
    /// Concurrent password hashes.
    pub max_concurrent_hashes: usize,
    /// Logins allowed to wait for a hashing slot.
    pub max_queued_logins: usize,
    /// How many nice steps the password-hashing threads run below the server (0 to 19).
    pub password_hash_nice: u8,
    /// Per-request timeout (s).
    pub request_timeout: u64,
    /// A connection with no request in flight is closed once it has gone this long (s)
    /// without starting one: idle keep-alive connections, and clients that send their
    /// request head too slowly (slowloris).
    pub idle_timeout: u64,
    /// Capacity of the verified-token cache (0: off).
    pub token_cache_entries: usize,
    /// Database pool size (PostgreSQL).
    pub db_max_connections: u32,
    /// Argon2id parameters (not a file/env setting: OWASP in production, cheap in tests).
    pub hash_params: HashParams,
    /// Password policy.
    pub password_policy: PasswordPolicy,
    /// Lockout and second-factor limits.
    pub security: tessera_auth::security::SecurityPolicy,
    /// Reverse proxies in front of the server whose `X-Forwarded-For` entries are trusted
    /// (0: use the socket address).
    pub trusted_proxies: usize,
    /// Requests per minute and client IP on `/token` (0: no limit).
    pub rate_token_per_minute: u32,
    /// Second-factor requests per minute and client IP (0: no limit).
    pub rate_mfa_per_minute: u32,
    /// Registrations per minute and client IP (0: no limit).
    pub rate_registration_per_minute: u32,
    /// Origins (`scheme://host[:port]`) allowed to make credentialed cross-origin requests
    /// (CORS with `Access-Control-Allow-Credentials`), also trusted by the CSRF check. Never
    /// `*`.
    pub cors_allowed_origins: Vec<String>,
    /// Serve `GET /metrics` (on `metrics_listen` when set, else on the main listener).
    pub metrics_enabled: bool,
    /// A separate address for `GET /metrics`; when set, the main listener does not serve it.
    pub metrics_listen: Option<SocketAddr>,
    /// Native TLS on the main listener (PEM files), or plain HTTP when `None`.
    pub tls: Option<crate::tls::TlsFiles>,
    /// How long in-flight requests may take to finish after a shutdown signal (s).
    pub shutdown_timeout: u64,
}

/// The id of the built-in public client used by the tutorial flow.
pub const DEFAULT_CLIENT_ID: &str = "tessera";

impl Config {
    /// Loads and resolves in one step.
    ///
    /// # Errors
    /// Any [`ConfigError`] of either stage.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let mut raw = RawConfig::load(sources)?;
        let origins = std::mem::take(&mut raw.origins);
        Self::resolve(raw).map_err(|mut e| {
            if e.origin.is_none() {
                e.origin = e.key.as_deref().and_then(|k| origins.of(k));
            }
            e
        })
    }

    /// Stage 2: applies defaults and checks every value.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key.
    pub fn resolve(raw: RawConfig) -> Result<Self, ConfigError> {
        let listen_text = raw.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            err(format!(
                "`listen` = `{listen_text}` is not an address like 127.0.0.1:8080"
            ))
        })?;
        let data_dir = raw
            .data_dir
            .unwrap_or_else(|| PathBuf::from("./tessera-data"));
        // An empty path is no directory: every file under it would land in the current
        // directory, or nowhere (`tessera serve` cannot create it).
        if data_dir.as_os_str().is_empty() {
            return Err(err(
                "`data_dir` is empty; point it at a directory, or leave it unset for \
                 ./tessera-data",
            ));
        }
        if data_dir.exists() && !data_dir.is_dir() {
            return Err(err(format!(
                "`data_dir` = `{}` is a file, not a directory; point it at a directory (one \
                 that does not exist yet is created by `tessera serve`), or move the file away",
                data_dir.display()
            )));
        }
        let database = match raw.database_url {
            Some(url) => {
                let u = url.expose_secret();
                if !(u.starts_with("postgres://")
                    || u.starts_with("postgresql://")
                    || u.starts_with("sqlite:"))
                {
                    return Err(err(
                        "`database_url` must start with postgres://, postgresql:// or sqlite:",
                    ));
                }
                DatabaseConfig::Url(url)
            }
            None => DatabaseConfig::Sqlite(data_dir.join("tessera.db")),
        };
        let public_url_explicit = raw.public_url.is_some();
        let public_url = match raw.public_url {
            Some(u) => check_url("public_url", &u)?,
            None => {
                let host = if listen.ip().is_unspecified() {
                    "localhost".to_owned()
                } else {
                    listen.ip().to_string()
                };
                let host = if listen.is_ipv6() && !listen.ip().is_unspecified() {
                    format!("[{host}]")
                } else {
                    host
                };
                format!("http://{host}:{}", listen.port())
            }
        };
        let issuer = match raw.issuer {
            Some(i) => check_url("issuer", &i)?,
            None => public_url.clone(),
        };
        let audience = raw.audience.unwrap_or_else(|| issuer.clone());
        if audience.is_empty() {
            return Err(err("`audience` must not be empty"));
        }
        let profile = match raw.profile.as_deref().unwrap_or("standard") {
            "standard" => Profile::Standard,
            "tutorial" => Profile::Tutorial,
            other => {
                return Err(err(format!(
                    "`profile` = `{other}`: use `standard` or `tutorial`"
                )));
            }
        };
        let secs = |v: Option<DurationValue>, default: i64| v.map_or(default, |d| d.0);
        let access_token_ttl = secs(raw.access_token_ttl, 15 * 60);
        let refresh_token_ttl = secs(raw.refresh_token_ttl, 14 * 86_400);
        let session_max_age = secs(raw.session_max_age, 30 * 86_400);
        let refresh_grace_period = secs(raw.refresh_grace_period, 10);
        let leeway = secs(raw.leeway, 30);
        if !(30..=86_400).contains(&access_token_ttl) {
            return Err(err(
                "`access_token_ttl` must be between 30s and 24h (short-lived access tokens are the point)",
            ));
        }
        if refresh_token_ttl < 60 {
            return Err(err("`refresh_token_ttl` must be at least 60s"));
        }
        if session_max_age < refresh_token_ttl.min(access_token_ttl) || session_max_age < 60 {
            return Err(err(
                "`session_max_age` must be at least 60s and not shorter than the access token",
            ));
        }
        if !(0..=300).contains(&refresh_grace_period) {
            return Err(err("`refresh_grace_period` must be between 0 (off) and 5m"));
        }
        if leeway > 300 {
            return Err(err("`leeway` must be at most 5m"));
        }
        let registration_open = match raw.registration.as_deref().unwrap_or("closed") {
            "closed" => false,
            "open" => true,
            other => {
                return Err(err(format!(
                    "`registration` = `{other}`: use `closed` or `open`"
                )));
            }
        };
        let log_format = match raw.log_format.as_deref().unwrap_or("human") {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => {
                return Err(err(format!(
                    "`log_format` = `{other}`: use `human` or `json`"
                )));
            }
        };
        let signing = resolve_signing(raw.signing.unwrap_or_default(), profile)?;
        let keys = raw.keys.unwrap_or_default();
        let key_publish_ahead = secs(keys.publish_ahead, 300);
        // Never more than the publish delay (a verifier must see a key before it signs):
        // resolved here so that check-config shows the `max-age` actually sent.
        let jwks_max_age = secs(keys.jwks_max_age, 300).min(key_publish_ahead);
        let key_rotate_every = secs(keys.rotate_every, 30 * 86_400);
        if key_rotate_every != 0
            && (key_rotate_every < 3600 || key_rotate_every < 2 * key_publish_ahead)
        {
            return Err(err(
                "`keys.rotate_every` must be 0 (off) or at least 1h and twice `keys.publish_ahead`",
            ));
        }
        let limits = raw.limits.unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        let num = |v: Option<NumberValue>, default: u64| v.map_or(default, |n| n.0);
        let max_body_bytes =
            usize::try_from(num(limits.max_body_bytes, 16 * 1024)).unwrap_or(usize::MAX);
        if !(1024..=1024 * 1024).contains(&max_body_bytes) {
            return Err(err(
                "`limits.max_body_bytes` must be between 1024 and 1048576",
            ));
        }
        let max_concurrent_hashes =
            usize::try_from(num(limits.max_concurrent_hashes, cores as u64)).unwrap_or(cores);
        if !(1..=256).contains(&max_concurrent_hashes) {
            return Err(err(
                "`limits.max_concurrent_hashes` must be between 1 and 256",
            ));
        }
        let max_queued_logins =
            usize::try_from(num(limits.max_queued_logins, 1024)).unwrap_or(1024);
        let password_hash_nice = u8::try_from(num(limits.password_hash_nice, 10))
            .ok()
            .filter(|n| *n <= 19)
            .ok_or_else(|| err("`limits.password_hash_nice` must be between 0 and 19"))?;
        let request_timeout = u64::try_from(secs(limits.request_timeout, 30)).unwrap_or(30);
        if request_timeout == 0 {
            return Err(err("`limits.request_timeout` must be at least 1s"));
        }
        let idle_timeout = u64::try_from(secs(limits.idle_timeout, 60)).unwrap_or(60);
        if !(1..=3600).contains(&idle_timeout) {
            return Err(err("`limits.idle_timeout` must be between 1s and 1h"));
        }
        let token_cache_entries =
            usize::try_from(num(limits.token_cache_entries, 16_384)).unwrap_or(usize::MAX);
        if token_cache_entries > 1 << 24 {
            return Err(err(
                "`limits.token_cache_entries` must be between 0 and 16777216",
            ));
        }
        // Out of range for the type is out of range for the check, never the default.
        let db_max_connections =
            u32::try_from(num(raw.database.unwrap_or_default().max_connections, 10))
                .unwrap_or(u32::MAX);
        if !(1..=10_000).contains(&db_max_connections) {
            return Err(err(
                "`database.max_connections` must be between 1 and 10000",
            ));
        }
        // Only the length here: the full policy (common passwords, zxcvbn strength) runs
        // when the password is used, on an empty database (`Auth::bootstrap_admin`). Running
        // it on every start left zxcvbn's dictionaries resident for nothing: +8 MiB of idle
        // RSS (27.4 → 18.9 MiB measured) once the admin exists.
        if let Some(p) = &raw.bootstrap_admin_password {
            let policy = PasswordPolicy::default();
            let len = p.expose_secret().chars().count();
            if len < policy.min_length || len > policy.max_length {
                return Err(err(format!(
                    "`bootstrap_admin_password`: use {} to {} characters (it has {len})",
                    policy.min_length, policy.max_length
                )));
            }
        }
        if let Some(mk) = &raw.master_key {
            decode_master_key(mk.expose_secret()).map_err(|e| err(format!("`master_key`: {e}")))?;
        }
        let trusted_proxies = usize::try_from(num(raw.trusted_proxies, 0)).unwrap_or(0);
        if trusted_proxies > 8 {
            return Err(err(
                "`trusted_proxies` is the number of reverse proxies in front of the server (0-8)",
            ));
        }
        let rl = raw.rate_limits.unwrap_or_default();
        let per_minute =
            |v: Option<NumberValue>, default: u64, key: &str| -> Result<u32, ConfigError> {
                u32::try_from(num(v, default))
                    .ok()
                    .filter(|n| *n <= 100_000)
                    .ok_or_else(|| {
                        err(format!(
                            "`rate_limits.{key}` must be between 0 (no limit) and 100000"
                        ))
                    })
            };
        let rate_token_per_minute = per_minute(rl.token_per_minute, 120, "token_per_minute")?;
        let rate_mfa_per_minute = per_minute(rl.mfa_per_minute, 20, "mfa_per_minute")?;
        let rate_registration_per_minute =
            per_minute(rl.registration_per_minute, 10, "registration_per_minute")?;
        let pw = raw.password.unwrap_or_default();
        let password_policy = PasswordPolicy {
            min_length: usize::try_from(num(pw.min_length, 12)).unwrap_or(12),
            min_strength: u8::try_from(num(pw.min_strength, 3)).unwrap_or(u8::MAX),
            ..PasswordPolicy::default()
        };
        if !(8..=128).contains(&password_policy.min_length) {
            return Err(err(
                "`password.min_length` must be between 8 and 128 (NIST SP 800-63B asks for at least 8)",
            ));
        }
        if password_policy.min_strength > 4 {
            return Err(err("`password.min_strength` is a zxcvbn score from 0 to 4"));
        }
        let lo = raw.lockout.unwrap_or_default();
        let security = tessera_auth::security::SecurityPolicy {
            lockout_threshold: i64::try_from(num(lo.threshold, 5)).unwrap_or(i64::MAX),
            lockout_base: secs(lo.base, 60),
            lockout_max: secs(lo.max, 3600),
            ..tessera_auth::security::SecurityPolicy::default()
        };
        if !(1..=100).contains(&security.lockout_threshold)
            || security.lockout_base < 1
            || security.lockout_max < security.lockout_base
            || security.lockout_max > 86_400
        {
            return Err(err(
                "`lockout`: threshold 1-100, base at least 1s, max between base and 24h (a lockout must end)",
            ));
        }
        let default_scopes = raw
            .default_scopes
            .map_or_else(|| vec!["profile".to_owned()], |l| l.0);
        for s in &default_scopes {
            if s.is_empty()
                || !s
                    .bytes()
                    .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
            {
                return Err(err(format!(
                    "`default_scopes`: `{s}` is not a valid scope token (RFC 6749 §3.3)"
                )));
            }
        }
        let cors_allowed_origins = raw
            .cors
            .unwrap_or_default()
            .allowed_origins
            .map_or_else(Vec::new, |l| l.0);
        for o in &cors_allowed_origins {
            check_origin(o)?;
        }
        let m = raw.metrics.unwrap_or_default();
        let metrics_listen = match m.listen.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
                err(format!(
                    "`metrics.listen` = `{text}` is not an address like 127.0.0.1:9090"
                ))
            })?),
        };
        // Not public by default: metrics are served only when asked for, either on the main
        // listener (`metrics.enabled = true`) or on a separate, typically private, address.
        let metrics_enabled = match m.enabled {
            Some(BoolValue(false)) if metrics_listen.is_some() => {
                return Err(err(
                    "`metrics.listen` is set but `metrics.enabled` is false; remove one",
                ));
            }
            Some(BoolValue(b)) => b,
            None => metrics_listen.is_some(),
        };
        if metrics_listen.is_some_and(|a| a == listen && listen.port() != 0) {
            return Err(err(
                "`metrics.listen` must differ from `listen` (leave it unset to serve /metrics on the main listener)",
            ));
        }
        let t = raw.tls.unwrap_or_default();
        let tls = match (t.cert, t.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let files = crate::tls::TlsFiles { cert, key };
                crate::tls::load(&files).map_err(|e| err(e.0))?;
                Some(files)
            }
            (Some(_), None) => {
                return Err(err(
                    "`tls.cert` is set but `tls.key` is not; set both (TESSERA_TLS__CERT, TESSERA_TLS__KEY) or neither",
                ));
            }
            (None, Some(_)) => {
                return Err(err(
                    "`tls.key` is set but `tls.cert` is not; set both (TESSERA_TLS__CERT, TESSERA_TLS__KEY) or neither",
                ));
            }
        };
        // With native TLS the derived public URL (and the issuer and audience following it)
        // is https.
        let (public_url, issuer, audience) = if tls.is_some() && !public_url_explicit {
            let https = |u: &str| {
                u.strip_prefix("http://")
                    .map_or_else(|| u.to_owned(), |rest| format!("https://{rest}"))
            };
            let issuer = if issuer == public_url {
                https(&issuer)
            } else {
                issuer
            };
            let audience = if audience == public_url {
                https(&audience)
            } else {
                audience
            };
            (https(&public_url), issuer, audience)
        } else {
            (public_url, issuer, audience)
        };
        let shutdown_timeout = u64::try_from(secs(raw.shutdown_timeout, 30)).unwrap_or(30);
        if shutdown_timeout > 3600 {
            return Err(err("`shutdown_timeout` must be at most 1h"));
        }
        Ok(Self {
            metrics_enabled,
            metrics_listen,
            tls,
            shutdown_timeout,
            listen,
            data_dir,
            database,
            public_url,
            public_url_explicit,
            issuer,
            audience,
            profile,
            access_token_ttl,
            refresh_token_ttl,
            session_max_age,
            refresh_grace_period,
            leeway: u64::try_from(leeway).unwrap_or(30),
            registration_open,
            bootstrap_admin_password: raw.bootstrap_admin_password,
            master_key: raw.master_key,
            log_format,
            signing,
            key_publish_ahead,
            jwks_max_age,
            key_rotate_every,
            default_scopes,
            max_body_bytes,
            max_concurrent_hashes,
            max_queued_logins,
            password_hash_nice,
            request_timeout,
            idle_timeout,
            token_cache_entries,
            db_max_connections,
            hash_params: HashParams::OWASP,
            password_policy,
            security,
            trusted_proxies,
            rate_token_per_minute,
            rate_mfa_per_minute,
            rate_registration_per_minute,
            cors_allowed_origins,
        })
    }

    /// A configuration for tests: everything in `data_dir`, port 0, cheap password
    /// hashing, zero key publish delay. Mutate fields afterwards as needed.
    ///
    /// # Panics
    /// Never: the built-in defaults always resolve.
    #[must_use]
    #[allow(
        clippy::expect_used,
        reason = "Invariant: the empty configuration always resolves"
    )]
    pub fn for_tests(data_dir: &Path) -> Self {
        let mut c = Self::resolve(RawConfig::default()).expect("defaults resolve");
        c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c.data_dir = data_dir.to_owned();
        c.database = DatabaseConfig::Sqlite(data_dir.join("tessera.db"));
        c.hash_params = HashParams::INSECURE_FOR_TESTS;
        c.key_publish_ahead = 0;
        c.signing = SigningConfig::Stored {
            alg: Algorithm::Es256,
            rsa_bits: 2048,
        };
        c
    }

    /// Points `public_url`, `issuer` and `audience` at an address (after binding port 0).
    pub fn set_public_addr(&mut self, addr: SocketAddr) {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let url = if addr.ip().is_unspecified() {
            format!("{scheme}://localhost:{}", addr.port())
        } else {
            format!("{scheme}://{addr}")
        };
        let audience_followed = self.audience == self.issuer;
        let issuer_followed = self.issuer == self.public_url;
        self.public_url = url.clone();
        if issuer_followed {
            self.issuer = url;
        }
        if audience_followed {
            self.audience = self.issuer.clone();
        }
    }

    /// The resolved configuration with secrets redacted, for `tessera check-config`.
    #[must_use]
    pub fn describe(&self) -> BTreeMap<&'static str, serde_json::Value> {
        use serde_json::json;
        let redacted = |s: &Option<SecretString>| {
            if s.is_some() {
                json!("<redacted>")
            } else {
                json!(null)
            }
        };
        let mut m = BTreeMap::new();
        m.insert("listen", json!(self.listen.to_string()));
        m.insert("data_dir", json!(self.data_dir.display().to_string()));
        // Keyed by the configuration paths (`database_url`, `database.max_connections`).
        m.insert(
            "database_url",
            match &self.database {
                DatabaseConfig::Sqlite(p) => {
                    json!(format!("unset: the SQLite file {}", p.display()))
                }
                DatabaseConfig::Url(u) => json!(redact_url(u.expose_secret())),
            },
        );
        m.insert("public_url", json!(self.public_url));
        m.insert("issuer", json!(self.issuer));
        m.insert("audience", json!(self.audience));
        m.insert(
            "profile",
            json!(match self.profile {
                Profile::Standard => "standard",
                Profile::Tutorial => "tutorial",
            }),
        );
        m.insert("access_token_ttl", json!(self.access_token_ttl));
        m.insert("refresh_token_ttl", json!(self.refresh_token_ttl));
        m.insert("session_max_age", json!(self.session_max_age));
        m.insert("refresh_grace_period", json!(self.refresh_grace_period));
        m.insert("leeway", json!(self.leeway));
        m.insert(
            "registration",
            json!(if self.registration_open {
                "open"
            } else {
                "closed"
            }),
        );
        m.insert(
            "bootstrap_admin_password",
            redacted(&self.bootstrap_admin_password),
        );
        m.insert(
            "master_key",
            if self.master_key.is_some() {
                json!("<redacted>")
            } else {
                json!(format!(
                    "generated file {}",
                    self.master_key_path().display()
                ))
            },
        );
        m.insert(
            "log_format",
            json!(match self.log_format {
                LogFormat::Human => "human",
                LogFormat::Json => "json",
            }),
        );
        m.insert(
            "signing",
            match &self.signing {
                SigningConfig::Hmac(k) => {
                    json!({"alg": k.algorithm().as_str(), "secret": "<redacted>"})
                }
                SigningConfig::Stored { alg, rsa_bits } => {
                    json!({"alg": alg.as_str(), "rsa_bits": rsa_bits})
                }
            },
        );
        m.insert(
            "keys",
            json!({"publish_ahead": self.key_publish_ahead, "jwks_max_age": self.jwks_max_age, "rotate_every": self.key_rotate_every}),
        );
        m.insert("default_scopes", json!(self.default_scopes));
        m.insert(
            "limits",
            json!({
                "max_body_bytes": self.max_body_bytes,
                "max_concurrent_hashes": self.max_concurrent_hashes,
                "max_queued_logins": self.max_queued_logins,
                "password_hash_nice": self.password_hash_nice,
                "request_timeout": self.request_timeout,
                "idle_timeout": self.idle_timeout,
                "token_cache_entries": self.token_cache_entries,
            }),
        );
        m.insert(
            "database",
            json!({"max_connections": self.db_max_connections}),
        );
        m.insert("trusted_proxies", json!(self.trusted_proxies));
        m.insert(
            "metrics",
            json!({
                "enabled": self.metrics_enabled,
                "listen": self.metrics_listen.map(|a| a.to_string()),
            }),
        );
        m.insert(
            "tls",
            match &self.tls {
                Some(t) => json!({"cert": t.cert.display().to_string(), "key": t.key.display().to_string()}),
                None => json!(null),
            },
        );
        m.insert("shutdown_timeout", json!(self.shutdown_timeout));
        m.insert(
            "rate_limits",
            json!({
                "token_per_minute": self.rate_token_per_minute,
                "mfa_per_minute": self.rate_mfa_per_minute,
                "registration_per_minute": self.rate_registration_per_minute,
            }),
        );
        m.insert(
            "cors",
            json!({"allowed_origins": self.cors_allowed_origins}),
        );
        m.insert(
            "password",
            json!({"min_length": self.password_policy.min_length, "min_strength": self.password_policy.min_strength}),
        );
        m.insert(
            "lockout",
            json!({"threshold": self.security.lockout_threshold, "base": self.security.lockout_base, "max": self.security.lockout_max}),
        );
        m
    }

    /// Where a generated master key is kept.
    #[must_use]
    pub fn master_key_path(&self) -> PathBuf {
        self.data_dir.join("master.key")
    }

    /// The default client policy.
    #[must_use]
    pub fn default_client(&self) -> ClientPolicy {
        ClientPolicy {
            id: DEFAULT_CLIENT_ID.into(),
            scopes: self.default_scopes.clone(),
            confidential: false,
        }
    }
}

/// A CORS origin as browsers send it in `Origin` (RFC 6454 §6.2): `http(s)://host[:port]`,
/// lowercase, no path or trailing slash. `*` is refused: credentialed CORS must name its
/// origins (Fetch standard, CORS protocol and credentials).
fn check_origin(o: &str) -> Result<(), ConfigError> {
    if o == "*" || o.contains('*') {
        return Err(err(
            "`cors.allowed_origins`: `*` is not allowed (credentials are sent); list each origin like https://app.example.com",
        ));
    }
    let rest = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"));
    let ok = rest.is_some_and(|host| {
        !host.is_empty()
            && !host.contains(['/', '?', '#', '@', ' '])
            && host == host.to_ascii_lowercase()
            && host.is_ascii()
    });
    if ok {
        Ok(())
    } else {
        Err(err(format!(
            "`cors.allowed_origins`: `{o}` is not an origin like https://app.example.com (scheme and lowercase host, optional port, no path or trailing slash)"
        )))
    }
}

fn resolve_signing(raw: RawSigning, profile: Profile) -> Result<SigningConfig, ConfigError> {
    let alg_text = raw.alg.unwrap_or_else(|| {
        if profile == Profile::Tutorial {
            "HS256".into()
        } else {
            "RS256".into()
        }
    });
    let alg: Algorithm = alg_text.parse().map_err(|_| {
        err(format!(
            "`signing.alg` = `{alg_text}` is not supported; use one of {}",
            Algorithm::ALL.map(Algorithm::as_str).join(", ")
        ))
    })?;
    if profile == Profile::Tutorial && alg != Algorithm::Hs256 {
        return Err(err(
            "`profile` = `tutorial` signs with HS256 (what the tutorial's code verifies); remove `signing.alg` or set it to HS256",
        ));
    }
    let rsa_bits = raw.rsa_bits.map_or(2048, |n| n.0);
    if ![2048, 3072, 4096].contains(&rsa_bits) {
        return Err(err("`signing.rsa_bits` must be 2048, 3072 or 4096"));
    }
    if alg.is_symmetric() {
        let secret = raw.secret.ok_or_else(|| {
            err(format!(
                "`signing.alg` = `{alg}` needs `signing.secret` (or TESSERA_SIGNING__SECRET / TESSERA_SIGNING__SECRET_FILE): a random secret of at least {} bytes",
                alg.min_hmac_key_len().unwrap_or(32)
            ))
        })?;
        let bytes = Zeroizing::new(secret.expose_secret().as_bytes().to_vec());
        let key = SigningKey::from_hmac_secret(alg, &bytes).map_err(|e| {
            err(format!(
                "`signing.secret`: {e}; generate one with `openssl rand -base64 48`"
            ))
        })?;
        let kid = key
            .verifying_key()
            .thumbprint()
            .map_err(|e| err(e.to_string()))?;
        Ok(SigningConfig::Hmac(key.with_kid(kid)))
    } else {
        if raw.secret.is_some() {
            return Err(err(format!(
                "`signing.secret` is only used with HS256/384/512, but `signing.alg` is `{alg}`; remove it"
            )));
        }
        Ok(SigningConfig::Stored {
            alg,
            rsa_bits: usize::try_from(rsa_bits).unwrap_or(2048),
        })
    }
}

fn check_url(key: &str, u: &str) -> Result<String, ConfigError> {
    let trimmed = u.trim_end_matches('/');
    let ok = (trimmed.starts_with("http://") || trimmed.starts_with("https://"))
        && trimmed.len() > "https://".len()
        && !trimmed.contains(char::is_whitespace)
        && !trimmed.contains(['?', '#']);
    if ok {
        Ok(trimmed.to_owned())
    } else {
        Err(err(format!(
            "`{key}` = `{u}` must be an http(s) URL without query or fragment"
        )))
    }
}

/// Decodes a master key given as base64 (standard or URL-safe, padded or not) or 64 hex
/// digits.
///
/// # Errors
/// A message saying what form is expected.
pub fn decode_master_key(text: &str) -> Result<Zeroizing<[u8; 32]>, String> {
    let t = text.trim();
    let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| {
                t.get(2 * i..2 * i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
    } else {
        let normalized: String = t
            .trim_end_matches('=')
            .chars()
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                c => c,
            })
            .collect();
        tessera_jose::base64url::decode(normalized)
    };
    let bytes = Zeroizing::new(bytes.ok_or(
        "must be 32 bytes as base64 or 64 hex digits (generate with `openssl rand -base64 32`)",
    )?);
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("must be exactly 32 bytes, got {}", bytes.len()))?;
    Ok(Zeroizing::new(arr))
}

/// Query parameters whose value is a secret (compared case-insensitively, after
/// percent-decoding the name): the password itself, the client key's passphrase, and the
/// client key (a path, or key material where a driver takes it inline).
const SECRET_QUERY_PARAMS: &[&str] = &["password", "sslpassword", "sslkey"];

/// A database URL with its secrets blanked: the password in the authority and the values
/// of the query parameters in [`SECRET_QUERY_PARAMS`]. Everything else is kept byte for
/// byte, as written (no re-encoding: `%20` stays `%20`, `options[password_encryption]`
/// stays), so what check-config shows is what the server opens. The authority is split
/// where sqlx's URL parser (the `url` crate) splits it: at the last `@` before the first
/// `/`, `?` or `#`, and the password at the first `:` of the user info, so a password
/// containing `@` is hidden whole. A URL that does not parse, or has an `@` after its
/// authority (a password with an unencoded `/`, `?` or `#`), is withheld whole.
fn redact_url(u: &str) -> String {
    // sqlx reads a `sqlite:` URL as a path, not with a URL parser, and it holds no secret:
    // shown as given, it names the file the server opens.
    if u.starts_with("sqlite:") {
        return u.to_owned();
    }
    if url::Url::parse(u).is_err() {
        return "<redacted: not a valid URL>".into();
    }
    let Some(scheme_end) = u.find("://").map(|i| i + 3) else {
        return "<redacted: not a valid URL>".into();
    };
    let (head, rest) = u.split_at(scheme_end);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // An `@` after the authority: most likely a password with a `/`, `?` or `#` not
    // percent-encoded (`postgres://app:2024/pw@db/x`, which parses as host `app`, port
    // 2024), so the secret sits in what would be shown as the path, query or fragment.
    // Withheld whole; the hint says how to write it (RFC 3986 §3.2.1, §2.1).
    if tail.contains('@') {
        return "<redacted: `@` after the host; percent-encode `/`, `?`, `#` and `@` in the \
                user name and password (%2F, %3F, %23, %40)>"
            .into();
    }
    let mut out = String::with_capacity(u.len());
    out.push_str(head);
    match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push_str(":<redacted>");
                }
                None => out.push_str(userinfo),
            }
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    // RFC 3986 §3.4: the query runs from the first `?` to the first `#`.
    let (path, query_and_fragment) = tail.split_at(tail.find('?').unwrap_or(tail.len()));
    out.push_str(path);
    let Some(query_and_fragment) = query_and_fragment.strip_prefix('?') else {
        return out;
    };
    let (query, fragment) = query_and_fragment.split_at(
        query_and_fragment
            .find('#')
            .unwrap_or(query_and_fragment.len()),
    );
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (name, value) = pair
            .split_once('=')
            .map_or((pair, None), |(n, v)| (n, Some(v)));
        let decoded: String = url::form_urlencoded::parse(name.as_bytes())
            .next()
            .map(|(n, _)| n.into_owned())
            .unwrap_or_default();
        out.push_str(name);
        if let Some(value) = value {
            out.push('=');
            if SECRET_QUERY_PARAMS
                .iter()
                .any(|s| s.eq_ignore_ascii_case(&decoded))
            {
                out.push_str("redacted");
            } else {
                out.push_str(value);
            }
        }
    }
    out.push_str(fragment);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir =
            std::env::temp_dir().join(format!("tessera-config-test-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, toml).unwrap();
        let r = Config::load(&Sources {
            file: Some(file),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            overrides: vec![],
        });
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    #[test]
    fn a_value_given_for_a_section_is_not_echoed_in_the_error() {
        let url = "postgres://bob:S3cret-pw@db.internal/tessera";
        let e = load("", &[("TESSERA_DATABASE", url)])
            .unwrap_err()
            .to_string();
        assert!(!e.contains("S3cret-pw"), "{e}");
        assert!(e.contains("`database`"), "{e}");
        assert!(e.contains("TESSERA_DATABASE__<KEY>"), "{e}");
        assert!(e.contains("environment variable TESSERA_DATABASE"), "{e}");
        let e = load(&format!("lockout = \"{url}\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(!e.contains("S3cret-pw"), "{e}");
        // A string where a list or a number is expected: the type, not the value.
        let e = load("", &[("TESSERA_SIGNING", "hunter2-secret")])
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn defaults_resolve() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.issuer, "http://127.0.0.1:8080");
        assert_eq!(c.access_token_ttl, 900);
        assert_eq!(c.signing.algorithm(), Algorithm::Rs256);
        assert!(!c.registration_open);
    }

    #[test]
    fn password_hash_nice_defaults_to_10_and_is_bounded() {
        assert_eq!(load("", &[]).unwrap().password_hash_nice, 10);
        let c = load(
            "[limits]\npassword_hash_nice = 3\n",
            &[("TESSERA_LIMITS__PASSWORD_HASH_NICE", "0")],
        )
        .unwrap();
        assert_eq!(c.password_hash_nice, 0);
        for bad in ["20", "-1"] {
            let e = load("", &[("TESSERA_LIMITS__PASSWORD_HASH_NICE", bad)]).unwrap_err();
            assert!(e.to_string().contains("password_hash_nice"), "{bad}: {e}");
        }
    }

    #[test]
    fn idle_timeout_defaults_to_a_minute_and_is_bounded() {
        assert_eq!(load("", &[]).unwrap().idle_timeout, 60);
        let c = load(
            "[limits]\nidle_timeout = \"2m\"\n",
            &[("TESSERA_LIMITS__IDLE_TIMEOUT", "15s")],
        )
        .unwrap();
        assert_eq!(c.idle_timeout, 15);
        for bad in ["0", "2h", "-1"] {
            let e = load("", &[("TESSERA_LIMITS__IDLE_TIMEOUT", bad)]).unwrap_err();
            assert!(e.to_string().contains("idle_timeout"), "{bad}: {e}");
        }
    }

    #[test]
    fn env_overrides_file_with_nesting() {
        let c = load(
            "access_token_ttl = \"5m\"\n[signing]\nalg = \"ES256\"\n",
            &[
                ("TESSERA_SIGNING__ALG", "EdDSA"),
                ("TESSERA_ACCESS_TOKEN_TTL", "600"),
            ],
        )
        .unwrap();
        assert_eq!(c.signing.algorithm(), Algorithm::EdDsa);
        assert_eq!(c.access_token_ttl, 600);
    }

    #[test]
    fn bootstrap_password_length_is_checked_at_load_strength_at_use() {
        let e = load("", &[("TESSERA_BOOTSTRAP_ADMIN_PASSWORD", "short")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bootstrap_admin_password") && e.contains("12"),
            "{e}"
        );
        // Long enough but weak: refused when the first admin is created, not on every start.
        assert!(
            load(
                "",
                &[("TESSERA_BOOTSTRAP_ADMIN_PASSWORD", "aaaaaaaaaaaaaaaa")]
            )
            .is_ok()
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = load("[signing]\nalgo = \"RS256\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("signing.algo"), "{e}");
        let e = load("", &[("TESSERA_NOPE", "1")]).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("TESSERA_NOPE"), "{e}");
    }

    #[test]
    fn cors_origins_are_checked_and_never_a_wildcard() {
        let c = load(
            "[cors]\nallowed_origins = [\"https://app.example.com\", \"http://localhost:3000\"]\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.cors_allowed_origins,
            ["https://app.example.com", "http://localhost:3000"]
        );
        let c = load(
            "",
            &[("TESSERA_CORS__ALLOWED_ORIGINS", "https://a.example")],
        )
        .unwrap();
        assert_eq!(c.cors_allowed_origins, ["https://a.example"]);
        for bad in [
            "*",
            "https://*.example.com",
            "https://a.example/",
            "a.example",
            "https://A.example",
        ] {
            let e = load(&format!("[cors]\nallowed_origins = [\"{bad}\"]\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains("cors.allowed_origins"), "{bad}: {e}");
        }
        let e = load("[cors]\norigins = []\n", &[]).unwrap_err().to_string();
        assert!(e.contains("cors.origins"), "{e}");
    }

    #[test]
    fn test_variables_are_not_configuration() {
        assert!(load("", &[("TESSERA_TEST_DATABASE_URL", "postgres://x")]).is_ok());
        // CI exports these for the whole run, including the servers its scripts start.
        assert!(load("", &[("TESSERA_REQUIRE_POSTGRES", "1")]).is_ok());
        assert!(load("", &[("TESSERA_REQUIRE_PYTHON", "1")]).is_ok());
    }

    #[test]
    fn hmac_mode_needs_a_long_secret() {
        let e = load("[signing]\nalg = \"HS256\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("signing.secret"), "{e}");
        let e = load(
            "[signing]\nalg = \"HS256\"\nsecret = \"your-very-secret-key\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("signing.secret") && e.contains("32 bytes"),
            "{e}"
        );
        assert!(
            load(
                "[signing]\nalg = \"HS256\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
                &[]
            )
            .is_ok()
        );
        let e = load(
            "[signing]\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("only used with HS"), "{e}");
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = std::env::temp_dir().join(format!("tessera-secret-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("s");
        std::fs::write(&f, "0123456789abcdef0123456789abcdef\n").unwrap();
        let c = load(
            "profile = \"tutorial\"",
            &[("TESSERA_SIGNING__SECRET_FILE", f.to_str().unwrap())],
        )
        .unwrap();
        assert!(matches!(c.signing, SigningConfig::Hmac(_)));
        assert_eq!(c.profile, Profile::Tutorial);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn durations_and_ranges() {
        assert_eq!(parse_duration("15m").unwrap(), 900);
        assert_eq!(parse_duration("2w").unwrap(), 1_209_600);
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5y").is_err());
        let e = load("access_token_ttl = \"1s\"", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("access_token_ttl"), "{e}");
        let e = load("access_token_ttl = true", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("access_token_ttl"), "{e}");
    }

    #[test]
    fn master_keys_decode_in_common_forms() {
        assert!(decode_master_key(&"ab".repeat(32)).is_ok());
        assert!(decode_master_key("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").is_ok());
        assert!(decode_master_key("short").is_err());
    }

    #[test]
    fn urls_in_descriptions_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:<redacted>@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        // An `@` in the password: sqlx's parser (the same `url` crate) splits at the last.
        assert_eq!(
            redact_url("postgres://tessera:Bad@Pass-222@127.0.0.1:5432/tess"),
            "postgres://tessera:<redacted>@127.0.0.1:5432/tess"
        );
        // Passwords given as query parameters.
        assert_eq!(
            redact_url("postgres://u@h/db?password=QpPass-999&sslmode=require&sslpassword=x"),
            "postgres://u@h/db?password=redacted&sslmode=require&sslpassword=redacted"
        );
        assert_eq!(
            redact_url("not a url secret"),
            "<redacted: not a valid URL>"
        );
        assert_eq!(
            redact_url("postgres://:pw@h/db"),
            "postgres://:<redacted>@h/db"
        );
        // Only the secrets change: the rest is shown byte for byte, as written (it used to
        // be re-encoded: `%20` became `+`, and `options[password_encryption]`, a name
        // containing "password", was blanked).
        assert_eq!(
            redact_url(
                "postgres://app%20user:p%40ss@db.example:5432/my%20db?application_name=a%20b\
                 &options[password_encryption]=scram-sha-256&sslmode=require&SSLKey=/k.pem\
                 &sslpassword=x%20y#frag"
            ),
            "postgres://app%20user:<redacted>@db.example:5432/my%20db?application_name=a%20b\
             &options[password_encryption]=scram-sha-256&sslmode=require&SSLKey=redacted\
             &sslpassword=redacted#frag"
        );
        assert_eq!(
            redact_url("postgres://h/db?pass%77ord=hidden&flag&x=1"),
            "postgres://h/db?pass%77ord=redacted&flag&x=1"
        );
        // A `/`, `?` or `#` left unencoded in the password ends the authority early (`url`
        // and sqlx read `app:2024/...` as host and port): everything after it used to be
        // shown, the rest of the password with it. Withheld whole, with how to fix it.
        for u in [
            "postgres://app:2024/s3cretpw@db.internal/tessera",
            "postgres://app:12#s3cretpw@db.internal/tessera",
            "postgres://app:12?s3cretpw@db.internal/tessera",
            "postgres://app:p@ss/s3cretpw@db.internal/tessera",
        ] {
            let shown = redact_url(u);
            assert!(!shown.contains("s3cret"), "{u}: {shown}");
            assert!(shown.contains("percent-encode"), "{u}: {shown}");
        }
        // sqlx opens `sqlite:` URLs as paths: shown exactly as given.
        assert_eq!(
            redact_url("sqlite://data/../t.db?mode=rwc"),
            "sqlite://data/../t.db?mode=rwc"
        );
    }
}
