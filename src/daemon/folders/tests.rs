use super::*;

fn kv(mount: &str, path: &str) -> KvPath {
    KvPath {
        mount: mount.into(),
        path: path.into(),
    }
}

fn folder(mount: &str, path: &str) -> Folder {
    Folder {
        mount: mount.into(),
        path: path.into(),
    }
}

#[test]
fn a_secret_s_folder_is_its_mount_and_the_path_before_its_last_segment() {
    let cases = [
        (("secret", "idle/idle-1"), ("secret", "idle"), "idle-1"),
        (("secret", "a/b/c"), ("secret", "a/b"), "c"),
        (("secret", "top"), ("secret", ""), "top"),
        (("kv/team", "x/y"), ("kv/team", "x"), "y"),
    ];
    for ((mount, path), (fm, fp), key) in cases {
        let secret = kv(mount, path);
        let (f, k) = Folder::of(&secret);
        assert_eq!((f, k), (folder(fm, fp), key), "{mount} {path}");
    }
}

#[test]
fn only_folders_holding_two_or_more_secrets_are_listed_as_one() {
    type Secrets<'a> = &'a [(&'a str, &'a str)];
    type Expected<'a> = &'a [(&'a str, &'a str, usize)];
    let cases: &[(&str, Secrets, Expected)] = &[
        ("none", &[], &[]),
        ("one secret", &[("secret", "a/x")], &[]),
        (
            "two in a folder",
            &[("secret", "a/x"), ("secret", "a/y")],
            &[("secret", "a", 2)],
        ),
        (
            "one each in two folders",
            &[("secret", "a/x"), ("secret", "b/x")],
            &[],
        ),
        (
            "a sub-folder is another folder",
            &[("secret", "a/x"), ("secret", "a/b/x"), ("secret", "a/b/y")],
            &[("secret", "a/b", 2)],
        ),
        (
            "the same path on two mounts",
            &[("secret", "a/x"), ("other", "a/y"), ("secret", "a/z")],
            &[("secret", "a", 2)],
        ),
        (
            "the mount's root",
            &[("secret", "x"), ("secret", "y"), ("secret", "z")],
            &[("secret", "", 3)],
        ),
        (
            "per set member folders hold one each",
            &[
                ("secret", "stores/abc/storefront"),
                ("secret", "stores/def/storefront"),
            ],
            &[],
        ),
    ];
    for (case, secrets, expected) in cases {
        let secrets: Vec<KvPath> = secrets.iter().map(|(m, p)| kv(m, p)).collect();
        let got = shared(&secrets);
        let expected: HashMap<Folder, usize> = expected
            .iter()
            .map(|(m, p, n)| (folder(m, p), *n))
            .collect();
        assert_eq!(got, expected, "{case}");
    }
}

#[test]
fn folders_that_fell_back_are_no_longer_listed() {
    let all = || {
        shared(&[
            kv("secret", "a/x"),
            kv("secret", "a/y"),
            kv("secret", "b/x"),
            kv("secret", "b/y"),
        ])
    };
    let folders = Folders::default();
    let listed = folders.regroup(all());
    assert_eq!(listed.len(), 2);
    assert!(!folders.take_changed());

    folders.deny(&folder("secret", "a"));
    assert!(
        folders.take_changed(),
        "a denial asks the loop to group again"
    );
    assert_eq!(
        folders.regroup(all()),
        HashSet::from([folder("secret", "b")])
    );

    folders.unsupported.store(true, Ordering::Relaxed);
    assert!(folders.regroup(all()).is_empty());
}

fn metadata(version: u64, custom: &[(&str, &str)]) -> Option<SecretMetadata> {
    Some(SecretMetadata {
        current_version: version,
        versions: HashMap::new(),
        custom_metadata: custom
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
}

#[test]
fn a_round_answers_each_listed_key_once_and_sends_the_rest_to_a_read_of_its_own() {
    let mut round = Round::default();
    round.begin(Utc::now());
    // Two pages of two: a, b, then c/ (a sub-folder) and d.
    round.add(
        vec![
            ("a".into(), metadata(3, &[])),
            ("b".into(), metadata(1, &[("max_age", "1d")])),
        ],
        2,
    );
    assert!(!round.complete);
    assert_eq!(
        round.take("b", 3),
        Some(Glance {
            version: 1,
            overrides: true
        })
    );
    assert_eq!(round.take("b", 3), None, "taken already");
    assert!(round.passed("b"), "a key taken is read by itself");
    assert!(round.passed("aa"), "a key the listing went past is missing");
    assert!(!round.passed("d"), "the listing goes on for a later key");
    round.add(vec![("c/".into(), None), ("d".into(), metadata(7, &[]))], 2);
    assert!(!round.complete, "a full page may have a next");
    round.add(vec![], 2);
    assert!(round.complete);
    assert!(round.passed("zz"));
    assert_eq!(round.take("c/", 3), None, "a sub-folder has no metadata");
    assert_eq!(
        round.take("a", 3),
        Some(Glance {
            version: 3,
            overrides: false
        })
    );
    assert_eq!(round.found.len(), 1, "d is left");
    assert!(round.take("d", 3).is_some());
    assert!(round.found.is_empty());
}

#[test]
fn a_round_drops_what_nobody_here_owns_once_every_owned_credential_took_its_own() {
    let mut round = Round::default();
    round.begin(Utc::now());
    round.add(
        vec![
            ("a".into(), metadata(1, &[])),
            ("b".into(), metadata(1, &[])),
            ("c".into(), metadata(1, &[])),
        ],
        1000,
    );
    assert!(round.take("a", 2).is_some());
    assert_eq!(round.found.len(), 2);
    assert!(round.take("c", 2).is_some());
    assert!(round.found.is_empty(), "b belongs to another member");
    assert!(round.passed("b"), "b, if asked, is read by itself");
}

#[test]
fn a_server_that_ignores_after_ends_the_listing() {
    let mut round = Round::default();
    round.begin(Utc::now());
    let page = || {
        vec![
            ("a".into(), metadata(1, &[])),
            ("b".into(), metadata(1, &[])),
        ]
    };
    round.add(page(), 2);
    assert!(!round.complete);
    round.add(page(), 2);
    assert!(round.complete);
}

#[test]
fn a_reconcile_takes_the_listing_of_its_folder_s_slot_in_the_current_interval() {
    let folders = Arc::new(Folders::default());
    folders.regroup(shared(&[kv("secret", "a/x"), kv("secret", "a/y")]));
    let interval = Duration::from_secs(600);
    let slot = super::super::planner::reconcile_slot(interval, &folder("secret", "a").slot_key());
    let at = DateTime::from_timestamp(1_800_000_000 / 600 * 600, 0).unwrap()
        + chrono::Duration::from_std(slot).unwrap();
    let cases = [
        ("at the slot", at, at),
        (
            "later in the interval",
            at + chrono::Duration::seconds(599),
            at,
        ),
        (
            "in the next interval",
            at + chrono::Duration::seconds(600),
            at + chrono::Duration::seconds(600),
        ),
    ];
    for (case, now, since) in cases {
        let batch = folders
            .batch(&kv("secret", "a/x"), interval, now)
            .expect("a listed folder");
        assert_eq!(batch.since, since, "{case}");
    }
    assert!(
        folders.batch(&kv("secret", "b/x"), interval, at).is_none(),
        "a folder not listed"
    );
}

#[test]
fn pages_grow_fourfold_while_their_answers_stay_small() {
    // (keys asked for last, the largest key's metadata in bytes, keys asked for next)
    let cases = [
        (PAGE, 0, 4 * PAGE),
        (PAGE, 600, 4 * PAGE),
        (4 * PAGE, 600, 16 * PAGE),
        (16 * PAGE, 600, PAGE_BYTES / 600),
        (PAGE_BYTES / 600, 600, PAGE_BYTES / 600),
        (16 * PAGE, 200, MAX_PAGE),
        (MAX_PAGE, 200, MAX_PAGE),
        (16 * PAGE, 40_000, PAGE),
        (PAGE, 2_000, 4 * PAGE),
        (4 * PAGE, 2_000, PAGE_BYTES / 2_000),
        (2, 600, PAGE),
    ];
    for (previous, bytes, next) in cases {
        assert_eq!(
            next_page(previous, bytes),
            next,
            "{previous} keys of {bytes} B"
        );
    }
    // A million keys of about 600 bytes: 1,000, 4,000, 16,000, then about 28,000 a page: 39 requests.
    let (mut page, mut listed, mut requests) = (PAGE, 0, 0);
    while listed < 1_000_000 {
        listed += page;
        requests += 1;
        page = next_page(page, 600);
    }
    assert_eq!(requests, 39);
}

#[test]
fn a_round_asks_for_more_keys_after_small_answers_and_fewer_after_large_ones() {
    let mut round = Round::default();
    round.begin(Utc::now());
    assert_eq!(round.page, PAGE);
    round.add(vec![("a".into(), metadata(1, &[]))], PAGE);
    assert_eq!(round.page, 4 * PAGE);
    let large = "x".repeat(30_000);
    round.add(
        vec![("b".into(), metadata(1, &[("note", &large)]))],
        4 * PAGE,
    );
    assert_eq!(
        round.page, PAGE,
        "a page of 30 KB keys would be 120 MB: back to the first size"
    );
    round.add(vec![("c".into(), metadata(1, &[("note", "small")]))], PAGE);
    assert_eq!(round.page, 4 * PAGE);
}
