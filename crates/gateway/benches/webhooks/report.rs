//! The summary of `cargo xtask bench webhooks`: one row per backend and upstream, kept in a
//! JSON file every invocation of the load generator adds its rows to (xtask runs it once per
//! backend, with that backend's servers), rewritten with a Markdown table and an SVG chart
//! beside it each time.

use std::{fmt::Write as _, path::Path, time::Duration};

use serde_json::{Value, json};

use crate::{
    load::{Run, quantiles},
    support::{
        Failures,
        chart::{self, Bar, Panel},
        load_average, machine, micros,
    },
};

/// One row, from a run.
pub fn row(backend: &str, binary: &str, upstream: &str, seconds: Duration, run: &Run, failures: &Failures) -> Value {
    let (p50, p99, max) = quantiles(run);
    json!({
        "backend": backend,
        "binary": binary,
        "upstream": upstream,
        "accepted_per_second": (run.accepted as f64 / seconds.as_secs_f64()).round(),
        "accepted_in_window": run.accepted,
        "accepted_in_all": run.accepted_total,
        "p50_us": micros(p50).round(),
        "p99_us": micros(p99).round(),
        "max_us": micros(max).round(),
        "gateway_cpu_us_per_event": run.gateway_cpu_us.map(|us| (us * 10.0).round() / 10.0),
        "store_cpu_us_per_event": run.store_cpu_us.map(|us| (us * 10.0).round() / 10.0),
        "answered_503": run.unavailable,
        "failed": failures.count(),
        "failures_first": failures.messages(),
        "delivered_during_run": run.delivered_during,
        "drained_after_seconds": run.drained_after.map(|s| (s * 10.0).round() / 10.0),
        "load_average_after": load_average(),
    })
}

/// The summary at `path` with `rows` added (a fresh one if there is none yet), written back
/// as JSON, with `.md` and `.svg` beside it; answers the Markdown.
pub fn add_rows(path: &Path, settings: Value, rows: Vec<Value>) -> Result<String, String> {
    let mut summary = std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .filter(|summary| summary["rows"].is_array())
        .unwrap_or_else(|| json!({ "machine": machine(), "settings": settings, "rows": [] }));
    if let Some(all) = summary["rows"].as_array_mut() {
        all.extend(rows);
    }
    let markdown = markdown(&summary);
    let pretty = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
    std::fs::write(path, pretty).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::write(path.with_extension("md"), &markdown).map_err(|e| e.to_string())?;
    std::fs::write(path.with_extension("svg"), svg(&summary)).map_err(|e| e.to_string())?;
    Ok(markdown)
}

fn rows(summary: &Value) -> &[Value] {
    summary["rows"].as_array().map_or(&[], Vec::as_slice)
}

fn label(row: &Value) -> String {
    format!("{}, upstream {}", row["backend"].as_str().unwrap_or("?"), row["upstream"].as_str().unwrap_or("?"))
}

fn milliseconds(us: &Value) -> String {
    us.as_f64().map_or_else(|| "—".to_owned(), |us| format!("{:.2} ms", us / 1000.0))
}

fn or_dash(value: &Value) -> String {
    if value.is_null() { "—".to_owned() } else { value.to_string() }
}

pub fn markdown(summary: &Value) -> String {
    let settings = &summary["settings"];
    let mut md = format!(
        "Machine: {}; load average {} before the first row.\n\
         Events: {}; {} keep-alive HTTP/1.1 connections, closed loop, {} s counted after a 1 s warm-up; \
         latency from sending an event to the end of its 202; CPU: user + system time over the counted window \
         (`/proc/<pid>/stat`) per event accepted in it, of the gateway's process and of the store's \
         (redis-server; RabbitMQ and redis-server).\n\n\
         | backend (binary) | upstream | accepted /s | p50 to 202 | p99 to 202 | gateway CPU µs/event | store CPU µs/event | 503s | other failures | delivered during the run |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        summary["machine"].as_str().unwrap_or("?"),
        settings["load_average_before"].as_str().unwrap_or("?"),
        settings["events"].as_str().unwrap_or("?"),
        settings["connections"],
        settings["seconds"],
    );
    for row in rows(summary) {
        let delivered = match (row["delivered_during_run"].as_u64(), row["accepted_in_all"].as_u64()) {
            (Some(delivered), Some(accepted)) => {
                let drained = row["drained_after_seconds"]
                    .as_f64()
                    .map_or_else(|| "not all delivered within 120 s".to_owned(), |s| format!("all {s:.1} s after"));
                format!("{delivered} of {accepted} ({drained})")
            }
            _ => "— (upstream down)".to_owned(),
        };
        let _ = writeln!(
            md,
            "| {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {delivered} |",
            row["backend"].as_str().unwrap_or("?"),
            row["binary"].as_str().unwrap_or("?"),
            row["upstream"].as_str().unwrap_or("?"),
            row["accepted_per_second"].as_f64().map_or_else(|| "—".to_owned(), |n| format!("{n:.0}")),
            milliseconds(&row["p50_us"]),
            milliseconds(&row["p99_us"]),
            or_dash(&row["gateway_cpu_us_per_event"]),
            or_dash(&row["store_cpu_us_per_event"]),
            or_dash(&row["answered_503"]),
            or_dash(&row["failed"]),
        );
    }
    for row in rows(summary).iter().filter(|row| row["failed"].as_u64().unwrap_or(0) > 0) {
        let _ = writeln!(md, "\n**FAILED** ({}): first: {}", label(row), row["failures_first"]);
    }
    md
}

/// Accepted events per second and the gateway's CPU per event, a bar per row.
fn svg(summary: &Value) -> String {
    let panels: [(&str, &str, &str); 2] = [
        ("Accepted events per second (signed, durable before the 202)", "accepted_per_second", "/s"),
        ("Gateway CPU per accepted event (µs; lower is better)", "gateway_cpu_us_per_event", "µs"),
    ];
    let panels: Vec<Panel> = panels
        .into_iter()
        .map(|(title, field, unit)| Panel {
            title,
            unit,
            bars: rows(summary)
                .iter()
                .map(|row| Bar {
                    label: label(row),
                    colour: if row["upstream"] == "fast" { "#2980b9" } else { "#c0392b" },
                    value: row[field].as_f64(),
                })
                .collect(),
        })
        .collect();
    chart::bars(&panels)
}
