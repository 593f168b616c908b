//! Operations on the real binary: JSON logs without secrets, TLS files checked at start and
//! reloaded on SIGHUP, graceful shutdown on SIGTERM.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tessera_testkit::process::ServeProcess;

const ADMIN_PW: &str = "copper lantern drifts over quiet harbor";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tessera"))
}

/// `tessera <args> --data-dir <data_dir>`, with none of the caller's `TESSERA_CONFIG`,
/// `TESSERA_DATABASE_URL` or `TESSERA_REQUIRE_POSTGRES`: the test's own settings only.
fn tessera(args: &[&str], data_dir: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(bin());
    command
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("TESSERA_CONFIG")
        .env_remove("TESSERA_DATABASE_URL")
        .env_remove("TESSERA_REQUIRE_POSTGRES");
    command
}

/// A self-signed certificate for `localhost`, as PEM (cert, key).
fn self_signed() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn client_trusting(cert_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap()])
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// Writes the PEM files, then puts back `keep_mtime` (if any) so that only a signal, not the
/// file watch, can notice the change.
fn write_pair(dir: &Path, (cert, key): &(String, String), keep_mtime: Option<SystemTime>) {
    for (name, text) in [("cert.pem", cert), ("key.pem", key)] {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        if let Some(t) = keep_mtime {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
    }
}

async fn login(client: &reqwest::Client, base: &str, password: &str) -> reqwest::Response {
    client
        .post(format!("{base}/token"))
        .form(&[("username", "admin"), ("password", password)])
        .send()
        .await
        .unwrap()
}

#[test]
fn a_metrics_address_in_use_stops_the_start_before_the_database_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = tessera(&["serve", "--listen", "127.0.0.1:0"], &data)
        .env("TESSERA_METRICS__LISTEN", &addr)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr} (`metrics.listen`)")),
        "{stderr}"
    );
    // No first admin was created (nor its password shown), no key, no database.
    assert!(!stderr.contains("first admin"), "{stderr}");
    assert!(!data.join("tessera.db").exists());
}

#[tokio::test]
async fn tessera_log_sets_the_level_and_a_filter_that_does_not_parse_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let pw = ("TESSERA_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PW);
    // TESSERA_LOG wins over RUST_LOG (which the harness sets to `warn`).
    let server = ServeProcess::start(bin(), dir.path(), &[pw, ("TESSERA_LOG", "info")]);
    let log = server.log().join("\n");
    assert!(log.contains("INFO"), "{log}");
    drop(server);
    let server = ServeProcess::start(bin(), dir.path(), &[pw, ("TESSERA_LOG", "tessera=loud")]);
    let log = server.log().join("\n");
    assert!(
        log.contains("the log filter was not understood") && log.contains("TESSERA_LOG: "),
        "{log}"
    );
}

#[tokio::test]
async fn a_generated_admin_password_goes_to_a_private_file_when_stderr_is_no_terminal() {
    for args in [&[][..], &["--log-format", "json"][..]] {
        let dir = tempfile::tempdir().unwrap();
        // The test's stderr is a pipe, as under a service manager or in a container.
        // (JSON logs announce readiness with an info event.)
        let server =
            ServeProcess::start_with_args(bin(), dir.path(), args, &[("RUST_LOG", "info")]);
        let path = dir.path().join("initial-admin-password");
        let password = std::fs::read_to_string(&path).unwrap();
        let password = password.trim_end();
        assert!(password.len() >= 16, "{password:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        let log = server.log().join("\n");
        assert!(!log.contains(password), "the password was logged:\n{log}");
        assert!(log.contains("initial-admin-password"), "{log}");
        let client = reqwest::Client::new();
        assert_eq!(login(&client, server.base(), password).await.status(), 200);
    }
}

#[tokio::test]
async fn json_logs_carry_request_ids_and_never_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start_with_args(
        bin(),
        dir.path(),
        &["--log-format", "json"],
        &[
            ("TESSERA_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PW),
            ("RUST_LOG", "debug"),
        ],
    );
    let client = reqwest::Client::new();
    let ok = login(&client, server.base(), ADMIN_PW).await;
    assert_eq!(ok.status(), 200);
    let tokens: Value = ok.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let me = client
        .get(server.url("/users/me"))
        .bearer_auth(&access)
        .header("x-request-id", "ops-test-request-1")
        .header("cookie", "session=cookie-secret-value")
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    assert_eq!(me.headers()["x-request-id"], "ops-test-request-1");
    let wrong = "a wrong password for the log test";
    assert_eq!(login(&client, server.base(), wrong).await.status(), 400);
    let refreshed = client
        .post(server.url("/token"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 200);
    // The last request's line is written after its response: wait for it (bounded).
    let mut lines = Vec::new();
    for _ in 0..200 {
        lines = server.log();
        if lines
            .iter()
            .filter(|l| l.contains("\"message\":\"request\""))
            .count()
            >= 4
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut request_lines = 0;
    let mut saw_propagated = false;
    let mut request_ids = std::collections::HashSet::new();
    let mut audit_lines = Vec::new();
    for line in &lines {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for secret in [
            ADMIN_PW,
            wrong,
            access.as_str(),
            refresh.as_str(),
            "cookie-secret-value",
        ] {
            assert!(!line.contains(secret), "secret in the log: {line}");
        }
        // The JWT's signature alone must not appear either (a truncated token is a token).
        let signature = access.rsplit('.').next().unwrap();
        assert!(
            !line.contains(signature),
            "token signature in the log: {line}"
        );
        if v["span"]["name"] == "request" {
            assert!(
                v["span"]["request_id"].is_string(),
                "span without id: {line}"
            );
        }
        if v["message"] == "request" {
            request_lines += 1;
            let id = v["request_id"]
                .as_str()
                .unwrap_or_else(|| panic!("no request_id: {line}"));
            assert!(!id.is_empty() && id != "-", "{line}");
            saw_propagated |= id == "ops-test-request-1";
            request_ids.insert(id.to_owned());
        }
        if v["target"] == "audit" {
            audit_lines.push(v);
        }
    }
    assert!(request_lines >= 4, "one line per request: {lines:#?}");
    assert!(saw_propagated, "the client's x-request-id is logged");
    // Audit lines carry the request id as the request's own line does (a plain string:
    // `jq 'select(.request_id == "…")'` finds both), and their other fields as plain values.
    // (The bootstrap admin's creation happens outside any request and has none.)
    let with_id = audit_lines
        .iter()
        .filter(|v| !v["request_id"].is_null())
        .count();
    assert!(with_id >= 2, "the two logins' audit lines: {lines:#?}");
    for v in &audit_lines {
        if let Some(id) = v.get("request_id") {
            let id = id.as_str().unwrap_or_else(|| panic!("{v}"));
            assert!(
                request_ids.contains(id),
                "audit request id {id:?} is no request's: {v}"
            );
        }
        for field in ["user", "client", "ip"] {
            if let Some(s) = v[field].as_str() {
                assert!(!s.starts_with("Some("), "audit {field} as Debug: {v}");
            }
        }
    }
}

#[test]
fn a_weak_bootstrap_password_stops_the_first_start_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(&["serve", "--listen", "127.0.0.1:0"], dir.path())
        .env("TESSERA_BOOTSTRAP_ADMIN_PASSWORD", "aaaaaaaaaaaaaaaa")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("first admin") && stderr.contains("too easy to guess"),
        "{stderr}"
    );
}

#[test]
fn unusable_tls_files_stop_the_server_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed();
    std::fs::write(certs.path().join("cert.pem"), &cert).unwrap();
    std::fs::write(certs.path().join("key.pem"), &key).unwrap();
    std::fs::write(certs.path().join("garbage.pem"), "not a certificate\n").unwrap();
    let other_key = self_signed().1;
    std::fs::write(certs.path().join("other-key.pem"), other_key).unwrap();
    let p = |name: &str| certs.path().join(name).display().to_string();
    for (cert_file, key_file, expect) in [
        (p("missing.pem"), p("key.pem"), "tls.cert"),
        (p("garbage.pem"), p("key.pem"), "tls.cert"),
        (p("cert.pem"), p("garbage.pem"), "tls.key"),
        (p("cert.pem"), p("other-key.pem"), "cannot be used together"),
    ] {
        let out = tessera(&["serve", "--listen", "127.0.0.1:0"], dir.path())
            .env("TESSERA_TLS__CERT", &cert_file)
            .env("TESSERA_TLS__KEY", &key_file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{cert_file} {key_file}: {stderr}"
        );
        assert!(stderr.contains(expect), "{stderr}");
    }
    let only_cert = tessera(&["check-config"], dir.path())
        .env("TESSERA_TLS__CERT", p("cert.pem"))
        .output()
        .unwrap();
    assert_eq!(only_cert.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&only_cert.stderr).contains("tls.key"));
}

/// `tessera serve` on `data_dir` with TLS from `cert` and `key`, logging at `info`.
fn serve_tls(data_dir: &Path, cert: &str, key: &str) -> ServeProcess {
    ServeProcess::start(
        bin(),
        data_dir,
        &[
            ("TESSERA_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PW),
            ("TESSERA_TLS__CERT", cert),
            ("TESSERA_TLS__KEY", key),
            ("RUST_LOG", "info"),
        ],
    )
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_keeps_the_old_one_when_the_new_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let first = self_signed();
    write_pair(certs.path(), &first, None);
    let cert_path = certs.path().join("cert.pem").display().to_string();
    let key_path = certs.path().join("key.pem").display().to_string();
    let server = serve_tls(dir.path(), &cert_path, &key_path);
    assert!(server.base().starts_with("https://"), "{}", server.base());
    let base = server.base().replacen("127.0.0.1", "localhost", 1);
    let health = format!("{base}/healthz");
    let res = client_trusting(&first.0).get(&health).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );
    // A connection opened before the reload stays usable after it.
    let kept = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(first.0.as_bytes()).unwrap()])
        .build()
        .unwrap();
    assert_eq!(kept.get(&health).send().await.unwrap().status(), 200);

    // New files with the old modification time: only SIGHUP can make the server notice.
    let mtime = std::fs::metadata(&cert_path).unwrap().modified().unwrap();
    let second = self_signed();
    write_pair(certs.path(), &second, Some(mtime));
    server.signal("HUP");
    let mut served_new = false;
    for _ in 0..100 {
        if client_trusting(&second.0).get(&health).send().await.is_ok() {
            served_new = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served_new, "SIGHUP did not reload: {:#?}", server.log());
    assert!(client_trusting(&first.0).get(&health).send().await.is_err());
    assert_eq!(kept.get(&health).send().await.unwrap().status(), 200);

    // A broken certificate: the reload fails, is logged, and the current one stays.
    std::fs::write(&cert_path, "-----BEGIN CERTIFICATE-----\n!!!\n").unwrap();
    server.signal("HUP");
    let logged = server
        .wait_for_log("TLS certificate reload failed", Duration::from_secs(5))
        .await;
    assert!(logged, "{:#?}", server.log());
    let res = client_trusting(&second.0)
        .get(&health)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn sigterm_lets_in_flight_logins_finish_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServeProcess::start(
        bin(),
        dir.path(),
        &[
            ("TESSERA_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PW),
            // One hash at a time (production Argon2id): the logins queue behind each other.
            ("TESSERA_LIMITS__MAX_CONCURRENT_HASHES", "1"),
            ("TESSERA_METRICS__ENABLED", "true"),
            ("RUST_LOG", "info"),
        ],
    );
    let client = reqwest::Client::new();
    let base = server.base().to_owned();
    let logins: Vec<_> = (0..6)
        .map(|_| {
            let (client, base) = (client.clone(), base.clone());
            tokio::spawn(async move { login(&client, &base, ADMIN_PW).await })
        })
        .collect();
    // Wait until every login reached the server and some are still in flight (queued
    // for the hashing slot): in flight now (less this scrape) plus answered = 6.
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    };
    let mut in_flight = false;
    for _ in 0..2000 {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let running = value(&text, "tessera_http_requests_in_flight") - 1.0;
        let done = value(
            &text,
            r#"tessera_http_requests_total{method="POST",route="/token",status="2xx"}"#,
        );
        if running >= 1.0 && running + done >= 6.0 {
            in_flight = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(in_flight, "the logins never were all in flight");
    server.signal("TERM");
    for login in logins {
        let res = login.await.unwrap();
        assert_eq!(res.status(), 200, "an in-flight login completes");
    }
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("the server exits after its in-flight requests");
    assert!(status.success(), "{status:?}");
    let log = server.log().join("\n");
    for step in [
        "shutting down: stopped accepting connections",
        "in-flight requests finished",
        "database closed",
        "shut down",
    ] {
        assert!(log.contains(step), "missing `{step}` in {log}");
    }
}

#[tokio::test]
async fn sighup_without_tls_is_logged_and_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(
        bin(),
        dir.path(),
        &[
            ("TESSERA_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PW),
            ("RUST_LOG", "info"),
        ],
    );
    let client = reqwest::Client::new();
    server.signal("HUP");
    let logged = server
        .wait_for_log("nothing to reload", Duration::from_secs(5))
        .await;
    assert!(logged, "SIGHUP was not handled: {:#?}", server.log());
    let res = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

/// A server with a 60 s shutdown deadline and one connection whose request head never
/// ends, which a graceful shutdown waits for up to that deadline.
async fn server_with_a_stalled_request() -> (tempfile::TempDir, ServeProcess, std::net::TcpStream) {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(
        bin(),
        dir.path(),
        &[
            ("TESSERA_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PW),
            ("TESSERA_SHUTDOWN_TIMEOUT", "60s"),
            ("RUST_LOG", "info"),
        ],
    );
    let addr = server.base().trim_start_matches("http://").to_owned();
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    (dir, server, stalled)
}

/// SIGTERM starts a graceful shutdown that may wait up to `shutdown_timeout` (here 60 s)
/// for a connection; a second SIGINT/SIGTERM (the operator pressing Ctrl-C again,
/// `docker stop` escalating, systemd's `KillMode` sending SIGTERM twice) should stop the
/// wait (closing the remaining connections; the database is still closed cleanly).
#[tokio::test]
async fn a_second_signal_during_shutdown_stops_the_wait() {
    let (_dir, mut server, stalled) = server_with_a_stalled_request().await;
    server.signal("TERM");
    let draining = server
        .wait_for_log("shutting down", Duration::from_secs(5))
        .await;
    assert!(draining, "{:#?}", server.log());
    assert!(
        server.wait_exit(Duration::from_millis(500)).is_none(),
        "the first signal waits for the open connection"
    );
    server.signal("INT");
    let exited = server.wait_exit(Duration::from_secs(5));
    drop(stalled);
    assert!(
        exited.is_some(),
        "a second signal (SIGINT) was ignored: still waiting out the 60 s deadline 5 s later; log:\n{}",
        server.log().join("\n")
    );
}

/// Blocking work still running when `serve` returns (here the RSA-4096 key generation of
/// rotations whose requests the second signal cut) must not hold the exit: dropping the
/// runtime used to wait for it, 5.6-6.6 s with six rotations.
#[tokio::test]
async fn a_forced_shutdown_does_not_wait_for_key_generation() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServeProcess::start(
        bin(),
        dir.path(),
        &[
            ("TESSERA_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PW),
            ("TESSERA_SHUTDOWN_TIMEOUT", "30s"),
            ("TESSERA_SIGNING__RSA_BITS", "4096"),
            ("RUST_LOG", "info"),
        ],
    );
    let client = reqwest::Client::new();
    let res = login(&client, server.base(), ADMIN_PW).await;
    assert_eq!(res.status(), 200);
    let token = res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotations: Vec<_> = (0..8)
        .map(|_| {
            let (client, url, token) = (
                client.clone(),
                server.url("/admin/keys/rotate"),
                token.clone(),
            );
            tokio::spawn(async move { client.post(url).bearer_auth(token).send().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let forced = std::time::Instant::now();
    server.signal("INT");
    let exited = server.wait_exit(Duration::from_secs(20));
    let took = forced.elapsed();
    for r in rotations {
        let _ = r.await;
    }
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
    // A second for the connections, a second for the database, a second for blocking work.
    assert!(
        took < Duration::from_millis(3500),
        "exited {took:?} after the second signal; log:\n{}",
        server.log().join("\n")
    );
}

/// A private key readable by every local user is a leak waiting to happen; the server
/// already creates `master.key` 0600 and its data directory 0700. A `tls.key` with mode
/// 0644 is accepted, with a warning naming it.
#[test]
fn a_world_readable_tls_key_is_warned_about() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    write_pair(certs.path(), &self_signed(), None);
    let key_path = certs.path().join("key.pem");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cert_path = certs.path().join("cert.pem").display().to_string();
    let key_path = key_path.display().to_string();
    let server = serve_tls(dir.path(), &cert_path, &key_path);
    std::thread::sleep(Duration::from_millis(500));
    let log = server.log();
    assert!(
        log.iter()
            .any(|l| l.contains("WARN") && (l.contains("tls.key") || l.contains(&key_path))),
        "no warning about the world-readable (0644) `tls.key`; log:\n{}",
        log.join("\n")
    );
}

/// An encrypted private key (what `openssl pkcs8 -topk8` or `openssl genpkey -aes256`
/// writes by default) is a common mistake; the error says so (it used to print the PEM
/// parser's `NoItemsFound` or `Base64Decode("InvalidCharacter(45)")`).
#[test]
fn an_encrypted_tls_key_is_named_as_such() {
    const ENCRYPTED_PKCS8: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----
MIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAiQtAma6ZCrcQICCAAw
DAYIKoZIhvcNAgkFADAdBglghkgBZQMEASoEEM13DifcRTFrHQdy+5HZYFQEgZB7
toLD0FR5wz7NE+exs4xYDM59x0Ya50LBewyIvMOIn4FsHHhRZF1mGUb+BwTHYZ2z
sluRfbpsRbMamHvNxYmt0tXVHzhbSgznxkzglIzQVwoe+I2YWRNZIibOQeA1qgVv
Z8XELfRWxuO5RVFdoRN6C8hluWwvz9Y3pJSz4o8tp9LJmgN2oTougwwt3lV/vmA=
-----END ENCRYPTED PRIVATE KEY-----
";
    // The same kind of key in OpenSSL's legacy encrypted form (headers inside the block).
    const ENCRYPTED_LEGACY: &str = "-----BEGIN EC PRIVATE KEY-----
Proc-Type: 4,ENCRYPTED
DEK-Info: AES-256-CBC,B47C6B490A4CAEB2096E19AB6D05D860

AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
-----END EC PRIVATE KEY-----
";
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let cert = certs.path().join("cert.pem");
    std::fs::write(&cert, self_signed().0).unwrap();
    let mut failures = Vec::new();
    for (name, pem) in [("pkcs8", ENCRYPTED_PKCS8), ("legacy", ENCRYPTED_LEGACY)] {
        let key = certs.path().join(format!("{name}.pem"));
        std::fs::write(&key, pem).unwrap();
        let out = tessera(&["serve", "--listen", "127.0.0.1:0"], dir.path())
            .env("TESSERA_TLS__CERT", &cert)
            .env("TESSERA_TLS__KEY", &key)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        if !stderr.to_lowercase().contains("encrypted") {
            failures.push(format!("{name}: {}", stderr.trim()));
        }
    }
    assert!(
        failures.is_empty(),
        "the error does not say the key is encrypted:\n{}",
        failures.join("\n")
    );
}

/// Open files of process `pid` (Linux).
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Sets the soft `RLIMIT_NOFILE` of process `pid` with util-linux `prlimit`.
fn set_nofile_soft(pid: u32, soft: u64) {
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={soft}:"))
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit failed");
}

/// A reload that fails for a passing reason (here: out of file descriptors while a flood
/// of half-open TLS connections holds them, the very moment the renewed certificate lands)
/// is retried at every poll until it succeeds; it used to wait for the next change to the
/// files or a SIGHUP (with certbot, the next renewal, after the old certificate expired).
#[tokio::test]
async fn a_reload_that_failed_for_a_passing_reason_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let first = self_signed();
    write_pair(certs.path(), &first, None);
    let cert_path = certs.path().join("cert.pem").display().to_string();
    let key_path = certs.path().join("key.pem").display().to_string();
    let server = serve_tls(dir.path(), &cert_path, &key_path);
    let base = server.base().replacen("127.0.0.1", "localhost", 1);
    let addr = server.base().trim_start_matches("https://").to_owned();
    let health = format!("{base}/healthz");
    assert_eq!(
        client_trusting(&first.0)
            .get(&health)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let pid = server.id();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap();

    // Out of descriptors: the limit just above what is open, then connections that never
    // start their handshake (each held up to the 10 s handshake timeout).
    set_nofile_soft(pid, open_fds(pid) as u64 + 4);
    let flood: Vec<_> = (0..32)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    let exhausted = server
        .wait_for_log("Too many open files", Duration::from_secs(2))
        .await;
    assert!(exhausted, "{:#?}", server.log());

    // The renewed certificate lands now; the file watch tries it and fails (EMFILE).
    let second = self_signed();
    write_pair(certs.path(), &second, None);
    let failed = server
        .wait_for_log("TLS certificate reload failed", Duration::from_secs(5))
        .await;
    assert!(failed, "{:#?}", server.log());
    // Two more polls fail the same way: retried (a failed retry keeps the reload pending,
    // which the recovery below needs), yet logged once.
    std::thread::sleep(Duration::from_secs(5));
    let failures = server
        .log()
        .iter()
        .filter(|l| l.contains("TLS certificate reload failed"))
        .count();
    assert_eq!(failures, 1, "a repeated identical failure is logged once");

    // The flood ends; descriptors are back.
    drop(flood);
    set_nofile_soft(pid, soft);

    // Several poll periods (2 s each) later the renewed certificate should be served.
    let mut served_new = false;
    for _ in 0..40 {
        if client_trusting(&second.0).get(&health).send().await.is_ok() {
            served_new = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let still_old = client_trusting(&first.0).get(&health).send().await.is_ok();
    // The files were fine all along: SIGHUP loads them.
    server.signal("HUP");
    let mut after_hup = false;
    for _ in 0..40 {
        if client_trusting(&second.0).get(&health).send().await.is_ok() {
            after_hup = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reload_lines: Vec<_> = server
        .log()
        .into_iter()
        .filter(|l| l.contains("TLS certificate reload"))
        .collect();
    assert!(
        served_new,
        "10 s after the transient failure the renewed certificate is still not served \
         (old one still served: {still_old}; loaded by a SIGHUP afterwards: {after_hup}); \
         reload log:\n{}",
        reload_lines.join("\n")
    );
}

/// `docs/operations.md`: "a habitual `kill -HUP` never stops the server", not even while
/// it starts (migrations, first key, bootstrap hashing, TLS files checked), before
/// `serve` has spawned `tls::watch` / `ignore_hangups`.
#[test]
fn sighup_while_starting_does_not_stop_the_server() {
    use std::os::unix::process::ExitStatusExt as _;
    let dir = tempfile::tempdir().unwrap();
    let mut child = tessera(&["serve", "--listen", "127.0.0.1:0"], dir.path())
        .env("TESSERA_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PW)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Starting: the database file exists, the server is not listening yet.
    let db = dir.path().join("tessera.db");
    for _ in 0..2000 {
        if db.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(db.exists(), "the server never opened its database");
    let status = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_secs(3));
    let exited = child.try_wait().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        exited.is_none(),
        "SIGHUP during start-up stopped the server: {exited:?} (signal {:?})",
        exited.and_then(|s| s.signal())
    );
}

/// Two different stop signals sent back to back (a script's `kill -TERM $pid; kill -INT
/// $pid`, or Ctrl-C on the terminal while the supervisor's SIGTERM is in flight) are two
/// signals: the second must cut the shutdown wait short. `shutdown_signals` keeps one
/// receiver per signal; a receiver made afresh for the second wait lost a SIGINT that had
/// arrived while SIGTERM won the first.
#[tokio::test]
async fn term_then_int_back_to_back_both_count() {
    for trial in 0..6 {
        let (_dir, mut server, stalled) = server_with_a_stalled_request().await;
        // bash builtins: the two kill(2) calls are microseconds apart.
        let status = std::process::Command::new("bash")
            .arg("-c")
            .arg("kill -TERM $0; kill -INT $0")
            .arg(server.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let exited = server.wait_exit(Duration::from_secs(5));
        drop(stalled);
        if exited.is_none() {
            let log = server.log().join("\n");
            server.kill();
            panic!(
                "trial {trial}: SIGTERM then SIGINT, yet still waiting out the 60 s deadline \
                 5 s later (the SIGINT was lost); log:\n{log}"
            );
        }
    }
}

/// The standard way to share a key with a service account: root-owned, group-readable by
/// the service's group (Debian's `root:ssl-cert 0640`, a Kubernetes secret volume with
/// `defaultMode: 0440` and `fsGroup`). Nobody but the owner (root) and the service's group
/// can read it, yet the server warns and advises `chmod 600`, which would make the key
/// unreadable to a non-root server (and is impossible on a read-only secret volume).
#[test]
fn group_readable_tls_key_is_not_warned_about() {
    use std::os::unix::fs::PermissionsExt as _;
    let mut failures = Vec::new();
    for mode in [0o640, 0o440] {
        let dir = tempfile::tempdir().unwrap();
        let certs = tempfile::tempdir().unwrap();
        write_pair(certs.path(), &self_signed(), None);
        let key_path = certs.path().join("key.pem");
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(mode)).unwrap();
        let cert_path = certs.path().join("cert.pem").display().to_string();
        let key_path = key_path.display().to_string();
        let server = serve_tls(dir.path(), &cert_path, &key_path);
        std::thread::sleep(Duration::from_millis(500));
        if let Some(l) = server
            .log()
            .into_iter()
            .find(|l| l.contains("WARN") && l.contains("tls.key"))
        {
            failures.push(format!("{mode:04o}: {l}"));
        }
    }
    assert!(
        failures.is_empty(),
        "a key readable only by its owner and its group is reported as exposed:\n{}",
        failures.join("\n")
    );
}

/// `redact_url` (check-config) treats `sslpassword=` as a secret, but `serve` hands the URL
/// to sqlx, which does not know `sslpassword` and logs every unrecognised parameter WITH
/// its value at WARN, under the default `info` filter: the secret is in the server log.
#[test]
fn serve_never_logs_a_password_query_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(&["serve", "--listen", "127.0.0.1:0"], dir.path())
        .env_remove("RUST_LOG")
        // Nothing listens on port 1: the server gives up after the pool timeout.
        .env(
            "TESSERA_DATABASE_URL",
            "postgres://tessera@127.0.0.1:1/tess?sslpassword=Ssl-Secret-777",
        )
        .env("TESSERA_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PW)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("Ssl-Secret-777"),
        "the sslpassword value is in the server's output:\n{text}"
    );
}

/// `read_key` now refuses a file over 1 MiB ("not a key"), but `read_certs` still reads
/// `tls.cert` without a bound (at start, and on every reload/retry): a `tls.cert` pointing
/// at something endless (`/dev/zero`, a device, a mistaken log file) makes the server grow
/// by ~100 MB/s until the OOM killer takes it, instead of exiting 2 with a message.
#[test]
fn an_endless_tls_cert_is_refused_not_read_forever() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    write_pair(certs.path(), &self_signed(), None);
    let mut child = tessera(&["serve", "--listen", "127.0.0.1:0"], dir.path())
        .env("TESSERA_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PW)
        .env("TESSERA_TLS__CERT", "/dev/zero")
        .env("TESSERA_TLS__KEY", certs.path().join("key.pem"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = None;
    for _ in 0..100 {
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .map(str::to_owned);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(2),
        "tls.cert = /dev/zero: still reading it after 10 s ({rss:?}), no refusal"
    );
}

/// check-config exists to show the configuration "resolved". For a `sqlite:` URL sqlx
/// does NOT use a URL parser: it strips `sqlite://` and opens the rest as a path
/// (`data/../t.db`, i.e. `./t.db`). `redact_url` re-serialises it through `url::Url`, which
/// takes `data` for a host and normalises the path: it prints `sqlite://data/t.db`, a file
/// the server will not open.
#[test]
fn check_config_prints_the_sqlite_path_sqlx_opens() {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(&["check-config"], dir.path())
        .env("TESSERA_DATABASE_URL", "sqlite://data/../t.db?mode=rwc")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(
        v["database_url"], "sqlite://data/../t.db?mode=rwc",
        "check-config misreports the database file; output:\n{stdout}"
    );
}

/// `check-config` is where a bad certificate is cheapest to catch: an expired one is still
/// a valid configuration (the server would serve it), but the command says so, and names
/// an expired certificate further down the file by position and subject.
#[test]
fn check_config_warns_about_an_expired_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2020, 5, 30);
    let leaf = params.self_signed(&key).unwrap();
    let other_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["old-root.test".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Old Root");
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let old_root = params.self_signed(&other_key).unwrap();
    std::fs::write(
        dir.path().join("cert.pem"),
        format!("{}{}", leaf.pem(), old_root.pem()),
    )
    .unwrap();
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
    let out = tessera(&["check-config"], dir.path())
        .env("TESSERA_TLS__CERT", dir.path().join("cert.pem"))
        .env("TESSERA_TLS__KEY", dir.path().join("key.pem"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: the TLS certificate expired at 2020-05-30T00:00:00Z: renew it"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "warning: certificate 2 of 2 in `tls.cert` (CN=Old Root) expired at 2021-01-01T00:00:00Z"
        ),
        "{stderr}"
    );
}
