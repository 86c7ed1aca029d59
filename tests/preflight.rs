//! What the engine checks before it acts, against a real OpenBao and the BigCommerce emulator:
//! - soft-deleted latest versions (of the state record, of the live secret) count as their real
//!   version for check-and-set, so neither fences a rotation forever nor loops;
//! - a state record that is corrupt, of an unknown schema or of another credential is refused
//!   with its Vault path and the field, by every command, and is left as it is;
//! - before anything is minted, the secret's mount must be KV v2, the token must be valid and
//!   allowed to write, and the current secret must hold the provider's fields; a refusal names
//!   the path and what is missing, mints nothing and writes nothing.

mod common;

use bigcommerce_emulator::TokenState;
use common::stack::{sha256_hex, Output, Stack, StackOptions, CRED, SECRET_PATH};
use common::{policy_hcl, stack::policy_paths};
use serde_json::{json, Value};

/// The state record of the stack's credential, as `KvPath` shows it and as the API names it.
const RECORD: &str = "secret/secret-rotator/credentials/storefront-main";
const RECORD_API: &str = "secret/data/secret-rotator/credentials/storefront-main";
const RECORD_METADATA: &str = "secret/metadata/secret-rotator/credentials/storefront-main";
/// The live secret, as shown and in the API.
const SECRET: &str = "secret/bigcommerce/storefront-main";
const SECRET_API: &str = "secret/data/bigcommerce/storefront-main";
const SECRET_METADATA: &str = "secret/metadata/bigcommerce/storefront-main";

/// The exit code, and every needle present in what the command printed (stdout and stderr).
fn expect(out: &Output, code: i32, needles: &[&str], what: &str) {
    assert_eq!(out.signal, None, "{what}: killed by a signal: {out:?}");
    assert_eq!(out.code, Some(code), "{what}: {out:?}");
    let printed = format!("{}{}", out.stdout, out.stderr);
    for needle in needles {
        assert!(
            printed.contains(needle),
            "{what}: the output does not name {needle:?}: {out:?}"
        );
    }
    assert!(!printed.contains("panicked"), "{what}: panicked: {out:?}");
}

/// What a command that refuses must leave as it was: the tokens the emulator minted and revoked,
/// the live secret's versions and the state record's versions.
#[derive(Debug, PartialEq)]
struct Untouched {
    minted: u64,
    revoked: u64,
    secret: (u16, Value),
    record: (u16, Value),
}

impl Untouched {
    async fn now(s: &Stack) -> Untouched {
        let c = s.admin.counters().await.unwrap();
        let versions = |path: &'static str| async move {
            let (status, v) = s.bao.call_as(common::ROOT_TOKEN, "GET", path, None).await;
            (
                status,
                json!([v["data"]["current_version"], v["data"]["versions"]]),
            )
        };
        Untouched {
            minted: c.tokens_minted,
            revoked: c.tokens_revoked,
            secret: versions(SECRET_METADATA).await,
            record: versions(RECORD_METADATA).await,
        }
    }
}

/// Use a second config file from now on: the stack's own, edited.
fn use_config(s: &mut Stack, edit: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(&s.config).unwrap();
    let second = s.dir.path().join("second.toml");
    std::fs::write(&second, edit(text)).unwrap();
    s.config = second;
}

/// Put the credential on another mount (same path).
fn on_mount(mount: &str) -> impl FnOnce(String) -> String + '_ {
    move |text| {
        let line = format!("path = \"{SECRET_PATH}\"\n");
        assert!(text.contains(&line));
        text.replace(&line, &format!("{line}mount = \"{mount}\"\n"))
    }
}

async fn record_version(s: &Stack) -> u64 {
    s.bao.root("GET", RECORD_METADATA, None).await["data"]["current_version"]
        .as_u64()
        .unwrap()
}

// --- Item 5: soft-deleted versions ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_latest_version_of_the_state_record_does_not_fence_the_next_rotation() {
    let s = Stack::start().await;
    expect(
        &s.cli(&["rotate", CRED, "--wait"], &[]).await,
        0,
        &["rotated"],
        "first rotation",
    );
    // `kv delete` on the record: its latest version is soft-deleted, its number stays current.
    s.bao.root("DELETE", RECORD_API, None).await;
    let deleted = record_version(&s).await;

    let out = s.cli(&["rotate", CRED, "--wait"], &[]).await;
    expect(
        &out,
        0,
        &["rotated (version 2 -> 3)"],
        "rotation after the delete",
    );
    assert_eq!(s.current().await.0, 3);
    assert!(
        record_version(&s).await > deleted,
        "the record is written again, check-and-set on the deleted version {deleted}"
    );
    let h = s.history().await;
    assert!(h["in_flight"].is_null(), "{h}");
    let last = h["attempts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (
            last["outcome"].as_str(),
            last["version_before"].as_u64(),
            last["version_after"].as_u64()
        ),
        (Some("rotated"), Some(2), Some(3)),
        "{h}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_latest_version_of_the_live_secret_is_replaced_once_with_check_and_set_on_it() {
    let s = Stack::start().await;
    let (_, old) = s.current().await;
    let before = s.admin.counters().await.unwrap();
    // `kv delete` on the live secret: version 1 is soft-deleted, nothing can be read.
    s.bao.root("DELETE", SECRET_API, None).await;

    let out = s.cli(&["rotate", CRED], &[]).await;
    expect(&out, 0, &["rotated (version 1 -> 2)"], "rotate");

    let (version, new) = s.current().await;
    assert_eq!(version, 2, "one new version, written with cas=1");
    assert_ne!(new, old);
    assert_eq!(s.graphql_status(&new).await, 200);
    let after = s.admin.counters().await.unwrap();
    assert_eq!(
        (after.tokens_minted, after.tokens_revoked),
        (before.tokens_minted + 1, before.tokens_revoked),
        "exactly one mint; nothing revoked, since no old credential could be read"
    );
    let mut live: Vec<String> = s
        .tokens_in_state(TokenState::Live)
        .await
        .into_iter()
        .map(|t| t.0)
        .collect();
    live.sort();
    let mut expected = vec![sha256_hex(&old), sha256_hex(&new)];
    expected.sort();
    assert_eq!(
        live, expected,
        "the new token, and the unreadable old one untouched"
    );
    let h = s.history().await;
    assert_eq!(h["attempts"].as_array().unwrap().len(), 1, "{h}");
    assert_eq!(h["attempts"][0]["outcome"], "rotated", "{h}");
    assert_eq!(h["attempts"][0]["version_before"], 1, "{h}");
    assert_eq!(h["attempts"][0]["version_after"], 2, "{h}");
}

// --- Item 9: records the engine refuses -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_foreign_or_newer_record_is_refused_by_every_command_and_left_as_it_is() {
    let s = Stack::start().await;
    let real = record_in_flight(&s).await;

    type Edit = fn(&mut Value);
    let cases: &[(&str, Edit, &[&str])] = &[
        (
            "minted without pending",
            |r| r["attempt"]["pending"] = Value::Null,
            &[RECORD, "attempt.pending"],
        ),
        (
            "a schema from a newer binary",
            |r| {
                r["schema"] = json!(99);
                r["written_by"] = json!("secret-rotator 9.9.9");
            },
            &[RECORD, "schema", "99", "secret-rotator 9.9.9"],
        ),
        (
            "another credential's record",
            |r| r["credential"] = json!("storefront-other"),
            &[RECORD, "credential", "storefront-other"],
        ),
    ];
    let minted = s.admin.counters().await.unwrap().tokens_minted;
    for (case, edit, needles) in cases {
        let mut record = real.clone();
        edit(&mut record);
        s.bao
            .root("POST", RECORD_API, Some(json!({ "data": record })))
            .await;
        let version = record_version(&s).await;
        for command in [&["rotate", CRED][..], &["status"], &["history", CRED]] {
            let out = s.cli(command, &[]).await;
            expect(&out, 3, needles, &format!("{case}: {}", command.join(" ")));
        }
        // The daemon's pass logs the refusal and backs off; its exit code is
        // `run_once_exits_non_zero_on_an_unusable_record`'s subject.
        let out = s.cli(&["run", "--once"], &[]).await;
        expect(
            &out,
            out.code.unwrap_or(-1),
            needles,
            &format!("{case}: run --once"),
        );
        assert_eq!(
            record_version(&s).await,
            version,
            "{case}: the record is not overwritten"
        );
        let stored = s.bao.root("GET", RECORD_API, None).await["data"]["data"].clone();
        assert_eq!(stored, record, "{case}: the record is left as it is");
    }
    assert_eq!(
        s.admin.counters().await.unwrap().tokens_minted,
        minted,
        "nothing minted on a refused record"
    );
}

/// A real record of an attempt in flight: the process dies right after recording the mint.
async fn record_in_flight(s: &Stack) -> Value {
    let out = s
        .cli(
            &["rotate", CRED],
            &[("SECRET_ROTATOR_CRASH_AT", "minted-recorded")],
        )
        .await;
    assert_eq!(out.signal, Some(9), "{out:?}");
    let real = s.bao.root("GET", RECORD_API, None).await["data"]["data"].clone();
    assert_eq!(real["attempt"]["phase"], "minted", "{real}");
    assert!(real["attempt"]["pending"].is_object(), "{real}");
    real
}

/// `run --once` is one pass of the daemon for cron and tests: a credential it could not act on
/// must show in its exit code, as it does for `rotate`, `status` and `history`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_exits_non_zero_on_an_unusable_record() {
    let s = Stack::start().await;
    let mut record = record_in_flight(&s).await;
    record["attempt"]["pending"] = Value::Null;
    s.bao
        .root("POST", RECORD_API, Some(json!({ "data": record })))
        .await;
    let out = s.cli(&["run", "--once"], &[]).await;
    expect(&out, 3, &[RECORD, "attempt.pending"], "run --once");
}

// --- Item 13: preflight before any mint -----------------------------------------------------------

/// An exit code, and what the output must name.
type Printed = (i32, &'static [&'static str]);

/// What is wrong with the stack before `rotate` runs.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The secret lives on a KV v1 mount.
    KvV1Mount,
    /// The credential names a mount where nothing is mounted.
    MissingMount,
    /// The credential names a transit mount.
    TransitMount,
    /// The daemon's token may read the secret but not write it.
    ReadOnlyToken,
    /// The current secret has no `token` field.
    NoTokenField,
    /// The daemon's Vault token is not a token.
    WrongVaultToken,
}

impl Fault {
    async fn apply(self, s: &mut Stack) {
        let (_, token) = s.current().await;
        match self {
            Fault::KvV1Mount => {
                s.bao
                    .root(
                        "POST",
                        "sys/mounts/kv1",
                        Some(json!({ "type": "kv", "options": { "version": "1" } })),
                    )
                    .await;
                s.bao
                    .root(
                        "POST",
                        &format!("kv1/{SECRET_PATH}"),
                        Some(json!({ "token": token })),
                    )
                    .await;
                use_config(s, on_mount("kv1"));
            }
            Fault::MissingMount => use_config(s, on_mount("nosuch")),
            Fault::TransitMount => {
                s.bao
                    .root(
                        "POST",
                        "sys/mounts/transit",
                        Some(json!({ "type": "transit" })),
                    )
                    .await;
                use_config(s, on_mount("transit"));
            }
            Fault::ReadOnlyToken => {
                let mut rules = policy_paths().rules();
                for r in rules.iter_mut().filter(|r| r.path == SECRET_API) {
                    r.capabilities = vec!["read".into()];
                }
                s.token = s
                    .bao
                    .token_with_exact_policy("read-only", &policy_hcl(&rules))
                    .await;
            }
            Fault::NoTokenField => {
                s.bao
                    .write_secret("secret", SECRET_PATH, json!({ "tok": "not-the-field" }))
                    .await;
            }
            Fault::WrongVaultToken => s.token = "s.not-a-real-token".into(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_refuses_before_anything_is_minted_and_names_the_path_and_what_is_missing() {
    // The mount cases run with the root token: the daemon's policy grants nothing on other mounts.
    let cases: &[(Fault, Printed, Printed)] = &[
        // (what is wrong, what `rotate` says, what `status` says). The stack has one credential:
        // where its row is an error, every row is, and `status` must not exit 0.
        (
            Fault::KvV1Mount,
            (
                4,
                &[
                    "kv1/bigcommerce/storefront-main",
                    "KV v1",
                    "nothing was minted",
                ],
            ),
            (3, &["kv1/bigcommerce/storefront-main", "KV v1"]),
        ),
        (
            Fault::MissingMount,
            (
                4,
                &["nosuch/bigcommerce/storefront-main", "nothing was minted"],
            ),
            (3, &["nosuch/bigcommerce/storefront-main"]),
        ),
        (
            Fault::TransitMount,
            (
                4,
                &[
                    "transit/bigcommerce/storefront-main",
                    "transit",
                    "nothing was minted",
                ],
            ),
            (3, &["transit/bigcommerce/storefront-main", "transit"]),
        ),
        (
            Fault::ReadOnlyToken,
            (4, &[SECRET, "update", SECRET_API, "nothing was minted"]),
            (0, &[]),
        ),
        (
            Fault::NoTokenField,
            (4, &[SECRET, "token field", "nothing was minted"]),
            (0, &[]),
        ),
        (
            Fault::WrongVaultToken,
            (3, &["invalid, expired or revoked"]),
            (3, &["invalid, expired or revoked"]),
        ),
    ];
    for &(fault, (rotate_code, rotate_needles), (status_code, status_needles)) in cases {
        let what = format!("{fault:?}");
        let root_token = matches!(
            fault,
            Fault::KvV1Mount | Fault::MissingMount | Fault::TransitMount
        );
        let mut s = Stack::with(StackOptions {
            root_token,
            ..Default::default()
        })
        .await;
        fault.apply(&mut s).await;
        let before = Untouched::now(&s).await;

        let out = s.cli(&["rotate", CRED], &[]).await;
        expect(
            &out,
            rotate_code,
            rotate_needles,
            &format!("{what}: rotate"),
        );
        assert!(
            !out.stderr.contains("no policy allowing"),
            "{what}: not reported as a policy problem: {out:?}"
        );
        assert_eq!(
            Untouched::now(&s).await,
            before,
            "{what}: nothing minted, revoked or written"
        );

        // The daemon says so at start-up, before anything is due.
        if !matches!(fault, Fault::WrongVaultToken) {
            let out = s.cli(&["run", "--once"], &[]).await;
            assert!(
                out.stderr.contains("cannot be rotated until this is fixed")
                    && out.stderr.contains(rotate_needles[0]),
                "{what}: run at start-up: {out:?}"
            );
        }

        let out = s.cli(&["status", "--json"], &[]).await;
        expect(
            &out,
            status_code,
            status_needles,
            &format!("{what}: status"),
        );
        if status_code != 0 && !matches!(fault, Fault::WrongVaultToken) {
            let rows: Value = serde_json::from_str(&out.stdout).unwrap();
            assert_eq!(rows[0]["state"], "error", "{what}: {rows}");
        }
        if matches!(fault, Fault::KvV1Mount) {
            let (status, _) = s
                .bao
                .call_as(
                    common::ROOT_TOKEN,
                    "GET",
                    &format!("kv1/data/{SECRET_PATH}"),
                    None,
                )
                .await;
            assert_eq!(status, 404, "no stray kv1/data/... secret");
        }
        if matches!(fault, Fault::ReadOnlyToken) {
            let h = s.history().await;
            assert!(h["in_flight"].is_null(), "{what}: no attempt left: {h}");
        }
    }
}
