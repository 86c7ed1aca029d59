//! The daemon: start-up checks, the loop that drives every credential when due, and signals.
//!
//! Invariant: the loop only decides when to call the engine; what a rotation does lives in
//! `rotation`, when a credential is due in `policy`.

use std::time::Duration;

use chrono::Utc;

use crate::cli::{exit, jitter_seed, App, Failure};
use crate::config::Credential;
use crate::policy::{self, SecretFacts};
use crate::providers::Mode;
use crate::rotation::{EngineError, RunResult, Wait};
use crate::vault::VaultError;

/// How long the daemon lets the deliveries under way finish when it stops (or after a `--once`
/// pass).
const DELIVERY_STOP: Duration = Duration::from_secs(20);

/// The daemon: rotate credentials when due, resume what is in flight, until SIGTERM.
pub(crate) async fn run(app: App, once: bool, interval: Duration) -> Result<i32, Failure> {
    let keeper = {
        let vault = app.vault.clone();
        tokio::spawn(async move { vault.maintain_token().await })
    };
    tracing::info!(credentials = app.config.credentials.len(), owner = %app.engine.owner, "secret-rotator running");
    preflight_all(&app).await;
    // Dependents are told off the rotation path, one worker per credential that has any.
    let workers = crate::notify::deliver::Workers::start(
        &app.deliverer,
        &app.engine.wakeup,
        &app.config.credentials,
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::new(exit::USAGE, format!("cannot watch SIGTERM: {e}")))?;
    let mut backoff = ErrorBackoff::default();
    let code = loop {
        let pass = pass(&app, &mut backoff);
        let (next, errors) = tokio::select! {
            n = pass => n,
            _ = term.recv() => break exit::OK,
            _ = tokio::signal::ctrl_c() => break exit::OK,
        };
        if once {
            // For cron and monitoring: a pass that could not handle a credential fails.
            break if errors > 0 { exit::VAULT } else { exit::OK };
        }
        // Never a hot loop: whatever the credentials say, at least a second between passes.
        let sleep = (next - Utc::now())
            .to_std()
            .unwrap_or_default()
            .min(interval)
            .max(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = term.recv() => break exit::OK,
            _ = tokio::signal::ctrl_c() => break exit::OK,
        }
    };
    tracing::info!(
        "shutting down; rotations in flight resume from their recorded phase on the next start"
    );
    workers.stop(DELIVERY_STOP).await;
    keeper.abort();
    Ok(code)
}

/// At start-up, say at once what would stop a rotation later (wrong mount, missing
/// capabilities, a malformed secret); each attempt checks again before it mints.
async fn preflight_all(app: &App) {
    for cred in &app.config.credentials {
        let Ok(provider) = app.provider(cred) else {
            continue;
        };
        if provider.info().mode != Mode::Automatic {
            continue;
        }
        match app.engine.preflight(cred, provider.as_ref()).await {
            Ok(_) => {}
            Err(e @ EngineError::Refused { .. }) => {
                tracing::error!(credential = %cred.name, error = %e, "this credential cannot be rotated until this is fixed")
            }
            Err(e) => {
                tracing::warn!(credential = %cred.name, error = %e, "cannot check this credential at start-up")
            }
        }
    }
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

/// One pass over every credential; returns when the next one wants attention, and how many
/// credentials failed with an error the state record could not hold.
async fn pass(app: &App, backoff: &mut ErrorBackoff) -> (chrono::DateTime<Utc>, usize) {
    let mut next = Utc::now() + chrono::Duration::hours(1);
    let mut errors = 0;
    for cred in &app.config.credentials {
        let provider = match app.provider(cred) {
            Ok(p) if p.info().mode == Mode::Automatic => p,
            _ => continue,
        };
        if let Some(t) = backoff.waiting_until(&cred.name, Utc::now()) {
            next = next.min(t);
            continue;
        }
        let result = match due_trigger(app, cred).await {
            Ok((trigger, at)) => app
                .engine
                .drive(cred, provider.as_ref(), trigger, Wait::No)
                .await
                .map(|r| (r, at)),
            Err(e) => Err(e),
        };
        match result {
            Ok((r, due_at)) => {
                backoff.succeeded(&cred.name);
                match r {
                    RunResult::Waiting { until }
                    | RunResult::Busy { until, .. }
                    | RunResult::RetryAt { until, .. }
                    | RunResult::BackingOff { until } => next = next.min(until),
                    RunResult::Idle | RunResult::Finished(_) => next = next.min(due_at),
                    // Only an operator moves these on: they do not bring the next pass closer.
                    RunResult::Parked(_) | RunResult::NeedsAttention { .. } => {}
                }
            }
            Err(e) => {
                errors += 1;
                let at = backoff.failed(&cred.name, Utc::now());
                next = next.min(at);
                tracing::error!(credential = %cred.name, error = %e, retry_at = %at.to_rfc3339(), "rotation step failed; trying again later");
            }
        }
    }
    (next, errors)
}

/// The current secret's facts for the policy, and its version.
pub(crate) async fn facts(
    app: &App,
    cred: &Credential,
) -> Result<
    (
        Option<SecretFacts>,
        Option<u64>,
        Option<crate::rotation::StateRecord>,
    ),
    EngineError,
> {
    let meta = match app.vault.read_metadata(&cred.secret).await {
        Ok(m) => Some(m),
        Err(VaultError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let record = app.engine.record(&cred.name).await?;
    let current = meta.as_ref().and_then(|m| {
        m.current()
            .filter(|v| !v.deleted && !v.destroyed)
            .map(|v| (m.current_version, v.created_time))
    });
    let facts = current.map(|(version, created_time)| SecretFacts {
        created_time,
        // The expiry the provider gave the credential this daemon wrote at this version.
        expires_at: record
            .history
            .iter()
            .rev()
            .find(|h| h.version_after == Some(version))
            .and_then(|h| h.expires_at),
    });
    Ok((facts, current.map(|(v, _)| v), Some(record)))
}

/// Is the credential due now, and why? `None` when not due.
pub(crate) async fn due_trigger(
    app: &App,
    cred: &Credential,
) -> Result<(Option<&'static str>, chrono::DateTime<Utc>), EngineError> {
    let now = Utc::now();
    let (facts, version, _) = facts(app, cred).await?;
    match policy::next_due(
        facts.as_ref(),
        &cred.policy,
        now,
        jitter_seed(&cred.name, version.unwrap_or(0)),
    ) {
        Ok(due) if due.at <= now => Ok((
            Some(match due.reason {
                policy::DueReason::MaxAge => "max_age",
                policy::DueReason::Schedule => "schedule",
                policy::DueReason::Expiry => "expiry",
                policy::DueReason::Missing => "missing",
            }),
            due.at,
        )),
        Ok(due) => Ok((None, due.at)),
        Err(e) => {
            tracing::error!(credential = %cred.name, error = %e, "cannot compute when this credential is due");
            Ok((None, now + chrono::Duration::hours(1)))
        }
    }
}
