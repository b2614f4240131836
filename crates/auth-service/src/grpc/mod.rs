//! The internal gRPC face (`portcullis.auth.v1.AuthInternal`), with gRPC health checking and
//! reflection. Every call but `IssueServiceToken` needs a service token in `authorization`
//! metadata. Validation answers are data (`valid`, `error_code`), never gRPC errors; the other
//! calls answer failures as gRPC statuses carrying the error code in the message and in
//! `x-error-code` metadata.

use std::{future::Future, net::IpAddr};

use auth_contract::{
    ContextRef, ErrorCode, Liveness, codes,
    proto::{
        self, CheckContextRequest, CheckContextResponse, CreateSdkSessionRequest, CreateSdkSessionResponse, Empty,
        IssueServiceTokenRequest, IssueServiceTokenResponse, ListAllowedOriginsResponse, RefreshRequest,
        RefreshResponse, ValidateApiKeyRequest, ValidateBatchRequest, ValidateBatchResponse, ValidateRequest,
        ValidateResponse,
        auth_internal_server::{AuthInternal, AuthInternalServer},
    },
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, metadata::MetadataValue, transport::server::TcpIncoming};

use crate::{
    error::Error,
    service::{AuthService, ClientMeta, Refreshed, Validated},
};

pub use auth_contract::client::MAX_BATCH;

/// The gRPC service over an [`AuthService`].
#[derive(Debug, Clone)]
pub struct Internal {
    service: AuthService,
}

fn status(err: &Error) -> Status {
    let code = err.wire_code();
    // An internal error's cause is logged where it happened, never sent.
    let mut status = match code {
        auth_contract::ErrorCode::Internal => codes::grpc_status(code, "the server could not complete the request"),
        _ => codes::grpc_status(code, &err.to_string()),
    };
    if let Ok(value) = MetadataValue::try_from(code.as_str_name()) {
        status.metadata_mut().insert("x-error-code", value);
    }
    if let Error::Internal(detail) = err {
        tracing::error!(error = %detail, "internal error in a gRPC call");
    }
    status
}

/// Answers every item of a batched call at once, in order: at most [`MAX_BATCH`] items, and
/// one dependency failure fails the call.
async fn batch<'a, T, R, F, Fut>(items: &'a [T], what: &str, each: F) -> Result<Vec<R>, Status>
where
    F: FnMut(&'a T) -> Fut,
    Fut: Future<Output = Result<R, Status>>,
{
    if items.len() > MAX_BATCH {
        return Err(Status::invalid_argument(format!("VALIDATION_FAILED: at most {MAX_BATCH} {what}")));
    }
    futures::future::join_all(items.iter().map(each)).await.into_iter().collect()
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    text.trim().parse().ok()
}

fn optional(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

fn answer(result: Result<Validated, Error>) -> Result<ValidateResponse, Status> {
    match result {
        Ok(validated) => Ok(ValidateResponse {
            valid: true,
            context: Some(validated.context.to_proto()),
            error_code: auth_contract::ErrorCode::Unspecified.into(),
            cache_ttl_seconds: validated.cache_ttl,
            message: String::new(),
        }),
        // A dependency failure is not an answer about the credential: the caller must not
        // cache it, and must fail closed.
        Err(err @ (Error::Unavailable(_) | Error::Internal(_))) => Err(status(&err)),
        Err(err) => Ok(ValidateResponse {
            valid: false,
            context: None,
            error_code: err.wire_code().into(),
            cache_ttl_seconds: 0,
            message: err.to_string(),
        }),
    }
}

impl Internal {
    pub fn new(service: AuthService) -> Self {
        Self { service }
    }

    /// The caller's service token, from `authorization: Bearer pcs_…`.
    async fn require_service<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::unauthenticated("TOKEN_MISSING: a service token is required"))?;
        let token = auth_contract::credential::bearer_value(header)
            .map_err(|_| Status::unauthenticated("TOKEN_MISSING: a service token is required"))?;
        self.service.authenticate_service(token).await.map(drop).map_err(|e| status(&e))
    }

    /// One `CheckContext` answer: a refusal is data, a dependency failure fails the call.
    async fn check_one(&self, reference: &proto::ContextRef) -> Result<Liveness, Status> {
        let Some(reference) = ContextRef::from_proto(reference) else {
            return Ok(Liveness::Ended(ErrorCode::TokenInvalid));
        };
        match self.service.check_context(&reference).await {
            Ok(()) => Ok(Liveness::Live),
            Err(err @ (Error::Unavailable(_) | Error::Internal(_))) => Err(status(&err)),
            Err(err) => Ok(Liveness::Ended(err.wire_code())),
        }
    }

    async fn validate_one(&self, request: &ValidateRequest) -> Result<ValidateResponse, Status> {
        answer(self.service.validate(&request.credential, parse_ip(&request.ip), optional(&request.origin)).await)
    }
}

#[tonic::async_trait]
impl AuthInternal for Internal {
    async fn validate(&self, request: Request<ValidateRequest>) -> Result<Response<ValidateResponse>, Status> {
        self.require_service(&request).await?;
        self.validate_one(request.get_ref()).await.map(Response::new)
    }

    async fn validate_batch(
        &self,
        request: Request<ValidateBatchRequest>,
    ) -> Result<Response<ValidateBatchResponse>, Status> {
        self.require_service(&request).await?;
        let responses = batch(&request.get_ref().requests, "validations per batch", |r| self.validate_one(r)).await?;
        Ok(Response::new(ValidateBatchResponse { responses }))
    }

    async fn check_context(
        &self,
        request: Request<CheckContextRequest>,
    ) -> Result<Response<CheckContextResponse>, Status> {
        self.require_service(&request).await?;
        let checks = batch(&request.get_ref().refs, "references per call", |r| self.check_one(r)).await?;
        Ok(Response::new(CheckContextResponse { results: checks.into_iter().map(Liveness::to_proto).collect() }))
    }

    async fn validate_api_key(
        &self,
        request: Request<ValidateApiKeyRequest>,
    ) -> Result<Response<ValidateResponse>, Status> {
        self.require_service(&request).await?;
        let r = request.get_ref();
        let result = if r.api_key.trim().is_empty() {
            Err(Error::TokenMissing)
        } else {
            self.service.validate_api_key(&r.api_key, parse_ip(&r.ip), optional(&r.origin)).await
        };
        answer(result).map(Response::new)
    }

    async fn list_allowed_origins(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<ListAllowedOriginsResponse>, Status> {
        self.require_service(&request).await?;
        let origins = self.service.allowed_origins().await.map_err(|e| status(&e))?;
        Ok(Response::new(ListAllowedOriginsResponse { origins }))
    }

    async fn create_sdk_session(
        &self,
        request: Request<CreateSdkSessionRequest>,
    ) -> Result<Response<CreateSdkSessionResponse>, Status> {
        self.require_service(&request).await?;
        let r = request.get_ref();
        let scopes = (!r.scopes.is_empty()).then_some(r.scopes.as_slice());
        let tokens = self
            .service
            .create_sdk_session(&r.api_key, &r.external_user_id, scopes, parse_ip(&r.ip), optional(&r.origin))
            .await
            .map_err(|e| status(&e))?;
        let context = self.service.describe_sdk(&tokens);
        Ok(Response::new(CreateSdkSessionResponse {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            token_type: "Bearer".to_owned(),
            expires_in: i64::try_from(tokens.expires_in).unwrap_or(i64::MAX),
            context: Some(context.context.to_proto()),
        }))
    }

    async fn refresh(&self, request: Request<RefreshRequest>) -> Result<Response<RefreshResponse>, Status> {
        self.require_service(&request).await?;
        let r = request.get_ref();
        let ip = r.ip.parse::<IpAddr>().unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let user_agent = Some(if r.user_agent.is_empty() { "grpc".to_owned() } else { r.user_agent.clone() });
        let meta = ClientMeta { ip, user_agent };
        let expected = if r.expected_session_id.is_empty() {
            None
        } else {
            // An id that is not one names no session: nothing can match it.
            Some(
                uuid::Uuid::parse_str(&r.expected_session_id)
                    .map_err(|_| status(&Error::Forbidden("the refresh token belongs to another session")))?,
            )
        };
        let refreshed =
            self.service.refresh_session(&r.refresh_token, &meta, expected).await.map_err(|e| status(&e))?;
        let validated = self.service.describe_refreshed(&refreshed);
        let (access, refresh, expires_in) = match refreshed {
            Refreshed::User { tokens, .. } => (tokens.access_token, tokens.refresh_token, tokens.expires_in),
            Refreshed::Sdk(tokens) => (tokens.access_token, tokens.refresh_token, tokens.expires_in),
        };
        let expires_at = validated.context.expires_at.unwrap_or(0);
        Ok(Response::new(RefreshResponse {
            access_token: access,
            refresh_token: refresh,
            expires_at,
            expires_in: i64::try_from(expires_in).unwrap_or(i64::MAX),
            context: Some(validated.context.to_proto()),
        }))
    }

    async fn issue_service_token(
        &self,
        request: Request<IssueServiceTokenRequest>,
    ) -> Result<Response<IssueServiceTokenResponse>, Status> {
        let r = request.get_ref();
        let (token, expires_at) =
            self.service.issue_service_token(&r.service_name, &r.service_secret).await.map_err(|e| match e {
                Error::InvalidCredentials => Status::unauthenticated("FORBIDDEN: the service secret is wrong"),
                other => status(&other),
            })?;
        Ok(Response::new(IssueServiceTokenResponse { token, expires_at: expires_at.unix_timestamp() }))
    }
}

/// The span of one call, while spans are exported: named by the method, continuing the
/// caller's trace. The gRPC port is the services' own (every call proves a service token, and
/// compose keeps it on the internal network), so its callers' traces are trusted.
fn call_span(request: &http::Request<()>) -> tracing::Span {
    if !platform::otel::exporting() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: "auth_service::grpc",
        parent: None,
        "grpc",
        otel.kind = "server",
        otel.name = request.uri().path(),
        rpc.system = "grpc",
        portcullis.component = "auth",
    );
    platform::otel::continue_trace(&span, request.headers().get(platform::otel::TRACEPARENT), true);
    span
}

/// Serves gRPC (with health and reflection) on `listener` until `shutdown` resolves.
pub async fn serve(
    service: AuthService,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AuthInternalServer<Internal>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1();
    let mut server = tonic::transport::Server::builder().trace_fn(call_span);
    let router = server.add_service(health_service).add_service(AuthInternalServer::new(Internal::new(service)));
    let router = match reflection {
        Ok(reflection) => router.add_service(reflection),
        Err(err) => {
            tracing::warn!(error = %err, "gRPC reflection unavailable");
            router
        }
    };
    // Small request/response messages: Nagle's algorithm would hold answers back.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    router.serve_with_incoming_shutdown(incoming, shutdown).await
}
