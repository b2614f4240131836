//! The axum extractor a downstream service uses to get a verified [`AuthContext`] in one line,
//! and the problem+json rejection it answers with when the context headers are missing, forged,
//! tampered with or stale.
//!
//! ```
//! use auth_contract::{extract::VerifiedContext, headers::ContextKey};
//! use axum::{Router, routing::get};
//!
//! async fn whoami(VerifiedContext(ctx): VerifiedContext) -> String {
//!     ctx.subject
//! }
//!
//! // The key comes from CONTEXT_SIGNING_SECRET; any state works if `ContextKey: FromRef<State>`.
//! let app: Router = Router::new().route("/whoami", get(whoami)).with_state(ContextKey::new("secret"));
//! ```

use axum::extract::{FromRef, FromRequestParts, OriginalUri};
use axum::http::{HeaderMap, StatusCode, request::Parts, uri::PathAndQuery};
use axum::response::{IntoResponse, Response};

use crate::codes::ErrorCode;
use crate::context::AuthContext;
use crate::headers::{ContextError, ContextKey, X_REQUEST_ID, verify_context};

pub use crate::problem::CONTENT_TYPE as PROBLEM_CONTENT_TYPE;

/// A context whose headers were signed by the gateway for this very method and path less than
/// [`crate::headers::MAX_AGE_SECONDS`] ago. The credential id, expiry and rate limit are not
/// carried by the headers and are always `None` here (see
/// [`crate::headers::VerifiedHeaders::into_auth_context`]).
///
/// Needs the [`ContextKey`] in the router state (directly or through `FromRef`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedContext(pub AuthContext);

impl VerifiedContext {
    /// `Ok` when the context grants `scope` (with the wildcards of [`AuthContext::has_scope`]),
    /// otherwise a 403 `insufficient_scope` to return from the handler with `?`.
    pub fn require_scope(&self, scope: &str) -> Result<(), Rejection> {
        if self.0.has_scope(scope) { Ok(()) } else { Err(Rejection::insufficient_scope(scope)) }
    }
}

impl<S> FromRequestParts<S> for VerifiedContext
where
    ContextKey: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let key = ContextKey::from_ref(state);
        // Inside a nested router `parts.uri` has lost its prefix; the gateway signed the full
        // path, which axum keeps as the original URI.
        let uri = parts.extensions.get::<OriginalUri>().map_or(&parts.uri, |original| &original.0);
        let path_and_query = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        match verify_context(&key, &parts.headers, &parts.method, path_and_query, unix_now()) {
            Ok(verified) => Ok(Self(verified.into_auth_context())),
            Err(err) => {
                // Worth a warning: behind a gateway this means a request that bypassed it, a
                // secret that differs between the two, or clocks that drifted apart.
                tracing::warn!(error = %err, method = %parts.method, path = %uri.path(), "context headers rejected");
                Err(Rejection::from_context_error(&err, unverified_request_id(&parts.headers)))
            }
        }
    }
}

/// Unix seconds now. A host clock before 1970 yields 0, which makes every context look far in
/// the future and so fails closed.
fn unix_now() -> i64 {
    platform::clock::Clock::now(&platform::clock::SystemClock).unix_timestamp()
}

/// The request id to echo in a rejection. It is not verified (verification just failed), but
/// it is only echoed back for correlation, never trusted.
fn unverified_request_id(headers: &HeaderMap) -> Option<String> {
    let mut values = headers.get_all(X_REQUEST_ID).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok().filter(|id| platform::request_id::is_valid(id)).map(str::to_owned)
}

/// A refused request, answered as RFC 9457 problem+json in the shape every Portcullis service
/// uses: `{"type","title","status","detail","code","request_id"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    code: ErrorCode,
    detail: String,
    request_id: Option<String>,
}

impl Rejection {
    /// 401 `token_invalid`, or `token_expired` for a genuine but stale context.
    pub fn from_context_error(err: &ContextError, request_id: Option<String>) -> Self {
        Self { code: err.code(), detail: err.to_string(), request_id }
    }

    /// 403 `insufficient_scope`.
    pub fn insufficient_scope(scope: &str) -> Self {
        Self {
            code: ErrorCode::InsufficientScope,
            detail: format!("this request needs the scope {scope}"),
            request_id: None,
        }
    }

    /// Sets the request id a handler knows (a scope check does not see the headers).
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// The status the contract's table gives the code.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(crate::codes::http_status(self.code)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        crate::problem::Problem::new(self.code, self.detail).with_request_id(self.request_id).into_response()
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::{Body, to_bytes};
    use axum::http::{Method, Request};
    use axum::routing::{get, post};
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::context::Kind;
    use crate::headers::{X_CONTEXT_TIMESTAMP, X_USER_ID, sign_context};
    use axum::http::{HeaderValue, header};

    const SECRET: &str = "extractor-test-secret";

    #[derive(Clone, FromRef)]
    struct AppState {
        key: ContextKey,
        greeting: &'static str,
    }

    fn context(scopes: &[&str]) -> AuthContext {
        AuthContext {
            subject: "u1".into(),
            kind: Kind::User,
            user_id: Some("u1".into()),
            tenant_id: None,
            client_id: None,
            session_id: Some("s1".into()),
            credential_id: None,
            role: Some(crate::Role::Member),
            scopes: crate::scope::Scopes::from_wire(scopes.iter().copied()),
            expires_at: None,
            rate_limit: None,
        }
    }

    async fn whoami(VerifiedContext(ctx): VerifiedContext) -> String {
        format!("{} {}", ctx.kind, ctx.subject)
    }

    async fn write_order(ctx: VerifiedContext) -> Result<&'static str, Rejection> {
        ctx.require_scope("orders:write")?;
        Ok("written")
    }

    fn app() -> Router {
        let state = AppState { key: ContextKey::new(SECRET), greeting: "hi" };
        let inner = Router::new().route("/whoami", get(whoami));
        Router::new()
            .route("/whoami", get(whoami))
            .route("/orders", post(write_order))
            .route(
                "/greeting",
                get(|axum::extract::State(greeting): axum::extract::State<&'static str>| async move { greeting }),
            )
            .nest("/api", inner)
            .with_state(state)
    }

    fn signed_request(method: Method, path: &str, ctx: &AuthContext, timestamp: i64) -> Request<Body> {
        let headers = sign_context(&ContextKey::new(SECRET), ctx, &method, path, "req-42", timestamp).expect("sign");
        let mut request = Request::builder().method(method).uri(path).body(Body::empty()).expect("request");
        request.headers_mut().extend(headers);
        request
    }

    async fn send(request: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let response = app().oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let body = to_bytes(body, usize::MAX).await.expect("body");
        (parts.status, parts.headers, String::from_utf8(body.to_vec()).expect("utf-8"))
    }

    fn problem_body(headers: &HeaderMap, body: &str) -> Value {
        assert_eq!(headers[header::CONTENT_TYPE], PROBLEM_CONTENT_TYPE);
        serde_json::from_str(body).expect("json")
    }

    #[tokio::test]
    async fn a_correctly_signed_request_gets_through() {
        let request = signed_request(Method::GET, "/whoami?verbose=1", &context(&[]), unix_now());
        let (status, _, body) = send(request).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "user u1");
        assert_eq!(send(Request::get("/greeting").body(Body::empty()).expect("request")).await.2, "hi");
    }

    #[tokio::test]
    async fn nested_routes_verify_the_full_path() {
        let request = signed_request(Method::GET, "/api/whoami", &context(&[]), unix_now());
        let (status, _, body) = send(request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    #[tokio::test]
    async fn spoofed_headers_get_401_problem_json() {
        let request = Request::get("/whoami")
            .header(X_USER_ID, "admin")
            .header("x-auth-kind", "user")
            .header(X_REQUEST_ID, "req-7")
            .body(Body::empty())
            .expect("request");
        let (status, headers, body) = send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer error=\"invalid_token\"");
        let problem = problem_body(&headers, &body);
        assert_eq!(problem["code"], "token_invalid");
        assert_eq!(problem["status"], 401);
        assert_eq!(problem["type"], "urn:portcullis:problem:token_invalid");
        assert_eq!(problem["title"], "Unauthorized");
        assert_eq!(problem["request_id"], "req-7");
        assert!(problem["detail"].as_str().is_some_and(|d| d.contains("X-Context-Signature")));
    }

    #[tokio::test]
    async fn a_tampered_request_gets_401() {
        let mut request = signed_request(Method::GET, "/whoami", &context(&[]), unix_now());
        request.headers_mut().insert(X_USER_ID, HeaderValue::from_static("u2"));
        let (status, headers, body) = send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(problem_body(&headers, &body)["code"], "token_invalid");

        // Signed for one path, replayed against another.
        let mut request = signed_request(Method::GET, "/api/whoami", &context(&[]), unix_now());
        *request.uri_mut() = "/whoami".parse().expect("uri");
        assert_eq!(send(request).await.0, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn a_stale_context_gets_401_token_expired() {
        let request = signed_request(Method::GET, "/whoami", &context(&[]), unix_now() - 120);
        let (status, headers, body) = send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer error=\"invalid_token\"");
        let problem = problem_body(&headers, &body);
        assert_eq!(problem["code"], "token_expired");
        assert_eq!(problem["request_id"], "req-42");

        let mut request = signed_request(Method::GET, "/whoami", &context(&[]), unix_now());
        request.headers_mut().append(X_CONTEXT_TIMESTAMP, HeaderValue::from_static("0"));
        let (status, headers, body) = send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(problem_body(&headers, &body)["code"], "token_invalid");
    }

    #[tokio::test]
    async fn a_missing_scope_gets_403() {
        let request = signed_request(Method::POST, "/orders", &context(&["orders:read"]), unix_now());
        let (status, headers, body) = send(request).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(headers.get(header::WWW_AUTHENTICATE).is_none());
        let problem = problem_body(&headers, &body);
        assert_eq!(problem["code"], "insufficient_scope");
        assert_eq!(problem["status"], 403);

        let request = signed_request(Method::POST, "/orders", &context(&["orders:*"]), unix_now());
        let (status, _, body) = send(request).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "written"));
    }
}
