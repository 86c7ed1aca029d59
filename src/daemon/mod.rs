//! The daemon: start-up recovery and checks, the loop that drives every credential when due,
//! signals (SIGTERM stops, SIGHUP reloads), the systemd protocol and the admin server.
//!
//! Invariant: the loop only decides when to call the engine; what a rotation does lives in
//! `rotation`, when a credential is due in `policy`. A stop never cuts a step short before the
//! stop bound, and what is cut short after it resumes from its recorded phase on the next start.

pub mod admin;
mod checks;
pub mod metrics;
mod periodic;
mod planner;
mod systemd;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::app::{exit, App, Failure};
use crate::config::{Credential, ProcessEnvironment};
use crate::events::{Event, EventKind, EventSink, FanOut};
use crate::notify::deliver::{Deliverer, Workers};
use crate::report;
use crate::rotation::{Begin, EngineError, Outcome, RunResult, Wait};
use crate::standing::{due, read_to_plan, see, Seen};
use crate::vault::VaultError;
use metrics::{CredentialView, Metrics};
use periodic::Tick;
use planner::{Planner, RecordView, Work};
use systemd::Heartbeat;

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
        bound = ?STOP_BOUND,
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

/// How often a `STATUS=` line is sent at most.
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// How often the loop looks for drift checks whose interval passed (a scan of every credential).
const DRIFT_EVERY: Duration = Duration::from_secs(1);

/// The configuration's credentials by name: indices sorted by name (4 bytes per credential; a
/// lookup is a binary search, where `Config::credential` scans them all).
struct ByName(Vec<u32>);

impl ByName {
    fn new(app: &App) -> ByName {
        let credentials = &app.config.credentials;
        let mut order: Vec<u32> = (0..credentials.len() as u32).collect();
        order.sort_by(|a, b| {
            credentials[*a as usize]
                .name
                .cmp(&credentials[*b as usize].name)
        });
        ByName(order)
    }

    /// `app` is the one this index was built from.
    fn get<'a>(&self, app: &'a App, name: &str) -> Option<&'a Credential> {
        let credentials = &app.config.credentials;
        self.0
            .binary_search_by(|i| credentials[*i as usize].name.as_str().cmp(name))
            .ok()
            .map(|at| &credentials[self.0[at] as usize])
    }
}

/// What a task reports back to the loop.
enum Done {
    /// A full read (and a drive when there was one).
    Seen {
        seen: Box<Seen>,
        result: Option<RunResult>,
    },
    /// A reconcile found the secret as the planner knew it.
    Unchanged,
    Failed(EngineError),
}

/// The daemon: rotate credentials when due, resume what is in flight, until SIGTERM.
/// `reconcile`: overrides `[daemon] reconcile_interval`.
pub(crate) async fn run(
    mut app: App,
    once: bool,
    reconcile: Option<Duration>,
) -> Result<i32, Failure> {
    let metrics = Arc::new(Metrics::new());
    app.engine.events = Arc::new(FanOut(vec![
        app.engine.events.clone(),
        Arc::new(MetricsSink(metrics.clone())),
    ]));
    metrics.set_vault(app.vault.clone());
    let health = Arc::new(Health::default());
    let mut signals = Signals::new()?;
    let mut app = Arc::new(app);
    let (current, _) = watch::channel(app.clone());
    let admin = match (&app.config.admin, once) {
        (Some(listen), false) => Some(
            admin::start(
                listen,
                admin::Shared {
                    app: current.subscribe(),
                    metrics: metrics.clone(),
                    health: health.clone(),
                },
            )
            .await?,
        ),
        _ => None,
    };
    let mut keeper = keep_token(&app);
    tracing::info!(credentials = app.config.credentials.len(), owner = %app.engine.owner, "secret-rotator running");
    // The start-up checks gate nothing (each attempt checks again before it mints): a pass
    // (`--once`) makes them first, as its report; the daemon after READY, in the background.
    let progress = Arc::new(checks::Progress::default());
    let mut checking: Option<tokio::task::JoinHandle<()>> = None;
    if once {
        checks::run(&app, &progress).await;
    }
    let mut by_name = ByName::new(&app);
    // Dependents are told off the rotation path, one worker per credential that has any.
    let mut workers = start_deliveries(&app, &metrics);
    let heartbeat = Heartbeat::new();
    let watchdog = systemd::spawn_watchdog(heartbeat.clone());
    let mut planner = Planner::new(planner_settings(&app, once, reconcile));
    let started = Utc::now();
    track_all(&app, &mut planner, started, true);
    let (periodic, mut ticks) = if once {
        (None, None)
    } else {
        let (p, rx) = periodic::start(planner.settings().reconcile).await;
        (p, Some(rx))
    };
    let mut sweeper = periodic::Sweeper::new(planner.settings().reconcile, started);
    if !once {
        // The first period is planned at once; the scheduler's ticks plan the following ones.
        if let Some((from, to)) = sweeper.tick(started) {
            planner.sweep(from, to);
        }
    }
    let mut tasks: JoinSet<(String, Work, Done)> = JoinSet::new();
    let mut backoff = ErrorBackoff::default();
    // `--once`: each credential is driven at most once.
    let mut driven: HashSet<String> = HashSet::new();
    let mut errors = 0usize;
    let mut ready = false;
    let mut reload = false;
    let mut stop: Option<Instant> = None;
    let mut last_status = Instant::now();
    let mut last_left: Option<usize> = None;
    let mut status_dirty = false;
    let mut checks_were_running = false;
    let mut last_drift = Instant::now() - DRIFT_EVERY;
    let code = loop {
        heartbeat.feed();
        if reload && stop.is_none() {
            reload = false;
            systemd::reloading();
            if let Some(new) = reloaded(&app, &metrics).await {
                keeper.abort();
                workers.stop(DELIVERY_STOP).await;
                app = Arc::new(new);
                by_name = ByName::new(&app);
                keeper = keep_token(&app);
                current.send_replace(app.clone());
                if let Some(task) = checking.take() {
                    task.abort();
                }
                checking = Some(checks::spawn(app.clone(), progress.clone()));
                workers = start_deliveries(&app, &metrics);
                // Re-plan: forget what left the configuration, read everything again.
                planner.retain(|name| by_name.get(&app, name).is_some());
                track_all(&app, &mut planner, Utc::now(), false);
            }
            // Whether the new configuration was taken or refused, the daemon runs on.
            systemd::ready(&status_line(&planner, errors, &progress, Utc::now()));
        }
        // Hand out what is due, within the limits.
        if stop.is_none() {
            let now = Utc::now();
            while let Some((name, work)) = planner.next_work(now, |name, work| {
                (once && work == Work::Drive && driven.contains(name))
                    || backoff.waiting_until(name, now).is_some()
            }) {
                let Some(cred) = by_name.get(&app, &name).cloned() else {
                    planner.retain(|n| n != name);
                    continue;
                };
                if once && work == Work::Drive {
                    driven.insert(name.clone());
                }
                let known = planner.known(&name);
                let app = app.clone();
                let deadline = match work {
                    Work::Drive => app.engine.settings.lease,
                    Work::Read | Work::Reconcile => READ_DEADLINE,
                };
                tasks.spawn(async move {
                    let done =
                        match tokio::time::timeout(deadline, perform(&app, &cred, work, known))
                            .await
                        {
                            Ok(done) => done,
                            Err(_) => Done::Failed(EngineError::Vault(VaultError::Unavailable {
                                address: String::new(),
                                reason: format!(
                                    "no answer within {}",
                                    humantime::format_duration(deadline)
                                ),
                            })),
                        };
                    (cred.name, work, done)
                });
            }
        }
        // A long start-up (many credentials) says how far it got, and asks systemd for more
        // time while it moves on.
        if !ready && !once && stop.is_none() && last_status.elapsed() >= STATUS_EVERY {
            let left = planner.recovering();
            if left > 0 && Some(left) != last_left {
                let total = planner.summary().tracked;
                systemd::starting(&format!(
                    "starting: {} of {total} credentials read",
                    total.saturating_sub(left)
                ));
                last_left = Some(left);
            }
            last_status = Instant::now();
        }
        if !ready && planner.recovered() && stop.is_none() && !once {
            ready = true;
            health.recovered.store(true, Ordering::Relaxed);
            checking = Some(checks::spawn(app.clone(), progress.clone()));
            let line = status_line(&planner, errors, &progress, Utc::now());
            tracing::info!(status = %line, "ready");
            systemd::ready(&line);
            last_status = Instant::now();
            status_dirty = false;
        }
        // The checks' progress, and their end, show in the status line.
        let checks_running = progress.running();
        if checks_running || checks_were_running {
            status_dirty = true;
        }
        checks_were_running = checks_running;
        if ready && status_dirty && last_status.elapsed() >= STATUS_EVERY {
            systemd::status(&status_line(&planner, errors, &progress, Utc::now()));
            last_status = Instant::now();
            status_dirty = false;
        }
        if tasks.is_empty() {
            if stop.is_some() {
                break exit::OK;
            }
            let now = Utc::now();
            let startable = planner.next_wake().is_some_and(|t| t <= now)
                && planner.next_work_would_start(now, |name, work| {
                    (once && work == Work::Drive && driven.contains(name))
                        || backoff.waiting_until(name, now).is_some()
                });
            if once && !startable {
                // For cron and monitoring: a pass that could not handle a credential fails.
                break if errors > 0 { exit::VAULT } else { exit::OK };
            }
        }
        // Drift checks whose interval passed (in memory, no IO unless one is due; at most a
        // round at a time, off the loop). Not in `--once`: a pass there reads every credential.
        if !once && last_drift.elapsed() >= DRIFT_EVERY {
            last_drift = Instant::now();
            spawn_drift_checks(&app);
        }
        // Sleep until the next planned work, a finished task, a tick or a signal.
        let wake = planner
            .next_wake()
            .map(|t| (t - Utc::now()).to_std().unwrap_or_default())
            .unwrap_or(FEED_EVERY)
            .min(FEED_EVERY)
            .max(Duration::from_millis(if once { 50 } else { 200 }));
        let stop_at = stop.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        tokio::select! {
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok((name, work, done)) = joined {
                    let cred = by_name.get(&app, &name);
                    errors += settle(cred, &mut planner, &mut backoff, &metrics, &health, &name, work, done);
                    status_dirty = true;
                }
            }
            () = tokio::time::sleep(wake) => {}
            Some(tick) = recv_tick(&mut ticks) => {
                tick_hook(&app, &mut planner, &mut sweeper, &workers, tick);
            }
            () = stop_requested(&mut signals.term, &mut signals.int), if stop.is_none() => {
                stop = Some(begin_stop());
            }
            _ = signals.hup.recv() => {
                tracing::info!("SIGHUP: reading the configuration again");
                reload = true;
            }
            () = tokio::time::sleep_until(stop_at), if stop.is_some() => {
                tracing::warn!(
                    "stop bound reached: the steps in progress resume from their recorded phase on the next start"
                );
                tasks.abort_all();
                break exit::OK;
            }
        }
        // The scheduler's sweep may stop firing (tokio-cron-scheduler issue #113): the loop
        // then sweeps by itself.
        if !once {
            if let Some((from, to)) = sweeper.overdue(Utc::now()) {
                let n = planner.sweep(from, to);
                tracing::debug!(credentials = n, from = %from, to = %to, "reconcile sweep by the loop");
            }
        }
    };
    tracing::info!(
        "shutting down; rotations in flight resume from their recorded phase on the next start"
    );
    tasks.abort_all();
    if let Some(task) = checking {
        task.abort();
    }
    if let Some(mut p) = periodic {
        let _ = p.shutdown().await;
    }
    workers.stop(DELIVERY_STOP).await;
    keeper.abort();
    if let Some(w) = watchdog {
        w.abort();
    }
    if let Some(a) = admin {
        a.abort();
    }
    systemd::flush(Duration::from_secs(1)).await;
    Ok(code)
}

/// Drift: the current credential of each credential whose `drift_interval` has passed is
/// verified with its provider, off the loop, each within the step deadline. A 401 means someone
/// regenerated or deleted it outside the daemon (`credential.drift`, and for assisted kinds a
/// request for a supply). At most one round of checks at a time.
fn spawn_drift_checks(app: &Arc<App>) {
    static RUNNING: AtomicBool = AtomicBool::new(false);
    // First the guard: `drift_due` notes a credential as checked when it says it is due.
    if RUNNING.swap(true, Ordering::AcqRel) {
        return;
    }
    let now = Utc::now();
    let due: Vec<Credential> = app
        .config
        .credentials
        .iter()
        .filter(|c| crate::rotation::driver::drift_due(c, now))
        .cloned()
        .collect();
    if due.is_empty() {
        RUNNING.store(false, Ordering::Release);
        return;
    }
    let app = app.clone();
    tokio::spawn(async move {
        for cred in due {
            let Ok(provider) = app.provider(&cred) else {
                continue;
            };
            let deadline = app.engine.settings.step_deadline;
            match tokio::time::timeout(deadline, app.engine.check_drift(&cred, provider.as_ref()))
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(credential = %cred.name, error = %e, "drift check failed")
                }
                Err(_) => tracing::warn!(credential = %cred.name, "drift check: no answer in time"),
            }
        }
        RUNNING.store(false, Ordering::Release);
    });
}

async fn recv_tick(ticks: &mut Option<mpsc::Receiver<Tick>>) -> Option<Tick> {
    match ticks {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A periodic job fired.
fn tick_hook(
    app: &Arc<App>,
    planner: &mut Planner,
    sweeper: &mut periodic::Sweeper,
    workers: &Workers,
    tick: Tick,
) {
    match tick {
        Tick::Reconcile(at) => {
            if let Some((from, to)) = sweeper.tick(at) {
                let n = planner.sweep(from, to);
                tracing::debug!(credentials = n, "reconcile sweep");
            }
        }
        Tick::Liveness => {
            // Verify current credentials whose `drift_interval` passed, off the loop. The loop
            // also asks every second (an interval may be shorter than this job's period); this
            // job is the backstop should the loop's own clock be starved.
            spawn_drift_checks(app);
        }
        Tick::OutboxSweep => {
            // Wake every delivery worker: an event whose retry time passed goes out now even
            // if the worker's own timer was lost.
            let _ = workers;
            for cred in &app.config.credentials {
                if !cred.dependents.is_empty() {
                    app.engine.wakeup.wake(&cred.name);
                }
            }
        }
    }
}

fn planner_settings(app: &App, once: bool, reconcile: Option<Duration>) -> planner::Settings {
    let daemon = &app.config.daemon;
    let reconcile = reconcile
        .unwrap_or(daemon.reconcile_interval)
        .max(Duration::from_secs(1));
    planner::Settings {
        reconcile,
        // A pass (`--once`) does what is due now; and the stagger never exceeds half an
        // interval, or a short test interval would hold rotations back.
        stagger: if once {
            Duration::ZERO
        } else {
            daemon.stagger.min(reconcile / 2)
        },
        instance: app.engine.owner.clone(),
        max_rotations: daemon.max_rotations,
        max_per_provider: daemon.max_rotations_per_provider,
        max_reads: MAX_READS,
    }
}

/// Track every automatic credential of the configuration (a full read now).
fn track_all(app: &App, planner: &mut Planner, now: DateTime<Utc>, recovering: bool) {
    // Assisted credentials too: the engine asks a person for them, reminds and polls.
    for cred in &app.config.credentials {
        planner.track(&cred.name, &provider_instance(cred), now, recovering);
    }
}

/// The provider instance a credential's rotations count against: one store, one AppRole role,
/// one program, one API host.
pub(crate) fn provider_instance(cred: &Credential) -> String {
    use crate::config::ProviderConfig as P;
    let kind = cred.provider.kind();
    match &cred.provider {
        P::BigCommerceStorefront(c) => format!("{kind}:{}", c.store_hash),
        P::VaultAppRoleSecretId(c) => format!("{kind}:{}/{}", c.mount, c.role_name),
        P::BigCommerceLegacyAccount(c) | P::BigCommerceUserToken(c) => {
            format!("{kind}:{}", c.store_hash)
        }
        P::BigCommerceStoreAccount(c) => format!("{kind}:{}", c.store_hash),
        P::Exec(c) => format!("{kind}:{}", c.mint.first().map_or("", String::as_str)),
        P::Http(c) => {
            let host = reqwest::Url::parse(&c.mint.url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default();
            format!("{kind}:{host}")
        }
    }
}

/// One piece of work for one credential (a task of its own: a slow provider holds nobody else).
async fn perform(app: &App, cred: &Credential, work: Work, known: (Option<u64>, bool)) -> Done {
    let result = async {
        match work {
            Work::Read => Ok(Done::Seen {
                seen: Box::new(read_to_plan(app, cred).await?),
                result: None,
            }),
            Work::Reconcile => {
                let (version, full) = known;
                if !full {
                    let now = match app.vault.read_metadata(&cred.secret).await {
                        Ok(m) => Some(m.current_version),
                        Err(VaultError::NotFound { .. }) => None,
                        Err(e) => return Err(e.into()),
                    };
                    if now == version {
                        return Ok(Done::Unchanged);
                    }
                }
                Ok(Done::Seen {
                    seen: Box::new(see(app, cred).await?),
                    result: None,
                })
            }
            Work::Drive => {
                let provider = app.provider(cred).map_err(|f| EngineError::Refused {
                    credential: cred.name.clone(),
                    reason: f.message,
                })?;
                let seen = see(app, cred).await?;
                let (trigger, _) = due(cred, &seen, Utc::now());
                let start = trigger.map(|trigger| Begin::Due {
                    trigger,
                    seen: seen.version,
                });
                let r = app
                    .engine
                    .drive(cred, provider.as_ref(), start, Wait::No)
                    .await?;
                // Something happened: read what it left, for the figures and the next due time.
                let seen = match r {
                    RunResult::Idle if start.is_none() => seen,
                    _ => see(app, cred).await?,
                };
                Ok(Done::Seen {
                    seen: Box::new(seen),
                    result: Some(r),
                })
            }
        }
    }
    .await;
    result.unwrap_or_else(Done::Failed)
}

/// Take a task's report into the plan and the figures; returns 1 for an error the state record
/// could not hold.
#[allow(clippy::too_many_arguments)]
fn settle(
    cred: Option<&Credential>,
    planner: &mut Planner,
    backoff: &mut ErrorBackoff,
    metrics: &Metrics,
    health: &Health,
    name: &str,
    work: Work,
    done: Done,
) -> usize {
    if !planner.is_tracked(name) {
        return 0;
    }
    let Some(cred) = cred else {
        return 0;
    };
    let now = Utc::now();
    match done {
        Done::Unchanged => {
            backoff.succeeded(name);
            health.vault_reachable.store(true, Ordering::Relaxed);
            planner.unchanged(name);
            0
        }
        Done::Seen { seen, result } => {
            backoff.succeeded(name);
            health.vault_reachable.store(true, Ordering::Relaxed);
            let (_, due_at) = due(cred, &seen, now);
            let row = report::status_row(cred, seen.facts, seen.version, seen.record.as_ref(), now);
            metrics.credential(name, CredentialView::of(&row, due_at));
            if let Some(RunResult::Finished(s)) = &result {
                metrics.rotation_finished(cred.provider.kind(), s);
                if s.outcome != Outcome::Rotated {
                    metrics.failure(s.outcome.as_str());
                }
            }
            let record = seen.record.as_ref().map(|r| RecordView {
                in_flight: r.attempt.is_some(),
                needs_attention: r.attempt.as_ref().is_some_and(|a| a.needs_attention),
                parked: r.parked.is_some(),
                retry_at: r.retry_at,
            });
            let plan = planner::observation(
                seen.version,
                record.unwrap_or_default(),
                result.as_ref(),
                Some(due_at),
                now,
            );
            planner.observed(name, work, plan, now);
            0
        }
        Done::Failed(EngineError::Fenced { .. }) => {
            // Another instance wrote the record first: not an error; read it again soon.
            tracing::info!(credential = %name, "another instance is rotating this credential");
            planner.failed(name, now + chrono::Duration::seconds(1));
            0
        }
        Done::Failed(e) => {
            if let EngineError::Vault(
                VaultError::Unavailable { .. }
                | VaultError::Sealed { .. }
                | VaultError::Login { .. },
            ) = &e
            {
                health.vault_reachable.store(false, Ordering::Relaxed);
            }
            metrics.failure(&failure_reason(&e));
            let at = backoff.failed(name, now);
            tracing::error!(credential = %name, error = %e, retry_at = %at.to_rfc3339(), "rotation step failed; trying again later");
            planner.failed(name, at);
            1
        }
    }
}

/// "12 credentials, 1 in flight, next due in 3m", and the start-up checks' progress and
/// problems.
fn status_line(
    planner: &Planner,
    errors: usize,
    progress: &checks::Progress,
    now: DateTime<Utc>,
) -> String {
    let s = planner.summary();
    let mut line = format!("{} credentials, {} in flight", s.tracked, s.in_flight);
    if s.needs_attention > 0 {
        line.push_str(&format!(", {} need attention", s.needs_attention));
    }
    if errors > 0 {
        line.push_str(&format!(", {errors} errors"));
    }
    if let Some(next) = s.next_drive {
        let due = (next - now).num_seconds().max(0) as u64;
        line.push_str(&format!(", next due in {}", report::short_duration(due)));
    } else {
        line.push_str(", next due in never");
    }
    line.push_str(&progress.describe());
    line
}

/// A delivery worker per credential with dependents, counting deliveries in the metrics.
fn start_deliveries(app: &App, metrics: &Arc<Metrics>) -> Workers {
    let counted = metrics.clone();
    let deliverer = Arc::new(Deliverer {
        observer: Some(Arc::new(
            move |credential: &str, dependent: &str, result: &str| {
                counted.delivery(credential, dependent, result)
            },
        )),
        ..(*app.deliverer).clone()
    });
    Workers::start(&deliverer, &app.engine.wakeup, &app.config.credentials)
}

fn keep_token(app: &App) -> tokio::task::JoinHandle<()> {
    let vault = app.vault.clone();
    tokio::spawn(async move { vault.maintain_token().await })
}

/// SIGHUP: the configuration read and validated again, and what depends on it rebuilt (Vault
/// client, engine). `None`, with the reason logged, keeps the running configuration.
async fn reloaded(old: &App, metrics: &Metrics) -> Option<App> {
    let config = match crate::config::load(&old.config_path, &ProcessEnvironment) {
        Ok(c) => c,
        Err(errors) => {
            // One line per error, each located (file:line:column key: message).
            for e in &errors.errors {
                tracing::error!(error = %e, "reload refused: invalid configuration; the running configuration stays in force");
            }
            return None;
        }
    };
    let vault = match crate::app::connect_vault(&config).await {
        Ok(v) => v,
        Err(failure) => {
            tracing::error!(error = %failure.message, "reload refused: cannot use the new Vault settings; the running configuration stays in force");
            return None;
        }
    };
    if config.admin != old.config.admin {
        tracing::warn!(
            "[admin] changed: the admin server keeps its address until the next restart"
        );
    }
    let names = |c: &crate::config::Config| -> HashSet<String> {
        c.credentials.iter().map(|c| c.name.clone()).collect()
    };
    let (old_names, new_names) = (names(&old.config), names(&config));
    let added: Vec<&str> = config
        .credentials
        .iter()
        .filter(|c| !old_names.contains(&c.name))
        .map(|c| c.name.as_str())
        .collect();
    let removed: Vec<&str> = old
        .config
        .credentials
        .iter()
        .filter(|c| !new_names.contains(&c.name))
        .map(|c| c.name.as_str())
        .collect();
    tracing::info!(
        credentials = config.credentials.len(),
        added = %added.join(","),
        removed = %removed.join(","),
        "configuration reloaded"
    );
    metrics.retain_credentials(&|name| new_names.contains(name));
    metrics.set_vault(vault.clone());
    Some(old.rebuilt(config, vault))
}

/// Per credential, in memory: errors the state record cannot hold (Vault unreachable, a record
/// that cannot be read or written) back off with capped exponential delays and jitter.
#[derive(Default)]
struct ErrorBackoff(std::collections::HashMap<String, (u32, chrono::DateTime<Utc>)>);

impl ErrorBackoff {
    const POLICY: crate::rotation::state::Backoff = crate::rotation::state::Backoff {
        base: Duration::from_secs(2),
        cap: Duration::from_secs(300),
    };

    fn waiting_until(
        &self,
        name: &str,
        now: chrono::DateTime<Utc>,
    ) -> Option<chrono::DateTime<Utc>> {
        self.0.get(name).map(|e| e.1).filter(|t| *t > now)
    }

    fn failed(&mut self, name: &str, now: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
        let n = self.0.get(name).map_or(1, |e| e.0 + 1);
        let at = now + Self::POLICY.delay(n, rand::random::<f64>());
        self.0.insert(name.to_string(), (n, at));
        at
    }

    fn succeeded(&mut self, name: &str) {
        self.0.remove(name);
    }
}

/// A short, bounded name for an error of the loop (a metric label).
fn failure_reason(e: &EngineError) -> String {
    match e {
        EngineError::Vault(v) => format!("vault_{}", v.kind()),
        EngineError::Fenced { .. } => "fenced".into(),
        EngineError::Corrupt { .. } => "corrupt_record".into(),
        EngineError::Refused { .. } => "refused".into(),
    }
}
