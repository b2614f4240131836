//! Unit tests of signature verification: for each profile a valid delivery, a wrong secret, a
//! rotated second secret, missing and malformed headers, stale and future timestamps and a
//! tampered body; `whsec_` decoding against the Standard Webhooks test vector.

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

use super::verify::{Verified, Verifier, decode_secret, matches_any, secret_eq};
use crate::{
    config::routes::{RoutesFile, Webhook, WebhookProfile},
    error::GatewayError,
};

const NOW: i64 = 1_700_000_000;
const BODY: &[u8] = br#"{"type":"invoice.paid","amount":4200}"#;

fn hook(toml: &str) -> Webhook {
    RoutesFile::parse(toml).unwrap().webhooks.into_values().next().unwrap()
}

fn verifier(toml: &str) -> Verifier {
    Verifier::new(&hook(toml)).unwrap()
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }
    map
}

fn assert_refused(result: Result<Verified, GatewayError>, why: &str) {
    match result {
        Err(GatewayError::SignatureInvalid(_)) => {}
        other => panic!("{why}: expected signature_invalid, got {other:?}"),
    }
}

// ---- Standard Webhooks ----

const KEY_1: &[u8] = b"standard-key-number-one-32bytes!";
const KEY_2: &[u8] = b"standard-key-number-two-32bytes!";

fn standard_toml() -> String {
    format!(
        r#"
[webhooks.billing]
profile = "standard"
secrets = ["whsec_{}", "whsec_{}"]
upstream = "http://127.0.0.1:9/hooks"
tolerance = "5m"
"#,
        B64.encode(KEY_1),
        B64.encode(KEY_2)
    )
}

fn standard_signature(key: &[u8], id: &str, ts: i64, body: &[u8]) -> String {
    let ts = ts.to_string();
    format!("v1,{}", B64.encode(mac(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body])))
}

fn standard_headers(id: &str, ts: i64, signature: &str) -> HeaderMap {
    headers(&[("webhook-id", id), ("webhook-timestamp", &ts.to_string()), ("webhook-signature", signature)])
}

#[test]
fn standard_accepts_a_valid_delivery_and_keys_replays_by_event_id() {
    let v = verifier(&standard_toml());
    let sig = standard_signature(KEY_1, "msg_1", NOW, BODY);
    let verified = v.verify(&standard_headers("msg_1", NOW, &sig), BODY, NOW).unwrap();
    assert_eq!(verified.event_id.as_deref(), Some("msg_1"));
    assert_eq!(verified.replay_key, "id:msg_1");
    assert!(verified.forward_headers.iter().any(|(n, v)| n == "webhook-signature" && v == &sig));
}

#[test]
fn standard_refuses_a_wrong_secret() {
    let v = verifier(&standard_toml());
    let sig = standard_signature(b"some-other-key", "msg_1", NOW, BODY);
    assert_refused(v.verify(&standard_headers("msg_1", NOW, &sig), BODY, NOW), "wrong secret");
}

#[test]
fn standard_accepts_the_rotated_second_secret_and_one_of_several_signatures() {
    let v = verifier(&standard_toml());
    let sig = standard_signature(KEY_2, "msg_2", NOW, BODY);
    v.verify(&standard_headers("msg_2", NOW, &sig), BODY, NOW).unwrap();

    // The sender rotating its own secret sends both; an unknown version is skipped.
    let stale = standard_signature(b"retired", "msg_2", NOW, BODY);
    let several = format!("v1a,c2lnbmF0dXJl {stale} {sig}");
    v.verify(&standard_headers("msg_2", NOW, &several), BODY, NOW).unwrap();
}

#[test]
fn standard_refuses_missing_headers() {
    let v = verifier(&standard_toml());
    let sig = standard_signature(KEY_1, "msg_1", NOW, BODY);
    let ts = NOW.to_string();
    let full = [("webhook-id", "msg_1"), ("webhook-timestamp", ts.as_str()), ("webhook-signature", sig.as_str())];
    for skip in 0..full.len() {
        let partial: Vec<_> = full.iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, p)| *p).collect();
        assert_refused(v.verify(&headers(&partial), BODY, NOW), full[skip].0);
    }
    // Two of a header is ambiguous, not a choice for the gateway to make.
    let mut doubled = standard_headers("msg_1", NOW, &sig);
    doubled.append("webhook-id", HeaderValue::from_static("msg_other"));
    assert_refused(v.verify(&doubled, BODY, NOW), "duplicated webhook-id");
}

#[test]
fn standard_refuses_malformed_headers() {
    let v = verifier(&standard_toml());
    let good = standard_signature(KEY_1, "msg_1", NOW, BODY);
    for bad in ["", "v1", "v1,", "v1,not base64!", "v2,AAAA", "sha256=abcd", "v1a,AAAA"] {
        assert_refused(v.verify(&standard_headers("msg_1", NOW, bad), BODY, NOW), bad);
    }
    for bad_ts in ["", "soon", "1.5e9", "-", "99999999999999999999999"] {
        let map = headers(&[("webhook-id", "msg_1"), ("webhook-timestamp", bad_ts), ("webhook-signature", &good)]);
        assert_refused(v.verify(&map, BODY, NOW), bad_ts);
    }
    let long_id = "x".repeat(300);
    let sig = standard_signature(KEY_1, &long_id, NOW, BODY);
    assert_refused(v.verify(&standard_headers(&long_id, NOW, &sig), BODY, NOW), "overlong id");
}

#[test]
fn standard_refuses_stale_and_future_timestamps_beyond_the_tolerance() {
    let v = verifier(&standard_toml());
    for (ts, ok) in [(NOW - 300, true), (NOW + 300, true), (NOW - 301, false), (NOW + 301, false), (0, false)] {
        let sig = standard_signature(KEY_1, "msg_t", ts, BODY);
        let result = v.verify(&standard_headers("msg_t", ts, &sig), BODY, NOW);
        if ok {
            result.unwrap();
        } else {
            assert_refused(result, &format!("timestamp {ts}"));
        }
    }
}

#[test]
fn standard_refuses_a_tampered_body_id_or_timestamp() {
    let v = verifier(&standard_toml());
    let sig = standard_signature(KEY_1, "msg_1", NOW, BODY);
    assert_refused(
        v.verify(&standard_headers("msg_1", NOW, &sig), br#"{"type":"invoice.paid","amount":1}"#, NOW),
        "body",
    );
    assert_refused(v.verify(&standard_headers("msg_2", NOW, &sig), BODY, NOW), "id");
    assert_refused(v.verify(&standard_headers("msg_1", NOW - 1, &sig), BODY, NOW), "timestamp");
}

/// The test vector of the Standard Webhooks reference libraries: it passes only if the
/// `whsec_` secret is base64-decoded into the HMAC key.
#[test]
fn whsec_secret_is_base64_decoded_as_in_the_reference_vector() {
    let toml = r#"
[webhooks.svix]
profile = "standard"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
upstream = "http://127.0.0.1:9"
tolerance = "5m"
"#;
    let v = verifier(toml);
    let map = headers(&[
        ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
    ]);
    v.verify(&map, br#"{"test": 2432232314}"#, 1_614_265_330).unwrap();

    assert_eq!(decode_secret(&WebhookProfile::Standard, "whsec_AAEC").unwrap(), [0, 1, 2]);
    // Padding is optional, as senders differ.
    assert_eq!(decode_secret(&WebhookProfile::Standard, "whsec_AAE=").unwrap(), [0, 1]);
    assert_eq!(decode_secret(&WebhookProfile::Standard, "whsec_AAE").unwrap(), [0, 1]);
    // Without the prefix the secret is its own bytes.
    assert_eq!(decode_secret(&WebhookProfile::Standard, "plain").unwrap(), b"plain");
    // Other profiles never decode.
    let meta = hook(&meta_toml()).profile;
    assert_eq!(decode_secret(&meta, "whsec_AAEC").unwrap(), b"whsec_AAEC");

    let broken = toml.replace("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not*base64");
    let err = Verifier::new(&hook(&broken)).err().unwrap();
    assert!(err.contains("webhooks.svix.secrets[0]"), "{err}");
    assert!(Verifier::new(&hook(&toml.replace("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_"))).is_err());
}

// ---- Meta ----

fn meta_toml() -> String {
    r#"
[webhooks.meta]
profile = "meta"
secrets = ["app-secret-one", "app-secret-two"]
verify_token = "let-me-in"
upstream = "http://127.0.0.1:9/hooks/meta"
"#
    .to_owned()
}

fn meta_headers(value: &str) -> HeaderMap {
    headers(&[("x-hub-signature-256", value)])
}

#[test]
fn meta_accepts_valid_and_rotated_signatures_keyed_by_the_tag() {
    let v = verifier(&meta_toml());
    let sig = hex::encode(mac(b"app-secret-one", &[BODY]));
    let first = v.verify(&meta_headers(&format!("sha256={sig}")), BODY, NOW).unwrap();
    assert_eq!(first.event_id, None);
    assert_eq!(first.replay_key, format!("sig:{sig}"));
    // Upper-case hex is the same signature, so the same replay key.
    let upper = v.verify(&meta_headers(&format!("sha256={}", sig.to_uppercase())), BODY, NOW).unwrap();
    assert_eq!(upper.replay_key, first.replay_key);

    let rotated = hex::encode(mac(b"app-secret-two", &[BODY]));
    v.verify(&meta_headers(&format!("sha256={rotated}")), BODY, NOW).unwrap();
}

#[test]
fn meta_refuses_wrong_missing_malformed_and_tampered() {
    let v = verifier(&meta_toml());
    let wrong = hex::encode(mac(b"someone-else", &[BODY]));
    assert_refused(v.verify(&meta_headers(&format!("sha256={wrong}")), BODY, NOW), "wrong secret");
    assert_refused(v.verify(&HeaderMap::new(), BODY, NOW), "missing");
    let good = hex::encode(mac(b"app-secret-one", &[BODY]));
    for bad in
        [good.clone(), format!("sha1={good}"), "sha256=zz".to_owned(), "sha256=".to_owned(), "sha256=abc".to_owned()]
    {
        assert_refused(v.verify(&meta_headers(&bad), BODY, NOW), &bad);
    }
    // A truncated tag must not match a prefix of the real one.
    assert_refused(v.verify(&meta_headers(&format!("sha256={}", &good[..32])), BODY, NOW), "truncated");
    assert_refused(v.verify(&meta_headers(&format!("sha256={good}")), b"{}", NOW), "tampered body");
    // Meta carries no timestamp: any clock is fine.
    v.verify(&meta_headers(&format!("sha256={good}")), BODY, 0).unwrap();
}

#[test]
fn meta_handshake_token_is_checked() {
    let v = verifier(&meta_toml());
    assert!(v.is_meta());
    assert!(v.handshake_token_matches("let-me-in"));
    assert!(!v.handshake_token_matches("let-me-i"));
    assert!(!v.handshake_token_matches(""));
    assert!(!verifier(&standard_toml()).handshake_token_matches("let-me-in"));
}

// ---- generic ----

fn generic_toml(encoding: &str, timestamp: bool) -> String {
    let ts = if timestamp { "timestamp_header = \"x-signature-timestamp\"\n" } else { "" };
    format!(
        r#"
[webhooks.acme]
profile = "generic"
secrets = ["acme-one", "acme-two"]
header = "x-acme-signature"
prefix = "hmac-sha256="
encoding = "{encoding}"
{ts}upstream = "http://127.0.0.1:9"
tolerance = "1m"
"#
    )
}

#[test]
fn generic_hex_and_base64_accept_valid_and_rotated_signatures() {
    let hex_v = verifier(&generic_toml("hex", false));
    let b64_v = verifier(&generic_toml("base64", false));
    for key in [b"acme-one".as_slice(), b"acme-two"] {
        let tag = mac(key, &[BODY]);
        let verified = hex_v
            .verify(&headers(&[("x-acme-signature", &format!("hmac-sha256={}", hex::encode(&tag)))]), BODY, NOW)
            .unwrap();
        assert_eq!(verified.replay_key, format!("sig:{}", hex::encode(&tag)));
        b64_v
            .verify(&headers(&[("x-acme-signature", &format!("hmac-sha256={}", B64.encode(&tag)))]), BODY, NOW)
            .unwrap();
    }
    // Each encoding is read only as configured.
    let tag = mac(b"acme-one", &[BODY]);
    assert_refused(
        hex_v.verify(&headers(&[("x-acme-signature", &format!("hmac-sha256={}", B64.encode(&tag)))]), BODY, NOW),
        "base64 to a hex source",
    );
    assert_refused(
        b64_v.verify(&headers(&[("x-acme-signature", &format!("hmac-sha256={}", hex::encode(&tag)))]), BODY, NOW),
        "hex to a base64 source",
    );
}

#[test]
fn generic_refuses_wrong_missing_malformed_and_tampered() {
    let v = verifier(&generic_toml("hex", false));
    let good = format!("hmac-sha256={}", hex::encode(mac(b"acme-one", &[BODY])));
    let wrong = format!("hmac-sha256={}", hex::encode(mac(b"acme-three", &[BODY])));
    assert_refused(v.verify(&headers(&[("x-acme-signature", &wrong)]), BODY, NOW), "wrong secret");
    assert_refused(v.verify(&HeaderMap::new(), BODY, NOW), "missing");
    assert_refused(v.verify(&headers(&[("x-other", &good)]), BODY, NOW), "other header");
    for bad in [&good["hmac-sha256=".len()..], "hmac-sha256=xyz", "hmac-sha256="] {
        assert_refused(v.verify(&headers(&[("x-acme-signature", bad)]), BODY, NOW), bad);
    }
    assert_refused(v.verify(&headers(&[("x-acme-signature", &good)]), b"tampered", NOW), "tampered");
}

#[test]
fn generic_timestamp_header_is_required_and_within_tolerance() {
    let v = verifier(&generic_toml("base64", true));
    let sig = format!("hmac-sha256={}", B64.encode(mac(b"acme-one", &[BODY])));
    let at = |ts: &str| headers(&[("x-acme-signature", &sig), ("x-signature-timestamp", ts)]);
    let verified = v.verify(&at(&NOW.to_string()), BODY, NOW).unwrap();
    assert!(verified.forward_headers.iter().any(|(n, _)| n == "x-signature-timestamp"));
    v.verify(&at(&(NOW - 60).to_string()), BODY, NOW).unwrap();
    assert_refused(v.verify(&at(&(NOW - 61).to_string()), BODY, NOW), "stale");
    assert_refused(v.verify(&at(&(NOW + 61).to_string()), BODY, NOW), "future");
    assert_refused(v.verify(&at("yesterday"), BODY, NOW), "malformed");
    assert_refused(v.verify(&headers(&[("x-acme-signature", &sig)]), BODY, NOW), "missing timestamp");
}

// ---- constant-time comparison ----

#[test]
fn comparisons_check_every_byte_and_every_candidate() {
    let a = [7u8; 32];
    let mut b = a;
    b[31] ^= 1;
    let c = [9u8; 32];
    assert_eq!(matches_any(&[a, c], &a), Some(0));
    assert_eq!(matches_any(&[b, c], &c), Some(1));
    assert_eq!(matches_any(&[b, c], &a), None, "a last-byte difference is a mismatch");
    assert_eq!(matches_any(&[a], &a[..31]), None, "a prefix is a mismatch");
    assert_eq!(matches_any(&[], &a), None);
    assert!(secret_eq(b"token", b"token"));
    assert!(!secret_eq(b"token", b"tokem"));
    assert!(!secret_eq(b"token", b"token-longer"));
    assert!(!secret_eq(b"", b"x"));
}

// ---- token ----

fn token_toml(id: &str) -> String {
    format!(
        r#"
[webhooks.genesys]
profile = "token"
secrets = ["token-number-one", "token-two"]
header = "x-genesys-token"
{id}
upstream = "http://127.0.0.1:9"
"#
    )
}

fn assert_bad_request(result: Result<Verified, GatewayError>, why: &str) {
    match result {
        Err(GatewayError::BadRequest(_)) => {}
        other => panic!("{why}: expected malformed_body, got {other:?}"),
    }
}

#[test]
fn token_accepts_either_secret_and_keys_replays_by_body_hash() {
    let v = verifier(&token_toml(""));
    let first = v.verify(&headers(&[("x-genesys-token", "token-number-one")]), BODY, NOW).unwrap();
    assert_eq!(first.event_id, None);
    assert!(first.replay_key.starts_with("body:"), "{}", first.replay_key);
    assert!(first.forward_headers.is_empty(), "the token is never forwarded");
    // The rotated second secret, of another length, passes; the same body is the same key.
    let second = v.verify(&headers(&[("x-genesys-token", "token-two")]), BODY, NOW).unwrap();
    assert_eq!(second.replay_key, first.replay_key);
    let other = v.verify(&headers(&[("x-genesys-token", "token-two")]), b"{}", NOW).unwrap();
    assert_ne!(other.replay_key, first.replay_key);
    // No timestamp: any clock is fine.
    v.verify(&headers(&[("x-genesys-token", "token-two")]), BODY, 0).unwrap();
}

#[test]
fn token_refuses_wrong_missing_and_repeated() {
    let v = verifier(&token_toml(""));
    for wrong in ["token-number-on", "token-number-onex", "TOKEN-TWO", "", "whsec_token-two"] {
        assert_refused(v.verify(&headers(&[("x-genesys-token", wrong)]), BODY, NOW), wrong);
    }
    assert_refused(v.verify(&HeaderMap::new(), BODY, NOW), "missing");
    assert_refused(v.verify(&headers(&[("x-other", "token-two")]), BODY, NOW), "other header");
    assert_refused(
        v.verify(&headers(&[("x-genesys-token", "token-two"), ("x-genesys-token", "token-two")]), BODY, NOW),
        "repeated",
    );
    let latin1 = {
        let mut map = HeaderMap::new();
        map.insert("x-genesys-token", HeaderValue::from_bytes(b"token-tw\xf6").unwrap());
        map
    };
    assert_refused(v.verify(&latin1, BODY, NOW), "not text");
}

#[test]
fn token_replay_key_comes_from_the_id_header_or_pointer() {
    let v = verifier(&token_toml("id_header = \"x-event-id\""));
    let ok = |id: &str| headers(&[("x-genesys-token", "token-two"), ("x-event-id", id)]);
    let verified = v.verify(&ok("ev-7"), BODY, NOW).unwrap();
    assert_eq!(verified.event_id.as_deref(), Some("ev-7"));
    assert_eq!(verified.replay_key, "id:ev-7");
    assert_eq!(v.verify(&ok("ev-7"), b"{}", NOW).unwrap().replay_key, "id:ev-7", "the id, not the body");
    assert_bad_request(v.verify(&headers(&[("x-genesys-token", "token-two")]), BODY, NOW), "missing id");
    assert_bad_request(v.verify(&ok(&"x".repeat(300)), BODY, NOW), "overlong id");
    // Refused for the token before the id is looked at.
    assert_refused(v.verify(&headers(&[("x-event-id", "ev-7")]), BODY, NOW), "no token");

    let v = verifier(&token_toml("id_pointer = \"/meta/eventId\""));
    let token = headers(&[("x-genesys-token", "token-number-one")]);
    let verified = v.verify(&token, br#"{"meta":{"eventId":"a1b2"},"x":1}"#, NOW).unwrap();
    assert_eq!(verified.replay_key, "id:a1b2");
    assert_eq!(verified.event_id.as_deref(), Some("a1b2"));
    assert_eq!(v.verify(&token, br#"{"meta":{"eventId":42}}"#, NOW).unwrap().replay_key, "id:42");
    for body in
        [&b"not json"[..], br#"{"meta":{}}"#, br#"{"meta":{"eventId":null}}"#, br#"{"meta":{"eventId":""}}"#, b"[]"]
    {
        assert_bad_request(v.verify(&token, body, NOW), &String::from_utf8_lossy(body));
    }
}

#[test]
fn token_config_errors_name_the_field() {
    let err = |toml: &str| RoutesFile::parse(toml).err().unwrap();
    let base = token_toml("");
    for (toml, field) in [
        (base.replace("header = \"x-genesys-token\"\n", ""), "webhooks.genesys.header"),
        (base.replace("secrets = [\"token-number-one\", \"token-two\"]", "secrets = []"), "webhooks.genesys.secrets"),
        (base.replace("\"token-two\"", "\" \""), "webhooks.genesys.secrets[1]"),
        (base.replace("x-genesys-token", "bad header"), "webhooks.genesys.header"),
        (token_toml("id_header = \"x-id\"\nid_pointer = \"/id\""), "webhooks.genesys.id_pointer"),
        (token_toml("id_pointer = \"eventId\""), "webhooks.genesys.id_pointer"),
        (token_toml("id_header = \"a b\""), "webhooks.genesys.id_header"),
        (token_toml("encoding = \"hex\""), "webhooks.genesys.encoding"),
        (token_toml("verify_token = \"t\""), "webhooks.genesys.verify_token"),
        (meta_toml().replace("upstream", "id_header = \"x-id\"\nupstream"), "webhooks.meta.id_header"),
        (standard_toml().replace("upstream", "id_pointer = \"/id\"\nupstream"), "webhooks.billing.id_pointer"),
    ] {
        let e = err(&toml);
        assert_eq!(e.field.as_deref(), Some(field), "{e}");
    }
    let e = err(&base.replace("header = \"x-genesys-token\"\n", ""));
    assert!(e.message.contains("token profile"), "{e}");
}
