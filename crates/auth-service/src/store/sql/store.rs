//! [`Store`] for every [`Backend`], written once: each method hands over to the shared SQL in
//! its aggregate's file.

use async_trait::async_trait;
use auth_contract::role::Role;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Type};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Backend, Dialect, Sql};
use crate::store::{
    ApiKey, AuditEntry, CleanupReport, Client, ClientChange, NewAudit, PersonalAccessToken, RefreshToken, SdkSession,
    ServiceToken, Session, Store, StoreResult, User,
};

#[async_trait]
impl<S, DB> Store for S
where
    S: Backend<Db = DB>,
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> bool: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
{
    async fn ping(&self) -> StoreResult<()> {
        Sql::of(self).ping().await
    }

    async fn insert_user(&self, user: &User) -> StoreResult<()> {
        Sql::of(self).insert_user(user).await
    }

    async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<User>> {
        Sql::of(self).user_by_id(id).await
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        Sql::of(self).user_by_email(email).await
    }

    async fn set_password_hash(&self, user_id: Uuid, hash: &str, at: OffsetDateTime) -> StoreResult<()> {
        Sql::of(self).set_password_hash(user_id, hash, at).await
    }

    async fn list_users(&self, after: Option<(i64, Uuid)>, limit: u32) -> StoreResult<Vec<User>> {
        Sql::of(self).list_users(after, limit).await
    }

    async fn set_user_disabled(&self, id: Uuid, disabled: bool, at: OffsetDateTime) -> StoreResult<bool> {
        Sql::of(self).set_user_disabled(id, disabled, at).await
    }

    async fn set_user_role(&self, id: Uuid, role: Role, at: OffsetDateTime) -> StoreResult<bool> {
        Sql::of(self).set_user_role(id, role, at).await
    }

    async fn insert_session(&self, session: &Session, refresh: &RefreshToken) -> StoreResult<()> {
        Sql::of(self).insert_session(session, refresh).await
    }

    async fn session(&self, id: Uuid) -> StoreResult<Option<Session>> {
        Sql::of(self).session(id).await
    }

    async fn live_sessions(
        &self,
        user_id: Uuid,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<Vec<Session>> {
        Sql::of(self).live_sessions(user_id, now, idle_cutoff).await
    }

    async fn count_live_sessions(&self, now: OffsetDateTime, idle_cutoff: OffsetDateTime) -> StoreResult<i64> {
        Sql::of(self).count_live_sessions(now, idle_cutoff).await
    }

    async fn touch_session(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<()> {
        Sql::of(self).touch_session(id, at).await
    }

    async fn end_sessions(&self, ids: &[Uuid], at: OffsetDateTime, reason: &str) -> StoreResult<Vec<Uuid>> {
        Sql::of(self).end_sessions(ids, at, reason).await
    }

    async fn refresh_token_by_hash(&self, hash: &str) -> StoreResult<Option<RefreshToken>> {
        Sql::of(self).refresh_token_by_hash(hash).await
    }

    async fn rotate_refresh_token(&self, old: Uuid, spent_at: OffsetDateTime, new: &RefreshToken) -> StoreResult<bool> {
        Sql::of(self).rotate_refresh_token(old, spent_at, new).await
    }

    async fn insert_pat(&self, pat: &PersonalAccessToken) -> StoreResult<()> {
        Sql::of(self).insert_pat(pat).await
    }

    async fn pat_by_hash(&self, hash: &str) -> StoreResult<Option<PersonalAccessToken>> {
        Sql::of(self).pat_by_hash(hash).await
    }

    async fn pats_for_user(&self, user_id: Uuid) -> StoreResult<Vec<PersonalAccessToken>> {
        Sql::of(self).pats_for_user(user_id).await
    }

    async fn revoke_pat(&self, user_id: Uuid, id: Uuid, at: OffsetDateTime) -> StoreResult<bool> {
        Sql::of(self).revoke_pat(user_id, id, at).await
    }

    async fn touch_pat(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<()> {
        Sql::of(self).touch_pat(id, at).await
    }

    async fn insert_client(&self, client: &Client, key: &ApiKey) -> StoreResult<()> {
        Sql::of(self).insert_client(client, key).await
    }

    async fn client(&self, id: Uuid) -> StoreResult<Option<Client>> {
        Sql::of(self).client(id).await
    }

    async fn clients_for_owner(&self, owner_id: Uuid) -> StoreResult<Vec<Client>> {
        Sql::of(self).clients_for_owner(owner_id).await
    }

    async fn update_client(&self, id: Uuid, change: &ClientChange, at: OffsetDateTime) -> StoreResult<()> {
        Sql::of(self).update_client(id, change, at).await
    }

    async fn all_allowed_origins(&self) -> StoreResult<Vec<String>> {
        Sql::of(self).all_allowed_origins().await
    }

    async fn insert_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        Sql::of(self).insert_api_key(key).await
    }

    async fn api_key(&self, id: Uuid) -> StoreResult<Option<ApiKey>> {
        Sql::of(self).api_key(id).await
    }

    async fn api_key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKey>> {
        Sql::of(self).api_key_by_hash(hash).await
    }

    async fn api_keys_for_client(&self, client_id: Uuid) -> StoreResult<Vec<ApiKey>> {
        Sql::of(self).api_keys_for_client(client_id).await
    }

    async fn rotate_api_key(&self, old: Uuid, grace_until: OffsetDateTime, new: &ApiKey) -> StoreResult<bool> {
        Sql::of(self).rotate_api_key(old, grace_until, new).await
    }

    async fn revoke_api_key(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<bool> {
        Sql::of(self).revoke_api_key(id, at).await
    }

    async fn touch_api_key(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<()> {
        Sql::of(self).touch_api_key(id, at).await
    }

    async fn insert_sdk_session(&self, session: &SdkSession, refresh: &RefreshToken) -> StoreResult<()> {
        Sql::of(self).insert_sdk_session(session, refresh).await
    }

    async fn sdk_session(&self, id: Uuid) -> StoreResult<Option<SdkSession>> {
        Sql::of(self).sdk_session(id).await
    }

    async fn touch_sdk_session(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<()> {
        Sql::of(self).touch_sdk_session(id, at).await
    }

    async fn end_sdk_session(&self, id: Uuid, at: OffsetDateTime, reason: &str) -> StoreResult<bool> {
        Sql::of(self).end_sdk_session(id, at, reason).await
    }

    async fn end_sdk_sessions_for_keys(
        &self,
        key_ids: &[Uuid],
        at: OffsetDateTime,
        reason: &str,
    ) -> StoreResult<Vec<Uuid>> {
        Sql::of(self).end_sdk_sessions_for_keys(key_ids, at, reason).await
    }

    async fn insert_service_token(&self, token: &ServiceToken) -> StoreResult<()> {
        Sql::of(self).insert_service_token(token).await
    }

    async fn service_token_by_hash(&self, hash: &str) -> StoreResult<Option<ServiceToken>> {
        Sql::of(self).service_token_by_hash(hash).await
    }

    async fn service_token(&self, id: Uuid) -> StoreResult<Option<ServiceToken>> {
        Sql::of(self).service_token(id).await
    }

    async fn revoke_jti(&self, jti: &str, expires_at: OffsetDateTime) -> StoreResult<()> {
        Sql::of(self).revoke_jti(jti, expires_at).await
    }

    async fn is_jti_revoked(&self, jti: &str) -> StoreResult<bool> {
        Sql::of(self).is_jti_revoked(jti).await
    }

    async fn insert_audit(&self, entry: &NewAudit) -> StoreResult<()> {
        Sql::of(self).insert_audit(entry).await
    }

    async fn audit_for_user(&self, user_id: Uuid, before: Option<i64>, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        Sql::of(self).audit_for_user(user_id, before, limit).await
    }

    async fn cleanup(
        &self,
        now: OffsetDateTime,
        ended_before: OffsetDateTime,
        dry_run: bool,
    ) -> StoreResult<CleanupReport> {
        Sql::of(self).cleanup(now, ended_before, dry_run).await
    }
}
