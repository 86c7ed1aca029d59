//! Where each credential stands, read from Vault: the facts the policy works from (the current
//! version and when it was created), when it is due and why, and the rows of `status`. The CLI
//! (`status`, `plan`), the admin server and the daemon's loop all read through here.
//!
//! Invariant: reads only; nothing here writes to Vault.

use std::borrow::Cow;
use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::app::{jitter_seed, App};
use crate::config::{Credential, Policy};
use crate::policy::{self, SecretFacts};
use crate::report::{self, StatusRow};
use crate::rotation::{EngineError, Outcome, StateRecord};
use crate::vault::{SecretMetadata, VaultError};

/// The group's member records (instances sharing the state prefix): name, record and the
/// version's `created_time`. A record that is not one is left out.
pub(crate) async fn member_records(
    app: &App,
) -> Result<Vec<(String, crate::fleet::MemberRecord, DateTime<Utc>)>, VaultError> {
    let mount = &app.config.vault.state_mount;
    let folder = format!("{}/members", app.config.vault.state_prefix);
    let mut out = Vec::new();
    for key in app.vault.list(mount, &folder).await? {
        if key.ends_with('/') {
            continue;
        }
        let kv = crate::config::KvPath {
            mount: mount.clone(),
            path: format!("{folder}/{key}"),
        };
        if let Some((value, _, created)) = app.vault.read_json_created(&kv).await? {
            if let Ok(record) = serde_json::from_value(value) {
                out.push((key, record, created));
            }
        }
    }
    Ok(out)
}

/// A credential as read from Vault: its facts, version and state record.
pub(crate) struct Seen {
    pub(crate) facts: Option<SecretFacts>,
    pub(crate) version: Option<u64>,
    pub(crate) record: Option<StateRecord>,
    /// A credential set's member: the policy keys its secret's `custom_metadata` overrides,
    /// when the metadata was read and holds any.
    pub(crate) custom: Option<HashMap<String, String>>,
}

pub(crate) async fn see(app: &App, cred: &Credential) -> Result<Seen, EngineError> {
    let (facts, version, record, custom) = facts(app, cred).await?;
    Ok(Seen {
        facts,
        version,
        record,
        custom,
    })
}

/// The credential as its policy applies now: a set's member with what its secret's
/// `custom_metadata` overrides (`config::sets::overridden`), as last read; any other as written.
pub(crate) fn effective<'a>(cred: &'a Credential, seen: &Seen) -> Cow<'a, Credential> {
    match &seen.custom {
        Some(custom) if cred.set_name().is_some() => {
            let (policy, problems) = crate::config::sets::overridden(&cred.policy, custom);
            for problem in problems {
                tracing::warn!(credential = %cred.name, "{problem}");
            }
            let mut cred = cred.clone();
            cred.policy = std::sync::Arc::new(policy);
            Cow::Owned(cred)
        }
        _ => Cow::Borrowed(cred),
    }
}

/// What a plain read (start-up, reload, after an error) plans from: the state record, and the
/// secret's metadata only when the record cannot say which version is current and when Vault
/// created it (see [`record_facts`]). At start-up that is one request per credential of a
/// fleet in steady state, where it was two. What the record says is believed until the
/// credential's reconcile slot reads the metadata, and a drive always reads it: a version written
/// by hand while the daemon was stopped is seen within one reconcile interval, as one written
/// while it runs is.
pub(crate) async fn read_to_plan(app: &App, cred: &Credential) -> Result<Seen, EngineError> {
    let record = app.engine.record(&cred.name).await?;
    if let Some((version, facts)) = record_facts(&record) {
        return Ok(Seen {
            facts: Some(facts),
            version: Some(version),
            record: Some(record),
            custom: None,
        });
    }
    let meta = match app.vault.read_metadata(&cred.secret).await {
        Ok(m) => Some(m),
        Err(VaultError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let (facts, version) = facts_of(meta.as_ref(), &record);
    Ok(Seen {
        facts,
        version,
        record: Some(record),
        custom: overrides(cred, meta.as_ref()),
    })
}

/// A member's overrides in its secret's metadata, when it has any.
fn overrides(cred: &Credential, meta: Option<&SecretMetadata>) -> Option<HashMap<String, String>> {
    let custom = &meta?.custom_metadata;
    (cred.set_name().is_some() && crate::config::sets::has_overrides(custom))
        .then(|| custom.clone())
}

/// The current version and its facts, from the record alone: when nothing is in flight and the
/// last attempt rotated the credential and recorded the `created_time` Vault gave its version.
/// `None` otherwise (never rotated here, an attempt in flight, the last attempt failed or found
/// the secret changed by someone else, a record written before the time was kept).
fn record_facts(record: &StateRecord) -> Option<(u64, SecretFacts)> {
    if record.attempt.is_some() {
        return None;
    }
    let last = record.history.last()?;
    if last.outcome != Outcome::Rotated {
        return None;
    }
    let facts = SecretFacts {
        created_time: last.version_created_at?,
        expires_at: last.expires_at,
    };
    Some((last.version_after?, facts))
}

/// The current secret's facts for the policy, and its version.
#[allow(clippy::type_complexity)]
pub(crate) async fn facts(
    app: &App,
    cred: &Credential,
) -> Result<
    (
        Option<SecretFacts>,
        Option<u64>,
        Option<StateRecord>,
        Option<HashMap<String, String>>,
    ),
    EngineError,
> {
    // Both at once: a read costs one round trip, not two.
    let (meta, record) = futures_util::future::join(
        app.vault.read_metadata(&cred.secret),
        app.engine.record(&cred.name),
    )
    .await;
    let meta = match meta {
        Ok(m) => Some(m),
        Err(VaultError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let record = record?;
    let (facts, version) = facts_of(meta.as_ref(), &record);
    let custom = overrides(cred, meta.as_ref());
    Ok((facts, version, Some(record), custom))
}

/// The current version (not deleted or destroyed) and its facts, from the secret's metadata;
/// the expiry from the record's attempt that wrote that version.
fn facts_of(
    meta: Option<&SecretMetadata>,
    record: &StateRecord,
) -> (Option<SecretFacts>, Option<u64>) {
    let current = meta.and_then(|m| {
        m.current()
            .filter(|v| !v.deleted && !v.destroyed)
            .map(|v| (m.current_version, v.created_time))
    });
    let facts = current.map(|(version, created_time)| SecretFacts {
        created_time,
        // The expiry the provider gave the credential this daemon wrote at this version.
        expires_at: record
            .history
            .iter()
            .rev()
            .find(|h| h.version_after == Some(version))
            .and_then(|h| h.expires_at),
    });
    (facts, current.map(|(v, _)| v))
}

/// Is the credential due now, and why? `None` when not due.
pub(crate) async fn due_trigger(
    app: &App,
    cred: &Credential,
) -> Result<(Option<&'static str>, chrono::DateTime<Utc>), EngineError> {
    let seen = see(app, cred).await?;
    Ok(due(&effective(cred, &seen), &seen, Utc::now()))
}

/// When the credential is due (jitter included), and why when that is now.
pub(crate) fn due(
    cred: &Credential,
    seen: &Seen,
    now: DateTime<Utc>,
) -> (Option<&'static str>, DateTime<Utc>) {
    let seed = jitter_seed(&cred.name, seen.version.unwrap_or(0));
    match policy_due(&cred.policy, seen.facts.as_ref(), seed, now) {
        Ok(due) => due,
        Err(e) => {
            tracing::error!(credential = %cred.name, error = %e, "cannot compute when this credential is due");
            (None, now + chrono::Duration::hours(1))
        }
    }
}

/// When the credential is due, and why when that is now (`policy::next_due`: max age, schedule,
/// expiry lead, jitter seeded by name and version, window, missed windows).
pub(crate) fn policy_due(
    policy: &Policy,
    facts: Option<&SecretFacts>,
    seed: u64,
    now: DateTime<Utc>,
) -> Result<(Option<&'static str>, DateTime<Utc>), policy::PolicyError> {
    let due = policy::next_due(facts, policy, now, seed)?;
    let reason = match due.reason {
        policy::DueReason::MaxAge => "max_age",
        policy::DueReason::Schedule => "schedule",
        policy::DueReason::Expiry => "expiry",
        policy::DueReason::Missing => "missing",
    };
    Ok(((due.at <= now).then_some(reason), due.at))
}

/// The rows of `status` (and of the admin server's `/v1/status`), read from Vault now.
pub(crate) async fn status_rows(app: &App, only: Option<&str>) -> Vec<StatusRow> {
    let now = Utc::now();
    let mut rows = Vec::new();
    // A secret on a KV v1 (or any other) mount would read as missing: say what it is.
    let mut kinds = std::collections::HashMap::new();
    let credentials = app
        .config
        .credentials
        .iter()
        .filter(|c| only.is_none_or(|n| c.name == n));
    for cred in credentials {
        if !kinds.contains_key(&cred.secret.mount) {
            let kind = app.vault.mount_kind(&cred.secret.mount).await;
            kinds.insert(cred.secret.mount.clone(), kind);
        }
        let wrong_mount = match &kinds[&cred.secret.mount] {
            Ok(k) if !k.is_kv2() => Some(format!(
                "{}: the mount {}/ is {}; secret-rotator needs KV v2",
                cred.secret,
                cred.secret.mount,
                k.describe()
            )),
            Err(VaultError::NotFound { .. }) => Some(format!(
                "{}: no secrets engine is mounted at {}/",
                cred.secret, cred.secret.mount
            )),
            _ => None,
        };
        if let Some(e) = wrong_mount {
            rows.push(report::error_row(cred, e));
            continue;
        }
        rows.push(match see(app, cred).await {
            Ok(seen) => {
                let (facts, version, record) = (seen.facts, seen.version, seen.record.as_ref());
                let custom = Seen {
                    facts: None,
                    version: None,
                    record: None,
                    custom: seen.custom,
                };
                let mut row =
                    report::status_row(&effective(cred, &custom), facts, version, record, now);
                if version.is_some() && !cred.provider().automatic() {
                    // An assisted credential is never read by a rotation until a person acts:
                    // say now that the stored secret lacks what its kind needs (one read).
                    match secret_problem(app, cred).await {
                        Ok(None) => {}
                        Ok(Some(problem)) => {
                            row.state = "invalid".into();
                            row.invalid = Some(problem);
                        }
                        Err(e) => row.error = Some(e),
                    }
                }
                if !cred.dependents.is_empty() {
                    match app.deliverer.load(&cred.name).await {
                        Ok((d, _)) => {
                            let log = record.map(|r| r.events.clone()).unwrap_or_default();
                            row.dependents = report::dependent_rows(cred, &d, &log);
                        }
                        Err(e) => row.error = Some(e.to_string()),
                    }
                }
                row
            }
            Err(e) => report::error_row(cred, e.to_string()),
        });
    }
    rows
}

/// What the current secret of `cred` lacks for its provider (a field missing, empty or not a
/// string): `Ok(None)` when it holds what is needed, `Err` when it could not be read.
async fn secret_problem(app: &App, cred: &Credential) -> Result<Option<String>, String> {
    let provider = app.provider(cred).map_err(|e| e.message)?;
    match app.engine.preflight_secret(cred, provider.as_ref()).await {
        Ok(_) => Ok(None),
        Err(EngineError::Refused { reason, .. }) => Ok(Some(
            reason.trim_end_matches("; nothing was minted").to_string(),
        )),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::state::{begin, AttemptSummary, Start};
    use chrono::TimeZone;
    use std::time::Duration;

    fn at(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, h, 0, 0).unwrap()
    }

    fn summary(
        outcome: Outcome,
        version_after: Option<u64>,
        created: Option<DateTime<Utc>>,
    ) -> AttemptSummary {
        AttemptSummary {
            id: "a".into(),
            trigger: "max_age".into(),
            started_at: at(1),
            finished_at: at(1),
            outcome,
            version_before: 1,
            version_after,
            marks: Vec::new(),
            orphans: Vec::new(),
            error: None,
            expires_at: Some(at(9)),
            version_created_at: created,
        }
    }

    #[test]
    fn the_record_alone_plans_a_credential_only_when_its_last_rotation_says_everything() {
        let rotated = summary(Outcome::Rotated, Some(2), Some(at(1)));
        let in_flight = begin(Start {
            id: "b".into(),
            owner: "me",
            trigger: "max_age",
            now: at(2),
            lease: Duration::from_secs(60),
            version: 2,
            current: None,
            lifetime: None,
        });
        let facts = SecretFacts {
            created_time: at(1),
            expires_at: Some(at(9)),
        };
        // (history, attempt in flight, what the record alone says)
        let cases = [
            (vec![], false, None),
            (vec![rotated.clone()], false, Some((2, facts))),
            (vec![rotated.clone()], true, None),
            (vec![summary(Outcome::Rotated, Some(2), None)], false, None),
            (
                vec![rotated.clone(), summary(Outcome::Failed, None, None)],
                false,
                None,
            ),
            (
                vec![rotated.clone(), summary(Outcome::Aborted, None, None)],
                false,
                None,
            ),
            (
                vec![summary(Outcome::Failed, None, None), rotated.clone()],
                false,
                Some((2, facts)),
            ),
        ];
        for (i, (history, flying, expected)) in cases.into_iter().enumerate() {
            let mut record = StateRecord::new("c");
            record.history = history;
            record.attempt = flying.then(|| in_flight.clone());
            assert_eq!(record_facts(&record), expected, "case {i}");
        }
    }
}
