//! `cargo xtask openapi`: the gateway's OpenAPI document, `crates/gateway/openapi.json`, which
//! the gateway embeds and serves at `/openapi.json`. The gateway cannot link the auth service,
//! so the document is generated here from the auth service's own
//! ([`auth_service::openapi_json`]) with each public path moved to where the gateway
//! exposes it ([`gateway::exposed_path`]), plus the gateway's own paths, written by hand
//! in `crates/gateway/openapi-own.json`. A test fails while the checked-in file is stale.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// The generated document, relative to the workspace root.
pub const DOCUMENT: &str = "crates/gateway/openapi.json";
/// The gateway's own paths, components and tags, relative to the workspace root.
pub const OWN: &str = "crates/gateway/openapi-own.json";

/// Statuses the gateway itself may answer on any route it passes to the auth service, each
/// as the shared problem response: 429 from the per-IP limit, 502, 503 and 504 when the auth
/// service answers badly, is unavailable or is late. A path with a parameter may also be
/// refused as 400 `malformed_path` before it is routed.
const PASSED_THROUGH: &[&str] = &["429", "502", "503", "504"];
const WITH_PATH_PARAMETER: &[&str] = &["400"];
const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn problem() -> Value {
    json!({"$ref": "#/components/responses/Problem"})
}

/// Adds `statuses` to each operation of `item` that does not list them already.
fn add_statuses(item: &mut Value, statuses: &[&str]) {
    for method in METHODS {
        if let Some(responses) =
            item.get_mut(*method).and_then(|op| op.get_mut("responses")).and_then(Value::as_object_mut)
        {
            for status in statuses {
                responses.entry(*status).or_insert_with(problem);
            }
        }
    }
}

/// Merges the maps of `from` into those of `into`, one level down (`schemas`, `responses`…);
/// a name both define is an error, so the gateway's fragment cannot shadow the auth service.
fn merge_components(into: &mut Map<String, Value>, from: &Map<String, Value>) -> Result<(), String> {
    for (kind, entries) in from {
        let target = into.entry(kind.clone()).or_insert_with(|| json!({}));
        let (Some(target), Some(entries)) = (target.as_object_mut(), entries.as_object()) else {
            return Err(format!("components.{kind} is not an object"));
        };
        for (name, entry) in entries {
            if target.insert(name.clone(), entry.clone()).is_some() {
                return Err(format!("components.{kind}.{name} is defined twice"));
            }
        }
    }
    Ok(())
}

/// The gateway's document from the auth service's and the gateway's fragment.
pub fn generate(auth: &Value, own: &Value) -> Result<Value, String> {
    let mut document = auth.clone();
    let mut paths = Map::new();
    for (path, item) in auth["paths"].as_object().ok_or("the auth service's document has no paths")? {
        let Some(public) = gateway::exposed_path(path) else { continue };
        let mut item = item.clone();
        add_statuses(&mut item, PASSED_THROUGH);
        if public.contains('{') {
            add_statuses(&mut item, WITH_PATH_PARAMETER);
        }
        paths.insert(public, item);
    }
    for (path, item) in own["paths"].as_object().ok_or("the gateway's fragment has no paths")? {
        if paths.insert(path.clone(), item.clone()).is_some() {
            return Err(format!("{path} is both the auth service's and the gateway's own"));
        }
    }
    document["paths"] = Value::Object(paths);
    for (key, value) in own["info"].as_object().ok_or("the gateway's fragment has no info")? {
        document["info"][key] = value.clone();
    }
    let components = document["components"].as_object_mut().ok_or("the auth service's document has no components")?;
    merge_components(components, own["components"].as_object().unwrap_or(&Map::new()))?;
    if let Some(own_tags) = own["tags"].as_array() {
        let tags = document.as_object_mut().ok_or("not an object")?.entry("tags").or_insert_with(|| json!([]));
        tags.as_array_mut().ok_or("tags is not an array")?.extend(own_tags.iter().cloned());
    }
    Ok(document)
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The document as it should be checked in, pretty-printed with a final newline.
pub fn render(root: &Path) -> Result<String, String> {
    let auth: Value =
        serde_json::from_str(&auth_service::openapi_json()).map_err(|e| format!("the auth service's document: {e}"))?;
    let document = generate(&auth, &read_json(&root.join(OWN))?)?;
    let mut text = serde_json::to_string_pretty(&document).map_err(|e| e.to_string())?;
    text.push('\n');
    Ok(text)
}

/// `cargo xtask openapi`: writes [`DOCUMENT`].
pub fn write(root: &Path) -> Result<PathBuf, String> {
    let path = root.join(DOCUMENT);
    std::fs::write(&path, render(root)?).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateways_checked_in_document_is_generated_from_the_code() {
        let root = crate::workspace_root();
        let expected = render(&root).unwrap();
        let path = root.join(DOCUMENT);
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&path, &expected).unwrap();
            return;
        }
        assert!(
            checked_in == expected,
            "{DOCUMENT} differs from what the auth service's document and {OWN} give; \
             regenerate it with `cargo xtask openapi`"
        );
    }

    #[test]
    fn every_public_route_is_where_the_gateway_exposes_it() {
        let document: Value = serde_json::from_str(&render(&crate::workspace_root()).unwrap()).unwrap();
        let paths = document["paths"].as_object().unwrap();
        for path in ["/v1/auth/login", "/v1/auth/sessions/{id}", "/v1/clients", "/v1/client/{id}/api-keys", "/health"] {
            assert!(paths.contains_key(path), "{path} is missing");
        }
        for path in paths.keys() {
            assert!(!path.starts_with("/api/") && !path.contains("/internal"), "{path} is not public");
        }
        // Every error answer is the one problem response, and says so in its content type.
        let shared = &document["components"]["responses"]["Problem"];
        assert!(shared["content"].get(auth_contract::problem::CONTENT_TYPE).is_some(), "{shared}");
        for (path, item) in paths {
            for (method, operation) in item.as_object().unwrap().iter().filter(|(m, _)| METHODS.contains(&m.as_str())) {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert_eq!(response, &problem(), "{method} {path} {status}");
                    }
                }
            }
        }
    }
}
