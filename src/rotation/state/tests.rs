use super::*;
use chrono::TimeZone;

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
}

fn attempt(phase: Phase) -> Attempt {
    let mut a = begin(Start {
        id: "a1".into(),
        owner: "host-a",
        trigger: "manual",
        now: t(0),
        lease: Duration::from_secs(60),
        version: 3,
        current: Some(SecretFields::new().with("token", "old")),
        lifetime: Some(Duration::from_secs(3600)),
    });
    a.phase = phase;
    if phase != Phase::Minting {
        a.pending = Some(SecretFields::new().with("token", "new"));
    }
    if matches!(phase, Phase::Notified | Phase::RollingBack) {
        a.version_after = Some(4);
    }
    a
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        step: Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(8),
        },
        transient_budget: Duration::from_secs(60),
        attempts: Backoff {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(100),
        },
        failure_budget: 3,
    }
}

#[test]
fn next_step_from_every_recorded_state() {
    let mut notified = attempt(Phase::Notified);
    notified.revoke_after = Some(t(100));
    let mut retrying = attempt(Phase::Minted);
    retrying.retry = Some(Retry {
        tries: 1,
        since: t(0),
        at: t(30),
    });
    let cases: Vec<(Attempt, DateTime<Utc>, Step)> = vec![
        (attempt(Phase::Minting), t(1), Step::Mint),
        (attempt(Phase::Minted), t(1), Step::VerifyAndCommit),
        (notified.clone(), t(50), Step::WaitUntil(t(100))),
        (notified.clone(), t(100), Step::RevokeOld),
        (notified, t(500), Step::RevokeOld),
        (attempt(Phase::RollingBack), t(1), Step::RollBack),
        (retrying.clone(), t(10), Step::RetryAt(t(30))),
        (retrying, t(30), Step::VerifyAndCommit),
    ];
    for (a, now, expected) in cases {
        assert_eq!(next_step(&a, now), expected, "phase {:?} at {now}", a.phase);
    }
}

fn assisted() -> Attempt {
    begin_assisted(
        Start {
            id: "a1".into(),
            owner: "host-a",
            trigger: "max_age",
            now: t(0),
            lease: Duration::from_secs(60),
            version: 3,
            current: Some(SecretFields::new().with("token", "old")),
            lifetime: None,
        },
        Duration::from_secs(1000),
        Duration::from_secs(100),
    )
}

#[test]
fn next_step_of_the_assisted_phases() {
    let waiting = assisted(); // deadline t(1000), first reminder t(100)
    let mut overdue_seen = assisted();
    overdue_seen.needs_attention = true;
    let committed = awaiting_old_deletion(
        supplied(
            assisted(),
            SecretFields::new().with("token", "new"),
            "h",
            t(10),
            Duration::from_secs(60),
        ),
        4,
        true,
        t(20),
        t(500),
        "h",
        t(10),
        Duration::from_secs(60),
    );
    let cases: Vec<(&Attempt, DateTime<Utc>, Step)> = vec![
        (&waiting, t(1), Step::AwaitSupply(t(100))),
        (&waiting, t(100), Step::Remind),
        (&waiting, t(1000), Step::SupplyOverdue),
        // Needs attention already: only a supply moves it on; reminders go on.
        (&overdue_seen, t(2000), Step::Remind),
        (&committed, t(19), Step::WaitUntil(t(20))),
        (&committed, t(20), Step::CheckOld),
    ];
    for (a, now, expected) in cases {
        assert_eq!(next_step(a, now), expected, "phase {:?} at {now}", a.phase);
    }
    assert_eq!(waiting.phase, Phase::AwaitingSupply);
    assert_eq!(waiting.marks[0].phase, "awaiting_supply");
    assert_eq!(committed.phase, Phase::AwaitingOldDeletion);
    assert_eq!(committed.version_after, Some(4));
    assert!(committed.announced && committed.deadline.is_none());
    let mut r = StateRecord::new("c");
    r.attempt = Some(committed.clone());
    assert!(r.validate("c").is_ok());
}

#[test]
fn reminders_back_off_to_a_day_and_never_come_sooner_than_asked() {
    let b = reminder_backoff(Duration::from_secs(3600));
    let mut a = assisted();
    // (reminder sent at, next no sooner than, no later than)
    let cases = [
        (t(0), 7200, 7920),
        (t(0), 14_400, 15_840),
        (t(0), 28_800, 31_680),
        (t(0), 57_600, 63_360),
        (t(0), 86_400, 95_040),
        (t(0), 86_400, 95_040),
    ];
    for (i, (now, min, max)) in cases.into_iter().enumerate() {
        a = reminded(a, now, b, 0.5);
        let next = (a.next_check.unwrap() - now).num_seconds();
        assert!((min..=max).contains(&next), "reminder {i}: {next}");
        assert_eq!(a.checks as usize, i + 1);
    }
}

#[test]
fn the_old_credential_is_looked_at_with_backoff_and_the_lease_covers_the_wait() {
    let mut a = attempt(Phase::Notified);
    a.phase = Phase::AwaitingOldDeletion;
    // (looked at, unit, next in seconds)
    let cases = [
        (t(0), 0.0, 1),
        (t(1), 0.0, 2),
        (t(3), 0.0, 4),
        (t(7), 1.0, 16),
    ];
    for (now, unit, secs) in cases {
        a = old_still_alive(a, now, "alive", "h", Duration::from_secs(60), unit);
        assert_eq!(
            a.next_check,
            Some(now + chrono::Duration::seconds(secs)),
            "at {now}"
        );
        assert_eq!(
            a.lease_expires_at,
            a.next_check.unwrap() + chrono::Duration::seconds(60)
        );
    }
}

#[test]
fn pause_resume_and_drift_live_in_the_record() {
    let r = pause(StateRecord::new("c"), "ops", t(5));
    let again = pause(r.clone(), "other", t(9));
    assert_eq!(again.paused, r.paused, "a second pause keeps the first");
    let mut r = resume(r);
    assert!(r.paused.is_none());
    r.drift = Some(Drift {
        since: t(1),
        version: 3,
        reason: "401".into(),
    });
    let json = serde_json::to_value(&r).unwrap();
    let back: StateRecord = serde_json::from_value(json).unwrap();
    assert_eq!(back.drift, r.drift);
    // A rotation clears the drift.
    let r = finish(
        r,
        attempt(Phase::Minted),
        Outcome::Rotated,
        None,
        t(2),
        &policy(),
        0.0,
    );
    assert!(r.drift.is_none());
    // A schema 3 record (no pause, no drift, no assisted fields) is read.
    let v = serde_json::json!({"schema": 3, "credential": "c", "attempt": null});
    let old: StateRecord = serde_json::from_value(v).unwrap();
    assert!(old.validate("c").is_ok() && old.paused.is_none() && old.drift.is_none());
}

#[test]
fn only_the_lease_holder_acts_until_the_lease_expires_or_dies() {
    let a = attempt(Phase::Minted); // lease until t(60), owner host-a
    let cases = [
        ("host-a", t(10), false, true),
        ("host-b", t(10), false, false),
        ("host-b", t(59), false, false),
        ("host-b", t(10), true, true),
        ("host-b", t(60), false, true),
        ("host-a", t(600), false, true),
    ];
    for (me, now, holder_dead, expected) in cases {
        assert_eq!(
            may_act(&a, me, now, holder_dead),
            expected,
            "{me} at {now}, holder dead: {holder_dead}"
        );
    }
}

#[test]
fn an_irreversible_step_needs_the_lease_to_outlast_it() {
    let a = attempt(Phase::Notified); // lease until t(60)
    let step = Duration::from_secs(20);
    let cases = [(t(0), true), (t(39), true), (t(40), false), (t(70), false)];
    for (now, expected) in cases {
        assert_eq!(lease_covers(&a, now, step), expected, "at {now}");
    }
}

#[test]
fn commit_check_table() {
    let cases = [
        (3, 3, false, CommitCheck::Write),
        (0, 0, false, CommitCheck::Write),
        (3, 4, true, CommitCheck::AlreadyCommitted(4)),
        (3, 4, false, CommitCheck::Conflict(4)),
        (3, 5, false, CommitCheck::Conflict(5)),
        // A current version below the one read means the secret was deleted and re-created.
        (3, 1, true, CommitCheck::Conflict(1)),
    ];
    for (before, current, ours, expected) in cases {
        assert_eq!(
            commit_check(before, current, ours),
            expected,
            "{before} {current} {ours}"
        );
    }
}

#[test]
fn begin_records_the_old_credential_and_planned_expiry() {
    let a = attempt(Phase::Minting);
    assert_eq!(a.version_before, 3);
    assert!(a.old.is_some());
    assert_eq!(a.planned_expires_at, Some(t(3600)));
    assert_eq!(a.lease_expires_at, t(60));
    // A soft-deleted latest version: nothing to read, but CAS compares against its number.
    let deleted = begin(Start {
        id: "a2".into(),
        owner: "h",
        trigger: "missing",
        now: t(0),
        lease: Duration::from_secs(60),
        version: 7,
        current: None,
        lifetime: None,
    });
    assert_eq!(deleted.version_before, 7);
    assert!(deleted.old.is_none() && deleted.planned_expires_at.is_none());
}

#[test]
fn transitions_carry_the_attempt_forward() {
    let lease = Duration::from_secs(60);
    let a = note_orphan(attempt(Phase::Minting), "resumed in minting", t(5));
    assert_eq!(a.orphans[0].expires_at, Some(t(3600)));
    let a = minted(
        a,
        SecretFields::new().with("token", "new"),
        None,
        "host-b",
        t(10),
        lease,
    );
    assert_eq!(a.phase, Phase::Minted);
    assert_eq!(a.owner, "host-b");
    assert_eq!(a.pending_expires_at, Some(t(3600)));
    let a = committed(a, 4, "host-b", t(20), Duration::from_secs(30), lease);
    assert_eq!(a.phase, Phase::Notified);
    assert_eq!(a.revoke_after, Some(t(50)));
    assert_eq!(a.lease_expires_at, t(110), "lease covers the grace period");
    let r = finish(
        StateRecord::new("c"),
        a,
        Outcome::Rotated,
        None,
        t(60),
        &policy(),
        0.5,
    );
    assert!(r.attempt.is_none());
    let h = &r.history[0];
    assert_eq!((h.version_before, h.version_after), (3, Some(4)));
    let phases: Vec<&str> = h.marks.iter().map(|m| m.phase.as_str()).collect();
    assert_eq!(
        phases,
        ["minting", "minted", "committed", "notified", "rotated"]
    );
    assert_eq!(h.orphans.len(), 1);
}

#[test]
fn backoff_doubles_is_capped_and_keeps_half_of_the_delay() {
    let b = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(8),
    };
    // (failures, unit, expected ms)
    let cases = [
        (1, 0.0, 500),
        (1, 0.999, 999),
        (2, 0.0, 1000),
        (3, 0.5, 3000),
        (4, 0.0, 4000),
        (5, 0.0, 4000),
        (500, 1.0, 8000),
        (0, 0.0, 500),
    ];
    for (n, unit, ms) in cases {
        assert_eq!(
            b.delay(n, unit).as_millis(),
            ms,
            "{n} failures, unit {unit}"
        );
    }
}

#[test]
fn transient_failures_back_off_then_ask_for_an_operator_when_the_budget_is_spent() {
    let p = policy();
    let lease = Duration::from_secs(60);
    let mut a = attempt(Phase::Minted);
    // (now, expected retry at, expected needs attention)
    let cases = [
        (t(0), Some(t(1)), false),
        (t(1), Some(t(3)), false),
        (t(3), Some(t(7)), false),
        (t(59), Some(t(67)), false),
        (t(60), None, true),
    ];
    for (now, at, attention) in cases {
        a = transient(
            a,
            "provider unavailable",
            None,
            &p,
            1.0,
            "host-a",
            now,
            lease,
        );
        assert_eq!(a.retry.as_ref().map(|r| r.at), at, "at {now}");
        assert_eq!(a.needs_attention, attention, "at {now}");
        if let Some(at) = at {
            assert_eq!(a.lease_expires_at, at + lease, "the lease covers the wait");
        }
    }
    assert!(a.mint_settled, "a recorded failure settles the mint");
    assert!(a.last_error.unwrap().contains("failing for 1m"));
}

#[test]
fn failed_attempts_back_off_and_park_the_credential_after_the_budget() {
    let p = policy();
    let mut r = StateRecord::new("c");
    // (outcome, failures after, retry_at, parked)
    let cases = [
        (Outcome::Failed, 1, Some(t(5)), false),
        (Outcome::Aborted, 1, Some(t(5)), false),
        (Outcome::RolledBack, 2, Some(t(10)), false),
        (Outcome::RolledBack, 3, Some(t(20)), true),
        (Outcome::Rotated, 0, None, true),
    ];
    for (outcome, failures, retry_at, parked) in cases {
        r = finish(r, attempt(Phase::Minted), outcome, None, t(0), &p, 0.0);
        assert_eq!(r.failures, failures, "{outcome:?}");
        assert_eq!(r.retry_at, retry_at, "{outcome:?}");
        assert_eq!(r.parked.is_some(), parked, "{outcome:?}");
    }
    let parked = StateRecord {
        parked: Some(Parked {
            since: t(0),
            reason: "x".into(),
        }),
        ..StateRecord::new("c")
    };
    let backing_off = StateRecord {
        retry_at: Some(t(100)),
        ..StateRecord::new("c")
    };
    let cases = [
        (&parked, t(1000), false, Err("parked")),
        (&parked, t(1000), true, Ok(())),
        (&backing_off, t(99), false, Err("backing off")),
        (&backing_off, t(100), false, Ok(())),
        (&backing_off, t(99), true, Ok(())),
    ];
    for (record, now, manual, expected) in cases {
        let got = may_start(record, now, manual).map_err(|b| match b {
            Blocked::Parked(_) => "parked",
            Blocked::BackingOff(_) => "backing off",
        });
        assert_eq!(got, expected, "at {now}, manual {manual}");
    }
    let r = unpark(parked);
    assert!(r.parked.is_none() && r.failures == 0 && r.retry_at.is_none());
}

#[test]
fn an_attempt_stops_minting_after_its_orphan_budget() {
    let mut a = attempt(Phase::Minting);
    for i in 0..MAX_ORPHANS {
        assert!(!orphans_spent(&a), "after {i} orphans");
        a = note_orphan(a, "lost", t(i as i64));
    }
    assert!(orphans_spent(&a));
}

#[test]
fn the_record_stays_within_its_bounds_however_long_the_history() {
    let p = policy();
    let long_error = "e".repeat(5000);
    let mut r = StateRecord::new("c");
    for i in 0..300 {
        let mut a = attempt(Phase::Minted);
        a.id = format!("a{i}");
        for j in 0..40 {
            a = transient(
                a,
                &long_error,
                Some(Duration::from_secs(2)),
                &p,
                0.5,
                "h",
                t(j),
                Duration::from_secs(60),
            );
            if !orphans_spent(&a) {
                a = note_orphan(a, &long_error, t(j));
            }
            mark(&mut a, "minted", t(j));
        }
        let outcome = if i % 2 == 0 {
            Outcome::Rotated
        } else {
            Outcome::RolledBack
        };
        r = finish(r, a, outcome, Some(long_error.clone()), t(i), &p, 0.5);
        let mut with_attempt = r.clone();
        let mut a = attempt(Phase::Notified);
        a.last_error = Some(long_error.clone());
        with_attempt.attempt = Some(a);
        let (bounded_record, v) = bounded(with_attempt).expect("fits");
        let (strings, bytes) = json_size(&v);
        assert!(
            strings + 3 <= MAX_RECORD_STRINGS,
            "{strings} strings after {i}"
        );
        assert!(bytes <= MAX_RECORD_BYTES, "{bytes} bytes after {i}");
        assert!(!bounded_record.history.is_empty(), "keeps recent attempts");
        r = bounded(r).unwrap().0;
    }
    assert!(r.history.len() <= HISTORY_LIMIT);
    assert_eq!(r.history.last().unwrap().id, "a299", "the newest stay");
}

#[test]
fn a_record_too_large_to_write_is_refused() {
    let mut r = StateRecord::new("c");
    let mut a = attempt(Phase::Minted);
    let mut huge = SecretFields::new();
    for i in 0..500 {
        huge.insert(&format!("field{i}"), "v");
    }
    a.old = Some(huge);
    r.attempt = Some(a);
    assert!(bounded(r).is_err());
}

#[test]
fn validate_names_the_field_a_record_lacks() {
    let with = |f: &dyn Fn(&mut StateRecord)| {
        let mut r = StateRecord::new("c");
        r.attempt = Some(attempt(Phase::Minted));
        f(&mut r);
        r.validate("c").err().unwrap_or_default()
    };
    let cases: Vec<(&str, String)> = vec![
        ("", with(&|_| {})),
        ("field schema: 9", with(&|r| r.schema = 9)),
        ("field credential", with(&|r| r.credential = "other".into())),
        (
            "attempt.pending is null, but phase minted",
            with(&|r| r.attempt.as_mut().unwrap().pending = None),
        ),
        (
            "attempt.version_after is null, but phase notified",
            with(&|r| {
                let a = r.attempt.as_mut().unwrap();
                a.phase = Phase::Notified;
            }),
        ),
        (
            "attempt.old is null, but phase rolling_back",
            with(&|r| {
                let a = r.attempt.as_mut().unwrap();
                a.phase = Phase::RollingBack;
                a.version_after = Some(4);
                a.old = None;
            }),
        ),
        (
            "attempt.version_after is null, but phase awaiting_old_deletion",
            with(&|r| {
                let a = r.attempt.as_mut().unwrap();
                a.phase = Phase::AwaitingOldDeletion;
            }),
        ),
    ];
    for (expected, got) in cases {
        if expected.is_empty() {
            assert_eq!(got, "");
        } else {
            assert!(got.contains(expected), "{got:?} should say {expected:?}");
        }
    }
}

#[test]
fn schema_1_records_are_read() {
    let v = serde_json::json!({
        "schema": 1, "credential": "c", "attempt": null,
        "history": [{
            "id": "x", "trigger": "manual", "started_at": t(0), "finished_at": t(1),
            "outcome": "rotated", "version_before": 1, "version_after": 2, "marks": [],
            "orphans": [], "error": null, "expires_at": null
        }]
    });
    let r: StateRecord = serde_json::from_value(v).unwrap();
    assert!(r.validate("c").is_ok());
    assert_eq!(r.history.len(), 1);
    assert_eq!((r.failures, r.parked.is_none()), (0, true));
}

#[test]
fn history_is_written_as_one_compressed_text_and_read_from_a_list_too() {
    let mut r = StateRecord::new("c");
    for _ in 0..HISTORY_LIMIT {
        r = finish(
            r,
            attempt(Phase::Minted),
            Outcome::Rotated,
            None,
            t(2),
            &RetryPolicy::default(),
            1.0,
        );
    }
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["history"].is_string(), "{json}");
    let (strings, bytes) = json_size(&json);
    let list = serde_json::to_string(&r.history).unwrap().len();
    assert!(strings < 20, "{strings} strings: {json}");
    assert!(bytes * 3 < list, "{bytes} bytes against {list} as a list");
    let back: StateRecord = serde_json::from_value(json).unwrap();
    assert_eq!(back.history.len(), HISTORY_LIMIT);
    assert_eq!(back.history[0].id, r.history[0].id);
    // Schema 4 kept it as a list.
    let mut old = serde_json::to_value(&r).unwrap();
    old["schema"] = serde_json::json!(4);
    old["history"] = serde_json::to_value(&r.history).unwrap();
    let back: StateRecord = serde_json::from_value(old.clone()).unwrap();
    assert_eq!(back.history.len(), HISTORY_LIMIT);
    assert!(back.validate("c").is_ok());
    // A plain JSON text is read too.
    old["history"] = serde_json::json!(serde_json::to_string(&r.history).unwrap());
    let back: StateRecord = serde_json::from_value(old.clone()).unwrap();
    assert_eq!(back.history.len(), HISTORY_LIMIT);
    // A text that is neither is an error naming the field.
    old["history"] = serde_json::json!("not history");
    let e = serde_json::from_value::<StateRecord>(old).unwrap_err();
    assert!(e.to_string().contains("history"), "{e}");
}

#[test]
fn record_round_trips_and_keeps_secrets_out_of_debug() {
    let mut a = attempt(Phase::Minted);
    a.pending = Some(SecretFields::new().with("token", "very-secret-new"));
    let mut r = StateRecord::new("c");
    r.attempt = Some(a);
    let json = serde_json::to_value(&r).unwrap();
    let back: StateRecord = serde_json::from_value(json).unwrap();
    let pending = back.attempt.as_ref().unwrap().pending.as_ref().unwrap();
    assert_eq!(pending.expose("token"), Some("very-secret-new"));
    assert!(!format!("{back:?}").contains("very-secret"));
}
