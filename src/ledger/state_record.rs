//! The state record as stored: its fields, phases, attempts and finished-attempt summaries,
//! and the bound on its size.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::secret::SecretFields;

use super::EventLog;

/// The record format this binary writes.
pub const SCHEMA: u32 = 5;
/// The record formats this binary reads (1: before the failure budget and bounds; 3: before the
/// assisted phases, `paused` and `drift`; 4: `history` as a JSON list).
pub const OLDEST_SCHEMA: u32 = 1;
/// At most this many finished attempts are kept in the record (fewer when they are large).
pub const HISTORY_LIMIT: usize = 10;
/// Bounds of the record as written, far below OpenBao's defaults (`max_request_json_strings`
/// 1000; request size in MiB): object keys and string values both count as strings.
pub const MAX_RECORD_STRINGS: usize = 400;
pub const MAX_RECORD_BYTES: usize = 16 * 1024;

/// `StateRecord::history` as one text: the JSON list, gzip-compressed, in standard base64
/// (`jq -r .history | base64 -d | gunzip` shows it). Read from that, from a plain JSON text, or
/// (schema 4 and older) from a list.
mod history_text {
    use std::io::{Read, Write};

    use base64::Engine as _;
    use flate2::{read::GzDecoder, write::GzEncoder, Compression};
    use serde::{Deserialize, Deserializer, Serializer};

    use super::AttemptSummary;

    pub fn serialize<S: Serializer>(history: &[AttemptSummary], s: S) -> Result<S::Ok, S::Error> {
        let json = serde_json::to_vec(history).map_err(serde::ser::Error::custom)?;
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        let packed = gz
            .write_all(&json)
            .and_then(|()| gz.finish())
            .map_err(serde::ser::Error::custom)?;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(packed))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<AttemptSummary>, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(text) if text.starts_with('[') => {
                serde_json::from_str(&text).map_err(D::Error::custom)
            }
            serde_json::Value::String(text) => {
                let packed = base64::engine::general_purpose::STANDARD
                    .decode(text.as_bytes())
                    .map_err(|e| D::Error::custom(format!("history: not base64: {e}")))?;
                let mut json = Vec::new();
                GzDecoder::new(packed.as_slice())
                    .read_to_end(&mut json)
                    .map_err(|e| D::Error::custom(format!("history: not gzip: {e}")))?;
                serde_json::from_slice(&json).map_err(D::Error::custom)
            }
            list => serde_json::from_value(list).map_err(D::Error::custom),
        }
    }
}

/// The daemon's record for one credential, kept at `{state_mount}/{state_prefix}/credentials/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateRecord {
    pub schema: u32,
    pub credential: String,
    /// The program and version that wrote the record last.
    #[serde(default)]
    pub written_by: Option<String>,
    /// The attempt in flight, if any.
    pub attempt: Option<Attempt>,
    /// The latest finished attempts, oldest first (bounded). Stored as one compressed text
    /// (schema 5; a list before, still read): the record is read at every start-up and drive,
    /// and what OpenBao spends on a read grows with its strings (each one HMACed by every audit
    /// device, decoded and encoded again; its request-complexity limit counts them) and its
    /// bytes. Ten summaries are about 150 strings and 6 KB as a list; one string of about 1.3 KB
    /// as this text.
    #[serde(default, with = "history_text")]
    pub history: Vec<AttemptSummary>,
    /// Attempts in a row that ended without rotating (failed, rolled back).
    #[serde(default)]
    pub failures: u32,
    /// After a failed attempt: no new attempt starts on its own before this time.
    #[serde(default)]
    pub retry_at: Option<DateTime<Utc>>,
    /// Failure budget spent: nothing starts on its own until an operator runs `rotate NAME`.
    #[serde(default)]
    pub parked: Option<Parked>,
    /// The latest events for dependents (appended in the write that follows their emission;
    /// delivered from here by the delivery worker). Schema 3.
    #[serde(default, skip_serializing_if = "EventLog::is_empty")]
    pub events: EventLog,
    /// An operator paused the credential (`pause NAME`): nothing starts or moves on until
    /// `resume NAME`. Schema 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Paused>,
    /// The current credential was rejected although this daemon did not change it. Schema 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<Drift>,
}

/// `pause NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    pub since: DateTime<Utc>,
    pub by: String,
}

/// Someone regenerated or deleted the credential outside the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub since: DateTime<Utc>,
    /// The KV version the provider rejected.
    pub version: u64,
    pub reason: String,
}

impl StateRecord {
    pub fn new(credential: &str) -> StateRecord {
        StateRecord {
            schema: SCHEMA,
            credential: credential.to_string(),
            written_by: None,
            attempt: None,
            history: Vec::new(),
            failures: 0,
            retry_at: None,
            parked: None,
            events: EventLog::default(),
            paused: None,
            drift: None,
        }
    }

    /// Check a record read from Vault before anything acts on it: a schema this binary knows,
    /// the credential it belongs to, and the fields its phase needs. `Err` names the field.
    pub fn validate(&self, credential: &str) -> Result<(), String> {
        if !(OLDEST_SCHEMA..=SCHEMA).contains(&self.schema) {
            return Err(format!(
                "field schema: {} is not a record format this binary knows ({OLDEST_SCHEMA} to {SCHEMA}); it was written by {}",
                self.schema,
                self.written_by.as_deref().unwrap_or("an unknown program")
            ));
        }
        if self.credential != credential {
            return Err(format!(
                "field credential: the record names credential {:?}, not {credential:?}",
                self.credential
            ));
        }
        let Some(a) = &self.attempt else {
            return Ok(());
        };
        let missing = |field: &str| {
            Err(format!(
                "field attempt.{field} is null, but phase {} needs it",
                a.phase.as_str()
            ))
        };
        match a.phase {
            Phase::Minting => Ok(()),
            Phase::Minted if a.pending.is_none() => missing("pending"),
            Phase::Minted => Ok(()),
            Phase::Notified | Phase::RollingBack if a.pending.is_none() => missing("pending"),
            Phase::Notified | Phase::RollingBack if a.version_after.is_none() => {
                missing("version_after")
            }
            Phase::RollingBack if a.old.is_none() => missing("old"),
            Phase::Notified | Phase::RollingBack => Ok(()),
            Phase::AwaitingSupply => Ok(()),
            Phase::AwaitingOldDeletion if a.pending.is_none() => missing("pending"),
            Phase::AwaitingOldDeletion if a.version_after.is_none() => missing("version_after"),
            Phase::AwaitingOldDeletion => Ok(()),
        }
    }
}

/// Why a credential waits for an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    pub since: DateTime<Utc>,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Recorded before calling the provider: a credential may exist that nobody holds yet.
    Minting,
    /// The new credential is recorded here, not yet at the secret's path.
    Minted,
    /// Committed to the secret's path and announced; waiting out the grace period, then
    /// revoking the old credential.
    Notified,
    /// An operator asked to re-promote the old credential: write it back, then revoke the new.
    RollingBack,
    /// Assisted: `rotation.due` was sent; waiting for a person to run `supply`.
    AwaitingSupply,
    /// Assisted: the supplied credential is committed; waiting until the old one is rejected
    /// (a person deletes the old account, or regenerating already killed it).
    AwaitingOldDeletion,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Minting => "minting",
            Phase::Minted => "minted",
            Phase::Notified => "notified",
            Phase::RollingBack => "rolling_back",
            Phase::AwaitingSupply => "awaiting_supply",
            Phase::AwaitingOldDeletion => "awaiting_old_deletion",
        }
    }
}

/// A credential minted by an attempt that nobody may hold (the daemon died or the answer was
/// lost before it was recorded). It dies on its own at `expires_at`, when the provider's
/// credentials expire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orphan {
    pub noted_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub reason: String,
}

/// A phase reached, with its time: the attempt's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub phase: String,
    pub at: DateTime<Utc>,
}

/// A step failed for a reason that may pass (provider or Vault unavailable): when to try again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    /// Failures in a row of the current step.
    pub tries: u32,
    /// When the first of them happened: the transient budget counts from here.
    pub since: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

/// The attempt in flight.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub id: String,
    /// The daemon instance that holds the lease.
    pub owner: String,
    /// Another instance may take the attempt over after this time.
    pub lease_expires_at: DateTime<Utc>,
    pub phase: Phase,
    /// Why it started: "manual", "max_age", "schedule", "expiry", "missing".
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The secret's version when the attempt started (0: it never existed; a deleted latest
    /// version counts as its own number, which check-and-set compares against).
    pub version_before: u64,
    /// The credential being replaced, kept until it is revoked.
    pub old: Option<SecretFields>,
    /// The expiry asked of the provider for the new credential.
    pub planned_expires_at: Option<DateTime<Utc>>,
    /// The new credential, once minted.
    pub pending: Option<SecretFields>,
    pub pending_expires_at: Option<DateTime<Utc>>,
    /// The secret's version written by this attempt.
    pub version_after: Option<u64>,
    /// When the old credential may be revoked (end of the grace period).
    pub revoke_after: Option<DateTime<Utc>>,
    #[serde(default)]
    pub orphans: Vec<Orphan>,
    #[serde(default)]
    pub marks: Vec<Mark>,
    pub last_error: Option<String>,
    /// Set when retries are spent: the daemon stops retrying until an operator acts
    /// (`rotate NAME` resumes it).
    #[serde(default)]
    pub needs_attention: bool,
    /// A transient failure of the current step: when to try again.
    #[serde(default)]
    pub retry: Option<Retry>,
    /// In phase minting: no mint is under way, the outcome of every mint so far is recorded
    /// (minted, failed, or noted as a possible orphan). False from the start of an attempt and
    /// while a mint is sent, so that a resume knows to note a possible orphan first.
    #[serde(default)]
    pub mint_settled: bool,
    /// Phase notified: the old credential is kept alive past the grace period because
    /// dependents with `require_ack` and `on_ack_timeout = "hold"` have not acknowledged the
    /// new one (the reason, naming them). Revocation follows once they do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// Assisted, awaiting_supply: no supply is taken as on time after this (needs attention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// Assisted: the next reminder (awaiting_supply) or look at the old credential
    /// (awaiting_old_deletion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check: Option<DateTime<Utc>>,
    /// Assisted: reminders sent, or looks at the old credential made, in this phase.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub checks: u32,
    /// Assisted: `credential.rotated` was announced.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub announced: bool,
    /// Vault's `created_time` of `version_after`, from the reply to the commit's write (absent
    /// when the commit was found written after a lost reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_created_at: Option<DateTime<Utc>>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// New credential live, old one revoked and checked dead.
    Rotated,
    /// The provider rejected the new credential: it was revoked, the old one stays current.
    RolledBack,
    /// Someone else wrote the secret meanwhile: ours was revoked, theirs kept.
    Aborted,
    /// Could not mint (rejected, misconfigured, or retries exhausted); nothing changed.
    Failed,
    /// An operator re-promoted the previous credential during the grace period.
    Reverted,
    /// An operator ended an assisted attempt (`cancel`): waiting for a supply (nothing
    /// written), or for the old credential to die (the committed version stays).
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Rotated => "rotated",
            Outcome::RolledBack => "rolled_back",
            Outcome::Aborted => "aborted",
            Outcome::Failed => "failed",
            Outcome::Reverted => "reverted",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// A finished attempt, as `history` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptSummary {
    pub id: String,
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: Outcome,
    pub version_before: u64,
    pub version_after: Option<u64>,
    pub marks: Vec<Mark>,
    pub orphans: Vec<Orphan>,
    pub error: Option<String>,
    /// The new credential's expiry, when the provider's credentials expire.
    pub expires_at: Option<DateTime<Utc>>,
    /// Vault's `created_time` of `version_after`, when the commit's reply said it: with it the
    /// record alone tells how old the current version is (start-up reads nothing else).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_created_at: Option<DateTime<Utc>>,
}

/// The record is too large to write even with no finished attempt kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the state record needs {strings} JSON strings and {bytes} bytes, over the bound of {MAX_RECORD_STRINGS} strings and {MAX_RECORD_BYTES} bytes (the secret has too many or too large fields)")]
pub struct TooLarge {
    pub strings: usize,
    pub bytes: usize,
}

/// Strings (object keys and string values) and bytes of a JSON value, as OpenBao counts them.
pub fn json_size(v: &serde_json::Value) -> (usize, usize) {
    fn strings(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::String(_) => 1,
            serde_json::Value::Array(a) => a.iter().map(strings).sum(),
            serde_json::Value::Object(o) => o.values().map(|v| 1 + strings(v)).sum(),
            _ => 0,
        }
    }
    (strings(v), v.to_string().len())
}

/// The record as it will be written: at most [`HISTORY_LIMIT`] finished attempts, fewer when
/// needed to stay within [`MAX_RECORD_STRINGS`] and [`MAX_RECORD_BYTES`] (the oldest go first).
pub fn bounded(mut r: StateRecord) -> Result<(StateRecord, serde_json::Value), TooLarge> {
    if r.history.len() > HISTORY_LIMIT {
        let extra = r.history.len() - HISTORY_LIMIT;
        r.history.drain(..extra);
    }
    loop {
        let v = serde_json::to_value(&r).expect("state records serialise");
        // The write wraps the record in {"data": …, "options": {"cas": n}}: three more strings.
        let (strings, bytes) = json_size(&v);
        if strings + 3 <= MAX_RECORD_STRINGS && bytes + 64 <= MAX_RECORD_BYTES {
            return Ok((r, v));
        }
        if r.history.is_empty() {
            return Err(TooLarge { strings, bytes });
        }
        r.history.remove(0);
    }
}
