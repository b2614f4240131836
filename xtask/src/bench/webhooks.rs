//! `cargo xtask bench webhooks [spool] [redis] [rabbitmq] [--record] [--quiet-logs]`: webhook
//! ingestion on each backend (SPEC §10: signed events accepted per second, durable before the
//! 202, with the p99 to the 202), with the upstream fast and with it down. The load generator
//! and the fast upstream are `crates/gateway/benches/webhooks/`.
//!
//! One fast upstream (the bench binary with `BENCH_SERVE_WEBHOOK_UPSTREAM`: answers 200 at
//! once and counts deliveries) serves the whole run; the down upstream is a port bound and
//! never listened on (connections refused at once). Then, one backend after the other, each with servers of its own that are
//! stopped (and their data removed) before the next starts:
//!
//! - `spool`: the release all-in-one binary in embedded mode (no `DATABASE_URL`, `REDIS_URL`
//!   or `AMQP_URL`; a fresh `DATA_DIR`), the only binary that keeps events in the spool;
//! - `redis`: the release `auth-service` and `gateway` binaries as the gateway bench runs them
//!   (a fresh PostgreSQL database, a Redis key prefix of their own, deleted afterwards);
//! - `rabbitmq`: the same, the gateway's outbox on RabbitMQ (`BENCH_AMQP`, default the local
//!   broker) under a queue prefix of its own (`AMQP_QUEUE_PREFIX`), its queues deleted
//!   afterwards with `rabbitmqctl`.
//!
//! Each gateway has two Meta-profile sources, `fast` and `down`, measured in that order (the
//! fast one's backlog delivered before the down one starts). Every server has two workers
//! and logs as in production unless `--quiet-logs`. The summary is
//! `<target dir>/bench-webhooks.{json,md,svg}`; `--record` also copies the chart to
//! `docs/benchmarks/webhooks.svg`, and writes nothing else in the repository.
//! `cargo xtask bench --quick` runs [`quick`]: the spool backend on the debug build, 20 events
//! accepted and delivered, no speed judged.

use std::{
    process::{Command, Stdio},
    time::Instant,
};

use serde_json::{Value, json};

use super::{
    AuthPorts, Binaries, Children, Database, GatewaySetup, RedisPrefix, Scenario, Scratch, all_in_one_command,
    build_binaries, free_port, logs, redis_pid, run_plan, start_auth_service, target_dir,
};
use crate::workspace_root;

/// The sources' Meta app secret and handshake token.
const META_SECRET: &str = "bench-meta-app-secret";
const VERIFY_TOKEN: &str = "bench-verify-token";
/// Workers of every server (tokio worker threads), as in the gateway bench.
const WORKERS: u32 = 2;
/// Events `cargo xtask bench --quick` sends.
const QUICK_EVENTS: u32 = 20;

/// Where the gateway keeps accepted events.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Spool,
    Redis,
    Rabbitmq,
}

impl Backend {
    const ALL: [Self; 3] = [Self::Spool, Self::Redis, Self::Rabbitmq];

    fn name(self) -> &'static str {
        match self {
            Self::Spool => "spool",
            Self::Redis => "redis",
            Self::Rabbitmq => "rabbitmq",
        }
    }

    fn parse(name: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|b| b.name() == name).ok_or_else(|| {
            format!("no webhook backend named {name}: cargo xtask bench webhooks [spool] [redis] [rabbitmq]")
        })
    }
}

/// `BENCH_AMQP` (an `amqp://` URL), else the local broker.
fn amqp_url() -> String {
    std::env::var("BENCH_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

fn rabbitmqctl(args: &[&str]) -> Result<String, String> {
    let output = Command::new("rabbitmqctl").args(args).output().map_err(|e| format!("rabbitmqctl: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!("rabbitmqctl {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// The RabbitMQ node's process id, whose CPU the RabbitMQ rows count as the store's.
fn rabbitmq_pid() -> Option<u32> {
    rabbitmqctl(&["eval", "list_to_integer(os:getpid())."]).ok()?.trim().parse().ok()
}

/// A RabbitMQ queue prefix of the scenario's own; its queues (work, dead and delay queues of
/// every source) are deleted with this guard.
pub struct QueuePrefix(String);

impl QueuePrefix {
    fn new() -> Result<Self, String> {
        rabbitmqctl(&["list_queues", "name", "--quiet", "--no-table-headers"])
            .map_err(|e| format!("RabbitMQ, with rabbitmqctl to delete the queues afterwards, is needed: {e}"))?;
        Ok(Self(format!("pc-bench.{}.{}.", std::process::id(), free_port()?)))
    }
}

impl Drop for QueuePrefix {
    /// One `rabbitmqctl delete_queue` per queue, all at once (each takes a second to start).
    fn drop(&mut self) {
        let Ok(names) = rabbitmqctl(&["list_queues", "name", "--quiet", "--no-table-headers"]) else { return };
        let deleting: Vec<_> = names
            .lines()
            .map(str::trim)
            .filter(|name| name.starts_with(&self.0))
            .filter_map(|name| {
                Command::new("rabbitmqctl").args(["delete_queue", name]).stdout(Stdio::null()).spawn().ok()
            })
            .collect();
        for mut child in deleting {
            let _ = child.wait();
        }
    }
}

/// Two Meta sources with the same secret: `fast` delivering to `fast_upstream`, `down` to a
/// port nobody listens on. CloudEvents envelopes, Meta's default ordering key, the default
/// concurrency and retry schedule.
fn routes(fast_upstream: u16, down_upstream: u16) -> String {
    let source = |name: &str, port: u16| {
        format!(
            "[webhooks.{name}]\nprofile = \"meta\"\nsecrets = [\"{META_SECRET}\"]\nverify_token = \"{VERIFY_TOKEN}\"\n\
             upstream = \"http://127.0.0.1:{port}/hooks/whatsapp\"\nenvelope = \"cloudevents\"\n"
        )
    };
    format!("{}\n{}", source("fast", fast_upstream), source("down", down_upstream))
}

/// The plan's row for source `upstream` (`fast` or `down`).
fn planned(upstream: &str, port: u16, pids: &[u32], store_pids: &[u32], fast_upstream: Option<u16>) -> Value {
    json!({
        "upstream": upstream,
        "url": format!("http://127.0.0.1:{port}"),
        "path": format!("/v1/webhooks/{upstream}"),
        "secret": META_SECRET,
        "pids": pids,
        "store_pids": store_pids,
        "upstream_url": fast_upstream.map(|port| format!("http://127.0.0.1:{port}")),
    })
}

/// Starts `backend`'s servers with the two sources, and the plan naming the fast one and,
/// unless `fast_only`, the down one.
fn start(
    bins: &Binaries,
    backend: Backend,
    (fast, down): (u16, u16),
    quiet_logs: bool,
    fast_only: bool,
) -> Result<Scenario, String> {
    let scratch = Scratch::new(&format!("bench-webhooks-{}", backend.name()))?;
    let dir = scratch.0.clone();
    let routes_file = dir.join("routes.toml");
    std::fs::write(&routes_file, routes(fast, down)).map_err(|e| format!("{}: {e}", routes_file.display()))?;
    let mut children = Children::default();
    let port = free_port()?;
    let (mut database, mut redis, mut queues) = (None, None, None);
    let (binary, pids, store_pids) = if backend == Backend::Spool {
        let auth = AuthPorts { http: free_port()?, grpc: free_port()? };
        let mut server = all_in_one_command(&bins.portcullis, &auth, port, &routes_file, &dir.join("data"), WORKERS);
        logs(&mut server, quiet_logs, &dir.join("all-in-one.log"))?;
        children.spawn("the all-in-one server", &mut server)?;
        children.wait_for(port)?;
        ("all-in-one", vec![children.last_pid()], Vec::new())
    } else {
        let db = database.insert(Database::create()?);
        let prefix = redis.insert(RedisPrefix::new()?);
        let auth = start_auth_service(&mut children, bins, None, db, prefix, &dir, quiet_logs)?;
        let setup = GatewaySetup { auth, redis: prefix, routes: &routes_file, dir: &dir, workers: WORKERS, quiet_logs };
        let mut gateway = setup.command(Command::new(&bins.gateway), "gateway", port)?;
        let mut store_pids = Vec::new();
        if backend == Backend::Rabbitmq {
            let prefix = queues.insert(QueuePrefix::new()?);
            gateway.env("AMQP_URL", amqp_url()).env("AMQP_QUEUE_PREFIX", &prefix.0);
            store_pids.extend(rabbitmq_pid());
        }
        store_pids.extend(redis_pid());
        children.spawn("the gateway", &mut gateway)?;
        children.wait_for(port)?;
        ("standalone gateway", vec![children.last_pid()], store_pids)
    };
    let mut targets = vec![planned("fast", port, &pids, &store_pids, Some(fast))];
    if !fast_only {
        targets.push(planned("down", port, &pids, &store_pids, None));
    }
    let plan = json!({ "backend": backend.name(), "binary": binary, "targets": targets });
    Ok(Scenario { _children: children, _database: database, _redis: redis, _queues: queues, scratch, plan })
}

/// A port bound and never listened on, kept so for as long as the socket lives: a connection
/// to it is refused at once, as to an upstream that is down, and no other server of the run
/// can take the port meanwhile.
fn closed_port() -> Result<(tokio::net::TcpSocket, u16), String> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| format!("a socket: {e}"))?;
    socket.bind(([127, 0, 0, 1], 0).into()).map_err(|e| format!("binding a closed port: {e}"))?;
    let port = socket.local_addr().map_err(|e| e.to_string())?.port();
    Ok((socket, port))
}

/// Starts the fast upstream as a child of `children`, answering its port.
fn start_fast_upstream(children: &mut Children, bins: &Binaries) -> Result<u16, String> {
    let port = free_port()?;
    children.spawn(
        "the fast upstream",
        Command::new(&bins.webhooks)
            .env("BENCH_SERVE_WEBHOOK_UPSTREAM", port.to_string())
            .env("TOKIO_WORKER_THREADS", "1")
            .stdout(Stdio::null()),
    )?;
    children.wait_for(port)?;
    Ok(port)
}

/// `cargo xtask bench webhooks`: every backend named (all three if none is), one after the
/// other; a backend that fails does not stop the next.
pub fn run(names: &[&str], quiet_logs: bool, record: bool) -> Result<(), String> {
    let backends = if names.is_empty() {
        Backend::ALL.to_vec()
    } else {
        names.iter().map(|name| Backend::parse(name)).collect::<Result<_, _>>()?
    };
    let root = workspace_root();
    let bins = build_binaries(&root, true)?;
    let started = Instant::now();
    let summary = target_dir(&root).join("bench-webhooks.json");
    for stale in [summary.clone(), summary.with_extension("md"), summary.with_extension("svg")] {
        let _ = std::fs::remove_file(stale);
    }
    let mut upstream = Children::default();
    let fast = start_fast_upstream(&mut upstream, &bins)?;
    let (_down_socket, down) = closed_port()?;
    let mut failed = Vec::new();
    for backend in backends {
        println!("webhooks on {}:", backend.name());
        let outcome = start(&bins, backend, (fast, down), quiet_logs, false).and_then(|scenario| {
            run_plan(
                &bins.webhooks,
                "the webhook benchmark",
                &scenario,
                None,
                &[("BENCH_SUMMARY", summary.display().to_string())],
            )
        });
        if let Err(e) = outcome {
            println!("webhooks on {}: {e}", backend.name());
            failed.push(backend.name());
        }
    }
    drop(upstream);
    println!("the webhook benchmark took {:.0} s (the build before it not counted)", started.elapsed().as_secs_f64());
    if !failed.is_empty() {
        return Err(format!("the webhook benchmark FAILED on {}", failed.join(", ")));
    }
    if record {
        let chart = root.join("docs/benchmarks/webhooks.svg");
        std::fs::create_dir_all(root.join("docs/benchmarks")).map_err(|e| e.to_string())?;
        std::fs::copy(summary.with_extension("svg"), &chart).map_err(|e| format!("{}: {e}", chart.display()))?;
        println!("chart recorded: {}", chart.display());
    }
    println!("record the results in docs/benchmarks.md (summary: {})", summary.display());
    Ok(())
}

/// `cargo xtask bench --quick`'s webhook part (CI): the spool backend of the debug build,
/// [`QUICK_EVENTS`] signed events, one after another, each accepted and all delivered to the
/// fast upstream. It proves the scenario runs; it judges no speed.
pub fn quick(bins: &Binaries) -> Result<(), String> {
    let mut upstream = Children::default();
    let fast = start_fast_upstream(&mut upstream, bins)?;
    let (_down_socket, down) = closed_port()?;
    let scenario = start(bins, Backend::Spool, (fast, down), true, true)?;
    run_plan(&bins.webhooks, "the webhook smoke", &scenario, None, &[("BENCH_CHECK_ONLY", QUICK_EVENTS.to_string())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_sources_parse_as_the_gateway_reads_them() {
        let file = gateway::RoutesFile::parse(&routes(9001, 9002));
        let file = file.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(file.webhooks.len(), 2);
    }
}
