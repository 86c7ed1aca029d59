//! The periodic jobs across DST changes in two zones (Berlin, New York), and the sweep spans.
//!
//! tokio-cron-scheduler reads the clock itself, so its behaviour across a transition is tested
//! through its own job data (the offset it fixes when a job is built) and the rule its ticker
//! applies after each fire (`scheduler.rs`: the next tick is the schedule's next occurrence after
//! now, read at that fixed offset).

use std::str::FromStr;

use chrono::{FixedOffset, TimeZone, Timelike};
use chrono_tz::{America::New_York, Europe::Berlin, Tz};
use croner::Cron;

use super::*;
use crate::config::{CronSchedule, Policy};
use crate::policy::{next_due, SecretFacts};

fn time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// Both transitions of 2025 in each zone: (zone, spring forward, fall back), as UTC instants.
const TRANSITIONS: [(Tz, &str, &str); 2] = [
    (Berlin, "2025-03-30T01:00:00Z", "2025-10-26T01:00:00Z"),
    (New_York, "2025-03-09T07:00:00Z", "2025-11-02T06:00:00Z"),
];

/// The crate's ticker: each fire's successor is the next occurrence after the fire, read at
/// the offset fixed when the job was built. Fires in `[from, until)`.
fn crate_fires(
    expression: &str,
    offset_secs: i32,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let cron = Cron::from_str(expression).unwrap();
    let offset = FixedOffset::east_opt(offset_secs).unwrap();
    let mut fires = Vec::new();
    let mut t = from.with_timezone(&offset);
    loop {
        let next = cron.find_next_occurrence(&t, false).unwrap();
        if next.with_timezone(&Utc) >= until {
            return fires;
        }
        fires.push(next.with_timezone(&Utc));
        t = next;
    }
}

fn a_job(expression: &str, tz: Option<Tz>) -> tokio_cron_scheduler::Job {
    let run = |_, _| -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async {})
    };
    match tz {
        Some(tz) => Job::new_async_tz(expression, tz, run).unwrap(),
        None => Job::new_async(expression, run).unwrap(),
    }
}

#[test]
fn the_daemon_jobs_are_utc_and_fire_once_per_period_through_every_transition() {
    for (expression, _) in jobs(Duration::from_secs(600))
        .into_iter()
        .chain(jobs(Duration::from_secs(10)))
    {
        let mut job = a_job(expression, None);
        assert_eq!(
            job.job_data().unwrap().time_offset_seconds,
            0,
            "{expression}: built in UTC"
        );
        let cron = Cron::from_str(expression).unwrap();
        for (tz, spring, fall) in TRANSITIONS {
            for transition in [spring, fall] {
                let from = time(transition) - TimeDelta::hours(2);
                let until = time(transition) + TimeDelta::hours(2);
                let fires = crate_fires(expression, 0, from, until);
                // Neither twice nor never: evenly spaced through the change of the zone's clocks.
                let gaps: std::collections::BTreeSet<i64> = fires
                    .windows(2)
                    .map(|w| (w[1] - w[0]).num_seconds())
                    .collect();
                assert_eq!(
                    gaps.len(),
                    1,
                    "{expression} in {tz} at {transition}: {gaps:?}"
                );
                let expected = cron.find_next_occurrence(&from, false).unwrap();
                assert_eq!(fires[0], expected);
            }
        }
    }
}

#[test]
fn a_zone_job_in_the_crate_keeps_the_offset_it_was_built_with() {
    // The offset is fixed at build time, from the clock: the zone's offset now, whatever the
    // season of the fires to come (issue #107).
    for (tz, _, _) in TRANSITIONS {
        let mut job = a_job("0 30 2 * * *", Some(tz));
        let fixed = job.job_data().unwrap().time_offset_seconds;
        let now = Utc::now();
        let offset_now = tz.offset_from_utc_datetime(&now.naive_utc());
        use chrono::Offset;
        // The build may straddle nothing here: a transition is at night, and takes an hour.
        assert_eq!(fixed, offset_now.fix().local_minus_utc(), "{tz}");
    }
    // What follows for a daily 02:30 job built in winter in Berlin (+01:00): after the spring
    // change it fires at 03:30 local time, every day until the process restarts.
    let fires = crate_fires(
        "0 30 2 * * *",
        3600,
        time("2025-03-31T00:00:00Z"),
        time("2025-04-01T00:00:00Z"),
    );
    let local: Vec<String> = fires
        .iter()
        .map(|t| t.with_timezone(&Berlin).format("%H:%M").to_string())
        .collect();
    assert_eq!(local, vec!["03:30"], "the crate's shortfall, pinned");
}

/// The workaround for wall-clock schedules: `policy` computes each occurrence in the zone with
/// chrono-tz, again after every fire. Fires of `expression` in `tz` in `[from, until)`.
fn policy_fires(
    expression: &str,
    tz: Tz,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let policy = Policy {
        max_age: None,
        schedule: Some(CronSchedule {
            expression: expression.into(),
        }),
        timezone: tz,
        expiry_lead: Duration::ZERO,
        window: None,
        jitter: Duration::ZERO,
        grace: Duration::ZERO,
        destroy_old_version: false,
        credential_lifetime: None,
        expiring_warning: Duration::ZERO,
        ..Policy::default()
    };
    let mut fires = Vec::new();
    let mut last = from;
    loop {
        let facts = SecretFacts {
            created_time: last,
            expires_at: None,
        };
        let due = next_due(Some(&facts), &policy, last, 0).unwrap();
        if due.at >= until {
            return fires;
        }
        fires.push(due.at);
        last = due.at;
    }
}

#[test]
fn wall_clock_schedules_fire_once_a_day_at_the_right_local_time_across_dst_in_two_zones() {
    // (expression, local time on an ordinary day, local time on the spring day, on the fall day)
    let rows = [
        // 02:30 is skipped in spring: it runs when the clocks jump (03:00), once.
        ("30 2 * * *", "02:30", "03:00", "02:30"),
        // 01:30 repeats in New York's fall: once, in the first pass; Berlin repeats 02:00-03:00.
        ("30 1 * * *", "01:30", "01:30", "01:30"),
        ("0 12 * * *", "12:00", "12:00", "12:00"),
    ];
    for (tz, spring, fall) in TRANSITIONS {
        for (expression, ordinary, on_spring, on_fall) in rows {
            for (transition, on_day) in [(spring, on_spring), (fall, on_fall)] {
                let t = time(transition);
                let fires = policy_fires(
                    expression,
                    tz,
                    t - TimeDelta::days(3),
                    t + TimeDelta::days(3),
                );
                let mut per_date: std::collections::BTreeMap<chrono::NaiveDate, Vec<String>> =
                    Default::default();
                for f in &fires {
                    let local = f.with_timezone(&tz);
                    per_date
                        .entry(local.date_naive())
                        .or_default()
                        .push(format!("{:02}:{:02}", local.hour(), local.minute()));
                }
                let transition_date = t.with_timezone(&tz).date_naive();
                assert!(per_date.len() >= 5, "{expression} {tz}: {per_date:?}");
                for (date, times) in per_date {
                    let want = if date == transition_date {
                        on_day
                    } else {
                        ordinary
                    };
                    assert_eq!(
                        times,
                        vec![want.to_string()],
                        "{expression} in {tz} on {date}"
                    );
                }
            }
        }
    }
}

#[test]
fn each_sweep_plans_the_next_period_and_a_late_one_covers_the_gap() {
    let start = time("2025-03-01T12:00:00Z");
    let mut s = Sweeper::new(Duration::from_secs(600), start);
    let rows = [
        // (fired at, planned span)
        (
            "2025-03-01T12:00:00Z",
            Some(("2025-03-01T12:00:00Z", "2025-03-01T12:01:00Z")),
        ),
        ("2025-03-01T12:00:00Z", None),
        (
            "2025-03-01T12:01:00Z",
            Some(("2025-03-01T12:01:00Z", "2025-03-01T12:02:00Z")),
        ),
        // Five minutes of silence: the next sweep plans all of it.
        (
            "2025-03-01T12:07:00Z",
            Some(("2025-03-01T12:02:00Z", "2025-03-01T12:08:00Z")),
        ),
    ];
    for (at, want) in rows {
        assert_eq!(
            s.tick(time(at)),
            want.map(|(a, b)| (time(a), time(b))),
            "{at}"
        );
    }
    // Silent scheduler: the loop sweeps by itself once a quarter period (and a second) late.
    assert_eq!(s.overdue(time("2025-03-01T12:08:10Z")), None);
    assert_eq!(
        s.overdue(time("2025-03-01T12:08:17Z")),
        Some((time("2025-03-01T12:08:00Z"), time("2025-03-01T12:09:17Z")))
    );
}
