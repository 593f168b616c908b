//! `tessera users import FILE`: users with existing password hashes, from JSON lines.
//!
//! Two passes: every line is parsed and checked first (names, roles, hash formats,
//! duplicates, users that already exist), so one bad line imports nothing; then the users
//! are written one by one through the domain service, each audited as `user_imported`.

use std::collections::HashSet;
use std::fmt;
use std::io::Read as _;
use std::path::Path;

use serde::Deserialize;
use tessera_auth::AuthError;
use tessera_auth::model::{Role, Username};
use tessera_auth::password::{is_supported_hash, supported_hashes};
use tessera_server::AppState;

use crate::admin::{CLI, fail};
use crate::exit::Failure;

/// The largest import file read (a million users is about 100 MiB).
const MAX_FILE: u64 = 256 * 1024 * 1024;

/// One line of the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    username: String,
    hash: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// A checked user, ready to write.
struct Entry {
    line: usize,
    username: String,
    hash: String,
    roles: Vec<String>,
}

/// Reads the file (or stdin for `-`) into lines, before the database is opened.
pub(crate) fn read(path: &Path) -> Result<Vec<String>, Failure> {
    let mut text = String::new();
    let res = if path.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(MAX_FILE + 1)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_FILE + 1).read_to_string(&mut text))
    };
    res.map_err(|e| {
        Failure::usage(format!(
            "cannot read {}: {e} (expected a UTF-8 JSON-lines file)",
            path.display()
        ))
    })?;
    if text.len() as u64 > MAX_FILE {
        return Err(Failure::usage(format!(
            "{} is larger than {} MiB; split it and import the parts",
            path.display(),
            MAX_FILE / 1024 / 1024
        )));
    }
    // A byte-order mark, as some Windows editors write at the start of UTF-8 files, is not
    // part of the first line's JSON.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    Ok(text.lines().map(str::to_owned).collect())
}

/// What an import did.
pub(crate) struct Report {
    imported: usize,
    skipped: Vec<String>,
    dry_run: bool,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would import"
        } else {
            "imported"
        };
        write!(f, "{verb} {} user(s)", self.imported)?;
        if !self.skipped.is_empty() {
            write!(
                f,
                "; skipped {} that already exist: {}",
                self.skipped.len(),
                self.skipped.join(", ")
            )?;
        }
        if !self.dry_run && self.imported > 0 {
            write!(
                f,
                "\nThey sign in with their existing passwords; bcrypt hashes are replaced by Argon2id at each user's first login."
            )?;
        }
        Ok(())
    }
}

/// Checks every line, then imports.
pub(crate) async fn run(
    auth: &AppState,
    lines: Vec<String>,
    skip_existing: bool,
    dry_run: bool,
) -> Result<Report, Failure> {
    let (entries, mut errors) = check(&lines);
    let mut fresh = Vec::with_capacity(entries.len());
    let mut skipped = Vec::new();
    for e in entries {
        match auth.auth.find_user(&e.username).await {
            Ok(_) if skip_existing => skipped.push(e.username),
            Ok(_) => errors.push(format!(
                "line {}: user `{}` already exists (pass --skip-existing to import the others)",
                e.line, e.username
            )),
            Err(AuthError::NotFound(_)) => fresh.push(e),
            Err(other) => return Err(fail(other)),
        }
    }
    if !errors.is_empty() {
        let shown = errors.len().min(20);
        let mut msg = format!(
            "nothing was imported: {} line(s) need fixing:\n  {}",
            errors.len(),
            errors.get(..shown).unwrap_or_default().join("\n  ")
        );
        if errors.len() > shown {
            msg.push_str(&format!("\n  ... and {} more", errors.len() - shown));
        }
        return Err(Failure::usage(msg));
    }
    if fresh.is_empty() && skipped.is_empty() {
        return Err(Failure::usage(
            "the file holds no users: expected one JSON object per line, e.g. {\"username\":\"alice\",\"hash\":\"$2b$12$...\",\"roles\":[]}",
        ));
    }
    let mut imported = 0;
    for e in &fresh {
        if dry_run {
            imported += 1;
            continue;
        }
        match auth
            .auth
            .import_user(&e.username, &e.hash, &e.roles, &CLI)
            .await
        {
            Ok(_) => imported += 1,
            // Created by someone else since the check.
            Err(AuthError::AlreadyExists(_)) if skip_existing => skipped.push(e.username.clone()),
            Err(other) => {
                return Err(Failure::refused(format!(
                    "line {}: {} (imported {imported} user(s) before it; rerun with --skip-existing to continue)",
                    e.line,
                    fail(other).message()
                )));
            }
        }
    }
    Ok(Report {
        imported,
        skipped,
        dry_run,
    })
}

/// Parses and checks every line; returns the entries and one message per bad line.
fn check(lines: &[String]) -> (Vec<Entry>, Vec<String>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    for (i, raw) in lines.iter().enumerate() {
        let n = i + 1;
        let raw = raw.trim();
        if raw.is_empty() || raw.starts_with('#') {
            continue;
        }
        let line: Line = match serde_json::from_str(raw) {
            Ok(l) => l,
            Err(e) => {
                errors.push(format!(
                    "line {n}: {e} (expected {{\"username\": ..., \"hash\": ..., \"roles\": [...]}})"
                ));
                continue;
            }
        };
        let username = match Username::parse_new(&line.username) {
            Ok(u) => u.to_string(),
            Err(e) => {
                errors.push(format!("line {n}: {}", fail(e).message()));
                continue;
            }
        };
        if let Err(e) = Role::parse_all(&line.roles) {
            errors.push(format!("line {n}: {}", fail(e).message()));
            continue;
        }
        if !is_supported_hash(&line.hash) {
            errors.push(format!(
                "line {n}: the hash of `{username}` is not {}",
                supported_hashes()
            ));
            continue;
        }
        if !seen.insert(username.to_lowercase()) {
            errors.push(format!("line {n}: `{username}` appears twice in the file"));
            continue;
        }
        entries.push(Entry {
            line: n,
            username,
            hash: line.hash,
            roles: line.roles,
        });
    }
    (entries, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BCRYPT: &str = "$2b$04$KhjUpDpWZbVXkGBFCF8Hw.wUcmdgWT3eAz8TFrzg0ltxFHPF3oKYu";

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let lines: Vec<String> = [
            format!(r#"{{"username":"alice","hash":"{BCRYPT}","roles":["admin"]}}"#),
            String::new(),
            "# a comment".to_owned(),
            "not json".to_owned(),
            r#"{"username":"bob","hash":"plaintext"}"#.to_owned(),
            format!(r#"{{"username":"ALICE","hash":"{BCRYPT}"}}"#),
            format!(r#"{{"username":"carol","hash":"{BCRYPT}","email":"c@example.com"}}"#),
            format!(r#"{{"username":"bad name!","hash":"{BCRYPT}"}}"#),
        ]
        .into_iter()
        .collect();
        let (entries, errors) = check(&lines);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries.first().map(|e| e.username.as_str()), Some("alice"));
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("line 4:")));
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("line 5:") && e.contains("bcrypt"))
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("line 6:") && e.contains("twice"))
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("line 7:") && e.contains("email"))
        );
        assert!(errors.iter().any(|e| e.starts_with("line 8:")));
    }
}
