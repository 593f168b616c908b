//! The admin API and self-registration.

use tessera_testkit::{spawn_app, spawn_app_with};

use crate::json;

#[tokio::test]
async fn admins_manage_users_end_to_end() {
    let app = spawn_app().await;
    let admin = app.admin_login().await.access_token;
    let c = &app.client;
    let res = c
        .post(app.url("/admin/users"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"username": "Grace", "password": "violet gramophone harbour", "roles": ["editor", "user"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created = json(res).await;
    assert_eq!(created["username"], "grace");
    assert_eq!(created["role"], "editor");
    assert!(created.get("password_hash").is_none());
    let dup = c
        .post(app.url("/admin/users"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"username": "grace", "password": "another long password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status(), 409);
    let list = json(
        c.get(app.url("/admin/users"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "grace"]);
    let shown = json(
        c.get(app.url("/admin/users/grace"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let by_id = json(
        c.get(app.url(&format!("/admin/users/{}", shown["id"].as_str().unwrap())))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(shown, by_id);
    let roles = c
        .put(app.url("/admin/users/grace/roles"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"roles": ["user"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(json(roles).await["roles"], serde_json::json!(["user"]));
    let grace = app.login("grace", "violet gramophone harbour").await;
    assert_eq!(
        json(app.me(&grace.access_token).await).await["role"],
        "user"
    );
    let res = c
        .post(app.url("/admin/users/grace/password"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"password": "short"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    assert!(
        json(res).await["error_description"]
            .as_str()
            .unwrap()
            .contains("at least 12")
    );
    let res = c
        .post(app.url("/admin/users/grace/disable"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(json(res).await["disabled"], true);
    assert_eq!(app.me(&grace.access_token).await.status(), 401);
    let sessions = json(
        c.get(app.url("/admin/sessions?user=grace"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(sessions, serde_json::json!([]));
    let res = c
        .delete(app.url("/admin/users/grace"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = c
        .get(app.url("/admin/users/grace"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(json(res).await["error"], "not_found");
}

#[tokio::test]
async fn admins_list_and_revoke_sessions() {
    let app = spawn_app().await;
    let admin = app.admin_login().await.access_token;
    app.create_user("heidi", "violet gramophone harbour", &[])
        .await;
    let heidi = app.login("heidi", "violet gramophone harbour").await;
    let sessions = json(
        app.client
            .get(app.url("/admin/sessions?user=heidi"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = sessions[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(sessions.as_array().unwrap().len(), 1);
    let res = app
        .client
        .delete(app.url(&format!("/admin/sessions/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(app.me(&heidi.access_token).await.status(), 401);
    let res = app
        .client
        .delete(app.url(&format!("/admin/sessions/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    // Sign heidi out everywhere.
    let a = app.login("heidi", "violet gramophone harbour").await;
    let b = app.login("heidi", "violet gramophone harbour").await;
    let res = app
        .client
        .delete(app.url("/admin/users/heidi/sessions"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(json(res).await["revoked_sessions"], 2);
    for t in [&a, &b] {
        assert_eq!(app.me(&t.access_token).await.status(), 401);
        assert_eq!(
            app.refresh(t.refresh_token.as_deref().unwrap())
                .await
                .status(),
            400
        );
    }
}

#[tokio::test]
async fn the_admin_api_needs_the_admin_role() {
    let app = spawn_app().await;
    app.create_user("ivan", "violet gramophone harbour", &["user"])
        .await;
    let ivan = app.login("ivan", "violet gramophone harbour").await;
    let res = app.get_auth("/admin/users", &ivan.access_token).await;
    assert_eq!(res.status(), 403);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"insufficient_scope\"")
    );
    assert_eq!(
        app.client
            .get(app.url("/admin/users"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn admins_cannot_delete_themselves() {
    let app = spawn_app().await;
    let admin = app.admin_login().await.access_token;
    let res = app
        .client
        .delete(app.url("/admin/users/admin"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn registration_is_closed_by_default() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.url("/users"))
        .json(&serde_json::json!({"username": "judy", "password": "violet gramophone harbour"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(json(res).await["error"], "registration_closed");
}

#[tokio::test]
async fn open_registration_creates_plain_users() {
    let app = spawn_app_with(|c| c.registration_open = true).await;
    let res = app
        .client
        .post(app.url("/users"))
        .json(&serde_json::json!({"username": "judy", "password": "violet gramophone harbour"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(json(res).await["roles"], serde_json::json!(["user"]));
    let weak = app
        .client
        .post(app.url("/users"))
        .json(&serde_json::json!({"username": "kim", "password": "kim"}))
        .send()
        .await
        .unwrap();
    assert_eq!(weak.status(), 422);
    let bad = app
        .client
        .post(app.url("/users"))
        .json(&serde_json::json!({"username": "no spaces", "password": "a long enough password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let t = app.login("judy", "violet gramophone harbour").await;
    assert_eq!(
        app.get_auth("/admin/users", &t.access_token).await.status(),
        403
    );
}

#[tokio::test]
async fn a_path_parameter_that_is_not_text_gets_a_json_invalid_request() {
    let app = spawn_app().await;
    let admin = app.admin_login().await;
    for path in ["/admin/users/%ff", "/admin/users/%ff/disable"] {
        let req = if path.ends_with("disable") {
            app.client.post(app.url(path))
        } else {
            app.client.get(app.url(path))
        };
        let res = req.bearer_auth(&admin.access_token).send().await.unwrap();
        assert_eq!(res.status(), 400, "{path}");
        assert_eq!(
            res.headers()["content-type"],
            "application/json",
            "{path}: our error shape, not axum's plain text"
        );
        assert_eq!(json(res).await["error"], "invalid_request", "{path}");
    }
}

#[tokio::test]
async fn a_user_enabled_in_the_second_of_their_disable_gets_live_tokens_at_once() {
    // The disable's cut-off covers its whole second (like `iat`): enabling in that second
    // answers only once the clock has left it, so the login that follows gets a token that
    // works (it got one dead on arrival, refused for its whole lifetime).
    let app = spawn_app().await;
    let admin = app.admin_login().await;
    app.create_user("hana", "violet gramophone harbour", &[])
        .await;
    let post = |path: &str| {
        app.client
            .post(app.url(path))
            .bearer_auth(&admin.access_token)
            .send()
    };
    assert_eq!(
        post("/admin/users/hana/disable").await.unwrap().status(),
        200
    );
    let clock = app.clock.clone();
    let tick = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        clock.advance(1);
    });
    assert_eq!(
        post("/admin/users/hana/enable").await.unwrap().status(),
        200
    );
    let t = app.login("hana", "violet gramophone harbour").await;
    assert_eq!(app.me(&t.access_token).await.status(), 200);
    tick.await.unwrap();
}

#[tokio::test]
async fn every_list_endpoint_refuses_a_limit_out_of_range_alike() {
    // `/admin/audit` took `limit=0` as 1 and anything over 1000 as 1000, while
    // `/revocations` answered 400; a negative or non-numeric value got a deserializer's
    // message. Now both answer 400 invalid_request naming the range.
    let app = spawn_app().await;
    let admin = app.admin_login().await.access_token;
    for path in ["/admin/audit", "/revocations"] {
        for limit in [
            "0",
            "-1",
            "1001",
            "4294967296",
            "abc",
            "",
            "1.5",
            "+5",
            " 5",
        ] {
            let url = format!("{}?limit={}", app.url(path), urlencoding(limit));
            let res = app
                .client
                .get(url)
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 400, "{path} limit={limit:?}");
            let body = json(res).await;
            assert_eq!(body["error"], "invalid_request", "{path} limit={limit:?}");
            assert!(
                body["error_description"]
                    .as_str()
                    .unwrap()
                    .contains("from 1 to 1000"),
                "{path} limit={limit:?}: {body}"
            );
        }
        for limit in ["1", "1000", "0100"] {
            let res = app
                .client
                .get(format!("{}?limit={limit}", app.url(path)))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{path} limit={limit}");
        }
    }
    // The document says the same range for both.
    let doc = json(
        app.client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    for path in ["/admin/audit", "/revocations"] {
        let limit = doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert_eq!(limit["schema"]["minimum"], 1, "{path}");
        assert_eq!(limit["schema"]["maximum"], 1000, "{path}");
    }
}

/// Percent-encodes a query value (enough for the test's values).
fn urlencoding(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
