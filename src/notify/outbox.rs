//! The outbox of one credential, pure: which events each dependent has yet to receive, in what
//! order, when to try again, and whether the old credential may be revoked yet (acks).
//!
//! It is meant to live in the credential's state record (written with check-and-set like the
//! rest of it), so a delivery survives a crash and is repeated with the same id afterwards
//! (at-least-once; receivers deduplicate by id).
//!
//! Invariants:
//! - pure: time and randomness are passed in;
//! - per dependent, events leave in the order they entered, one at a time: the head blocks the
//!   rest, so a dependent never gets `revoked` before `rotated`;
//! - enqueueing is idempotent by event id (a re-emission after a crash adds nothing);
//! - a failed delivery backs off (capped exponential with jitter); after the failure budget, or
//!   a failure that cannot pass, the dependent needs attention and is not tried on its own again;
//! - bounded: at most [`MAX_QUEUE`] events wait per dependent and [`MAX_REMEMBERED`] delivered
//!   ids are kept (for acks and deduplication).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::payload::Payload;
use crate::rotation::state::Backoff;

/// Events waiting per dependent; more means the dependent is far behind (it needs attention
/// long before), and the oldest are dropped with a note.
pub const MAX_QUEUE: usize = 8;
/// Delivered event ids remembered per dependent.
pub const MAX_REMEMBERED: usize = 4;

/// One event waiting for one dependent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The idempotency key (`webhook-id`): `{attempt}:{type}`.
    pub id: String,
    pub payload: Payload,
}

/// What one dependent has yet to receive, and how its deliveries go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Queue {
    /// Oldest first; the head is the next to deliver.
    pub pending: Vec<Entry>,
    /// Failed deliveries of the head in a row.
    pub failures: u32,
    /// No delivery before this time.
    pub next_try: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// The failure budget is spent (or the failure cannot pass): not tried on its own again
    /// until an operator retries it.
    pub needs_attention: bool,
    /// The latest delivered event ids, newest last.
    pub delivered: Vec<String>,
    /// Events dropped because the queue was full.
    pub dropped: u32,
}

/// The outbox of one credential: a queue per dependent, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outbox {
    pub dependents: BTreeMap<String, Queue>,
}

/// How deliveries retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    pub backoff: Backoff,
    /// Failed deliveries in a row before the dependent needs attention.
    pub budget: u32,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            backoff: Backoff {
                base: Duration::from_secs(5),
                cap: Duration::from_secs(15 * 60),
            },
            budget: 12,
        }
    }
}

/// What a dependent with `require_ack` asks of the revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckRule {
    pub dependent: String,
    /// How long after the commit the old credential may wait for this dependent's ack.
    pub timeout: Duration,
    pub on_timeout: OnAckTimeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnAckTimeout {
    /// Revoke anyway and report it.
    Revoke,
    /// Keep the old credential alive and ask for an operator.
    Hold,
}

/// May the old credential be revoked now?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Every dependent that must ack has accepted `credential.rotated`.
    Open,
    /// Some have not, and their ack timeout has not passed: look again at this time.
    Wait { until: DateTime<Utc> },
    /// Their ack timeout has passed: `revoke` lists those revoked over (report them), `hold`
    /// those that keep the old credential alive (needs attention).
    TimedOut {
        revoke: Vec<String>,
        hold: Vec<String>,
    },
}

/// What the outbox did with a failed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFailure {
    RetryAt(DateTime<Utc>),
    /// The dependent needs attention now (tell the others, show it in `status`).
    NeedsAttention,
}

impl Outbox {
    /// Queue `entry` for each of `dependents`, unless it is already queued or delivered there.
    pub fn enqueue(&mut self, dependents: &[&str], entry: &Entry) {
        for name in dependents {
            let q = self.dependents.entry(name.to_string()).or_default();
            if q.pending.iter().any(|e| e.id == entry.id) || q.delivered.contains(&entry.id) {
                continue;
            }
            q.pending.push(entry.clone());
            if q.pending.len() > MAX_QUEUE {
                q.pending.remove(0);
                q.dropped += 1;
            }
        }
    }

    /// The deliveries to make now: the head of every queue that is due and not waiting for an
    /// operator, with its dependent's name.
    pub fn due(&self, now: DateTime<Utc>) -> Vec<(&str, &Entry)> {
        self.dependents
            .iter()
            .filter(|(_, q)| !q.needs_attention && q.next_try.is_none_or(|t| t <= now))
            .filter_map(|(name, q)| q.pending.first().map(|e| (name.as_str(), e)))
            .collect()
    }

    /// When the next delivery is due, if any is waiting (for the planner).
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.dependents
            .values()
            .filter(|q| !q.needs_attention && !q.pending.is_empty())
            .map(|q| q.next_try.unwrap_or(DateTime::<Utc>::MIN_UTC))
            .min()
    }

    /// `dependent` accepted event `id` (the head of its queue).
    pub fn delivered(&mut self, dependent: &str, id: &str) {
        let Some(q) = self.dependents.get_mut(dependent) else {
            return;
        };
        if q.pending.first().is_some_and(|e| e.id == id) {
            q.pending.remove(0);
        }
        q.failures = 0;
        q.next_try = None;
        q.last_error = None;
        if !q.delivered.iter().any(|d| d == id) {
            q.delivered.push(id.to_string());
            if q.delivered.len() > MAX_REMEMBERED {
                q.delivered.remove(0);
            }
        }
    }

    /// A delivery to `dependent` failed. `retryable` false: it cannot pass by waiting (a 4xx, a
    /// command that does not exist). `unit`: a random number in [0, 1).
    pub fn failed(
        &mut self,
        dependent: &str,
        reason: &str,
        retryable: bool,
        now: DateTime<Utc>,
        policy: &DeliveryPolicy,
        unit: f64,
    ) -> AfterFailure {
        let q = self.dependents.entry(dependent.to_string()).or_default();
        q.failures += 1;
        q.last_error = Some(reason.chars().take(300).collect());
        if !retryable || q.failures >= policy.budget {
            q.needs_attention = true;
            q.next_try = None;
            return AfterFailure::NeedsAttention;
        }
        let at = now + policy.backoff.delay(q.failures, unit);
        q.next_try = Some(at);
        AfterFailure::RetryAt(at)
    }

    /// An operator asked to try a dependent again now.
    pub fn retry_now(&mut self, dependent: &str) {
        if let Some(q) = self.dependents.get_mut(dependent) {
            q.needs_attention = false;
            q.failures = 0;
            q.next_try = None;
        }
    }

    /// Has `dependent` accepted event `id`?
    pub fn accepted(&self, dependent: &str, id: &str) -> bool {
        self.dependents
            .get(dependent)
            .is_some_and(|q| q.delivered.iter().any(|d| d == id))
    }

    /// May the old credential be revoked at `now`, given the dependents that must ack
    /// `rotated_id` (committed at `committed_at`)?
    pub fn revocation_gate(
        &self,
        rotated_id: &str,
        rules: &[AckRule],
        committed_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Gate {
        let mut until: Option<DateTime<Utc>> = None;
        let (mut revoke, mut hold) = (Vec::new(), Vec::new());
        for rule in rules {
            if self.accepted(&rule.dependent, rotated_id) {
                continue;
            }
            let deadline =
                committed_at + chrono::Duration::from_std(rule.timeout).unwrap_or_default();
            if now < deadline {
                until = Some(until.map_or(deadline, |u| u.min(deadline)));
                continue;
            }
            match rule.on_timeout {
                OnAckTimeout::Revoke => revoke.push(rule.dependent.clone()),
                OnAckTimeout::Hold => hold.push(rule.dependent.clone()),
            }
        }
        // A hold needs an operator now; a revoke-anyway waits until no other ack may still come.
        if !hold.is_empty() {
            return Gate::TimedOut { revoke, hold };
        }
        if let Some(until) = until {
            return Gate::Wait { until };
        }
        if !revoke.is_empty() {
            return Gate::TimedOut { revoke, hold };
        }
        Gate::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::payload::{PayloadData, PayloadType};
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn entry(attempt: &str, kind: PayloadType) -> Entry {
        Entry {
            id: format!("{attempt}:{}", kind.as_str()),
            payload: Payload {
                kind,
                timestamp: t(0),
                data: PayloadData {
                    credential: "c".into(),
                    provider: "p".into(),
                    mount: "secret".into(),
                    path: "x".into(),
                    version: Some(2),
                    previous_version: None,
                    revoke_after: None,
                    expires_at: None,
                    attempt: Some(attempt.into()),
                    reason: "r".into(),
                },
            },
        }
    }

    fn policy() -> DeliveryPolicy {
        DeliveryPolicy {
            backoff: Backoff {
                base: Duration::from_secs(2),
                cap: Duration::from_secs(16),
            },
            budget: 3,
        }
    }

    fn ids(o: &Outbox, now: DateTime<Utc>) -> Vec<(String, String)> {
        o.due(now)
            .into_iter()
            .map(|(d, e)| (d.to_string(), e.id.clone()))
            .collect()
    }

    #[test]
    fn each_dependent_gets_events_in_order_one_at_a_time_and_once() {
        let mut o = Outbox::default();
        let rotated = entry("a1", PayloadType::Rotated);
        let revoked = entry("a1", PayloadType::Revoked);
        o.enqueue(&["hook", "file"], &rotated);
        o.enqueue(&["hook", "file"], &revoked);
        o.enqueue(&["hook", "file"], &rotated); // re-emitted after a crash: nothing new
        let r = |d: &str, id: &Entry| (d.to_string(), id.id.clone());
        assert_eq!(
            ids(&o, t(0)),
            vec![r("file", &rotated), r("hook", &rotated)]
        );
        o.delivered("hook", &rotated.id);
        assert_eq!(
            ids(&o, t(0)),
            vec![r("file", &rotated), r("hook", &revoked)]
        );
        o.delivered("hook", &revoked.id);
        o.enqueue(&["hook"], &revoked); // delivered already: not again
        assert_eq!(ids(&o, t(0)), vec![r("file", &rotated)]);
        assert!(o.accepted("hook", &rotated.id) && !o.accepted("file", &rotated.id));
    }

    #[test]
    fn failures_back_off_then_need_attention_and_a_retry_starts_over() {
        let p = policy();
        let mut o = Outbox::default();
        let e = entry("a1", PayloadType::Rotated);
        o.enqueue(&["hook"], &e);
        // (now, retryable, expected)
        let cases = [
            (t(0), true, AfterFailure::RetryAt(t(2))),
            (t(2), true, AfterFailure::RetryAt(t(6))),
            (t(6), true, AfterFailure::NeedsAttention),
        ];
        for (now, retryable, expected) in cases {
            assert_eq!(o.failed("hook", "500", retryable, now, &p, 1.0), expected);
        }
        assert!(ids(&o, t(1000)).is_empty(), "not tried on its own again");
        assert_eq!(o.next_due(), None);
        o.retry_now("hook");
        assert_eq!(ids(&o, t(7)).len(), 1);
        // A failure that cannot pass needs attention at once.
        assert_eq!(
            o.failed("hook", "410", false, t(8), &p, 0.0),
            AfterFailure::NeedsAttention
        );
    }

    #[test]
    fn a_waiting_delivery_is_not_due_before_its_time() {
        let mut o = Outbox::default();
        o.enqueue(&["hook"], &entry("a1", PayloadType::Rotated));
        o.failed("hook", "503", true, t(0), &policy(), 1.0);
        assert!(ids(&o, t(1)).is_empty());
        assert_eq!(ids(&o, t(2)).len(), 1);
        assert_eq!(o.next_due(), Some(t(2)));
    }

    #[test]
    fn queues_and_memories_are_bounded() {
        let mut o = Outbox::default();
        for i in 0..(MAX_QUEUE + 3) {
            o.enqueue(&["hook"], &entry(&format!("a{i}"), PayloadType::Failed));
        }
        let q = &o.dependents["hook"];
        assert_eq!(q.pending.len(), MAX_QUEUE);
        assert_eq!(q.dropped, 3);
        assert_eq!(q.pending[0].id, "a3:rotation.failed");
        for i in 0..(MAX_REMEMBERED + 2) {
            o.delivered("hook", &format!("x{i}"));
        }
        assert_eq!(o.dependents["hook"].delivered.len(), MAX_REMEMBERED);
    }

    #[test]
    fn acks_gate_the_revocation() {
        let rotated = entry("a1", PayloadType::Rotated);
        let rule = |d: &str, secs: u64, on: OnAckTimeout| AckRule {
            dependent: d.into(),
            timeout: Duration::from_secs(secs),
            on_timeout: on,
        };
        let mut acked = Outbox::default();
        acked.enqueue(&["hook", "app"], &rotated);
        acked.delivered("hook", &rotated.id);
        let waiting = acked.clone();
        // (outbox, rules, now, expected); committed at t(0).
        let cases = [
            (&acked, vec![], t(0), Gate::Open),
            (
                &acked,
                vec![rule("hook", 60, OnAckTimeout::Hold)],
                t(0),
                Gate::Open,
            ),
            (
                &waiting,
                vec![rule("app", 60, OnAckTimeout::Hold)],
                t(10),
                Gate::Wait { until: t(60) },
            ),
            (
                &waiting,
                vec![rule("app", 60, OnAckTimeout::Hold)],
                t(60),
                Gate::TimedOut {
                    revoke: vec![],
                    hold: vec!["app".into()],
                },
            ),
            (
                &waiting,
                vec![rule("app", 60, OnAckTimeout::Revoke)],
                t(61),
                Gate::TimedOut {
                    revoke: vec!["app".into()],
                    hold: vec![],
                },
            ),
            (
                &waiting,
                vec![
                    rule("app", 60, OnAckTimeout::Revoke),
                    rule("other", 600, OnAckTimeout::Revoke),
                ],
                t(61),
                Gate::Wait { until: t(600) },
            ),
        ];
        for (outbox, rules, now, expected) in cases {
            assert_eq!(
                outbox.revocation_gate(&rotated.id, &rules, t(0), now),
                expected,
                "{rules:?} at {now}"
            );
        }
    }
}
