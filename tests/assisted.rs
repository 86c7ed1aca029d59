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
        .filter(|e| e["data"]["credential"] == cred)
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
        out.stdout
            .contains("delete the old store-level API account"),
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
        .find(|e| e["type"] == "credential.revoked" && e["data"]["credential"] == STORE_CRED)
        .unwrap();
    assert!(revoked["data"]["reason"]
        .as_str()
        .unwrap()
        .contains("webhooks"));
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
    assert!(out.stderr.contains("the credential stored now"), "{out:?}");
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
    // Only the token: the username and API path default to the configured ones, as at the
    // prompt.
    let out = supply(&s, cred, &json!({ "token": view.token })).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains("not supplied, taken from the config: username, api_path"),
        "{out:?}"
    );
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

// --- Issue 18: the slips a tired operator makes -------------------------------------------------

/// Writes the store account's current secret (with its client_secret) and returns the account.
async fn store_account_in_vault(s: &Stack) -> bigcommerce_emulator::admin_api::ApiAccountView {
    let old = s
        .admin
        .create_api_account(STORE, "app-v1", scopes(Access::Modify))
        .await
        .unwrap();
    s.bao
        .write_secret(
            "secret",
            STORE_PATH,
            json!({
                "client_id": old.client_id,
                "access_token": old.access_token,
                "client_secret": old.client_secret,
            }),
        )
        .await;
    old
}

#[tokio::test]
async fn the_current_store_account_supplied_as_the_new_one_is_refused_naming_it_and_nothing_is_written(
) {
    let hook = HookReceiver::start(KEY).await;
    let s = stack("", &hook).await;
    let old = store_account_in_vault(&s).await;
    let out = s.cli(&["rotate", STORE_CRED], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let before = record(&s, STORE_CRED).await;

    // (what the tired operator typed, what the refusal must say)
    let cases = [
        // Enter at the client_secret prompt: the same account, one optional field fewer.
        (
            json!({ "client_id": old.client_id, "access_token": old.access_token }),
            vec![
                format!("client_id {}", old.client_id),
                "create a new store-level API account".into(),
                "`secret-rotator cancel store-account`".into(),
            ],
        ),
        // Everything of the current account, padded with blanks.
        (
            json!({ "client_id": format!(" {} ", old.client_id), "access_token": old.access_token,
                    "client_secret": old.client_secret }),
            vec![format!("client_id {}", old.client_id)],
        ),
    ];
    for (input, says) in cases {
        let out = supply(&s, STORE_CRED, &input).await;
        assert_eq!(out.code, Some(4), "{out:?}");
        for text in &says {
            assert!(out.stderr.contains(text.as_str()), "{text:?} in {out:?}");
        }
        assert!(out.stderr.contains("nothing was written"), "{out:?}");
        assert_no_secret(&out, &[&old.access_token, &old.client_secret]);
    }
    assert_eq!(record(&s, STORE_CRED).await, before, "nothing written");
    assert_eq!(secret(&s, STORE_PATH).await.0, 1);
    assert_eq!(event_types(&s, STORE_CRED), ["rotation.due"]);
    // The live account still works: nobody was told to delete it.
    assert!(s
        .admin
        .api_accounts(STORE)
        .await
        .unwrap()
        .iter()
        .any(|a| a.client_id == old.client_id));

    // A new account without its client_secret would keep the old account's: refused too.
    let new = s
        .admin
        .create_api_account(STORE, "app-v2", scopes(Access::Modify))
        .await
        .unwrap();
    let out = supply(
        &s,
        STORE_CRED,
        &json!({ "client_id": new.client_id, "access_token": new.access_token }),
    )
    .await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(out.stderr.contains("client_secret"), "{out:?}");
    assert_eq!(record(&s, STORE_CRED).await, before, "nothing written");

    // The new one, named: committed, and the output names the old account to delete.
    let out = supply(
        &s,
        STORE_CRED,
        &json!({ "client_id": new.client_id, "access_token": new.access_token,
                 "client_secret": new.client_secret, "account_name": "app-v2" }),
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains(&old.client_id), "{out:?}");
    let (version, data) = secret(&s, STORE_PATH).await;
    assert_eq!(version, 2);
    assert_eq!(data["client_secret"], json!(new.client_secret));
    let rotated = s
        .events()
        .into_iter()
        .find(|e| e["type"] == "credential.rotated" && e["data"]["credential"] == STORE_CRED)
        .unwrap();
    let detail = rotated["data"]["reason"].as_str().unwrap();
    assert!(detail.contains(&old.client_id), "{detail}");
    assert!(!detail.contains("regenerate"), "{detail}");
}

#[tokio::test]
async fn the_same_regenerated_token_supplied_twice_commits_one_version_and_the_credential_stays_healthy(
) {
    let hook = HookReceiver::start(KEY).await;
    let s = stack("", &hook).await;
    let api = api_path(&s);
    // A secret with a field of its own, which no supply sets.
    s.bao
        .write_secret(
            "secret",
            LEGACY_PATH,
            json!({ "username": demo::LEGACY_USERNAME, "token": demo::LEGACY_TOKEN,
                    "api_path": api, "note": "owned by team-export", "rotations": 3 }),
        )
        .await;
    let out = s.cli(&["rotate", LEGACY_CRED], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let view = s
        .admin
        .regenerate_legacy_token(STORE, demo::LEGACY_USERNAME)
        .await
        .unwrap();
    // The API path typed without its trailing slash, then again with one too many.
    let inputs = [api.trim_end_matches('/').to_string(), format!("{api}/")];
    let first = supply(
        &s,
        LEGACY_CRED,
        &json!({ "username": demo::LEGACY_USERNAME, "token": view.token, "api_path": inputs[0] }),
    )
    .await;
    assert_eq!(first.code, Some(0), "{first:?}");
    assert!(
        first.stdout.contains("rotated (version 1 -> 2)"),
        "{first:?}"
    );
    let again = supply(
        &s,
        LEGACY_CRED,
        &json!({ "username": demo::LEGACY_USERNAME, "token": view.token, "api_path": inputs[1] }),
    )
    .await;
    assert_eq!(again.code, Some(0), "{again:?}");
    assert!(
        again.stdout.contains("committed already as version 2")
            && again.stdout.contains("nothing to do"),
        "{again:?}"
    );
    assert_no_secret(&again, &[&view.token]);
    assert!(
        first
            .stdout
            .contains("kept from the current secret, as they were: note, rotations"),
        "{first:?}"
    );

    let (version, data) = secret(&s, LEGACY_PATH).await;
    assert_eq!(version, 2, "one version committed");
    assert_eq!(
        data,
        json!({ "username": demo::LEGACY_USERNAME, "token": view.token, "api_path": api,
                "note": "owned by team-export", "rotations": 3 }),
        "the API path normalised, the other fields kept as they were"
    );
    assert_eq!(
        event_types(&s, LEGACY_CRED),
        ["rotation.due", "credential.rotated", "credential.revoked"]
    );
    let row = status_row(&s, LEGACY_CRED).await;
    assert!(
        row["rotation"].is_null(),
        "no attempt left in flight: {row}"
    );
    assert_eq!(row["state"], "ok", "healthy: {row}");
    assert!(row["needs_attention"].is_null(), "healthy: {row}");
    // A later `run` finds nothing to do with it.
    let out = s.cli(&["run", "--once"], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(event_types(&s, LEGACY_CRED).len(), 3);
}

#[tokio::test]
async fn a_regenerated_token_of_a_user_who_may_read_orders_only_is_committed() {
    let hook = HookReceiver::start(KEY).await;
    let s = stack("", &hook).await;
    let api = api_path(&s);
    s.admin
        .set_user_permissions(
            STORE,
            demo::USER_USERNAME,
            Scopes::none().with(Resource::Orders, Access::ReadOnly),
        )
        .await
        .unwrap();
    s.bao
        .write_secret(
            "secret",
            USER_PATH,
            json!({ "username": demo::USER_USERNAME, "token": demo::USER_TOKEN, "api_path": api }),
        )
        .await;
    let out = s.cli(&["rotate", USER_CRED], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    // Save revoked the old token: only the new one can be stored now.
    let view = s
        .admin
        .regenerate_user_token(STORE, demo::USER_USERNAME)
        .await
        .unwrap();
    let out = supply(
        &s,
        USER_CRED,
        &json!({ "username": demo::USER_USERNAME, "token": view.token, "api_path": api }),
    )
    .await;
    assert_eq!(
        out.code,
        Some(0),
        "a 403 proves the store knows the token: {out:?}"
    );
    let (version, data) = secret(&s, USER_PATH).await;
    assert_eq!(
        (version, data["token"].as_str()),
        (2, Some(view.token.as_str()))
    );
    assert_eq!(
        event_types(&s, USER_CRED),
        ["rotation.due", "credential.rotated", "credential.revoked"]
    );
}

/// The user token's config table gets `lines` (e.g. `probe = "orders"`).
fn configure_user_token(s: &Stack, lines: &str) {
    let text = std::fs::read_to_string(&s.config).unwrap();
    let table = format!("username = \"{}\"\n", demo::USER_USERNAME);
    assert!(text.contains(&table));
    std::fs::write(
        &s.config,
        text.replace(&table, &format!("{table}{lines}\n")),
    )
    .unwrap();
}

#[tokio::test]
async fn permissions_are_checked_only_when_configured_and_a_store_that_cannot_answer_writes_nothing(
) {
    let hook = HookReceiver::start(KEY).await;
    let s = stack("", &hook).await;
    let api = api_path(&s);
    s.admin
        .set_user_permissions(
            STORE,
            demo::USER_USERNAME,
            Scopes::none().with(Resource::Orders, Access::ReadOnly),
        )
        .await
        .unwrap();
    s.bao
        .write_secret(
            "secret",
            USER_PATH,
            json!({ "username": demo::USER_USERNAME, "token": demo::USER_TOKEN, "api_path": api }),
        )
        .await;
    configure_user_token(
        &s,
        "probe = \"orders\"\nrequired_permissions = { orders = \"read-only\", products = \"read-only\" }",
    );
    let out = s.cli(&["check-config"], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = s.cli(&["rotate", USER_CRED], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let view = s
        .admin
        .regenerate_user_token(STORE, demo::USER_USERNAME)
        .await
        .unwrap();
    let input = json!({ "username": demo::USER_USERNAME, "token": view.token, "api_path": api });
    let before = record(&s, USER_CRED).await;

    // A permission the config asks for and the user lacks: named.
    let out = supply(&s, USER_CRED, &input).await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(
        out.stderr
            .contains("missing permission products (read-only)")
            && out.stderr.contains("grant Products: read-only"),
        "{out:?}"
    );
    // The store cannot answer now (429, 5xx): "could not verify now", nothing written.
    for status in [429, 503] {
        let fault = s
            .admin
            .set_fault(bigcommerce_emulator::FaultSpec {
                endpoint: "legacy_api".into(),
                mode: bigcommerce_emulator::FaultMode::Error { status },
                rate: 1.0,
                count: None,
            })
            .await
            .unwrap();
        let out = supply(&s, USER_CRED, &input).await;
        s.admin.clear_fault(fault.id).await.unwrap();
        assert_eq!(out.code, Some(4), "{status}: {out:?}");
        assert!(
            out.stderr.contains("could not be verified now"),
            "{status}: {out:?}"
        );
    }
    // A token pasted with a NUL or a line break: refused before anything is sent.
    let counters = s.admin.counters().await.unwrap();
    for broken in [format!("{}\u{0}", view.token), format!("{}\nx", view.token)] {
        let out = supply(
            &s,
            USER_CRED,
            &json!({ "username": demo::USER_USERNAME, "token": broken, "api_path": api }),
        )
        .await;
        assert_eq!(out.code, Some(4), "{out:?}");
        assert!(out.stderr.contains("control character"), "{out:?}");
        assert_no_secret(&out, &[&view.token]);
    }
    assert_eq!(
        s.admin.counters().await.unwrap(),
        counters,
        "no request reached the store"
    );
    assert_eq!(record(&s, USER_CRED).await, before, "nothing written");
    assert_eq!(secret(&s, USER_PATH).await.0, 1);

    // Granted in the control panel: committed.
    s.admin
        .set_user_permissions(
            STORE,
            demo::USER_USERNAME,
            Scopes::none()
                .with(Resource::Orders, Access::ReadOnly)
                .with(Resource::Products, Access::ReadOnly),
        )
        .await
        .unwrap();
    let out = supply(&s, USER_CRED, &input).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(secret(&s, USER_PATH).await.0, 2);
}

#[tokio::test]
async fn cancel_ends_an_assisted_rotation_where_that_is_safe_recorded_and_announced() {
    let hook = HookReceiver::start(KEY).await;
    let s = stack("", &hook).await;
    let old = store_account_in_vault(&s).await;

    // Nothing in flight: refused, naming what works.
    let out = s.cli(&["cancel", STORE_CRED], &[]).await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(out.stderr.contains("no rotation is in flight"), "{out:?}");

    // Waiting for a supply: ended, nothing written.
    let out = s.cli(&["rotate", STORE_CRED], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = s.cli(&["cancel", STORE_CRED], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains("nothing was written and version 1 stays current"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("`secret-rotator pause store-account`"),
        "{out:?}"
    );
    assert_eq!(
        event_types(&s, STORE_CRED),
        ["rotation.due", "rotation.cancelled"]
    );
    assert!(
        hook.wait_for(Duration::from_secs(30), |h| h
            .iter()
            .any(|h| h.kind == "rotation.cancelled"))
            .await
    );
    let h = s.cli(&["history", STORE_CRED, "--json"], &[]).await;
    let h: Value = serde_json::from_str(&h.stdout).unwrap();
    assert_eq!(
        h["attempts"].as_array().unwrap().last().unwrap()["outcome"],
        "cancelled"
    );
    assert!(status_row(&s, STORE_CRED).await["rotation"].is_null());
    assert_eq!(secret(&s, STORE_PATH).await.0, 1);

    // Waiting for the old account to be deleted: the new version stays; the old account is
    // named so that a person can delete it.
    let new = s
        .admin
        .create_api_account(STORE, "app-v2", scopes(Access::Modify))
        .await
        .unwrap();
    let out = supply(
        &s,
        STORE_CRED,
        &json!({ "client_id": new.client_id, "access_token": new.access_token,
                 "client_secret": new.client_secret }),
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = s.cli(&["cancel", STORE_CRED], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("version 2 stays current"), "{out:?}");
    assert!(
        out.stdout.contains(&format!("client_id {}", old.client_id)),
        "{out:?}"
    );
    assert_eq!(secret(&s, STORE_PATH).await.0, 2);
    assert!(status_row(&s, STORE_CRED).await["rotation"].is_null());
    // `confirm-revoked` has nothing to confirm now and says what works.
    let out = s.cli(&["confirm-revoked", STORE_CRED], &[]).await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(out.stderr.contains("`secret-rotator"), "{out:?}");
}

#[tokio::test]
async fn status_says_invalid_for_an_assisted_secret_without_a_string_token() {
    let hook = HookReceiver::start(KEY).await;
    let s = stack("", &hook).await;
    // (secret, what status must say)
    let cases = [
        (
            json!({ "username": demo::LEGACY_USERNAME, "api_path": api_path(&s) }),
            "has no token field",
        ),
        (
            json!({ "username": demo::LEGACY_USERNAME, "token": 7, "api_path": api_path(&s) }),
            "are not a string",
        ),
    ];
    for (data, says) in cases {
        s.bao.write_secret("secret", LEGACY_PATH, data).await;
        let row = status_row(&s, LEGACY_CRED).await;
        assert_eq!(row["state"], "invalid", "{row}");
        assert!(
            row["invalid"].as_str().unwrap().contains(says),
            "{says}: {row}"
        );
        let out = s.cli(&["status", "--check"], &[]).await;
        assert_eq!(out.code, Some(1), "{out:?}");
    }
}

#[tokio::test]
async fn a_current_secret_whose_token_is_not_a_string_fails_preflight() {
    let hook = HookReceiver::start(KEY).await;
    let s = stack("", &hook).await;
    s.bao
        .write_secret(
            "secret",
            LEGACY_PATH,
            json!({ "username": demo::LEGACY_USERNAME, "token": 12345, "api_path": api_path(&s) }),
        )
        .await;
    let out = s.cli(&["rotate", LEGACY_CRED], &[]).await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(
        out.stderr.contains("token") && out.stderr.contains("not a string"),
        "{out:?}"
    );
    assert!(event_types(&s, LEGACY_CRED).is_empty());
}

#[tokio::test]
async fn start_up_checks_cover_assisted_credentials() {
    let hook = HookReceiver::start(KEY).await;
    let s = stack("", &hook).await;
    // (secret, what the daemon must say at start-up)
    let cases = [
        (
            json!({ "username": demo::LEGACY_USERNAME, "api_path": api_path(&s) }),
            "has no token field",
        ),
        (
            json!({ "username": demo::LEGACY_USERNAME, "token": ["a"], "api_path": api_path(&s) }),
            "token of the current secret (version 2) are not a string",
        ),
    ];
    for (data, says) in cases {
        s.bao.write_secret("secret", LEGACY_PATH, data).await;
        let out = s.cli(&["run", "--once"], &[]).await;
        let line = out
            .stderr
            .lines()
            .find(|l| {
                l.contains("cannot be rotated until this is fixed")
                    && l.contains("credential=legacy")
            })
            .unwrap_or_else(|| panic!("{says}: {out:?}"));
        assert!(line.contains(says), "{says}: {line}");
    }
}

#[tokio::test]
async fn status_and_rotation_due_say_what_to_do_in_the_control_panel_for_each_kind() {
    let hook = HookReceiver::start(KEY).await;
    let s = stack("", &hook).await;
    let old = store_account_in_vault(&s).await;
    s.bao
        .write_secret(
            "secret",
            LEGACY_PATH,
            json!({ "username": demo::LEGACY_USERNAME, "token": demo::LEGACY_TOKEN, "api_path": api_path(&s) }),
        )
        .await;
    for cred in [STORE_CRED, LEGACY_CRED] {
        let out = s.cli(&["rotate", cred], &[]).await;
        assert_eq!(out.code, Some(0), "{out:?}");
    }
    let old_account = format!("client_id {}", old.client_id);
    // (credential, what status and rotation.due must say, what they must never say)
    let cases = [
        (
            STORE_CRED,
            vec![
                "Settings > Store-level API accounts",
                "Orders: modify",
                old_account.as_str(),
            ],
            vec!["regenerate", "Regenerate"],
        ),
        (
            LEGACY_CRED,
            vec!["Legacy API Accounts", "Generate New Token"],
            vec!["delete the old account", "Delete the old"],
        ),
    ];
    let table = s.cli(&["status"], &[]).await.stdout;
    for (cred, says, never) in &cases {
        let row = status_row(&s, cred).await;
        let due = s
            .events()
            .into_iter()
            .find(|e| e["type"] == "rotation.due" && e["data"]["credential"] == *cred)
            .unwrap();
        let texts = [row["steps"].to_string(), due["data"]["reason"].to_string()];
        for text in says {
            assert!(
                texts[0].contains(text),
                "{cred} status steps: {text:?} in {}",
                texts[0]
            );
        }
        for text in never {
            assert!(
                !texts.iter().any(|t| t.contains(text)),
                "{cred}: {text:?} in {texts:?}"
            );
            assert!(!table.contains(&format!("{cred}: {text}")), "{table}");
        }
        assert!(
            table.contains(&format!("{cred}: awaiting supply; the steps:")),
            "{table}"
        );
    }
    assert!(status_row(&s, STORE_CRED).await["scopes"]
        .to_string()
        .contains("Orders: modify"));
    // `plan` and `history` show the same steps while the attempt is in flight.
    let plan = s.cli(&["plan"], &[]).await.stdout;
    assert!(
        plan.contains("Settings > Store-level API accounts") && plan.contains(&old_account),
        "{plan}"
    );
    let history = s.cli(&["history", STORE_CRED], &[]).await.stdout;
    assert!(
        history.contains("Settings > Store-level API accounts") && history.contains(&old_account),
        "{history}"
    );
    let due = s
        .events()
        .into_iter()
        .find(|e| e["type"] == "rotation.due" && e["data"]["credential"] == STORE_CRED)
        .unwrap();
    assert!(
        due["data"]["reason"]
            .as_str()
            .unwrap()
            .contains(&old_account),
        "{due}"
    );

    // Committed: the old account to delete, by client_id, and the commands that end the wait.
    let new = s
        .admin
        .create_api_account(STORE, "app-v2", scopes(Access::Modify))
        .await
        .unwrap();
    let out = supply(
        &s,
        STORE_CRED,
        &json!({ "client_id": new.client_id, "access_token": new.access_token,
                 "client_secret": new.client_secret }),
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let steps = status_row(&s, STORE_CRED).await["steps"].to_string();
    for text in [
        format!("Delete the old store-level API account with {old_account}"),
        "`secret-rotator confirm-revoked store-account`".into(),
        "`secret-rotator cancel store-account`".into(),
    ] {
        assert!(steps.contains(&text), "{text:?} in {steps}");
    }
}
