//! The systemd notification protocol (`sd_notify`): readiness, status lines, reload, stop, and
//! the watchdog. Every call is a no-op when `NOTIFY_SOCKET` is unset (not under systemd).
//!
//! Invariant: `WATCHDOG=1` is sent only while the run loop feeds the [`Heartbeat`]: the pinging
//! task checks that the loop moved within the watchdog period, so a stuck loop gets the process
//! restarted instead of being covered by a timer that keeps ticking.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// Start-up (recovery and preflight) is done.
pub(crate) fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A status line for `systemctl status`.
pub(crate) fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// A configuration reload begins; `ready` ends it.
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// Shutdown begins.
pub(crate) fn stopping(status: &str) {
    notify(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// When the run loop last showed it is alive.
pub(crate) struct Heartbeat {
    start: Instant,
    /// Milliseconds since `start` at the last feed.
    last: AtomicU64,
}

impl Heartbeat {
    pub(crate) fn new() -> Arc<Heartbeat> {
        Arc::new(Heartbeat {
            start: Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    /// The loop is alive now.
    pub(crate) fn feed(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// When systemd asks for a watchdog (`WatchdogSec=`, seen as `WATCHDOG_USEC`), ping it at half
/// the period for as long as the heartbeat is fed within the period.
pub(crate) fn spawn_watchdog(heartbeat: Arc<Heartbeat>) -> Option<tokio::task::JoinHandle<()>> {
    let period = sd_notify::watchdog_enabled()?;
    tracing::info!(period = ?period, "systemd watchdog enabled");
    Some(tokio::spawn(async move {
        let mut stalled = false;
        loop {
            tokio::time::sleep(period / 2).await;
            let silent = heartbeat.silent_for();
            if silent < period {
                notify(&[NotifyState::Watchdog]);
                stalled = false;
            } else if !stalled {
                stalled = true;
                tracing::error!(silent_for = ?silent, "the run loop is stuck; no watchdog ping (systemd restarts the service)");
            }
        }
    }))
}
