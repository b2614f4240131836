//! Personal access tokens imported from the system a team ran before (seed 002): the import
//! (`AuthService::import_legacy_pats`, what `cargo xtask import-pats` runs) line by line, then
//! the imported tokens as PATs of their users over HTTP, gRPC and the forward-auth mirror until
//! `LEGACY_PAT_ACCEPT_UNTIL`, and refused like unknown tokens after it.

use auth_contract::{
    ErrorCode,
    proto::{self, CredentialKind, auth_internal_client::AuthInternalClient},
};
use auth_service::{
    legacy_import::{ImportFile, ImportReason, ImportReport, Outcome},
    store::{from_ms, to_ms},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime, format_description::well_known::Rfc3339};
use tonic::Request;

use crate::helpers::{
    Backend, SERVICE_SECRET, TestApp, expect_problem, expect_status, next_event, spawn_app_with, unique_email,
};

const TOKENS_HEADER: &str = "id,name,token,userId,expiresAt,lastUsedAt,createdAt,updatedAt";

/// A fresh token of the legacy shape: `af_live_` and 32 base62 characters.
fn legacy_token() -> String {
    format!("af_live_{}", uuid::Uuid::new_v4().simple())
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).expect("format")
}

/// An app accepting legacy tokens for `days` more days (by the wall clock the app's clock
/// starts from), with extra environment.
async fn app_accepting_for(backend: Backend, days: i64, vars: &[(&str, &str)]) -> TestApp {
    let until = rfc3339(OffsetDateTime::now_utc() + Duration::days(days));
    let mut all = vec![("LEGACY_PAT_ACCEPT_UNTIL", until.as_str())];
    all.extend_from_slice(vars);
    spawn_app_with(backend, &all).await
}

/// Imports one token of `email`'s account; returns it.
async fn import_one(app: &TestApp, email: &str) -> String {
    let token = legacy_token();
    let tokens = format!("{TOKENS_HEADER}\nclx-one,one,{token},u-one,,,2025-01-02 03:04:05.678,\n");
    let users = format!("userId,email\nu-one,{email}\n");
    let report = app.service.import_legacy_pats(tokens.as_bytes(), users.as_bytes()).await.expect("import");
    assert_eq!(report.imported(), 1, "{report:?}");
    token
}

/// `message` with the caller's service token.
fn authed<T>(service_token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {service_token}").parse().expect("metadata"));
    request
}

fn outcomes(report: &ImportReport) -> Vec<(ImportFile, u64, Outcome)> {
    report.lines.iter().map(|l| (l.file, l.line, l.outcome.clone())).collect()
}

/// The export imported line by line: what maps is stored (hashed only, scope `*`, name,
/// expiry, creation and last use kept); what does not is reported with its line and reason;
/// a second run adds nothing. The imported tokens then authenticate as PATs of their users.
async fn import_then_authenticate(backend: Backend) {
    let app = app_accepting_for(backend, 30, &[]).await;
    let (ada_email, bob_email) = (unique_email("legacy-ada"), unique_email("legacy-bob"));
    let ada = app.signup(&ada_email).await;
    let bob = app.signup(&bob_email).await;
    let now = app.service.now();
    let (a, b, unknown, ghost, expired) =
        (legacy_token(), legacy_token(), legacy_token(), legacy_token(), legacy_token());
    let (expires, last_used) = (now + Duration::days(90), now - Duration::days(3));
    let tokens = [
        TOKENS_HEADER.to_owned(),
        format!(
            "clx-a,\"deploy, prod\",{a},u-ada,{},{},2025-01-02 03:04:05.678,2025-01-03 00:00:00",
            rfc3339(expires),
            rfc3339(last_used)
        ),
        format!("clx-b,laptop,{b},u-bob,,,2025-02-01T00:00:00Z,"),
        format!("clx-c,cron,{unknown},u-nobody,,,2025-02-01T00:00:00Z,"),
        format!("clx-d,ci,{ghost},u-ghost,,,2025-02-01T00:00:00Z,"),
        format!("clx-e,bad date,{},u-ada,,,yesterday,", legacy_token()),
        "clx-f,other vendor,ghp_16C7e42F292c6912E7710c838347Ae178B4a,u-ada,,,2025-02-01T00:00:00Z,".to_owned(),
        format!("clx-g,old,{expired},u-ada,{},,2024-02-01T00:00:00Z,", rfc3339(now - Duration::days(1))),
        format!("clx-a2,again,{a},u-ada,,,2025-02-01T00:00:00Z,"),
        format!("clx-h,mapping broken,{},u-broken,,,2025-02-01T00:00:00Z,", legacy_token()),
    ]
    .join("\n");
    let users = format!(
        "userId,email\nu-ada,\"  {}  \"\nu-bob,{bob_email}\nu-ghost,ghost-{}@example.com\nu-broken,not an email\n",
        ada_email.to_uppercase(),
        uuid::Uuid::new_v4().simple()
    );
    let report = app.service.import_legacy_pats(tokens.as_bytes(), users.as_bytes()).await.expect("import");
    let ghost_email = users.lines().nth(3).and_then(|l| l.split(',').nth(1)).expect("ghost").to_owned();
    assert_eq!(
        outcomes(&report),
        vec![
            (ImportFile::Users, 5, Outcome::Skipped(ImportReason::Malformed("email is not a valid email address".into()))),
            (ImportFile::Tokens, 2, Outcome::Imported),
            (ImportFile::Tokens, 3, Outcome::Imported),
            (ImportFile::Tokens, 4, Outcome::Skipped(ImportReason::UnknownLegacyUser("u-nobody".into()))),
            (ImportFile::Tokens, 5, Outcome::Skipped(ImportReason::NoAccount(ghost_email))),
            (ImportFile::Tokens, 6, Outcome::Skipped(ImportReason::Malformed(
                "createdAt is not a date (RFC 3339, or YYYY-MM-DD HH:MM:SS[.fraction][±HH[:MM]], UTC when no offset)".into()
            ))),
            (ImportFile::Tokens, 7, Outcome::Skipped(ImportReason::NotLegacyShape)),
            (ImportFile::Tokens, 8, Outcome::Skipped(ImportReason::Expired(now - Duration::days(1)))),
            (ImportFile::Tokens, 9, Outcome::AlreadyImported),
            (ImportFile::Tokens, 10, Outcome::Skipped(ImportReason::UnusableMapping { user: "u-broken".into(), line: 5 })),
        ]
    );
    assert_eq!((report.imported(), report.already_imported(), report.skipped(), report.unusable_users()), (2, 1, 6, 1));
    assert_eq!(report.accepted_until, app.service.config().legacy_pat_accept_until);
    for line in &report.lines {
        let text = line.to_string();
        assert!(
            ![&a, &b, &unknown, &ghost, &expired].iter().any(|t| text.contains(&t[8..])),
            "a token printed: {text}"
        );
    }

    // Listed with the user's PATs as imported, before any use.
    let listed = expect_status(app.get_auth("/tokens", &ada.access).await, StatusCode::OK).await;
    let entry = &listed["tokens"][0];
    assert_eq!(listed["tokens"].as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(
        (&entry["name"], &entry["prefix"], &entry["last_four"], &entry["scopes"]),
        (&json!("deploy, prod"), &json!("af_live_"), &json!(&a[a.len() - 4..]), &json!(["*"]))
    );
    // Kept to the millisecond, as every timestamp is stored.
    let ms = |at: OffsetDateTime| rfc3339(from_ms(to_ms(at)));
    assert_eq!(entry["expires_at"], json!(ms(expires)));
    assert_eq!(entry["created_at"], json!("2025-01-02T03:04:05.678Z"));
    assert_eq!(entry["last_used_at"], json!(ms(last_used)));
    let dump = app.dump_tables().await;
    assert!(dump.contains("clx-a") && !dump.contains(&a[8..]) && !dump.contains(&b[8..]), "raw token stored");

    // HTTP Bearer: each token is its own user's.
    let me = expect_status(app.get_auth("/me", &a).await, StatusCode::OK).await;
    assert_eq!(me["id"], json!(ada.user_id));
    let me = expect_status(app.get_auth("/me", &b).await, StatusCode::OK).await;
    assert_eq!(me["id"], json!(bob.user_id));
    // A PAT, not an access token: routes that take access tokens only refuse it.
    expect_problem(app.get_auth("/tokens", &a).await, 401, "token_invalid").await;

    // gRPC Validate and ValidateBatch: kind PAT, the imported PAT's id, scope `*`.
    let mut grpc = AuthInternalClient::connect(app.grpc.clone()).await.expect("grpc");
    let service_token = app.service.issue_service_token("gateway", SERVICE_SECRET).await.expect("service token").0;
    let validate = |credential: &str| proto::ValidateRequest { credential: credential.into(), ..Default::default() };
    let ok = grpc.validate(authed(&service_token, validate(&a))).await.expect("validate").into_inner();
    let context = ok.context.expect("context");
    assert_eq!(
        (context.kind(), context.user_id.as_str(), context.scopes.clone()),
        (CredentialKind::Pat, ada.user_id.as_str(), vec!["*".to_owned()])
    );
    assert_eq!(context.credential_id, entry["id"].as_str().expect("id"));
    let batch = proto::ValidateBatchRequest { requests: vec![validate(&b), validate(&unknown), validate(&a)] };
    let answers = grpc.validate_batch(authed(&service_token, batch)).await.expect("batch").into_inner().responses;
    let kinds: Vec<(bool, Option<CredentialKind>)> =
        answers.iter().map(|r| (r.valid, r.context.as_ref().map(proto::AuthContext::kind))).collect();
    assert_eq!(kinds, [(true, Some(CredentialKind::Pat)), (false, None), (true, Some(CredentialKind::Pat))]);
    assert_eq!(ErrorCode::try_from(answers[1].error_code).expect("known code"), ErrorCode::TokenInvalid);

    // The forward-auth mirror: signed context headers of kind `pat`.
    let mirrored = app
        .http
        .get(app.url("/internal/validate"))
        .bearer_auth(&b)
        .header("x-service-token", &service_token)
        .send()
        .await
        .expect("request");
    assert_eq!(mirrored.status(), StatusCode::OK);
    let header = |name: &str| mirrored.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!((header("x-auth-kind"), header("x-user-id")), (Some("pat".to_owned()), Some(bob.user_id.clone())));

    // A second run: nothing new, every stored token reported as already imported.
    let again = app.service.import_legacy_pats(tokens.as_bytes(), users.as_bytes()).await.expect("import again");
    assert_eq!((again.imported(), again.already_imported(), again.skipped()), (0, 3, 6), "{again:?}");
    let listed = expect_status(app.get_auth("/tokens", &ada.access).await, StatusCode::OK).await;
    assert_eq!(listed["tokens"].as_array().map(Vec::len), Some(1), "{listed}");
    let audit = expect_status(app.get_auth("/audit?limit=20", &ada.access).await, StatusCode::OK).await;
    let imports =
        audit["entries"].as_array().expect("entries").iter().filter(|e| e["action"] == "pat_imported").count();
    assert_eq!(imports, 1, "{audit}");
}

/// The problem a refused token gets, without what varies per request.
async fn refusal(app: &TestApp, token: &str) -> Value {
    let mut body = expect_problem(app.get_auth("/me", token).await, 401, "token_invalid").await;
    body.as_object_mut().expect("problem").remove("request_id");
    body
}

/// Until `LEGACY_PAT_ACCEPT_UNTIL` (by the service's clock) and no later: after it an imported
/// token gets the very 401 a token never imported gets. Unprefixed strings of any other shape
/// are refused as before, and imported tokens do not count against `PAT_MAX_PER_USER`.
async fn cutoff_and_other_shapes(backend: Backend) {
    let app = app_accepting_for(backend, 10, &[("PAT_MAX_PER_USER", "1")]).await;
    let email = unique_email("legacy-cutoff");
    let user = app.signup(&email).await;
    let token = import_one(&app, &email).await;
    let never_imported = legacy_token();

    expect_status(app.get_auth("/me", &token).await, StatusCode::OK).await;
    let unknown = refusal(&app, &never_imported).await;
    assert_eq!(unknown["detail"], json!("the token is unknown"), "{unknown}");
    for other in [
        "0123456789abcdef0123456789abcdef01234567".to_owned(),
        format!("AF_LIVE_{}", &never_imported[8..]),
        format!("af_live_{}", &never_imported[9..]),
        format!("{token}x"),
        token.replacen("af_live_", "af_prod_", 1),
    ] {
        refusal(&app, &other).await;
    }
    // Validations say when it stops: no cache keeps the answer past the cutoff.
    let validated = app.service.validate(&token, None, None).await.expect("valid");
    let until = app.service.config().legacy_pat_accept_until.expect("cutoff");
    assert_eq!(validated.context.expires_at, Some(until.unix_timestamp()));

    // The imported token does not use up the user's PAT allowance.
    app.create_pat(&user, json!({"name": "replacement"})).await;

    app.clock.advance(Duration::days(10) + Duration::minutes(1));
    assert_eq!(refusal(&app, &token).await, unknown, "after the cutoff, the same answer as an unknown token");
    let refused = app.service.validate(&token, None, None).await.expect_err("past the cutoff");
    assert_eq!(refused.wire_code(), ErrorCode::TokenInvalid);

    // Without LEGACY_PAT_ACCEPT_UNTIL, never accepted.
    let never = spawn_app_with(Backend::Sqlite, &[]).await;
    let email = unique_email("legacy-never");
    never.signup(&email).await;
    let token = import_one(&never, &email).await;
    assert_eq!(refusal(&never, &token).await, unknown);
}

/// An imported PAT is revoked like any PAT: announced, then refused.
async fn revoking_an_imported_pat(backend: Backend) {
    let app = app_accepting_for(backend, 30, &[]).await;
    let mut events = app.events().await;
    let email = unique_email("legacy-revoke");
    let user = app.signup(&email).await;
    let token = import_one(&app, &email).await;
    expect_status(app.get_auth("/me", &token).await, StatusCode::OK).await;
    let listed = expect_status(app.get_auth("/tokens", &user.access).await, StatusCode::OK).await;
    let id = listed["tokens"][0]["id"].as_str().expect("id").to_owned();
    assert_eq!(app.delete_auth(&format!("/tokens/{id}"), &user.access).await.status(), StatusCode::NO_CONTENT);
    let revoked = next_event(&mut events, "auth:token.revoked", |e| e["credential_id"] == json!(id)).await;
    assert_eq!((&revoked["user_id"], &revoked["kind"]), (&json!(user.user_id), &json!("pat")));
    expect_problem(app.get_auth("/me", &token).await, 401, "token_revoked").await;
}

/// Wrong legacy-shaped tokens spend `AUTH_FAILURE_LIMIT` like any invalid credential.
async fn wrong_legacy_tokens_are_limited(backend: Backend) {
    let app = app_accepting_for(backend, 30, &[("AUTH_FAILURE_LIMIT", "3/minute")]).await;
    let email = unique_email("legacy-flood");
    app.signup(&email).await;
    let token = import_one(&app, &email).await;
    for _ in 0..4 {
        expect_status(app.get_auth("/me", &token).await, StatusCode::OK).await;
    }
    for _ in 0..3 {
        expect_problem(app.get_auth("/me", &legacy_token()).await, 401, "token_invalid").await;
    }
    expect_problem(app.get_auth("/me", &legacy_token()).await, 429, "rate_limited").await;
}

/// A bad header refuses the whole import; nothing is stored.
async fn bad_headers_refuse_the_import(backend: Backend) {
    let app = app_accepting_for(backend, 30, &[]).await;
    let email = unique_email("legacy-header");
    let user = app.signup(&email).await;
    let token = legacy_token();
    let tokens =
        format!("id,name,token,user,expiresAt,lastUsedAt,createdAt,updatedAt\nx,y,{token},u,,,2025-01-01 00:00:00,\n");
    let users = format!("userId,email\nu,{email}\n");
    let err = app.service.import_legacy_pats(tokens.as_bytes(), users.as_bytes()).await.expect_err("bad header");
    assert_eq!(
        err.to_string(),
        "tokens file: bad header: unexpected column `user`; expected the columns \
         id,name,token,userId,expiresAt,lastUsedAt,createdAt,updatedAt"
    );
    let err = app.service.import_legacy_pats(TOKENS_HEADER.as_bytes(), b"").await.expect_err("empty users file");
    assert!(err.to_string().starts_with("users file: bad header: the file is empty"), "{err}");
    let listed = expect_status(app.get_auth("/tokens", &user.access).await, StatusCode::OK).await;
    assert_eq!(listed["tokens"], json!([]));
}

crate::on_both_backends!(
    import_then_authenticate,
    cutoff_and_other_shapes,
    revoking_an_imported_pat,
    wrong_legacy_tokens_are_limited,
    bad_headers_refuse_the_import,
);
