//! `cargo xtask <task>`: development and operations tasks for Portcullis.
//!
//! - `migrate`            apply migrations (PostgreSQL when `DATABASE_URL` is set, else the
//!   embedded SQLite file under `DATA_DIR`)
//! - `cleanup [--dry-run]` delete expired sessions, refresh tokens and revocations; print counts
//! - `users set-role <email> <member|admin>` change a user's role
//! - `bench [auth | gateway [--pinned | --callgrind] [--record] | sockets | webhooks [spool]
//!   [redis] [rabbitmq] [--record]] [--quiet-logs]` and `bench --quick` run the benchmarks of
//!   SPEC §10 (all by default): the auth service's criterion benches, the gateway scenario
//!   judged against its peers and a bare hyper forwarder, the socket service's, and webhook
//!   ingestion per backend; see [`bench`]
//! - `ssot-check`         prove only the auth service depends on a JWT library or reads `JWT_SECRET`
//! - `codemap-check`      prove ARCHITECTURE.md's codemap names only real paths and every module
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

const USAGE: &str = "usage: cargo xtask <migrate | cleanup [--dry-run] | users set-role <email> <role> | bench [auth | gateway [--pinned | --callgrind] [--record] | sockets | webhooks [spool] [redis] [rabbitmq] [--record]] [--quiet-logs] | bench --quick | ssot-check | codemap-check | webhooks dead <list|show|replay> <source> [name|--all] | run --distributed [--scenario] | doc-blocks [--run] | keys rotate (--env-file <path> | --data-dir <dir>) (--stage | --promote | --prune) [--only jwt|service|context] | keys retire --dir <deployment> [--dry-run]>";

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

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["migrate"] => open_service().await.map(drop),
        ["cleanup"] => cleanup(false).await,
        ["cleanup", "--dry-run"] => cleanup(true).await,
        ["users", "set-role", email, role] => set_role(email, role).await,
        ["bench", rest @ ..] => bench::run(rest).await,
        ["ssot-check"] => ssot::run(&workspace_root()),
        ["codemap-check"] => codemap::run(&workspace_root()),
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
