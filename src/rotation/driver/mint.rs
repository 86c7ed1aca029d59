//! Mint and commit: one mint under the record's accounting, the discard of an unwanted new
//! credential, and the verified check-and-set commit of the secret.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{Credential, KvPath};
use crate::crash;
use crate::events::EventKind;
use crate::providers::{MintRequest, Mode, Provider, ProviderError};
use crate::rotation::state::{
    commit_check, committed, minted, note_orphan, orphans_spent, take_over, Attempt, CommitCheck,
    Outcome,
};
use crate::secret::SecretFields;

use super::{asked_wait, Announce, Engine, EngineError, Extra, Loaded, Next};

impl Engine {
    /// How long a minted credential lives, for providers whose credentials expire: longer than
    /// the rotation period plus the expiry lead plus grace, so the expiry never makes it due
    /// before its age does and a late rotation still finds it alive; and bounded, so one that
    /// nobody holds dies on its own.
    pub fn lifetime(cred: &Credential) -> Duration {
        // A secret-id's lifetime is set on the provider itself.
        if let crate::config::ProviderConfig::VaultAppRoleSecretId(c) = &*cred.provider() {
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

    /// One mint. Called only when the record says a mint may be under way (`mint_settled`
    /// false); a resumed attempt whose last mint is not settled first records it as a possible
    /// orphan, so that every mint's outcome, whatever it is, is accounted for. The retry (its
    /// count and the time of the first failure) is kept, so backoff and budget go on growing.
    pub(super) async fn mint(
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
                    self.now(),
                );
                // Noted: that mint is accounted for. An attempt that stops here (its orphans
                // spent) and is resumed again notes no second orphan for the same mint (each
                // `rotate` of a stopped attempt added one: `simulation` seed 14).
                a.mint_settled = true;
            }
            if orphans_spent(&a) {
                let n = a.orphans.len();
                return self
                    .attention(cred, a, l, format!("{n} mints of this attempt may have created credentials nobody holds (they expire on their own); it mints no more until an operator looks"))
                    .await;
            }
            a.mint_settled = false;
            a = take_over(a, &self.owner, self.now(), self.settings.lease);
            self.save_attempt(l, &a).await?;
        }
        let now = self.now();
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
                    self.now(),
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
                let a = note_orphan(a, &format!("mint outcome unknown: {reason}"), self.now());
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
    pub(super) async fn discard(
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
    pub(super) async fn write_once(
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
    pub(super) async fn write_once_created(
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

    pub(super) async fn verify_and_commit(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
        a: Attempt,
        l: &mut Loaded,
    ) -> Result<Next, EngineError> {
        let pending = a.pending.clone().expect("validated on load");
        // Resumed: the commit may have landed before a crash or a lost answer. The secret is
        // read before the verification: a credential found committed was verified before it
        // was written and is current now, so it is not verified again (a rejection then
        // discarded the current credential: `simulation` seed 1).
        let found = if l.began_here {
            CommitCheck::Write
        } else {
            let (version, current) = self.read_current(&cred.secret).await?;
            let ours = current.as_ref().is_some_and(|c| c.same_as(&pending));
            commit_check(a.version_before, version, ours)
        };
        let (a, written) = match found {
            CommitCheck::AlreadyCommitted(v) => (a, Ok((v, None))),
            CommitCheck::Conflict(theirs) => (a, Err(theirs)),
            CommitCheck::Write => {
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
                // Still ours? A reply that came back after the lease ran out (a slow write of
                // the record, a verification at its deadline) leaves the attempt to whoever
                // took it over, who may be rolling it back: committing now would make current
                // a credential its record says was discarded (`simulation` seed 9224).
                let a = self.hold(l, a).await?;
                // Just read (resumed) or read by preflight (begun in this call).
                let written = self
                    .write_once_created(&cred.secret, &pending, a.version_before, false)
                    .await?;
                (a, written)
            }
        };
        let (version, created) = match written {
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
        let now = self.now();
        let stored_lease = a.lease_expires_at;
        let mut a = committed(a, version, &self.owner, now, grace, self.settings.lease);
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
        if !grace.is_zero() || Self::acks_required(cred) {
            // Something waits before the revocation: the dependents get `rotated` now, ahead
            // of the write that records it, and that write records their acks too.
            self.deliver_ahead(cred, l, "ahead-of-notified").await;
        }
        if grace.is_zero() && self.acked_ahead(cred, &a, l) {
            // Nothing waits between the commit and the revocation (no grace, and every ack
            // the revocation needs came ahead of any write): the `notified` write is
            // skipped, and the write that ends the attempt carries `rotated` with `revoked`
            // (and the deliveries made ahead of it).
            // The secret's new version says what it would have said: a crash from here on
            // resumes in `minted`, finds the commit ([`commit_check`]), announces `rotated`
            // again (its acks are asked again) and revokes the old credential (kept in the
            // record since `minting`). The lease is the one stored.
            a.lease_expires_at = stored_lease;
            return Ok(Ok(a));
        }
        self.save_attempt(l, &a).await?;
        crash::point("notified-recorded");
        Ok(Ok(a))
    }

    pub(super) async fn conflict(
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
}
