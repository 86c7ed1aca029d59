//! What `status`, `history` and `plan` show: rows built from Vault facts, rendered as a table or
//! JSON.
//!
//! Invariant: pure (no IO, `now` passed in), and no secret value ever reaches a row: rows are
//! built from metadata, versions and the state record's non-secret fields.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Credential;
use crate::notify::outbox::{Deliveries, EventLog};
use crate::policy::{self, SecretFacts, Standing};
use crate::rotation::{Attempt, AttemptSummary, StateRecord};

/// One credential in `status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    pub name: String,
    /// The credential set it is a member of (`[[credential_sets]]`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    pub provider: String,
    pub path: String,
    /// Current KV version; `None` when the secret is missing.
    pub version: Option<u64>,
    pub created_time: Option<DateTime<Utc>>,
    pub age_seconds: Option<u64>,
    pub max_age_seconds: Option<u64>,
    pub expires_at: Option<DateTime<Utc>>,
    /// "ok", "due", "overdue", "missing", "invalid" (the secret lacks what its kind needs:
    /// `invalid` says what) or "error".
    pub state: String,
    pub due_in_seconds: Option<u64>,
    pub overdue_by_seconds: Option<u64>,
    /// The rotation in flight, if any.
    pub rotation: Option<RotationState>,
    /// Why an operator must act, when one must: the credential is parked (its failure budget
    /// is spent) or its attempt in flight gave up retrying.
    pub needs_attention: Option<String>,
    /// After a failed attempt: the next one does not start on its own before this time.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Why the row could not be read (Vault error), if it could not.
    pub error: Option<String>,
    /// How the credential's dependents are told.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dependents: Vec<DependentRow>,
    /// `pause NAME`: by whom and since when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<PausedRow>,
    /// Assisted: waiting for a person to run `supply NAME`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awaiting_supply: Option<AwaitingSupplyRow>,
    /// The current credential was rejected although the daemon did not change it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftRow>,
    /// Why the current secret cannot be used (a field its kind needs is missing, empty or not a
    /// string), when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
    /// Assisted, an attempt in flight: what a person does next ([`guidance`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<String>,
    /// Assisted, a store account awaiting a supply: the scopes to grant.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Credentials possibly minted behind an answer that never came (a 502, a timeout) and not
    /// found again since, that may still be alive: the attempts' recorded orphans whose expiry
    /// has not passed (or is unknown).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub possible_orphans: Vec<OrphanRow>,
}

/// One possible orphan in `status`: which attempt noted it, why, and how long it can live.
#[derive(Debug, Clone, Serialize)]
pub struct OrphanRow {
    pub attempt: String,
    pub noted_at: DateTime<Utc>,
    /// `None`: the provider's credentials do not expire, or the expiry is unknown.
    pub expires_at: Option<DateTime<Utc>>,
    pub reason: String,
}

/// The orphans of the attempt in flight and of the recorded history that may still be alive
/// at `now`.
fn possible_orphans(record: Option<&StateRecord>, now: DateTime<Utc>) -> Vec<OrphanRow> {
    let Some(r) = record else {
        return Vec::new();
    };
    let recorded = r.history.iter().map(|h| (&h.id, &h.orphans));
    let in_flight = r.attempt.iter().map(|a| (&a.id, &a.orphans));
    recorded
        .chain(in_flight)
        .flat_map(|(id, orphans)| orphans.iter().map(move |o| (id, o)))
        .filter(|(_, o)| o.expires_at.is_none_or(|t| t > now))
        .map(|(id, o)| OrphanRow {
            attempt: id.clone(),
            noted_at: o.noted_at,
            expires_at: o.expires_at,
            reason: o.reason.clone(),
        })
        .collect()
}

/// What a person does next for an assisted credential's attempt in flight, in BigCommerce's
/// words: while a supply is awaited, the control-panel steps and, for a store account, which
/// account to delete once the new one is committed (by name and client_id, never a secret);
/// once committed, what is still waited for and the commands that end the wait. Empty for
/// automatic kinds and other phases.
pub fn guidance(cred: &Credential, a: &Attempt) -> Vec<String> {
    use crate::config::ProviderConfig;
    use crate::providers::bigcommerce_assisted::{describe, steps};
    use crate::rotation::Phase;
    let name = &cred.name;
    let store = matches!(*cred.provider(), ProviderConfig::BigCommerceStoreAccount(_));
    let old = a.old.as_ref().map(|o| {
        describe(&cred.provider(), o)
            .trim_start_matches("the ")
            .to_string()
    });
    match a.phase {
        Phase::AwaitingSupply => {
            let mut lines = steps(&cred.provider(), name);
            if let (true, Some(old)) = (store, &old) {
                lines.push(format!(
                    "The account to delete once the new one is committed: {old}."
                ));
            }
            lines
        }
        Phase::AwaitingOldDeletion if store => vec![
            "Re-create under the new account any webhooks the old account created: they vanish with it.".into(),
            format!(
                "Delete the old {} in the control panel (Settings > Store-level API accounts).",
                old.unwrap_or_else(|| "account".into())
            ),
            format!("Run `secret-rotator confirm-revoked {name}` once it is deleted (the daemon also checks on its own); `secret-rotator cancel {name}` stops waiting."),
        ],
        Phase::AwaitingOldDeletion if !steps(&cred.provider(), name).is_empty() => vec![
            "The previous token is still accepted: select Save after regenerating the token in the control panel.".into(),
            format!("Run `secret-rotator confirm-revoked {name}` to check it now; `secret-rotator cancel {name}` stops waiting (the new version stays: a regenerated token cannot go back)."),
        ],
        _ => Vec::new(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PausedRow {
    pub since: DateTime<Utc>,
    pub by: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AwaitingSupplyRow {
    pub since: DateTime<Utc>,
    pub deadline: Option<DateTime<Utc>>,
    /// Reminders sent so far.
    pub reminders: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct DriftRow {
    pub since: DateTime<Utc>,
    pub version: u64,
    pub reason: String,
}

/// One dependent in `status`, `history` and `deliveries`.
#[derive(Debug, Clone, Serialize)]
pub struct DependentRow {
    pub name: String,
    /// "webhook", "file" or "exec".
    #[serde(rename = "type")]
    pub kind: String,
    pub require_ack: bool,
    /// "delivered" (nothing waits), "pending" (events wait, no failure yet), "failing" (the
    /// next try is scheduled) or "needs_attention" (not tried on its own again).
    pub state: String,
    /// Ids of the events it has yet to get, in order.
    pub waiting: Vec<String>,
    pub next_try: Option<DateTime<Utc>>,
    pub failures: u32,
    pub last_error: Option<String>,
    pub last_delivered: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// Delivery tries so far.
    pub tries: u64,
    /// Events that left the log before it got them.
    pub missed: u64,
}

/// The rows of a credential's dependents from its deliveries record and event log.
pub fn dependent_rows(
    cred: &Credential,
    deliveries: &Deliveries,
    log: &EventLog,
) -> Vec<DependentRow> {
    // What the dependents accepted ahead of the state record's writes counts too.
    let mut deliveries = deliveries.clone();
    deliveries.fold(log);
    cred.dependents
        .iter()
        .map(|dep| {
            let d = deliveries
                .dependents
                .get(&dep.name)
                .cloned()
                .unwrap_or_default();
            let waiting: Vec<String> = deliveries
                .waiting(&dep.name, log)
                .iter()
                .map(|e| e.id.clone())
                .collect();
            let state = if d.needs_attention {
                "needs_attention"
            } else if waiting.is_empty() {
                "delivered"
            } else if d.failures > 0 {
                "failing"
            } else {
                "pending"
            };
            DependentRow {
                name: dep.name.clone(),
                kind: dep.sink.kind().to_string(),
                require_ack: dep.ack.required,
                state: state.to_string(),
                waiting,
                next_try: d.next_try,
                failures: d.failures,
                last_error: d.last_error,
                last_delivered: d.last_delivered,
                delivered_at: d.delivered_at,
                tries: d.tries,
                missed: d.missed,
            }
        })
        .collect()
}

/// One line per dependent: what it has, or what it waits for and why.
pub fn dependent_lines(credential: &str, rows: &[DependentRow]) -> String {
    let mut out = String::new();
    for r in rows {
        let last = match (&r.last_delivered, r.delivered_at) {
            (Some(id), Some(at)) => format!("last delivered {id} at {}", crate::human::time(at)),
            _ => "nothing delivered yet".to_string(),
        };
        let what = match r.state.as_str() {
            "delivered" if r.last_delivered.is_some() => format!("delivered; {last}"),
            "delivered" => "up to date: nothing to deliver yet".to_string(),
            "pending" => format!("pending: {} event(s) waiting; {last}", r.waiting.len()),
            "failing" => format!(
                "failing: {} event(s) waiting, {} failed tries, next try at {}; last error: {}",
                r.waiting.len(),
                r.failures,
                r.next_try.map(crate::human::time).unwrap_or("-".into()),
                r.last_error.as_deref().unwrap_or("-")
            ),
            _ => format!(
                "NEEDS ATTENTION: {} event(s) waiting after {} failed tries; last error: {}; `secret-rotator deliveries {credential} --retry {}` tries again",
                r.waiting.len(),
                r.failures,
                r.last_error.as_deref().unwrap_or("-"),
                r.name
            ),
        };
        out.push_str(&format!("  {credential}/{} ({}): {what}\n", r.name, r.kind));
    }
    out
}

#[derive(Debug, Clone, Serialize)]
pub struct RotationState {
    pub attempt: String,
    pub phase: String,
    pub needs_attention: bool,
    pub last_error: Option<String>,
}

impl RotationState {
    pub fn of(a: &Attempt) -> RotationState {
        RotationState {
            attempt: a.id.clone(),
            phase: a.phase.as_str().to_string(),
            needs_attention: a.needs_attention,
            last_error: a.last_error.clone(),
        }
    }
}

impl StatusRow {
    /// Does this row fail `status --check`?
    pub fn fails_check(&self) -> bool {
        matches!(
            self.state.as_str(),
            "overdue" | "missing" | "invalid" | "error"
        ) || self.needs_attention.is_some()
            || self.drift.is_some()
            || self.dependents.iter().any(|d| d.state == "needs_attention")
    }
}

/// The status row of a credential from what Vault says about it.
pub fn status_row(
    cred: &Credential,
    facts: Option<SecretFacts>,
    version: Option<u64>,
    record: Option<&StateRecord>,
    now: DateTime<Utc>,
) -> StatusRow {
    let attempt = record.and_then(|r| r.attempt.as_ref());
    let needs_attention = match (record.and_then(|r| r.parked.as_ref()), attempt) {
        (_, Some(a)) if a.needs_attention => Some(format!(
            "rotation stopped in phase {}: {}",
            a.phase.as_str(),
            a.last_error.as_deref().unwrap_or("no error recorded")
        )),
        (Some(p), _) => Some(format!(
            "parked since {}: {}",
            crate::human::time(p.since),
            p.reason
        )),
        (_, Some(a)) => a.held.clone(),
        _ => None,
    };
    let standing = policy::standing(facts.as_ref(), &cred.policy, now);
    let (state, due_in, overdue_by) = match standing {
        Standing::Ok { due_in } => ("ok", Some(due_in.as_secs()), None),
        Standing::Due => ("due", Some(0), None),
        Standing::Overdue { by } => ("overdue", None, Some(by.as_secs())),
        Standing::Missing => ("missing", None, None),
    };
    StatusRow {
        name: cred.name.clone(),
        set: cred.set_name().map(str::to_string),
        provider: cred.provider().kind().to_string(),
        path: cred.secret.to_string(),
        version,
        created_time: facts.map(|f| f.created_time),
        age_seconds: facts.map(|f| (now - f.created_time).num_seconds().max(0) as u64),
        max_age_seconds: cred.policy.max_age.map(|d| d.as_secs()),
        expires_at: facts.and_then(|f| f.expires_at),
        state: state.to_string(),
        due_in_seconds: due_in.filter(|d| *d != Duration::MAX.as_secs()),
        overdue_by_seconds: overdue_by,
        rotation: attempt.map(RotationState::of),
        needs_attention,
        next_attempt_at: record.and_then(|r| r.retry_at).filter(|t| *t > now),
        error: None,
        dependents: Vec::new(),
        paused: record.and_then(|r| r.paused.as_ref()).map(|p| PausedRow {
            since: p.since,
            by: p.by.clone(),
        }),
        awaiting_supply: attempt
            .filter(|a| a.phase == crate::rotation::Phase::AwaitingSupply)
            .map(|a| AwaitingSupplyRow {
                since: a.started_at,
                deadline: a.deadline,
                reminders: a.checks,
            }),
        drift: record.and_then(|r| r.drift.as_ref()).map(|d| DriftRow {
            since: d.since,
            version: d.version,
            reason: d.reason.clone(),
        }),
        invalid: None,
        steps: attempt.map(|a| guidance(cred, a)).unwrap_or_default(),
        scopes: attempt
            .filter(|a| a.phase == crate::rotation::Phase::AwaitingSupply)
            .map(|_| crate::providers::bigcommerce_assisted::scopes_to_grant(&cred.provider()))
            .unwrap_or_default(),
        possible_orphans: possible_orphans(record, now),
    }
}

/// A row for a credential whose facts could not be read.
pub fn error_row(cred: &Credential, error: String) -> StatusRow {
    StatusRow {
        name: cred.name.clone(),
        set: cred.set_name().map(str::to_string),
        provider: cred.provider().kind().to_string(),
        path: cred.secret.to_string(),
        version: None,
        created_time: None,
        age_seconds: None,
        max_age_seconds: cred.policy.max_age.map(|d| d.as_secs()),
        expires_at: None,
        state: "error".into(),
        due_in_seconds: None,
        overdue_by_seconds: None,
        rotation: None,
        needs_attention: None,
        next_attempt_at: None,
        error: Some(error),
        dependents: Vec::new(),
        paused: None,
        awaiting_supply: None,
        drift: None,
        invalid: None,
        steps: Vec::new(),
        scopes: Vec::new(),
        possible_orphans: Vec::new(),
    }
}

/// "3d 4h", "12m", "40s": short, for tables ([`crate::human::duration`]).
pub fn short_duration(secs: u64) -> String {
    crate::human::seconds(secs)
}

/// A plain text table: a header and rows, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            // Padded by hand: a width in `format!` is at most u16::MAX, and a cell may be longer.
            .map(|(i, c)| format!("{c}{}", " ".repeat(widths[i] - c.chars().count())))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone()));
        out.push('\n');
    }
    out
}

pub fn status_table(rows: &[StatusRow]) -> String {
    let mut cells: Vec<Vec<String>> = Vec::with_capacity(rows.len());
    // The members of a set under a line naming it, each by its segments.
    let mut set: Option<&str> = None;
    for r in rows {
        if r.set.is_some() && r.set.as_deref() != set {
            set = r.set.as_deref();
            let members = rows.iter().filter(|m| m.set.as_deref() == set).count();
            let mut header = vec![String::new(); 8];
            header[0] = format!("{}/ ({members} members)", set.unwrap_or_default());
            header[1] = "credential set".into();
            cells.push(header);
        }
        cells.push(status_cells(r));
    }
    let mut out = table(
        &[
            "NAME", "PROVIDER", "PATH", "VERSION", "AGE", "MAX AGE", "DUE", "STATE",
        ],
        &cells,
    );
    out.push_str(&status_notes(rows));
    out
}

/// One row of `status_table`; a set's member named by what follows the set's name.
fn status_cells(r: &StatusRow) -> Vec<String> {
    let name = match (&r.set, r.name.split_once('/')) {
        (Some(_), Some((_, rest))) => format!("  {rest}"),
        _ => r.name.clone(),
    };
    let due = match (r.state.as_str(), r.due_in_seconds, r.overdue_by_seconds) {
        ("overdue", _, Some(by)) => format!("overdue {}", short_duration(by)),
        ("due", ..) => "now".into(),
        (_, Some(d), _) => format!("in {}", short_duration(d)),
        _ => "-".into(),
    };
    let state = match (&r.rotation, &r.needs_attention, r.next_attempt_at) {
        (Some(rot), Some(_), _) => format!("NEEDS ATTENTION ({})", rot.phase),
        (None, Some(_), _) => "NEEDS ATTENTION (parked)".into(),
        (Some(rot), None, _) => format!("rotating ({})", rot.phase),
        (None, None, Some(t)) => format!(
            "{} (last attempt failed; next at {})",
            r.state,
            crate::human::time(t)
        ),
        (None, None, None) => r.state.clone(),
    };
    let state = match (&r.paused, &r.awaiting_supply, &r.drift) {
        (Some(p), ..) => format!(
            "PAUSED since {} by {}; {state}",
            crate::human::time(p.since),
            p.by
        ),
        (None, Some(w), _) if r.needs_attention.is_none() => format!(
            "awaiting supply since {} (deadline {})",
            crate::human::time(w.since),
            w.deadline.map(crate::human::time).unwrap_or("-".into())
        ),
        (None, _, Some(d)) => format!("DRIFT (version {}); {state}", d.version),
        _ => state,
    };
    vec![
        name,
        r.provider.clone(),
        r.path.clone(),
        r.version.map(|v| v.to_string()).unwrap_or("-".into()),
        r.age_seconds.map(short_duration).unwrap_or("-".into()),
        r.max_age_seconds.map(short_duration).unwrap_or("-".into()),
        due,
        match &r.error {
            Some(e) => format!("error: {e}"),
            None => state,
        },
    ]
}

/// The notes under the status table: what needs attention, drift, steps for a person.
fn status_notes(rows: &[StatusRow]) -> String {
    let mut out = String::new();
    for r in rows {
        if let Some(why) = &r.needs_attention {
            let fix = if r.rotation.as_ref().is_some_and(|a| !a.needs_attention) {
                "it goes on by itself once the cause is fixed".to_string()
            } else {
                format!(
                    "`secret-rotator rotate {}` resumes it once the cause is fixed",
                    r.name
                )
            };
            out.push_str(&format!("\n{}: needs attention: {why}\n  {fix}\n", r.name));
        }
        if let Some(why) = &r.invalid {
            out.push_str(&format!(
                "\n{}: the current secret cannot be used: {why}\n",
                r.name
            ));
        }
        if let Some(d) = &r.drift {
            out.push_str(&format!(
                "\n{}: drift since {}: {}\n",
                r.name,
                crate::human::time(d.since),
                d.reason
            ));
        }
        if !r.possible_orphans.is_empty() {
            out.push_str(&format!(
                "\n{}: {} possible orphan credential(s), minted behind an answer that never came and not found since; each lives until it expires unless revoked by hand:\n",
                r.name,
                r.possible_orphans.len()
            ));
            for o in &r.possible_orphans {
                let until = match o.expires_at {
                    Some(t) => format!("alive until {} at the latest", crate::human::time(t)),
                    None => "no known expiry".to_string(),
                };
                out.push_str(&format!(
                    "  attempt {} at {}: {until} ({})\n",
                    o.attempt.chars().take(8).collect::<String>(),
                    crate::human::time(o.noted_at),
                    o.reason
                ));
            }
        }
        if !r.steps.is_empty() {
            let what = if r.awaiting_supply.is_some() {
                "awaiting supply"
            } else {
                "waiting for the old credential to die"
            };
            out.push_str(&format!("\n{}: {what}; the steps:\n", r.name));
            out.push_str(&step_lines(&r.steps, &r.scopes));
        }
    }
    let with_dependents: Vec<&StatusRow> =
        rows.iter().filter(|r| !r.dependents.is_empty()).collect();
    if !with_dependents.is_empty() {
        out.push_str("\nDEPENDENTS\n");
        for r in with_dependents {
            out.push_str(&dependent_lines(&r.name, &r.dependents));
        }
    }
    out
}

/// Numbered steps, then the scopes to grant, indented: for `status`, `plan` and `history`.
pub fn step_lines(steps: &[String], scopes: &[String]) -> String {
    let mut out = String::new();
    for (i, s) in steps.iter().enumerate() {
        out.push_str(&format!("  {}. {s}\n", i + 1));
    }
    if !scopes.is_empty() {
        out.push_str(&format!("  Scopes to grant: {}\n", scopes.join(", ")));
    }
    out
}

/// One row of `history`: the fields an attempt shows, finished or in flight.
struct AttemptRow<'a> {
    id: &'a str,
    trigger: &'a str,
    started_at: DateTime<Utc>,
    marks: &'a [crate::rotation::state::Mark],
    version_before: u64,
    version_after: Option<u64>,
    outcome: String,
    orphans: usize,
    error: Option<&'a str>,
}

impl AttemptRow<'_> {
    fn cells(&self) -> Vec<String> {
        vec![
            self.id.chars().take(8).collect(),
            self.trigger.to_string(),
            crate::human::time(self.started_at),
            self.marks
                .iter()
                .map(|m| m.phase.as_str())
                .collect::<Vec<_>>()
                .join(">"),
            format!(
                "{}->{}",
                self.version_before,
                self.version_after
                    .map(|v| v.to_string())
                    .unwrap_or("-".into())
            ),
            self.outcome.clone(),
            self.orphans.to_string(),
            self.error.unwrap_or_default().to_string(),
        ]
    }
}

pub fn history_table(history: &[AttemptSummary], in_flight: Option<&Attempt>) -> String {
    let mut cells: Vec<Vec<String>> = history
        .iter()
        .map(|h| {
            AttemptRow {
                id: &h.id,
                trigger: &h.trigger,
                started_at: h.started_at,
                marks: &h.marks,
                version_before: h.version_before,
                version_after: h.version_after,
                outcome: h.outcome.as_str().to_string(),
                orphans: h.orphans.len(),
                error: h.error.as_deref(),
            }
            .cells()
        })
        .collect();
    if let Some(a) = in_flight {
        cells.push(
            AttemptRow {
                id: &a.id,
                trigger: &a.trigger,
                started_at: a.started_at,
                marks: &a.marks,
                version_before: a.version_before,
                version_after: a.version_after,
                outcome: if a.needs_attention {
                    "needs attention".into()
                } else {
                    format!("in flight ({})", a.phase.as_str())
                },
                orphans: a.orphans.len(),
                error: a.last_error.as_deref(),
            }
            .cells(),
        );
    }
    table(
        &[
            "ATTEMPT", "TRIGGER", "STARTED", "PHASES", "VERSIONS", "OUTCOME", "ORPHANS", "ERROR",
        ],
        &cells,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_durations() {
        let cases = [
            (0, "0s"),
            (59, "59s"),
            (60, "1m"),
            (61, "1m 1s"),
            (3600, "1h"),
            (3660, "1h 1m"),
            (86_400, "1d"),
            (90_000, "1d 1h"),
        ];
        for (secs, text) in cases {
            assert_eq!(short_duration(secs), text, "{secs}");
        }
    }

    #[test]
    fn tables_pad_columns() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
