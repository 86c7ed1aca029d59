//! Revocation of the old credential, and the ack gate that holds it for dependents.

use std::time::Duration;

use crate::config::Credential;
use crate::crash;
use crate::events::EventKind;
use crate::notify::outbox::{self, Deliveries, Gate};
use crate::providers::{Provider, ProviderError};
use crate::rotation::state::{Attempt, Outcome};
use crate::secret::SecretFields;

use super::{Announce, Engine, EngineError, Extra, Loaded, Next, RunResult};

/// How often a revocation held for acks looks at the deliveries record again.
const ACK_RECHECK: Duration = Duration::from_secs(5);

impl Engine {
    /// Revoke a credential and wait until the provider rejects it. `Err` is a reason; with
    /// `retry` true it may pass (try again later), else the provider refused.
    pub(super) async fn revoke_and_confirm(
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

    pub(super) async fn revoke_old(
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

    /// Does a dependent's ack hold the revocation ([`Engine::ack_gate`])? Then `rotated` is
    /// delivered ahead of any write, and unless every such dependent accepted it there, the
    /// commit is recorded (`notified`) before the revocation, so that the delivery worker finds
    /// `credential.rotated` in the record's log.
    pub(super) fn acks_required(cred: &Credential) -> bool {
        cred.dependents.iter().any(|d| d.ack.required)
    }

    /// Has every dependent whose ack holds the revocation accepted the attempt's `rotated`
    /// ahead of its write (in this process, recorded in `l`'s log)? True when none must ack.
    pub(super) fn acked_ahead(&self, cred: &Credential, a: &Attempt, l: &Loaded) -> bool {
        let log = &l.record.events;
        let rotated = format!("{}:{}", a.id, EventKind::Rotated.as_str());
        cred.dependents.iter().filter(|d| d.ack.required).all(|d| {
            log.find(&rotated)
                .is_some_and(|e| log.delivered_through(&d.name) >= e.seq)
        })
    }

    /// Before revoking the old credential: have the dependents with `require_ack` accepted
    /// `credential.rotated`? `Ok` to revoke (with a note naming those revoked over after their
    /// ack timeout), `Err(Waiting)` to look again later; a hold past the ack timeout is recorded
    /// once (`held`) and raises needs_attention, and revocation follows once the acks come.
    pub(super) async fn ack_gate(
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
        let now = self.now();
        let rotated = format!("{}:{}", a.id, EventKind::Rotated.as_str());
        let revoke_after = a.revoke_after.unwrap_or(now);
        // The acks delivered ahead of the state record's writes are in its log: with those
        // alone the gate may be open, and the deliveries record is not read.
        let ahead = Deliveries::new(&cred.name);
        let open = ahead.revocation_gate(&l.record.events, &rotated, &rules, revoke_after, now)
            == Gate::Open;
        // A corrupt deliveries record stops the attempt here, as it stops the delivery
        // worker: no ack is taken from a record nobody can read, and the old credential stays.
        let deliveries = if open {
            ahead
        } else {
            self.records
                .read::<Deliveries>(&cred.name)
                .await?
                .map_or_else(|| Deliveries::new(&cred.name), |(d, _)| d)
        };
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
}
