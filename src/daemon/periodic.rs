//! The daemon's periodic jobs, run by tokio-cron-scheduler: the reconcile sweep, the drift and
//! liveness check, and the outbox retry sweep. Each job only sends a [`Tick`] to the run loop,
//! which does the work.
//!
//! Invariants (ARCHITECTURE.md, `daemon::periodic`):
//! - Every job is scheduled in UTC. The crate fixes a zone's UTC offset when a job is built and
//!   never recomputes it (its issue #107), so a zone-based job drifts by an hour after a DST
//!   change; in UTC there is no DST to get wrong. Wall-clock schedules in a zone (credential
//!   `schedule`s) never go through it: `policy` computes them with chrono-tz after every fire.
//! - A sweep that does not come (the crate's issue #113: repeated jobs that stop) loses nothing:
//!   each sweep plans everything since the last one, and the loop sweeps by itself when the
//!   scheduler is late by a quarter period ([`Sweeper::overdue`]).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler};

/// What a periodic job asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tick {
    /// Plan the reconciles of the next sweep period (fired at this time).
    Reconcile(DateTime<Utc>),
    /// Check current credentials for drift and liveness.
    Liveness,
    /// Wake the delivery workers (events whose retry time has come).
    OutboxSweep,
}

/// How often the reconcile sweep runs: each minute for intervals of 10 minutes or more, else
/// each second (short intervals are for tests and small fleets).
pub(crate) fn sweep_period(reconcile: Duration) -> Duration {
    if reconcile >= Duration::from_secs(600) {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(1)
    }
}

/// What a job sends when it fires at a given time.
pub(crate) type MakeTick = fn(DateTime<Utc>) -> Tick;

/// The jobs: (six-field cron expression in UTC, what it sends).
pub(crate) fn jobs(reconcile: Duration) -> Vec<(&'static str, MakeTick)> {
    let sweep = if sweep_period(reconcile) >= Duration::from_secs(60) {
        "0 * * * * *"
    } else {
        "* * * * * *"
    };
    vec![
        (sweep, Tick::Reconcile),
        ("15 */15 * * * *", |_| Tick::Liveness),
        ("30 * * * * *", |_| Tick::OutboxSweep),
    ]
}

/// Start the scheduler with the daemon's jobs. Without it (it failed to start: logged), the
/// loop's own fallback sweeps.
pub(crate) async fn start(reconcile: Duration) -> (Option<JobScheduler>, mpsc::Receiver<Tick>) {
    let (tx, rx) = mpsc::channel(64);
    match build(reconcile, tx).await {
        Ok(scheduler) => (Some(scheduler), rx),
        Err(e) => {
            tracing::warn!(error = %e, "the periodic job scheduler did not start; the loop sweeps by itself");
            (None, rx)
        }
    }
}

async fn build(
    reconcile: Duration,
    tx: mpsc::Sender<Tick>,
) -> Result<JobScheduler, tokio_cron_scheduler::JobSchedulerError> {
    let scheduler = JobScheduler::new().await?;
    for (expression, tick) in jobs(reconcile) {
        let tx = tx.clone();
        let job = Job::new_async(expression, move |_, _| {
            let tx = tx.clone();
            Box::pin(async move {
                // A full channel means the loop is behind: the next sweep covers this one.
                let _ = tx.try_send(tick(Utc::now()));
            })
        })?;
        scheduler.add(job).await?;
    }
    scheduler.start().await?;
    Ok(scheduler)
}

/// Which span of reconcile slots each sweep plans. Pure.
///
/// A sweep at `t` plans the slots in `(planned, t + period]`: ahead of time, so each read runs
/// at its own slot (spread) rather than all at the tick.
#[derive(Debug, Clone)]
pub(crate) struct Sweeper {
    period: Duration,
    /// Slots up to here are planned.
    planned: DateTime<Utc>,
    /// The loop has said once that it sweeps by itself.
    warned: bool,
}

impl Sweeper {
    /// `start`: the start-up read counts as everyone's first reconcile.
    pub(crate) fn new(reconcile: Duration, start: DateTime<Utc>) -> Sweeper {
        Sweeper {
            period: sweep_period(reconcile),
            planned: start,
            warned: false,
        }
    }

    fn period(&self) -> TimeDelta {
        TimeDelta::from_std(self.period).unwrap_or(TimeDelta::seconds(60))
    }

    /// A sweep fired at `at`: the span to plan, if any is new.
    pub(crate) fn tick(&mut self, at: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let to = at + self.period();
        if to <= self.planned {
            return None;
        }
        let from = self.planned;
        self.planned = to;
        Some((from, to))
    }

    /// The scheduler is late past a quarter period (and a second): the span to plan by the loop
    /// itself. Measured here, tokio-cron-scheduler 0.15.1 fired the minute job once and then
    /// not again (its issue #113), so this keeps the reconciles flowing either way.
    pub(crate) fn overdue(&mut self, now: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if now - self.planned > self.period() / 4 + TimeDelta::seconds(1) {
            if !self.warned {
                self.warned = true;
                tracing::warn!(
                    "the scheduler's reconcile sweep is late; the loop sweeps by itself"
                );
            }
            self.tick(now)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests;
