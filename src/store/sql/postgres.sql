-- reqwest-token-refresh: the table of SqlTokenStore on PostgreSQL.
-- `{table}` stands for the configured table name; SqlTokenStore::migrate() applies this file.
-- Token sets are sealed (XChaCha20-Poly1305, see KeyRing): no column holds a plaintext token.
CREATE TABLE IF NOT EXISTS {table} (
    token_key          TEXT        PRIMARY KEY,
    -- the token set's generation; conditional writes compare it
    version            BIGINT      NOT NULL CHECK (version >= 0),
    -- the sealed token set (a JSON envelope with key id, nonce and ciphertext)
    sealed             TEXT        NOT NULL,
    access_expires_at  TIMESTAMPTZ,
    -- when the server reported a refresh-token lifetime (refresh_expires_in); else NULL
    refresh_expires_at TIMESTAMPTZ,
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
