//! `cargo xtask bench [auth | gateway | sockets] [--quiet-logs]`: the benchmarks of SPEC §10,
//! every server in a process of its own, the load generator in another.
//!
//! - `auth`: the criterion benches of `auth-service` against the all-in-one binary.
//! - `gateway`: the gateway scenario (`crates/gateway/benches/proxy.rs`): a minimal upstream
//!   (the bench binary with `BENCH_SERVE_UPSTREAM`), the all-in-one binary serving the gateway
//!   with a route to it, and, when `caddy` is on `PATH`, Caddy `forward_auth` in front of the
//!   auth service and the same upstream (plus a plain Caddy `reverse_proxy` to it, the cost of
//!   a proxy hop alone); then the load generator against all of them.
//! - `sockets`: `crates/socket-service/benches/sockets.rs` against the all-in-one binary's
//!   socket service: connect + validate, revocation → close, memory per idle connection
//!   (the server's RSS, read from `/proc/<pid>/status`).
//! - none named: all three, one after the other.
//!
//! `--quiet-logs` runs the gateway scenario's servers with `RUST_LOG=warn`, so the gateway
//! writes no per-request access log line; by default they log as in production (`info`,
//! `LOG_FORMAT=json`, to `/dev/null`). Every child process is killed when the scenario returns,
//! fails or panics (a guard's `Drop`); Ctrl-C reaches them through the process group.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use auth_contract::proto::{IssueServiceTokenRequest, auth_internal_client::AuthInternalClient};

use crate::workspace_root;

const SECRET: &str = "bench-service-secret-0123456789abcdef0123";
/// The gateway route the scenario measures; the load generator asks for a path beneath it.
const ROUTE_PREFIX: &str = "/v1/user/bench";

pub async fn run(args: &[&str]) -> Result<(), String> {
    let quiet = args.contains(&"--quiet-logs");
    let which: Vec<&str> = args.iter().copied().filter(|a| *a != "--quiet-logs").collect();
    match which.as_slice() {
        [] => {
            auth()?;
            gateway(quiet).await?;
            sockets()
        }
        ["auth"] => auth(),
        ["gateway"] => gateway(quiet).await,
        ["sockets"] => sockets(),
        _ => Err("usage: cargo xtask bench [auth | gateway | sockets] [--quiet-logs]".to_owned()),
    }
}

/// Children killed (and reaped) when dropped, whichever way the scenario ends.
#[derive(Default)]
struct Children(Vec<(&'static str, Child)>);

impl Children {
    fn spawn(&mut self, name: &'static str, command: &mut Command) -> Result<(), String> {
        let child = command.spawn().map_err(|e| format!("cannot start {name}: {e}"))?;
        self.0.push((name, child));
        Ok(())
    }

    /// Waits until `port` accepts connections, failing if the last child started exits first.
    fn wait_for(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let Some((name, child)) = self.0.last_mut() else {
            return Err("nothing started".to_owned());
        };
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("{name} exited before listening on {port}: {status}"));
            }
            if Instant::now() > deadline {
                return Err(format!("{name} did not listen on {port} within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in self.0.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Result<Self, String> {
        let path = std::env::temp_dir().join(format!("portcullis-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// `CARGO_TARGET_DIR` if set (relative to the workspace), else `target/`.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Builds the release all-in-one binary and answers its path.
fn build_server(root: &Path) -> Result<PathBuf, String> {
    let built = Command::new(cargo())
        .current_dir(root)
        .args(["build", "--release", "-p", "portcullis"])
        .status()
        .map_err(|e| e.to_string())?;
    if !built.success() {
        return Err("building the server failed".to_owned());
    }
    Ok(target_dir(root).join("release/portcullis"))
}

/// The all-in-one binary on fresh data and the given auth ports, the gateway on any free
/// port, logging only warnings.
fn quiet_server(server: &Path, data: &Scratch, http: u16, grpc: u16) -> Command {
    let mut command = Command::new(server);
    command
        .env("DATA_DIR", &data.0)
        .env("AUTH_PORT", http.to_string())
        .env("AUTH_GRPC_PORT", grpc.to_string())
        .env("GATEWAY_PORT", "0")
        .env("SERVICE_SECRET", SECRET)
        .env("JWT_EXPIRES_IN", "1h")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    command
}

/// The all-in-one binary as the auth service, then the criterion benches of `auth-service`
/// against it.
fn auth() -> Result<(), String> {
    let root = workspace_root();
    let server = build_server(&root)?;
    let data = Scratch::new("bench-auth")?;
    let (http, grpc) = (free_port()?, free_port()?);
    let mut children = Children::default();
    children.spawn("the server", quiet_server(&server, &data, http, grpc).env("SOCKET_PORT", "0"))?;
    children.wait_for(grpc)?;
    let status = Command::new(cargo())
        .current_dir(&root)
        .args(["bench", "-p", "auth-service", "--bench", "tokens", "--bench", "contract", "--bench", "storm"])
        .env("BENCH_AUTH_HTTP", format!("http://127.0.0.1:{http}"))
        .env("BENCH_AUTH_GRPC", format!("http://127.0.0.1:{grpc}"))
        .env("BENCH_SERVICE_SECRET", SECRET)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("benchmarks failed".to_owned());
    }
    println!("reports: {}; record results in docs/benchmarks.md", target_dir(&root).join("criterion").display());
    Ok(())
}

/// The all-in-one binary, then the socket-service load generator against its socket service.
fn sockets() -> Result<(), String> {
    let root = workspace_root();
    let server = build_server(&root)?;
    let data = Scratch::new("bench-sockets")?;
    let (http, grpc, socket) = (free_port()?, free_port()?, free_port()?);
    let mut children = Children::default();
    children.spawn(
        "the server",
        quiet_server(&server, &data, http, grpc)
            .env("SOCKET_PORT", socket.to_string())
            .env("MAX_SESSIONS_PER_USER", "1000"),
    )?;
    children.wait_for(socket)?;
    let pid = children.0.last().map(|(_, child)| child.id()).ok_or("the server did not start")?;
    let status = Command::new(cargo())
        .current_dir(&root)
        .args(["bench", "-p", "socket-service", "--bench", "sockets"])
        .env("BENCH_AUTH_HTTP", format!("http://127.0.0.1:{http}"))
        .env("BENCH_SOCKET_URL", format!("ws://127.0.0.1:{socket}"))
        .env("BENCH_SERVER_PID", pid.to_string())
        .status()
        .map_err(|e| e.to_string())?;
    drop(children);
    if !status.success() {
        return Err("the socket benchmark failed".to_owned());
    }
    Ok(())
}

/// Builds `crates/gateway/benches/proxy.rs` and answers its executable, which is also the
/// upstream.
fn build_load_generator(root: &Path) -> Result<PathBuf, String> {
    let output = Command::new(cargo())
        .current_dir(root)
        .args(["bench", "-p", "gateway", "--bench", "proxy", "--no-run", "--message-format=json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err("building the gateway bench failed".to_owned());
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "proxy")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo did not name the proxy bench executable".to_owned())
}

fn caddy_installed() -> bool {
    Command::new("caddy").arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

async fn service_token(grpc: u16) -> Result<String, String> {
    let mut client = AuthInternalClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .map_err(|e| format!("cannot reach the auth service over gRPC: {e}"))?;
    let issued = client
        .issue_service_token(IssueServiceTokenRequest {
            service_name: "caddy-bench".to_owned(),
            service_secret: SECRET.to_owned(),
        })
        .await
        .map_err(|e| format!("IssueServiceToken: {e}"))?;
    Ok(issued.into_inner().token)
}

/// The Caddy setup of `crates/auth-service/tests/it/forward_auth.rs` and `docs/contract.md`:
/// strip client-sent context headers, ask the auth service's HTTP mirror, proxy with the
/// headers it answered; `route` keeps that order. A second site on `plain` proxies to the same
/// upstream without any authentication, the cost of the proxy hop alone.
fn caddyfile(port: u16, plain: u16, auth_http: u16, token: &str, upstream: u16) -> String {
    // A client must not be able to set these; Caddy strips them before `forward_auth`.
    let strip: String = auth_contract::headers::CONTEXT_HEADERS
        .iter()
        .map(|h| format!("    request_header -{}\n", h.as_str()))
        .collect();
    format!(
        "{{\n  admin off\n  auto_https off\n}}\nhttp://127.0.0.1:{port} {{\n  route {{\n{strip}    \
         forward_auth 127.0.0.1:{auth_http} {{\n      uri /api/v1/auth/internal/validate\n      \
         header_up X-Service-Token {token}\n      \
         copy_headers X-Auth-Kind X-User-Id X-Tenant-Id X-Client-Id X-Session-Id X-Scopes X-Role X-Request-Id X-Context-Timestamp X-Context-Signature\n    }}\n    \
         reverse_proxy 127.0.0.1:{upstream}\n  }}\n}}\n\
         http://127.0.0.1:{plain} {{\n  reverse_proxy 127.0.0.1:{upstream}\n}}\n"
    )
}

/// The gateway scenario of SPEC §10, all targets in one run.
async fn gateway(quiet_logs: bool) -> Result<(), String> {
    let root = workspace_root();
    let server = build_server(&root)?;
    let load_generator = build_load_generator(&root)?;
    let scratch = Scratch::new("bench-gateway")?;
    let mut children = Children::default();

    let upstream = free_port()?;
    children.spawn(
        "the upstream",
        Command::new(&load_generator).env("BENCH_SERVE_UPSTREAM", upstream.to_string()).stdout(Stdio::null()),
    )?;
    children.wait_for(upstream)?;

    let routes = scratch.0.join("routes.toml");
    std::fs::write(
        &routes,
        format!("[[routes]]\nprefix = \"{ROUTE_PREFIX}\"\nupstream = \"http://127.0.0.1:{upstream}\"\nauth = [\"user\", \"pat\"]\n"),
    )
    .map_err(|e| format!("{}: {e}", routes.display()))?;
    let (http, grpc, edge) = (free_port()?, free_port()?, free_port()?);
    let mut portcullis = Command::new(server);
    portcullis
        .env("DATA_DIR", scratch.0.join("data"))
        .env("AUTH_PORT", http.to_string())
        .env("AUTH_GRPC_PORT", grpc.to_string())
        .env("GATEWAY_PORT", edge.to_string())
        .env("GATEWAY_CONFIG", &routes)
        .env("SOCKET_PORT", "0")
        .env("SERVICE_SECRET", SECRET)
        .env("SERVICE_TOKEN_EXPIRES_IN", "1h")
        .env("JWT_EXPIRES_IN", "1h")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null());
    if quiet_logs {
        portcullis.env("RUST_LOG", "warn");
    } else {
        portcullis.env_remove("RUST_LOG");
    }
    children.spawn("the all-in-one server", &mut portcullis)?;
    children.wait_for(grpc)?;
    children.wait_for(edge)?;

    let caddy = if caddy_installed() {
        let token = service_token(grpc).await?;
        let (port, plain) = (free_port()?, free_port()?);
        let file = scratch.0.join("Caddyfile");
        std::fs::write(&file, caddyfile(port, plain, http, &token, upstream))
            .map_err(|e| format!("{}: {e}", file.display()))?;
        children.spawn(
            "caddy",
            Command::new("caddy")
                .args(["run", "--adapter", "caddyfile", "--config"])
                .arg(&file)
                .env("HOME", &scratch.0)
                .env("XDG_DATA_HOME", &scratch.0)
                .env("XDG_CONFIG_HOME", &scratch.0)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        children.wait_for(port)?;
        children.wait_for(plain)?;
        Some((port, plain))
    } else {
        println!("caddy is not on PATH (Debian package `caddy`): the Caddy forward_auth figures are skipped");
        None
    };

    let summary = target_dir(&root).join("bench-gateway.json");
    let mut bench = Command::new(cargo());
    bench
        .current_dir(&root)
        .args(["bench", "-p", "gateway", "--bench", "proxy"])
        .env("BENCH_UPSTREAM_URL", format!("http://127.0.0.1:{upstream}"))
        .env("BENCH_GATEWAY_URL", format!("http://127.0.0.1:{edge}"))
        .env("BENCH_AUTH_HTTP", format!("http://127.0.0.1:{http}"))
        .env("BENCH_SUMMARY", &summary)
        .env_remove("BENCH_CADDY_URL")
        .env_remove("BENCH_CADDY_PROXY_URL");
    if let Some((port, plain)) = caddy {
        bench.env("BENCH_CADDY_URL", format!("http://127.0.0.1:{port}"));
        bench.env("BENCH_CADDY_PROXY_URL", format!("http://127.0.0.1:{plain}"));
    }
    println!(
        "gateway scenario: server logs {}",
        if quiet_logs {
            "at warn (no per-request access log)"
        } else {
            "at the default level (per-request JSON access log to /dev/null)"
        }
    );
    let status = bench.status().map_err(|e| e.to_string())?;
    drop(children);
    if !status.success() {
        return Err("the gateway benchmark failed".to_owned());
    }
    println!("record the results in docs/benchmarks.md (summary: {})", summary.display());
    Ok(())
}
