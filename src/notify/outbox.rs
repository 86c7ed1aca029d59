//! The outbox of one credential, pure: which events each dependent has yet to receive, in what
//! order, when to try again, and whether the old credential may be revoked yet (acks).
//!
//! It lives in two records, so that the rotation and the deliveries never contend for one
//! check-and-set version:
//! - the [`EventLog`], inside the credential's state record: the engine appends each event in the
//!   write it makes anyway after emitting it (no extra Vault write);
//! - the [`Deliveries`] record, beside it: how far each dependent got in that log, its failures
//!   and the notices the deliveries themselves raise (a dependent that needs attention, an
//!   expiring credential). Only the delivery worker writes it.
//!
//! Invariants:
//! - pure: time and randomness are passed in;
//! - per dependent, events leave in log order, one at a time: the first undelivered one blocks
//!   the rest, so a dependent never gets `revoked` before `rotated`;
//! - appending is idempotent by event id (a re-emission after a crash adds nothing), and
//!   delivery is at-least-once: a dependent's cursor moves only once it accepted the event;
//! - a failed delivery backs off (capped exponential with jitter); after the failure budget, or
//!   a failure that cannot pass by waiting, the dependent needs attention (one notice to the
//!   others, a line in `status`) and is tried again only at the backoff's cap, until it accepts
//!   an event or an operator retries it;
//! - bounded: at most [`LOG_LIMIT`] events and [`NOTICE_LIMIT`] notices are kept; a dependent
//!   so far behind that events left the log before it got them counts them as `missed`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Policy;
use crate::events::EventKind;
use crate::ledger::{clip, Backoff, StateRecord};
pub use crate::ledger::{EventLog, Logged, LOG_LIMIT};

/// Notices kept in a deliveries record.
pub const NOTICE_LIMIT: usize = 4;
/// Schema of the deliveries record.
pub const DELIVERIES_SCHEMA: u32 = 1;

/// How far one dependent got, and how its deliveries go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependentState {
    /// Events of the state record's log delivered (or skipped as not for it) up to this number.
    #[serde(default)]
    pub through: u64,
    /// Notices delivered up to this number.
    #[serde(default)]
    pub notices_through: u64,
    /// Failed deliveries of the current event in a row.
    #[serde(default)]
    pub failures: u32,
    /// No delivery before this time.
    #[serde(default)]
    pub next_try: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// The failure budget is spent (or the failure cannot pass by waiting): tried again only at
    /// the backoff's cap, until it accepts an event or an operator retries it.
    #[serde(default)]
    pub needs_attention: bool,
    /// The latest event it accepted, and when.
    #[serde(default)]
    pub last_delivered: Option<String>,
    #[serde(default)]
    pub delivered_at: Option<DateTime<Utc>>,
    /// Delivery tries so far, successful or not.
    #[serde(default)]
    pub tries: u64,
    /// Events that left the log before this dependent got them.
    #[serde(default)]
    pub missed: u64,
}

/// The deliveries record of one credential, kept at
/// `{state_mount}/{state_prefix}/deliveries/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliveries {
    pub schema: u32,
    pub credential: String,
    /// The instance that delivers this credential's events, while its lease runs: another one
    /// leaves them alone (a crashed holder's lease runs out).
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub lease_expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub dependents: BTreeMap<String, DependentState>,
    /// Events raised by the deliveries (a dependent needs attention) or the daemon (a credential
    /// expiring), delivered after the state record's events.
    #[serde(default)]
    pub notices: EventLog,
}

/// One delivery to make: the dependent and the event, and which log it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub dependent: String,
    pub event: Logged,
    pub notice: bool,
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
    /// How long after the grace period the old credential may wait for this dependent's ack.
    pub timeout: Duration,
    pub on_timeout: OnAckTimeout,
}

pub use crate::config::OnAckTimeout;

/// May the old credential be revoked now?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Every dependent that must ack has accepted `credential.rotated`.
    Open,
    /// Some have not, and their ack timeout has not passed: look again at this time at the
    /// latest (sooner when an ack comes).
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
    /// The dependent needs attention (the others are told once, `status` shows it); tried
    /// again at the backoff's cap.
    NeedsAttention,
}

impl Deliveries {
    pub fn new(credential: &str) -> Deliveries {
        Deliveries {
            schema: DELIVERIES_SCHEMA,
            credential: credential.to_string(),
            ..Deliveries::default()
        }
    }

    /// Another live instance delivers these events now.
    pub fn held_by_other(&self, me: &str, now: DateTime<Utc>) -> bool {
        match (&self.owner, self.lease_expires_at) {
            (Some(owner), Some(until)) => owner != me && until > now,
            _ => false,
        }
    }

    /// Note that `me` delivers, until `now + lease` (written with the next save).
    pub fn claim(&mut self, me: &str, now: DateTime<Utc>, lease: Duration) {
        self.owner = Some(me.to_string());
        self.lease_expires_at = Some(now + lease);
    }

    /// Forget dependents the configuration no longer has.
    pub fn retain(&mut self, dependents: &[&str]) {
        self.dependents
            .retain(|name, _| dependents.contains(&name.as_str()));
    }

    /// The next event `dependent` should get, from the state record's `log` first, then the
    /// notices; `None` when it has all of them.
    pub fn next_for(&self, dependent: &str, log: &EventLog) -> Option<Due> {
        let d = self.dependents.get(dependent).cloned().unwrap_or_default();
        if let Some(e) = log.next_after(self.through(dependent, log), dependent) {
            return Some(Due {
                dependent: dependent.to_string(),
                event: e.clone(),
                notice: false,
            });
        }
        self.notices
            .next_after(d.notices_through, dependent)
            .map(|e| Due {
                dependent: dependent.to_string(),
                event: e.clone(),
                notice: true,
            })
    }

    /// Every event `dependent` has yet to get, in the order it gets them.
    pub fn waiting<'a>(&'a self, dependent: &str, log: &'a EventLog) -> Vec<&'a Logged> {
        let d = self.dependents.get(dependent).cloned().unwrap_or_default();
        let mine = |e: &&Logged| e.about.as_deref() != Some(dependent);
        let through = self.through(dependent, log);
        log.entries
            .iter()
            .filter(|e| e.seq > through)
            .filter(mine)
            .chain(
                self.notices
                    .entries
                    .iter()
                    .filter(|e| e.seq > d.notices_through)
                    .filter(mine),
            )
            .collect()
    }

    /// The deliveries to make now: the next event of every listed dependent that is due.
    pub fn due(&self, dependents: &[&str], log: &EventLog, now: DateTime<Utc>) -> Vec<Due> {
        dependents
            .iter()
            .filter(|name| {
                self.dependents
                    .get(**name)
                    .is_none_or(|d| d.next_try.is_none_or(|t| t <= now))
            })
            .filter_map(|name| self.next_for(name, log))
            .collect()
    }

    /// When the next delivery is due, if any is waiting.
    pub fn next_due(&self, dependents: &[&str], log: &EventLog) -> Option<DateTime<Utc>> {
        dependents
            .iter()
            .filter(|name| self.next_for(name, log).is_some())
            .map(|name| {
                self.dependents
                    .get(*name)
                    .and_then(|d| d.next_try)
                    .unwrap_or(DateTime::<Utc>::MIN_UTC)
            })
            .min()
    }

    /// `due.dependent` accepted `due.event` at `now`.
    pub fn delivered(&mut self, due: &Due, now: DateTime<Utc>) {
        let d = self.dependents.entry(due.dependent.clone()).or_default();
        let cursor = if due.notice {
            &mut d.notices_through
        } else {
            &mut d.through
        };
        if due.event.seq <= *cursor {
            return; // delivered again after a crash or by another round: nothing moves back
        }
        if !due.notice {
            d.missed += due.event.seq - *cursor - 1;
        }
        *cursor = due.event.seq;
        d.tries += 1;
        d.failures = 0;
        d.next_try = None;
        d.last_error = None;
        d.needs_attention = false;
        d.last_delivered = Some(due.event.id.clone());
        d.delivered_at = Some(now);
    }

    /// A delivery to `due.dependent` failed. `retryable` false: it cannot pass by waiting (a
    /// 4xx, a command that does not exist). `unit`: a random number in [0, 1). When the
    /// dependent comes to need attention, a notice is queued for the others; it is then tried
    /// at the backoff's cap.
    pub fn failed(
        &mut self,
        due: &Due,
        reason: &str,
        retryable: bool,
        now: DateTime<Utc>,
        policy: &DeliveryPolicy,
        unit: f64,
    ) -> AfterFailure {
        let d = self.dependents.entry(due.dependent.clone()).or_default();
        d.tries += 1;
        d.failures += 1;
        d.last_error = Some(clip(reason));
        if retryable && d.failures < policy.budget {
            let at = now + policy.backoff.delay(d.failures, unit);
            d.next_try = Some(at);
            return AfterFailure::RetryAt(at);
        }
        d.next_try = Some(now + policy.backoff.cap);
        if d.needs_attention {
            return AfterFailure::NeedsAttention;
        }
        d.needs_attention = true;
        let failures = d.failures;
        let id = format!(
            "{}:{}:{}:{}",
            self.credential,
            due.dependent,
            now.timestamp(),
            EventKind::NeedsAttention.as_str()
        );
        let mut notice = Logged::new(
            id,
            EventKind::NeedsAttention,
            now,
            due.event.version,
            due.event.attempt.as_deref(),
            &format!(
                "dependent {} needs attention: {failures} failed deliveries of {}; the last: {reason}",
                due.dependent,
                due.event.kind.as_str()
            ),
        );
        notice.about = Some(due.dependent.clone());
        self.notices.append(notice, NOTICE_LIMIT);
        AfterFailure::NeedsAttention
    }

    /// Queue a notice (an expiring credential) unless it was queued already.
    pub fn notice(&mut self, event: Logged) -> bool {
        self.notices.append(event, NOTICE_LIMIT)
    }

    /// An operator asked to try a dependent again now.
    pub fn retry_now(&mut self, dependent: &str) {
        if let Some(d) = self.dependents.get_mut(dependent) {
            d.needs_attention = false;
            d.failures = 0;
            d.next_try = None;
        }
    }

    /// Has `dependent` accepted event `id` of the state record's `log`?
    pub fn accepted(&self, dependent: &str, log: &EventLog, id: &str) -> bool {
        let Some(e) = log.find(id) else {
            return false;
        };
        self.through(dependent, log) >= e.seq
    }

    /// How far `dependent` got in `log`: the further of this record's cursor and the one the
    /// engine wrote into the log with the events it delivered ahead of their write.
    pub fn through(&self, dependent: &str, log: &EventLog) -> u64 {
        let mine = self.dependents.get(dependent).map_or(0, |d| d.through);
        mine.max(log.delivered_through(dependent))
    }

    /// Take in what the log says was delivered ahead of its write: a dependent's cursor moves
    /// up to it (its last delivery is the log's event there), never back.
    pub fn fold(&mut self, log: &EventLog) {
        for (name, &seq) in &log.delivered {
            let d = self.dependents.entry(name.clone()).or_default();
            if seq <= d.through {
                continue;
            }
            // Each event it accepted ahead of its write was one try.
            d.tries += log
                .entries
                .iter()
                .filter(|e| e.seq > d.through && e.seq <= seq)
                .filter(|e| e.about.as_deref() != Some(name.as_str()))
                .count() as u64;
            d.through = seq;
            d.failures = 0;
            d.next_try = None;
            d.last_error = None;
            d.needs_attention = false;
            if let Some(e) = log.entries.iter().rev().find(|e| e.seq <= seq) {
                d.last_delivered = Some(e.id.clone());
                d.delivered_at = Some(e.at);
            }
        }
    }

    /// May the old credential be revoked at `now`, given the dependents that must ack
    /// `rotated_id`, whose grace period ends at `revoke_after`?
    pub fn revocation_gate(
        &self,
        log: &EventLog,
        rotated_id: &str,
        rules: &[AckRule],
        revoke_after: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Gate {
        let mut until: Option<DateTime<Utc>> = None;
        let (mut revoke, mut hold) = (Vec::new(), Vec::new());
        for rule in rules {
            if self.accepted(&rule.dependent, log, rotated_id) {
                continue;
            }
            let deadline =
                revoke_after + chrono::Duration::from_std(rule.timeout).unwrap_or_default();
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

    /// Fold what this round did (`mine`, started from `base`) into a record another instance
    /// wrote meanwhile (`self`): per dependent, the one further along wins; notices are merged
    /// by id.
    pub fn merge(&mut self, base: &Deliveries, mine: &Deliveries) {
        for (name, m) in &mine.dependents {
            if base.dependents.get(name) == Some(m) {
                continue; // untouched by this round
            }
            let theirs = self.dependents.entry(name.clone()).or_default();
            if (m.through, m.notices_through, m.tries)
                >= (theirs.through, theirs.notices_through, theirs.tries)
            {
                *theirs = m.clone();
            }
        }
        for n in &mine.notices.entries {
            if base.notices.find(&n.id).is_none() {
                self.notices.append(n.clone(), NOTICE_LIMIT);
            }
        }
        self.owner = mine.owner.clone();
        self.lease_expires_at = mine.lease_expires_at;
    }
}

/// The `credential.expiring` warning due now, if any: the credential cannot be rotated (parked,
/// or its last attempt failed, or its attempt in flight needs attention) and its live version
/// reaches `max_age` or its expiry within `lead`. One per version (its id says which).
pub fn expiring(
    credential: &str,
    record: &StateRecord,
    version: u64,
    created: DateTime<Utc>,
    provider_expiry: Option<DateTime<Utc>>,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Option<Logged> {
    let attempt = record.attempt.as_ref();
    let why = if let Some(p) = &record.parked {
        format!("parked: {}", p.reason)
    } else if let Some(a) = attempt.filter(|a| a.needs_attention) {
        format!(
            "rotation stopped in phase {}: {}",
            a.phase.as_str(),
            a.last_error.as_deref().unwrap_or("no error recorded")
        )
    } else if record.failures > 0 && attempt.is_none() {
        let last = record.history.last().and_then(|h| h.error.as_deref());
        format!(
            "{} attempt(s) in a row failed; the last: {}",
            record.failures,
            last.unwrap_or("no error recorded")
        )
    } else {
        return None;
    };
    let by_age = policy
        .max_age
        .and_then(|m| chrono::Duration::from_std(m).ok())
        .map(|m| created + m);
    let deadline = [by_age, provider_expiry].into_iter().flatten().min()?;
    let lead = chrono::Duration::from_std(policy.expiring_warning).unwrap_or_default();
    if now < deadline - lead {
        return None;
    }
    let mut w = Logged::new(
        format!("{credential}:v{version}:{}", EventKind::Expiring.as_str()),
        EventKind::Expiring,
        now,
        Some(version),
        attempt
            .map(|a| a.id.as_str())
            .or(record.history.last().map(|h| h.id.as_str())),
        &why,
    );
    w.expires_at = Some(deadline);
    Some(w)
}

impl crate::records::Record for Deliveries {
    const FOLDER: &'static str = "deliveries";
    const NAME: &'static str = "deliveries record";
    const SCHEMA: u32 = DELIVERIES_SCHEMA;
    const MAX_VERSIONS: Option<u32> = None;

    fn fresh(credential: &str) -> Deliveries {
        Deliveries::new(credential)
    }

    fn validate(&self, credential: &str) -> Result<(), String> {
        if self.credential != credential {
            return Err(format!(
                "field credential: the record names credential {:?}, not {credential:?}",
                self.credential
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn event(attempt: &str, kind: EventKind) -> Logged {
        Logged::new(
            format!("{attempt}:{}", kind.as_str()),
            kind,
            t(0),
            Some(2),
            Some(attempt),
            "r",
        )
    }

    fn log(events: &[Logged]) -> EventLog {
        let mut l = EventLog::default();
        for e in events {
            l.append(e.clone(), LOG_LIMIT);
        }
        l
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

    fn ids(d: &Deliveries, deps: &[&str], log: &EventLog, now: DateTime<Utc>) -> Vec<String> {
        d.due(deps, log, now)
            .into_iter()
            .map(|due| format!("{}<-{}", due.dependent, due.event.id))
            .collect()
    }

    const DEPS: &[&str] = &["file", "hook"];

    #[test]
    fn each_dependent_gets_events_in_order_one_at_a_time_and_once() {
        let rotated = event("a1", EventKind::Rotated);
        let revoked = event("a1", EventKind::Revoked);
        // Re-emitted after a crash: nothing new.
        let l = log(&[rotated.clone(), revoked.clone(), rotated.clone()]);
        assert_eq!(l.entries.len(), 2);
        let mut d = Deliveries::new("c");
        assert_eq!(
            ids(&d, DEPS, &l, t(0)),
            ["file<-a1:credential.rotated", "hook<-a1:credential.rotated"]
        );
        for due in d.due(&["hook"], &l, t(0)) {
            d.delivered(&due, t(1));
        }
        assert_eq!(
            ids(&d, DEPS, &l, t(1)),
            ["file<-a1:credential.rotated", "hook<-a1:credential.revoked"]
        );
        for due in d.due(&["hook"], &l, t(1)) {
            d.delivered(&due, t(2));
            // The same delivery reported twice moves nothing back.
            d.delivered(&due, t(2));
        }
        assert_eq!(ids(&d, DEPS, &l, t(2)), ["file<-a1:credential.rotated"]);
        assert!(d.accepted("hook", &l, &rotated.id) && !d.accepted("file", &l, &rotated.id));
        assert_eq!(d.dependents["hook"].tries, 2);
    }

    #[test]
    fn failures_back_off_then_need_attention_tell_the_others_and_a_retry_starts_over() {
        let p = policy();
        let l = log(&[event("a1", EventKind::Rotated)]);
        let mut d = Deliveries::new("c");
        let due = d.due(&["hook"], &l, t(0)).remove(0);
        // (now, retryable, expected)
        let cases = [
            (t(0), true, AfterFailure::RetryAt(t(2))),
            (t(2), true, AfterFailure::RetryAt(t(6))),
            (t(6), true, AfterFailure::NeedsAttention),
        ];
        for (now, retryable, expected) in cases {
            assert_eq!(d.failed(&due, "500", retryable, now, &p, 1.0), expected);
        }
        // Tried again only at the cap, and the others are told once.
        assert!(d.due(&["hook"], &l, t(21)).is_empty());
        assert_eq!(d.next_due(&["hook"], &l), Some(t(22)));
        assert_eq!(
            d.failed(&due, "500", true, t(22), &p, 1.0),
            AfterFailure::NeedsAttention
        );
        assert_eq!(d.notices.entries.len(), 1);
        // The others hear of it; the failing dependent does not.
        let others = ids(&d, &["file"], &l, t(7));
        assert_eq!(others.len(), 1);
        assert!(others[0].starts_with("file<-a1:"), "{others:?}");
        let file = d.next_for("file", &l).unwrap();
        d.delivered(&file, t(7));
        let notice = d.next_for("file", &l).unwrap();
        assert!(
            notice.notice
                && notice
                    .event
                    .reason
                    .contains("dependent hook needs attention")
        );
        d.retry_now("hook");
        assert_eq!(
            ids(&d, &["hook"], &l, t(23)),
            ["hook<-a1:credential.rotated"]
        );
        // A failure that cannot pass needs attention at once.
        assert_eq!(
            d.failed(&due, "410", false, t(8), &p, 0.0),
            AfterFailure::NeedsAttention
        );
    }

    #[test]
    fn a_waiting_delivery_is_not_due_before_its_time() {
        let l = log(&[event("a1", EventKind::Rotated)]);
        let mut d = Deliveries::new("c");
        let due = d.due(&["hook"], &l, t(0)).remove(0);
        d.failed(&due, "503", true, t(0), &policy(), 1.0);
        assert!(d.due(&["hook"], &l, t(1)).is_empty());
        assert_eq!(d.due(&["hook"], &l, t(2)).len(), 1);
        assert_eq!(d.next_due(&["hook"], &l), Some(t(2)));
        assert_eq!(d.next_due(&["file"], &l), Some(DateTime::<Utc>::MIN_UTC));
    }

    #[test]
    fn logs_are_bounded_and_a_dependent_far_behind_counts_what_it_missed() {
        let events: Vec<Logged> = (0..LOG_LIMIT + 3)
            .map(|i| event(&format!("a{i}"), EventKind::Failed))
            .collect();
        let l = log(&events);
        assert_eq!(l.entries.len(), LOG_LIMIT);
        assert_eq!(l.last_seq, (LOG_LIMIT + 3) as u64);
        let mut d = Deliveries::new("c");
        let due = d.next_for("hook", &l).unwrap();
        assert_eq!(due.event.id, "a3:rotation.failed");
        d.delivered(&due, t(0));
        assert_eq!(d.dependents["hook"].missed, 3);
    }

    #[test]
    fn acks_gate_the_revocation() {
        let rotated = event("a1", EventKind::Rotated);
        let l = log(std::slice::from_ref(&rotated));
        let rule = |d: &str, secs: u64, on: OnAckTimeout| AckRule {
            dependent: d.into(),
            timeout: Duration::from_secs(secs),
            on_timeout: on,
        };
        let mut acked = Deliveries::new("c");
        let due = acked.next_for("hook", &l).unwrap();
        acked.delivered(&due, t(0));
        let waiting = acked.clone();
        // (deliveries, rules, now, expected); the grace period ends at t(0).
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
        for (deliveries, rules, now, expected) in cases {
            assert_eq!(
                deliveries.revocation_gate(&l, &rotated.id, &rules, t(0), now),
                expected,
                "{rules:?} at {now}"
            );
        }
    }

    #[test]
    fn an_expiring_warning_comes_only_when_the_credential_cannot_be_rotated_and_nears_its_end() {
        use crate::ledger::Parked;
        let policy = Policy {
            max_age: Some(Duration::from_secs(10 * 86_400)),
            expiring_warning: Duration::from_secs(3 * 86_400),
            ..Policy::default()
        };
        let day = |d: i64| t(d * 86_400);
        let fine = StateRecord::new("c");
        let mut failing = StateRecord::new("c");
        failing.failures = 2;
        let mut parked = StateRecord::new("c");
        parked.parked = Some(Parked {
            since: day(1),
            reason: "403".into(),
        });
        // (record, provider expiry, now, expected expires_at); created at day 0.
        let cases = [
            (&fine, None, day(9), None),
            (&failing, None, day(6), None),
            (&failing, None, day(7), Some(day(10))),
            (&parked, None, day(8), Some(day(10))),
            (&parked, Some(day(5)), day(2), Some(day(5))),
            (&parked, Some(day(5)), day(1), None),
        ];
        for (record, expiry, now, expected) in cases {
            let w = expiring("c", record, 4, day(0), expiry, &policy, now);
            assert_eq!(w.as_ref().and_then(|w| w.expires_at), expected, "{now}");
            if let Some(w) = w {
                assert_eq!(w.id, "c:v4:credential.expiring");
                assert_eq!(w.kind, EventKind::Expiring);
            }
        }
    }

    #[test]
    fn deliveries_ahead_recorded_in_the_log_count_like_the_records_own() {
        let rotated = event("a1", EventKind::Rotated);
        let revoked = event("a1", EventKind::Revoked);
        let mut l = log(&[rotated.clone(), revoked.clone()]);
        // The hook accepted both ahead of their write, the file only `rotated`; the record
        // itself says nothing yet.
        l.delivered_ahead("hook", 2);
        l.delivered_ahead("file", 1);
        l.delivered_ahead("file", 0); // never back
        let mut d = Deliveries::new("c");
        // (dependent, through, accepted rotated, waiting)
        let cases = [
            ("hook", 2, true, 0),
            ("file", 1, true, 1),
            ("app", 0, false, 2),
        ];
        for (dep, through, acked, waiting) in cases {
            assert_eq!(d.through(dep, &l), through, "{dep}");
            assert_eq!(d.accepted(dep, &l, &rotated.id), acked, "{dep}");
            assert_eq!(d.waiting(dep, &l).len(), waiting, "{dep}");
        }
        assert_eq!(
            ids(&d, &["file", "hook", "app"], &l, t(0)),
            ["file<-a1:credential.revoked", "app<-a1:credential.rotated"]
        );
        // Folded into the record: its cursor moves up, and a further one of its own stays.
        d.dependents.entry("app".into()).or_default().through = 5;
        d.fold(&l);
        assert_eq!(d.dependents["hook"].through, 2);
        assert_eq!(
            d.dependents["hook"].last_delivered.as_deref(),
            Some(revoked.id.as_str())
        );
        assert_eq!(d.dependents["file"].through, 1);
        assert_eq!(d.dependents["app"].through, 5);
    }

    #[test]
    fn a_concurrent_write_is_merged_the_further_dependent_wins() {
        let l = log(&[
            event("a1", EventKind::Rotated),
            event("a1", EventKind::Revoked),
        ]);
        let base = Deliveries::new("c");
        let mut mine = base.clone();
        let mut theirs = base.clone();
        let hook = mine.next_for("hook", &l).unwrap();
        mine.delivered(&hook, t(1));
        let file = theirs.next_for("file", &l).unwrap();
        theirs.delivered(&file, t(1));
        let again = theirs.next_for("file", &l).unwrap();
        theirs.delivered(&again, t(1));
        mine.claim("me", t(1), Duration::from_secs(60));
        theirs.merge(&base, &mine);
        assert_eq!(theirs.dependents["hook"].through, 1);
        assert_eq!(theirs.dependents["file"].through, 2);
        assert_eq!(theirs.owner.as_deref(), Some("me"));
        assert!(!theirs.held_by_other("me", t(2)));
        assert!(theirs.held_by_other("other", t(2)));
        assert!(!theirs.held_by_other("other", t(62)));
    }
}
