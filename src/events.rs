//! Events for dependents and operators: one small interface, several sinks.
//!
//! Invariant: an event never carries a secret value; only names, versions, ids and reasons.
//! Delivery is at-least-once: after a crash an event may be emitted again with the same `id`,
//! which receivers use as an idempotency key.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What happened: the one list of event types and their wire names, for the event sinks, the
/// event log in the state record and the payloads dependents receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "credential.rotated")]
    Rotated,
    #[serde(rename = "credential.revoked")]
    Revoked,
    /// An operator re-promoted the previous credential (`rollback`).
    #[serde(rename = "credential.rolled_back")]
    RolledBack,
    #[serde(rename = "rotation.failed")]
    Failed,
    #[serde(rename = "rotation.needs_attention")]
    NeedsAttention,
    /// An assisted credential is due: a person must regenerate it and run `supply` (sent again
    /// as a reminder with backoff).
    #[serde(rename = "rotation.due")]
    Due,
    /// The current credential was rejected although the daemon did not change it: someone
    /// regenerated or deleted it outside the daemon.
    #[serde(rename = "credential.drift")]
    Drift,
    /// An operator ended an assisted attempt (`cancel`).
    #[serde(rename = "rotation.cancelled")]
    Cancelled,
    /// For dependents only: the live credential nears `max_age` or its expiry and cannot be
    /// rotated (parked or failing). Raised by the delivery worker, not the engine.
    #[serde(rename = "credential.expiring")]
    Expiring,
    /// For dependents only: `secret-rotator test-dependent`, a signed test delivery about nothing.
    #[serde(rename = "ping")]
    Ping,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Rotated => "credential.rotated",
            EventKind::Revoked => "credential.revoked",
            EventKind::RolledBack => "credential.rolled_back",
            EventKind::Failed => "rotation.failed",
            EventKind::NeedsAttention => "rotation.needs_attention",
            EventKind::Due => "rotation.due",
            EventKind::Drift => "credential.drift",
            EventKind::Cancelled => "rotation.cancelled",
            EventKind::Expiring => "credential.expiring",
            EventKind::Ping => "ping",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `{attempt}:{type}`: the same for a re-emission after a crash.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub credential: String,
    pub attempt: String,
    pub at: DateTime<Utc>,
    /// The KV version the event is about (the new one for `rotated`, the old one for `revoked`).
    pub version: Option<u64>,
    /// A short human reason, never a secret.
    pub detail: String,
}

impl Event {
    pub fn new(
        kind: EventKind,
        credential: &str,
        attempt: &str,
        at: DateTime<Utc>,
        version: Option<u64>,
        detail: impl Into<String>,
    ) -> Event {
        Event {
            id: format!("{attempt}:{}", kind.as_str()),
            kind,
            credential: credential.to_string(),
            attempt: attempt.to_string(),
            at,
            version,
            detail: detail.into(),
        }
    }
}

/// Where events go. Emission must not fail the rotation: sinks log their own errors.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: &Event);

    /// The event with the body a webhook dependent receives for it (the engine builds it from
    /// the configuration: `notify::payload`). Sinks that write the body (the events file) use
    /// it; the others see only the event.
    fn emit_with_body(&self, event: &Event, body: &[u8]) {
        let _ = body;
        self.emit(event);
    }
}

/// Logs each event as a structured line.
pub struct LogSink;

impl EventSink for LogSink {
    fn emit(&self, e: &Event) {
        tracing::info!(event = e.kind.as_str(), credential = %e.credential, attempt = %e.attempt, version = e.version, detail = %e.detail, "event");
    }
}

/// Appends each event as one JSON line to a file, synced before returning: the very body a
/// webhook dependent receives (`type`, `timestamp`, `data`, see `notify::payload`), one per line.
/// The file is kept 0600: created so, and narrowed back to 0600 on each append if it was found
/// looser.
pub struct JsonLinesSink {
    path: PathBuf,
    lock: Mutex<()>,
}

impl JsonLinesSink {
    pub fn new(path: PathBuf) -> Self {
        JsonLinesSink {
            path,
            lock: Mutex::new(()),
        }
    }

    fn append(&self, line: &str) -> std::io::Result<()> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        // `mode` applies only when the file is created; an existing file keeps its own.
        if f.metadata()?.permissions().mode() & 0o177 != 0 {
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        f.write_all(line.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_data()
    }
}

impl EventSink for JsonLinesSink {
    /// An event that comes without its body (no engine emits one) is written in the same shape
    /// with the fields the event holds.
    fn emit(&self, e: &Event) {
        let body = serde_json::json!({
            "type": e.kind,
            "timestamp": e.at,
            "data": {
                "credential": e.credential,
                "version": e.version,
                "attempt": e.attempt,
                "reason": e.detail,
            },
        });
        self.emit_with_body(e, body.to_string().as_bytes());
    }

    fn emit_with_body(&self, _: &Event, body: &[u8]) {
        let line = String::from_utf8_lossy(body);
        if let Err(err) = self.append(&line) {
            tracing::error!(path = %self.path.display(), error = %err, "cannot append event");
        }
    }
}

/// Keeps events in memory (tests, `rotate` output).
#[derive(Default)]
pub struct MemorySink {
    events: Mutex<Vec<Event>>,
}

impl MemorySink {
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl EventSink for MemorySink {
    fn emit(&self, e: &Event) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e.clone());
    }
}

/// Sends every event to each of several sinks.
pub struct FanOut(pub Vec<Arc<dyn EventSink>>);

impl EventSink for FanOut {
    fn emit(&self, e: &Event) {
        for s in &self.0 {
            s.emit(e);
        }
    }

    fn emit_with_body(&self, e: &Event, body: &[u8]) {
        for s in &self.0 {
            s.emit_with_body(e, body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_stable_per_attempt_and_type() {
        let at = Utc::now();
        let a = Event::new(EventKind::Rotated, "c", "att-1", at, Some(2), "x");
        let b = Event::new(EventKind::Rotated, "c", "att-1", at, Some(2), "y");
        assert_eq!(a.id, b.id);
        assert_eq!(a.id, "att-1:credential.rotated");
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["type"], "credential.rotated");
    }

    #[test]
    fn json_lines_sink_appends_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let sink = JsonLinesSink::new(path.clone());
        let at = Utc::now();
        sink.emit(&Event::new(EventKind::Rotated, "c", "a", at, Some(1), ""));
        sink.emit_with_body(
            &Event::new(EventKind::Revoked, "c", "a", at, Some(0), ""),
            br#"{"type":"credential.revoked","timestamp":"2026-05-04T11:15:02Z","data":{}}"#,
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // Both in the webhook body's shape: the given body as it is, else one from the event.
        assert_eq!(lines[0]["type"], "credential.rotated");
        assert_eq!(lines[0]["data"]["credential"], "c");
        assert_eq!(lines[0]["data"]["version"], 1);
        assert_eq!(lines[0]["data"]["attempt"], "a");
        assert_eq!(lines[1]["type"], "credential.revoked");
        assert_eq!(lines[1]["timestamp"], "2026-05-04T11:15:02Z");
        assert_eq!(lines.len(), 2);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn json_lines_sink_narrows_an_existing_looser_file_to_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        // What a plain create under a umask of 022 leaves.
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let sink = JsonLinesSink::new(path.clone());
        sink.emit(&Event::new(
            EventKind::Rotated,
            "c",
            "a",
            Utc::now(),
            Some(1),
            "",
        ));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    }
}
