//! The rotation state machine, pure: the record kept in Vault, its phases, and what to do next
//! from any recorded state.
//!
//! Invariants: no IO, no clock, no randomness (all passed in); every transition returns a new
//! record that the driver writes with check-and-set before it takes the next external step, so
//! a crash at any line resumes from the last record written.
//!
//! Phases of an attempt (no attempt = idle):
//!
//! ```text
//! Minting --mint ok--> Minted --verify ok, commit (CAS)--> Notified --grace over, revoke old,
//!                                                                   old rejected--> (idle)
//!    \--rejected--> Failed   \--rejected: revoke new--> RolledBack
//!                            \--CAS mismatch: revoke new--> Aborted
//! ```
//!
//! "Verified" and "Committed" are not written as phases of their own: verification is repeated
//! on resume (it is idempotent), and a commit is detected on resume by comparing the secret's
//! current version with the pending secret. That keeps the common path at five Vault writes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::secret::SecretFields;

/// How many finished attempts a record keeps.
pub const HISTORY_LIMIT: usize = 50;
pub const SCHEMA: u32 = 1;

/// The daemon's record for one credential, kept at `{state_mount}/{state_prefix}/credentials/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateRecord {
    pub schema: u32,
    pub credential: String,
    /// The attempt in flight, if any.
    pub attempt: Option<Attempt>,
    /// Finished attempts, oldest first.
    #[serde(default)]
    pub history: Vec<AttemptSummary>,
}

impl StateRecord {
    pub fn new(credential: &str) -> StateRecord {
        StateRecord {
            schema: SCHEMA,
            credential: credential.to_string(),
            attempt: None,
            history: Vec::new(),
        }
    }
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
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Minting => "minting",
            Phase::Minted => "minted",
            Phase::Notified => "notified",
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
    /// The secret's version when the attempt started (0: it did not exist).
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
    /// Set after capped retries: the daemon stops retrying until an operator acts
    /// (`rotate NAME` resumes it).
    #[serde(default)]
    pub needs_attention: bool,
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
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Rotated => "rotated",
            Outcome::RolledBack => "rolled_back",
            Outcome::Aborted => "aborted",
            Outcome::Failed => "failed",
            Outcome::Reverted => "reverted",
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
}

/// The next step of an attempt at `now`.
pub fn next_step(a: &Attempt, now: DateTime<Utc>) -> Step {
    match a.phase {
        Phase::Minting => Step::Mint,
        Phase::Minted => Step::VerifyAndCommit,
        Phase::Notified => match a.revoke_after {
            Some(t) if now < t => Step::WaitUntil(t),
            _ => Step::RevokeOld,
        },
    }
}

/// May `me` make the next transition of this attempt? The lease holder may; anyone may once the
/// lease has expired or the holder is known to be dead (its next CAS write would fail anyway).
pub fn may_act(a: &Attempt, me: &str, now: DateTime<Utc>, holder_dead: bool) -> bool {
    a.owner == me || holder_dead || now >= a.lease_expires_at
}

/// Everything needed to start an attempt.
pub struct Start<'a> {
    pub id: String,
    pub owner: &'a str,
    pub trigger: &'a str,
    pub now: DateTime<Utc>,
    pub lease: Duration,
    /// The secret as read at the start: version and data; `None` when it does not exist.
    pub current: Option<(u64, SecretFields)>,
    /// For providers whose credentials expire: how long the new one lives.
    pub lifetime: Option<Duration>,
}

pub fn begin(s: Start<'_>) -> Attempt {
    let (version_before, old) = match s.current {
        Some((v, data)) => (v, Some(data)),
        None => (0, None),
    };
    Attempt {
        id: s.id,
        owner: s.owner.to_string(),
        lease_expires_at: s.now + s.lease,
        phase: Phase::Minting,
        trigger: s.trigger.to_string(),
        started_at: s.now,
        updated_at: s.now,
        version_before,
        old,
        planned_expires_at: s.lifetime.map(|l| s.now + l),
        pending: None,
        pending_expires_at: None,
        version_after: None,
        revoke_after: None,
        orphans: Vec::new(),
        marks: vec![Mark {
            phase: Phase::Minting.as_str().into(),
            at: s.now,
        }],
        last_error: None,
        needs_attention: false,
    }
}

fn touched(mut a: Attempt, owner: &str, now: DateTime<Utc>, lease: Duration) -> Attempt {
    a.owner = owner.to_string();
    a.updated_at = now;
    a.lease_expires_at = now + lease;
    a
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
        reason: reason.to_string(),
    });
    a
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
    a.marks.push(Mark {
        phase: Phase::Minted.as_str().into(),
        at: now,
    });
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
    a.marks.push(Mark {
        phase: "committed".into(),
        at: now,
    });
    a.marks.push(Mark {
        phase: Phase::Notified.as_str().into(),
        at: now,
    });
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
    a.last_error = Some(error.to_string());
    a.needs_attention = attention;
    a
}

/// End the attempt: move it into the history, leaving the record idle.
pub fn finish(
    mut record: StateRecord,
    mut a: Attempt,
    outcome: Outcome,
    error: Option<String>,
    now: DateTime<Utc>,
) -> StateRecord {
    a.marks.push(Mark {
        phase: outcome.as_str().into(),
        at: now,
    });
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
    });
    if record.history.len() > HISTORY_LIMIT {
        let extra = record.history.len() - HISTORY_LIMIT;
        record.history.drain(..extra);
    }
    record.attempt = None;
    record
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

/// Delay before retry number `n` (0-based) of a step: 250 ms doubling, capped at `cap`.
pub fn backoff(n: u32, cap: Duration) -> Duration {
    let ms = 250u64.saturating_mul(1u64 << n.min(20));
    Duration::from_millis(ms).min(cap)
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
            current: Some((3, SecretFields::new().with("token", "old"))),
            lifetime: Some(Duration::from_secs(3600)),
        });
        a.phase = phase;
        a
    }

    #[test]
    fn next_step_from_every_recorded_state() {
        let mut notified = attempt(Phase::Notified);
        notified.revoke_after = Some(t(100));
        let cases: Vec<(Attempt, DateTime<Utc>, Step)> = vec![
            (attempt(Phase::Minting), t(1), Step::Mint),
            (attempt(Phase::Minted), t(1), Step::VerifyAndCommit),
            (notified.clone(), t(50), Step::WaitUntil(t(100))),
            (notified.clone(), t(100), Step::RevokeOld),
            (notified, t(500), Step::RevokeOld),
        ];
        for (a, now, expected) in cases {
            assert_eq!(next_step(&a, now), expected, "phase {:?} at {now}", a.phase);
        }
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
        let missing = begin(Start {
            id: "a2".into(),
            owner: "h",
            trigger: "missing",
            now: t(0),
            lease: Duration::from_secs(60),
            current: None,
            lifetime: None,
        });
        assert_eq!(missing.version_before, 0);
        assert!(missing.old.is_none() && missing.planned_expires_at.is_none());
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
        let r = finish(StateRecord::new("c"), a, Outcome::Rotated, None, t(60));
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
    fn history_is_bounded() {
        let mut r = StateRecord::new("c");
        for i in 0..(HISTORY_LIMIT + 5) {
            let mut a = attempt(Phase::Minting);
            a.id = format!("a{i}");
            r = finish(r, a, Outcome::Failed, Some("x".into()), t(i as i64));
        }
        assert_eq!(r.history.len(), HISTORY_LIMIT);
        assert_eq!(r.history[0].id, "a5");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let cap = Duration::from_secs(5);
        let got: Vec<u64> = (0..8).map(|n| backoff(n, cap).as_millis() as u64).collect();
        assert_eq!(got, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
        assert_eq!(backoff(200, cap), cap);
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
