//! Each library crate's door, snapshotted: the public items its `lib.rs` declares (`pub use`,
//! `pub mod`, `pub fn`, …), one per line with whitespace collapsed, must equal
//! `xtask/surfaces/<crate>.txt`. A module made public or a new re-export then shows up in
//! review as a change to that file instead of growing the surface silently. Run with
//! `UPDATE_SURFACES=1` to rewrite the snapshots after an intended change.

use std::path::Path;

/// The library crates whose doors are snapshotted.
pub const CRATES: [&str; 5] = ["platform", "auth-contract", "auth-service", "gateway", "socket-service"];

/// The public items declared at the top level of a crate root, in file order: every item
/// starting at column 0 with `pub` (but not `pub(crate)`), up to its `;` or its opening `{`.
pub fn surface(lib_rs: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current: Option<String> = None;
    for line in lib_rs.lines() {
        let code = line.split("//").next().unwrap_or_default();
        if let Some(item) = current.as_mut() {
            item.push(' ');
            item.push_str(code.trim());
        } else if code.starts_with("pub ") {
            current = Some(code.trim().to_owned());
        } else {
            continue;
        }
        let Some(item) = current.take() else { continue };
        match item.find([';', '{']) {
            // A `use` list's braces belong to the item; it ends at its `;`.
            Some(end) if item.starts_with("pub use") && item.as_bytes()[end] == b'{' => match item.find(';') {
                Some(semicolon) => items.push(collapse(&item[..semicolon])),
                None => current = Some(item),
            },
            Some(end) => items.push(collapse(&item[..end])),
            None => current = Some(item),
        }
    }
    items
}

fn collapse(item: &str) -> String {
    let words = item.split_whitespace().collect::<Vec<_>>().join(" ");
    words.replace("{ ", "{").replace(" }", "}").replace(", }", "}").replace(",}", "}")
}

/// Compares every crate's surface with its snapshot; with `update`, rewrites the snapshots.
pub fn check(root: &Path, update: bool) -> Result<(), String> {
    let mut differ = Vec::new();
    for name in CRATES {
        let lib = root.join("crates").join(name).join("src/lib.rs");
        let text = std::fs::read_to_string(&lib).map_err(|e| format!("{}: {e}", lib.display()))?;
        let actual = surface(&text).join("\n") + "\n";
        let snapshot = root.join("xtask/surfaces").join(format!("{name}.txt"));
        if update {
            std::fs::write(&snapshot, &actual).map_err(|e| format!("{}: {e}", snapshot.display()))?;
            continue;
        }
        let expected = std::fs::read_to_string(&snapshot).unwrap_or_default();
        if expected != actual {
            differ.push(format!("{name}: lib.rs declares\n{actual}but {} holds\n{expected}", snapshot.display()));
        }
    }
    if differ.is_empty() {
        Ok(())
    } else {
        Err(format!("public surfaces changed (rerun with UPDATE_SURFACES=1 if intended):\n{}", differ.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_read_to_their_end_and_private_ones_skipped() {
        let lib = "//! Doc.\n\nmod inner;\npub mod open;\npub(crate) mod half;\n\
                   pub use inner::{\n    Alpha,\n    Beta, // why\n};\npub use inner::Gamma;\n\
                   pub fn run(\n    a: u8,\n) -> u8 {\n    a\n}\npub mod proto {\n    pub use x::Y;\n}\n";
        assert_eq!(
            surface(lib),
            [
                "pub mod open",
                "pub use inner::{Alpha, Beta}",
                "pub use inner::Gamma",
                "pub fn run( a: u8, ) -> u8",
                "pub mod proto"
            ]
        );
    }

    #[test]
    fn every_door_matches_its_snapshot() {
        let root = crate::workspace_root();
        let update = std::env::var_os("UPDATE_SURFACES").is_some();
        if let Err(message) = check(&root, update) {
            panic!("{message}");
        }
    }
}
