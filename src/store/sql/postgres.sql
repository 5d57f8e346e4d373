-- reqwest-token-refresh: the table of SqlTokenStore on PostgreSQL.
-- `{table}` stands for the configured table name; SqlTokenStore::migrate() applies this file.
-- Token sets are sealed (XChaCha20-Poly1305, see KeyRing): no column holds a plaintext token.
CREATE TABLE IF NOT EXISTS {table} (
    token_key          TEXT        PRIMARY KEY,
    -- the record's generation (how many changes the key's tokens went through)
    version            BIGINT      NOT NULL CHECK (version >= 0),
    -- the sealed token record (a JSON envelope with key id, nonce and ciphertext)
    sealed             TEXT        NOT NULL,
    access_expires_at  TIMESTAMPTZ,
    -- when the server reported a refresh-token lifetime (refresh_expires_in); else NULL
    refresh_expires_at TIMESTAMPTZ,
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- The record's revision, which conditional writes compare (NULL in rows written before
-- revisions existed: they compare as 'legacy-<version>'). Added to tables created without it.
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS revision TEXT;
