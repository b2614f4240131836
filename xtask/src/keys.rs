//! `cargo xtask keys retire --dir <deployment> [--dry-run]`: takes the public-key setup a
//! team ran before Portcullis out of a deployment directory, keeping a copy of everything it
//! removes.
//!
//! What it retires: `*.pem` files in any `keys/` directory, the lines that set `PUBLIC_KEY`,
//! `PRIVATE_KEY`, `PUBLIC_KEY_PATH`, `PRIVATE_KEY_PATH`, `JWT_PUBLIC_KEY` or `JWT_PRIVATE_KEY`
//! in `.env*` files (with an `export` prefix, and quoted values spanning several lines), and in
//! compose files the same variables under `environment:` (list or map form, block scalars
//! included), the files their `env_file:` entries name, and `volumes:` entries mounting a `keys`
//! path. Files are edited line by line, so comments and everything else survive; a section left
//! empty loses its header (compose refuses an empty `environment:`). Originals, the removed
//! lines and the key files go to `backups/keys-backup-<date>/` first. `--dry-run` prints the
//! same report and changes nothing. Directories named `.git`, `node_modules`, `target` and
//! `backups` are not searched, and symbolic links are not followed.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    path::{Component, Path, PathBuf},
};

const USAGE: &str = "usage: cargo xtask keys retire --dir <deployment> [--dry-run] | keys rotate (--env-file <path> | --data-dir <dir>) (--stage | --promote | --prune) [--only jwt|service|context]...";

/// The variables of the public-key setup.
const RETIRED: [&str; 6] =
    ["PUBLIC_KEY", "PRIVATE_KEY", "PUBLIC_KEY_PATH", "PRIVATE_KEY_PATH", "JWT_PUBLIC_KEY", "JWT_PRIVATE_KEY"];

/// Directories never searched.
const SKIPPED_DIRS: [&str; 4] = [".git", "node_modules", "target", "backups"];

pub fn run(args: &[&str]) -> Result<(), String> {
    if let ["rotate", rest @ ..] = args {
        return rotate(rest);
    }
    let (dir, dry_run) = match args {
        ["retire", "--dir", dir] => (*dir, false),
        ["retire", "--dir", dir, "--dry-run"] | ["retire", "--dry-run", "--dir", dir] => (*dir, true),
        _ => return Err(USAGE.to_owned()),
    };
    let today = platform::clock::Clock::now(&platform::clock::SystemClock).date();
    for line in retire(Path::new(dir), dry_run, today)? {
        println!("{line}");
    }
    Ok(())
}

/// `keys rotate (--env-file <path> | --data-dir <dir>) (--stage | --promote | --prune) [--only
/// jwt|service|context]...`: the auth service's rotation ([`auth_service::rotation`]) on a
/// deployment's env file or the embedded mode's `DATA_DIR`; the step's report is printed.
fn rotate(args: &[&str]) -> Result<(), String> {
    use auth_service::rotation::{Place, Secret, Step};
    let mut place = None;
    let mut step = None;
    let mut secrets = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match *arg {
            "--env-file" | "--data-dir" => {
                let path = PathBuf::from(rest.next().ok_or(ROTATE_USAGE)?);
                let chosen = if *arg == "--env-file" { Place::EnvFile(path) } else { Place::DataDir(path) };
                if place.replace(chosen).is_some() {
                    return Err(ROTATE_USAGE.to_owned());
                }
            }
            "--stage" | "--promote" | "--prune" => {
                let chosen = match *arg {
                    "--stage" => Step::Stage,
                    "--promote" => Step::Promote,
                    _ => Step::Prune,
                };
                if step.replace(chosen).is_some() {
                    return Err(ROTATE_USAGE.to_owned());
                }
            }
            "--only" => {
                let name = rest.next().ok_or(ROTATE_USAGE)?;
                secrets.push(Secret::parse(name).ok_or_else(|| format!("--only {name}: not jwt, service or context"))?);
            }
            _ => return Err(ROTATE_USAGE.to_owned()),
        }
    }
    let (Some(place), Some(step)) = (place, step) else { return Err(ROTATE_USAGE.to_owned()) };
    if secrets.is_empty() {
        secrets = Secret::ALL.to_vec();
    }
    let now = platform::clock::Clock::now(&platform::clock::SystemClock);
    let report = auth_service::rotation::rotate(&place, step, &secrets, &platform::env::OsEnv, now)
        .map_err(|e| e.to_string())?;
    for line in report {
        println!("{line}");
    }
    Ok(())
}

const ROTATE_USAGE: &str = "usage: cargo xtask keys rotate (--env-file <path> | --data-dir <dir>) (--stage | --promote | --prune) [--only jwt|service|context]...";

/// Lines `start..=end` (0-based) of a file, removed for `what`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Removal {
    what: String,
    start: usize,
    end: usize,
}

/// One text file's retirement: what it was, what it becomes, what left it.
#[derive(Debug)]
struct Edit {
    /// Relative to the deployment directory.
    file: PathBuf,
    original: String,
    edited: String,
    removed: Vec<Removal>,
}

/// Everything one run retires.
#[derive(Debug, Default)]
struct Plan {
    /// Key files, relative to the deployment directory.
    key_files: Vec<PathBuf>,
    edits: Vec<Edit>,
    /// Things seen and left for a person (an inline compose list naming a retired variable).
    warnings: Vec<String>,
}

/// Retires the public-key setup under `dir` (or only says what it would do) and returns the
/// report, a line per action.
fn retire(dir: &Path, dry_run: bool, today: time::Date) -> Result<Vec<String>, String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let plan = plan(dir)?;
    let mut report = Vec::new();
    if plan.key_files.is_empty() && plan.edits.is_empty() {
        report.push(format!("nothing to retire under {}", dir.display()));
        report.extend(plan.warnings.iter().map(|w| format!("left alone: {w}")));
        return Ok(report);
    }
    let backup = if dry_run { None } else { Some(backup_dir(dir, today)) };
    if let Some(backup) = &backup {
        write_backup(dir, backup, &plan)?;
        report.push(format!("backup: {}", backup.display()));
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    for key in &plan.key_files {
        report.push(format!("{verb} {}", key.display()));
    }
    for edit in &plan.edits {
        for removal in &edit.removed {
            let lines = if removal.start == removal.end {
                format!("line {}", removal.start + 1)
            } else {
                format!("lines {}-{}", removal.start + 1, removal.end + 1)
            };
            report.push(format!("{verb} {}: {} ({lines})", edit.file.display(), removal.what));
        }
    }
    report.extend(plan.warnings.iter().map(|w| format!("left alone: {w}")));
    if !dry_run {
        apply(dir, &plan)?;
    }
    Ok(report)
}

/// `backups/keys-backup-<date>` under `dir`, or the first free `-2`, `-3`, … after it.
fn backup_dir(dir: &Path, today: time::Date) -> PathBuf {
    let base = dir.join("backups").join(format!("keys-backup-{today}"));
    if !base.exists() {
        return base;
    }
    (2..)
        .map(|n| dir.join("backups").join(format!("keys-backup-{today}-{n}")))
        .find(|candidate| !candidate.exists())
        .unwrap_or(base)
}

fn write_file(path: &Path, contents: &[u8]) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    fs::write(path, contents).map_err(|e| format!("{}: {e}", path.display()))
}

/// Copies the key files (`keys/…`), each edited file's original (`originals/…`) and the lines
/// taken out of it (`removed/…`, each run headed by where it was).
fn write_backup(dir: &Path, backup: &Path, plan: &Plan) -> Result<(), String> {
    for key in &plan.key_files {
        let contents = fs::read(dir.join(key)).map_err(|e| format!("{}: {e}", key.display()))?;
        write_file(&backup.join(key), &contents)?;
    }
    for edit in &plan.edits {
        write_file(&backup.join("originals").join(&edit.file), edit.original.as_bytes())?;
        let lines: Vec<&str> = edit.original.split_inclusive('\n').collect();
        let mut removed = String::new();
        for removal in &edit.removed {
            let _ = writeln!(
                removed,
                "# {}, lines {}-{}: {}",
                edit.file.display(),
                removal.start + 1,
                removal.end + 1,
                removal.what
            );
            for line in &lines[removal.start..=removal.end] {
                removed.push_str(line);
                if !line.ends_with('\n') {
                    removed.push('\n');
                }
            }
        }
        write_file(&backup.join("removed").join(&edit.file), removed.as_bytes())?;
    }
    Ok(())
}

fn apply(dir: &Path, plan: &Plan) -> Result<(), String> {
    for edit in &plan.edits {
        write_file(&dir.join(&edit.file), edit.edited.as_bytes())?;
    }
    let mut key_dirs = BTreeSet::new();
    for key in &plan.key_files {
        let path = dir.join(key);
        fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(parent) = path.parent() {
            key_dirs.insert(parent.to_path_buf());
        }
    }
    // A `keys/` directory left empty goes too; one holding anything else stays.
    for key_dir in key_dirs {
        if fs::read_dir(&key_dir).is_ok_and(|mut entries| entries.next().is_none()) {
            let _ = fs::remove_dir(&key_dir);
        }
    }
    Ok(())
}

/// The files under `dir` (relative paths), not following links, skipping [`SKIPPED_DIRS`].
fn files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let entries = fs::read_dir(dir.join(&relative)).map_err(|e| format!("{}: {e}", relative.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| e.to_string())?;
            let kind = entry.file_type().map_err(|e| e.to_string())?;
            let name = entry.file_name();
            let path = relative.join(&name);
            if kind.is_dir() && !SKIPPED_DIRS.iter().any(|skipped| name == *skipped) {
                pending.push(path);
            } else if kind.is_file() {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or_default()
}

fn is_key_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "pem") && path.parent().is_some_and(|p| file_name(p) == "keys")
}

fn is_env_file(path: &Path) -> bool {
    let name = file_name(path);
    name.starts_with(".env") || name.ends_with(".env")
}

fn is_compose_file(path: &Path) -> bool {
    let name = file_name(path);
    (name.starts_with("docker-compose") || name.starts_with("compose"))
        && (name.ends_with(".yml") || name.ends_with(".yaml"))
}

/// `base/reference` made relative to the deployment directory, if it stays inside it.
fn inside(base: &Path, reference: &str) -> Option<PathBuf> {
    let mut path = PathBuf::new();
    for component in base.join(reference).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !path.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(path)
}

fn plan(dir: &Path) -> Result<Plan, String> {
    let all = files(dir)?;
    let mut plan = Plan { key_files: all.iter().filter(|p| is_key_file(p)).cloned().collect(), ..Plan::default() };
    let mut env_files: BTreeSet<PathBuf> = all.iter().filter(|p| is_env_file(p)).cloned().collect();
    for compose in all.iter().filter(|p| is_compose_file(p)) {
        let Ok(text) = fs::read_to_string(dir.join(compose)) else {
            plan.warnings.push(format!("{}: not UTF-8 text", compose.display()));
            continue;
        };
        let edited = edit_compose(&text);
        let base = compose.parent().unwrap_or(Path::new(""));
        for reference in &edited.env_files {
            match inside(base, reference) {
                Some(path) if dir.join(&path).is_file() => {
                    env_files.insert(path);
                }
                _ => plan.warnings.push(format!("{}: env_file {reference} not found here", compose.display())),
            }
        }
        plan.warnings.extend(edited.warnings.iter().map(|w| format!("{}: {w}", compose.display())));
        push_edit(&mut plan, compose, text, edited.text, edited.removed);
    }
    for env_file in env_files {
        let Ok(text) = fs::read_to_string(dir.join(&env_file)) else {
            plan.warnings.push(format!("{}: not UTF-8 text", env_file.display()));
            continue;
        };
        let (edited, removed) = edit_env(&text);
        push_edit(&mut plan, &env_file, text, edited, removed);
    }
    Ok(plan)
}

fn push_edit(plan: &mut Plan, file: &Path, original: String, edited: String, removed: Vec<Removal>) {
    if !removed.is_empty() {
        plan.edits.push(Edit { file: file.to_path_buf(), original, edited, removed });
    }
}

/// The text without the lines the removals name (line endings kept as they were).
fn without(text: &str, removed: &[Removal]) -> String {
    text.split_inclusive('\n')
        .enumerate()
        .filter(|(i, _)| !removed.iter().any(|r| (r.start..=r.end).contains(i)))
        .map(|(_, line)| line)
        .collect()
}

fn retired(name: &str) -> bool {
    RETIRED.contains(&name)
}

/// The index of the closing `quote` in `text` (a double quote may be escaped with `\`).
fn closing_quote(text: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            '\\' if quote == '"' && !escaped => escaped = true,
            c if c == quote && !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

/// The last line (from `start`) of a value opened on line `start` with `rest`: a quoted value
/// runs to its closing quote, on this line or a later one.
fn value_end(lines: &[&str], start: usize, rest: &str) -> usize {
    let rest = rest.trim_start();
    let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
        return start;
    };
    if closing_quote(&rest[1..], quote).is_some() {
        return start;
    }
    (start + 1..lines.len()).find(|&i| closing_quote(lines[i], quote).is_some()).unwrap_or(lines.len() - 1)
}

/// A dotenv file without the retired variables' lines.
fn edit_env(text: &str) -> (String, Vec<Removal>) {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut removed = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        let line = line.strip_prefix("export").filter(|r| r.starts_with([' ', '\t'])).map_or(line, str::trim_start);
        if let Some((name, rest)) = line.split_once('=')
            && retired(name.trim_end())
        {
            let end = value_end(&lines, i, rest);
            removed.push(Removal { what: name.trim_end().to_owned(), start: i, end });
            i = end + 1;
        } else {
            i += 1;
        }
    }
    (without(text, &removed), removed)
}

/// A compose file's retirement: its text, what left it, the `env_file:` references found and
/// what could not be edited.
struct ComposeEdit {
    text: String,
    removed: Vec<Removal>,
    env_files: Vec<String>,
    warnings: Vec<String>,
}

/// One line of YAML as the line editor sees it.
struct Line<'a> {
    indent: usize,
    /// Without indentation or line ending.
    content: &'a str,
}

impl Line<'_> {
    /// Blank or a comment: belongs to no entry.
    fn is_filler(&self) -> bool {
        self.content.is_empty() || self.content.starts_with('#')
    }
}

/// A YAML scalar without its quotes.
fn unquoted(text: &str) -> &str {
    let text = text.trim();
    for quote in ['"', '\''] {
        if let Some(inner) = text.strip_prefix(quote).and_then(|t| t.strip_suffix(quote)) {
            return inner;
        }
    }
    text
}

/// `key: rest` of a mapping line (the key unquoted), if it is one.
fn mapping(content: &str) -> Option<(&str, &str)> {
    let (key, rest) = content.split_once(':')?;
    (rest.is_empty() || rest.starts_with([' ', '\t'])).then(|| (unquoted(key), rest.trim()))
}

/// A value with a trailing `# comment` removed.
fn without_comment(value: &str) -> &str {
    value.split(" #").next().unwrap_or(value).trim()
}

/// The sections of a compose file this edits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Environment,
    Volumes,
    EnvFile,
}

/// A compose file without the retired variables and `keys` mounts.
fn edit_compose(text: &str) -> ComposeEdit {
    let raw: Vec<&str> = text.split_inclusive('\n').collect();
    let lines: Vec<Line> = raw
        .iter()
        .map(|line| {
            let bare = line.trim_end_matches(['\n', '\r']);
            let content = bare.trim_start_matches(' ');
            Line { indent: bare.len() - content.len(), content: content.trim_end() }
        })
        .collect();
    let mut edit =
        ComposeEdit { text: String::new(), removed: Vec::new(), env_files: Vec::new(), warnings: Vec::new() };
    // The mapping keys above the current line, as (indent, key).
    let mut path: Vec<(usize, &str)> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = &lines[i];
        if line.is_filler() || line.content.starts_with('-') {
            i += 1;
            continue;
        }
        while path.last().is_some_and(|(indent, _)| *indent >= line.indent) {
            path.pop();
        }
        let Some((key, rest)) = mapping(line.content) else {
            i += 1;
            continue;
        };
        let section = match key {
            "environment" => Some(Section::Environment),
            // Top-level `volumes:` declares named volumes; a service's mounts its paths.
            "volumes" if !path.is_empty() => Some(Section::Volumes),
            "env_file" => Some(Section::EnvFile),
            _ => None,
        };
        let where_ = path.iter().map(|(_, k)| *k).chain([key]).collect::<Vec<_>>().join(".");
        path.push((line.indent, key));
        let (Some(section), value) = (section, without_comment(rest)) else {
            i += 1;
            continue;
        };
        if !value.is_empty() {
            inline_section(&mut edit, section, &where_, value);
            i += 1;
            continue;
        }
        i = block_section(&mut edit, &lines, i, section, &where_);
    }
    edit.text = without(text, &edit.removed);
    edit
}

/// A section written on its key's line (`env_file: .env`, `environment: [A=1]`): env files are
/// noted, a retired name or `keys` mount is reported to edit by hand.
fn inline_section(edit: &mut ComposeEdit, section: Section, where_: &str, value: &str) {
    let items: Vec<&str> = value.trim_start_matches(['[', '{']).trim_end_matches([']', '}']).split(',').collect();
    match section {
        Section::EnvFile => {
            edit.env_files.extend(items.iter().map(|i| unquoted(i).to_owned()).filter(|i| !i.is_empty()))
        }
        Section::Environment if items.iter().any(|i| retired(entry_name(i))) => {
            edit.warnings.push(format!("{where_} is written inline; remove its retired variables by hand"));
        }
        Section::Volumes if items.iter().any(|i| mounts_keys(unquoted(i))) => {
            edit.warnings.push(format!("{where_} is written inline; remove its keys mount by hand"));
        }
        Section::Environment | Section::Volumes => {}
    }
}

/// The variable an `environment` entry sets: `NAME=value`, `NAME: value` or a bare `NAME`.
fn entry_name(entry: &str) -> &str {
    let entry = unquoted(entry);
    let end = entry.find(['=', ':']).unwrap_or(entry.len());
    unquoted(entry[..end].trim())
}

/// Whether a volume's host side (`./keys:/app/keys:ro`, or a long form's `source`) is a `keys`
/// directory or inside one.
fn mounts_keys(source_and_target: &str) -> bool {
    let source = source_and_target.split(':').next().unwrap_or_default();
    Path::new(source).components().any(|c| c.as_os_str() == "keys")
}

/// Walks the entries of the block section whose key is on line `header`, records the ones to
/// remove (and the header when none is left), and returns the first line after the section.
fn block_section(edit: &mut ComposeEdit, lines: &[Line], header: usize, section: Section, where_: &str) -> usize {
    let indent = lines[header].indent;
    let end =
        (header + 1..lines.len()).find(|&j| !lines[j].is_filler() && lines[j].indent <= indent).unwrap_or(lines.len());
    let Some(item_indent) = (header + 1..end).find(|&j| !lines[j].is_filler()).map(|j| lines[j].indent) else {
        return end;
    };
    let starts: Vec<usize> =
        (header + 1..end).filter(|&j| !lines[j].is_filler() && lines[j].indent == item_indent).collect();
    let mut removed_here = 0;
    for (n, &start) in starts.iter().enumerate() {
        let next = starts.get(n + 1).copied().unwrap_or(end);
        // An entry runs over its more indented lines (a block scalar, a long-form mount),
        // not over the comments and blank lines after it.
        let last = (start..next).rev().find(|&j| !lines[j].is_filler()).unwrap_or(start);
        let item = lines[start].content;
        let listed = item.strip_prefix('-').map(str::trim_start);
        let what = match section {
            Section::EnvFile => {
                let reference = listed.map(|l| l.strip_prefix("path:").unwrap_or(l));
                edit.env_files.extend(reference.map(|r| unquoted(without_comment(r)).to_owned()));
                continue;
            }
            Section::Environment => {
                let name = entry_name(without_comment(listed.unwrap_or(item)));
                if !retired(name) {
                    continue;
                }
                name.to_owned()
            }
            Section::Volumes => {
                let Some(listed) = listed else { continue };
                let source = if listed.starts_with("type:") || listed.starts_with("source:") {
                    (start..=last)
                        .map(|j| lines[j].content.trim_start_matches('-').trim_start())
                        .find_map(|l| l.strip_prefix("source:"))
                        .map(|s| unquoted(without_comment(s)))
                } else {
                    Some(unquoted(without_comment(listed)))
                };
                match source {
                    Some(source) if mounts_keys(source) => source.to_owned(),
                    _ => continue,
                }
            }
        };
        let end_of_value = if section == Section::Environment {
            let rest = listed.unwrap_or(item).split_once([':', '=']).map_or("", |(_, rest)| rest);
            last.max(value_end_in(lines, start, rest))
        } else {
            last
        };
        edit.removed.push(Removal { what: format!("{where_}: {what}"), start, end: end_of_value });
        removed_here += 1;
    }
    if removed_here == starts.len() {
        edit.removed.push(Removal { what: format!("{where_} (left empty)"), start: header, end: header });
    }
    end
}

/// [`value_end`] over parsed lines.
fn value_end_in(lines: &[Line], start: usize, rest: &str) -> usize {
    let contents: Vec<&str> = lines.iter().map(|l| l.content).collect();
    value_end(&contents, start, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotate_takes_a_place_a_step_and_optional_secrets() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let env = dir.path().join(".env");
        let secret = "a-secret-of-at-least-32-bytes-0123456789abcdef";
        fs::write(&env, format!("JWT_SECRET={secret}\nSERVICE_SECRET={secret}x\n")).unwrap_or_else(|e| panic!("{e}"));
        let path = env.to_string_lossy().to_string();
        for wrong in [
            vec!["rotate", "--env-file", path.as_str()],
            vec!["rotate", "--stage"],
            vec!["rotate", "--env-file", path.as_str(), "--stage", "--prune"],
            vec!["rotate", "--env-file", path.as_str(), "--stage", "--only", "all"],
        ] {
            assert!(run(&wrong).is_err(), "{wrong:?}");
        }
        run(&["rotate", "--env-file", &path, "--stage", "--only", "jwt"]).unwrap_or_else(|e| panic!("{e}"));
        let text = fs::read_to_string(&env).unwrap_or_default();
        assert!(text.contains("\nJWT_PREVIOUS_SECRETS="), "{text}");
        assert!(!text.contains("SERVICE_PREVIOUS_SECRETS"), "--only jwt leaves the others alone: {text}");
    }

    const TODAY: time::Date = match time::Date::from_calendar_date(2026, time::Month::December, 5) {
        Ok(date) => date,
        Err(_) => panic!("a real date"),
    };

    const ENV: &str = "# Gateway settings\nPORT=3000\nexport PUBLIC_KEY=\"-----BEGIN PUBLIC KEY-----\nMIIBIjAN\n-----END PUBLIC KEY-----\"\n# the signing key\nPRIVATE_KEY_PATH=./keys/private.pem\nJWT_PUBLIC_KEY_EXTRA=kept\nexport  JWT_PRIVATE_KEY='line one\nline two'\nAUTH_SERVICE_URL=http://auth:4001 # keep\n";
    const ENV_AFTER: &str = "# Gateway settings\nPORT=3000\n# the signing key\nJWT_PUBLIC_KEY_EXTRA=kept\nAUTH_SERVICE_URL=http://auth:4001 # keep\n";

    const COMPOSE: &str = r#"version: "3.8"
services:
  gateway:
    image: gateway
    # keys for the old middleware
    environment:
      - PORT=3000
      - "PUBLIC_KEY_PATH=/app/keys/public.pem"
      - JWT_PUBLIC_KEY
    env_file:
      - ./config/gateway.env
    volumes:
      - ./keys:/app/keys:ro # read-only
      - data:/data
      - type: bind
        source: ./keys/private.pem
        target: /app/private.pem
  api:
    image: api
    environment:
      PRIVATE_KEY: |
        -----BEGIN PRIVATE KEY-----
        MIIEvQ
        -----END PRIVATE KEY-----
      # no more keys below
      JWT_PRIVATE_KEY: "abc"
    volumes:
      - "../outside/keys:/keys"
    env_file: .env.api
volumes:
  data:
  keys:
"#;
    const COMPOSE_AFTER: &str = r#"version: "3.8"
services:
  gateway:
    image: gateway
    # keys for the old middleware
    environment:
      - PORT=3000
    env_file:
      - ./config/gateway.env
    volumes:
      - data:/data
  api:
    image: api
      # no more keys below
    env_file: .env.api
volumes:
  data:
  keys:
"#;

    fn deployment() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| write_file(&dir.path().join(path), text.as_bytes()).unwrap();
        write("keys/private.pem", "-----BEGIN PRIVATE KEY-----\n");
        write("keys/public.pem", "-----BEGIN PUBLIC KEY-----\n");
        write("services/gateway/keys/public.pem", "gateway copy\n");
        write("keys/README.md", "kept\n");
        write(".env", ENV);
        write(".env.example", "PUBLIC_KEY=\nPORT=3000\n");
        write(".env.api", "PRIVATE_KEY=x\r\nOTHER=y\r\n");
        write("config/gateway.env", "JWT_PUBLIC_KEY=abc\nLOG=info\n");
        write("docker-compose.yml", COMPOSE);
        write("node_modules/pkg/keys/dep.pem", "not ours\n");
        write("src/app.js", "const key = process.env.PUBLIC_KEY;\n");
        dir
    }

    fn read(dir: &Path, path: &str) -> String {
        fs::read_to_string(dir.join(path)).unwrap()
    }

    #[test]
    fn dotenv_lines_go_with_export_prefixes_and_multi_line_values_and_comments_stay() {
        let (edited, removed) = edit_env(ENV);
        assert_eq!(edited, ENV_AFTER);
        let names: Vec<_> = removed.iter().map(|r| (r.what.as_str(), r.start, r.end)).collect();
        assert_eq!(names, [("PUBLIC_KEY", 2, 4), ("PRIVATE_KEY_PATH", 6, 6), ("JWT_PRIVATE_KEY", 8, 9)]);
    }

    #[test]
    fn compose_entries_go_in_list_and_map_form_with_their_mounts_and_empty_sections() {
        let edit = edit_compose(COMPOSE);
        assert_eq!(edit.text, COMPOSE_AFTER);
        assert_eq!(edit.env_files, ["./config/gateway.env", ".env.api"]);
        assert!(edit.warnings.is_empty(), "{:?}", edit.warnings);
        let what: Vec<_> = edit.removed.iter().map(|r| r.what.as_str()).collect();
        assert_eq!(
            what,
            [
                "services.gateway.environment: PUBLIC_KEY_PATH",
                "services.gateway.environment: JWT_PUBLIC_KEY",
                "services.gateway.volumes: ./keys:/app/keys:ro",
                "services.gateway.volumes: ./keys/private.pem",
                "services.api.environment: PRIVATE_KEY",
                "services.api.environment: JWT_PRIVATE_KEY",
                "services.api.environment (left empty)",
                "services.api.volumes: ../outside/keys:/keys",
                "services.api.volumes (left empty)",
            ]
        );
    }

    #[test]
    fn inline_sections_naming_retired_variables_are_left_for_a_person() {
        let edit =
            edit_compose("services:\n  a:\n    environment: [PORT=1, PUBLIC_KEY=x]\n    volumes: ['./keys:/k']\n");
        assert!(edit.removed.is_empty());
        assert_eq!(edit.warnings.len(), 2, "{:?}", edit.warnings);
    }

    #[test]
    fn retire_backs_up_then_removes_and_a_second_run_finds_nothing() {
        let dir = deployment();
        let root = dir.path();
        let report = retire(root, false, TODAY).unwrap();
        let backup = root.join("backups/keys-backup-2026-12-05");
        assert_eq!(report[0], format!("backup: {}", backup.display()));
        assert!(report.contains(&"removed keys/private.pem".to_owned()), "{report:#?}");
        assert!(report.contains(&"removed .env: PUBLIC_KEY (lines 3-5)".to_owned()), "{report:#?}");
        assert!(report.contains(&"removed config/gateway.env: JWT_PUBLIC_KEY (line 1)".to_owned()), "{report:#?}");
        // Edited in place, everything else kept.
        assert_eq!(read(root, ".env"), ENV_AFTER);
        assert_eq!(read(root, ".env.example"), "PORT=3000\n");
        assert_eq!(read(root, ".env.api"), "OTHER=y\r\n");
        assert_eq!(read(root, "config/gateway.env"), "LOG=info\n");
        assert_eq!(read(root, "docker-compose.yml"), COMPOSE_AFTER);
        assert_eq!(read(root, "src/app.js"), "const key = process.env.PUBLIC_KEY;\n");
        assert_eq!(read(root, "node_modules/pkg/keys/dep.pem"), "not ours\n");
        // Key files gone; a keys/ directory holding something else stays, an empty one goes.
        assert!(!root.join("keys/private.pem").exists() && !root.join("keys/public.pem").exists());
        assert_eq!(read(root, "keys/README.md"), "kept\n");
        assert!(!root.join("services/gateway/keys").exists());
        // The backup holds the keys, the originals and the removed lines.
        assert_eq!(read(&backup, "keys/private.pem"), "-----BEGIN PRIVATE KEY-----\n");
        assert_eq!(read(&backup, "services/gateway/keys/public.pem"), "gateway copy\n");
        assert_eq!(read(&backup, "originals/.env"), ENV);
        assert_eq!(read(&backup, "originals/docker-compose.yml"), COMPOSE);
        let removed = read(&backup, "removed/.env");
        assert!(removed.starts_with("# .env, lines 3-5: PUBLIC_KEY\nexport PUBLIC_KEY=\"-----BEGIN PUBLIC KEY-----\n"));
        assert!(removed.contains("export  JWT_PRIVATE_KEY='line one\nline two'\n"), "{removed}");

        let again = retire(root, false, TODAY).unwrap();
        assert_eq!(again, [format!("nothing to retire under {}", root.display())]);
        assert!(!root.join("backups/keys-backup-2026-12-05-2").exists());
    }

    #[test]
    fn a_dry_run_reports_the_same_and_changes_nothing() {
        let dir = deployment();
        let root = dir.path();
        let report = retire(root, true, TODAY).unwrap();
        assert!(report.contains(&"would remove keys/private.pem".to_owned()), "{report:#?}");
        assert!(report.contains(&"would remove .env: PUBLIC_KEY (lines 3-5)".to_owned()), "{report:#?}");
        assert!(!root.join("backups").exists());
        assert_eq!(read(root, ".env"), ENV);
        assert_eq!(read(root, "docker-compose.yml"), COMPOSE);
        assert!(root.join("keys/private.pem").exists());
        // The real run after it does what the dry run said.
        let done = retire(root, false, TODAY).unwrap();
        let said: Vec<String> = report.iter().map(|l| l.replacen("would remove", "removed", 1)).collect();
        assert_eq!(&done[1..], said.as_slice());
    }

    #[test]
    fn a_second_backup_the_same_day_gets_its_own_directory() {
        let dir = deployment();
        let root = dir.path();
        fs::create_dir_all(root.join("backups/keys-backup-2026-12-05")).unwrap();
        let report = retire(root, false, TODAY).unwrap();
        assert_eq!(report[0], format!("backup: {}", root.join("backups/keys-backup-2026-12-05-2").display()));
    }

    #[test]
    fn env_files_named_outside_the_deployment_are_not_touched() {
        let dir = tempfile::tempdir().unwrap();
        write_file(&dir.path().join("compose.yaml"), b"services:\n  a:\n    env_file: ../../etc/other.env\n").unwrap();
        let report = retire(dir.path(), false, TODAY).unwrap();
        assert_eq!(report[0], format!("nothing to retire under {}", dir.path().display()));
        assert!(report[1].contains("env_file ../../etc/other.env not found here"), "{report:#?}");
    }
}
