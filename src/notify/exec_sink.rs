//! The `exec` sink: run a command (argv, no shell) and tell it about the event.
//!
//! The child gets the event JSON on stdin and `SECRET_ROTATOR_TYPE`, `SECRET_ROTATOR_CREDENTIAL`,
//! `SECRET_ROTATOR_VERSION` and `SECRET_ROTATOR_ATTEMPT` in its environment. Its environment is
//! otherwise cleared down to a few harmless variables ([`KEPT_VARIABLES`]), so nothing the daemon
//! holds (`VAULT_TOKEN`, a role id, a cloud key) is inherited. It runs in a process group of its
//! own; at the timeout the whole group is killed with SIGKILL. Exit status 0 means delivered.

use std::time::Duration;

use super::delivery::Delivery;
use crate::events::Event;
use crate::process::{Ended, Program};

pub use crate::process::KEPT_VARIABLES;

/// How much of each of stdout and stderr is kept for the log.
pub const OUTPUT_CAP: usize = 4096;

/// What the child is told about: the values of the `SECRET_ROTATOR_*` variables and the body
/// written to its stdin (the event payload as JSON).
#[derive(Debug, Clone, Copy)]
pub struct ExecEvent<'a> {
    /// `credential.rotated`, ...
    pub kind: &'a str,
    pub credential: &'a str,
    /// The KV version the event is about; an empty variable when there is none.
    pub version: Option<u64>,
    pub attempt: &'a str,
    pub body: &'a [u8],
}

impl<'a> ExecEvent<'a> {
    /// The variables from `event`, with `body` (its payload as JSON) for stdin.
    pub fn new(event: &'a Event, body: &'a [u8]) -> ExecEvent<'a> {
        ExecEvent {
            kind: event.kind.as_str(),
            credential: &event.credential,
            version: event.version,
            attempt: &event.attempt,
            body,
        }
    }
}

/// The result of one run, with the child's output truncated to [`OUTPUT_CAP`] bytes each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecReport {
    pub delivery: Delivery,
    pub stdout: String,
    pub stderr: String,
}

/// One command and its timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSink {
    pub command: Vec<String>,
    pub timeout: Duration,
}

impl ExecSink {
    pub fn new(command: Vec<String>, timeout: Duration) -> ExecSink {
        ExecSink { command, timeout }
    }

    /// Runs the command once and logs its outcome and output under `dependent`.
    pub async fn run(&self, dependent: &str, event: &ExecEvent<'_>) -> ExecReport {
        let report = self.run_quietly(event).await;
        match &report.delivery {
            Delivery::Delivered => tracing::info!(
                dependent,
                event = event.kind,
                credential = event.credential,
                stdout = %report.stdout,
                stderr = %report.stderr,
                "exec dependent delivered"
            ),
            Delivery::Failed { retryable, reason } => tracing::warn!(
                dependent,
                event = event.kind,
                credential = event.credential,
                retryable,
                reason = %reason,
                stdout = %report.stdout,
                stderr = %report.stderr,
                "exec dependent failed"
            ),
        }
        report
    }

    async fn run_quietly(&self, event: &ExecEvent<'_>) -> ExecReport {
        let version = event.version.map(|v| v.to_string()).unwrap_or_default();
        let env = [
            ("SECRET_ROTATOR_TYPE", event.kind),
            ("SECRET_ROTATOR_CREDENTIAL", event.credential),
            ("SECRET_ROTATOR_VERSION", version.as_str()),
            ("SECRET_ROTATOR_ATTEMPT", event.attempt),
        ];
        let program = Program {
            argv: &self.command,
            env: &env,
            stdin: event.body,
            timeout: self.timeout,
            output_cap: OUTPUT_CAP,
        };
        let finished = match crate::process::run(&program).await {
            Ok(finished) => finished,
            Err(error) => {
                let program = self.command.first().map(String::as_str).unwrap_or("");
                return ExecReport {
                    delivery: Delivery::failed(
                        !error.permanent(),
                        format!("cannot start {program:?}: {error}"),
                    ),
                    stdout: String::new(),
                    stderr: String::new(),
                };
            }
        };
        let delivery = match finished.ended {
            Ended::Exited(0) => Delivery::Delivered,
            Ended::Exited(code) => Delivery::failed(true, format!("exited with status {code}")),
            Ended::Signalled(status) => {
                Delivery::failed(true, format!("ended by a signal ({status})"))
            }
            Ended::WaitFailed(error) => {
                Delivery::failed(true, format!("cannot wait for the command: {error}"))
            }
            Ended::TimedOut => Delivery::failed(
                true,
                format!(
                    "timed out after {}; its process group was killed",
                    crate::human::duration(self.timeout)
                ),
            ),
        };
        ExecReport {
            delivery,
            stdout: finished.stdout.to_text(),
            stderr: finished.stderr.to_text(),
        }
    }
}
