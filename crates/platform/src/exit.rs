//! How every Portcullis binary ends: configuration the binary refuses exits with status 2
//! (before logging is set up, so the message goes to standard error), a failure to start or
//! a server error with status 1 (logged and printed), a clean shutdown with 0; the log lines
//! still queued are written before the process ends.

use std::{fmt::Display, process::ExitCode};

/// Why a binary stops early.
#[derive(Debug)]
pub enum Failure {
    /// A variable or file the binary refuses; nothing was started.
    Config(String),
    /// Start-up or serving failed.
    Run(String),
}

impl Failure {
    pub fn config(err: impl Display) -> Self {
        Self::Config(err.to_string())
    }

    /// A failure to start or serve, with what was being done.
    pub fn run(doing: &str, err: impl Display) -> Self {
        Self::Run(format!("{doing}: {err}"))
    }
}

/// The exit status of `binary` for `outcome`, after reporting a failure.
pub fn finish(binary: &str, outcome: Result<(), Failure>) -> ExitCode {
    let status = status(binary, outcome);
    crate::telemetry::flush();
    status
}

fn status(binary: &str, outcome: Result<(), Failure>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(message)) => {
            eprintln!("{binary}: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Run(message)) => {
            tracing::error!("{message}");
            eprintln!("{binary}: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_exits_2_and_failures_1() {
        assert_eq!(finish("t", Ok(())), ExitCode::SUCCESS);
        assert_eq!(finish("t", Err(Failure::config("PORT: not a number"))), ExitCode::from(2));
        assert_eq!(finish("t", Err(Failure::run("cannot listen", "in use"))), ExitCode::FAILURE);
        assert!(matches!(Failure::run("cannot listen", "in use"), Failure::Run(m) if m == "cannot listen: in use"));
    }
}
