//! The daemon binary running as systemd would run it: a notify socket bound by the test
//! (`NOTIFY_SOCKET`), an optional watchdog (`WATCHDOG_USEC`), its log in a file, signals sent
//! with `kill`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::net::UnixDatagram;
use tokio::process::Child;

use super::stack::Stack;

pub struct Daemon {
    pub child: Child,
    pub notify: UnixDatagram,
    /// Every notification received so far, one datagram each.
    pub messages: Vec<String>,
    pub log: PathBuf,
}

impl Daemon {
    /// `run --interval 1s` on the stack's config, with `WATCHDOG_USEC` when `watchdog` is set.
    pub fn start(stack: &Stack, watchdog: Option<Duration>) -> Daemon {
        let socket = stack.dir.path().join("notify.sock");
        let _ = std::fs::remove_file(&socket);
        let notify = UnixDatagram::bind(&socket).expect("bind the notify socket");
        let log = stack.dir.path().join("daemon.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = tokio::process::Command::new(super::binary());
        cmd.arg("--config")
            .arg(&stack.config)
            .arg("--events-file")
            .arg(&stack.events)
            .args(["run", "--interval", "1s"])
            .env("VAULT_TOKEN", &stack.token)
            .env("SECRET_ROTATOR_INSTANCE_ID", "test-instance")
            .env("SECRET_ROTATOR_LOG", "info")
            .env("NOTIFY_SOCKET", &socket)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("SECRET_ROTATOR_CRASH_AT")
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true);
        if let Some(period) = watchdog {
            cmd.env("WATCHDOG_USEC", period.as_micros().to_string());
        }
        let child = cmd.spawn().expect("start secret-rotator run");
        Daemon {
            child,
            notify,
            messages: Vec::new(),
            log,
        }
    }

    pub fn signal(&self, signal: Signal) {
        let pid = self.child.id().expect("the daemon is running");
        kill(Pid::from_raw(pid as i32), signal).expect("send a signal");
    }

    /// Waits for a notification with a line for which `pred` holds; returns that line. Panics
    /// with what arrived after `limit`.
    pub async fn expect(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + limit;
        if let Some(line) = self
            .messages
            .iter()
            .flat_map(|m| m.lines())
            .find(|l| pred(l))
        {
            return line.to_string();
        }
        let mut buf = vec![0u8; 4096];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.notify.recv(&mut buf)).await {
                Ok(Ok(n)) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let hit = msg.lines().find(|l| pred(l)).map(str::to_string);
                    self.messages.push(msg);
                    if let Some(line) = hit {
                        return line;
                    }
                }
                _ => panic!(
                    "no such notification within {limit:?}; received: {:?}\nlog:\n{}",
                    self.messages,
                    self.log()
                ),
            }
        }
    }

    /// Drops what was received so far (to wait for what comes next).
    pub fn forget(&mut self) {
        self.messages.clear();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `fragment`.
    pub async fn expect_log(&self, limit: Duration, fragment: &str) -> String {
        let until = Instant::now() + limit;
        loop {
            let log = self.log();
            if log.contains(fragment) {
                return log;
            }
            assert!(
                Instant::now() < until,
                "{fragment:?} not logged within {limit:?}; log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("wait on the daemon").is_none()
    }

    /// Waits for the process to exit; its exit code.
    pub async fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the daemon did not exit within {limit:?}"))
            .unwrap();
        status.code()
    }
}
