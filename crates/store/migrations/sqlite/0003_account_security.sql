-- Account security: TOTP (RFC 6238), recovery codes, MFA login challenges and the
-- per-username failed-login counter (kept in the database so it holds across instances).
ALTER TABLE users ADD COLUMN totp_secret BLOB;                         -- sealed; NULL when off
ALTER TABLE users ADD COLUMN totp_pending BLOB;                        -- sealed; awaiting confirmation
ALTER TABLE users ADD COLUMN totp_last_step INTEGER NOT NULL DEFAULT 0; -- replay protection

CREATE TABLE recovery_codes (
    user_id   TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash BLOB NOT NULL,   -- HMAC-SHA-256 under a key derived from the master key
    used_at   INTEGER,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE mfa_challenges (
    token_hash BLOB PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id  TEXT NOT NULL,
    scope      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    used_at    INTEGER
);
CREATE INDEX mfa_challenges_by_expiry ON mfa_challenges(expires_at);

-- Failed attempts per key: `user:<normalized username>` for passwords (also for names that
-- do not exist, so a lockout reveals nothing) and `mfa:<user id>` for second factors.
CREATE TABLE login_throttle (
    key             TEXT PRIMARY KEY NOT NULL,
    failures        INTEGER NOT NULL,
    locked_until    INTEGER NOT NULL DEFAULT 0,
    last_failure_at INTEGER NOT NULL
);
