//! The summary of a run: medians over the rounds with every round's values, the ratios the
//! gateway is judged by, as JSON, a Markdown table and a hand-written SVG chart.

use std::{fmt::Write as _, time::Duration};

use serde_json::{Value, json};

use crate::{
    load::{Latency, OPEN_LOOP_CONNECTIONS},
    support::{
        chart::{self, Bar, Panel},
        machine, micros,
    },
};

pub struct Settings {
    pub layout: String,
    pub rounds: usize,
    pub connections: usize,
    pub seconds: Duration,
    pub rate: f64,
    pub load_before: String,
}

/// One target's figures in one round.
pub struct RoundFigures {
    pub throughput: f64,
    pub cpu_us: Option<f64>,
    /// At the fixed rate (`main` group only).
    pub latency: Option<Latency>,
    pub failures: u64,
}

pub struct Row {
    pub name: String,
    pub role: String,
    pub group: String,
    pub rounds: Vec<RoundFigures>,
}

/// Failed requests of one figure in one round.
pub struct Failed {
    pub round: usize,
    pub target: String,
    pub figure: String,
    pub count: u64,
    pub messages: Vec<String>,
}

pub struct Summary {
    pub settings: Settings,
    pub rows: Vec<Row>,
    pub failures: Vec<Failed>,
    pub load_after: String,
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// p50 and p99 of a latency the target kept up with, in µs.
fn quantiles(latency: Option<&Latency>) -> Option<(f64, f64)> {
    latency.filter(|l| l.kept_up()).map(|l| (micros(l.p50), micros(l.p99)))
}

/// Reads one figure of a row's medians.
type Figure = fn(&Medians) -> Option<f64>;

/// The medians of one row.
struct Medians {
    throughput: Option<f64>,
    cpu_us: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    added_p50: Option<f64>,
    added_p99: Option<f64>,
}

impl Summary {
    fn row(&self, group: &str, role: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.group == group && r.role == role)
    }

    /// Per round, the target's p50 and p99 minus the direct upstream's in the same round.
    fn added(&self, row: &Row) -> Vec<Option<(f64, f64)>> {
        let direct = self.row(&row.group, "direct");
        row.rounds
            .iter()
            .enumerate()
            .map(|(i, figures)| {
                let (p50, p99) = quantiles(figures.latency.as_ref())?;
                let (d50, d99) = quantiles(direct?.rounds.get(i)?.latency.as_ref())?;
                Some((p50 - d50, p99 - d99))
            })
            .collect()
    }

    fn medians(&self, row: &Row) -> Medians {
        let added = self.added(row);
        let latencies: Vec<(f64, f64)> = row.rounds.iter().filter_map(|f| quantiles(f.latency.as_ref())).collect();
        Medians {
            throughput: median(row.rounds.iter().map(|f| f.throughput).collect()),
            cpu_us: median(row.rounds.iter().filter_map(|f| f.cpu_us).collect()),
            p50: median(latencies.iter().map(|l| l.0).collect()),
            p99: median(latencies.iter().map(|l| l.1).collect()),
            added_p50: median(added.iter().flatten().map(|a| a.0).collect()),
            added_p99: median(added.iter().flatten().map(|a| a.1).collect()),
        }
    }

    /// The ratios issue 12 judges by, from the medians: `(name, value, goal)`.
    fn ratios(&self) -> Vec<(&'static str, f64, &'static str)> {
        let medians = |group: &str, role: &str| self.row(group, role).map(|r| self.medians(r));
        let mut ratios = Vec::new();
        let (judged, nginx, forwarder) =
            (medians("main", "judged"), medians("main", "nginx"), medians("main", "forwarder"));
        let mut ratio = |name, a: Option<f64>, b: Option<f64>, goal| {
            if let (Some(a), Some(b)) = (a, b)
                && b > 0.0
            {
                ratios.push((name, a / b, goal));
            }
        };
        let cpu = |m: &Option<Medians>| m.as_ref().and_then(|m| m.cpu_us);
        let throughput = |m: &Option<Medians>| m.as_ref().and_then(|m| m.throughput);
        ratio("gateway CPU per request ÷ nginx proxy_pass's", cpu(&judged), cpu(&nginx), "≤ 1.0 (goal 0.8)");
        ratio("gateway CPU per request ÷ bare forwarder's", cpu(&judged), cpu(&forwarder), "≤ 1.15");
        ratio("gateway throughput ÷ nginx proxy_pass's", throughput(&judged), throughput(&nginx), "≥ 1.0");
        ratio(
            "gateway throughput ÷ direct, 200 µs-CPU upstream",
            throughput(&medians("busy", "judged")),
            throughput(&medians("busy", "direct")),
            "≥ 0.70",
        );
        ratios
    }

    pub fn json(&self) -> Value {
        let latency_json = |l: &Latency| {
            json!({
                "offered_per_second": l.offered.round(),
                "answered_per_second": l.achieved.round(),
                "kept_up": l.kept_up(),
                "p50_us": micros(l.p50).round(),
                "p90_us": micros(l.p90).round(),
                "p99_us": micros(l.p99).round(),
                "max_us": micros(l.max).round(),
                "unanswered": l.unanswered,
            })
        };
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let m = self.medians(row);
                let added = self.added(row);
                let rounds: Vec<Value> = row
                    .rounds
                    .iter()
                    .zip(&added)
                    .map(|(f, added)| {
                        json!({
                            "max_throughput_per_second": f.throughput.round(),
                            "cpu_us_per_request": f.cpu_us.map(round1),
                            "latency": f.latency.as_ref().map(latency_json),
                            "added_p50_us": added.map(|a| a.0.round()),
                            "added_p99_us": added.map(|a| a.1.round()),
                            "failed_requests": f.failures,
                        })
                    })
                    .collect();
                json!({
                    "target": row.name,
                    "role": row.role,
                    "group": row.group,
                    "median": {
                        "max_throughput_per_second": m.throughput.map(f64::round),
                        "cpu_us_per_request": m.cpu_us.map(round1),
                        "p50_us": m.p50.map(f64::round),
                        "p99_us": m.p99.map(f64::round),
                        "added_p50_us": m.added_p50.map(f64::round),
                        "added_p99_us": m.added_p99.map(f64::round),
                    },
                    "rounds": rounds,
                })
            })
            .collect();
        let ratios: Vec<Value> = self
            .ratios()
            .into_iter()
            .map(|(name, value, goal)| json!({"ratio": name, "value": round3(value), "goal": goal}))
            .collect();
        let failures: Vec<Value> = self
            .failures
            .iter()
            .map(|f| json!({"round": f.round, "target": f.target, "figure": f.figure, "count": f.count, "first": f.messages}))
            .collect();
        let s = &self.settings;
        json!({
            "machine": machine(),
            "layout": s.layout,
            "load_average_before": s.load_before,
            "load_average_after": self.load_after,
            "rounds": s.rounds,
            "connections_closed_loop": s.connections,
            "connections_open_loop": OPEN_LOOP_CONNECTIONS,
            "seconds_per_figure": s.seconds.as_secs(),
            "fixed_rate_per_second": s.rate,
            "request_mix": "GET and POST (1 KiB body) in turn; counted only when 200 with body \"ok\\n\"",
            "failed": !self.failures.is_empty(),
            "failures": failures,
            "ratios": ratios,
            "targets": rows,
        })
    }

    pub fn markdown(&self) -> String {
        let s = &self.settings;
        let mut md = format!(
            "Machine: {}; {}; load average {} before, {} after.\n\
             {} interleaved rounds (every target in turn, then again), medians; per-round values in brackets.\n\
             Requests: GET and POST with a 1 KiB body in turn, counted only when answered 200 `ok\\n`.\n\
             Max throughput: {} keep-alive HTTP/1.1 connections, closed loop, {} s after a 1 s warm-up; CPU: user + \
             system time of the target's processes and their descendants (`/proc/<pid>/stat`) over that window, \
             per answered request.\n\
             Latency: open loop at {:.0} /s over {OPEN_LOOP_CONNECTIONS} connections, {} s after a 1 s warm-up; \
             added = the target's minus the upstream direct's in the same round.\n\n",
            machine(),
            s.layout,
            s.load_before,
            self.load_after,
            s.rounds,
            s.connections,
            s.seconds.as_secs(),
            s.rate,
            s.seconds.as_secs(),
        );
        let list =
            |values: Vec<String>| if values.len() > 1 { format!(" [{}]", values.join(", ")) } else { String::new() };
        let or_dash = |v: Option<f64>, unit: &str| v.map_or_else(|| "—".to_owned(), |v| format!("{v:.0}{unit}"));
        for (group, title) in [("main", "Minimal upstream"), ("busy", "Upstream burning 200 µs of CPU per request")] {
            if !self.rows.iter().any(|r| r.group == group) {
                continue;
            }
            let _ = write!(
                md,
                "**{title}**\n\n| target | max throughput /s | CPU µs per request | p50 | p99 | added p50 | added p99 |\n\
                 |---|---|---|---|---|---|---|\n"
            );
            for row in self.rows.iter().filter(|r| r.group == group) {
                let m = self.medians(row);
                let throughputs = list(row.rounds.iter().map(|f| format!("{:.0}", f.throughput)).collect());
                let cpus =
                    list(row.rounds.iter().map(|f| f.cpu_us.map_or("—".to_owned(), |c| format!("{c:.1}"))).collect());
                let cpu = m.cpu_us.map_or_else(|| "—".to_owned(), |c| format!("{c:.1}"));
                let overloaded = row.rounds.iter().any(|f| f.latency.as_ref().is_some_and(|l| !l.kept_up()));
                let latency = if group != "main" {
                    "— | — | — | —".to_owned()
                } else {
                    format!(
                        "{} | {} | {} | {}{}",
                        or_dash(m.p50, " µs"),
                        or_dash(m.p99, " µs"),
                        m.added_p50.map_or("—".to_owned(), |v| format!("{v:+.0} µs")),
                        m.added_p99.map_or("—".to_owned(), |v| format!("{v:+.0} µs")),
                        if overloaded { " (did not keep up in some round)" } else { "" }
                    )
                };
                let _ = writeln!(
                    md,
                    "| {} | {}{throughputs} | {cpu}{cpus} | {latency} |",
                    row.name,
                    or_dash(m.throughput, "")
                );
            }
            md.push('\n');
        }
        let ratios = self.ratios();
        if !ratios.is_empty() {
            md.push_str("| ratio (medians) | value | goal |\n|---|---|---|\n");
            for (name, value, goal) in ratios {
                let _ = writeln!(md, "| {name} | {value:.2} | {goal} |");
            }
        }
        if !self.failures.is_empty() {
            md.push_str("\n**FAILED**: requests not answered 200 `ok\\n`:\n\n");
            for f in &self.failures {
                let _ = writeln!(
                    md,
                    "- round {}, {}, {}: {} failed; first: {}",
                    f.round,
                    f.target,
                    f.figure,
                    f.count,
                    f.messages.join(" | ")
                );
            }
        }
        md
    }

    /// Two panels of horizontal bars, median CPU µs per request and median throughput, for the
    /// targets in front of the minimal upstream.
    pub fn svg(&self) -> String {
        let rows: Vec<(&Row, Medians)> =
            self.rows.iter().filter(|r| r.group == "main").map(|r| (r, self.medians(r))).collect();
        let panels: [(&str, Figure, &str); 2] = [
            ("CPU per request (µs, median; lower is better)", |m| m.cpu_us, "µs"),
            ("Max throughput (requests/s, median)", |m| m.throughput, "/s"),
        ];
        let panels: Vec<Panel> = panels
            .into_iter()
            .map(|(title, value, unit)| Panel {
                title,
                unit,
                bars: rows
                    .iter()
                    .map(|(row, m)| Bar {
                        label: row.name.clone(),
                        colour: match row.role.as_str() {
                            "judged" => "#c0392b",
                            "nginx" => "#27ae60",
                            "forwarder" => "#2980b9",
                            "direct" => "#7f8c8d",
                            _ => "#95a5a6",
                        },
                        value: value(m),
                    })
                    .collect(),
            })
            .collect();
        chart::bars(&panels)
    }
}
