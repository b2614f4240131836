//! `cargo xtask <task>`: development and operations tasks for Portcullis.
//!
//! - `migrate`            apply migrations (PostgreSQL when `DATABASE_URL` is set, else the
//!   embedded SQLite file under `DATA_DIR`)
//! - `cleanup [--dry-run]` delete expired sessions, refresh tokens and revocations; print counts
//! - `users set-role <email> <member|admin>` change a user's role
//! - `bench [auth | gateway] [--quiet-logs]` run the benchmarks of SPEC §10 (both by default):
//!   the auth service's criterion benches, and the gateway scenario (direct upstream vs the
//!   gateway vs Caddy `forward_auth`); see [`bench`]
//! - `ssot-check`         prove only the auth service depends on a JWT library or reads `JWT_SECRET`
//! - `codemap-check`      prove ARCHITECTURE.md's codemap names only real paths and every module

mod bench;
mod codemap;
mod ssot;
#[cfg(test)]
mod surface;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use auth_service::store::{PostgresStore, SqliteStore, Store};
use platform::env::{EnvExt, OsEnv};

const USAGE: &str = "usage: cargo xtask <migrate | cleanup [--dry-run] | users set-role <email> <role> | bench [auth | gateway] [--quiet-logs] | ssot-check | codemap-check>";

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
    let now = platform::clock::Clock::now(&platform::clock::SystemClock);
    let report = store
        .cleanup(now, now - auth_service::service::ENDED_SESSION_RETENTION, dry_run)
        .await
        .map_err(|e| e.to_string())?;
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
    let role = auth_service::domain::role::Role::parse(role).map_err(|e| e.to_string())?;
    let store = open_store().await?;
    // With REDIS_URL the running services hear of it at once; without, within a minute.
    let bus = match OsEnv.string("REDIS_URL") {
        Some(url) => {
            let pool = platform::redis::connect(&url).await.map_err(|e| e.to_string())?;
            Some(platform::bus::RedisBus::new(&url, pool).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let bus = bus.as_ref().map(|b| b as &dyn platform::bus::EventBus);
    let user = auth_service::service::admin::set_role_as_operator(store.as_ref(), bus, email, role).await.map_err(
        |e| match e {
            auth_service::Error::NotFound => format!("no user with email {email}"),
            other => other.to_string(),
        },
    )?;
    let announced = if bus.is_some() { "; auth:user.role_changed published" } else { "" };
    println!("{} is now {} (audited{announced})", user.email, user.role);
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["migrate"] => open_store().await.map(drop),
        ["cleanup"] => cleanup(false).await,
        ["cleanup", "--dry-run"] => cleanup(true).await,
        ["users", "set-role", email, role] => set_role(email, role).await,
        ["bench", rest @ ..] => bench::run(rest).await,
        ["ssot-check"] => ssot::run(&workspace_root()),
        ["codemap-check"] => codemap::run(&workspace_root()),
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
