//! `rotate NAME [--wait]` and `rollback NAME`, and how a run's result is printed.

use crate::app::{exit, App, Failure};
use crate::notify::deliver::Workers;
use crate::providers::Mode;
use crate::rotation::{Begin, Outcome, RunResult, Wait};

use super::assisted::assisted_result;
use super::DELIVERY_DRAIN;

/// Rotate a credential now (or resume its rotation in flight).
pub(super) async fn rotate(app: &App, name: &str, wait: bool) -> Result<i32, Failure> {
    let cred = app.credential(name)?;
    let provider = app.provider(cred)?;
    let record = app.engine.record(&cred.name).await?;
    if let Some(p) = &record.paused {
        println!(
            "{}: paused by {} since {}; not rotated (`secret-rotator resume {}` first)",
            cred.name,
            p.by,
            crate::human::time(p.since),
            cred.name
        );
        return Ok(exit::ROTATION);
    }
    // The dependents hear of each step as it happens (and their acks gate `--wait`).
    let workers = Workers::start(&app.deliverer, &app.engine.wakeup, [cred]);
    let result = app
        .engine
        .drive(
            cred,
            provider.as_ref(),
            Some(Begin::Manual),
            if wait { Wait::All } else { Wait::Retries },
        )
        .await;
    workers.stop(DELIVERY_DRAIN).await;
    let result = result?;
    if provider.info().mode == Mode::Assisted {
        return assisted_result(app, cred, &result).await;
    }
    Ok(print_result(&cred.name, &result))
}

/// Re-promote the previous credential while it is still valid.
pub(super) async fn rollback(app: &App, name: &str) -> Result<i32, Failure> {
    let cred = app.credential(name)?;
    let provider = app.provider(cred)?;
    let workers = Workers::start(&app.deliverer, &app.engine.wakeup, [cred]);
    let result = app.engine.rollback(cred, provider.as_ref()).await;
    workers.stop(DELIVERY_DRAIN).await;
    match result? {
        RunResult::Finished(s) if s.outcome == Outcome::Reverted => {
            println!(
                "{}: rolled back: version {} holds the previous credential again; {}",
                cred.name,
                s.version_after.unwrap_or_default(),
                s.error.unwrap_or_default()
            );
            Ok(exit::OK)
        }
        other => Ok(print_result(&cred.name, &other)),
    }
}

pub(super) fn print_result(name: &str, result: &RunResult) -> i32 {
    match result {
        RunResult::Idle => {
            println!("{name}: nothing to do");
            exit::OK
        }
        RunResult::Finished(s) => {
            let versions = match s.version_after {
                Some(v) => format!("version {} -> {v}", s.version_before),
                None if s.version_before == 0 => "nothing written".to_string(),
                None => format!("version {} stays current", s.version_before),
            };
            let orphans = if s.orphans.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} possible orphan credential(s) noted (they expire on their own)",
                    s.orphans.len()
                )
            };
            println!(
                "{name}: {} ({versions}){}{orphans}",
                s.outcome.as_str(),
                s.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
            if s.outcome == Outcome::Rotated {
                exit::OK
            } else {
                exit::ROTATION
            }
        }
        RunResult::Waiting { until } => {
            println!(
                "{name}: new credential committed; the old one is revoked after the grace period, at {} (by the daemon, or `rotate {name} --wait`)",
                crate::human::time(*until)
            );
            exit::OK
        }
        RunResult::RetryAt { until, error } => {
            println!(
                "{name}: a step failed and is tried again at {} (by the daemon, or `rotate {name}`): {error}",
                crate::human::time(*until)
            );
            exit::ROTATION
        }
        RunResult::BackingOff { until } => {
            println!(
                "{name}: the last attempt failed; the daemon tries again at {} (`rotate {name}` starts now)",
                crate::human::time(*until)
            );
            exit::ROTATION
        }
        RunResult::Parked(p) => {
            println!(
                "{name}: parked since {}: {}; `rotate {name}` starts a new attempt",
                crate::human::time(p.since),
                p.reason
            );
            exit::ROTATION
        }
        RunResult::Busy { owner, until } => {
            println!(
                "{name}: instance {owner} holds the rotation lease until {}",
                crate::human::time(*until)
            );
            exit::BUSY
        }
        RunResult::NeedsAttention { phase, error } => {
            println!(
                "{name}: needs attention in phase {}: {error}",
                phase.as_str()
            );
            exit::ROTATION
        }
    }
}
