//! Bad input on every route, table-driven: each row is a request and the exact status and
//! problem+json `code` SPEC §4 requires (never a 500); forged access tokens are built by hand.

use auth_service::tokens::{Credential, Kind, kid_for};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{Backend, JWT_SECRET, PASSWORD, TestApp, Tokens, expect_status, spawn_app, unique_email},
    table::{JSON, Row, bad_checksum, oversized, row, run},
};

/// The rows every JSON route shares. `valid` (plus unknown fields) must succeed with
/// `success`; that row comes last, so append these after rows that need the prior state.
fn body_rows(post: &dyn Fn(&str) -> Row, valid: &Value, required: &str, success: u16) -> Vec<Row> {
    let json_text = valid.to_string();
    let mut missing = valid.clone();
    if let Some(object) = missing.as_object_mut() {
        object.remove(required);
    }
    let mut wrong_type = valid.clone();
    wrong_type[required] = json!(12_345_678);
    let mut extra = valid.clone();
    extra["unknown_field"] = json!({"nested": [1, 2, 3]});
    extra["role"] = json!("admin");
    vec![
        post("malformed JSON").raw(JSON, r#"{"email":"#).problem(400, "malformed_body"),
        post("JSON array").json(&json!([valid])).problem(400, "malformed_body"),
        post("JSON string").json(&json!("just a string")).problem(400, "malformed_body"),
        post("JSON number").json(&json!(42)).problem(400, "malformed_body"),
        post("JSON null").json(&Value::Null).problem(400, "malformed_body"),
        post("text/plain content type")
            .raw(Some("text/plain"), json_text.clone())
            .problem(415, "unsupported_media_type"),
        post("form content type")
            .raw(Some("application/x-www-form-urlencoded"), "a=b")
            .problem(415, "unsupported_media_type"),
        post("no content type").raw(None, json_text).problem(415, "unsupported_media_type"),
        post("body one byte over 1 MiB").raw(JSON, oversized(valid)).problem(413, "body_too_large"),
        post(&format!("missing field {required}")).json(&missing).problem(400, "malformed_body"),
        post(&format!("{required} of the wrong type")).json(&wrong_type).problem(400, "malformed_body"),
        post("empty body").raw(JSON, "").problem(400, "malformed_body"),
        post("JSON nested 10 000 deep").raw(JSON, "[".repeat(10_000)).problem(400, "malformed_body"),
        post("invalid UTF-8 in a string").raw(JSON, &b"{\"a\":\"\xff\xfe\"}"[..]).problem(400, "malformed_body"),
        post("unknown fields are ignored").json(&extra).status(success),
    ]
}

fn signup_body(name: &str, email: &str, password: &str) -> Value {
    json!({"name": name, "email": email, "password": password})
}

/// A deterministic, non-repeating mix of CJK, Greek and Cyrillic letters, `n` scalar values
/// long (each is a single scalar value after NFKC as well).
fn unicode_password(n: usize) -> String {
    let alphabet: Vec<char> =
        (0x4E00..0x4E60).chain(0x03B1..=0x03C9).chain(0x0430..=0x044F).filter_map(char::from_u32).collect();
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let index = usize::try_from(state >> 33).unwrap() % alphabet.len();
            alphabet[index]
        })
        .collect()
}

async fn signup_bad_input(backend: Backend) {
    let app = spawn_app(backend).await;
    let url = app.url("/signup");
    let taken = unique_email("ada");
    app.signup(&taken).await;
    let shouting = taken.replacen("ada", "Ada", 1).replace("example.com", "Example.com");
    let unicode = unicode_password(200);
    let unicode_email = unique_email("unicode");
    let post = |name: &str| row(name, Method::POST, url.clone());
    let mut rows = body_rows(&post, &signup_body("Test User", &unique_email("extra"), PASSWORD), "password", 201);
    for (name, email) in [
        ("no @", "ada.example.com".to_owned()),
        ("no dot in the domain", "ada@example".to_owned()),
        ("a space", "ada lovelace@example.com".to_owned()),
        ("display-name form", "Ada Lovelace <ada@example.com>".to_owned()),
        ("255 characters", format!("{}@example.com", "a".repeat(243))),
        ("empty", String::new()),
    ] {
        rows.push(post(&format!("email: {name}")).json(&signup_body("Test User", &email, PASSWORD)).invalid("email"));
    }
    for password in ["Tr0ub4d", "password123", "qwertyuiop", "123456789"] {
        rows.push(
            post(&format!("password {password:?}"))
                .json(&signup_body("Test User", &unique_email("weak"), password))
                .invalid("password"),
        );
    }
    rows.extend([
        post("257-character password")
            .json(&signup_body("Test User", &unique_email("long"), &unicode_password(257)))
            .invalid("password"),
        post("exactly 256-character password")
            .json(&signup_body("Test User", &unique_email("max"), &unicode_password(256)))
            .status(201),
        post("200-character Unicode password").json(&signup_body("Test User", &unicode_email, &unicode)).status(201),
        row("login with the 200-character Unicode password", Method::POST, app.url("/login"))
            .json(&json!({"email": unicode_email, "password": unicode}))
            .status(200),
        post("email taken, differing only in case")
            .json(&signup_body("Test User", &shouting, PASSWORD))
            .problem(409, "email_taken"),
        post("empty name").json(&signup_body("", &unique_email("noname"), PASSWORD)).invalid("name"),
        post("blank name").json(&signup_body("   ", &unique_email("noname"), PASSWORD)).invalid("name"),
        post("name with a NUL").json(&signup_body("Ada\u{0}", &unique_email("nul"), PASSWORD)).invalid("name"),
        post("name of 101 characters")
            .json(&signup_body(&"n".repeat(101), &unique_email("longname"), PASSWORD))
            .invalid("name"),
    ]);
    run(&app, rows).await;
}

async fn login_bad_input(backend: Backend) {
    let app = spawn_app(backend).await;
    let url = app.url("/login");
    let email = unique_email("login");
    app.signup(&email).await;
    let post = |name: &str| row(name, Method::POST, url.clone());
    let mut rows = vec![
        post("wrong password")
            .json(&json!({"email": email, "password": "not the password at all"}))
            .problem(401, "invalid_credentials"),
        post("unknown email")
            .json(&json!({"email": unique_email("nobody"), "password": PASSWORD}))
            .problem(401, "invalid_credentials"),
        post("email without @").json(&json!({"email": "not-an-email", "password": PASSWORD})).invalid("email"),
        post("email as display-name form")
            .json(&json!({"email": format!("Ada <{email}>"), "password": PASSWORD}))
            .invalid("email"),
        post("10 000-character password is just wrong")
            .json(&json!({"email": email, "password": "x".repeat(10_000)}))
            .problem(401, "invalid_credentials"),
    ];
    rows.extend(body_rows(&post, &json!({"email": email, "password": PASSWORD}), "password", 200));
    run(&app, rows).await;
}

async fn refresh_bad_input(backend: Backend) {
    let app = spawn_app(backend).await;
    let url = app.url("/refresh");
    let user = app.signup(&unique_email("refresh")).await;
    let unknown = Credential::generate(Kind::Refresh).expose().to_owned();
    let tampered = bad_checksum(&unknown);
    let pat = Credential::generate(Kind::PersonalAccess).expose().to_owned();
    let post = |name: &str| row(name, Method::POST, url.clone());
    let mut rows = Vec::new();
    for (name, token) in [
        ("garbage refresh token", "garbage".to_owned()),
        ("empty refresh token", String::new()),
        ("pcr_ token with a bad checksum", tampered),
        ("pcr_ token truncated", unknown[..20].to_owned()),
        ("access JWT as refresh token", user.access.clone()),
        ("pcp_ token as refresh token", pat),
        ("well-formed unknown pcr_ token", unknown.clone()),
    ] {
        rows.push(post(name).json(&json!({"refresh_token": token})).problem(401, "refresh_invalid"));
    }
    rows.extend([
        post("garbage pc_refresh cookie, empty body")
            .header("cookie", "pc_refresh=garbage")
            .problem(401, "refresh_invalid"),
        post("unknown pc_refresh cookie, empty JSON object")
            .header("cookie", format!("pc_refresh={unknown}"))
            .json(&json!({}))
            .problem(401, "refresh_invalid"),
        post("no cookie, no body").problem(400, "malformed_body"),
        post("no cookie, whitespace body").raw(JSON, "  \n").problem(400, "malformed_body"),
    ]);
    rows.extend(body_rows(&post, &json!({"refresh_token": user.refresh}), "refresh_token", 200));
    run(&app, rows).await;
}

async fn password_bad_input(backend: Backend) {
    let app = spawn_app(backend).await;
    let url = app.url("/password");
    let user = app.signup(&unique_email("password")).await;
    let new_password = unicode_password(24);
    let post = |name: &str| row(name, Method::POST, url.clone()).bearer(&user.access);
    let change = |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    let mut rows = vec![
        row("no credential", Method::POST, url.clone())
            .json(&change(PASSWORD, &new_password))
            .problem(401, "token_missing"),
        post("wrong current password")
            .json(&change("not the password at all", &new_password))
            .problem(401, "invalid_credentials"),
        post("new password of 7 characters").json(&change(PASSWORD, "Tr0ub4d")).invalid("new_password"),
        post("new password too common").json(&change(PASSWORD, "password123")).invalid("new_password"),
        post("new password of 257 characters").json(&change(PASSWORD, &unicode_password(257))).invalid("new_password"),
    ];
    rows.extend(body_rows(&post, &change(PASSWORD, &new_password), "new_password", 204));
    run(&app, rows).await;
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// The claims the service itself would sign for `user`'s session, valid now.
fn valid_claims(app: &TestApp, user: &Tokens) -> Value {
    let now = app.service.now().unix_timestamp();
    json!({
        "iss": "portcullis", "aud": "portcullis", "sub": user.user_id, "sid": user.session_id,
        "jti": uuid::Uuid::new_v4().to_string(), "iat": now, "nbf": now, "exp": now + 900,
        "typ": "access", "role": "member", "scopes": ["*"],
    })
}

fn with(claims: &Value, changes: &[(&str, Value)]) -> Value {
    let mut claims = claims.clone();
    for (key, value) in changes {
        claims[*key] = value.clone();
    }
    claims
}

fn signed(alg: Algorithm, kid: Option<&str>, secret: &str, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

/// An HS256 token with a header of our choosing (fields `jsonwebtoken::Header` cannot carry).
fn signed_with_header(header: &Value, secret: &str, claims: &Value) -> String {
    use hmac::Mac as _;
    let input = format!("{}.{}", base64url(header.to_string().as_bytes()), base64url(claims.to_string().as_bytes()));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", base64url(&mac.finalize().into_bytes()))
}

/// An `alg: none` token: header and claims, and an empty signature.
fn unsigned(alg: &str, kid: &str, claims: &Value) -> String {
    let header = json!({"alg": alg, "typ": "JWT", "kid": kid});
    format!("{}.{}.", base64url(header.to_string().as_bytes()), base64url(claims.to_string().as_bytes()))
}

async fn forged_access_tokens(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signup(&unique_email("forge")).await;
    let kid_text = kid_for(JWT_SECRET);
    let kid = Some(kid_text.as_str());
    let claims = valid_claims(&app, &user);
    let now = app.service.now().unix_timestamp();
    let hs256 = |claims: &Value| signed(Algorithm::HS256, kid, JWT_SECRET, claims);
    let huge = hs256(&with(&claims, &[("pad", json!("x".repeat(6_800)))]));
    assert!((8 * 1024 + 1..10 * 1024).contains(&huge.len()), "{}", huge.len());
    assert_eq!(base64url(b"any carnal pleas"), "YW55IGNhcm5hbCBwbGVhcw");
    let mut tokens: Vec<(String, String, &str)> = vec![
        ("valid forged token".into(), hs256(&claims), ""),
        // An empty token is a missing one (SPEC §6).
        ("empty bearer".into(), String::new(), "token_missing"),
        ("garbage".into(), "garbage".into(), "token_invalid"),
        ("three empty segments".into(), "..".into(), "token_invalid"),
        ("refresh token as bearer".into(), user.refresh.clone(), "token_invalid"),
        (
            "HS256 with a wrong key".into(),
            signed(Algorithm::HS256, kid, "not-the-secret-0123456789abcdef0123456789", &claims),
            "token_invalid",
        ),
        (
            "valid signature, one claim altered".into(),
            {
                let token = hs256(&claims);
                let parts: Vec<&str> = token.split('.').collect();
                let altered = with(&claims, &[("role", json!("admin"))]);
                format!("{}.{}.{}", parts[0], base64url(altered.to_string().as_bytes()), parts[2])
            },
            "token_invalid",
        ),
        (
            "expired an hour ago".into(),
            hs256(&with(
                &claims,
                &[("iat", json!(now - 7_200)), ("nbf", json!(now - 7_200)), ("exp", json!(now - 3_600))],
            )),
            "token_expired",
        ),
        ("nbf an hour ahead".into(), hs256(&with(&claims, &[("nbf", json!(now + 3_600))])), "token_invalid"),
        ("wrong iss".into(), hs256(&with(&claims, &[("iss", json!("evil"))])), "token_invalid"),
        ("wrong aud".into(), hs256(&with(&claims, &[("aud", json!("someone-else"))])), "token_invalid"),
        (
            "unknown kid".into(),
            signed(Algorithm::HS256, Some("0123456789abcdef"), JWT_SECRET, &claims),
            "token_invalid",
        ),
        ("no kid".into(), signed(Algorithm::HS256, None, JWT_SECRET, &claims), "token_invalid"),
        ("over 8 KiB".into(), huge, "token_invalid"),
        ("HS512 with the right secret".into(), signed(Algorithm::HS512, kid, JWT_SECRET, &claims), "token_invalid"),
        ("HS384 with the right secret".into(), signed(Algorithm::HS384, kid, JWT_SECRET, &claims), "token_invalid"),
        (
            "a crit extension we do not implement (RFC 7515 §4.1.11)".into(),
            signed_with_header(
                &json!({"alg": "HS256", "typ": "JWT", "kid": kid_text, "crit": ["exp-ext"], "exp-ext": 1}),
                JWT_SECRET,
                &claims,
            ),
            "token_invalid",
        ),
        (
            "the same header without crit is fine".into(),
            signed_with_header(&json!({"alg": "HS256", "typ": "JWT", "kid": kid_text}), JWT_SECRET, &claims),
            "",
        ),
    ];
    for typ in ["sdk", "refresh", "", "ACCESS"] {
        tokens.push((format!("typ {typ:?}"), hs256(&with(&claims, &[("typ", json!(typ))])), "token_invalid"));
    }
    for alg in ["none", "None", "NONE", "nOnE"] {
        tokens.push((format!("alg {alg:?}, empty signature"), unsigned(alg, &kid_text, &claims), "token_invalid"));
    }
    tokens.push(("alg HS256 header, empty signature".into(), unsigned("HS256", &kid_text, &claims), "token_invalid"));
    let mut rows = Vec::new();
    for path in ["/me", "/sessions"] {
        let get = |name: &str| row(format!("GET {path}: {name}"), Method::GET, app.url(path));
        rows.extend([
            get("no Authorization").problem(401, "token_missing"),
            get("Basic credentials")
                .header("authorization", "Basic dXNlcjpwYXNzd29yZA==")
                .problem(401, "token_missing"),
            get("Authorization that is not ASCII text")
                .header("authorization", "Bearer é")
                .problem(401, "token_invalid"),
        ]);
        for (name, token, code) in &tokens {
            let request = get(name).header("authorization", format!("Bearer {token}"));
            rows.push(if code.is_empty() { request.status(200) } else { request.problem(401, code) });
        }
    }
    run(&app, rows).await;
}

/// Every authenticated route refuses a missing or unusable credential before reading input.
async fn protected_routes_bad_credentials(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signup(&unique_email("guard")).await;
    let session = format!("/sessions/{}", user.session_id);
    let routes = [
        (Method::POST, "/logout"),
        (Method::GET, "/me"),
        (Method::POST, "/password"),
        (Method::GET, "/session"),
        (Method::GET, "/sessions"),
        (Method::DELETE, "/sessions"),
        (Method::DELETE, session.as_str()),
        (Method::POST, "/activity"),
        (Method::GET, "/audit"),
    ];
    let mut rows = Vec::new();
    for (method, path) in routes {
        let at = |name: &str| row(format!("{method} {path}: {name}"), method.clone(), app.url(path));
        rows.extend([
            at("no credential").problem(401, "token_missing"),
            at("garbage bearer").bearer("garbage").problem(401, "token_invalid"),
            at("refresh token as bearer").bearer(&user.refresh).problem(401, "token_invalid"),
            // Two credentials that differ are refused, never "first wins" (SPEC §6).
            at("a valid bearer and an X-API-Key")
                .bearer(&user.access)
                .header("x-api-key", "pck_other")
                .problem(401, "token_invalid"),
            at("empty bearer").header("authorization", "Bearer ").problem(401, "token_missing"),
        ]);
    }
    run(&app, rows).await;
}

async fn audit_and_session_ids_bad_input(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signup(&unique_email("audit")).await;
    let other = app.signup(&unique_email("other")).await;
    let token = user.access.as_str();
    let mut rows = Vec::new();
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=", "limit"),
        ("limit=99999999999999999999", "limit"),
        ("cursor=xyz", "cursor"),
        ("cursor=", "cursor"),
        ("limit=%ff", "limit"),
        ("limit=1&limit=2", "query"),
    ] {
        rows.push(
            row(format!("GET /audit?{query}"), Method::GET, app.url(&format!("/audit?{query}")))
                .bearer(token)
                .invalid(field),
        );
    }
    for query in ["limit=100", "limit=1", ""] {
        rows.push(
            row(format!("GET /audit?{query}"), Method::GET, app.url(&format!("/audit?{query}")))
                .bearer(token)
                .status(200),
        );
    }
    for (name, id) in [
        ("not a uuid", "not-a-uuid".to_owned()),
        ("random uuid", uuid::Uuid::new_v4().to_string()),
        ("another user's session", other.session_id.clone()),
        ("percent-encoded junk", "%00%ff".to_owned()),
    ] {
        rows.push(
            row(format!("DELETE /sessions/{{{name}}}"), Method::DELETE, app.url(&format!("/sessions/{id}")))
                .bearer(token)
                .problem(404, "not_found"),
        );
    }
    run(&app, rows).await;
    // The other user's session survived the attempt.
    expect_status(app.get_auth("/me", &other.access).await, StatusCode::OK).await;
}

async fn unknown_routes_and_methods(backend: Backend) {
    let app = spawn_app(backend).await;
    let api = |method: Method, path: &str| row(format!("{method} {path}"), method, app.url(path));
    let root =
        |method: Method, path: &str| row(format!("{method} {path} (root)"), method, format!("{}{path}", app.root));
    let mut rows = vec![
        api(Method::GET, "/nope").problem(404, "not_found"),
        api(Method::POST, "/nope").problem(404, "not_found"),
        api(Method::GET, "/sessions/a/b").problem(404, "not_found"),
        root(Method::GET, "/nope").problem(404, "not_found"),
        root(Method::GET, "/api/v1/nope").problem(404, "not_found"),
        root(Method::POST, "/health").problem(405, "method_not_allowed"),
        root(Method::DELETE, "/metrics").problem(405, "method_not_allowed"),
        root(Method::GET, "/health").status(200),
        api(Method::GET, "/config").status(200),
    ];
    for (method, path) in [
        (Method::GET, "/login"),
        (Method::GET, "/signup"),
        (Method::GET, "/refresh"),
        (Method::GET, "/logout"),
        (Method::POST, "/config"),
        (Method::DELETE, "/me"),
        (Method::PUT, "/password"),
        (Method::POST, "/session"),
        (Method::PUT, "/sessions"),
        (Method::GET, "/sessions/00000000-0000-0000-0000-000000000000"),
        (Method::GET, "/activity"),
        (Method::POST, "/audit"),
    ] {
        rows.push(api(method, path).problem(405, "method_not_allowed"));
    }
    run(&app, rows).await;
}

crate::on_both_backends!(
    signup_bad_input,
    login_bad_input,
    refresh_bad_input,
    password_bad_input,
    forged_access_tokens,
    protected_routes_bad_credentials,
    audit_and_session_ids_bad_input,
    unknown_routes_and_methods,
);
