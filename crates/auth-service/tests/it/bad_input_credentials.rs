//! Bad input on the credential routes (PATs, clients and API keys, SDK sessions, admin), table-driven
//! like `bad_input.rs`: each row is a request and the exact status, problem+json `code` and, for 422,
//! the `errors[].field` SPEC §4 requires (never a 500); every failing row is reported at once.

use auth_contract::Role;
use auth_service::tokens::{Credential, Kind};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{Backend, TestApp, Tokens, expect_status, spawn_app, spawn_app_with, unique_email},
    table::{JSON, Row, bad_checksum, oversized, row, run},
};

/// Malformed, mistyped and oversized bodies, which every body-taking route refuses alike.
fn broken_bodies(base: &dyn Fn(&str) -> Row, valid: &Value, field: &str) -> Vec<Row> {
    // RFC 8259 §8.1: JSON is UTF-8, so invalid bytes even in an ignored field are not JSON.
    let mut bad_utf8 = valid.to_string().into_bytes();
    bad_utf8.pop();
    bad_utf8.extend_from_slice(b",\"note\":\"\xff\xfe\"}");
    let mut wrong_type = valid.clone();
    // A number where a string or list belongs, a string where a number belongs.
    wrong_type[field] = if valid[field].is_number() { json!("12345678") } else { json!(12_345_678) };
    vec![
        base("malformed JSON").raw(JSON, r#"{"name":"#).problem(400, "malformed_body"),
        base("JSON array").json(&json!([valid])).problem(400, "malformed_body"),
        base("JSON string").json(&json!("just a string")).problem(400, "malformed_body"),
        base("JSON nested 10 000 deep").raw(JSON, "[".repeat(10_000)).problem(400, "malformed_body"),
        base("invalid UTF-8 in a string").raw(JSON, &b"{\"a\":\"\xff\xfe\"}"[..]).problem(400, "malformed_body"),
        base("invalid UTF-8 in an unknown field").raw(JSON, bad_utf8).problem(400, "malformed_body"),
        base("text/plain content type")
            .raw(Some("text/plain"), valid.to_string())
            .problem(415, "unsupported_media_type"),
        base("body one byte over 1 MiB").raw(JSON, oversized(valid)).problem(413, "body_too_large"),
        base(&format!("{field} of the wrong type")).json(&wrong_type).problem(400, "malformed_body"),
    ]
}

/// The rows of a route whose JSON body is required: `valid` plus unknown fields answers
/// `success` (the last row); without `field` it is a 400 when `required`.
fn body_rows(base: &dyn Fn(&str) -> Row, valid: &Value, field: &str, required: bool, success: u16) -> Vec<Row> {
    let mut rows = broken_bodies(base, valid, field);
    rows.extend([
        base("JSON null").json(&Value::Null).problem(400, "malformed_body"),
        base("empty body").raw(JSON, "").problem(400, "malformed_body"),
        base("no content type").raw(None, valid.to_string()).problem(415, "unsupported_media_type"),
    ]);
    if required {
        let mut missing = valid.clone();
        missing.as_object_mut().unwrap().remove(field);
        rows.push(base(&format!("missing {field}")).json(&missing).problem(400, "malformed_body"));
    }
    let mut extra = valid.clone();
    extra["unknown_field"] = json!({"nested": [1, 2, 3]});
    extra["owner_id"] = json!(uuid::Uuid::new_v4().to_string());
    rows.push(base("unknown fields are ignored").json(&extra).status(success));
    rows
}

/// `n` distinct well-formed scopes.
fn scopes(n: usize) -> Value {
    json!((0..n).map(|i| format!("scope{i}:read")).collect::<Vec<_>>())
}

/// The ill-formed scope lists every scoped route answers 422 `scopes` to.
fn bad_scopes() -> [(&'static str, Value); 7] {
    [
        ("[]", json!([])),
        ("[\"Orders:read\"]", json!(["Orders:read"])),
        ("[\"orders\"]", json!(["orders"])),
        ("[\"orders:read:x\"]", json!(["orders:read:x"])),
        ("[\"*:read\"]", json!(["*:read"])),
        ("[\"\"]", json!([""])),
        ("65 scopes", scopes(65)),
    ]
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_else(|| panic!("not a string: {value}")).to_owned()
}

/// A setup request that must answer `status`; returns its body.
async fn call(app: &TestApp, method: Method, path: &str, token: &str, body: Option<Value>, status: u16) -> Value {
    let mut request = app.http.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    expect_status(request.send().await.expect("request"), StatusCode::from_u16(status).unwrap()).await
}

struct Client {
    id: String,
    key_id: String,
    key: String,
}

async fn register(app: &TestApp, token: &str, body: Value) -> Client {
    let created = call(app, Method::POST, "/client/register", token, Some(body), 201).await;
    Client {
        id: text(&created["client"]["id"]),
        key_id: text(&created["api_key"]["id"]),
        key: text(&created["api_key"]["key"]),
    }
}

/// Creates an API key on `client`: its id and secret.
async fn new_key(app: &TestApp, token: &str, client: &str, body: Value) -> (String, String) {
    let key = call(app, Method::POST, &format!("/client/{client}/api-keys"), token, Some(body), 201).await;
    (text(&key["id"]), text(&key["key"]))
}

async fn pat_routes_bad_input(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signup(&unique_email("pat")).await;
    let other = app.signup(&unique_email("other")).await;
    let theirs = call(&app, Method::POST, "/tokens", &other.access, Some(json!({"name": "theirs"})), 201).await;
    let mine = call(&app, Method::POST, "/tokens", &user.access, Some(json!({"name": "mine"})), 201).await;
    let url = app.url("/tokens");
    let post = |name: &str| row(format!("POST /tokens: {name}"), Method::POST, url.clone()).bearer(&user.access);
    let pat = |extra: Value| {
        let mut body = json!({"name": "ci"});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };
    let mut rows = Vec::new();
    for (name, value) in [("empty", ""), ("blank", "   "), ("with a control character", "ci\u{7}")] {
        rows.push(post(&format!("name {name}")).json(&json!({"name": value})).invalid("name"));
    }
    rows.push(post("name of 101 characters").json(&json!({"name": "n".repeat(101)})).invalid("name"));
    rows.push(post("name of 100 characters").json(&json!({"name": "n".repeat(100)})).status(201));
    for (name, value) in bad_scopes() {
        rows.push(post(&format!("scopes {name}")).json(&pat(json!({"scopes": value}))).invalid("scopes"));
    }
    for days in [0, -1, 366, i64::MAX, i64::MIN] {
        rows.push(
            post(&format!("expires_in_days {days}"))
                .json(&pat(json!({"expires_in_days": days})))
                .invalid("expires_in_days"),
        );
    }
    for (name, extra) in [
        ("scopes as a string", json!({"scopes": "orders:read"})),
        ("scopes of numbers", json!({"scopes": [1]})),
        ("expires_in_days as a string", json!({"expires_in_days": "30"})),
        ("expires_in_days fractional", json!({"expires_in_days": 1.5})),
        ("name null", json!({"name": null})),
    ] {
        rows.push(post(name).json(&pat(extra)).problem(400, "malformed_body"));
    }
    for (name, extra) in [
        ("64 scopes", json!({"scopes": scopes(64)})),
        ("expires_in_days 365", json!({"expires_in_days": 365})),
        ("expires_in_days 1", json!({"expires_in_days": 1})),
        ("expires_in_days null", json!({"expires_in_days": null})),
    ] {
        rows.push(post(name).json(&pat(extra)).status(201));
    }
    rows.push(
        row("POST /tokens: a PAT as bearer", Method::POST, url.clone())
            .bearer(&text(&mine["token"]))
            .json(&pat(json!({})))
            .problem(401, "token_invalid"),
    );
    rows.extend(body_rows(&post, &json!({"name": "ci"}), "name", true, 201));
    for (name, id) in [
        ("not a uuid", "not-a-uuid".to_owned()),
        ("random uuid", uuid::Uuid::new_v4().to_string()),
        ("percent-encoded junk", "%00%ff".to_owned()),
        ("another user's token", text(&theirs["id"])),
    ] {
        rows.push(
            row(format!("DELETE /tokens/{{{name}}}"), Method::DELETE, app.url(&format!("/tokens/{id}")))
                .bearer(&user.access)
                .problem(404, "not_found"),
        );
    }
    rows.push(row("GET /tokens", Method::GET, url.clone()).bearer(&user.access).status(200));
    rows.push(row("GET /tokens/limits", Method::GET, app.url("/tokens/limits")).bearer(&user.access).status(200));
    run(&app, rows).await;
    // The other user's token survived the attempt.
    expect_status(app.get_auth("/me", &text(&theirs["token"])).await, StatusCode::OK).await;
}

async fn pat_limit(backend: Backend) {
    let app = spawn_app_with(backend, &[("PAT_MAX_PER_USER", "2")]).await;
    let user = app.signup(&unique_email("limit")).await;
    let first = call(&app, Method::POST, "/tokens", &user.access, Some(json!({"name": "one"})), 201).await;
    call(&app, Method::POST, "/tokens", &user.access, Some(json!({"name": "two"})), 201).await;
    let first = app.url(&format!("/tokens/{}", text(&first["id"])));
    let post =
        |name: &str| row(name, Method::POST, app.url("/tokens")).bearer(&user.access).json(&json!({"name": "n"}));
    let limits = |name: &str| row(name, Method::GET, app.url("/tokens/limits")).bearer(&user.access);
    let rows = vec![
        post("the 3rd PAT over a limit of 2").problem(403, "forbidden"),
        limits("limits at the limit").returns(200, json!({"max": 2, "used": 2, "remaining": 0})),
        row("revoke the first", Method::DELETE, first.clone()).bearer(&user.access).status(204),
        row("revoke the first again", Method::DELETE, first).bearer(&user.access).problem(404, "not_found"),
        limits("limits after a revocation").returns(200, json!({"max": 2, "used": 1, "remaining": 1})),
        post("a PAT in the freed slot").status(201),
        post("the 3rd PAT again").problem(403, "forbidden"),
    ];
    run(&app, rows).await;
}

async fn register_client_bad_input(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signup(&unique_email("register")).await;
    let url = app.url("/client/register");
    let post =
        |name: &str| row(format!("POST /client/register: {name}"), Method::POST, url.clone()).bearer(&user.access);
    let client = |field: &str, value: Value| {
        let mut body = json!({"name": "acme"});
        body[field] = value;
        body
    };
    let mut rows = body_rows(&post, &json!({"name": "acme"}), "name", true, 201);
    for (name, value) in [("empty", json!("")), ("blank", json!("  ")), ("of 101 characters", json!("n".repeat(101)))] {
        rows.push(post(&format!("name {name}")).json(&json!({"name": value})).invalid("name"));
    }
    for cidr in ["10.0.0.0/33", "nope", "::/129", "", "10.0.0", "203.0.113.0/24/8"] {
        rows.push(
            post(&format!("ip_allowlist [{cidr:?}]"))
                .json(&client("ip_allowlist", json!([cidr])))
                .invalid("ip_allowlist"),
        );
    }
    let cidrs = |n: usize| json!((0..n).map(|i| format!("10.{}.{}.0/24", i / 256, i % 256)).collect::<Vec<_>>());
    rows.push(post("101 CIDRs").json(&client("ip_allowlist", cidrs(101))).invalid("ip_allowlist"));
    rows.push(post("100 CIDRs").json(&client("ip_allowlist", cidrs(100))).status(201));
    for origin in [
        "null",
        "https://example.com/",
        "https://example.com/path",
        "https://user@example.com",
        "ftp://example.com",
        "example.com",
        "http://*.example.com",
        "https://*.com",
        "https://example.com?x=1",
        "https://example.com:0",
        "https://*",
    ] {
        rows.push(
            post(&format!("allowed_origins [{origin:?}]"))
                .json(&client("allowed_origins", json!([origin])))
                .invalid("allowed_origins"),
        );
    }
    let origins = |n: usize| json!((0..n).map(|i| format!("https://a{i}.example.com")).collect::<Vec<_>>());
    rows.push(post("101 origins").json(&client("allowed_origins", origins(101))).invalid("allowed_origins"));
    rows.push(post("100 origins").json(&client("allowed_origins", origins(100))).status(201));
    for (name, field, value) in [
        ("ip_allowlist as a string", "ip_allowlist", json!("10.0.0.0/8")),
        ("ip_allowlist of numbers", "ip_allowlist", json!([10])),
        ("allowed_origins as a string", "allowed_origins", json!("https://example.com")),
        ("allowed_origins as an object", "allowed_origins", json!({"a": "https://example.com"})),
    ] {
        rows.push(post(name).json(&client(field, value)).problem(400, "malformed_body"));
    }
    rows.push(post("ip_allowlist null").json(&client("ip_allowlist", Value::Null)).status(201));
    rows.push(
        post("valid lists")
            .json(&json!({"name": "ok", "ip_allowlist": ["::1/128", "203.0.113.0/24"], "allowed_origins": ["https://*.example.org", "http://localhost:3000"]}))
            .status(201),
    );
    run(&app, rows).await;
}

/// Every client route on ids the caller does not own (404, nothing changes for the owner), and
/// the bodies of the caller's own client.
async fn client_routes_bad_input(backend: Backend) {
    let app = spawn_app(backend).await;
    let me = app.signup(&unique_email("me")).await;
    let victim = app.signup(&unique_email("victim")).await;
    let mine = register(&app, &me.access, json!({"name": "mine"})).await;
    let theirs = register(
        &app,
        &victim.access,
        json!({"name": "theirs", "ip_allowlist": ["127.0.0.1/32", "198.51.100.0/24"], "allowed_origins": ["https://shop.example.com"]}),
    )
    .await;
    let theirs_path = format!("/client/{}", theirs.id);
    call(
        &app,
        Method::PUT,
        &format!("{theirs_path}/rate-limit"),
        &victim.access,
        Some(json!({"requests": 50, "per": "1m"})),
        200,
    )
    .await;
    let snapshot = async || {
        let client = call(&app, Method::GET, &theirs_path, &victim.access, None, 200).await;
        (client, call(&app, Method::GET, &format!("{theirs_path}/api-keys"), &victim.access, None, 200).await)
    };
    let before = snapshot().await;
    let mut rotatable = Vec::new();
    for _ in 0..5 {
        rotatable.push(new_key(&app, &me.access, &mine.id, json!({})).await.0);
    }
    let random = uuid::Uuid::new_v4().to_string();
    let at = |name: String, method: Method, path: &str| row(name, method, app.url(path)).bearer(&me.access);

    let routes: [(Method, &str, Option<Value>); 11] = [
        (Method::GET, "/client/{c}", None),
        (Method::GET, "/client/{c}/api-keys", None),
        (Method::POST, "/client/{c}/api-keys", Some(json!({"name": "x"}))),
        (Method::POST, "/client/{c}/api-keys/{k}/rotate", Some(json!({"grace_period_seconds": 0}))),
        (Method::DELETE, "/client/{c}/api-keys/{k}", None),
        (Method::GET, "/client/{c}/ip-allowlist", None),
        (Method::PUT, "/client/{c}/ip-allowlist", Some(json!({"ip_allowlist": ["0.0.0.0/0"]}))),
        (Method::GET, "/client/{c}/origins", None),
        (Method::PUT, "/client/{c}/origins", Some(json!({"allowed_origins": ["https://evil.example.com"]}))),
        (Method::GET, "/client/{c}/rate-limit", None),
        (Method::PUT, "/client/{c}/rate-limit", Some(json!({"requests": 1, "per": "1s"}))),
    ];
    let mut ids = vec![
        ("non-UUID client id", "not-a-uuid", mine.key_id.as_str()),
        ("random client id", random.as_str(), mine.key_id.as_str()),
        ("percent-encoded junk client id", "%00%ff", mine.key_id.as_str()),
        ("another user's client", theirs.id.as_str(), theirs.key_id.as_str()),
    ];
    let key_routes = ids.len();
    ids.extend([
        ("non-UUID key id", mine.id.as_str(), "not-a-uuid"),
        ("random key id", mine.id.as_str(), random.as_str()),
        ("another client's key", mine.id.as_str(), theirs.key_id.as_str()),
    ]);
    let mut rows = Vec::new();
    for (index, (label, c, k)) in ids.iter().enumerate() {
        for (method, template, body) in &routes {
            if index >= key_routes && !template.contains("{k}") {
                continue;
            }
            let path = template.replace("{c}", c).replace("{k}", k);
            let request = at(format!("{method} {template}: {label}"), method.clone(), &path);
            let request = match body {
                Some(body) => request.json(body),
                None => request,
            };
            rows.push(request.problem(404, "not_found"));
        }
    }

    let own = |suffix: &str| format!("/client/{}{suffix}", mine.id);
    let put =
        |path: String, label: &'static str| move |name: &str| at(format!("PUT {label}: {name}"), Method::PUT, &path);
    let put_ips = put(own("/ip-allowlist"), "/client/{id}/ip-allowlist");
    let get_ips = at("GET /client/{id}/ip-allowlist".into(), Method::GET, &own("/ip-allowlist"));
    rows.extend(body_rows(
        &put_ips,
        &json!({"ip_allowlist": ["::1/128", "203.0.113.0/24"]}),
        "ip_allowlist",
        true,
        200,
    ));
    for cidr in ["10.0.0.0/33", "nope", "::/129", ""] {
        rows.push(put_ips(&format!("[{cidr:?}]")).json(&json!({"ip_allowlist": [cidr]})).invalid("ip_allowlist"));
    }
    let cidrs: Vec<String> = (0..101).map(|i| format!("10.0.{i}.0/24")).collect();
    rows.push(put_ips("101 CIDRs").json(&json!({"ip_allowlist": cidrs})).invalid("ip_allowlist"));
    rows.push(put_ips("ip_allowlist null").json(&json!({"ip_allowlist": null})).problem(400, "malformed_body"));
    rows.push(get_ips.returns(200, json!({"ip_allowlist": ["203.0.113.0/24", "::1/128"]})));

    let put_origins = put(own("/origins"), "/client/{id}/origins");
    let get_origins = at("GET /client/{id}/origins".into(), Method::GET, &own("/origins"));
    rows.extend(body_rows(
        &put_origins,
        &json!({"allowed_origins": ["https://app.example.com"]}),
        "allowed_origins",
        true,
        200,
    ));
    for origin in ["null", "https://example.com/", "https://user@example.com", "ftp://example.com", "https://*.com"] {
        rows.push(
            put_origins(&format!("[{origin:?}]"))
                .json(&json!({"allowed_origins": [origin]}))
                .invalid("allowed_origins"),
        );
    }
    let origins: Vec<String> = (0..101).map(|i| format!("https://a{i}.example.com")).collect();
    rows.push(put_origins("101 origins").json(&json!({"allowed_origins": origins})).invalid("allowed_origins"));
    rows.push(get_origins.returns(200, json!({"allowed_origins": ["https://app.example.com"]})));

    let put_limit = put(own("/rate-limit"), "/client/{id}/rate-limit");
    let get_limit = |name: &str| at(format!("GET /client/{{id}}/rate-limit: {name}"), Method::GET, &own("/rate-limit"));
    rows.extend(body_rows(&put_limit, &json!({"requests": 1000, "per": "1m"}), "per", false, 200));
    for requests in [0, 1_000_001] {
        rows.push(
            put_limit(&format!("requests {requests}"))
                .json(&json!({"requests": requests, "per": "1m"}))
                .invalid("requests"),
        );
    }
    for (name, requests) in
        [("requests -1", json!(-1)), ("requests as a string", json!("1000")), ("requests 1.5", json!(1.5))]
    {
        rows.push(put_limit(name).json(&json!({"requests": requests, "per": "1m"})).problem(400, "malformed_body"));
    }
    for per in ["1w", "0s", "2d", "", "abc", "999ms", "86401s", "-1m"] {
        rows.push(put_limit(&format!("per {per:?}")).json(&json!({"requests": 10, "per": per})).invalid("per"));
    }
    rows.extend([
        put_limit("requests without per").json(&json!({"requests": 10})).invalid("per"),
        put_limit("the largest limit")
            .json(&json!({"requests": 1_000_000, "per": "1d"}))
            .returns(200, json!({"requests": 1_000_000, "per": "1d"})),
        put_limit("per 1000ms")
            .json(&json!({"requests": 1, "per": "1000ms"}))
            .returns(200, json!({"requests": 1, "per": "1s"})),
        get_limit("the last limit set").returns(200, json!({"requests": 1, "per": "1s"})),
        put_limit("requests null clears")
            .json(&json!({"requests": null}))
            .returns(200, json!({"requests": null, "per": null})),
        get_limit("cleared").returns(200, json!({"requests": null, "per": null})),
    ]);

    let keys = own("/api-keys");
    let post_key = |name: &str| at(format!("POST /client/{{id}}/api-keys: {name}"), Method::POST, &keys);
    rows.extend(broken_bodies(&post_key, &json!({"name": "k"}), "name"));
    rows.push(post_key("non-empty body without content type").raw(None, "{}").problem(415, "unsupported_media_type"));
    for (name, value) in [("empty", json!("")), ("of 101 characters", json!("n".repeat(101)))] {
        rows.push(post_key(&format!("name {name}")).json(&json!({"name": value})).invalid("name"));
    }
    for (name, value) in bad_scopes() {
        rows.push(post_key(&format!("scopes {name}")).json(&json!({"scopes": value})).invalid("scopes"));
    }
    rows.extend([
        post_key("empty body without content type").status(201),
        post_key("empty JSON body").raw(JSON, "").status(201),
        post_key("whitespace JSON body").raw(JSON, " \n").status(201),
        post_key("{}").json(&json!({})).status(201),
        post_key("name and scopes").json(&json!({"name": "ci", "scopes": ["orders:read"]})).status(201),
        at("GET /client/{id}/api-keys".into(), Method::GET, &keys).status(200),
    ]);

    let rotate = |key: &str| own(&format!("/api-keys/{key}/rotate"));
    let rotate_first = rotate(&rotatable[0]);
    let post_rotate =
        |name: &str| at(format!("POST …/api-keys/{{key_id}}/rotate: {name}"), Method::POST, &rotate_first);
    rows.extend(broken_bodies(&post_rotate, &json!({"grace_period_seconds": 60}), "grace_period_seconds"));
    rows.push(
        post_rotate("grace_period_seconds 2592001")
            .json(&json!({"grace_period_seconds": 2_592_001}))
            .invalid("grace_period_seconds"),
    );
    for (name, grace) in [("-1", json!(-1)), ("as a string", json!("60")), ("1.5", json!(1.5))] {
        rows.push(
            post_rotate(&format!("grace_period_seconds {name}"))
                .json(&json!({"grace_period_seconds": grace}))
                .problem(400, "malformed_body"),
        );
    }
    // Successes use other keys, so a refused row that wrongly rotated cannot mask them.
    let revoke = own(&format!("/api-keys/{}", rotatable[4]));
    rows.extend([
        at("rotate with an empty body".into(), Method::POST, &rotate(&rotatable[3])).status(201),
        at("rotate with 2592000 s grace".into(), Method::POST, &rotate(&rotatable[1]))
            .json(&json!({"grace_period_seconds": 2_592_000}))
            .status(201),
        at("rotate with {}".into(), Method::POST, &rotate(&rotatable[2])).json(&json!({})).status(201),
        at("revoke a key".into(), Method::DELETE, &revoke).status(204),
        at("revoke it again".into(), Method::DELETE, &revoke).problem(404, "not_found"),
        at("rotate a revoked key".into(), Method::POST, &rotate(&rotatable[4])).problem(404, "not_found"),
    ]);
    run(&app, rows).await;

    // Nothing changed for the owner, and their key still opens SDK sessions.
    assert_eq!(snapshot().await, before, "another user's requests changed the client");
    let response = app
        .http
        .post(app.url("/sdk/session"))
        .header("x-api-key", &theirs.key)
        .json(&json!({"external_user_id": "u"}))
        .send()
        .await
        .expect("request");
    expect_status(response, StatusCode::CREATED).await;
}

async fn sdk_session_bad_input(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.signup(&unique_email("sdk")).await;
    let open = register(&app, &owner.access, json!({"name": "open"})).await;
    let (_, narrow) = new_key(&app, &owner.access, &open.id, json!({"scopes": ["orders:read"]})).await;
    let (revoked_id, revoked) = new_key(&app, &owner.access, &open.id, json!({})).await;
    call(&app, Method::DELETE, &format!("/client/{}/api-keys/{revoked_id}", open.id), &owner.access, None, 204).await;
    let (rotated_id, rotated) = new_key(&app, &owner.access, &open.id, json!({})).await;
    let rotate = format!("/client/{}/api-keys/{rotated_id}/rotate", open.id);
    call(&app, Method::POST, &rotate, &owner.access, Some(json!({"grace_period_seconds": 0})), 201).await;
    let web =
        register(&app, &owner.access, json!({"name": "web", "allowed_origins": ["https://app.example.com"]})).await;
    let fenced = register(&app, &owner.access, json!({"name": "fenced", "ip_allowlist": ["203.0.113.0/24"]})).await;
    let unknown = Credential::generate(Kind::ApiKey).expose().to_owned();
    let pat = Credential::generate(Kind::PersonalAccess).expose().to_owned();

    let url = app.url("/sdk/session");
    let body = json!({"external_user_id": "customer-42"});
    let anon = |name: &str| row(format!("POST /sdk/session: {name}"), Method::POST, url.clone());
    let with_key = |key: &str| {
        let key = key.to_owned();
        let anon = &anon;
        move |name: &str| anon(name).header("x-api-key", key.clone())
    };
    let (post, post_narrow) = (with_key(&open.key), with_key(&narrow));
    let as_user = |id: Value| json!({"external_user_id": id});
    let scoped = |scopes: Value| json!({"external_user_id": "customer-42", "scopes": scopes});
    let mut rows = vec![
        anon("no key").json(&body).problem(401, "token_missing"),
        anon("Basic credentials")
            .header("authorization", "Basic dXNlcjpwYXNz")
            .json(&body)
            .problem(401, "token_missing"),
        anon("no key, malformed body").raw(JSON, "{").problem(401, "token_missing"),
        anon("Bearer garbage").bearer("garbage").json(&body).problem(401, "key_invalid"),
        anon("Bearer well-formed unknown pck_").bearer(&unknown).json(&body).problem(401, "key_invalid"),
        anon("valid key as Bearer").bearer(&open.key).json(&body).status(201),
    ];
    // An empty credential is a missing one (SPEC §6), as at the gateway.
    rows.push(with_key("")("X-API-Key empty").json(&body).problem(401, "token_missing"));
    for (name, key) in [
        ("garbage", "garbage".to_owned()),
        ("pck_ with a bad checksum", bad_checksum(&open.key)),
        ("pck_ truncated", open.key[..20].to_owned()),
        ("well-formed unknown pck_", unknown.clone()),
        ("a pcp_ token", pat),
        ("a user access token", owner.access.clone()),
    ] {
        rows.push(with_key(&key)(&format!("X-API-Key {name}")).json(&body).problem(401, "key_invalid"));
    }
    rows.extend([
        with_key(&revoked)("revoked key").json(&body).problem(401, "key_revoked"),
        with_key(&rotated)("rotated key past its 0 s grace").json(&body).problem(401, "key_revoked"),
        post("external_user_id empty").json(&as_user(json!(""))).invalid("external_user_id"),
        post("external_user_id blank").json(&as_user(json!(" \t "))).invalid("external_user_id"),
        post("external_user_id of 257 characters").json(&as_user(json!("u".repeat(257)))).invalid("external_user_id"),
        post("external_user_id with NUL").json(&as_user(json!("a\u{0}b"))).invalid("external_user_id"),
        post("external_user_id null").json(&as_user(Value::Null)).problem(400, "malformed_body"),
        post("external_user_id of 256 characters").json(&as_user(json!("u".repeat(256)))).status(201),
    ]);
    for scopes in [json!(["orders:write"]), json!(["*"]), json!(["orders:*"]), json!(["orders:read", "users:read"])] {
        rows.push(
            post_narrow(&format!("key [orders:read], scopes {scopes}"))
                .json(&scoped(scopes))
                .problem(403, "insufficient_scope"),
        );
    }
    rows.extend([
        post_narrow("key [orders:read], malformed scopes").json(&scoped(json!(["orders"]))).invalid("scopes"),
        post_narrow("key [orders:read], scopes [orders:read]").json(&scoped(json!(["orders:read"]))).status(201),
        post_narrow("key [orders:read], default scopes").json(&body).status(201),
        post("scopes as a string").json(&scoped(json!("orders:read"))).problem(400, "malformed_body"),
    ]);
    for (name, value) in bad_scopes() {
        rows.push(post(&format!("scopes {name}")).json(&scoped(value)).invalid("scopes"));
    }
    for origin in ["null", "https://app.example.com"] {
        rows.push(
            post(&format!("Origin {origin} on a client without origins"))
                .header("origin", origin)
                .json(&body)
                .problem(403, "origin_not_allowed"),
        );
    }
    let post_web = with_key(&web.key);
    for origin in [
        "https://evil.example.com",
        "https://app.example.com.evil.com",
        "http://app.example.com",
        "null",
        "https://app.example.com:8443",
    ] {
        rows.push(
            post_web(&format!("Origin {origin} not listed"))
                .header("origin", origin)
                .json(&body)
                .problem(403, "origin_not_allowed"),
        );
    }
    let post_fenced = with_key(&fenced.key);
    rows.extend([
        post_web("listed Origin").header("origin", "https://app.example.com").json(&body).status(201),
        post_web("no Origin").json(&body).status(201),
        post_fenced("IP outside the allowlist").json(&body).problem(403, "ip_not_allowed"),
        post_fenced("spoofed X-Forwarded-For from an untrusted peer")
            .header("x-forwarded-for", "203.0.113.5")
            .json(&body)
            .problem(403, "ip_not_allowed"),
    ]);
    rows.extend(body_rows(&post, &body, "external_user_id", true, 201));
    run(&app, rows).await;

    let response = app.http.post(&url).header("x-api-key", &open.key).json(&body).send().await.expect("request");
    let tokens = expect_status(response, StatusCode::CREATED).await;
    assert_eq!(tokens["token_type"], json!("Bearer"), "{tokens}");
    assert_eq!(text(&tokens["access_token"]).split('.').count(), 3, "{tokens}");
    assert!(text(&tokens["refresh_token"]).starts_with("pcr_"), "{tokens}");
    assert!(tokens["expires_in"].as_u64().is_some_and(|s| s > 0), "{tokens}");
}

async fn admin_routes_bad_input(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin_email = unique_email("admin");
    let admin = app.signup(&admin_email).await;
    let member = app.signup(&unique_email("member")).await;
    let target = app.signup(&unique_email("target")).await;
    let promoted = app.service.set_role_as_operator(&admin_email, Role::Admin).await;
    assert_eq!(promoted.expect("promote").role, Role::Admin);
    let random = uuid::Uuid::new_v4().to_string();
    let user_path = |id: &str, action: &str| app.url(&format!("/admin/users/{id}/{action}"));
    let as_ = |who: &Tokens, name: &str, method: Method, url: String| {
        row(format!("{method} {name}"), method, url).bearer(&who.access)
    };
    let role = |value: Value| json!({"role": value});
    let mut rows = Vec::new();
    for (label, who) in [("member", Some(&member)), ("no credential", None)] {
        let (status, code) = if who.is_some() { (403, "forbidden") } else { (401, "token_missing") };
        let at = |name: &str, method: Method, url: String| {
            let request = row(format!("{method} {name}: {label}"), method, url);
            match who {
                Some(w) => request.bearer(&w.access),
                None => request,
            }
        };
        rows.extend([
            at("/admin/users", Method::GET, app.url("/admin/users")).problem(status, code),
            at("/admin/users/{target}/disable", Method::POST, user_path(&target.user_id, "disable"))
                .problem(status, code),
            at("/admin/users/{target}/enable", Method::POST, user_path(&target.user_id, "enable"))
                .problem(status, code),
            at("/admin/users/{self}/role admin", Method::PUT, user_path(&member.user_id, "role"))
                .json(&role(json!("admin")))
                .problem(status, code),
            at("/admin/users/{target}/role admin", Method::PUT, user_path(&target.user_id, "role"))
                .json(&role(json!("admin")))
                .problem(status, code),
        ]);
    }
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=", "limit"),
        ("cursor=xyz", "cursor"),
        ("cursor=", "cursor"),
        ("cursor=12.not-a-uuid", "cursor"),
        ("cursor=abc.00000000-0000-0000-0000-000000000000", "cursor"),
    ] {
        rows.push(
            as_(&admin, &format!("/admin/users?{query}"), Method::GET, app.url(&format!("/admin/users?{query}")))
                .invalid(field),
        );
    }
    for query in ["limit=100", "limit=1", "", "cursor=0.00000000-0000-0000-0000-000000000000"] {
        rows.push(
            as_(&admin, &format!("/admin/users?{query}"), Method::GET, app.url(&format!("/admin/users?{query}")))
                .status(200),
        );
    }
    for (label, id) in [("non-UUID", "not-a-uuid"), ("unknown", random.as_str()), ("percent-encoded junk", "%00%ff")] {
        for action in ["disable", "enable"] {
            rows.push(
                as_(&admin, &format!("/admin/users/{{{label}}}/{action}"), Method::POST, user_path(id, action))
                    .problem(404, "not_found"),
            );
        }
        rows.push(
            as_(&admin, &format!("/admin/users/{{{label}}}/role"), Method::PUT, user_path(id, "role"))
                .json(&role(json!("member")))
                .problem(404, "not_found"),
        );
    }
    let put_role = |name: &str| {
        as_(&admin, &format!("/admin/users/{{target}}/role: {name}"), Method::PUT, user_path(&target.user_id, "role"))
    };
    for value in ["owner", "", "ADMIN", " admin"] {
        rows.push(put_role(&format!("role {value:?}")).json(&role(json!(value))).invalid("role"));
    }
    rows.push(put_role("role null").json(&role(Value::Null)).problem(400, "malformed_body"));
    rows.extend(body_rows(&put_role, &role(json!("member")), "role", true, 200));
    rows.extend([
        as_(&admin, "/admin/users/{self}/disable", Method::POST, user_path(&admin.user_id, "disable")).invalid("id"),
        as_(&admin, "/admin/users/{target}/disable", Method::POST, user_path(&target.user_id, "disable")).status(204),
        as_(&admin, "/admin/users/{target}/enable", Method::POST, user_path(&target.user_id, "enable")).status(204),
    ]);
    run(&app, rows).await;
    // The member's self-promotion did not take, and the admin is still enabled.
    let me = expect_status(app.get_auth("/me", &member.access).await, StatusCode::OK).await;
    assert_eq!(me["role"], json!("member"));
    expect_status(app.get_auth("/admin/users", &admin.access).await, StatusCode::OK).await;
}

/// Every route of this module refuses a missing or unusable credential (these routes take user
/// access tokens only), and answers an unsupported method with 405.
async fn credential_routes_refuse_bad_credentials(backend: Backend) {
    // Hundreds of bad credentials from one address: AUTH_FAILURE_LIMIT would (rightly) turn
    // them into 429s; this table is about each route's own answer.
    let app = spawn_app_with(backend, &[("AUTH_FAILURE_LIMIT", "100000/minute")]).await;
    let user = app.signup(&unique_email("guard")).await;
    let client = register(&app, &user.access, json!({"name": "guarded"})).await;
    let pat = call(&app, Method::POST, "/tokens", &user.access, Some(json!({"name": "p"})), 201).await;
    let response = app
        .http
        .post(app.url("/sdk/session"))
        .header("x-api-key", &client.key)
        .json(&json!({"external_user_id": "u"}))
        .send()
        .await
        .expect("request");
    let sdk = text(&expect_status(response, StatusCode::CREATED).await["access_token"]);
    let (c, k, p, u) = (client.id.as_str(), client.key_id.as_str(), text(&pat["id"]), user.user_id.as_str());
    let routes = [
        (Method::POST, "/tokens".to_owned()),
        (Method::GET, "/tokens".to_owned()),
        (Method::DELETE, format!("/tokens/{p}")),
        (Method::GET, "/tokens/limits".to_owned()),
        (Method::POST, "/client/register".to_owned()),
        (Method::GET, "/clients".to_owned()),
        (Method::GET, format!("/client/{c}")),
        (Method::GET, format!("/client/{c}/api-keys")),
        (Method::POST, format!("/client/{c}/api-keys")),
        (Method::POST, format!("/client/{c}/api-keys/{k}/rotate")),
        (Method::DELETE, format!("/client/{c}/api-keys/{k}")),
        (Method::GET, format!("/client/{c}/ip-allowlist")),
        (Method::PUT, format!("/client/{c}/ip-allowlist")),
        (Method::GET, format!("/client/{c}/origins")),
        (Method::PUT, format!("/client/{c}/origins")),
        (Method::GET, format!("/client/{c}/rate-limit")),
        (Method::PUT, format!("/client/{c}/rate-limit")),
        (Method::GET, "/admin/users".to_owned()),
        (Method::POST, format!("/admin/users/{u}/disable")),
        (Method::POST, format!("/admin/users/{u}/enable")),
        (Method::PUT, format!("/admin/users/{u}/role")),
    ];
    let credentials = [
        ("garbage bearer", "garbage".to_owned()),
        ("refresh token as bearer", user.refresh.clone()),
        ("PAT as bearer", text(&pat["token"])),
        ("SDK token as bearer", sdk),
        ("API key as bearer", client.key.clone()),
    ];
    let mut rows = Vec::new();
    for (method, path) in &routes {
        let at = |name: &str| row(format!("{method} {path}: {name}"), method.clone(), app.url(path));
        rows.push(at("no credential").problem(401, "token_missing"));
        rows.push(at("Basic credentials").header("authorization", "Basic dXNlcjpwYXNz").problem(401, "token_missing"));
        for (name, token) in &credentials {
            rows.push(at(name).bearer(token).problem(401, "token_invalid"));
        }
    }
    for (method, path) in [
        (Method::PUT, "/tokens".to_owned()),
        (Method::GET, format!("/tokens/{p}")),
        (Method::POST, "/tokens/limits".to_owned()),
        (Method::GET, "/sdk/session".to_owned()),
        (Method::DELETE, format!("/client/{c}")),
        (Method::POST, format!("/client/{c}/ip-allowlist")),
        (Method::PATCH, format!("/client/{c}/rate-limit")),
        (Method::GET, format!("/client/{c}/api-keys/{k}/rotate")),
        (Method::PUT, format!("/client/{c}/api-keys/{k}")),
        (Method::POST, "/admin/users".to_owned()),
        (Method::GET, format!("/admin/users/{u}/disable")),
        (Method::GET, format!("/admin/users/{u}/role")),
    ] {
        rows.push(
            row(format!("{method} {path}"), method, app.url(&path))
                .bearer(&user.access)
                .problem(405, "method_not_allowed"),
        );
    }
    run(&app, rows).await;
    // The refused DELETEs revoked nothing.
    let listed = call(&app, Method::GET, "/tokens", &user.access, None, 200).await;
    assert_eq!(listed["tokens"].as_array().map(Vec::len), Some(1), "{listed}");
    let keys = call(&app, Method::GET, &format!("/client/{c}/api-keys"), &user.access, None, 200).await;
    assert_eq!(keys["api_keys"][0]["status"], json!("active"), "{keys}");
}

crate::on_both_backends!(
    pat_routes_bad_input,
    pat_limit,
    register_client_bad_input,
    client_routes_bad_input,
    sdk_session_bad_input,
    admin_routes_bad_input,
    credential_routes_refuse_bad_credentials,
);
