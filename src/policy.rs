//! When is a credential due? Pure functions of metadata, policy and `now`.
//!
//! Nothing here reads a clock, draws a random number or does IO: the caller passes the current
//! secret's facts (from its KV v2 metadata), the credential's [`Policy`], `now`, and a jitter seed
//! derived from the credential's name and version (so a restart computes the same plan).
//!
//! # Scheduling rules
//!
//! - **Missing.** A secret that does not exist yet is due now (reason [`DueReason::Missing`]).
//!   Neither jitter nor the window holds it back: nobody can be relying on a secret that does not
//!   exist, and every minute without it is an outage for its dependents.
//! - **Max age.** Due at `created_time + max_age`. The age is elapsed time, not wall-clock time: a
//!   one-day max age across a DST change is 24 hours.
//! - **Expiry.** When the provider's expiry is known, due at `expires_at - expiry_lead`, but never
//!   before `created_time` (a credential that lives shorter than its lead is due at once).
//! - **Schedule.** Due at the first cron occurrence strictly after `created_time`, evaluated in
//!   `policy.timezone`, so a secret rotated at an occurrence is not due again until the next one.
//!   DST follows croner: a fixed-time job (one second, minute and hour, like `30 2 * * *`) whose
//!   time is skipped by a spring-forward gap runs when the clocks jump, and one whose time repeats
//!   in a fall-back hour runs once, in the first pass. Other patterns (`*/15 * * * *`) skip the
//!   wall-clock times of a gap and match each wall-clock time of a repeated hour once: in the
//!   first pass, or in the second pass when `created_time` is already past the first.
//! - **Earliest wins.** The earliest of these is the due time and gives the reason. On a tie the
//!   order is expiry, max age, schedule: the rules with a hard deadline are the better reason to
//!   report.
//! - **Jitter.** A deterministic offset in `[0, jitter)`, derived from the seed
//!   ([`jitter_offset`]), spreads credentials out. The same seed always gives the same offset, so
//!   a restart does not move a plan. The rules are compared before jitter (jitter never changes
//!   the reason), and the winning reason decides the direction:
//!   - max age and expiry: the offset is *subtracted* from the due time, but never before
//!     `created_time`. These rules have a deadline, and the deadline is a promise: a credential
//!     is rotated early by up to `jitter`, never late. Adding the offset would start every such
//!     rotation after the deadline, so `status` would report it overdue before it even began.
//!   - schedule: the offset is *added*. An occurrence is a start time, not a deadline, so
//!     starting a little late is fine; but never past the deadline of max age or expiry, when
//!     one applies (it is then due at that deadline).
//!   - missing: no jitter (see above).
//! - **Window.** Rotations start only while the daily window `start..end` (in `policy.timezone`,
//!   `end` exclusive; `end < start` wraps past midnight; `start == end` is the whole day) is open.
//!   A due time outside it moves to the next window opening. The window opens once per local date,
//!   at `start`; if `start` falls in a fall-back hour, at its first pass; if `start` falls in a
//!   spring-forward gap, at the instant the clocks jump, provided that instant is still inside the
//!   window (otherwise the window does not open that day).
//! - **Never in the past.** [`Due::at`] is never earlier than `now`: a credential whose due time
//!   has passed is due now if the window is open now. **Missed windows:** if the window is closed
//!   now (the daemon was down, or busy, through the whole window), the rotation waits for the next
//!   window opening; it never starts outside the window. Its [`Due::deadline`] still says when it
//!   became overdue, and [`standing`] reports it.
//! - **Deadline.** `created_time + max_age` or `expires_at`, whichever is earlier; none when neither
//!   rule applies. A schedule has no deadline: a missed occurrence is late, not overdue.
//!
//! # Standing (for `status`)
//!
//! [`Standing::Missing`] without a secret; [`Standing::Overdue`] when `now` is past the deadline;
//! [`Standing::Due`] when the rotation may start now; otherwise [`Standing::Ok`] with the time
//! until it may. Standing leaves jitter out: a credential is due as soon as its rule fires and its
//! window is open, whatever small delay the planner adds to spread load.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::errors::CronError;
use croner::{Cron, JobType};

use crate::config::{CronSchedule, Policy, Window};

/// What Vault's KV v2 metadata (and the provider, where it says) tell about the current secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretFacts {
    /// `created_time` of the current KV v2 version.
    pub created_time: DateTime<Utc>,
    /// When the provider will stop accepting the credential, if known.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Which rule made a credential due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DueReason {
    MaxAge,
    Schedule,
    Expiry,
    Missing,
}

/// The plan for a credential's next rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// Earliest time a rotation may start, after jitter and window; never before `now`.
    pub at: DateTime<Utc>,
    pub reason: DueReason,
    /// When the credential becomes overdue: `created_time + max_age` or `expires_at`, whichever is
    /// earlier. `None` when no rule with a deadline applies.
    pub deadline: Option<DateTime<Utc>>,
}

/// Where a credential stands now, for `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Not due yet; a rotation may start in `due_in`.
    Ok { due_in: Duration },
    /// A rotation may start now.
    Due,
    /// Past its deadline by `by` (whether or not its window is open).
    Overdue { by: Duration },
    /// The secret does not exist.
    Missing,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("schedule {expression:?} is not a valid cron expression: {source}")]
    InvalidSchedule {
        expression: String,
        #[source]
        source: CronError,
    },
    #[error("schedule {expression:?} has no occurrence after {after}")]
    NoOccurrence {
        expression: String,
        after: DateTime<Utc>,
    },
    /// No max age, no schedule and no known expiry: nothing will ever make the credential due.
    #[error("no rule makes this credential due: no max_age, no schedule and no known expiry")]
    NoRule,
}

/// When the credential's next rotation may start, and why.
///
/// `jitter_seed` should be stable for a given credential version (for example a hash of the
/// credential name and the KV version), so that the plan survives a restart.
pub fn next_due(
    facts: Option<&SecretFacts>,
    policy: &Policy,
    now: DateTime<Utc>,
    jitter_seed: u64,
) -> Result<Due, PolicyError> {
    let Some(facts) = facts else {
        return Ok(Due {
            at: now,
            reason: DueReason::Missing,
            deadline: None,
        });
    };
    let schedule_at = match &policy.schedule {
        Some(schedule) => Some(first_occurrence_after(
            schedule,
            policy.timezone,
            facts.created_time,
        )?),
        None => None,
    };
    let (due, reason) = earliest_rule(facts, policy, schedule_at).ok_or(PolicyError::NoRule)?;
    let deadline = deadline(facts, policy);
    let offset = jitter_offset(policy.jitter, jitter_seed);
    let jittered = match reason {
        // A deadline is a promise: spread over the span before it, never past it.
        DueReason::MaxAge | DueReason::Expiry => earlier_by(due, offset).max(facts.created_time),
        // An occurrence is a start time: late is fine, but not past another rule's deadline.
        DueReason::Schedule => {
            let later = later_by(due, offset);
            deadline.map_or(later, |deadline| later.min(deadline.max(due)))
        }
        DueReason::Missing => due,
    };
    Ok(Due {
        at: start_time(jittered, policy, now),
        reason,
        deadline,
    })
}

/// Where the credential stands at `now`, for `status`. Jitter is left out (see the module docs).
///
/// A schedule that cannot be evaluated is left out here as well: [`next_due`] reports it as an
/// error. A credential that no rule will ever make due stands `Ok` with `Duration::MAX`.
pub fn standing(facts: Option<&SecretFacts>, policy: &Policy, now: DateTime<Utc>) -> Standing {
    let Some(facts) = facts else {
        return Standing::Missing;
    };
    if let Some(deadline) = deadline(facts, policy) {
        if now > deadline {
            return Standing::Overdue {
                by: duration_between(deadline, now),
            };
        }
    }
    let schedule_at = policy.schedule.as_ref().and_then(|schedule| {
        first_occurrence_after(schedule, policy.timezone, facts.created_time).ok()
    });
    let Some((due, _)) = earliest_rule(facts, policy, schedule_at) else {
        return Standing::Ok {
            due_in: Duration::MAX,
        };
    };
    let at = start_time(due, policy, now);
    if at <= now {
        Standing::Due
    } else {
        Standing::Ok {
            due_in: duration_between(now, at),
        }
    }
}

/// The deterministic jitter for `seed`: an offset in `[0, jitter)` at millisecond resolution
/// (zero when `jitter` is under a millisecond).
///
/// The seed is mixed first (splitmix64) because seeds of neighbouring versions or similar names
/// may differ in a few low bits only, and a plain `seed % jitter` would bunch them together.
pub fn jitter_offset(jitter: Duration, seed: u64) -> Duration {
    let span_ms = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX);
    if span_ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(splitmix64(seed) % span_ms)
}

/// Whether rotations may start at `t` under `window`, read on the wall clock of `tz`.
pub fn window_is_open(window: &Window, tz: Tz, t: DateTime<Utc>) -> bool {
    let local = t.with_timezone(&tz).time();
    if window.start < window.end {
        window.start <= local && local < window.end
    } else if window.start > window.end {
        // Wraps past midnight: open from `start` to the end of the day, and from midnight to `end`.
        local >= window.start || local < window.end
    } else {
        // A window of zero length would block rotations for ever; read it as the whole day.
        true
    }
}

/// One step of the splitmix64 generator (Steele, Lea, Flood 2014): a fixed, well-mixing function
/// of the seed, so the same seed gives the same jitter in every release.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The earliest rule that fires, before jitter and window. `schedule_at` is the schedule's due
/// time, already evaluated (it is the only rule that can fail).
fn earliest_rule(
    facts: &SecretFacts,
    policy: &Policy,
    schedule_at: Option<DateTime<Utc>>,
) -> Option<(DateTime<Utc>, DueReason)> {
    let expiry = facts.expires_at.map(|expires_at| {
        let due = earlier_by(expires_at, policy.expiry_lead).max(facts.created_time);
        (due, DueReason::Expiry)
    });
    let max_age = policy
        .max_age
        .map(|max_age| (later_by(facts.created_time, max_age), DueReason::MaxAge));
    let schedule = schedule_at.map(|at| (at, DueReason::Schedule));
    // `min_by_key` keeps the first of equal elements, so this order is the tie-break order.
    [expiry, max_age, schedule]
        .into_iter()
        .flatten()
        .min_by_key(|(at, _)| *at)
}

/// When the credential becomes overdue: the earlier of `created_time + max_age` and `expires_at`.
fn deadline(facts: &SecretFacts, policy: &Policy) -> Option<DateTime<Utc>> {
    let by_age = policy
        .max_age
        .map(|max_age| later_by(facts.created_time, max_age));
    match (by_age, facts.expires_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The first instant at or after both `due` and `now` at which the window is open.
///
/// Taking `now` into account first is what makes a missed window wait for the next opening
/// instead of starting a rotation outside the window.
fn start_time(due: DateTime<Utc>, policy: &Policy, now: DateTime<Utc>) -> DateTime<Utc> {
    let earliest = due.max(now);
    match &policy.window {
        Some(window) => next_window_open(window, policy.timezone, earliest),
        None => earliest,
    }
}

/// `t` if the window is open at `t`, else the next window opening after `t`.
fn next_window_open(window: &Window, tz: Tz, t: DateTime<Utc>) -> DateTime<Utc> {
    if window_is_open(window, tz, t) {
        return t;
    }
    // The window opens once per local date, at `start`. Walk forward a date at a time: the first
    // opening after `t` that really opens the window is the answer. Usually that is today's or
    // tomorrow's; a window swallowed whole by a spring-forward gap, or a date a zone skipped, costs
    // one more step.
    let mut date = t.with_timezone(&tz).date_naive();
    loop {
        if let Some(opening) = first_instant_at_or_after(tz, date.and_time(window.start)) {
            if opening > t && window_is_open(window, tz, opening) {
                return opening;
            }
        }
        match date.succ_opt() {
            Some(next) => date = next,
            // The end of chrono's calendar, hundreds of millennia away: nothing later exists.
            None => return t,
        }
    }
}

/// The first instant whose wall-clock time in `tz` is `local`, or, if `local` is skipped by a
/// spring-forward gap, the instant the clocks jump (the first wall-clock time after it).
fn first_instant_at_or_after(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        // A repeated (fall-back) time: its first pass comes first.
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        LocalResult::None => {
            // Gaps start and end on whole minutes, so stepping minute by minute from the start of
            // `local`'s minute finds the end of the gap exactly. A day is the longest gap any zone
            // has had (Pacific/Apia skipped 2011-12-30).
            let mut probe = local.with_second(0)?.with_nanosecond(0)?;
            for _ in 0..(24 * 60) {
                probe = probe.checked_add_signed(TimeDelta::minutes(1))?;
                if let Some(t) = tz.from_local_datetime(&probe).earliest() {
                    return Some(t.with_timezone(&Utc));
                }
            }
            None
        }
    }
}

/// The first occurrence of `schedule` in `tz` strictly after `created`.
fn first_occurrence_after(
    schedule: &CronSchedule,
    tz: Tz,
    created: DateTime<Utc>,
) -> Result<DateTime<Utc>, PolicyError> {
    let cron =
        Cron::from_str(&schedule.expression).map_err(|source| PolicyError::InvalidSchedule {
            expression: schedule.expression.clone(),
            source,
        })?;
    let no_occurrence = || PolicyError::NoOccurrence {
        expression: schedule.expression.clone(),
        after: created,
    };
    // croner works in whole seconds and searches from the next whole second. Starting from the
    // whole second at or before `created` keeps a sub-second `created_time` from hiding an
    // occurrence in the following second.
    let whole_second = created.with_nanosecond(0).unwrap_or(created);
    let mut from = whole_second.with_timezone(&tz);
    // croner names a repeated (fall-back) wall-clock time by its first instant. When `created` lies
    // in the second pass of that hour, that first instant is before `created`: an interval job
    // then runs in the second pass too, a fixed-time job (once a day) waits for its next day. Each
    // turn moves the search past one such occurrence; a handful always suffices.
    for _ in 0..16 {
        let occurrence = cron
            .find_next_occurrence(&from, false)
            .map_err(|_| no_occurrence())?;
        let occurrence_utc = occurrence.with_timezone(&Utc);
        if !is_real_occurrence(&cron, &occurrence) {
            from = occurrence;
            continue;
        }
        if occurrence_utc > created {
            return Ok(occurrence_utc);
        }
        if cron.determine_job_type() == JobType::IntervalWildcard {
            let second_pass = tz.from_local_datetime(&occurrence.naive_local()).latest();
            if let Some(second_pass) = second_pass.map(|t| t.with_timezone(&Utc)) {
                if second_pass > created {
                    return Ok(second_pass);
                }
            }
        }
        from = occurrence;
    }
    Err(no_occurrence())
}

/// Whether croner's `occurrence` is one: the pattern matches its wall-clock time, or a time the
/// spring-forward gap just before it skipped. croner 3.0.1 also answers the instant the clocks
/// jump for a pattern whose time is not in the gap (`30 1 * * *` searched from 01:30 on the
/// day Berlin changes gives 03:00 the same day: a second run).
fn is_real_occurrence(cron: &Cron, occurrence: &DateTime<Tz>) -> bool {
    // Field by field on the wall-clock reading (a skipped time has no instant in the zone).
    let matches = |local: NaiveDateTime| {
        cron.is_time_matching(&Utc.from_utc_datetime(&local))
            .unwrap_or(false)
    };
    let local = occurrence.naive_local();
    if matches(local) {
        return true;
    }
    let tz = occurrence.timezone();
    let mut probe = local;
    // Back through the gap, a minute at a time (gaps are whole minutes, at most a day).
    for _ in 0..(24 * 60) {
        let Some(earlier) = probe.checked_sub_signed(TimeDelta::minutes(1)) else {
            return false;
        };
        probe = earlier;
        if !matches!(tz.from_local_datetime(&probe), LocalResult::None) {
            return false;
        }
        if matches(probe) {
            return true;
        }
    }
    false
}

/// `t + d`, saturating at the end of time (config validation keeps durations far from it).
fn later_by(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `t - d`, saturating at the beginning of time.
fn earlier_by(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `to - from` as a std `Duration`; zero if `to` is earlier.
fn duration_between(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests;
