//! Rotations end to end, against a real OpenBao and the BigCommerce emulator: the happy path,
//! rejection and rollback, check-and-set conflicts, unknown outcomes, the write budget, the AppRole
//! provider, and operator rollback.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bigcommerce_emulator::{Access, FaultMode, FaultSpec, Resource, TokenState};
use common::stack::{sha256_hex, Stack, StackOptions, CRED, SECRET_PATH, STORE};
use common::{vault_config, OpenBao, ROOT_TOKEN};
use secrecy::SecretString;
use serde_json::{json, Value};

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_wait_rotates_a_storefront_token_end_to_end() {
    let s = Stack::start().await;
    let (v1, old) = s.current().await;
    assert_eq!(v1, 1);

    let out = s.cli(&["rotate", CRED, "--wait"], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");

    let (v, new) = s.current().await;
    assert_eq!(v, 2, "Vault holds version n+1");
    assert_ne!(new, old);
    assert_eq!(
        s.graphql_status(&new).await,
        200,
        "the new token verifies at the emulator"
    );
    assert_eq!(
        s.graphql_status(&old).await,
        401,
        "the old token is rejected"
    );

    let h = s.history().await;
    let attempts = h["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{h}");
    assert_eq!(attempts[0]["outcome"], "rotated");
    assert_eq!(
        (
            attempts[0]["version_before"].as_u64(),
            attempts[0]["version_after"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert!(h["in_flight"].is_null());

    let live = s.tokens_in_state(TokenState::Live).await;
    assert_eq!(
        live.iter().map(|t| t.0.clone()).collect::<Vec<_>>(),
        vec![sha256_hex(&new)],
        "exactly one live token"
    );
    assert_eq!(
        kinds(&s.events()),
        ["credential.rotated", "credential.revoked"]
    );

    // No secret in any output or event.
    let all = format!(
        "{}{}{}",
        out.stdout,
        out.stderr,
        std::fs::read_to_string(&s.events).unwrap()
    );
    assert!(!all.contains(&new) && !all.contains(&old));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_wait_the_old_token_lives_through_the_grace_period_then_the_daemon_revokes_it() {
    let s = Stack::with(StackOptions {
        grace: "2s",
        revocation_delay_ms: 200,
        ..Default::default()
    })
    .await;
    let (_, old) = s.current().await;
    let out = s.cli(&["rotate", CRED], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("grace period"), "{}", out.stdout);
    let (v, new) = s.current().await;
    assert_eq!(v, 2);
    assert_eq!(
        s.graphql_status(&old).await,
        200,
        "both live during the grace period"
    );
    assert_eq!(s.graphql_status(&new).await, 200);
    assert_eq!(s.history().await["in_flight"]["phase"], "notified");

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let out = s.cli(&["run", "--once"], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(s.graphql_status(&old).await, 401);
    assert_eq!(s.history().await["attempts"][0]["outcome"], "rotated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_token_the_provider_rejects_is_revoked_and_the_old_one_stays() {
    let s = Stack::start().await;
    let (_, old) = s.current().await;
    // Verification of the new token answers 401.
    s.admin
        .set_fault(FaultSpec::new("storefront_graphql", FaultMode::Error { status: 401 }).count(1))
        .await
        .unwrap();
    let out = s.cli(&["rotate", CRED, "--wait"], &[]).await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(out.stdout.contains("rolled_back"), "{}", out.stdout);

    let (v, current) = s.current().await;
    assert_eq!(
        (v, current.as_str()),
        (1, old.as_str()),
        "the old token stays current"
    );
    assert_eq!(s.graphql_status(&old).await, 200);
    let live: Vec<String> = s
        .tokens_in_state(TokenState::Live)
        .await
        .into_iter()
        .map(|t| t.0)
        .collect();
    assert_eq!(
        live,
        vec![sha256_hex(&old)],
        "the rejected new token was revoked"
    );
    assert_eq!(kinds(&s.events()), ["rotation.failed"]);
    assert_eq!(s.history().await["attempts"][0]["outcome"], "rolled_back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_token_without_the_storefront_scope_fails_cleanly() {
    let s = Stack::start().await;
    let (_, old) = s.current().await;
    let account = s.admin.api_accounts(STORE).await.unwrap().remove(0);
    let mut scopes = account.scopes.clone();
    scopes.set(Resource::StorefrontApiTokens, Access::None);
    s.admin
        .set_scopes(STORE, &account.client_id, scopes)
        .await
        .unwrap();

    let out = s.cli(&["rotate", CRED, "--wait"], &[]).await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(
        out.stdout.contains("failed") && out.stdout.contains("403"),
        "{}",
        out.stdout
    );
    assert_eq!(s.current().await, (1, old.clone()));
    assert_eq!(s.tokens_in_state(TokenState::Live).await.len(), 1);
    assert_eq!(kinds(&s.events()), ["rotation.failed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_written_by_someone_else_meanwhile_wins_and_ours_is_revoked() {
    let s = Stack::start().await;
    // Slow verification leaves a window in which an operator writes the secret.
    s.admin
        .set_fault(
            FaultSpec::new(
                "storefront_graphql",
                FaultMode::Latency { latency_ms: 2500 },
            )
            .count(1),
        )
        .await
        .unwrap();
    let theirs = s.mint_by_hand().await;
    let daemon = s.cli(&["rotate", CRED, "--wait"], &[]);
    let operator = async {
        // Once the new token is minted and being verified, the operator writes the secret.
        let state = format!("secret/data/secret-rotator/credentials/{CRED}");
        loop {
            let (status, v) = s.bao.call_as(ROOT_TOKEN, "GET", &state, None).await;
            if status == 200 && v["data"]["data"]["attempt"]["phase"] == "minted" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s.bao
            .write_secret("secret", SECRET_PATH, json!({ "token": theirs }))
            .await
    };
    let (out, written) = tokio::join!(daemon, operator);
    assert_eq!(written, 2);
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(out.stdout.contains("aborted"), "{}", out.stdout);

    assert_eq!(
        s.current().await,
        (2, theirs.clone()),
        "their version is kept"
    );
    let h = s.history().await;
    assert_eq!(h["attempts"][0]["outcome"], "aborted");
    assert!(h["attempts"][0]["error"]
        .as_str()
        .unwrap()
        .contains("check-and-set conflict"));
    // Ours was revoked: the live tokens are the original and theirs.
    let live: Vec<String> = s
        .tokens_in_state(TokenState::Live)
        .await
        .into_iter()
        .map(|t| t.0)
        .collect();
    assert_eq!(live.len(), 2, "{live:?}");
    assert!(live.contains(&sha256_hex(&theirs)));
    assert_eq!(kinds(&s.events()), ["rotation.failed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mint_whose_answer_is_lost_is_an_unknown_outcome_reported_as_a_bounded_orphan() {
    let s = Stack::start().await;
    s.admin
        .set_fault(FaultSpec::new("storefront_token_create", FaultMode::DropAfterCommit).count(1))
        .await
        .unwrap();
    let out = s.cli(&["rotate", CRED, "--wait"], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("possible orphan"), "{}", out.stdout);

    let (v, new) = s.current().await;
    assert_eq!(v, 2);
    let h = s.history().await;
    let attempt = &h["attempts"][0];
    assert_eq!(attempt["outcome"], "rotated");
    let orphans = attempt["orphans"].as_array().unwrap();
    assert_eq!(orphans.len(), 1, "{attempt}");
    let bound: chrono::DateTime<chrono::Utc> =
        orphans[0]["expires_at"].as_str().unwrap().parse().unwrap();

    // The emulator did mint the lost token: it is live, but expires no later than reported.
    let live = s.tokens_in_state(TokenState::Live).await;
    assert_eq!(live.len(), 2, "current + the orphan");
    let orphan = live
        .iter()
        .find(|t| t.0 != sha256_hex(&new))
        .expect("the orphan");
    assert!(
        orphan.1 <= bound.timestamp(),
        "orphan expires at {} after the reported bound {bound}",
        orphan.1
    );
    // max_age 1h + expiry_lead 7d + grace 1s.
    assert!(
        bound < chrono::Utc::now() + chrono::Duration::hours(7 * 24 + 2),
        "bounded lifetime: {bound}"
    );
}

/// Vault writes of one rotation on the common path, by grace period. With grace 0 nothing waits
/// between the commit and the revocation, and no `notified` write is made: the secret's new
/// version says the commit happened, and the write that ends the attempt carries the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_common_path_makes_four_vault_writes_and_five_with_a_grace_period() {
    use secret_rotator::events::MemorySink;
    use secret_rotator::rotation::RunResult;
    use secret_rotator::vault::{Login, Vault};

    // (grace, writes of the first rotation, writes of the next, what they are)
    let cases = [
        ("0s", 5, 4, "minting, minted, secret, idle"),
        ("1s", 6, 5, "minting, minted, secret, notified, idle"),
    ];
    for (grace, first, next, what) in cases {
        let s = Stack::with(StackOptions {
            grace,
            revocation_delay_ms: 0,
            ..StackOptions::default()
        })
        .await;
        let text = std::fs::read_to_string(&s.config).unwrap();
        let config = secret_rotator::config::parse(
            &text,
            "test.toml",
            &secret_rotator::config::ProcessEnvironment,
        )
        .unwrap();
        let cred = config.credential(CRED).unwrap();
        let vault = Arc::new(
            Vault::connect(
                &vault_config(&s.bao.addr),
                Login::Token(SecretString::from(ROOT_TOKEN.to_string())),
            )
            .await
            .unwrap(),
        );
        let events = Arc::new(MemorySink::default());
        let mut engine = common::engine(&vault, "budget-test");
        engine.events = events.clone();
        let provider = secret_rotator::providers::build(
            cred,
            vault.clone(),
            secret_rotator::egress::builder().build().unwrap(),
        )
        .unwrap();
        let writes_of_one_rotation = || async {
            let before = vault
                .stats
                .writes
                .load(std::sync::atomic::Ordering::Relaxed);
            let result = engine
                .drive(
                    cred,
                    provider.as_ref(),
                    Some(secret_rotator::rotation::Begin::Manual),
                    secret_rotator::rotation::Wait::All,
                )
                .await
                .unwrap();
            assert!(
                matches!(result, RunResult::Finished(ref f) if f.outcome == secret_rotator::rotation::Outcome::Rotated),
                "grace {grace}: {result:?}"
            );
            vault
                .stats
                .writes
                .load(std::sync::atomic::Ordering::Relaxed)
                - before
        };
        // The first rotation also sets max_versions on the new state record.
        assert_eq!(
            writes_of_one_rotation().await,
            first,
            "grace {grace}: max_versions, {what}"
        );
        assert_eq!(
            writes_of_one_rotation().await,
            next,
            "grace {grace}: {what}"
        );
        assert_eq!(events.events().len(), 4, "grace {grace}");
        let record = s.history().await;
        let attempts = record["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "grace {grace}: {record}");
        assert!(
            attempts.iter().all(|a| a["outcome"] == "rotated"),
            "grace {grace}: {record}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_re_promotes_the_previous_token_during_the_grace_period() {
    let s = Stack::with(StackOptions {
        grace: "30m",
        revocation_delay_ms: 200,
        ..Default::default()
    })
    .await;
    let (_, old) = s.current().await;
    let out = s.cli(&["rotate", CRED], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let (_, new) = s.current().await;
    let plan = s.cli(&["plan"], &[]).await;
    assert!(
        plan.stdout.contains("in flight")
            && plan.stdout.contains("revoke the old credential after"),
        "{}",
        plan.stdout
    );

    let out = s.cli(&["rollback", CRED], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let (v, current) = s.current().await;
    assert_eq!(
        (v, current.as_str()),
        (3, old.as_str()),
        "version 3 holds the previous token"
    );
    assert_eq!(s.graphql_status(&old).await, 200);
    assert!(
        s.rejected_within(&new, Duration::from_secs(5)).await,
        "the newer token is revoked"
    );
    assert_eq!(s.history().await["attempts"][0]["outcome"], "reverted");

    // Nothing left to roll back.
    let out = s.cli(&["rollback", CRED], &[]).await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(
        out.stderr.contains("nothing to roll back"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approle_provider_rotates_a_secret_id_against_openbao() {
    let bao = OpenBao::start().await;
    let (role_id, old_id, old_accessor) = bao.adopted_approle_secret_id().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[vault]\naddress = \"{}\"\n[vault.auth]\nmethod = \"token\"\n[defaults]\nmax_age = \"1h\"\ngrace = \"1s\"\n[[credentials]]\nname = \"app\"\npath = \"apps/app\"\nexpiry_lead = \"30m\"\n[credentials.vault_approle_secret_id]\nrole_name = \"app\"\nsecret_id_ttl = \"2h\"\n",
            bao.addr
        ),
    )
    .unwrap();
    let events = dir.path().join("events.jsonl");
    let (code, stdout, stderr) = common::run_cli(
        &config,
        &[
            "--events-file",
            events.to_str().unwrap(),
            "rotate",
            "app",
            "--wait",
        ],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");

    let v = bao.root("GET", "secret/data/apps/app", None).await;
    assert_eq!(v["data"]["metadata"]["version"], 2);
    let new_id = v["data"]["data"]["secret_id"].as_str().unwrap().to_string();
    let login = |secret_id: String| {
        let role_id = role_id.clone();
        let bao = &bao;
        async move {
            bao.call_as(
                "",
                "POST",
                "auth/approle/login",
                Some(json!({ "role_id": role_id, "secret_id": secret_id })),
            )
            .await
            .0
        }
    };
    assert_eq!(login(new_id).await, 200, "the new secret-id logs in");
    assert_ne!(login(old_id).await, 200, "the old secret-id is rejected");
    let (status, _) = bao
        .call_as(
            ROOT_TOKEN,
            "POST",
            "auth/approle/role/app/secret-id-accessor/lookup",
            Some(json!({ "secret_id_accessor": old_accessor })),
        )
        .await;
    assert_ne!(status, 200, "the old accessor is gone");
    let listed = bao
        .root("LIST", "auth/approle/role/app/secret-id", None)
        .await;
    assert_eq!(
        listed["data"]["keys"].as_array().unwrap().len(),
        1,
        "exactly one live secret-id: {listed}"
    );
    let text = std::fs::read_to_string(&events).unwrap();
    assert!(text.contains("credential.rotated") && text.contains("credential.revoked"));
    let (code, stdout, _) = common::run_cli(&config, &["history", "app", "--json"], &[]);
    assert_eq!(code, 0);
    let h: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(h["attempts"].as_array().unwrap().len(), 1, "{h}");
    assert_eq!(h["attempts"][0]["outcome"], "rotated");
    assert!(!stdout.contains(&new_id_for_check(&bao).await));
}

async fn new_id_for_check(bao: &OpenBao) -> String {
    let v = bao.root("GET", "secret/data/apps/app", None).await;
    v["data"]["data"]["secret_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_the_steps_and_writes_nothing() {
    let s = Stack::start().await;
    // A credential whose secret is missing is due now.
    s.bao
        .root("DELETE", &format!("secret/metadata/{SECRET_PATH}"), None)
        .await;
    let out = s.cli(&["plan"], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    for needle in [
        "due now (missing)",
        "mint a new credential",
        "cas=0",
        "nothing was written",
    ] {
        assert!(
            out.stdout.contains(needle),
            "plan lacks {needle:?}: {}",
            out.stdout
        );
    }
    let (status, _) = s
        .bao
        .call_as(
            ROOT_TOKEN,
            "GET",
            &format!("secret/data/{SECRET_PATH}"),
            None,
        )
        .await;
    assert_eq!(status, 404, "plan wrote the secret");
    let (status, _) = s
        .bao
        .call_as(
            ROOT_TOKEN,
            "GET",
            &format!("secret/data/secret-rotator/credentials/{CRED}"),
            None,
        )
        .await;
    assert_eq!(status, 404, "plan wrote a state record");
    assert!(
        s.tokens_in_state(TokenState::Live).await.len() == 1,
        "plan minted a token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_old_version_destroys_it_only_after_the_old_token_is_revoked() {
    let s = Stack::with(StackOptions {
        extra_defaults: "destroy_old_version = true",
        ..Default::default()
    })
    .await;
    let out = s.cli(&["rotate", CRED, "--wait"], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let meta = s
        .bao
        .root("GET", &format!("secret/metadata/{SECRET_PATH}"), None)
        .await;
    assert_eq!(meta["data"]["versions"]["1"]["destroyed"], true, "{meta}");
    assert_eq!(meta["data"]["versions"]["2"]["destroyed"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_rotates_when_due_and_stops_cleanly_on_sigterm() {
    let s = Stack::with(StackOptions {
        max_age: "4s",
        grace: "1s",
        revocation_delay_ms: 200,
        ..Default::default()
    })
    .await;
    let (_, first) = s.current().await;
    let mut daemon = tokio::process::Command::new(common::binary())
        .arg("--config")
        .arg(&s.config)
        .arg("--events-file")
        .arg(&s.events)
        .args(["run", "--interval", "1s"])
        .env("VAULT_TOKEN", ROOT_TOKEN)
        .env("SECRET_ROTATOR_INSTANCE_ID", "daemon-test")
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // Version 1 is due at 4 s; the rotation then takes the 1 s grace and the revocation delay.
    let start = std::time::Instant::now();
    while !s.events().iter().any(|e| e["type"] == "credential.revoked") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no rotation by the daemon: {:?}",
            s.events()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (v, current) = s.current().await;
    assert!(v >= 2, "version {v}");
    assert_eq!(s.graphql_status(&current).await, 200);
    assert_eq!(s.graphql_status(&first).await, 401);

    let pid = daemon.id().expect("running");
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), daemon.wait())
        .await
        .expect("the daemon stops within 10 s of SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_never_rotate_the_same_credential_twice() {
    let s = Stack::with(StackOptions {
        grace: "3s",
        revocation_delay_ms: 200,
        ..Default::default()
    })
    .await;
    // Both start from idle at once: one wins the check-and-set of the state record.
    let (a, b) = tokio::join!(
        s.cli(&["rotate", CRED, "--wait"], &[]),
        s.cli(&["rotate", CRED, "--wait"], &[])
    );
    let mut codes = [a.code, b.code];
    codes.sort();
    assert_eq!(
        codes,
        [Some(0), Some(5)],
        "one rotates, the other is fenced: {a:?} {b:?}"
    );
    assert_eq!(s.current().await.0, 2);
    assert_eq!(s.history().await["attempts"].as_array().unwrap().len(), 1);

    // While a live process holds the lease (waiting out the grace), another one stays away.
    let holder = s.cli(&["rotate", CRED, "--wait"], &[]);
    let intruder = async {
        // Wait until the holder has committed and is waiting out the grace period.
        let state = format!("secret/data/secret-rotator/credentials/{CRED}");
        loop {
            let (_, v) = s.bao.call_as(ROOT_TOKEN, "GET", &state, None).await;
            if v["data"]["data"]["attempt"]["phase"] == "notified" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s.cli(&["rotate", CRED, "--wait"], &[]).await
    };
    let (holder, intruder) = tokio::join!(holder, intruder);
    assert_eq!(holder.code, Some(0), "{holder:?}");
    assert_eq!(intruder.code, Some(5), "{intruder:?}");
    assert!(
        intruder.stdout.contains("holds the rotation lease"),
        "{}",
        intruder.stdout
    );
    assert_eq!(s.current().await.0, 3);
    assert_eq!(s.history().await["attempts"].as_array().unwrap().len(), 2);
}
