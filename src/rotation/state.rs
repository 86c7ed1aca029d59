//! The rotation state machine, pure: the record kept in Vault, its phases, and what to do next
//! from any recorded state.
//!
//! Invariants: no IO, no clock, no randomness (all passed in); every transition returns a new
//! record that the driver writes with check-and-set before it takes the next external step, so
//! a crash at any line resumes from the last record written. The record is bounded in bytes and in
//! JSON strings ([`bounded`]), far below OpenBao's request-complexity limits, however many attempts
//! a credential goes through.
//!
//! Phases of an attempt (no attempt = idle):
//!
//! ```text
//! Minting --mint ok--> Minted --verify ok, commit (CAS)--> Notified --grace over, revoke old,
//!                                                                   old rejected--> (idle)
//!    \--rejected--> Failed   \--rejected: revoke new--> RolledBack
//!                            \--CAS mismatch: revoke new--> Aborted
//! Notified --operator: rollback--> RollingBack --old written back, new revoked--> Reverted
//! ```
//!
//! Assisted credentials (a person regenerates them in a control panel) start elsewhere:
//!
//! ```text
//! AwaitingSupply --`supply`: verified, recorded--> Minted --verify, commit (CAS)-->
//!     AwaitingOldDeletion --old credential rejected (polled, or `confirm-revoked`)--> (idle)
//!    \--deadline passed--> needs attention (still takes a supply)
//! ```
//!
//! In `AwaitingSupply` `rotation.due` is sent again with backoff until the credential is
//! supplied. A regenerated token (legacy account, user token) kills the old one at once: its
//! `rotated` is announced only once the old one is seen rejected, just before `revoked`. A
//! store-level account overlaps with the old one: `rotated` at commit, `revoked` once a person
//! deleted the old account.
//!
//! A transient failure (provider unavailable, outcome unknown) keeps the phase and records when
//! to try again ([`Retry`], capped exponential backoff with jitter, budgeted by time). An attempt
//! that ends without rotating counts against the credential's failure budget: the next attempt
//! waits ([`StateRecord::retry_at`]), and after the budget the credential is parked until an
//! operator runs `rotate NAME`.
//!
//! "Verified" and "Committed" are not written as phases of their own: verification is repeated
//! on resume (it has no side effect), and a commit is detected on resume by comparing the secret's
//! current version with the pending secret. That keeps the common path at five Vault writes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::notify::outbox::EventLog;
use crate::secret::SecretFields;

/// The record format this binary writes.
pub const SCHEMA: u32 = 5;
/// The record formats this binary reads (1: before the failure budget and bounds; 3: before the
/// assisted phases, `paused` and `drift`; 4: `history` as a JSON list).
pub const OLDEST_SCHEMA: u32 = 1;
/// At most this many finished attempts are kept in the record (fewer when they are large).
pub const HISTORY_LIMIT: usize = 10;
/// Bounds of the record as written, far below OpenBao's defaults (`max_request_json_strings`
/// 1000; request size in MiB): object keys and string values both count as strings.
pub const MAX_RECORD_STRINGS: usize = 400;
pub const MAX_RECORD_BYTES: usize = 16 * 1024;
/// Possible orphans one attempt may accumulate before it stops minting and asks for an operator.
pub const MAX_ORPHANS: usize = 3;
const MAX_MARKS: usize = 12;
const MAX_ERROR_CHARS: usize = 300;

/// `StateRecord::history` as one text: the JSON list, gzip-compressed, in standard base64
/// (`jq -r .history | base64 -d | gunzip` shows it). Read from that, from a plain JSON text, or
/// (schema 4 and older) from a list.
mod history_text {
    use std::io::{Read, Write};

    use base64::Engine as _;
    use flate2::{read::GzDecoder, write::GzEncoder, Compression};
    use serde::{Deserialize, Deserializer, Serializer};

    use super::AttemptSummary;

    pub fn serialize<S: Serializer>(history: &[AttemptSummary], s: S) -> Result<S::Ok, S::Error> {
        let json = serde_json::to_vec(history).map_err(serde::ser::Error::custom)?;
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        let packed = gz
            .write_all(&json)
            .and_then(|()| gz.finish())
            .map_err(serde::ser::Error::custom)?;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(packed))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<AttemptSummary>, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(text) if text.starts_with('[') => {
                serde_json::from_str(&text).map_err(D::Error::custom)
            }
            serde_json::Value::String(text) => {
                let packed = base64::engine::general_purpose::STANDARD
                    .decode(text.as_bytes())
                    .map_err(|e| D::Error::custom(format!("history: not base64: {e}")))?;
                let mut json = Vec::new();
                GzDecoder::new(packed.as_slice())
                    .read_to_end(&mut json)
                    .map_err(|e| D::Error::custom(format!("history: not gzip: {e}")))?;
                serde_json::from_slice(&json).map_err(D::Error::custom)
            }
            list => serde_json::from_value(list).map_err(D::Error::custom),
        }
    }
}

/// The daemon's record for one credential, kept at `{state_mount}/{state_prefix}/credentials/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateRecord {
    pub schema: u32,
    pub credential: String,
    /// The program and version that wrote the record last.
    #[serde(default)]
    pub written_by: Option<String>,
    /// The attempt in flight, if any.
    pub attempt: Option<Attempt>,
    /// The latest finished attempts, oldest first (bounded). Stored as one compressed text
    /// (schema 5; a list before, still read): the record is read at every start-up and drive,
    /// and what OpenBao spends on a read grows with its strings (each one HMACed by every audit
    /// device, decoded and encoded again; its request-complexity limit counts them) and its
    /// bytes. Ten summaries are about 150 strings and 6 KB as a list; one string of about 1.3 KB
    /// as this text.
    #[serde(default, with = "history_text")]
    pub history: Vec<AttemptSummary>,
    /// Attempts in a row that ended without rotating (failed, rolled back).
    #[serde(default)]
    pub failures: u32,
    /// After a failed attempt: no new attempt starts on its own before this time.
    #[serde(default)]
    pub retry_at: Option<DateTime<Utc>>,
    /// Failure budget spent: nothing starts on its own until an operator runs `rotate NAME`.
    #[serde(default)]
    pub parked: Option<Parked>,
    /// The latest events for dependents (appended in the write that follows their emission;
    /// delivered from here by the delivery worker). Schema 3.
    #[serde(default, skip_serializing_if = "EventLog::is_empty")]
    pub events: EventLog,
    /// An operator paused the credential (`pause NAME`): nothing starts or moves on until
    /// `resume NAME`. Schema 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Paused>,
    /// The current credential was rejected although this daemon did not change it. Schema 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<Drift>,
}

/// `pause NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    pub since: DateTime<Utc>,
    pub by: String,
}

/// Someone regenerated or deleted the credential outside the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub since: DateTime<Utc>,
    /// The KV version the provider rejected.
    pub version: u64,
    pub reason: String,
}

impl StateRecord {
    pub fn new(credential: &str) -> StateRecord {
        StateRecord {
            schema: SCHEMA,
            credential: credential.to_string(),
            written_by: None,
            attempt: None,
            history: Vec::new(),
            failures: 0,
            retry_at: None,
            parked: None,
            events: EventLog::default(),
            paused: None,
            drift: None,
        }
    }

    /// Check a record read from Vault before anything acts on it: a schema this binary knows,
    /// the credential it belongs to, and the fields its phase needs. `Err` names the field.
    pub fn validate(&self, credential: &str) -> Result<(), String> {
        if !(OLDEST_SCHEMA..=SCHEMA).contains(&self.schema) {
            return Err(format!(
                "field schema: {} is not a record format this binary knows ({OLDEST_SCHEMA} to {SCHEMA}); it was written by {}",
                self.schema,
                self.written_by.as_deref().unwrap_or("an unknown program")
            ));
        }
        if self.credential != credential {
            return Err(format!(
                "field credential: the record names credential {:?}, not {credential:?}",
                self.credential
            ));
        }
        let Some(a) = &self.attempt else {
            return Ok(());
        };
        let missing = |field: &str| {
            Err(format!(
                "field attempt.{field} is null, but phase {} needs it",
                a.phase.as_str()
            ))
        };
        match a.phase {
            Phase::Minting => Ok(()),
            Phase::Minted if a.pending.is_none() => missing("pending"),
            Phase::Minted => Ok(()),
            Phase::Notified | Phase::RollingBack if a.pending.is_none() => missing("pending"),
            Phase::Notified | Phase::RollingBack if a.version_after.is_none() => {
                missing("version_after")
            }
            Phase::RollingBack if a.old.is_none() => missing("old"),
            Phase::Notified | Phase::RollingBack => Ok(()),
            Phase::AwaitingSupply => Ok(()),
            Phase::AwaitingOldDeletion if a.pending.is_none() => missing("pending"),
            Phase::AwaitingOldDeletion if a.version_after.is_none() => missing("version_after"),
            Phase::AwaitingOldDeletion => Ok(()),
        }
    }
}

/// Why a credential waits for an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    pub since: DateTime<Utc>,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Recorded before calling the provider: a credential may exist that nobody holds yet.
    Minting,
    /// The new credential is recorded here, not yet at the secret's path.
    Minted,
    /// Committed to the secret's path and announced; waiting out the grace period, then
    /// revoking the old credential.
    Notified,
    /// An operator asked to re-promote the old credential: write it back, then revoke the new.
    RollingBack,
    /// Assisted: `rotation.due` was sent; waiting for a person to run `supply`.
    AwaitingSupply,
    /// Assisted: the supplied credential is committed; waiting until the old one is rejected
    /// (a person deletes the old account, or regenerating already killed it).
    AwaitingOldDeletion,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Minting => "minting",
            Phase::Minted => "minted",
            Phase::Notified => "notified",
            Phase::RollingBack => "rolling_back",
            Phase::AwaitingSupply => "awaiting_supply",
            Phase::AwaitingOldDeletion => "awaiting_old_deletion",
        }
    }
}

/// A credential minted by an attempt that nobody may hold (the daemon died or the answer was
/// lost before it was recorded). It dies on its own at `expires_at`, when the provider's
/// credentials expire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orphan {
    pub noted_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub reason: String,
}

/// A phase reached, with its time: the attempt's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub phase: String,
    pub at: DateTime<Utc>,
}

/// A step failed for a reason that may pass (provider or Vault unavailable): when to try again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    /// Failures in a row of the current step.
    pub tries: u32,
    /// When the first of them happened: the transient budget counts from here.
    pub since: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

/// The attempt in flight.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub id: String,
    /// The daemon instance that holds the lease.
    pub owner: String,
    /// Another instance may take the attempt over after this time.
    pub lease_expires_at: DateTime<Utc>,
    pub phase: Phase,
    /// Why it started: "manual", "max_age", "schedule", "expiry", "missing".
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The secret's version when the attempt started (0: it never existed; a deleted latest
    /// version counts as its own number, which check-and-set compares against).
    pub version_before: u64,
    /// The credential being replaced, kept until it is revoked.
    pub old: Option<SecretFields>,
    /// The expiry asked of the provider for the new credential.
    pub planned_expires_at: Option<DateTime<Utc>>,
    /// The new credential, once minted.
    pub pending: Option<SecretFields>,
    pub pending_expires_at: Option<DateTime<Utc>>,
    /// The secret's version written by this attempt.
    pub version_after: Option<u64>,
    /// When the old credential may be revoked (end of the grace period).
    pub revoke_after: Option<DateTime<Utc>>,
    #[serde(default)]
    pub orphans: Vec<Orphan>,
    #[serde(default)]
    pub marks: Vec<Mark>,
    pub last_error: Option<String>,
    /// Set when retries are spent: the daemon stops retrying until an operator acts
    /// (`rotate NAME` resumes it).
    #[serde(default)]
    pub needs_attention: bool,
    /// A transient failure of the current step: when to try again.
    #[serde(default)]
    pub retry: Option<Retry>,
    /// In phase minting: no mint is under way, the outcome of every mint so far is recorded
    /// (minted, failed, or noted as a possible orphan). False from the start of an attempt and
    /// while a mint is sent, so that a resume knows to note a possible orphan first.
    #[serde(default)]
    pub mint_settled: bool,
    /// Phase notified: the old credential is kept alive past the grace period because
    /// dependents with `require_ack` and `on_ack_timeout = "hold"` have not acknowledged the
    /// new one (the reason, naming them). Revocation follows once they do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// Assisted, awaiting_supply: no supply is taken as on time after this (needs attention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// Assisted: the next reminder (awaiting_supply) or look at the old credential
    /// (awaiting_old_deletion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check: Option<DateTime<Utc>>,
    /// Assisted: reminders sent, or looks at the old credential made, in this phase.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub checks: u32,
    /// Assisted: `credential.rotated` was announced.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub announced: bool,
    /// Vault's `created_time` of `version_after`, from the reply to the commit's write (absent
    /// when the commit was found written after a lost reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_created_at: Option<DateTime<Utc>>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// New credential live, old one revoked and checked dead.
    Rotated,
    /// The provider rejected the new credential: it was revoked, the old one stays current.
    RolledBack,
    /// Someone else wrote the secret meanwhile: ours was revoked, theirs kept.
    Aborted,
    /// Could not mint (rejected, misconfigured, or retries exhausted); nothing changed.
    Failed,
    /// An operator re-promoted the previous credential during the grace period.
    Reverted,
    /// An operator ended an assisted attempt (`cancel`): waiting for a supply (nothing
    /// written), or for the old credential to die (the committed version stays).
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Rotated => "rotated",
            Outcome::RolledBack => "rolled_back",
            Outcome::Aborted => "aborted",
            Outcome::Failed => "failed",
            Outcome::Reverted => "reverted",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// A finished attempt, as `history` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptSummary {
    pub id: String,
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: Outcome,
    pub version_before: u64,
    pub version_after: Option<u64>,
    pub marks: Vec<Mark>,
    pub orphans: Vec<Orphan>,
    pub error: Option<String>,
    /// The new credential's expiry, when the provider's credentials expire.
    pub expires_at: Option<DateTime<Utc>>,
    /// Vault's `created_time` of `version_after`, when the commit's reply said it: with it the
    /// record alone tells how old the current version is (start-up reads nothing else).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_created_at: Option<DateTime<Utc>>,
}

/// What the driver does next for an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Ask the provider for a new credential.
    Mint,
    /// Check the pending credential with the provider, then commit it.
    VerifyAndCommit,
    /// Nothing until the grace period ends.
    WaitUntil(DateTime<Utc>),
    /// Revoke the old credential and check that it is rejected.
    RevokeOld,
    /// Write the old credential back, then revoke the new one.
    RollBack,
    /// The last try of the current step failed transiently: nothing before this time.
    RetryAt(DateTime<Utc>),
    /// Assisted: nothing until a person supplies the credential, or this time (a reminder).
    AwaitSupply(DateTime<Utc>),
    /// Assisted: send `rotation.due` again.
    Remind,
    /// Assisted: the supply deadline passed: raise needs_attention.
    SupplyOverdue,
    /// Assisted: is the old credential rejected yet?
    CheckOld,
}

/// The next step of an attempt at `now`.
pub fn next_step(a: &Attempt, now: DateTime<Utc>) -> Step {
    if let Some(r) = &a.retry {
        if now < r.at {
            return Step::RetryAt(r.at);
        }
    }
    match a.phase {
        Phase::Minting => Step::Mint,
        Phase::Minted => Step::VerifyAndCommit,
        Phase::Notified => match a.revoke_after {
            Some(t) if now < t => Step::WaitUntil(t),
            _ => Step::RevokeOld,
        },
        Phase::RollingBack => Step::RollBack,
        Phase::AwaitingSupply => match (a.deadline, a.next_check) {
            (Some(d), _) if now >= d && !a.needs_attention => Step::SupplyOverdue,
            (_, Some(t)) if now >= t => Step::Remind,
            (d, t) => Step::AwaitSupply(match (d.filter(|_| !a.needs_attention), t) {
                (Some(d), Some(t)) => d.min(t),
                (Some(x), None) | (None, Some(x)) => x,
                (None, None) => now + chrono::Duration::days(1),
            }),
        },
        Phase::AwaitingOldDeletion => match a.next_check {
            Some(t) if now < t => Step::WaitUntil(t),
            _ => Step::CheckOld,
        },
    }
}

/// How often `rotation.due` is sent again while nobody supplies: `base` doubling, at most daily.
pub fn reminder_backoff(base: Duration) -> Backoff {
    Backoff {
        base,
        cap: Duration::from_secs(86_400).max(base),
    }
}

/// How often the old credential is looked at while it lives: 2 s doubling to 5 min.
pub const OLD_POLL: Backoff = Backoff {
    base: Duration::from_secs(2),
    cap: Duration::from_secs(300),
};

/// Begin an assisted attempt: `rotation.due` is sent in the same write. The deadline counts
/// from now (when the credential fell due, or was found drifted).
pub fn begin_assisted(s: Start<'_>, deadline: Duration, first_reminder: Duration) -> Attempt {
    let now = s.now;
    let mut a = begin(s);
    a.phase = Phase::AwaitingSupply;
    a.marks[0].phase = Phase::AwaitingSupply.as_str().into();
    a.mint_settled = true;
    a.deadline = Some(now + deadline);
    a.next_check = Some(now + first_reminder);
    a
}

/// `rotation.due` was sent again (`unit`: a random number in [0, 1)).
pub fn reminded(mut a: Attempt, now: DateTime<Utc>, backoff: Backoff, unit: f64) -> Attempt {
    a.checks += 1;
    // The full interval doubles; jitter only lengthens it (never a reminder sooner than asked).
    let full = backoff.delay(a.checks + 1, 1.0);
    a.next_check = Some(now + full + full.mul_f64(unit.clamp(0.0, 1.0) / 10.0));
    a.updated_at = now;
    a
}

/// A person supplied a verified credential: it is pending, as if minted.
pub fn supplied(
    a: Attempt,
    secret: SecretFields,
    owner: &str,
    now: DateTime<Utc>,
    lease: Duration,
) -> Attempt {
    let mut a = minted(a, secret, None, owner, now, lease);
    a.needs_attention = false;
    a.deadline = None;
    a.next_check = None;
    a.checks = 0;
    a
}

/// Committed at `version`; the old credential is looked at from `first_check`. `announced`:
/// `credential.rotated` was sent (a store-level account's overlap); `remind_after`: when a
/// living old credential raises needs_attention (the grace period).
#[allow(clippy::too_many_arguments)]
pub fn awaiting_old_deletion(
    a: Attempt,
    version: u64,
    announced: bool,
    first_check: DateTime<Utc>,
    remind_after: DateTime<Utc>,
    owner: &str,
    now: DateTime<Utc>,
    lease: Duration,
) -> Attempt {
    let mut a = touched(a, owner, now, lease);
    a.phase = Phase::AwaitingOldDeletion;
    a.version_after = Some(version);
    a.announced = announced;
    a.next_check = Some(first_check);
    a.revoke_after = Some(remind_after);
    a.checks = 0;
    a.last_error = None;
    a.retry = None;
    mark(&mut a, "committed", now);
    mark(&mut a, Phase::AwaitingOldDeletion.as_str(), now);
    a
}

/// The old credential still answered: look again after a backoff (`unit` in [0, 1)).
pub fn old_still_alive(
    mut a: Attempt,
    now: DateTime<Utc>,
    note: &str,
    owner: &str,
    lease: Duration,
    unit: f64,
) -> Attempt {
    a.checks += 1;
    let at = now + OLD_POLL.delay(a.checks, unit);
    a.next_check = Some(at);
    a.last_error = Some(clip(note));
    let mut a = touched(a, owner, now, lease);
    a.lease_expires_at = at + lease;
    a
}

/// `resume NAME`.
pub fn resume(mut r: StateRecord) -> StateRecord {
    r.paused = None;
    r
}

/// `pause NAME`: recorded once (a second pause keeps the first time).
pub fn pause(mut r: StateRecord, by: &str, now: DateTime<Utc>) -> StateRecord {
    if r.paused.is_none() {
        r.paused = Some(Paused {
            since: now,
            by: by.to_string(),
        });
    }
    r
}

/// May `me` make the next transition of this attempt? The lease holder may; anyone may once the
/// lease has expired or the holder is known to be dead (its next CAS write would fail anyway).
pub fn may_act(a: &Attempt, me: &str, now: DateTime<Utc>, holder_dead: bool) -> bool {
    a.owner == me || holder_dead || now >= a.lease_expires_at
}

/// Before an irreversible external step (revoke, discard) that may last up to `step` (its
/// deadlines): does the lease outlast it, or must it be renewed (a CAS write) first?
pub fn lease_covers(a: &Attempt, now: DateTime<Utc>, step: Duration) -> bool {
    a.lease_expires_at > now + step
}

/// Capped exponential backoff with jitter: the delay after `failures` failures in a row
/// (1 or more) is `base * 2^(failures-1)`, capped, of which the second half is random
/// ("equal jitter": never shorter than half, so retries cannot bunch up at zero). `unit` is a
/// random number in [0, 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        let full = self.base.saturating_mul(1u32 << exp).min(self.cap);
        let half = full / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// How an attempt and a credential retry: within an attempt, transient failures back off and
/// give up after `transient_budget`; attempts that end without rotating back off between
/// themselves and park the credential after `failure_budget` of them in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub step: Backoff,
    pub transient_budget: Duration,
    pub attempts: Backoff,
    pub failure_budget: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            step: Backoff {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(60),
            },
            // Longer than a Vault restart or a provider's bad quarter of an hour.
            transient_budget: Duration::from_secs(15 * 60),
            attempts: Backoff {
                base: Duration::from_secs(60),
                cap: Duration::from_secs(6 * 3600),
            },
            failure_budget: 5,
        }
    }
}

/// Why an attempt may not start on its own now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// The failure budget is spent: an operator must run `rotate NAME`.
    Parked(Parked),
    /// The last attempt failed: the next waits until then.
    BackingOff(DateTime<Utc>),
}

/// May a new attempt start now? An operator's `rotate` always may (it unparks).
pub fn may_start(r: &StateRecord, now: DateTime<Utc>, manual: bool) -> Result<(), Blocked> {
    if manual {
        return Ok(());
    }
    if let Some(p) = &r.parked {
        return Err(Blocked::Parked(p.clone()));
    }
    match r.retry_at {
        Some(t) if now < t => Err(Blocked::BackingOff(t)),
        _ => Ok(()),
    }
}

/// An operator asked for a rotation: forget the failures and the parking.
pub fn unpark(mut r: StateRecord) -> StateRecord {
    r.parked = None;
    r.failures = 0;
    r.retry_at = None;
    r
}

/// Everything needed to start an attempt.
pub struct Start<'a> {
    pub id: String,
    pub owner: &'a str,
    pub trigger: &'a str,
    pub now: DateTime<Utc>,
    pub lease: Duration,
    /// The secret's current version (0: never written; a deleted latest version keeps its
    /// number) and its data when it can be read.
    pub version: u64,
    pub current: Option<SecretFields>,
    /// For providers whose credentials expire: how long the new one lives.
    pub lifetime: Option<Duration>,
}

pub fn begin(s: Start<'_>) -> Attempt {
    Attempt {
        id: s.id,
        owner: s.owner.to_string(),
        lease_expires_at: s.now + s.lease,
        phase: Phase::Minting,
        trigger: s.trigger.to_string(),
        started_at: s.now,
        updated_at: s.now,
        version_before: s.version,
        old: s.current,
        planned_expires_at: s.lifetime.map(|l| s.now + l),
        pending: None,
        pending_expires_at: None,
        version_after: None,
        version_created_at: None,
        revoke_after: None,
        orphans: Vec::new(),
        marks: vec![Mark {
            phase: Phase::Minting.as_str().into(),
            at: s.now,
        }],
        last_error: None,
        needs_attention: false,
        retry: None,
        mint_settled: false,
        held: None,
        deadline: None,
        next_check: None,
        checks: 0,
        announced: false,
    }
}

fn touched(mut a: Attempt, owner: &str, now: DateTime<Utc>, lease: Duration) -> Attempt {
    a.owner = owner.to_string();
    a.updated_at = now;
    a.lease_expires_at = now + lease;
    a
}

fn mark(a: &mut Attempt, phase: &str, at: DateTime<Utc>) {
    a.marks.push(Mark {
        phase: phase.into(),
        at,
    });
    if a.marks.len() > MAX_MARKS {
        // Keep the first (the start) and the latest.
        a.marks.remove(1);
    }
}

/// Take an attempt over (lease expired, or resumed by its own owner after a restart).
pub fn take_over(a: Attempt, owner: &str, now: DateTime<Utc>, lease: Duration) -> Attempt {
    touched(a, owner, now, lease)
}

/// A mint may have happened that nobody recorded (resumed in Minting, or an unknown outcome).
pub fn note_orphan(mut a: Attempt, reason: &str, now: DateTime<Utc>) -> Attempt {
    a.orphans.push(Orphan {
        noted_at: now,
        expires_at: a.planned_expires_at,
        reason: clip(reason),
    });
    a
}

/// Has this attempt noted as many possible orphans as it may? Then it mints no more.
pub fn orphans_spent(a: &Attempt) -> bool {
    a.orphans.len() >= MAX_ORPHANS
}

pub fn minted(
    a: Attempt,
    secret: SecretFields,
    expires_at: Option<DateTime<Utc>>,
    owner: &str,
    now: DateTime<Utc>,
    lease: Duration,
) -> Attempt {
    let mut a = touched(a, owner, now, lease);
    a.phase = Phase::Minted;
    a.pending = Some(secret);
    a.pending_expires_at = expires_at.or(a.planned_expires_at);
    a.last_error = None;
    a.retry = None;
    mark(&mut a, Phase::Minted.as_str(), now);
    a
}

/// Committed at `version` and announced: wait `grace`, then revoke the old credential. The lease
/// covers the grace period so no other instance takes the attempt over meanwhile.
pub fn committed(
    a: Attempt,
    version: u64,
    owner: &str,
    now: DateTime<Utc>,
    grace: Duration,
    lease: Duration,
) -> Attempt {
    let mut a = touched(a, owner, now, lease);
    a.phase = Phase::Notified;
    a.version_after = Some(version);
    a.revoke_after = Some(now + grace);
    a.lease_expires_at = now + grace + lease;
    a.last_error = None;
    a.retry = None;
    mark(&mut a, "committed", now);
    mark(&mut a, Phase::Notified.as_str(), now);
    a
}

/// An operator asked to re-promote the old credential: recorded before anything is written.
pub fn rolling_back(a: Attempt, owner: &str, now: DateTime<Utc>, lease: Duration) -> Attempt {
    let mut a = touched(a, owner, now, lease);
    a.phase = Phase::RollingBack;
    a.retry = None;
    a.needs_attention = false;
    mark(&mut a, Phase::RollingBack.as_str(), now);
    a
}

/// Record an error without changing phase; `attention` stops automatic retries.
pub fn failed_step(
    a: Attempt,
    error: &str,
    attention: bool,
    owner: &str,
    now: DateTime<Utc>,
    lease: Duration,
) -> Attempt {
    let mut a = touched(a, owner, now, lease);
    a.last_error = Some(clip(error));
    a.needs_attention = attention;
    if attention {
        a.retry = None;
    }
    a
}

/// A step failed transiently: try again after a backoff (at least `asked`, the wait the provider
/// asked for), or, once the transient budget is spent, stop and ask for an operator
/// (`needs_attention`). The lease covers the wait, so this instance resumes the attempt. `unit`
/// is a random number in [0, 1).
#[allow(clippy::too_many_arguments)]
pub fn transient(
    a: Attempt,
    error: &str,
    asked: Option<Duration>,
    policy: &RetryPolicy,
    unit: f64,
    owner: &str,
    now: DateTime<Utc>,
    lease: Duration,
) -> Attempt {
    let (tries, since) = match &a.retry {
        Some(r) => (r.tries + 1, r.since),
        None => (1, now),
    };
    if now - since >= chrono::Duration::from_std(policy.transient_budget).unwrap_or_default() {
        let spent = format!(
            "{error} (failing for {}, {tries} tries)",
            crate::human::duration(Duration::from_secs(
                (now - since).num_seconds().max(0) as u64
            ))
        );
        let mut a = failed_step(a, &spent, true, owner, now, lease);
        a.mint_settled = true;
        return a;
    }
    let delay = policy.step.delay(tries, unit);
    let at = now + asked.map_or(delay, |w| w.min(policy.step.cap).max(delay));
    let mut a = failed_step(a, error, false, owner, now, lease);
    a.retry = Some(Retry { tries, since, at });
    a.mint_settled = true;
    a.lease_expires_at = at + lease;
    a
}

/// End the attempt: move it into the history, leaving the record idle. An attempt that ended
/// without rotating counts against the failure budget (`unit`: a random number in [0, 1)).
pub fn finish(
    mut record: StateRecord,
    mut a: Attempt,
    outcome: Outcome,
    error: Option<String>,
    now: DateTime<Utc>,
    policy: &RetryPolicy,
    unit: f64,
) -> StateRecord {
    mark(&mut a, outcome.as_str(), now);
    let error = error.map(|e| clip(&e));
    match outcome {
        Outcome::Rotated | Outcome::Reverted => {
            record.failures = 0;
            record.retry_at = None;
            record.drift = None;
        }
        // Someone else rotated the secret: not this credential's failure.
        Outcome::Aborted => {}
        // A person's choice, not a failure; a credential still due is asked for again after
        // the first attempt backoff, not at once.
        Outcome::Cancelled => {
            record.retry_at = Some(now + policy.attempts.delay(1, unit));
        }
        Outcome::Failed | Outcome::RolledBack => {
            record.failures += 1;
            record.retry_at = Some(now + policy.attempts.delay(record.failures, unit));
            if record.failures >= policy.failure_budget {
                record.parked = Some(Parked {
                    since: now,
                    reason: format!(
                        "{} attempts in a row did not rotate; the last: {}",
                        record.failures,
                        error.as_deref().unwrap_or(outcome.as_str())
                    ),
                });
            }
        }
    }
    record.history.push(AttemptSummary {
        id: a.id,
        trigger: a.trigger,
        started_at: a.started_at,
        finished_at: now,
        outcome,
        version_before: a.version_before,
        version_after: a.version_after,
        marks: a.marks,
        orphans: a.orphans,
        error,
        expires_at: a.pending_expires_at,
        version_created_at: a.version_created_at,
    });
    record.attempt = None;
    record
}

/// The record is too large to write even with no finished attempt kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the state record needs {strings} JSON strings and {bytes} bytes, over the bound of {MAX_RECORD_STRINGS} strings and {MAX_RECORD_BYTES} bytes (the secret has too many or too large fields)")]
pub struct TooLarge {
    pub strings: usize,
    pub bytes: usize,
}

/// Strings (object keys and string values) and bytes of a JSON value, as OpenBao counts them.
pub fn json_size(v: &serde_json::Value) -> (usize, usize) {
    fn strings(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::String(_) => 1,
            serde_json::Value::Array(a) => a.iter().map(strings).sum(),
            serde_json::Value::Object(o) => o.values().map(|v| 1 + strings(v)).sum(),
            _ => 0,
        }
    }
    (strings(v), v.to_string().len())
}

/// The record as it will be written: at most [`HISTORY_LIMIT`] finished attempts, fewer when
/// needed to stay within [`MAX_RECORD_STRINGS`] and [`MAX_RECORD_BYTES`] (the oldest go first).
pub fn bounded(mut r: StateRecord) -> Result<(StateRecord, serde_json::Value), TooLarge> {
    if r.history.len() > HISTORY_LIMIT {
        let extra = r.history.len() - HISTORY_LIMIT;
        r.history.drain(..extra);
    }
    loop {
        let v = serde_json::to_value(&r).expect("state records serialise");
        // The write wraps the record in {"data": …, "options": {"cas": n}}: three more strings.
        let (strings, bytes) = json_size(&v);
        if strings + 3 <= MAX_RECORD_STRINGS && bytes + 64 <= MAX_RECORD_BYTES {
            return Ok((r, v));
        }
        if r.history.is_empty() {
            return Err(TooLarge { strings, bytes });
        }
        r.history.remove(0);
    }
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_ERROR_CHARS) {
        None => s.to_string(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

/// What a resumed commit step finds at the secret's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitCheck {
    /// Still at the version read at the start: write ours with CAS.
    Write,
    /// Our pending secret is already the current version (we crashed after writing it).
    AlreadyCommitted(u64),
    /// Someone else wrote the secret since the start: abort, revoke ours.
    Conflict(u64),
}

/// Decide the commit step from the secret's current version and whether its data is ours.
pub fn commit_check(
    version_before: u64,
    current_version: u64,
    current_is_ours: bool,
) -> CommitCheck {
    if current_version == version_before {
        CommitCheck::Write
    } else if current_is_ours && current_version > version_before {
        CommitCheck::AlreadyCommitted(current_version)
    } else {
        CommitCheck::Conflict(current_version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn attempt(phase: Phase) -> Attempt {
        let mut a = begin(Start {
            id: "a1".into(),
            owner: "host-a",
            trigger: "manual",
            now: t(0),
            lease: Duration::from_secs(60),
            version: 3,
            current: Some(SecretFields::new().with("token", "old")),
            lifetime: Some(Duration::from_secs(3600)),
        });
        a.phase = phase;
        if phase != Phase::Minting {
            a.pending = Some(SecretFields::new().with("token", "new"));
        }
        if matches!(phase, Phase::Notified | Phase::RollingBack) {
            a.version_after = Some(4);
        }
        a
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            step: Backoff {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(8),
            },
            transient_budget: Duration::from_secs(60),
            attempts: Backoff {
                base: Duration::from_secs(10),
                cap: Duration::from_secs(100),
            },
            failure_budget: 3,
        }
    }

    #[test]
    fn next_step_from_every_recorded_state() {
        let mut notified = attempt(Phase::Notified);
        notified.revoke_after = Some(t(100));
        let mut retrying = attempt(Phase::Minted);
        retrying.retry = Some(Retry {
            tries: 1,
            since: t(0),
            at: t(30),
        });
        let cases: Vec<(Attempt, DateTime<Utc>, Step)> = vec![
            (attempt(Phase::Minting), t(1), Step::Mint),
            (attempt(Phase::Minted), t(1), Step::VerifyAndCommit),
            (notified.clone(), t(50), Step::WaitUntil(t(100))),
            (notified.clone(), t(100), Step::RevokeOld),
            (notified, t(500), Step::RevokeOld),
            (attempt(Phase::RollingBack), t(1), Step::RollBack),
            (retrying.clone(), t(10), Step::RetryAt(t(30))),
            (retrying, t(30), Step::VerifyAndCommit),
        ];
        for (a, now, expected) in cases {
            assert_eq!(next_step(&a, now), expected, "phase {:?} at {now}", a.phase);
        }
    }

    fn assisted() -> Attempt {
        begin_assisted(
            Start {
                id: "a1".into(),
                owner: "host-a",
                trigger: "max_age",
                now: t(0),
                lease: Duration::from_secs(60),
                version: 3,
                current: Some(SecretFields::new().with("token", "old")),
                lifetime: None,
            },
            Duration::from_secs(1000),
            Duration::from_secs(100),
        )
    }

    #[test]
    fn next_step_of_the_assisted_phases() {
        let waiting = assisted(); // deadline t(1000), first reminder t(100)
        let mut overdue_seen = assisted();
        overdue_seen.needs_attention = true;
        let committed = awaiting_old_deletion(
            supplied(
                assisted(),
                SecretFields::new().with("token", "new"),
                "h",
                t(10),
                Duration::from_secs(60),
            ),
            4,
            true,
            t(20),
            t(500),
            "h",
            t(10),
            Duration::from_secs(60),
        );
        let cases: Vec<(&Attempt, DateTime<Utc>, Step)> = vec![
            (&waiting, t(1), Step::AwaitSupply(t(100))),
            (&waiting, t(100), Step::Remind),
            (&waiting, t(1000), Step::SupplyOverdue),
            // Needs attention already: only a supply moves it on; reminders go on.
            (&overdue_seen, t(2000), Step::Remind),
            (&committed, t(19), Step::WaitUntil(t(20))),
            (&committed, t(20), Step::CheckOld),
        ];
        for (a, now, expected) in cases {
            assert_eq!(next_step(a, now), expected, "phase {:?} at {now}", a.phase);
        }
        assert_eq!(waiting.phase, Phase::AwaitingSupply);
        assert_eq!(waiting.marks[0].phase, "awaiting_supply");
        assert_eq!(committed.phase, Phase::AwaitingOldDeletion);
        assert_eq!(committed.version_after, Some(4));
        assert!(committed.announced && committed.deadline.is_none());
        let mut r = StateRecord::new("c");
        r.attempt = Some(committed.clone());
        assert!(r.validate("c").is_ok());
    }

    #[test]
    fn reminders_back_off_to_a_day_and_never_come_sooner_than_asked() {
        let b = reminder_backoff(Duration::from_secs(3600));
        let mut a = assisted();
        // (reminder sent at, next no sooner than, no later than)
        let cases = [
            (t(0), 7200, 7920),
            (t(0), 14_400, 15_840),
            (t(0), 28_800, 31_680),
            (t(0), 57_600, 63_360),
            (t(0), 86_400, 95_040),
            (t(0), 86_400, 95_040),
        ];
        for (i, (now, min, max)) in cases.into_iter().enumerate() {
            a = reminded(a, now, b, 0.5);
            let next = (a.next_check.unwrap() - now).num_seconds();
            assert!((min..=max).contains(&next), "reminder {i}: {next}");
            assert_eq!(a.checks as usize, i + 1);
        }
    }

    #[test]
    fn the_old_credential_is_looked_at_with_backoff_and_the_lease_covers_the_wait() {
        let mut a = attempt(Phase::Notified);
        a.phase = Phase::AwaitingOldDeletion;
        // (looked at, unit, next in seconds)
        let cases = [
            (t(0), 0.0, 1),
            (t(1), 0.0, 2),
            (t(3), 0.0, 4),
            (t(7), 1.0, 16),
        ];
        for (now, unit, secs) in cases {
            a = old_still_alive(a, now, "alive", "h", Duration::from_secs(60), unit);
            assert_eq!(
                a.next_check,
                Some(now + chrono::Duration::seconds(secs)),
                "at {now}"
            );
            assert_eq!(
                a.lease_expires_at,
                a.next_check.unwrap() + chrono::Duration::seconds(60)
            );
        }
    }

    #[test]
    fn pause_resume_and_drift_live_in_the_record() {
        let r = pause(StateRecord::new("c"), "ops", t(5));
        let again = pause(r.clone(), "other", t(9));
        assert_eq!(again.paused, r.paused, "a second pause keeps the first");
        let mut r = resume(r);
        assert!(r.paused.is_none());
        r.drift = Some(Drift {
            since: t(1),
            version: 3,
            reason: "401".into(),
        });
        let json = serde_json::to_value(&r).unwrap();
        let back: StateRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back.drift, r.drift);
        // A rotation clears the drift.
        let r = finish(
            r,
            attempt(Phase::Minted),
            Outcome::Rotated,
            None,
            t(2),
            &policy(),
            0.0,
        );
        assert!(r.drift.is_none());
        // A schema 3 record (no pause, no drift, no assisted fields) is read.
        let v = serde_json::json!({"schema": 3, "credential": "c", "attempt": null});
        let old: StateRecord = serde_json::from_value(v).unwrap();
        assert!(old.validate("c").is_ok() && old.paused.is_none() && old.drift.is_none());
    }

    #[test]
    fn only_the_lease_holder_acts_until_the_lease_expires_or_dies() {
        let a = attempt(Phase::Minted); // lease until t(60), owner host-a
        let cases = [
            ("host-a", t(10), false, true),
            ("host-b", t(10), false, false),
            ("host-b", t(59), false, false),
            ("host-b", t(10), true, true),
            ("host-b", t(60), false, true),
            ("host-a", t(600), false, true),
        ];
        for (me, now, holder_dead, expected) in cases {
            assert_eq!(
                may_act(&a, me, now, holder_dead),
                expected,
                "{me} at {now}, holder dead: {holder_dead}"
            );
        }
    }

    #[test]
    fn an_irreversible_step_needs_the_lease_to_outlast_it() {
        let a = attempt(Phase::Notified); // lease until t(60)
        let step = Duration::from_secs(20);
        let cases = [(t(0), true), (t(39), true), (t(40), false), (t(70), false)];
        for (now, expected) in cases {
            assert_eq!(lease_covers(&a, now, step), expected, "at {now}");
        }
    }

    #[test]
    fn commit_check_table() {
        let cases = [
            (3, 3, false, CommitCheck::Write),
            (0, 0, false, CommitCheck::Write),
            (3, 4, true, CommitCheck::AlreadyCommitted(4)),
            (3, 4, false, CommitCheck::Conflict(4)),
            (3, 5, false, CommitCheck::Conflict(5)),
            // A current version below the one read means the secret was deleted and re-created.
            (3, 1, true, CommitCheck::Conflict(1)),
        ];
        for (before, current, ours, expected) in cases {
            assert_eq!(
                commit_check(before, current, ours),
                expected,
                "{before} {current} {ours}"
            );
        }
    }

    #[test]
    fn begin_records_the_old_credential_and_planned_expiry() {
        let a = attempt(Phase::Minting);
        assert_eq!(a.version_before, 3);
        assert!(a.old.is_some());
        assert_eq!(a.planned_expires_at, Some(t(3600)));
        assert_eq!(a.lease_expires_at, t(60));
        // A soft-deleted latest version: nothing to read, but CAS compares against its number.
        let deleted = begin(Start {
            id: "a2".into(),
            owner: "h",
            trigger: "missing",
            now: t(0),
            lease: Duration::from_secs(60),
            version: 7,
            current: None,
            lifetime: None,
        });
        assert_eq!(deleted.version_before, 7);
        assert!(deleted.old.is_none() && deleted.planned_expires_at.is_none());
    }

    #[test]
    fn transitions_carry_the_attempt_forward() {
        let lease = Duration::from_secs(60);
        let a = note_orphan(attempt(Phase::Minting), "resumed in minting", t(5));
        assert_eq!(a.orphans[0].expires_at, Some(t(3600)));
        let a = minted(
            a,
            SecretFields::new().with("token", "new"),
            None,
            "host-b",
            t(10),
            lease,
        );
        assert_eq!(a.phase, Phase::Minted);
        assert_eq!(a.owner, "host-b");
        assert_eq!(a.pending_expires_at, Some(t(3600)));
        let a = committed(a, 4, "host-b", t(20), Duration::from_secs(30), lease);
        assert_eq!(a.phase, Phase::Notified);
        assert_eq!(a.revoke_after, Some(t(50)));
        assert_eq!(a.lease_expires_at, t(110), "lease covers the grace period");
        let r = finish(
            StateRecord::new("c"),
            a,
            Outcome::Rotated,
            None,
            t(60),
            &policy(),
            0.5,
        );
        assert!(r.attempt.is_none());
        let h = &r.history[0];
        assert_eq!((h.version_before, h.version_after), (3, Some(4)));
        let phases: Vec<&str> = h.marks.iter().map(|m| m.phase.as_str()).collect();
        assert_eq!(
            phases,
            ["minting", "minted", "committed", "notified", "rotated"]
        );
        assert_eq!(h.orphans.len(), 1);
    }

    #[test]
    fn backoff_doubles_is_capped_and_keeps_half_of_the_delay() {
        let b = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(8),
        };
        // (failures, unit, expected ms)
        let cases = [
            (1, 0.0, 500),
            (1, 0.999, 999),
            (2, 0.0, 1000),
            (3, 0.5, 3000),
            (4, 0.0, 4000),
            (5, 0.0, 4000),
            (500, 1.0, 8000),
            (0, 0.0, 500),
        ];
        for (n, unit, ms) in cases {
            assert_eq!(
                b.delay(n, unit).as_millis(),
                ms,
                "{n} failures, unit {unit}"
            );
        }
    }

    #[test]
    fn transient_failures_back_off_then_ask_for_an_operator_when_the_budget_is_spent() {
        let p = policy();
        let lease = Duration::from_secs(60);
        let mut a = attempt(Phase::Minted);
        // (now, expected retry at, expected needs attention)
        let cases = [
            (t(0), Some(t(1)), false),
            (t(1), Some(t(3)), false),
            (t(3), Some(t(7)), false),
            (t(59), Some(t(67)), false),
            (t(60), None, true),
        ];
        for (now, at, attention) in cases {
            a = transient(
                a,
                "provider unavailable",
                None,
                &p,
                1.0,
                "host-a",
                now,
                lease,
            );
            assert_eq!(a.retry.as_ref().map(|r| r.at), at, "at {now}");
            assert_eq!(a.needs_attention, attention, "at {now}");
            if let Some(at) = at {
                assert_eq!(a.lease_expires_at, at + lease, "the lease covers the wait");
            }
        }
        assert!(a.mint_settled, "a recorded failure settles the mint");
        assert!(a.last_error.unwrap().contains("failing for 1m"));
    }

    #[test]
    fn failed_attempts_back_off_and_park_the_credential_after_the_budget() {
        let p = policy();
        let mut r = StateRecord::new("c");
        // (outcome, failures after, retry_at, parked)
        let cases = [
            (Outcome::Failed, 1, Some(t(5)), false),
            (Outcome::Aborted, 1, Some(t(5)), false),
            (Outcome::RolledBack, 2, Some(t(10)), false),
            (Outcome::RolledBack, 3, Some(t(20)), true),
            (Outcome::Rotated, 0, None, true),
        ];
        for (outcome, failures, retry_at, parked) in cases {
            r = finish(r, attempt(Phase::Minted), outcome, None, t(0), &p, 0.0);
            assert_eq!(r.failures, failures, "{outcome:?}");
            assert_eq!(r.retry_at, retry_at, "{outcome:?}");
            assert_eq!(r.parked.is_some(), parked, "{outcome:?}");
        }
        let parked = StateRecord {
            parked: Some(Parked {
                since: t(0),
                reason: "x".into(),
            }),
            ..StateRecord::new("c")
        };
        let backing_off = StateRecord {
            retry_at: Some(t(100)),
            ..StateRecord::new("c")
        };
        let cases = [
            (&parked, t(1000), false, Err("parked")),
            (&parked, t(1000), true, Ok(())),
            (&backing_off, t(99), false, Err("backing off")),
            (&backing_off, t(100), false, Ok(())),
            (&backing_off, t(99), true, Ok(())),
        ];
        for (record, now, manual, expected) in cases {
            let got = may_start(record, now, manual).map_err(|b| match b {
                Blocked::Parked(_) => "parked",
                Blocked::BackingOff(_) => "backing off",
            });
            assert_eq!(got, expected, "at {now}, manual {manual}");
        }
        let r = unpark(parked);
        assert!(r.parked.is_none() && r.failures == 0 && r.retry_at.is_none());
    }

    #[test]
    fn an_attempt_stops_minting_after_its_orphan_budget() {
        let mut a = attempt(Phase::Minting);
        for i in 0..MAX_ORPHANS {
            assert!(!orphans_spent(&a), "after {i} orphans");
            a = note_orphan(a, "lost", t(i as i64));
        }
        assert!(orphans_spent(&a));
    }

    #[test]
    fn the_record_stays_within_its_bounds_however_long_the_history() {
        let p = policy();
        let long_error = "e".repeat(5000);
        let mut r = StateRecord::new("c");
        for i in 0..300 {
            let mut a = attempt(Phase::Minted);
            a.id = format!("a{i}");
            for j in 0..40 {
                a = transient(
                    a,
                    &long_error,
                    Some(Duration::from_secs(2)),
                    &p,
                    0.5,
                    "h",
                    t(j),
                    Duration::from_secs(60),
                );
                if !orphans_spent(&a) {
                    a = note_orphan(a, &long_error, t(j));
                }
                mark(&mut a, "minted", t(j));
            }
            let outcome = if i % 2 == 0 {
                Outcome::Rotated
            } else {
                Outcome::RolledBack
            };
            r = finish(r, a, outcome, Some(long_error.clone()), t(i), &p, 0.5);
            let mut with_attempt = r.clone();
            let mut a = attempt(Phase::Notified);
            a.last_error = Some(long_error.clone());
            with_attempt.attempt = Some(a);
            let (bounded_record, v) = bounded(with_attempt).expect("fits");
            let (strings, bytes) = json_size(&v);
            assert!(
                strings + 3 <= MAX_RECORD_STRINGS,
                "{strings} strings after {i}"
            );
            assert!(bytes <= MAX_RECORD_BYTES, "{bytes} bytes after {i}");
            assert!(!bounded_record.history.is_empty(), "keeps recent attempts");
            r = bounded(r).unwrap().0;
        }
        assert!(r.history.len() <= HISTORY_LIMIT);
        assert_eq!(r.history.last().unwrap().id, "a299", "the newest stay");
    }

    #[test]
    fn a_record_too_large_to_write_is_refused() {
        let mut r = StateRecord::new("c");
        let mut a = attempt(Phase::Minted);
        let mut huge = SecretFields::new();
        for i in 0..500 {
            huge.insert(&format!("field{i}"), "v");
        }
        a.old = Some(huge);
        r.attempt = Some(a);
        assert!(bounded(r).is_err());
    }

    #[test]
    fn validate_names_the_field_a_record_lacks() {
        let with = |f: &dyn Fn(&mut StateRecord)| {
            let mut r = StateRecord::new("c");
            r.attempt = Some(attempt(Phase::Minted));
            f(&mut r);
            r.validate("c").err().unwrap_or_default()
        };
        let cases: Vec<(&str, String)> = vec![
            ("", with(&|_| {})),
            ("field schema: 9", with(&|r| r.schema = 9)),
            ("field credential", with(&|r| r.credential = "other".into())),
            (
                "attempt.pending is null, but phase minted",
                with(&|r| r.attempt.as_mut().unwrap().pending = None),
            ),
            (
                "attempt.version_after is null, but phase notified",
                with(&|r| {
                    let a = r.attempt.as_mut().unwrap();
                    a.phase = Phase::Notified;
                }),
            ),
            (
                "attempt.old is null, but phase rolling_back",
                with(&|r| {
                    let a = r.attempt.as_mut().unwrap();
                    a.phase = Phase::RollingBack;
                    a.version_after = Some(4);
                    a.old = None;
                }),
            ),
            (
                "attempt.version_after is null, but phase awaiting_old_deletion",
                with(&|r| {
                    let a = r.attempt.as_mut().unwrap();
                    a.phase = Phase::AwaitingOldDeletion;
                }),
            ),
        ];
        for (expected, got) in cases {
            if expected.is_empty() {
                assert_eq!(got, "");
            } else {
                assert!(got.contains(expected), "{got:?} should say {expected:?}");
            }
        }
    }

    #[test]
    fn schema_1_records_are_read() {
        let v = serde_json::json!({
            "schema": 1, "credential": "c", "attempt": null,
            "history": [{
                "id": "x", "trigger": "manual", "started_at": t(0), "finished_at": t(1),
                "outcome": "rotated", "version_before": 1, "version_after": 2, "marks": [],
                "orphans": [], "error": null, "expires_at": null
            }]
        });
        let r: StateRecord = serde_json::from_value(v).unwrap();
        assert!(r.validate("c").is_ok());
        assert_eq!(r.history.len(), 1);
        assert_eq!((r.failures, r.parked.is_none()), (0, true));
    }

    #[test]
    fn history_is_written_as_one_compressed_text_and_read_from_a_list_too() {
        let mut r = StateRecord::new("c");
        for _ in 0..HISTORY_LIMIT {
            r = finish(
                r,
                attempt(Phase::Minted),
                Outcome::Rotated,
                None,
                t(2),
                &RetryPolicy::default(),
                1.0,
            );
        }
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["history"].is_string(), "{json}");
        let (strings, bytes) = json_size(&json);
        let list = serde_json::to_string(&r.history).unwrap().len();
        assert!(strings < 20, "{strings} strings: {json}");
        assert!(bytes * 3 < list, "{bytes} bytes against {list} as a list");
        let back: StateRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back.history.len(), HISTORY_LIMIT);
        assert_eq!(back.history[0].id, r.history[0].id);
        // Schema 4 kept it as a list.
        let mut old = serde_json::to_value(&r).unwrap();
        old["schema"] = serde_json::json!(4);
        old["history"] = serde_json::to_value(&r.history).unwrap();
        let back: StateRecord = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(back.history.len(), HISTORY_LIMIT);
        assert!(back.validate("c").is_ok());
        // A plain JSON text is read too.
        old["history"] = serde_json::json!(serde_json::to_string(&r.history).unwrap());
        let back: StateRecord = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(back.history.len(), HISTORY_LIMIT);
        // A text that is neither is an error naming the field.
        old["history"] = serde_json::json!("not history");
        let e = serde_json::from_value::<StateRecord>(old).unwrap_err();
        assert!(e.to_string().contains("history"), "{e}");
    }

    #[test]
    fn record_round_trips_and_keeps_secrets_out_of_debug() {
        let mut a = attempt(Phase::Minted);
        a.pending = Some(SecretFields::new().with("token", "very-secret-new"));
        let mut r = StateRecord::new("c");
        r.attempt = Some(a);
        let json = serde_json::to_value(&r).unwrap();
        let back: StateRecord = serde_json::from_value(json).unwrap();
        let pending = back.attempt.as_ref().unwrap().pending.as_ref().unwrap();
        assert_eq!(pending.expose("token"), Some("very-secret-new"));
        assert!(!format!("{back:?}").contains("very-secret"));
    }
}
