//! `supply` and `cancel`: what a person hands over, compared by identity (not bytes) with the
//! current credential and verified before anything is written; and the way out of an assisted
//! attempt.
//!
//! Invariants: a refused supply or cancel writes nothing; no secret reaches a message (accounts
//! are named by their `account_name` and client_id); every refusal names the command that works.

use super::super::{Announce, Engine, EngineError, Extra, Loaded, RunResult, Wait};
use crate::config::{Credential, ProviderConfig};
use crate::crash;
use crate::events::EventKind;
use crate::providers::bigcommerce_assisted::{
    account_bound_fields, check_fields, describe, normalise, same_credential, BASIC_FIELDS,
    STORE_FIELDS, STORE_OPTIONAL_FIELDS,
};
use crate::providers::{Mode, Provider, ProviderError};
use crate::rotation::state::{begin_assisted, supplied, Phase, Start};
use crate::secret::SecretFields;

/// What `supply` did with a credential.
#[derive(Debug)]
pub enum Supplied {
    /// Verified, recorded, committed and driven as far as it goes now. `kept`: fields of the
    /// current secret that the supply did not set, carried over as they were; `dropped`: fields
    /// that named the old account, left out.
    Taken {
        result: RunResult,
        kept: Vec<String>,
        dropped: Vec<String>,
    },
    /// This very credential was committed already (at `version`, by `attempt`): nothing was
    /// done. `waiting`: that attempt still waits for the old credential to die.
    AlreadyCommitted {
        version: u64,
        attempt: String,
        waiting: bool,
    },
}

/// What a person does in the control panel to get a new credential of this kind, as a clause
/// ("create a new store-level API account ..."), for messages that say what to do.
pub fn what_to_do(cred: &Credential) -> String {
    match &*cred.provider() {
        ProviderConfig::BigCommerceStoreAccount(_) => format!(
            "create a new store-level API account with the same scopes in the control panel (Settings > Store-level API accounts) and run `secret-rotator supply {}` with its Client ID, Client Secret and Access Token",
            cred.name
        ),
        ProviderConfig::BigCommerceLegacyAccount(_) => format!(
            "select Generate New Token, then Save, for the legacy API account in the control panel and run `secret-rotator supply {}` with the new token",
            cred.name
        ),
        ProviderConfig::BigCommerceUserToken(_) => format!(
            "click Regenerate API Token, then Save, for the user in the control panel and run `secret-rotator supply {}` with the new token",
            cred.name
        ),
        _ => format!("run `secret-rotator rotate {}`", cred.name),
    }
}

/// The fields a kind takes (required, then optional).
fn kind_fields(cred: &Credential) -> Vec<&'static str> {
    match &*cred.provider() {
        ProviderConfig::BigCommerceStoreAccount(_) => STORE_FIELDS
            .iter()
            .chain(STORE_OPTIONAL_FIELDS)
            .copied()
            .collect(),
        _ => BASIC_FIELDS.to_vec(),
    }
}

impl Engine {
    /// `supply NAME`: take a new credential from a person. Its fields, then whether it is a new
    /// credential at all (its identifying secret, not its bytes), then the provider's probes are
    /// checked before anything is written (`Err(Refused)` writes nothing); then it is recorded,
    /// committed and announced like a minted one, with the fields of the current secret that it
    /// does not set carried over.
    pub async fn supply(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
        secret: SecretFields,
    ) -> Result<Supplied, EngineError> {
        let refuse = |reason: String| EngineError::Refused {
            credential: cred.name.clone(),
            reason: format!("{reason}; nothing was written"),
        };
        let name = &cred.name;
        if provider.info().mode != Mode::Assisted {
            return Err(refuse(format!(
                "provider {} is rotated automatically (`secret-rotator rotate {name}`)",
                cred.provider().kind(),
            )));
        }
        check_fields(&cred.provider(), &secret).map_err(refuse)?;
        let mut secret = normalise(&cred.provider(), &secret);
        let (record, version) = self.load(name).await?;
        let mut l = Loaded::new(record, version);
        if let Some(p) = &l.record.paused {
            return Err(refuse(format!(
                "paused by {} since {}: `secret-rotator resume {name}` first",
                p.by,
                crate::human::time(p.since),
            )));
        }
        let now = self.now();
        let existing = l.record.attempt.take();
        if let Some(a) = &existing {
            match a.phase {
                // A person at the keyboard outranks the daemon's reminders: no lease is asked
                // for. The write below is check-and-set, so a daemon writing meanwhile fences
                // one of the two, never both.
                Phase::AwaitingSupply => {}
                Phase::AwaitingOldDeletion => {
                    let committed = a.version_after.unwrap_or_default();
                    if a
                        .pending
                        .as_ref()
                        .is_some_and(|p| same_credential(&cred.provider(), &secret, &normalise(&cred.provider(), p)))
                    {
                        return Ok(Supplied::AlreadyCommitted {
                            version: committed,
                            attempt: a.id.clone(),
                            waiting: true,
                        });
                    }
                    let old = a
                        .old
                        .as_ref()
                        .map(|o| describe(&cred.provider(), o))
                        .unwrap_or_else(|| "the old credential".into());
                    return Err(refuse(format!(
                        "version {committed} was supplied and committed already (attempt {}); the rotation waits until the store rejects {old}: `secret-rotator confirm-revoked {name}` checks it now, `secret-rotator cancel {name}` stops waiting",
                        a.id
                    )));
                }
                Phase::Notified => {
                    return Err(refuse(format!(
                        "a rotation is in phase {} (attempt {}): `secret-rotator rotate {name} --wait` finishes it, `secret-rotator rollback {name}` re-promotes the previous credential",
                        a.phase.as_str(),
                        a.id
                    )))
                }
                _ => {
                    return Err(refuse(format!(
                        "a rotation is in phase {} (attempt {}): `secret-rotator rotate {name}` finishes it",
                        a.phase.as_str(),
                        a.id
                    )))
                }
            }
        }
        let (current_version, current) = match &existing {
            Some(a) => (a.version_before, a.old.clone()),
            None => self.read_current(&cred.secret).await?,
        };
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        if let Some(current) = &current {
            let stored = normalise(&cred.provider(), current);
            if same_credential(&cred.provider(), &secret, &stored) {
                let last = l.record.history.last();
                if existing.is_none()
                    && last.is_some_and(|h| {
                        h.outcome == crate::rotation::Outcome::Rotated
                            && h.version_after == Some(current_version)
                    })
                {
                    return Ok(Supplied::AlreadyCommitted {
                        version: current_version,
                        attempt: last.map(|h| h.id.clone()).unwrap_or_default(),
                        waiting: false,
                    });
                }
                let cancel = if existing.is_some() {
                    format!(" (`secret-rotator cancel {name}` ends the rotation instead)")
                } else {
                    String::new()
                };
                return Err(refuse(format!(
                    "this is {}, the credential stored now (version {current_version}), not a new one: {}{cancel}",
                    describe(&cred.provider(), &stored),
                    what_to_do(cred)
                )));
            }
            // Fields that name the old account are never carried over to the new one.
            for field in account_bound_fields(&cred.provider()) {
                if current.get(field).is_some() && secret.get(field).is_none() {
                    if *field == "client_secret" {
                        return Err(refuse(format!(
                            "the current secret has a client_secret and this supply has none: give the new account's Client Secret (from the pop-up shown when it was created; `secret-rotator supply {name}`), so that the secret does not keep the old account's"
                        )));
                    }
                    dropped.push(field.to_string());
                }
            }
            kept = secret.keep_missing_from(current, &kind_fields(cred));
        }
        match self.call("verify", provider.verify(&secret)).await {
            Ok(()) => {}
            Err(ProviderError::Rejected { reason }) => {
                return Err(refuse(format!("the store rejected it: {reason}")))
            }
            Err(e) => {
                return Err(refuse(format!(
                    "it could not be verified now ({e}); run `secret-rotator supply {name}` again later"
                )))
            }
        }
        crash::point("supply-verified");
        let a = match existing {
            Some(a) => a,
            None => {
                // Supplied before it fell due (or before the daemon noticed): an attempt of its
                // own, without `rotation.due`.
                let (version, current) = self.preflight(cred, provider).await?;
                begin_assisted(
                    Start {
                        id: uuid::Uuid::new_v4().to_string(),
                        owner: &self.owner,
                        trigger: "supplied",
                        now,
                        lease: self.settings.lease,
                        version,
                        current,
                        lifetime: None,
                    },
                    cred.policy.supply_deadline,
                    cred.policy.supply_reminder,
                )
            }
        };
        if !kept.is_empty() {
            tracing::info!(credential = %name, kept = %kept.join(", "), "fields of the current secret that the supply does not set are kept");
        }
        let a = supplied(a, secret, &self.owner, self.now(), self.settings.lease);
        self.save_attempt(&mut l, &a).await?;
        tracing::info!(credential = %name, attempt = %a.id, "supplied credential verified and recorded");
        crash::point("supply-recorded");
        let result = self
            .steps(cred, provider, a, &mut l, Wait::Retries, false)
            .await?;
        Ok(Supplied::Taken {
            result,
            kept,
            dropped,
        })
    }

    /// `cancel NAME`: end the attempt in flight where that is safe, recorded (outcome
    /// `cancelled`) and announced (`rotation.cancelled`). Waiting for a supply: nothing was
    /// written, the current version stays. Waiting for the old credential to die: the committed
    /// version stays (a regenerated token cannot go back: Save revoked the old one). An
    /// automatic attempt in the middle of its steps is refused, naming the command that ends it.
    /// Returns what was done, in words.
    pub async fn cancel(
        &self,
        cred: &Credential,
        provider: &dyn Provider,
        by: &str,
    ) -> Result<String, EngineError> {
        let name = &cred.name;
        let refuse = |reason: String| EngineError::Refused {
            credential: name.clone(),
            reason: format!("{reason}; nothing was changed"),
        };
        let (record, version) = self.load(name).await?;
        let mut l = Loaded::new(record, version);
        let Some(a) = l.record.attempt.clone() else {
            return Err(refuse(format!(
                "no rotation is in flight (`secret-rotator status` shows the credential, `secret-rotator pause {name}` stops rotations)"
            )));
        };
        let note = match a.phase {
            Phase::AwaitingSupply => format!(
                "the rotation waiting for a supply is cancelled; nothing was written and version {} stays current. It is still due: the daemon asks again after a while (`secret-rotator pause {name}` stops that)",
                a.version_before
            ),
            Phase::AwaitingOldDeletion if provider.old_dies_at_supply() => format!(
                "the check that the previous token is rejected is cancelled; version {} stays current: a regenerated token cannot go back, because Save in the control panel revoked the previous one",
                a.version_after.unwrap_or_default()
            ),
            Phase::AwaitingOldDeletion => format!(
                "the wait for the old account's deletion is cancelled; version {} stays current. Nothing checks the old account now: delete {} in the control panel once nothing uses it",
                a.version_after.unwrap_or_default(),
                a.old
                    .as_ref()
                    .map(|o| describe(&cred.provider(), o))
                    .unwrap_or_else(|| "the old account".into())
                    .trim_start_matches("the ")
            ),
            Phase::Minting | Phase::Minted => {
                return Err(refuse(format!(
                    "attempt {} is in phase {}: a new credential may exist that is not committed yet, and cancelling would leave it alive; `secret-rotator rotate {name}` finishes the attempt (verified and committed, or revoked)",
                    a.id,
                    a.phase.as_str()
                )))
            }
            Phase::Notified => {
                return Err(refuse(format!(
                    "attempt {} committed version {} and announced it: `secret-rotator rollback {name}` re-promotes the previous credential during the grace period, `secret-rotator rotate {name} --wait` finishes the rotation",
                    a.id,
                    a.version_after.unwrap_or_default()
                )))
            }
            Phase::RollingBack => {
                return Err(refuse(format!(
                    "attempt {} is rolling back: `secret-rotator rotate {name}` finishes the rollback",
                    a.id
                )))
            }
        };
        let detail = format!("cancelled by {by}: {note}");
        tracing::warn!(credential = %name, attempt = %a.id, "{detail}");
        self.emit(
            &mut l,
            cred,
            &a.id,
            Announce {
                kind: EventKind::Cancelled,
                version: Some(a.version_after.unwrap_or(a.version_before)),
                detail: &detail,
                extra: Extra::default(),
            },
        );
        self.end(
            cred,
            a,
            &mut l,
            crate::rotation::Outcome::Cancelled,
            Some(detail),
        )
        .await?;
        crash::point("cancel-recorded");
        Ok(note)
    }
}
