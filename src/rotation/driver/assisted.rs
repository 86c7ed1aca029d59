//! The engine's side of assisted rotation: `rotation.due` and its reminders, `supply`, the wait
//! for the old credential to die (`confirm-revoked`), `pause` / `resume`, and drift checks.
//!
//! Invariants (besides the driver's): a supplied credential is checked (fields, then the
//! provider's probes) before anything is written, and a rejected one writes nothing; the old
//! credential is never announced revoked before the provider rejects it; `credential.rotated`
//! precedes `credential.revoked`; no secret reaches an event, a log line or an error.

use super::{Announce, Engine, EngineError, Extra, Loaded, Next, RunResult, Wait};
use crate::config::{Credential, ProviderConfig};
use crate::crash;
use crate::events::EventKind;
use crate::providers::bigcommerce_assisted::describe;
use crate::providers::{Mode, Provider, ProviderError};
use crate::rotation::state::{
    self, awaiting_old_deletion, begin_assisted, reminded, reminder_backoff, take_over, Attempt,
    Drift, Phase, Start,
};
use crate::secret::SecretFields;

mod supply;
pub use supply::{what_to_do, Supplied};

/// What a drift check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriftCheck {
    /// Not looked at: paused, a rotation in flight, or no current secret.
    Skipped,
    /// The provider accepts the current credential.
    Fine,
    /// The provider rejects the current credential (first seen now, or earlier).
    Drifted(Drift),
    /// The provider could not say (unavailable): try at the next interval.
    Unknown(String),
}

/// Is a drift check of this credential worth making? Its `drift_interval` is set and its kind
/// says so ([`crate::providers::checks_for_drift`]). The daemon's planner schedules the checks.
pub fn drift_checked(cred: &Credential) -> bool {
    cred.policy.drift_interval.is_some() && crate::providers::checks_for_drift(&cred.provider())
}

impl Engine {
    /// Begin an assisted attempt: preflight, then `rotation.due` (in the write that records the
    /// attempt in phase `awaiting_supply`).
    pub(super) async fn begin_assisted(
        &self,
        cred: &Credential,
        l: &mut Loaded,
        trigger: &str,
        (version, current): (u64, Option<SecretFields>),
    ) -> Result<RunResult, EngineError> {
        let now = self.now();
        let a = begin_assisted(
            Start {
                id: uuid::Uuid::new_v4().to_string(),
                owner: &self.owner,
                trigger,
                now,
                lease: self.settings.lease,
                version,
                current,
                lifetime: None,
            },
            cred.policy.supply_deadline,
            cred.policy.supply_reminder,
        );
        let mut a = a;
        // The lease covers the wait for a reminder: no write until then.
        a.lease_expires_at = a.next_check.unwrap_or(now) + self.settings.lease;
        self.announce_due(cred, &a, l, 0);
        crash::point("due-emitted");
        self.save_attempt(l, &a).await?;
        tracing::warn!(credential = %cred.name, attempt = %a.id, trigger, deadline = %a.deadline.unwrap_or(now).to_rfc3339(), "credential due: a person must regenerate it and run `secret-rotator supply {}`", cred.name);
        Ok(RunResult::Waiting {
            until: a.next_check.unwrap_or(now),
        })
    }

    fn announce_due(&self, cred: &Credential, a: &Attempt, l: &mut Loaded, reminder: u32) {
        let deadline = a
            .deadline
            .map(crate::human::time)
            .unwrap_or_else(|| "-".into());
        let then = match (&*cred.provider(), &a.old) {
            (ProviderConfig::BigCommerceStoreAccount(_), Some(old)) => format!(
                "; once it is committed, delete the old {} in the control panel",
                describe(&cred.provider(), old).trim_start_matches("the ")
            ),
            _ => String::new(),
        };
        let detail = format!(
            "due ({}): {} by {deadline}{then}{}",
            a.trigger,
            what_to_do(cred),
            if reminder > 0 {
                format!(" (reminder {reminder})")
            } else {
                String::new()
            }
        );
        self.emit(
            l,
            cred,
            &a.id,
            Announce {
                kind: EventKind::Due,
                version: (a.version_before > 0).then_some(a.version_before),
                detail: &detail,
                extra: Extra {
                    reminder,
                    ..Extra::default()
                },
            },
        );
    }

    /// `rotation.due` again, then the next reminder a longer wait away.
    pub(super) async fn remind(
        &self,
        cred: &Credential,
        a: Attempt,
        l: &mut Loaded,
    ) -> Result<Next, EngineError> {
        self.announce_due(cred, &a, l, a.checks + 1);
        let now = self.now();
        let mut a = reminded(
            take_over(a, &self.owner, now, self.settings.lease),
            now,
            reminder_backoff(cred.policy.supply_reminder),
            self.unit(),
        );
        a.lease_expires_at = a.next_check.unwrap_or(now) + self.settings.lease;
        self.save_attempt(l, &a).await?;
        Ok(Ok(a))
    }

    /// After the commit of a supplied credential. A regenerated token: check the old one is
    /// dead before announcing anything. A store-level account: announce `rotated` now, then
    /// wait for a person to delete the old account.
    pub(super) async fn committed_assisted(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
        a: Attempt,
        l: &mut Loaded,
        version: u64,
    ) -> Result<Next, EngineError> {
        let now = self.now();
        tracing::info!(credential = %cred.name, attempt = %a.id, version, "supplied credential committed");
        let regenerated = provider.old_dies_at_supply();
        if !regenerated {
            let detail = match &a.old {
                Some(old) => format!(
                    "a new version is live; once every reader uses it, delete the old {} in the control panel (webhooks created by the old account vanish with it: re-create them under the new account first)",
                    describe(&cred.provider(), old).trim_start_matches("the ")
                ),
                None => "a new version is live".to_string(),
            };
            let detail = detail.as_str();
            self.emit(
                l,
                cred,
                &a.id,
                Announce {
                    kind: EventKind::Rotated,
                    version: Some(version),
                    detail,
                    extra: Extra {
                        previous_version: (a.version_before > 0).then_some(a.version_before),
                        revoke_after: None,
                        reminder: 0,
                    },
                },
            );
            crash::point("rotated-emitted");
        }
        let first_check = if regenerated {
            now
        } else {
            now + state::OLD_POLL.delay(1, self.unit())
        };
        let a = awaiting_old_deletion(
            a,
            version,
            !regenerated,
            first_check,
            now + cred.policy.grace,
            &self.owner,
            now,
            self.settings.lease,
        );
        self.save_attempt(l, &a).await?;
        crash::point("old-deletion-recorded");
        Ok(Ok(a))
    }

    /// Is the old credential rejected yet? Then `rotated` (if not yet announced) and `revoked`,
    /// and the attempt ends. Else look again later; past the grace period, say so once.
    pub(super) async fn check_old(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
        a: Attempt,
        l: &mut Loaded,
    ) -> Result<Next, EngineError> {
        let dead = match &a.old {
            None => Ok(true),
            Some(old) => {
                self.call("check the old credential", provider.verify_revoked(old))
                    .await
            }
        };
        let now = self.now();
        match dead {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                let note = match &dead {
                    Err(e) => format!("cannot tell whether the old credential is rejected: {e}"),
                    _ if provider.old_dies_at_supply() => "the old token is still accepted: was the new one saved in the control panel?".to_string(),
                    _ => format!(
                        "the old account still answers: delete {} in the control panel (or run `secret-rotator confirm-revoked {}` once it is)",
                        a.old.as_ref().map(|o| describe(&cred.provider(), o)).unwrap_or_default().trim_start_matches("the "),
                        cred.name
                    ),
                };
                tracing::info!(credential = %cred.name, attempt = %a.id, "{note}");
                let mut a = state::old_still_alive(
                    a,
                    now,
                    &note,
                    &self.owner,
                    self.settings.lease,
                    self.unit(),
                );
                if a.held.is_none() && a.revoke_after.is_some_and(|t| now >= t) {
                    let reason = format!(
                        "the old credential is still accepted after the grace period: {note}"
                    );
                    a.held = Some(reason.clone());
                    self.emit(
                        l,
                        cred,
                        &a.id,
                        Announce {
                            kind: EventKind::NeedsAttention,
                            version: Some(a.version_before),
                            detail: &reason,
                            extra: Extra::default(),
                        },
                    );
                }
                self.save_attempt(l, &a).await?;
                crash::point("old-alive-recorded");
                return Ok(Err(RunResult::Waiting {
                    until: a.next_check.unwrap_or(now),
                }));
            }
        }
        let version = a.version_after.expect("validated on load");
        if !a.announced {
            self.emit(
                l,
                cred,
                &a.id,
                Announce {
                    kind: EventKind::Rotated,
                    version: Some(version),
                    detail: "a new version is live (the regenerated token replaced the old one, which is rejected)",
                    extra: Extra {
                        previous_version: (a.version_before > 0).then_some(a.version_before),
                        revoke_after: None,
                        reminder: 0,
                    },
                },
            );
        }
        if a.old.is_some() {
            let detail = if provider.old_dies_at_supply() {
                "the previous token is rejected (regenerated in the control panel)"
            } else {
                "the previous account is deleted: its token is rejected (webhooks it created are gone with it)"
            };
            tracing::info!(credential = %cred.name, attempt = %a.id, version = a.version_before, "old credential rejected by the provider");
            self.emit(
                l,
                cred,
                &a.id,
                Announce {
                    kind: EventKind::Revoked,
                    version: Some(a.version_before),
                    detail,
                    extra: Extra::default(),
                },
            );
            crash::point("revoked-emitted");
        }
        let r = self
            .end(cred, a, l, crate::rotation::Outcome::Rotated, None)
            .await?;
        crash::point("finished");
        Ok(Err(r))
    }

    /// `confirm-revoked NAME`: a person says the old credential is gone; checked with the
    /// provider (still accepted: `Err(Refused)`), then `credential.revoked` and the attempt ends.
    pub async fn confirm_revoked(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
    ) -> Result<RunResult, EngineError> {
        let refuse = |reason: String| EngineError::Refused {
            credential: cred.name.clone(),
            reason,
        };
        let (record, version) = self.load(&cred.name).await?;
        let mut l = Loaded::new(record, version);
        let Some(a) = l.record.attempt.clone() else {
            return Err(refuse(format!(
                "no rotation waits for the old credential to die (`secret-rotator status` shows the credential, `secret-rotator rotate {}` starts a rotation)",
                cred.name
            )));
        };
        if a.phase != Phase::AwaitingOldDeletion {
            let next = if a.phase == Phase::AwaitingSupply {
                format!(
                    "`secret-rotator supply {}` takes the new credential",
                    cred.name
                )
            } else {
                format!("`secret-rotator rotate {}` drives it", cred.name)
            };
            return Err(refuse(format!(
                "the rotation in flight is in phase {}, not waiting for the old credential to die: {next}",
                a.phase.as_str()
            )));
        }
        if let Some(old) = &a.old {
            match self
                .call("check the old credential", provider.verify_revoked(old))
                .await
            {
                Ok(true) => {}
                Ok(false) if provider.old_dies_at_supply() => {
                    return Err(refuse(format!(
                        "the store still accepts the previous token: select Save after regenerating it in the control panel, then run `secret-rotator confirm-revoked {}` again (`secret-rotator cancel {}` stops waiting)",
                        cred.name, cred.name
                    )))
                }
                Ok(false) => {
                    return Err(refuse(format!(
                        "the store still accepts the old credential: delete {} in the control panel first, then run `secret-rotator confirm-revoked {}` again (`secret-rotator cancel {}` stops waiting)",
                        describe(&cred.provider(), old).trim_start_matches("the "),
                        cred.name,
                        cred.name
                    )))
                }
                Err(e) => {
                    return Err(refuse(format!(
                        "cannot check the old credential now: {e}"
                    )))
                }
            }
        }
        let mut a = take_over(a, &self.owner, self.now(), self.settings.lease);
        a.next_check = None;
        self.save_attempt(&mut l, &a).await?;
        self.steps(cred, provider, a, &mut l, Wait::Retries, false)
            .await
    }

    /// `pause NAME` (`paused` true) or `resume NAME`: recorded in the state record (check-and-set:
    /// a daemon in the middle of a step is fenced and stops). Returns whether it changed.
    pub async fn set_paused(
        &self,
        credential: &str,
        paused: bool,
        by: &str,
    ) -> Result<bool, EngineError> {
        let (record, version) = self.load(credential).await?;
        if record.paused.is_some() == paused {
            return Ok(false);
        }
        let mut l = Loaded::new(record, version);
        l.record = if paused {
            state::pause(l.record, by, self.now())
        } else {
            state::resume(l.record)
        };
        self.save(&mut l).await?;
        Ok(true)
    }

    /// Verify the current credential. A rejection the daemon did not cause is drift:
    /// `credential.drift` (once per version), shown in `status`, and for an assisted kind a
    /// new attempt asking for a supply (`rotation.due`). The daemon calls it per credential
    /// every `drift_interval`, as its planner schedules it.
    pub async fn check_drift(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
    ) -> Result<DriftCheck, EngineError> {
        let (record, version) = self.load(&cred.name).await?;
        if record.paused.is_some() || record.attempt.is_some() {
            return Ok(DriftCheck::Skipped);
        }
        let (current_version, current) = self.read_current(&cred.secret).await?;
        let Some(current) = current else {
            return Ok(DriftCheck::Skipped);
        };
        let mut l = Loaded::new(record, version);
        match self.call("verify", provider.verify(&current)).await {
            Ok(()) => {
                if l.record.drift.is_some() {
                    l.record.drift = None;
                    self.save(&mut l).await?;
                }
                Ok(DriftCheck::Fine)
            }
            Err(ProviderError::Rejected { reason }) => {
                if let Some(d) = l
                    .record
                    .drift
                    .clone()
                    .filter(|d| d.version == current_version)
                {
                    return Ok(DriftCheck::Drifted(d));
                }
                let drift = Drift {
                    since: self.now(),
                    version: current_version,
                    reason: format!(
                        "version {current_version} is rejected although secret-rotator did not change it: {reason}"
                    ),
                };
                tracing::error!(credential = %cred.name, version = current_version, reason = %drift.reason, "credential drift");
                self.emit(
                    &mut l,
                    cred,
                    &format!("{}:v{current_version}", cred.name),
                    Announce {
                        kind: EventKind::Drift,
                        version: Some(current_version),
                        detail: &drift.reason,
                        extra: Extra::default(),
                    },
                );
                l.record.drift = Some(drift.clone());
                if provider.info().mode == Mode::Assisted {
                    // Ask for a supply; the attempt is written with the drift.
                    let found = self.preflight(cred, provider).await?;
                    self.begin_assisted(cred, &mut l, "drift", found).await?;
                } else {
                    self.save(&mut l).await?;
                }
                Ok(DriftCheck::Drifted(drift))
            }
            Err(e) => Ok(DriftCheck::Unknown(e.to_string())),
        }
    }
}
