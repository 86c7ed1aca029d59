//! Dependents, end to end: the real binary against a real OpenBao and the in-repo emulator, with
//! a Standard Webhooks receiver that checks every signature with its own implementation.

mod common;

use std::time::Duration;

use common::receiver::{Answer, HookReceiver};
use common::stack::{Stack, StackOptions, CRED, WEBHOOK_KEY_PATH as KEY_PATH};
use serde_json::json;

const KEY: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// A webhook dependent block for the stack's credential.
fn webhook(name: &str, url: &str, extra: &str) -> String {
    format!(
        r#"
[[credentials.dependents]]
type = "webhook"
name = "{name}"
url = "{url}"
signing_key = {{ path = "{KEY_PATH}", key = "signing_key" }}
timeout = "2s"
{extra}
"#
    )
}

async fn stack_with(dependents: String, grace: &'static str) -> Stack {
    let stack = Stack::with(StackOptions {
        grace,
        dependents,
        ..StackOptions::default()
    })
    .await;
    stack
        .bao
        .write_secret("secret", KEY_PATH, json!({ "signing_key": KEY }))
        .await;
    stack
}

/// Fast delivery retries for the tests.
const FAST: [&str; 4] = [
    "--delivery-backoff",
    "200ms",
    "--delivery-backoff-max",
    "1s",
];

fn args<'a>(command: &[&'a str]) -> Vec<&'a str> {
    FAST.iter()
        .copied()
        .chain(command.iter().copied())
        .collect()
}

#[tokio::test]
async fn a_webhook_gets_rotated_then_revoked_and_a_retried_event_keeps_its_id() {
    let hook = HookReceiver::start(KEY).await;
    hook.script(
        &[Answer::Status(500), Answer::Status(500)],
        Answer::Status(200),
    );
    let stack = stack_with(webhook("shop", &hook.url, ""), "1s").await;
    let out = stack.cli(&args(&["rotate", CRED, "--wait"]), &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        hook.wait_for(Duration::from_secs(10), |h| h.len() >= 4)
            .await,
        "{:?}\n{}",
        hook.hits(),
        out.stderr
    );
    let hits = hook.hits();
    assert!(hits.iter().all(|h| h.verified), "{hits:?}");
    let seen: Vec<(&str, Answer)> = hits.iter().map(|h| (h.kind.as_str(), h.answered)).collect();
    assert_eq!(
        seen,
        [
            ("credential.rotated", Answer::Status(500)),
            ("credential.rotated", Answer::Status(500)),
            ("credential.rotated", Answer::Status(200)),
            ("credential.revoked", Answer::Status(200)),
        ]
    );
    // The same event, three times, under one id; the next event has its own.
    assert_eq!(hits[0].id, hits[1].id);
    assert_eq!(hits[1].id, hits[2].id);
    assert_ne!(hits[2].id, hits[3].id);
    let (version, _) = stack.current().await;
    let rotated = &hits[2].body["data"];
    assert_eq!(rotated["version"], json!(version));
    assert_eq!(rotated["previous_version"], json!(version - 1));
    assert!(rotated["revoke_after"].is_string(), "{rotated}");
    assert_eq!(hits[3].body["data"]["version"], json!(version - 1));

    // `deliveries` and `status` say it was delivered.
    let out = stack.cli(&["deliveries", CRED, "--json"], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let d: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let shop = &d["dependents"][0];
    assert_eq!(shop["state"], "delivered", "{d}");
    assert_eq!(shop["tries"], 4, "{d}");
    let out = stack.cli(&["status"], &[]).await;
    assert!(
        out.stdout
            .contains("storefront-main/shop (webhook): delivered"),
        "{out:?}"
    );
}

#[tokio::test]
async fn without_an_ack_the_old_token_stays_live_past_the_grace_period_and_is_revoked_once_it_comes(
) {
    let hook = HookReceiver::start(KEY).await;
    hook.script(&[], Answer::Status(503));
    let stack = stack_with(
        webhook(
            "shop",
            &hook.url,
            "require_ack = true\nack_timeout = \"2s\"\non_ack_timeout = \"hold\"",
        ),
        "1s",
    )
    .await;
    let (_, old) = stack.current().await;
    let out = stack.cli(&args(&["rotate", CRED]), &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let mut daemon = stack.daemon(&args(&["run"]));
    // Grace 1 s + ack timeout 2 s: held, needs attention, the old token still works.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(stack.graphql_status(&old).await, 200);
    let out = stack.cli(&["status", "--check"], &[]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("the old credential is held"), "{out:?}");
    assert!(stack
        .events()
        .iter()
        .any(|e| e["type"] == "rotation.needs_attention"));
    // The receiver comes back: revocation follows within a retry interval (1 s) and the ack
    // recheck.
    hook.script(&[], Answer::Status(200));
    assert!(
        stack.rejected_within(&old, Duration::from_secs(20)).await,
        "the old token is still accepted\n{}",
        stack.daemon_log()
    );
    let accepted = hook.accepted();
    assert!(
        accepted
            .iter()
            .any(|id| id.ends_with(":credential.rotated")),
        "{accepted:?}"
    );
    daemon.kill().await.unwrap();
}

#[tokio::test]
async fn without_an_ack_and_on_ack_timeout_revoke_the_old_token_is_revoked_and_reported() {
    let hook = HookReceiver::start(KEY).await;
    hook.script(&[], Answer::Status(503));
    let stack = stack_with(
        webhook(
            "shop",
            &hook.url,
            "require_ack = true\nack_timeout = \"1s\"\non_ack_timeout = \"revoke\"",
        ),
        "1s",
    )
    .await;
    let (_, old) = stack.current().await;
    let out = stack.cli(&args(&["rotate", CRED, "--wait"]), &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(stack.graphql_status(&old).await, 401);
    let revoked = stack
        .events()
        .into_iter()
        .find(|e| e["type"] == "credential.revoked")
        .expect("a revoked event");
    assert!(
        revoked["detail"]
            .as_str()
            .unwrap()
            .contains("revoked without the ack of shop"),
        "{revoked}"
    );
}
