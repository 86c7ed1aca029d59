//! The crash matrix: the real `secret-rotator` process is killed with SIGKILL at every crash point
//! of a rotation (built with the `fault-injection` feature), then restarted as the daemon would be
//! (`run --once` until idle). After recovery, at every point:
//! - Vault holds exactly one new current version, and it verifies at the emulator;
//! - the old token is rejected, and it is the only token revoked;
//! - no token is live at the emulator but the current one, or orphans the history reports, whose
//!   expiry is bounded;
//! - the attempt's `credential.rotated` and `credential.revoked` events were emitted.
//!
//! - every dependent (a webhook and a file) got every event at least once, in order
//!   (`credential.rotated` accepted before `credential.revoked`), and the file holds the current
//!   token.
//!
//! `retry-recorded` is reached through a verification that fails once (503): the retry and its
//! backoff are recorded, and the restarted daemon honours them and completes the rotation.
//! `ahead-of-notified` and `ahead-of-end`: the dependents accepted the events of the next state
//! record write ahead of it (not recorded anywhere yet). `delivered` and `delivery-recorded` are
//! the delivery worker's: the webhook accepts `credential.rotated` delivered ahead of the write
//! only after the engine stopped waiting, and the worker records it, killed before and after.
//!
//! The immediate matrix kills the same process at every point of the path with grace 0 and a
//! webhook dependent alone (no ack holds the revocation): it makes no `notified` write, so a
//! crash after the commit resumes in `minted`, finds the commit in the secret and goes on to the
//! revocation; the same checks hold.
//!
//! The rollback matrix kills `rollback` at each of its points, during the grace period of a
//! committed rotation; the restarted daemon completes the rollback: the previous token is current
//! again (a new version) and live, the newer one is rejected, and `credential.rolled_back` was
//! emitted with an id of its own.
//!
//! The parking case kills the daemon right after it parks a credential whose verification keeps
//! failing: the parking stands, was announced, and the rejected token was revoked.
//!
//! The assisted matrix rotates a store-level API account with the emulator's admin API as the
//! person, killed after `rotation.due`, after a supply is verified and after it is recorded,
//! after the commit, and while waiting for the old account to die: the new account ends up
//! current, the old one rejected, one attempt, and `revoked` only after `rotated`.

mod common;

use std::time::Duration;

use bigcommerce_emulator::{FaultMode, FaultSpec, TokenState};
use common::receiver::{Answer, HookReceiver};
use common::stack::{sha256_hex, webhook_dependent, Stack, StackOptions, CRED, WEBHOOK_KEY_PATH};
use secret_rotator::crash::POINTS;
use serde_json::{json, Value};

const KEY: &str = common::receiver::TEST_KEY;

/// Which rotation path a case kills: the one with a grace period and a file dependent (whose
/// ack holds the revocation; the commit is recorded as `notified`), or the immediate one (grace
/// 0, a webhook dependent only: no `notified` write, the end of the attempt records both events).
/// `Acked`: grace 0 with the file dependent, whose ack comes ahead of any write: no `notified`
/// write either, and the end of the attempt records both events and every delivery.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    Held,
    Immediate,
    Acked,
}

async fn crash_then_recover(point: &str) {
    crash_on_path(point, Path::Held).await
}

async fn crash_on_path(point: &str, path: Path) {
    let hook = HookReceiver::start(KEY).await;
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("token");
    let held = path != Path::Immediate;
    let file_dependent = if held {
        format!(
            "\n[[credentials.dependents]]\ntype = \"file\"\nname = \"file\"\npath = \"{}\"\nfield = \"token\"\n",
            file.display()
        )
    } else {
        String::new()
    };
    let s = Stack::with(StackOptions {
        dependents: format!(
            "{}{file_dependent}",
            webhook_dependent("hook", &hook.url, "")
        ),
        grace: if path == Path::Held { "1s" } else { "0s" },
        ..Default::default()
    })
    .await;
    s.bao
        .write_secret("secret", WEBHOOK_KEY_PATH, json!({ "signing_key": KEY }))
        .await;
    let (_, old) = s.current().await;
    if matches!(point, "delivered" | "delivery-recorded") {
        // The worker's points: the webhook accepts `rotated` only after the engine stopped
        // waiting for the delivery ahead of its write (1 s; the webhook's timeout is 2 s), so
        // the worker records it.
        hook.script(
            &[Answer::After {
                ms: 1_400,
                status: 200,
            }],
            Answer::Status(200),
        );
    }
    if point == "retry-recorded" {
        let mut spec = FaultSpec::new("storefront_graphql", FaultMode::Error { status: 503 });
        spec.count = Some(1);
        s.admin.set_fault(spec).await.unwrap();
    }

    let out = s
        .cli(
            &["rotate", CRED, "--wait"],
            &[("SECRET_ROTATOR_CRASH_AT", point)],
        )
        .await;
    assert_eq!(
        out.signal,
        Some(9),
        "{point}: the process must die by SIGKILL there: {out:?}"
    );

    recover(&s, point).await;

    let (version, current) = s.current().await;
    assert_eq!(version, 2, "{point}: exactly one new version");
    assert_ne!(current, old, "{point}");
    assert_eq!(
        s.graphql_status(&current).await,
        200,
        "{point}: the current token verifies"
    );
    assert!(
        s.rejected_within(&old, Duration::from_secs(5)).await,
        "{point}: the old token is rejected"
    );

    let h = s.history().await;
    let attempts = h["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{point}: one attempt: {h}");
    let attempt = &attempts[0];
    assert_eq!(attempt["outcome"], "rotated", "{point}: {attempt}");

    let revoked: Vec<String> = s
        .tokens_in_state(TokenState::Revoked)
        .await
        .into_iter()
        .map(|t| t.0)
        .collect();
    assert_eq!(
        revoked,
        vec![sha256_hex(&old)],
        "{point}: only the old token is revoked"
    );

    let orphans = attempt["orphans"].as_array().unwrap();
    let live = s.tokens_in_state(TokenState::Live).await;
    let extra: Vec<&(String, i64)> = live
        .iter()
        .filter(|t| t.0 != sha256_hex(&current))
        .collect();
    assert!(
        extra.len() <= orphans.len(),
        "{point}: {} unreported live token(s); orphans {orphans:?}",
        extra.len() - orphans.len()
    );
    for t in extra {
        let bounded = orphans.iter().any(|o| {
            o["expires_at"]
                .as_str()
                .and_then(|e| e.parse::<chrono::DateTime<chrono::Utc>>().ok())
                .is_some_and(|e| t.1 <= e.timestamp())
        });
        assert!(
            bounded,
            "{point}: a live orphan expires at {} beyond every reported bound",
            t.1
        );
    }

    let events: Vec<Value> = s.events();
    let id = attempt["id"].as_str().unwrap();
    for kind in ["credential.rotated", "credential.revoked"] {
        assert!(
            events
                .iter()
                .any(|e| e["type"] == kind && e["data"]["attempt"] == id),
            "{point}: no {kind} event for the attempt: {events:?}"
        );
    }
    assert!(
        events.iter().all(|e| e["data"]["attempt"] == id),
        "{point}: events of one attempt only"
    );

    // Every event reached the webhook at least once, in order; the file holds the current token.
    let mut seen = Vec::new();
    for hit in hook.hits() {
        assert!(hit.verified, "{point}: {hit:?}");
        if hit.answered.accepts() && !seen.contains(&hit.id) {
            seen.push(hit.id);
        }
    }
    assert_eq!(
        seen,
        [
            format!("{id}:credential.rotated"),
            format!("{id}:credential.revoked")
        ],
        "{point}"
    );
    if held {
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            current,
            "{point}: the file holds the current token"
        );
    }
}

/// Restart as the daemon would, until nothing is in flight.
async fn recover(s: &Stack, point: &str) {
    let mut passes = 0;
    loop {
        let out = s.cli(&["run", "--once"], &[]).await;
        assert_eq!(out.code, Some(0), "{point}: restart failed: {out:?}");
        if s.history().await["in_flight"].is_null() {
            break;
        }
        passes += 1;
        assert!(
            passes < 20,
            "{point}: still in flight after {passes} restarts"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn rollback_crash_then_recover(point: &str) {
    let s = Stack::with(StackOptions {
        grace: "30m",
        ..Default::default()
    })
    .await;
    let (_, old) = s.current().await;
    let out = s.cli(&["rotate", CRED], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let (v2, new) = s.current().await;
    assert_eq!(v2, 2);

    let out = s
        .cli(&["rollback", CRED], &[("SECRET_ROTATOR_CRASH_AT", point)])
        .await;
    assert_eq!(out.signal, Some(9), "{point}: must die there: {out:?}");
    recover(&s, point).await;

    let (version, current) = s.current().await;
    assert_eq!(version, 3, "{point}: the previous token written back once");
    assert_eq!(current, old, "{point}");
    assert_eq!(
        s.graphql_status(&old).await,
        200,
        "{point}: the previous token lives"
    );
    assert!(
        s.rejected_within(&new, Duration::from_secs(5)).await,
        "{point}: the newer token is rejected"
    );
    let h = s.history().await;
    let attempts = h["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{point}: {h}");
    assert_eq!(attempts[0]["outcome"], "reverted", "{point}");
    let events = s.events();
    let id = attempts[0]["id"].as_str().unwrap();
    let rolled_back: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "credential.rolled_back")
        .collect();
    assert!(!rolled_back.is_empty(), "{point}: {events:?}");
    assert_eq!(rolled_back[0]["data"]["attempt"], id);
    assert!(
        !events.iter().any(|e| e["type"] == "credential.revoked"),
        "{point}: the previous credential was never announced as revoked"
    );
}

/// The daemon parks a credential whose verification keeps failing, killed right after.
async fn park_crash_then_recover(point: &str) {
    let s = Stack::with(StackOptions {
        max_age: "2s",
        revocation_delay_ms: 0,
        ..Default::default()
    })
    .await;
    let (_, old) = s.current().await;
    tokio::time::sleep(Duration::from_millis(2100)).await; // due
    s.admin
        .set_fault(FaultSpec::new(
            "storefront_graphql",
            FaultMode::Error { status: 401 },
        ))
        .await
        .unwrap();
    let before = s.admin.counters().await.unwrap();
    let out = s
        .cli(
            &["run", "--once", "--failure-budget", "1"],
            &[("SECRET_ROTATOR_CRASH_AT", point)],
        )
        .await;
    assert_eq!(out.signal, Some(9), "{point}: must die there: {out:?}");
    let out = s
        .cli(&["run", "--once", "--failure-budget", "1"], &[])
        .await;
    assert_eq!(out.code, Some(0), "{point}: {out:?}");

    let after = s.admin.counters().await.unwrap();
    assert_eq!(
        after.tokens_minted - before.tokens_minted,
        1,
        "{point}: one attempt"
    );
    assert_eq!(
        after.tokens_revoked - before.tokens_revoked,
        1,
        "{point}: its token revoked"
    );
    assert_eq!(s.current().await, (1, old), "{point}: the secret unchanged");
    let out = s.cli(&["status", "--json", "--check"], &[]).await;
    assert_eq!(out.code, Some(1), "{point}: {out:?}");
    assert!(out.stdout.contains("parked since"), "{point}: {out:?}");
    assert!(
        s.events()
            .iter()
            .any(|e| e["type"] == "rotation.needs_attention"),
        "{point}: the parking was announced"
    );
}

const STORE_CRED: &str = "store-account";
const STORE_PATH: &str = "bigcommerce/store-account";

/// The assisted matrix: a store-level account rotated by a person (the emulator's admin API),
/// the binary killed at `point`, then recovered as the daemon and the person would (`run
/// --once`, `supply` again when nothing was recorded, `confirm-revoked` once the old account is
/// deleted). Afterwards: the new account is the secret's version 2, the old one is rejected,
/// `rotation.due`, `credential.rotated` and `credential.revoked` were each announced (in that
/// order, at least once), and the record is idle with the attempt rotated.
async fn assisted_crash_then_recover(point: &str) {
    use bigcommerce_emulator::{Access, Resource, Scopes};
    let s = Stack::with(StackOptions {
        root_token: true,
        grace: "30m",
        ..Default::default()
    })
    .await;
    let base = s.emu.base_url();
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text.push_str(&format!(
        r#"
[[credentials]]
name = "{STORE_CRED}"
path = "{STORE_PATH}"
[credentials.bigcommerce_store_account]
store_hash = "abc123"
api_url = "{base}"
required_scopes = {{ orders = "modify" }}
"#
    ));
    std::fs::write(&s.config, text).unwrap();
    let scopes = Scopes::none()
        .with(Resource::Orders, Access::Modify)
        .with(Resource::InformationAndSettings, Access::ReadOnly);
    let old = s
        .admin
        .create_api_account("abc123", "app-v1", scopes.clone())
        .await
        .unwrap();
    s.bao
        .write_secret(
            "secret",
            STORE_PATH,
            json!({ "client_id": old.client_id, "access_token": old.access_token }),
        )
        .await;
    let new = s
        .admin
        .create_api_account("abc123", "app-v2", scopes)
        .await
        .unwrap();
    let crash = [("SECRET_ROTATOR_CRASH_AT", point)];
    let input = json!({ "client_id": new.client_id, "access_token": new.access_token }).to_string();
    let killed = |out: &common::stack::Output| {
        assert_eq!(out.signal, Some(9), "{point}: not killed: {out:?}");
    };
    match point {
        "due-emitted" => {
            killed(&s.cli(&["rotate", STORE_CRED], &crash).await);
            let out = s.cli(&["run", "--once"], &[]).await;
            assert_eq!(out.code, Some(0), "{out:?}");
            let out = supply(&s, &input, &[]).await;
            assert_eq!(out.code, Some(0), "{point}: {out:?}");
        }
        "supply-verified" | "supply-recorded" | "old-deletion-recorded" => {
            let out = s.cli(&["rotate", STORE_CRED], &[]).await;
            assert_eq!(out.code, Some(0), "{out:?}");
            killed(&supply(&s, &input, &crash).await);
            if point == "supply-verified" {
                // Nothing was written: the person runs `supply` again.
                let out = supply(&s, &input, &[]).await;
                assert_eq!(out.code, Some(0), "{point}: {out:?}");
            } else {
                let out = s.cli(&["run", "--once"], &[]).await;
                assert_eq!(out.code, Some(0), "{out:?}");
            }
        }
        "old-alive-recorded" => {
            let out = supply(&s, &input, &[]).await;
            assert_eq!(out.code, Some(0), "{out:?}");
            tokio::time::sleep(Duration::from_secs(3)).await;
            killed(&s.cli(&["run", "--once"], &crash).await);
            let out = s.cli(&["run", "--once"], &[]).await;
            assert_eq!(out.code, Some(0), "{out:?}");
        }
        "cancel-recorded" => {
            // `cancel` is killed once its end of the attempt is recorded: the attempt is over
            // (a second `cancel` finds nothing in flight), announced once, and a later supply
            // starts an attempt of its own.
            let out = s.cli(&["rotate", STORE_CRED], &[]).await;
            assert_eq!(out.code, Some(0), "{out:?}");
            killed(&s.cli(&["cancel", STORE_CRED], &crash).await);
            let out = s.cli(&["cancel", STORE_CRED], &[]).await;
            assert_eq!(out.code, Some(4), "{point}: {out:?}");
            assert!(out.stderr.contains("no rotation is in flight"), "{out:?}");
            let out = s.cli(&["run", "--once"], &[]).await;
            assert_eq!(out.code, Some(0), "{out:?}");
            let cancelled: Vec<Value> = s
                .events()
                .into_iter()
                .filter(|e| e["type"] == "rotation.cancelled")
                .collect();
            assert_eq!(cancelled.len(), 1, "{point}: {cancelled:?}");
            let out = supply(&s, &input, &[]).await;
            assert_eq!(out.code, Some(0), "{point}: {out:?}");
        }
        other => panic!("no assisted case for {other}"),
    }
    let v = s
        .bao
        .root("GET", &format!("secret/data/{STORE_PATH}"), None)
        .await;
    assert_eq!(v["data"]["metadata"]["version"], 2, "{point}");
    assert_eq!(
        v["data"]["data"]["access_token"],
        new.access_token.as_str(),
        "{point}"
    );
    let types = |s: &Stack| -> Vec<String> {
        s.events()
            .iter()
            .filter(|e| e["data"]["credential"] == STORE_CRED)
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        !types(&s).contains(&"credential.revoked".to_string()),
        "{point}: revoked while the old account lives"
    );
    s.admin
        .delete_api_account("abc123", &old.client_id)
        .await
        .unwrap();
    let out = s.cli(&["confirm-revoked", STORE_CRED], &[]).await;
    assert_eq!(out.code, Some(0), "{point}: {out:?}");
    let seen = types(&s);
    let first = |t: &str| seen.iter().position(|x| x == t);
    let rotated = first("credential.rotated").unwrap_or_else(|| panic!("{point}: {seen:?}"));
    let revoked = first("credential.revoked").unwrap_or_else(|| panic!("{point}: {seen:?}"));
    assert!(rotated < revoked, "{point}: {seen:?}");
    // Supplied before it fell due (`old-alive-recorded`): no `rotation.due` then.
    if point != "old-alive-recorded" {
        let due = first("rotation.due").unwrap_or_else(|| panic!("{point}: {seen:?}"));
        assert!(due < rotated, "{point}: {seen:?}");
    }
    let out = s.cli(&["history", STORE_CRED, "--json"], &[]).await;
    let h: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(h["in_flight"].is_null(), "{point}: {h}");
    let attempts = h["attempts"].as_array().unwrap();
    assert_eq!(attempts.last().unwrap()["outcome"], "rotated");
    let before: Vec<&Value> = attempts[..attempts.len() - 1]
        .iter()
        .map(|a| &a["outcome"])
        .collect();
    if point == "cancel-recorded" {
        assert_eq!(before, [&json!("cancelled")], "{point}: {h}");
    } else {
        assert!(before.is_empty(), "{point}: one attempt: {h}");
    }
}

/// `supply store-account` with `input` on stdin.
async fn supply(s: &Stack, input: &str, env: &[(&str, &str)]) -> common::stack::Output {
    use std::os::unix::process::ExitStatusExt;
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(common::binary());
    cmd.arg("--config")
        .arg(&s.config)
        .arg("--events-file")
        .arg(&s.events)
        .args(["supply", STORE_CRED])
        .env("VAULT_TOKEN", &s.token)
        .env("SECRET_ROTATOR_INSTANCE_ID", "test-instance")
        .env_remove("SECRET_ROTATOR_CRASH_AT")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    common::stack::Output {
        code: out.status.code(),
        signal: out.status.signal(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

macro_rules! crash_cases {
    ($($name:ident => $point:literal),* ; $($rb_name:ident => $rb_point:literal),* ; $($p_name:ident => $p_point:literal),* ; $($a_name:ident => $a_point:literal),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                crash_then_recover($point).await;
            }
        )*
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $rb_name() {
                rollback_crash_then_recover($rb_point).await;
            }
        )*

        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $p_name() {
                park_crash_then_recover($p_point).await;
            }
        )*

        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $a_name() {
                assisted_crash_then_recover($a_point).await;
            }
        )*

        /// Every crash point the engine has is in this matrix: none is skipped.
        #[test]
        fn the_matrix_covers_every_crash_point() {
            let covered = [$($point),* , $($rb_point),* , $($p_point),* , $($a_point),*];
            assert_eq!(covered.as_slice(), POINTS);
        }
    };
}

crash_cases! {
    killed_after_minting_recorded => "minting-recorded",
    killed_after_mint_before_recording_it => "minted",
    killed_after_minted_recorded => "minted-recorded",
    killed_after_verification => "verified",
    killed_after_commit => "committed",
    killed_after_rotated_event => "rotated-emitted",
    killed_after_rotated_is_delivered_ahead_of_notified => "ahead-of-notified",
    killed_after_notified_recorded => "notified-recorded",
    killed_after_revoke_sent => "revoke-sent",
    killed_after_revocation_verified => "revocation-verified",
    killed_after_revoked_event => "revoked-emitted",
    killed_after_revoked_is_delivered_ahead_of_the_end => "ahead-of-end",
    killed_after_finished => "finished",
    killed_after_a_retry_is_recorded => "retry-recorded",
    killed_after_dependents_accepted_an_event => "delivered",
    killed_after_a_delivery_is_recorded => "delivery-recorded";
    rollback_killed_after_its_intent_is_recorded => "rollback-recorded",
    rollback_killed_after_the_previous_token_is_written_back => "rollback-written",
    rollback_killed_after_the_rolled_back_event => "rollback-emitted",
    rollback_killed_after_the_newer_token_is_revoked => "rollback-revoked";
    killed_right_after_parking_a_credential => "parked-recorded";
    assisted_killed_after_rotation_due_is_emitted => "due-emitted",
    assisted_killed_after_a_supply_is_verified => "supply-verified",
    assisted_killed_after_a_supply_is_recorded => "supply-recorded",
    assisted_killed_after_the_commit_is_recorded => "old-deletion-recorded",
    assisted_killed_while_waiting_for_the_old_account_to_die => "old-alive-recorded",
    cancel_killed_after_the_end_of_the_attempt_is_recorded => "cancel-recorded",
}

/// The immediate path (grace 0, no ack): every crash point it passes. It makes no `notified`
/// write, so a crash after the commit resumes in `minted` and finds the commit in the secret.
macro_rules! immediate_cases {
    ($($name:ident => $point:literal),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                crash_on_path($point, Path::Immediate).await;
            }
        )*

        /// The immediate path's cases are the crash points of a rotation from `minting` to its
        /// end, less `ahead-of-notified` and `notified-recorded`, which it never reaches.
        #[test]
        fn the_immediate_path_covers_every_crash_point_it_passes() {
            let first = POINTS.iter().position(|p| *p == "minting-recorded").unwrap();
            let last = POINTS.iter().position(|p| *p == "finished").unwrap();
            let passed: Vec<&str> = POINTS[first..=last]
                .iter()
                .copied()
                .filter(|p| !["ahead-of-notified", "notified-recorded"].contains(p))
                .collect();
            assert_eq!([$($point),*].as_slice(), passed.as_slice());
        }
    };
}

immediate_cases! {
    immediate_killed_after_minting_recorded => "minting-recorded",
    immediate_killed_after_mint_before_recording_it => "minted",
    immediate_killed_after_minted_recorded => "minted-recorded",
    immediate_killed_after_verification => "verified",
    immediate_killed_after_commit => "committed",
    immediate_killed_after_rotated_event => "rotated-emitted",
    immediate_killed_after_revoke_sent => "revoke-sent",
    immediate_killed_after_revocation_verified => "revocation-verified",
    immediate_killed_after_revoked_event => "revoked-emitted",
    immediate_killed_after_both_events_are_delivered_ahead_of_the_end => "ahead-of-end",
    immediate_killed_after_finished => "finished",
}

/// Grace 0 with a file dependent whose ack holds the revocation: `rotated` is delivered ahead of
/// any write, the ack comes with it, and no `notified` write is made; a crash resumes in
/// `minted`, delivers `rotated` again and takes the ack again before revoking.
macro_rules! acked_cases {
    ($($name:ident => $point:literal),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                crash_on_path($point, Path::Acked).await;
            }
        )*

        /// The path's cases are the crash points of a rotation from `minting` to its end, less
        /// `notified-recorded`, which it never reaches.
        #[test]
        fn the_acked_path_covers_every_crash_point_it_passes() {
            let first = POINTS.iter().position(|p| *p == "minting-recorded").unwrap();
            let last = POINTS.iter().position(|p| *p == "finished").unwrap();
            let passed: Vec<&str> = POINTS[first..=last]
                .iter()
                .copied()
                .filter(|p| *p != "notified-recorded")
                .collect();
            assert_eq!([$($point),*].as_slice(), passed.as_slice());
        }
    };
}

acked_cases! {
    acked_killed_after_minting_recorded => "minting-recorded",
    acked_killed_after_mint_before_recording_it => "minted",
    acked_killed_after_minted_recorded => "minted-recorded",
    acked_killed_after_verification => "verified",
    acked_killed_after_commit => "committed",
    acked_killed_after_rotated_event => "rotated-emitted",
    acked_killed_after_the_ack_came_ahead_of_any_write => "ahead-of-notified",
    acked_killed_after_revoke_sent => "revoke-sent",
    acked_killed_after_revocation_verified => "revocation-verified",
    acked_killed_after_revoked_event => "revoked-emitted",
    acked_killed_after_revoked_is_delivered_ahead_of_the_end => "ahead-of-end",
    acked_killed_after_finished => "finished",
}
