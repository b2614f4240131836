-- Service tokens (pcs_…) issued to internal services that proved SERVICE_SECRET; kept hashed
-- so every auth-service replica accepts them.
CREATE TABLE service_tokens (
    id           TEXT PRIMARY KEY,
    service_name TEXT NOT NULL,
    token_hash   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE UNIQUE INDEX service_tokens_hash_key ON service_tokens (token_hash);
