//! Administration through the binary, on a real data directory: users (including import,
//! unlock and MFA reset), keys, sessions, clients, and the audit log (`audit list`,
//! `audit verify` detecting an edited, a deleted and a cut-off row). Where a command's
//! effect shows only at login, a real `tessera serve` runs on the same data directory.

use std::path::Path;

use serde_json::Value;
use sqlx::Connection as _;
use tempfile::TempDir;
use tessera_testkit::process::ServeProcess;

use crate::common::{Run, tessera};

const ADMIN_PW: &str = "bootstrap phrase for the cli tests";
const PW: &str = "copper lantern meadow 42";
const PW2: &str = "violet gramophone harbour";

/// One data directory shared by the commands and servers of a test.
struct Data {
    dir: TempDir,
}

impl Data {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = tessera();
        cmd.arg("--data-dir")
            .arg(self.path())
            .args(args)
            .env_remove("TESSERA_DATABASE_URL")
            .env("TESSERA_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PW)
            .env("RUST_LOG", "warn");
        cmd
    }

    /// `tessera --data-dir DIR ARGS`.
    fn run(&self, args: &[&str]) -> Run {
        self.command(args).output().unwrap().into()
    }

    /// Same, signing with an HMAC secret (`signing.secret`) instead of stored keys.
    fn run_hmac(&self, args: &[&str]) -> Run {
        self.command(args)
            .env("TESSERA_SIGNING__ALG", "HS256")
            .env(
                "TESSERA_SIGNING__SECRET",
                "an hmac secret of thirty-two byte",
            )
            .output()
            .unwrap()
            .into()
    }

    /// Same, with `stdin`.
    fn run_stdin(&self, args: &[&str], stdin: &str) -> Run {
        self.command(args)
            .write_stdin(stdin.to_owned())
            .output()
            .unwrap()
            .into()
    }

    fn add_user(&self, name: &str, roles: &[&str]) {
        let mut args = vec!["users", "add", name, "--password-stdin"];
        for r in roles {
            args.extend(["--role", r]);
        }
        self.run_stdin(&args, &format!("{PW}\n")).success();
    }

    fn serve(&self) -> ServeProcess {
        ServeProcess::start(
            Path::new(env!("CARGO_BIN_EXE_tessera")),
            self.path(),
            &[("TESSERA_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PW)],
        )
    }

    /// A direct connection to the SQLite file, as someone with file access would have.
    async fn sql(&self) -> sqlx::SqliteConnection {
        let url = format!("sqlite://{}", self.path().join("tessera.db").display());
        sqlx::SqliteConnection::connect(&url).await.unwrap()
    }

    async fn execute(&self, sql: &'static str) -> u64 {
        let mut c = self.sql().await;
        sqlx::query(sql)
            .execute(&mut c)
            .await
            .unwrap()
            .rows_affected()
    }
}

async fn password_grant(server: &ServeProcess, form: &[(&str, &str)]) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(server.url("/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

async fn login(server: &ServeProcess, user: &str, pw: &str) -> (u16, Value) {
    password_grant(server, &[("username", user), ("password", pw)]).await
}

fn stdout_json_lines(run: &Run) -> Vec<Value> {
    run.stdout_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn users_are_created_listed_changed_and_deleted_with_meaningful_exit_codes() {
    let d = Data::new();
    d.add_user("alice", &["editor", "viewer"]);
    // Exit 1: refused. Exit 2: bad input. One line on stderr that says what to do.
    d.run_stdin(
        &["users", "add", "alice", "--password-stdin"],
        &format!("{PW}\n"),
    )
    .fails(1, "user `alice` already exists");
    d.run_stdin(&["users", "add", "bob", "--password-stdin"], "password1\n")
        .fails(1, "choose another password");
    d.run_stdin(
        &["users", "add", "bad name!", "--password-stdin"],
        &format!("{PW}\n"),
    )
    .fails(2, "username may contain only");
    // A name that reads as a user id would make "username or id" commands act on whoever
    // has that id (`users delete <it>` deleted that other user).
    let alice_id = d.run(&["users", "show", "alice"]).success().json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    d.run_stdin(
        &["users", "add", &alice_id, "--password-stdin"],
        &format!("{PW}\n"),
    )
    .fails(1, "must not be a UUID");
    d.run(&["users", "add", "carol"])
        .fails(2, "--password-stdin");

    let list = d.run(&["users", "list", "--json"]).success().json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    // The bootstrap admin is created by `tessera serve`, not by administration commands.
    assert_eq!(names, ["alice"]);
    let table = d.run(&["users", "list"]).success().stdout_text();
    assert!(table.starts_with("USERNAME"), "{table}");
    assert!(table.contains("editor,viewer"), "{table}");

    let show = d.run(&["users", "show", "alice"]).success().json();
    assert_eq!(show["roles"], serde_json::json!(["editor", "viewer"]));
    assert_eq!(show["disabled"], false);
    assert_eq!(show["totp_enabled"], false);
    assert_eq!(show["locked_until"], Value::Null);

    d.run(&["users", "set-roles", "alice", "admin"]).success();
    d.run(&["users", "disable", "alice"]).success();
    let show = d.run(&["users", "show", "alice"]).success().json();
    assert_eq!(
        (show["roles"].clone(), show["disabled"].clone()),
        (serde_json::json!(["admin"]), Value::Bool(true))
    );
    d.run(&["users", "enable", "alice"]).success();
    d.run_stdin(
        &["users", "passwd", "alice", "--password-stdin"],
        &format!("{PW2}\n"),
    )
    .success();
    d.run(&["users", "delete", "alice"]).success();
    d.run(&["users", "show", "alice"])
        .fails(1, "no user `alice` (by username or id)");
    d.run(&["users", "unlock", "nobody"]).fails(
        1,
        "no user `nobody` (by username or id); `tessera users list` shows them",
    );
}

#[tokio::test]
async fn keys_sessions_and_clients_are_administered_while_the_server_runs() {
    let d = Data::new();
    d.add_user("alice", &[]);
    let server = d.serve();
    let (status, tokens) = login(&server, "alice", PW).await;
    assert_eq!(status, 200);
    let access = tokens["access_token"].as_str().unwrap().to_owned();

    let sessions = d
        .run(&["sessions", "list", "--user", "alice", "--json"])
        .success()
        .json();
    let id = sessions[0]["id"].as_str().unwrap().to_owned();
    d.run(&["sessions", "revoke", &id]).success();
    d.run(&["sessions", "revoke", &id]).success();
    d.run(&["sessions", "revoke", "not-an-id"])
        .fails(2, "is not a session id");
    // The running server learns of the revocation from the database within a second.
    let http = reqwest::Client::new();
    let mut refused = false;
    for _ in 0..40 {
        let res = http
            .get(server.url("/users/me"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        if res.status() == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        refused,
        "a session revoked by the CLI is refused by the server"
    );

    let before = d.run(&["keys", "list", "--json"]).success().json();
    assert_eq!(before.as_array().unwrap().len(), 1);
    d.run(&["keys", "rotate", "--now"]).success();
    let after = d.run(&["keys", "list", "--json"]).success().json();
    assert_eq!(after.as_array().unwrap().len(), 2);
    let jwks: Value =
        serde_json::from_str(&d.run(&["keys", "export-jwks"]).success().stdout_text()).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    assert!(
        jwks.to_string().find("\"d\"").is_none(),
        "no private members"
    );
    d.run(&["keys", "revoke", "no-such-kid"])
        .fails(1, "no signing key `no-such-kid`");

    let created = d
        .run(&[
            "clients",
            "add",
            "reports",
            "--scope",
            "reports:read",
            "--confidential",
        ])
        .success()
        .stdout_text();
    let secret = created
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .unwrap()
        .to_owned();
    let (status, body) = password_grant(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "reports"),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let clients = d.run(&["clients", "list", "--json"]).success().json();
    assert!(clients.to_string().contains("reports"));
    d.run(&["clients", "delete", "reports"]).success();
    d.run(&["clients", "delete", "reports"])
        .fails(1, "no client `reports`");
}

/// Creates the database's first key as ES256 (a `tessera serve` configured so, the only
/// thing that creates the first key) and returns `keys list --json`.
fn es256_keys(d: &Data) -> Value {
    drop(ServeProcess::start(
        Path::new(env!("CARGO_BIN_EXE_tessera")),
        d.path(),
        &[
            ("TESSERA_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PW),
            ("TESSERA_SIGNING__ALG", "ES256"),
        ],
    ));
    d.run(&["keys", "list", "--json"]).success().json()
}

/// `tessera users add` run before the first `serve` (with the default `signing.alg`,
/// RS256) created the database's first signing key: servers configured for ES256 then
/// signed with RS256 until their rotation to ES256 activated. Administrative commands now
/// never create the first key; `serve` does, with its own `signing.alg`.
#[test]
fn administrative_commands_never_create_the_first_signing_key() {
    let d = Data::new();
    d.add_user("alice", &[]);
    d.run(&["users", "list"]).success();
    let keys = d.run(&["keys", "list", "--json"]).success().json();
    assert_eq!(keys, serde_json::json!([]), "a command created a key");
    let table = d.run(&["keys", "list"]).success().stdout_text();
    assert!(table.contains("no signing keys yet"), "{table}");
    assert_eq!(
        d.run(&["keys", "export-jwks"])
            .success()
            .stdout_text()
            .trim(),
        r#"{"keys":[]}"#
    );
    d.run(&["keys", "rotate"])
        .fails(1, "start `tessera serve` once");
    let keys = es256_keys(&d);
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(
        (keys[0]["alg"].as_str(), keys[0]["state"].as_str()),
        (Some("ES256"), Some("active"))
    );
}

/// One policy for every administrative command: the state asked for already holds = exit
/// 0 with a line saying so; a name or id that does not exist = exit 1 (a typo must not
/// look like success). `reset-mfa` on a user without TOTP used to exit 1 where `unlock`
/// and `disable` exited 0.
#[tokio::test]
async fn commands_whose_work_is_already_done_exit_0_and_say_so() {
    let d = Data::new();
    d.add_user("erin", &[]);
    let nothing = |args: &[&str], needle: &str| {
        let run = d.run(args).success();
        let out = run.stdout_text();
        assert!(
            out.contains(needle) && out.contains("nothing to do"),
            "{args:?}: {out}"
        );
    };
    nothing(&["users", "reset-mfa", "erin"], "erin has no second factor");
    nothing(&["users", "unlock", "erin"], "erin was not locked");
    let events = stdout_json_lines(
        &d.run(&["audit", "list", "--json", "--user", "erin"])
            .success(),
    );
    assert!(
        !events.iter().any(|e| e["event"] == "unlocked"),
        "an unlock that lifted nothing was audited: {events:?}"
    );
    nothing(&["users", "enable", "erin"], "erin is already enabled");
    nothing(
        &["sessions", "revoke-all", "erin"],
        "erin has no live sessions",
    );
    d.run(&["users", "disable", "erin"]).success();
    nothing(&["users", "disable", "erin"], "erin is already disabled");
    d.run(&["users", "enable", "erin"]).success();

    let server = d.serve();
    assert_eq!(login(&server, "erin", PW).await.0, 200);
    let sessions = d
        .run(&["sessions", "list", "--user", "erin", "--json"])
        .success()
        .json();
    let id = sessions[0]["id"].as_str().unwrap().to_owned();
    d.run(&["sessions", "revoke", &id]).success();
    nothing(&["sessions", "revoke", &id], "has already ended");
    d.run(&["sessions", "revoke", "0194f5a0-0000-7000-8000-000000000000"])
        .fails(1, "no session 0194f5a0-0000-7000-8000-000000000000");

    let keys = d.run(&["keys", "list", "--json"]).success().json();
    let kid = keys[0]["kid"].as_str().unwrap().to_owned();
    d.run(&["keys", "revoke", &kid]).success();
    let before = d.run(&["keys", "list", "--json"]).success().json();
    nothing(&["keys", "revoke", &kid], "is already revoked");
    assert_eq!(
        d.run(&["keys", "list", "--json"]).success().json(),
        before,
        "a second revocation changed the keys"
    );

    for args in [
        &["users", "reset-mfa", "nobody"][..],
        &["users", "disable", "nobody"],
        &["users", "enable", "nobody"],
        &["users", "delete", "nobody"],
        &["sessions", "revoke-all", "nobody"],
    ] {
        d.run(args).fails(1, "no user `nobody`");
    }
}

/// The field names of every `--json` listing that the admin API also answers are the
/// API's (`sessions list` said `created`, `last_used`, `user`...; `keys list` `created`,
/// `activates`; `clients list` `created`; `users list` had no `role`).
#[tokio::test]
async fn json_listings_use_the_admin_apis_field_names() {
    let d = Data::new();
    d.add_user("fay", &["admin"]);
    d.run(&["clients", "add", "reports", "--scope", "reports:read"])
        .success();
    let server = d.serve();
    let (status, admin) = login(&server, "fay", PW).await;
    assert_eq!(status, 200, "{admin}");
    let access = admin["access_token"].as_str().unwrap().to_owned();
    let api = async |path: &str| -> Value {
        let res = reqwest::Client::new()
            .get(server.url(path))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        res.json().await.unwrap()
    };
    let names = |v: &Value| -> std::collections::BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    };
    let missing = |cli: &Value, api: &Value, what: &str| {
        let (cli, api) = (names(cli), names(api));
        let missing: Vec<&String> = api.difference(&cli).collect();
        assert!(
            missing.is_empty(),
            "{what}: the CLI lacks {missing:?} (has {cli:?})"
        );
    };
    let cli_sessions = d.run(&["sessions", "list", "--json"]).success().json();
    let api_sessions = api("/admin/sessions").await;
    let fay_session = |list: &Value, key: &str, want: &str| -> Value {
        list.as_array()
            .unwrap()
            .iter()
            .find(|s| s[key] == want)
            .unwrap()
            .clone()
    };
    let fay_id = d.run(&["users", "show", "fay"]).success().json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cli_session = fay_session(&cli_sessions, "user_id", &fay_id);
    missing(
        &cli_session,
        &fay_session(&api_sessions, "user_id", &fay_id),
        "sessions",
    );
    assert_eq!(cli_session["username"], "fay");
    assert!(cli_session["created_at"].as_str().unwrap().ends_with('Z'));

    let cli_users = d.run(&["users", "list", "--json"]).success().json();
    missing(&cli_users[0], &api("/admin/users").await[0], "users");
    let cli_keys = d.run(&["keys", "list", "--json"]).success().json();
    missing(&cli_keys[0], &api("/admin/keys").await["keys"][0], "keys");
    let cli_clients = d.run(&["clients", "list", "--json"]).success().json();
    let client = fay_session(&cli_clients, "client_id", "reports");
    assert!(client["created_at"].is_string(), "{client}");
    assert!(client.get("created").is_none(), "{client}");
}

/// An administrative command run with another `signing.alg` than the servers' (here the
/// default, RS256, on a database whose keys are ES256) must leave the keys alone: it used to
/// schedule a key of its own algorithm, which every instance then signed with.
#[test]
fn a_command_with_another_signing_alg_leaves_the_keys_alone() {
    let d = Data::new();
    let keys = es256_keys(&d);
    assert_eq!(keys.as_array().unwrap().len(), 1);
    d.run(&["users", "list"]).success();
    let after = d.run(&["keys", "list", "--json"]).success().json();
    assert_eq!(after, keys, "the keys changed");
}

/// `keys rotate` run without the servers' `signing.alg` (the default, RS256, on ES256
/// keys) created an RS256 key that every instance then signed with once it activated. A
/// command's rotation keeps the algorithm of the newest usable key.
#[test]
fn rotating_from_the_command_line_keeps_the_servers_algorithm() {
    let d = Data::new();
    es256_keys(&d);
    d.run(&["keys", "rotate", "--now"]).success();
    let after = d.run(&["keys", "list", "--json"]).success().json();
    let algs: Vec<&str> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["alg"].as_str().unwrap())
        .collect();
    assert_eq!(algs, ["ES256", "ES256"], "{after}");
}

/// `keys revoke` of the signing key, run without the servers' `signing.alg` (the default,
/// RS256, on ES256 keys): the successor keeps the revoked key's algorithm; it used to be of
/// the command's, and every instance then signed with it.
#[test]
fn revoking_the_signing_key_keeps_its_algorithm_whatever_the_commands_signing_alg() {
    let d = Data::new();
    let keys = es256_keys(&d);
    let kid = keys[0]["kid"].as_str().unwrap().to_owned();
    d.run(&["keys", "revoke", &kid]).success();
    let after = d.run(&["keys", "list", "--json"]).success().json();
    let active: Vec<&Value> = after
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["state"] == "active")
        .collect();
    assert_eq!(active.len(), 1, "{after}");
    assert_eq!(active[0]["alg"], "ES256", "{after}");
}

/// `keys revoke` checked whether the key was already revoked in the key ring, which a
/// database where no key signs does not build (`keys list` reads the stored keys since
/// baff77f): there, revoking a revoked key again said "revoked key", wrote a new revocation
/// time and a new audit event. It now says the key is already revoked and changes nothing.
#[tokio::test]
async fn revoking_a_revoked_key_where_no_key_signs_changes_nothing() {
    let d = Data::new();
    let keys = es256_keys(&d);
    let kid = keys[0]["kid"].as_str().unwrap().to_owned();
    assert_eq!(
        d.execute("UPDATE signing_keys SET revoked_at = 1000").await,
        1
    );
    let out = d.run(&["keys", "revoke", &kid]).success();
    assert!(
        out.stdout_text()
            .contains("is already revoked; nothing to do"),
        "{}",
        out.stdout_text()
    );
    assert_eq!(
        d.execute("UPDATE signing_keys SET revoked_at = 1000 WHERE revoked_at = 1000")
            .await,
        1,
        "the revocation time changed"
    );
}

/// A database whose stored keys cannot sign (every one revoked by someone with the file,
/// or only a key that activates later, as a clock behind the servers' sees it) listed
/// nothing: `keys list` printed "no signing keys yet" (`[]` with `--json`), hiding the
/// revoked keys, and `keys rotate` was refused with "start `tessera serve` once". The
/// listing now shows every stored key with its state, warns on stderr (exit 0: the listing
/// succeeded) with what to do, and `keys rotate` creates a key of the newest key's
/// algorithm that signs at once.
#[tokio::test]
async fn keys_list_shows_keys_that_cannot_sign_and_says_how_to_restore_a_signer() {
    let d = Data::new();
    let keys = es256_keys(&d);
    let kid = keys[0]["kid"].as_str().unwrap().to_owned();

    // The only key activates tomorrow.
    let moved = d
        .execute("UPDATE signing_keys SET activates_at = activates_at + 86400")
        .await;
    assert_eq!(moved, 1);
    let out = d.run(&["keys", "list", "--json"]).success();
    assert_eq!(out.json()[0]["kid"], kid.as_str(), "{}", out.stdout_text());
    assert_eq!(out.json()[0]["state"], "next", "{}", out.stdout_text());
    assert!(
        out.stderr
            .starts_with(&format!("warning: no key signs yet: {kid} signs from "))
            && out.stderr.contains("`tessera keys rotate --now`"),
        "{}",
        out.stderr
    );

    // Every key revoked.
    d.execute(
        "UPDATE signing_keys SET activates_at = activates_at - 86400, \
         revoked_at = CAST(strftime('%s', 'now') AS INTEGER) - 1",
    )
    .await;
    let warning = "warning: no usable signing key: every stored key is revoked, retired or \
                   expired; `tessera keys rotate` creates one (ES256, the algorithm of the \
                   newest) that signs at once";
    let out = d.run(&["keys", "list", "--json"]).success();
    let listed = out.json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(
        (listed[0]["kid"].as_str(), listed[0]["state"].as_str()),
        (Some(kid.as_str()), Some("revoked")),
        "{listed}"
    );
    assert!(out.stderr.starts_with(warning), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    let out = d.run(&["keys", "list"]).success();
    let table = out.stdout_text();
    assert!(
        table.starts_with("KID") && table.contains(&kid) && table.contains("revoked"),
        "{table}"
    );
    assert!(!table.contains("no signing keys yet"), "{table}");
    assert!(out.stderr.starts_with(warning), "{}", out.stderr);

    // The fix the warning names works, whatever the command's own `signing.alg`.
    let out = d.run(&["keys", "rotate"]).success();
    assert!(
        out.stdout_text()
            .contains("signing from now (no key was usable)"),
        "{}",
        out.stdout_text()
    );
    let out = d.run(&["keys", "list", "--json"]).success();
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    let listed = out.json();
    let active: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["state"] == "active")
        .collect();
    assert_eq!(active.len(), 1, "{listed}");
    assert_eq!(active[0]["alg"], "ES256", "{listed}");
    assert_ne!(active[0]["kid"], kid.as_str(), "{listed}");
    let jwks: Value =
        serde_json::from_str(&d.run(&["keys", "export-jwks"]).success().stdout_text()).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1, "{jwks}");
    assert_eq!(jwks["keys"][0]["kid"], active[0]["kid"], "{jwks}");

    // In HMAC mode the stored keys are listed, and said not to be used.
    let out = d.run_hmac(&["keys", "list", "--json"]).success();
    assert_eq!(out.json().as_array().unwrap().len(), 2);
    assert!(
        out.stderr.contains(
            "tokens are signed with HS256 from `signing.secret`; the stored keys are not used"
        ),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn imports_check_every_line_first_then_users_log_in_with_their_old_passwords() {
    let d = Data::new();
    // passlib's CryptContext(schemes=["bcrypt"]) writes $2b$ hashes like these.
    let hash = |pw: &str| bcrypt::hash(pw, 4).unwrap();
    let good = format!(
        "{}\n{}\n",
        serde_json::json!({"username": "legacy-ann", "hash": hash("ann's old password"), "roles": ["editor"]}),
        serde_json::json!({"username": "legacy-ben", "hash": hash("ben's old password")}),
    );
    let bad = format!(
        "{good}{}\nnot json\n",
        serde_json::json!({"username": "legacy-cy", "hash": "5f4dcc3b5aa765d61d8327deb882cf99"})
    );
    let dir = crate::common::Dir::new();
    let bad_file = dir.write("bad.jsonl", &bad);
    let good_file = dir.write("good.jsonl", &good);

    let run = d.run(&["users", "import", &bad_file]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("nothing was imported"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("line 3:") && run.stderr.contains("bcrypt"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("line 4:"), "{}", run.stderr);
    d.run(&["users", "show", "legacy-ann"])
        .fails(1, "no user `legacy-ann`");
    d.run(&["users", "import", "/no/such/file.jsonl"])
        .fails(2, "cannot read /no/such/file.jsonl");

    let dry = d
        .run(&["users", "import", "--dry-run", &good_file])
        .success();
    assert!(dry.stdout_text().contains("would import 2 user(s)"));
    d.run(&["users", "show", "legacy-ann"])
        .fails(1, "no user `legacy-ann`");

    let done = d.run(&["users", "import", &good_file]).success();
    assert!(
        done.stdout_text().starts_with("imported 2 user(s)"),
        "{}",
        done.stdout_text()
    );
    let again = d.run(&["users", "import", &good_file]);
    assert_eq!(again.code, 2);
    assert!(
        again
            .stderr
            .contains("already exists (pass --skip-existing"),
        "{}",
        again.stderr
    );
    let skipped = d
        .run_stdin(&["users", "import", "--skip-existing", "-"], &good)
        .success();
    assert!(
        skipped
            .stdout_text()
            .contains("skipped 2 that already exist")
    );
    assert_eq!(
        d.run(&["users", "show", "legacy-ann"]).success().json()["roles"],
        serde_json::json!(["editor"])
    );
    // A byte-order mark before the first line (Windows editors write one) is not JSON.
    let bom = format!(
        "\u{feff}{}\n",
        serde_json::json!({"username": "legacy-dee", "hash": hash("dee's old password")})
    );
    d.run_stdin(&["users", "import", "-"], &bom).success();

    // They log in with their old passwords, and the bcrypt hash is replaced by Argon2id.
    let server = d.serve();
    assert_eq!(
        login(&server, "legacy-ann", "wrong password here").await.0,
        400
    );
    assert_eq!(
        login(&server, "legacy-ann", "ann's old password").await.0,
        200
    );
    let mut c = d.sql().await;
    let stored: String =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE username = 'legacy-ann'")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert_eq!(
        login(&server, "legacy-ann", "ann's old password").await.0,
        200
    );

    let events = stdout_json_lines(
        &d.run(&["audit", "list", "--json", "--user", "legacy-ann"])
            .success(),
    );
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"user_imported"), "{kinds:?}");
    assert!(kinds.contains(&"login"));
}

#[tokio::test]
async fn an_admin_lifts_a_lockout_and_resets_a_lost_second_factor() {
    let d = Data::new();
    d.add_user("dora", &[]);
    let server = d.serve();
    for _ in 0..5 {
        assert_eq!(login(&server, "dora", "not her password").await.0, 400);
    }
    let (status, body) = login(&server, "dora", PW).await;
    assert_eq!(status, 400);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("too many failed attempts")
    );
    let show = d.run(&["users", "show", "dora"]).success().json();
    assert!(show["locked_until"].is_string(), "{show}");
    let unlocked = d.run(&["users", "unlock", "dora"]).success();
    assert!(unlocked.stdout_text().starts_with("unlocked dora"));
    assert_eq!(login(&server, "dora", PW).await.0, 200);
    let again = d.run(&["users", "unlock", "dora"]).success();
    assert!(again.stdout_text().contains("was not locked"));

    // Enrol TOTP over HTTP, as the user would.
    let nothing = d.run(&["users", "reset-mfa", "dora"]).success();
    assert!(nothing.stdout_text().contains("nothing to do"));
    let (_, tokens) = login(&server, "dora", PW).await;
    let access = tokens["access_token"].as_str().unwrap();
    let http = reqwest::Client::new();
    let enrol: Value = http
        .post(server.url("/users/me/mfa/totp"))
        .json(&serde_json::json!({"password": PW}))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let totp = totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(enrol["secret"].as_str().unwrap()).unwrap())
        .build()
        .unwrap();
    let res = http
        .post(server.url("/users/me/mfa/totp/confirm"))
        .bearer_auth(access)
        .json(&serde_json::json!({"code": totp.generate_current().to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (status, body) = login(&server, "dora", PW).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("mfa_required"))
    );
    assert_eq!(
        d.run(&["users", "show", "dora"]).success().json()["totp_enabled"],
        true
    );

    let reset = d.run(&["users", "reset-mfa", "dora"]).success();
    assert!(reset.stdout_text().contains("turned off"));
    assert_eq!(login(&server, "dora", PW).await.0, 200);
    let events = stdout_json_lines(
        &d.run(&["audit", "list", "--json", "--user", "dora"])
            .success(),
    );
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for expected in ["lockout", "unlocked", "mfa_reset"] {
        assert!(
            kinds.contains(&expected),
            "{expected} missing from {kinds:?}"
        );
    }
    let reset_event = events.iter().find(|e| e["event"] == "mfa_reset").unwrap();
    assert_eq!(reset_event["user_agent"], "tessera-cli");
}

#[tokio::test]
async fn audit_verify_finds_an_edited_a_deleted_and_a_cut_off_row() {
    let d = Data::new();
    for name in ["erin", "fred", "gina"] {
        d.add_user(name, &[]);
    }
    let ok = d.run(&["audit", "verify"]).success().stdout_text();
    assert!(ok.starts_with("audit log intact: "), "{ok}");
    let head = ok.trim_end().rsplit("head ").next().unwrap().to_owned();
    let rows: usize = ok
        .trim_start_matches("audit log intact: ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(rows, 3, "three users created: {ok}");
    d.run(&["audit", "verify", "--expect-head", &head])
        .success();
    d.run(&["audit", "verify", "--expect-head", "banana"])
        .fails(2, "is not ID:HASH");

    // Listing: a table, JSON lines, filters, and clear errors.
    let table = d.run(&["audit", "list"]).success().stdout_text();
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains("user_created"), "{table}");
    let fred = stdout_json_lines(
        &d.run(&["audit", "list", "--json", "--user", "fred"])
            .success(),
    );
    assert_eq!(fred.len(), 1);
    assert_eq!(fred[0]["username"], "fred");
    let recent = stdout_json_lines(
        &d.run(&["audit", "list", "--json", "--limit", "2"])
            .success(),
    );
    assert_eq!(recent.len(), 2);
    assert_eq!(
        recent[1]["username"], "gina",
        "the most recent rows, oldest first"
    );
    assert!(
        stdout_json_lines(
            &d.run(&["audit", "list", "--json", "--since", "1h"])
                .success()
        )
        .len()
            >= 3
    );
    assert!(
        stdout_json_lines(
            &d.run(&["audit", "list", "--json", "--since", "2000-01-01T00:00:00Z"])
                .success()
        )
        .len()
            >= 3
    );
    d.run(&["audit", "list", "--since", "yesterday"])
        .fails(2, "is not a time");
    d.run(&["audit", "list", "--user", "nobody"])
        .fails(1, "no user `nobody`");

    // The database itself refuses edits...
    let mut c = d.sql().await;
    let err = sqlx::query("UPDATE audit_log SET outcome = 'failure' WHERE id = 2")
        .execute(&mut c)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    // ...but someone with the file can drop the guards; the chain still tells.
    d.execute("DROP TRIGGER audit_log_no_update").await;
    d.execute("DROP TRIGGER audit_log_no_delete").await;

    assert_eq!(
        d.execute("UPDATE audit_log SET outcome = 'failure' WHERE id = 2")
            .await,
        1
    );
    let broken = d.run(&["audit", "verify"]).fails(1, "audit log BROKEN");
    assert!(
        broken.stderr.contains("row 2 does not match its hash"),
        "{}",
        broken.stderr
    );
    assert!(
        broken.stderr.contains("Intact rows: 1"),
        "{}",
        broken.stderr
    );
    d.execute("UPDATE audit_log SET outcome = 'success' WHERE id = 2")
        .await;
    d.run(&["audit", "verify"]).success();

    assert_eq!(d.execute("DELETE FROM audit_log WHERE id = 2").await, 1);
    let broken = d.run(&["audit", "verify"]).fails(1, "audit log BROKEN");
    assert!(
        broken.stderr.contains("row 3 does not link"),
        "{}",
        broken.stderr
    );

    // Cutting rows off the end leaves a valid chain; only a recorded head reveals it.
    let d = Data::new();
    d.add_user("hank", &[]);
    d.add_user("iris", &[]);
    let ok = d.run(&["audit", "verify"]).success().stdout_text();
    let head = ok.trim_end().rsplit("head ").next().unwrap().to_owned();
    d.execute("DROP TRIGGER audit_log_no_delete").await;
    d.execute("DELETE FROM audit_log WHERE id = (SELECT MAX(id) FROM audit_log)")
        .await;
    d.run(&["audit", "verify"]).success();
    d.run(&["audit", "verify", "--expect-head", &head])
        .fails(1, "rows were cut off the end");
}

/// Every command's output goes through one fallible path: a full disk or a closed pipe on
/// stdout is "cannot write to stdout" with exit 1, never a panic (exit 101).
#[cfg(target_os = "linux")]
#[test]
fn output_that_cannot_be_written_is_an_error_not_a_panic() {
    use crate::common::{Sink, run_into};

    let d = Data::new();
    d.add_user("olga", &[]);
    d.run(&["clients", "add", "listed"]).success();
    for args in [
        &["users", "list"][..],
        &["users", "list", "--json"],
        &["users", "show", "olga"],
        &["keys", "list"],
        &["keys", "export-jwks"],
        &["sessions", "list"],
        &["clients", "list"],
        &["audit", "list"],
        &["audit", "list", "--json"],
        &["check-config"],
        &["completions", "bash"],
    ] {
        for sink in [Sink::Full, Sink::Closed] {
            let out = run_into(&d.command(args), sink);
            assert_eq!(out.code, 1, "{args:?} into {sink:?}: {}", out.stderr);
            assert!(
                out.stderr.starts_with("error: cannot write to stdout: "),
                "{args:?} into {sink:?}: {}",
                out.stderr
            );
        }
    }

    // The chain is intact, but the head the check is run for is lost: not exit 0, and the
    // message keeps the verdict.
    let out = run_into(&d.command(&["audit", "verify"]), Sink::Full);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("error: audit log intact: ")
            && out.stderr.contains("but cannot write to stdout"),
        "{}",
        out.stderr
    );

    // The client exists, but its secret was never shown: say so, and what to do.
    let out = run_into(
        &d.command(&["clients", "add", "lost", "--confidential"]),
        Sink::Full,
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("the client lost was created, but its secret was not shown")
            && out.stderr.contains("tessera clients delete lost"),
        "{}",
        out.stderr
    );
    let clients = d.run(&["clients", "list", "--json"]).success().json();
    assert!(
        clients
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["client_id"] == "lost"),
        "{clients}"
    );
}

/// A name that is not there, or is there already, is named in the error with the command
/// that shows what is: `sessions list --user` said only "user not found", `keys revoke`
/// "signing key not found", `clients delete` "client not found", and a second `users add` or
/// `clients add` "user already exists" / "client already exists".
#[test]
fn missing_and_existing_names_are_named_with_what_to_run() {
    let d = Data::new();
    d.add_user("quinn", &[]);
    d.run(&["clients", "add", "svc"]).success();
    d.run(&["sessions", "list", "--user", "nobody"]).fails(
        1,
        "no user `nobody` (by username or id); `tessera users list` shows them",
    );
    d.run(&["keys", "revoke", "no-such-kid"]).fails(
        1,
        "no signing key `no-such-kid`; `tessera keys list` shows their ids",
    );
    d.run(&["clients", "delete", "nope"])
        .fails(1, "no client `nope`; `tessera clients list` shows them");
    d.run(&["clients", "add", "svc"]).fails(
        1,
        "client `svc` already exists; choose another id, or delete it first (`tessera clients delete svc`)",
    );
    d.run_stdin(
        &["users", "add", "quinn", "--password-stdin"],
        &format!("{PW}\n"),
    )
    .fails(
        1,
        "user `quinn` already exists; `tessera users show quinn` shows it",
    );
}

/// Messages for stderr (notes, warnings, the error line itself) are written the same
/// fallible way: a closed or full stderr (`tessera check-config 2>&1 | head -1`) loses them
/// but never turns the command into a panic (exit 101); the exit code stays the command's.
#[cfg(target_os = "linux")]
#[test]
fn a_stderr_that_cannot_be_written_is_not_a_panic() {
    use std::process::Stdio;

    let d = Data::new();
    d.add_user("pia", &[]);
    for (args, code) in [
        // Success, with a line on stderr after the output.
        (&["check-config"][..], 0),
        (&["clients", "add", "CLIENT", "--confidential"], 0),
        (&["token", "decode", "e30.e30.e30"], 0),
        (&["keys", "generate", "--alg", "HS256"], 0),
        // Failures: the error line is lost, the exit code is not.
        (&["users", "show", "nobody"], 1),
        (&["sessions", "revoke", "not-an-id"], 2),
    ] {
        for closed in [false, true] {
            // A new client each time: the first run created its own.
            let client = if closed { "quiet-closed" } else { "quiet-full" };
            let args: Vec<&str> = args
                .iter()
                .map(|a| if *a == "CLIENT" { client } else { a })
                .collect();
            let mut std_cmd = crate::common::std_command(&d.command(&args));
            std_cmd.stdin(Stdio::null()).stdout(Stdio::piped());
            if closed {
                std_cmd.stderr(Stdio::piped());
            } else {
                std_cmd.stderr(std::fs::File::create("/dev/full").unwrap());
            }
            let mut child = std_cmd.spawn().unwrap();
            drop(child.stderr.take());
            let out = child.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(code),
                "{args:?} with stderr {}: stdout {}",
                if closed { "closed" } else { "full" },
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

/// A database restored without its master key: no new key is written beside it (it would
/// unseal nothing, and stand in for the real one from then on); the error says what to
/// restore. A wrong master key is named as such, with the same advice.
#[test]
fn a_restored_database_without_its_master_key_is_refused_and_nothing_is_written() {
    let a = Data::new();
    a.run(&["users", "list"]).success();
    let b = Data::new();
    std::fs::copy(a.path().join("tessera.db"), b.path().join("tessera.db")).unwrap();
    assert_refused_without_its_master_key(&b, &b.run(&["audit", "verify"]));

    write_wrong_master_key(&b);
    assert_refused_with_a_wrong_master_key(&b.run(&["users", "list"]));

    std::fs::copy(a.path().join("master.key"), b.path().join("master.key")).unwrap();
    b.run(&["users", "list"]).success();
}

/// `out` is the refusal of a database copied into `d` without its master key, and no new
/// master key was written there.
fn assert_refused_without_its_master_key(d: &Data, out: &Run) {
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("master.key is missing")
            && out
                .stderr
                .contains("restore master.key from backup or set TESSERA_MASTER_KEY"),
        "{}",
        out.stderr
    );
    assert!(!d.path().join("master.key").exists(), "nothing written");
}

/// Puts a master key in `d` that is not the one its database was created with.
fn write_wrong_master_key(d: &Data) {
    let wrong = tessera_jose::base64url::encode([7u8; 32]);
    std::fs::write(d.path().join("master.key"), wrong).unwrap();
}

/// `out` is the refusal of a master key that is not the database's, with what to do.
fn assert_refused_with_a_wrong_master_key(out: &Run) {
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("is not the one this database was created with")
            && out.stderr.contains("set TESSERA_MASTER_KEY")
            && !out.stderr.contains("internal error"),
        "{}",
        out.stderr
    );
}

/// The same with an HMAC signing secret, where the database holds no signing key: the
/// master key still seals TOTP secrets and keys recovery codes, and the database records
/// which one it was created with.
#[test]
fn an_hmac_mode_database_restored_without_its_master_key_is_refused_too() {
    let a = Data::new();
    a.run_hmac(&["users", "list"]).success();
    let b = Data::new();
    std::fs::copy(a.path().join("tessera.db"), b.path().join("tessera.db")).unwrap();
    assert_refused_without_its_master_key(&b, &b.run_hmac(&["users", "list"]));
    write_wrong_master_key(&b);
    assert_refused_with_a_wrong_master_key(&b.run_hmac(&["users", "list"]));
    std::fs::copy(a.path().join("master.key"), b.path().join("master.key")).unwrap();
    b.run_hmac(&["users", "list"]).success();
}

/// A row edited outside Tessera so that it cannot even be read (detail not JSON, a time
/// that is text, an event that is not UTF-8) is a broken row for `audit verify`, named by
/// id, and `audit list` names it instead of a bare "storage error".
#[tokio::test]
async fn an_unreadable_audit_row_is_named_by_verify_and_list() {
    let d = Data::new();
    for name in ["kate", "liam", "mona"] {
        d.add_user(name, &[]);
    }
    d.execute("DROP TRIGGER audit_log_no_update").await;
    for edit in [
        "UPDATE audit_log SET detail = 'not json' WHERE id = 2",
        "UPDATE audit_log SET at = 'yesterday' WHERE id = 2",
        "UPDATE audit_log SET event = CAST(X'FF' AS TEXT) WHERE id = 2",
    ] {
        let saved: (i64, String, String) =
            sqlx::query_as("SELECT at, event, detail FROM audit_log WHERE id = 2")
                .fetch_one(&mut d.sql().await)
                .await
                .unwrap();
        d.execute(edit).await;
        let broken = d.run(&["audit", "verify"]).fails(1, "audit log BROKEN");
        assert!(
            broken.stderr.contains("row 2 cannot be read")
                && broken.stderr.contains("Intact rows: 1 (up to row 1)"),
            "{edit}: {}",
            broken.stderr
        );
        let list = d
            .run(&["audit", "list"])
            .fails(1, "audit row 2 cannot be read");
        assert!(!list.stderr.contains("storage error"), "{}", list.stderr);
        let mut c = d.sql().await;
        sqlx::query("UPDATE audit_log SET at = $1, event = $2, detail = $3 WHERE id = 2")
            .bind(saved.0)
            .bind(saved.1)
            .bind(saved.2)
            .execute(&mut c)
            .await
            .unwrap();
        d.run(&["audit", "verify"]).success();
    }
}

/// A database from before the master-key check (no `master_key_check` row) must not get a
/// wrong key recorded: a configured key that does not open its signing keys is refused
/// before anything is written, and the right one still works after; in HMAC mode, with no
/// signing key to tell, a database that has users is not given a new master key.
#[tokio::test]
async fn a_database_from_before_the_check_never_records_a_wrong_key() {
    let d = Data::new();
    d.add_user("olga", &[]);
    // Databases from before the check were all served once: they hold a signing key.
    drop(d.serve());
    assert_eq!(
        d.execute("DELETE FROM meta WHERE key = 'master_key_check'")
            .await,
        1
    );
    let wrong = tessera_jose::base64url::encode([7u8; 32]);
    let out: Run = d
        .command(&["users", "list"])
        .env("TESSERA_MASTER_KEY", &wrong)
        .output()
        .unwrap()
        .into();
    out.fails(1, "does not unseal the stored signing key");
    d.run(&["users", "show", "olga"]).success();

    let h = Data::new();
    h.add_user("pavel", &[]);
    h.run_hmac(&["users", "list"]).success();
    h.execute("DELETE FROM signing_keys").await;
    h.execute("DELETE FROM meta WHERE key = 'master_key_check'")
        .await;
    let key = std::fs::read(h.path().join("master.key")).unwrap();
    std::fs::remove_file(h.path().join("master.key")).unwrap();
    let out = h.run_hmac(&["users", "list"]);
    out.fails(
        1,
        "user(s) whose second factors are sealed with the master key",
    );
    assert!(!h.path().join("master.key").exists(), "nothing written");
    std::fs::write(h.path().join("master.key"), key).unwrap();
    h.run_hmac(&["users", "show", "pavel"]).success();
}

/// A key id is base64url, so one in 64 begins with `-`, and so may a username: clap took
/// such a value for an unknown flag (`keys revoke -wX…`: "unexpected argument '-w' found"),
/// which made `keys revoke` of such a key impossible without `--`. Positional names, ids and
/// `--user` now take a leading hyphen as part of the value.
#[test]
fn names_and_key_ids_may_begin_with_a_hyphen() {
    let d = Data::new();
    d.add_user("-dash", &[]);
    let out = d
        .run(&["users", "disable", "-dash"])
        .success()
        .stdout_text();
    assert!(out.contains("disabled -dash"), "{out}");
    d.run(&["users", "show", "-dash"]).success();
    d.run(&["sessions", "list", "--user", "-dash"]).success();
    d.run(&["audit", "list", "--user", "-dash"]).success();
    d.run(&["keys", "revoke", "-wNoSuchKey"])
        .fails(1, "no signing key `-wNoSuchKey`");
}
