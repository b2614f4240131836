//! `cargo xtask bench [auth | gateway [--pinned | --callgrind] [--record] | sockets | webhooks
//! [spool] [redis] [rabbitmq] [--record]] [--quiet-logs]`: the benchmarks of SPEC §10, every
//! server in a process of its own, the load generator in another.
//!
//! - `auth`: the criterion benches of `auth-service` against the all-in-one binary.
//! - `gateway`: the gateway scenario judged as issue 12 says (the load generator and its
//!   summary: `crates/gateway/benches/proxy/`). One upstream (the bench binary with
//!   `BENCH_SERVE_UPSTREAM`: a plain port, and a port verifying the signed context that the
//!   gateways' routes point to); the standalone `auth-service` and `gateway` binaries in
//!   distributed mode on a fresh PostgreSQL database and a Redis key prefix of their own (the
//!   judged row; a second route with a tenant rate limit that never refuses, Redis's CPU
//!   counted too); the all-in-one binary; a bare hyper forwarder (the bench binary with
//!   `BENCH_SERVE_FORWARDER`); and the peers, each with its own config as a child process
//!   (Debian's `nginx-light` and `haproxy`, installed with apt-get when missing, their package
//!   scripts kept from starting system daemons; Caddy when on `PATH`): nginx `proxy_pass`
//!   (keep-alive pool 64, access log to a file), HAProxy (`http-reuse always`), Caddy
//!   `reverse_proxy`, and Caddy `forward_auth` in front of the auth service. Two workers each
//!   (`TOKIO_WORKER_THREADS`, `worker_processes`, `nbthread`, `GOMAXPROCS`). A second upstream
//!   burns 200 µs of thread CPU per request, reached direct and through the gateway. Then the
//!   pinned pass: the gateway, nginx and the forwarder alone on CPU 1 with one worker each,
//!   upstream, auth service and load on CPU 0. `--pinned` runs only that pass; `--callgrind`
//!   only the instruction counts (the gateway and the forwarder under callgrind); `--record`
//!   copies the chart to `docs/benchmarks/gateway.svg`.
//! - `sockets`: `crates/socket-service/benches/sockets.rs` against the all-in-one binary's
//!   socket service: connect + validate, revocation → close, memory per idle connection
//!   (the server's RSS, read from `/proc/<pid>/status`).
//! - `webhooks`: webhook ingestion on the spool, Redis and RabbitMQ (or the backends named),
//!   the upstream fast and down (the load generator: `crates/gateway/benches/webhooks/`); see
//!   [`webhooks`].
//! - none named: all four, one after the other.
//! - `--quick` (run by CI): the gateway scenario on the debug build, each target asked once,
//!   and a webhook smoke on the spool; see [`quick`].
//!
//! `--quiet-logs` runs the gateway and webhook scenarios' servers with `RUST_LOG=warn`, so the
//! gateway writes no per-request (or per-event) log line; by default they log as in production
//! (`info`, `LOG_FORMAT=json`, to a file in the scratch directory). Every child process is
//! killed when the scenario returns, fails or panics (a guard's `Drop`), then its database is
//! dropped, its Redis keys and RabbitMQ queues deleted; Ctrl-C reaches them through the
//! process group.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use auth_contract::proto::{IssueServiceTokenRequest, auth_internal_client::AuthInternalClient};

use crate::workspace_root;

mod webhooks;

const USAGE: &str = "usage: cargo xtask bench [auth | gateway [--pinned | --callgrind] [--record] | sockets \
                     | webhooks [spool] [redis] [rabbitmq] [--record]] [--quiet-logs] | bench --quick";
const SECRET: &str = "bench-service-secret-0123456789abcdef0123";
/// The gateway route the scenario measures; the load generator asks for a path beneath it.
const ROUTE_PREFIX: &str = "/v1/user/bench";

pub async fn run(args: &[&str]) -> Result<(), String> {
    let flag = |name: &str| args.contains(&name);
    let options = GatewayOptions {
        quiet_logs: flag("--quiet-logs"),
        pinned: flag("--pinned"),
        callgrind: flag("--callgrind"),
        record: flag("--record"),
    };
    let which: Vec<&str> = args.iter().copied().filter(|a| !a.starts_with("--") || *a == "--quick").collect();
    let gateway_only = options.pinned || options.callgrind || options.record;
    match which.as_slice() {
        ["--quick"] => quick().await,
        [] if !gateway_only => {
            auth()?;
            gateway(&options).await?;
            sockets()?;
            webhooks::run(&[], options.quiet_logs, false)
        }
        ["gateway"] | [] => gateway(&options).await,
        ["auth"] => auth(),
        ["sockets"] => sockets(),
        ["webhooks", backends @ ..] if !options.pinned && !options.callgrind => {
            webhooks::run(backends, options.quiet_logs, options.record)
        }
        _ => Err(USAGE.to_owned()),
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
        self.wait_within(port, Duration::from_secs(30))
    }

    /// [`Self::wait_for`] with a limit of `limit` (a server under valgrind starts slowly).
    fn wait_within(&mut self, port: u16, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let Some((name, child)) = self.0.last_mut() else {
            return Err("nothing started".to_owned());
        };
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("{name} exited before listening on {port}: {status}"));
            }
            if Instant::now() > deadline {
                return Err(format!("{name} did not listen on {port} within {} s", limit.as_secs()));
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

/// The binaries the gateway scenario runs, of one build profile.
struct Binaries {
    portcullis: PathBuf,
    auth_service: PathBuf,
    gateway: PathBuf,
    /// `crates/gateway/benches/proxy`: the load generator, the upstream and the forwarder.
    bench: PathBuf,
    /// `crates/gateway/benches/webhooks`: the webhook load generator and its fast upstream.
    webhooks: PathBuf,
}

/// Builds the servers and the bench binary (`--release`, or the debug build reusing the test
/// run's feature set) and answers their paths.
fn build_binaries(root: &Path, release: bool) -> Result<Binaries, String> {
    let mut command = Command::new(cargo());
    command.current_dir(root);
    if release {
        command.args(["build", "--release", "-p", "portcullis", "-p", "auth-service", "-p", "gateway", "--bins"]);
        command.args(["--bench", "proxy", "--bench", "webhooks"]);
    } else {
        // The whole workspace's binaries with its tests, so the features are unified as the
        // test run unified them and only the binaries and the benches themselves are compiled.
        command.args(["build", "--workspace", "--bins", "--tests", "--bench", "proxy", "--bench", "webhooks"]);
    }
    let output = command
        .args(["--message-format=json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err("building the gateway scenario failed".to_owned());
    }
    let messages = String::from_utf8_lossy(&output.stdout);
    let executable = |name: &str| {
        messages
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .ok_or_else(|| format!("cargo did not name the {name} bench executable"))
    };
    let dir = target_dir(root).join(if release { "release" } else { "debug" });
    Ok(Binaries {
        portcullis: dir.join("portcullis"),
        auth_service: dir.join("auth-service"),
        gateway: dir.join("gateway"),
        bench: executable("proxy")?,
        webhooks: executable("webhooks")?,
    })
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

/// nginx `proxy_pass` with `workers` workers, an upstream keep-alive pool of 64 and its access
/// log written to a file, in the foreground. Client connections are kept for as many requests
/// as the load sends, as every other target keeps them (nginx closes one after 1 000 by
/// default, and reconnecting would cost it CPU the others do not pay).
fn nginx_conf(scratch: &Path, port: u16, upstream: u16, workers: u32) -> String {
    let dir = scratch.display();
    format!(
        "daemon off;\nmaster_process on;\nworker_processes {workers};\npid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log {dir}/nginx-access.log;\n  keepalive_requests 1000000;\n  client_body_temp_path {dir}/nginx-body;\n  \
         proxy_temp_path {dir}/nginx-proxy;\n  fastcgi_temp_path {dir}/nginx-fastcgi;\n  uwsgi_temp_path {dir}/nginx-uwsgi;\n  \
         scgi_temp_path {dir}/nginx-scgi;\n  \
         upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; }}\n  \
         server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://app;\n      \
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
    )
}

/// HAProxy with `workers` threads and `http-reuse always`, in the foreground.
fn haproxy_conf(port: u16, upstream: u16, workers: u32) -> String {
    format!(
        "global\n  nbthread {workers}\n  maxconn 8192\n\n\
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

/// A fresh PostgreSQL database for the distributed auth service, dropped with this guard.
struct Database {
    name: String,
}

impl Database {
    fn create() -> Result<Self, String> {
        let name = format!("pc_bench_{}_{}", std::process::id(), free_port()?);
        psql(&format!("CREATE DATABASE \"{name}\""))?;
        Ok(Self { name })
    }

    fn url(&self) -> String {
        format!("{}/{}", postgres_base(), self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = psql(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name));
    }
}

/// `BENCH_POSTGRES` (a server URL without a database), else the local server.
fn postgres_base() -> String {
    std::env::var("BENCH_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

fn psql(statement: &str) -> Result<(), String> {
    let output = Command::new("psql")
        .arg(format!("{}/postgres", postgres_base()))
        .args(["-qAtc", statement])
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("psql `{statement}`: {}", String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// `BENCH_REDIS` (`host:port`), else the local server.
fn redis_address() -> String {
    std::env::var("BENCH_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".to_owned())
}

fn redis_cli(args: &[&str]) -> Result<String, String> {
    let address = redis_address();
    let (host, port) = address.rsplit_once(':').ok_or("BENCH_REDIS is host:port")?;
    let output = Command::new("redis-cli")
        .args(["-h", host, "-p", port])
        .args(args)
        .output()
        .map_err(|e| format!("redis-cli: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!("redis-cli {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// redis-server's process id (`INFO server`), whose CPU the tenant-limit row counts.
fn redis_pid() -> Option<u32> {
    let info = redis_cli(&["info", "server"]).ok()?;
    info.lines().find_map(|l| l.strip_prefix("process_id:")).and_then(|p| p.trim().parse().ok())
}

/// A Redis key prefix of the scenario's own; its keys are deleted with this guard.
struct RedisPrefix(String);

impl RedisPrefix {
    fn new() -> Result<Self, String> {
        redis_cli(&["ping"])
            .map_err(|e| format!("Redis at {} is needed for the distributed gateway: {e}", redis_address()))?;
        Ok(Self(format!("pc-bench-{}-{}:", std::process::id(), free_port()?)))
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let Ok(keys) = redis_cli(&["--scan", "--pattern", &format!("{}*", self.0)]) else { return };
        let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
        for chunk in keys.chunks(500) {
            let mut args = vec!["del"];
            args.extend_from_slice(chunk);
            let _ = redis_cli(&args);
        }
    }
}

/// Which servers a pass starts, and how.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Every target, two workers each, unpinned (the judged figures).
    Shared,
    /// The gateway (distributed), nginx and the bare forwarder alone on CPU 1 with one worker
    /// each; the upstream, the auth service and the load on CPU 0.
    Pinned,
    /// The gateway (distributed) and the bare forwarder under callgrind.
    Callgrind,
    /// Every target on the debug build, each asked once.
    Quick,
}

impl Pass {
    /// Workers of every proxy (tokio worker threads, nginx processes, HAProxy threads, Caddy's
    /// `GOMAXPROCS`).
    fn workers(self) -> u32 {
        if self == Self::Pinned { 1 } else { 2 }
    }

    /// The CPU list proxies are pinned to, and the one the rest is pinned to.
    fn cpus(self) -> Option<(&'static str, &'static str)> {
        (self == Self::Pinned).then_some(("1", "0"))
    }

    fn every_peer(self) -> bool {
        matches!(self, Self::Shared | Self::Quick)
    }
}

/// A command for `program`, under `taskset -c cpus` when given.
fn pinned(program: &Path, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.args(["-c", cpus]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// A command for `program` under callgrind with instrumentation off until switched on, its
/// output named `out` (the bench switches it on, zeroes, dumps). Valgrind names the FIFOs
/// `callgrind_control` talks through after `$HOST`, which our servers read as their listen
/// address: it is set to [`CALLGRIND_HOST`] for every process under callgrind, and the bench
/// runs `callgrind_control` with the same.
fn under_callgrind(program: &Path, out: &Path) -> Command {
    let mut command = Command::new("valgrind");
    command
        .args(["--tool=callgrind", "--instr-atstart=no"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(program)
        .env("HOST", CALLGRIND_HOST);
    command
}

/// `HOST` of the processes under callgrind (see [`under_callgrind`]); the bench's
/// `callgrind_control` is given the same.
const CALLGRIND_HOST: &str = "127.0.0.1";

/// The secrets every service of the scenario shares; distinct, as the auth service wants.
const CONTEXT_SECRET: &str = "bench-context-signing-secret-0123456789abcdef";
const JWT_SECRET: &str = "bench-jwt-secret-0123456789abcdef0123456789";
/// The gateway routes: the measured one, one with a tenant rate limit, one to the busy upstream.
const LIMITED_PREFIX: &str = "/v1/user/limited";
const BUSY_PREFIX: &str = "/v1/user/busy";
/// A tenant (here: per principal) limit far above anything the bench can send.
const NEVER_REFUSING_LIMIT: &str = "100000000/second";
/// Thread CPU the busy upstream burns per request.
const BUSY_UPSTREAM_US: u32 = 200;

/// Sets the log level and the log file of one of our servers: the default level (`info`, the
/// per-request access line included) unless `quiet`, JSON lines, stdout to `log`.
fn logs(command: &mut Command, quiet: bool, log: &Path) -> Result<(), String> {
    let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    if quiet {
        command.env("RUST_LOG", "warn");
    } else {
        command.env_remove("RUST_LOG");
    }
    command.env("LOG_FORMAT", "json").stdout(file);
    Ok(())
}

/// The auth service's ports.
#[derive(Clone, Copy)]
struct AuthPorts {
    http: u16,
    grpc: u16,
}

/// Starts the standalone auth service (pinned to `cpus` when given) on `database`, with
/// `redis`'s key prefix, logging to `auth-service.log` in `dir`; answers its ports once both
/// listen.
fn start_auth_service(
    children: &mut Children,
    bins: &Binaries,
    cpus: Option<&str>,
    database: &Database,
    redis: &RedisPrefix,
    dir: &Path,
    quiet_logs: bool,
) -> Result<AuthPorts, String> {
    let ports = AuthPorts { http: free_port()?, grpc: free_port()? };
    let mut auth = pinned(&bins.auth_service, cpus);
    auth.env("HOST", "127.0.0.1")
        .env("PORT", ports.http.to_string())
        .env("GRPC_PORT", ports.grpc.to_string())
        .env("DATABASE_URL", database.url())
        .env("REDIS_URL", format!("redis://{}", redis_address()))
        .env("REDIS_KEY_PREFIX", &redis.0)
        .env("JWT_SECRET", JWT_SECRET)
        .env("SERVICE_SECRET", SECRET)
        .env("CONTEXT_SIGNING_SECRET", CONTEXT_SECRET)
        .env("TRUSTED_PROXIES", "127.0.0.1/32")
        .env("JWT_EXPIRES_IN", "1h")
        .env("SERVICE_TOKEN_EXPIRES_IN", "1h");
    logs(&mut auth, quiet_logs, &dir.join("auth-service.log"))?;
    children.spawn("the auth service", &mut auth)?;
    children.wait_for(ports.http)?;
    children.wait_for(ports.grpc)?;
    Ok(ports)
}

/// What every standalone gateway of a scenario is given: the auth service, the Redis key
/// prefix, the routes file, the scratch directory, its workers and its log level.
struct GatewaySetup<'a> {
    auth: AuthPorts,
    redis: &'a RedisPrefix,
    routes: &'a Path,
    dir: &'a Path,
    workers: u32,
    quiet_logs: bool,
}

impl GatewaySetup<'_> {
    /// `gateway` (the binary itself, pinned or under callgrind) as the standalone gateway
    /// `name` on `port`, its data directory and log file named after it in the scratch
    /// directory. An inherited `AMQP_URL` is removed: the caller sets one when it wants it.
    fn command(&self, mut gateway: Command, name: &str, port: u16) -> Result<Command, String> {
        gateway
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("AUTH_SERVICE_URL", format!("http://127.0.0.1:{}", self.auth.grpc))
            .env("AUTH_HTTP_URL", format!("http://127.0.0.1:{}", self.auth.http))
            .env("REDIS_URL", format!("redis://{}", redis_address()))
            .env("REDIS_KEY_PREFIX", &self.redis.0)
            .env("SERVICE_SECRET", SECRET)
            .env("CONTEXT_SIGNING_SECRET", CONTEXT_SECRET)
            .env("GATEWAY_CONFIG", self.routes)
            .env("DATA_DIR", self.dir.join(format!("{name}-data")))
            .env("TOKIO_WORKER_THREADS", self.workers.to_string())
            .env_remove("AMQP_URL");
        logs(&mut gateway, self.quiet_logs, &self.dir.join(format!("{name}.log")))?;
        Ok(gateway)
    }
}

/// The all-in-one binary in embedded mode (SQLite and the spool under `data`), its auth
/// service on `auth`'s ports and its gateway on `port` with `routes`. `DATABASE_URL`,
/// `REDIS_URL` and `AMQP_URL` are removed, so none inherited from the shell makes it
/// distributed.
fn all_in_one_command(
    program: &Path,
    auth: &AuthPorts,
    port: u16,
    routes: &Path,
    data: &Path,
    workers: u32,
) -> Command {
    let mut command = Command::new(program);
    command
        .env("DATA_DIR", data)
        .env("AUTH_PORT", auth.http.to_string())
        .env("AUTH_GRPC_PORT", auth.grpc.to_string())
        .env("GATEWAY_PORT", port.to_string())
        .env("GATEWAY_CONFIG", routes)
        .env("SOCKET_PORT", "0")
        .env("SERVICE_SECRET", SECRET)
        .env("CONTEXT_SIGNING_SECRET", CONTEXT_SECRET)
        .env("SERVICE_TOKEN_EXPIRES_IN", "1h")
        .env("JWT_EXPIRES_IN", "1h")
        .env("TOKIO_WORKER_THREADS", workers.to_string())
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("AMQP_URL");
    command
}

/// The servers of one pass of the gateway scenario, running until dropped, and the plan the
/// load generator is given.
struct Scenario {
    /// Killed when the scenario drops, before the database, the keys and the scratch
    /// directory go.
    _children: Children,
    _database: Option<Database>,
    _redis: Option<RedisPrefix>,
    _queues: Option<webhooks::QueuePrefix>,
    scratch: Scratch,
    plan: serde_json::Value,
}

/// One row of the plan (see `crates/gateway/benches/proxy/main.rs`).
fn planned(
    name: &str,
    port: u16,
    path: &str,
    auth_http: u16,
    pids: &[u32],
    role: &str,
    group: &str,
) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "url": format!("http://127.0.0.1:{port}"),
        "path": path,
        "auth_http": format!("http://127.0.0.1:{auth_http}"),
        "pids": pids,
        "role": role,
        "group": group,
    })
}

/// Starts the upstream (bench binary) with a plain and a verifying port and answers
/// `(plain, verifying)`.
fn start_upstream(
    children: &mut Children,
    bench: &Path,
    cpus: Option<&str>,
    workers: u32,
    spin_us: u32,
    name: &'static str,
) -> Result<(u16, u16), String> {
    let (plain, verifying) = (free_port()?, free_port()?);
    children.spawn(
        name,
        pinned(bench, cpus)
            .env("BENCH_SERVE_UPSTREAM", plain.to_string())
            .env("BENCH_VERIFY_PORT", verifying.to_string())
            .env("BENCH_CONTEXT_SECRET", CONTEXT_SECRET)
            .env("BENCH_UPSTREAM_SPIN_US", spin_us.to_string())
            .env("TOKIO_WORKER_THREADS", workers.to_string())
            .stdout(Stdio::null()),
    )?;
    children.wait_for(plain)?;
    children.wait_for(verifying)?;
    Ok((plain, verifying))
}

/// Starts one pass's servers: the upstream (and, with every peer, the busy one), the auth
/// service and the standalone gateway on PostgreSQL and Redis, the bare forwarder, nginx and,
/// with every peer, the all-in-one binary, HAProxy and Caddy.
async fn start_scenario(bins: &Binaries, pass: Pass, quiet_logs: bool) -> Result<Scenario, String> {
    let scratch = Scratch::new("bench-gateway")?;
    let dir = scratch.0.clone();
    let mut children = Children::default();
    let workers = pass.workers();
    let (proxy_cpus, rest_cpus) = pass.cpus().map_or((None, None), |(p, r)| (Some(p), Some(r)));
    let path = format!("{ROUTE_PREFIX}/item");

    let (plain, verifying) = start_upstream(&mut children, &bins.bench, rest_cpus, workers, 0, "the upstream")?;
    let upstream_pid = children.last_pid();
    let busy = if pass.every_peer() {
        let ports = start_upstream(&mut children, &bins.bench, None, 2, BUSY_UPSTREAM_US, "the busy upstream")?;
        Some((ports, children.last_pid()))
    } else {
        None
    };

    let mut routes = format!(
        "[[routes]]\nprefix = \"{ROUTE_PREFIX}\"\nupstream = \"http://127.0.0.1:{verifying}\"\nauth = [\"user\", \"pat\"]\n\n\
         [[routes]]\nprefix = \"{LIMITED_PREFIX}\"\nupstream = \"http://127.0.0.1:{verifying}\"\nauth = [\"user\", \"pat\"]\n\
         rate_limit = \"{NEVER_REFUSING_LIMIT}\"\n"
    );
    if let Some(((_, busy_verifying), _)) = busy {
        routes.push_str(&format!(
            "\n[[routes]]\nprefix = \"{BUSY_PREFIX}\"\nupstream = \"http://127.0.0.1:{busy_verifying}\"\nauth = [\"user\", \"pat\"]\n"
        ));
    }
    let routes_file = dir.join("routes.toml");
    std::fs::write(&routes_file, routes).map_err(|e| format!("{}: {e}", routes_file.display()))?;

    // The distributed pair: the auth service (idle on cache hits) and the judged gateway.
    let database = Database::create()?;
    let redis = RedisPrefix::new()?;
    let edge = free_port()?;
    let auth = start_auth_service(&mut children, bins, rest_cpus, &database, &redis, &dir, quiet_logs)?;
    let auth_http = auth.http;
    let setup = GatewaySetup { auth, redis: &redis, routes: &routes_file, dir: &dir, workers, quiet_logs };
    let gateway_command = |name: &str, port: u16, gateway: Command| setup.command(gateway, name, port);
    let gateway = match pass {
        Pass::Callgrind => under_callgrind(&bins.gateway, &dir.join("callgrind.gateway.out")),
        _ => pinned(&bins.gateway, proxy_cpus),
    };
    children.spawn("the gateway", &mut gateway_command("gateway", edge, gateway)?)?;
    children.wait_within(edge, Duration::from_secs(if pass == Pass::Callgrind { 180 } else { 30 }))?;
    let gateway_pid = children.last_pid();

    let mut targets = Vec::new();
    if pass != Pass::Callgrind {
        targets.push(planned("direct", plain, &path, auth_http, &[upstream_pid], "direct", "main"));
    }
    let mut judged = planned("gateway (distributed)", edge, &path, auth_http, &[gateway_pid], "judged", "main");
    judged["callgrind_out"] = dir.join("callgrind.gateway.out").display().to_string().into();
    targets.push(judged);
    if pass.every_peer() {
        // A tenant limit costs the gateway and the Redis server it counts in.
        let mut pids = vec![gateway_pid];
        match redis_pid() {
            Some(pid) => pids.push(pid),
            None => println!("redis-server's pid is unknown: the tenant-limit row counts the gateway alone"),
        }
        let limited = format!("{LIMITED_PREFIX}/item");
        targets.push(planned("gateway (distributed, tenant limit)", edge, &limited, auth_http, &pids, "", "main"));
        // The same limit in the synced mode: a second gateway, reconciling with Redis every
        // 100 ms instead of asking it on every request.
        let synced_edge = free_port()?;
        let mut synced = gateway_command("gateway-synced", synced_edge, pinned(&bins.gateway, proxy_cpus))?;
        children.spawn("the synced gateway", synced.env("RATE_LIMIT_MODE", "synced"))?;
        children.wait_for(synced_edge)?;
        pids[0] = children.last_pid();
        let name = "gateway (distributed, tenant limit, synced)";
        targets.push(planned(name, synced_edge, &limited, auth_http, &pids, "", "main"));
    }

    // The all-in-one binary (embedded: gateway and auth service on SQLite in one process).
    let mut all_in_one = None;
    if pass.every_peer() {
        let (http, grpc, port) = (free_port()?, free_port()?, free_port()?);
        let auth = AuthPorts { http, grpc };
        let mut portcullis =
            all_in_one_command(&bins.portcullis, &auth, port, &routes_file, &dir.join("data"), workers);
        logs(&mut portcullis, quiet_logs, &dir.join("all-in-one.log"))?;
        children.spawn("the all-in-one server", &mut portcullis)?;
        children.wait_for(grpc)?;
        children.wait_for(port)?;
        let pid = children.last_pid();
        targets.push(planned("gateway (all-in-one)", port, &path, http, &[pid], "", "main"));
        all_in_one = Some((http, grpc, pid));
    }

    // The bare forwarder in front of the plain upstream port.
    let forwarder = free_port()?;
    let mut command = match pass {
        Pass::Callgrind => under_callgrind(&bins.bench, &dir.join("callgrind.forwarder.out")),
        _ => pinned(&bins.bench, proxy_cpus),
    };
    children.spawn(
        "the bare forwarder",
        command
            .env("BENCH_SERVE_FORWARDER", forwarder.to_string())
            .env("BENCH_FORWARD_TO", plain.to_string())
            .env("TOKIO_WORKER_THREADS", workers.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    children.wait_within(forwarder, Duration::from_secs(if pass == Pass::Callgrind { 180 } else { 30 }))?;
    let mut bare =
        planned("bare hyper forwarder", forwarder, &path, auth_http, &[children.last_pid()], "forwarder", "main");
    bare["callgrind_out"] = dir.join("callgrind.forwarder.out").display().to_string().into();
    targets.push(bare);

    if pass != Pass::Callgrind {
        ensure_peers();
        if on_path("nginx") {
            let port = free_port()?;
            let file = dir.join("nginx.conf");
            std::fs::write(&file, nginx_conf(&dir, port, plain, workers))
                .map_err(|e| format!("{}: {e}", file.display()))?;
            children.spawn(
                "nginx",
                pinned(Path::new("nginx"), proxy_cpus)
                    .arg("-p")
                    .arg(&dir)
                    .arg("-e")
                    .arg(dir.join("nginx-error.log"))
                    .arg("-c")
                    .arg(&file)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )?;
            children.wait_for(port)?;
            targets.push(planned("nginx proxy_pass", port, &path, auth_http, &[children.last_pid()], "nginx", "main"));
        }
    }
    if pass.every_peer() && on_path("haproxy") {
        let port = free_port()?;
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, haproxy_conf(port, plain, workers)).map_err(|e| format!("{}: {e}", file.display()))?;
        children.spawn(
            "haproxy",
            Command::new("haproxy").arg("-db").arg("-f").arg(&file).stdout(Stdio::null()).stderr(Stdio::null()),
        )?;
        children.wait_for(port)?;
        targets.push(planned("haproxy", port, &path, auth_http, &[children.last_pid()], "", "main"));
    }
    if let Some((http, grpc, portcullis_pid)) = all_in_one {
        if caddy_installed() {
            let token = service_token(grpc).await?;
            let (port, plain_site) = (free_port()?, free_port()?);
            let file = dir.join("Caddyfile");
            std::fs::write(&file, caddyfile(port, plain_site, http, &token, plain))
                .map_err(|e| format!("{}: {e}", file.display()))?;
            children.spawn(
                "caddy",
                Command::new("caddy")
                    .args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(&file)
                    .env("HOME", &dir)
                    .env("XDG_DATA_HOME", &dir)
                    .env("XDG_CONFIG_HOME", &dir)
                    .env("GOMAXPROCS", workers.to_string())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )?;
            children.wait_for(port)?;
            children.wait_for(plain_site)?;
            let caddy_pid = children.last_pid();
            targets.push(planned("caddy reverse_proxy", plain_site, &path, auth_http, &[caddy_pid], "", "main"));
            // forward_auth costs Caddy and the auth service it asks (in the all-in-one process).
            targets.push(planned("caddy forward_auth", port, &path, http, &[caddy_pid, portcullis_pid], "", "main"));
        } else {
            println!(
                "caddy is not on PATH (Debian package `caddy`): its reverse_proxy and forward_auth rows are skipped"
            );
        }
    }
    if let Some(((busy_plain, _), busy_pid)) = busy {
        let busy_path = format!("{BUSY_PREFIX}/item");
        targets.push(planned(
            "direct (200 µs-CPU upstream)",
            busy_plain,
            &busy_path,
            auth_http,
            &[busy_pid],
            "direct",
            "busy",
        ));
        targets.push(planned(
            "gateway (distributed, 200 µs-CPU upstream)",
            edge,
            &busy_path,
            auth_http,
            &[gateway_pid],
            "judged",
            "busy",
        ));
    }

    let layout = match pass {
        Pass::Pinned => {
            "pinned: each proxy alone on CPU 1 with one worker; upstream, auth service and load on CPU 0".to_owned()
        }
        Pass::Callgrind => "callgrind: the gateway (distributed) and the bare forwarder under valgrind".to_owned(),
        Pass::Shared | Pass::Quick => format!(
            "unpinned, {workers} workers each (tokio worker threads, nginx worker_processes, HAProxy nbthread, Caddy GOMAXPROCS); \
             our servers log {}",
            if quiet_logs { "at warn" } else { "at the default level, JSON lines to a file (per-request access log)" }
        ),
    };
    let plan = serde_json::json!({ "layout": layout, "targets": targets });
    Ok(Scenario { _children: children, _database: Some(database), _redis: Some(redis), _queues: None, scratch, plan })
}

/// Runs the gateway bench binary against a started scenario with `env`, pinned to `cpus`
/// when given.
fn run_load(bins: &Binaries, scenario: &Scenario, cpus: Option<&str>, env: &[(&str, String)]) -> Result<(), String> {
    run_plan(&bins.bench, "the gateway benchmark", scenario, cpus, env)
}

/// Runs the load generator `bench` (`what`, for the message when it fails) with the
/// scenario's plan (`BENCH_PLAN`) and `env`, pinned to `cpus` when given.
fn run_plan(
    bench: &Path,
    what: &str,
    scenario: &Scenario,
    cpus: Option<&str>,
    env: &[(&str, String)],
) -> Result<(), String> {
    let plan = scenario.scratch.0.join("plan.json");
    std::fs::write(&plan, serde_json::to_vec_pretty(&scenario.plan).map_err(|e| e.to_string())?)
        .map_err(|e| format!("{}: {e}", plan.display()))?;
    let mut command = pinned(bench, cpus);
    command.env("BENCH_PLAN", &plan);
    for (name, value) in env {
        command.env(name, value);
    }
    let status = command.status().map_err(|e| format!("{}: {e}", bench.display()))?;
    if status.success() { Ok(()) } else { Err(format!("{what} FAILED (see above)")) }
}

/// What `cargo xtask bench gateway` was asked for.
#[derive(Default)]
struct GatewayOptions {
    quiet_logs: bool,
    /// Only the pinned pass.
    pinned: bool,
    /// Only the callgrind pass.
    callgrind: bool,
    /// Copy the chart to `docs/benchmarks/gateway.svg`.
    record: bool,
}

/// The gateway scenario of SPEC §10 as issue 12 judges it: the shared pass (every target, two
/// workers each, interleaved rounds), then the pinned pass; or only one of the pinned and
/// callgrind passes.
async fn gateway(options: &GatewayOptions) -> Result<(), String> {
    let root = workspace_root();
    let bins = build_binaries(&root, true)?;
    let target = target_dir(&root);
    if options.callgrind {
        let scenario = start_scenario(&bins, Pass::Callgrind, options.quiet_logs).await?;
        let summary = target.join("bench-gateway-callgrind.json");
        let requests = std::env::var("BENCH_CALLGRIND_REQUESTS").unwrap_or_else(|_| "5000".to_owned());
        return run_load(
            &bins,
            &scenario,
            None,
            &[
                ("BENCH_CALLGRIND_REQUESTS", requests),
                ("BENCH_SUMMARY", summary.display().to_string()),
                ("HOST", CALLGRIND_HOST.to_owned()),
            ],
        );
    }
    let mut shared = Ok(());
    if !options.pinned {
        let scenario = start_scenario(&bins, Pass::Shared, options.quiet_logs).await?;
        let summary = target.join("bench-gateway.json");
        shared = run_load(&bins, &scenario, None, &[("BENCH_SUMMARY", summary.display().to_string())]);
        drop(scenario);
        if options.record && shared.is_ok() {
            let chart = root.join("docs/benchmarks/gateway.svg");
            std::fs::create_dir_all(root.join("docs/benchmarks")).map_err(|e| e.to_string())?;
            std::fs::copy(summary.with_extension("svg"), &chart).map_err(|e| format!("{}: {e}", chart.display()))?;
            println!("chart recorded: {}", chart.display());
        }
    }
    let scenario = start_scenario(&bins, Pass::Pinned, options.quiet_logs).await?;
    let summary = target.join("bench-gateway-pinned.json");
    let rest = Pass::Pinned.cpus().map(|(_, rest)| rest);
    let pinned = run_load(
        &bins,
        &scenario,
        rest,
        &[("BENCH_SUMMARY", summary.display().to_string()), ("TOKIO_WORKER_THREADS", "1".to_owned())],
    );
    println!("record the results in docs/benchmarks.md (summaries: {})", target.join("bench-gateway*.json").display());
    shared.and(pinned)
}

/// `cargo xtask bench --quick` (run by CI): the gateway scenario on the debug build (the
/// distributed pair on PostgreSQL and Redis included), every target asked once for a GET and
/// a POST with a user's Bearer token, each expected to answer the upstream's `200 ok` (through
/// the gateways, the upstream's verifying port checks the signed context); then the webhook
/// smoke ([`webhooks::quick`]). It proves the scenarios run; it measures nothing and judges
/// no speed.
pub async fn quick() -> Result<(), String> {
    let root = workspace_root();
    let bins = build_binaries(&root, false)?;
    let scenario = start_scenario(&bins, Pass::Quick, true).await?;
    let gateway = run_load(&bins, &scenario, None, &[("BENCH_CHECK_ONLY", "1".to_owned())]);
    drop(scenario);
    gateway.and(webhooks::quick(&bins))
}
