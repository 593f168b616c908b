-- OAuth clients (RFC 6749 §2). The built-in public client `tessera` is not stored.
CREATE TABLE clients (
    id           TEXT PRIMARY KEY NOT NULL,
    secret_hash  BLOB,                      -- SHA-256 of the secret; NULL for public clients
    scopes       TEXT NOT NULL DEFAULT '[]', -- JSON array
    confidential INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL
);
