//! The operator's monitoring files agree with the code: every metric the services define
//! (a name literal in a `metrics.rs`) is listed in `docs/monitoring/metrics.md` and every
//! listed one is defined; every series the dashboard's and the alerts' queries read is a
//! listed metric (a histogram's `_bucket`, `_sum` and `_count` included); and the alerts
//! table names exactly the alerts of `alerts.yml`.

use std::{collections::BTreeSet, fs, path::Path};

/// The services' metric name prefixes.
const PREFIXES: [&str; 3] = ["auth_", "gateway_", "socket_"];

/// The series a histogram exposes besides its name.
#[cfg(test)]
const HISTOGRAM_SERIES: [&str; 3] = ["_bucket", "_sum", "_count"];

fn is_metric_name(text: &str) -> bool {
    PREFIXES.iter().any(|p| text.starts_with(p))
        && text.len() > 8
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Every maximal run of `[a-z0-9_]` in `text` that is a metric name.
fn names_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .filter(|word| is_metric_name(word))
        .map(str::to_owned)
        .collect()
}

/// The string literals of `source` that are metric names.
#[cfg(test)]
fn literals_in(source: &str) -> BTreeSet<String> {
    source.split('"').skip(1).step_by(2).filter(|text| is_metric_name(text)).map(str::to_owned).collect()
}

/// Metric names defined in the services' code.
#[cfg(test)]
fn defined(root: &Path) -> BTreeSet<String> {
    let mut files = Vec::new();
    let is_metrics = |path: &Path| path.file_name().is_some_and(|n| n == "metrics.rs");
    crate::files_under(&root.join("crates"), &is_metrics, &mut files);
    files.iter().flat_map(|f| literals_in(&fs::read_to_string(f).unwrap_or_default())).collect()
}

/// The first backticked cell of each table row, in the rows whose cell passes `keep`.
#[cfg(test)]
fn first_cells(markdown: &str, keep: impl Fn(&str) -> bool) -> BTreeSet<String> {
    markdown
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|cell| keep(cell))
        .map(str::to_owned)
        .collect()
}

/// A series name read by a query, as the metric it belongs to.
#[cfg(test)]
fn metric_of(series: &str, documented: &BTreeSet<String>) -> String {
    if documented.contains(series) {
        return series.to_owned();
    }
    HISTOGRAM_SERIES
        .iter()
        .find_map(|suffix| series.strip_suffix(suffix).filter(|base| documented.contains(*base)))
        .unwrap_or(series)
        .to_owned()
}

fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    panels
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|target| target["expr"].as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
fn alert_names(alerts: &str) -> BTreeSet<String> {
    alerts
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("- alert:"))
        .map(|name| name.trim().to_owned())
        .collect()
}

/// Every series the dashboard's and the alerts' queries read, for the distributed scenario to
/// find in a real scrape (`cargo xtask run --distributed --scenario`).
pub(crate) fn watched_series(root: &Path) -> Result<BTreeSet<String>, String> {
    let docs = root.join("docs/monitoring");
    let text = |file: &str| fs::read_to_string(docs.join(file)).map_err(|e| format!("docs/monitoring/{file}: {e}"));
    let dashboard: serde_json::Value =
        serde_json::from_str(&text("grafana-dashboard.json")?).map_err(|e| format!("the dashboard: {e}"))?;
    let mut series = names_in(&dashboard_queries(&dashboard).join("\n"));
    series.extend(names_in(&text("alerts.yml")?));
    Ok(series)
}

#[cfg(test)]
fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn monitoring_files_name_only_the_metrics_the_services_define() {
    let root = crate::workspace_root();
    let docs = root.join("docs/monitoring");
    let listed = read(&docs.join("metrics.md"));
    let documented = first_cells(&listed, is_metric_name);
    let defined = defined(&root);
    assert!(defined.len() >= 30, "too few metric names found in the code: {defined:?}");
    let undocumented: Vec<_> = defined.difference(&documented).collect();
    assert!(undocumented.is_empty(), "defined but not in docs/monitoring/metrics.md: {undocumented:?}");
    let unknown: Vec<_> = documented.difference(&defined).collect();
    assert!(unknown.is_empty(), "in docs/monitoring/metrics.md but defined nowhere: {unknown:?}");

    let dashboard: serde_json::Value =
        serde_json::from_str(&read(&docs.join("grafana-dashboard.json"))).expect("the dashboard is JSON");
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 12, "the dashboard has too few queries: {queries:?}");
    let alerts = read(&docs.join("alerts.yml"));
    for (file, text) in [("grafana-dashboard.json", queries.join("\n")), ("alerts.yml", alerts.clone())] {
        let read_series = names_in(&text);
        assert!(!read_series.is_empty(), "{file} reads no metric");
        let missing: Vec<_> =
            read_series.iter().map(|s| metric_of(s, &documented)).filter(|m| !documented.contains(m)).collect();
        assert!(missing.is_empty(), "{file} reads metrics no service defines: {missing:?}");
    }

    let in_rules = alert_names(&alerts);
    let in_table = first_cells(&listed, |cell| cell.starts_with("Portcullis"));
    assert!(!in_rules.is_empty());
    assert_eq!(in_rules, in_table, "the alerts table of metrics.md and alerts.yml differ");
}

#[test]
fn series_names_map_to_their_metric() {
    let documented: BTreeSet<String> = ["socket_revocation_lag_seconds".to_owned()].into();
    assert_eq!(metric_of("socket_revocation_lag_seconds_bucket", &documented), "socket_revocation_lag_seconds");
    assert_eq!(metric_of("socket_revocation_lag_bucket", &documented), "socket_revocation_lag_bucket");
    assert_eq!(
        names_in("rate(gateway_requests_total{status=~\"5..\"}[5m]) / up"),
        BTreeSet::from(["gateway_requests_total".to_owned()])
    );
    assert_eq!(
        literals_in(r#"IntCounter::new("auth_x_total", "Help text")"#),
        BTreeSet::from(["auth_x_total".to_owned()])
    );
}
