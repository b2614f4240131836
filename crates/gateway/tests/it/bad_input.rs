//! Hostile and malformed input at the gateway: every row gets the exact status and problem
//! `code`, never a 500, and nothing reaches the upstream that should not.

use reqwest::{Method, StatusCode};
use serde_json::json;
use testkit::{Backend, expect_problem, unique_email};

use crate::harness::{spawn_auth, spawn_gateway, spawn_upstream, standard_routes};

struct Row {
    name: &'static str,
    method: Method,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    status: u16,
    code: &'static str,
}

fn row(name: &'static str, method: Method, path: &'static str, status: u16, code: &'static str) -> Row {
    Row { name, method, path, headers: Vec::new(), body: None, status, code }
}

impl Row {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }
}

async fn hostile_input_gets_the_right_problem(backend: Backend) {
    let auth = spawn_auth(backend).await;
    let upstream = spawn_upstream().await;
    let gw = spawn_gateway(&auth, &standard_routes(&upstream.url()), &[]).await;
    let user = auth.signup(&unique_email("gw-bad")).await;
    let client = auth.register_client(&user, json!({"name": "Shop"})).await;
    let bearer = format!("Bearer {}", user.access);
    let json_type = ("content-type", "application/json".to_owned());
    let key = ("x-api-key", client.key.clone());
    let session = "/v1/sdk/session";
    let rows = vec![
        row("sdk session without a key", Method::POST, session, 401, "token_missing").body("{}"),
        row("sdk session with a made-up key", Method::POST, session, 401, "key_invalid")
            .header("x-api-key", "pck_notarealkey")
            .header(json_type.0, json_type.1.clone())
            .body(r#"{"external_user_id":"u1"}"#),
        row("sdk session as text", Method::POST, session, 415, "unsupported_media_type")
            .header(key.0, key.1.clone())
            .header("content-type", "text/plain")
            .body("external_user_id=u1"),
        row("sdk session with broken JSON", Method::POST, session, 400, "malformed_body")
            .header(key.0, key.1.clone())
            .header(json_type.0, json_type.1.clone())
            .body("{\"external_user_id\":"),
        row("sdk session with non-UTF-8", Method::POST, session, 400, "malformed_body")
            .header(key.0, key.1.clone())
            .header(json_type.0, json_type.1.clone())
            .body(b"{\"external_user_id\":\"u1\",\"x\":\"\xff\"}".to_vec()),
        row("sdk session without external_user_id", Method::POST, session, 400, "malformed_body")
            .header(key.0, key.1.clone())
            .header(json_type.0, json_type.1.clone())
            .body("{}"),
        row("sdk session with an empty external_user_id", Method::POST, session, 422, "validation_failed")
            .header(key.0, key.1.clone())
            .header(json_type.0, json_type.1.clone())
            .body(r#"{"external_user_id":""}"#),
        row("sdk session over 1 MiB", Method::POST, session, 413, "body_too_large")
            .header(key.0, key.1.clone())
            .header(json_type.0, json_type.1.clone())
            .body(vec![b' '; (1 << 20) + 1]),
        row("route body over its max_body", Method::POST, "/v1/user/upload/file", 413, "body_too_large")
            .header("authorization", bearer.clone())
            .body(vec![b'x'; 2048]),
        row("Authorization with another scheme", Method::GET, "/v1/user/profile", 401, "token_missing")
            .header("authorization", "Basic dXNlcjpwYXNz"),
        row("a token of 64 KiB", Method::GET, "/v1/user/profile", 401, "token_invalid")
            .header("authorization", format!("Bearer {}", "a".repeat(64 * 1024))),
        row("an empty API key", Method::GET, "/v1/partner/x", 401, "token_missing").header("x-api-key", ""),
        row("an empty Bearer token", Method::GET, "/v1/user/profile", 401, "token_missing")
            .header("authorization", "Bearer "),
        row("two Authorization lines", Method::GET, "/v1/user/profile", 401, "token_invalid")
            .header("authorization", bearer.clone())
            .header("authorization", "Bearer another"),
        row("a Bearer and a different X-API-Key", Method::GET, "/v1/partner/x", 401, "token_invalid")
            .header("authorization", bearer.clone())
            .header("x-api-key", key.1.clone()),
        row("Basic next to an API key", Method::GET, "/v1/partner/x", 401, "token_invalid")
            .header("authorization", "Basic dXNlcjpwYXNz")
            .header("x-api-key", key.1.clone()),
        row("a refresh token as a Bearer", Method::GET, "/v1/user/profile", 401, "token_invalid")
            .header("authorization", format!("Bearer {}", user.refresh)),
        row("an encoded slash", Method::GET, "/v1/user/orders%2F..%2Fadmin", 400, "malformed_path"),
        row("a double slash", Method::GET, "/v1//user/orders", 400, "malformed_path"),
        row("a ;parameter", Method::GET, "/v1/user/orders;jsessionid=1/7", 400, "malformed_path"),
        row("an encoded ;", Method::GET, "/v1/user/orders%3Bx/7", 400, "malformed_path"),
        row("an encoded dot", Method::GET, "/v1/user/orders%2E/7", 400, "malformed_path"),
        row("a double encoding", Method::GET, "/v1/user/orders%252F", 400, "malformed_path"),
        row("an encoded control character", Method::GET, "/v1/user/orders%0A", 400, "malformed_path"),
        row("a malformed percent", Method::GET, "/v1/user/orders%zz", 400, "malformed_path"),
        row("a stricter route in upper case", Method::GET, "/v1/user/ORDERS/7", 400, "malformed_path"),
        row("a built-in route in upper case", Method::GET, "/v1/AUTH/login", 400, "malformed_path"),
        row("DELETE on the SDK session route", Method::DELETE, session, 405, "method_not_allowed"),
        row("GET on the ticket route", Method::GET, "/v1/socket/ticket", 405, "method_not_allowed")
            .header("authorization", bearer.clone()),
        row("an unknown prefix", Method::GET, "/v2/anything", 404, "not_found"),
        row("the internal API, encoded", Method::POST, "/v1/auth/%49NTERNAL/validate", 404, "not_found"),
        row("a webhook source that does not exist", Method::POST, "/v1/webhooks/nobody", 404, "not_found").body("{}"),
    ];
    let http = reqwest::Client::new();
    let seen_before = upstream.seen.lock().unwrap().len();
    for r in rows {
        let mut request = http.request(r.method.clone(), gw.at(r.path));
        for (name, value) in &r.headers {
            request = request.header(*name, value);
        }
        if let Some(body) = r.body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{}: {e}", r.name));
        assert_ne!(response.status(), StatusCode::INTERNAL_SERVER_ERROR, "{}", r.name);
        let got = response.status().as_u16();
        assert_eq!(got, r.status, "{}", r.name);
        expect_problem(response, r.status, r.code).await;
    }
    assert_eq!(upstream.seen.lock().unwrap().len(), seen_before, "a refused request reached the upstream");
}

testkit::on_both_backends!(hostile_input_gets_the_right_problem);
