//! `POST /token`: requests and every RFC 6749 §5.2 error shape.

use tessera_testkit::{ADMIN_PASSWORD, spawn_app};

use crate::json;

async fn error_of(res: reqwest::Response) -> (u16, serde_json::Value) {
    let status = res.status().as_u16();
    assert_eq!(
        res.headers()["cache-control"],
        "no-store",
        "errors are not cached either"
    );
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    (status, json(res).await)
}

#[tokio::test]
async fn unknown_user_and_wrong_password_get_the_same_answer() {
    let app = spawn_app().await;
    let (s1, b1) = error_of(app.password_grant("admin", "wrong password!!").await).await;
    let (s2, b2) = error_of(app.password_grant("nobody-here", "wrong password!!").await).await;
    let (s3, b3) = error_of(app.password_grant("not a valid/name", "x").await).await;
    assert_eq!(
        (s1, &b1),
        (
            400,
            &serde_json::json!({"error": "invalid_grant", "error_description": "Incorrect username or password"})
        )
    );
    assert_eq!((s1, &b1), (s2, &b2));
    assert_eq!((s1, &b1), (s3, &b3));
}

#[tokio::test]
async fn missing_parameters_are_invalid_request() {
    let app = spawn_app().await;
    let (s, b) = error_of(app.post_token(&[("username", "admin")]).await).await;
    assert_eq!(s, 400);
    assert_eq!(b["error"], "invalid_request");
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .contains("`password`")
    );
    let (s, b) = error_of(app.post_token(&[("password", "x")]).await).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_request")));
    let (s, b) = error_of(app.post_token(&[("grant_type", "refresh_token")]).await).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_request")));
}

#[tokio::test]
async fn repeated_parameters_are_refused() {
    let app = spawn_app().await;
    let (s, b) = error_of(
        app.post_token(&[
            ("username", "admin"),
            ("username", "other"),
            ("password", ADMIN_PASSWORD),
        ])
        .await,
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_request")));
}

#[tokio::test]
async fn only_form_bodies_are_accepted() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.url("/token"))
        .json(&serde_json::json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    let (s, b) = error_of(res).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_request")));
    let res = app
        .client
        .post(app.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("%%%=&&=")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error());
}

#[tokio::test]
async fn unsupported_grant_types_are_named() {
    let app = spawn_app().await;
    for g in [
        "authorization_code",
        "client_credentials_typo",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
    ] {
        let (s, b) = error_of(app.post_token(&[("grant_type", g)]).await).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (400, Some("unsupported_grant_type")),
            "{g}"
        );
    }
}

#[tokio::test]
async fn client_secrets_and_unknown_clients_are_invalid_client() {
    let app = spawn_app().await;
    let res = app
        .post_token(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("client_id", "tessera"),
            ("client_secret", "guess"),
        ])
        .await;
    assert_eq!(res.headers()["www-authenticate"], "Basic realm=\"tessera\"");
    let (s, b) = error_of(res).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_client")));
    let (s, b) = error_of(
        app.post_token(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("client_id", "someone-else"),
        ])
        .await,
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_client")));
    // The built-in public client, named explicitly, in the form or via HTTP Basic.
    assert_eq!(
        app.post_token(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("client_id", "tessera")
        ])
        .await
        .status(),
        200
    );
    let res = app
        .client
        .post(app.url("/token"))
        .basic_auth("tessera", Some(""))
        .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn scopes_are_limited_to_the_clients() {
    let app = spawn_app().await;
    let (s, b) = error_of(
        app.post_token(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("scope", "profile admin:all"),
        ])
        .await,
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_scope")));
    let body = json(
        app.post_token(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("scope", "profile profile"),
        ])
        .await,
    )
    .await;
    assert_eq!(body["scope"], "profile");
}

#[tokio::test]
async fn disabled_users_cannot_log_in() {
    let app = spawn_app().await;
    let user = app
        .create_user("bob", "violet gramophone harbour", &[])
        .await;
    app.state
        .auth
        .set_disabled(
            &user,
            true,
            &tessera_auth::Actor::System,
            &Default::default(),
        )
        .await
        .unwrap();
    let (s, b) = error_of(app.password_grant("bob", "violet gramophone harbour").await).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_grant")));
}

#[tokio::test]
async fn failed_and_successful_logins_are_audited() {
    use tessera_auth::store::AuditStore as _;
    let app = spawn_app().await;
    let _ = app.password_grant("admin", "wrong wrong wrong").await;
    let _ = app.login("admin", ADMIN_PASSWORD).await;
    let rows = app.state.db().list_audit(0, None, None, 100).await.unwrap();
    let logins: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r.event.event == "login")
        .map(|r| {
            (
                r.event.outcome.as_str(),
                r.event.username.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(logins, [("failure", "admin"), ("success", "admin")]);
    assert!(tessera_auth::audit::verify_chain(vec![0; 32], &rows).is_ok());
}

#[tokio::test]
async fn a_failed_login_for_an_unknown_name_records_a_keyed_hash_not_the_typed_text() {
    // OWASP Logging Cheat Sheet: the text typed as a username is often a password typed
    // into the wrong field. The audit row (and its log line) carried it verbatim.
    use tessera_auth::store::AuditStore as _;
    let app = spawn_app().await;
    // A row written the old way, with the typed text: it must stay verifiable.
    app.state
        .auth
        .audit(
            &Default::default(),
            "login",
            "failure",
            None,
            Some("legacy-typed-name".into()),
            Some("tessera"),
            serde_json::json!({"reason": "invalid_credentials"}),
        )
        .await;
    let typed = "Tr0ub4dor&3 horse";
    for name in [typed, "tr0ub4dor&3 HORSE", "someone-else", "admin"] {
        let (s, _) = error_of(app.password_grant(name, "wrong wrong wrong").await).await;
        assert_eq!(s, 400, "{name}");
    }
    let rows = app.state.db().list_audit(0, None, None, 100).await.unwrap();
    let failures: Vec<&str> = rows
        .iter()
        .filter(|r| r.event.event == "login" && r.event.outcome == "failure")
        .map(|r| r.event.username.as_deref().unwrap_or_default())
        .collect();
    assert_eq!(failures.len(), 5, "{failures:?}");
    assert_eq!(failures[0], "legacy-typed-name");
    let (first, again, other, known) = (failures[1], failures[2], failures[3], failures[4]);
    assert!(
        first.starts_with("unknown:") && first.len() == 8 + 24,
        "{first}"
    );
    // The same name (usernames compare without case) gives the same text, another name
    // another; a known user is still recorded by name and id.
    assert_eq!(first, again);
    assert_ne!(first, other);
    assert!(other.starts_with("unknown:"), "{other}");
    assert_eq!(known, "admin");
    assert!(
        rows.iter()
            .any(|r| r.event.username.as_deref() == Some("admin")
                && r.event.user_id.is_some()
                && r.event.outcome == "failure")
    );
    // Nothing of the typed text is stored anywhere in the rows.
    for r in &rows {
        let text = serde_json::to_string(&r.event).unwrap().to_lowercase();
        assert!(!text.contains("tr0ub4dor"), "{text}");
        assert!(!text.contains("someone-else"), "{text}");
    }
    // The chain, old row included, verifies (what `tessera audit verify` runs).
    let check = app.state.auth.verify_audit().await.unwrap();
    assert_eq!(check.broken, None);
    assert_eq!(check.intact_rows, u64::try_from(rows.len()).unwrap());
}

#[tokio::test]
async fn a_form_that_is_not_utf_8_is_refused_not_read_as_something_else() {
    // RFC 6749 Appendix B: the form is UTF-8. Bytes that were not (a Latin-1 `é` as `%E9`,
    // or raw) used to become U+FFFD: another password was checked than the one sent, and
    // the login failure was counted against the name. A body declared in another charset
    // was read as UTF-8 all the same.
    use tessera_auth::store::AuditStore as _;
    let app = spawn_app().await;
    let password = "violet gramophone caf\u{e9} harbour";
    app.create_user("chef", password, &[]).await;
    let send = |content_type: &'static str, body: Vec<u8>| {
        app.client
            .post(app.url("/token"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    const FORM: &str = "application/x-www-form-urlencoded";
    let cases: [(&str, Vec<u8>); 5] = [
        (
            FORM,
            b"username=chef&password=violet+gramophone+caf%E9+harbour".to_vec(),
        ),
        (
            FORM,
            b"username=chef&password=violet+gramophone+caf\xe9+harbour".to_vec(),
        ),
        (FORM, b"username=chef&password=x&scope%FF=a".to_vec()),
        (
            "application/x-www-form-urlencoded; charset=ISO-8859-1",
            b"username=chef&password=violet+gramophone+caf%E9+harbour".to_vec(),
        ),
        (
            "application/x-www-form-urlencoded;charset=\"windows-1252\"",
            // The UTF-8 bytes of the password, which windows-1252 reads as `Ã©`.
            b"username=chef&password=violet+gramophone+caf%C3%A9+harbour".to_vec(),
        ),
    ];
    for (content_type, body) in cases {
        let what = format!("{content_type}: {}", String::from_utf8_lossy(&body));
        let (s, b) = error_of(send(content_type, body).await.unwrap()).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (400, Some("invalid_request")),
            "{what}: {b}"
        );
        assert!(
            b["error_description"].as_str().unwrap().contains("UTF-8"),
            "{what}: {b}"
        );
    }
    // Nothing was checked, so nothing was counted as a failed login.
    let rows = app.state.db().list_audit(0, None, None, 100).await.unwrap();
    assert!(
        !rows
            .iter()
            .any(|r| r.event.event == "login" && r.event.outcome == "failure"),
        "{:?}",
        rows.iter().map(|r| &r.event).collect::<Vec<_>>()
    );
    // UTF-8, declared or not, percent-encoded or raw, is read as sent.
    let mut raw = b"username=chef&password=".to_vec();
    raw.extend_from_slice(password.replace(' ', "+").as_bytes());
    for (content_type, body) in [
        (
            FORM,
            b"username=chef&password=violet+gramophone+caf%C3%A9+harbour".to_vec(),
        ),
        (
            "application/x-www-form-urlencoded; charset=UTF-8",
            raw.clone(),
        ),
        ("application/x-www-form-urlencoded;charset=\"utf-8\"", raw),
    ] {
        let res = send(content_type, body).await.unwrap();
        assert_eq!(res.status(), 200, "{content_type}");
    }
}

#[tokio::test]
async fn error_descriptions_hold_only_the_characters_rfc_6749_section_5_2_allows() {
    // RFC 6749 §5.2: `%x20-21 / %x23-5B / %x5D-7E`, no `"`, no `\`, nothing beyond ASCII.
    // The answers that cite a section carried a `§`, and an unsupported grant type or a
    // refused scope was echoed as sent.
    let app = spawn_app().await;
    let allowed = |c: char| matches!(c, '\x20'..='\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e');
    let both_methods = app
        .client
        .post(app.url("/token"))
        .basic_auth("svc", Some("x"))
        .form(&[("grant_type", "client_credentials"), ("client_secret", "x")])
        .send()
        .await
        .unwrap();
    let json_body = app
        .client
        .post(app.url("/token"))
        .json(&serde_json::json!({"username": "admin"}))
        .send()
        .await
        .unwrap();
    let repeated_revoke = app
        .client
        .post(app.url("/revoke"))
        .form(&[("token", "a"), ("token", "b")])
        .send()
        .await
        .unwrap();
    let malformed_basic = app
        .client
        .post(app.url("/introspect"))
        .header("authorization", "Basic !!!")
        .form(&[("token", "a")])
        .send()
        .await
        .unwrap();
    let responses = [
        app.post_token(&[("grant_type", "password"), ("grant_type", "password")])
            .await,
        app.post_token(&[("grant_type", "caf\u{e9} \"x\" \\y")])
            .await,
        app.post_token(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("scope", "profile \"caf\u{e9}\\"),
        ])
        .await,
        both_methods,
        json_body,
        repeated_revoke,
        malformed_basic,
    ];
    let mut descriptions = Vec::new();
    for res in responses {
        let (s, b) = error_of(res).await;
        assert!(s == 400 || s == 401, "{s}: {b}");
        let d = b["error_description"].as_str().unwrap().to_owned();
        assert!(!d.is_empty() && d.chars().all(allowed), "{b}");
        descriptions.push(d);
    }
    assert_eq!(
        descriptions[0],
        "parameter `grant_type` is repeated (RFC 6749 section 3.2)"
    );
    assert!(descriptions[2].contains("`'caf?/`"), "{}", descriptions[2]);
}

#[tokio::test]
async fn a_form_of_ascii_is_read_whatever_charset_it_is_labelled_with() {
    // A form of ASCII alone reads the same in UTF-8 and in the charsets clients label forms
    // with (HTTP libraries that send `charset=ISO-8859-1` whatever the form holds), and
    // `utf8` is a label of UTF-8 (WHATWG Encoding §4.2): all of these were refused with
    // "the form must be UTF-8".
    let app = spawn_app().await;
    let body = format!(
        "grant_type=password&username=admin&password={}",
        ADMIN_PASSWORD.replace(' ', "+")
    );
    for content_type in [
        "application/x-www-form-urlencoded; charset=ISO-8859-1",
        "application/x-www-form-urlencoded;charset=\"windows-1252\"",
        "application/x-www-form-urlencoded; charset=US-ASCII",
        "application/x-www-form-urlencoded; charset=utf8",
        "Application/X-WWW-Form-Urlencoded ; Charset=\"UTF-8\" ; q=1",
    ] {
        let res = app
            .client
            .post(app.url("/token"))
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = res.status();
        assert_eq!(status, 200, "{content_type}: {}", res.text().await.unwrap());
    }
}

#[tokio::test]
async fn a_form_labelled_with_a_charset_that_is_not_ascii_compatible_is_refused() {
    // In UTF-7, ISO-2022-JP or UTF-16 ASCII bytes write other characters: `+AOk-` is a
    // UTF-7 `é`. Read as UTF-8 such a form is another password than the one sent, checked
    // and counted against the name: it must be refused, ASCII or not.
    let app = spawn_app().await;
    for (content_type, password) in [
        (
            "application/x-www-form-urlencoded; charset=UTF-7",
            "%2BAOk-",
        ),
        (
            "application/x-www-form-urlencoded; charset=ISO-2022-JP",
            "%1B%24BF%7CK%5C%1B%28B",
        ),
        (
            "application/x-www-form-urlencoded; charset=UTF-16BE",
            "%00a%00b",
        ),
        ("application/x-www-form-urlencoded; charset=x-unknown", "ab"),
    ] {
        let res = app
            .client
            .post(app.url("/token"))
            .header("content-type", content_type)
            .body(format!(
                "grant_type=password&username=admin&password={password}"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{content_type}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{content_type}: {body}");
        let description = body["error_description"].as_str().unwrap_or_default();
        assert!(description.contains("UTF-8"), "{content_type}: {body}");
    }
}
