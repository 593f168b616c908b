//! `tessera audit list|verify`: read and check the tamper-evident audit log.

use std::collections::VecDeque;

use clap::Subcommand;
use tessera_auth::audit::{ChainBreak, GENESIS, verify_chain};
use tessera_auth::model::{AuditRecord, UserId};
use tessera_auth::store::AuditStore as _;
use tessera_auth::{AuthError, Clock as _, SystemClock};
use tessera_jose::base64url;
use tessera_store::Database;

use crate::Cli;
use crate::admin::{fail, open, table, time};
use crate::exit::Failure;
use crate::output::{self, outln};

/// `tessera audit ...`
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// List security events, oldest first (the most recent `--limit` of them)
    List {
        /// Only events about this user (username, or id for a deleted user)
        #[arg(long, value_name = "NAME", allow_hyphen_values = true)]
        user: Option<String>,
        /// Only events at or after this time: RFC 3339 (2026-11-24T10:00:00Z), Unix
        /// seconds, or an age such as 30m, 12h, 7d
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Show at most this many (the most recent); 0 for all
        #[arg(long, default_value_t = 100, value_name = "N")]
        limit: usize,
        /// One JSON object per line instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Check the hash chain from the first row to the last; report the first broken row
    ///
    /// Exit 0 when intact, 1 when broken. A hash chain reveals edited, inserted and
    /// deleted rows, but not rows cut off its end: record the printed head somewhere the
    /// database's administrators cannot write, and pass it back with --expect-head.
    Verify {
        /// A head printed by an earlier run (`ID:HASH`); it must still be in the chain
        #[arg(long, value_name = "ID:HASH")]
        expect_head: Option<String>,
    },
}

/// Rows read per page.
const PAGE: u32 = 1000;

/// `tessera audit ...`
pub(crate) async fn run(cli: &Cli, cmd: &AuditCommand) -> Result<(), Failure> {
    // Bad arguments are reported before the database is opened.
    let (since, expect) = match cmd {
        AuditCommand::List { since, .. } => (
            since
                .as_deref()
                .map(|s| parse_since(s, SystemClock.now()))
                .transpose()?,
            None,
        ),
        AuditCommand::Verify { expect_head } => {
            (None, expect_head.as_deref().map(parse_head).transpose()?)
        }
    };
    let state = open(cli).await?;
    let result = match cmd {
        AuditCommand::List {
            user, limit, json, ..
        } => list(&state, user.as_deref(), since, *limit, *json).await,
        AuditCommand::Verify { .. } => verify(&state, expect).await,
    };
    state.db().close().await;
    result
}

async fn list(
    state: &tessera_server::AppState,
    user: Option<&str>,
    since: Option<i64>,
    limit: usize,
    json: bool,
) -> Result<(), Failure> {
    let user_id = match user {
        None => None,
        Some(u) => match state.auth.find_user(u).await {
            Ok(found) => Some(found.id.to_string()),
            // A deleted user's events stay in the log under their id.
            Err(AuthError::NotFound(_)) => match UserId::parse(u) {
                Ok(id) => Some(id.to_string()),
                Err(_) => {
                    return Err(Failure::refused(format!(
                        "no user `{u}`; for a deleted user, pass their id (see the user_id column)"
                    )));
                }
            },
            Err(e) => return Err(fail(e)),
        },
    };
    // The store pages oldest first; keep only the newest `limit` rows in memory.
    let mut rows: VecDeque<AuditRecord> = VecDeque::new();
    let mut after = 0;
    loop {
        let (page, unreadable) = page(state.db(), after, user_id.as_deref(), since).await?;
        if let Some(bad) = unreadable {
            return Err(Failure::refused(format!(
                "audit row {} cannot be read ({}): it was changed outside Tessera; \
                 `tessera audit verify` reports it, and --since after its time lists the rows \
                 past it",
                bad.id, bad.reason
            )));
        }
        let Some(last) = page.last() else { break };
        after = last.id;
        for r in page {
            if limit > 0 && rows.len() == limit {
                rows.pop_front();
            }
            rows.push_back(r);
        }
    }
    if json {
        let mut text = String::new();
        for r in &rows {
            let mut v = tessera_auth::audit::record_json(r);
            // RFC 3339 times in the CLI's output, as log shippers expect.
            if let Some(o) = v.as_object_mut() {
                o.insert("at".into(), serde_json::Value::String(time(r.event.at)));
            }
            text.push_str(&v.to_string());
            text.push('\n');
        }
        return output::write(text.as_bytes());
    }
    if rows.is_empty() {
        crate::output::errln!("no matching events");
        return Ok(());
    }
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                time(r.event.at),
                r.event.event.clone(),
                r.event.outcome.clone(),
                dash(&r.event.username),
                dash(&r.event.ip),
                if r.event
                    .detail
                    .as_object()
                    .is_some_and(serde_json::Map::is_empty)
                {
                    "-".into()
                } else {
                    r.event.detail.to_string()
                },
            ]
        })
        .collect();
    table(
        &["ID", "TIME", "EVENT", "OUTCOME", "USER", "IP", "DETAIL"],
        &cells,
    )?;
    Ok(())
}

async fn verify(
    state: &tessera_server::AppState,
    expect: Option<(i64, Vec<u8>)>,
) -> Result<(), Failure> {
    let check = match state.auth.verify_audit().await {
        Ok(check) => check,
        Err(e @ AuthError::Storage(_)) => return verify_row_by_row(state, e).await,
        Err(e) => return Err(fail(e)),
    };
    if let Some(b) = check.broken {
        return Err(broken(
            &break_text(&b),
            check.intact_rows,
            check.head.map(|(id, _)| id),
        ));
    }
    let Some((head_id, head_hash)) = check.head else {
        if let Some((id, _)) = expect {
            return Err(Failure::refused(format!(
                "audit log BROKEN: it is empty, but the recorded head row {id} existed: rows were cut off the end"
            )));
        }
        outln!("audit log is empty")?;
        return Ok(());
    };
    if let Some((id, hash)) = expect {
        let row = state
            .db()
            .list_audit(id - 1, None, None, 1)
            .await
            .map_err(|e| fail(e.into()))?;
        match row.first() {
            Some(r) if r.id == id && r.hash == hash => {}
            Some(r) if r.id == id => {
                return Err(Failure::refused(format!(
                    "audit log BROKEN: row {id} no longer has the recorded hash: the chain was rewritten from there"
                )));
            }
            _ => {
                return Err(Failure::refused(format!(
                    "audit log BROKEN: the recorded head row {id} is gone: rows were cut off the end (the last row now is {head_id})"
                )));
            }
        }
    }
    let verdict = format!(
        "audit log intact: {} rows; head {head_id}:{}",
        check.intact_rows,
        base64url::encode(&head_hash)
    );
    // Exit 1 all the same: a scheduled check must not pass while the head it is meant to
    // record is lost, and the message keeps the verdict and the head.
    outln!("{verdict}").map_err(|f| Failure::refused(format!("{verdict}, but {}", f.message())))
}

/// What a chain break means.
fn break_text(b: &ChainBreak) -> String {
    match b {
        ChainBreak::Link { id } => format!(
            "row {id} does not link to the row before it: a row before it was deleted, inserted or rewritten"
        ),
        ChainBreak::Content { id } => {
            format!("row {id} does not match its hash: the row was edited")
        }
    }
}

/// The failure of `audit verify` for a broken chain.
fn broken(what: &str, intact_rows: u64, head: Option<i64>) -> Failure {
    let after = head.map_or_else(|| "none".to_owned(), |id| format!("up to row {id}"));
    Failure::refused(format!(
        "audit log BROKEN: {what}. Intact rows: {intact_rows} ({after}). Restore the table from a backup and compare."
    ))
}

/// A row the store cannot decode: edited outside Tessera (its detail not JSON, its text not
/// UTF-8, its time text), which the hash chain cannot even be computed for.
struct Unreadable {
    id: i64,
    reason: String,
}

/// A page of rows after `after`, as `list_audit` gives them; when the page cannot be read,
/// the readable rows before the first unreadable one, and that one (found row by row).
async fn page(
    db: &Database,
    after: i64,
    user_id: Option<&str>,
    since: Option<i64>,
) -> Result<(Vec<AuditRecord>, Option<Unreadable>), Failure> {
    let error = match db.list_audit(after, user_id, since, PAGE).await {
        Ok(rows) => return Ok((rows, None)),
        Err(e) => e,
    };
    let mut rows = Vec::new();
    let mut cursor = after;
    loop {
        let ids = db
            .audit_ids(cursor, PAGE)
            .await
            .map_err(|e| fail(e.into()))?;
        if ids.is_empty() {
            // Every row reads on its own: the failure was not a row's.
            return Err(fail(error.into()));
        }
        for id in ids {
            match db.list_audit(id - 1, None, None, 1).await {
                Ok(found) => rows.extend(found.into_iter().filter(|r| {
                    r.id == id
                        && user_id.is_none_or(|u| r.event.user_id.as_deref() == Some(u))
                        && since.is_none_or(|t| r.event.at >= t)
                })),
                Err(e) => {
                    let reason = std::error::Error::source(&e)
                        .map_or_else(|| e.to_string(), |s| format!("{e}: {s}"));
                    return Ok((rows, Some(Unreadable { id, reason })));
                }
            }
            cursor = id;
        }
    }
}

/// `verify_audit` met a row it cannot read: walk the chain here, around that row, to name
/// it (or a break before it) as `audit verify` names an edited row.
async fn verify_row_by_row(
    state: &tessera_server::AppState,
    error: AuthError,
) -> Result<(), Failure> {
    let mut prev = GENESIS.to_vec();
    let mut intact = 0;
    let mut head = None;
    loop {
        let (rows, unreadable) = page(state.db(), head.unwrap_or(0), None, None).await?;
        for row in &rows {
            prev = verify_chain(prev, std::iter::once(row))
                .map_err(|b| broken(&break_text(&b), intact, head))?;
            intact += 1;
            head = Some(row.id);
        }
        if let Some(bad) = unreadable {
            return Err(broken(
                &format!(
                    "row {} cannot be read ({}): the row was edited outside Tessera",
                    bad.id, bad.reason
                ),
                intact,
                head,
            ));
        }
        if rows.is_empty() {
            return Err(fail(error));
        }
    }
}

/// `ID:HASH` as printed by `audit verify`.
fn parse_head(s: &str) -> Result<(i64, Vec<u8>), Failure> {
    let bad = || {
        Failure::usage(format!(
            "--expect-head `{s}` is not ID:HASH as printed by `tessera audit verify`"
        ))
    };
    let (id, hash) = s.split_once(':').ok_or_else(bad)?;
    let id: i64 = id.parse().map_err(|_| bad())?;
    let hash = base64url::decode(hash).ok_or_else(bad)?;
    if id < 1 || hash.len() != 32 {
        return Err(bad());
    }
    Ok((id, hash))
}

/// RFC 3339, Unix seconds, or an age (`90s`, `30m`, `12h`, `7d`) before `now`.
fn parse_since(s: &str, now: i64) -> Result<i64, Failure> {
    if let Ok(t) = s.parse::<i64>() {
        return Ok(t);
    }
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let unit = match s.chars().last() {
        Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86_400,
        _ => 0,
    };
    let n = s
        .get(..s.len().saturating_sub(1))
        .and_then(|n| n.parse::<i64>().ok());
    match n {
        Some(n) if unit > 0 && n >= 0 => Ok(now.saturating_sub(n.saturating_mul(unit))),
        _ => Err(Failure::usage(format!(
            "--since `{s}` is not a time: use RFC 3339 (2026-11-24T10:00:00Z), Unix seconds, or an age such as 30m, 12h, 7d"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_three_forms() {
        assert_eq!(parse_since("1700000000", 0).ok(), Some(1_700_000_000));
        assert_eq!(
            parse_since("2023-11-14T22:13:20Z", 0).ok(),
            Some(1_700_000_000)
        );
        assert_eq!(parse_since("2h", 10_000).ok(), Some(10_000 - 7200));
        assert_eq!(parse_since("7d", 1_000_000).ok(), Some(1_000_000 - 604_800));
        assert!(parse_since("yesterday", 0).is_err());
        assert!(parse_since("-5m", 0).is_err());
        assert!(parse_since("h", 0).is_err());
    }

    #[test]
    fn heads_round_trip() {
        let hash = [7u8; 32];
        let s = format!("12:{}", base64url::encode(hash));
        assert_eq!(parse_head(&s).ok(), Some((12, hash.to_vec())));
        assert!(parse_head("12").is_err());
        assert!(parse_head("0:AAAA").is_err());
        assert!(parse_head("x:AAAA").is_err());
    }
}
