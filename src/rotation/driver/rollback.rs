//! Rollback: the previous credential written back during the grace period, the newer one revoked.

use crate::config::Credential;
use crate::crash;
use crate::events::EventKind;
use crate::providers::Provider;
use crate::rotation::state::{may_act, rolling_back, take_over, Attempt, Outcome, Phase};

use super::{Announce, Engine, EngineError, Extra, Loaded, Next, RunResult, Wait};

impl Engine {
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
        let now = self.now();
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
        let a = rolling_back(a, &self.owner, self.now(), self.settings.lease);
        self.save_attempt(&mut l, &a).await?;
        crash::point("rollback-recorded");
        self.steps(cred, provider, a, &mut l, Wait::All, false)
            .await
    }

    /// The rollback step: write the old credential back over our version (CAS), announce it,
    /// revoke the new one.
    pub(super) async fn roll_back(
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

    pub(super) async fn rollback_conflict(
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
