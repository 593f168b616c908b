-- OAuth clients (RFC 6749 §2). The built-in public client `tessera` is not stored.
CREATE TABLE clients (
    id           TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    secret_hash  BYTEA,                     -- SHA-256 of the secret; NULL for public clients
    scopes       TEXT NOT NULL DEFAULT '[]', -- JSON array
    confidential BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   BIGINT NOT NULL
);
