//! Operations: `GET /metrics`, request ids, native TLS with hot reload and HSTS, graceful
//! shutdown. Real sockets throughout; TLS certificates are generated with rcgen.

use std::sync::Arc;
use std::time::Duration;

use tessera_auth::ManualClock;
use tessera_server::config::Config;
use tessera_server::tls::TlsFiles;
use tessera_server::{ServeOptions, serve};
use tessera_testkit::{ADMIN_PASSWORD, spawn_app, spawn_app_with};
use tokio::net::TcpListener;

/// The value of the sample `name{labels}` (labels exactly as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

async fn scrape(url: &str) -> String {
    let res = reqwest::get(url).await.unwrap();
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = res.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    check_histograms(&text);
    text
}

/// Every histogram series as OpenMetrics requires it (and Prometheus's
/// `histogram_quantile` needs it): cumulative buckets in rising order, the last one
/// `le="+Inf"`, and that one equal to `_count`.
fn check_histograms(text: &str) {
    // (family, labels without `le`) -> [(le, count)]
    let mut series: std::collections::BTreeMap<(String, String), Vec<(String, f64)>> =
        Default::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, rest)) = line.split_once("_bucket{") else {
            continue;
        };
        let (labels, value) = rest.rsplit_once("} ").unwrap();
        let mut le = None;
        let others: Vec<&str> = labels
            .split(',')
            .filter(|l| match l.strip_prefix("le=") {
                Some(v) => {
                    le = Some(v.trim_matches('"').to_owned());
                    false
                }
                None => true,
            })
            .collect();
        series
            .entry((name.to_owned(), others.join(",")))
            .or_default()
            .push((le.unwrap(), value.parse().unwrap()));
    }
    for ((name, labels), buckets) in &series {
        let (last_le, last) = buckets.last().unwrap();
        assert_eq!(last_le, "+Inf", "{name}{{{labels}}}: top bucket");
        for pair in buckets.windows(2) {
            let bound = |le: &str| le.parse::<f64>().unwrap_or(f64::INFINITY);
            assert!(
                bound(&pair[0].0) < bound(&pair[1].0),
                "{name}{{{labels}}}: order"
            );
            assert!(pair[0].1 <= pair[1].1, "{name}{{{labels}}}: cumulative");
        }
        let count = sample(text, &format!("{name}_count{{{labels}}}"));
        assert_eq!(count, Some(*last), "{name}{{{labels}}}: _count and +Inf");
    }
}

#[tokio::test]
async fn metrics_are_not_served_unless_enabled() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn metrics_count_requests_by_matched_route_and_logins_by_outcome() {
    let app = spawn_app_with(|c| c.metrics_enabled = true).await;
    let admin = app.admin_login().await;
    assert_eq!(app.me(&admin.access_token).await.status(), 200);
    assert_eq!(app.me(&admin.access_token).await.status(), 200);
    assert_eq!(
        app.password_grant("admin", "wrong password").await.status(),
        400
    );
    assert_eq!(
        app.password_grant("nobody", "wrong password")
            .await
            .status(),
        400
    );
    let show = app
        .get_auth("/admin/users/admin", &admin.access_token)
        .await;
    assert_eq!(show.status(), 200);
    let missing = app
        .client
        .get(app.url("/no/such/path/42"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let text = scrape(&app.url("/metrics")).await;
    let get = |s: &str| sample(&text, s);
    assert_eq!(
        get(r#"tessera_http_requests_total{method="GET",route="/users/me",status="2xx"}"#),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        get(r#"tessera_http_requests_total{method="POST",route="/token",status="4xx"}"#),
        Some(2.0)
    );
    assert_eq!(
        get(r#"tessera_http_requests_total{method="POST",route="/token",status="2xx"}"#),
        Some(1.0)
    );
    // The route template, never the raw path (bounded cardinality).
    assert_eq!(
        get(
            r#"tessera_http_requests_total{method="GET",route="/admin/users/{user}",status="2xx"}"#
        ),
        Some(1.0)
    );
    assert!(!text.contains("/admin/users/admin"), "{text}");
    assert!(!text.contains("/no/such/path"), "{text}");
    assert_eq!(
        get(r#"tessera_http_requests_total{method="GET",route="<unmatched>",status="4xx"}"#),
        Some(1.0)
    );
    assert_eq!(
        get(
            r#"tessera_http_request_duration_seconds_count{method="GET",route="/users/me",status="2xx"}"#
        ),
        Some(2.0)
    );
    assert_eq!(get(r#"tessera_logins_total{outcome="success"}"#), Some(1.0));
    assert_eq!(
        get(r#"tessera_logins_total{outcome="invalid_credentials"}"#),
        Some(2.0)
    );
    assert_eq!(get("tessera_active_sessions"), Some(1.0));
    assert_eq!(get("tessera_database_up"), Some(1.0));

    // Cookie-mode logins (`POST /session`, which the hosted login page shares) are logins.
    for password in ["wrong 1", ADMIN_PASSWORD] {
        let res = app
            .client
            .post(app.url("/session"))
            .form(&[("username", "admin"), ("password", password)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().is_success(), password != "wrong 1");
    }
    let text = scrape(&app.url("/metrics")).await;
    let get = |s: &str| sample(&text, s);
    assert_eq!(get(r#"tessera_logins_total{outcome="success"}"#), Some(2.0));
    assert_eq!(
        get(r#"tessera_logins_total{outcome="invalid_credentials"}"#),
        Some(3.0)
    );
    assert_eq!(get("tessera_password_hash_queue_depth"), Some(0.0));
    assert_eq!(get("tessera_password_hash_in_flight"), Some(0.0));
    assert_eq!(get("tessera_lockouts_total"), Some(0.0));
    assert_eq!(get("tessera_refresh_token_reuse_detected_total"), Some(0.0));
    let kid = crate::header_of(&admin.access_token)["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let age = text
        .lines()
        .find(|l| {
            l.starts_with("tessera_signing_key_age_seconds{")
                && l.contains(&format!("kid=\"{kid}\""))
                && l.contains("state=\"active\"")
        })
        .unwrap_or_else(|| panic!("no age for key {kid}: {text}"));
    let secs: f64 = age.rsplit_once(' ').unwrap().1.parse().unwrap();
    assert!((0.0..60.0).contains(&secs), "{age}");
}

/// The middleware labels requests from the server's own route table (it runs outside the
/// router); every route the API documents, the hosted pages and the docs must be in it.
#[tokio::test]
async fn every_route_is_labelled_by_its_template() {
    let app = spawn_app_with(|c| c.metrics_enabled = true).await;
    let doc: serde_json::Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut expected = vec![];
    for (template, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let Ok(method) = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            // Any value for each parameter: the label is the template whatever the answer.
            let path: String = template
                .split('/')
                .map(|seg| if seg.starts_with('{') { "x" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            let res = app
                .client
                .request(method.clone(), app.url(&path))
                .send()
                .await
                .unwrap();
            assert_ne!(res.status(), 404, "{method} {path}");
            expected.push((method.to_string(), template.clone()));
        }
    }
    assert!(expected.len() > 20, "{expected:?}");
    for (path, template) in [
        ("/login", "/login"),
        ("/account", "/account"),
        (
            "/account/sessions/x/revoke",
            "/account/sessions/{id}/revoke",
        ),
        ("/docs", "/docs"),
        ("/docs/", "/docs/"),
        ("/docs/swagger-ui.css", "/docs/{*rest}"),
    ] {
        let method = if path.ends_with("revoke") {
            "POST"
        } else {
            "GET"
        };
        let res = app
            .client
            .request(method.parse().unwrap(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_ne!(res.status(), 404, "{path}");
        expected.push((method.to_owned(), template.to_owned()));
    }
    let text = scrape(&app.url("/metrics")).await;
    for (method, template) in &expected {
        let prefix =
            format!(r#"tessera_http_requests_total{{method="{method}",route="{template}",status="#);
        assert!(
            text.lines().any(|l| l.starts_with(&prefix)),
            "no series for {method} {template}:\n{text}"
        );
    }
    assert!(!text.contains(r#"route="<unmatched>""#), "{text}");
}

#[tokio::test]
async fn metrics_count_lockouts_and_refresh_token_reuse() {
    let app = spawn_app_with(|c| c.metrics_enabled = true).await;
    let t0 = app.admin_login().await;
    let rt0 = t0.refresh_token.unwrap();
    assert_eq!(app.refresh(&rt0).await.status(), 200);
    app.advance(11).await; // past the grace window: a replay is reuse
    assert_eq!(app.refresh(&rt0).await.status(), 400);
    for _ in 0..5 {
        app.password_grant("victim", "not the password").await;
    }
    let locked = app.password_grant("victim", "not the password").await;
    assert_eq!(locked.status(), 400);

    let text = scrape(&app.url("/metrics")).await;
    assert_eq!(
        sample(&text, "tessera_refresh_token_reuse_detected_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "tessera_lockouts_total"), Some(1.0));
    assert_eq!(
        sample(&text, r#"tessera_logins_total{outcome="locked"}"#),
        Some(1.0)
    );
    // The reused token's session was revoked.
    assert_eq!(sample(&text, "tessera_active_sessions"), Some(0.0));
}

#[tokio::test]
async fn two_servers_in_one_process_keep_separate_counters() {
    let a = spawn_app_with(|c| c.metrics_enabled = true).await;
    let b = spawn_app_with(|c| c.metrics_enabled = true).await;
    a.admin_login().await;
    let series = r#"tessera_logins_total{outcome="success"}"#;
    assert_eq!(sample(&scrape(&a.url("/metrics")).await, series), Some(1.0));
    assert_eq!(sample(&scrape(&b.url("/metrics")).await, series), None);
}

/// A server started by hand, for options `spawn_app` does not cover.
struct Manual {
    base: String,
    state: tessera_server::AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    dir: tempfile::TempDir,
}

async fn start_manual(
    configure: impl FnOnce(&mut Config),
    options: impl FnOnce(&Config) -> ServeOptions,
) -> Manual {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = Config::for_tests(dir.path());
    config.bootstrap_admin_password = Some(ADMIN_PASSWORD.to_owned().into());
    configure(&mut config);
    config.set_public_addr(addr);
    let opts = options(&config);
    let prepared = tessera_server::prepare(config, Arc::new(ManualClock::starting_now()))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let scheme = if opts.tls.is_some() { "https" } else { "http" };
    let state = prepared.state.clone();
    let task = tokio::spawn(serve(listener, prepared.state, opts, async move {
        let _ = rx.await;
    }));
    Manual {
        base: format!("{scheme}://localhost:{}", addr.port()),
        state,
        stop: Some(tx),
        task,
        dir,
    }
}

#[tokio::test]
async fn metrics_listen_serves_metrics_only_there() {
    let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics_listener.local_addr().unwrap();
    let mut metrics_listener = Some(metrics_listener);
    let server = start_manual(
        |c| {
            c.metrics_enabled = true;
            c.metrics_listen = Some(metrics_addr);
        },
        |_| ServeOptions {
            metrics_listener: metrics_listener.take(),
            tls: None,
            shutdown_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            force_shutdown: None,
        },
    )
    .await;
    let main = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap();
    assert_eq!(main.status(), 404, "not on the main listener");
    let health = reqwest::get(format!("{}/healthz", server.base))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let text = scrape(&format!("http://{metrics_addr}/metrics")).await;
    assert_eq!(
        sample(
            &text,
            r#"tessera_http_requests_total{method="GET",route="/healthz",status="2xx"}"#
        ),
        Some(1.0),
        "{text}"
    );
    let other = reqwest::get(format!("http://{metrics_addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        404,
        "the metrics listener serves nothing else"
    );
}

/// The `metrics.listen` router had none of the main router's per-request layer: no
/// `x-request-id`, no log line, not counted. It now has the same layer, and its requests
/// are counted under their own route (`/metrics`, or unmatched), never an API route's.
#[tokio::test]
async fn the_metrics_listener_has_request_ids_and_counts_scrapes_under_their_own_route() {
    let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics_listener.local_addr().unwrap();
    let mut metrics_listener = Some(metrics_listener);
    let server = start_manual(
        |c| {
            c.metrics_enabled = true;
            c.metrics_listen = Some(metrics_addr);
        },
        |_| ServeOptions {
            metrics_listener: metrics_listener.take(),
            tls: None,
            shutdown_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            force_shutdown: None,
        },
    )
    .await;
    let client = reqwest::Client::new();
    let scrape_url = format!("http://{metrics_addr}/metrics");
    let given = client
        .get(&scrape_url)
        .header("x-request-id", "scrape-0001")
        .send()
        .await
        .unwrap();
    assert_eq!(given.status(), 200);
    assert_eq!(given.headers()["x-request-id"], "scrape-0001");
    assert_eq!(given.headers()["cache-control"], "no-store");
    let generated = client.get(&scrape_url).send().await.unwrap();
    assert!(
        !generated.headers()["x-request-id"].is_empty(),
        "a scrape without an id gets one"
    );
    let missing = client
        .get(format!("http://{metrics_addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.headers().contains_key("x-request-id"));

    let text = scrape(&scrape_url).await;
    assert_eq!(
        sample(
            &text,
            r#"tessera_http_requests_total{method="GET",route="/metrics",status="2xx"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"tessera_http_requests_total{method="GET",route="<unmatched>",status="4xx"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"tessera_http_requests_total{method="GET",route="/healthz",status="4xx"}"#
        ),
        None,
        "a request to the metrics listener is counted under an API route:\n{text}"
    );
    drop(server);
}

#[tokio::test]
async fn request_ids_are_propagated_when_valid_and_generated_otherwise() {
    let app = spawn_app().await;
    let get = |id: Option<Vec<u8>>| {
        let mut req = app.client.get(app.url("/healthz"));
        if let Some(id) = id {
            req = req.header(
                "x-request-id",
                reqwest::header::HeaderValue::from_bytes(&id).unwrap(),
            );
        }
        req.send()
    };
    let echoed =
        |res: &reqwest::Response| res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let res = get(Some(b"trace-abc_123".to_vec())).await.unwrap();
    assert_eq!(echoed(&res), "trace-abc_123");
    let generated = echoed(&get(None).await.unwrap());
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    for bad in [vec![b'a'; 129], b"has space".to_vec(), b"caf\xe9".to_vec()] {
        let res = get(Some(bad.clone())).await.unwrap();
        let id = echoed(&res);
        assert_ne!(id.as_bytes(), bad.as_slice());
        assert_eq!(id.len(), 36, "replaced by a UUID: {id}");
    }
    let longest = "x".repeat(128);
    assert_eq!(
        echoed(&get(Some(longest.clone().into_bytes())).await.unwrap()),
        longest
    );
}

/// A self-signed certificate for `localhost` and 127.0.0.1, as PEM (cert, key), valid from
/// 1975 to 4096 (rcgen's defaults).
fn self_signed() -> (String, String) {
    self_signed_until(None)
}

/// [`self_signed`], expiring at the start of the given day if one is given.
fn self_signed_until(not_after: Option<(i32, u8, u8)>) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    if let Some((y, m, d)) = not_after {
        params.not_after = rcgen::date_time_ymd(y, m, d);
    }
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

fn write_files(dir: &std::path::Path, (cert, key): &(String, String)) -> TlsFiles {
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, cert).unwrap();
    std::fs::write(&files.key, key).unwrap();
    files
}

#[tokio::test]
async fn tls_handshake_with_a_trusted_certificate_and_hsts_on_every_response() {
    let certs = tempfile::tempdir().unwrap();
    let pair = self_signed();
    let files = write_files(certs.path(), &pair);
    let server = start_manual(
        |c| c.tls = Some(files.clone()),
        |c| ServeOptions {
            metrics_listener: None,
            tls: c.tls.clone(),
            shutdown_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            force_shutdown: None,
        },
    )
    .await;
    let client = client_trusting(&pair.0);
    for path in ["/healthz", "/no/such/route", "/.well-known/jwks.json"] {
        let res = client
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.headers()["strict-transport-security"],
            "max-age=63072000; includeSubDomains",
            "{path}"
        );
    }
    let res = client
        .post(format!("{}/token", server.base))
        .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // A client that does not trust the certificate cannot connect, nor can plain HTTP.
    let stranger = client_trusting(&self_signed().0);
    assert!(
        stranger
            .get(format!("{}/healthz", server.base))
            .send()
            .await
            .is_err()
    );
    let plain = server.base.replacen("https://", "http://", 1);
    let res = reqwest::get(format!("{plain}/healthz")).await;
    assert!(res.is_err() || !res.unwrap().status().is_success());
}

#[tokio::test]
async fn plain_http_sends_no_hsts() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert!(res.headers().get("strict-transport-security").is_none());
}

#[tokio::test]
async fn a_changed_certificate_file_is_picked_up_and_a_broken_one_is_ignored() {
    let certs = tempfile::tempdir().unwrap();
    let first = self_signed();
    let files = write_files(certs.path(), &first);
    let server = start_manual(
        |c| {
            c.tls = Some(files.clone());
            c.metrics_enabled = true;
        },
        |c| ServeOptions {
            metrics_listener: None,
            tls: c.tls.clone(),
            shutdown_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            force_shutdown: None,
        },
    )
    .await;
    let url = format!("{}/healthz", server.base);
    assert_eq!(
        client_trusting(&first.0)
            .get(&url)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let expiry = format!(
        r#"tessera_tls_certificate_expiry_timestamp_seconds{{cert="{}"}}"#,
        files.cert.display()
    );
    let scrape = |pem: String| {
        let url = format!("{}/metrics", server.base);
        async move {
            let res = client_trusting(&pem).get(url).send().await.unwrap();
            res.text().await.unwrap()
        }
    };
    let text = scrape(first.0.clone()).await;
    assert_eq!(sample(&text, &expiry), Some(67_090_118_400.0), "4096-01-01");

    // A broken certificate is refused at reload: the old one keeps being served.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    let series = r#"tessera_tls_reloads_total{outcome="error"}"#;
    let mut refused = false;
    for _ in 0..50 {
        let text = scrape(first.0.clone()).await;
        if sample(&text, series).is_some_and(|n| n >= 1.0) {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(refused, "the broken certificate was never tried");
    assert_eq!(
        client_trusting(&first.0)
            .get(&url)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let second = self_signed_until(Some((2031, 1, 1)));
    write_files(certs.path(), &second);
    let mut served_new = false;
    for _ in 0..50 {
        if client_trusting(&second.0).get(&url).send().await.is_ok() {
            served_new = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(served_new, "the new certificate was never served");
    assert!(client_trusting(&first.0).get(&url).send().await.is_err());
    let text = scrape(second.0.clone()).await;
    assert_eq!(
        sample(&text, &expiry),
        Some(1_924_992_000.0),
        "the reloaded certificate's expiry, 2031-01-01: {text}"
    );
}

/// A server hashing at the real Argon2id cost with one hashing slot, and four logins of the
/// admin with the right password sent to it: one hashing and three queued behind it (each
/// already reserved against the lockout) when this returns.
async fn start_with_four_logins_in_flight() -> (
    Manual,
    Vec<tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>>,
) {
    let server = start_manual(
        |c| {
            c.hash_params = tessera_auth::password::HashParams::OWASP;
            c.max_concurrent_hashes = 1;
        },
        |_| ServeOptions {
            metrics_listener: None,
            tls: None,
            shutdown_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            force_shutdown: None,
        },
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/token", server.base);
    let logins: Vec<_> = (0..4)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                client
                    .post(url)
                    .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
                    .send()
                    .await
            })
        })
        .collect();
    let hasher = server.state.auth.hasher();
    for _ in 0..5000 {
        if hasher.in_flight() + hasher.queue_depth() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(hasher.in_flight() + hasher.queue_depth(), 4);
    (server, logins)
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish_then_stops() {
    let (mut server, logins) = start_with_four_logins_in_flight().await;
    let _ = server.stop.take().unwrap().send(());
    for login in logins {
        let res = login
            .await
            .unwrap()
            .expect("an accepted request is answered");
        assert_eq!(res.status(), 200);
    }
    server.task.await.unwrap().unwrap();
    assert!(
        reqwest::get(format!("{}/healthz", server.base))
            .await
            .is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn shutdown_lets_logins_whose_clients_left_finish_so_their_attempts_are_not_left_counted() {
    // A login reserves its attempt against the lockout (counted as a failure) before the
    // hash, and only its end clears it. The four logins' clients leave, and the server is
    // stopped at once.
    let (mut server, logins) = start_with_four_logins_in_flight().await;
    for login in &logins {
        login.abort();
    }
    let _ = server.stop.take().unwrap().send(());
    server.task.await.unwrap().unwrap();
    // Every login ran to its end before the database closed: each right password cleared
    // the count, so none is left (cut off by the exit, they stayed counted: with the
    // threshold at five, the next sign-in after a restart would lock the name).
    let failures = tessera_testkit::sqlite_query_text(
        server.dir.path(),
        "SELECT CAST(failures AS TEXT) FROM login_throttle",
    )
    .await;
    assert!(failures.is_empty(), "attempts left counted: {failures:?}");
    let logged_in = tessera_testkit::sqlite_query_text(
        server.dir.path(),
        "SELECT outcome FROM audit_log WHERE event = 'login'",
    )
    .await;
    assert_eq!(logged_in, ["success"; 4]);
}

#[tokio::test]
async fn shutdown_closes_idle_connections_at_once_and_the_rest_at_the_deadline() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut server = start_manual(
        |_| {},
        |_| ServeOptions {
            metrics_listener: None,
            tls: None,
            shutdown_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            force_shutdown: None,
        },
    )
    .await;
    let addr = server.base.replace("http://localhost", "127.0.0.1");
    // A keep-alive connection that has been answered and now waits for its next request.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    // A request whose head never ends: not idle, so shutdown waits for it, up to the deadline.
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = std::time::Instant::now();
    let _ = server.stop.take().unwrap().send(());
    let closed = tokio::time::timeout(Duration::from_millis(800), idle.read(&mut buf))
        .await
        .expect("the idle connection is closed at once");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    tokio::time::timeout(Duration::from_secs(10), &mut server.task)
        .await
        .expect("the server stops after the deadline")
        .unwrap()
        .unwrap();
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "stopped before the deadline ({took:?}) with a request still open"
    );
    let end = tokio::time::timeout(Duration::from_secs(2), stalled.read(&mut buf))
        .await
        .expect("the stalled connection was closed");
    assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
}
