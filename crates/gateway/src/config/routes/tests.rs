//! Tests of the routes file: the SPEC's example, one refusing case per rule with the line it
//! must name, and longest-prefix matching.

use std::net::IpAddr;

use http::HeaderName;
use secrecy::ExposeSecret;

use super::*;

/// The example of SPEC §6, verbatim.
const SPEC_EXAMPLE: &str = r#"
[[routes]]
prefix = "/v1/user/orders"          # public path prefix; the longest match wins; kept when forwarding
upstream = "http://127.0.0.1:9001"  # where matching requests go
auth = ["user", "pat"]              # accepted kinds: user, pat, sdk, api_key, none
scopes = ["orders:read"]            # all required (optional)
roles = ["admin"]                   # any one required (optional)
rate_limit = "100/minute"           # per tenant, or per IP when unauthenticated (optional)
timeout = "5s"                      # per attempt
retries = 2                         # idempotent methods only
max_body = "1MiB"

[webhooks.meta]                     # POST /v1/webhooks/meta
profile = "meta"                    # meta | standard | generic
secrets = ["…"]                     # several while rotating
verify_token = "…"                  # meta GET handshake
upstream = "http://127.0.0.1:9002/hooks/meta"
"#;

fn parse(text: &str) -> RoutesFile {
    RoutesFile::parse(text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"))
}

#[test]
fn spec_example_parses() {
    let file = parse(SPEC_EXAMPLE);
    assert_eq!(file.routes.len(), 1);
    let route = file.routes.get("/v1/user/orders").unwrap();
    assert_eq!(route.upstream.to_string(), "http://127.0.0.1:9001");
    assert_eq!(route.auth, RouteAuth::Required([CredentialKind::User, CredentialKind::Pat].into_iter().collect()));
    assert_eq!(route.scopes, [Scope::parse("orders:read").unwrap()]);
    assert_eq!(route.roles, [Role::Admin]);
    assert_eq!(route.rate_limit, Some(RateLimit { requests: 100, per: Duration::from_secs(60) }));
    assert_eq!(route.timeout, Duration::from_secs(5));
    assert_eq!(route.retries, 2);
    assert_eq!(route.max_body, 1 << 20);
    assert_eq!(route.line, 2);

    let meta = &file.webhooks["meta"];
    assert_eq!(meta.source, "meta");
    assert_eq!(meta.line, 13);
    assert!(matches!(&meta.profile, WebhookProfile::Meta { verify_token } if verify_token.expose_secret() == "…"));
    assert_eq!(meta.secrets.len(), 1);
    assert_eq!(meta.upstream.as_ref().unwrap().base_path(), "/hooks/meta");
    assert_eq!(meta.tolerance, webhook::DEFAULT_TOLERANCE);
    assert!(meta.ip_allowed("203.0.113.9".parse().unwrap()));
}

#[test]
fn full_file_with_every_option_parses() {
    let file = parse(
        r#"
[[routes]]
prefix = "/v1/user/orders"
upstream = "http://orders:9001/api/"
auth = ["user", "pat"]
scopes = ["orders:read", "orders:read", "billing:*"]
roles = ["member", "admin"]
rate_limit = "10/s"
timeout = "250ms"
retries = 5
max_body = "512 KiB"

[[routes]]
prefix = "/v1/user"
upstream = "http://users:9000"

[[routes]]
prefix = "/v1/sdk/items"
upstream = "https://items.internal"
rate_limit = "1000/day"

[[routes]]
prefix = "/v1/partners/catalog"
upstream = "http://catalog:9003"
auth = ["api_key", "sdk"]
scopes = ["catalog:read"]

[[routes]]
prefix = "/v1/public/status"
upstream = "http://status:9004"
auth = ["none"]
rate_limit = "60/minute"

[webhooks.stripe-like]
profile = "standard"
secrets = ["whsec_old", "whsec_new"]
upstream = "http://billing:9005/hooks"
tolerance = "10m"

[webhooks.github]
profile = "generic"
secrets = ["s3cret"]
header = "X-Hub-Signature-256"
prefix = "sha256="
encoding = "hex"
timestamp_header = "X-Timestamp"
tolerance = "5m"
allowed_ips = ["192.30.252.0/22", "2606:50c0::/32", "203.0.113.7"]
upstream = "http://ci:9006/hooks/github"

[webhooks.meta]
profile = "meta"
secrets = ["app-secret"]
verify_token = "handshake-token"
upstream = "http://social:9007"
"#,
    );
    let orders = file.routes.get("/v1/user/orders").unwrap();
    assert_eq!(orders.scopes.len(), 2, "repeats are dropped");
    assert_eq!(orders.roles, [Role::Member, Role::Admin]);
    assert_eq!(orders.timeout, Duration::from_millis(250));
    assert_eq!(orders.max_body, 512 * 1024);
    assert_eq!(orders.upstream.join("/v1/user/orders/7"), "http://orders:9001/api/v1/user/orders/7");

    // Defaults: the group's kinds, no limit, 30 s, no retries, 1 MiB.
    let users = file.routes.get("/v1/user").unwrap();
    assert_eq!(users.auth, RouteAuth::Required([CredentialKind::User, CredentialKind::Pat].into_iter().collect()));
    assert_eq!(users.rate_limit, None);
    assert_eq!(users.timeout, DEFAULT_TIMEOUT);
    assert_eq!(users.retries, DEFAULT_RETRIES);
    assert_eq!(users.max_body, DEFAULT_MAX_BODY);
    assert_eq!(
        file.routes.get("/v1/sdk/items").unwrap().auth,
        RouteAuth::Required([CredentialKind::Sdk].into_iter().collect())
    );
    assert!(file.routes.get("/v1/public/status").unwrap().auth.is_public());
    let partners = file.routes.get("/v1/partners/catalog").unwrap().auth;
    assert!(partners.accepts(CredentialKind::ApiKey) && partners.accepts(CredentialKind::Sdk));
    assert!(!partners.accepts(CredentialKind::User));

    assert_eq!(file.webhooks.len(), 3);
    let standard = &file.webhooks["stripe-like"];
    assert!(matches!(standard.profile, WebhookProfile::Standard));
    assert_eq!(standard.secrets.len(), 2);
    assert_eq!(standard.tolerance, Duration::from_secs(600));

    let github = &file.webhooks["github"];
    let WebhookProfile::Generic(generic) = &github.profile else { panic!("not generic") };
    assert_eq!(generic.header.as_str(), "x-hub-signature-256");
    assert_eq!(generic.prefix, "sha256=");
    assert_eq!(generic.encoding, SignatureEncoding::Hex);
    assert_eq!(generic.timestamp_header.as_ref().map(HeaderName::as_str), Some("x-timestamp"));
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert!(github.ip_allowed(ip("192.30.253.1")));
    assert!(github.ip_allowed(ip("::ffff:203.0.113.7")));
    assert!(github.ip_allowed(ip("2606:50c0::1")));
    assert!(!github.ip_allowed(ip("203.0.113.8")));
}

#[test]
fn an_empty_file_has_no_routes() {
    let file = parse("# nothing configured yet\n");
    assert!(file.routes.is_empty() && file.webhooks.is_empty());
    assert!(file.routes.match_route("/v1/user/orders").is_none());
}

/// A file whose first route (lines 1–4) is valid, followed by a blank line and a second
/// `[[routes]]` header on line 6, so the second route's first field is on line 7.
fn second_route(fields: &str) -> String {
    format!(
        "[[routes]]\nprefix = \"/v1/user/ok\"\nupstream = \"http://127.0.0.1:9001\"\nauth = [\"user\"]\n\n[[routes]]\n{fields}\n"
    )
}

const UP: &str = "upstream = \"http://127.0.0.1:9001\"";

#[track_caller]
fn refused(text: &str, line: usize, field: &str, message: &str) {
    let err = match RoutesFile::parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    };
    let shown = err.to_string();
    assert_eq!(err.line, Some(line), "{shown}\n---\n{text}");
    assert!(shown.contains(&format!("line {line},")), "{shown}");
    assert!(shown.contains(field), "field `{field}` missing from: {shown}");
    assert!(shown.contains(message), "`{message}` missing from: {shown}");
}

#[test]
fn prefix_rules_name_the_line() {
    for (prefix, message) in [
        ("/v2/orders", "must start with /v1/"),
        ("/user/orders", "must start with /v1/"),
        ("v1/user/orders", "must start with /v1/"),
        ("/v1", "beneath /v1/"),
        ("/v1/", "beneath /v1/"),
        ("/v1/user/../auth", "`..`"),
        ("/v1/user/orders/..", "`..`"),
        ("/v1/user/orders?x=1", "query"),
        ("/v1/user/orders#top", "query"),
        ("/v1/user/*", "must not end with `*`"),
        ("/v1/user/orders*", "must not end with `*`"),
        ("/v1/user/or*ders", "`*`"),
        ("/v1/user/orders/", "must not end with `/`"),
        ("/v1/user//orders", "empty segment"),
        ("/v1/user/./orders", "`.` segments"),
        ("/v1/user/%2e%2e", "`%`"),
        ("/v1/user/or ders", "` `"),
        (" /v1/user/orders", "must start with /v1/"),
    ] {
        refused(&second_route(&format!("prefix = \"{prefix}\"\n{UP}")), 7, "routes[1].prefix", message);
    }
}

#[test]
fn built_in_prefixes_are_refused() {
    for prefix in [
        "/v1/auth",
        "/v1/auth/login",
        "/v1/auth/internal/validate",
        "/v1/client",
        "/v1/client/abc/keys",
        "/v1/clients",
        "/v1/sdk/session",
        "/v1/sdk/session/extra",
        "/v1/socket",
        "/v1/socket/ticket",
        "/v1/webhooks",
        "/v1/webhooks/meta",
    ] {
        refused(&second_route(&format!("prefix = \"{prefix}\"\n{UP}")), 7, "routes[1].prefix", "built-in route");
    }
    for prefix in ["/health", "/ready", "/metrics"] {
        refused(&second_route(&format!("prefix = \"{prefix}\"\n{UP}")), 7, "routes[1].prefix", "/v1/");
    }
    // Neighbours of built-ins on a segment boundary, and the two configurable groups, are fine.
    for (prefix, auth) in [
        ("/v1/authors", "api_key"),
        ("/v1/clientele", "api_key"),
        ("/v1/sdk/sessions", "sdk"),
        ("/v1/sdk/items", "sdk"),
        ("/v1/sdk", "sdk"),
        ("/v1/user", "user"),
    ] {
        parse(&format!("[[routes]]\nprefix = \"{prefix}\"\n{UP}\nauth = [\"{auth}\"]\n"));
    }
}

#[test]
fn auth_rules_name_the_line() {
    let prefix = "prefix = \"/v1/user/orders\"";
    refused(
        &second_route(&format!("{prefix}\n{UP}\nauth = [\"none\"]")),
        9,
        "routes[1].auth",
        "refused under /v1/user",
    );
    refused(
        &second_route(&format!("prefix = \"/v1/sdk/items\"\n{UP}\nauth = [\"none\"]")),
        9,
        "routes[1].auth",
        "refused under /v1/sdk",
    );
    refused(
        &second_route(&format!("prefix = \"/v1/public\"\n{UP}\nauth = [\"none\", \"user\"]")),
        9,
        "routes[1].auth",
        "cannot be combined",
    );
    refused(&second_route(&format!("{prefix}\n{UP}\nauth = []")), 9, "routes[1].auth", "at least one");
    refused(&second_route(&format!("{prefix}\n{UP}\nauth = [\"user\", \"jwt\"]")), 9, "routes[1].auth", "`jwt`");
    refused(&second_route(&format!("{prefix}\n{UP}\nauth = [\"service\"]")), 9, "routes[1].auth", "`service`");
    refused(
        &second_route(&format!("{prefix}\n{UP}\nauth = [\"user\", \"api_key\"]")),
        9,
        "routes[1].auth",
        "accept only user, pat, not api_key",
    );
    refused(
        &second_route(&format!("prefix = \"/v1/sdk/items\"\n{UP}\nauth = [\"pat\"]")),
        9,
        "routes[1].auth",
        "accept only sdk, not pat",
    );
    // Outside the two groups there is no default: the header line is named.
    refused(&second_route(&format!("prefix = \"/v1/partners\"\n{UP}")), 6, "routes[1].auth", "is required outside");
    refused(
        &second_route(&format!("prefix = \"/v1/public\"\n{UP}\nauth = [\"none\"]\nscopes = [\"a:b\"]")),
        10,
        "routes[1].scopes",
        "public route",
    );
    refused(
        &second_route(&format!("prefix = \"/v1/public\"\n{UP}\nauth = [\"none\"]\nroles = [\"admin\"]")),
        10,
        "routes[1].roles",
        "public route",
    );
}

#[test]
fn duplicate_prefixes_name_both_lines() {
    refused(
        &second_route(&format!("prefix = \"/v1/user/ok\"\n{UP}")),
        7,
        "routes[1].prefix",
        "already routed on line 1",
    );
}

#[test]
fn upstream_rules_name_the_line() {
    for (upstream, message) in [
        ("ftp://files", "http or https"),
        ("127.0.0.1:9001", "not"),
        ("/local", "not absolute"),
        ("http://user:pw@orders:9001", "user name or password"),
        ("http://orders:9001/?x=1", "query"),
        ("", "must not be empty"),
    ] {
        refused(
            &second_route(&format!("prefix = \"/v1/user/orders\"\nupstream = \"{upstream}\"")),
            8,
            "routes[1].upstream",
            message,
        );
    }
}

#[test]
fn value_rules_name_the_line() {
    let head = format!("prefix = \"/v1/user/orders\"\n{UP}");
    for (field_line, field, message) in [
        ("scopes = [\"orders:read\", \"Orders:Write\"]", "routes[1].scopes[1]", "not a scope"),
        ("scopes = [\"orders\"]", "routes[1].scopes[0]", "not a scope"),
        ("roles = [\"owner\"]", "routes[1].roles[0]", "not a role"),
        ("retries = 6", "routes[1].retries", "at most 5"),
        ("timeout = \"0ms\"", "routes[1].timeout", "between 1ms and 5m"),
        ("timeout = \"6m\"", "routes[1].timeout", "between 1ms and 5m"),
        ("timeout = \"5\"", "routes[1].timeout", "no unit"),
        ("max_body = \"2GiB\"", "routes[1].max_body", "at most 1GiB"),
        ("max_body = \"1TB\"", "routes[1].max_body", "unknown unit"),
        ("max_body = \"1mb\"", "routes[1].max_body", "unknown unit"),
        ("rate_limit = \"100/week\"", "routes[1].rate_limit", "not a rate limit"),
        ("rate_limit = \"0/minute\"", "routes[1].rate_limit", "no request"),
        // Shape errors come from the TOML reader, which is told the key by the line.
        ("retries = -1", "retries", "expected u32"),
        ("retries = \"2\"", "retries", "invalid type"),
        ("scopes = \"orders:read\"", "scopes", "invalid type"),
        ("max_body = 1048576", "max_body", "invalid type"),
        ("prefx = \"/v1/user/x\"", "prefx", "unknown field `prefx`"),
        ("rate-limit = \"1/s\"", "rate-limit", "unknown field `rate-limit`"),
    ] {
        refused(&second_route(&format!("{head}\n{field_line}")), 9, field, message);
    }
}

#[test]
fn missing_and_unknown_keys_are_caught() {
    refused(&second_route(UP), 6, "[[routes]]", "missing field `prefix`");
    refused(&second_route("prefix = \"/v1/user/x\""), 6, "[[routes]]", "missing field `upstream`");
    refused("# top\nroute = []\n", 2, "route", "unknown field `route`");
    refused("\n\n[[route]]\nprefix = \"/v1/user/x\"\n", 3, "[[route]]", "unknown field `route`");
}

#[test]
fn syntax_errors_name_the_line() {
    refused(&second_route("prefix = \"/v1/user/x\n"), 7, "prefix", "");
    refused(&second_route(&format!("prefix = \"/v1/user/x\"\n{UP}\nretries = ")), 9, "retries", "");
    refused("[[routes]]\nprefix = \"/v1/user/a\"\nprefix = \"/v1/user/b\"\n", 3, "prefix", "duplicate key");
    let err = RoutesFile::parse("[[routes]\n").unwrap_err();
    assert_eq!(err.line, Some(1));
}

/// A file with a valid route on lines 1–3 and the webhook table header on line 5.
fn webhook(fields: &str) -> String {
    format!("[[routes]]\nprefix = \"/v1/user/ok\"\n{UP}\n\n[webhooks.src]\n{fields}\n")
}

const HOOK_UP: &str = "upstream = \"http://127.0.0.1:9002\"";

#[test]
fn webhook_rules_name_the_line() {
    for (fields, line, field, message) in [
        (format!("profile = \"standard\"\nsecrets = []\n{HOOK_UP}"), 7, "webhooks.src.secrets", "at least one"),
        (
            format!("profile = \"standard\"\nsecrets = [\"ok\", \"\"]\n{HOOK_UP}"),
            7,
            "webhooks.src.secrets[1]",
            "must not be empty",
        ),
        (format!("profile = \"meta\"\nsecrets = [\"s\"]\n{HOOK_UP}"), 5, "webhooks.src.verify_token", "GET"),
        (
            format!("profile = \"meta\"\nsecrets = [\"s\"]\nverify_token = \" \"\n{HOOK_UP}"),
            8,
            "webhooks.src.verify_token",
            "must not be empty",
        ),
        (
            format!("profile = \"standard\"\nsecrets = [\"s\"]\nverify_token = \"t\"\n{HOOK_UP}"),
            8,
            "webhooks.src.verify_token",
            "standard profile",
        ),
        (format!("profile = \"github\"\nsecrets = [\"s\"]\n{HOOK_UP}"), 6, "webhooks.src.profile", "not a profile"),
        (format!("profile = \"generic\"\nsecrets = [\"s\"]\n{HOOK_UP}"), 5, "webhooks.src.header", "generic profile"),
        (
            format!("profile = \"generic\"\nsecrets = [\"s\"]\nheader = \"bad header\"\n{HOOK_UP}"),
            8,
            "webhooks.src.header",
            "not a header name",
        ),
        (
            format!("profile = \"generic\"\nsecrets = [\"s\"]\nheader = \"X-Sig\"\nencoding = \"base32\"\n{HOOK_UP}"),
            9,
            "webhooks.src.encoding",
            "hex or base64",
        ),
        (
            format!("profile = \"meta\"\nsecrets = [\"s\"]\nverify_token = \"t\"\nheader = \"X-Sig\"\n{HOOK_UP}"),
            9,
            "webhooks.src.header",
            "meta profile",
        ),
        (
            format!("profile = \"standard\"\nsecrets = [\"s\"]\nprefix = \"sha256=\"\n{HOOK_UP}"),
            8,
            "webhooks.src.prefix",
            "standard profile",
        ),
        (
            format!("profile = \"standard\"\nsecrets = [\"s\"]\ntolerance = \"0s\"\n{HOOK_UP}"),
            8,
            "webhooks.src.tolerance",
            "between 1s and 24h",
        ),
        (
            format!("profile = \"standard\"\nsecrets = [\"s\"]\nallowed_ips = []\n{HOOK_UP}"),
            8,
            "webhooks.src.allowed_ips",
            "empty list",
        ),
        (
            format!("profile = \"standard\"\nsecrets = [\"s\"]\nallowed_ips = [\"10.0.0.0/8\", \"nope\"]\n{HOOK_UP}"),
            8,
            "webhooks.src.allowed_ips[1]",
            "not an IP address or CIDR",
        ),
        (
            "profile = \"standard\"\nsecrets = [\"s\"]\nupstream = \"http://u:p@hooks\"".to_owned(),
            8,
            "webhooks.src.upstream",
            "user name or password",
        ),
        (format!("profile = \"standard\"\nsecrets = [\"s\"]\n{HOOK_UP}\nsecret = \"x\""), 9, "secret", "unknown field"),
        (format!("profile = \"standard\"\n{HOOK_UP}"), 5, "[webhooks.src]", "missing field `secrets`"),
    ] {
        refused(&webhook(&fields), line, field, message);
    }
}

#[test]
fn webhook_source_names_are_url_segments() {
    let body = format!("profile = \"standard\"\nsecrets = [\"s\"]\n{HOOK_UP}");
    refused(&format!("\n[webhooks.Meta]\n{body}\n"), 2, "webhooks.Meta", "source name");
    refused(&format!("\n\n[webhooks.\"a/b\"]\n{body}\n"), 3, "webhooks.a/b", "source name");
    refused(&format!("[webhooks.a]\n{body}\n\n[webhooks.a]\n{body}\n"), 6, "[webhooks.a]", "duplicate key");
}

#[test]
fn secrets_never_appear_in_errors() {
    let err = RoutesFile::parse(&webhook(&format!("profile = \"standard\"\nsecrets = \"hunter2-secret\"\n{HOOK_UP}")))
        .unwrap_err();
    assert_eq!(err.line, Some(7));
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let err = RoutesFile::parse(&webhook(&format!(
        "profile = \"meta\"\nsecrets = [\n  \"hunter2=secret\",\n  3,\n]\nverify_token = \"t\"\n{HOOK_UP}"
    )))
    .unwrap_err();
    assert_eq!(err.line, Some(9));
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let parsed =
        parse(&webhook(&format!("profile = \"meta\"\nsecrets = [\"hunter2\"]\nverify_token = \"t\"\n{HOOK_UP}")));
    assert!(!format!("{parsed:?}").contains("hunter2"));
}

#[test]
fn errors_carry_the_file_when_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, second_route(&format!("prefix = \"/v1/auth/x\"\n{UP}"))).unwrap();
    let shown = RoutesFile::load(&path).unwrap_err().to_string();
    assert!(shown.starts_with(&format!("{}: line 7, column 10: routes[1].prefix: ", path.display())), "{shown}");
    let missing = RoutesFile::load(&dir.path().join("absent.toml")).unwrap_err();
    assert!(missing.line.is_none() && missing.to_string().contains("cannot be read"), "{missing}");
}

#[test]
fn columns_count_characters() {
    // `é` is two bytes but one column.
    let err = RoutesFile::parse("# é\nroutes = [{ upstream = \"http://x/é\", prefix = \"/v2\" }]\n").unwrap_err();
    assert_eq!((err.line, err.column), (Some(2), Some(47)), "{err}");
}

#[test]
fn serde_messages_lose_their_string_values() {
    assert_eq!(
        redact_strings(r#"invalid type: string "a\"b", expected a sequence"#),
        "invalid type: a string, expected a sequence"
    );
    assert_eq!(redact_strings(r#"string "x" and string "y"#), "a string and a string");
    assert_eq!(
        redact_strings("invalid type: integer `3`, expected a string"),
        "invalid type: integer `3`, expected a string"
    );
}

#[test]
fn the_operator_page_example_parses() {
    let page = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/gateway.md"));
    let (_, after) = page.split_once("```toml\n").unwrap();
    let (example, _) = after.split_once("\n```").unwrap();
    let file = parse(example);
    assert_eq!(file.routes.len(), 4);
    assert_eq!(file.webhooks.len(), 4);
    assert_eq!(file.webhooks["genesys"].profile.name(), "token");
    assert_eq!(file.routes.match_route("/v1/user/ordersX").map(|r| r.prefix.as_str()), Some("/v1/user"));
}

#[test]
fn webhook_schemas_are_compiled_at_start_up() {
    use crate::webhooks::schema::OnSchemaFailure;
    let hook = |fields: &str| {
        parse(&webhook(&format!("profile = \"standard\"\nsecrets = [\"s\"]\n{HOOK_UP}\n{fields}"))).webhooks["src"]
            .clone()
    };
    assert!(hook("").schema.is_none());
    let builtin = hook("schema = \"builtin:whatsapp\"").schema.unwrap();
    assert_eq!((builtin.origin.as_str(), builtin.on_failure), ("builtin:whatsapp", OnSchemaFailure::Reject));
    let dead = hook("schema = \"builtin:whatsapp\"\non_schema_failure = \"dead_letter\"").schema.unwrap();
    assert_eq!(dead.on_failure, OnSchemaFailure::DeadLetter);
    assert_eq!(
        hook("schema = \"builtin:whatsapp\"\non_schema_failure = \"reject\"").schema.unwrap().on_failure,
        OnSchemaFailure::Reject
    );
    // A relative path is read from the working directory (the crate's, under cargo test), as
    // `ca_file` is.
    assert_eq!(hook("schema = \"schemas/whatsapp.json\"").schema.unwrap().origin, "schemas/whatsapp.json");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("local.json");
    std::fs::write(&file, r##"{"$defs": {"n": {"type": "integer"}}, "properties": {"n": {"$ref": "#/$defs/n"}}}"##)
        .unwrap();
    assert!(hook(&format!("schema = \"{}\"", file.display())).schema.is_some());
}

#[test]
fn unusable_webhook_schemas_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let not_json = write("not-json.json", "{\"type\": ");
    let invalid = write("invalid.json", r#"{"type": "no-such-type"}"#);
    let remote = write("remote.json", r#"{"properties": {"a": {"$ref": "https://example.com/a.json"}}}"#);
    let relative = write("relative.json", r#"{"$ref": "other.json"}"#);
    let draft7 = write("draft7.json", r#"{"$schema": "http://json-schema.org/draft-07/schema#"}"#);
    let missing = dir.path().join("absent.json").display().to_string();
    let head = format!("profile = \"standard\"\nsecrets = [\"s\"]\n{HOOK_UP}\n");
    for (fields, line, field, message) in [
        (format!("schema = \"{missing}\""), 9, "webhooks.src.schema", "cannot be read"),
        (format!("schema = \"{not_json}\""), 9, "webhooks.src.schema", "is not JSON"),
        (format!("schema = \"{invalid}\""), 9, "webhooks.src.schema", "not a valid JSON Schema 2020-12"),
        (format!("schema = \"{remote}\""), 9, "webhooks.src.schema", "only local references"),
        (format!("schema = \"{relative}\""), 9, "webhooks.src.schema", "only local references"),
        (format!("schema = \"{draft7}\""), 9, "webhooks.src.schema", "only JSON Schema 2020-12"),
        ("schema = \"builtin:slack\"".to_owned(), 9, "webhooks.src.schema", "not a built-in schema"),
        ("schema = \" \"".to_owned(), 9, "webhooks.src.schema", "must name"),
        ("on_schema_failure = \"dead_letter\"".to_owned(), 9, "webhooks.src.on_schema_failure", "only with a `schema`"),
        (
            "schema = \"builtin:whatsapp\"\non_schema_failure = \"drop\"".to_owned(),
            10,
            "webhooks.src.on_schema_failure",
            "not reject or dead_letter",
        ),
    ] {
        refused(&webhook(&format!("{head}{fields}")), line, field, message);
    }
}
