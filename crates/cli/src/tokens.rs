//! Offline token tools: `tessera token verify|decode|encode` and `tessera keys generate`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::exit::Failure;

mod decode;
mod encode;
mod generate;
mod input;
mod jwks_url;
mod time;
mod verify;

/// `tessera token ...`
#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Verify a token's signature and (unless --jws) its JWT claims
    ///
    /// The algorithm comes from the key (a JWK's `alg` or curve) or --alg, never from the
    /// token. With several keys (several --key, a JWKS, --jwks-url) the token's `kid`
    /// chooses one. Without --jws the JWT rules apply: `exp` is required, `nbf` and `iat` are
    /// checked, and --iss, --aud and --typ when given.
    ///
    /// Exit 0: the verified header and claims as JSON on stdout. Exit 1: the token is
    /// refused; one line on stderr says why (--explain prints every step). Exit 2: the keys
    /// or flags cannot work.
    Verify(VerifyArgs),
    /// Show a token's header and claims WITHOUT verifying anything
    ///
    /// The output is labelled UNVERIFIED on stderr and with `"verified": false` in the JSON;
    /// `exp`, `nbf`, `iat` and `auth_time` are also shown as RFC 3339 dates. Tokens that
    /// `verify` refuses (`alg: none`, unknown algorithms) are shown too; a member named
    /// twice in the header or claims is pointed out on stderr (the JSON shows its last value).
    Decode(DecodeArgs),
    /// Create and sign a token
    ///
    /// Prints the token on stdout. `iat` is set to now unless --no-iat. There is no default
    /// `exp`: without --exp the token never expires, a warning says so on stderr, and
    /// `tessera token verify` (like every Tessera verifier) refuses it. Registered claims
    /// (iss, sub, aud, exp, nbf, iat, jti) are set only with their own flags, never through
    /// --claim or --json. The key must fit --alg.
    Encode(EncodeArgs),
}

/// `tessera token verify`
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// Verification key: a JWK, a JWKS or a PEM file (public or private); repeatable
    #[arg(long = "key", value_name = "FILE")]
    pub(crate) keys: Vec<PathBuf>,
    /// HMAC secret: `string`, `@file` or `b64:...`
    #[arg(long, value_name = "SPEC", allow_hyphen_values = true)]
    pub(crate) secret: Option<String>,
    /// Fetch the verification keys from a JWKS URL (public keys only: a shared secret or
    /// a private key published there is never used; entries that are not JWKs are skipped
    /// with a warning naming their index)
    #[arg(long, value_name = "URL")]
    pub(crate) jwks_url: Option<String>,
    /// Algorithm for PEM keys, secrets and JWKs without `alg` (JWKs otherwise carry their
    /// own, EC/OKP keys take it from the curve; a JWK file bound to another algorithm is
    /// refused, keys of a JWKS bound to another are kept); the token's `alg` must equal it
    #[arg(long, value_name = "ALG")]
    pub(crate) alg: Option<String>,
    /// Required issuer
    #[arg(long, value_name = "ISS", allow_hyphen_values = true)]
    pub(crate) iss: Option<String>,
    /// Accepted audience (repeatable; one must match)
    #[arg(long, value_name = "AUD", allow_hyphen_values = true)]
    pub(crate) aud: Vec<String>,
    /// Required `typ` header (e.g. at+jwt)
    #[arg(long, value_name = "TYP")]
    pub(crate) typ: Option<String>,
    /// Clock skew allowance in seconds
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub(crate) leeway: u64,
    /// Validate as of this Unix time instead of now
    #[arg(long, value_name = "UNIX", allow_hyphen_values = true)]
    pub(crate) now: Option<i64>,
    /// Check the JWS signature only (RFC 7515); print the payload as-is (no JWT claim
    /// rules, so --iss, --aud, --typ and --now cannot be combined with it)
    #[arg(long, conflicts_with_all = ["iss", "aud", "typ", "now"])]
    pub(crate) jws: bool,
    /// Print each verification step to stderr
    #[arg(long)]
    pub(crate) explain: bool,
    /// The token, or `-` to read it from stdin
    #[arg(allow_hyphen_values = true)]
    pub(crate) token: String,
}

/// `tessera token decode`
#[derive(Debug, Args)]
pub(crate) struct DecodeArgs {
    /// The token, or `-` to read it from stdin
    #[arg(allow_hyphen_values = true)]
    pub(crate) token: String,
}

/// `tessera token encode` (its help text is on [`TokenCommand::Encode`]).
#[derive(Debug, Args)]
pub(crate) struct EncodeArgs {
    /// Signing algorithm
    #[arg(long, value_name = "ALG")]
    pub(crate) alg: String,
    /// Signing key file: a private JWK (or a JWKS, choosing the key with --kid) or a
    /// private PEM
    #[arg(long, value_name = "FILE", conflicts_with = "secret")]
    pub(crate) key: Option<PathBuf>,
    /// HMAC secret: `string`, `@file` or `b64:...`
    #[arg(long, value_name = "SPEC", allow_hyphen_values = true)]
    pub(crate) secret: Option<String>,
    /// Key id for the header [default: the JWK's kid, or the RFC 7638 thumbprint for PEM
    /// keys; none for --secret]
    #[arg(long, value_name = "KID", allow_hyphen_values = true)]
    pub(crate) kid: Option<String>,
    /// Expiry: a duration from now (`+30m`, `30m`, `1h`, `2d`, `1h30m`; `-5m` for the past)
    /// or a Unix time [default: none, so the token never expires (a warning is printed)]
    #[arg(long, value_name = "DURATION|UNIX", allow_hyphen_values = true)]
    pub(crate) exp: Option<String>,
    /// Not before: a duration from now or a Unix time
    #[arg(long, value_name = "DURATION|UNIX", allow_hyphen_values = true)]
    pub(crate) nbf: Option<String>,
    /// Issued at: a duration from now or a Unix time [default: now]
    #[arg(long, value_name = "DURATION|UNIX", allow_hyphen_values = true)]
    pub(crate) iat: Option<String>,
    /// Issuer
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) iss: Option<String>,
    /// Subject
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) sub: Option<String>,
    /// Audience (repeatable)
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) aud: Vec<String>,
    /// JWT id
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) jti: Option<String>,
    /// `typ` header, e.g. `JWT` or `at+jwt` [default: none]
    #[arg(long)]
    pub(crate) typ: Option<String>,
    /// Extra claim `KEY=VALUE` (VALUE parsed as JSON when it is valid JSON); repeatable
    #[arg(long = "claim", value_name = "KEY=VALUE", allow_hyphen_values = true)]
    pub(crate) claims: Vec<String>,
    /// Extra claims as one JSON object
    #[arg(long, value_name = "JSON")]
    pub(crate) json: Option<String>,
    /// Do not set `iat`
    #[arg(long, conflicts_with = "iat")]
    pub(crate) no_iat: bool,
    /// Use this Unix time as "now" (for `iat` and relative times) instead of the clock
    #[arg(long, value_name = "UNIX", allow_hyphen_values = true)]
    pub(crate) now: Option<i64>,
}

/// `tessera keys generate`.
#[derive(Debug, Args)]
#[command(
    after_help = "Writes a new private key (a JWK with `alg`, `use: sig` and `kid`, or PKCS#8 \
                  PEM) to stdout or --out, and its RFC 7638 thumbprint to stderr (`kid: ...`). \
                  RSA keys are 2048 bits; HMAC secrets are as long as the hash output."
)]
pub(crate) struct GenerateArgs {
    /// Algorithm: HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256,
    /// ES384, ES512 or EdDSA
    #[arg(long, value_name = "ALG")]
    pub(crate) alg: String,
    /// Output format
    #[arg(long, value_enum, default_value_t = KeyFormat::Jwk)]
    pub(crate) format: KeyFormat,
    /// Write the key to this new file (mode 0600; an existing file is never overwritten)
    /// instead of stdout
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
}

/// Key file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum KeyFormat {
    /// JSON Web Key
    Jwk,
    /// PKCS#8 PEM (asymmetric keys only)
    Pem,
}

/// Runs a token command.
pub(crate) async fn run(cmd: &TokenCommand) -> Result<(), Failure> {
    match cmd {
        TokenCommand::Verify(args) => verify::run(args).await,
        TokenCommand::Decode(args) => decode::run(args),
        TokenCommand::Encode(args) => encode::run(args),
    }
}

/// `tessera keys generate`.
pub(crate) fn generate_key(args: &GenerateArgs) -> Result<(), Failure> {
    generate::run(args)
}
