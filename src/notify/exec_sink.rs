//! The `exec` sink: run a command (argv, no shell) and tell it about the event.
//!
//! The child gets the event JSON on stdin and `SECRET_ROTATOR_TYPE`, `SECRET_ROTATOR_CREDENTIAL`,
//! `SECRET_ROTATOR_VERSION` and `SECRET_ROTATOR_ATTEMPT` in its environment. Its environment is
//! otherwise cleared down to a few harmless variables ([`KEPT_VARIABLES`]), so nothing the daemon
//! holds (`VAULT_TOKEN`, a role id, a cloud key) is inherited. It runs in a process group of its
//! own; at the timeout the whole group is killed with SIGKILL. Exit status 0 means delivered.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::events::Event;

/// Variables of the daemon's environment that the child keeps; every other one is removed.
pub const KEPT_VARIABLES: [&str; 9] = [
    "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME",
];

/// `PATH` for the child when the daemon has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How much of each of stdout and stderr is kept for the log.
pub const OUTPUT_CAP: usize = 4096;

/// How long output is still read once the child has exited or been killed: a grandchild that
/// outlives a successful child may hold the pipes open, and must not hold the sink.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// What a sink reports for one delivery. It never retries by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// `retryable`: whether trying again later may succeed. `reason` is fit for a log line and
    /// never holds a secret.
    Failed {
        retryable: bool,
        reason: String,
    },
}

impl Delivery {
    fn failed(retryable: bool, reason: impl Into<String>) -> Delivery {
        Delivery::Failed {
            retryable,
            reason: reason.into(),
        }
    }
}

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
        let mut report = ExecReport {
            delivery: Delivery::Delivered,
            stdout: String::new(),
            stderr: String::new(),
        };
        let Some((program, args)) = self.command.split_first() else {
            report.delivery = Delivery::failed(false, "no command to run");
            return report;
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(
                KEPT_VARIABLES
                    .iter()
                    .filter_map(|name| std::env::var_os(name).map(|value| (*name, value))),
            )
            .env("SECRET_ROTATOR_TYPE", event.kind)
            .env("SECRET_ROTATOR_CREDENTIAL", event.credential)
            .env(
                "SECRET_ROTATOR_VERSION",
                event.version.map(|v| v.to_string()).unwrap_or_default(),
            )
            .env("SECRET_ROTATOR_ATTEMPT", event.attempt)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group (pgid = its pid), so that a timeout reaches grandchildren.
            .process_group(0)
            .kill_on_drop(true);
        if std::env::var_os("PATH").is_none() {
            command.env("PATH", DEFAULT_PATH);
        }

        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                // Not found or not executable will not fix itself; a failed fork might.
                let retryable = !matches!(
                    error.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                );
                report.delivery =
                    Delivery::failed(retryable, format!("cannot start {program:?}: {error}"));
                return report;
            }
        };
        let pgid = child.id().map(|pid| Pid::from_raw(pid as i32));

        // Stdin and both outputs are served while the child runs: a child that does not read
        // its stdin, or writes much output, must not block on a full pipe.
        let body = event.body.to_vec();
        let stdin = child.stdin.take().map(|mut stdin| {
            tokio::spawn(async move {
                // A child that exits without reading its stdin closes the pipe: not our failure.
                let _ = stdin.write_all(&body).await;
            })
        });
        let stdout = child
            .stdout
            .take()
            .map(|out| tokio::spawn(read_capped(out)));
        let stderr = child
            .stderr
            .take()
            .map(|err| tokio::spawn(read_capped(err)));

        report.delivery = match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(Ok(status)) if status.success() => Delivery::Delivered,
            Ok(Ok(status)) => match status.code() {
                Some(code) => Delivery::failed(true, format!("exited with status {code}")),
                None => Delivery::failed(true, format!("ended by a signal ({status})")),
            },
            Ok(Err(error)) => {
                Delivery::failed(true, format!("cannot wait for the command: {error}"))
            }
            Err(_) => {
                if let Some(pgid) = pgid {
                    // The group may be gone already; nothing else to do then.
                    let _ = killpg(pgid, Signal::SIGKILL);
                }
                // The child itself, in case its group could not be signalled.
                let _ = child.start_kill();
                let _ = child.wait().await;
                Delivery::failed(
                    true,
                    format!(
                        "timed out after {}; its process group was killed",
                        humantime::format_duration(self.timeout)
                    ),
                )
            }
        };

        if let Some(stdin) = stdin {
            stdin.abort();
        }
        report.stdout = collect(stdout).await;
        report.stderr = collect(stderr).await;
        report
    }
}

/// Reads `reader` to its end, keeping the first [`OUTPUT_CAP`] bytes and counting the rest.
async fn read_capped(mut reader: impl AsyncRead + Unpin) -> (Vec<u8>, usize) {
    let mut kept = Vec::new();
    let mut dropped = 0;
    let mut buffer = [0u8; 8192];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buffer[..room]);
                dropped += n - room;
            }
        }
    }
    (kept, dropped)
}

/// The captured output as text for the log, marked when it was cut.
async fn collect(reader: Option<tokio::task::JoinHandle<(Vec<u8>, usize)>>) -> String {
    let Some(mut reader) = reader else {
        return String::new();
    };
    let (kept, dropped) = match tokio::time::timeout(OUTPUT_GRACE, &mut reader).await {
        Ok(Ok(output)) => output,
        Ok(Err(_)) => return String::new(),
        Err(_) => {
            reader.abort();
            return "[output still open after the command ended; not read]".to_string();
        }
    };
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if dropped > 0 {
        text.push_str(&format!("... [{dropped} more bytes not shown]"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_is_kept_up_to_the_cap_and_the_rest_is_counted() {
        let input = vec![b'x'; OUTPUT_CAP + 10];
        let (kept, dropped) = read_capped(input.as_slice()).await;
        assert_eq!((kept.len(), dropped), (OUTPUT_CAP, 10));
    }
}
