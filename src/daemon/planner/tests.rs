//! The planner as tables: what a read means for the plan (through `policy`), and how the queue
//! hands out work, spreads reconciles and honours its limits.

use super::*;

use chrono::NaiveTime;
use chrono_tz::{Europe::Berlin, Tz, UTC};

use crate::config::{Policy, Window};
use crate::policy::SecretFacts;

fn time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("bad time {text:?}: {e}"))
        .with_timezone(&Utc)
}

fn span(text: &str) -> Duration {
    humantime::parse_duration(text).unwrap()
}

// ---------------------------------------------------------------------------------------------
// From a read to a plan: the one helper, `plan`.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Case {
    tz: Tz,
    created: Option<&'static str>,
    expires: Option<&'static str>,
    max_age: Option<&'static str>,
    window: Option<(&'static str, &'static str)>,
    jitter: &'static str,
    lead: &'static str,
    record: RecordView,
    now: &'static str,
}

const BASE: Case = Case {
    tz: UTC,
    created: Some("2025-03-01T00:00:00Z"),
    expires: None,
    max_age: Some("1d"),
    window: None,
    jitter: "0s",
    lead: "1h",
    record: RecordView {
        in_flight: false,
        needs_attention: false,
        parked: false,
        retry_at: None,
    },
    now: "2025-03-01T12:00:00Z",
};

/// The plan after a read (no drive) of a credential named "c" at version 3.
fn plan(case: Case) -> Observation {
    let policy = Policy {
        max_age: case.max_age.map(span),
        schedule: None,
        timezone: case.tz,
        expiry_lead: span(case.lead),
        window: case.window.map(|(a, b)| Window {
            start: NaiveTime::parse_from_str(a, "%H:%M").unwrap(),
            end: NaiveTime::parse_from_str(b, "%H:%M").unwrap(),
        }),
        jitter: span(case.jitter),
        grace: span("1h"),
        destroy_old_version: false,
        credential_lifetime: None,
        expiring_warning: span("3d"),
        ..Policy::default()
    };
    let facts = case.created.map(|c| SecretFacts {
        created_time: time(c),
        expires_at: case.expires.map(time),
    });
    let now = time(case.now);
    let due_at = crate::standing::policy_due(
        &policy,
        facts.as_ref(),
        crate::app::jitter_seed("c", 3),
        now,
    )
    .ok()
    .map(|(_, at)| at);
    observation(Some(3), case.record, None, due_at, now)
}

fn at(text: &str) -> Next {
    Next::Due(Some(time(text)))
}

#[test]
fn a_read_plans_the_next_drive_from_the_policy() {
    let in_flight = RecordView {
        in_flight: true,
        ..BASE.record
    };
    let rows: Vec<(&str, Case, Next)> = vec![
        (
            "max age: created + max_age",
            BASE,
            at("2025-03-02T00:00:00Z"),
        ),
        (
            "max age past: due now",
            Case {
                now: "2025-03-05T00:00:00Z",
                ..BASE
            },
            at("2025-03-05T00:00:00Z"),
        ),
        (
            "missing secret: due now",
            Case {
                created: None,
                ..BASE
            },
            at("2025-03-01T12:00:00Z"),
        ),
        (
            "expiry lead: expires_at - lead, before max age",
            Case {
                expires: Some("2025-03-01T18:00:00Z"),
                ..BASE
            },
            at("2025-03-01T17:00:00Z"),
        ),
        (
            "window: a due time outside it moves to the next opening",
            Case {
                window: Some(("02:00", "04:00")),
                ..BASE
            },
            at("2025-03-02T02:00:00Z"),
        ),
        (
            "window in a zone: opens at 02:00 Berlin (01:00 UTC)",
            Case {
                tz: Berlin,
                window: Some(("02:00", "04:00")),
                ..BASE
            },
            at("2025-03-02T01:00:00Z"),
        ),
        (
            "missed window: overdue while closed waits for the next opening, never outside",
            Case {
                window: Some(("02:00", "04:00")),
                now: "2025-03-03T05:00:00Z",
                ..BASE
            },
            at("2025-03-04T02:00:00Z"),
        ),
        (
            "missed window: overdue while open starts now",
            Case {
                window: Some(("02:00", "04:00")),
                now: "2025-03-03T03:00:00Z",
                ..BASE
            },
            at("2025-03-03T03:00:00Z"),
        ),
        (
            "no rule: never due",
            Case {
                max_age: None,
                ..BASE
            },
            Next::Due(None),
        ),
        (
            "an attempt in flight: drive now",
            Case {
                record: in_flight,
                ..BASE
            },
            Next::At(time(BASE.now)),
        ),
        (
            "an attempt needing attention: only an operator moves it",
            Case {
                record: RecordView {
                    needs_attention: true,
                    ..in_flight
                },
                ..BASE
            },
            Next::Operator,
        ),
        (
            "parked: only an operator moves it",
            Case {
                record: RecordView {
                    parked: true,
                    ..BASE.record
                },
                ..BASE
            },
            Next::Operator,
        ),
        (
            "the record's backoff holds a due credential back",
            Case {
                now: "2025-03-05T00:00:00Z",
                record: RecordView {
                    retry_at: Some(time("2025-03-05T00:10:00Z")),
                    ..BASE.record
                },
                ..BASE
            },
            at("2025-03-05T00:10:00Z"),
        ),
    ];
    for (name, case, want) in rows {
        assert_eq!(plan(case).next, want, "{name}");
    }
}

#[test]
fn jitter_is_stable_across_reads_and_only_moves_a_deadline_earlier() {
    let jittered = Case {
        jitter: "1h",
        ..BASE
    };
    let first = plan(jittered).next;
    // Read again later (the next reconcile, a restart): the same plan.
    for now in ["2025-03-01T12:10:00Z", "2025-03-01T20:00:00Z"] {
        assert_eq!(plan(Case { now, ..jittered }).next, first, "{now}");
    }
    let Next::Due(Some(t)) = first else {
        panic!("{first:?}")
    };
    assert!(
        t <= time("2025-03-02T00:00:00Z") && t > time("2025-03-01T23:00:00Z"),
        "{t}"
    );
}

#[test]
fn the_engine_answer_wins_over_the_record() {
    let now = time("2025-03-01T12:00:00Z");
    let later = time("2025-03-01T12:05:00Z");
    let due = Some(time("2025-03-02T00:00:00Z"));
    let rows: Vec<(&str, RunResult, Next, bool)> = vec![
        (
            "grace period",
            RunResult::Waiting { until: later },
            Next::At(later),
            true,
        ),
        (
            "another instance's lease",
            RunResult::Busy {
                owner: "b".into(),
                until: later,
            },
            Next::At(later),
            true,
        ),
        (
            "a step's retry",
            RunResult::RetryAt {
                until: later,
                error: String::new(),
            },
            Next::At(later),
            true,
        ),
        ("nothing to do", RunResult::Idle, Next::Due(due), false),
    ];
    for (name, result, want, in_flight) in rows {
        let got = observation(Some(3), RecordView::default(), Some(&result), due, now);
        assert_eq!((got.next, got.in_flight), (want, in_flight), "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// The queue.
// ---------------------------------------------------------------------------------------------

fn settings() -> Settings {
    Settings {
        reconcile: span("10m"),
        stagger: Duration::ZERO,
        instance: "a".into(),
        max_rotations: 2,
        max_per_provider: 1,
        max_reads: 100,
    }
}

fn idle_until(t: &str) -> Observation {
    Observation {
        version: Some(1),
        next: Next::Due(Some(time(t))),
        in_flight: false,
        needs_attention: false,
    }
}

fn drain(p: &mut Planner, now: DateTime<Utc>) -> Vec<(String, Work)> {
    std::iter::from_fn(|| p.next_work(now, |_, _| false)).collect()
}

const T0: &str = "2025-03-01T12:00:00Z";

#[test]
fn start_up_reads_every_credential_once_and_drives_attempts_in_flight_first() {
    let now = time(T0);
    let mut p = Planner::new(settings());
    for name in ["a", "b", "c"] {
        p.track(name, "store-1", now, true);
    }
    let reads = drain(&mut p, now);
    assert_eq!(reads.len(), 3);
    assert!(reads.iter().all(|(_, w)| *w == Work::Read));
    assert!(!p.recovered());
    // "a" is due already, "b" has an attempt in flight, "c" is due tomorrow.
    p.observed("a", Work::Read, idle_until("2025-03-01T11:00:00Z"), now);
    p.observed(
        "b",
        Work::Read,
        Observation {
            next: Next::At(now),
            in_flight: true,
            ..idle_until(T0)
        },
        now,
    );
    p.observed("c", Work::Read, idle_until("2025-03-02T00:00:00Z"), now);
    assert!(!p.recovered(), "b's attempt is not driven yet");
    // One rotation per provider instance: "a" (due earlier) first, "b" waits for its permit.
    assert_eq!(
        p.next_work(now, |_, _| false),
        Some(("a".into(), Work::Drive))
    );
    assert_eq!(
        p.next_work(now, |_, _| false),
        None,
        "one per provider instance"
    );
    p.observed("a", Work::Drive, idle_until("2025-03-02T11:00:00Z"), now);
    assert_eq!(
        p.next_work(now, |_, _| false),
        Some(("b".into(), Work::Drive))
    );
    p.observed("b", Work::Drive, idle_until("2025-03-02T12:00:00Z"), now);
    assert!(p.recovered());
    // Nothing else until tomorrow; the queue wakes the loop at the earliest drive.
    assert_eq!(drain(&mut p, now + TimeDelta::hours(1)), vec![]);
    assert_eq!(p.next_wake(), Some(time("2025-03-02T00:00:00Z")));
    assert_eq!(p.summary().tracked, 3);
}

#[test]
fn limits_hold_per_provider_and_globally() {
    let now = time(T0);
    let mut p = Planner::new(Settings {
        max_rotations: 2,
        max_per_provider: 2,
        ..settings()
    });
    for (name, provider) in [("a", "x"), ("b", "x"), ("c", "x"), ("d", "y")] {
        p.track(name, provider, now, false);
    }
    for (name, _) in drain(&mut p, now) {
        p.observed(&name, Work::Read, idle_until(T0), now);
    }
    let started = drain(&mut p, now);
    assert_eq!(started.len(), 2, "global limit: {started:?}");
    p.observed(
        &started[0].0,
        Work::Drive,
        idle_until("2025-03-09T00:00:00Z"),
        now,
    );
    let next = drain(&mut p, now);
    assert_eq!(next.len(), 1, "{next:?}");
    // A credential the caller skips (say, its provider is paced) does not hold the others up.
    let mut q = Planner::new(settings());
    for (name, provider) in [("a", "x"), ("b", "y")] {
        q.track(name, provider, now, false);
    }
    let got = std::iter::from_fn(|| q.next_work(now, |n, _| n == "a")).collect::<Vec<_>>();
    assert_eq!(got, vec![("b".to_string(), Work::Read)]);
}

#[test]
fn a_credential_is_never_handed_out_twice_at_once() {
    let now = time(T0);
    let mut p = Planner::new(settings());
    p.track("a", "x", now, false);
    assert_eq!(
        p.next_work(now, |_, _| false),
        Some(("a".into(), Work::Read))
    );
    // A reload asks to read it again while the read runs: it waits for the read to end.
    p.track("a", "x", now, false);
    assert_eq!(p.next_work(now, |_, _| false), None);
    p.observed("a", Work::Read, idle_until("2025-03-09T00:00:00Z"), now);
    assert_eq!(
        p.next_work(now, |_, _| false),
        Some(("a".into(), Work::Read))
    );
}

#[test]
fn an_error_reads_again_at_the_retry_time() {
    let now = time(T0);
    let mut p = Planner::new(settings());
    p.track("a", "x", now, true);
    p.next_work(now, |_, _| false).unwrap();
    p.failed("a", now + TimeDelta::seconds(4));
    assert!(
        p.recovered(),
        "an unreadable credential does not hold READY back"
    );
    assert_eq!(p.next_work(now, |_, _| false), None);
    assert_eq!(
        p.next_work(now + TimeDelta::seconds(4), |_, _| false),
        Some(("a".into(), Work::Read))
    );
}

#[test]
fn reconciles_come_once_per_interval_each_spread_over_it() {
    let interval = span("10m");
    let now = time(T0);
    let mut p = Planner::new(Settings {
        max_reads: 1000,
        ..settings()
    });
    let n = 600;
    for i in 0..n {
        p.track(&format!("cred-{i}"), "x", now, false);
    }
    for (name, _) in drain(&mut p, now) {
        p.observed(&name, Work::Read, idle_until("2026-01-01T00:00:00Z"), now);
    }
    // One sweep a minute for an hour (as the scheduler runs it): every credential reconciled
    // once per interval, the reads of each minute spread rather than at its start.
    let mut per_credential: HashMap<String, usize> = HashMap::new();
    let mut per_minute = Vec::new();
    let mut distinct_seconds = std::collections::HashSet::new();
    for minute in 0..60 {
        let from = now + TimeDelta::minutes(minute);
        let to = from + TimeDelta::minutes(1);
        p.sweep(from, to);
        let mut count = 0;
        while let Some((name, work)) = p.next_work(to, |_, _| false) {
            assert_eq!(work, Work::Reconcile);
            let (t, _) = (p.entries[name.as_str()].slot, ());
            distinct_seconds.insert(t.as_secs());
            *per_credential.entry(name.clone()).or_default() += 1;
            p.unchanged(&name);
            count += 1;
        }
        per_minute.push(count);
    }
    assert!(per_credential.values().all(|c| *c == 6), "6 per hour each");
    assert_eq!(per_credential.len(), n);
    // 600 credentials over 10 minutes: about 60 a minute, no minute with a burst.
    assert!(
        per_minute.iter().all(|c| (30..=90).contains(c)),
        "{per_minute:?}"
    );
    assert!(distinct_seconds.len() > 300, "slots spread within minutes");
    // The slots are stable: a new planner (a restart, another instance) gives the same ones.
    assert_eq!(
        reconcile_slot(interval, "cred-7"),
        reconcile_slot(interval, "cred-7")
    );
}

#[test]
fn a_missed_sweep_loses_no_reconcile() {
    let now = time(T0);
    let mut p = Planner::new(settings());
    p.track("a", "x", now, false);
    p.next_work(now, |_, _| false).unwrap();
    p.observed("a", Work::Read, idle_until("2026-01-01T00:00:00Z"), now);
    // The scheduler was late by 25 minutes: the late sweep covers the whole span, once.
    assert_eq!(p.sweep(now, now + TimeDelta::minutes(25)), 1);
    assert_eq!(
        p.sweep(now, now + TimeDelta::minutes(25)),
        0,
        "already planned"
    );
}

#[test]
fn slots_fall_in_the_half_open_span() {
    let interval = span("10m");
    let from = time("2025-03-01T12:00:00Z");
    let rows = [
        ("0s", "1m", Some("2025-03-01T12:00:00Z")),
        ("30s", "1m", Some("2025-03-01T12:00:30Z")),
        ("90s", "1m", None),
        ("9m", "10m", Some("2025-03-01T12:09:00Z")),
    ];
    for (slot, len, want) in rows {
        // `(from - 1 ms, from + len - 1 ms]`: the slot at `from` itself is included.
        let got = slot_in(
            interval,
            span(slot),
            from - TimeDelta::milliseconds(1),
            from + TimeDelta::from_std(span(len)).unwrap() - TimeDelta::milliseconds(1),
        );
        assert_eq!(got, want.map(time), "{slot} {len}");
    }
}

#[test]
fn stagger_is_stable_per_instance_and_differs_between_instances() {
    let stagger = span("10s");
    let offsets: Vec<Duration> = ["a", "b", "c"]
        .iter()
        .map(|i| stagger_offset(stagger, i, "cred", Some(4)))
        .collect();
    assert_eq!(offsets[0], stagger_offset(stagger, "a", "cred", Some(4)));
    assert!(offsets.iter().all(|o| *o < stagger));
    assert!(offsets[0] != offsets[1] || offsets[1] != offsets[2]);
    // Applied to a due start, not to an attempt in flight.
    let now = time(T0);
    let mut p = Planner::new(Settings {
        stagger,
        ..settings()
    });
    p.track("cred", "x", now, false);
    p.next_work(now, |_, _| false).unwrap();
    p.observed(
        "cred",
        Work::Read,
        Observation {
            version: Some(4),
            ..idle_until(T0)
        },
        now,
    );
    let expected = now + TimeDelta::from_std(offsets[0]).unwrap();
    assert_eq!(p.next_wake(), Some(expected));
}

#[test]
fn an_attempt_held_elsewhere_is_looked_at_again_each_reconcile_interval() {
    let now = time(T0);
    let mut p = Planner::new(settings());
    // Another instance's lease runs for 5 minutes more: looked at again within the 10 minute
    // interval either way; a lease of an hour waits no longer than the interval.
    for (until, wake) in [(5, 5), (60, 10)] {
        p.track("a", "x", now, false);
        p.next_work(now, |_, _| false).unwrap();
        let busy = Observation {
            next: Next::At(now + TimeDelta::minutes(until)),
            in_flight: true,
            ..idle_until(T0)
        };
        p.observed("a", Work::Drive, busy, now);
        assert_eq!(
            p.next_wake(),
            Some(now + TimeDelta::minutes(wake)),
            "{until}"
        );
    }
}

#[test]
fn a_sweep_during_start_up_loses_no_slot() {
    let now = time(T0);
    let mut p = Planner::new(settings());
    p.track("a", "x", now, true);
    // The sweep comes while the start-up read runs; the read ends before the slot.
    let (name, work) = p.next_work(now, |_, _| false).unwrap();
    let end = now + TimeDelta::minutes(10);
    assert_eq!(p.sweep(now, end), 1);
    p.observed(&name, work, idle_until("2026-01-01T00:00:00Z"), now);
    let slot = slot_in(span("10m"), reconcile_slot(span("10m"), "a"), now, end);
    assert_eq!(p.next_wake(), slot);
}

#[test]
fn drift_checks_are_planned_per_credential_and_a_reload_forgets_a_removed_one() {
    let mut p = Planner::new(settings());
    let t0 = time("2030-01-01T00:00:00Z");
    let hour = span("1h");
    for name in ["kept", "removed"] {
        p.track(name, "store", t0, false);
        p.track_drift(name, Some(hour), t0);
    }
    p.track("no-drift", "store", t0, false);
    p.track_drift("no-drift", None, t0);

    // The first round at once, then one interval later each; none for a credential without.
    let mut first = p.drift_due(t0);
    first.sort();
    assert_eq!(first, ["kept", "removed"]);
    assert!(p.drift_due(t0 + TimeDelta::minutes(59)).is_empty());
    assert_eq!(
        p.next_wake().map(|w| w <= t0 + TimeDelta::hours(1)),
        Some(true)
    );

    // A reload: "removed" left the configuration; "kept" keeps its time.
    p.retain(|name| name != "removed");
    p.track_drift("kept", Some(hour), t0 + TimeDelta::minutes(30));
    assert_eq!(p.next_drift("removed"), None);
    assert_eq!(p.next_drift("kept"), Some(t0 + TimeDelta::hours(1)));
    assert_eq!(p.drift_due(t0 + TimeDelta::hours(1)), ["kept"]);
    assert!(p
        .drift_due(t0 + TimeDelta::hours(5))
        .iter()
        .all(|n| n == "kept"));

    // A new interval checks at once; no interval forgets the check.
    p.track_drift("kept", Some(span("2h")), t0 + TimeDelta::hours(6));
    assert_eq!(p.next_drift("kept"), Some(t0 + TimeDelta::hours(6)));
    p.track_drift("kept", None, t0 + TimeDelta::hours(6));
    assert_eq!(p.next_drift("kept"), None);
    assert!(p.drift_due(t0 + TimeDelta::days(30)).is_empty());
}
