-- Tessera schema, PostgreSQL dialect. Times are Unix seconds (BIGINT) so the SQL stays
-- portable between SQLite and PostgreSQL; ids are UUID strings.

CREATE TABLE users (
    id                  TEXT PRIMARY KEY NOT NULL,
    username            TEXT NOT NULL UNIQUE,
    password_hash       TEXT NOT NULL,
    roles               TEXT NOT NULL DEFAULT '[]',   -- JSON array of role names
    disabled            BOOLEAN NOT NULL DEFAULT FALSE,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    password_changed_at BIGINT NOT NULL
);

-- One row per login session (= refresh-token family, RFC 9700 §4.14).
CREATE TABLE sessions (
    id                  TEXT PRIMARY KEY NOT NULL,
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id           TEXT NOT NULL,
    scope               TEXT NOT NULL,
    amr                 TEXT NOT NULL DEFAULT '[]',
    created_at          BIGINT NOT NULL,
    last_used_at        BIGINT NOT NULL,
    idle_expires_at     BIGINT NOT NULL,
    absolute_expires_at BIGINT NOT NULL,
    revoked_at          BIGINT,
    revoke_reason       TEXT,
    ip                  TEXT,
    user_agent          TEXT
);
CREATE INDEX sessions_by_user ON sessions(user_id, created_at);
CREATE INDEX sessions_by_expiry ON sessions(absolute_expires_at);

-- Refresh tokens are stored only as SHA-256 hashes.
CREATE TABLE refresh_tokens (
    hash           BYTEA PRIMARY KEY NOT NULL,
    session_id     TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    created_at     BIGINT NOT NULL,
    used_at        BIGINT,
    successor_hash BYTEA
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens(session_id);

-- Append-only revocation log, replayed by every instance and by the revocation feed.
CREATE TABLE revocation_events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revocation_events_by_expiry ON revocation_events(expires_at);

CREATE TABLE signing_keys (
    kid                TEXT PRIMARY KEY NOT NULL,
    alg                TEXT NOT NULL,
    sealed_private_key BYTEA NOT NULL,
    public_jwk         TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    activates_at       BIGINT NOT NULL,
    retires_at         BIGINT,
    expires_at         BIGINT,
    revoked_at         BIGINT
);

-- Tamper-evident audit log: each row's hash chains over the previous row's.
CREATE TABLE audit_log (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         BIGINT NOT NULL,
    event      TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    user_id    TEXT,
    username   TEXT,
    client_id  TEXT,
    ip         TEXT,
    user_agent TEXT,
    request_id TEXT,
    detail     TEXT NOT NULL,
    prev_hash  BYTEA NOT NULL,
    hash       BYTEA NOT NULL
);
CREATE INDEX audit_log_by_user ON audit_log(user_id, id);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

-- Every instance LISTENs on these channels to learn of revocations and key changes made
-- by the others (payloads are ids only; the rows are read from the tables).
CREATE FUNCTION tessera_notify_revocation() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('tessera_revocations', NEW.id::text);
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER revocation_events_notify AFTER INSERT ON revocation_events
    FOR EACH ROW EXECUTE FUNCTION tessera_notify_revocation();

CREATE FUNCTION tessera_notify_keys() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('tessera_keys', '');
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER signing_keys_notify AFTER INSERT OR UPDATE OR DELETE ON signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION tessera_notify_keys();
