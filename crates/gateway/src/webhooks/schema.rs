//! Webhook payload schemas (SPEC §6, `schema` and `on_schema_failure` per source): a JSON
//! Schema 2020-12 file, or one shipped in the binary (`builtin:whatsapp`), read and compiled
//! once at start-up with local `$ref`s only, and the check an accepted payload goes through
//! before it is stored. What becomes of a payload that fails is the source's
//! [`OnSchemaFailure`]: refused with 422, or stored and sent straight to the dead letters.

use std::{fmt, path::Path, sync::Arc};

use serde_json::Value;

use crate::error::{FieldError, GatewayError};

/// How `schema` names a schema shipped inside the binary.
pub const BUILTIN_PREFIX: &str = "builtin:";
/// The schemas shipped inside the binary, by the name after [`BUILTIN_PREFIX`].
const BUILTINS: &[(&str, &str)] = &[("whatsapp", include_str!("../../schemas/whatsapp.json"))];
/// The one `$schema` a schema may name (with or without its empty fragment); none means it.
const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";
/// Failures listed in a refusal; a payload wrong everywhere is not echoed back whole.
pub const MAX_LISTED: usize = 20;

/// `on_schema_failure`: what becomes of a payload that fails its source's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnSchemaFailure {
    /// Refused with 422 `validation_failed`, nothing stored, no replay mark left.
    #[default]
    Reject,
    /// Stored (202) and moved by the dispatcher straight to the dead letters, undelivered.
    DeadLetter,
}

impl OnSchemaFailure {
    /// The configuration's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "reject" => Some(Self::Reject),
            "dead_letter" => Some(Self::DeadLetter),
            _ => None,
        }
    }
}

/// One place a payload fails its schema: the failing instance path as an RFC 6901 JSON
/// pointer (`""` is the whole payload) and what is wrong there, without the payload's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() { "(the payload)" } else { self.path.as_str() };
        write!(f, "{path}: {}", self.message)
    }
}

/// Why a payload fails: the first [`MAX_LISTED`] violations, and how many there are in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub violations: Vec<Violation>,
    pub total: usize,
}

impl Failure {
    /// What the dead letters record as the reason: `schema: <first violation>`.
    pub fn reason(&self) -> String {
        let first = self.violations.first().map(ToString::to_string).unwrap_or_default();
        match self.total.saturating_sub(1) {
            0 => format!("schema: {first}"),
            more => format!("schema: {first} (and {more} more)"),
        }
    }

    /// The refusal answered to the sender: 422 `validation_failed`, each listed violation an
    /// `errors` entry whose `field` is its instance path.
    pub fn into_error(self) -> GatewayError {
        let listed = self.violations.len();
        let detail = if self.total > listed {
            format!(
                "the payload does not match the source's schema: {} failures, the first {listed} listed",
                self.total
            )
        } else {
            "the payload does not match the source's schema".to_owned()
        };
        let errors = self.violations.into_iter().map(|v| FieldError { field: v.path, message: v.message }).collect();
        GatewayError::Invalid { detail, errors }
    }
}

/// A source's `schema`, compiled once at start-up, with its `on_schema_failure`.
#[derive(Clone)]
pub struct PayloadSchema {
    /// As configured: the file's path, or `builtin:<name>`.
    pub origin: String,
    pub on_failure: OnSchemaFailure,
    validator: Arc<jsonschema::Validator>,
}

impl fmt::Debug for PayloadSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PayloadSchema").field("origin", &self.origin).field("on_failure", &self.on_failure).finish()
    }
}

impl PayloadSchema {
    /// Reads (a relative path from the working directory, as `ca_file` is), parses and compiles
    /// `origin`. Refused: a file that cannot be read, text that is not JSON, a `$schema` other
    /// than 2020-12, a `$ref` that leaves the file, a schema that does not compile.
    pub fn load(origin: &str, on_failure: OnSchemaFailure) -> Result<Self, String> {
        let text = match origin.strip_prefix(BUILTIN_PREFIX) {
            Some(name) => match BUILTINS.iter().find(|(builtin, _)| *builtin == name) {
                Some((_, text)) => (*text).to_owned(),
                None => {
                    let known: Vec<String> = BUILTINS.iter().map(|(n, _)| format!("{BUILTIN_PREFIX}{n}")).collect();
                    return Err(format!("`{origin}` is not a built-in schema (known: {})", known.join(", ")));
                }
            },
            None => {
                std::fs::read_to_string(Path::new(origin)).map_err(|e| format!("`{origin}` cannot be read: {e}"))?
            }
        };
        let schema: Value = serde_json::from_str(&text).map_err(|e| format!("`{origin}` is not JSON: {e}"))?;
        Self::compile(origin, &schema, on_failure)
    }

    fn compile(origin: &str, schema: &Value, on_failure: OnSchemaFailure) -> Result<Self, String> {
        if let Some(draft) = schema.get("$schema") {
            let draft = draft.as_str().unwrap_or_default();
            if draft.trim_end_matches('#') != DRAFT_2020_12 {
                return Err(format!(
                    "`{origin}` names `$schema` {draft:?}; only JSON Schema 2020-12 ({DRAFT_2020_12})"
                ));
            }
        }
        if let Some((at, reference)) = remote_ref(schema, &mut String::new()) {
            return Err(format!(
                "`{origin}` refers outside itself (`{reference}` at `{at}`): only local references, starting with `#`"
            ));
        }
        // Offline as well: a reference that slipped past the walk above is refused, never
        // fetched.
        let validator = jsonschema::draft202012::options()
            .offline()
            .build(schema)
            .map_err(|e| format!("`{origin}` is not a valid JSON Schema 2020-12: {e}"))?;
        Ok(Self { origin: origin.to_owned(), on_failure, validator: Arc::new(validator) })
    }

    /// Checks a payload: `Err` with the failing places when it does not match, or when the
    /// body is not JSON at all (a failure of the whole payload).
    pub fn check(&self, payload: Result<&Value, &serde_json::Error>) -> Result<(), Failure> {
        let payload = match payload {
            Ok(payload) => payload,
            Err(e) => {
                let violation = Violation { path: String::new(), message: format!("the body is not JSON: {e}") };
                return Err(Failure { violations: vec![violation], total: 1 });
            }
        };
        // The common case, without building any error.
        if self.validator.is_valid(payload) {
            return Ok(());
        }
        let mut violations = Vec::new();
        let mut total = 0;
        for error in self.validator.iter_errors(payload) {
            total += 1;
            if violations.len() < MAX_LISTED {
                // Masked: the payload's values (phone numbers, message text) stay out of the
                // answer, the logs and the dead-letter reason.
                violations.push(Violation {
                    path: error.instance_path().as_str().to_owned(),
                    message: error.masked().to_string(),
                });
            }
        }
        if total == 0 { Ok(()) } else { Err(Failure { violations, total }) }
    }
}

/// The first `$ref` or `$dynamicRef` under `value` that does not start with `#`, with where it
/// is (a JSON pointer into the schema); `at` is `value`'s own pointer.
fn remote_ref(value: &Value, at: &mut String) -> Option<(String, String)> {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if let ("$ref" | "$dynamicRef", Value::String(reference)) = (key.as_str(), child)
                    && !reference.starts_with('#')
                {
                    return Some((format!("{at}/{}", escape(key)), reference.clone()));
                }
                let len = at.len();
                at.push('/');
                at.push_str(&escape(key));
                let found = remote_ref(child, at);
                at.truncate(len);
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let len = at.len();
            at.push_str(&format!("/{i}"));
            let found = remote_ref(item, at);
            at.truncate(len);
            found
        }),
        _ => None,
    }
}

/// A key as a JSON pointer segment (RFC 6901: `~` → `~0`, `/` → `~1`).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    //! The WhatsApp schema against the fixtures in `tests/fixtures/whatsapp/` (each must pass)
    //! and `mutations.json` there (each must fail at exactly the path it names).

    use std::path::PathBuf;

    use serde_json::json;

    use super::*;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/whatsapp")
    }

    fn whatsapp() -> PayloadSchema {
        PayloadSchema::load("builtin:whatsapp", OnSchemaFailure::Reject).unwrap()
    }

    fn fixture(name: &str) -> Value {
        serde_json::from_slice(&std::fs::read(fixtures().join(name)).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn paths(failure: &Failure) -> Vec<&str> {
        failure.violations.iter().map(|v| v.path.as_str()).collect()
    }

    #[test]
    fn every_whatsapp_fixture_passes() {
        let schema = whatsapp();
        let mut names: Vec<String> = std::fs::read_dir(fixtures())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json") && n != "mutations.json")
            .collect();
        names.sort();
        assert!(names.len() >= 12, "{names:?}");
        for name in names {
            let payload = fixture(&name);
            if let Err(failure) = schema.check(Ok(&payload)) {
                panic!("{name} fails: {failure:?}");
            }
        }
    }

    #[test]
    fn every_mutation_fails_at_exactly_its_path() {
        let schema = whatsapp();
        let mutations = fixture("mutations.json");
        let mutations = mutations.as_array().unwrap();
        assert!(mutations.len() >= 15, "{}", mutations.len());
        for mutation in mutations {
            let name = mutation["fixture"].as_str().unwrap();
            let pointer = mutation["pointer"].as_str().unwrap();
            let expected = mutation["fails_at"].as_str().unwrap();
            let mut payload = fixture(name);
            match mutation.get("set") {
                Some(value) => {
                    *payload.pointer_mut(pointer).unwrap_or_else(|| panic!("{name}: no {pointer}")) = value.clone()
                }
                None => {
                    assert_eq!(mutation["remove"], true, "{mutation}");
                    let (parent, key) = pointer.rsplit_once('/').unwrap();
                    let removed = match payload.pointer_mut(parent).unwrap() {
                        Value::Object(map) => map.remove(key),
                        Value::Array(items) => Some(items.remove(key.parse().unwrap())),
                        _ => None,
                    };
                    assert!(removed.is_some(), "{name}: no {pointer}");
                }
            }
            let Err(failure) = schema.check(Ok(&payload)) else { panic!("{mutation} passed") };
            assert_eq!(paths(&failure), [expected], "{mutation}: {failure:?}");
        }
    }

    #[test]
    fn failures_name_paths_hide_values_and_are_capped() {
        let schema = whatsapp();
        let mut payload = fixture("text.json");
        payload["entry"][0]["changes"][0]["value"]["messages"][0]["type"] = json!("secret-type-value");
        let failure = schema.check(Ok(&payload)).unwrap_err();
        let violation = &failure.violations[0];
        assert_eq!(violation.path, "/entry/0/changes/0/value/messages/0/type");
        assert!(!violation.message.contains("secret-type-value"), "{violation}");
        assert!(
            failure.reason().starts_with("schema: /entry/0/changes/0/value/messages/0/type: "),
            "{}",
            failure.reason()
        );

        // Not JSON: the whole payload fails.
        let not_json = serde_json::from_slice::<Value>(b"{nope").unwrap_err();
        let failure = schema.check(Err(&not_json)).unwrap_err();
        assert_eq!(paths(&failure), [""]);
        assert!(failure.reason().starts_with("schema: (the payload): the body is not JSON"), "{}", failure.reason());

        // Wrong everywhere: the first MAX_LISTED are listed, the count is whole.
        let statuses: Vec<Value> = (0..30).map(|i| json!({ "id": format!("s{i}") })).collect();
        payload["entry"][0]["changes"][0]["value"]["statuses"] = Value::Array(statuses);
        let failure = schema.check(Ok(&payload)).unwrap_err();
        assert_eq!(failure.violations.len(), MAX_LISTED);
        assert!(failure.total > MAX_LISTED, "{}", failure.total);
        assert!(failure.reason().ends_with(&format!("(and {} more)", failure.total - 1)), "{}", failure.reason());
    }

    #[test]
    fn local_references_resolve_and_remote_ones_are_refused() {
        let local = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$defs": { "id": { "type": "string" } },
            "properties": { "id": { "$ref": "#/$defs/id" } }
        });
        let schema = PayloadSchema::compile("local.json", &local, OnSchemaFailure::DeadLetter).unwrap();
        assert!(schema.check(Ok(&json!({ "id": "a" }))).is_ok());
        assert_eq!(paths(&schema.check(Ok(&json!({ "id": 1 }))).unwrap_err()), ["/id"]);

        for (reference, at) in [
            (json!({ "$ref": "https://example.com/s.json" }), "/$ref"),
            (json!({ "properties": { "a/b": { "$ref": "other.json#/x" } } }), "/properties/a~1b/$ref"),
            (json!({ "allOf": [{}, { "$dynamicRef": "file:///etc/passwd" }] }), "/allOf/1/$dynamicRef"),
        ] {
            let e = PayloadSchema::compile("remote.json", &reference, OnSchemaFailure::Reject).unwrap_err();
            assert!(e.contains("only local references") && e.contains(&format!("at `{at}`")), "{e}");
        }
        // A property merely named `$ref` is a schema, not a reference.
        let named = json!({ "properties": { "$ref": { "type": "string" } } });
        assert!(PayloadSchema::compile("named.json", &named, OnSchemaFailure::Reject).is_ok());

        let old = json!({ "$schema": "http://json-schema.org/draft-07/schema#" });
        assert!(PayloadSchema::compile("old.json", &old, OnSchemaFailure::Reject).unwrap_err().contains("2020-12"));
        let bad = json!({ "type": "no-such-type" });
        let e = PayloadSchema::compile("bad.json", &bad, OnSchemaFailure::Reject).unwrap_err();
        assert!(e.contains("not a valid JSON Schema 2020-12"), "{e}");
        let e = PayloadSchema::load("builtin:slack", OnSchemaFailure::Reject).unwrap_err();
        assert!(e.contains("builtin:whatsapp"), "{e}");
    }
}
