//! Several real `tessera serve` processes on one PostgreSQL database, as behind a load
//! balancer: revocations, refresh rotation and key rotation must behave as one server.
//! Skipped loudly without PostgreSQL unless `TESSERA_REQUIRE_POSTGRES=1` (CI).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failure should panic with context"
)]

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use tessera_testkit::pg::TestDatabase;
use tessera_testkit::process::ServeProcess;

const ISSUER: &str = "http://auth.tessera.test";
const ADMIN_PASSWORD: &str = "three instances share one database";
const MASTER_KEY: &str = "51ed51ed51ed51ed51ed51ed51ed51ed51ed51ed51ed51ed51ed51ed51ed51ed";

/// One `tessera serve` process with its own (unused) data directory.
struct Instance {
    server: ServeProcess,
    _dir: tempfile::TempDir,
}

impl Instance {
    fn start(database_url: &str) -> Self {
        Self::start_with(database_url, &[])
    }

    /// With more environment: a variable named again here wins.
    fn start_with(database_url: &str, extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut envs = vec![
            ("TESSERA_DATABASE_URL", database_url),
            ("TESSERA_MASTER_KEY", MASTER_KEY),
            ("TESSERA_ISSUER", ISSUER),
            ("TESSERA_AUDIENCE", ISSUER),
            ("TESSERA_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("TESSERA_SIGNING__ALG", "ES256"),
            ("TESSERA_KEYS__PUBLISH_AHEAD", "0"),
        ];
        envs.retain(|(name, _)| !extra.iter().any(|(n, _)| n == name));
        envs.extend_from_slice(extra);
        let server =
            ServeProcess::start(Path::new(env!("CARGO_BIN_EXE_tessera")), dir.path(), &envs);
        Self { server, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        self.server.url(path)
    }
}

async fn json(res: reqwest::Response) -> serde_json::Value {
    let text = res.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

async fn login(http: &reqwest::Client, i: &Instance) -> serde_json::Value {
    let res = http
        .post(i.url("/token"))
        .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    json(res).await
}

/// The `kid` in a JWS's protected header.
fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: serde_json::Value =
        serde_json::from_slice(&tessera_jose::base64url::decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

async fn within<F, Fut>(limit: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_one_database_behave_as_one_server() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    // Start all three at once: migrations, the first signing key and the first admin must
    // each happen exactly once.
    let url = db.url().to_owned();
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let u = url.clone();
            std::thread::spawn(move || Instance::start(&u))
        })
        .collect();
    let [a, b, c]: [Instance; 3] = starts
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect::<Vec<_>>()
        .try_into()
        .ok()
        .unwrap();
    let http = reqwest::Client::new();

    // One JWKS everywhere.
    let jwks = |i: &Instance| {
        let req = http.get(i.url("/.well-known/jwks.json")).send();
        async move { json(req.await.unwrap()).await }
    };
    within(Duration::from_secs(3), || async {
        jwks(&a).await == jwks(&b).await && jwks(&b).await == jwks(&c).await
    })
    .await;
    assert_eq!(
        jwks(&a).await["keys"].as_array().unwrap().len(),
        1,
        "one first key, not three"
    );

    // Log in on A, refresh on B: one session across instances.
    let t = login(&http, &a).await;
    let r = http
        .post(b.url("/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = json(r).await;
    let access = r["access_token"].as_str().unwrap().to_owned();
    for i in [&a, &b, &c] {
        assert_eq!(
            http.get(i.url("/users/me"))
                .bearer_auth(&access)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }

    // Revoke on C (logout): refused on A and B within 1 s.
    let res = http
        .post(c.url("/logout"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut worst = Duration::ZERO;
    for i in [&a, &b] {
        let took = within(Duration::from_secs(1), || async {
            http.get(i.url("/users/me"))
                .bearer_auth(&access)
                .send()
                .await
                .unwrap()
                .status()
                == 401
        })
        .await;
        worst = worst.max(took);
    }
    eprintln!("cross-instance revocation latency (logout on C, refused on A and B): {worst:?}");

    // The same refresh token sent to A and B at once: one successor, no 5xx.
    let t = login(&http, &a).await;
    let rt = t["refresh_token"].as_str().unwrap().to_owned();
    let calls = (0..6).flat_map(|_| [&a, &b]).map(|i| {
        http.post(i.url("/token"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt.as_str()),
            ])
            .send()
    });
    let mut successors = HashSet::new();
    for res in futures_util::future::join_all(calls).await {
        let res = res.unwrap();
        assert_eq!(res.status(), 200);
        successors.insert(
            json(res).await["refresh_token"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(successors.len(), 1);

    // Key rotation on B: the same JWKS on all three, new tokens signed with the new key
    // everywhere, old tokens still valid.
    let old = login(&http, &c).await;
    let res = http
        .post(b.url("/admin/keys/rotate?now=true"))
        .bearer_auth(old["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let kid = json(res).await["kid"].as_str().unwrap().to_owned();
    within(Duration::from_secs(2), || async {
        let (ja, jb, jc) = (jwks(&a).await, jwks(&b).await, jwks(&c).await);
        ja == jb && jb == jc && ja.to_string().contains(&kid)
    })
    .await;
    for i in [&a, &b, &c] {
        within(Duration::from_secs(2), || async {
            let t = login(&http, i).await;
            let header = t["access_token"]
                .as_str()
                .unwrap()
                .split('.')
                .next()
                .unwrap()
                .to_owned();
            let header: serde_json::Value =
                serde_json::from_slice(&tessera_jose::base64url::decode(header).unwrap()).unwrap();
            header["kid"] == kid.as_str()
        })
        .await;
        let status = http
            .get(i.url("/users/me"))
            .bearer_auth(old["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(
            status,
            200,
            "a token of the retired key still verifies on {}",
            i.server.base()
        );
    }

    // Every connection killed (as in a database restart): each instance recovers alone.
    db.terminate_connections().await;
    let fresh = within(Duration::from_secs(10), || async {
        http.post(a.url("/token"))
            .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    eprintln!("instance A served logins again {fresh:?} after its connections were killed");
    let t = login(&http, &b).await;
    let access = t["access_token"].as_str().unwrap().to_owned();
    let res = http
        .post(b.url("/logout"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    within(Duration::from_secs(3), || async {
        http.get(c.url("/users/me"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap()
            .status()
            == 401
    })
    .await;
}

/// `tessera keys revoke` stopped (SIGKILL) the moment the revocation is stored, as a crash,
/// a Ctrl-C or a dropped SSH session would stop it: no instance may go on signing with the
/// revoked key or accepting its tokens. The revocation used to be stored first and the
/// successor generated after it (seconds for a 4096-bit RSA key); meanwhile, and for good
/// once the command was stopped, the stored keys had no signer and every instance kept the
/// ring it had, revoked key included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revocation_cut_short_leaves_no_instance_on_the_revoked_key() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let url = db.url().to_owned();
    let rsa = [("TESSERA_SIGNING__ALG", "RS256")];
    let (a, b) = (
        Instance::start_with(&url, &rsa),
        Instance::start_with(&url, &rsa),
    );
    let http = reqwest::Client::new();
    let old = login(&http, &a).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let kid = kid_of(&old);

    let dir = tempfile::tempdir().unwrap();
    let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["keys", "revoke", &kid])
        .envs([
            ("TESSERA_DATABASE_URL", url.as_str()),
            ("TESSERA_MASTER_KEY", MASTER_KEY),
            ("TESSERA_ISSUER", ISSUER),
            ("TESSERA_AUDIENCE", ISSUER),
            ("TESSERA_SIGNING__ALG", "RS256"),
            // The slowest key to generate: the widest window to stop the command in.
            ("TESSERA_SIGNING__RSA_BITS", "4096"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let revoked: bool =
            sqlx::query_scalar("SELECT revoked_at IS NOT NULL FROM signing_keys WHERE kid = $1")
                .bind(&kid)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        if revoked {
            break;
        }
        if let Some(status) = cli.try_wait().unwrap() {
            panic!("`keys revoke` ended ({status}) without revoking {kid}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "`keys revoke` stored no revocation within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _ = cli.kill();
    let _ = cli.wait();

    for i in [&a, &b] {
        within(Duration::from_secs(3), || async {
            let status = http
                .get(i.url("/users/me"))
                .bearer_auth(&old)
                .send()
                .await
                .unwrap()
                .status();
            let fresh = login(&http, i).await;
            status == 401 && kid_of(fresh["access_token"].as_str().unwrap()) != kid
        })
        .await;
        let jwks = http
            .get(i.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            !jwks.contains(&kid),
            "{} still publishes {kid}",
            i.server.base()
        );
    }
}

/// A login with the old password that is still being checked on one instance (here held in
/// its hashing queue, as under load) while the password is changed on another, or the user
/// disabled, must not leave a session behind: the change ends every session, and this one
/// used to be stored just after, with a refresh token that went on working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_in_flight_across_a_password_change_on_another_instance_gets_no_session() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let url = db.url().to_owned();
    let a = Instance::start(&url);
    // One hash at a time and no per-IP limit: a queue is easy to build.
    let q = Instance::start_with(
        &url,
        &[
            ("TESSERA_LIMITS__MAX_CONCURRENT_HASHES", "1"),
            ("TESSERA_RATE_LIMITS__TOKEN_PER_MINUTE", "0"),
        ],
    );
    let http = reqwest::Client::new();
    let admin = login(&http, &a).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let old = "the password before the change";
    let new = "the password after the change";
    // An imported bcrypt hash is rehashed (to Argon2id) by the login that checks it: that
    // rehash, of the old password, used to replace the new one.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.jsonl");
    std::fs::write(
        &file,
        format!(
            "{}\n",
            serde_json::json!({"username": "imp", "hash": bcrypt::hash(old, 4).unwrap()})
        ),
    )
    .unwrap();
    let imported = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("--data-dir")
        .arg(dir.path())
        .arg("users")
        .arg("import")
        .arg(&file)
        .envs([
            ("TESSERA_DATABASE_URL", url.as_str()),
            ("TESSERA_MASTER_KEY", MASTER_KEY),
            ("TESSERA_SIGNING__ALG", "ES256"),
        ])
        .output()
        .unwrap();
    assert!(imported.status.success(), "{imported:?}");
    for (name, change) in [
        ("pat", "/password"),
        ("dee", "/disable"),
        ("imp", "/password"),
        ("del", ""),
    ] {
        if name != "imp" {
            let res = http
                .post(a.url("/admin/users"))
                .bearer_auth(&admin)
                .json(&serde_json::json!({"username": name, "password": old, "roles": ["user"]}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 201);
        }
        // Logins of unknown users fill Q's hashing queue...
        let filler: Vec<_> = (0..40)
            .map(|i| {
                http.post(q.url("/token"))
                    .form(&[
                        ("username", format!("nobody{i}")),
                        ("password", "not anybody's password".to_owned()),
                    ])
                    .send()
            })
            .collect();
        let filler = tokio::spawn(futures_util::future::join_all(filler));
        tokio::time::sleep(Duration::from_millis(200)).await;
        // ...so this one reads the user now and checks the password after the change.
        let racing = tokio::spawn(
            http.post(q.url("/token"))
                .form(&[("username", name), ("password", old)])
                .send(),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        // An empty change deletes the user.
        let target = a.url(&format!("/admin/users/{name}{change}"));
        let res = if change.is_empty() {
            http.delete(target)
        } else {
            http.post(target)
        }
        .bearer_auth(&admin)
        .json(&serde_json::json!({"password": new}))
        .send()
        .await
        .unwrap();
        assert!(res.status().is_success(), "{change}: {}", res.status());
        assert!(
            !racing.is_finished(),
            "the login finished before the change: the queue was too short to race it"
        );
        let res = racing.await.unwrap().unwrap();
        let status = res.status();
        let body = json(res).await;
        filler.await.unwrap();
        if status == 200 {
            let refreshed = http
                .post(a.url("/token"))
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", body["refresh_token"].as_str().unwrap()),
                ])
                .send()
                .await
                .unwrap()
                .status();
            let me = http
                .get(a.url("/users/me"))
                .bearer_auth(body["access_token"].as_str().unwrap())
                .send()
                .await
                .unwrap()
                .status();
            panic!(
                "{change}: the login with the old password got tokens (refresh: {refreshed}, /users/me: {me})"
            );
        }
        assert_eq!(status, 400, "{change}: {body}");
        assert_eq!(body["error"], "invalid_grant", "{change}: {body}");
        // The audit trail ends with the refusal: the `login` / `success` row stored with
        // the session is followed by a `login` / `failure` one naming the reason.
        let audit = json(
            http.get(a.url("/admin/audit?limit=1000"))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap(),
        )
        .await;
        let last = audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .rfind(|e| e["event"] == "login" && e["username"] == name)
            .cloned()
            .unwrap_or_default();
        assert_ne!(last["outcome"], "success", "{change}: {last}");
        if change == "/password" {
            for (password, want) in [(new, 200), (old, 400)] {
                let res = http
                    .post(a.url("/token"))
                    .form(&[("username", name), ("password", password)])
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), want, "{name} with {password:?}");
            }
        }
    }
}
