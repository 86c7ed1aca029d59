//! The systemd notification protocol (`sd_notify`): readiness, status lines, reload, stop, and
//! the watchdog. Every call is a no-op when `NOTIFY_SOCKET` is unset (not under systemd).
//!
//! Invariants:
//! - `WATCHDOG=1` is sent only while the run loop feeds the [`Heartbeat`]: the pinging task
//!   checks that the loop moved within the watchdog period, so a stuck loop gets the process
//!   restarted instead of being covered by a timer that keeps ticking.
//! - Sending never blocks the caller: the notify socket is a datagram socket whose queue fills
//!   when its reader falls behind (ten datagrams by default), and a blocking send there would
//!   stop the run loop. The messages go through a bounded queue to a thread of their own; when
//!   that queue is full the message is dropped with a warning.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// One notification, owned, for the sending thread.
enum Message {
    Starting(String),
    Ready(String),
    Status(String),
    Reloading,
    Stopping(String),
    Watchdog,
}

/// Messages waiting for the sending thread at most.
const QUEUE: usize = 64;

fn send(message: &Message) {
    let states = match message {
        Message::Starting(status) => vec![
            NotifyState::Status(status),
            NotifyState::ExtendTimeoutUsec(START_EXTENSION.as_micros() as u32),
        ],
        Message::Ready(status) => vec![NotifyState::Ready, NotifyState::Status(status)],
        Message::Status(status) => vec![NotifyState::Status(status)],
        Message::Reloading => match NotifyState::monotonic_usec_now() {
            Ok(now) => vec![NotifyState::Reloading, now],
            Err(_) => vec![NotifyState::Reloading],
        },
        Message::Stopping(status) => vec![NotifyState::Stopping, NotifyState::Status(status)],
        Message::Watchdog => vec![NotifyState::Watchdog],
    };
    if let Err(e) = sd_notify::notify(&states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// Hand `message` to the sending thread (started on first use); never waits.
fn notify(message: Message) {
    static QUEUE_TX: OnceLock<SyncSender<Message>> = OnceLock::new();
    static WARNED: AtomicBool = AtomicBool::new(false);
    let tx = QUEUE_TX.get_or_init(|| {
        let (tx, rx) = sync_channel::<Message>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("sd-notify".into())
            .spawn(move || {
                for message in rx {
                    send(&message);
                    PENDING.fetch_sub(1, Ordering::AcqRel);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the thread that notifies the service manager");
        }
        tx
    });
    PENDING.fetch_add(1, Ordering::AcqRel);
    match tx.try_send(message) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            PENDING.fetch_sub(1, Ordering::AcqRel);
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "the service manager does not read its notify socket; notifications are dropped until it does"
                );
            }
        }
        Err(TrySendError::Disconnected(_)) => {
            PENDING.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Messages handed to the sending thread and not yet sent.
static PENDING: AtomicUsize = AtomicUsize::new(0);

/// Before the process exits: let the sending thread send what is queued (`STOPPING=1`), for at
/// most `bound`.
pub(crate) async fn flush(bound: Duration) {
    let until = Instant::now() + bound;
    while PENDING.load(Ordering::Acquire) > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How far each sign of start-up progress moves systemd's start timeout (`TimeoutStartSec=`):
/// from now, this much more. Sent only while start-up moves on, so a stuck one still times out.
pub(crate) const START_EXTENSION: Duration = Duration::from_secs(30);

/// Start-up (recovery) moved on: a status line, and more time to start.
pub(crate) fn starting(status: &str) {
    notify(Message::Starting(status.to_string()));
}

/// Start-up (recovery) is done.
pub(crate) fn ready(status: &str) {
    notify(Message::Ready(status.to_string()));
}

/// A status line for `systemctl status`.
pub(crate) fn status(status: &str) {
    notify(Message::Status(status.to_string()));
}

/// A configuration reload begins; `ready` ends it.
pub(crate) fn reloading() {
    notify(Message::Reloading);
}

/// Shutdown begins.
pub(crate) fn stopping(status: &str) {
    notify(Message::Stopping(status.to_string()));
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
    tracing::info!(period = %crate::human::duration(period), "systemd watchdog enabled");
    Some(tokio::spawn(async move {
        let mut stalled = false;
        loop {
            tokio::time::sleep(period / 2).await;
            let silent = heartbeat.silent_for();
            if silent < period {
                notify(Message::Watchdog);
                stalled = false;
            } else if !stalled {
                stalled = true;
                tracing::error!(silent_for = %crate::human::duration(silent), "the run loop is stuck; no watchdog ping (systemd restarts the service)");
            }
        }
    }))
}
