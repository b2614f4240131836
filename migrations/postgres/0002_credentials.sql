-- Credentials beyond sessions: personal access tokens, clients (tenants) with allowlists and
-- their own rate limit, API keys, and SDK sessions.

CREATE TABLE personal_access_tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    last_four    TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE UNIQUE INDEX personal_access_tokens_hash_key ON personal_access_tokens (token_hash);
CREATE INDEX personal_access_tokens_by_user ON personal_access_tokens (user_id);

CREATE TABLE clients (
    id                    TEXT PRIMARY KEY,
    owner_id              TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name                  TEXT NOT NULL,
    ip_allowlist          TEXT NOT NULL DEFAULT '[]',
    allowed_origins       TEXT NOT NULL DEFAULT '[]',
    rate_limit_requests   BIGINT,
    rate_limit_per_ms     BIGINT,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);
CREATE INDEX clients_by_owner ON clients (owner_id);

-- A rotated key keeps working until expires_at (the grace period); rotated_to names its
-- successor. A revoked key stops at once.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    client_id    TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    key_hash     TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    last_four    TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    expires_at   BIGINT,
    rotated_to   TEXT,
    revoked_at   BIGINT
);
CREATE UNIQUE INDEX api_keys_hash_key ON api_keys (key_hash);
CREATE INDEX api_keys_by_client ON api_keys (client_id);

CREATE TABLE sdk_sessions (
    id               TEXT PRIMARY KEY,
    client_id        TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    api_key_id       TEXT NOT NULL,
    external_user_id TEXT NOT NULL,
    scopes           TEXT NOT NULL,
    ip               TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    last_activity    BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    ended_at         BIGINT,
    end_reason       TEXT
);
CREATE INDEX sdk_sessions_by_client ON sdk_sessions (client_id);
