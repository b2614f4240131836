//! `cargo xtask ssot-check`: proves that the auth service is the single source of truth for tokens.
//!
//! SPEC §3 and §9: only `auth-service` may depend on a JWT library or read `JWT_SECRET`.
//!
//! 1. No workspace member but `auth-service` declares a JWT library as a direct dependency
//!    (any kind: normal, dev or build; optional ones included).
//! 2. `gateway`, `socket-service` and `auth-contract` do not reach a JWT library through any
//!    path of normal dependencies in `cargo metadata`'s resolve graph (members that do not
//!    exist yet are skipped with a note).
//! 3. No `.rs` file under `crates/*/src` of a crate other than `auth-service` contains the
//!    string `JWT_SECRET` (comments included).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// Crate names of JWT (and JWT-like token) libraries, compared with `-` and `_` treated alike.
pub const JWT_LIBRARIES: &[&str] = &[
    "jsonwebtoken",
    "jwt",
    "jwt-simple",
    "josekit",
    "biscuit",
    "frank_jwt",
    "jws",
    "jose-jwt",
    "jwtk",
    "alcoholic_jwt",
    "jsonwebkey",
    "compact_jwt",
    "jwt-compact",
    "paseto",
    "pasetors",
];

/// The one crate allowed to depend on a JWT library and to read the secret.
const AUTH_SERVICE: &str = "auth-service";

/// Crates that must not reach a JWT library even transitively.
const JWT_FREE_CLOSURE: &[&str] = &["gateway", "socket-service", "auth-contract"];

/// The environment variable only the auth service may read.
const SECRET_VAR: &str = "JWT_SECRET";

fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// Whether `name` is one of [`JWT_LIBRARIES`].
pub fn is_jwt_library(name: &str) -> bool {
    let name = normalize(name);
    JWT_LIBRARIES.iter().any(|lib| normalize(lib) == name)
}

/// A workspace member as `cargo metadata` describes it.
#[derive(Debug, Clone)]
struct Member {
    id: String,
    name: String,
    manifest_path: PathBuf,
    /// Declared dependencies: (package name, kind label).
    dependencies: Vec<(String, String)>,
}

/// The parts of `cargo metadata` the check needs.
#[derive(Debug, Default)]
pub struct Metadata {
    members: Vec<Member>,
    /// Package id to package name, for every package.
    names: HashMap<String, String>,
    /// Normal (non-dev, non-build) dependency edges of the resolve graph, by package id.
    normal_edges: HashMap<String, Vec<String>>,
}

fn field<'a>(value: &'a Value, key: &str) -> Result<&'a Value, String> {
    value.get(key).ok_or_else(|| format!("cargo metadata: missing field `{key}`"))
}

fn str_field<'a>(value: &'a Value, key: &str) -> Result<&'a str, String> {
    field(value, key)?.as_str().ok_or_else(|| format!("cargo metadata: field `{key}` is not a string"))
}

fn array_field<'a>(value: &'a Value, key: &str) -> Result<&'a [Value], String> {
    field(value, key)?
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| format!("cargo metadata: field `{key}` is not an array"))
}

impl Metadata {
    /// Parses the JSON printed by `cargo metadata --format-version 1`.
    pub fn parse(json: &str) -> Result<Self, String> {
        let root: Value = serde_json::from_str(json).map_err(|e| format!("cargo metadata: invalid JSON: {e}"))?;
        let member_ids: BTreeSet<&str> =
            array_field(&root, "workspace_members")?.iter().filter_map(Value::as_str).collect();

        let mut metadata = Self::default();
        for package in array_field(&root, "packages")? {
            let id = str_field(package, "id")?;
            let name = str_field(package, "name")?;
            metadata.names.insert(id.to_owned(), name.to_owned());
            if !member_ids.contains(id) {
                continue;
            }
            let mut dependencies = Vec::new();
            for dep in array_field(package, "dependencies")? {
                let dep_name = str_field(dep, "name")?;
                let kind = dep.get("kind").and_then(Value::as_str).unwrap_or("normal");
                let label = match kind {
                    "normal" => "[dependencies]".to_owned(),
                    other => format!("[{other}-dependencies]"),
                };
                dependencies.push((dep_name.to_owned(), label));
            }
            metadata.members.push(Member {
                id: id.to_owned(),
                name: name.to_owned(),
                manifest_path: PathBuf::from(str_field(package, "manifest_path")?),
                dependencies,
            });
        }

        let resolve = field(&root, "resolve")?;
        if resolve.is_null() {
            return Err("cargo metadata: no resolve graph (was --no-deps passed?)".to_owned());
        }
        for node in array_field(resolve, "nodes")? {
            let id = str_field(node, "id")?;
            let mut edges = Vec::new();
            for dep in array_field(node, "deps")? {
                let pkg = str_field(dep, "pkg")?;
                // A dependency is normal when any of its kinds is `null`; without `dep_kinds`
                // (very old cargo) count it as normal, which errs on the strict side.
                let normal = match dep.get("dep_kinds").and_then(Value::as_array) {
                    Some(kinds) => kinds.iter().any(|k| k.get("kind").is_none_or(Value::is_null)),
                    None => true,
                };
                if normal {
                    edges.push(pkg.to_owned());
                }
            }
            metadata.normal_edges.insert(id.to_owned(), edges);
        }
        Ok(metadata)
    }

    fn name_of<'a>(&'a self, id: &'a str) -> &'a str {
        self.names.get(id).map_or(id, String::as_str)
    }

    fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// Every JWT library reachable from `start` over normal edges, each with a shortest path of
/// package ids (`start` first, the library last).
pub fn jwt_paths(
    edges: &HashMap<String, Vec<String>>,
    name_of: impl Fn(&str) -> String,
    start: &str,
) -> Vec<Vec<String>> {
    let mut parent: HashMap<&str, &str> = HashMap::new();
    let mut seen: BTreeSet<&str> = BTreeSet::from([start]);
    let mut queue: VecDeque<&str> = VecDeque::from([start]);
    let mut found = Vec::new();
    while let Some(id) = queue.pop_front() {
        if id != start && is_jwt_library(&name_of(id)) {
            found.push(id);
            // A JWT library's own dependencies are irrelevant: the violation is reaching it.
            continue;
        }
        for next in edges.get(id).map(Vec::as_slice).unwrap_or_default() {
            if seen.insert(next.as_str()) {
                parent.insert(next.as_str(), id);
                queue.push_back(next.as_str());
            }
        }
    }
    found
        .into_iter()
        .map(|lib| {
            let mut path = vec![lib.to_owned()];
            let mut cursor = lib;
            while let Some(&up) = parent.get(cursor) {
                path.push(up.to_owned());
                cursor = up;
            }
            path.reverse();
            path
        })
        .collect()
}

/// A line of a source file that mentions the secret.
#[derive(Debug, PartialEq, Eq)]
pub struct SecretHit {
    pub file: PathBuf,
    pub line: usize,
}

fn collect_rs_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(|e| format!("{}: {e}", path.display()))?;
        if file_type.is_dir() {
            collect_rs_files(&path, out)?;
        } else if file_type.is_file() && path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Scans `<crate>/src/**/*.rs` for every directory in `crates_dir` except `exempt` (the auth
/// service's directory). Returns the hits, sorted, and the number of files scanned.
pub fn scan_for_secret(crates_dir: &Path, exempt: Option<&Path>) -> Result<(Vec<SecretHit>, usize), String> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(crates_dir).map_err(|e| format!("{}: {e}", crates_dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", crates_dir.display()))?;
        let crate_dir = entry.path();
        if exempt.is_some_and(|exempt| same_dir(exempt, &crate_dir)) {
            continue;
        }
        let src = crate_dir.join("src");
        if src.is_dir() {
            collect_rs_files(&src, &mut files)?;
        }
    }
    files.sort();
    let mut hits = Vec::new();
    for file in &files {
        let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        for (index, line) in text.lines().enumerate() {
            if line.contains(SECRET_VAR) {
                hits.push(SecretHit { file: file.clone(), line: index + 1 });
            }
        }
    }
    Ok((hits, files.len()))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn relative<'a>(root: &Path, path: &'a Path) -> std::borrow::Cow<'a, str> {
    match path.strip_prefix(root) {
        Ok(rel) => rel.to_string_lossy(),
        Err(_) => path.to_string_lossy(),
    }
}

fn cargo_metadata(root: &Path) -> Result<String, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .current_dir(root)
        .args(["metadata", "--format-version", "1"])
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    String::from_utf8(output.stdout).map_err(|e| format!("cargo metadata: output is not UTF-8: {e}"))
}

/// Runs the whole check on the workspace at `root`; prints violations, notes and a summary.
pub fn run(root: &Path) -> Result<(), String> {
    let metadata = Metadata::parse(&cargo_metadata(root)?)?;
    let mut violations = Vec::new();
    let mut notes = Vec::new();

    // Rule 1: direct dependencies.
    let mut direct_users: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for member in &metadata.members {
        for (dep, section) in &member.dependencies {
            if !is_jwt_library(dep) {
                continue;
            }
            direct_users.entry(member.name.as_str()).or_default().insert(dep.as_str());
            if member.name != AUTH_SERVICE {
                violations.push(format!(
                    "`{}` depends directly on JWT library `{dep}` ({} {section}); only `{AUTH_SERVICE}` may",
                    member.name,
                    relative(root, &member.manifest_path),
                ));
            }
        }
    }

    // Rule 2: transitive closure over normal dependencies.
    let mut checked = Vec::new();
    for &name in JWT_FREE_CLOSURE {
        let Some(member) = metadata.member(name) else {
            notes.push(format!("`{name}` is not a workspace member yet; transitive check skipped"));
            continue;
        };
        checked.push(name);
        let name_of = |id: &str| metadata.name_of(id).to_owned();
        for path in jwt_paths(&metadata.normal_edges, name_of, &member.id) {
            let chain: Vec<&str> = path.iter().map(|id| metadata.name_of(id)).collect();
            violations.push(format!(
                "`{name}` reaches JWT library `{}` through normal dependencies: {}",
                chain.last().copied().unwrap_or_default(),
                chain.join(" -> "),
            ));
        }
    }

    // Rule 3: only the auth service mentions the secret.
    let auth_dir = metadata.member(AUTH_SERVICE).and_then(|m| m.manifest_path.parent().map(Path::to_path_buf));
    if auth_dir.is_none() {
        notes.push(format!("`{AUTH_SERVICE}` is not a workspace member; every crate is scanned"));
    }
    let (hits, scanned) = scan_for_secret(&root.join("crates"), auth_dir.as_deref())?;
    for hit in &hits {
        let crate_name = hit
            .file
            .strip_prefix(root.join("crates"))
            .ok()
            .and_then(|rel| rel.components().next())
            .map_or_else(|| "?".to_owned(), |c| c.as_os_str().to_string_lossy().into_owned());
        violations.push(format!(
            "{}:{}: `{crate_name}` mentions {SECRET_VAR}; only `{AUTH_SERVICE}` may read it",
            relative(root, &hit.file),
            hit.line,
        ));
    }

    for note in &notes {
        println!("ssot-check: note: {note}");
    }
    if !violations.is_empty() {
        for violation in &violations {
            eprintln!("ssot-check: violation: {violation}");
        }
        return Err(format!("ssot-check failed: {} violation(s)", violations.len()));
    }
    let direct = direct_users
        .iter()
        .map(|(user, libs)| format!("{user} ({})", libs.iter().copied().collect::<Vec<_>>().join(", ")))
        .collect::<Vec<_>>();
    println!(
        "ssot-check: ok — {} workspace members; direct JWT dependencies: {}; JWT-free transitively: {}; \
         {SECRET_VAR} in no crate but {AUTH_SERVICE} ({scanned} files scanned)",
        metadata.members.len(),
        if direct.is_empty() { "none".to_owned() } else { direct.join(", ") },
        if checked.is_empty() { "none present".to_owned() } else { checked.join(", ") },
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests read the wall clock
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
        edges.iter().map(|(from, to)| ((*from).to_owned(), to.iter().map(|s| (*s).to_owned()).collect())).collect()
    }

    #[test]
    fn jwt_library_names_ignore_dash_versus_underscore() {
        assert!(is_jwt_library("jsonwebtoken"));
        assert!(is_jwt_library("jwt_simple"));
        assert!(is_jwt_library("frank-jwt"));
        assert!(!is_jwt_library("jwt-helper"));
        assert!(!is_jwt_library("serde_json"));
    }

    #[test]
    fn closure_finds_shortest_path_and_ignores_unreachable_libraries() {
        let edges = graph(&[
            ("contract", &["platform", "tonic"]),
            ("platform", &["util"]),
            ("util", &["jsonwebtoken"]),
            ("tonic", &["util", "hyper"]),
            ("hyper", &[]),
            ("auth", &["contract", "josekit"]),
            ("jsonwebtoken", &["ring"]),
        ]);
        let paths = jwt_paths(&edges, str::to_owned, "contract");
        assert_eq!(paths, vec![vec!["contract", "platform", "util", "jsonwebtoken"]]);
        // `josekit` hangs off `auth`, which `contract` does not reach.
        assert!(jwt_paths(&edges, str::to_owned, "hyper").is_empty());
        let from_auth = jwt_paths(&edges, str::to_owned, "auth");
        assert_eq!(from_auth.len(), 2);
    }

    #[test]
    fn closure_survives_cycles() {
        let edges = graph(&[("a", &["b"]), ("b", &["a", "c"]), ("c", &["b"])]);
        assert!(jwt_paths(&edges, str::to_owned, "a").is_empty());
    }

    #[test]
    fn parse_keeps_only_normal_edges() {
        let json = r#"{
            "workspace_members": ["w#a"],
            "packages": [
                {"id": "w#a", "name": "a", "manifest_path": "/ws/crates/a/Cargo.toml",
                 "dependencies": [{"name": "jwt", "kind": "dev"}, {"name": "b", "kind": null}]},
                {"id": "r#b", "name": "b", "manifest_path": "/r/b/Cargo.toml", "dependencies": []},
                {"id": "r#jwt", "name": "jwt", "manifest_path": "/r/jwt/Cargo.toml", "dependencies": []}
            ],
            "resolve": {"nodes": [
                {"id": "w#a", "deps": [
                    {"pkg": "r#b", "dep_kinds": [{"kind": null, "target": null}]},
                    {"pkg": "r#jwt", "dep_kinds": [{"kind": "dev", "target": null}]}
                ]},
                {"id": "r#b", "deps": [{"pkg": "r#jwt", "dep_kinds": [{"kind": "build", "target": null}]}]},
                {"id": "r#jwt", "deps": []}
            ]}
        }"#;
        let metadata = Metadata::parse(json).unwrap();
        assert_eq!(metadata.members.len(), 1);
        assert_eq!(metadata.members[0].dependencies[0], ("jwt".to_owned(), "[dev-dependencies]".to_owned()));
        assert_eq!(metadata.normal_edges["w#a"], vec!["r#b".to_owned()]);
        assert!(metadata.normal_edges["r#b"].is_empty());
        let name_of = |id: &str| metadata.name_of(id).to_owned();
        assert!(jwt_paths(&metadata.normal_edges, name_of, "w#a").is_empty());
    }

    #[test]
    fn scan_reports_file_and_line_and_exempts_the_auth_service() {
        let unique = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let crates = std::env::temp_dir().join(format!("ssot-scan-{}-{unique}", std::process::id()));
        let write = |rel: &str, text: &str| {
            let path = crates.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("gateway/src/lib.rs", "//! gateway\nfn f() {}\n// reads JWT_SECRET here\n");
        write("gateway/src/deep/mod.rs", "const X: &str = \"JWT_SECRET\";\n");
        write("gateway/src/notes.txt", "JWT_SECRET\n");
        write("gateway/tests/it.rs", "JWT_SECRET\n");
        write("auth-service/src/config.rs", "env(\"JWT_SECRET\")\n");
        write("platform/src/lib.rs", "JWT_SECRETS_ARE_FUN\n");

        let result = scan_for_secret(&crates, Some(&crates.join("auth-service")));
        std::fs::remove_dir_all(&crates).unwrap();
        let (hits, scanned) = result.unwrap();
        assert_eq!(scanned, 3);
        assert_eq!(
            hits,
            vec![
                SecretHit { file: crates.join("gateway/src/deep/mod.rs"), line: 1 },
                SecretHit { file: crates.join("gateway/src/lib.rs"), line: 3 },
                SecretHit { file: crates.join("platform/src/lib.rs"), line: 1 },
            ]
        );
    }
}
