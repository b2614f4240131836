//! `portcullis health`, the command container health checks run (the runtime image has no
//! curl): it asks the configured listeners' `/health` and exits 0 only while every service of
//! the running binary answers, 1 before it is up, after it is gone, and when a configured port
//! has nobody behind it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use support::{Binary, free_port};

mod support;

fn health(env: &[(String, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("health")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap()
}

#[test]
fn health_exits_zero_only_while_every_service_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let env: Vec<(String, String)> = [
        ("DATA_DIR", tmp.path().join("data").display().to_string()),
        ("AUTH_PORT", free_port().to_string()),
        ("AUTH_GRPC_PORT", free_port().to_string()),
        ("GATEWAY_PORT", free_port().to_string()),
        ("SOCKET_PORT", free_port().to_string()),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();

    let before = health(&env);
    assert_eq!(before.status.code(), Some(1), "healthy before the binary started");
    assert!(String::from_utf8_lossy(&before.stderr).contains("unhealthy"));

    let log = tmp.path().join("portcullis.log");
    let mut binary = Binary::start(&env, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let probe = health(&env);
        if probe.status.success() {
            assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "portcullis: healthy");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never healthy: {}\n{}",
            String::from_utf8_lossy(&probe.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // One configured port with nobody behind it is enough to be unhealthy.
    let mut elsewhere = env.clone();
    elsewhere.retain(|(k, _)| k != "SOCKET_PORT");
    elsewhere.push(("SOCKET_PORT".to_owned(), free_port().to_string()));
    let partial = health(&elsewhere);
    assert_eq!(partial.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&partial.stderr).contains("refused"), "{partial:?}");

    binary.kill();
    assert_eq!(health(&env).status.code(), Some(1), "healthy after the binary was killed");
}

#[test]
fn a_bad_variable_of_any_service_is_a_configuration_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data").display().to_string();
    for (variable, value) in
        [("JWT_EXPIRES_IN", "soon"), ("IP_RATE_LIMIT", "lots"), ("SOCKET_MESSAGES_PER_MINUTE", "0")]
    {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .env_clear()
            .env("DATA_DIR", &data_dir)
            .env("AUTH_PORT", free_port().to_string())
            .env(variable, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{variable}: {stderr}");
        assert!(stderr.contains(variable), "{variable} is named: {stderr}");
    }
}
