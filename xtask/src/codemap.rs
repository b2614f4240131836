//! `cargo xtask codemap-check`: ARCHITECTURE.md's codemap stays true. Every path it names
//! exists, and every top-level module of every crate (`crates/*/src/*.rs` and `src/*/`, the
//! crate roots `lib.rs` and `main.rs` aside) is named, so a new module cannot arrive unmapped
//! and a removed one cannot linger in the map.
//!
//! The codemap is the first fenced block after `## Codemap`. A line at column 0 names
//! repository paths (`crates/gateway`, `proto/`, `migrations/postgres, migrations/sqlite`);
//! once it names a crate, the lines indented by exactly two spaces name that crate's modules,
//! relative to its `src/`, as the words before the first gap of two spaces (`config.rs
//! routes.rs    typed configuration…`). Deeper-indented lines continue a description.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// What the codemap names: repository paths, and modules per crate directory.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Codemap {
    pub paths: BTreeSet<String>,
    pub modules: BTreeMap<String, BTreeSet<String>>,
}

/// The words before the first run of two spaces.
fn names(line: &str) -> Vec<&str> {
    let head = line.trim_start().split("  ").next().unwrap_or_default();
    head.split([' ', ',']).filter(|w| !w.is_empty()).collect()
}

fn is_module(word: &str) -> bool {
    word.ends_with(".rs") || word.ends_with('/')
}

pub fn parse(markdown: &str) -> Result<Codemap, String> {
    let after = markdown.split_once("## Codemap").ok_or("ARCHITECTURE.md has no `## Codemap` section")?.1;
    let block = after.split_once("```").ok_or("the codemap has no fenced block")?.1;
    let block = block.split_once('\n').map_or(block, |(_, rest)| rest);
    let block = block.split_once("```").ok_or("the codemap's block is not closed")?.0;
    let mut map = Codemap::default();
    let mut current: Option<String> = None;
    for line in block.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            let words = names(line);
            current = words.first().filter(|w| w.starts_with("crates/")).map(|w| w.trim_end_matches('/').to_owned());
            map.paths.extend(words.into_iter().map(str::to_owned));
        } else if line.starts_with("  ") && !line.starts_with("   ") {
            let Some(krate) = &current else {
                return Err(format!("`{}` names modules outside any crate", line.trim()));
            };
            let modules = map.modules.entry(krate.clone()).or_default();
            modules.extend(names(line).into_iter().filter(|w| is_module(w)).map(str::to_owned));
        }
    }
    Ok(map)
}

/// Problems between the map and the tree under `root`.
pub fn check(root: &Path, map: &Codemap) -> Result<Vec<String>, String> {
    let mut problems = Vec::new();
    for path in &map.paths {
        if !root.join(path).exists() {
            problems.push(format!("the codemap names `{path}`, which does not exist"));
        }
    }
    for (krate, modules) in &map.modules {
        for module in modules {
            if !root.join(krate).join("src").join(module.trim_end_matches('/')).exists() {
                problems.push(format!("the codemap names `{krate}/src/{module}`, which does not exist"));
            }
        }
    }
    let crates = std::fs::read_dir(root.join("crates")).map_err(|e| format!("crates/: {e}"))?;
    for krate in crates {
        let krate = krate.map_err(|e| e.to_string())?;
        let name = format!("crates/{}", krate.file_name().to_string_lossy());
        if !map.paths.contains(&name) {
            problems.push(format!("the crate `{name}` is not in the codemap"));
        }
        let Ok(entries) = std::fs::read_dir(krate.path().join("src")) else { continue };
        let named = map.modules.get(&name);
        for entry in entries {
            let entry = entry.map_err(|e| e.to_string())?;
            let file = entry.file_name().to_string_lossy().into_owned();
            let module = if entry.path().is_dir() { format!("{file}/") } else { file };
            let root_file = matches!(module.as_str(), "lib.rs" | "main.rs");
            if !root_file && is_module(&module) && !named.is_some_and(|n| n.contains(&module)) {
                problems.push(format!("`{name}/src/{module}` is not in the codemap"));
            }
        }
    }
    Ok(problems)
}

pub fn run(root: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).map_err(|e| format!("ARCHITECTURE.md: {e}"))?;
    let map = parse(&text)?;
    let problems = check(root, &map)?;
    if problems.is_empty() {
        let modules: usize = map.modules.values().map(BTreeSet::len).sum();
        println!("codemap-check: ok — {} paths and {modules} modules named, every module mapped", map.paths.len());
        Ok(())
    } else {
        Err(format!("codemap-check failed:\n  {}", problems.join("\n  ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# A\n\n## Codemap\n\n```\nCargo.toml     workspace\ncrates/demo    a crate\n  a.rs b/      two modules\n               a continuation naming c.rs\n  d.rs\nmigrations/x, migrations/y\n```\n";

    #[test]
    fn reads_paths_and_modules() {
        let map = parse(DOC).unwrap_or_else(|e| panic!("{e}"));
        let paths: Vec<&str> = map.paths.iter().map(String::as_str).collect();
        assert_eq!(paths, ["Cargo.toml", "crates/demo", "migrations/x", "migrations/y"]);
        let modules: Vec<&str> = map.modules["crates/demo"].iter().map(String::as_str).collect();
        assert_eq!(modules, ["a.rs", "b/", "d.rs"], "continuation lines name nothing");
    }

    #[test]
    fn finds_what_is_missing_both_ways() {
        let root = std::env::temp_dir().join(format!("codemap-{}", std::process::id()));
        let src = root.join("crates/demo/src");
        std::fs::create_dir_all(src.join("b")).unwrap_or_else(|e| panic!("{e}"));
        for file in ["a.rs", "lib.rs", "unmapped.rs"] {
            std::fs::write(src.join(file), "").unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(root.join("Cargo.toml"), "").unwrap_or_else(|e| panic!("{e}"));
        let map = parse(DOC).unwrap_or_else(|e| panic!("{e}"));
        let problems = check(&root, &map).unwrap_or_else(|e| panic!("{e}"));
        let _ = std::fs::remove_dir_all(&root);
        assert!(problems.iter().any(|p| p.contains("crates/demo/src/d.rs`, which does not exist")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("migrations/x")), "{problems:?}");
        assert!(
            problems.iter().any(|p| p.contains("crates/demo/src/unmapped.rs` is not in the codemap")),
            "{problems:?}"
        );
        assert!(!problems.iter().any(|p| p.contains("lib.rs")), "crate roots need no entry: {problems:?}");
        assert_eq!(problems.len(), 4, "{problems:?}");
    }
}
