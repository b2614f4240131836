//! `docker-compose.yml` agrees with the image and with `.env.example` (there is no container
//! engine here: CI also parses the file with `docker-compose config -q`). Every service built
//! from the Dockerfile has a health check running `<binary> health`, the binary is one the
//! Dockerfile copies into the runtime image and its `main` answers that command; every
//! `depends_on` names a condition; every variable the file reads is in `.env.example`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

/// A compose service as far as these checks need it.
#[derive(Default, Debug)]
pub struct Service {
    built: bool,
    health_check: Option<Vec<String>>,
    /// Lines under `depends_on:`, trimmed.
    depends_on: Vec<String>,
    /// The names its `environment:` map sets.
    pub environment: BTreeSet<String>,
}

/// The services of a compose file, read line by line (two-space indentation).
pub fn services(compose: &str) -> BTreeMap<String, Service> {
    let mut found: BTreeMap<String, Service> = BTreeMap::new();
    let mut in_services = false;
    let mut current: Option<String> = None;
    let mut in_depends = false;
    let mut in_environment = false;
    for line in compose.lines() {
        let content = line.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent == 0 {
            in_services = content == "services:";
            current = None;
            continue;
        }
        if !in_services {
            continue;
        }
        if indent == 2 {
            current = content.strip_suffix(':').map(str::to_owned);
            in_depends = false;
            in_environment = false;
            continue;
        }
        let Some(service) = current.as_ref().map(|name| found.entry(name.clone()).or_default()) else { continue };
        if indent == 4 {
            in_depends = content == "depends_on:";
            in_environment = content == "environment:";
            service.built |= content.starts_with("build:");
        } else if in_depends {
            service.depends_on.push(content.to_owned());
        } else if let Some((name, _)) = content.split_once(':').filter(|_| in_environment && indent == 6) {
            service.environment.insert(name.to_owned());
        }
        if let Some(test) = content.strip_prefix("test:") {
            service.health_check = serde_json::from_str(test.trim()).ok();
        }
    }
    found
}

/// The binaries the Dockerfile's runtime stage copies into `/usr/local/bin/`.
fn image_binaries(dockerfile: &str) -> BTreeSet<String> {
    dockerfile
        .lines()
        .filter(|line| line.starts_with("COPY --from=build") && line.trim_end().ends_with("/usr/local/bin/"))
        .flat_map(|line| line.split_whitespace().filter_map(|word| word.strip_prefix("/src/target/release/")))
        .map(str::to_owned)
        .collect()
}

/// The names of `${NAME}`, `${NAME:-…}` and `${NAME:?…}` references.
fn variables(compose: &str) -> BTreeSet<String> {
    compose
        .split("${")
        .skip(1)
        .filter_map(|rest| rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next())
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

pub fn read(root: &Path, file: &str) -> String {
    fs::read_to_string(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn every_built_service_is_health_checked_by_a_binary_of_the_image() {
    let root = crate::workspace_root();
    let compose = read(&root, "docker-compose.yml");
    let services = services(&compose);
    let binaries = image_binaries(&read(&root, "Dockerfile"));
    assert!(binaries.contains("gateway") && binaries.contains("auth-service"), "{binaries:?}");
    let built: Vec<_> = services.iter().filter(|(_, s)| s.built).collect();
    assert_eq!(built.len(), 3, "auth-service, gateway and socket-service are built here: {services:?}");
    for (name, service) in built {
        let check = service.health_check.as_ref().unwrap_or_else(|| panic!("{name} has no health check"));
        let [cmd, binary, subcommand] = check.as_slice() else { panic!("{name}: health check {check:?}") };
        assert_eq!((cmd.as_str(), subcommand.as_str()), ("CMD", "health"), "{name}: {check:?}");
        assert!(binaries.contains(binary), "{name}: {binary} is not in the image ({binaries:?})");
        let main = read(&root, &format!("crates/{binary}/src/main.rs"));
        assert!(main.contains("platform::health::requested()"), "{binary} does not answer `health`");
    }
    for (name, service) in &services {
        assert!(service.health_check.is_some(), "{name} has no health check");
        for line in &service.depends_on {
            assert!(
                line.ends_with(':') || line.starts_with("condition: service_healthy"),
                "{name}: depends_on without a healthy condition: {line}"
            );
        }
    }
}

#[test]
fn every_variable_compose_reads_is_documented_in_the_env_example() {
    let root = crate::workspace_root();
    let read_by_compose = variables(&read(&root, "docker-compose.yml"));
    let example = read(&root, ".env.example");
    let documented: BTreeSet<String> =
        example.lines().filter_map(|l| l.split_once('=')).map(|(name, _)| name.trim().to_owned()).collect();
    assert!(read_by_compose.contains("RABBITMQ_PASSWORD"), "{read_by_compose:?}");
    let missing: Vec<_> = read_by_compose.difference(&documented).collect();
    assert!(missing.is_empty(), "read by docker-compose.yml, not in .env.example: {missing:?}");
}

#[test]
fn the_readers_see_what_is_written() {
    let compose = "services:\n  a:\n    build: .\n    environment:\n      PORT: \"1\"\n      URL: http://x:1\n    healthcheck:\n      test: [\"CMD\", \"a\", \"health\"]\n    depends_on:\n      b:\n        condition: service_started\n  b:\n    image: x\nvolumes:\n  v:\n";
    let found = services(compose);
    assert!(found["a"].built && !found["b"].built);
    assert_eq!(found["a"].environment, BTreeSet::from(["PORT".into(), "URL".into()]));
    assert_eq!(found["a"].health_check.as_deref(), Some(&["CMD".to_owned(), "a".to_owned(), "health".to_owned()][..]));
    assert_eq!(found["a"].depends_on, ["b:", "condition: service_started"]);
    assert_eq!(variables("x: ${A:-1} ${B:?no} ${C}"), BTreeSet::from(["A".into(), "B".into(), "C".into()]));
    assert_eq!(
        image_binaries("COPY --from=build /src/target/release/a /src/target/release/b /usr/local/bin/\n"),
        BTreeSet::from(["a".into(), "b".into()])
    );
}
