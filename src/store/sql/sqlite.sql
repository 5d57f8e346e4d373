-- reqwest-token-refresh: the tables of SqlTokenStore on SQLite.
-- `{table}` and `{lease}` stand for the configured table name and that name followed by
-- `_lease`; SqlTokenStore::migrate() applies this file.
-- Token sets are sealed (XChaCha20-Poly1305, see KeyRing): no column holds a plaintext token.
CREATE TABLE IF NOT EXISTS {table} (
    token_key          TEXT    PRIMARY KEY NOT NULL,
    -- the record's generation (how many changes the key's tokens went through)
    version            INTEGER NOT NULL CHECK (version >= 0),
    -- the sealed token record (a JSON envelope with key id, nonce and ciphertext)
    sealed             TEXT    NOT NULL,
    -- unix seconds
    access_expires_at  INTEGER,
    -- when the server reported a refresh-token lifetime (refresh_expires_in); else NULL
    refresh_expires_at INTEGER,
    -- unix seconds
    updated_at         INTEGER NOT NULL,
    -- the record's revision, which conditional writes compare (NULL in rows written before
    -- revisions existed: they compare as 'legacy-<version>')
    revision           TEXT
);
-- One row per key while a process holds its refresh lease; an expired row is free.
CREATE TABLE IF NOT EXISTS {lease} (
    token_key  TEXT    PRIMARY KEY NOT NULL,
    holder     TEXT    NOT NULL,
    -- unix milliseconds
    expires_at INTEGER NOT NULL
);
