//! CPU time of process trees from `/proc`: what a target costs over a counted window.

use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat`'s CPU times.
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User plus system CPU ticks of `roots` and every process descending from them (nginx's
/// workers, say), from `/proc`. `None` when `/proc` cannot be read.
pub fn tree_ticks(roots: &[u32]) -> Option<u64> {
    let mut processes = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // Fields after the command name, which may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        // rest starts at field 3 (state): ppid is field 4, utime 14, stime 15.
        processes.push((pid, number(1) as u32, number(11) + number(12)));
    }
    let mut counted: Vec<u32> = roots.to_vec();
    let mut grew = true;
    while grew {
        grew = false;
        for (pid, parent, _) in &processes {
            if counted.contains(parent) && !counted.contains(pid) {
                counted.push(*pid);
                grew = true;
            }
        }
    }
    Some(processes.iter().filter(|(pid, _, _)| counted.contains(pid)).map(|(_, _, ticks)| ticks).sum())
}

/// The CPU ticks `pids` (with their descendants) spend from `start` to `end`, read at those
/// instants; `None` without pids or when `/proc` cannot be read.
pub async fn ticks_between(pids: Vec<u32>, start: Instant, end: Instant) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    tokio::time::sleep_until(start.into()).await;
    let before = tree_ticks(&pids)?;
    tokio::time::sleep_until(end.into()).await;
    Some(tree_ticks(&pids)?.saturating_sub(before))
}

/// `ticks` as microseconds of CPU per one of `count` (`None` when nothing was counted).
pub fn micros_each(ticks: Option<u64>, count: u64) -> Option<f64> {
    ticks.filter(|_| count > 0).map(|ticks| ticks as f64 / clock_ticks() * 1e6 / count as f64)
}
