//! The all-in-one Portcullis binary: every service in one process. By default it runs
//! embedded (SQLite under `DATA_DIR`, the in-process bus, dev secrets generated once); with
//! `DATABASE_URL` and `REDIS_URL` set it uses PostgreSQL and Redis instead.

use std::{net::SocketAddr, process::ExitCode, sync::Arc};

use auth_service::{AuthConfig, AuthService, Backends, Mode};
use platform::{clock::SystemClock, env::OsEnv};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match AuthConfig::from_env(&OsEnv, Mode::Embedded) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("portcullis: {err}");
            return ExitCode::from(2);
        }
    };
    platform::telemetry::init(config.log_json);
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("portcullis: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: AuthConfig) -> Result<(), String> {
    let backends = Backends::connect(&config).await.map_err(|e| format!("cannot start: {e}"))?;
    let storage = match &config.backend {
        auth_service::config::Backend::Embedded { data_dir } => {
            format!("SQLite at {}", data_dir.join(auth_service::app::SQLITE_FILE).display())
        }
        auth_service::config::Backend::Shared { .. } => "PostgreSQL and Redis".to_owned(),
    };
    let http_addr = SocketAddr::new(config.host, config.port);
    let grpc_addr = SocketAddr::new(config.host, config.grpc_port);
    let service =
        AuthService::new(config, backends.deps(Arc::new(SystemClock))).map_err(|e| format!("cannot start: {e}"))?;
    let listeners = auth_service::app::bind(http_addr, grpc_addr)
        .await
        .map_err(|e| format!("cannot listen on {http_addr} / {grpc_addr}: {e}"))?;
    let auth_addr = listeners.http.local_addr().map_err(|e| e.to_string())?;
    let grpc_addr = listeners.grpc.local_addr().map_err(|e| e.to_string())?;
    print_banner(auth_addr, grpc_addr, &storage);
    auth_service::run(service, listeners, platform::shutdown::signal()).await.map_err(|e| format!("server error: {e}"))
}

fn print_banner(auth: SocketAddr, grpc: SocketAddr, storage: &str) {
    let base = format!("http://{auth}");
    println!(
        "\nPortcullis is running (embedded, {storage}).\n\
         \n  auth service   {base}/api/v1/auth\n  auth gRPC      {grpc}\n  OpenAPI        {base}/openapi.json\n  health         {base}/health\n\
         \nTry it:\n  curl -s {base}/api/v1/auth/signup -H 'content-type: application/json' \\\n       \
         -d '{{\"name\":\"Ada\",\"email\":\"ada@example.com\",\"password\":\"correct horse battery staple\"}}'\n"
    );
}
