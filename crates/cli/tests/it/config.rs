//! `tessera check-config`: the configuration layers (file, environment, flags) and how bad
//! values are refused.

use crate::common::{Dir, Run, tessera};

/// `check-config --data-dir DATA` with `args`, `env` and nothing else of the caller's.
fn check(dir: &Dir, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = tessera();
    cmd.args(["check-config", "--data-dir"])
        .arg(dir.path("data"))
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap().into()
}

/// The `database` line check-config prints (the SQLite file it would open).
fn database(run: &Run) -> String {
    run.json()["database_url"].as_str().unwrap().to_owned()
}

/// A secret set in a higher layer replaces a lower layer's, whichever of its two forms
/// (`<key>` or `<key>_file`) each uses; both forms in one layer stay an error. The file's
/// `database_url_file` and the environment's `TESSERA_DATABASE_URL` were "both set; keep
/// one", and so was `--database-url` beside `TESSERA_DATABASE_URL_FILE`.
#[test]
fn a_secret_in_a_higher_layer_replaces_a_lower_layers_file_form() {
    let dir = Dir::new();
    let url_file = dir.write("db-url", "sqlite:/tmp/from-the-secret-file.db\n");
    let config = dir.write(
        "tessera.toml",
        format!("database_url_file = \"{url_file}\"\n"),
    );
    let out = check(&dir, &["--config", &config], &[]).success();
    assert!(
        database(&out).contains("from-the-secret-file"),
        "{}",
        database(&out)
    );

    // The environment over the file.
    let out = check(
        &dir,
        &["--config", &config],
        &[("TESSERA_DATABASE_URL", "sqlite:/tmp/from-the-env.db")],
    )
    .success();
    assert!(
        database(&out).contains("from-the-env"),
        "{}",
        database(&out)
    );

    // A flag over the environment's `_FILE`.
    let out = check(
        &dir,
        &["--database-url", "sqlite:/tmp/from-the-flag.db"],
        &[("TESSERA_DATABASE_URL_FILE", &url_file)],
    )
    .success();
    assert!(
        database(&out).contains("from-the-flag"),
        "{}",
        database(&out)
    );

    // The environment's `_FILE` over the file's value; the overridden form is not read.
    let config = dir.write(
        "plain.toml",
        "database_url = \"sqlite:/tmp/from-the-toml.db\"\nmaster_key_file = \"/nonexistent/key\"\n",
    );
    let out = check(
        &dir,
        &["--config", &config],
        &[
            ("TESSERA_DATABASE_URL_FILE", &url_file),
            ("TESSERA_MASTER_KEY", &"ab".repeat(32)),
        ],
    )
    .success();
    assert!(
        database(&out).contains("from-the-secret-file"),
        "{}",
        database(&out)
    );

    // Both forms in one layer: still refused.
    check(
        &dir,
        &[],
        &[
            ("TESSERA_DATABASE_URL", "sqlite:/tmp/a.db"),
            ("TESSERA_DATABASE_URL_FILE", &url_file),
        ],
    )
    .fails(2, "both `database_url` and `database_url_file` are set");
    let both = dir.write(
        "both.toml",
        format!("database_url = \"sqlite:/tmp/a.db\"\ndatabase_url_file = \"{url_file}\"\n"),
    );
    check(&dir, &["--config", &both], &[])
        .fails(2, "both `database_url` and `database_url_file` are set");
}

/// A duration too large to add to a timestamp is refused when the configuration is read.
/// `keys.publish_ahead = 9223372036854775807` made `check-config` (and `serve`) panic on
/// `2 × publish_ahead`, and with `keys.rotate_every = 0` it started, then a key rotation
/// panicked on `now + publish_ahead` (a 500).
#[test]
fn durations_too_large_for_the_clock_are_refused_not_a_panic() {
    let dir = Dir::new();
    for (key, env) in [
        ("keys.publish_ahead", "TESSERA_KEYS__PUBLISH_AHEAD"),
        ("refresh_token_ttl", "TESSERA_REFRESH_TOKEN_TTL"),
        ("session_max_age", "TESSERA_SESSION_MAX_AGE"),
        ("limits.request_timeout", "TESSERA_LIMITS__REQUEST_TIMEOUT"),
    ] {
        for value in ["9223372036854775807", "4611686018427387904", "9999999999w"] {
            let out = check(
                &dir,
                &[],
                &[(env, value), ("TESSERA_KEYS__ROTATE_EVERY", "0")],
            );
            assert_eq!(out.code, 2, "{env}={value}: {}", out.stderr);
            assert!(
                out.stderr
                    .contains(&format!("invalid configuration key `{key}`"))
                    && out.stderr.contains("at most 100 years"),
                "{}",
                out.stderr
            );
        }
    }
    // A long one that fits is still fine.
    check(&dir, &[], &[("TESSERA_SESSION_MAX_AGE", "5200w")]).success();
}

/// A value of the wrong type in the file is named with what was expected. Every number,
/// duration, list and boolean key answered "data did not match any variant of untagged
/// enum Repr".
#[test]
fn values_of_the_wrong_type_say_what_was_expected() {
    let dir = Dir::new();
    for (toml, key, expected) in [
        (
            "access_token_ttl = 1.5",
            "access_token_ttl",
            "expected a duration",
        ),
        ("access_token_ttl = [1]", "access_token_ttl", "not an array"),
        (
            "trusted_proxies = -1",
            "trusted_proxies",
            "expected a non-negative integer, not `-1`",
        ),
        (
            "[limits]\nmax_body_bytes = 2.5",
            "limits.max_body_bytes",
            "not `2.5`",
        ),
        (
            "default_scopes = [1]",
            "default_scopes",
            "expected a list of strings",
        ),
        (
            "[metrics]\nenabled = 1",
            "metrics.enabled",
            "expected true or false, not `1`",
        ),
        (
            "[keys]\nrotate_every = {}",
            "keys.rotate_every",
            "not a table",
        ),
    ] {
        let file = dir.write("bad.toml", format!("{toml}\n"));
        let out = check(&dir, &["--config", &file], &[]);
        assert_eq!(out.code, 2, "{toml}: {}", out.stderr);
        assert!(
            out.stderr
                .contains(&format!("invalid configuration key `{key}`"))
                && out.stderr.contains(expected)
                && !out.stderr.contains("untagged"),
            "{toml}: {}",
            out.stderr
        );
    }
}

/// A number out of range is refused, never replaced: `password.min_strength = 256` ran with
/// 3, `lockout.threshold = 18446744073709551615` with 5, `database.max_connections =
/// 4294967296` with 10 (the defaults, since the value did not fit the field's type);
/// `database.max_connections = 0` and `limits.request_timeout = 0` were accepted and run
/// as 2 and 1 s.
#[test]
fn numbers_out_of_range_are_refused_not_replaced_by_the_default() {
    let dir = Dir::new();
    for (env, value, key) in [
        (
            "TESSERA_PASSWORD__MIN_STRENGTH",
            "256",
            "password.min_strength",
        ),
        (
            "TESSERA_LOCKOUT__THRESHOLD",
            "18446744073709551615",
            "lockout",
        ),
        (
            "TESSERA_DATABASE__MAX_CONNECTIONS",
            "4294967296",
            "database.max_connections",
        ),
        (
            "TESSERA_DATABASE__MAX_CONNECTIONS",
            "0",
            "database.max_connections",
        ),
        (
            "TESSERA_LIMITS__REQUEST_TIMEOUT",
            "0",
            "limits.request_timeout",
        ),
    ] {
        check(&dir, &[], &[(env, value)]).fails(2, &format!("`{key}`"));
    }
    let out = check(
        &dir,
        &[],
        &[
            ("TESSERA_PASSWORD__MIN_STRENGTH", "4"),
            ("TESSERA_DATABASE__MAX_CONNECTIONS", "50"),
            ("TESSERA_LIMITS__REQUEST_TIMEOUT", "1s"),
        ],
    )
    .success()
    .json();
    assert_eq!(out["password"]["min_strength"], 4);
    // Under its configuration path (it was shown as `database_pool`).
    assert_eq!(out["database"]["max_connections"], 50);
    assert_eq!(out["limits"]["request_timeout"], 1);
}

/// A `<secret>_file` is read up to 64 KiB: `TESSERA_MASTER_KEY_FILE=/dev/zero` (a wrong
/// path, or a device) was read until memory ran out.
#[cfg(unix)]
#[test]
fn a_secret_file_that_never_ends_is_refused() {
    let dir = Dir::new();
    let started = std::time::Instant::now();
    check(&dir, &[], &[("TESSERA_MASTER_KEY_FILE", "/dev/zero")]).fails(
        2,
        "cannot read `master_key_file` (/dev/zero): it is a character device, not a regular file",
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let big = dir.write("big", vec![b'a'; 70_000]);
    check(&dir, &[], &[("TESSERA_DATABASE_URL_FILE", &big)]).fails(2, "larger than 65536 bytes");
}

/// The configuration file is read up to 1 MiB: `--config /dev/zero` was read until memory
/// ran out.
#[cfg(unix)]
#[test]
fn a_configuration_file_that_never_ends_is_refused() {
    let dir = Dir::new();
    check(&dir, &["--config", "/dev/zero"], &[]).fails(
        2,
        "cannot read config file /dev/zero: it is a character device, not a regular file",
    );
}

/// A FIFO given as a file to read (a mistake, or a path reused for a pipe) blocked the
/// command for good in open(2), waiting for a writer that never came: `check-config` and
/// `serve` hung at start, an administration command on a FIFO `master.key` too. Each is now
/// refused at once (the command's timeout, 20 s, only keeps the old behaviour from hanging
/// the test run).
#[cfg(unix)]
#[test]
fn a_fifo_given_as_a_file_is_refused_without_blocking() {
    let dir = Dir::new();
    let fifo = dir.path("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let fifo = fifo.to_str().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| -> Run {
        let mut cmd = tessera();
        cmd.args(args).timeout(std::time::Duration::from_secs(20));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap().into()
    };
    let data = dir.path("data");
    let data = data.to_str().unwrap();
    let not_regular = "it is a FIFO (named pipe), not a regular file";
    run(&["check-config", "--data-dir", data, "--config", fifo], &[])
        .fails(2, &format!("cannot read config file {fifo}: {not_regular}"));
    run(
        &["check-config", "--data-dir", data],
        &[("TESSERA_CONFIG", fifo)],
    )
    .fails(2, not_regular);
    run(
        &["check-config", "--data-dir", data],
        &[
            ("TESSERA_SIGNING__ALG", "HS256"),
            ("TESSERA_SIGNING__SECRET_FILE", fifo),
        ],
    )
    .fails(
        2,
        &format!("cannot read `signing.secret_file` ({fifo}): {not_regular}"),
    );
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.write("cert.pem", params.self_signed(&key).unwrap().pem());
    let key = dir.write("key.pem", key.serialize_pem());
    for (cert, key, name) in [
        (fifo, key.as_str(), "tls.cert"),
        (cert.as_str(), fifo, "tls.key"),
    ] {
        run(
            &["check-config", "--data-dir", data],
            &[("TESSERA_TLS__CERT", cert), ("TESSERA_TLS__KEY", key)],
        )
        .fails(2, &format!("`{name}` ({fifo}): {not_regular}"));
    }
    // `master.key` in the data directory, read by every command that opens the database.
    std::fs::create_dir(data).unwrap();
    std::fs::rename(fifo, dir.path("data/master.key")).unwrap();
    run(&["users", "list", "--data-dir", data], &[]).fails(1, not_regular);
}

/// A certificate file cut short (a copy still being written) is named as such; the error
/// listed the missing marker as byte values (`end_marker: [67, 69, 82, 84, ...]`).
#[test]
fn a_truncated_certificate_is_described_in_words() {
    let dir = Dir::new();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap().pem();
    let cert = dir.write("cert.pem", &cert[..cert.len() / 2]);
    let key = dir.write("key.pem", key.serialize_pem());
    let out = check(
        &dir,
        &[],
        &[("TESSERA_TLS__CERT", &cert), ("TESSERA_TLS__KEY", &key)],
    )
    .fails(2, "a section has no `-----END CERTIFICATE-----` line");
    assert!(!out.stderr.contains("[67, 69"), "{}", out.stderr);
}

/// `keys.jwks_max_age` is never more than `keys.publish_ahead` (the JWKS is served with the
/// smaller); check-config printed the configured value, not the one the server uses.
#[test]
fn check_config_shows_the_jwks_max_age_the_server_sends() {
    let dir = Dir::new();
    let out = check(
        &dir,
        &[],
        &[
            ("TESSERA_KEYS__JWKS_MAX_AGE", "1h"),
            ("TESSERA_KEYS__PUBLISH_AHEAD", "10m"),
        ],
    )
    .success()
    .json();
    assert_eq!(out["keys"]["jwks_max_age"], 600);
}

/// Every configuration error is one line that names the key, says where it was set (the
/// environment variable, the flag or the config file, as the user wrote it) and what to do.
/// A bad value from the environment printed three lines (toml's "in `key`" and a blank
/// line); a value checked after loading (`TESSERA_LISTEN=nonsense`) never named the
/// variable; a TOML syntax error quoted the file over four lines; a plain file given as the
/// data directory was exit 1 from deep in the start-up.
#[test]
fn configuration_errors_are_one_line_naming_where_the_key_was_set() {
    let dir = Dir::new();
    check(&dir, &[], &[("TESSERA_LISTEN", "nonsense")]).fails(
        2,
        "`listen` = `nonsense` is not an address like 127.0.0.1:8080 (set by environment \
         variable TESSERA_LISTEN)",
    );
    check(&dir, &[], &[("TESSERA_SIGNING__ALG", "XX")])
        .fails(2, "(set by environment variable TESSERA_SIGNING__ALG)");
    check(&dir, &[], &[("TESSERA_ACCESS_TOKEN_TTL", "abc")]).fails(
        2,
        "`access_token_ttl`: `abc` is not a duration; use e.g. 900, 90s, 15m, 12h, 30d (set \
         by environment variable TESSERA_ACCESS_TOKEN_TTL)",
    );
    let file = dir.write("c.toml", "[lockout]\nbase = \"2h\"\n");
    check(&dir, &["--config", &file], &[])
        .fails(2, &format!("`lockout`: threshold 1-100, base at least 1s, max between base and 24h (a lockout must end) (set by config file {file})"));
    let bad = dir.write("bad.toml", "listen = \n");
    check(&dir, &["--config", &bad], &[]).fails(
        2,
        &format!(
            "config file {bad} is not valid TOML at line 1, column 10: string values must be quoted"
        ),
    );
    let mut serve = tessera();
    serve
        .args(["serve", "--listen", "nonsense", "--data-dir"])
        .arg(dir.path("data"));
    Run::from(serve.output().unwrap()).fails(2, "(set by --listen)");

    let plain = dir.write("plain", "");
    for args in [&["check-config"][..], &["users", "list"]] {
        let mut cmd = tessera();
        cmd.args(args).env("TESSERA_DATA_DIR", &plain);
        Run::from(cmd.output().unwrap()).fails(
            2,
            "is a file, not a directory; point it at a directory (one that does not exist yet \
             is created by `tessera serve`), or move the file away (set by environment \
             variable TESSERA_DATA_DIR)",
        );
    }
}

/// An empty path flag is a configuration error like the others: one line saying what is
/// wrong and what to do, exit 2. `--config ''` and `--data-dir ''` printed clap's usage
/// error over three lines ("a value is required for '--config <FILE>' but none was
/// supplied", a blank line, a hint); an empty `TESSERA_DATA_DIR=` was taken as a data
/// directory with no path (check-config called it valid, `users list` said "the data
/// directory  does not exist").
#[test]
fn an_empty_config_or_data_dir_is_one_line_naming_where_it_was_set() {
    let dir = Dir::new();
    let data = dir.path("data");
    let empty_config = "the config file path is empty; give --config the path of a TOML \
                        file, or leave the flag out to use none (set by --config)";
    for args in [
        &["--config", "", "serve", "--listen", "127.0.0.1:0"][..],
        &["serve", "--listen", "127.0.0.1:0", "--config="],
        &["check-config", "--config", ""],
        &["users", "list", "--config", ""],
    ] {
        let mut cmd = tessera();
        cmd.args(args).arg("--data-dir").arg(&data);
        let out = Run::from(cmd.output().unwrap()).fails(2, empty_config);
        assert!(
            out.stderr.starts_with("error: configuration error: "),
            "{args:?}: {}",
            out.stderr
        );
    }
    // Nothing was started or created on the way.
    assert!(!data.exists(), "{} was created", data.display());

    let empty_data_dir = "`data_dir` is empty; point it at a directory, or leave it unset \
                          for ./tessera-data";
    for args in [&["check-config"][..], &["serve"], &["users", "list"]] {
        let mut cmd = tessera();
        cmd.arg("--data-dir").arg("").args(args);
        Run::from(cmd.output().unwrap()).fails(2, &format!("{empty_data_dir} (set by --data-dir)"));
        let mut cmd = tessera();
        cmd.env("TESSERA_DATA_DIR", "").args(args);
        Run::from(cmd.output().unwrap()).fails(
            2,
            &format!("{empty_data_dir} (set by environment variable TESSERA_DATA_DIR)"),
        );
    }

    // An empty `TESSERA_CONFIG=` (a unit file's) still means no file.
    check(&dir, &[], &[("TESSERA_CONFIG", "")]).success();
}
