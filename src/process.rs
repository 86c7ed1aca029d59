//! Running a configured program: argv without a shell, a cleared environment, stdin written,
//! stdout and stderr read up to a cap, and a timeout that kills the program's whole process group.
//!
//! Invariants: the child inherits nothing of the daemon's environment but [`KEPT_VARIABLES`] (no
//! `VAULT_TOKEN`, no role id, no cloud key) plus what the caller sets; it runs in a process group
//! of its own (pgid = its pid), and at the timeout the whole group gets SIGKILL, so a grandchild
//! dies with it; pipes a surviving grandchild holds open never hold the caller longer than
//! [`OUTPUT_GRACE`]. A run whose future is dropped before the program ended kills the group
//! too. Used by the `exec` dependent and the `exec` provider.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// Variables of the daemon's environment that the child keeps; every other one is removed.
pub const KEPT_VARIABLES: [&str; 9] = [
    "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME",
];

/// `PATH` for the child when the daemon has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How long output is still read once the child has exited or been killed: a grandchild that
/// outlives a successful child may hold the pipes open, and must not hold the caller.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// One run of a program.
#[derive(Debug, Clone, Copy)]
pub struct Program<'a> {
    /// The program and its arguments; `argv[0]` is looked up in `PATH` when it has no '/'.
    pub argv: &'a [String],
    /// Variables set on top of [`KEPT_VARIABLES`].
    pub env: &'a [(&'a str, &'a str)],
    pub stdin: &'a [u8],
    pub timeout: Duration,
    /// How many bytes of each of stdout and stderr are kept; the rest is counted.
    pub output_cap: usize,
}

/// How the program ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    /// Ended by a signal (the text names it).
    Signalled(String),
    /// Still running at the timeout: its process group was killed.
    TimedOut,
    /// The wait itself failed.
    WaitFailed(String),
}

/// What one output stream said, cut at the cap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    pub kept: Vec<u8>,
    /// Bytes read past the cap and thrown away.
    pub dropped: usize,
    /// The stream was still open [`OUTPUT_GRACE`] after the program ended (a grandchild holds
    /// it): what was read until then is kept, the rest is not read.
    pub left_open: bool,
}

impl Captured {
    /// The output as text for a log line, marked when it was cut.
    pub fn to_text(&self) -> String {
        if self.left_open && self.kept.is_empty() {
            return "[output still open after the command ended; not read]".to_string();
        }
        let mut text = String::from_utf8_lossy(&self.kept).into_owned();
        if self.dropped > 0 {
            text.push_str(&format!("... [{} more bytes not shown]", self.dropped));
        }
        text
    }

    /// Whether all of the stream was read.
    pub fn complete(&self) -> bool {
        self.dropped == 0 && !self.left_open
    }
}

/// The end of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub ended: Ended,
    pub stdout: Captured,
    pub stderr: Captured,
}

/// The program could not be started.
#[derive(Debug)]
pub struct SpawnError(pub std::io::Error);

impl SpawnError {
    /// Not found or not executable will not fix itself; a failed fork might.
    pub fn permanent(&self) -> bool {
        matches!(
            self.0.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
        )
    }
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Runs `program` once. `Err` only when it could not be started (or `argv` is empty).
pub async fn run(program: &Program<'_>) -> Result<Finished, SpawnError> {
    let Some((name, args)) = program.argv.split_first() else {
        return Err(SpawnError(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no command to run",
        )));
    };
    let mut command = Command::new(name);
    command
        .args(args)
        .env_clear()
        .envs(
            KEPT_VARIABLES
                .iter()
                .filter_map(|name| std::env::var_os(name).map(|value| (*name, value))),
        )
        .envs(program.env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group (pgid = its pid), so that a timeout reaches grandchildren.
        .process_group(0)
        .kill_on_drop(true);
    if std::env::var_os("PATH").is_none() && !program.env.iter().any(|(k, _)| *k == "PATH") {
        command.env("PATH", DEFAULT_PATH);
    }

    let mut child = command.spawn().map_err(SpawnError)?;
    let pgid = child.id().map(|pid| Pid::from_raw(pid as i32));
    // A caller that gives up on this run (its own deadline) drops the future: the group dies too.
    let mut group = GroupGuard(pgid);

    // Stdin and both outputs are served while the child runs: a child that does not read its
    // stdin, or writes much output, must not block on a full pipe.
    let body = program.stdin.to_vec();
    let stdin = child.stdin.take().map(|mut stdin| {
        tokio::spawn(async move {
            // A child that exits without reading its stdin closes the pipe: not our failure.
            let _ = stdin.write_all(&body).await;
        })
    });
    let cap = program.output_cap;
    let stdout = child
        .stdout
        .take()
        .map(|out| tokio::spawn(read_capped(out, cap)));
    let stderr = child
        .stderr
        .take()
        .map(|err| tokio::spawn(read_capped(err, cap)));

    let ended = match tokio::time::timeout(program.timeout, child.wait()).await {
        Ok(Ok(status)) => match status.code() {
            Some(code) => Ended::Exited(code),
            None => Ended::Signalled(status.to_string()),
        },
        Ok(Err(error)) => Ended::WaitFailed(error.to_string()),
        Err(_) => {
            if let Some(pgid) = pgid {
                // The group may be gone already; nothing else to do then.
                let _ = killpg(pgid, Signal::SIGKILL);
            }
            // The child itself, in case its group could not be signalled.
            let _ = child.start_kill();
            let _ = child.wait().await;
            Ended::TimedOut
        }
    };
    group.0 = None;

    if let Some(stdin) = stdin {
        stdin.abort();
    }
    Ok(Finished {
        ended,
        stdout: collect(stdout).await,
        stderr: collect(stderr).await,
    })
}

/// Kills the process group when dropped while still armed.
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// Reads `reader` to its end, keeping the first `cap` bytes and counting the rest.
async fn read_capped(mut reader: impl AsyncRead + Unpin, cap: usize) -> (Vec<u8>, usize) {
    let mut kept = Vec::new();
    let mut dropped = 0;
    let mut buffer = [0u8; 8192];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buffer[..room]);
                dropped += n - room;
            }
        }
    }
    (kept, dropped)
}

async fn collect(reader: Option<tokio::task::JoinHandle<(Vec<u8>, usize)>>) -> Captured {
    let Some(mut reader) = reader else {
        return Captured::default();
    };
    match tokio::time::timeout(OUTPUT_GRACE, &mut reader).await {
        Ok(Ok((kept, dropped))) => Captured {
            kept,
            dropped,
            left_open: false,
        },
        Ok(Err(_)) => Captured::default(),
        Err(_) => {
            reader.abort();
            Captured {
                left_open: true,
                ..Captured::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_is_kept_up_to_the_cap_and_the_rest_is_counted() {
        let input = vec![b'x'; 4106];
        let (kept, dropped) = read_capped(input.as_slice(), 4096).await;
        assert_eq!((kept.len(), dropped), (4096, 10));
    }
}
