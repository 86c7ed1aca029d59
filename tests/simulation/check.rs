//! The invariants, checked after every schedule against what actually happened.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use secret_rotator::rotation::driver::RECORD_VERSIONS;
use secret_rotator::rotation::state::{HISTORY_LIMIT, MAX_ORPHANS};
use secret_rotator::rotation::{Outcome, StateRecord};

use crate::sched::Profile;
use crate::world::{short, World};

/// What the final record says of one attempt.
#[derive(Default)]
struct Claim {
    orphan_bounds: Vec<Option<DateTime<Utc>>>,
    /// A credential this attempt minted and kept in the record, not revoked when it ended
    /// (rolled back or aborted, the revocation failed): reported with its expiry.
    unrevoked: Option<Option<DateTime<Utc>>>,
    pending: Option<String>,
    version_after: Option<u64>,
}

fn claims(record: &StateRecord) -> BTreeMap<String, Claim> {
    let mut claims = BTreeMap::new();
    for h in &record.history {
        let unrevoked = matches!(h.outcome, Outcome::RolledBack | Outcome::Aborted)
            && h.error
                .as_deref()
                .is_some_and(|e| e.contains("could not be revoked"));
        claims.insert(
            h.id.clone(),
            Claim {
                orphan_bounds: h.orphans.iter().map(|o| o.expires_at).collect(),
                unrevoked: unrevoked.then_some(h.expires_at),
                pending: None,
                version_after: h.version_after,
            },
        );
    }
    if let Some(a) = &record.attempt {
        claims.insert(
            a.id.clone(),
            Claim {
                orphan_bounds: a.orphans.iter().map(|o| o.expires_at).collect(),
                unrevoked: None,
                pending: a
                    .pending
                    .as_ref()
                    .and_then(|p| p.expose("token"))
                    .map(str::to_string),
                version_after: a.version_after,
            },
        );
    }
    claims
}

pub fn check(world: &World, profile: &Profile, stuck: bool) -> Vec<String> {
    let truth = world.truth();
    let mut v = truth.violations.clone();
    let record = world
        .record()
        .unwrap_or_else(|| StateRecord::new(&world.cred.name));
    let current = world.current_token();
    let claims = claims(&record);

    if stuck {
        let attention = record.attempt.as_ref().is_some_and(|a| a.needs_attention);
        if !attention && record.parked.is_none() {
            v.push(format!(
                "the credential did not settle once the faults stopped (attempt in phase {:?})",
                record.attempt.as_ref().map(|a| a.phase.as_str())
            ));
        }
    }

    // Every minted credential is current, revoked (and so rejected), or a reported orphan
    // within its bound.
    // Per attempt: its tokens neither current nor revoked, with their expiry.
    type Live<'a> = Vec<(&'a str, Option<DateTime<Utc>>)>;
    let mut unaccounted: BTreeMap<&str, Live> = BTreeMap::new();
    let mut mints: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &truth.tokens {
        if let Some(a) = &t.attempt {
            *mints.entry(a).or_default() += 1;
        }
        if current.as_deref() == Some(t.token.as_str()) {
            if t.revoked {
                v.push(format!("{}, the current credential, is revoked", t.token));
            }
            continue;
        }
        if t.revoked {
            continue;
        }
        let Some(a) = &t.attempt else {
            v.push(format!(
                "{}, the credential the world began with, is neither current nor revoked",
                t.token
            ));
            continue;
        };
        if claims.get(a).and_then(|c| c.pending.as_deref()) == Some(t.token.as_str()) {
            continue;
        }
        // The old credential of the attempt in flight: recorded, waiting for its revocation.
        let old = record.attempt.as_ref().and_then(|a| a.old.as_ref());
        if old.and_then(|o| o.expose("token")) == Some(t.token.as_str()) {
            continue;
        }
        unaccounted
            .entry(a)
            .or_default()
            .push((&t.token, t.expires_at));
    }
    for (a, tokens) in &unaccounted {
        let names: Vec<&str> = tokens.iter().map(|(t, _)| *t).collect();
        let Some(c) = claims.get(*a) else {
            v.push(format!(
                "attempt {} minted {} (live, not current) and is in no record",
                short(a),
                names.join(", ")
            ));
            continue;
        };
        let bounds: Vec<Option<DateTime<Utc>>> =
            c.orphan_bounds.iter().copied().chain(c.unrevoked).collect();
        if tokens.len() > bounds.len() {
            v.push(format!(
                "attempt {} left {} live and not current, and reported {} possible orphan(s)",
                short(a),
                names.join(", "),
                c.orphan_bounds.len()
            ));
        }
        let widest = bounds.iter().copied().max().flatten();
        for (t, expires) in tokens {
            let within = match (widest, expires) {
                (Some(b), Some(e)) => *e <= b,
                _ => false,
            };
            if !within && !bounds.is_empty() {
                v.push(format!(
                    "{t} (attempt {}) lives until {expires:?}, past the bound reported ({widest:?})",
                    short(a)
                ));
            }
        }
    }

    // No version is written twice: each token is committed at one version at most, and each
    // version the engine wrote is claimed by exactly one attempt.
    let mut at: BTreeMap<&str, u64> = BTreeMap::new();
    for (version, token) in &truth.secret_versions {
        if let Some(first) = at.insert(token, *version) {
            v.push(format!(
                "{token} was written at versions {first} and {version}"
            ));
        }
        let by: Vec<&String> = claims
            .iter()
            .filter(|(_, c)| c.version_after == Some(*version))
            .map(|(id, _)| id)
            .collect();
        if by.len() > 1 {
            v.push(format!(
                "version {version} is claimed by {} attempts",
                by.len()
            ));
        }
        let kept = record.history.len() < HISTORY_LIMIT;
        if by.is_empty() && kept {
            v.push(format!(
                "version {version} ({token}) of the secret was written by no recorded attempt"
            ));
        }
    }

    // No version is rotated twice: an attempt commits one version of the secret at most, and no
    // two attempts commit over the same version (a handover's new owner and a stale one).
    let mut committed: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (version, token) in &truth.secret_versions {
        let by = truth
            .tokens
            .iter()
            .find(|t| t.token == *token)
            .and_then(|t| t.attempt.as_deref());
        if let Some(a) = by {
            committed.entry(a).or_default().push(*version);
        }
    }
    for (a, versions) in &committed {
        if versions.len() > 1 {
            v.push(format!(
                "attempt {} committed versions {versions:?} of the secret",
                short(a)
            ));
        }
    }
    let mut over: BTreeMap<u64, &str> = BTreeMap::new();
    let mut seen_committed: Vec<&str> = Vec::new();
    for (_, _, a) in &truth.records {
        let Some(a) = a else { continue };
        if a.version_after.is_none() || seen_committed.contains(&a.id.as_str()) {
            continue;
        }
        seen_committed.push(&a.id);
        if let Some(other) = over.insert(a.version_before, &a.id) {
            v.push(format!(
                "attempts {} and {} both committed over version {}",
                short(other),
                short(&a.id),
                a.version_before
            ));
        }
    }

    // Records stay within their bounds, and no attempt exceeds its budget.
    let budget = chrono::Duration::from_std(
        secret_rotator::rotation::state::RetryPolicy::default().transient_budget
            + secret_rotator::rotation::state::RetryPolicy::default()
                .step
                .cap,
    )
    .expect("in range");
    let slack = if profile.clock_steps {
        chrono::Duration::minutes(30)
    } else {
        chrono::Duration::zero()
    };
    if record.history.len() > HISTORY_LIMIT {
        v.push(format!(
            "the state record keeps {} attempts",
            record.history.len()
        ));
    }
    let failure_budget = secret_rotator::rotation::state::RetryPolicy::default().failure_budget;
    for (version, failures, a) in &truth.records {
        if *failures > u64::from(failure_budget) {
            v.push(format!(
                "state record version {version} counts {failures} failures in a row"
            ));
        }
        if let Some(a) = a {
            if a.orphans.len() > MAX_ORPHANS {
                v.push(format!(
                    "state record version {version}: attempt {} notes {} orphans",
                    short(&a.id),
                    a.orphans.len()
                ));
            }
            if let Some(retry) = &a.retry {
                if retry.at - retry.since > budget + slack {
                    v.push(format!(
                        "state record version {version}: attempt {} retries {} after its first failure",
                        short(&a.id),
                        retry.at - retry.since
                    ));
                }
            }
        }
    }
    for (a, n) in &mints {
        if *n > MAX_ORPHANS + 1 {
            v.push(format!("attempt {} minted {n} credentials", short(a)));
        }
    }
    let kept = world.kv.versions(&world.state_path).len();
    if kept > RECORD_VERSIONS as usize {
        v.push(format!(
            "the state record keeps {kept} versions (at most {RECORD_VERSIONS})"
        ));
    }
    v
}

/// Once the churn stopped and the views caught up: the credential (and any other name) is
/// owned by exactly one live member, in its own view and in every other's, the one
/// `fleet::owner_of` gives it to among the members alive.
pub fn owned_once(world: &World) -> Vec<String> {
    let mut v = Vec::new();
    let names = [
        world.cred.name.as_str(),
        "a",
        "b",
        "store-1",
        "store-2",
        "store-3",
    ];
    for name in names {
        let (claim, owner) = world.group.owners(name);
        if claim.len() != 1 || claim.first() != owner.as_ref() {
            v.push(format!(
                "once the churn stopped, {name} is owned by {claim:?} (the live members give it to {owner:?})"
            ));
        }
    }
    v
}
