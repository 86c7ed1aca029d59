//! The daemon: start-up recovery and checks, the loop that drives every credential when due,
//! signals (SIGTERM stops, SIGHUP reloads), the systemd protocol and the admin server.
//!
//! Invariant: the loop only decides when to call the engine; what a rotation does lives in
//! `rotation`, when a credential is due in `policy`. A stop never cuts a step short before the
//! stop bound, and what is cut short after it resumes from its recorded phase on the next start.

pub mod admin;
pub mod metrics;
mod systemd;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cli::{exit, jitter_seed, App, Failure};
use crate::config::{Credential, ProcessEnvironment};
use crate::events::{Event, EventKind, EventSink, FanOut};
use crate::notify::deliver::{Deliverer, Workers};
use crate::policy::{self, SecretFacts};
use crate::providers::Mode;
use crate::report;
use crate::rotation::{Engine, EngineError, Outcome, RunResult, StateRecord, Wait};
use crate::vault::VaultError;
use metrics::{CredentialView, Metrics};
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

/// The daemon: rotate credentials when due, resume what is in flight, until SIGTERM.
pub(crate) async fn run(mut app: App, once: bool, interval: Duration) -> Result<i32, Failure> {
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
    preflight_all(&app).await;
    // Dependents are told off the rotation path, one worker per credential that has any.
    let mut workers = start_deliveries(&app, &metrics);
    let heartbeat = Heartbeat::new();
    let watchdog = systemd::spawn_watchdog(heartbeat.clone());
    let mut backoff = ErrorBackoff::default();
    let mut ready = false;
    let mut reload = false;
    let mut stop: Option<Instant> = None;
    let code = loop {
        heartbeat.feed();
        if reload {
            reload = false;
            systemd::reloading();
            if let Some(new) = reloaded(&app, &metrics).await {
                keeper.abort();
                workers.stop(DELIVERY_STOP).await;
                app = Arc::new(new);
                keeper = keep_token(&app);
                current.send_replace(app.clone());
                preflight_all(&app).await;
                workers = start_deliveries(&app, &metrics);
            }
            // Whether the new configuration was taken or refused, the daemon runs on.
            systemd::ready("configuration reloaded");
        }
        let stopping = AtomicBool::new(stop.is_some());
        let observer = Observer {
            metrics: &metrics,
            heartbeat: &heartbeat,
            stopping: &stopping,
        };
        let summary = {
            let pass = pass(&app, &mut backoff, &observer);
            tokio::pin!(pass);
            loop {
                let deadline = stop.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
                tokio::select! {
                    summary = &mut pass => break Some(summary),
                    () = stop_requested(&mut signals.term, &mut signals.int), if stop.is_none() => {
                        stop = Some(begin_stop());
                        stopping.store(true, Ordering::Relaxed);
                    }
                    _ = signals.hup.recv() => {
                        tracing::info!("SIGHUP: the configuration is read again after the pass in progress");
                        reload = true;
                    }
                    () = tokio::time::sleep_until(deadline), if stop.is_some() => break None,
                }
            }
        };
        let Some(summary) = summary else {
            tracing::warn!(
                "stop bound reached: the step in progress resumes from its recorded phase on the next start"
            );
            break exit::OK;
        };
        health
            .vault_reachable
            .store(summary.vault_reachable, Ordering::Relaxed);
        if stop.is_some() {
            break exit::OK;
        }
        if once {
            // For cron and monitoring: a pass that could not handle a credential fails.
            break if summary.errors > 0 {
                exit::VAULT
            } else {
                exit::OK
            };
        }
        let line = summary.status_line(Utc::now());
        if ready {
            systemd::status(&line);
        } else {
            ready = true;
            health.recovered.store(true, Ordering::Relaxed);
            tracing::info!(status = %line, "ready");
            systemd::ready(&line);
        }
        // Never a hot loop: whatever the credentials say, at least a second between passes.
        let sleep = (summary.next - Utc::now())
            .to_std()
            .unwrap_or_default()
            .min(interval)
            .max(Duration::from_secs(1));
        let wake = Instant::now() + sleep;
        while !reload && stop.is_none() && Instant::now() < wake {
            heartbeat.feed();
            tokio::select! {
                () = tokio::time::sleep_until(wake.min(Instant::now() + FEED_EVERY)) => {}
                () = stop_requested(&mut signals.term, &mut signals.int) => stop = Some(begin_stop()),
                _ = signals.hup.recv() => {
                    tracing::info!("SIGHUP: reading the configuration again");
                    reload = true;
                }
            }
        }
        if stop.is_some() {
            break exit::OK;
        }
    };
    tracing::info!(
        "shutting down; rotations in flight resume from their recorded phase on the next start"
    );
    workers.stop(DELIVERY_STOP).await;
    keeper.abort();
    if let Some(w) = watchdog {
        w.abort();
    }
    if let Some(a) = admin {
        a.abort();
    }
    Ok(code)
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
    let vault = match crate::cli::connect_vault(&config).await {
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
    let added: Vec<&str> = config
        .credentials
        .iter()
        .filter(|c| old.config.credential(&c.name).is_none())
        .map(|c| c.name.as_str())
        .collect();
    let removed: Vec<&str> = old
        .config
        .credentials
        .iter()
        .filter(|c| config.credential(&c.name).is_none())
        .map(|c| c.name.as_str())
        .collect();
    tracing::info!(
        credentials = config.credentials.len(),
        added = %added.join(","),
        removed = %removed.join(","),
        "configuration reloaded"
    );
    metrics.retain_credentials(&|name| config.credential(name).is_some());
    metrics.set_vault(vault.clone());
    let engine = Engine {
        vault: vault.clone(),
        events: old.engine.events.clone(),
        owner: old.engine.owner.clone(),
        state_mount: config.vault.state_mount.clone(),
        state_prefix: config.vault.state_prefix.clone(),
        settings: old.engine.settings.clone(),
        wakeup: old.engine.wakeup.clone(),
    };
    let deliverer = Arc::new(Deliverer {
        vault: vault.clone(),
        state_mount: config.vault.state_mount.clone(),
        state_prefix: config.vault.state_prefix.clone(),
        ..(*old.deliverer).clone()
    });
    Some(App {
        config_path: old.config_path.clone(),
        config,
        vault,
        engine,
        deliverer,
        http: old.http.clone(),
    })
}

/// At start-up, say at once what would stop a rotation later (wrong mount, missing
/// capabilities, a malformed secret); each attempt checks again before it mints.
async fn preflight_all(app: &App) {
    for cred in &app.config.credentials {
        for problem in app.deliverer.preflight(cred).await {
            tracing::error!(credential = %cred.name, error = %problem, "a dependent cannot be told until this is fixed");
        }
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

/// What a pass reports to, and reads from, the rest of the daemon.
struct Observer<'a> {
    metrics: &'a Metrics,
    heartbeat: &'a Heartbeat,
    /// Set on SIGTERM: the pass takes no new credential.
    stopping: &'a AtomicBool,
}

/// What one pass found.
struct PassSummary {
    /// When the next credential wants attention.
    next: DateTime<Utc>,
    /// Credentials that failed with an error the state record could not hold.
    errors: usize,
    /// Automatic credentials (the ones the loop drives).
    tracked: usize,
    in_flight: usize,
    needs_attention: usize,
    vault_reachable: bool,
}

impl PassSummary {
    /// "12 credentials, 1 in flight, next due in 3m".
    fn status_line(&self, now: DateTime<Utc>) -> String {
        let mut line = format!("{} credentials, {} in flight", self.tracked, self.in_flight);
        if self.needs_attention > 0 {
            line.push_str(&format!(", {} need attention", self.needs_attention));
        }
        if self.errors > 0 {
            line.push_str(&format!(", {} unreadable", self.errors));
        }
        let due = (self.next - now).num_seconds().max(0) as u64;
        line.push_str(&format!(", next due in {}", report::short_duration(due)));
        line
    }
}

/// A credential as read from Vault: its facts, version and state record.
struct Seen {
    facts: Option<SecretFacts>,
    version: Option<u64>,
    record: Option<StateRecord>,
}

async fn see(app: &App, cred: &Credential) -> Result<Seen, EngineError> {
    let (facts, version, record) = facts(app, cred).await?;
    Ok(Seen {
        facts,
        version,
        record,
    })
}

/// One pass over every credential; returns when the next one wants attention, and how many
/// credentials failed with an error the state record could not hold.
async fn pass(app: &App, backoff: &mut ErrorBackoff, observer: &Observer<'_>) -> PassSummary {
    let mut summary = PassSummary {
        next: Utc::now() + chrono::Duration::hours(1),
        errors: 0,
        tracked: 0,
        in_flight: 0,
        needs_attention: 0,
        vault_reachable: true,
    };
    for cred in &app.config.credentials {
        if observer.stopping.load(Ordering::Relaxed) {
            break;
        }
        observer.heartbeat.feed();
        // Assisted rotation hook: assisted credentials are driven too (the engine asks a person
        // for them), and every credential is checked for drift each `drift_interval`.
        let provider = match app.provider(cred) {
            Ok(p) => p,
            _ => continue,
        };
        if crate::rotation::driver::drift_due(cred, Utc::now()) {
            if let Err(e) = app.engine.check_drift(cred, provider.as_ref()).await {
                tracing::warn!(credential = %cred.name, error = %e, "drift check failed");
            }
        }
        // End of the assisted rotation hook.
        summary.tracked += 1;
        if let Some(t) = backoff.waiting_until(&cred.name, Utc::now()) {
            summary.next = summary.next.min(t);
            continue;
        }
        let result = async {
            let seen = see(app, cred).await?;
            let (trigger, _) = due(cred, &seen, Utc::now());
            let r = app
                .engine
                .drive(cred, provider.as_ref(), trigger, Wait::No)
                .await?;
            // Something happened: read what it left, for the figures and the next due time.
            let seen = match r {
                RunResult::Idle => seen,
                _ => see(app, cred).await?,
            };
            Ok::<_, EngineError>((r, seen))
        }
        .await;
        match result {
            Ok((r, seen)) => {
                backoff.succeeded(&cred.name);
                let now = Utc::now();
                let (_, due_at) = due(cred, &seen, now);
                let row =
                    report::status_row(cred, seen.facts, seen.version, seen.record.as_ref(), now);
                summary.in_flight +=
                    usize::from(seen.record.as_ref().is_some_and(|r| r.attempt.is_some()));
                summary.needs_attention += usize::from(row.needs_attention.is_some());
                observer
                    .metrics
                    .credential(&cred.name, CredentialView::of(&row, due_at));
                if let RunResult::Finished(s) = &r {
                    observer.metrics.rotation_finished(cred.provider.kind(), s);
                    if s.outcome != Outcome::Rotated {
                        observer.metrics.failure(s.outcome.as_str());
                    }
                }
                match r {
                    RunResult::Waiting { until }
                    | RunResult::Busy { until, .. }
                    | RunResult::RetryAt { until, .. }
                    | RunResult::BackingOff { until } => summary.next = summary.next.min(until),
                    RunResult::Idle | RunResult::Finished(_) => {
                        summary.next = summary.next.min(due_at)
                    }
                    // Only an operator moves these on: they do not bring the next pass closer.
                    RunResult::Parked(_) | RunResult::NeedsAttention { .. } => {}
                }
            }
            Err(e) => {
                summary.errors += 1;
                if let EngineError::Vault(
                    VaultError::Unavailable { .. }
                    | VaultError::Sealed { .. }
                    | VaultError::Login { .. },
                ) = &e
                {
                    summary.vault_reachable = false;
                }
                observer.metrics.failure(&failure_reason(&e));
                let at = backoff.failed(&cred.name, Utc::now());
                summary.next = summary.next.min(at);
                tracing::error!(credential = %cred.name, error = %e, retry_at = %at.to_rfc3339(), "rotation step failed; trying again later");
            }
        }
    }
    summary
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
    let seen = see(app, cred).await?;
    Ok(due(cred, &seen, Utc::now()))
}

/// When the credential is due (jitter included), and why when that is now.
fn due(
    cred: &Credential,
    seen: &Seen,
    now: DateTime<Utc>,
) -> (Option<&'static str>, DateTime<Utc>) {
    match policy::next_due(
        seen.facts.as_ref(),
        &cred.policy,
        now,
        jitter_seed(&cred.name, seen.version.unwrap_or(0)),
    ) {
        Ok(due) if due.at <= now => (
            Some(match due.reason {
                policy::DueReason::MaxAge => "max_age",
                policy::DueReason::Schedule => "schedule",
                policy::DueReason::Expiry => "expiry",
                policy::DueReason::Missing => "missing",
            }),
            due.at,
        ),
        Ok(due) => (None, due.at),
        Err(e) => {
            tracing::error!(credential = %cred.name, error = %e, "cannot compute when this credential is due");
            (None, now + chrono::Duration::hours(1))
        }
    }
}
