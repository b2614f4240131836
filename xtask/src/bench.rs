//! `cargo xtask bench [auth | gateway | sockets] [--quiet-logs]`: the benchmarks of SPEC §10,
//! every server in a process of its own, the load generator in another.
//!
//! - `auth`: the criterion benches of `auth-service` against the all-in-one binary.
//! - `gateway`: the gateway scenario (`crates/gateway/benches/proxy.rs`): a minimal upstream
//!   (the bench binary with `BENCH_SERVE_UPSTREAM`), the all-in-one binary serving the gateway
//!   with a route to it, and its peers in front of the same upstream, each with its own config
//!   as a child process (Debian's `nginx-light` and `haproxy`, installed with apt-get when
//!   missing, their package scripts kept from starting system daemons; Caddy when on `PATH`):
//!   nginx `proxy_pass` (two workers, keep-alive pool 64, access log to a file), HAProxy (two
//!   threads, `http-reuse always`), Caddy `reverse_proxy`, and Caddy `forward_auth` in front
//!   of the auth service; then the load generator against all of them, which also reports
//!   each one's CPU per request.
//! - `sockets`: `crates/socket-service/benches/sockets.rs` against the all-in-one binary's
//!   socket service: connect + validate, revocation → close, memory per idle connection
//!   (the server's RSS, read from `/proc/<pid>/status`).
//! - none named: all three, one after the other.
//! - `--quick` (run by CI): the gateway scenario on the debug build, each peer asked once;
//!   see [`quick`].
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
        ["--quick"] => quick().await,
        [] => {
            auth()?;
            gateway(quiet).await?;
            sockets()
        }
        ["auth"] => auth(),
        ["gateway"] => gateway(quiet).await,
        ["sockets"] => sockets(),
        _ => Err("usage: cargo xtask bench [auth | gateway | sockets] [--quiet-logs] | bench --quick".to_owned()),
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

    /// The process id of the last child started.
    fn last_pid(&self) -> u32 {
        self.0.last().map_or(0, |(_, child)| child.id())
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
    /// SIGTERM first, so a server with workers of its own (nginx) stops them too; whatever is
    /// still running two seconds later is killed.
    fn drop(&mut self) {
        for (_, child) in self.0.iter_mut().rev() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for (_, child) in self.0.iter_mut().rev() {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
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

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs the Debian packages of the peers that are missing (`nginx-light`, `haproxy`),
/// keeping their package scripts from starting system daemons (`policy-rc.d` answering 101
/// while apt runs). A peer that cannot be installed is skipped, with a message.
fn ensure_peers() {
    let missing: Vec<&str> = [("nginx", "nginx-light"), ("haproxy", "haproxy")]
        .iter()
        .filter(|(p, _)| !on_path(p))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return;
    }
    let guard = Path::new("/usr/sbin/policy-rc.d");
    let placed = !guard.exists() && std::fs::write(guard, "#!/bin/sh\nexit 101\n").is_ok();
    if placed {
        let _ = Command::new("chmod").args(["+x", "/usr/sbin/policy-rc.d"]).status();
    }
    let installed = Command::new("apt-get")
        .args(["install", "-y", "-q"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if placed {
        let _ = std::fs::remove_file(guard);
    }
    if !installed {
        println!("could not install {} with apt-get: those peers are skipped", missing.join(", "));
    }
}

/// nginx `proxy_pass` with two workers, an upstream keep-alive pool of 64 and its access log
/// written to a file, in the foreground.
fn nginx_conf(scratch: &Path, port: u16, upstream: u16) -> String {
    let dir = scratch.display();
    format!(
        "daemon off;\nmaster_process on;\nworker_processes 2;\npid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log {dir}/nginx-access.log;\n  client_body_temp_path {dir}/nginx-body;\n  \
         proxy_temp_path {dir}/nginx-proxy;\n  fastcgi_temp_path {dir}/nginx-fastcgi;\n  uwsgi_temp_path {dir}/nginx-uwsgi;\n  \
         scgi_temp_path {dir}/nginx-scgi;\n  \
         upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; }}\n  \
         server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://app;\n      \
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
    )
}

/// HAProxy with two threads and `http-reuse always`, in the foreground.
fn haproxy_conf(port: u16, upstream: u16) -> String {
    format!(
        "global\n  nbthread 2\n  maxconn 8192\n\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  http-reuse always\n\n\
         frontend edge\n  bind 127.0.0.1:{port}\n  default_backend app\n\n\
         backend app\n  server up 127.0.0.1:{upstream}\n"
    )
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
/// The servers of the gateway scenario, running until dropped.
struct Scenario {
    /// Killed when the scenario drops, before its scratch directory goes.
    _children: Children,
    _scratch: Scratch,
    upstream: u16,
    upstream_pid: u32,
    /// The all-in-one server's auth HTTP port.
    http: u16,
    /// `(name, port, pids)` of every proxy in front of the upstream, the gateway first.
    targets: Vec<(String, u16, Vec<u32>)>,
}

/// Where the scenario's upstream comes from.
enum UpstreamKind<'a> {
    /// The bench binary with `BENCH_SERVE_UPSTREAM` (the measured runs).
    Process(&'a Path),
    /// A thread of this process answering `200 ok` (the quick check).
    Thread,
}

/// Starts the upstream, the all-in-one server (`server`) with a route to it, and every peer
/// that is installed or can be: nginx `proxy_pass`, HAProxy, Caddy `reverse_proxy` and
/// `forward_auth`.
async fn start_scenario(server: &Path, upstream_kind: UpstreamKind<'_>, quiet_logs: bool) -> Result<Scenario, String> {
    let scratch = Scratch::new("bench-gateway")?;
    let mut children = Children::default();
    let (upstream, upstream_pid) = match upstream_kind {
        UpstreamKind::Process(load_generator) => {
            let port = free_port()?;
            children.spawn(
                "the upstream",
                Command::new(load_generator).env("BENCH_SERVE_UPSTREAM", port.to_string()).stdout(Stdio::null()),
            )?;
            children.wait_for(port)?;
            (port, children.last_pid())
        }
        UpstreamKind::Thread => (serve_ok_upstream()?, std::process::id()),
    };

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
    let portcullis_pid = children.last_pid();
    // The all-in-one process holds the gateway and the auth service.
    let mut targets = vec![("gateway (all-in-one)".to_owned(), edge, vec![portcullis_pid])];

    ensure_peers();
    if on_path("nginx") {
        let port = free_port()?;
        let file = scratch.0.join("nginx.conf");
        std::fs::write(&file, nginx_conf(&scratch.0, port, upstream))
            .map_err(|e| format!("{}: {e}", file.display()))?;
        children.spawn(
            "nginx",
            Command::new("nginx")
                .arg("-p")
                .arg(&scratch.0)
                .arg("-e")
                .arg(scratch.0.join("nginx-error.log"))
                .arg("-c")
                .arg(&file)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        children.wait_for(port)?;
        targets.push(("nginx proxy_pass".to_owned(), port, vec![children.last_pid()]));
    }
    if on_path("haproxy") {
        let port = free_port()?;
        let file = scratch.0.join("haproxy.cfg");
        std::fs::write(&file, haproxy_conf(port, upstream)).map_err(|e| format!("{}: {e}", file.display()))?;
        children.spawn(
            "haproxy",
            Command::new("haproxy").arg("-db").arg("-f").arg(&file).stdout(Stdio::null()).stderr(Stdio::null()),
        )?;
        children.wait_for(port)?;
        targets.push(("haproxy".to_owned(), port, vec![children.last_pid()]));
    }
    if caddy_installed() {
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
        let caddy_pid = children.last_pid();
        targets.push(("caddy reverse_proxy".to_owned(), plain, vec![caddy_pid]));
        // forward_auth costs Caddy and the auth service it asks (in the all-in-one process).
        targets.push(("caddy forward_auth".to_owned(), port, vec![caddy_pid, portcullis_pid]));
    } else {
        println!("caddy is not on PATH (Debian package `caddy`): its reverse_proxy and forward_auth rows are skipped");
    }
    Ok(Scenario { _children: children, _scratch: scratch, upstream, upstream_pid, http, targets })
}

async fn gateway(quiet_logs: bool) -> Result<(), String> {
    let root = workspace_root();
    let server = build_server(&root)?;
    let load_generator = build_load_generator(&root)?;
    let scenario = start_scenario(&server, UpstreamKind::Process(&load_generator), quiet_logs).await?;
    let targets: Vec<String> = scenario
        .targets
        .iter()
        .map(|(name, port, pids)| {
            let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
            format!("{name}|http://127.0.0.1:{port}|{}", pids.join(","))
        })
        .collect();
    let summary = target_dir(&root).join("bench-gateway.json");
    let mut bench = Command::new(cargo());
    bench
        .current_dir(&root)
        .args(["bench", "-p", "gateway", "--bench", "proxy"])
        .env("BENCH_UPSTREAM_URL", format!("http://127.0.0.1:{}", scenario.upstream))
        .env("BENCH_UPSTREAM_PID", scenario.upstream_pid.to_string())
        .env("BENCH_TARGETS", targets.join(";"))
        .env("BENCH_AUTH_HTTP", format!("http://127.0.0.1:{}", scenario.http))
        .env("BENCH_SUMMARY", &summary);
    println!(
        "gateway scenario: server logs {}",
        if quiet_logs {
            "at warn (no per-request access log)"
        } else {
            "at the default level (per-request JSON access log to /dev/null)"
        }
    );
    let status = bench.status().map_err(|e| e.to_string())?;
    drop(scenario);
    if !status.success() {
        return Err("the gateway benchmark failed".to_owned());
    }
    println!("record the results in docs/benchmarks.md (summary: {})", summary.display());
    Ok(())
}

/// `cargo xtask bench --quick` (run by CI): the gateway scenario on the debug build, every
/// peer started and asked for the route once with a user's Bearer token, each expected to
/// answer 200. It proves the scenario runs; it measures nothing and judges no speed.
pub async fn quick() -> Result<(), String> {
    let root = workspace_root();
    // The whole workspace's binaries with its tests, so the features are unified as the test
    // run unified them and only the binaries themselves are compiled and linked.
    let built = Command::new(cargo())
        .current_dir(&root)
        .args(["build", "--workspace", "--bins", "--tests"])
        .status()
        .map_err(|e| e.to_string())?;
    if !built.success() {
        return Err("building the server failed".to_owned());
    }
    let server = target_dir(&root).join("debug/portcullis");
    let scenario = start_scenario(&server, UpstreamKind::Thread, true).await?;
    let token = sign_up(scenario.http)?;
    let path = format!("{ROUTE_PREFIX}/item");
    for (name, port, _) in &scenario.targets {
        let answer = http_exchange(
            *port,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            ),
        )?;
        let status = answer.split_whitespace().nth(1).unwrap_or_default();
        if status != "200" {
            let head = answer.lines().next().unwrap_or_default();
            return Err(format!("{name} answered `{head}` for {path}; expected 200"));
        }
        println!("bench --quick: {name} answers 200");
    }
    Ok(())
}

/// One HTTP/1.1 exchange on a fresh connection (the request says `Connection: close`): the
/// whole answer as text.
fn http_exchange(port: u16, request: &str) -> Result<String, String> {
    use std::io::{Read as _, Write as _};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect to {port}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(|e| format!("read from {port}: {e}"))?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// Signs a new user up on the auth service and answers the access token.
fn sign_up(http: u16) -> Result<String, String> {
    let body = serde_json::json!({
        "name": "Bench",
        "email": format!("bench-{}@example.com", std::process::id()),
        "password": "correct horse battery staple",
    })
    .to_string();
    let answer = http_exchange(
        http,
        &format!(
            "POST /api/v1/auth/signup HTTP/1.1\r\nHost: 127.0.0.1:{http}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )?;
    let json = answer.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("signup answer: {e}: {answer}"))?;
    value["access_token"].as_str().map(str::to_owned).ok_or_else(|| format!("signup gave no access token: {answer}"))
}

/// A thread answering every request `200 ok` on keep-alive connections: the quick check's
/// upstream. Requests are read to the end of their head (the check sends no bodies).
fn serve_ok_upstream() -> Result<u16, String> {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(read) = stream.read(&mut chunk) {
                    if read == 0 {
                        break;
                    }
                    buffer.extend_from_slice(&chunk[..read]);
                    while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        buffer.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
                        if stream.write_all(answer).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    Ok(port)
}
