//! Deliveries ahead of the write: the engine's process delivers the events it is about to write
//! into the state record to the dependents that have every event already stored, waits a short
//! while, and writes how far each got into the same write (`EventLog::delivered`). A rotation
//! whose dependents answer within [`AHEAD_BUDGET`] then needs no write of the deliveries record:
//! the ack the engine waits for, and `credential.revoked`, ride in the state record writes it
//! makes anyway.
//!
//! Invariants:
//! - only events not stored yet (past the record's last write), and only to a dependent whose
//!   cursor covers every stored event: no worker anywhere can be delivering to it meanwhile (it
//!   delivers from the stored log), so a dependent still gets one event at a time, in order;
//! - one at a time with this process's worker rounds for the credential (a lock per
//!   credential): a round never delivers what is under way ahead of the write;
//! - at-least-once: the cursor is stored only with the events, in one check-and-set write; if
//!   that write does not land, nothing says they were delivered, and they are delivered again;
//! - a delivery is never cut short: one that ends after the engine stopped waiting is handed to
//!   the worker, which records it (if its events were stored) instead of delivering it again;
//!   so is a failed one, which the worker records as a failure (its backoff and budget count
//!   it) and tries again from the stored log;
//! - every writer of a credential's files (the worker's rounds, the files restored at start-up,
//!   the deliveries ahead) holds the credential's lock: none writes an older secret over a
//!   newer one.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;

use super::{Deliverer, Observed, Target};
use crate::config::Credential;
use crate::notify::delivery::Delivery;
use crate::notify::outbox::{Deliveries, Due, EventLog, Logged};

/// How long the engine waits for deliveries ahead of its write before it writes without them.
pub const AHEAD_BUDGET: Duration = Duration::from_secs(1);

/// One event a dependent accepted ahead of its write, or refused (`failed`: whether trying
/// again may pass, and why).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Accepted {
    dependent: String,
    seq: u64,
    id: String,
    failed: Option<(bool, String)>,
}

/// What deliveries ahead share with the worker of the same process.
#[derive(Debug, Default)]
pub struct Ahead {
    /// Per credential: held by the deliveries ahead of a write while under way, and by each of
    /// the worker's rounds.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per credential: deliveries that ended after the engine wrote without them, and failed
    /// ones.
    late: Mutex<HashMap<String, Vec<Accepted>>>,
}

impl Ahead {
    pub(super) fn lock(&self, credential: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(credential.to_string()).or_default().clone()
    }

    /// Late deliveries whose events `log` holds, as deliveries to record (with the failure of
    /// a failed one); those whose write has not come yet are kept, and those whose write did
    /// not land are dropped.
    pub(super) fn take_late(
        &self,
        credential: &str,
        log: &EventLog,
    ) -> Vec<(Due, Option<(bool, String)>)> {
        let mut late = self.late.lock().unwrap_or_else(|p| p.into_inner());
        let Some(list) = late.get_mut(credential) else {
            return Vec::new();
        };
        let mut due = Vec::new();
        list.retain(|a| {
            if let Some(e) = log.find(&a.id).filter(|e| e.seq == a.seq) {
                let d = Due {
                    dependent: a.dependent.clone(),
                    event: e.clone(),
                    notice: false,
                };
                due.push((d, a.failed.clone()));
                return false;
            }
            a.seq > log.last_seq
        });
        due
    }

    fn add_late(&self, credential: &str, accepted: Accepted) {
        let mut late = self.late.lock().unwrap_or_else(|p| p.into_inner());
        late.entry(credential.to_string())
            .or_default()
            .push(accepted);
    }
}

/// The deliveries of one write: taken by the engine when it stops waiting, later ones are late.
#[derive(Default)]
struct Collect {
    closed: bool,
    accepted: Vec<Accepted>,
}

impl Deliverer {
    /// Deliver the events of `log` past `stored` (appended since the state record's last write)
    /// to each dependent that has every stored event, for at most `budget`, before the write
    /// that stores them. Returns how far each got: the caller records it in that write
    /// ([`EventLog::delivered_ahead`]).
    pub async fn deliver_ahead(
        &self,
        cred: &Credential,
        log: &EventLog,
        stored: u64,
        budget: Duration,
    ) -> BTreeMap<String, u64> {
        let deadline = tokio::time::Instant::now() + budget;
        if cred.dependents.is_empty() || !log.entries.iter().any(|e| e.seq > stored) {
            return BTreeMap::new();
        }
        let lock = self.ahead.lock(&cred.name);
        let Ok(guard) = tokio::time::timeout_at(deadline, lock.lock_owned()).await else {
            return BTreeMap::new(); // a worker round is under way: the worker delivers them
        };
        let guard = Arc::new(guard);
        let ready = self.caught_up(cred, log, stored).await;
        let collect = Arc::new(Mutex::new(Collect::default()));
        let targets = Arc::new(Target::of(cred));
        let mut tasks = Vec::new();
        for (name, cursor) in ready {
            let events: Vec<Logged> = log
                .entries
                .iter()
                .filter(|e| e.seq > cursor)
                .cloned()
                .collect();
            let (this, cred, targets) = (self.clone(), cred.clone(), targets.clone());
            let (collect, guard) = (collect.clone(), guard.clone());
            tasks.push(tokio::spawn(async move {
                this.deliver_in_order(&cred, &targets, &name, events, &collect)
                    .await;
                drop(guard);
            }));
        }
        drop(guard);
        let _ = tokio::time::timeout_at(deadline, futures_util::future::join_all(tasks)).await;
        let mut c = collect.lock().unwrap_or_else(|p| p.into_inner());
        c.closed = true;
        let mut through = BTreeMap::new();
        for a in std::mem::take(&mut c.accepted) {
            let seq = through.entry(a.dependent).or_insert(0);
            *seq = a.seq.max(*seq);
        }
        through
    }

    /// The dependents that have every event stored in the log up to `stored`, with their cursor.
    async fn caught_up(
        &self,
        cred: &Credential,
        log: &EventLog,
        stored: u64,
    ) -> Vec<(String, u64)> {
        let mut record: Option<Option<Deliveries>> = None;
        let mut ready = Vec::new();
        for dep in &cred.dependents {
            let mut cursor = log.delivered_through(&dep.name);
            if cursor < stored {
                if record.is_none() {
                    // Unreadable: the worker says why; nothing is delivered ahead.
                    let read = self.records.read::<Deliveries>(&cred.name).await;
                    record = Some(
                        read.ok()
                            .map(|r| r.map_or_else(|| Deliveries::new(&cred.name), |(d, _)| d)),
                    );
                }
                if let Some(Some(d)) = &record {
                    cursor = d.through(&dep.name, log);
                }
            }
            if cursor >= stored {
                ready.push((dep.name.clone(), cursor));
            }
        }
        ready
    }

    /// Deliver `events` to one dependent in order, until one fails.
    async fn deliver_in_order(
        &self,
        cred: &Credential,
        targets: &[Target],
        name: &str,
        events: Vec<Logged>,
        collect: &Mutex<Collect>,
    ) {
        let Some(target) = targets.iter().find(|t| t.name == name) else {
            return;
        };
        for event in events {
            // A notice about a dependent is not sent to it: it moves past it.
            if event.about.as_deref() != Some(name) {
                let outcome =
                    tokio::time::timeout(target.deadline(cred), self.deliver(cred, target, &event))
                        .await;
                let delivered = matches!(outcome, Ok(Delivery::Delivered));
                if let Some(observe) = &self.observer {
                    let what = if delivered { "delivered" } else { "failed" };
                    observe(&cred.name, name, Observed::Delivery(what));
                }
                if !delivered {
                    let failed = match outcome {
                        Ok(Delivery::Failed { retryable, reason }) => (retryable, reason),
                        _ => (
                            true,
                            format!(
                                "no outcome within {}",
                                crate::human::duration(target.deadline(cred))
                            ),
                        ),
                    };
                    tracing::warn!(credential = %cred.name, dependent = %name, event = %event.id, error = %failed.1, "delivery failed ahead of its write; the worker tries it again");
                    let refused = Accepted {
                        dependent: name.to_string(),
                        seq: event.seq,
                        id: event.id.clone(),
                        failed: Some(failed),
                    };
                    self.ahead.add_late(&cred.name, refused);
                    self.wakeup.wake(&cred.name);
                    return;
                }
                tracing::info!(credential = %cred.name, dependent = %name, event = %event.id, "delivered");
            }
            let accepted = Accepted {
                dependent: name.to_string(),
                seq: event.seq,
                id: event.id.clone(),
                failed: None,
            };
            let mut c = collect.lock().unwrap_or_else(|p| p.into_inner());
            if c.closed {
                self.ahead.add_late(&cred.name, accepted);
                self.wakeup.wake(&cred.name);
            } else {
                c.accepted.push(accepted);
            }
        }
    }

    /// Record in `d` the late or failed deliveries ahead whose events `log` holds; whether any.
    pub(super) fn take_late(&self, d: &mut Deliveries, cred: &str, log: &EventLog) -> bool {
        let late = self.ahead.take_late(cred, log);
        for (due, failed) in &late {
            match failed {
                None => d.delivered(due, Utc::now()),
                // Unless the dependent got it since: a failure counts against it as the
                // worker's own would (backoff, budget).
                Some((retryable, reason)) if d.through(&due.dependent, log) < due.event.seq => {
                    let unit = rand::random::<f64>();
                    d.failed(due, reason, *retryable, Utc::now(), &self.policy, unit);
                }
                Some(_) => {}
            }
        }
        !late.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;
    use crate::notify::outbox::LOG_LIMIT;

    fn log_of(ids: &[&str]) -> EventLog {
        let mut log = EventLog::default();
        for id in ids {
            let e = Logged::new(
                id.to_string(),
                EventKind::Rotated,
                Utc::now(),
                None,
                None,
                "",
            );
            log.append(e, LOG_LIMIT);
        }
        log
    }

    #[test]
    fn a_late_delivery_is_recorded_once_its_write_is_stored_and_dropped_if_it_never_was() {
        let ahead = Ahead::default();
        let late = |dependent: &str, seq: u64, id: &str| Accepted {
            dependent: dependent.into(),
            seq,
            id: id.into(),
            failed: None,
        };
        // (late delivery, the log the worker reads, recorded now, kept for later)
        let cases = [
            (late("hook", 2, "b"), log_of(&["a", "b"]), true, false),
            (late("hook", 2, "b"), log_of(&["a"]), false, true),
            (late("hook", 2, "b"), log_of(&["a", "x"]), false, false),
        ];
        for (accepted, log, recorded, kept) in cases {
            ahead.late.lock().unwrap().clear();
            ahead.add_late("c", accepted.clone());
            let due = ahead.take_late("c", &log);
            assert_eq!(due.len(), usize::from(recorded), "{accepted:?}");
            if recorded {
                assert_eq!((due[0].0.event.seq, due[0].0.event.id.as_str()), (2, "b"));
                assert_eq!(due[0].0.dependent, "hook");
            }
            let left = ahead.late.lock().unwrap()["c"].len();
            assert_eq!(left, usize::from(kept), "{accepted:?}");
        }
    }
}
