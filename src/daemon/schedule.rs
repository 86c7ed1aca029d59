//! When the loop reads, drives and checks what: the planner's settings, the credentials it
//! tracks and the provider instance each counts against, the periodic jobs' ticks and the drift
//! checks.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::group::{owned, Owners};
use super::periodic::{self, Tick};
use super::planner::{self, Planner};
use super::MAX_READS;
use crate::app::App;
use crate::config::{Config, Credential};

/// The configuration's credentials by name: indices sorted by name (4 bytes per credential; a
/// lookup is a binary search, where `Config::credential` scans them all).
pub(super) struct ByName(Vec<u32>);

impl ByName {
    pub(super) fn new(app: &App) -> ByName {
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
    pub(super) fn get<'a>(&self, app: &'a App, name: &str) -> Option<&'a Credential> {
        self.get_in(&app.config, name)
    }

    /// `config` is the one this index was built from.
    pub(super) fn get_in<'a>(&self, config: &'a Config, name: &str) -> Option<&'a Credential> {
        let credentials = &config.credentials;
        self.0
            .binary_search_by(|i| credentials[*i as usize].name.as_str().cmp(name))
            .ok()
            .map(|at| &credentials[self.0[at] as usize])
    }
}

/// Drift: the current credential of each credential whose drift check the planner finds due
/// is verified with its provider, off the loop, each within the step deadline. A 401 means
/// someone regenerated or deleted it outside the daemon (`credential.drift`, and for assisted
/// kinds a request for a supply). At most one round of checks at a time (`round`: the one
/// running); checks that come due meanwhile wait in the planner for the next.
pub(super) fn spawn_drift_checks(
    app: &Arc<App>,
    planner: &mut Planner,
    by_name: &ByName,
    round: &mut Option<JoinHandle<()>>,
) {
    if round.as_ref().is_some_and(|r| !r.is_finished()) {
        return;
    }
    let due: Vec<Credential> = planner
        .drift_due(Utc::now())
        .iter()
        .filter_map(|name| by_name.get(app, name))
        .cloned()
        .collect();
    if due.is_empty() {
        return;
    }
    let app = app.clone();
    *round = Some(tokio::spawn(async move {
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
    }));
}

pub(super) async fn recv_tick(ticks: &mut Option<mpsc::Receiver<Tick>>) -> Option<Tick> {
    match ticks {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A periodic job fired.
pub(super) fn tick_hook(
    app: &Arc<App>,
    planner: &mut Planner,
    sweeper: &mut periodic::Sweeper,
    tick: Tick,
    drift: (&ByName, &mut Option<JoinHandle<()>>),
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
            spawn_drift_checks(app, planner, drift.0, drift.1);
        }
        Tick::OutboxSweep => {
            // Wake every delivery worker: an event whose retry time passed goes out now even
            // if the worker's own timer was lost.
            for cred in &app.config.credentials {
                if !cred.dependents.is_empty() {
                    app.engine.wakeup.wake(&cred.name);
                }
            }
        }
    }
}

pub(super) fn planner_settings(
    app: &App,
    once: bool,
    reconcile: Option<Duration>,
) -> planner::Settings {
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

/// Track every credential of the configuration this instance owns (a full read now).
pub(super) fn track_all(
    app: &App,
    planner: &mut Planner,
    now: DateTime<Utc>,
    recovering: bool,
    owners: &Owners,
) {
    track_these(
        planner,
        app.config.credentials.iter(),
        now,
        recovering,
        owners,
    );
}

/// Track those of these credentials this instance owns (a full read now): all of the
/// configuration's at start-up and on reload, a credential set's new members when discovery
/// finds them.
pub(super) fn track_these<'a>(
    planner: &mut Planner,
    credentials: impl Iterator<Item = &'a Credential>,
    now: DateTime<Utc>,
    recovering: bool,
    owners: &'a Owners,
) {
    // Assisted credentials too: the engine asks a person for them, reminds and polls.
    for cred in owned(credentials, owners) {
        track_one(planner, cred, now, recovering);
    }
}

/// Track one credential (a full read now) and plan its drift checks, if it has any.
pub(super) fn track_one(
    planner: &mut Planner,
    cred: &Credential,
    now: DateTime<Utc>,
    recovering: bool,
) {
    planner.track(
        &cred.name,
        &crate::providers::instance(&cred.provider()),
        now,
        recovering,
    );
    let drift = cred
        .policy
        .drift_interval
        .filter(|_| crate::rotation::driver::drift_checked(cred));
    planner.track_drift(&cred.name, drift, now);
}
