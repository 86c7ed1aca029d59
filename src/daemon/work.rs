//! One piece of work for one credential (`perform`, a task of its own), and how its report is
//! taken into the plan and the figures (`settle`); errors the state record cannot hold back off
//! in memory.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::checks;
use super::folders::{Batch, Glance};
use super::metrics::{CredentialView, Metrics};
use super::planner::{self, Planner, RecordView, Work};
use super::Health;
use crate::app::App;
use crate::config::Credential;
use crate::report;
use crate::rotation::{Begin, EngineError, Outcome, RunResult, Wait};
use crate::standing::{due, effective, read_to_plan, see, Seen};
use crate::vault::VaultError;

/// What a task reports back to the loop.
pub(super) enum Done {
    /// A full read (and a drive when there was one).
    Seen {
        seen: Box<Seen>,
        result: Option<RunResult>,
    },
    /// A reconcile found the secret as the planner knew it.
    Unchanged,
    Failed(EngineError),
}

/// Per credential, in memory: errors the state record cannot hold (Vault unreachable, a record
/// that cannot be read or written) back off with capped exponential delays and jitter.
#[derive(Default)]
pub(super) struct ErrorBackoff(std::collections::HashMap<String, (u32, chrono::DateTime<Utc>)>);

impl ErrorBackoff {
    const POLICY: crate::rotation::state::Backoff = crate::rotation::state::Backoff {
        base: Duration::from_secs(2),
        cap: Duration::from_secs(300),
    };

    pub(super) fn waiting_until(
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

/// One piece of work for one credential (a task of its own: a slow provider holds nobody else).
pub(super) async fn perform(
    app: &App,
    cred: &Credential,
    work: Work,
    known: (Option<u64>, bool),
    batch: Option<Batch>,
) -> Done {
    let result = async {
        match work {
            Work::Read => Ok(Done::Seen {
                seen: Box::new(read_to_plan(app, cred).await?),
                result: None,
            }),
            Work::Reconcile => {
                let (version, full) = known;
                if !full {
                    // A set's member whose metadata overrides its policy is read whole: the
                    // override then plans it.
                    let (now, overrides) = match glance(app, cred, batch.as_ref()).await? {
                        Some(g) => (Some(g.version), cred.set_name().is_some() && g.overrides),
                        None => (None, false),
                    };
                    if now == version && !overrides {
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
                let cred = &*effective(cred, &seen);
                let (trigger, _) = due(cred, &seen, Utc::now());
                // A set's member whose secret is gone left the set: nothing is created for it.
                let gone = cred.set_name().is_some() && seen.version.is_none();
                let start = trigger.filter(|_| !gone).map(|trigger| Begin::Due {
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

/// What a reconcile needs of `cred`'s metadata: from its folder's listing when it has one that
/// holds it, else from a metadata read of its own. `None`: the secret is missing.
async fn glance(
    app: &App,
    cred: &Credential,
    batch: Option<&Batch>,
) -> Result<Option<Glance>, VaultError> {
    if let Some(batch) = batch {
        if let Some(g) = batch.glance(&app.vault, &cred.secret).await? {
            return Ok(Some(g));
        }
    }
    match app.vault.read_metadata(&cred.secret).await {
        Ok(m) => Ok(Some(Glance::of(&m))),
        Err(VaultError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Take a task's report into the plan and the figures; returns 1 for an error the state record
/// could not hold.
#[allow(clippy::too_many_arguments)]
pub(super) fn settle(
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
            if cred.set_name().is_some() && seen.version.is_none() && result.is_none() {
                // A set's member whose secret was deleted: dropped until discovery finds it
                // again; its state record is left alone.
                tracing::info!(credential = %name, path = %cred.secret, "the secret of this credential set member is gone; no longer tracked");
                planner.retain(|n| n != name);
                metrics.forget(name);
                return 0;
            }
            let cred = &*effective(cred, &seen);
            let (_, due_at) = due(cred, &seen, now);
            let row = report::status_row(cred, seen.facts, seen.version, seen.record.as_ref(), now);
            metrics.credential(
                name,
                CredentialView::of(&row, due_at, cred.policy.supply_reminder),
            );
            if let Some(RunResult::Finished(s)) = &result {
                metrics.rotation_finished(cred.provider().kind(), s);
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
            let mut plan = planner::observation(
                seen.version,
                record.unwrap_or_default(),
                result.as_ref(),
                Some(due_at),
                now,
            );
            // Another instance's attempt: it may end long before its lease does (a member
            // that handed the credential over finishes it); look again within a reconcile
            // interval.
            if let (Some(RunResult::Busy { .. }), planner::Next::At(at)) = (&result, plan.next) {
                let soon = chrono::Duration::from_std(planner.settings().reconcile)
                    .ok()
                    .and_then(|d| now.checked_add_signed(d))
                    .unwrap_or(at);
                plan.next = planner::Next::At(at.min(soon));
            }
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
pub(super) fn status_line(
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
