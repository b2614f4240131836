//! `cargo xtask <task>`: development and operations tasks for Portcullis.
//!
//! - `migrate`            apply migrations (PostgreSQL when `DATABASE_URL` is set, else the
//!   embedded SQLite file under `DATA_DIR`)
//! - `cleanup [--dry-run]` delete expired sessions, refresh tokens and revocations; print counts
//! - `users set-role <email> <member|admin>` change a user's role
//! - `bench`              run the criterion benchmarks and print where the reports are
//! - `ssot-check`         prove only the auth service depends on a JWT library or reads `JWT_SECRET`

mod ssot;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use auth_service::store::{PostgresStore, SqliteStore, Store};
use platform::env::{EnvExt, OsEnv};

const USAGE: &str =
    "usage: cargo xtask <migrate | cleanup [--dry-run] | users set-role <email> <role> | bench | ssot-check>";

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
    let role = role.parse().map_err(|e: String| e)?;
    let store = open_store().await?;
    let user =
        auth_service::service::admin::set_role_by_email(store.as_ref(), email, role).await.map_err(|e| match e {
            auth_service::Error::NotFound => format!("no user with email {email}"),
            other => other.to_string(),
        })?;
    println!("{} is now {}", user.email, user.role);
    Ok(())
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Builds and starts the all-in-one binary as the benchmark's auth service, in its own
/// process (SPEC §10), then runs the criterion benchmarks against it.
fn bench() -> Result<(), String> {
    const SECRET: &str = "bench-service-secret-0123456789abcdef0123";
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let root = workspace_root();
    let built = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--release", "-p", "portcullis"])
        .status()
        .map_err(|e| e.to_string())?;
    if !built.success() {
        return Err("building the server failed".to_owned());
    }
    let data = std::env::temp_dir().join(format!("portcullis-bench-{}", std::process::id()));
    let (http, grpc) = (free_port()?, free_port()?);
    let mut server = Command::new(root.join("target/release/portcullis"))
        .env("DATA_DIR", &data)
        .env("AUTH_PORT", http.to_string())
        .env("AUTH_GRPC_PORT", grpc.to_string())
        .env("SERVICE_SECRET", SECRET)
        .env("JWT_EXPIRES_IN", "1h")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the server: {e}"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err() {
        if std::time::Instant::now() > deadline {
            let _ = server.kill();
            return Err("the server did not start".to_owned());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args(["bench", "-p", "auth-service", "--bench", "tokens", "--bench", "contract", "--bench", "storm"])
        .env("BENCH_AUTH_HTTP", format!("http://127.0.0.1:{http}"))
        .env("BENCH_AUTH_GRPC", format!("http://127.0.0.1:{grpc}"))
        .env("BENCH_SERVICE_SECRET", SECRET)
        .status()
        .map_err(|e| e.to_string());
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&data);
    if !status?.success() {
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
        ["users", "set-role", email, role] => set_role(email, role).await,
        ["bench"] => bench(),
        ["ssot-check"] => ssot::run(&workspace_root()),
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
