//! Assisted rotation end to end: a real OpenBao, the emulator's control-panel admin API playing
//! the person, and the real binary (`rotate`, `supply`, `confirm-revoked`, `pause`, `resume`,
//! `status`, `run`).

mod common;

use std::time::Duration;

use bigcommerce_emulator::{demo, Access, Resource, Scopes};
use common::receiver::HookReceiver;
use common::stack::{Output, Stack, StackOptions, STORE, WEBHOOK_KEY_PATH};
use serde_json::{json, Value};

const KEY: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const STORE_CRED: &str = "store-account";
const STORE_PATH: &str = "bigcommerce/store-account";
const LEGACY_CRED: &str = "legacy";
const LEGACY_PATH: &str = "bigcommerce/legacy";
const USER_CRED: &str = "user-token";
const USER_PATH: &str = "bigcommerce/user-token";

/// A stack with the three assisted credentials (and a webhook on the store account), run with
/// the root token; `defaults` adds `[defaults]` lines.
async fn stack(defaults: &'static str, hook: &HookReceiver) -> Stack {
    let base_placeholder = "{BASE}";
    let s = Stack::with(StackOptions {
        root_token: true,
        // Long enough that the old store account is not reported alive past it in these tests.
        grace: "30m",
        extra_defaults: defaults,
        dependents: String::new(),
        ..Default::default()
    })
    .await;
    let base = s.emu.base_url();
    let extra = format!(
        r#"
[[credentials]]
name = "{STORE_CRED}"
path = "{STORE_PATH}"
[credentials.bigcommerce_store_account]
store_hash = "{STORE}"
api_url = "{base_placeholder}"
required_scopes = {{ information_and_settings = "read-only", orders = "modify" }}
[[credentials.dependents]]
type = "webhook"
name = "hook"
url = "{hook}"
signing_key = {{ path = "{WEBHOOK_KEY_PATH}", key = "signing_key" }}

[[credentials]]
name = "{LEGACY_CRED}"
path = "{LEGACY_PATH}"
[credentials.bigcommerce_legacy_account]
store_hash = "{STORE}"
username = "{legacy}"
api_path = "{base_placeholder}/store-{STORE}/api/v2/"

[[credentials]]
name = "{USER_CRED}"
path = "{USER_PATH}"
[credentials.bigcommerce_user_token]
store_hash = "{STORE}"
username = "{user}"
api_path = "{base_placeholder}/store-{STORE}/api/v2/"
"#,
        hook = hook.url,
        legacy = demo::LEGACY_USERNAME,
        user = demo::USER_USERNAME,
    )
    .replace(base_placeholder, &base);
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text.push_str(&extra);
    std::fs::write(&s.config, text).unwrap();
    s.bao
        .write_secret("secret", WEBHOOK_KEY_PATH, json!({ "signing_key": KEY }))
        .await;
    s
}

fn api_path(s: &Stack) -> String {
    format!("{}/store-{STORE}/api/v2/", s.emu.base_url())
}

/// `supply NAME` with `input` on stdin.
async fn supply(s: &Stack, name: &str, input: &Value) -> Output {
    cli_with_stdin(s, &["supply", name], &input.to_string()).await
}

async fn cli_with_stdin(s: &Stack, args: &[&str], stdin: &str) -> Output {
    use std::os::unix::process::ExitStatusExt;
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(common::binary())
        .arg("--config")
        .arg(&s.config)
        .arg("--events-file")
        .arg(&s.events)
        .args(args)
        .env("VAULT_TOKEN", &s.token)
        .env("SECRET_ROTATOR_INSTANCE_ID", "test-instance")
        .env_remove("SECRET_ROTATOR_CRASH_AT")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("secret-rotator did not finish within 120 s")
        .unwrap();
    Output {
        code: out.status.code(),
        signal: out.status.signal(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The secret's version and data, read as root.
async fn secret(s: &Stack, path: &str) -> (u64, Value) {
    let v = s
        .bao
        .root("GET", &format!("secret/data/{path}"), None)
        .await;
    (
        v["data"]["metadata"]["version"].as_u64().unwrap(),
        v["data"]["data"].clone(),
    )
}

/// The types of the events the binary emitted about `cred`, in order.
fn event_types(s: &Stack, cred: &str) -> Vec<String> {
    s.events()
        .iter()
        .filter(|e| e["credential"] == cred)
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

async fn status_row(s: &Stack, cred: &str) -> Value {
    let out = s.cli(&["status", "--json"], &[]).await;
    let rows: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"));
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == cred)
        .unwrap()
        .clone()
}

/// The record as root reads it (to prove a refused supply wrote nothing).
async fn record(s: &Stack, cred: &str) -> Value {
    s.bao
        .root(
            "GET",
            &format!("secret/data/secret-rotator/credentials/{cred}"),
            None,
        )
        .await["data"]
        .clone()
}

fn scopes(orders: Access) -> Scopes {
    Scopes::none()
        .with(Resource::InformationAndSettings, Access::ReadOnly)
        .with(Resource::Orders, orders)
}

fn assert_no_secret(out: &Output, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "a secret in the output: {out:?}"
        );
    }
}

#[tokio::test]
async fn a_store_account_is_due_supplied_verified_by_scope_and_revoked_only_once_the_old_account_is_deleted(
) {
    let hook = HookReceiver::start(KEY).await;
    let s = stack("", &hook).await;
    let old = s
        .admin
        .create_api_account(STORE, "app-v1", scopes(Access::Modify))
        .await
        .unwrap();
    s.bao
        .write_secret(
            "secret",
            STORE_PATH,
            json!({ "client_id": old.client_id, "access_token": old.access_token }),
        )
        .await;

    // Due: rotation.due to the log and the dependents, with the steps and the exact scopes.
    let out = s.cli(&["rotate", STORE_CRED], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("awaiting supply since"), "{out:?}");
    assert_eq!(event_types(&s, STORE_CRED), ["rotation.due"]);
    assert!(
        hook.wait_for(Duration::from_secs(30), |h| h
            .iter()
            .any(|h| h.kind == "rotation.due"))
            .await
    );
    let due = hook
        .hits()
        .into_iter()
        .find(|h| h.kind == "rotation.due")
        .unwrap();
    assert!(due.verified);
    assert_eq!(
        due.body["data"]["scopes"],
        json!(["Information & Settings: read-only", "Orders: modify"])
    );
    let steps = due.body["data"]["steps"].to_string();
    assert!(steps.contains("Store-level API accounts"), "{steps}");
    assert!(steps.contains("webhooks"), "{steps}");
    let row = status_row(&s, STORE_CRED).await;
    assert!(row["awaiting_supply"]["deadline"].is_string(), "{row}");
    let table = s.cli(&["status"], &[]).await.stdout;
    assert!(table.contains("awaiting supply since"), "{table}");

    // A second account missing one scope: rejected naming it, nothing written.
    let before = record(&s, STORE_CRED).await;
    let narrow = s
        .admin
        .create_api_account(STORE, "app-v2-narrow", scopes(Access::ReadOnly))
        .await
        .unwrap();
    let out = supply(
        &s,
        STORE_CRED,
        &json!({ "client_id": narrow.client_id, "access_token": narrow.access_token }),
    )
    .await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(
        out.stderr.contains("missing scope orders (modify)"),
        "{out:?}"
    );
    assert!(out.stderr.contains("nothing was written"), "{out:?}");
    assert_no_secret(&out, &[&narrow.access_token]);
    // A mistyped token: rejected (401), nothing written.
    let good = s
        .admin
        .create_api_account(STORE, "app-v2", scopes(Access::Modify))
        .await
        .unwrap();
    // The last character changed (to one it is not: a token ending in "x" stays mistyped).
    let (head, last) = good.access_token.split_at(good.access_token.len() - 1);
    let mistyped = format!("{head}{}", if last == "x" { "y" } else { "x" });
    let out = supply(
        &s,
        STORE_CRED,
        &json!({ "client_id": good.client_id, "access_token": mistyped }),
    )
    .await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(out.stderr.contains("401"), "{out:?}");
    // A field missing: refused before any request.
    let out = supply(&s, STORE_CRED, &json!({ "client_id": good.client_id })).await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(out.stderr.contains("access_token"), "{out:?}");
    assert_eq!(
        record(&s, STORE_CRED).await,
        before,
        "a refused supply writes nothing"
    );
    assert_eq!(secret(&s, STORE_PATH).await.0, 1);

    // The good one: committed and announced; the old account still lives, so no `revoked`.
    let out = supply(
        &s,
        STORE_CRED,
        &json!({
            "client_id": good.client_id,
            "access_token": good.access_token,
            "client_secret": good.client_secret,
        }),
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("waiting for the old account"),
        "{out:?}"
    );
    assert_no_secret(&out, &[&good.access_token, &good.client_secret]);
    let (version, data) = secret(&s, STORE_PATH).await;
    assert_eq!(
        (version, data["access_token"].as_str()),
        (2, Some(good.access_token.as_str()))
    );
    assert_eq!(
        event_types(&s, STORE_CRED),
        ["rotation.due", "credential.rotated"]
    );
    let out = s.cli(&["confirm-revoked", STORE_CRED], &[]).await;
    assert_eq!(out.code, Some(4), "the old account is alive: {out:?}");
    assert!(
        out.stderr.contains("still accepts the old credential"),
        "{out:?}"
    );
    let out = s.cli(&["run", "--once"], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        event_types(&s, STORE_CRED),
        ["rotation.due", "credential.rotated"]
    );

    // The person deletes the old account; `confirm-revoked` checks and ends the rotation.
    s.admin
        .delete_api_account(STORE, &old.client_id)
        .await
        .unwrap();
    let out = s.cli(&["confirm-revoked", STORE_CRED], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("rotated"), "{out:?}");
    assert_eq!(
        event_types(&s, STORE_CRED),
        ["rotation.due", "credential.rotated", "credential.revoked"]
    );
    let revoked = s
        .events()
        .into_iter()
        .find(|e| e["type"] == "credential.revoked" && e["credential"] == STORE_CRED)
        .unwrap();
    assert!(revoked["detail"].as_str().unwrap().contains("webhooks"));
    let row = status_row(&s, STORE_CRED).await;
    assert!(
        row["rotation"].is_null() && row["awaiting_supply"].is_null(),
        "{row}"
    );
    assert!(
        hook.wait_for(Duration::from_secs(30), |h| h
            .iter()
            .any(|h| h.kind == "credential.revoked"))
            .await
    );
}

#[tokio::test]
async fn the_daemon_polls_the_old_store_account_until_it_is_deleted() {
    let hook = HookReceiver::start(KEY).await;
    let s = stack("", &hook).await;
    let old = s
        .admin
        .create_api_account(STORE, "app-v1", scopes(Access::Modify))
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
        .create_api_account(STORE, "app-v2", scopes(Access::Modify))
        .await
        .unwrap();
    // Supplied before it fell due: an attempt of its own.
    let out = supply(
        &s,
        STORE_CRED,
        &json!({ "client_id": new.client_id, "access_token": new.access_token }),
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let mut daemon = s.daemon(&["run", "--interval", "1s"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!event_types(&s, STORE_CRED).contains(&"credential.revoked".to_string()));
    s.admin
        .delete_api_account(STORE, &old.client_id)
        .await
        .unwrap();
    let start = std::time::Instant::now();
    while !event_types(&s, STORE_CRED).contains(&"credential.revoked".to_string()) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no revoked: {}",
            s.daemon_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    daemon.kill().await.unwrap();
    assert_eq!(
        event_types(&s, STORE_CRED),
        ["credential.rotated", "credential.revoked"]
    );
}

/// Legacy account or user token: regenerate in the control panel, supply, old rejected, then
/// `rotated` and `revoked` in that order.
async fn basic_auth_flow(cred: &str, path: &str, username: &str, first: &str, user: bool) {
    let hook = HookReceiver::start(KEY).await;
    let s = stack("", &hook).await;
    let api = api_path(&s);
    s.bao
        .write_secret(
            "secret",
            path,
            json!({ "username": username, "token": first, "api_path": api }),
        )
        .await;
    let out = s.cli(&["rotate", cred], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("awaiting supply"), "{out:?}");
    let before = record(&s, cred).await;
    // The token already stored, a mistyped one, a wrong API path: refused, nothing written.
    let input =
        |token: &str, api: &str| json!({ "username": username, "token": token, "api_path": api });
    let out = supply(&s, cred, &input(first, &api)).await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(out.stderr.contains("already stored"), "{out:?}");
    let out = supply(
        &s,
        cred,
        &input("0123456789abcdef0123456789abcdef01234567", &api),
    )
    .await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(out.stderr.contains("401"), "{out:?}");
    let out = supply(&s, cred, &input(first, "https://elsewhere.example/api/v2/")).await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(out.stderr.contains("api_path"), "{out:?}");
    assert_eq!(record(&s, cred).await, before);

    // The person regenerates the token; the old one dies at once.
    let view = if user {
        s.admin
            .regenerate_user_token(STORE, username)
            .await
            .unwrap()
    } else {
        s.admin
            .regenerate_legacy_token(STORE, username)
            .await
            .unwrap()
    };
    let out = supply(&s, cred, &input(&view.token, &api)).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("rotated"), "{out:?}");
    assert_no_secret(&out, &[&view.token]);
    let (version, data) = secret(&s, path).await;
    assert_eq!(
        (version, data["token"].as_str()),
        (2, Some(view.token.as_str()))
    );
    assert_eq!(
        event_types(&s, cred),
        ["rotation.due", "credential.rotated", "credential.revoked"]
    );
}

#[tokio::test]
async fn a_legacy_account_token_is_regenerated_supplied_and_the_old_one_proven_dead() {
    basic_auth_flow(
        LEGACY_CRED,
        LEGACY_PATH,
        demo::LEGACY_USERNAME,
        demo::LEGACY_TOKEN,
        false,
    )
    .await;
}

#[tokio::test]
async fn a_user_token_is_regenerated_supplied_and_the_old_one_proven_dead() {
    basic_auth_flow(
        USER_CRED,
        USER_PATH,
        demo::USER_USERNAME,
        demo::USER_TOKEN,
        true,
    )
    .await;
}

#[tokio::test]
async fn a_token_regenerated_outside_the_daemon_is_drift_within_one_drift_interval() {
    let hook = HookReceiver::start(KEY).await;
    let s = stack("drift_interval = \"2s\"", &hook).await;
    let api = api_path(&s);
    for (path, username, token) in [
        (LEGACY_PATH, demo::LEGACY_USERNAME, demo::LEGACY_TOKEN),
        (USER_PATH, demo::USER_USERNAME, demo::USER_TOKEN),
    ] {
        s.bao
            .write_secret(
                "secret",
                path,
                json!({ "username": username, "token": token, "api_path": api }),
            )
            .await;
    }
    let mut daemon = s.daemon(&["run", "--interval", "1s"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!event_types(&s, LEGACY_CRED).contains(&"credential.drift".to_string()));
    s.admin
        .regenerate_legacy_token(STORE, demo::LEGACY_USERNAME)
        .await
        .unwrap();
    s.admin
        .regenerate_user_token(STORE, demo::USER_USERNAME)
        .await
        .unwrap();
    let regenerated = std::time::Instant::now();
    for cred in [LEGACY_CRED, USER_CRED] {
        while !event_types(&s, cred).contains(&"credential.drift".to_string()) {
            assert!(
                regenerated.elapsed() < Duration::from_secs(2 + 2),
                "no drift within one interval (plus a pass): {}",
                s.daemon_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    daemon.kill().await.unwrap();
    for cred in [LEGACY_CRED, USER_CRED] {
        // Drift, then a supply is asked for.
        assert_eq!(
            event_types(&s, cred),
            ["credential.drift", "rotation.due"],
            "{cred}"
        );
        let row = status_row(&s, cred).await;
        assert_eq!(row["drift"]["version"], 1, "{row}");
        assert!(row["awaiting_supply"].is_object(), "{row}");
    }
    let out = s.cli(&["status", "--check"], &[]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("drift since"), "{out:?}");
    // Supplying the regenerated token clears the drift.
    let token = s.admin.legacy_accounts(STORE).await.unwrap()[0]
        .token
        .clone();
    let out = supply(
        &s,
        LEGACY_CRED,
        &json!({ "username": demo::LEGACY_USERNAME, "token": token, "api_path": api }),
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(status_row(&s, LEGACY_CRED).await["drift"].is_null());
}

#[tokio::test]
async fn a_paused_credential_is_not_rotated_by_rotate_or_the_daemon_until_resumed() {
    let hook = HookReceiver::start(KEY).await;
    let s = stack("", &hook).await;
    s.bao
        .write_secret(
            "secret",
            LEGACY_PATH,
            json!({ "username": demo::LEGACY_USERNAME, "token": demo::LEGACY_TOKEN, "api_path": api_path(&s) }),
        )
        .await;
    let out = s.cli(&["pause", LEGACY_CRED], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let row = status_row(&s, LEGACY_CRED).await;
    assert_eq!(row["paused"]["by"], "test-instance", "{row}");
    assert!(s
        .cli(&["status"], &[])
        .await
        .stdout
        .contains("PAUSED since"));
    let out = s.cli(&["rotate", LEGACY_CRED], &[]).await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(out.stdout.contains("paused"), "{out:?}");
    // Missing-version due would start an attempt; paused, the daemon does nothing.
    s.bao
        .root("DELETE", &format!("secret/metadata/{LEGACY_PATH}"), None)
        .await;
    let out = s.cli(&["run", "--once"], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(event_types(&s, LEGACY_CRED).is_empty());
    let out = s.cli(&["resume", LEGACY_CRED], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = s.cli(&["run", "--once"], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(event_types(&s, LEGACY_CRED), ["rotation.due"]);
    assert!(status_row(&s, LEGACY_CRED).await["paused"].is_null());
}
