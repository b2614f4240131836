//! Signup, login, logout and password change.

use serde_json::json;
use uuid::Uuid;

use super::{AuthService, ClientMeta, Principal, SignedIn};
use crate::{
    domain::{email::Email, name::Name, password::Password, role::Role},
    error::Error,
    events,
    store::{StoreError, User},
};

impl AuthService {
    pub async fn signup(&self, name: &str, email: &str, password: &str, meta: &ClientMeta) -> Result<SignedIn, Error> {
        let result = self.signup_inner(name, email, password, meta).await;
        self.inner.metrics.operation("signup", result.is_ok());
        result
    }

    async fn signup_inner(
        &self,
        name: &str,
        email: &str,
        password: &str,
        meta: &ClientMeta,
    ) -> Result<SignedIn, Error> {
        let mut problems = Vec::new();
        let name = Name::parse("name", name).map_err(|e| collect(&mut problems, e)).ok();
        let email = Email::parse("email", email).map_err(|e| collect(&mut problems, e)).ok();
        let password = Password::parse_new("password", password, self.inner.config.password_min_length)
            .map_err(|e| collect(&mut problems, e))
            .ok();
        let (Some(name), Some(email), Some(password)) = (name, email, password) else {
            return Err(Error::Validation(problems));
        };
        let known_words = vec![name.as_str().to_owned(), email.as_str().to_owned()];
        let hash = self.inner.hasher.hash_new("password", password, known_words).await?;
        let user = User {
            id: Uuid::new_v4(),
            name: name.as_str().to_owned(),
            email: email.as_str().to_owned(),
            password_hash: hash,
            role: Role::Member,
            disabled: false,
            created_at: self.now(),
        };
        match self.store().insert_user(&user).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(Error::EmailTaken),
            Err(other) => return Err(other.into()),
        }
        self.audit(Some(user.id), "signup", "success", Some(meta.ip), json!({})).await;
        self.events().emit(events::USER_REGISTERED, json!({"user_id": user.id, "email": user.email})).await;
        let tokens = self.open_session(&user, meta).await?;
        Ok(SignedIn { user, tokens })
    }

    pub async fn login(&self, email: &str, password: &str, meta: &ClientMeta) -> Result<SignedIn, Error> {
        let result = self.login_inner(email, password, meta).await;
        self.inner.metrics.operation("login", result.is_ok());
        result
    }

    async fn login_inner(&self, email: &str, password: &str, meta: &ClientMeta) -> Result<SignedIn, Error> {
        let email = Email::parse("email", email)?;
        if password.is_empty() {
            return Err(Error::validation("password", "is required"));
        }
        let attempt = self.reserve_attempt(email.as_str(), meta.ip).await?;
        let user = self.store().user_by_email(email.as_str()).await;
        let verified = match &user {
            Ok(user) => {
                self.inner
                    .hasher
                    .verify(Password::presented(password), user.as_ref().map(|u| u.password_hash.clone()))
                    .await
            }
            Err(_) => Ok(false),
        };
        let (user, verified) = match (user, verified) {
            (Ok(user), Ok(verified)) => (user, verified),
            (Err(err), _) => {
                self.attempt_not_made(attempt).await;
                return Err(err.into());
            }
            (_, Err(err)) => {
                self.attempt_not_made(attempt).await;
                return Err(err);
            }
        };
        let user = match user {
            Some(user) if verified => user,
            other => {
                let user_id = other.map(|u| u.id);
                self.audit(user_id, "login", "failure", Some(meta.ip), json!({"reason": "invalid_credentials"})).await;
                return Err(Error::InvalidCredentials);
            }
        };
        if user.disabled {
            self.audit(Some(user.id), "login", "failure", Some(meta.ip), json!({"reason": "disabled"})).await;
            return Err(Error::Forbidden("this account is disabled"));
        }
        self.attempt_succeeded(attempt).await?;
        let tokens = self.open_session(&user, meta).await?;
        self.audit(
            Some(user.id),
            "login",
            "success",
            Some(meta.ip),
            json!({"session_id": tokens.session.id, "device": tokens.session.device}),
        )
        .await;
        self.events()
            .emit(
                events::USER_LOGIN,
                json!({"user_id": user.id, "session_id": tokens.session.id, "ip": meta.ip.to_string()}),
            )
            .await;
        Ok(SignedIn { user, tokens })
    }

    /// Ends the caller's session and revokes the presented access token's `jti`.
    pub async fn logout(&self, principal: &Principal, meta: &ClientMeta) -> Result<(), Error> {
        // Kept while the token could still verify: until `exp` plus the validation leeway.
        let expires = time::OffsetDateTime::from_unix_timestamp(principal.claims.exp).unwrap_or_else(|_| self.now())
            + time::Duration::seconds(crate::domain::jwt::LEEWAY_SECONDS);
        self.store().revoke_jti(&principal.claims.jti, expires).await?;
        self.store().end_sessions(&[principal.session.id], self.now(), "logout").await?;
        self.audit(
            Some(principal.user.id),
            "logout",
            "success",
            Some(meta.ip),
            json!({"session_id": principal.session.id}),
        )
        .await;
        self.events()
            .emit(
                events::USER_LOGOUT,
                json!({"user_id": principal.user.id, "session_id": principal.session.id, "jti": principal.claims.jti, "reason": "logout"}),
            )
            .await;
        self.inner.metrics.operation("logout", true);
        Ok(())
    }

    /// Changes the password after checking the current one; every other session ends, the
    /// current one and its refresh token stay.
    pub async fn change_password(
        &self,
        principal: &Principal,
        current: &str,
        new: &str,
        meta: &ClientMeta,
    ) -> Result<Vec<Uuid>, Error> {
        let user = &principal.user;
        let new = Password::parse_new("new_password", new, self.inner.config.password_min_length)?;
        let attempt = self.reserve_attempt(&user.email, meta.ip).await?;
        let verified =
            match self.inner.hasher.verify(Password::presented(current), Some(user.password_hash.clone())).await {
                Ok(verified) => verified,
                Err(err) => {
                    self.attempt_not_made(attempt).await;
                    return Err(err);
                }
            };
        if !verified {
            self.audit(
                Some(user.id),
                "password_change",
                "failure",
                Some(meta.ip),
                json!({"reason": "invalid_credentials"}),
            )
            .await;
            self.inner.metrics.operation("password_change", false);
            return Err(Error::InvalidCredentials);
        }
        self.attempt_succeeded(attempt).await?;
        let known_words = vec![user.name.clone(), user.email.clone()];
        let hash = self.inner.hasher.hash_new("new_password", new, known_words).await?;
        let now = self.now();
        self.store().set_password_hash(user.id, &hash, now).await?;
        let others: Vec<Uuid> = self
            .store()
            .live_sessions(user.id, now, self.idle_cutoff(now))
            .await?
            .into_iter()
            .map(|s| s.id)
            .filter(|id| *id != principal.session.id)
            .collect();
        let ended = self.store().end_sessions(&others, now, "password_changed").await?;
        self.audit(Some(user.id), "password_change", "success", Some(meta.ip), json!({"sessions_ended": ended.len()}))
            .await;
        self.events()
            .emit(
                events::USER_PASSWORD_CHANGED,
                json!({"user_id": user.id, "session_id": principal.session.id, "session_ids": ended, "reason": "password_changed"}),
            )
            .await;
        self.inner.metrics.operation("password_change", true);
        Ok(ended)
    }
}

/// Gathers field errors so one response names every invalid field.
fn collect(problems: &mut Vec<crate::error::FieldError>, err: Error) {
    match err {
        Error::Validation(mut fields) => problems.append(&mut fields),
        other => problems.push(crate::error::FieldError::new("body", other.to_string())),
    }
}
