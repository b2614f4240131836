//! The services' tables of variables ([`platform::env::Variables`]) against the rest of the
//! repository: `docs/configuration.md` holds each table as rendered from the code (rewrite
//! with `UPDATE_DOCS=1`), compose sets every variable a service requires alone and nothing a
//! service does not read, and no source file reads the environment but `platform::env`.

use std::{fs, path::Path};

use platform::{
    config::Mode,
    env::{Fallback, LIBRARY_VARIABLES, Variables},
};

use crate::compose;

/// Every table, with the marker naming its section in `docs/configuration.md`.
fn tables() -> [(&'static str, &'static Variables); 4] {
    [
        ("auth-service", &auth_service::VARIABLES),
        ("gateway", &gateway::VARIABLES),
        ("socket-service", &socket_service::VARIABLES),
        ("libraries", &LIBRARY_VARIABLES),
    ]
}

/// `docs` with the section between `<!-- variables: NAME -->` and `<!-- /variables -->`
/// replaced by `table`, or `None` when the markers are missing.
fn with_section(docs: &str, name: &str, table: &str) -> Option<String> {
    let open = format!("<!-- variables: {name} -->\n");
    let start = docs.find(&open)? + open.len();
    let end = start + docs[start..].find("<!-- /variables -->")?;
    Some(format!("{}{table}{}", &docs[..start], &docs[end..]))
}

#[test]
fn the_configuration_guide_lists_every_table_as_the_code_declares_it() {
    let path = crate::workspace_root().join("docs/configuration.md");
    let docs = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut expected = docs.clone();
    for (name, table) in tables() {
        expected = with_section(&expected, name, &table.markdown())
            .unwrap_or_else(|| panic!("docs/configuration.md has no `<!-- variables: {name} -->` section"));
    }
    if std::env::var_os("UPDATE_DOCS").is_some() {
        fs::write(&path, &expected).unwrap_or_else(|e| panic!("{e}"));
        return;
    }
    assert!(
        docs == expected,
        "docs/configuration.md's tables differ from the code's; rewrite them with \
         `UPDATE_DOCS=1 cargo nextest run -p xtask -E 'test(the_configuration_guide)'`"
    );
}

#[test]
fn compose_sets_what_each_service_requires_and_only_what_it_reads() {
    let root = crate::workspace_root();
    let services = compose::services(&compose::read(&root, "docker-compose.yml"));
    for (name, table) in tables().into_iter().take(3) {
        let service = services.get(name).unwrap_or_else(|| panic!("docker-compose.yml has no {name}"));
        for var in table.iter().filter(|var| var.read_in(Mode::Distributed)) {
            if matches!(var.fallback, Fallback::Required { .. }) {
                let by_file = var.file_variable().is_some_and(|file| service.environment.contains(&file));
                assert!(
                    service.environment.contains(var.name) || by_file,
                    "{name} requires {} alone; docker-compose.yml does not set it",
                    var.name
                );
            }
        }
        for set in &service.environment {
            let declared = table.get(set).is_some()
                || set.strip_suffix("_FILE").and_then(|secret| table.get(secret)).is_some_and(|var| var.secret)
                || LIBRARY_VARIABLES.get(set).is_some();
            assert!(declared, "docker-compose.yml sets {set} for {name}, which does not read it");
        }
    }
}

/// The code of a file before its test module (`#[cfg(test)]` followed by `mod`), which may
/// read the test environment (`REDIS_URL`, `CI`) directly.
fn before_tests(source: &str) -> &str {
    let mut offset = 0;
    let mut lines = source.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            let next = lines.peek().map_or("", |l| l.trim());
            let attributes_then_mod = next.starts_with("mod ") || next.starts_with("#[allow");
            if attributes_then_mod {
                return &source[..offset];
            }
        }
        offset += line.len();
    }
    source
}

#[test]
fn no_service_reads_the_environment_but_through_its_table() {
    let root = crate::workspace_root();
    let mut files = Vec::new();
    for krate in fs::read_dir(root.join("crates")).unwrap_or_else(|e| panic!("{e}")).flatten() {
        // The test kit reads the test environment (`DATABASE_URL`, `REDIS_URL`, `CI`).
        if krate.file_name() != "testkit" {
            let is_rust = |path: &Path| path.extension().is_some_and(|ext| ext == "rs");
            crate::files_under(&krate.path().join("src"), &is_rust, &mut files);
        }
    }
    assert!(files.len() > 50, "the scan found only {} files", files.len());
    // `OsEnv` is the one reader; tracing-subscriber reads `RUST_LOG` itself (listed in
    // LIBRARY_VARIABLES).
    let allowed =
        [("crates/platform/src/env.rs", "env::var("), ("crates/platform/src/telemetry.rs", "from_default_env")];
    let mut offenders = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&root).unwrap_or(&file).to_string_lossy().replace('\\', "/");
        let source = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{relative}: {e}"));
        for pattern in ["env::var(", "env::var_os(", "env::vars(", "env::vars_os(", "from_default_env", "dotenv"] {
            if before_tests(&source).contains(pattern) && !allowed.contains(&(relative.as_str(), pattern)) {
                offenders.push(format!("{relative}: {pattern}"));
            }
        }
    }
    assert_eq!(offenders, Vec::<String>::new(), "environment read outside platform::env and its tables");
    assert!(LIBRARY_VARIABLES.get("RUST_LOG").is_some());
}

#[test]
fn the_helpers_of_these_checks_do_what_they_say() {
    assert_eq!(
        with_section("a\n<!-- variables: x -->\nold\n<!-- /variables -->\nb", "x", "new\n").as_deref(),
        Some("a\n<!-- variables: x -->\nnew\n<!-- /variables -->\nb")
    );
    assert_eq!(with_section("no markers", "x", "t"), None);
    let source = "fn a() {}\n#[cfg(test)]\nmod tests {\n    std::env::var(\"CI\");\n}\n";
    assert_eq!(before_tests(source), "fn a() {}\n");
    assert_eq!(before_tests("fn b() {}\n"), "fn b() {}\n");
}
