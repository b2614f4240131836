-- Personal access tokens imported from the system a team ran before Portcullis (`cargo xtask
-- import-pats`): legacy_id is the token's id in that system, and marks it imported; NULL for
-- tokens issued here. Imported tokens are accepted only until LEGACY_PAT_ACCEPT_UNTIL.
ALTER TABLE personal_access_tokens ADD COLUMN legacy_id TEXT;
