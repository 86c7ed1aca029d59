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

use crate::secret::SecretFields;

/// Possible orphans one attempt may accumulate before it stops minting and asks for an operator.
pub const MAX_ORPHANS: usize = 3;
const MAX_MARKS: usize = 12;
const MAX_ERROR_CHARS: usize = 300;

pub use crate::ledger::{
    bounded, json_size, Attempt, AttemptSummary, Backoff, Drift, Mark, Orphan, Outcome, Parked,
    Paused, Phase, Retry, StateRecord, TooLarge, HISTORY_LIMIT, MAX_RECORD_BYTES,
    MAX_RECORD_STRINGS, OLDEST_SCHEMA, SCHEMA,
};

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
mod tests;
