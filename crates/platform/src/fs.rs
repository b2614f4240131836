//! Files only their user may read: embedded mode keeps its generated secrets, its SQLite
//! database and its webhook spool under `DATA_DIR`, which is created 0700, and its files
//! 0600 (SQLite gives its WAL and shared-memory files the database file's mode).

use std::{io, path::Path};

/// Creates `dir` (and its parents) if needed, and makes it 0700 on Unix.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Creates `file` empty if it does not exist, 0600 on Unix, so whatever writes it later
/// (SQLite) inherits a private mode; an existing file is narrowed to 0600 too.
pub fn private_file(file: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(file) {
            Ok(_) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
            }
            Err(err) => Err(err),
        }
    }
    #[cfg(not(unix))]
    {
        std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(file).map(drop)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn directories_and_files_are_private() {
        let root = std::env::temp_dir().join(format!("pc-fs-{}", std::process::id()));
        let dir = root.join("a/b");
        private_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("f");
        std::fs::write(&file, b"x").unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap_or_else(|e| panic!("{e}"));
        private_file(&file).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read(&file).unwrap_or_default(), b"x", "an existing file keeps its content");
        let _ = std::fs::remove_dir_all(root);
    }
}
