//! `cargo xtask <task>`: development and operations tasks for Portcullis.
//!
//! - `migrate`            apply migrations (PostgreSQL when `DATABASE_URL` is set, else the
//!   embedded SQLite file under `DATA_DIR`)
//! - `migrate --database-url <url>` apply migrations to that database alone (`postgres://…`,
//!   `sqlite:<file>` or a file path), reading no other configuration; prints what it applied
//! - `cleanup [--dry-run]` delete expired sessions, refresh tokens and revocations; print counts
//! - `users set-role <email> <member|admin>` change a user's role
//! - `import-pats --csv <file> --users <file>` import the personal access tokens exported from
//!   the system a team ran before (seed 002; `docs/migration.md`): each line that maps to an
//!   existing account becomes a PAT of it, accepted until `LEGACY_PAT_ACCEPT_UNTIL`; prints
//!   every line not imported with its reason, then the counts
//! - `bench [auth | gateway [--pinned | --callgrind] [--record] | sockets | webhooks [spool]
//!   [redis] [rabbitmq] [--record]] [--quiet-logs]` and `bench --quick` run the benchmarks of
//!   SPEC §10 (all by default): the auth service's criterion benches, the gateway scenario
//!   judged against its peers and a bare hyper forwarder, the socket service's, and webhook
//!   ingestion per backend; see [`bench`]
//! - `ssot-check`         prove only the auth service depends on a JWT library or reads `JWT_SECRET`
//! - `codemap-check`      prove ARCHITECTURE.md's codemap names only real paths and every module
//! - `openapi`            write the gateway's OpenAPI document, `crates/gateway/openapi.json`,
//!   from the auth service's and the gateway's own paths; see [`openapi`]
//! - `doc-blocks [--run]` list (and run) the fenced shell blocks of the README and `docs/`,
//!   as their fences say; see [`docblocks`]
//! - `run --distributed [--scenario]` the three binaries as separate processes on the local
//!   PostgreSQL, Redis and RabbitMQ (fresh database, own prefixes, free ports); with
//!   `--scenario`, a user's path through them and a scrape of every dashboard metric; see
//!   [`run`]
//! - `keys rotate (--env-file <path> | --data-dir <dir>) (--stage | --promote | --prune)
//!   [--only jwt|service|context]` rotate the auth service's secrets without downtime, in a
//!   deployment's env file or the embedded mode's `DATA_DIR`; see [`auth_service::rotation`]
//! - `keys retire --dir <deployment> [--dry-run]` take a public-key setup (`keys/*.pem`, the
//!   `PUBLIC_KEY`-style variables in `.env*` and compose files, `keys` mounts) out of a
//!   deployment, backed up first; see [`keys`]
//! - `webhooks dead list <source> | show <source> <name> | replay <source> <name|--all>`
//!   the dead letters of a webhook source, where the gateway keeps them; see [`webhooks`]

mod bench;
mod codemap;
#[cfg(test)]
mod compose;
mod docblocks;
mod keys;
mod monitoring;
mod openapi;
mod otlp;
mod run;
mod ssot;
#[cfg(test)]
mod surface;
#[cfg(test)]
mod variables;
mod webhooks;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use auth_service::{AuthConfig, AuthService, Backend, Backends, Mode};
use platform::{
    clock::SystemClock,
    env::{EnvExt, OsEnv},
};

const USAGE: &str = "usage: cargo xtask <migrate [--database-url <url>] | cleanup [--dry-run] | users set-role <email> <role> | import-pats --csv <file> --users <file> | bench [auth | gateway [--pinned | --callgrind] [--record] | sockets | webhooks [spool] [redis] [rabbitmq] [--record]] [--quiet-logs] | bench --quick | ssot-check | codemap-check | openapi | webhooks dead <list|show|replay> <source> [name|--all] | run --distributed [--scenario] | doc-blocks [--run] | keys rotate (--env-file <path> | --data-dir <dir>) (--stage | --promote | --prune) [--only jwt|service|context] | keys retire --dir <deployment> [--dry-run]>";

/// The files under `dir` (recursively, in name order) whose path `keep` accepts.
fn files_under(dir: &Path, keep: &dyn Fn(&Path) -> bool, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            files_under(&path, keep, found);
        } else if keep(&path) {
            found.push(path);
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The auth service as its binary would run here: with `DATABASE_URL` distributed (so
/// `REDIS_URL` and the secrets of its environment too), otherwise embedded on the SQLite file
/// under `DATA_DIR`. Connecting applies the migrations.
async fn open_service() -> Result<(AuthService, Mode), String> {
    let mode = if OsEnv.string("DATABASE_URL").is_some() { Mode::Distributed } else { Mode::Embedded };
    let config = AuthConfig::from_env(&OsEnv, mode).map_err(|e| e.to_string())?;
    let storage = match &config.backend {
        Backend::Shared { .. } => "PostgreSQL".to_owned(),
        Backend::Embedded { data_dir } => format!("SQLite {}", data_dir.join(auth_service::SQLITE_FILE).display()),
    };
    let backends = Backends::connect(&config).await.map_err(|e| e.to_string())?;
    println!("{storage}: migrations applied");
    let service = AuthService::new(config, backends.deps(Arc::new(SystemClock))).map_err(|e| e.to_string())?;
    Ok((service, mode))
}

/// `migrate --database-url <url>`: the migrations alone, on the database the URL names; what
/// was applied, one line each, then the counts.
async fn migrate_url(url: &str) -> Result<String, String> {
    let migrated = auth_service::store::migrate(url).await.map_err(|e| e.to_string())?;
    let mut out = format!("{}\n", migrated.database);
    for migration in &migrated.applied {
        out.push_str(&format!("  applied {migration}\n"));
    }
    out.push_str(&format!("{} applied, {} already there\n", migrated.applied.len(), migrated.already_applied));
    Ok(out)
}

async fn cleanup(dry_run: bool) -> Result<(), String> {
    let (service, _) = open_service().await?;
    let report = service.cleanup(dry_run).await.map_err(|e| e.to_string())?;
    let verb = if dry_run { "would delete" } else { "deleted" };
    println!(
        "{verb}: {} sessions, {} SDK sessions, {} refresh tokens, {} revoked jtis, {} personal access tokens, {} API keys",
        report.sessions,
        report.sdk_sessions,
        report.refresh_tokens,
        report.revoked_jtis,
        report.personal_access_tokens,
        report.api_keys
    );
    Ok(())
}

async fn set_role(email: &str, role: &str) -> Result<(), String> {
    let role = auth_contract::Role::parse(role).map_err(|e| e.to_string())?;
    let (service, mode) = open_service().await?;
    let user = service.set_role_as_operator(email, role).await.map_err(|e| match e {
        auth_service::Error::NotFound => format!("no user with email {email}"),
        other => other.to_string(),
    })?;
    // Distributed, the running services hear of it on Redis at once; embedded, within a minute.
    let announced = if mode == Mode::Distributed { "; auth:user.role_changed published" } else { "" };
    println!("{} is now {} (audited{announced})", user.email, user.role);
    Ok(())
}

/// `import-pats`' two files, from `--csv <file> --users <file>` in either order.
fn import_args<'a>(args: &[&'a str]) -> Option<(&'a str, &'a str)> {
    let (mut csv, mut users) = (None, None);
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let slot = match *flag {
            "--csv" => &mut csv,
            "--users" => &mut users,
            _ => return None,
        };
        if slot.replace(*rest.next()?).is_some() {
            return None;
        }
    }
    csv.zip(users)
}

fn read_file(path: &str, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} file {path}: {e}"))
}

/// The report as printed: every line not imported, the counts, and when the tokens stop
/// working. No line carries a token.
fn render_import(report: &auth_service::legacy_import::ImportReport) -> String {
    use auth_service::legacy_import::Outcome;
    let mut out = String::new();
    for line in report.lines.iter().filter(|l| l.outcome != Outcome::Imported) {
        out.push_str(&format!("{line}\n"));
    }
    let total = report.imported() + report.already_imported() + report.skipped();
    out.push_str(&format!(
        "{} imported, {} already imported, {} skipped, of {total} token lines; {} users lines map nobody\n",
        report.imported(),
        report.already_imported(),
        report.skipped(),
        report.unusable_users(),
    ));
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    match report.accepted_until {
        Some(until) => out.push_str(&format!(
            "imported tokens are accepted until {} (LEGACY_PAT_ACCEPT_UNTIL)\n",
            until.format(rfc3339).unwrap_or_default()
        )),
        None => out
            .push_str("LEGACY_PAT_ACCEPT_UNTIL is unset: the auth service accepts no imported token until it is set\n"),
    }
    out
}

async fn import_pats(csv: &str, users: &str) -> Result<(), String> {
    let (tokens, users) = (read_file(csv, "tokens")?, read_file(users, "users")?);
    let (service, _) = open_service().await?;
    let report = service.import_legacy_pats(&tokens, &users).await.map_err(|e| e.to_string())?;
    print!("{}", render_import(&report));
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["migrate"] => open_service().await.map(drop),
        ["migrate", "--database-url", url] => migrate_url(url).await.map(|out| print!("{out}")),
        ["migrate", flag] if flag.starts_with("--database-url=") => {
            migrate_url(&flag["--database-url=".len()..]).await.map(|out| print!("{out}"))
        }
        ["cleanup"] => cleanup(false).await,
        ["cleanup", "--dry-run"] => cleanup(true).await,
        ["users", "set-role", email, role] => set_role(email, role).await,
        ["import-pats", rest @ ..] => match import_args(rest) {
            Some((csv, users)) => import_pats(csv, users).await,
            None => Err(USAGE.to_owned()),
        },
        ["bench", rest @ ..] => bench::run(rest).await,
        ["ssot-check"] => ssot::run(&workspace_root()),
        ["codemap-check"] => codemap::run(&workspace_root()),
        ["openapi"] => openapi::write(&workspace_root()).map(|path| println!("wrote {}", path.display())),
        ["webhooks", rest @ ..] => webhooks::run(rest).await,
        ["keys", rest @ ..] => keys::run(rest),
        ["run", rest @ ..] => run::run(rest).await,
        ["doc-blocks", rest @ ..] => docblocks::run(rest).await,
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use auth_service::store::{PostgresStore, SqliteStore, Store};

    use super::*;

    /// The migration files of one dialect, as `migrate` names them.
    fn migration_files(dialect: &str) -> Vec<String> {
        let dir = workspace_root().join("migrations").join(dialect);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .expect("migrations")
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".sql").map(str::to_owned))
            .collect();
        names.sort();
        assert!(names.len() >= 3, "{names:?}");
        names
    }

    /// Migrating twice: the first run applies every file and names it, the second nothing;
    /// then the schema serves the store.
    async fn migrates_once(url: &str, dialect: &str) -> Arc<dyn Store> {
        let files = migration_files(dialect);
        let first = migrate_url(url).await.unwrap_or_else(|e| panic!("{e}"));
        let applied: Vec<&str> = first.lines().filter_map(|l| l.trim().strip_prefix("applied ")).collect();
        assert_eq!(applied, files, "{first}");
        assert!(first.ends_with(&format!("{} applied, 0 already there\n", files.len())), "{first}");
        let second = migrate_url(url).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(second.lines().count(), 2, "{second}");
        assert!(second.ends_with(&format!("0 applied, {} already there\n", files.len())), "{second}");
        let store: Arc<dyn Store> = if dialect == "sqlite" {
            let file = url.strip_prefix("sqlite:").unwrap_or(url);
            Arc::new(SqliteStore::open(Path::new(file)).await.expect("sqlite"))
        } else {
            Arc::new(PostgresStore::connect(url, 1).await.expect("postgres"))
        };
        let user = auth_service::store::User {
            id: uuid::Uuid::new_v4(),
            name: "Migrated".to_owned(),
            email: "migrated@example.com".to_owned(),
            password_hash: "x".to_owned(),
            role: auth_contract::Role::Member,
            disabled: false,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        store.insert_user(&user).await.expect("the users table is there");
        assert_eq!(store.user_by_email(&user.email).await.expect("read"), Some(user));
        store
    }

    #[tokio::test]
    async fn migrate_a_sqlite_file_twice() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fresh.db");
        let first = migrate_url(&file.to_string_lossy()).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(first.starts_with(&format!("SQLite {}\n", file.display())), "{first}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "a new database file is its owner's alone");
        }
        // The same database by its `sqlite:` URL: already current.
        let again = migrate_url(&format!("sqlite:{}", file.display())).await.unwrap_or_else(|e| panic!("{e}"));
        let files = migration_files("sqlite").len();
        assert!(again.ends_with(&format!("\n0 applied, {files} already there\n")), "{again}");
        let other = dir.path().join("other.db");
        migrates_once(&format!("sqlite:{}", other.display()), "sqlite").await;
    }

    #[tokio::test]
    async fn migrate_a_fresh_postgres_database_twice() {
        let Some(testkit::Backend::Postgres { database_url, .. }) = testkit::Backend::shared() else { return };
        let url = testkit::fresh_postgres_database(&database_url).await;
        let first = migrate_url(&url).await.unwrap_or_else(|e| panic!("{e}"));
        let name = url.rsplit('/').next().unwrap_or_default();
        assert!(first.starts_with(&format!("PostgreSQL database {name} on ")), "{first}");
        // `first` applied everything already; a fresh one for the full check.
        let url = testkit::fresh_postgres_database(&database_url).await;
        migrates_once(&url, "postgres").await;
    }

    #[test]
    fn import_pats_takes_both_files_in_either_order() {
        assert_eq!(import_args(&["--csv", "a.csv", "--users", "u.csv"]), Some(("a.csv", "u.csv")));
        assert_eq!(import_args(&["--users", "u.csv", "--csv", "a.csv"]), Some(("a.csv", "u.csv")));
        for bad in [
            &["--csv", "a.csv"][..],
            &["--csv", "a.csv", "--users"],
            &["--csv", "a.csv", "--csv", "b.csv", "--users", "u.csv"],
            &["--csv", "a.csv", "--users", "u.csv", "--force"],
            &[],
        ] {
            assert_eq!(import_args(bad), None, "{bad:?}");
        }
        let err = read_file("/nonexistent/pats.csv", "tokens").unwrap_err();
        assert!(err.starts_with("cannot read the tokens file /nonexistent/pats.csv"), "{err}");
    }

    #[test]
    fn the_import_report_prints_what_was_not_imported_and_the_counts() {
        use auth_service::legacy_import::{ImportFile, ImportReason, ImportReport, ImportedLine, Outcome};
        let line = |file, line, outcome| ImportedLine { file, line, outcome };
        let report = ImportReport {
            lines: vec![
                line(ImportFile::Users, 3, Outcome::Skipped(ImportReason::Malformed("userId is empty".into()))),
                line(ImportFile::Tokens, 2, Outcome::Imported),
                line(ImportFile::Tokens, 3, Outcome::AlreadyImported),
                line(ImportFile::Tokens, 4, Outcome::Skipped(ImportReason::NoAccount("ada@example.com".into()))),
            ],
            accepted_until: None,
        };
        assert_eq!(
            render_import(&report),
            "users line 3: skipped: malformed row: userId is empty\n\
             tokens line 3: already imported\n\
             tokens line 4: skipped: no Portcullis account has the email `ada@example.com`\n\
             1 imported, 1 already imported, 1 skipped, of 3 token lines; 1 users lines map nobody\n\
             LEGACY_PAT_ACCEPT_UNTIL is unset: the auth service accepts no imported token until it is set\n"
        );
        let until = time::macros::datetime!(2026-03-31 00:00 UTC);
        let report = ImportReport { lines: vec![], accepted_until: Some(until) };
        assert!(render_import(&report).ends_with("accepted until 2026-03-31T00:00:00Z (LEGACY_PAT_ACCEPT_UNTIL)\n"));
    }

    #[tokio::test]
    async fn bad_database_urls_are_clear_errors() {
        let err = migrate_url("mysql://root:hunter2@127.0.0.1/app").await.unwrap_err();
        assert!(err.contains("unsupported database URL") && !err.contains("hunter2"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err = migrate_url(&dir.path().join("missing/x.db").to_string_lossy()).await.unwrap_err();
        assert!(err.contains("cannot create"), "{err}");
    }
}
