//! Shared helpers: running the binary, temp directories, key files, test data. No tests.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use assert_cmd::Command;
use assert_cmd::cargo::cargo_bin_cmd;
use serde_json::Value;
use tempfile::TempDir;
use tessera_jose::base64url;

/// The fixed "current time" of the tests (2023-11-14T22:13:20Z), passed as `--now`.
pub(crate) const NOW: i64 = 1_700_000_000;
/// `NOW` as the tests pass it.
pub(crate) const NOW_ARG: &str = "1700000000";

/// Every algorithm name, in registry order.
pub(crate) const ALGS: [&str; 13] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "ES512", "EdDSA",
];

/// The `tessera` binary, isolated from the caller's configuration.
pub(crate) fn tessera() -> Command {
    let mut cmd = cargo_bin_cmd!("tessera");
    cmd.env_remove("TESSERA_CONFIG")
        .env_remove("TESSERA_DATA_DIR")
        .timeout(Duration::from_secs(60));
    cmd
}

/// What one run of the binary did.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn stdout_text(&self) -> String {
        String::from_utf8(self.stdout.clone()).unwrap()
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout_text()))
    }

    /// Asserts exit 0 and returns self.
    #[track_caller]
    pub(crate) fn success(self) -> Self {
        assert_eq!(self.code, 0, "expected success; stderr:\n{}", self.stderr);
        self
    }

    /// Asserts the exit code, exactly one stderr line, and that it contains `needle`.
    #[track_caller]
    pub(crate) fn fails(self, code: i32, needle: &str) -> Self {
        assert_eq!(
            self.code,
            code,
            "expected exit {code}; stderr:\n{}\nstdout:\n{}",
            self.stderr,
            self.stdout_text()
        );
        assert_eq!(
            self.stderr.lines().count(),
            1,
            "expected one line on stderr:\n{}",
            self.stderr
        );
        assert!(
            self.stderr.starts_with("error: ") && self.stderr.contains(needle),
            "stderr lacks `{needle}`:\n{}",
            self.stderr
        );
        assert!(self.stdout.is_empty(), "stdout: {}", self.stdout_text());
        self
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: o.stdout,
            stderr: String::from_utf8(o.stderr).unwrap(),
        }
    }
}

/// Runs `tessera ARGS`.
pub(crate) fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    tessera().args(args).output().unwrap().into()
}

/// Runs `tessera ARGS` with `stdin` piped in.
pub(crate) fn run_stdin<S: AsRef<std::ffi::OsStr>>(args: &[S], stdin: &str) -> Run {
    tessera()
        .args(args)
        .write_stdin(stdin.to_owned())
        .output()
        .unwrap()
        .into()
}

/// A temporary directory for one test's files.
pub(crate) struct Dir(TempDir);

impl Dir {
    pub(crate) fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// Writes `content` to `name` and returns its path as a string argument.
    pub(crate) fn write(&self, name: &str, content: impl AsRef<[u8]>) -> String {
        let path = self.path(name);
        std::fs::write(&path, content).unwrap();
        arg(&path)
    }

    /// `tessera keys generate --alg ALG --format FORMAT --out NAME`; the path.
    pub(crate) fn generate(&self, alg: &str, format: &str) -> String {
        let name = format!("{alg}.{format}");
        let path = self.path(&name);
        run(&[
            "keys",
            "generate",
            "--alg",
            alg,
            "--format",
            format,
            "--out",
            &arg(&path),
        ])
        .success();
        arg(&path)
    }
}

pub(crate) fn arg(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

/// A JWK file's public half (private members removed), as JSON text.
pub(crate) fn public_jwk(private_jwk_path: &str) -> String {
    let mut jwk: Value =
        serde_json::from_str(&std::fs::read_to_string(private_jwk_path).unwrap()).unwrap();
    let object = jwk.as_object_mut().unwrap();
    for member in ["d", "p", "q", "dp", "dq", "qi"] {
        object.remove(member);
    }
    jwk.to_string()
}

/// `tessera token encode ARGS --now NOW`; the token.
pub(crate) fn encode(args: &[&str]) -> String {
    let mut all = vec!["token", "encode", "--now", NOW_ARG];
    all.extend_from_slice(args);
    let run = run(&all).success();
    let token = run.stdout_text();
    assert!(token.ends_with('\n'));
    token.trim_end().to_owned()
}

/// The claims of a token, decoded without verification (test-side, not via the binary).
pub(crate) fn payload(token: &str) -> Value {
    segment_json(token, 1)
}

/// The header of a token, decoded without verification (test-side, not via the binary).
pub(crate) fn header(token: &str) -> Value {
    segment_json(token, 0)
}

fn segment_json(token: &str, index: usize) -> Value {
    let segment = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&base64url::decode(segment).unwrap()).unwrap()
}

/// A file under `crates/jose/tests/data/`, where the JOSE conformance data lives.
///
/// `cargo test` sets `CARGO_MANIFEST_DIR` at run time; prefer it to the compile-time value, so
/// a test binary reused from another checkout (same target dir) reads this checkout's data.
pub(crate) fn jose_data(rel: &str) -> Value {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let path = dir.join("../jose/tests/data").join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// A string member of a JSON object.
pub(crate) fn str_at<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` is not a string in {value}"))
}

/// Asserts that `--jws` printed `expected`: pretty JSON when the payload is JSON (compared
/// as JSON), otherwise the exact bytes.
#[track_caller]
pub(crate) fn assert_payload(run: &Run, expected: &[u8], label: &str) {
    match serde_json::from_slice::<Value>(expected) {
        Ok(value) => assert_eq!(run.json(), value, "{label}"),
        Err(_) => assert_eq!(run.stdout, expected, "{label}"),
    }
}

/// Where a run's stdout goes when it is not captured.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sink {
    /// `/dev/full`: every write fails with ENOSPC.
    Full,
    /// A pipe whose reading end is closed before the command writes (`| head -c0`).
    Closed,
}

/// `cmd` (as built: program, arguments and environment) as a `std` command, whose standard
/// streams can then be pointed anywhere.
pub(crate) fn std_command(cmd: &Command) -> std::process::Command {
    let mut std_cmd = std::process::Command::new(cmd.get_program());
    std_cmd.args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => std_cmd.env(key, v),
            None => std_cmd.env_remove(key),
        };
    }
    std_cmd
}

/// Runs `cmd` (as built, with its arguments and environment) with stdout sent to `sink`.
pub(crate) fn run_into(cmd: &Command, sink: Sink) -> Run {
    use std::process::Stdio;

    let mut std_cmd = std_command(cmd);
    std_cmd.stdin(Stdio::null()).stderr(Stdio::piped());
    match sink {
        Sink::Full => {
            std_cmd.stdout(std::fs::File::create("/dev/full").unwrap());
        }
        Sink::Closed => {
            std_cmd.stdout(Stdio::piped());
        }
    }
    let mut child = std_cmd.spawn().unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    output.into()
}
