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
    let out = std::process::Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("TESSERA_CONFIG")
        .env_remove("TESSERA_DATABASE_URL")
        .env_remove("TESSERA_REQUIRE_POSTGRES")
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
        let out = std::process::Command::new(bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env_remove("TESSERA_CONFIG")
            .env_remove("TESSERA_DATABASE_URL")
            .env_remove("TESSERA_REQUIRE_POSTGRES")
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
    let only_cert = std::process::Command::new(bin())
        .args(["check-config", "--data-dir"])
        .arg(dir.path())
        .env("TESSERA_TLS__CERT", p("cert.pem"))
        .output()
        .unwrap();
    assert_eq!(only_cert.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&only_cert.stderr).contains("tls.key"));
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_keeps_the_old_one_when_the_new_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let first = self_signed();
    write_pair(certs.path(), &first, None);
    let cert_path = certs.path().join("cert.pem").display().to_string();
    let key_path = certs.path().join("key.pem").display().to_string();
    let server = ServeProcess::start(
        bin(),
        dir.path(),
        &[
            ("TESSERA_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PW),
            ("TESSERA_TLS__CERT", &cert_path),
            ("TESSERA_TLS__KEY", &key_path),
            ("RUST_LOG", "info"),
        ],
    );
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
    let mut logged = false;
    for _ in 0..100 {
        if server
            .log()
            .iter()
            .any(|l| l.contains("TLS certificate reload failed"))
        {
            logged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
        "shut down cleanly",
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
    let mut logged = false;
    for _ in 0..100 {
        if server.log().iter().any(|l| l.contains("nothing to reload")) {
            logged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(logged, "SIGHUP was not handled: {:#?}", server.log());
    let res = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}
