//! Signup, login, refresh, logout, the current user, password change and public config, and
//! their bodies.

use axum::{
    Json,
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    error::Error,
    http::{
        dto::rfc3339,
        error::Problem,
        extract::{ApiJson, optional_json},
        routes::{sdk::SdkSessionResponse, sessions::SessionView},
    },
    service::{AuthService, ClientMeta, IssuedTokens, Principal, Refreshed, UserPrincipal},
    store::User,
};

#[derive(Debug, Deserialize, ToSchema)]
pub struct SignupRequest {
    pub name: String,
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RefreshRequest {
    /// Optional when the `pc_refresh` cookie is sent.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordRequest {
    pub current_password: String,
    pub new_password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub name: String,
    pub email: String,
    pub role: String,
    pub created_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.to_string(),
            name: u.name.clone(),
            email: u.email.clone(),
            role: u.role.as_str().to_owned(),
            created_at: rfc3339(u.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SignedInResponse {
    pub user: UserView,
    pub access_token: String,
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Access token lifetime in seconds.
    pub expires_in: u64,
    pub session: SessionView,
}

impl SignedInResponse {
    pub fn new(user: &User, tokens: IssuedTokens) -> Self {
        Self {
            user: user.into(),
            session: SessionView::new(&tokens.session, true),
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            token_type: "Bearer",
            expires_in: tokens.expires_in,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordRules {
    pub min_length: usize,
    pub max_length: usize,
    pub min_strength_score: u8,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigView {
    pub session_timeout_minutes: u64,
    pub session_lifetime_hours: u64,
    pub max_sessions_per_user: u32,
    pub access_token_expires_in: u64,
    pub refresh_token_expires_in: u64,
    pub refresh_reuse_grace_seconds: u64,
    pub password: PasswordRules,
}

pub const REFRESH_COOKIE: &str = "pc_refresh";

fn refresh_cookie(service: &AuthService, token: String) -> Cookie<'static> {
    let max_age = time::Duration::try_from(service.config().jwt.refresh_ttl).unwrap_or(time::Duration::WEEK);
    Cookie::build((REFRESH_COOKIE, token))
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .path("/")
        .max_age(max_age)
        .build()
}

fn cleared_cookie() -> Cookie<'static> {
    Cookie::build((REFRESH_COOKIE, ""))
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .path("/")
        .max_age(time::Duration::ZERO)
        .build()
}

/// Public settings a client needs to behave well: lifetimes, idle timeout, password rules.
#[utoipa::path(get, path = "/config", tag = "auth", responses((status = 200, body = ConfigView)))]
pub async fn config(State(service): State<AuthService>) -> Json<ConfigView> {
    let c = service.config();
    Json(ConfigView {
        session_timeout_minutes: c.session_idle_timeout.as_secs() / 60,
        session_lifetime_hours: c.session_lifetime.as_secs() / 3600,
        max_sessions_per_user: c.max_sessions_per_user,
        access_token_expires_in: c.jwt.access_ttl.as_secs(),
        refresh_token_expires_in: c.jwt.refresh_ttl.as_secs(),
        refresh_reuse_grace_seconds: c.refresh_reuse_grace.as_secs(),
        password: PasswordRules {
            min_length: c.password_min_length,
            max_length: crate::domain::password::MAX_PASSWORD_CHARS,
            min_strength_score: 2,
        },
    })
}

/// Creates an account and signs it in. 409 is `email_taken`.
#[utoipa::path(post, path = "/signup", tag = "auth", request_body = SignupRequest, responses(
    (status = 201, body = SignedInResponse),
    (status = 400, response = Problem), (status = 409, response = Problem),
    (status = 413, response = Problem), (status = 415, response = Problem), (status = 422, response = Problem),
))]
pub async fn signup(
    State(service): State<AuthService>,
    meta: ClientMeta,
    jar: CookieJar,
    ApiJson(body): ApiJson<SignupRequest>,
) -> Result<(StatusCode, CookieJar, Json<SignedInResponse>), Error> {
    let signed_in = service.signup(&body.name, &body.email, &body.password, &meta).await?;
    let jar = jar.add(refresh_cookie(&service, signed_in.tokens.refresh_token.clone()));
    Ok((StatusCode::CREATED, jar, Json(SignedInResponse::new(&signed_in.user, signed_in.tokens))))
}

/// Signs in with email and password; opens a session. 401 is `invalid_credentials`; 429
/// (`rate_limited`) carries `Retry-After`.
#[utoipa::path(post, path = "/login", tag = "auth", request_body = LoginRequest, responses(
    (status = 200, body = SignedInResponse),
    (status = 400, response = Problem), (status = 401, response = Problem),
    (status = 422, response = Problem), (status = 429, response = Problem),
))]
pub async fn login(
    State(service): State<AuthService>,
    meta: ClientMeta,
    jar: CookieJar,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<(CookieJar, Json<SignedInResponse>), Error> {
    let signed_in = service.login(&body.email, &body.password, &meta).await?;
    let jar = jar.add(refresh_cookie(&service, signed_in.tokens.refresh_token.clone()));
    Ok((jar, Json(SignedInResponse::new(&signed_in.user, signed_in.tokens))))
}

/// Rotates a refresh token (from the body or the `pc_refresh` cookie). 401 is
/// `refresh_invalid`, 409 `refresh_conflict`.
#[utoipa::path(post, path = "/refresh", tag = "auth", request_body(content = RefreshRequest, description = "optional when the cookie is sent"), responses(
    (status = 200, body = SignedInResponse, description = "a user session's new pair (an SDK session's answers like /sdk/session)"),
    (status = 401, response = Problem),
    (status = 409, response = Problem),
))]
pub async fn refresh(
    State(service): State<AuthService>,
    meta: ClientMeta,
    jar: CookieJar,
    request: Request,
) -> Result<Response, Error> {
    let body: RefreshRequest = optional_json(request).await?;
    let token =
        body.refresh_token.or_else(|| jar.get(REFRESH_COOKIE).map(|c| c.value().to_owned())).ok_or_else(|| {
            Error::MalformedBody("refresh_token is required, in the body or the pc_refresh cookie".to_owned())
        })?;
    Ok(match service.refresh(&token, &meta).await? {
        Refreshed::User { user, tokens } => {
            let jar = jar.add(refresh_cookie(&service, tokens.refresh_token.clone()));
            (jar, Json(SignedInResponse::new(&user, tokens))).into_response()
        }
        Refreshed::Sdk(tokens) => Json(SdkSessionResponse::from(tokens)).into_response(),
    })
}

/// Ends the current session; its tokens stop working at once.
#[utoipa::path(post, path = "/logout", tag = "auth", security(("bearer" = [])), responses(
    (status = 204), (status = 401, response = Problem),
))]
pub async fn logout(
    State(service): State<AuthService>,
    meta: ClientMeta,
    principal: Principal,
    jar: CookieJar,
) -> Result<(StatusCode, CookieJar), Error> {
    service.logout(&principal, &meta).await?;
    Ok((StatusCode::NO_CONTENT, jar.add(cleared_cookie())))
}

/// The signed-in user (with an access token or a personal access token).
#[utoipa::path(get, path = "/me", tag = "auth", security(("bearer" = [])), responses(
    (status = 200, body = UserView), (status = 401, response = Problem),
))]
pub async fn me(principal: UserPrincipal) -> Json<UserView> {
    Json(UserView::from(principal.user()))
}

/// Changes the password; every other session ends. 401 `invalid_credentials`: the current
/// password is wrong.
#[utoipa::path(post, path = "/password", tag = "auth", security(("bearer" = [])), request_body = PasswordRequest, responses(
    (status = 204), (status = 401, response = Problem),
    (status = 422, response = Problem),
))]
pub async fn password(
    State(service): State<AuthService>,
    meta: ClientMeta,
    principal: Principal,
    ApiJson(body): ApiJson<PasswordRequest>,
) -> Result<StatusCode, Error> {
    service.change_password(&principal, &body.current_password, &body.new_password, &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}
