//! What `status`, `history` and `plan` show: rows built from Vault facts, rendered as a table or
//! JSON.
//!
//! Invariant: pure (no IO, `now` passed in), and no secret value ever reaches a row: rows are
//! built from metadata, versions and the state record's non-secret fields.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Credential;
use crate::policy::{self, SecretFacts, Standing};
use crate::rotation::{Attempt, AttemptSummary, StateRecord};

/// One credential in `status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    pub name: String,
    pub provider: String,
    pub path: String,
    /// Current KV version; `None` when the secret is missing.
    pub version: Option<u64>,
    pub created_time: Option<DateTime<Utc>>,
    pub age_seconds: Option<u64>,
    pub max_age_seconds: Option<u64>,
    pub expires_at: Option<DateTime<Utc>>,
    /// "ok", "due", "overdue", "missing" or "error".
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
        matches!(self.state.as_str(), "overdue" | "missing" | "error")
            || self.needs_attention.is_some()
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
            p.since.to_rfc3339(),
            p.reason
        )),
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
        provider: cred.provider.kind().to_string(),
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
    }
}

/// A row for a credential whose facts could not be read.
pub fn error_row(cred: &Credential, error: String) -> StatusRow {
    StatusRow {
        name: cred.name.clone(),
        provider: cred.provider.kind().to_string(),
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
    }
}

/// "3d 4h", "12m", "40s": short, for tables.
pub fn short_duration(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!(
            "{m}m{}",
            if s > 0 {
                format!(" {s}s")
            } else {
                String::new()
            }
        ),
        (0, _, _) => format!(
            "{h}h{}",
            if m > 0 {
                format!(" {m}m")
            } else {
                String::new()
            }
        ),
        _ => format!(
            "{d}d{}",
            if h > 0 {
                format!(" {h}h")
            } else {
                String::new()
            }
        ),
    }
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
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
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
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
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
                    t.format("%Y-%m-%d %H:%M:%SZ")
                ),
                (None, None, None) => r.state.clone(),
            };
            vec![
                r.name.clone(),
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
        })
        .collect();
    let mut out = table(
        &[
            "NAME", "PROVIDER", "PATH", "VERSION", "AGE", "MAX AGE", "DUE", "STATE",
        ],
        &cells,
    );
    for r in rows {
        if let Some(why) = &r.needs_attention {
            out.push_str(&format!(
                "\n{}: needs attention: {why}\n  `secret-rotator rotate {}` resumes it once the cause is fixed\n",
                r.name, r.name
            ));
        }
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
            self.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
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
