//! The rotation driver: carries out the steps the state machine names, against Vault and the
//! provider, writing the state record with check-and-set before each external step.
//!
//! Invariants: the state record is only ever written with CAS on the version this driver last
//! read or wrote (a failed CAS means another instance took over: stop, do nothing more); a secret
//! value never reaches a log line, an event or an error text; retries are capped and end in a
//! loud "needs attention" state, never a hot loop.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::state::{
    self, begin, commit_check, committed, failed_step, finish, may_act, minted, next_step,
    note_orphan, take_over, Attempt, AttemptSummary, CommitCheck, Outcome, Phase, Start,
    StateRecord, Step,
};
use crate::config::{Credential, KvPath};
use crate::crash;
use crate::events::{Event, EventKind, EventSink};
use crate::providers::{MintRequest, Provider, ProviderError};
use crate::secret::SecretFields;
use crate::vault::{Vault, VaultError};

/// Tunables of the driver; the defaults suit production.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// How long an instance holds an attempt without writing to it.
    pub lease: Duration,
    /// Tries of one provider step before the attempt needs attention.
    pub max_tries: u32,
    pub backoff_cap: Duration,
    /// How long to wait for a revoked credential to be rejected.
    pub revocation_timeout: Duration,
    pub poll_interval: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            lease: Duration::from_secs(300),
            max_tries: 6,
            backoff_cap: Duration::from_secs(30),
            revocation_timeout: Duration::from_secs(120),
            poll_interval: Duration::from_millis(250),
        }
    }
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
    #[error("state record {path} is unreadable: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("credential {credential}: {reason}")]
    Refused { credential: String, reason: String },
}

pub struct Engine {
    pub vault: Arc<Vault>,
    pub events: Arc<dyn EventSink>,
    /// This instance's identity in leases (stable across restarts of the same instance).
    pub owner: String,
    pub state_mount: String,
    pub state_prefix: String,
    pub settings: EngineSettings,
}

/// The record as read, with the version to CAS against.
struct Loaded {
    record: StateRecord,
    version: u64,
}

impl Engine {
    pub fn state_path(&self, credential: &str) -> KvPath {
        KvPath {
            mount: self.state_mount.clone(),
            path: format!("{}/credentials/{}", self.state_prefix, credential),
        }
    }

    /// Read a credential's state record (a fresh one when there is none).
    pub async fn load(&self, credential: &str) -> Result<(StateRecord, u64), EngineError> {
        let path = self.state_path(credential);
        match self.vault.read_json(&path).await? {
            None => Ok((StateRecord::new(credential), 0)),
            Some((value, version)) => {
                let record: StateRecord =
                    serde_json::from_value(value).map_err(|e| EngineError::Corrupt {
                        path: path.to_string(),
                        reason: e.to_string(),
                    })?;
                Ok((record, version))
            }
        }
    }

    async fn save(&self, l: &mut Loaded) -> Result<(), EngineError> {
        let path = self.state_path(&l.record.credential);
        let body = serde_json::to_value(&l.record).expect("state records serialise");
        match self.vault.write_json_cas(&path, &body, l.version).await {
            Ok(v) => {
                l.version = v;
                Ok(())
            }
            Err(VaultError::CasMismatch { .. }) => Err(EngineError::Fenced {
                credential: l.record.credential.clone(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    async fn save_attempt(&self, l: &mut Loaded, a: &Attempt) -> Result<(), EngineError> {
        l.record.attempt = Some(a.clone());
        self.save(l).await
    }

    fn emit(
        &self,
        kind: EventKind,
        cred: &Credential,
        a: &Attempt,
        version: Option<u64>,
        detail: &str,
    ) {
        self.events.emit(&Event::new(
            kind,
            &cred.name,
            &a.id,
            Utc::now(),
            version,
            detail,
        ));
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

    /// Drive the credential's rotation as far as it can go now. `start`: begin an attempt with
    /// this trigger when none is in flight (and resume one that needs attention). `wait`: sleep
    /// through the grace period instead of returning [`RunResult::Waiting`].
    pub async fn drive(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
        start: Option<&str>,
        wait: bool,
    ) -> Result<RunResult, EngineError> {
        let now = Utc::now();
        let (record, version) = self.load(&cred.name).await?;
        let mut l = Loaded { record, version };
        let lease = self.settings.lease;
        let (mut a, mut resumed) = match l.record.attempt.take() {
            Some(a) => {
                let holder_dead =
                    a.owner != self.owner && crate::instance::holder_is_dead(&a.owner);
                if !may_act(&a, &self.owner, now, holder_dead) {
                    return Ok(RunResult::Busy {
                        owner: a.owner,
                        until: a.lease_expires_at,
                    });
                }
                if a.needs_attention && start.is_none() {
                    return Ok(RunResult::NeedsAttention {
                        phase: a.phase,
                        error: a.last_error.unwrap_or_default(),
                    });
                }
                let mut a = a;
                if a.owner != self.owner || a.needs_attention {
                    a.needs_attention = false;
                    a = take_over(a, &self.owner, now, lease);
                    self.save_attempt(&mut l, &a).await?;
                }
                tracing::info!(credential = %cred.name, attempt = %a.id, phase = a.phase.as_str(), "resuming rotation");
                (a, true)
            }
            None => {
                let Some(trigger) = start else {
                    return Ok(RunResult::Idle);
                };
                let current = self.vault.read_optional(&cred.secret).await?;
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
                    current: current.map(|c| (c.version, c.data)),
                    lifetime,
                });
                self.save_attempt(&mut l, &a).await?;
                tracing::info!(credential = %cred.name, attempt = %a.id, trigger, version_before = a.version_before, "rotation started");
                crash::point("minting-recorded");
                (a, false)
            }
        };

        loop {
            match next_step(&a, Utc::now()) {
                Step::Mint => {
                    if resumed {
                        a = note_orphan(
                            a,
                            "resumed in phase minting: a credential may have been minted and lost",
                            Utc::now(),
                        );
                    }
                    match self.mint(cred, provider, a, &mut l).await? {
                        Ok(next) => a = next,
                        Err(done) => return Ok(done),
                    }
                }
                Step::VerifyAndCommit => {
                    match self.verify_and_commit(cred, provider, a, &mut l).await? {
                        Ok(next) => a = next,
                        Err(done) => return Ok(done),
                    }
                }
                Step::WaitUntil(t) => {
                    if !wait {
                        return Ok(RunResult::Waiting { until: t });
                    }
                    let left = (t - Utc::now()).to_std().unwrap_or_default();
                    tracing::info!(credential = %cred.name, grace_left = %humantime::format_duration(Duration::from_secs(left.as_secs())), "waiting out the grace period before revoking the old credential");
                    tokio::time::sleep(left).await;
                }
                Step::RevokeOld => return self.revoke_old(cred, provider, a, l).await,
            }
            resumed = false;
        }
    }

    /// Give up on an attempt for now: record the error and stop retrying until an operator acts.
    async fn needs_attention(
        &self,
        cred: &Credential,
        a: Attempt,
        l: &mut Loaded,
        error: String,
    ) -> Result<RunResult, EngineError> {
        let a = failed_step(
            a,
            &error,
            true,
            &self.owner,
            Utc::now(),
            self.settings.lease,
        );
        self.save_attempt(l, &a).await?;
        tracing::error!(credential = %cred.name, attempt = %a.id, phase = a.phase.as_str(), error = %error, "rotation needs attention");
        self.emit(EventKind::NeedsAttention, cred, &a, a.version_after, &error);
        Ok(RunResult::NeedsAttention {
            phase: a.phase,
            error,
        })
    }

    /// End an attempt that changed nothing at the secret's path (failed, rolled back, aborted).
    async fn end_unchanged(
        &self,
        cred: &Credential,
        a: Attempt,
        l: &mut Loaded,
        outcome: Outcome,
        error: String,
    ) -> Result<RunResult, EngineError> {
        tracing::warn!(credential = %cred.name, attempt = %a.id, outcome = outcome.as_str(), error = %error, "rotation did not complete; the current credential stays");
        self.emit(
            EventKind::Failed,
            cred,
            &a,
            Some(a.version_before),
            &format!("{}: {error}", outcome.as_str()),
        );
        let record = std::mem::replace(&mut l.record, StateRecord::new(&cred.name));
        l.record = finish(record, a, outcome, Some(error), Utc::now());
        self.save(l).await?;
        Ok(RunResult::Finished(Box::new(
            l.record.history.last().cloned().expect("just finished"),
        )))
    }

    /// Mint with capped retries. `Ok(Ok(attempt))`: minted and recorded.
    async fn mint(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
        mut a: Attempt,
        l: &mut Loaded,
    ) -> Result<Result<Attempt, RunResult>, EngineError> {
        let s = &self.settings;
        let mut last = String::new();
        for n in 0..s.max_tries {
            let now = Utc::now();
            let req = MintRequest {
                attempt_id: a.id.clone(),
                now,
                expires_at: a
                    .planned_expires_at
                    .unwrap_or_else(|| now + Self::lifetime(cred)),
            };
            match provider.mint(&req).await {
                Ok(m) => {
                    crash::point("minted");
                    let a = minted(a, m.secret, m.expires_at, &self.owner, Utc::now(), s.lease);
                    self.save_attempt(l, &a).await?;
                    tracing::info!(credential = %cred.name, attempt = %a.id, "new credential minted");
                    crash::point("minted-recorded");
                    return Ok(Ok(a));
                }
                Err(ProviderError::UnknownOutcome { reason }) => {
                    tracing::warn!(credential = %cred.name, attempt = %a.id, reason = %reason, "mint outcome unknown; a credential may exist that nobody holds (it expires on its own); minting again");
                    a = note_orphan(a, &format!("mint outcome unknown: {reason}"), Utc::now());
                    last = reason;
                    tokio::time::sleep(state::backoff(n, s.backoff_cap)).await;
                }
                Err(ProviderError::Transient {
                    reason,
                    retry_after,
                }) => {
                    let delay = retry_after
                        .unwrap_or_default()
                        .max(state::backoff(n, s.backoff_cap));
                    tracing::warn!(credential = %cred.name, reason = %reason, retry_in_ms = delay.as_millis() as u64, "provider unavailable while minting; retrying");
                    last = reason;
                    tokio::time::sleep(delay).await;
                }
                Err(e @ (ProviderError::Rejected { .. } | ProviderError::Config { .. })) => {
                    return self
                        .end_unchanged(cred, a, l, Outcome::Failed, format!("mint: {e}"))
                        .await
                        .map(Err);
                }
            }
        }
        self.needs_attention(
            cred,
            a,
            l,
            format!("mint failed {} times: {last}", s.max_tries),
        )
        .await
        .map(Err)
    }

    /// Retry a provider call on transient errors, up to `max_tries`.
    async fn with_retries<T, F, Fut>(&self, what: &str, op: F) -> Result<T, ProviderError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let s = &self.settings;
        let mut n = 0;
        loop {
            match op().await {
                Err(ProviderError::Transient {
                    reason,
                    retry_after,
                }) if n + 1 < s.max_tries => {
                    let delay = retry_after
                        .unwrap_or_default()
                        .max(state::backoff(n, s.backoff_cap));
                    tracing::warn!(step = what, reason = %reason, retry_in_ms = delay.as_millis() as u64, "provider unavailable; retrying");
                    tokio::time::sleep(delay).await;
                    n += 1;
                }
                other => return other,
            }
        }
    }

    /// Revoke a credential this attempt minted but will not use; failures are noted, not fatal.
    async fn discard(&self, provider: &dyn Provider, secret: &SecretFields) -> String {
        match self
            .with_retries("revoke new", || provider.revoke(secret))
            .await
        {
            Ok(()) => "the new credential was revoked".into(),
            Err(e) => {
                format!("the new credential could not be revoked ({e}); it expires on its own")
            }
        }
    }

    async fn verify_and_commit(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
        a: Attempt,
        l: &mut Loaded,
    ) -> Result<Result<Attempt, RunResult>, EngineError> {
        let pending = a
            .pending
            .clone()
            .expect("minted attempts hold the pending credential");
        match self
            .with_retries("verify", || provider.verify(&pending))
            .await
        {
            Ok(()) => crash::point("verified"),
            Err(e @ ProviderError::Rejected { .. }) => {
                let note = self.discard(provider, &pending).await;
                return self
                    .end_unchanged(
                        cred,
                        a,
                        l,
                        Outcome::RolledBack,
                        format!("verify: {e}; {note}"),
                    )
                    .await
                    .map(Err);
            }
            Err(e) => {
                return self
                    .needs_attention(cred, a, l, format!("verify: {e}"))
                    .await
                    .map(Err)
            }
        }

        let current = self.vault.read_optional(&cred.secret).await?;
        let (current_version, ours) = match &current {
            Some(c) => (c.version, c.data.same_as(&pending)),
            None => (0, false),
        };
        let version = match commit_check(a.version_before, current_version, ours) {
            CommitCheck::Write => match self
                .vault
                .write_cas(&cred.secret, &pending, a.version_before)
                .await
            {
                Ok(v) => v,
                Err(VaultError::CasMismatch { .. }) => {
                    return self
                        .conflict(cred, provider, a, l, &pending, None)
                        .await
                        .map(Err)
                }
                Err(e) => return Err(e.into()),
            },
            CommitCheck::AlreadyCommitted(v) => v,
            CommitCheck::Conflict(v) => {
                return self
                    .conflict(cred, provider, a, l, &pending, Some(v))
                    .await
                    .map(Err)
            }
        };
        crash::point("committed");

        // Read back and compare: what dependents will read is what we verified.
        match self.vault.read(&cred.secret).await {
            Ok(back) if back.version == version && back.data.same_as(&pending) => {}
            Ok(back) => {
                tracing::warn!(credential = %cred.name, written = version, current = back.version, "the secret changed right after the commit; keeping our version in the history")
            }
            Err(e) => {
                tracing::warn!(credential = %cred.name, error = %e, "cannot read the secret back after the commit")
            }
        }
        tracing::info!(credential = %cred.name, attempt = %a.id, version, "new credential committed");
        self.emit(
            EventKind::Rotated,
            cred,
            &a,
            Some(version),
            "a new version is live",
        );
        crash::point("rotated-emitted");
        // No old credential (the secret was missing): nothing to overlap with, no grace.
        let grace = if a.old.is_some() {
            cred.policy.grace
        } else {
            Duration::ZERO
        };
        let a = committed(
            a,
            version,
            &self.owner,
            Utc::now(),
            grace,
            self.settings.lease,
        );
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
        theirs: Option<u64>,
    ) -> Result<RunResult, EngineError> {
        let note = self.discard(provider, pending).await;
        let theirs = theirs
            .map(|v| format!(" (now version {v})"))
            .unwrap_or_default();
        let error = format!(
            "check-and-set conflict: {} was written by someone else since version {}{theirs}; their version is kept; {note}",
            cred.secret, a.version_before
        );
        self.end_unchanged(cred, a, l, Outcome::Aborted, error)
            .await
    }

    async fn revoke_old(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
        a: Attempt,
        mut l: Loaded,
    ) -> Result<RunResult, EngineError> {
        if let Some(old) = a.old.clone() {
            if let Err(e) = self
                .with_retries("revoke old", || provider.revoke(&old))
                .await
            {
                return self
                    .needs_attention(cred, a, &mut l, format!("revoke the old credential: {e}"))
                    .await;
            }
            crash::point("revoke-sent");
            if let Err(error) = self.await_rejection(provider, &old).await {
                return self.needs_attention(cred, a, &mut l, error).await;
            }
            crash::point("revocation-verified");
            tracing::info!(credential = %cred.name, attempt = %a.id, version = a.version_before, "old credential revoked and rejected by the provider");
            self.emit(
                EventKind::Revoked,
                cred,
                &a,
                Some(a.version_before),
                "the previous version is revoked",
            );
            crash::point("revoked-emitted");
        }
        if cred.policy.destroy_old_version && a.version_before > 0 {
            if let Err(e) = self
                .vault
                .destroy_versions(&cred.secret, &[a.version_before])
                .await
            {
                tracing::warn!(credential = %cred.name, error = %e, "cannot destroy the old version");
            }
        }
        let record = std::mem::replace(&mut l.record, StateRecord::new(&cred.name));
        l.record = finish(record, a, Outcome::Rotated, None, Utc::now());
        self.save(&mut l).await?;
        crash::point("finished");
        Ok(RunResult::Finished(Box::new(
            l.record.history.last().cloned().expect("just finished"),
        )))
    }

    /// Poll until the provider rejects a revoked credential (revocation may be asynchronous).
    async fn await_rejection(
        &self,
        provider: &dyn Provider,
        secret: &SecretFields,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.settings.revocation_timeout;
        let mut n = 0;
        loop {
            match provider.verify_revoked(secret).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot check the revocation yet"),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "the old credential is still accepted {} after it was revoked",
                    humantime::format_duration(self.settings.revocation_timeout)
                ));
            }
            let delay = self.settings.poll_interval * (1 << n.min(4));
            tokio::time::sleep(delay).await;
            n += 1;
        }
    }

    /// Re-promote the previous credential while it is still valid (during the grace period of
    /// the attempt in flight): write it back, revoke the new one.
    pub async fn rollback(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
    ) -> Result<AttemptSummary, EngineError> {
        let refuse = |reason: String| EngineError::Refused {
            credential: cred.name.clone(),
            reason,
        };
        let (record, version) = self.load(&cred.name).await?;
        let mut l = Loaded { record, version };
        let Some(a) = l.record.attempt.take() else {
            let last = l.record.history.last();
            return Err(refuse(match last {
                Some(h) => format!(
                    "nothing to roll back: the last attempt ended {} ({}); its previous credential is no longer kept",
                    h.finished_at.to_rfc3339(),
                    h.outcome.as_str()
                ),
                None => "nothing to roll back: no rotation recorded".into(),
            }));
        };
        let (Phase::Notified, Some(old), Some(after), Some(new)) =
            (a.phase, a.old.clone(), a.version_after, a.pending.clone())
        else {
            return Err(refuse(format!(
                "the attempt in flight is in phase {}, not waiting out its grace period; nothing was committed to roll back",
                a.phase.as_str()
            )));
        };
        if let Err(e) = provider.verify(&old).await {
            return Err(refuse(format!(
                "the previous credential is no longer valid: {e}"
            )));
        }
        let v = match self.vault.write_cas(&cred.secret, &old, after).await {
            Ok(v) => v,
            Err(VaultError::CasMismatch { .. }) => {
                return Err(refuse(format!(
                    "{} changed since version {after}; not overwriting it",
                    cred.secret
                )))
            }
            Err(e) => return Err(e.into()),
        };
        self.emit(
            EventKind::Rotated,
            cred,
            &a,
            Some(v),
            "rolled back to the previous credential",
        );
        let note = match self
            .with_retries("revoke new", || provider.revoke(&new))
            .await
        {
            Ok(()) => match self.await_rejection(provider, &new).await {
                Ok(()) => "the newer credential was revoked".to_string(),
                Err(e) => e,
            },
            Err(e) => format!("the newer credential could not be revoked: {e}"),
        };
        let mut a = a;
        a.version_after = Some(v);
        let record = std::mem::replace(&mut l.record, StateRecord::new(&cred.name));
        l.record = finish(record, a, Outcome::Reverted, Some(note), Utc::now());
        self.save(&mut l).await?;
        Ok(l.record.history.last().cloned().expect("just finished"))
    }
}
