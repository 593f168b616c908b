//! The tamper-evident audit chain: each row's hash covers the previous row's hash and the
//! row's canonical JSON, so editing or deleting a row breaks every hash after it.

use tessera_jose::crypto;

use crate::error::Result;
pub use crate::model::AuditEvent;
use crate::model::AuditRecord;
use crate::service::Auth;
use crate::store::Store;

/// Told about every audit event as it is recorded (after the row is written or its write
/// failed), for counting security events in metrics without `auth` knowing about HTTP.
/// Called on the request path: keep it cheap and never block.
pub trait AuditObserver: Send + Sync {
    /// One event (`lockout`, `refresh_reuse`, `login`...).
    fn observe(&self, event: &AuditEvent);
}

/// The hash a row must carry given the previous row's hash.
#[must_use]
pub fn chain_hash(prev_hash: &[u8], event: &AuditEvent) -> [u8; 32] {
    // serde_json writes struct fields in declaration order and `detail` objects in key
    // order (no `preserve_order`), so the encoding is canonical for a given event.
    let json = serde_json::to_vec(event).unwrap_or_default();
    let mut buf = Vec::with_capacity(prev_hash.len() + json.len());
    buf.extend_from_slice(prev_hash);
    buf.extend_from_slice(&json);
    crypto::sha256(&buf)
}

/// Where a chain check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainBreak {
    /// The row's `prev_hash` is not the previous row's hash: a row before it was deleted
    /// or altered.
    Link {
        /// The row id.
        id: i64,
    },
    /// The row's own hash does not match its content: the row was edited.
    Content {
        /// The row id.
        id: i64,
    },
}

/// Checks a run of consecutive rows, starting after a row whose hash is `prev`
/// (32 zero bytes for the start of the log). Returns the hash of the last row.
///
/// # Errors
/// The first [`ChainBreak`].
pub fn verify_chain<'a>(
    mut prev: Vec<u8>,
    rows: impl IntoIterator<Item = &'a AuditRecord>,
) -> Result<Vec<u8>, ChainBreak> {
    for row in rows {
        if row.prev_hash != prev {
            return Err(ChainBreak::Link { id: row.id });
        }
        if chain_hash(&row.prev_hash, &row.event).as_slice() != row.hash.as_slice() {
            return Err(ChainBreak::Content { id: row.id });
        }
        prev.clone_from(&row.hash);
    }
    Ok(prev)
}

/// A row as JSON, as the admin API and `tessera audit list --json` show it: the event's
/// members, the row `id` and its `hash` (base64url). `at` is Unix seconds.
#[must_use]
pub fn record_json(r: &AuditRecord) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "at": r.event.at,
        "event": r.event.event,
        "outcome": r.event.outcome,
        "user_id": r.event.user_id,
        "username": r.event.username,
        "client_id": r.event.client_id,
        "ip": r.event.ip,
        "user_agent": r.event.user_agent,
        "request_id": r.event.request_id,
        "detail": r.event.detail,
        "hash": tessera_jose::base64url::encode(&r.hash),
    })
}

/// The hash the first row chains from.
pub const GENESIS: [u8; 32] = [0; 32];

/// The outcome of checking the whole audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheck {
    /// Rows checked and found intact (all of them when `broken` is `None`).
    pub intact_rows: u64,
    /// The last intact row: its id and hash. Record it somewhere the database's
    /// administrators cannot write: a chain cannot by itself reveal that rows were cut
    /// off its end, but a recorded head that is no longer in the chain does.
    pub head: Option<(i64, Vec<u8>)>,
    /// The first broken row, if any.
    pub broken: Option<ChainBreak>,
}

/// Rows read per page when checking the chain.
const VERIFY_PAGE: u32 = 1000;

impl<S: Store> Auth<S> {
    /// Checks the audit chain from its first row to its last, page by page, and stops at
    /// the first broken row.
    ///
    /// # Errors
    /// Storage failures, including rows that cannot be decoded.
    pub async fn verify_audit(&self) -> Result<AuditCheck> {
        let mut check = AuditCheck {
            intact_rows: 0,
            head: None,
            broken: None,
        };
        let mut prev = GENESIS.to_vec();
        let mut after = 0;
        loop {
            let page = self
                .store()
                .list_audit(after, None, None, VERIFY_PAGE)
                .await?;
            let Some(last) = page.last() else {
                return Ok(check);
            };
            after = last.id;
            for row in &page {
                match verify_chain(prev, std::iter::once(row)) {
                    Ok(hash) => {
                        check.intact_rows += 1;
                        check.head = Some((row.id, hash.clone()));
                        prev = hash;
                    }
                    Err(b) => {
                        check.broken = Some(b);
                        return Ok(check);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, prev: &[u8], what: &str) -> AuditRecord {
        let event = AuditEvent {
            at: id,
            event: what.into(),
            outcome: "success".into(),
            user_id: None,
            username: None,
            client_id: None,
            ip: None,
            user_agent: None,
            request_id: None,
            detail: serde_json::json!({}),
        };
        let hash = chain_hash(prev, &event).to_vec();
        AuditRecord {
            id,
            event,
            prev_hash: prev.to_vec(),
            hash,
        }
    }

    #[test]
    fn edits_and_deletions_are_detected() {
        let r1 = row(1, &[0; 32], "a");
        let r2 = row(2, &r1.hash, "b");
        let r3 = row(3, &r2.hash, "c");
        assert!(verify_chain(vec![0; 32], [&r1, &r2, &r3]).is_ok());
        let mut edited = r2;
        edited.event.outcome = "failure".into();
        assert_eq!(
            verify_chain(vec![0; 32], [&r1, &edited, &r3]),
            Err(ChainBreak::Content { id: 2 })
        );
        assert_eq!(
            verify_chain(vec![0; 32], [&r1, &r3]),
            Err(ChainBreak::Link { id: 3 })
        );
    }
}
