//! What the tests of the all-in-one binary share: free ports and the binary as a child
//! process, SIGKILLed when dropped.

#![allow(dead_code, clippy::unwrap_used)]

use std::{
    path::Path,
    process::{Child, Command, Stdio},
};

pub fn free_port() -> u16 {
    testkit::free_port()
}

/// The all-in-one binary, SIGKILLed when dropped.
pub struct Binary {
    child: Child,
}

impl Binary {
    pub fn start(env: &[(String, String)], log: &Path) -> Self {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        Self { child }
    }

    /// SIGKILL: nothing is flushed or closed by the process itself.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.kill();
    }
}
