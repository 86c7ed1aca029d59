//! The rotation driver: carries out the steps the state machine names, against Vault and the
//! provider, writing the state record with check-and-set before each external step.
//!
//! Invariants:
//! - the state record is only ever written with CAS on the version this driver last read or
//!   wrote (a failed CAS means another instance took over: stop, do nothing more);
//! - nothing is committed, revoked or discarded unless this process still holds the attempt:
//!   its lease covers the step with room to spare and nobody wrote the record since
//!   ([`Engine::hold`]; a reply that came back after the lease ran out fences the step);
//! - a mint is only called when the record says a mint may be under way (so every credential the
//!   provider hands out is either recorded or noted as a possible orphan) and an attempt stops
//!   minting after [`state::MAX_ORPHANS`] possible orphans;
//! - every provider call has a deadline ([`EngineSettings::step_deadline`]) shorter than the
//!   lease; transient failures are retried with capped, jittered backoff recorded in the record,
//!   budgeted by time, never in a hot loop;
//! - a lost reply is never answered by a blind re-send: a commit whose outcome is unknown is
//!   decided by reading the secret again ([`state::commit_check`]);
//!
//! The steps live in submodules: `record_io` (reading and writing the state record, announcing
//! events), `preflight`, `mint` (mint, discard, commit), `revoke` (revocation and the ack gate),
//! `rollback` and `assisted`; this file holds the engine, its settings and the step loop.
//! - a secret value never reaches a log line, an event or an error text.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::state::{
    self, begin, failed_step, finish, may_act, may_start, next_step, take_over, transient, unpark,
    Attempt, AttemptSummary, Blocked, Outcome, Parked, Phase, RetryPolicy, Start, StateRecord,
    Step,
};
use crate::config::Credential;
use crate::crash;
use crate::events::{EventKind, EventSink};
use crate::notify::deliver::{Deliverer, Wakeup};
use crate::providers::{Mode, Provider, ProviderError};
use crate::records::{InDoubt, RecordError, RecordStore, SecretStore};
use crate::vault::{Vault, VaultError};

mod assisted;
mod mint;
mod preflight;
mod record_io;
mod revoke;
mod rollback;
pub use super::stored::RECORD_VERSIONS;
pub use assisted::{drift_checked, what_to_do, DriftCheck, Supplied};
pub use preflight::{Preflighted, PREFLIGHT_TTL};

/// Tunables of the driver; the defaults suit production.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// How long an instance holds an attempt without writing to it.
    pub lease: Duration,
    /// The longest one provider call may take; a call without an answer by then has an unknown
    /// outcome. Well below the lease, so a step never outlives it.
    pub step_deadline: Duration,
    pub retry: RetryPolicy,
    /// How long to wait for a revoked credential to be rejected before trying again later.
    pub revocation_timeout: Duration,
    pub poll_interval: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            lease: Duration::from_secs(300),
            step_deadline: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            revocation_timeout: Duration::from_secs(120),
            poll_interval: Duration::from_millis(250),
        }
    }
}

/// What [`Engine::drive`] waits for in-process instead of returning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Return at the first wait (the daemon schedules the rest).
    No,
    /// Sleep through transient-failure backoffs, return at the grace period (`rotate`).
    Retries,
    /// Sleep through everything until the attempt ends (`rotate --wait`).
    All,
}

/// Why [`Engine::drive`] may begin an attempt when none is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin<'a> {
    /// An operator asked: whatever the secret's age.
    Manual,
    /// The policy found it due (`trigger`: "max_age", "missing", ...) from the secret's
    /// version `seen` (`None`: no readable secret). Begun only while that is still the
    /// version: another instance may have rotated it in between.
    Due { trigger: &'a str, seen: Option<u64> },
}

/// Where a call to [`Engine::drive`] left the credential.
#[derive(Debug, Clone)]
pub enum RunResult {
    /// Nothing in flight and nothing asked.
    Idle,
    /// The attempt ended (see its outcome).
    Finished(Box<AttemptSummary>),
    /// Committed; the old credential is revoked after this time.
    Waiting { until: DateTime<Utc> },
    /// A step failed transiently; it is tried again after this time.
    RetryAt { until: DateTime<Utc>, error: String },
    /// The last attempt failed; no new one starts on its own before this time.
    BackingOff { until: DateTime<Utc> },
    /// The failure budget is spent: nothing starts on its own until `rotate NAME`.
    Parked(Parked),
    /// Another instance holds the attempt's lease.
    Busy { owner: String, until: DateTime<Utc> },
    /// Retries exhausted: an operator must look (`rotate NAME` resumes).
    NeedsAttention { phase: Phase, error: String },
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("credential {credential}: the state record was written by another instance; this instance stops (fenced)")]
    Fenced { credential: String },
    #[error("{record} {path} is unusable: {reason}")]
    Corrupt {
        record: &'static str,
        path: String,
        reason: String,
    },
    #[error("credential {credential}: {reason}")]
    Refused { credential: String, reason: String },
}

impl From<RecordError> for EngineError {
    fn from(e: RecordError) -> EngineError {
        match e {
            RecordError::Vault(e) => EngineError::Vault(e),
            RecordError::Corrupt { name, path, reason } => EngineError::Corrupt {
                record: name,
                path,
                reason,
            },
            RecordError::Conflict { credential, .. } => EngineError::Fenced { credential },
            RecordError::Refused {
                credential,
                path,
                reason,
                ..
            } => EngineError::Refused {
                credential,
                reason: format!("{path}: {reason}"),
            },
        }
    }
}

/// Drives rotations. It reaches Vault only through its [`SecretStore`] (the credentials'
/// secrets, preflight's facts) and its [`RecordStore`] (the state and deliveries records), and
/// the providers through [`Provider`]: a test hands it in-memory ones.
pub struct Engine {
    secrets: Arc<dyn SecretStore>,
    records: RecordStore,
    pub events: Arc<dyn EventSink>,
    /// This instance's identity in leases (stable across restarts of the same instance).
    pub owner: String,
    pub settings: EngineSettings,
    /// Tells the delivery worker of a credential that its record holds new events.
    pub wakeup: Wakeup,
    /// Delivers the events of a write ahead of it (`notify::deliver::ahead`); none: the
    /// delivery worker delivers them once written.
    deliverer: Option<Arc<Deliverer>>,
    /// Mounts and capabilities preflight found good lately.
    preflighted: Preflighted,
    /// The wall clock every time in the records comes from.
    clock: Clock,
    /// Random numbers in [0, 1) for the backoffs' jitter.
    jitter: Jitter,
}

/// The wall clock the engine reads (UTC): the system's, or a simulation's.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// A source of random numbers in [0, 1), for the jitter of backoffs.
pub type Jitter = Arc<dyn Fn() -> f64 + Send + Sync>;

/// The record as read, with the version to CAS against.
struct Loaded {
    record: StateRecord,
    version: u64,
    /// Events were appended since the last write.
    new_events: bool,
    /// The number of the last event stored in the record's log (read or written).
    stored_seq: u64,
    /// This call began the attempt: preflight has just found the mounts KV v2 and the secret at
    /// the attempt's `version_before`.
    began_here: bool,
    /// When this call last wrote the record (its check-and-set proved nobody else had).
    saved_at: Option<tokio::time::Instant>,
    /// A write that failed: it may have landed or not, and `record` holds changes that may not
    /// be stored. Nothing is written again before [`Engine::settle`] has read the record back.
    in_doubt: Option<InDoubt>,
}

impl Loaded {
    fn new(record: StateRecord, version: u64) -> Loaded {
        Loaded {
            stored_seq: record.events.last_seq,
            record,
            version,
            new_events: false,
            began_here: false,
            saved_at: None,
            in_doubt: None,
        }
    }
}

/// An event to announce: its kind, the version it is about, a reason, and what some types add.
struct Announce<'a> {
    kind: EventKind,
    version: Option<u64>,
    detail: &'a str,
    extra: Extra,
}

/// What an event carries besides its kind, version and reason.
#[derive(Debug, Clone, Copy, Default)]
struct Extra {
    previous_version: Option<u64>,
    revoke_after: Option<DateTime<Utc>>,
    /// A reminder (`rotation.due` sent again): its number, part of the event id.
    reminder: u32,
}

/// A check-and-set write of the record this recent stands for the read [`Engine::hold`] makes
/// before an irreversible step: the lease it covers keeps other instances out, and a read would
/// only narrow the window for an operator's write by as little. Within one call with no wait
/// (grace 0), the commit's write is this recent when the old credential is revoked.
const HOLD_PROVEN: Duration = Duration::from_secs(1);

/// A step's result: go on with the attempt, or stop with this result.
type Next = Result<Attempt, RunResult>;

/// The wait a provider asked for with a transient error (rate limits).
fn asked_wait(e: &ProviderError) -> Option<Duration> {
    match e {
        ProviderError::Transient { retry_after, .. } => *retry_after,
        _ => None,
    }
}

impl Engine {
    /// An engine over these stores, with the default settings and a wakeup of its own.
    pub fn new(
        secrets: Arc<dyn SecretStore>,
        records: RecordStore,
        events: Arc<dyn EventSink>,
        owner: &str,
    ) -> Engine {
        Engine {
            secrets,
            records,
            events,
            owner: owner.to_string(),
            settings: EngineSettings::default(),
            wakeup: Wakeup::default(),
            deliverer: None,
            preflighted: Preflighted::default(),
            clock: Arc::new(Utc::now),
            jitter: Arc::new(rand::random::<f64>),
        }
    }

    /// An engine over a Vault connection, its records on `state_mount` under `state_prefix`.
    pub fn over_vault(
        vault: Arc<Vault>,
        state_mount: &str,
        state_prefix: &str,
        events: Arc<dyn EventSink>,
        owner: &str,
    ) -> Engine {
        let records = RecordStore::new(vault.clone(), state_mount, state_prefix);
        Engine::new(vault, records, events, owner)
    }

    /// Read time from `clock` instead of the system's clock (a simulation's: every time the
    /// engine writes or compares comes from it; its waits and deadlines stay tokio's).
    pub fn with_clock(mut self, clock: Clock) -> Engine {
        self.clock = clock;
        self
    }

    /// Take the backoffs' jitter from `jitter` (a seeded simulation's).
    pub fn with_jitter(mut self, jitter: Jitter) -> Engine {
        self.jitter = jitter;
        self
    }

    /// Now, by the engine's clock.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// A random number in [0, 1) for a backoff's jitter.
    pub(crate) fn unit(&self) -> f64 {
        (self.jitter)()
    }

    pub fn with_settings(mut self, settings: EngineSettings) -> Engine {
        self.settings = settings;
        self
    }

    /// Share the wakeup of the delivery workers (the daemon's and the CLI's).
    pub fn with_wakeup(mut self, wakeup: Wakeup) -> Engine {
        self.wakeup = wakeup;
        self
    }

    /// Deliver the events of each write to the dependents ahead of it, with `deliverer` (the
    /// same process's, over the same records): what they accepted is recorded in that write.
    pub fn with_deliverer(mut self, deliverer: Arc<Deliverer>) -> Engine {
        self.deliverer = Some(deliverer);
        self
    }

    /// The same engine over other stores (a reload with new Vault settings): the preflight's
    /// findings are forgotten.
    pub fn rebuilt(&self, secrets: Arc<dyn SecretStore>, records: RecordStore) -> Engine {
        Engine {
            secrets,
            records,
            events: self.events.clone(),
            owner: self.owner.clone(),
            settings: self.settings.clone(),
            wakeup: self.wakeup.clone(),
            deliverer: None,
            preflighted: Preflighted::default(),
            clock: self.clock.clone(),
            jitter: self.jitter.clone(),
        }
    }

    /// The records this engine keeps.
    pub fn records(&self) -> &RecordStore {
        &self.records
    }

    /// Drive the credential's rotation as far as it can go now. `start`: begin an attempt when
    /// none is in flight ([`Begin::Manual`] also resumes one that needs attention and unparks
    /// the credential). `wait`: what to sleep through instead of returning.
    pub async fn drive(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
        start: Option<Begin<'_>>,
        wait: Wait,
    ) -> Result<RunResult, EngineError> {
        let now = self.now();
        let (record, version) = self.load(&cred.name).await?;
        let mut l = Loaded::new(record, version);
        let lease = self.settings.lease;
        let manual = matches!(start, Some(Begin::Manual));
        if let Some(p) = &l.record.paused {
            return Ok(RunResult::Parked(Parked {
                since: p.since,
                reason: format!(
                    "paused by {}; `secret-rotator resume {}` lets it go on",
                    p.by, cred.name
                ),
            }));
        }
        let a = match l.record.attempt.take() {
            Some(a) => {
                let holder_dead =
                    a.owner != self.owner && crate::instance::holder_is_dead(&a.owner);
                if !may_act(&a, &self.owner, now, holder_dead) {
                    return Ok(RunResult::Busy {
                        owner: a.owner,
                        until: a.lease_expires_at,
                    });
                }
                if a.needs_attention && !manual {
                    return Ok(RunResult::NeedsAttention {
                        phase: a.phase,
                        error: a.last_error.unwrap_or_default(),
                    });
                }
                let mut a = a;
                // Taken over, resumed after an operator looked, or our own lease ran out:
                // renew it (and prove nobody else wrote) before the next step.
                if a.owner != self.owner || a.needs_attention || now >= a.lease_expires_at {
                    a.needs_attention = false;
                    if manual {
                        a.retry = None;
                    }
                    a = take_over(a, &self.owner, now, lease);
                    self.save_attempt(&mut l, &a).await?;
                }
                tracing::info!(credential = %cred.name, attempt = %a.id, phase = a.phase.as_str(), "resuming rotation");
                l.record.attempt = Some(a.clone());
                a
            }
            None => {
                let Some(start) = start else {
                    return Ok(RunResult::Idle);
                };
                match may_start(&l.record, now, manual) {
                    Ok(()) => {}
                    Err(Blocked::Parked(p)) => return Ok(RunResult::Parked(p)),
                    Err(Blocked::BackingOff(until)) => return Ok(RunResult::BackingOff { until }),
                }
                if manual {
                    l.record = unpark(std::mem::replace(
                        &mut l.record,
                        StateRecord::new(&cred.name),
                    ));
                }
                let (version, current) = self.preflight(cred, provider).await?;
                l.began_here = true;
                let trigger = match start {
                    Begin::Manual => "manual",
                    Begin::Due { trigger, seen } => {
                        // Found due at one version, and another instance rotated it since
                        // (its attempt already ended): that rotation was this one.
                        let now_at = current.as_ref().map(|_| version);
                        if now_at != seen {
                            tracing::info!(credential = %cred.name, seen, now = now_at, "the secret changed since it was found due; not rotated");
                            return Ok(RunResult::Idle);
                        }
                        trigger
                    }
                };
                if provider.info().mode == Mode::Assisted {
                    return self
                        .begin_assisted(cred, &mut l, trigger, (version, current))
                        .await;
                }
                let lifetime = provider
                    .info()
                    .credentials_expire
                    .then(|| Self::lifetime(cred));
                let a = begin(Start {
                    id: uuid::Uuid::new_v4().to_string(),
                    owner: &self.owner,
                    trigger,
                    now,
                    lease,
                    version,
                    current,
                    lifetime,
                });
                self.save_attempt(&mut l, &a).await?;
                tracing::info!(credential = %cred.name, attempt = %a.id, trigger, version_before = a.version_before, "rotation started");
                crash::point("minting-recorded");
                // The record now says a mint may be under way: mint without another write.
                return self.steps(cred, provider, a, &mut l, wait, false).await;
            }
        };
        self.steps(cred, provider, a, &mut l, wait, true).await
    }

    /// Run the attempt's steps until it ends or must wait. A Vault error stops the attempt
    /// where it is (recorded as its last error when Vault still takes writes).
    async fn steps(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
        mut a: Attempt,
        l: &mut Loaded,
        wait: Wait,
        mut resumed: bool,
    ) -> Result<RunResult, EngineError> {
        loop {
            let step = next_step(&a, self.now());
            let result = match step {
                Step::RetryAt(t) => {
                    if wait == Wait::No {
                        return Ok(RunResult::RetryAt {
                            until: t,
                            error: a.last_error.clone().unwrap_or_default(),
                        });
                    }
                    tokio::time::sleep((t - self.now()).to_std().unwrap_or_default()).await;
                    continue;
                }
                Step::WaitUntil(t) => {
                    if wait != Wait::All {
                        return Ok(RunResult::Waiting { until: t });
                    }
                    let left = (t - self.now()).to_std().unwrap_or_default();
                    tracing::info!(credential = %cred.name, grace_left = %crate::human::duration(left), "waiting out the grace period before revoking the old credential");
                    tokio::time::sleep(left).await;
                    continue;
                }
                Step::Mint => self.mint(cred, provider, a.clone(), l, resumed).await,
                Step::VerifyAndCommit => self.verify_and_commit(cred, provider, a.clone(), l).await,
                Step::RevokeOld => self.revoke_old(cred, provider, a.clone(), l).await,
                Step::RollBack => self.roll_back(cred, provider, a.clone(), l).await,
                // Only a person moves this on (`supply`); the daemon comes back for reminders.
                Step::AwaitSupply(t) => return Ok(RunResult::Waiting { until: t }),
                Step::Remind => self.remind(cred, a.clone(), l).await,
                Step::SupplyOverdue => {
                    let deadline = a.deadline.unwrap_or_else(|| self.now());
                    self.attention(
                        cred,
                        a.clone(),
                        l,
                        format!(
                            "nothing was supplied by the deadline ({}); `secret-rotator supply {}` still takes the new credential",
                            crate::human::time(deadline),
                            cred.name
                        ),
                    )
                    .await
                }
                Step::CheckOld => self.check_old(cred, provider, a.clone(), l).await,
            };
            resumed = false;
            match result {
                Ok(Ok(next)) => a = next,
                Ok(Err(RunResult::Waiting { until })) if wait == Wait::All => {
                    // Held for acks: the deliveries go on meanwhile, and wake us when recorded.
                    let acks = self.wakeup.acks(&cred.name);
                    tokio::select! {
                        _ = tokio::time::sleep((until - self.now()).to_std().unwrap_or_default()) => {}
                        _ = acks.notified() => {}
                    }
                    a = l.record.attempt.clone().unwrap_or(a);
                }
                Ok(Err(done)) => return Ok(done),
                Err(e @ EngineError::Vault(_)) => {
                    self.note_error(l, &a, &e).await;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Record a Vault error as the last error of the attempt as stored, when Vault still takes
    /// the write (a 403 on the secret's path, say). The error is added to the latest record:
    /// after a write whose outcome is unknown the record is read back first ([`Engine::settle`]),
    /// and the copy of the attempt the failed step started from is never written back (it could
    /// undo what the step recorded, a mint under way or a possible orphan). Best effort: the
    /// error is returned either way.
    async fn note_error(&self, l: &mut Loaded, a: &Attempt, e: &EngineError) {
        if let Err(err) = self.settle(l).await {
            tracing::debug!(error = %err, "cannot read the state record back to record the error");
            return;
        }
        let Some(stored) = l.record.attempt.clone().filter(|s| s.id == a.id) else {
            return;
        };
        let stored = failed_step(
            stored,
            &e.to_string(),
            false,
            &self.owner,
            self.now(),
            self.settings.lease,
        );
        if let Err(err) = self.save_attempt(l, &stored).await {
            tracing::debug!(error = %err, "cannot record the error in the state record");
        }
    }

    /// After a write that failed, read the record back and go on from what is stored: the
    /// version this driver wrote last (the write did not land), or the very record it sent at
    /// the next version (it landed, its reply was lost). Anything else was written by someone
    /// else: `Err(Fenced)`.
    async fn settle(&self, l: &mut Loaded) -> Result<(), EngineError> {
        let Some(doubt) = l.in_doubt.clone() else {
            return Ok(());
        };
        let settled = self
            .records
            .settle::<StateRecord>(&l.record.credential, &doubt)
            .await?;
        l.record = settled.record;
        l.in_doubt = None;
        if settled.landed {
            self.wrote(l, settled.version);
        } else {
            // What the failed write would have added (events) was not stored.
            l.new_events = false;
            l.stored_seq = l.record.events.last_seq;
        }
        Ok(())
    }

    /// A provider call with the step deadline: no answer in time is an unknown outcome.
    async fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        match tokio::time::timeout(self.settings.step_deadline, fut).await {
            Ok(r) => r,
            Err(_) => Err(ProviderError::UnknownOutcome {
                reason: format!(
                    "{what}: no answer within {}",
                    crate::human::duration(self.settings.step_deadline)
                ),
            }),
        }
    }

    /// Does this process still hold the attempt? Before an irreversible step (the commit, a
    /// revocation, a discard): the lease must cover the step with room to spare (else it is
    /// renewed, a CAS write), and nobody may have written the record since this process did (a
    /// read, unless this call's own check-and-set write proved that less than [`HOLD_PROVEN`]
    /// ago). `Err(Fenced)` otherwise.
    async fn hold(&self, l: &mut Loaded, a: Attempt) -> Result<Attempt, EngineError> {
        let now = self.now();
        let step = self.settings.step_deadline + self.settings.revocation_timeout;
        if !state::lease_covers(&a, now, step) {
            let a = take_over(a, &self.owner, now, self.settings.lease + step);
            self.save_attempt(l, &a).await?;
            return Ok(a);
        }
        if l.saved_at.is_some_and(|t| t.elapsed() < HOLD_PROVEN) {
            return Ok(a);
        }
        let version = self
            .records
            .version::<StateRecord>(&l.record.credential)
            .await?;
        if version != l.version {
            return Err(EngineError::Fenced {
                credential: l.record.credential.clone(),
            });
        }
        Ok(a)
    }

    /// A step failed transiently: record when to try again (or, with the budget spent, that
    /// an operator must look).
    async fn retry_later(
        &self,
        cred: &Credential,
        a: Attempt,
        l: &mut Loaded,
        error: String,
        asked: Option<Duration>,
    ) -> Result<Next, EngineError> {
        let a = transient(
            a,
            &error,
            asked,
            &self.settings.retry,
            self.unit(),
            &self.owner,
            self.now(),
            self.settings.lease,
        );
        if a.needs_attention {
            return self.needs_attention(cred, a, l).await.map(Err);
        }
        self.save_attempt(l, &a).await?;
        let until = a.retry.as_ref().map(|r| r.at).unwrap_or_else(|| self.now());
        tracing::warn!(credential = %cred.name, attempt = %a.id, phase = a.phase.as_str(), error = %error, retry_at = %until.to_rfc3339(), "rotation step failed; trying again later");
        crash::point("retry-recorded");
        Ok(Ok(a))
    }

    /// Give up on an attempt for now: record the error and stop retrying until an operator acts.
    async fn needs_attention(
        &self,
        cred: &Credential,
        a: Attempt,
        l: &mut Loaded,
    ) -> Result<RunResult, EngineError> {
        let error = a.last_error.clone().unwrap_or_default();
        let a = failed_step(
            a,
            &error,
            true,
            &self.owner,
            self.now(),
            self.settings.lease,
        );
        tracing::error!(credential = %cred.name, attempt = %a.id, phase = a.phase.as_str(), error = %error, "rotation needs attention; `secret-rotator rotate {}` resumes it", cred.name);
        self.emit(
            l,
            cred,
            &a.id,
            Announce {
                kind: EventKind::NeedsAttention,
                version: a.version_after,
                detail: &error,
                extra: Extra::default(),
            },
        );
        self.save_attempt(l, &a).await?;
        Ok(RunResult::NeedsAttention {
            phase: a.phase,
            error,
        })
    }

    async fn attention(
        &self,
        cred: &Credential,
        a: Attempt,
        l: &mut Loaded,
        error: String,
    ) -> Result<Next, EngineError> {
        let mut a = a;
        a.last_error = Some(error);
        self.needs_attention(cred, a, l).await.map(Err)
    }

    /// End the attempt in the record; a failed one counts against the failure budget and may
    /// park the credential.
    async fn end(
        &self,
        cred: &Credential,
        a: Attempt,
        l: &mut Loaded,
        outcome: Outcome,
        error: Option<String>,
    ) -> Result<RunResult, EngineError> {
        let record = std::mem::replace(&mut l.record, StateRecord::new(&cred.name));
        let was_parked = record.parked.is_some();
        l.record = finish(
            record,
            a,
            outcome,
            error,
            self.now(),
            &self.settings.retry,
            self.unit(),
        );
        let summary = l.record.history.last().cloned().expect("just finished");
        // Announced before the record says so, like every event: a crash in between announces
        // it again with the same id, never not at all.
        if let (false, Some(p)) = (was_parked, &l.record.parked) {
            tracing::error!(credential = %cred.name, reason = %p.reason, "credential parked: it is not rotated on its own until an operator runs `secret-rotator rotate {}`", cred.name);
            let reason = format!("parked: {}", p.reason);
            self.emit(
                l,
                cred,
                &summary.id,
                Announce {
                    kind: EventKind::NeedsAttention,
                    version: Some(summary.version_before),
                    detail: &reason,
                    extra: Extra::default(),
                },
            );
        }
        self.deliver_ahead(cred, l, "ahead-of-end").await;
        self.save(l).await?;
        if l.record.parked.is_some() && !was_parked {
            crash::point("parked-recorded");
        }
        Ok(RunResult::Finished(Box::new(summary)))
    }

    /// End an attempt that changed nothing at the secret's path (failed, rolled back, aborted).
    async fn end_unchanged(
        &self,
        cred: &Credential,
        a: Attempt,
        l: &mut Loaded,
        outcome: Outcome,
        error: String,
    ) -> Result<Next, EngineError> {
        tracing::warn!(credential = %cred.name, attempt = %a.id, outcome = outcome.as_str(), error = %error, "rotation did not complete; the current credential stays");
        self.emit(
            l,
            cred,
            &a.id,
            Announce {
                kind: EventKind::Failed,
                version: Some(a.version_before),
                detail: &format!("{}: {error}", outcome.as_str()),
                extra: Extra::default(),
            },
        );
        self.end(cred, a, l, outcome, Some(error)).await.map(Err)
    }
}

#[cfg(test)]
mod tests;
