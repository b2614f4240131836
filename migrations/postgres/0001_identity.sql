-- Identity core: users, sessions, refresh tokens, revoked access-token ids, audit log.
-- Timestamps are Unix milliseconds; ids are UUID text.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    email         TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL DEFAULT 'member',
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE UNIQUE INDEX users_email_key ON users (email);

CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device        TEXT NOT NULL,
    user_agent    TEXT,
    ip            TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_activity BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    ended_at      BIGINT,
    end_reason    TEXT
);
CREATE INDEX sessions_live_by_user ON sessions (user_id, created_at) WHERE ended_at IS NULL;
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- A refresh token belongs to a user session or an SDK session (session_kind); its rows are
-- removed with their session by cleanup.
CREATE TABLE refresh_tokens (
    id           TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL,
    session_id   TEXT NOT NULL,
    session_kind TEXT NOT NULL DEFAULT 'user',
    user_id      TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    spent_at   BIGINT
);
CREATE UNIQUE INDEX refresh_tokens_hash_key ON refresh_tokens (token_hash);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE revoked_jtis (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

CREATE TABLE audit_log (
    id         BIGSERIAL PRIMARY KEY,
    user_id    TEXT,
    action     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    ip         TEXT,
    detail     TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL
);
CREATE INDEX audit_log_by_user ON audit_log (user_id, id);
