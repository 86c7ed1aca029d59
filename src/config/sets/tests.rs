use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::config::parse;
use crate::config::validate::test_support::{NoEnvironment, VAULT};

const DAY: u64 = 86_400;

#[test]
fn patterns_parse_match_render_and_overlap() {
    // (pattern, path, segment values when it matches)
    let cases: &[(&str, &str, Option<&[&str]>)] = &[
        (
            "stores/{store_hash}/storefront",
            "stores/abc123/storefront",
            Some(&["abc123"]),
        ),
        ("stores/{store_hash}/storefront", "stores/abc123/api", None),
        ("stores/{store_hash}/storefront", "stores/abc123", None),
        (
            "stores/{store_hash}/storefront",
            "stores/abc123/storefront/x",
            None,
        ),
        ("stores/{store_hash}/storefront", "stores//storefront", None),
        ("stores/{store_hash}", "stores/abc123", Some(&["abc123"])),
        (
            "{org}/stores/{store_hash}",
            "acme/stores/x1",
            Some(&["acme", "x1"]),
        ),
        ("{org}/stores/{store_hash}", "acme/shops/x1", None),
    ];
    for (pattern, path, want) in cases {
        let p = Pattern::parse("secret", pattern).unwrap();
        let got = p.matches(path);
        let want: Option<Vec<String>> = want.map(|v| v.iter().map(|s| s.to_string()).collect());
        assert_eq!(got, want, "{pattern} against {path}");
        if let Some(values) = got {
            assert_eq!(p.render(&values), *path, "{pattern} renders {path}");
        }
        assert_eq!(p.text(), *pattern);
    }
    assert_eq!(
        Pattern::parse("secret", "bigcommerce/stores/{store_hash}/storefront")
            .unwrap()
            .literal_prefix(),
        "bigcommerce/stores"
    );

    // (pattern, what is wrong)
    let bad: &[(&str, &str)] = &[
        ("stores/all", "no segment"),
        ("stores/{Store}", "lowercase letters"),
        ("stores/{}", "lowercase letters"),
        ("stores/store-{hash}", "whole path component"),
        ("stores/{a}/{a}", "appears twice"),
    ];
    for (pattern, fragment) in bad {
        let e = Pattern::parse("secret", pattern).unwrap_err();
        assert!(e.contains(fragment), "{pattern}: {e}");
    }

    // (a, b, some path matches both)
    let overlaps: &[(&str, &str, bool)] = &[
        ("stores/{h}/storefront", "stores/{s}/storefront", true),
        ("stores/{h}/storefront", "stores/{h}/api", false),
        ("stores/{h}/storefront", "{x}/abc/storefront", true),
        ("stores/{h}", "stores/{h}/storefront", false),
    ];
    for (a, b, want) in overlaps {
        let (pa, pb) = (
            Pattern::parse("secret", a).unwrap(),
            Pattern::parse("secret", b).unwrap(),
        );
        assert_eq!(pa.overlaps(&pb), *want, "{a} / {b}");
        assert_eq!(pb.overlaps(&pa), *want, "{b} / {a}");
    }
    let other_mount = Pattern::parse("kv", "stores/{h}/storefront").unwrap();
    assert!(!other_mount.overlaps(&Pattern::parse("secret", "stores/{h}/storefront").unwrap()));
}

/// A set of storefront tokens, one per store, on line 2 on.
const STOREFRONTS: &str = "[[credential_sets]]
name = \"storefronts\"
path = \"bigcommerce/stores/{store_hash}/storefront\"
max_age = \"30d\"
discovery_interval = \"1m\"
[credential_sets.bigcommerce_storefront]
store_hash = \"{store_hash}\"
api_url = \"http://127.0.0.1:9/stores-api\"
access_token = { path = \"bigcommerce/stores/{store_hash}/api\", key = \"access_token\" }
channel_ids = [1]
";

fn set_of(text: &str) -> CredentialSet {
    let config = parse(&format!("{VAULT}{text}"), "test.toml", &NoEnvironment)
        .unwrap_or_else(|e| panic!("{e}"));
    config.credential_sets[0].clone()
}

#[test]
fn a_set_is_validated_once_and_each_member_is_the_template_with_its_segments() {
    let set = set_of(STOREFRONTS);
    assert_eq!(set.name, "storefronts");
    assert_eq!(
        set.shown(),
        "secret/bigcommerce/stores/{store_hash}/storefront"
    );
    assert_eq!(set.discovery_interval, Duration::from_secs(60));
    assert!(!set.per_credential_metrics);
    assert_eq!(set.store_hash_segments, vec![0]);
    assert_eq!(set.location, "test.toml:4:8: credential_sets[0].path");

    let member = set.member(&["abc123"]).unwrap();
    assert_eq!(member.name, "storefronts/abc123");
    assert_eq!(member.set_name(), Some("storefronts"));
    assert_eq!(
        member.secret.to_string(),
        "secret/bigcommerce/stores/abc123/storefront"
    );
    let ProviderConfig::BigCommerceStorefront(p) = &*member.provider() else {
        panic!("{:?}", member.provider())
    };
    assert_eq!(p.store_hash, "abc123");
    assert_eq!(p.access_token.secret.path, "bigcommerce/stores/abc123/api");
    assert_eq!(p.storefront_url, "https://store-abc123.mybigcommerce.com");
    assert_eq!(p.api_url, "http://127.0.0.1:9/stores-api");
    assert_eq!(member.policy.max_age, Some(Duration::from_secs(30 * DAY)));

    // (segment value, what is wrong with it)
    let refused: &[(&str, &str)] = &[
        ("ABC123", "not a valid store hash"),
        ("abc-123", "not a valid store hash"),
        ("", "1 to 64"),
        (&"a".repeat(65), "1 to 64"),
    ];
    for (value, fragment) in refused {
        let e = set.member(&[value.to_string()]).unwrap_err();
        assert!(
            e.contains("segment `store_hash`") && e.contains(fragment),
            "{value}: {e}"
        );
    }
}

#[test]
fn members_share_the_sets_settings_and_policy_and_fill_their_segments_in_on_use() {
    // Settings that use the segments: each member's own, filled in from its name.
    let set = set_of(STOREFRONTS);
    let (a, b) = (
        set.member(&["abc123"]).unwrap(),
        set.member(&["def456"]).unwrap(),
    );
    assert!(std::ptr::eq(a.provider_template(), b.provider_template()));
    assert!(std::sync::Arc::ptr_eq(&a.policy, &b.policy));
    for (member, hash) in [(&a, "abc123"), (&b, "def456")] {
        let ProviderConfig::BigCommerceStorefront(p) = &*member.provider() else {
            panic!()
        };
        assert_eq!(p.store_hash, hash);
        assert_eq!(
            p.access_token.secret.path,
            format!("bigcommerce/stores/{hash}/api")
        );
    }

    // Two segments, used out of order and twice: (values, the mint argv).
    let set = set_of(
        "[[credential_sets]]
name = \"apps\"
path = \"apps/{team}/{app}/token\"
[credential_sets.exec]
mint = [\"/bin/mint\", \"{app}@{team}\", \"{app}\"]
verify = [\"/bin/true\"]
revoke = [\"/bin/true\"]
fields = [\"key\"]
",
    );
    let cases: &[(&[&str], &[&str])] = &[
        (&["billing", "api"], &["/bin/mint", "api@billing", "api"]),
        (&["a", "b"], &["/bin/mint", "b@a", "b"]),
    ];
    for (values, argv) in cases {
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let member = set.member(&values).unwrap();
        let ProviderConfig::Exec(e) = &*member.provider() else {
            panic!()
        };
        assert_eq!(&e.mint, argv, "{values:?}");
        assert_eq!(
            member.secret.path,
            format!("apps/{}/{}/token", values[0], values[1])
        );
    }

    // Settings that use no segment: every member borrows the set's own.
    let set = set_of(
        "[[credential_sets]]
name = \"boot\"
path = \"boot/{id}\"
[credential_sets.exec]
mint = [\"/bin/true\"]
verify = [\"/bin/true\"]
revoke = [\"/bin/true\"]
fields = [\"key\"]
",
    );
    let member = set.member(&["x1"]).unwrap();
    assert!(matches!(member.provider(), std::borrow::Cow::Borrowed(_)));
    assert_eq!(&*member.provider(), set.template.provider_template());
}

#[test]
fn a_segment_not_used_as_a_store_hash_takes_names_but_no_path_tricks() {
    let set = set_of(
        "[[credential_sets]]
name = \"apps\"
path = \"apps/{app}/token\"
[credential_sets.exec]
mint = [\"/bin/mint\", \"{app}\"]
verify = [\"/bin/true\"]
revoke = [\"/bin/true\"]
fields = [\"key\"]
",
    );
    assert!(set.store_hash_segments.is_empty());
    let member = set.member(&["Billing_App.v2"]).unwrap();
    let ProviderConfig::Exec(e) = &*member.provider() else {
        panic!()
    };
    assert_eq!(e.mint, vec!["/bin/mint", "Billing_App.v2"]);
    for value in ["..", ".", "a b", "a%2f"] {
        assert!(set.member(&[value]).is_err(), "{value}");
    }
    let long = "x".repeat(64);
    let name = set.member(std::slice::from_ref(&long)).unwrap().name;
    assert_eq!(name, format!("apps/{long}"));
}

/// The set's errors, each (key, line, fragment): every one located and naming what is wrong.
fn refused(text: &str, expected: &[(&str, usize, &str)]) {
    let errors = parse(&format!("{VAULT}{text}"), "test.toml", &NoEnvironment)
        .err()
        .unwrap_or_else(|| panic!("accepted:\n{text}"))
        .errors;
    let got: Vec<(String, usize, String)> = errors
        .iter()
        .map(|e| (e.key.clone(), e.line, e.message.clone()))
        .collect();
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for ((key, line, message), (want_key, want_line, fragment)) in got.iter().zip(expected) {
        assert!(
            key == want_key && line == want_line && message.contains(fragment),
            "expected {want_key} at line {want_line} saying {fragment:?}; got {got:#?}"
        );
        assert!(!message.contains("zzsegment"), "a marker shows: {message}");
    }
}

#[test]
fn bad_sets_are_refused_naming_the_set_and_the_path_at_their_line() {
    // A store hash that cannot be one: the literal part of the template is checked as written.
    refused(
        &STOREFRONTS.replace(
            "store_hash = \"{store_hash}\"",
            "store_hash = \"Shop-{store_hash}\"",
        ),
        &[(
            "credential_sets[0].bigcommerce_storefront.store_hash",
            8,
            "invalid store hash `Shop-{store_hash}`",
        )],
    );
    // A segment the pattern does not have.
    refused(
        &STOREFRONTS.replace("stores/{store_hash}/api", "stores/{store}/api"),
        &[(
            "credential_sets[0].bigcommerce_storefront.access_token.path",
            10,
            "unknown segment `{store}`; the pattern's segments: {store_hash}",
        )],
    );
    // A pattern without a segment, or a malformed one.
    refused(
        &STOREFRONTS.replace("stores/{store_hash}/storefront", "stores/all/storefront"),
        &[("credential_sets[0].path", 4, "has no segment")],
    );
    refused(
        &STOREFRONTS.replace(
            "stores/{store_hash}/storefront",
            "stores/s-{store_hash}/storefront",
        ),
        &[("credential_sets[0].path", 4, "whole path component")],
    );
    // Two sets matching the same paths, and a credential written out that a set also has.
    let second = STOREFRONTS
        .replace("\"storefronts\"", "\"more\"")
        .replace("{store_hash}/storefront", "{hash}/storefront")
        .replace("\"{store_hash}\"", "\"{hash}\"")
        .replace("stores/{store_hash}/api", "stores/{hash}/api");
    refused(
        &format!("{STOREFRONTS}{second}"),
        &[(
            "credential_sets[1].path",
            14,
            "credential set `more`: pattern `secret/bigcommerce/stores/{hash}/storefront` matches the same paths as credential set `storefronts`",
        )],
    );
    refused(
        &format!(
            "{STOREFRONTS}[[credentials]]
name = \"one\"
path = \"bigcommerce/stores/abc/storefront\"
[credentials.exec]
mint = [\"/bin/true\"]
verify = [\"/bin/true\"]
revoke = [\"/bin/true\"]
fields = [\"key\"]
"
        ),
        &[(
            "credentials[0].path",
            14,
            "is also a member of credential set `storefronts`",
        )],
    );
    // Duplicate names, the set's own keys, and the keys a set does not take.
    refused(
        &format!(
            "{STOREFRONTS}{}",
            STOREFRONTS.replace("bigcommerce/stores", "other/stores")
        ),
        &[(
            "credential_sets[1].name",
            13,
            "duplicate credential set name `storefronts`",
        )],
    );
    refused(
        &STOREFRONTS.replace("\"1m\"", "\"500ms\""),
        &[("credential_sets[0].discovery_interval", 6, "at least 1s")],
    );
    refused(
        &STOREFRONTS.replace("\"1m\"", "\"soon\""),
        &[("credential_sets[0].discovery_interval", 6, "")],
    );
    refused(
        &format!("{STOREFRONTS}[[credential_sets.dependents]]\ntype = \"exec\"\nname = \"x\"\ncommand = [\"/bin/true\"]\n"),
        &[("credential_sets[0].dependents[0]", 12, "takes no dependents")],
    );
    refused(
        "[[credentials]]
name = \"one\"
path = \"a/b\"
discovery_interval = \"5m\"
[credentials.exec]
mint = [\"/bin/true\"]
verify = [\"/bin/true\"]
revoke = [\"/bin/true\"]
fields = [\"key\"]
",
        &[(
            "credentials[0].discovery_interval",
            5,
            "only `[[credential_sets]]`",
        )],
    );
}

#[test]
fn custom_metadata_overrides_a_members_policy() {
    let base = Policy::default();
    // (custom_metadata, max_age after, expiry_lead after, problems)
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<u64>, u64, usize);
    let cases: &[Case] = &[
        (&[], Some(30 * DAY), 7 * DAY, 0),
        (&[("max_age", "7d")], Some(7 * DAY), 7 * DAY, 0),
        (&[("max_age", "never")], None, 7 * DAY, 0),
        (&[("max_age", "soon")], Some(30 * DAY), 7 * DAY, 1),
        (&[("max_age", "0s")], Some(30 * DAY), 7 * DAY, 1),
        (
            &[("expiry_lead", "2d"), ("owner", "team-a")],
            Some(30 * DAY),
            2 * DAY,
            0,
        ),
    ];
    for (custom, max_age, lead, problems) in cases {
        let custom: HashMap<String, String> = custom
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (policy, found) = overridden(&base, &custom);
        assert_eq!(
            policy.max_age,
            max_age.map(Duration::from_secs),
            "{custom:?}"
        );
        assert_eq!(policy.expiry_lead, Duration::from_secs(*lead), "{custom:?}");
        assert_eq!(found.len(), *problems, "{custom:?}: {found:?}");
    }
}
