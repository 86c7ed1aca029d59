//! The rotation driver: carries out the steps the state machine names, against Vault and the
//! provider, writing the state record with check-and-set before each external step.
//!
//! Invariants:
//! - the state record is only ever written with CAS on the version this driver last read or
//!   wrote (a failed CAS means another instance took over: stop, do nothing more);
//! - nothing is revoked or discarded unless this process still holds the attempt: its lease
//!   covers the step with room to spare and nobody wrote the record since ([`Engine::hold`]);
//! - a mint is only called when the record says a mint may be under way (so every credential the
//!   provider hands out is either recorded or noted as a possible orphan) and an attempt stops
//!   minting after [`state::MAX_ORPHANS`] possible orphans;
//! - every provider call has a deadline ([`EngineSettings::step_deadline`]) shorter than the
//!   lease; transient failures are retried with capped, jittered backoff recorded in the record,
//!   budgeted by time, never in a hot loop;
//! - a lost reply is never answered by a blind re-send: a commit whose outcome is unknown is
//!   decided by reading the secret again ([`commit_check`]);
//! - a secret value never reaches a log line, an event or an error text.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::state::{
    self, begin, commit_check, committed, failed_step, finish, may_act, may_start, minted,
    next_step, note_orphan, orphans_spent, rolling_back, take_over, transient, unpark, Attempt,
    AttemptSummary, Blocked, CommitCheck, Outcome, Parked, Phase, RetryPolicy, Start, StateRecord,
    Step,
};
use crate::config::{Credential, KvPath};
use crate::crash;
use crate::events::{Event, EventKind, EventSink};
use crate::notify::deliver::Wakeup;
use crate::notify::outbox::{self, Deliveries, Gate, Logged};
use crate::notify::payload::PayloadType;
use crate::providers::{MintRequest, Mode, Provider, ProviderError};
use crate::records::{InDoubt, RecordError, RecordStore, SecretStore};
use crate::secret::SecretFields;
use crate::vault::{MountKind, Vault, VaultError};

mod assisted;
pub use super::stored::RECORD_VERSIONS;
pub use assisted::{drift_checked, drift_due, what_to_do, DriftCheck, Supplied};

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
    /// Mounts and capabilities preflight found good lately.
    preflighted: Preflighted,
}

/// How long preflight believes a mount it found KV v2, or capabilities it found sufficient.
pub const PREFLIGHT_TTL: Duration = Duration::from_secs(300);

/// What preflight found good lately (a mount is KV v2, the token may use a path), so that a
/// busy daemon does not ask Vault the same three questions before every rotation. Only good
/// news is kept, for [`PREFLIGHT_TTL`]: a mount or policy that changed for the worse is found
/// by the next check after that, or by the write it makes fail (a 403, a failed
/// check-and-set), which stops the attempt with the error recorded.
#[derive(Debug, Default)]
pub struct Preflighted {
    found: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl Preflighted {
    fn fresh(&self, key: &str) -> bool {
        let found = self.found.lock().expect("preflight cache lock poisoned");
        found
            .get(key)
            .is_some_and(|at| at.elapsed() < PREFLIGHT_TTL)
    }

    fn note(&self, key: String) {
        let mut found = self.found.lock().expect("preflight cache lock poisoned");
        found.insert(key, std::time::Instant::now());
    }
}

/// The record as read, with the version to CAS against.
struct Loaded {
    record: StateRecord,
    version: u64,
    /// Events were appended since the last write.
    new_events: bool,
    /// This call began the attempt: preflight has just found the mounts KV v2 and the secret at
    /// the attempt's `version_before`.
    began_here: bool,
    /// When this call last wrote the record (its check-and-set proved nobody else had).
    saved_at: Option<std::time::Instant>,
    /// A write that failed: it may have landed or not, and `record` holds changes that may not
    /// be stored. Nothing is written again before [`Engine::settle`] has read the record back.
    in_doubt: Option<InDoubt>,
}

impl Loaded {
    fn new(record: StateRecord, version: u64) -> Loaded {
        Loaded {
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

/// How often a revocation held for acks looks at the deliveries record again.
const ACK_RECHECK: Duration = Duration::from_secs(5);

/// A step's result: go on with the attempt, or stop with this result.
type Next = Result<Attempt, RunResult>;

/// The wait a provider asked for with a transient error (rate limits).
fn asked_wait(e: &ProviderError) -> Option<Duration> {
    match e {
        ProviderError::Transient { retry_after, .. } => *retry_after,
        _ => None,
    }
}

fn unit() -> f64 {
    rand::random::<f64>()
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
            preflighted: Preflighted::default(),
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

    pub fn with_settings(mut self, settings: EngineSettings) -> Engine {
        self.settings = settings;
        self
    }

    /// Share the wakeup of the delivery workers (the daemon's and the CLI's).
    pub fn with_wakeup(mut self, wakeup: Wakeup) -> Engine {
        self.wakeup = wakeup;
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
            preflighted: Preflighted::default(),
        }
    }

    /// The records this engine keeps.
    pub fn records(&self) -> &RecordStore {
        &self.records
    }

    pub fn state_path(&self, credential: &str) -> KvPath {
        self.records.path::<StateRecord>(credential)
    }

    /// Read a credential's state record for the engine (a fresh one when there is none), with
    /// the version to check-and-set against: a record never written, or whose latest version
    /// was deleted, is at the version its metadata says.
    pub async fn load(&self, credential: &str) -> Result<(StateRecord, u64), EngineError> {
        Ok(self.records.load(credential).await?)
    }

    /// Read a credential's state record to show it (`status`, `history`, `plan`): no version,
    /// so no metadata read when there is no record.
    pub async fn record(&self, credential: &str) -> Result<StateRecord, EngineError> {
        Ok(self
            .records
            .read(credential)
            .await?
            .map_or_else(|| StateRecord::new(credential), |(r, _)| r))
    }

    async fn save(&self, l: &mut Loaded) -> Result<(), EngineError> {
        let credential = l.record.credential.clone();
        if l.in_doubt.is_some() {
            // Every write goes from the record as stored: never from a copy a failed write
            // left behind (it could restore what another write already replaced).
            return Err(EngineError::Refused {
                reason: format!("{}: the last write of the state record may not have landed; it is read again before any other write", self.state_path(&credential)),
                credential,
            });
        }
        let record = std::mem::replace(&mut l.record, StateRecord::new(&credential));
        let sent = record.clone();
        match self.records.write(&credential, record, l.version).await {
            Ok((record, v)) => {
                l.record = record;
                self.wrote(l, v);
                Ok(())
            }
            Err(w) => {
                l.record = sent;
                l.in_doubt = w.in_doubt;
                Err(w.error.into())
            }
        }
    }

    /// The record is stored at version `v` (written now, or found written by [`Engine::settle`]).
    fn wrote(&self, l: &mut Loaded, v: u64) {
        l.version = v;
        l.saved_at = Some(std::time::Instant::now());
        if std::mem::take(&mut l.new_events) {
            self.wakeup.wake(&l.record.credential);
        }
    }

    async fn save_attempt(&self, l: &mut Loaded, a: &Attempt) -> Result<(), EngineError> {
        l.record.attempt = Some(a.clone());
        self.save(l).await
    }

    /// Announce an event: to the event sinks now, and to the dependents through the record's
    /// event log, written with the record's next save (which every caller makes).
    fn emit(&self, l: &mut Loaded, cred: &Credential, attempt: &str, announce: Announce<'_>) {
        let Announce {
            kind,
            version,
            detail,
            extra,
        } = announce;
        let mut event = Event::new(kind, &cred.name, attempt, Utc::now(), version, detail);
        if extra.reminder > 0 {
            event.id = format!("{}:{}", event.id, extra.reminder + 1);
        }
        self.events.emit(&event);
        if cred.dependents.is_empty() {
            return;
        }
        let mut logged = Logged::new(
            event.id.clone(),
            PayloadType::from(kind),
            event.at,
            version,
            Some(attempt),
            detail,
        );
        logged.previous_version = extra.previous_version;
        logged.revoke_after = extra.revoke_after;
        if l.record.events.append(logged, outbox::LOG_LIMIT) {
            l.new_events = true;
        }
    }

    /// How long a minted credential lives, for providers whose credentials expire: longer than
    /// the rotation period plus the expiry lead plus grace, so the expiry never makes it due
    /// before its age does and a late rotation still finds it alive; and bounded, so one that
    /// nobody holds dies on its own.
    pub fn lifetime(cred: &Credential) -> Duration {
        // A secret-id's lifetime is set on the provider itself.
        if let crate::config::ProviderConfig::VaultAppRoleSecretId(c) = &cred.provider {
            if let Some(ttl) = c.secret_id_ttl {
                return ttl;
            }
        }
        cred.policy.credential_lifetime.unwrap_or_else(|| {
            let period = cred
                .policy
                .max_age
                .unwrap_or(Duration::from_secs(30 * 86_400));
            (period * 2).max(period + cred.policy.expiry_lead) + cred.policy.grace
        })
    }

    /// The secret's version as check-and-set sees it, and its data when it can be read.
    async fn read_current(&self, kv: &KvPath) -> Result<(u64, Option<SecretFields>), EngineError> {
        let (current, version) = self.secrets.read_for_cas(kv).await?;
        let current = match current {
            None => None,
            Some(value) => {
                Some(
                    SecretFields::from_json(&value).ok_or_else(|| VaultError::Other {
                        path: kv.to_string(),
                        status: None,
                        message: "secret data is not a JSON object".into(),
                    })?,
                )
            }
        };
        Ok((version, current))
    }

    /// Before anything is minted: the secret's mount and the state mount are KV v2, the token
    /// may read and write both paths, and the current secret holds what the provider needs.
    /// `Err(Refused)` names the path and what is missing. Returns the secret as
    /// [`Engine::read_current`] does.
    ///
    /// The same checks in parts ([`Engine::mount_of`], [`Engine::check_mount`],
    /// [`Engine::preflight_capability_paths`], [`Engine::check_capabilities`],
    /// [`Engine::preflight_secret`]) let the daemon's start-up check of many credentials ask
    /// Vault once per mount and once per batch of paths.
    pub async fn preflight(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
    ) -> Result<(u64, Option<SecretFields>), EngineError> {
        let state = self.state_path(&cred.name);
        for kv in [&cred.secret, &state] {
            let key = format!("mount:{}", kv.mount);
            if self.preflighted.fresh(&key) {
                continue;
            }
            let kind = self.mount_of(&kv.mount).await?;
            Self::check_mount(cred, kv, kind.as_ref())?;
            self.preflighted.note(key);
        }
        let paths: Vec<String> = self
            .preflight_capability_paths(cred)
            .into_iter()
            .map(|(_, path, _)| path)
            .collect();
        let key = format!("capabilities:{}", paths.join(" "));
        if !self.preflighted.fresh(&key) {
            let caps = self.secrets.capabilities_self(&paths).await?;
            self.check_capabilities(cred, &caps)?;
            self.preflighted.note(key);
        }
        self.preflight_secret(cred, provider).await
    }

    /// The engine behind `mount`; `None` when nothing (usable by the token) is mounted there.
    pub async fn mount_of(&self, mount: &str) -> Result<Option<MountKind>, EngineError> {
        match self.secrets.mount_kind(mount).await {
            Ok(k) => Ok(Some(k)),
            Err(VaultError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// `kv` (the credential's secret or its state record) is on a KV v2 mount, given what
    /// [`Engine::mount_of`] said of its mount.
    pub fn check_mount(
        cred: &Credential,
        kv: &KvPath,
        kind: Option<&MountKind>,
    ) -> Result<(), EngineError> {
        let refuse = |reason: String| EngineError::Refused {
            credential: cred.name.clone(),
            reason,
        };
        let Some(kind) = kind else {
            return Err(refuse(format!(
                "{kv}: no secrets engine is mounted at {}/ (or the daemon's token may not use it); secret-rotator needs a KV v2 mount there; nothing was minted",
                kv.mount
            )));
        };
        if !kind.is_kv2() {
            return Err(refuse(format!(
                "{kv}: the mount {}/ is {}; secret-rotator needs KV v2 (versions and check-and-set); nothing was minted",
                kv.mount,
                kind.describe()
            )));
        }
        Ok(())
    }

    /// The API paths whose capabilities the preflight checks, and what each needs.
    pub fn preflight_capability_paths(
        &self,
        cred: &Credential,
    ) -> [(KvPath, String, &'static [&'static str]); 2] {
        let state = self.state_path(&cred.name);
        let api = |kv: &KvPath| format!("{}/data/{}", kv.mount, kv.path);
        [
            (cred.secret.clone(), api(&cred.secret), &["read", "update"]),
            (state.clone(), api(&state), &["read", "create", "update"]),
        ]
    }

    /// The token may read and write the secret and the state record, given its capabilities
    /// (`sys/capabilities-self` on at least the paths of
    /// [`Engine::preflight_capability_paths`]).
    pub fn check_capabilities(
        &self,
        cred: &Credential,
        caps: &std::collections::HashMap<String, Vec<String>>,
    ) -> Result<(), EngineError> {
        for (kv, path, needed) in &self.preflight_capability_paths(cred) {
            let have = caps.get(path).cloned().unwrap_or_default();
            if have.iter().any(|c| c == "root") {
                continue;
            }
            let missing: Vec<&str> = needed
                .iter()
                .copied()
                .filter(|n| !have.iter().any(|c| c == n))
                .collect();
            if !missing.is_empty() {
                return Err(EngineError::Refused {
                    credential: cred.name.clone(),
                    reason: format!(
                        "{kv}: the daemon's Vault token lacks {} on {path} (it has: {}); nothing was minted",
                        missing.join(", "),
                        if have.is_empty() { "none".to_string() } else { have.join(", ") }
                    ),
                });
            }
        }
        Ok(())
    }

    /// The current secret holds what the provider needs (one read). Returns the secret as
    /// [`Engine::read_current`] does.
    pub async fn preflight_secret(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
    ) -> Result<(u64, Option<SecretFields>), EngineError> {
        let (version, current) = self.read_current(&cred.secret).await?;
        if let Some(current) = &current {
            let missing: Vec<&str> = provider
                .required_fields()
                .iter()
                .copied()
                .filter(|f| current.expose(f).is_none_or(str::is_empty))
                .collect();
            if !missing.is_empty() {
                return Err(EngineError::Refused {
                    credential: cred.name.clone(),
                    reason: format!(
                        "{}: the current secret (version {version}) has no {} field (fields: {}); nothing was minted",
                        cred.secret,
                        missing.join(", "),
                        current.keys().collect::<Vec<_>>().join(", ")
                    ),
                });
            }
            let not_strings: Vec<&str> = provider
                .required_fields()
                .iter()
                .copied()
                .filter(|f| !current.is_string(f))
                .collect();
            if !not_strings.is_empty() {
                return Err(EngineError::Refused {
                    credential: cred.name.clone(),
                    reason: format!(
                        "{}: field(s) {} of the current secret (version {version}) are not a string; nothing was minted",
                        cred.secret,
                        not_strings.join(", "),
                    ),
                });
            }
        }
        Ok((version, current))
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
        let now = Utc::now();
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
            let step = next_step(&a, Utc::now());
            let result = match step {
                Step::RetryAt(t) => {
                    if wait == Wait::No {
                        return Ok(RunResult::RetryAt {
                            until: t,
                            error: a.last_error.clone().unwrap_or_default(),
                        });
                    }
                    tokio::time::sleep((t - Utc::now()).to_std().unwrap_or_default()).await;
                    continue;
                }
                Step::WaitUntil(t) => {
                    if wait != Wait::All {
                        return Ok(RunResult::Waiting { until: t });
                    }
                    let left = (t - Utc::now()).to_std().unwrap_or_default();
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
                    let deadline = a.deadline.unwrap_or_else(Utc::now);
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
                        _ = tokio::time::sleep((until - Utc::now()).to_std().unwrap_or_default()) => {}
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
            Utc::now(),
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

    /// Does this process still hold the attempt? Before an irreversible step: the lease must
    /// cover the step with room to spare (else it is renewed, a CAS write), and nobody may have
    /// written the record since this process did (a read, unless this call's own check-and-set
    /// write proved that less than [`HOLD_PROVEN`] ago). `Err(Fenced)` otherwise.
    async fn hold(&self, l: &mut Loaded, a: Attempt) -> Result<Attempt, EngineError> {
        let now = Utc::now();
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
            unit(),
            &self.owner,
            Utc::now(),
            self.settings.lease,
        );
        if a.needs_attention {
            return self.needs_attention(cred, a, l).await.map(Err);
        }
        self.save_attempt(l, &a).await?;
        let until = a.retry.as_ref().map(|r| r.at).unwrap_or_else(Utc::now);
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
            Utc::now(),
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
            Utc::now(),
            &self.settings.retry,
            unit(),
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

    /// One mint. Called only when the record says a mint may be under way (`mint_settled`
    /// false); a resumed attempt whose last mint is not settled first records it as a possible
    /// orphan, so that every mint's outcome, whatever it is, is accounted for. The retry (its
    /// count and the time of the first failure) is kept, so backoff and budget go on growing.
    async fn mint(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
        mut a: Attempt,
        l: &mut Loaded,
        resumed: bool,
    ) -> Result<Next, EngineError> {
        if resumed || a.mint_settled {
            if !a.mint_settled {
                a = note_orphan(
                    a,
                    "resumed in phase minting: a credential may have been minted and lost",
                    Utc::now(),
                );
            }
            if orphans_spent(&a) {
                let n = a.orphans.len();
                return self
                    .attention(cred, a, l, format!("{n} mints of this attempt may have created credentials nobody holds (they expire on their own); it mints no more until an operator looks"))
                    .await;
            }
            a.mint_settled = false;
            a = take_over(a, &self.owner, Utc::now(), self.settings.lease);
            self.save_attempt(l, &a).await?;
        }
        let now = Utc::now();
        let req = MintRequest {
            attempt_id: a.id.clone(),
            now,
            expires_at: a
                .planned_expires_at
                .unwrap_or_else(|| now + Self::lifetime(cred)),
        };
        match self.call("mint", provider.mint(&req)).await {
            Ok(m) => {
                crash::point("minted");
                let a = minted(
                    a,
                    m.secret,
                    m.expires_at,
                    &self.owner,
                    Utc::now(),
                    self.settings.lease,
                );
                // If this write fails the attempt stops here; the next run finds it in
                // minting and notes this credential as a possible orphan before minting again.
                self.save_attempt(l, &a).await?;
                tracing::info!(credential = %cred.name, attempt = %a.id, "new credential minted");
                crash::point("minted-recorded");
                Ok(Ok(a))
            }
            Err(ProviderError::UnknownOutcome { reason }) => {
                let a = note_orphan(a, &format!("mint outcome unknown: {reason}"), Utc::now());
                self.retry_later(cred, a, l, format!("mint: outcome unknown: {reason}"), None)
                    .await
            }
            Err(ProviderError::Transient {
                reason,
                retry_after,
            }) => {
                self.retry_later(cred, a, l, format!("mint: {reason}"), retry_after)
                    .await
            }
            Err(e @ (ProviderError::Rejected { .. } | ProviderError::Config { .. })) => {
                self.end_unchanged(cred, a, l, Outcome::Failed, format!("mint: {e}"))
                    .await
            }
        }
    }

    /// Revoke a credential this attempt minted but will not use, once this process is known to
    /// still hold the attempt; failures are noted, not fatal (it expires on its own).
    async fn discard(
        &self,
        provider: &dyn Provider,
        l: &mut Loaded,
        a: Attempt,
        secret: &SecretFields,
    ) -> Result<(Attempt, String), EngineError> {
        let a = self.hold(l, a).await?;
        let note = match self.call("revoke new", provider.revoke(secret)).await {
            Ok(()) => "the new credential was revoked".into(),
            Err(e) => {
                format!("the new credential could not be revoked ({e}); it expires on its own")
            }
        };
        Ok((a, note))
    }

    /// Make `data` the secret's version after `expected`, once: `Ok(Ok(v))` when it is (written
    /// now, or found written by an earlier try whose reply was lost), `Ok(Err(theirs))` when
    /// someone else wrote the secret since. Never decides blind: after any failed write it reads
    /// the secret again and lets [`commit_check`] say what happened; a write that did not land
    /// returns its error (the step is tried again from the record).
    ///
    /// `read_first` false skips the read before the write, for an attempt begun in this call
    /// (preflight has just read the secret at `expected`, its mount KV v2): the check-and-set
    /// lands exactly when that read would have said "write". A resumed step reads first, so
    /// that nothing is ever written blind to a mount that changed under it.
    async fn write_once(
        &self,
        kv: &KvPath,
        data: &SecretFields,
        expected: u64,
        read_first: bool,
    ) -> Result<Result<u64, u64>, EngineError> {
        self.write_once_created(kv, data, expected, read_first)
            .await
            .map(|r| r.map(|(v, _)| v))
    }

    /// [`Engine::write_once`], with the `created_time` Vault gave the version when this call
    /// wrote it (`None` when found written by an earlier try).
    async fn write_once_created(
        &self,
        kv: &KvPath,
        data: &SecretFields,
        expected: u64,
        read_first: bool,
    ) -> Result<Result<(u64, Option<DateTime<Utc>>), u64>, EngineError> {
        let decide = |version: u64, current: Option<SecretFields>| {
            let ours = current.as_ref().is_some_and(|c| c.same_as(data));
            commit_check(expected, version, ours)
        };
        if read_first {
            let (version, current) = self.read_current(kv).await?;
            match decide(version, current) {
                CommitCheck::AlreadyCommitted(v) => return Ok(Ok((v, None))),
                CommitCheck::Conflict(v) => return Ok(Err(v)),
                CommitCheck::Write => {}
            }
        }
        let error = match self.secrets.write_cas(kv, &data.to_json(), expected).await {
            Ok(written) => return Ok(Ok(written)),
            Err(e) => e,
        };
        let (version, current) = self.read_current(kv).await?;
        match decide(version, current) {
            CommitCheck::AlreadyCommitted(v) => {
                tracing::info!(path = %kv, version = v, error = %error, "the write landed although its reply was an error");
                Ok(Ok((v, None)))
            }
            CommitCheck::Conflict(v) => Ok(Err(v)),
            CommitCheck::Write => Err(error.into()),
        }
    }

    async fn verify_and_commit(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
        a: Attempt,
        l: &mut Loaded,
    ) -> Result<Next, EngineError> {
        let pending = a.pending.clone().expect("validated on load");
        match self.call("verify", provider.verify(&pending)).await {
            Ok(()) => crash::point("verified"),
            Err(e @ ProviderError::Rejected { .. }) => {
                let (a, note) = self.discard(provider, l, a, &pending).await?;
                return self
                    .end_unchanged(
                        cred,
                        a,
                        l,
                        Outcome::RolledBack,
                        format!("verify: {e}; {note}"),
                    )
                    .await;
            }
            Err(e) => {
                let asked = asked_wait(&e);
                return self
                    .retry_later(cred, a, l, format!("verify: {e}"), asked)
                    .await;
            }
        }

        let (version, created) = match self
            .write_once_created(&cred.secret, &pending, a.version_before, !l.began_here)
            .await?
        {
            Ok(written) => written,
            Err(theirs) => return self.conflict(cred, provider, a, l, &pending, theirs).await,
        };
        let mut a = a;
        a.version_created_at = created;
        crash::point("committed");
        if provider.info().mode == Mode::Assisted {
            return self.committed_assisted(cred, provider, a, l, version).await;
        }

        tracing::info!(credential = %cred.name, attempt = %a.id, version, "new credential committed");
        // No old credential (the secret was missing): nothing to overlap with, no grace.
        let grace = if a.old.is_some() {
            cred.policy.grace
        } else {
            Duration::ZERO
        };
        let now = Utc::now();
        let a = committed(a, version, &self.owner, now, grace, self.settings.lease);
        self.emit(
            l,
            cred,
            &a.id,
            Announce {
                kind: EventKind::Rotated,
                version: Some(version),
                detail: "a new version is live",
                extra: Extra {
                    previous_version: (a.version_before > 0).then_some(a.version_before),
                    revoke_after: a.revoke_after,
                    reminder: 0,
                },
            },
        );
        crash::point("rotated-emitted");
        self.save_attempt(l, &a).await?;
        crash::point("notified-recorded");
        Ok(Ok(a))
    }

    async fn conflict(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
        a: Attempt,
        l: &mut Loaded,
        pending: &SecretFields,
        theirs: u64,
    ) -> Result<Next, EngineError> {
        let (a, note) = self.discard(provider, l, a, pending).await?;
        let error = format!(
            "check-and-set conflict: {} was written by someone else since version {} (now version {theirs}); their version is kept; {note}",
            cred.secret, a.version_before
        );
        self.end_unchanged(cred, a, l, Outcome::Aborted, error)
            .await
    }

    /// Revoke a credential and wait until the provider rejects it. `Err` is a reason; with
    /// `retry` true it may pass (try again later), else the provider refused.
    async fn revoke_and_confirm(
        &self,
        provider: &dyn Provider,
        secret: &SecretFields,
    ) -> Result<(), (String, bool)> {
        match self.call("revoke", provider.revoke(secret)).await {
            Ok(()) => {}
            Err(e @ ProviderError::Rejected { .. }) | Err(e @ ProviderError::Config { .. }) => {
                return Err((format!("the provider refused the revocation: {e}"), false))
            }
            Err(e) => return Err((format!("revoke: {e}"), true)),
        }
        crash::point("revoke-sent");
        let deadline = tokio::time::Instant::now() + self.settings.revocation_timeout;
        let mut n = 0;
        loop {
            match self
                .call("check revocation", provider.verify_revoked(secret))
                .await
            {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot check the revocation yet"),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err((
                    format!(
                        "the credential is still accepted {} after it was revoked",
                        crate::human::duration(self.settings.revocation_timeout)
                    ),
                    true,
                ));
            }
            let delay = self.settings.poll_interval * (1 << n.min(4));
            tokio::time::sleep(delay).await;
            n += 1;
        }
    }

    async fn revoke_old(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
        a: Attempt,
        l: &mut Loaded,
    ) -> Result<Next, EngineError> {
        let mut a = a;
        let mut revoked_over = None;
        if a.old.is_some() {
            match self.ack_gate(cred, a, l).await? {
                Ok((next, over)) => {
                    a = next;
                    revoked_over = over;
                }
                Err(wait) => return Ok(Err(wait)),
            }
        }
        if let Some(old) = a.old.clone() {
            a = self.hold(l, a).await?;
            match self.revoke_and_confirm(provider, &old).await {
                Ok(()) => {}
                Err((e, true)) => {
                    return self
                        .retry_later(cred, a, l, format!("revoke the old credential: {e}"), None)
                        .await
                }
                Err((e, false)) => {
                    return self
                        .attention(cred, a, l, format!("revoke the old credential: {e}"))
                        .await
                }
            }
            crash::point("revocation-verified");
            tracing::info!(credential = %cred.name, attempt = %a.id, version = a.version_before, "old credential revoked and rejected by the provider");
            let reason = match &revoked_over {
                None => "the previous version is revoked".to_string(),
                Some(r) => format!("the previous version is revoked; {r}"),
            };
            self.emit(
                l,
                cred,
                &a.id,
                Announce {
                    kind: EventKind::Revoked,
                    version: Some(a.version_before),
                    detail: &reason,
                    extra: Extra::default(),
                },
            );
            crash::point("revoked-emitted");
        }
        if cred.policy.destroy_old_version && a.version_before > 0 {
            if let Err(e) = self
                .secrets
                .destroy_versions(&cred.secret, &[a.version_before])
                .await
            {
                tracing::warn!(credential = %cred.name, error = %e, "cannot destroy the old version");
            }
        }
        let r = self.end(cred, a, l, Outcome::Rotated, None).await?;
        crash::point("finished");
        Ok(Err(r))
    }

    /// Before revoking the old credential: have the dependents with `require_ack` accepted
    /// `credential.rotated`? `Ok` to revoke (with a note naming those revoked over after their
    /// ack timeout), `Err(Waiting)` to look again later; a hold past the ack timeout is recorded
    /// once (`held`) and raises needs_attention, and revocation follows once the acks come.
    async fn ack_gate(
        &self,
        cred: &Credential,
        a: Attempt,
        l: &mut Loaded,
    ) -> Result<Result<(Attempt, Option<String>), RunResult>, EngineError> {
        let rules: Vec<outbox::AckRule> = cred
            .dependents
            .iter()
            .filter(|d| d.ack.required)
            .map(|d| outbox::AckRule {
                dependent: d.name.clone(),
                timeout: d.ack.timeout,
                on_timeout: d.ack.on_timeout,
            })
            .collect();
        if rules.is_empty() {
            return Ok(Ok((a, None)));
        }
        // A corrupt deliveries record stops the attempt here, as it stops the delivery
        // worker: no ack is taken from a record nobody can read, and the old credential stays.
        let deliveries = self
            .records
            .read::<Deliveries>(&cred.name)
            .await?
            .map_or_else(|| Deliveries::new(&cred.name), |(d, _)| d);
        let now = Utc::now();
        let rotated = format!("{}:{}", a.id, EventKind::Rotated.as_str());
        let revoke_after = a.revoke_after.unwrap_or(now);
        let recheck = now + ACK_RECHECK;
        match deliveries.revocation_gate(&l.record.events, &rotated, &rules, revoke_after, now) {
            Gate::Open => Ok(Ok((a, None))),
            Gate::Wait { until } => {
                tracing::info!(credential = %cred.name, attempt = %a.id, until = %until.to_rfc3339(), "the old credential waits for dependents to acknowledge the new one");
                Ok(Err(RunResult::Waiting {
                    until: until.min(recheck),
                }))
            }
            Gate::TimedOut { revoke, hold } if hold.is_empty() => {
                let note = format!(
                    "revoked without the ack of {} (ack_timeout passed)",
                    revoke.join(", ")
                );
                tracing::error!(credential = %cred.name, attempt = %a.id, dependents = %revoke.join(", "), "revoking the old credential although these dependents have not acknowledged the new one (on_ack_timeout = \"revoke\")");
                Ok(Ok((a, Some(note))))
            }
            Gate::TimedOut { hold, .. } => {
                if a.held.is_none() {
                    let reason = format!(
                        "the old credential is held: {} did not acknowledge the new one within ack_timeout (on_ack_timeout = \"hold\"); it is revoked once they do",
                        hold.join(", ")
                    );
                    tracing::error!(credential = %cred.name, attempt = %a.id, "{reason}");
                    let mut a = a;
                    a.held = Some(reason.clone());
                    self.emit(
                        l,
                        cred,
                        &a.id,
                        Announce {
                            kind: EventKind::NeedsAttention,
                            version: a.version_after,
                            detail: &reason,
                            extra: Extra::default(),
                        },
                    );
                    self.save_attempt(l, &a).await?;
                }
                Ok(Err(RunResult::Waiting { until: recheck }))
            }
        }
    }

    /// Where the delivery worker keeps a credential's deliveries record.
    pub fn deliveries_path(&self, credential: &str) -> KvPath {
        self.records.path::<Deliveries>(credential)
    }

    /// Re-promote the previous credential while it is still valid (during the grace period of
    /// the attempt in flight). The intent is recorded first (phase `rolling_back`, CAS on the
    /// record, which fences out the daemon's revocation of the old credential), then the old
    /// credential is written back and the new one revoked; a crash anywhere resumes there.
    pub async fn rollback(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
    ) -> Result<RunResult, EngineError> {
        let refuse = |reason: String| EngineError::Refused {
            credential: cred.name.clone(),
            reason,
        };
        let now = Utc::now();
        let (record, version) = self.load(&cred.name).await?;
        let mut l = Loaded::new(record, version);
        let Some(a) = l.record.attempt.take() else {
            let last = l.record.history.last();
            return Err(refuse(match last {
                Some(h) => format!(
                    "nothing to roll back: the last attempt ended {} ({}); its previous credential is no longer kept",
                    crate::human::time(h.finished_at),
                    h.outcome.as_str()
                ),
                None => "nothing to roll back: no rotation recorded".into(),
            }));
        };
        if a.phase == Phase::RollingBack {
            // A rollback that stopped half-way: finish it.
            let holder_dead = a.owner != self.owner && crate::instance::holder_is_dead(&a.owner);
            if !may_act(&a, &self.owner, now, holder_dead) {
                return Ok(RunResult::Busy {
                    owner: a.owner,
                    until: a.lease_expires_at,
                });
            }
            let a = take_over(a, &self.owner, now, self.settings.lease);
            self.save_attempt(&mut l, &a).await?;
            return self.steps(cred, provider, a, &mut l, Wait::All, true).await;
        }
        let (Phase::Notified, Some(old)) = (a.phase, a.old.clone()) else {
            return Err(refuse(format!(
                "the attempt in flight is in phase {}, not waiting out its grace period; nothing was committed to roll back",
                a.phase.as_str()
            )));
        };
        if a.revoke_after.is_some_and(|t| now >= t) {
            return Err(refuse(
                "the grace period is over: the previous credential is being revoked".into(),
            ));
        }
        if let Err(e) = self.call("verify", provider.verify(&old)).await {
            return Err(refuse(format!(
                "the previous credential is no longer valid: {e}"
            )));
        }
        // The daemon holds the lease during the grace period; the CAS write fences it out (its
        // next write or revocation check sees this version and stops).
        let a = rolling_back(a, &self.owner, Utc::now(), self.settings.lease);
        self.save_attempt(&mut l, &a).await?;
        crash::point("rollback-recorded");
        self.steps(cred, provider, a, &mut l, Wait::All, false)
            .await
    }

    /// The rollback step: write the old credential back over our version (CAS), announce it,
    /// revoke the new one.
    async fn roll_back(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
        a: Attempt,
        l: &mut Loaded,
    ) -> Result<Next, EngineError> {
        let (old, new, after) = (
            a.old.clone().expect("validated on load"),
            a.pending.clone().expect("validated on load"),
            a.version_after.expect("validated on load"),
        );
        let version = match self.write_once(&cred.secret, &old, after, true).await? {
            Ok(v) => v,
            Err(theirs) => return self.rollback_conflict(cred, a, l, after, theirs).await,
        };
        crash::point("rollback-written");
        self.emit(
            l,
            cred,
            &a.id,
            Announce {
                kind: EventKind::RolledBack,
                version: Some(version),
                detail: "rolled back: the previous credential is current again",
                extra: Extra {
                    previous_version: Some(after),
                    revoke_after: None,
                    reminder: 0,
                },
            },
        );
        crash::point("rollback-emitted");
        let a = self.hold(l, a).await?;
        let note = match self.revoke_and_confirm(provider, &new).await {
            Ok(()) => "the newer credential was revoked".to_string(),
            Err((e, true)) => {
                return self
                    .retry_later(
                        cred,
                        a,
                        l,
                        format!("revoke the newer credential: {e}"),
                        None,
                    )
                    .await
            }
            Err((e, false)) => format!("the newer credential could not be revoked: {e}"),
        };
        crash::point("rollback-revoked");
        let mut a = a;
        a.version_after = Some(version);
        self.end(cred, a, l, Outcome::Reverted, Some(note))
            .await
            .map(Err)
    }

    async fn rollback_conflict(
        &self,
        cred: &Credential,
        a: Attempt,
        l: &mut Loaded,
        after: u64,
        theirs: u64,
    ) -> Result<Next, EngineError> {
        self.attention(
            cred,
            a,
            l,
            format!(
                "rollback stopped: {} changed since version {after} (now version {theirs}) by someone else; nothing was revoked",
                cred.secret
            ),
        )
        .await
    }
}

#[cfg(test)]
mod tests;
