//! The internal gRPC contract against a real auth service: every RPC with valid and invalid
//! input, service-token enforcement, batch order, health and reflection.

use auth_contract::{
    ErrorCode,
    proto::{self, CredentialKind, ValidateRequest, ValidateResponse, auth_internal_client::AuthInternalClient},
};
use reqwest::StatusCode;
use serde_json::json;
use tonic::{Code, Request, transport::Channel};

use crate::helpers::{Backend, SERVICE_SECRET, TestApp, expect_status, spawn_app, unique_email};

async fn client(app: &TestApp) -> AuthInternalClient<Channel> {
    AuthInternalClient::connect(app.grpc.clone()).await.expect("grpc connect")
}

async fn service_token(app: &TestApp) -> String {
    let mut grpc = client(app).await;
    let issued = grpc
        .issue_service_token(proto::IssueServiceTokenRequest {
            service_name: "gateway".into(),
            service_secret: SERVICE_SECRET.into(),
        })
        .await
        .expect("service token")
        .into_inner();
    assert!(issued.token.starts_with("pcs_") && issued.token.len() == 40);
    assert!(issued.expires_at > time::OffsetDateTime::now_utc().unix_timestamp());
    issued.token
}

fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("metadata"));
    request
}

fn validate(credential: &str) -> ValidateRequest {
    ValidateRequest { credential: credential.into(), ip: String::new(), origin: String::new() }
}

fn code(response: &ValidateResponse) -> ErrorCode {
    ErrorCode::try_from(response.error_code).expect("known code")
}

/// Calls without a service token, with a forged one, or with a wrong secret are refused.
async fn calls_need_a_service_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut grpc = client(&app).await;
    let refused = grpc.validate(Request::new(validate("x"))).await.expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let forged = auth_service::tokens::Credential::generate(auth_service::tokens::Kind::Service);
    for token in [forged.expose(), "pcs_garbage", "not-a-token"] {
        let refused = grpc.validate(authed(token, validate("x"))).await.expect_err("forged token");
        assert_eq!(refused.code(), Code::Unauthenticated, "{token}");
    }
    // A user's own token is not a service token.
    let user = app.signup(&unique_email("grpc-user")).await;
    let refused = grpc.list_allowed_origins(authed(&user.access, proto::Empty {})).await.expect_err("user token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let wrong = grpc
        .issue_service_token(proto::IssueServiceTokenRequest {
            service_name: "gateway".into(),
            service_secret: "nope".into(),
        })
        .await
        .expect_err("wrong secret");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let bad_name = grpc
        .issue_service_token(proto::IssueServiceTokenRequest {
            service_name: "bad name!".into(),
            service_secret: SERVICE_SECRET.into(),
        })
        .await
        .expect_err("bad name");
    assert_eq!(bad_name.code(), Code::InvalidArgument);
    let token = service_token(&app).await;
    let ok = grpc.validate(authed(&token, validate(&user.access))).await.expect("validate").into_inner();
    assert!(ok.valid);
}

/// During a rotation the auth service issues service tokens for the current secret and for
/// every one in `SERVICE_PREVIOUS_SECRETS` (staged or retired), and only those.
async fn a_rotation_accepts_previous_service_secrets(backend: Backend) {
    let staged = "a-staged-service-secret-of-at-least-32-bytes";
    let retired = "a-retired-service-secret-of-at-least-32-bytes";
    let previous = format!("{staged},{retired}");
    let app = crate::helpers::spawn_app_with(backend, &[("SERVICE_PREVIOUS_SECRETS", previous.as_str())]).await;
    let mut grpc = client(&app).await;
    for secret in [SERVICE_SECRET, staged, retired] {
        let request = proto::IssueServiceTokenRequest { service_name: "gateway".into(), service_secret: secret.into() };
        let issued = grpc.issue_service_token(request).await.expect("accepted secret").into_inner();
        assert!(issued.token.starts_with("pcs_"));
    }
    let request = proto::IssueServiceTokenRequest {
        service_name: "gateway".into(),
        service_secret: format!("{staged},{retired}"),
    };
    assert_eq!(grpc.issue_service_token(request).await.expect_err("the list itself").code(), Code::Unauthenticated);
}

/// `Validate` answers every credential kind, and refuses bad ones with the right code.
async fn validate_every_kind(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = service_token(&app).await;
    let mut grpc = client(&app).await;
    let user = app.signup(&unique_email("grpc-kinds")).await;

    let ok = grpc.validate(authed(&token, validate(&user.access))).await.expect("access").into_inner();
    let context = ok.context.expect("context");
    assert_eq!(
        (context.kind(), context.user_id.as_str(), context.session_id.as_str()),
        (CredentialKind::User, user.user_id.as_str(), user.session_id.as_str())
    );
    assert_eq!(context.scopes, vec!["*"]);
    assert!(ok.cache_ttl_seconds > 0 && ok.cache_ttl_seconds <= 60, "{}", ok.cache_ttl_seconds);

    let pat = expect_status(
        app.post_auth("/tokens", &user.access, Some(&json!({"name": "g", "scopes": ["repos:read"]}))).await,
        StatusCode::CREATED,
    )
    .await;
    let pat = pat["token"].as_str().expect("pat").to_owned();
    let ok = grpc.validate(authed(&token, validate(&pat))).await.expect("pat").into_inner();
    let context = ok.context.expect("context");
    assert_eq!((context.kind(), context.scopes.clone()), (CredentialKind::Pat, vec!["repos:read".to_owned()]));

    let ok = grpc.validate(authed(&token, validate(&token))).await.expect("service").into_inner();
    assert_eq!(ok.context.expect("context").kind(), CredentialKind::Service);

    let registered = expect_status(
        app.post_auth(
            "/client/register",
            &user.access,
            Some(&json!({"name": "g", "allowed_origins": ["https://app.example.com"], "ip_allowlist": ["10.0.0.0/8"]})),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let key = registered["api_key"]["key"].as_str().expect("key").to_owned();
    let client_id = registered["client"]["id"].as_str().expect("client").to_owned();
    let from = |ip: &str, origin: &str| proto::ValidateApiKeyRequest {
        api_key: key.clone(),
        ip: ip.into(),
        origin: origin.into(),
    };
    let ok = grpc.validate_api_key(authed(&token, from("10.1.2.3", ""))).await.expect("key").into_inner();
    let context = ok.context.expect("context");
    assert_eq!(
        (context.kind(), context.client_id.as_str(), context.tenant_id.as_str()),
        (CredentialKind::ApiKey, client_id.as_str(), client_id.as_str())
    );
    let outside = grpc.validate_api_key(authed(&token, from("192.0.2.1", ""))).await.expect("key").into_inner();
    assert_eq!((outside.valid, code(&outside)), (false, ErrorCode::IpNotAllowed));
    let no_ip = grpc.validate_api_key(authed(&token, from("", ""))).await.expect("key").into_inner();
    assert_eq!(code(&no_ip), ErrorCode::IpNotAllowed, "no IP must fail closed");
    let bad_origin = grpc
        .validate_api_key(authed(&token, from("10.1.2.3", "https://evil.example")))
        .await
        .expect("key")
        .into_inner();
    assert_eq!(code(&bad_origin), ErrorCode::OriginNotAllowed);

    // SDK sessions over gRPC, and the SDK token's origin rule.
    let sdk = grpc
        .create_sdk_session(authed(
            &token,
            proto::CreateSdkSessionRequest {
                api_key: key.clone(),
                external_user_id: "end-user-1".into(),
                scopes: vec![],
                ip: "10.9.9.9".into(),
                origin: "https://app.example.com".into(),
            },
        ))
        .await
        .expect("sdk session")
        .into_inner();
    let sdk_context = sdk.context.expect("context");
    // Described from what was issued, it is exactly what validating the token answers.
    let validated = grpc.validate(authed(&token, validate(&sdk.access_token))).await.expect("sdk").into_inner();
    assert_eq!(validated.context.as_ref(), Some(&sdk_context));
    assert_eq!(
        (sdk_context.kind(), sdk_context.subject.clone()),
        (CredentialKind::Sdk, format!("sdk:{client_id}:end-user-1"))
    );
    let with_origin = |origin: &str| ValidateRequest {
        credential: sdk.access_token.clone(),
        ip: String::new(),
        origin: origin.into(),
    };
    assert!(
        grpc.validate(authed(&token, with_origin("https://app.example.com"))).await.expect("sdk").into_inner().valid
    );
    assert!(grpc.validate(authed(&token, with_origin(""))).await.expect("sdk").into_inner().valid);
    let refused = grpc.validate(authed(&token, with_origin("https://evil.example"))).await.expect("sdk").into_inner();
    assert_eq!(code(&refused), ErrorCode::OriginNotAllowed);
    let refused = grpc
        .create_sdk_session(authed(
            &token,
            proto::CreateSdkSessionRequest {
                api_key: key.clone(),
                external_user_id: String::new(),
                scopes: vec![],
                ip: "10.0.0.1".into(),
                origin: String::new(),
            },
        ))
        .await
        .expect_err("empty external id");
    assert_eq!(refused.code(), Code::InvalidArgument);

    // Refresh over gRPC, then the spent token.
    let refreshed = grpc
        .refresh(authed(
            &token,
            proto::RefreshRequest { refresh_token: sdk.refresh_token.clone(), ..Default::default() },
        ))
        .await
        .expect("refresh")
        .into_inner();
    assert!(refreshed.refresh_token.starts_with("pcr_") && refreshed.expires_at > 0);
    let validated = grpc.validate(authed(&token, validate(&refreshed.access_token))).await.expect("new").into_inner();
    assert_eq!(validated.context, refreshed.context, "the refresh describes the token it issued");
    assert_eq!(refreshed.context.as_ref().map(|c| c.expires_at), Some(refreshed.expires_at));
    let spent = grpc
        .refresh(authed(
            &token,
            proto::RefreshRequest { refresh_token: sdk.refresh_token.clone(), ..Default::default() },
        ))
        .await
        .expect_err("spent");
    assert_eq!(spent.code(), Code::Aborted, "within the grace period a spent token is a conflict");
    let garbage = grpc
        .refresh(authed(&token, proto::RefreshRequest { refresh_token: "pcr_nope".into(), ..Default::default() }))
        .await
        .expect_err("garbage");
    assert_eq!(
        (garbage.code(), garbage.metadata().get("x-error-code").and_then(|v| v.to_str().ok())),
        (Code::Unauthenticated, Some("REFRESH_INVALID"))
    );

    let origins = grpc.list_allowed_origins(authed(&token, proto::Empty {})).await.expect("origins").into_inner();
    assert!(origins.origins.contains(&"https://app.example.com".to_owned()));

    // Invalid credentials, each with its code.
    app.post_auth("/logout", &user.access, None).await;
    for (credential, expected) in [
        ("", ErrorCode::TokenMissing),
        ("garbage", ErrorCode::TokenMalformed),
        (user.access.as_str(), ErrorCode::TokenRevoked),
        ("pcp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ErrorCode::TokenMalformed),
        ("pck_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ErrorCode::KeyInvalid),
    ] {
        let answer = grpc.validate(authed(&token, validate(credential))).await.expect("answer").into_inner();
        assert_eq!((answer.valid, code(&answer)), (false, expected), "{credential:.12}");
        assert!(answer.context.is_none());
    }
}

/// `ValidateBatch` answers in request order.
async fn batch_keeps_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = service_token(&app).await;
    let mut grpc = client(&app).await;
    let a = app.signup(&unique_email("batch-a")).await;
    let b = app.signup(&unique_email("batch-b")).await;
    let requests =
        vec![validate(&a.access), validate("garbage"), validate(&b.access), validate(&a.access), validate("")];
    let answers = grpc
        .validate_batch(authed(&token, proto::ValidateBatchRequest { requests }))
        .await
        .expect("batch")
        .into_inner()
        .responses;
    let shape: Vec<(bool, String)> =
        answers.iter().map(|r| (r.valid, r.context.as_ref().map(|c| c.user_id.clone()).unwrap_or_default())).collect();
    assert_eq!(
        shape,
        vec![
            (true, a.user_id.clone()),
            (false, String::new()),
            (true, b.user_id.clone()),
            (true, a.user_id.clone()),
            (false, String::new())
        ]
    );
    let too_many = proto::ValidateBatchRequest { requests: vec![validate("x"); auth_service::MAX_BATCH + 1] };
    assert_eq!(
        grpc.validate_batch(authed(&token, too_many)).await.expect_err("too many").code(),
        Code::InvalidArgument
    );
}

/// `CheckContext` answers, from ids alone, whether contexts validated earlier still stand:
/// every kind while live, then each ended by its own revocation with its code, in request
/// order; references that name nothing are refused, not errors; the call needs a service
/// token and a bounded batch.
async fn check_context_follows_revocations(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = service_token(&app).await;
    let mut grpc = client(&app).await;
    let email = unique_email("grpc-check");
    let stays = app.signup(&email).await;
    let leaves = app.login(&email, "Firefox/128.0").await;
    let (pat_id, pat) = app.create_pat(&stays, json!({"name": "cli"})).await;
    let shop = app.register_client(&stays, json!({"name": "Shop"})).await;
    let sdk = grpc
        .create_sdk_session(authed(
            &token,
            proto::CreateSdkSessionRequest {
                api_key: shop.key.clone(),
                external_user_id: "e1".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("sdk session")
        .into_inner();
    let mut refs = Vec::new();
    for credential in
        [stays.access.as_str(), leaves.access.as_str(), pat.as_str(), shop.key.as_str(), &sdk.access_token, &token]
    {
        let answer = grpc.validate(authed(&token, validate(credential))).await.expect("validate").into_inner();
        let context = auth_contract::AuthContext::from_proto(&answer.context.expect("valid")).expect("context");
        refs.push(context.reference().to_proto());
    }
    // A key named under another client's id, and a reference without a kind, name nothing.
    let foreign_key = proto::ContextRef { client_id: stays.user_id.clone(), ..refs[3].clone() };
    refs.extend([foreign_key, proto::ContextRef::default()]);
    let check = |grpc: &mut AuthInternalClient<Channel>, refs: Vec<proto::ContextRef>| {
        let mut grpc = grpc.clone();
        let token = token.clone();
        async move {
            let results = grpc
                .check_context(authed(&token, proto::CheckContextRequest { refs }))
                .await
                .expect("check")
                .into_inner()
                .results;
            results
                .iter()
                .map(|r| if r.valid { None } else { Some(ErrorCode::try_from(r.error_code).expect("known code")) })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        check(&mut grpc, refs.clone()).await,
        vec![None, None, None, None, None, None, Some(ErrorCode::KeyInvalid), Some(ErrorCode::TokenInvalid)]
    );

    // Revoke all but the first context, without any event reaching the caller.
    expect_status(app.post_auth("/logout", &leaves.access, None).await, StatusCode::NO_CONTENT).await;
    assert!(app.delete_auth(&format!("/tokens/{pat_id}"), &stays.access).await.status().is_success());
    let key_path = format!("/client/{}/api-keys/{}", shop.id, shop.key_id);
    assert_eq!(app.delete_auth(&key_path, &stays.access).await.status(), StatusCode::NO_CONTENT);
    let after = check(&mut grpc, refs[..6].to_vec()).await;
    assert_eq!(after[0], None, "the untouched session stays live");
    assert_eq!(after[1], Some(ErrorCode::TokenRevoked), "a logout revokes the session's access token");
    assert_eq!(after[2], Some(ErrorCode::TokenRevoked), "a revoked PAT");
    assert_eq!(after[3], Some(ErrorCode::KeyRevoked), "a revoked API key");
    assert!(
        matches!(after[4], Some(ErrorCode::SessionEnded | ErrorCode::TokenRevoked)),
        "an SDK session ends with its key: {:?}",
        after[4]
    );
    assert_eq!(after[5], None, "the service token stands");

    let refused = grpc
        .check_context(Request::new(proto::CheckContextRequest { refs: refs.clone() }))
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let too_many = proto::CheckContextRequest { refs: vec![refs[0].clone(); auth_service::MAX_BATCH + 1] };
    assert_eq!(grpc.check_context(authed(&token, too_many)).await.expect_err("too many").code(), Code::InvalidArgument);
}

/// gRPC health checking and reflection answer.
async fn health_and_reflection(backend: Backend) {
    let app = spawn_app(backend).await;
    let channel = Channel::from_shared(app.grpc.clone()).expect("uri").connect().await.expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest { service: "portcullis.auth.v1.AuthInternal".into() })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(status.status(), tonic_health::pb::health_check_response::ServingStatus::Serving);

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream =
        reflection.server_reflection_info(futures::stream::iter([request])).await.expect("reflection").into_inner();
    let response = stream.message().await.expect("message").expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    assert!(list.service.iter().any(|s| s.name == "portcullis.auth.v1.AuthInternal"));
}

crate::on_both_backends!(
    calls_need_a_service_token,
    a_rotation_accepts_previous_service_secrets,
    validate_every_kind,
    batch_keeps_order,
    check_context_follows_revocations,
    health_and_reflection
);
