//! The event log inside a credential's state record: the events announced to its dependents,
//! numbered, bounded, appended idempotently by event id. The engine appends; the delivery worker
//! reads it (`notify::outbox`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::events::EventKind;

/// Events kept in a state record's log.
pub const LOG_LIMIT: usize = 8;
/// Characters of a reason or an error a record keeps.
pub const MAX_TEXT: usize = 200;

/// One event as a record keeps it: enough to rebuild its payload with the credential's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logged {
    /// Position in its log, from 1.
    pub seq: u64,
    /// The idempotency key (`webhook-id`).
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_after: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<String>,
    /// A notice about one dependent is not sent to that dependent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub about: Option<String>,
    pub reason: String,
}

impl Logged {
    /// An event of `kind` with the fields every type has; the rest default to none.
    pub fn new(
        id: String,
        kind: EventKind,
        at: DateTime<Utc>,
        version: Option<u64>,
        attempt: Option<&str>,
        reason: &str,
    ) -> Logged {
        Logged {
            seq: 0,
            id,
            kind,
            at,
            version,
            previous_version: None,
            revoke_after: None,
            expires_at: None,
            attempt: attempt.map(str::to_string),
            about: None,
            reason: clip(reason),
        }
    }
}

/// A bounded, append-only list of events, numbered from 1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLog {
    /// The number of the latest event appended (0: none yet).
    #[serde(default)]
    pub last_seq: u64,
    /// The latest events, oldest first.
    #[serde(default)]
    pub entries: Vec<Logged>,
    /// Per dependent, the events of this log it accepted up to this number before the write
    /// that stored them: the engine's process delivers the events of its own write ahead of it
    /// and records them in it (`notify::ahead`). A dependent's cursor is the further of this
    /// one and its deliveries record's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub delivered: BTreeMap<String, u64>,
}

impl EventLog {
    pub fn is_empty(&self) -> bool {
        self.last_seq == 0
    }

    /// Append `event` unless one with its id is kept already (a re-emission); keeps the newest
    /// [`LOG_LIMIT`] (or `limit`). Returns whether it was added.
    pub fn append(&mut self, event: Logged, limit: usize) -> bool {
        if self.find(&event.id).is_some() {
            return false;
        }
        self.last_seq += 1;
        self.entries.push(Logged {
            seq: self.last_seq,
            ..event
        });
        if self.entries.len() > limit {
            let extra = self.entries.len() - limit;
            self.entries.drain(..extra);
        }
        true
    }

    /// Events up to `seq` were delivered to `dependent` ahead of this log's write.
    pub fn delivered_ahead(&mut self, dependent: &str, seq: u64) {
        let through = self.delivered.entry(dependent.to_string()).or_default();
        *through = (*through).max(seq);
    }

    /// The events `dependent` accepted ahead of their write, up to this number (0: none).
    pub fn delivered_through(&self, dependent: &str) -> u64 {
        self.delivered.get(dependent).copied().unwrap_or(0)
    }

    pub fn find(&self, id: &str) -> Option<&Logged> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// The first kept event after `seq` that `dependent` should get.
    pub fn next_after(&self, seq: u64, dependent: &str) -> Option<&Logged> {
        self.entries
            .iter()
            .find(|e| e.seq > seq && e.about.as_deref() != Some(dependent))
    }
}

/// `s` cut to [`MAX_TEXT`] characters (an ellipsis marks a cut): what a record keeps of a reason.
pub fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_TEXT) {
        None => s.to_string(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}
