use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

use super::*;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("store-{i}/storefront")).collect()
}

fn group(members: &[&str]) -> Vec<String> {
    let mut m: Vec<String> = members.iter().map(|s| s.to_string()).collect();
    m.sort();
    m
}

/// Owner of each credential among `members`.
fn owners(credentials: &[String], members: &[String]) -> BTreeMap<String, String> {
    credentials
        .iter()
        .map(|c| (c.clone(), owner_of(c, members).unwrap().to_string()))
        .collect()
}

#[test]
fn member_names_are_path_safe_and_distinct() {
    let cases = [
        ("host-1", "host-1"),
        ("web_2.example.com", "web_2.example.com"),
        ("a b", "a%20b"),
        ("a/b", "a%2Fb"),
        ("a%2Fb", "a%252Fb"),
        ("", "%0"),
        (".", "%1"),
        ("..", "%2"),
    ];
    for (instance, want) in cases {
        assert_eq!(member_name(instance), want, "{instance:?}");
    }
}

#[test]
fn every_credential_has_one_owner_and_every_instance_computes_the_same() {
    let credentials = names(3000);
    let members = group(&["a", "b", "c"]);
    for c in &credentials {
        let claimed: Vec<&str> = ["a", "b", "c"]
            .into_iter()
            .filter(|me| owns(c, &members, me))
            .collect();
        assert_eq!(claimed.len(), 1, "{c}: {claimed:?}");
        assert_eq!(Some(claimed[0]), owner_of(c, &members));
    }
    // Deterministic: the same answer from a member list in another order.
    let reversed: Vec<String> = members.iter().rev().cloned().collect();
    assert_eq!(
        owners(&credentials, &members),
        owners(&credentials, &reversed)
    );
}

#[test]
fn the_weight_is_sha256_of_member_zero_credential() {
    // The first 8 bytes of sha256("a\0x"), big-endian: no per-process seed, so every instance
    // and every version computes the same owners.
    let digest = Sha256::digest(b"a\0x");
    let want = u64::from_be_bytes(digest[..8].try_into().unwrap());
    assert_eq!(weight("a", "x"), want);
}

#[test]
fn the_shares_are_even_and_a_join_moves_about_one_nth_only_to_the_newcomer() {
    let credentials = names(6000);
    // (members before, members after, share of credentials that may move: min, max)
    let cases: &[(&[&str], &[&str])] = &[
        (&["a"], &["a", "b"]),
        (&["a", "b"], &["a", "b", "c"]),
        (&["a", "b", "c"], &["a", "b", "c", "d"]),
        (&["h1", "h2", "h3", "h4"], &["h1", "h2", "h3", "h4", "h5"]),
    ];
    for (before, after) in cases {
        let (before, after) = (group(before), group(after));
        let newcomer: Vec<&String> = after.iter().filter(|m| !before.contains(m)).collect();
        let (old, new) = (owners(&credentials, &before), owners(&credentials, &after));
        let moved: Vec<&String> = credentials.iter().filter(|c| old[*c] != new[*c]).collect();
        for c in &moved {
            assert_eq!(&&new[*c], &newcomer[0], "{c} moved between old members");
        }
        let share = moved.len() as f64 / credentials.len() as f64;
        let ideal = 1.0 / after.len() as f64;
        assert!(
            (share - ideal).abs() < 0.03,
            "{before:?} -> {after:?}: {share:.3} moved, ideal {ideal:.3}"
        );
        // Each member's share is about 1/N.
        for (m, n) in shares(credentials.iter().map(String::as_str), &after) {
            let s = n as f64 / credentials.len() as f64;
            assert!((s - ideal).abs() < 0.03, "{m}: {s:.3}, ideal {ideal:.3}");
        }
    }
}

#[test]
fn a_leave_moves_only_the_credentials_of_the_member_that_left() {
    let credentials = names(6000);
    let cases: &[(&[&str], &str)] = &[
        (&["a", "b"], "a"),
        (&["a", "b", "c"], "b"),
        (&["a", "b", "c", "d", "e"], "e"),
    ];
    for (before, gone) in cases {
        let before = group(before);
        let after: Vec<String> = before.iter().filter(|m| *m != gone).cloned().collect();
        let (old, new) = (owners(&credentials, &before), owners(&credentials, &after));
        for c in &credentials {
            if old[c] != *gone {
                assert_eq!(
                    old[c], new[c],
                    "{c} moved, though {} is still there",
                    old[c]
                );
            } else {
                assert_ne!(new[c], *gone);
            }
        }
    }
}

#[test]
fn an_instance_alone_or_not_yet_in_the_list_still_counts_itself_in() {
    let cases: &[(&[&str], &str, usize)] = &[
        // (members seen, me, of 3000 credentials owned about)
        (&[], "a", 3000),
        (&["a"], "a", 3000),
        (&["b", "c"], "a", 1000),
        (&["a", "b", "c"], "a", 1000),
    ];
    let credentials = names(3000);
    for (members, me, about) in cases {
        let members = group(members);
        let n = owned(credentials.iter(), |c| c.as_str(), &members, me).len();
        assert!(
            n.abs_diff(*about) <= 100,
            "{members:?} as {me}: owns {n}, about {about} expected"
        );
        // Counting `me` in is the same as a member list with `me` added.
        let mut with_me = members.clone();
        if !with_me.iter().any(|m| m == me) {
            with_me.push(me.to_string());
        }
        for c in &credentials {
            assert_eq!(owns(c, &members, me), owner_of(c, &with_me) == Some(*me));
        }
    }
}

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
}

fn record(member: &str, ttl_s: u64) -> MemberRecord {
    MemberRecord {
        member: member.into(),
        owner: format!("{member}/boot/ns/1/2/3"),
        ttl_ms: ttl_s * 1000,
    }
}

#[test]
fn a_member_is_live_until_its_lease_ends_in_vaults_time() {
    // Vault's clock runs 100 s ahead of this host's: leases are compared in Vault's time.
    let skew = TimeDelta::seconds(100);
    let mut view = View::new("a");
    view.renewed(t(0), t(0) + skew);
    assert_eq!(
        view.listed(&["a".into(), "b".into(), "c".into()]),
        ["b", "c"]
    );
    view.read("b", Some((&record("b", 30), t(-10) + skew)), t(0));
    view.read("c", Some((&record("c", 30), t(-25) + skew)), t(0));
    // (local time, live members, records to read again)
    let cases: &[(i64, &[&str], &[&str])] = &[
        (0, &["a", "b", "c"], &[]),
        (4, &["a", "b", "c"], &[]),
        (5, &["a", "b"], &["c"]),
        (19, &["a", "b"], &["c"]),
        (20, &["a"], &["b", "c"]),
    ];
    for (at, live, again) in cases {
        assert_eq!(view.members(t(*at)), group(live), "at {at}");
        assert_eq!(view.to_read(t(*at)), group(again), "at {at}");
    }
    assert_eq!(view.next_end(), Some(t(5)));
    // c renewed (read again at 5: a version created at 3), b's record is gone.
    view.read("c", Some((&record("c", 30), t(3) + skew)), t(5));
    view.read("b", None, t(20));
    assert_eq!(view.members(t(20)), group(&["a", "c"]));
    assert_eq!(view.next_end(), Some(t(33)));
    // A LIST without c forgets it (it left and deleted its record).
    assert!(view.listed(&["a".into()]).is_empty());
    assert_eq!(view.members(t(20)), group(&["a"]));
    assert_eq!(view.next_end(), None);
}

#[test]
fn status_counts_the_members_whose_lease_has_not_ended() {
    let records = vec![
        ("b".to_string(), record("b", 30), t(-10)),
        ("a".to_string(), record("a", 30), t(-29)),
        ("c".to_string(), record("c", 30), t(-30)),
        ("d".to_string(), record("d", 60), t(-45)),
    ];
    assert_eq!(live_members(&records, t(0)), group(&["a", "b", "d"]));
    assert!(live_members(&records, t(100)).is_empty());
}

#[test]
fn the_record_of_this_instance_and_folders_are_never_read_as_others() {
    let mut view = View::new("a");
    assert_eq!(view.listed(&["a".into(), "sub/".into(), "b".into()]), ["b"]);
    view.read("a", Some((&record("a", 30), t(0))), t(0));
    assert_eq!(view.members(t(100)), group(&["a"]));
    // A record whose lease had ended when it was read (its member died without deleting it)
    // is read again one TTL later, not at every turn.
    view.read("b", Some((&record("b", 30), t(0))), t(100));
    assert_eq!(view.members(t(100)), group(&["a"]));
    assert!(view.to_read(t(129)).is_empty());
    assert_eq!(view.to_read(t(130)), ["b"]);
    // A read that failed is tried again later, not at every turn.
    view.postpone("b", t(140));
    assert!(view.to_read(t(139)).is_empty());
    assert_eq!(view.to_read(t(140)), ["b"]);
    assert_eq!(
        renew_every(std::time::Duration::from_secs(30)).as_secs(),
        15
    );
}
