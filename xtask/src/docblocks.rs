//! `cargo xtask doc-blocks [--run]` (`scripts/run-doc-blocks.sh`): the fenced shell blocks of
//! the README and `docs/`, listed with what becomes of each, and with `--run` run as written.
//!
//! A block's fence says how it runs:
//! - ```` ```sh ````: as written, with `bash -eu` (not `pipefail`: `curl … | head` is how a
//!   reader pages an answer), from the repository's root;
//! - ```` ```sh platform ````: the same, while the all-in-one binary runs on its default ports
//!   with a fresh `DATA_DIR` (started here before the block, ended after it);
//! - ```` ```sh no-run: <why> ````: not run here (a command that runs until stopped, needs a
//!   deployment, or is CI's own step); listed with its reason.
//!
//! While a block runs, `curl` is wrapped to report each answer's status: a block that cannot
//! connect (000), gets a 404 or a 5xx fails, since `curl -s` alone would hide it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::process::Command;

const USAGE: &str = "usage: cargo xtask doc-blocks [--run]";
const SHELLS: [&str; 3] = ["sh", "bash", "shell"];
/// How long the all-in-one binary may take to answer `/health` (it may still be building).
const PLATFORM_START: Duration = Duration::from_secs(600);
/// How long one block may run.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// How a block is run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    AsWritten,
    WithPlatform,
    NoRun(String),
    /// A fence this tool does not understand: an error, so no block is skipped silently.
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Block {
    file: PathBuf,
    line: usize,
    mode: Mode,
    script: String,
}

/// The shell blocks of one Markdown text.
fn blocks_in(file: &Path, markdown: &str) -> Vec<Block> {
    let mut found = Vec::new();
    let mut open: Option<(usize, Option<Mode>, String)> = None;
    for (index, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match open.as_mut() {
            None => {
                let Some(info) = trimmed.strip_prefix("```") else { continue };
                let info = info.trim();
                let (language, rest) = info.split_once(char::is_whitespace).unwrap_or((info, ""));
                let mode = SHELLS.contains(&language).then(|| match rest.trim() {
                    "" => Mode::AsWritten,
                    "platform" => Mode::WithPlatform,
                    other => match other.strip_prefix("no-run:") {
                        Some(reason) if !reason.trim().is_empty() => Mode::NoRun(reason.trim().to_owned()),
                        _ => Mode::Unknown(other.to_owned()),
                    },
                });
                open = Some((index + 1, mode, String::new()));
            }
            Some((start, mode, script)) => {
                if trimmed.starts_with("```") {
                    if let Some(mode) = mode.take() {
                        found.push(Block {
                            file: file.to_path_buf(),
                            line: *start,
                            mode,
                            script: std::mem::take(script),
                        });
                    }
                    open = None;
                } else {
                    script.push_str(line);
                    script.push('\n');
                }
            }
        }
    }
    found
}

/// Every shell block of `README.md` and `docs/`, paths relative to `root`.
fn all_blocks(root: &Path) -> Result<Vec<Block>, String> {
    let mut files = vec![root.join("README.md")];
    let is_markdown = |path: &Path| path.extension().is_some_and(|ext| ext == "md");
    crate::files_under(&root.join("docs"), &is_markdown, &mut files);
    let mut blocks = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        blocks.extend(blocks_in(file.strip_prefix(root).unwrap_or(&file), &text));
    }
    Ok(blocks)
}

pub async fn run(args: &[&str]) -> Result<(), String> {
    let execute = match args {
        [] => false,
        ["--run"] => true,
        _ => return Err(USAGE.to_owned()),
    };
    let root = crate::workspace_root();
    let blocks = all_blocks(&root)?;
    let unknown: Vec<String> = blocks
        .iter()
        .filter_map(|b| match &b.mode {
            Mode::Unknown(info) => Some(format!("{}:{}: `{info}`", b.file.display(), b.line)),
            _ => None,
        })
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "shell blocks with a fence this tool does not know (sh, sh platform, sh no-run: <why>): {unknown:?}"
        ));
    }
    for block in &blocks {
        if let Mode::NoRun(reason) = &block.mode {
            println!("not run  {}:{}  ({reason})", block.file.display(), block.line);
        }
    }
    let runnable: Vec<&Block> =
        blocks.iter().filter(|b| matches!(b.mode, Mode::AsWritten | Mode::WithPlatform)).collect();
    if !execute {
        for block in runnable {
            println!("runs     {}:{}  ({:?})", block.file.display(), block.line, block.mode);
        }
        return Ok(());
    }
    for block in runnable {
        let platform = match block.mode {
            Mode::WithPlatform => Some(Platform::start(&root).await?),
            _ => None,
        };
        let outcome = run_block(&root, block).await;
        if let Some(platform) = platform {
            platform.stop().await;
        }
        outcome?;
        println!("ran      {}:{}", block.file.display(), block.line);
    }
    Ok(())
}

/// What `curl` reports per answer while a block runs.
const CURL_STATUS: &str = "[doc-blocks curl status ";

async fn run_block(root: &Path, block: &Block) -> Result<(), String> {
    let prelude = format!("curl() {{ command curl -w '%{{stderr}}{CURL_STATUS}%{{http_code}}]\\n' \"$@\"; }}\n");
    let script = format!("{prelude}{}", block.script);
    let child = Command::new("bash")
        .args(["-eu", "-c", &script])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("bash: {e}"))?;
    let where_ = format!("{}:{}", block.file.display(), block.line);
    let output = tokio::time::timeout(BLOCK_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("{where_}: still running after {BLOCK_TIMEOUT:?}"))?
        .map_err(|e| format!("{where_}: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let statuses: Vec<u16> =
        stderr.lines().filter_map(|line| line.strip_prefix(CURL_STATUS)?.strip_suffix(']')?.parse().ok()).collect();
    let bad: Vec<u16> = statuses.iter().copied().filter(|s| *s == 0 || *s == 404 || *s >= 500).collect();
    if !output.status.success() || !bad.is_empty() {
        return Err(format!(
            "{where_}: exit {} with curl statuses {statuses:?}\n--- stdout\n{}\n--- stderr\n{stderr}",
            output.status,
            String::from_utf8_lossy(&output.stdout)
        ));
    }
    Ok(())
}

/// The all-in-one binary, started as the README's first command starts it (embedded, default
/// ports), with a fresh `DATA_DIR` and no shared backends.
struct Platform {
    child: tokio::process::Child,
    data_dir: tempfile::TempDir,
}

impl Platform {
    async fn start(root: &Path) -> Result<Self, String> {
        let data_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut child = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
            .args(["run", "--locked", "-q", "-p", "portcullis"])
            .current_dir(root)
            .env("DATA_DIR", data_dir.path())
            .env("RUST_LOG", "warn")
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("AMQP_URL")
            .env_remove("GATEWAY_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cargo run: {e}"))?;
        let deadline = tokio::time::Instant::now() + PLATFORM_START;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("the platform exited before answering ({status})"));
            }
            let health = reqwest::get("http://127.0.0.1:8080/health").await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return Ok(Self { child, data_dir });
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("the platform did not answer on :8080 within {PLATFORM_START:?}"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        drop(self.data_dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_say_how_a_block_runs() {
        let text = "a\n```sh\necho 1\n```\n```sh platform\ncurl x\n```\n```sh no-run: needs a deployment\nx\n```\n\
                    ```rust\nfn main() {}\n```\n```bash maybe\ny\n```\n";
        let blocks = blocks_in(Path::new("f.md"), text);
        let modes: Vec<_> = blocks.iter().map(|b| (b.line, b.mode.clone())).collect();
        assert_eq!(
            modes,
            [
                (2, Mode::AsWritten),
                (5, Mode::WithPlatform),
                (8, Mode::NoRun("needs a deployment".into())),
                (14, Mode::Unknown("maybe".into())),
            ]
        );
        assert_eq!(blocks[0].script, "echo 1\n");
    }

    #[test]
    fn every_shell_block_of_the_docs_has_a_known_fence() {
        let blocks = all_blocks(&crate::workspace_root()).unwrap_or_else(|e| panic!("{e}"));
        assert!(blocks.len() > 10, "too few shell blocks found: {}", blocks.len());
        let unknown: Vec<_> = blocks.iter().filter(|b| matches!(b.mode, Mode::Unknown(_))).collect();
        assert!(unknown.is_empty(), "{unknown:?}");
        assert!(
            blocks.iter().any(|b| b.file == Path::new("README.md") && b.mode == Mode::WithPlatform),
            "the README's tour runs against the platform"
        );
    }
}
