//! Row types and their conversion into domain types. A row that does not convert is
//! reported as corrupt, never unwrapped.

use tessera_auth::model::{
    AuditEvent, AuditRecord, Client, ClientId, RevocationEvent, RevocationKind, Role, Session,
    SessionId, StoredKey, User, UserId, Username,
};
use tessera_auth::store::StoreError;

use crate::corrupt;

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    id: String,
    username: String,
    password_hash: String,
    roles: String,
    disabled: bool,
    created_at: i64,
    updated_at: i64,
    password_changed_at: i64,
    totp_enabled: bool,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;

    fn try_from(r: UserRow) -> Result<Self, StoreError> {
        let roles: Vec<String> =
            serde_json::from_str(&r.roles).map_err(|_| corrupt("user roles"))?;
        Ok(Self {
            id: UserId::parse(&r.id).map_err(|_| corrupt("user id"))?,
            username: Username::parse(&r.username).map_err(|_| corrupt("username"))?,
            password_hash: r.password_hash,
            roles: Role::parse_all(roles).map_err(|_| corrupt("user roles"))?,
            disabled: r.disabled,
            created_at: r.created_at,
            updated_at: r.updated_at,
            password_changed_at: r.password_changed_at,
            totp_enabled: r.totp_enabled,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct SessionRow {
    id: String,
    user_id: String,
    client_id: String,
    scope: String,
    amr: String,
    created_at: i64,
    last_used_at: i64,
    idle_expires_at: i64,
    absolute_expires_at: i64,
    revoked_at: Option<i64>,
    revoke_reason: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
}

impl TryFrom<SessionRow> for Session {
    type Error = StoreError;

    fn try_from(r: SessionRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: SessionId::parse(&r.id).map_err(|_| corrupt("session id"))?,
            user_id: UserId::parse(&r.user_id).map_err(|_| corrupt("session user id"))?,
            client_id: r.client_id,
            scope: r.scope,
            amr: serde_json::from_str(&r.amr).map_err(|_| corrupt("session amr"))?,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            idle_expires_at: r.idle_expires_at,
            absolute_expires_at: r.absolute_expires_at,
            revoked_at: r.revoked_at,
            revoke_reason: r.revoke_reason,
            ip: r.ip,
            user_agent: r.user_agent,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct TokenRow {
    pub(crate) session_id: String,
    pub(crate) used_at: Option<i64>,
    pub(crate) successor_hash: Option<Vec<u8>>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct RevocationRow {
    id: i64,
    kind: String,
    subject: String,
    created_at: i64,
    expires_at: i64,
}

impl TryFrom<RevocationRow> for RevocationEvent {
    type Error = StoreError;

    fn try_from(r: RevocationRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: r.id,
            kind: RevocationKind::parse(&r.kind).ok_or_else(|| corrupt("revocation kind"))?,
            subject: r.subject,
            created_at: r.created_at,
            expires_at: r.expires_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct KeyRow {
    kid: String,
    alg: String,
    sealed_private_key: Vec<u8>,
    public_jwk: String,
    created_at: i64,
    activates_at: i64,
    retires_at: Option<i64>,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl From<KeyRow> for StoredKey {
    fn from(r: KeyRow) -> Self {
        Self {
            kid: r.kid,
            alg: r.alg,
            sealed_private_key: r.sealed_private_key,
            public_jwk: r.public_jwk,
            created_at: r.created_at,
            activates_at: r.activates_at,
            retires_at: r.retires_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    id: i64,
    at: i64,
    event: String,
    outcome: String,
    user_id: Option<String>,
    username: Option<String>,
    client_id: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    detail: String,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

impl TryFrom<AuditRow> for AuditRecord {
    type Error = StoreError;

    fn try_from(r: AuditRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: r.id,
            event: AuditEvent {
                at: r.at,
                event: r.event,
                outcome: r.outcome,
                user_id: r.user_id,
                username: r.username,
                client_id: r.client_id,
                ip: r.ip,
                user_agent: r.user_agent,
                request_id: r.request_id,
                detail: serde_json::from_str(&r.detail).map_err(|_| corrupt("audit detail"))?,
            },
            prev_hash: r.prev_hash,
            hash: r.hash,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ClientRow {
    id: String,
    secret_hash: Option<Vec<u8>>,
    scopes: String,
    confidential: bool,
    created_at: i64,
}

impl TryFrom<ClientRow> for Client {
    type Error = StoreError;

    fn try_from(r: ClientRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: ClientId::parse(&r.id).map_err(|_| corrupt("client id"))?,
            secret_hash: r.secret_hash,
            scopes: serde_json::from_str(&r.scopes).map_err(|_| corrupt("client scopes"))?,
            confidential: r.confidential,
            created_at: r.created_at,
        })
    }
}
