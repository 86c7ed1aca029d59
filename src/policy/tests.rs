//! The scheduling rules, as tables of cases. Each row names the rule it pins down.
//!
//! Times are written with the offset in force at that instant, so a row about DST reads the way a
//! person in that zone would see it.

use super::*;

use chrono::NaiveTime;
use chrono_tz::{America::New_York, Europe::Berlin, UTC};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// The one helper: a compact description of the inputs, turned into real values.
// ---------------------------------------------------------------------------------------------

/// The inputs of one case. `created: None` means the secret is missing.
#[derive(Clone, Copy)]
struct Setup {
    tz: Tz,
    created: Option<&'static str>,
    expires: Option<&'static str>,
    max_age: Option<&'static str>,
    schedule: Option<&'static str>,
    lead: &'static str,
    window: Option<(&'static str, &'static str)>,
    jitter: &'static str,
    seed: u64,
    now: &'static str,
}

/// Unless a row says otherwise: UTC, created on New Year 2025, 30-day max age, 7-day expiry lead,
/// no schedule, no window, no jitter, looked at on 10 January.
const BASE: Setup = Setup {
    tz: UTC,
    created: Some("2025-01-01T00:00:00Z"),
    expires: None,
    max_age: Some("30d"),
    schedule: None,
    lead: "7d",
    window: None,
    jitter: "0s",
    seed: 0,
    now: "2025-01-10T00:00:00Z",
};

fn time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("bad time {text:?} in a test row: {e}"))
        .with_timezone(&Utc)
}

fn span(text: &str) -> Duration {
    humantime::parse_duration(text).unwrap_or_else(|e| panic!("bad duration {text:?}: {e}"))
}

fn clock(text: &str) -> NaiveTime {
    NaiveTime::parse_from_str(text, "%H:%M").unwrap_or_else(|e| panic!("bad time {text:?}: {e}"))
}

impl Setup {
    fn facts(&self) -> Option<SecretFacts> {
        self.created.map(|created| SecretFacts {
            created_time: time(created),
            expires_at: self.expires.map(time),
        })
    }

    fn policy(&self) -> Policy {
        Policy {
            max_age: self.max_age.map(span),
            schedule: self.schedule.map(|expression| CronSchedule {
                expression: expression.to_string(),
            }),
            timezone: self.tz,
            expiry_lead: span(self.lead),
            window: self.window.map(|(start, end)| Window {
                start: clock(start),
                end: clock(end),
            }),
            jitter: span(self.jitter),
            grace: span("1h"),
            destroy_old_version: false,
            credential_lifetime: None,
            expiring_warning: Duration::from_secs(3 * 86_400),
            ..Policy::default()
        }
    }

    fn next_due(&self) -> Result<Due, PolicyError> {
        next_due(
            self.facts().as_ref(),
            &self.policy(),
            time(self.now),
            self.seed,
        )
    }

    fn standing(&self) -> Standing {
        standing(self.facts().as_ref(), &self.policy(), time(self.now))
    }
}

/// One row of a `next_due` table: the inputs and the expected plan.
struct Case {
    name: &'static str,
    given: Setup,
    at: &'static str,
    reason: DueReason,
    deadline: Option<&'static str>,
}

/// Runs every row and reports all failing rows at once, by name.
fn check_due(cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let want = Due {
            at: time(case.at),
            reason: case.reason,
            deadline: case.deadline.map(time),
        };
        match case.given.next_due() {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!(
                "{}:\n   want at {} {:?} deadline {:?}\n    got at {} {:?} deadline {:?}",
                case.name,
                want.at.with_timezone(&case.given.tz),
                want.reason,
                want.deadline,
                got.at.with_timezone(&case.given.tz),
                got.reason,
                got.deadline,
            )),
            Err(e) => failures.push(format!("{}: unexpected error: {e}", case.name)),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// next_due: the rules
// ---------------------------------------------------------------------------------------------

#[test]
fn each_rule_and_earliest_wins() {
    check_due(&[
        Case {
            name: "max age: due at created + max_age",
            given: BASE,
            at: "2025-01-31T00:00:00Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-31T00:00:00Z"),
        },
        Case {
            name: "max age already passed: due now",
            given: Setup {
                now: "2025-02-05T12:00:00Z",
                ..BASE
            },
            at: "2025-02-05T12:00:00Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-31T00:00:00Z"),
        },
        Case {
            name: "max age is elapsed time: one day across spring-forward is 24 hours",
            given: Setup {
                tz: New_York,
                created: Some("2025-03-08T12:00:00-05:00"),
                max_age: Some("1d"),
                now: "2025-03-08T13:00:00-05:00",
                ..BASE
            },
            at: "2025-03-09T13:00:00-04:00",
            reason: DueReason::MaxAge,
            deadline: Some("2025-03-09T13:00:00-04:00"),
        },
        Case {
            name: "expiry: due expiry_lead before expires_at, earlier than max age",
            given: Setup {
                expires: Some("2025-01-20T00:00:00Z"),
                ..BASE
            },
            at: "2025-01-13T00:00:00Z",
            reason: DueReason::Expiry,
            deadline: Some("2025-01-20T00:00:00Z"),
        },
        Case {
            name: "expiry later than max age: max age wins",
            given: Setup {
                expires: Some("2025-06-01T00:00:00Z"),
                ..BASE
            },
            at: "2025-01-31T00:00:00Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-31T00:00:00Z"),
        },
        Case {
            name: "expiry alone, without max age",
            given: Setup {
                max_age: None,
                expires: Some("2025-03-01T00:00:00Z"),
                ..BASE
            },
            at: "2025-02-22T00:00:00Z",
            reason: DueReason::Expiry,
            deadline: Some("2025-03-01T00:00:00Z"),
        },
        Case {
            name: "credential lives shorter than its lead: due at once, not before created",
            given: Setup {
                expires: Some("2025-01-03T00:00:00Z"),
                now: "2025-01-01T06:00:00Z",
                ..BASE
            },
            at: "2025-01-01T06:00:00Z",
            reason: DueReason::Expiry,
            deadline: Some("2025-01-03T00:00:00Z"),
        },
        Case {
            name: "schedule: first occurrence after created (Mondays 03:00)",
            given: Setup {
                max_age: None,
                schedule: Some("0 3 * * 1"),
                now: "2025-01-02T00:00:00Z",
                ..BASE
            },
            at: "2025-01-06T03:00:00Z",
            reason: DueReason::Schedule,
            deadline: None,
        },
        Case {
            name: "schedule: a secret rotated at an occurrence waits for the next one",
            given: Setup {
                max_age: None,
                schedule: Some("0 3 * * 1"),
                created: Some("2025-01-06T03:00:00Z"),
                now: "2025-01-06T03:00:05Z",
                ..BASE
            },
            at: "2025-01-13T03:00:00Z",
            reason: DueReason::Schedule,
            deadline: None,
        },
        Case {
            name: "schedule: created half a second before an occurrence",
            given: Setup {
                max_age: None,
                schedule: Some("0 3 * * 1"),
                created: Some("2025-01-06T02:59:59.500Z"),
                now: "2025-01-06T02:59:59.500Z",
                ..BASE
            },
            at: "2025-01-06T03:00:00Z",
            reason: DueReason::Schedule,
            deadline: None,
        },
        Case {
            name: "schedule is read in the policy's time zone",
            given: Setup {
                tz: Berlin,
                max_age: None,
                schedule: Some("0 3 * * *"),
                now: "2025-01-01T00:00:00Z",
                ..BASE
            },
            at: "2025-01-01T03:00:00+01:00",
            reason: DueReason::Schedule,
            deadline: None,
        },
        Case {
            name: "schedule earlier than max age: schedule wins, max age still sets the deadline",
            given: Setup {
                schedule: Some("0 3 * * 1"),
                now: "2025-01-02T00:00:00Z",
                ..BASE
            },
            at: "2025-01-06T03:00:00Z",
            reason: DueReason::Schedule,
            deadline: Some("2025-01-31T00:00:00Z"),
        },
        Case {
            name: "max age earlier than schedule: max age wins",
            given: Setup {
                max_age: Some("2d"),
                schedule: Some("0 3 15 * *"),
                now: "2025-01-02T00:00:00Z",
                ..BASE
            },
            at: "2025-01-03T00:00:00Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-03T00:00:00Z"),
        },
        Case {
            name: "tie between max age and schedule: max age is reported",
            given: Setup {
                max_age: Some("5d"),
                schedule: Some("0 0 6 1 *"),
                now: "2025-01-02T00:00:00Z",
                ..BASE
            },
            at: "2025-01-06T00:00:00Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-06T00:00:00Z"),
        },
        Case {
            name: "tie between expiry and max age: expiry is reported",
            given: Setup {
                expires: Some("2025-02-07T00:00:00Z"),
                ..BASE
            },
            at: "2025-01-31T00:00:00Z",
            reason: DueReason::Expiry,
            deadline: Some("2025-01-31T00:00:00Z"),
        },
        Case {
            name: "missing secret: due now",
            given: Setup {
                created: None,
                ..BASE
            },
            at: "2025-01-10T00:00:00Z",
            reason: DueReason::Missing,
            deadline: None,
        },
        Case {
            name: "missing secret: neither window nor jitter holds it back",
            given: Setup {
                created: None,
                window: Some(("01:00", "02:00")),
                jitter: "1h",
                now: "2025-01-10T12:00:00Z",
                ..BASE
            },
            at: "2025-01-10T12:00:00Z",
            reason: DueReason::Missing,
            deadline: None,
        },
    ]);
}

// ---------------------------------------------------------------------------------------------
// next_due: the window, and missed windows
// ---------------------------------------------------------------------------------------------

/// Due 2025-01-31 at the time of day of `created` (30-day max age), looked at on 10 January.
const fn due_at(created: &'static str, window: (&'static str, &'static str)) -> Setup {
    Setup {
        created: Some(created),
        window: Some(window),
        ..BASE
    }
}

#[test]
fn window_moves_the_due_time_to_the_next_opening() {
    check_due(&[
        Case {
            name: "due inside the window: unchanged",
            given: due_at("2025-01-01T02:00:00Z", ("01:00", "05:00")),
            at: "2025-01-31T02:00:00Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-31T02:00:00Z"),
        },
        Case {
            name: "window start is inclusive",
            given: due_at("2025-01-01T01:00:00Z", ("01:00", "05:00")),
            at: "2025-01-31T01:00:00Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-31T01:00:00Z"),
        },
        Case {
            name: "due before the window: today's opening",
            given: due_at("2025-01-01T00:00:00Z", ("01:00", "05:00")),
            at: "2025-01-31T01:00:00Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-31T00:00:00Z"),
        },
        Case {
            name: "due after the window: tomorrow's opening",
            given: due_at("2025-01-01T06:00:00Z", ("01:00", "05:00")),
            at: "2025-02-01T01:00:00Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-31T06:00:00Z"),
        },
        Case {
            name: "window end is exclusive",
            given: due_at("2025-01-01T05:00:00Z", ("01:00", "05:00")),
            at: "2025-02-01T01:00:00Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-31T05:00:00Z"),
        },
        Case {
            name: "window wrapping midnight: due late evening is inside",
            given: due_at("2025-01-01T23:30:00Z", ("22:00", "04:00")),
            at: "2025-01-31T23:30:00Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-31T23:30:00Z"),
        },
        Case {
            name: "window wrapping midnight: due after midnight is inside",
            given: due_at("2025-01-01T02:00:00Z", ("22:00", "04:00")),
            at: "2025-01-31T02:00:00Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-31T02:00:00Z"),
        },
        Case {
            name: "window wrapping midnight: due at midday waits for the evening opening",
            given: due_at("2025-01-01T12:00:00Z", ("22:00", "04:00")),
            at: "2025-01-31T22:00:00Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-31T12:00:00Z"),
        },
        Case {
            name: "window wrapping midnight: due at its end waits for the evening opening",
            given: due_at("2025-01-01T04:00:00Z", ("22:00", "04:00")),
            at: "2025-01-31T22:00:00Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-31T04:00:00Z"),
        },
        Case {
            name: "window of zero length is the whole day",
            given: due_at("2025-01-01T00:00:00Z", ("03:00", "03:00")),
            at: "2025-01-31T00:00:00Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-31T00:00:00Z"),
        },
        Case {
            name: "window is read in the policy's time zone",
            given: Setup {
                tz: Berlin,
                ..due_at("2025-01-01T00:00:00Z", ("02:00", "04:00"))
            },
            at: "2025-01-31T02:00:00+01:00",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-31T00:00:00Z"),
        },
        Case {
            name: "missed window (closed now): the next opening, never outside the window",
            given: Setup {
                now: "2025-02-03T12:00:00Z",
                ..due_at("2025-01-01T00:00:00Z", ("01:00", "05:00"))
            },
            at: "2025-02-04T01:00:00Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-31T00:00:00Z"),
        },
        Case {
            name: "due in the past and the window is open now: due now",
            given: Setup {
                now: "2025-02-03T02:00:00Z",
                ..due_at("2025-01-01T00:00:00Z", ("01:00", "05:00"))
            },
            at: "2025-02-03T02:00:00Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-31T00:00:00Z"),
        },
        Case {
            name: "missed wrapping window, now after midnight inside it: due now",
            given: Setup {
                now: "2025-02-03T03:59:00Z",
                ..due_at("2025-01-01T12:00:00Z", ("22:00", "04:00"))
            },
            at: "2025-02-03T03:59:00Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-31T12:00:00Z"),
        },
    ]);
}

// ---------------------------------------------------------------------------------------------
// next_due: DST transitions
// Europe/Berlin 2025: clocks jump 02:00 -> 03:00 on 30 March, fall back 03:00 -> 02:00 on 26 October.
// America/New_York 2025: jump 02:00 -> 03:00 on 9 March, fall back 02:00 -> 01:00 on 2 November.
// ---------------------------------------------------------------------------------------------

/// A one-day max age, so the due time is exactly one day after `created`.
const fn in_zone(tz: Tz, created: &'static str, now: &'static str) -> Setup {
    Setup {
        tz,
        created: Some(created),
        max_age: Some("1d"),
        now,
        ..BASE
    }
}

#[test]
fn windows_across_dst_transitions() {
    check_due(&[
        Case {
            name: "Berlin spring-forward: window starting in the gap opens when the clocks jump",
            given: Setup {
                window: Some(("02:30", "04:00")),
                ..in_zone(
                    Berlin,
                    "2025-03-29T00:00:00+01:00",
                    "2025-03-29T00:00:00+01:00",
                )
            },
            at: "2025-03-30T03:00:00+02:00",
            reason: DueReason::MaxAge,
            deadline: Some("2025-03-30T00:00:00+01:00"),
        },
        Case {
            name: "Berlin spring-forward: window swallowed by the gap opens the next day",
            given: Setup {
                window: Some(("02:00", "02:30")),
                ..in_zone(
                    Berlin,
                    "2025-03-29T00:00:00+01:00",
                    "2025-03-29T00:00:00+01:00",
                )
            },
            at: "2025-03-31T02:00:00+02:00",
            reason: DueReason::MaxAge,
            deadline: Some("2025-03-30T00:00:00+01:00"),
        },
        Case {
            name: "Berlin spring-forward: window cut short by the gap, due after it",
            given: Setup {
                window: Some(("01:00", "02:30")),
                ..in_zone(
                    Berlin,
                    "2025-03-29T02:10:00+01:00",
                    "2025-03-29T02:10:00+01:00",
                )
            },
            at: "2025-03-31T01:00:00+02:00",
            reason: DueReason::MaxAge,
            deadline: Some("2025-03-30T03:10:00+02:00"),
        },
        Case {
            name: "Berlin fall-back: window starting in the repeated hour opens at its first pass",
            given: Setup {
                window: Some(("02:00", "03:00")),
                ..in_zone(
                    Berlin,
                    "2025-10-25T00:00:00+02:00",
                    "2025-10-25T00:00:00+02:00",
                )
            },
            at: "2025-10-26T02:00:00+02:00",
            reason: DueReason::MaxAge,
            deadline: Some("2025-10-26T00:00:00+02:00"),
        },
        Case {
            name: "Berlin fall-back: due in the second pass of the repeated hour is inside",
            given: Setup {
                window: Some(("02:00", "03:00")),
                ..in_zone(
                    Berlin,
                    "2025-10-25T01:30:00+00:00",
                    "2025-10-25T01:30:00+00:00",
                )
            },
            at: "2025-10-26T02:30:00+01:00",
            reason: DueReason::MaxAge,
            deadline: Some("2025-10-26T02:30:00+01:00"),
        },
        Case {
            name: "Berlin fall-back: the repeated hour does not reopen a window (once per date)",
            given: Setup {
                window: Some(("01:00", "02:15")),
                ..in_zone(
                    Berlin,
                    "2025-10-25T02:30:00+02:00",
                    "2025-10-25T02:30:00+02:00",
                )
            },
            at: "2025-10-27T01:00:00+01:00",
            reason: DueReason::MaxAge,
            deadline: Some("2025-10-26T02:30:00+02:00"),
        },
        Case {
            name: "New York spring-forward: window starting in the gap opens when the clocks jump",
            given: Setup {
                window: Some(("02:15", "05:00")),
                ..in_zone(
                    New_York,
                    "2025-03-08T00:00:00-05:00",
                    "2025-03-08T00:00:00-05:00",
                )
            },
            at: "2025-03-09T03:00:00-04:00",
            reason: DueReason::MaxAge,
            deadline: Some("2025-03-09T00:00:00-05:00"),
        },
        Case {
            name: "New York fall-back: window in the repeated hour opens at its first pass",
            given: Setup {
                window: Some(("01:00", "02:00")),
                ..in_zone(
                    New_York,
                    "2025-11-01T00:30:00-04:00",
                    "2025-11-01T00:30:00-04:00",
                )
            },
            at: "2025-11-02T01:00:00-04:00",
            reason: DueReason::MaxAge,
            deadline: Some("2025-11-02T00:30:00-04:00"),
        },
    ]);
}

/// Only a schedule, in `tz`.
const fn cron_in(tz: Tz, schedule: &'static str, created: &'static str) -> Setup {
    Setup {
        tz,
        created: Some(created),
        max_age: None,
        schedule: Some(schedule),
        now: created,
        ..BASE
    }
}

#[test]
fn schedules_across_dst_transitions() {
    check_due(&[
        Case {
            name: "Berlin spring-forward: 02:30 daily, skipped by the gap, runs when clocks jump",
            given: cron_in(Berlin, "30 2 * * *", "2025-03-29T02:30:00+01:00"),
            at: "2025-03-30T03:00:00+02:00",
            reason: DueReason::Schedule,
            deadline: None,
        },
        Case {
            name: "Berlin fall-back: 02:30 daily runs once, in the first pass",
            given: cron_in(Berlin, "30 2 * * *", "2025-10-25T02:30:00+02:00"),
            at: "2025-10-26T02:30:00+02:00",
            reason: DueReason::Schedule,
            deadline: None,
        },
        Case {
            name: "Berlin fall-back: daily job, created in the second pass, waits a day",
            given: cron_in(Berlin, "30 2 * * *", "2025-10-26T02:15:00+01:00"),
            at: "2025-10-27T02:30:00+01:00",
            reason: DueReason::Schedule,
            deadline: None,
        },
        Case {
            name: "Berlin fall-back: interval job, created in the second pass, runs in it",
            given: cron_in(Berlin, "*/30 * * * *", "2025-10-26T02:10:00+01:00"),
            at: "2025-10-26T02:30:00+01:00",
            reason: DueReason::Schedule,
            deadline: None,
        },
        Case {
            name: "New York spring-forward: 02:00 daily runs when the clocks jump",
            given: cron_in(New_York, "0 2 * * *", "2025-03-08T02:00:00-05:00"),
            at: "2025-03-09T03:00:00-04:00",
            reason: DueReason::Schedule,
            deadline: None,
        },
        Case {
            name: "New York: a weekly job keeps its wall-clock time across the change",
            given: cron_in(New_York, "0 9 * * 1", "2025-03-03T09:00:00-05:00"),
            at: "2025-03-10T09:00:00-04:00",
            reason: DueReason::Schedule,
            deadline: None,
        },
        Case {
            name: "New York fall-back: 01:30 daily runs once, in the first pass",
            given: cron_in(New_York, "30 1 * * *", "2025-11-01T01:30:00-04:00"),
            at: "2025-11-02T01:30:00-04:00",
            reason: DueReason::Schedule,
            deadline: None,
        },
    ]);
}

// ---------------------------------------------------------------------------------------------
// Jitter
// ---------------------------------------------------------------------------------------------

#[test]
fn jitter_offsets_are_pinned() {
    // The offsets are part of the plan a running fleet has already computed: a change here moves
    // every credential's due time at upgrade. The first value is splitmix64's published first
    // output for seed 0 (0xE220A8397B1DCDAF), reduced modulo one hour in milliseconds.
    assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
    let hour = span("1h");
    let table = [
        (hour, 0, Duration::from_millis(1_407_535)),
        (hour, 1, Duration::from_millis(422_465)),
        (hour, 42, Duration::from_millis(875_413)),
        (span("10m"), 7, Duration::from_millis(374_487)),
        (Duration::ZERO, 42, Duration::ZERO),
        (Duration::from_micros(999), 42, Duration::ZERO),
    ];
    for (jitter, seed, want) in table {
        assert_eq!(
            jitter_offset(jitter, seed),
            want,
            "jitter {jitter:?} seed {seed}"
        );
    }
}

#[test]
fn jitter_moves_deadline_rules_earlier_and_schedules_later() {
    // Seed 42 over 1 h is 14m35.413s, seed 1 is 7m2.465s (see `jitter_offsets_are_pinned`).
    let weekly = Setup {
        max_age: None,
        schedule: Some("0 3 * * 1"),
        jitter: "1h",
        seed: 42,
        now: "2025-01-02T00:00:00Z",
        ..BASE
    };
    check_due(&[
        Case {
            name: "max age: jitter subtracts the seed's offset, due before the deadline",
            given: Setup {
                jitter: "1h",
                seed: 42,
                ..BASE
            },
            at: "2025-01-30T23:45:24.587Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-31T00:00:00Z"),
        },
        Case {
            name: "max age: another seed, another offset",
            given: Setup {
                jitter: "1h",
                seed: 1,
                ..BASE
            },
            at: "2025-01-30T23:52:57.535Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-31T00:00:00Z"),
        },
        Case {
            name: "expiry: jitter subtracts the offset from expires_at - expiry_lead",
            given: Setup {
                expires: Some("2025-01-20T00:00:00Z"),
                jitter: "1h",
                seed: 42,
                ..BASE
            },
            at: "2025-01-12T23:45:24.587Z",
            reason: DueReason::Expiry,
            deadline: Some("2025-01-20T00:00:00Z"),
        },
        Case {
            name: "max age: subtracting would go before created_time, clamped to it",
            given: Setup {
                max_age: Some("10m"),
                jitter: "1h",
                seed: 42,
                now: "2024-12-31T23:00:00Z", // clock skew: looked at before created
                ..BASE
            },
            at: "2025-01-01T00:00:00Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-01T00:10:00Z"),
        },
        Case {
            name: "schedule: jitter adds the offset (an occurrence is a start time)",
            given: weekly,
            at: "2025-01-06T03:14:35.413Z",
            reason: DueReason::Schedule,
            deadline: None,
        },
        Case {
            name: "rules compared before jitter: the schedule wins and is jittered later",
            given: Setup {
                max_age: Some("5d 3h 20m"), // due 2025-01-06T03:20, after the occurrence
                ..weekly
            },
            at: "2025-01-06T03:14:35.413Z",
            reason: DueReason::Schedule,
            deadline: Some("2025-01-06T03:20:00Z"),
        },
        Case {
            name: "schedule jitter never passes the max-age deadline",
            given: Setup {
                max_age: Some("5d 3h 5m"), // due 2025-01-06T03:05, after the occurrence
                ..weekly
            },
            at: "2025-01-06T03:05:00Z",
            reason: DueReason::Schedule,
            deadline: Some("2025-01-06T03:05:00Z"),
        },
        Case {
            name: "max-age jitter before the window's start: that day's opening",
            given: Setup {
                jitter: "1h",
                seed: 42,
                ..due_at("2025-01-01T00:00:00Z", ("23:50", "00:10"))
            },
            at: "2025-01-30T23:50:00Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-31T00:00:00Z"),
        },
        Case {
            name: "schedule jitter past the window's end: next opening",
            given: Setup {
                window: Some(("03:00", "03:10")),
                ..weekly
            },
            at: "2025-01-07T03:00:00Z",
            reason: DueReason::Schedule,
            deadline: None,
        },
        Case {
            name: "jitter on a past due time: due now",
            given: Setup {
                jitter: "1h",
                seed: 42,
                now: "2025-02-05T00:00:00Z",
                ..BASE
            },
            at: "2025-02-05T00:00:00Z",
            reason: DueReason::MaxAge,
            deadline: Some("2025-01-31T00:00:00Z"),
        },
    ]);
}

#[test]
fn same_seed_same_plan_across_restarts() {
    let given = Setup {
        jitter: "6h",
        seed: 0xDEAD_BEEF,
        window: Some(("22:00", "04:00")),
        ..BASE
    };
    let first = given.next_due().unwrap();
    // A restart a few days later, still before the due time, computes the same plan.
    let later = Setup {
        now: "2025-01-20T07:00:00Z",
        ..given
    };
    assert_eq!(later.next_due().unwrap(), first);
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[test]
fn errors() {
    let bad = Setup {
        schedule: Some("every tuesday"),
        ..BASE
    };
    assert!(
        matches!(bad.next_due(), Err(PolicyError::InvalidSchedule { expression, .. }) if expression == "every tuesday")
    );

    let never = Setup {
        schedule: Some("0 0 30 2 *"), // 30 February
        ..BASE
    };
    assert!(matches!(
        never.next_due(),
        Err(PolicyError::NoOccurrence { .. })
    ));

    let no_rule = Setup {
        max_age: None,
        ..BASE
    };
    assert!(matches!(no_rule.next_due(), Err(PolicyError::NoRule)));

    // A missing secret needs no rule to be due.
    let missing = Setup {
        created: None,
        ..bad
    };
    assert_eq!(missing.next_due().unwrap().reason, DueReason::Missing);
}

// ---------------------------------------------------------------------------------------------
// standing (for `status`)
// ---------------------------------------------------------------------------------------------

#[test]
fn standing_table() {
    let cases: &[(&str, Setup, Standing)] = &[
        (
            "missing secret",
            Setup {
                created: None,
                ..BASE
            },
            Standing::Missing,
        ),
        (
            "fresh: due in 21 days",
            BASE,
            Standing::Ok {
                due_in: span("21d"),
            },
        ),
        (
            "at the max-age deadline itself: due, not yet overdue",
            Setup {
                now: "2025-01-31T00:00:00Z",
                ..BASE
            },
            Standing::Due,
        ),
        (
            "an hour past max age: overdue by an hour",
            Setup {
                now: "2025-01-31T01:00:00Z",
                ..BASE
            },
            Standing::Overdue { by: span("1h") },
        ),
        (
            "inside the expiry lead: due",
            Setup {
                expires: Some("2025-01-20T00:00:00Z"),
                now: "2025-01-15T00:00:00Z",
                ..BASE
            },
            Standing::Due,
        ),
        (
            "a day past expiry: overdue by a day, though max age is far",
            Setup {
                expires: Some("2025-01-20T00:00:00Z"),
                now: "2025-01-21T00:00:00Z",
                ..BASE
            },
            Standing::Overdue { by: span("1d") },
        ),
        (
            "schedule passed weeks ago: due, never overdue (a schedule has no deadline)",
            Setup {
                max_age: None,
                schedule: Some("0 3 * * 1"),
                now: "2025-02-20T00:00:00Z",
                ..BASE
            },
            Standing::Due,
        ),
        (
            "due, but the window is closed: ok until it opens",
            Setup {
                max_age: None,
                schedule: Some("0 3 * * 1"),
                window: Some(("22:00", "04:00")),
                now: "2025-01-06T12:00:00Z",
                ..BASE
            },
            Standing::Ok {
                due_in: span("10h"),
            },
        ),
        (
            "past the deadline while the window is closed: overdue",
            Setup {
                window: Some(("22:00", "04:00")),
                now: "2025-02-01T12:00:00Z",
                ..BASE
            },
            Standing::Overdue { by: span("36h") },
        ),
        (
            "jitter is left out: due as soon as the rule fires",
            Setup {
                jitter: "1h",
                seed: 42,
                max_age: Some("9d"),
                ..BASE
            },
            Standing::Due,
        ),
        (
            "a broken schedule is left out, the other rules still count",
            Setup {
                schedule: Some("not cron"),
                ..BASE
            },
            Standing::Ok {
                due_in: span("21d"),
            },
        ),
        (
            "no rule at all: never due by itself",
            Setup {
                max_age: None,
                ..BASE
            },
            Standing::Ok {
                due_in: Duration::MAX,
            },
        ),
    ];
    let mut failures = Vec::new();
    for (name, given, want) in cases {
        let got = given.standing();
        if got != *want {
            failures.push(format!("{name}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

const ZONES: &[Tz] = &[
    UTC,
    Berlin,
    New_York,
    chrono_tz::Australia::Lord_Howe, // 30-minute DST shift
    chrono_tz::America::Sao_Paulo,   // DST used to change at midnight
    chrono_tz::Pacific::Apia,        // skipped 2011-12-30 entirely
    chrono_tz::Asia::Kolkata,        // half-hour offset, no DST
];

const SCHEDULES: &[&str] = &[
    "0 3 * * 1",
    "30 2 * * *",
    "*/15 * * * *",
    "0 0 1 * *",
    "0 9-17 * * 1-5",
];

/// 2008..2035, with the DST rules of each zone's many eras.
fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
    (1_200_000_000i64..2_050_000_000i64)
        .prop_map(|secs| DateTime::from_timestamp(secs, 0).expect("in range"))
}

fn any_window() -> impl Strategy<Value = Window> {
    (0u32..24 * 60, 0u32..24 * 60).prop_map(|(start, end)| Window {
        start: NaiveTime::from_num_seconds_from_midnight_opt(start * 60, 0).expect("in range"),
        end: NaiveTime::from_num_seconds_from_midnight_opt(end * 60, 0).expect("in range"),
    })
}

prop_compose! {
    fn any_policy()(
        max_age in proptest::option::of(60u64..400 * 86_400),
        schedule in proptest::option::of(proptest::sample::select(SCHEDULES)),
        timezone in proptest::sample::select(ZONES),
        expiry_lead in 0u64..30 * 86_400,
        window in proptest::option::of(any_window()),
        jitter_ms in 0u64..2 * 86_400_000,
    ) -> Policy {
        Policy {
            // Always at least one rule: `NoRule` has its own test.
            max_age: match (max_age, schedule) {
                (None, None) => Some(Duration::from_secs(30 * 86_400)),
                (max_age, _) => max_age.map(Duration::from_secs),
            },
            schedule: schedule.map(|expression| CronSchedule { expression: expression.to_string() }),
            timezone,
            expiry_lead: Duration::from_secs(expiry_lead),
            window,
            jitter: Duration::from_millis(jitter_ms),
            grace: Duration::from_secs(3600),
            destroy_old_version: false,
            credential_lifetime: None,
            expiring_warning: Duration::from_secs(3 * 86_400),
            ..Policy::default()
        }
    }
}

prop_compose! {
    fn any_facts()(
        created_time in any_instant(),
        expires_in in proptest::option::of(-10i64 * 86_400..400 * 86_400),
    ) -> SecretFacts {
        SecretFacts {
            created_time,
            expires_at: expires_in.map(|secs| created_time + TimeDelta::seconds(secs)),
        }
    }
}

prop_compose! {
    /// `now` anywhere from a day before the secret was created (clock skew) to two years after.
    fn facts_and_now()(facts in any_facts(), offset in -86_400i64..800 * 86_400) -> (SecretFacts, DateTime<Utc>) {
        (facts, facts.created_time + TimeDelta::seconds(offset))
    }
}

proptest! {
    #[test]
    fn at_is_inside_the_window_and_not_before_created_or_now(
        (facts, now) in facts_and_now(),
        policy in any_policy(),
        seed in any::<u64>(),
    ) {
        let due = next_due(Some(&facts), &policy, now, seed).unwrap();
        if let Some(window) = &policy.window {
            prop_assert!(
                window_is_open(window, policy.timezone, due.at),
                "at {} is outside {:?}", due.at.with_timezone(&policy.timezone), window
            );
        }
        prop_assert!(due.at >= facts.created_time);
        prop_assert!(due.at >= now);
    }

    #[test]
    fn jitter_keeps_the_deadline_and_the_window_only_delays(
        (facts, now) in facts_and_now(),
        policy in any_policy(),
        seed in any::<u64>(),
    ) {
        let unwindowed = Policy { window: None, ..policy.clone() };
        let plain = Policy { jitter: Duration::ZERO, ..unwindowed.clone() };
        let bare = next_due(Some(&facts), &plain, now, seed).unwrap();
        let jittered = next_due(Some(&facts), &unwindowed, now, seed).unwrap();
        let full = next_due(Some(&facts), &policy, now, seed).unwrap();
        // Jitter changes neither the reason nor the deadline.
        prop_assert_eq!(jittered.reason, bare.reason);
        prop_assert_eq!(jittered.deadline, bare.deadline);
        prop_assert_eq!(full.reason, bare.reason);
        prop_assert_eq!(full.deadline, bare.deadline);
        // Without a window, a deadline still ahead is kept (one before `created_time` cannot be:
        // nothing starts before the secret exists).
        if let Some(deadline) = jittered.deadline {
            if deadline >= now && deadline >= facts.created_time {
                prop_assert!(
                    jittered.at <= deadline,
                    "at {} after deadline {} ({:?})", jittered.at, deadline, jittered.reason
                );
            }
        }
        // Deadline rules only move earlier, schedules only later.
        match jittered.reason {
            DueReason::MaxAge | DueReason::Expiry => prop_assert!(jittered.at <= bare.at),
            DueReason::Schedule => prop_assert!(jittered.at >= bare.at),
            DueReason::Missing => prop_assert!(false, "facts were given"),
        }
        // The window only delays.
        prop_assert!(full.at >= jittered.at);
    }

    #[test]
    fn jitter_offset_is_below_jitter(jitter_ms in 1u64..10 * 86_400_000, seed in any::<u64>()) {
        let jitter = Duration::from_millis(jitter_ms);
        prop_assert!(jitter_offset(jitter, seed) < jitter);
    }

    #[test]
    fn same_seed_same_result(
        (facts, now) in facts_and_now(),
        policy in any_policy(),
        seed in any::<u64>(),
    ) {
        prop_assert_eq!(jitter_offset(policy.jitter, seed), jitter_offset(policy.jitter, seed));
        prop_assert_eq!(
            next_due(Some(&facts), &policy, now, seed).unwrap(),
            next_due(Some(&facts), &policy, now, seed).unwrap()
        );
    }

    #[test]
    fn standing_agrees_with_next_due_without_jitter(
        (facts, now) in facts_and_now(),
        policy in any_policy(),
    ) {
        let unjittered = Policy { jitter: Duration::ZERO, ..policy.clone() };
        let due = next_due(Some(&facts), &unjittered, now, 0).unwrap();
        match standing(Some(&facts), &policy, now) {
            Standing::Overdue { by } => {
                let deadline = due.deadline.expect("overdue needs a deadline");
                prop_assert!(now > deadline);
                prop_assert_eq!(by, duration_between(deadline, now));
            }
            Standing::Due => prop_assert_eq!(due.at, now),
            Standing::Ok { due_in } => prop_assert_eq!(due_in, duration_between(now, due.at)),
            Standing::Missing => prop_assert!(false, "facts were given"),
        }
    }
}
