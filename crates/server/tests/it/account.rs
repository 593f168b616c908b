//! Account security: TOTP enrolment and MFA logins, lockout, rate limits, password policy
//! and changes, bcrypt imports, and self-service sessions.

use tessera_auth::Actor;
use tessera_testkit::{TestApp, spawn_app, spawn_app_with};

use crate::{claims_of, json};

const PW: &str = "violet gramophone harbour";

/// The code an authenticator app shows for `secret` (base32) at `time`.
fn code_at(secret: &str, time: i64) -> String {
    let t = totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(secret).unwrap())
        .build()
        .unwrap();
    t.generate(u64::try_from(time).unwrap()).to_string()
}

/// Enrols `user` and returns (secret, recovery codes).
async fn enrol(app: &TestApp, access_token: &str) -> (String, Vec<String>) {
    let res = app
        .client
        .post(app.url("/users/me/mfa/totp"))
        .json(&serde_json::json!({"password": PW}))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let e = json(res).await;
    let secret = e["secret"].as_str().unwrap().to_owned();
    assert!(
        e["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/Tessera:")
    );
    assert!(e["qr_svg"].as_str().unwrap().contains("<svg"));
    let res = app
        .client
        .post(app.url("/users/me/mfa/totp/confirm"))
        .bearer_auth(access_token)
        .json(&serde_json::json!({"code": code_at(&secret, app.now())}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let codes: Vec<String> = json(res).await["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    (secret, codes)
}

async fn mfa_login(app: &TestApp, user: &str) -> String {
    let res = app.password_grant(user, PW).await;
    assert_eq!(res.status(), 403);
    let body = json(res).await;
    assert_eq!(body["error"], "mfa_required");
    body["mfa_token"].as_str().unwrap().to_owned()
}

async fn mfa_grant(app: &TestApp, token: &str, field: &str, value: &str) -> reqwest::Response {
    app.post_token(&[
        ("grant_type", "urn:tessera:params:oauth:grant-type:mfa-otp"),
        ("mfa_token", token),
        (field, value),
    ])
    .await
}

/// A bearer token alone cannot turn on a second factor (whose secret and recovery codes
/// only the token's holder would then have): enrolment needs the password, and wrong
/// passwords there are bounded like logins, per session.
#[tokio::test]
async fn totp_enrolment_needs_the_password_and_counts_wrong_ones() {
    let app = spawn_app().await;
    app.create_user("trent", PW, &["user"]).await;
    let t = app.login("trent", PW).await;
    let begin = |body: serde_json::Value| {
        app.client
            .post(app.url("/users/me/mfa/totp"))
            .bearer_auth(&t.access_token)
            .json(&body)
            .send()
    };
    let res = begin(serde_json::json!({})).await.unwrap();
    assert_eq!(res.status(), 400);
    for _ in 0..5 {
        let res = begin(serde_json::json!({"password": "not trent's password"}))
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        assert_eq!(json(res).await["error"], "invalid_credentials");
    }
    // The fifth wrong password locked this session's password checks: the right one is
    // refused until the lock ends (or an admin lifts it).
    let res = begin(serde_json::json!({"password": PW})).await.unwrap();
    assert_eq!(res.status(), 429);
    let user = app.state.auth.find_user("trent").await.unwrap();
    assert!(!user.totp_enabled);
    app.state
        .auth
        .unlock(&user, &Actor::Cli, &Default::default())
        .await
        .unwrap();
    let res = begin(serde_json::json!({"password": PW})).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(json(res).await["secret"].is_string());
}

#[tokio::test]
async fn totp_enrolment_and_mfa_login_end_to_end() {
    let app = spawn_app().await;
    app.create_user("mallory", PW, &["user"]).await;
    let first = app.login("mallory", PW).await;
    let (secret, recovery) = enrol(&app, &first.access_token).await;
    assert_eq!(recovery.len(), 10);
    // Enrolling again while on is refused.
    let again = app
        .client
        .post(app.url("/users/me/mfa/totp"))
        .json(&serde_json::json!({"password": PW}))
        .bearer_auth(&first.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);

    // The password alone now yields a challenge, not tokens.
    app.advance(30).await;
    let token = mfa_login(&app, "mallory").await;
    let res = mfa_grant(&app, &token, "otp", &code_at(&secret, app.now())).await;
    assert_eq!(res.status(), 200);
    let t = json(res).await;
    assert_eq!(
        claims_of(t["access_token"].as_str().unwrap())["amr"],
        serde_json::json!(["pwd", "otp"])
    );
    assert!(t["refresh_token"].is_string());
    // The challenge is single-use.
    let res = mfa_grant(&app, &token, "otp", &code_at(&secret, app.now())).await;
    assert_eq!(json(res).await["error"], "invalid_grant");
}

#[tokio::test]
async fn a_code_works_once_and_skew_is_one_step() {
    let app = spawn_app().await;
    app.create_user("niaj", PW, &[]).await;
    let (secret, _) = enrol(&app, &app.login("niaj", PW).await.access_token).await;
    app.advance(120).await;
    let now = app.now();
    // Replay: the same code in a second login is refused.
    let code = code_at(&secret, now);
    assert_eq!(
        mfa_grant(&app, &mfa_login(&app, "niaj").await, "otp", &code)
            .await
            .status(),
        200
    );
    let res = mfa_grant(&app, &mfa_login(&app, "niaj").await, "otp", &code).await;
    assert_eq!(res.status(), 400, "a code is accepted at most once");
    // The previous step is accepted only if newer than the last accepted one: move on first.
    app.advance(60).await;
    let now = app.now();
    let token = mfa_login(&app, "niaj").await;
    assert_eq!(
        mfa_grant(&app, &token, "otp", &code_at(&secret, now - 60))
            .await
            .status(),
        400,
        "two steps old"
    );
    assert_eq!(
        mfa_grant(&app, &token, "otp", &code_at(&secret, now - 30))
            .await
            .status(),
        200,
        "one step of skew"
    );
}

#[tokio::test]
async fn recovery_codes_work_once() {
    let app = spawn_app().await;
    app.create_user("olivia", PW, &[]).await;
    let (_, codes) = enrol(&app, &app.login("olivia", PW).await.access_token).await;
    let res = mfa_grant(
        &app,
        &mfa_login(&app, "olivia").await,
        "recovery_code",
        &codes[3].to_lowercase(),
    )
    .await;
    assert_eq!(res.status(), 200, "case and dashes do not matter");
    assert_eq!(
        claims_of(json(res).await["access_token"].as_str().unwrap())["amr"],
        serde_json::json!(["pwd", "mfa"])
    );
    let res = mfa_grant(
        &app,
        &mfa_login(&app, "olivia").await,
        "recovery_code",
        &codes[3],
    )
    .await;
    assert_eq!(res.status(), 400, "single use");
}

#[tokio::test]
async fn wrong_codes_burn_the_challenge_and_lock_the_second_factor() {
    let app = spawn_app_with(|c| c.rate_mfa_per_minute = 0).await;
    app.create_user("peggy", PW, &[]).await;
    let (secret, _) = enrol(&app, &app.login("peggy", PW).await.access_token).await;
    app.advance(60).await;
    let token = mfa_login(&app, "peggy").await;
    for _ in 0..5 {
        assert_eq!(mfa_grant(&app, &token, "otp", "000000").await.status(), 400);
    }
    // Burnt after five wrong codes, even with the right one now; and the user's second
    // factor is locked for a while.
    let res = mfa_grant(&app, &token, "otp", &code_at(&secret, app.now())).await;
    assert_eq!(res.status(), 400);
    let res = mfa_grant(
        &app,
        &mfa_login(&app, "peggy").await,
        "otp",
        &code_at(&secret, app.now()),
    )
    .await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    app.advance(61).await;
    let res = mfa_grant(
        &app,
        &mfa_login(&app, "peggy").await,
        "otp",
        &code_at(&secret, app.now()),
    )
    .await;
    assert_eq!(res.status(), 200, "the lock is bounded");
}

#[tokio::test]
async fn disabling_totp_needs_the_password_and_a_code_and_admins_can_reset_it() {
    let app = spawn_app().await;
    let user = app.create_user("quentin", PW, &[]).await;
    let t = app.login("quentin", PW).await;
    let (secret, _) = enrol(&app, &t.access_token).await;
    app.advance(30).await;
    let disable = |password: &str, code: String| {
        app.client
            .post(app.url("/users/me/mfa/totp/disable"))
            .bearer_auth(&t.access_token)
            .json(&serde_json::json!({"password": password, "code": code}))
            .send()
    };
    assert_eq!(
        disable("wrong password here", code_at(&secret, app.now()))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(disable(PW, "123456".into()).await.unwrap().status(), 403);
    assert_eq!(
        disable(PW, code_at(&secret, app.now()))
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        app.password_grant("quentin", PW).await.status(),
        200,
        "password alone again"
    );
    // Admin reset, audited.
    let t = app.login("quentin", PW).await;
    enrol(&app, &t.access_token).await;
    app.state
        .auth
        .reset_mfa(&user, &Actor::Cli, &Default::default())
        .await
        .unwrap();
    assert_eq!(app.password_grant("quentin", PW).await.status(), 200);
    use tessera_auth::store::AuditStore as _;
    let rows = app.state.db().list_audit(0, None, None, 200).await.unwrap();
    for e in ["mfa_enabled", "mfa_disabled", "mfa_reset"] {
        assert!(rows.iter().any(|r| r.event.event == e), "{e} audited");
    }
}

#[tokio::test]
async fn repeated_failures_lock_a_username_whether_or_not_it_exists() {
    let app = spawn_app_with(|c| c.rate_token_per_minute = 0).await;
    app.create_user("rupert", PW, &[]).await;
    for name in ["rupert", "no-such-user"] {
        for _ in 0..5 {
            assert_eq!(
                json(app.password_grant(name, "wrong guess 123").await).await["error_description"],
                "Incorrect username or password"
            );
        }
    }
    let real = app.password_grant("rupert", PW).await;
    let ghost = app.password_grant("no-such-user", PW).await;
    assert_eq!(real.status(), 400);
    assert_eq!(real.headers()["retry-after"], "60");
    assert_eq!(ghost.headers()["retry-after"], "60");
    let (real, ghost) = (json(real).await, json(ghost).await);
    assert_eq!(real, ghost, "a lockout reveals nothing about the account");
    assert!(
        real["error_description"]
            .as_str()
            .unwrap()
            .contains("too many failed attempts")
    );
    // Bounded: the lock ends; the next failure is answered as one (no other failure came
    // in between, so nothing was raced) and locks for twice as long.
    app.advance(60).await;
    let res = app.password_grant("rupert", "wrong guess 123").await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        json(res).await["error_description"],
        "Incorrect username or password"
    );
    assert_eq!(
        app.password_grant("rupert", PW).await.headers()["retry-after"],
        "120"
    );
    app.advance(120).await;
    assert_eq!(
        app.password_grant("rupert", PW).await.status(),
        200,
        "success clears the count"
    );
    for _ in 0..5 {
        let _ = app.password_grant("rupert", "wrong guess 123").await;
    }
    // Admins can unlock.
    let admin = app.admin_login().await;
    let res = app
        .client
        .post(app.url("/admin/users/rupert/unlock"))
        .bearer_auth(&admin.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(app.password_grant("rupert", PW).await.status(), 200);
}

/// The lockout's table held each name as typed (`user:<name>`) for as long as its failures
/// counted, and what is typed in the username field is often a password (OWASP Logging
/// Cheat Sheet). It now holds a keyed hash of the name; the lock works as before, and a row
/// of the old form (written by an instance of the version before, during a rolling
/// upgrade) locks nobody.
#[tokio::test]
async fn the_lockout_table_does_not_hold_names_as_typed() {
    let app = spawn_app_with(|c| c.rate_token_per_minute = 0).await;
    app.create_user("olga", PW, &[]).await;
    app.create_user("piet", PW, &[]).await;
    // A user's name, a name no user has, and text that is no username at all.
    let typed = ["Olga", "Tr0ub4dor-and-3", "my password is long"];
    for name in typed {
        for _ in 0..5 {
            let res = app.password_grant(name, "wrong guess 123").await;
            assert_eq!(res.status(), 400, "{name}");
        }
        let res = app.password_grant(name, PW).await;
        assert!(
            res.headers().contains_key("retry-after"),
            "{name} is locked"
        );
    }
    let keys = app.query_text("SELECT key FROM login_throttle").await;
    assert_eq!(keys.len(), typed.len(), "{keys:?}");
    for key in &keys {
        assert!(key.starts_with("username:"), "{key}");
        for name in typed {
            assert!(
                !key.to_lowercase().contains(&name.to_lowercase()),
                "{key} holds {name:?}"
            );
        }
    }
    // `tessera users show` finds the lock of a user by name.
    assert!(app.state.auth.locked_until("olga").await.unwrap().is_some());
    assert!(app.state.auth.locked_until("piet").await.unwrap().is_none());
    let now = app.now();
    app.execute_sql(&format!(
        "INSERT INTO login_throttle (key, failures, locked_until, last_failure_at)
         VALUES ('user:piet', 9, {}, {now})",
        now + 3600
    ))
    .await;
    assert_eq!(app.password_grant("piet", PW).await.status(), 200);
}

/// An app whose password checks queue behind one hashing thread at a cost of a few
/// milliseconds each, so that a burst of guesses is all admitted before any is answered.
async fn spawn_app_with_a_slow_hashing_queue() -> TestApp {
    spawn_app_with(slow_hashing).await
}

fn slow_hashing(c: &mut tessera_server::config::Config) {
    c.rate_token_per_minute = 0;
    c.max_concurrent_hashes = 1;
    c.max_queued_logins = 64;
    c.hash_params = tessera_auth::password::HashParams {
        memory_kib: 4096,
        iterations: 2,
        parallelism: 1,
    };
}

/// Waits until at least `n` password checks wait for the hashing thread.
async fn wait_for_queued_checks(app: &TestApp, n: usize) {
    for _ in 0..2000 {
        if app.state.auth.hasher().queue_depth() >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("{n} password checks never queued");
}

#[tokio::test]
async fn a_burst_of_concurrent_guesses_gets_no_more_than_the_threshold_checked() {
    let app = spawn_app_with_a_slow_hashing_queue().await;
    burst_of_guesses(&[&app]).await;
}

#[tokio::test]
async fn a_burst_of_concurrent_guesses_at_two_instances_gets_no_more_than_the_threshold_checked_on_postgres()
 {
    let Some(db) = tessera_testkit::pg::TestDatabase::create().await else {
        return;
    };
    let a = tessera_testkit::spawn_app_on(Some(db.url()), slow_hashing).await;
    let b = tessera_testkit::spawn_app_on(Some(db.url()), slow_hashing).await;
    burst_of_guesses(&[&a, &b]).await;
}

/// Sixteen wrong guesses sent at once, spread over `apps` (instances of one database).
/// Each reserves its attempt before its password is checked, and the fifth reservation
/// locks the name: five guesses are checked and answered as such, the other eleven are
/// refused unchecked, and so is the right password after them. (With the lock read after
/// the check, all sixteen were hashed, and a right password racing the fifth failure
/// could log in.)
async fn burst_of_guesses(apps: &[&TestApp]) {
    let app = apps[0];
    app.create_user("ursula", PW, &[]).await;
    let checks = || -> u64 {
        apps.iter()
            .map(|a| a.state.auth.hasher().verifications())
            .sum()
    };
    let checks_before = checks();
    let guesses: Vec<_> = (0..16)
        .map(|i| {
            let app = apps[i % apps.len()];
            let (client, url) = (app.client.clone(), app.url("/token"));
            tokio::spawn(async move {
                let guess = format!("wrong guess number {i}");
                let res = client
                    .post(url)
                    .form(&[("username", "ursula"), ("password", guess.as_str())])
                    .send()
                    .await
                    .unwrap();
                (res.status(), json(res).await)
            })
        })
        .collect();
    let mut incorrect = 0;
    for guess in guesses {
        let (status, body) = guess.await.unwrap();
        assert_eq!(status, 400, "{body}");
        let description = body["error_description"].as_str().unwrap();
        if description == "Incorrect username or password" {
            incorrect += 1;
        } else {
            assert!(description.contains("too many failed attempts"), "{body}");
        }
    }
    assert_eq!(
        incorrect, 5,
        "only the threshold's failures are answered as such"
    );
    let right = app.password_grant("ursula", PW).await;
    assert_eq!(right.status(), 400);
    assert!(right.headers().contains_key("retry-after"));
    let body = json(right).await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("too many failed attempts"),
        "the right password gets the lock's answer: {body}"
    );
    assert_eq!(
        checks() - checks_before,
        5,
        "only the threshold's guesses reached the password check"
    );
}

#[tokio::test]
async fn a_burst_of_logins_with_the_right_password_is_not_locked_out() {
    // The other side of reserving attempts: logins still in flight count as failures
    // until they succeed, so a burst of right ones (a service account, a load test) must
    // not lock its own name. They queue per name and all log in.
    let app = spawn_app_with_a_slow_hashing_queue().await;
    app.create_user("ulrich", PW, &[]).await;
    let logins: Vec<_> = (0..12)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url("/token"));
            tokio::spawn(async move {
                let res = client
                    .post(url)
                    .form(&[("username", "ulrich"), ("password", PW)])
                    .send()
                    .await
                    .unwrap();
                (res.status(), json(res).await)
            })
        })
        .collect();
    for login in logins {
        let (status, body) = login.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
}

/// A hash slow enough (64 MiB, three passes) for a client to hang up in the middle of it.
const SLOW_HASH: tessera_auth::password::HashParams = tessera_auth::password::HashParams {
    memory_kib: 65536,
    iterations: 3,
    parallelism: 1,
};

/// A login is counted as a failed attempt from its reservation until its answer: one the
/// client gave up on half way (a flaky network, its own timeout) was dropped with it and
/// stayed counted, so that a few cut-off logins locked the name, right password or not.
/// Logins now run to their end whoever is still waiting for them.
#[tokio::test]
async fn logins_whose_clients_gave_up_do_not_lock_the_name() {
    use tessera_auth::store::SecurityStore as _;
    let app = spawn_app_with(|c| {
        c.rate_token_per_minute = 0;
        c.hash_params = SLOW_HASH;
    })
    .await;
    app.create_user("ulrich", PW, &[]).await;
    let failures = || async {
        app.state
            .db()
            .find_throttle(&app.state.auth.username_throttle_key("ulrich"))
            .await
            .unwrap()
            .map_or(0, |t| t.failures)
    };
    for _ in 0..6 {
        let before = failures().await;
        let (client, url) = (app.client.clone(), app.url("/token"));
        let login = tokio::spawn(async move {
            client
                .post(url)
                .form(&[("username", "ulrich"), ("password", PW)])
                .send()
                .await
        });
        // Reserved, so being checked: the client hangs up.
        for _ in 0..5000 {
            if failures().await > before {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        login.abort();
        // The login goes on to its end and clears its count.
        for _ in 0..300 {
            if failures().await == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    let res = app.password_grant("ulrich", PW).await;
    assert_eq!(res.status(), 200, "{}", json(res).await);
}

#[tokio::test]
async fn password_checks_whose_clients_gave_up_do_not_lock_the_session() {
    // The current password a signed-in user gives is reserved against the session's own
    // lock before the hash, as a login's is against the username's: a check cut off half
    // way (the client hangs up, the request times out) must still settle its count, or a
    // few of them lock the owner's session out of its own password change, right password
    // or not.
    let app = spawn_app_with(|c| {
        c.rate_mfa_per_minute = 0;
        c.hash_params = SLOW_HASH;
    })
    .await;
    app.create_user("ursula", PW, &[]).await;
    let t = app.login("ursula", PW).await;
    let counted = || app.query_text("SELECT key FROM login_throttle WHERE key LIKE 'reauth:%'");
    let hasher = app.state.auth.hasher();
    for _ in 0..6 {
        let (client, url, token) = (
            app.client.clone(),
            app.url("/users/me/mfa/totp"),
            t.access_token.clone(),
        );
        let begin = tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&serde_json::json!({ "password": PW }))
                .send()
                .await
        });
        // Reserved, so being checked: the client hangs up.
        for _ in 0..5000 {
            if hasher.in_flight() + hasher.queue_depth() > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert!(hasher.in_flight() + hasher.queue_depth() > 0);
        begin.abort();
        // The check goes on to its end and clears its count.
        for _ in 0..300 {
            if counted().await.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(counted().await, Vec::<String>::new());
    }
    let res = app
        .client
        .post(app.url("/users/me/mfa/totp"))
        .bearer_auth(&t.access_token)
        .json(&serde_json::json!({ "password": PW }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", json(res).await);
}

#[tokio::test]
async fn a_password_check_the_hashing_queue_could_not_take_is_given_back() {
    // As at login: a current password refused unchecked (503, the hashing queue full) was
    // no guess answered, so it must not stay counted against the session's lock, or an
    // overloaded server locks its signed-in users out of their own password checks.
    let app = spawn_app_with(|c| {
        c.rate_token_per_minute = 0;
        c.max_concurrent_hashes = 1;
        c.max_queued_logins = 0;
        // A hash slow enough to send a request in the middle of.
        c.hash_params = tessera_auth::password::HashParams {
            memory_kib: 65536,
            iterations: 12,
            parallelism: 1,
        };
    })
    .await;
    app.create_user("ulla", PW, &[]).await;
    let t = app.login("ulla", PW).await;
    let hasher = app.state.auth.hasher();
    // A login holds the only hashing slot.
    let (client, url) = (app.client.clone(), app.url("/token"));
    let login = tokio::spawn(async move {
        client
            .post(url)
            .form(&[("username", "ulla"), ("password", PW)])
            .send()
            .await
    });
    for _ in 0..5000 {
        if hasher.in_flight() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let res = app
        .client
        .post(app.url("/users/me/password"))
        .bearer_auth(&t.access_token)
        .json(&serde_json::json!({
            "current_password": PW,
            "new_password": "another fine horse battery 2"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503, "{}", json(res).await);
    assert_eq!(login.await.unwrap().unwrap().status(), 200);
    // Given back: no failure left counted (the row may stay, at zero).
    assert_eq!(
        app.query_text("SELECT key FROM login_throttle WHERE key LIKE 'reauth:%' AND failures > 0")
            .await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_token_holder_guessing_the_current_password_is_bounded_per_session() {
    // A stolen access token is no password oracle: its session's checks lock after the
    // threshold like logins do. But that lock is the session's, not the username's, so
    // the owner still signs in (and could change the password from there).
    let app = spawn_app_with(|c| c.rate_token_per_minute = 0).await;
    app.create_user("vernon", PW, &[]).await;
    let t = app.login("vernon", PW).await;
    let change = |current: &str| {
        app.client
            .post(app.url("/users/me/password"))
            .bearer_auth(&t.access_token)
            .json(&serde_json::json!({
                "current_password": current,
                "new_password": "another fine horse battery 2"
            }))
            .send()
    };
    for _ in 0..5 {
        assert_eq!(change("wrong guess 123").await.unwrap().status(), 403);
    }
    // Locked now: the right current password gets the same answer as a wrong one.
    for current in ["wrong guess 123", PW] {
        let res = change(current).await.unwrap();
        assert_eq!(res.status(), 429, "{current}");
        assert_eq!(res.headers()["retry-after"], "60");
    }
    assert_eq!(
        app.password_grant("vernon", PW).await.status(),
        200,
        "the username is not locked by the session's guesses"
    );
    app.advance(60).await;
    // Once the lock has passed, the right password changes it and clears the count.
    assert_eq!(change(PW).await.unwrap().status(), 204);
    assert_eq!(
        app.password_grant("vernon", "another fine horse battery 2")
            .await
            .status(),
        200
    );
}

/// An admin unlock lifted the username's lock, the code lock and the password-check locks
/// of the user's live sessions, but not two that still refused the owner (429): the lock of
/// a token without a session (`reauth:user:<id>`), and that of a session whose idle end has
/// passed while its access token still works (`refresh_token_ttl` shorter than
/// `access_token_ttl`).
#[tokio::test]
async fn an_unlock_lifts_the_password_check_locks_of_every_token_the_user_still_has() {
    let app = spawn_app_with(|c| {
        c.rate_token_per_minute = 0;
        c.refresh_token_ttl = 60;
        c.access_token_ttl = 900;
        // Locks that outlast the session's idle end.
        c.security.lockout_base = 600;
    })
    .await;
    app.create_user("xena", PW, &[]).await;
    let in_session = app.login("xena", PW).await.access_token;
    let mut claims = claims_of(&in_session);
    claims.as_object_mut().unwrap().remove("sid");
    let sessionless = crate::token_cache::signed_like_the_server(&app, &claims, true);
    // Starting a TOTP enrolment checks the password and changes nothing that matters here.
    let check = |token: &str, password: &str| {
        app.client
            .post(app.url("/users/me/mfa/totp"))
            .bearer_auth(token)
            .json(&serde_json::json!({"password": password}))
            .send()
    };
    for token in [&sessionless, &in_session] {
        for _ in 0..5 {
            assert_eq!(check(token, "wrong guess 123").await.unwrap().status(), 403);
        }
        assert_eq!(check(token, PW).await.unwrap().status(), 429, "locked");
    }
    // The session's idle end passes; its access token, and both locks, do not.
    app.advance(61).await;
    assert!(app.state.auth.list_sessions(None).await.unwrap().is_empty());
    assert_eq!(app.me(&in_session).await.status(), 200);
    assert_eq!(check(&in_session, PW).await.unwrap().status(), 429);
    let admin = app.admin_login().await;
    let res = app
        .client
        .post(app.url("/admin/users/xena/unlock"))
        .bearer_auth(&admin.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    for (what, token) in [
        ("without a session", &sessionless),
        ("idle-ended", &in_session),
    ] {
        assert_eq!(check(token, PW).await.unwrap().status(), 200, "{what}");
    }
}

#[tokio::test]
async fn the_owner_can_change_the_password_and_manage_totp_while_the_name_is_locked() {
    owner_secures_a_locked_name(None).await;
}

#[tokio::test]
async fn the_owner_can_change_the_password_and_manage_totp_while_the_name_is_locked_on_postgres() {
    let Some(db) = tessera_testkit::pg::TestDatabase::create().await else {
        return;
    };
    owner_secures_a_locked_name(Some(db.url())).await;
}

/// Someone guessing at the login form has locked the name. The owner, signed in, can
/// still secure the account: the current password they give is checked under their
/// session's own bound, not the name's lock (which used to refuse it with 429).
async fn owner_secures_a_locked_name(database_url: Option<&str>) {
    let app = tessera_testkit::spawn_app_on(database_url, |c| {
        c.rate_token_per_minute = 0;
        c.rate_mfa_per_minute = 0;
    })
    .await;
    app.create_user("wendy", PW, &[]).await;
    let t = app.login("wendy", PW).await;
    for _ in 0..5 {
        assert_eq!(
            app.password_grant("wendy", "attacker guess").await.status(),
            400
        );
    }
    let locked = app.password_grant("wendy", PW).await;
    assert_eq!(locked.status(), 400);
    assert!(
        locked.headers().contains_key("retry-after"),
        "the name is locked"
    );
    // TOTP enrolment and its confirmation work.
    let (secret, _) = enrol(&app, &t.access_token).await;
    assert!(!secret.is_empty());
    // So does the password change; it also lifts the name's lock (those guesses were at
    // the password just replaced).
    let res = app
        .client
        .post(app.url("/users/me/password"))
        .bearer_auth(&t.access_token)
        .json(&serde_json::json!({
            "current_password": PW,
            "new_password": "another fine horse battery 2"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = app
        .password_grant("wendy", "another fine horse battery 2")
        .await;
    assert_eq!(res.status(), 403, "the new password and then the code");
    assert_eq!(json(res).await["error"], "mfa_required");
}

/// The name's lock is lifted by a password change because the guesses were at the password
/// replaced. A change that is refused (a new password the policy rejects) replaces nothing:
/// the lock must stay, or the owner's mistyped change would give whoever is guessing a
/// fresh `lockout.threshold` guesses at the password still in force.
#[tokio::test]
async fn a_refused_password_change_leaves_the_names_lock_in_place() {
    let app = spawn_app_with(|c| {
        c.rate_token_per_minute = 0;
    })
    .await;
    app.create_user("yara", PW, &[]).await;
    let t = app.login("yara", PW).await;
    for _ in 0..5 {
        assert_eq!(
            app.password_grant("yara", "attacker guess").await.status(),
            400
        );
    }
    assert!(
        app.password_grant("yara", PW)
            .await
            .headers()
            .contains_key("retry-after"),
        "the name is locked"
    );
    let res = app
        .client
        .post(app.url("/users/me/password"))
        .bearer_auth(&t.access_token)
        .json(&serde_json::json!({"current_password": PW, "new_password": "short"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422, "the new password is too weak");
    let res = app.password_grant("yara", PW).await;
    assert_eq!(
        res.status(),
        400,
        "still locked: the password did not change"
    );
    assert!(res.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn a_login_that_is_not_stored_does_not_clear_the_names_failures() {
    login_clears_failures_with_its_session(
        None,
        "CREATE TRIGGER fail_sessions BEFORE INSERT ON sessions
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        "DROP TRIGGER fail_sessions",
    )
    .await;
}

#[tokio::test]
async fn a_login_that_is_not_stored_does_not_clear_the_names_failures_on_postgres() {
    let Some(db) = tessera_testkit::pg::TestDatabase::create().await else {
        return;
    };
    login_clears_failures_with_its_session(
        Some(db.url()),
        "CREATE FUNCTION fail_write() RETURNS trigger LANGUAGE plpgsql
             AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;
         CREATE TRIGGER fail_sessions BEFORE INSERT ON sessions
             FOR EACH ROW EXECUTE FUNCTION fail_write();",
        "DROP TRIGGER fail_sessions ON sessions",
    )
    .await;
}

/// A right password clears the name's failures in the transaction that stores the login's
/// session (one commit per login for it, not a commit of its own): a login that is not
/// stored clears nothing, and the attempt it reserved stays counted. Four failures, then a
/// right password whose session the database refuses, lock the name as five failures do.
async fn login_clears_failures_with_its_session(
    database_url: Option<&str>,
    break_sql: &str,
    mend_sql: &str,
) {
    let app = tessera_testkit::spawn_app_on(database_url, |c| {
        c.rate_token_per_minute = 0;
    })
    .await;
    app.create_user("zoe", PW, &[]).await;
    for _ in 0..4 {
        assert_eq!(
            app.password_grant("zoe", "attacker guess").await.status(),
            400
        );
    }
    app.execute_sql(break_sql).await;
    let res = app.password_grant("zoe", PW).await;
    assert_eq!(res.status(), 500, "the session could not be stored");
    app.execute_sql(mend_sql).await;
    let res = app.password_grant("zoe", PW).await;
    assert_eq!(res.status(), 400, "the failures were not cleared");
    assert!(res.headers().contains_key("retry-after"), "locked");
    // A login that is stored clears them.
    app.create_user("ann", PW, &[]).await;
    for _ in 0..2 {
        for _ in 0..4 {
            assert_eq!(
                app.password_grant("ann", "attacker guess").await.status(),
                400
            );
        }
        assert_eq!(
            app.password_grant("ann", PW).await.status(),
            200,
            "the count starts again at each successful login"
        );
    }
}

#[tokio::test]
async fn a_password_change_ends_the_old_passwords_challenges_all_or_nothing() {
    password_change_all_or_nothing(
        None,
        "CREATE TRIGGER fail_challenges BEFORE UPDATE ON mfa_challenges
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        "DROP TRIGGER fail_challenges",
    )
    .await;
}

#[tokio::test]
async fn a_password_change_ends_the_old_passwords_challenges_all_or_nothing_on_postgres() {
    let Some(db) = tessera_testkit::pg::TestDatabase::create().await else {
        return;
    };
    password_change_all_or_nothing(
        Some(db.url()),
        "CREATE FUNCTION fail_write() RETURNS trigger LANGUAGE plpgsql
             AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;
         CREATE TRIGGER fail_challenges BEFORE UPDATE ON mfa_challenges
             FOR EACH ROW EXECUTE FUNCTION fail_write();",
        "DROP TRIGGER fail_challenges ON mfa_challenges",
    )
    .await;
}

/// A login half done with the old password (its challenge issued in the same second as
/// the change, which `password_changed_at` cannot tell apart) must not outlive a password
/// change. The change ends it in its own transaction: when ending it fails (`break_sql`
/// makes it fail), nothing changes, rather than the password changing with the old one's
/// challenge (and, before that, sessions) left alive.
async fn password_change_all_or_nothing(
    database_url: Option<&str>,
    break_sql: &str,
    mend_sql: &str,
) {
    const NEW: &str = "another fine horse battery 2";
    let app = tessera_testkit::spawn_app_on(database_url, |c| {
        c.rate_token_per_minute = 0;
        c.rate_mfa_per_minute = 0;
    })
    .await;
    app.create_user("quentin", PW, &[]).await;
    let t = app.login("quentin", PW).await;
    let (secret, _) = enrol(&app, &t.access_token).await;
    app.advance(30).await;
    let challenge = mfa_login(&app, "quentin").await;
    let change = || {
        app.client
            .post(app.url("/users/me/password"))
            .bearer_auth(&t.access_token)
            .json(&serde_json::json!({"current_password": PW, "new_password": NEW}))
            .send()
    };
    app.execute_sql(break_sql).await;
    let res = change().await.unwrap();
    assert!(res.status().is_server_error(), "{}", res.status());
    app.execute_sql(mend_sql).await;
    assert_eq!(
        app.password_grant("quentin", NEW).await.status(),
        400,
        "a change that could not end the old password's challenges did not happen"
    );
    assert_eq!(
        json(app.password_grant("quentin", PW).await).await["error"],
        "mfa_required"
    );
    // Now it goes through, in the same second as the challenge, and ends it.
    assert_eq!(change().await.unwrap().status(), 204);
    let res = mfa_grant(&app, &challenge, "otp", &code_at(&secret, app.now())).await;
    assert_eq!(res.status(), 400);
    assert_eq!(json(res).await["error"], "invalid_grant");
    assert_eq!(
        json(app.password_grant("quentin", NEW).await).await["error"],
        "mfa_required"
    );
}

#[tokio::test]
async fn disabling_a_user_is_all_or_nothing() {
    disable_all_or_nothing(
        None,
        "CREATE TRIGGER fail_sessions BEFORE UPDATE ON sessions
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        "DROP TRIGGER fail_sessions",
    )
    .await;
}

#[tokio::test]
async fn disabling_a_user_is_all_or_nothing_on_postgres() {
    let Some(db) = tessera_testkit::pg::TestDatabase::create().await else {
        return;
    };
    disable_all_or_nothing(
        Some(db.url()),
        "CREATE FUNCTION fail_write() RETURNS trigger LANGUAGE plpgsql
             AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;
         CREATE TRIGGER fail_sessions BEFORE UPDATE ON sessions
             FOR EACH ROW EXECUTE FUNCTION fail_write();",
        "DROP TRIGGER fail_sessions ON sessions",
    )
    .await;
}

/// A disable that cannot end the user's sessions (`break_sql` makes that fail) does not
/// happen, rather than leaving the user disabled with their access tokens accepted until
/// they expire.
async fn disable_all_or_nothing(database_url: Option<&str>, break_sql: &str, mend_sql: &str) {
    let app = tessera_testkit::spawn_app_on(database_url, |_| {}).await;
    let user = app.create_user("rupert", PW, &[]).await;
    let t = app.login("rupert", PW).await;
    app.execute_sql(break_sql).await;
    let meta = tessera_auth::model::RequestMeta::default();
    let disable = || app.state.auth.set_disabled(&user, true, &Actor::Cli, &meta);
    assert!(disable().await.is_err());
    app.execute_sql(mend_sql).await;
    assert!(
        !app.state.auth.find_user("rupert").await.unwrap().disabled,
        "a disable that could not end the sessions did not happen"
    );
    assert_eq!(app.me(&t.access_token).await.status(), 200);
    disable().await.unwrap();
    assert_eq!(app.me(&t.access_token).await.status(), 401);
}

#[tokio::test]
async fn a_successful_login_clears_the_failure_count() {
    // Four failures, a success, four more: never five in a row, so never locked. And a
    // success with no failures before it writes no throttle row (nothing to clear).
    let app = spawn_app_with(|c| c.rate_token_per_minute = 0).await;
    app.create_user("tamsin", PW, &[]).await;
    assert_eq!(app.password_grant("tamsin", PW).await.status(), 200);
    for round in 0..3 {
        for _ in 0..4 {
            assert_eq!(
                app.password_grant("tamsin", "wrong guess 123")
                    .await
                    .status(),
                400
            );
        }
        assert_eq!(
            app.password_grant("tamsin", PW).await.status(),
            200,
            "round {round}: four failures and a success do not lock"
        );
    }
}

#[tokio::test]
async fn a_locked_account_with_a_second_factor_can_still_log_in_with_it() {
    let app = spawn_app_with(|c| c.rate_token_per_minute = 0).await;
    app.create_user("sybil", PW, &[]).await;
    let (secret, recovery) = enrol(&app, &app.login("sybil", PW).await.access_token).await;
    for _ in 0..6 {
        let _ = app.password_grant("sybil", "wrong guess 123").await;
    }
    app.advance(30).await;
    // During the lock the password alone is no oracle: right and wrong answer alike.
    let right = app.password_grant("sybil", PW).await;
    let wrong = app.password_grant("sybil", "wrong guess 456").await;
    assert_eq!(right.status(), 400);
    assert_eq!(
        right.headers()["retry-after"],
        wrong.headers()["retry-after"]
    );
    assert_eq!(json(right).await, json(wrong).await);
    // Nor is password + wrong code, or wrong password + right code.
    let one_step = |pw: &'static str, field: &'static str, code: String| {
        let app = &app;
        async move {
            app.post_token(&[("username", "sybil"), ("password", pw), (field, &code)])
                .await
        }
    };
    let bad_code = one_step(PW, "otp", "000000".into()).await;
    assert_eq!(bad_code.status(), 400);
    assert!(
        json(bad_code).await["error_description"]
            .as_str()
            .unwrap()
            .contains("too many failed attempts")
    );
    let bad_pw = one_step("wrong guess 789", "otp", code_at(&secret, app.now())).await;
    assert_eq!(bad_pw.status(), 400);
    // Both factors in one request get in, with amr pwd+otp, and lift the lock.
    let res = one_step(PW, "otp", code_at(&secret, app.now())).await;
    assert_eq!(res.status(), 200);
    let claims = claims_of(json(res).await["access_token"].as_str().unwrap());
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp"]));
    assert!(
        !mfa_login(&app, "sybil").await.is_empty(),
        "the lock is lifted"
    );
    // A recovery code works the same way during a lock.
    for _ in 0..5 {
        let _ = app.password_grant("sybil", "wrong guess 123").await;
    }
    let res = one_step(PW, "recovery_code", recovery[0].clone()).await;
    assert_eq!(res.status(), 200);
    let claims = claims_of(json(res).await["access_token"].as_str().unwrap());
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "mfa"]));
    // Outside a lock the one-step form works too, and a wrong code is a plain invalid_grant.
    let res = one_step(PW, "otp", "123456".into()).await;
    assert_eq!(json(res).await["error"], "invalid_grant");
    app.advance(30).await;
    let res = one_step(PW, "otp", code_at(&secret, app.now())).await;
    assert_eq!(res.status(), 200);
}

/// During a lock, a right password sent with a wrong code goes on to the code check where
/// a wrong password stops at once. Answered as soon as they were decided, the two took
/// measurably different times, and a script could test passwords without end while the
/// name was locked. Every such refusal now waits for the same floor after the hash (a
/// lower bound the server guarantees, so this cannot flake).
#[tokio::test]
async fn during_a_lock_a_refusal_with_a_code_is_answered_no_sooner_than_the_floor() {
    let app = spawn_app_with(|c| c.rate_token_per_minute = 0).await;
    app.create_user("sybil", PW, &[]).await;
    let (secret, _) = enrol(&app, &app.login("sybil", PW).await.access_token).await;
    for _ in 0..6 {
        let _ = app.password_grant("sybil", "wrong guess 123").await;
    }
    app.advance(30).await;
    let floor = tessera_auth::service::LOCKOUT_ANSWER_FLOOR;
    for (pw, code) in [
        (PW, "000000".to_owned()),
        ("wrong guess 789", code_at(&secret, app.now())),
        ("wrong guess 789", "000000".to_owned()),
    ] {
        let started = std::time::Instant::now();
        let res = app
            .post_token(&[("username", "sybil"), ("password", pw), ("otp", &code)])
            .await;
        let took = started.elapsed();
        assert_eq!(res.status(), 400);
        assert!(took >= floor, "{pw:?}: answered after {took:?}");
    }
    // Unknown names, and names without a second factor, wait alike.
    app.create_user("ursula", PW, &[]).await;
    for name in ["ursula", "nobody-here"] {
        for _ in 0..6 {
            let _ = app.password_grant(name, "wrong guess 123").await;
        }
        let started = std::time::Instant::now();
        let res = app
            .post_token(&[("username", name), ("password", PW), ("otp", "000000")])
            .await;
        assert_eq!(res.status(), 400);
        assert!(started.elapsed() >= floor, "{name}");
    }
}

#[tokio::test]
async fn rate_limits_count_per_client_ip_through_trusted_proxies_only() {
    let app = spawn_app_with(|c| {
        c.rate_token_per_minute = 3;
        c.trusted_proxies = 1;
    })
    .await;
    let from = |ip: &str| {
        app.client
            .post(app.url("/token"))
            .header("x-forwarded-for", format!("203.0.113.9, {ip}"))
            .form(&[("username", "x"), ("password", "y")])
            .send()
    };
    for _ in 0..3 {
        assert_eq!(from("198.51.100.1").await.unwrap().status(), 400);
    }
    let limited = from("198.51.100.1").await.unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(json(limited).await["error"], "rate_limited");
    assert_eq!(
        from("198.51.100.2").await.unwrap().status(),
        400,
        "another client has its own budget"
    );

    // Without trusted proxies the header is ignored: everything is the socket's address.
    let direct = spawn_app_with(|c| c.rate_token_per_minute = 2).await;
    for ip in ["1.1.1.1", "2.2.2.2"] {
        let res = direct
            .client
            .post(direct.url("/token"))
            .header("x-forwarded-for", ip)
            .form(&[("username", "x"), ("password", "y")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
    }
    let res = direct
        .client
        .post(direct.url("/token"))
        .header("x-forwarded-for", "3.3.3.3")
        .form(&[("username", "x"), ("password", "y")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        429,
        "a spoofed X-Forwarded-For does not buy a new budget"
    );
}

#[tokio::test]
async fn password_policy_messages_say_what_to_change() {
    let app = spawn_app_with(|c| c.registration_open = true).await;
    let register = |pw: &str| {
        app.client
            .post(app.url("/users"))
            .json(&serde_json::json!({"username": "trent", "password": pw}))
            .send()
    };
    let cases = [
        ("short", "at least 12"),
        ("trent-is-my-name-2024", "username"),
        ("1qaz2wsx3edc", "most common"),
        ("aaaaaaaaaaaaaaaa", "too easy to guess"),
    ];
    for (pw, expected) in cases {
        let res = register(pw).await.unwrap();
        assert_eq!(res.status(), 422, "{pw}");
        let msg = json(res).await["error_description"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(msg.contains(expected), "{pw}: {msg}");
    }
    assert_eq!(
        register("correct horse battery staple")
            .await
            .unwrap()
            .status(),
        201
    );
}

#[tokio::test]
async fn imported_bcrypt_users_log_in_and_are_upgraded_to_argon2id() {
    let app = spawn_app().await;
    let hash = bcrypt::hash("their old passlib password", 4).unwrap();
    app.state
        .auth
        .import_user("legacy", &hash, &["user".into()], &Actor::Cli)
        .await
        .unwrap();
    assert!(
        app.state
            .auth
            .import_user("other", "plaintext", &[], &Actor::Cli)
            .await
            .is_err()
    );
    let t = app.login("legacy", "their old passlib password").await;
    assert_eq!(
        json(app.me(&t.access_token).await).await["username"],
        "legacy"
    );
    let stored = app
        .state
        .auth
        .find_user("legacy")
        .await
        .unwrap()
        .password_hash;
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    app.login("legacy", "their old passlib password").await;
}

/// Two logins of one imported user at once both upgrade its bcrypt hash; the second finds
/// the hash already replaced (by the first, with the same password) and must still log in.
/// One hashing thread orders them: both checks, then both upgrades.
#[tokio::test]
async fn concurrent_logins_that_both_upgrade_a_hash_both_succeed() {
    let app = spawn_app_with(|c| c.max_concurrent_hashes = 1).await;
    let pw = "their old passlib password";
    let hash = bcrypt::hash(pw, 4).unwrap();
    app.state
        .auth
        .import_user("legacy", &hash, &["user".into()], &Actor::Cli)
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        app.password_grant("legacy", pw),
        app.password_grant("legacy", pw)
    );
    for res in [a, b] {
        let status = res.status();
        let body = json(res).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            app.me(body["access_token"].as_str().unwrap())
                .await
                .status(),
            200
        );
    }
    let stored = app
        .state
        .auth
        .find_user("legacy")
        .await
        .unwrap()
        .password_hash;
    assert!(stored.starts_with("$argon2id$"), "{stored}");
}

#[tokio::test]
async fn users_see_and_end_their_own_sessions() {
    let app = spawn_app().await;
    app.create_user("uma", PW, &[]).await;
    let phone = app.login("uma", PW).await;
    let laptop = app
        .client
        .post(app.url("/token"))
        .header("user-agent", "laptop-browser/1.0")
        .form(&[("username", "uma"), ("password", PW)])
        .send()
        .await
        .unwrap();
    let laptop = json(laptop).await;
    let list = json(
        app.get_auth("/users/me/sessions", &phone.access_token)
            .await,
    )
    .await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let current: Vec<bool> = list
        .iter()
        .map(|s| s["current"].as_bool().unwrap())
        .collect();
    assert_eq!(current.iter().filter(|c| **c).count(), 1);
    let other = list
        .iter()
        .find(|s| !s["current"].as_bool().unwrap())
        .unwrap();
    assert_eq!(other["user_agent"], "laptop-browser/1.0");
    assert_eq!(other["ip"], "127.0.0.1");
    assert!(other["idle_expires_at"].is_i64() && other["absolute_expires_at"].is_i64());
    let res = app
        .client
        .delete(app.url(&format!(
            "/users/me/sessions/{}",
            other["id"].as_str().unwrap()
        )))
        .bearer_auth(&phone.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        app.me(laptop["access_token"].as_str().unwrap())
            .await
            .status(),
        401
    );
    // Someone else's session is not yours to end.
    let admin = app.admin_login().await;
    let admin_sid = claims_of(&admin.access_token)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .client
        .delete(app.url(&format!("/users/me/sessions/{admin_sid}")))
        .bearer_auth(&phone.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(app.me(&admin.access_token).await.status(), 200);
}

#[tokio::test]
async fn changing_the_password_ends_every_other_session() {
    let app = spawn_app().await;
    app.create_user("victor", PW, &[]).await;
    let here = app.login("victor", PW).await;
    let elsewhere = app.login("victor", PW).await;
    let change = |current: &str, new: &str| {
        app.client
            .post(app.url("/users/me/password"))
            .bearer_auth(&here.access_token)
            .json(&serde_json::json!({"current_password": current, "new_password": new}))
            .send()
    };
    assert_eq!(
        change("not my password", "amber lighthouse symphony")
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(change(PW, "password").await.unwrap().status(), 422);
    assert_eq!(
        change(PW, "amber lighthouse symphony")
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(app.me(&elsewhere.access_token).await.status(), 401);
    assert_eq!(
        app.refresh(elsewhere.refresh_token.as_deref().unwrap())
            .await
            .status(),
        400
    );
    assert_eq!(
        app.me(&here.access_token).await.status(),
        200,
        "this session stays"
    );
    app.login("victor", "amber lighthouse symphony").await;
}

#[tokio::test]
async fn a_password_change_ends_the_mfa_challenges_issued_before_it() {
    let app = spawn_app().await;
    app.create_user("walter", PW, &[]).await;
    let owner = app.login("walter", PW).await;
    let (secret, recovery) = enrol(&app, &owner.access_token).await;
    app.advance(30).await;
    // Whoever knows the old password holds a challenge...
    let stale = mfa_login(&app, "walter").await;
    let stale_too = mfa_login(&app, "walter").await;
    app.advance(1).await;
    // ...when the owner changes it.
    let res = app
        .client
        .post(app.url("/users/me/password"))
        .bearer_auth(&owner.access_token)
        .json(&serde_json::json!({"current_password": PW, "new_password": "amber lighthouse symphony"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    app.advance(30).await;
    let res = mfa_grant(&app, &stale, "otp", &code_at(&secret, app.now())).await;
    assert_eq!(
        res.status(),
        400,
        "a code does not finish a login the change ended"
    );
    assert_eq!(json(res).await["error"], "invalid_grant");
    let res = mfa_grant(&app, &stale_too, "recovery_code", &recovery[0]).await;
    assert_eq!(res.status(), 400, "nor does a recovery code");
    // Neither was used up: the owner signs in with the new password and them.
    let res = app
        .password_grant("walter", "amber lighthouse symphony")
        .await;
    let token = json(res).await["mfa_token"].as_str().unwrap().to_owned();
    let res = mfa_grant(&app, &token, "otp", &code_at(&secret, app.now())).await;
    assert_eq!(res.status(), 200);
    let res = app
        .password_grant("walter", "amber lighthouse symphony")
        .await;
    let token = json(res).await["mfa_token"].as_str().unwrap().to_owned();
    assert_eq!(
        mfa_grant(&app, &token, "recovery_code", &recovery[0])
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn turning_totp_off_counts_and_obeys_the_code_and_password_locks() {
    let app = spawn_app_with(|c| c.rate_mfa_per_minute = 0).await;
    app.create_user("xavier", PW, &[]).await;
    let t = app.login("xavier", PW).await;
    let (secret, _) = enrol(&app, &t.access_token).await;
    app.advance(30).await;
    let disable = |password: &str, code: String| {
        app.client
            .post(app.url("/users/me/mfa/totp/disable"))
            .bearer_auth(&t.access_token)
            .json(&serde_json::json!({"password": password, "code": code}))
            .send()
    };
    // Wrong codes with the right password lock the user's codes, as at login.
    for i in 0..5 {
        let res = disable(PW, format!("{:06}", 100 + i)).await.unwrap();
        assert_eq!(res.status(), 403);
    }
    let res = disable(PW, code_at(&secret, app.now())).await.unwrap();
    assert_eq!(
        res.status(),
        429,
        "the right code waits for the lock to end"
    );
    assert!(res.headers().contains_key("retry-after"));
    let res = mfa_grant(
        &app,
        &mfa_login(&app, "xavier").await,
        "otp",
        &code_at(&secret, app.now()),
    )
    .await;
    assert_eq!(
        res.status(),
        429,
        "one lock for every place a code is checked"
    );
    app.advance(61).await;
    // Wrong passwords count against this session's password checks.
    for _ in 0..5 {
        let res = disable("not the password", code_at(&secret, app.now()))
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
    }
    let res = disable(PW, code_at(&secret, app.now())).await.unwrap();
    assert_eq!(res.status(), 429, "locked whatever the password");
    assert_eq!(
        app.password_grant("xavier", PW).await.status(),
        403,
        "the username is not locked: the password is right, the code is asked for"
    );
    app.advance(61).await;
    let res = disable(PW, code_at(&secret, app.now())).await.unwrap();
    assert_eq!(res.status(), 204);
}

#[tokio::test]
async fn a_login_in_flight_across_a_password_change_gets_no_mfa_challenge() {
    use tessera_auth::store::UserStore as _;
    let app = spawn_app_with_a_slow_hashing_queue().await;
    let user = app.create_user("yvonne", PW, &[]).await;
    let t = app.login("yvonne", PW).await;
    let (secret, _) = enrol(&app, &t.access_token).await;
    app.advance(30).await;
    let new_hash = app
        .state
        .auth
        .hasher()
        .hash(zeroize::Zeroizing::new(
            "amber lighthouse symphony".to_owned(),
        ))
        .await
        .unwrap();
    // Other password checks hold the hashing thread while the old password is checked
    // (under 48 names: a name's own logins queue before its reservations)...
    let busy: Vec<_> = (0..48)
        .map(|i| {
            let (client, url) = (app.client.clone(), app.url("/token"));
            tokio::spawn(async move {
                client
                    .post(url)
                    .form(&[
                        ("username", format!("nobody{i}").as_str()),
                        ("password", PW),
                    ])
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    wait_for_queued_checks(&app, 40).await;
    let in_flight = {
        let (client, url) = (app.client.clone(), app.url("/token"));
        tokio::spawn(async move {
            let res = client
                .post(url)
                .form(&[("username", "yvonne"), ("password", PW)])
                .send()
                .await
                .unwrap();
            (res.status(), json(res).await)
        })
    };
    // The request reaches the queue while dozens of checks still wait ahead of it.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(app.state.auth.hasher().queue_depth() >= 10);
    // ...and the password changes meanwhile, within the same second.
    assert!(
        app.state
            .db()
            .update_password_hash(user.id, &new_hash, app.now(), true)
            .await
            .unwrap()
    );
    for b in busy {
        assert_eq!(b.await.unwrap(), 400, "no such user");
    }
    let (status, body) = in_flight.await.unwrap();
    if let Some(token) = body["mfa_token"].as_str() {
        let res = mfa_grant(&app, token, "otp", &code_at(&secret, app.now())).await;
        assert_ne!(
            res.status(),
            200,
            "the old password's challenge finished the login"
        );
    }
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant");
}

/// An MFA challenge is a login half done with the password checked: a password change (or
/// an admin reset) that ends the user's sessions must end it too, or the old password and
/// a code still sign in for `mfa_token_ttl` after the change.
#[tokio::test]
async fn a_password_change_ends_pending_mfa_challenges() {
    let app = spawn_app().await;
    app.create_user("wendy", PW, &["user"]).await;
    let first = app.login("wendy", PW).await;
    let (secret, _) = enrol(&app, &first.access_token).await;
    app.advance(30).await;
    let token = mfa_login(&app, "wendy").await;
    let user = app.state.auth.find_user("wendy").await.unwrap();
    app.state
        .auth
        .set_password(
            &user,
            zeroize::Zeroizing::new("amber lighthouse symphony".to_owned()),
            None,
            &Actor::Cli,
            &tessera_auth::model::RequestMeta::default(),
        )
        .await
        .unwrap();
    let res = mfa_grant(&app, &token, "otp", &code_at(&secret, app.now())).await;
    let status = res.status();
    let body = json(res).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
}

/// An enrolment started with the old password (by whoever held a session and knew it) does
/// not outlive the password: the change drops the pending secret, so a code from it is
/// refused even to a session the change kept.
#[tokio::test]
async fn a_password_change_drops_a_totp_enrolment_not_yet_confirmed() {
    let app = spawn_app().await;
    app.create_user("xavier", PW, &["user"]).await;
    let here = app.login("xavier", PW).await;
    let res = app
        .client
        .post(app.url("/users/me/mfa/totp"))
        .json(&serde_json::json!({"password": PW}))
        .bearer_auth(&here.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let secret = json(res).await["secret"].as_str().unwrap().to_owned();
    let res = app
        .client
        .post(app.url("/users/me/password"))
        .bearer_auth(&here.access_token)
        .json(&serde_json::json!({"current_password": PW, "new_password": "amber lighthouse symphony"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = app
        .client
        .post(app.url("/users/me/mfa/totp/confirm"))
        .bearer_auth(&here.access_token)
        .json(&serde_json::json!({"code": code_at(&secret, app.now())}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let user = app.state.auth.find_user("xavier").await.unwrap();
    assert!(!user.totp_enabled);
    use tessera_auth::store::SecurityStore as _;
    let state = app.state.db().find_totp(user.id).await.unwrap().unwrap();
    assert!(state.pending.is_none());
}
