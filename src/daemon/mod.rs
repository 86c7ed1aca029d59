//! The daemon: start-up recovery and checks, the loop that drives every credential when due,
//! signals (SIGTERM stops, SIGHUP reloads), the systemd protocol and the admin server.
//!
//! Invariant: the loop only decides when to call the engine; what a rotation does lives in
//! `rotation`, when a credential is due in `policy`. A stop never cuts a step short before the
//! stop bound, and what is cut short after it resumes from its recorded phase on the next start.

pub mod admin;
mod checks;
mod folders;
mod group;
mod main_loop;
pub mod metrics;
mod periodic;
mod planner;
mod reload;
mod schedule;
mod sets;
mod systemd;
mod work;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

use crate::app::{exit, App, Failure};
use crate::events::{Event, EventKind, EventSink, FanOut};
use main_loop::Loop;
use metrics::Metrics;

/// How long a stop waits for the step in progress; below the unit's `TimeoutStopSec=` (45 s).
pub const STOP_BOUND: Duration = Duration::from_secs(30);

/// How often the idle loop shows it is alive (the watchdog pings at half its period, >= 1 s).
const FEED_EVERY: Duration = Duration::from_millis(500);

/// What the admin server reports about the loop.
#[derive(Default)]
pub(crate) struct Health {
    /// Start-up recovery (the first pass, in-flight attempts resumed) is done.
    pub(crate) recovered: AtomicBool,
    /// The last pass reached Vault.
    pub(crate) vault_reachable: AtomicBool,
}

/// Counts failures announced by the engine's events (once per event, not once per pass).
struct MetricsSink(Arc<Metrics>);

impl EventSink for MetricsSink {
    fn emit(&self, event: &Event) {
        match event.kind {
            EventKind::Failed => self.0.failure("rotation_failed"),
            EventKind::NeedsAttention => self.0.failure("needs_attention"),
            _ => {}
        }
    }
}

struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> Result<Signals, Failure> {
        let watch = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| Failure::new(exit::USAGE, format!("cannot watch {name}: {e}")))
        };
        Ok(Signals {
            term: watch(SignalKind::terminate(), "SIGTERM")?,
            int: watch(SignalKind::interrupt(), "SIGINT")?,
            hup: watch(SignalKind::hangup(), "SIGHUP")?,
        })
    }
}

/// SIGTERM or SIGINT.
async fn stop_requested(term: &mut Signal, int: &mut Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Shutdown begins: no new work from now on; returns the time by which the process exits.
fn begin_stop() -> Instant {
    tracing::info!(
        bound = %crate::human::duration(STOP_BOUND),
        "stopping: no new work; the step in progress may finish, or stops at its recorded phase"
    );
    systemd::stopping("stopping");
    Instant::now() + STOP_BOUND
}

/// How long the daemon lets the deliveries under way finish when it stops (or after a `--once`
/// pass).
const DELIVERY_STOP: Duration = Duration::from_secs(10);

/// Reads (start-up, reconcile) in flight at once. 32 rather than 16: the server is as fast at
/// either (`cargo bench --bench startup` measures both), and the daemon's own time between one
/// read's answer and the next read is hidden behind the others' (BENCHMARKS.md has the runs).
const MAX_READS: usize = 32;

/// The longest a read task may take (each Vault request has its own timeout as well).
const READ_DEADLINE: Duration = Duration::from_secs(120);

/// The longest a reconcile from its folder's listing may take. Every owned credential of the
/// folder begins its reconcile at the folder's slot and waits for the page holding its key; the
/// pages come one after the other, each bounded by its request's timeout. A dev server took about
/// 4 minutes to answer the pages of a million keys (BENCHMARKS.md), and reconciles waiting
/// behind them ran past [`READ_DEADLINE`].
const FOLDER_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// How often a `STATUS=` line is sent at most.
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// How often the loop looks for drift checks whose interval passed (a scan of every credential).
const DRIFT_EVERY: Duration = Duration::from_secs(1);

/// The daemon: rotate credentials when due, resume what is in flight, until SIGTERM.
/// `reconcile`: overrides `[daemon] reconcile_interval`.
pub(crate) async fn run(app: App, once: bool, reconcile: Option<Duration>) -> Result<i32, Failure> {
    let metrics = Arc::new(Metrics::new());
    let mut app = counting_failures(app, &metrics);
    let health = Arc::new(Health::default());
    let mut signals = Signals::new()?;
    // Instances sharing the state prefix share the credentials (a pass works alone): this one
    // enters the group first, so that the discovery below runs while the group settles.
    let joining = if once {
        None
    } else {
        Some(group::Group::enter(&app).await)
    };
    // The credential sets' members join the credentials before the first plan.
    let discovery = sets::Discovery::start(&mut app).await;
    metrics.sets(&app.config.credential_sets);
    let mut daemon = Loop::start(
        Arc::new(app),
        once,
        reconcile,
        metrics,
        health,
        discovery,
        joining,
    )
    .await?;
    let code = daemon.turn_until_done(&mut signals).await;
    daemon.shut_down().await;
    Ok(code)
}

/// The app with its events also counted in the metrics, which also watch its Vault client.
fn counting_failures(mut app: App, metrics: &Arc<Metrics>) -> App {
    app.engine.events = Arc::new(FanOut(vec![
        app.engine.events.clone(),
        Arc::new(MetricsSink(metrics.clone())),
    ]));
    metrics.set_vault(app.vault.clone());
    app
}
