//! The delivery worker: takes each credential's events from its state record's log and delivers
//! them to its dependents, recording how far each got in the credential's deliveries record.
//!
//! Invariants:
//! - off the rotation path: the engine only appends to its own record's log (in writes it makes
//!   anyway, with what the dependents accepted of those events ahead of the write: [`ahead`])
//!   and wakes the worker; the worker alone writes the deliveries record, so the two never
//!   contend for one check-and-set version; a dependent's cursor is the further of the two;
//! - per dependent, one event at a time, in log order; dependents are delivered concurrently, each
//!   bounded by its sink's timeout, so a hung dependent never holds up another;
//! - at-least-once: a dependent's cursor is written only after it accepted the event; results
//!   that arrive together are written together (one write for a rotation's `rotated` to every
//!   dependent that answers within [`FLUSH_AFTER`]);
//! - never a hot loop: failed deliveries back off per dependent, errors of the worker itself back
//!   off in memory, and an idle credential's records are read again only every [`RECONCILE`];
//! - the secret reaches only a `file` sink's file; payloads, exec environments and log lines never
//!   hold it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::stream::{FuturesUnordered, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Notify;

use super::delivery::Delivery;
use super::exec_sink::{ExecEvent, ExecSink};
use super::file_sink::FileSink;
use super::outbox::{Deliveries, DeliveryPolicy, Due, EventLog, Logged};
use super::payload::Payload;
use super::webhook::{Outcome, WebhookSink};
use crate::config::{Credential, KvPath, Sink, VaultField};
use crate::crash;
use crate::events::EventKind;
use crate::ledger::{Backoff, StateRecord};
use crate::records::{RecordError, RecordStore};
use crate::vault::{Vault, VaultError};

mod ahead;
pub use ahead::{Ahead, AHEAD_BUDGET};

/// How long results that came in are kept before they are written, while other dependents of
/// the same credential are still being delivered to.
pub const FLUSH_AFTER: Duration = Duration::from_secs(1);
/// An idle credential's records are read again this often (in case another instance appended
/// events); the engine wakes the worker at once for its own.
pub const RECONCILE: Duration = Duration::from_secs(30 * 60);
/// How long an instance keeps the delivery of a credential's events to itself.
pub const DELIVERY_LEASE: Duration = Duration::from_secs(300);
/// Beyond a sink's own timeout, how long one delivery may take before it is counted failed.
const DEADLINE_SLACK: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// A record (the state record or the deliveries record) the record store refused, or a
    /// write of the deliveries record another instance's write kept failing.
    #[error(transparent)]
    Record(RecordError),
}

impl From<RecordError> for DeliverError {
    fn from(e: RecordError) -> DeliverError {
        match e {
            RecordError::Vault(e) => DeliverError::Vault(e),
            e => DeliverError::Record(e),
        }
    }
}

/// Wakes a credential's delivery worker when its record holds new events, and a rotation that
/// waits for acks when deliveries were recorded. A wake before anyone waits is kept (one
/// permit), never lost.
#[derive(Debug, Clone, Default)]
pub struct Wakeup(Arc<Mutex<Notifiers>>);

/// By credential, and whether it is the acks' (else the delivery worker's).
type Notifiers = HashMap<(String, bool), Arc<Notify>>;

impl Wakeup {
    /// New events in the credential's record: its delivery worker looks.
    pub fn wake(&self, credential: &str) {
        self.handle(credential).notify_one();
    }

    pub fn handle(&self, credential: &str) -> Arc<Notify> {
        self.get(credential, false)
    }

    /// Deliveries of the credential were recorded: a rotation waiting for acks looks.
    pub fn delivered(&self, credential: &str) {
        self.acks(credential).notify_one();
    }

    pub fn acks(&self, credential: &str) -> Arc<Notify> {
        self.get(credential, true)
    }

    fn get(&self, credential: &str, acks: bool) -> Arc<Notify> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((credential.to_string(), acks))
            .or_default()
            .clone()
    }
}

/// One dependent, ready to deliver to; a sink that cannot be built fails every delivery with
/// the reason (the dependent then needs attention, and `status` says why).
pub struct Target {
    pub name: String,
    sink: Result<Built, String>,
}

enum Built {
    Webhook { sink: WebhookSink, key: VaultField },
    File(FileSink),
    Exec(ExecSink),
}

impl Target {
    pub fn of(cred: &Credential) -> Vec<Target> {
        cred.dependents
            .iter()
            .map(|d| Target {
                name: d.name.clone(),
                sink: match &d.sink {
                    Sink::Webhook {
                        url,
                        signing_key,
                        timeout,
                        ca_file,
                    } => WebhookSink::new(url, *timeout, ca_file.as_deref())
                        .map(|sink| Built::Webhook {
                            sink,
                            key: signing_key.clone(),
                        })
                        .map_err(|e| e.to_string()),
                    Sink::File { .. } => Ok(Built::File(
                        FileSink::from_config(&d.sink).expect("a file sink"),
                    )),
                    Sink::Exec { command, timeout } => {
                        Ok(Built::Exec(ExecSink::new(command.clone(), *timeout)))
                    }
                },
            })
            .collect()
    }

    /// How long one delivery may take in all.
    fn deadline(&self, cred: &Credential) -> Duration {
        let own = cred
            .dependents
            .iter()
            .find(|d| d.name == self.name)
            .map(|d| match &d.sink {
                Sink::Webhook { timeout, .. } | Sink::Exec { timeout, .. } => *timeout,
                Sink::File { exec_timeout, .. } => *exec_timeout,
            })
            .unwrap_or(Duration::from_secs(30));
        own + DEADLINE_SLACK
    }

    fn is_file(&self) -> bool {
        matches!(self.sink, Ok(Built::File(_)))
    }
}

impl From<Outcome> for Delivery {
    fn from(o: Outcome) -> Delivery {
        match o {
            Outcome::Delivered => Delivery::Delivered,
            Outcome::Failed { retryable, reason } => Delivery::Failed { retryable, reason },
        }
    }
}

/// What an [`Observer`] is told about one dependent of a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed<'a> {
    /// A delivery ended: "delivered" or "failed".
    Delivery(&'a str),
    /// After a round: the events it has yet to get.
    Waiting(usize),
}

/// Told of each delivery and, after each round, of what waits: (credential, dependent, what).
pub type Observer = Arc<dyn Fn(&str, &str, Observed) + Send + Sync>;

/// Delivers the events of credentials to their dependents.
#[derive(Clone)]
pub struct Deliverer {
    /// For the secret a file dependent receives, its metadata and the webhooks' signing keys.
    vault: Arc<Vault>,
    /// The state records (their event logs) and the deliveries records.
    records: RecordStore,
    /// This instance's owner id (as in the engine's leases).
    pub owner: String,
    pub policy: DeliveryPolicy,
    /// Shared with the engine: a rotation waiting for acks is woken when deliveries are
    /// recorded.
    pub wakeup: Wakeup,
    /// Told of every delivery and of what waits after each round.
    pub observer: Option<Observer>,
    /// Shared with the deliveries ahead of the engine's writes in this process.
    ahead: Arc<Ahead>,
}

/// What a round left to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundResult {
    /// Deliveries made (successful or not).
    pub tries: usize,
    /// When the next delivery is due, if one waits.
    pub next: Option<DateTime<Utc>>,
}

impl Deliverer {
    pub fn new(
        vault: Arc<Vault>,
        records: RecordStore,
        owner: &str,
        policy: DeliveryPolicy,
        wakeup: Wakeup,
    ) -> Deliverer {
        Deliverer {
            vault,
            records,
            owner: owner.to_string(),
            policy,
            wakeup,
            observer: None,
            ahead: Arc::default(),
        }
    }

    /// The same deliverer, telling `observer` of every delivery.
    pub fn observed(mut self, observer: Observer) -> Deliverer {
        self.observer = Some(observer);
        self
    }

    pub fn path(&self, credential: &str) -> KvPath {
        self.records.path::<Deliveries>(credential)
    }

    /// The credential's deliveries record and its version (0: none yet).
    pub async fn load(&self, credential: &str) -> Result<(Deliveries, u64), DeliverError> {
        Ok(self.records.load(credential).await?)
    }

    /// Write the deliveries record as the version after `version` (check-and-set; the CLI's
    /// `deliveries --retry`). Returns the new version.
    pub async fn put(&self, d: Deliveries, version: u64) -> Result<u64, DeliverError> {
        let credential = d.credential.clone();
        match self.records.write(&credential, d, version).await {
            Ok((_, v)) => Ok(v),
            Err(w) => Err(w.error.into()),
        }
    }

    /// The credential's state record (a fresh one when there is none), checked as the engine
    /// checks it.
    pub async fn record(&self, credential: &str) -> Result<StateRecord, DeliverError> {
        Ok(self
            .records
            .read(credential)
            .await?
            .map_or_else(|| StateRecord::new(credential), |(r, _)| r))
    }

    /// The event log of the credential's state record (empty when there is none).
    pub async fn log(&self, credential: &str) -> Result<EventLog, DeliverError> {
        Ok(self.record(credential).await?.events)
    }

    /// Queue a `credential.expiring` warning in `d` when one is due (reads the secret's
    /// metadata, only while the credential cannot be rotated).
    async fn warn_expiring(
        &self,
        cred: &Credential,
        record: &StateRecord,
        d: &mut Deliveries,
    ) -> Result<bool, DeliverError> {
        let failing = record.parked.is_some()
            || record.failures > 0
            || record.attempt.as_ref().is_some_and(|a| a.needs_attention);
        if !failing {
            return Ok(false);
        }
        let meta = match self.vault.read_metadata(&cred.secret).await {
            Ok(m) => m,
            Err(VaultError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let Some(current) = meta.current().filter(|v| !v.deleted && !v.destroyed) else {
            return Ok(false);
        };
        let expiry = record
            .history
            .iter()
            .rev()
            .find(|h| h.version_after == Some(meta.current_version))
            .and_then(|h| h.expires_at);
        let warning = super::outbox::expiring(
            &cred.name,
            record,
            meta.current_version,
            current.created_time,
            expiry,
            &cred.policy,
            Utc::now(),
        );
        Ok(match warning {
            Some(w) => {
                let added = d.notice(w);
                if added {
                    tracing::warn!(credential = %cred.name, version = meta.current_version, "credential.expiring: the credential nears its end and cannot be rotated");
                }
                added
            }
            None => false,
        })
    }

    /// Write `mine` (started from `base` at `version`); another instance's write meanwhile is
    /// merged (the further dependent wins) and written again. Returns the new version.
    async fn save(
        &self,
        base: &Deliveries,
        mine: &Deliveries,
        version: u64,
    ) -> Result<(Deliveries, u64), DeliverError> {
        let credential = &mine.credential;
        match self.records.write(credential, mine.clone(), version).await {
            Ok(written) => Ok(written),
            Err(w) if matches!(w.error, RecordError::Conflict { .. }) => {
                let (mut theirs, version) = self.load(credential).await?;
                theirs.merge(base, mine);
                Ok(self
                    .records
                    .write(credential, theirs, version)
                    .await
                    .map_err(|w| w.error)?)
            }
            Err(w) => Err(w.error.into()),
        }
    }

    /// One round for one credential: deliver every due event to its dependents (each dependent
    /// in order, dependents concurrently), and record the results.
    pub async fn round(
        &self,
        cred: &Credential,
        targets: &[Target],
    ) -> Result<RoundResult, DeliverError> {
        let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        // Never at once with deliveries ahead of the engine's write in this process.
        let lock = self.ahead.lock(&cred.name);
        let _round = lock.lock().await;
        let record = self.record(&cred.name).await?;
        let log = record.events.clone();
        let (mut d, mut version) = self.load(&cred.name).await?;
        let now = Utc::now();
        // Another live instance delivers these; a holder proven dead (a `rotate` that exited,
        // a crashed daemon on this machine) is taken over at once.
        let holder_dead = d
            .owner
            .as_deref()
            .is_some_and(crate::instance::holder_is_dead);
        if d.held_by_other(&self.owner, now) && !holder_dead {
            return Ok(RoundResult {
                tries: 0,
                next: d.lease_expires_at,
            });
        }
        d.retain(&names);
        d.fold(&log);
        let mut base = d.clone();
        let late = self.take_late(&mut d, &cred.name, &log);
        let warned = self.warn_expiring(cred, &record, &mut d).await? || late;
        let mut pending = FuturesUnordered::new();
        for due in d.due(&names, &log, now) {
            pending.push(self.deliver_due(cred, targets, due));
        }
        let mut tries = 0;
        let mut dirty_since = warned.then(tokio::time::Instant::now);
        loop {
            // Results are written together: when nothing is under way any more, or once the
            // oldest unwritten one has waited FLUSH_AFTER for the slower dependents.
            let flush =
                dirty_since.is_some_and(|t| pending.is_empty() || t.elapsed() >= FLUSH_AFTER);
            if flush {
                crash::point("delivered");
                d.claim(&self.owner, Utc::now(), DELIVERY_LEASE);
                let (written, v) = self.save(&base, &d, version).await?;
                d = written;
                base = d.clone();
                version = v;
                dirty_since = None;
                self.wakeup.delivered(&cred.name);
                crash::point("delivery-recorded");
            }
            if pending.is_empty() {
                break;
            }
            let flush_at = dirty_since.map(|t| t + FLUSH_AFTER);
            let result = tokio::select! {
                r = pending.next() => r,
                _ = sleep_until(flush_at), if flush_at.is_some() => None,
            };
            if let Some((due, outcome)) = result {
                tries += 1;
                self.apply(&mut d, cred, &due, outcome);
                dirty_since.get_or_insert_with(tokio::time::Instant::now);
                // The dependent's next event, at once if it accepted this one.
                if let Some(next) = d
                    .due(&[due.dependent.as_str()], &log, Utc::now())
                    .into_iter()
                    .next()
                {
                    pending.push(self.deliver_due(cred, targets, next));
                }
            }
        }
        if let Some(observe) = &self.observer {
            for name in &names {
                observe(
                    &cred.name,
                    name,
                    Observed::Waiting(d.waiting(name, &log).len()),
                );
            }
        }
        Ok(RoundResult {
            tries,
            next: d.next_due(&names, &log),
        })
    }

    fn apply(&self, d: &mut Deliveries, cred: &Credential, due: &Due, outcome: Delivery) {
        let result = match outcome {
            Delivery::Delivered => {
                tracing::info!(credential = %cred.name, dependent = %due.dependent, event = %due.event.id, "delivered");
                d.delivered(due, Utc::now());
                "delivered"
            }
            Delivery::Failed { retryable, reason } => {
                let after = d.failed(
                    due,
                    &reason,
                    retryable,
                    Utc::now(),
                    &self.policy,
                    rand::random::<f64>(),
                );
                match after {
                    super::outbox::AfterFailure::RetryAt(at) => {
                        tracing::warn!(credential = %cred.name, dependent = %due.dependent, event = %due.event.id, error = %reason, retry_at = %at.to_rfc3339(), "delivery failed; trying again later")
                    }
                    super::outbox::AfterFailure::NeedsAttention => {
                        tracing::error!(credential = %cred.name, dependent = %due.dependent, event = %due.event.id, error = %reason, "dependent needs attention: deliveries stopped until `secret-rotator deliveries {} --retry {}`", cred.name, due.dependent)
                    }
                }
                "failed"
            }
        };
        if let Some(observe) = &self.observer {
            observe(&cred.name, &due.dependent, Observed::Delivery(result));
        }
    }

    async fn deliver_due(
        &self,
        cred: &Credential,
        targets: &[Target],
        due: Due,
    ) -> (Due, Delivery) {
        let Some(target) = targets.iter().find(|t| t.name == due.dependent) else {
            let reason = "no such dependent".to_string();
            return (
                due,
                Delivery::Failed {
                    retryable: false,
                    reason,
                },
            );
        };
        let outcome = match tokio::time::timeout(
            target.deadline(cred),
            self.deliver(cred, target, &due.event),
        )
        .await
        {
            Ok(o) => o,
            Err(_) => Delivery::Failed {
                retryable: true,
                reason: format!(
                    "no outcome within {}",
                    crate::human::duration(target.deadline(cred))
                ),
            },
        };
        (due, outcome)
    }

    /// Deliver one event to one dependent.
    pub async fn deliver(&self, cred: &Credential, target: &Target, event: &Logged) -> Delivery {
        let built = match &target.sink {
            Ok(b) => b,
            Err(reason) => {
                return Delivery::Failed {
                    retryable: false,
                    reason: reason.clone(),
                }
            }
        };
        let payload = Payload::of(event, cred);
        let body = payload.body();
        let exec_event = ExecEvent {
            kind: event.kind.as_str(),
            credential: &cred.name,
            version: event.version,
            attempt: event.attempt.as_deref().unwrap_or(""),
            body: &body,
        };
        match built {
            Built::Webhook { sink, key } => match self.signing_keys(key).await {
                Ok(keys) => sink.deliver_as(&event.id, &body, &keys).await.into(),
                Err(reason) => Delivery::Failed {
                    retryable: true,
                    reason,
                },
            },
            Built::Exec(sink) => sink.run(&target.name, &exec_event).await.delivery,
            Built::File(sink) => {
                // Only what changes the live secret rewrites the file (and runs its exec).
                if !matches!(
                    event.kind,
                    EventKind::Rotated | EventKind::RolledBack | EventKind::Ping
                ) {
                    return Delivery::Delivered;
                }
                match self.vault.read_optional(&cred.secret).await {
                    Ok(Some(current)) => {
                        sink.deliver(&target.name, &current.data, &exec_event).await
                    }
                    Ok(None) => Delivery::Failed {
                        retryable: true,
                        reason: format!("{} holds no secret to write", cred.secret),
                    },
                    Err(e) => Delivery::Failed {
                        retryable: true,
                        reason: format!("cannot read the secret: {e}"),
                    },
                }
            }
        }
    }

    /// The webhook signing keys: the field's value, several keys separated by spaces during a
    /// key rotation. Read at each delivery, so a new key is used at once.
    async fn signing_keys(&self, key: &VaultField) -> Result<Vec<SecretString>, String> {
        let secret = self
            .vault
            .read(&key.secret)
            .await
            .map_err(|e| format!("cannot read the signing key: {e}"))?;
        let value = secret
            .data
            .get(&key.key)
            .ok_or_else(|| format!("signing key: {} has no field {:?}", key.secret, key.key))?;
        Ok(value
            .expose_secret()
            .split_whitespace()
            .map(|k| SecretString::from(k.to_string()))
            .collect())
    }

    /// At start-up, what would make a delivery fail later: a webhook signing key that cannot be
    /// read or is not `whsec_<base64>`, a file dependent whose directory does not exist. One line
    /// per problem, naming the dependent.
    pub async fn preflight(&self, cred: &Credential) -> Vec<String> {
        let mut problems = Vec::new();
        for target in Target::of(cred) {
            match &target.sink {
                Err(reason) => problems.push(format!("dependent {}: {reason}", target.name)),
                Ok(Built::Webhook { key, .. }) => match self.signing_keys(key).await {
                    Err(reason) => problems.push(format!("dependent {}: {reason}", target.name)),
                    Ok(keys) if keys.is_empty() => problems.push(format!(
                        "dependent {}: the signing key at {} is empty",
                        target.name, key.secret
                    )),
                    Ok(keys) => {
                        if keys
                            .iter()
                            .any(|k| super::webhook::SigningKey::parse(k).is_err())
                        {
                            problems.push(format!(
                                "dependent {}: the signing key at {} field {:?} is not whsec_<base64>",
                                target.name, key.secret, key.key
                            ));
                        }
                    }
                },
                Ok(Built::File(sink)) => {
                    if let Some(dir) = sink.path.parent().filter(|d| !d.is_dir()) {
                        problems.push(format!(
                            "dependent {}: directory {} does not exist",
                            target.name,
                            dir.display()
                        ));
                    }
                }
                Ok(Built::Exec(_)) => {}
            }
        }
        problems
    }

    /// At start-up: rewrite every `file` dependent that does not hold the current secret (and
    /// run its exec). Failures are logged; the next rotation writes the file again.
    pub async fn restore_files(&self, cred: &Credential, targets: &[Target]) {
        if !targets.iter().any(Target::is_file) {
            return;
        }
        // Never at once with a delivery ahead of a write, which may hold a newer secret.
        let lock = self.ahead.lock(&cred.name);
        let _files = lock.lock().await;
        let current = match self.vault.read_optional(&cred.secret).await {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(credential = %cred.name, error = %e, "cannot read the secret to check its files");
                return;
            }
        };
        for target in targets {
            let Ok(Built::File(sink)) = &target.sink else {
                continue;
            };
            let data = current.data.clone();
            let check = sink.clone();
            let holds = tokio::task::spawn_blocking(move || check.holds_current(&data))
                .await
                .unwrap_or(false);
            if holds {
                continue;
            }
            tracing::info!(credential = %cred.name, dependent = %target.name, version = current.version, "the file does not hold the current secret; writing it");
            let body = b"{}";
            let event = ExecEvent {
                kind: "file.restored",
                credential: &cred.name,
                version: Some(current.version),
                attempt: "",
                body,
            };
            if let Delivery::Failed { reason, .. } =
                sink.deliver(&target.name, &current.data, &event).await
            {
                tracing::warn!(credential = %cred.name, dependent = %target.name, error = %reason, "cannot restore the file");
            }
        }
    }

    /// The worker for one credential: restore its files, then deliver whenever its record has
    /// new events (woken by the engine), a delivery is due, or every [`RECONCILE`]. When `stop`
    /// turns true it makes one last round (what the last steps appended) and returns.
    pub async fn serve(
        self: Arc<Self>,
        cred: Credential,
        wake: Arc<Notify>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let targets = Target::of(&cred);
        self.restore_files(&cred, &targets).await;
        let errors = Backoff {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(300),
        };
        let mut failures = 0;
        loop {
            let stopping = *stop.borrow();
            let next = match self.round(&cred, &targets).await {
                Ok(r) => {
                    failures = 0;
                    r.next
                }
                Err(e) => {
                    failures += 1;
                    let delay = errors.delay(failures, rand::random::<f64>());
                    tracing::warn!(credential = %cred.name, error = %e, retry_in = %crate::human::duration(delay), "cannot deliver this credential's events now");
                    Some(Utc::now() + delay)
                }
            };
            if stopping {
                return;
            }
            let sleep = next
                .map(|t| (t - Utc::now()).to_std().unwrap_or_default())
                .unwrap_or(RECONCILE)
                .clamp(Duration::from_millis(200), RECONCILE);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = wake.notified() => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// Workers for a set of credentials, stopped together.
pub struct Workers {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workers {
    /// Start a worker for each credential that has dependents.
    pub fn start<'a>(
        deliverer: &Arc<Deliverer>,
        wakeup: &Wakeup,
        credentials: impl IntoIterator<Item = &'a Credential>,
    ) -> Workers {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let tasks = credentials
            .into_iter()
            .filter(|c| !c.dependents.is_empty())
            .map(|c| {
                tokio::spawn(
                    deliverer
                        .clone()
                        .serve(c.clone(), wakeup.handle(&c.name), rx.clone()),
                )
            })
            .collect();
        Workers { stop, tasks }
    }

    /// Let each worker make its last round, for at most `bound`; the rest is left to the next
    /// start (deliveries are recorded, so nothing is lost, only repeated).
    pub async fn stop(self, bound: Duration) {
        let _ = self.stop.send(true);
        let all = futures_util::future::join_all(self.tasks);
        if tokio::time::timeout(bound, all).await.is_err() {
            tracing::warn!(
                "deliveries still running at shutdown; they are repeated on the next start"
            );
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
