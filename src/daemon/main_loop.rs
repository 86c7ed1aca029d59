//! The daemon's loop, step by step: start (admin server, token keeper, delivery workers, planner,
//! scheduler), then each turn reload when asked, hand out due work, tell systemd how far it got,
//! and sleep until the next work, a finished task, a tick or a signal; then shut down.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_cron_scheduler::JobScheduler;

use super::folders::Folders;
use super::group::{Group, Joining, Owners};
use super::metrics::Metrics;
use super::periodic::{self, Tick};
use super::planner::{Planner, Work};
use super::reload::{keep_token, start_deliveries};
use super::schedule::{
    planner_settings, recv_tick, spawn_drift_checks, tick_hook, track_all, ByName,
};
use super::systemd::{self, Heartbeat};
use super::work::{perform, settle, status_line, Done, ErrorBackoff};
use super::{
    admin, begin_stop, checks, stop_requested, Health, Signals, DRIFT_EVERY, FEED_EVERY,
    FOLDER_DEADLINE, READ_DEADLINE, STATUS_EVERY,
};
use crate::app::{exit, App, Failure};
use crate::notify::deliver::Workers;
use crate::rotation::EngineError;
use crate::vault::VaultError;

/// Everything the loop holds between two turns.
pub(super) struct Loop {
    pub(super) once: bool,
    pub(super) app: Arc<App>,
    /// The admin server's view of the current `App` (replaced on reload).
    pub(super) current: watch::Sender<Arc<App>>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) health: Arc<Health>,
    admin: Option<JoinHandle<()>>,
    /// Keeps the Vault token alive.
    pub(super) keeper: JoinHandle<()>,
    pub(super) progress: Arc<checks::Progress>,
    /// The start-up checks running in the background.
    pub(super) checking: Option<JoinHandle<()>>,
    pub(super) by_name: ByName,
    /// This instance's group membership (`None` for a `--once` pass, which works alone).
    pub(super) group: Option<Group>,
    /// Who owns what, as last published by the group.
    pub(super) owners: Owners,
    /// Credentials handed over while their attempt was in flight here: driven until it ends.
    pub(super) handing_over: HashSet<String>,
    /// The delivery workers (`None` only while a reload replaces them).
    pub(super) workers: Option<Workers>,
    heartbeat: Arc<Heartbeat>,
    watchdog: Option<JoinHandle<()>>,
    pub(super) planner: Planner,
    periodic: Option<JobScheduler>,
    ticks: Option<mpsc::Receiver<Tick>>,
    sweeper: periodic::Sweeper,
    tasks: JoinSet<(String, Work, Done)>,
    backoff: ErrorBackoff,
    /// `--once`: each credential is driven at most once.
    driven: HashSet<String>,
    pub(super) errors: usize,
    ready: bool,
    pub(super) reload: bool,
    pub(super) stop: Option<Instant>,
    last_status: Instant,
    last_left: Option<usize>,
    status_dirty: bool,
    checks_were_running: bool,
    last_drift: Instant,
    /// The round of drift checks running, if any (one at a time).
    drift_round: Option<JoinHandle<()>>,
    /// The credential sets' members, looked for again every interval.
    pub(super) discovery: super::sets::Discovery,
    /// The folders whose credentials are reconciled with one listing.
    pub(super) folders: Arc<Folders>,
    /// The planner's [`Planner::changes`] when the folders were last grouped (`None`: group
    /// them at the next turn).
    pub(super) grouped_at: Option<u64>,
}

impl Loop {
    /// Start the parts that run beside the loop and plan a first read of every credential.
    pub(super) async fn start(
        app: Arc<App>,
        once: bool,
        reconcile: Option<Duration>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        discovery: super::sets::Discovery,
        joining: Option<Joining>,
    ) -> Result<Loop, Failure> {
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
        let keeper = keep_token(&app);
        tracing::info!(credentials = app.config.credentials.len(), owner = %app.engine.owner, "secret-rotator running");
        // The start-up checks gate nothing (each attempt checks again before it mints): a pass
        // (`--once`) makes them first, as its report; the daemon after READY, in the background.
        let progress = Arc::new(checks::Progress::default());
        if once {
            checks::run(&app, &progress).await;
        }
        let by_name = ByName::new(&app);
        // Dependents are told off the rotation path, one worker per credential that has any.
        let workers = start_deliveries(&app, &metrics);
        let heartbeat = Heartbeat::new();
        let watchdog = systemd::spawn_watchdog(heartbeat.clone());
        // The group this instance entered before the discovery (none in a pass).
        let group = match joining {
            Some(joining) => Some(joining.settle().await),
            None => None,
        };
        let owners = group.as_ref().map_or_else(
            || Owners::alone(crate::instance::instance_of(&app.engine.owner)),
            Group::owners,
        );
        let mut planner = Planner::new(planner_settings(&app, once, reconcile));
        let started = Utc::now();
        track_all(&app, &mut planner, started, true, &owners);
        // Before the first sweep plans any reconcile: the folders' slots.
        let folders = Arc::new(Folders::default());
        super::folders::group(&folders, &mut planner, &app, &by_name);
        let grouped_at = Some(planner.changes());
        metrics.group(owners.members().len(), planner.tracked());
        let (periodic, ticks) = if once {
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
        Ok(Loop {
            once,
            app,
            current,
            metrics,
            health,
            admin,
            keeper,
            progress,
            checking: None,
            by_name,
            group,
            owners,
            handing_over: HashSet::new(),
            workers: Some(workers),
            heartbeat,
            watchdog,
            planner,
            periodic,
            ticks,
            sweeper,
            tasks: JoinSet::new(),
            backoff: ErrorBackoff::default(),
            driven: HashSet::new(),
            ready: false,
            reload: false,
            stop: None,
            last_status: Instant::now(),
            last_left: None,
            status_dirty: false,
            checks_were_running: false,
            last_drift: Instant::now() - DRIFT_EVERY,
            drift_round: None,
            // A pass (`--once`) does not wait for a set it could not list: it counts an error.
            errors: if once { discovery.pending.len() } else { 0 },
            discovery,
            grouped_at,
            folders,
        })
    }

    /// Turn until a stop (or the end of a `--once` pass); returns the exit code.
    pub(super) async fn turn_until_done(&mut self, signals: &mut Signals) -> i32 {
        loop {
            self.heartbeat.feed();
            if self.reload && self.stop.is_none() {
                self.reload().await;
            }
            if self.stop.is_none() {
                self.follow_group();
                self.group_folders();
                self.hand_out_work();
            }
            self.report_start_up();
            self.become_ready();
            self.report_status();
            if let Some(code) = self.finished() {
                break code;
            }
            // Drift checks whose interval passed (in memory, no IO unless one is due; at most a
            // round at a time, off the loop). Not in `--once`: a pass there reads every
            // credential.
            if !self.once && self.last_drift.elapsed() >= DRIFT_EVERY {
                self.last_drift = Instant::now();
                spawn_drift_checks(
                    &self.app,
                    &mut self.planner,
                    &self.by_name,
                    &mut self.drift_round,
                );
            }
            if let Some(code) = self.wait(signals).await {
                break code;
            }
            // The scheduler's sweep may stop firing (tokio-cron-scheduler issue #113): the loop
            // then sweeps by itself.
            if !self.once {
                if let Some((from, to)) = self.sweeper.overdue(Utc::now()) {
                    let n = self.planner.sweep(from, to);
                    tracing::debug!(credentials = n, from = %from, to = %to, "reconcile sweep by the loop");
                }
            }
        }
    }

    /// Which work must wait now: a drive of a credential driven already in this pass
    /// (`--once`), and any work of a credential backing off after an error.
    fn held(&self, now: DateTime<Utc>) -> impl Fn(&str, Work) -> bool + '_ {
        held(self.once, &self.driven, &self.backoff, now)
    }

    /// Hand out what is due, within the limits: one task per piece of work.
    fn hand_out_work(&mut self) {
        let now = Utc::now();
        while let Some((name, work)) = self
            .planner
            .next_work(now, held(self.once, &self.driven, &self.backoff, now))
        {
            let Some(cred) = self.by_name.get(&self.app, &name).cloned() else {
                self.planner.retain(|n| n != name);
                continue;
            };
            if self.once && work == Work::Drive {
                self.driven.insert(name.clone());
            }
            let known = self.planner.known(&name);
            // A reconcile of the metadata only, of a credential whose folder is listed as one.
            let batch = (work == Work::Reconcile && !known.1)
                .then(|| {
                    self.folders
                        .batch(&cred.secret, self.planner.settings().reconcile, now)
                })
                .flatten();
            let app = self.app.clone();
            let deadline = match work {
                Work::Drive => app.engine.settings.lease,
                Work::Reconcile if batch.is_some() => FOLDER_DEADLINE,
                Work::Read | Work::Reconcile => READ_DEADLINE,
            };
            self.tasks.spawn(async move {
                let done =
                    match tokio::time::timeout(deadline, perform(&app, &cred, work, known, batch))
                        .await
                    {
                        Ok(done) => done,
                        Err(_) => Done::Failed(EngineError::Vault(VaultError::Unavailable {
                            address: String::new(),
                            reason: format!(
                                "no answer within {}",
                                crate::human::duration(deadline)
                            ),
                        })),
                    };
                (cred.name, work, done)
            });
        }
    }

    /// A long start-up (many credentials) says how far it got, and asks systemd for more time
    /// while it moves on.
    fn report_start_up(&mut self) {
        if !self.ready
            && !self.once
            && self.stop.is_none()
            && self.last_status.elapsed() >= STATUS_EVERY
        {
            let left = self.planner.recovering();
            if left > 0 && Some(left) != self.last_left {
                let total = self.planner.summary().tracked;
                systemd::starting(&format!(
                    "starting: {} of {total} credentials read",
                    total.saturating_sub(left)
                ));
                self.last_left = Some(left);
            }
            self.last_status = Instant::now();
        }
    }

    /// Once every credential was read: READY, and the start-up checks begin.
    fn become_ready(&mut self) {
        if !self.ready
            && self.planner.recovered()
            && self.discovery.pending.is_empty()
            && self.stop.is_none()
            && !self.once
        {
            self.ready = true;
            self.health.recovered.store(true, Ordering::Relaxed);
            self.checking = Some(checks::spawn(
                self.app.clone(),
                self.progress.clone(),
                self.owners.clone(),
            ));
            let line = self.status_line();
            tracing::info!(status = %line, "ready");
            systemd::ready(&line);
            self.last_status = Instant::now();
            self.status_dirty = false;
        }
    }

    /// The checks' progress, and their end, show in the status line.
    fn report_status(&mut self) {
        let checks_running = self.progress.running();
        if checks_running || self.checks_were_running {
            self.status_dirty = true;
        }
        self.checks_were_running = checks_running;
        if self.ready && self.status_dirty && self.last_status.elapsed() >= STATUS_EVERY {
            systemd::status(&self.status_line());
            self.last_status = Instant::now();
            self.status_dirty = false;
        }
    }

    /// READY was sent.
    pub(super) fn ready(&self) -> bool {
        self.ready
    }

    pub(super) fn status_line(&self) -> String {
        status_line(&self.planner, self.errors, &self.progress, Utc::now())
    }

    /// With no task running: the exit code when the loop is done (a stop, or a `--once` pass
    /// with nothing left it may start).
    fn finished(&self) -> Option<i32> {
        if !self.tasks.is_empty() {
            return None;
        }
        if self.stop.is_some() {
            return Some(exit::OK);
        }
        let now = Utc::now();
        let startable = self.planner.next_wake().is_some_and(|t| t <= now)
            && self.planner.next_work_would_start(now, self.held(now));
        if self.once && !startable {
            // For cron and monitoring: a pass that could not handle a credential fails.
            return Some(if self.errors > 0 {
                exit::VAULT
            } else {
                exit::OK
            });
        }
        None
    }

    /// Sleep until the next planned work, a finished task, a tick or a signal; `Some` exit
    /// code when the stop bound was reached.
    async fn wait(&mut self, signals: &mut Signals) -> Option<i32> {
        let wake = self
            .planner
            .next_wake()
            .map(|t| (t - Utc::now()).to_std().unwrap_or_default())
            .unwrap_or(FEED_EVERY)
            .min(FEED_EVERY)
            .max(Duration::from_millis(if self.once { 50 } else { 200 }));
        let stop_at = self
            .stop
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        tokio::select! {
            Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                if let Ok((name, work, done)) = joined {
                    let cred = self.by_name.get(&self.app, &name);
                    self.errors += settle(cred, &mut self.planner, &mut self.backoff, &self.metrics, &self.health, &name, work, done);
                    self.release_handed_over(&name);
                    self.status_dirty = true;
                }
            }
            () = tokio::time::sleep(wake) => {}
            Some(tick) = recv_tick(&mut self.ticks) => {
                tick_hook(
                    &self.app,
                    &mut self.planner,
                    &mut self.sweeper,
                    tick,
                    (&self.by_name, &mut self.drift_round),
                );
            }
            Some((set, found)) = self.discovery.recv(), if !self.once && self.stop.is_none() => {
                self.discovered(set, found);
                self.status_dirty = true;
            }
            () = stop_requested(&mut signals.term, &mut signals.int), if self.stop.is_none() => {
                self.stop = Some(begin_stop());
            }
            _ = signals.hup.recv() => {
                tracing::info!("SIGHUP: reading the configuration again");
                self.reload = true;
            }
            () = tokio::time::sleep_until(stop_at), if self.stop.is_some() => {
                tracing::warn!(
                    "stop bound reached: the steps in progress resume from their recorded phase on the next start"
                );
                self.tasks.abort_all();
                return Some(exit::OK);
            }
        }
        None
    }

    /// Stop what runs beside the loop; in-flight rotations resume on the next start.
    pub(super) async fn shut_down(self) {
        tracing::info!(
            "shutting down; rotations in flight resume from their recorded phase on the next start"
        );
        if let Some(group) = self.group {
            group.leave().await;
        }
        self.discovery.stop();
        let mut tasks = self.tasks;
        tasks.abort_all();
        if let Some(task) = self.checking {
            task.abort();
        }
        if let Some(mut p) = self.periodic {
            let _ = p.shutdown().await;
        }
        if let Some(workers) = self.workers {
            workers.stop(super::DELIVERY_STOP).await;
        }
        self.keeper.abort();
        if let Some(w) = self.watchdog {
            w.abort();
        }
        if let Some(a) = self.admin {
            a.abort();
        }
        systemd::flush(Duration::from_secs(1)).await;
    }
}

/// See [`Loop::held`].
fn held<'a>(
    once: bool,
    driven: &'a HashSet<String>,
    backoff: &'a ErrorBackoff,
    now: DateTime<Utc>,
) -> impl Fn(&str, Work) -> bool + 'a {
    move |name, work| {
        (once && work == Work::Drive && driven.contains(name))
            || backoff.waiting_until(name, now).is_some()
    }
}
