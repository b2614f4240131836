//! `cargo xtask <task>`: development and operations tasks for Portcullis.
//!
//! - `migrate`            apply migrations (PostgreSQL when `DATABASE_URL` is set, else the
//!   embedded SQLite file under `DATA_DIR`)
//! - `cleanup [--dry-run]` delete expired sessions, refresh tokens and revocations; print counts
//! - `bench`              run the criterion benchmarks and print where the reports are

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use auth_service::store::{PostgresStore, SqliteStore, Store};
use platform::env::{EnvExt, OsEnv};

const USAGE: &str = "usage: cargo xtask <migrate | cleanup [--dry-run] | bench>";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

async fn open_store() -> Result<Box<dyn Store>, String> {
    if let Some(url) = OsEnv.string("DATABASE_URL") {
        let store = PostgresStore::connect(&url, 2).await.map_err(|e| e.to_string())?;
        println!("PostgreSQL: migrations applied");
        return Ok(Box::new(store));
    }
    let data_dir = PathBuf::from(OsEnv.string_or("DATA_DIR", "./data"));
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let path = data_dir.join(auth_service::app::SQLITE_FILE);
    let store = SqliteStore::open(&path).await.map_err(|e| e.to_string())?;
    println!("SQLite {}: migrations applied", path.display());
    Ok(Box::new(store))
}

async fn cleanup(dry_run: bool) -> Result<(), String> {
    let store = open_store().await?;
    let now = time::OffsetDateTime::now_utc();
    let report = store
        .cleanup(now, now - auth_service::service::ENDED_SESSION_RETENTION, dry_run)
        .await
        .map_err(|e| e.to_string())?;
    let verb = if dry_run { "would delete" } else { "deleted" };
    println!(
        "{verb}: {} sessions, {} refresh tokens, {} revoked jtis",
        report.sessions, report.refresh_tokens, report.revoked_jtis
    );
    Ok(())
}

fn bench() -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["bench", "-p", "auth-service", "--bench", "tokens"])
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("benchmarks failed".to_owned());
    }
    println!("reports: target/criterion/; record results in docs/benchmarks.md");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["migrate"] => open_store().await.map(drop),
        ["cleanup"] => cleanup(false).await,
        ["cleanup", "--dry-run"] => cleanup(true).await,
        ["bench"] => bench(),
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
