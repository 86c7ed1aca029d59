//! Dependents, end to end: the real binary against a real OpenBao and the in-repo emulator, with
//! a Standard Webhooks receiver that checks every signature with its own implementation.

mod common;

use std::time::Duration;

use common::receiver::{Answer, HookReceiver};
use common::stack::{
    storefront_credential, webhook_dependent as webhook, Stack, StackOptions, CRED,
    WEBHOOK_KEY_PATH as KEY_PATH,
};
use serde_json::json;

const KEY: &str = common::receiver::TEST_KEY;

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

/// Fast delivery retries for the tests (flags of the commands that deliver, after the
/// subcommand).
const FAST: [&str; 4] = [
    "--delivery-backoff",
    "200ms",
    "--delivery-backoff-max",
    "1s",
];

fn args<'a>(command: &[&'a str]) -> Vec<&'a str> {
    command.iter().chain(FAST.iter()).copied().collect()
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
    // The events file holds the very bodies the webhook received, one per line.
    assert_eq!(
        stack.events(),
        [hits[2].body.clone(), hits[3].body.clone()],
        "the events file and the webhook bodies have one shape"
    );

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
        revoked["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("revoked without the ack of shop"),
        "{revoked}"
    );
}

/// The engine and the delivery worker in this process, on the stack's config, with the root
/// token: to count Vault writes and to run many rotations fast.
struct InProcess {
    vault: std::sync::Arc<secret_rotator::vault::Vault>,
    engine: secret_rotator::rotation::Engine,
    deliverer: std::sync::Arc<secret_rotator::notify::deliver::Deliverer>,
    cred: secret_rotator::config::Credential,
    provider: Box<dyn secret_rotator::providers::Provider>,
}

impl InProcess {
    async fn new(stack: &Stack) -> InProcess {
        use secret_rotator::notify::deliver::Wakeup;
        use secret_rotator::rotation::EngineSettings;
        use secret_rotator::vault::{Login, Vault};
        use std::sync::Arc;

        let text = std::fs::read_to_string(&stack.config).unwrap();
        let config = secret_rotator::config::parse(
            &text,
            "test.toml",
            &secret_rotator::config::ProcessEnvironment,
        )
        .unwrap();
        let cred = config.credential(CRED).unwrap().clone();
        let vault = Arc::new(
            Vault::connect(
                &common::vault_config(&stack.bao.addr),
                Login::Token(secrecy::SecretString::from(common::ROOT_TOKEN.to_string())),
            )
            .await
            .unwrap(),
        );
        let wakeup = Wakeup::default();
        let settings = EngineSettings {
            poll_interval: Duration::from_millis(10),
            ..EngineSettings::default()
        };
        let engine = common::engine(&vault, "in-process")
            .with_settings(settings)
            .with_wakeup(wakeup.clone());
        let deliverer = Arc::new(common::deliverer(&vault, "in-process", wakeup));
        let engine = engine.with_deliverer(deliverer.clone());
        let provider = secret_rotator::providers::build(
            &cred,
            vault.clone(),
            secret_rotator::egress::builder().build().unwrap(),
        )
        .unwrap();
        InProcess {
            vault,
            engine,
            deliverer,
            cred,
            provider,
        }
    }

    fn writes(&self) -> u64 {
        self.vault
            .stats
            .writes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One whole rotation (grace, acks, revocation) with the delivery worker running; returns
    /// once the worker made its last round.
    async fn rotate(&self) {
        use secret_rotator::notify::deliver::Workers;
        use secret_rotator::rotation::{Outcome, RunResult, Wait};
        let workers = Workers::start(&self.deliverer, &self.engine.wakeup, [&self.cred]);
        let result = self
            .engine
            .drive(
                &self.cred,
                self.provider.as_ref(),
                Some(secret_rotator::rotation::Begin::Manual),
                Wait::All,
            )
            .await
            .unwrap();
        workers.stop(Duration::from_secs(30)).await;
        assert!(
            matches!(result, RunResult::Finished(ref f) if f.outcome == Outcome::Rotated),
            "{result:?}"
        );
    }
}

/// Vault writes of one rotation in steady state, by dependents and grace period. The engine's
/// process delivers the events of each state record write ahead of it and records the
/// deliveries in that write: an ack that holds the revocation rides in `notified` (or, with grace
/// 0, in nothing before the revocation), `credential.revoked` in the write that ends the
/// attempt, and the worker has nothing left to write. Without a grace period nor an ack
/// nothing waits between the commit and the revocation, and no `notified` write is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_makes_four_vault_writes_and_at_most_five_with_dependents_acks_or_a_grace_period(
) {
    let hook = HookReceiver::start(KEY).await;
    let files = tempfile::tempdir().unwrap();
    let exec = "\n[[credentials.dependents]]\ntype = \"exec\"\nname = \"cmd\"\ncommand = [\"/bin/true\"]\n";
    let file = format!(
        "\n[[credentials.dependents]]\ntype = \"file\"\nname = \"file\"\npath = \"{}\"\nfield = \"token\"\n",
        files.path().join("token").display()
    );
    let hooks = webhook("hook", &hook.url, "");
    // (dependents, grace, at most this many writes, what they are); a file dependent's ack
    // holds the revocation.
    let cases = [
        (String::new(), "0s", 4, "minting, minted, secret, idle"),
        (
            String::new(),
            "1s",
            5,
            "minting, minted, secret, notified, idle",
        ),
        (
            format!("{hooks}{exec}"),
            "0s",
            5,
            "minting, minted, secret, idle with both events and their deliveries",
        ),
        (
            format!("{hooks}{file}{exec}"),
            "0s",
            5,
            "minting, minted, secret, idle: the ack came ahead of any write",
        ),
        (
            format!("{hooks}{exec}"),
            "1s",
            5,
            "minting, minted, secret, notified with `rotated` delivered, idle with `revoked`",
        ),
        (
            format!("{hooks}{file}{exec}"),
            "1s",
            5,
            "minting, minted, secret, notified with the ack, idle with `revoked`",
        ),
    ];
    for (dependents, grace, most, what) in cases {
        let before_hits = hook.accepted().len();
        let with_hook = dependents.contains("hook");
        let stack = stack_with(dependents, grace).await;
        let p = InProcess::new(&stack).await;
        // The first rotation also creates the state record (and sets its max_versions).
        p.rotate().await;
        let before = p.writes();
        p.rotate().await;
        let writes = p.writes() - before;
        eprintln!("grace {grace}, {what}: {writes} Vault writes in one rotation");
        assert!(writes <= most, "grace {grace}: {writes} writes: {what}");
        if !with_hook {
            continue;
        }
        // Every dependent got both events of both rotations.
        assert_eq!(
            hook.accepted().len() - before_hits,
            4,
            "grace {grace}: {:?}",
            hook.hits()
        );
        let out = stack.cli(&["deliveries", CRED, "--json"], &[]).await;
        let d: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        for dep in d["dependents"].as_array().unwrap() {
            assert_eq!(dep["state"], "delivered", "grace {grace}: {d}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_of_the_file_never_sees_it_partial_empty_loose_or_stale_in_1000_rotations() {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("token");
    let stack = Stack::with(StackOptions {
        grace: "0s",
        revocation_delay_ms: 0,
        dependents: format!(
            "[[credentials.dependents]]\ntype = \"file\"\nname = \"file\"\npath = \"{}\"\nfield = \"token\"\n",
            path.display()
        ),
        ..StackOptions::default()
    })
    .await;
    // A thousand rotations in a few minutes: far more than a store's real API quota allows
    // (the provider would rightly pace itself), so this store's quota is raised.
    stack
        .admin
        .set_rate_limit(common::stack::STORE, 1_000_000, Duration::from_secs(30))
        .await
        .unwrap();
    let p = InProcess::new(&stack).await;
    p.rotate().await; // the file exists from here on

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (done, path) = (done.clone(), path.clone());
        std::thread::spawn(move || {
            // Each distinct content in the order seen, and how many reads.
            let (mut seen, mut reads) = (Vec::<String>::new(), 0u64);
            while !done.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string(&path).expect("the file is always there");
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "mode {mode:o}");
                assert!(
                    text.starts_with("eyJ") && text.split('.').count() == 3,
                    "partial: {text:?}"
                );
                if seen.last() != Some(&text) {
                    seen.push(text);
                }
                reads += 1;
                // Leave a core to the rotations: the reader still reads many times each.
                std::thread::sleep(Duration::from_micros(100));
            }
            (seen, reads)
        })
    };
    let mut committed = Vec::new();
    let started = std::time::Instant::now();
    for _ in 0..1000 {
        p.rotate().await;
        let (_, current) = stack.current().await;
        // The old token is revoked by now: the file already holds the new one.
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            current,
            "stale after commit"
        );
        committed.push(current);
    }
    done.store(true, Ordering::Relaxed);
    let (seen, reads) = reader.join().unwrap();
    // What the reader saw went forward only: a subsequence of the committed tokens.
    let mut next = committed.iter();
    for token in &seen[1..] {
        assert!(
            next.any(|c| c == token),
            "the reader saw an older token again"
        );
    }
    assert!(reads > 1000, "{reads} reads");
    eprintln!(
        "1000 rotations in {:?}; the reader read the file {reads} times and saw {} versions",
        started.elapsed(),
        seen.len()
    );
}

/// A second storefront credential, without dependents, on its own path.
fn second_credential(base: &str) -> String {
    storefront_credential("storefront-other", "bigcommerce/storefront-other", base)
}

async fn version_of(stack: &Stack, path: &str) -> u64 {
    let (_, v) = stack
        .bao
        .call_as(
            common::ROOT_TOKEN,
            "GET",
            &format!("secret/metadata/{path}"),
            None,
        )
        .await;
    v["data"]["current_version"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_hanging_for_60_s_on_one_credential_delays_no_other_rotation() {
    let hook = HookReceiver::start(KEY).await;
    hook.script(&[], Answer::Hang);
    let stack = Stack::with(StackOptions {
        max_age: "3s",
        root_token: true,
        dependents: webhook("slow", &hook.url, "timeout = \"60s\"") + "\n#SECOND#",
        ..StackOptions::default()
    })
    .await;
    // The second credential points at this stack's emulator.
    let text = std::fs::read_to_string(&stack.config)
        .unwrap()
        .replace("#SECOND#", &second_credential(&stack.emu.base_url()));
    // One instance: no stagger (it spreads instances, and here it would only add up to 5 s to
    // each 3 s round).
    std::fs::write(&stack.config, text + "\n[daemon]\nstagger = \"0s\"\n").unwrap();
    stack
        .bao
        .write_secret("secret", KEY_PATH, json!({ "signing_key": KEY }))
        .await;

    let mut daemon = stack.daemon(&["run"]);
    let start = std::time::Instant::now();
    // storefront-main rotates (and its webhook hangs from then on); the other credential, missing
    // at first, is written and then rotated every 3 s as if nothing hung.
    let mut reached = false;
    while start.elapsed() < Duration::from_secs(25) {
        if version_of(&stack, "bigcommerce/storefront-other").await >= 4
            && version_of(&stack, common::stack::SECRET_PATH).await >= 3
        {
            reached = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = start.elapsed();
    daemon.kill().await.unwrap();
    assert!(
        reached,
        "rotations were held up: other at v{}, main at v{} after {elapsed:?}\n{}",
        version_of(&stack, "bigcommerce/storefront-other").await,
        version_of(&stack, common::stack::SECRET_PATH).await,
        stack.daemon_log()
    );
    let hits = hook.hits();
    assert!(
        !hits.is_empty() && hits.iter().all(|h| h.answered == Answer::Hang),
        "{hits:?}"
    );
    eprintln!("while the webhook hung: 3 rotations of the other credential and 2 of its own in {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_dependent_past_its_timeout_is_killed_with_its_grandchild_and_retried_a_bounded_number_of_times(
) {
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    let pids = dir.path().join("pids");
    let script = dir.path().join("slow.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho run >> {count}\nsleep 300 &\necho $! >> {pids}\nsleep 300\n",
            count = count.display(),
            pids = pids.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stack = stack_with(
        format!(
            "[[credentials.dependents]]\ntype = \"exec\"\nname = \"slow\"\ncommand = [\"{}\"]\ntimeout = \"1s\"\n",
            script.display()
        ),
        "1s",
    )
    .await;
    let flags = [
        "--delivery-backoff",
        "100ms",
        "--delivery-backoff-max",
        "60s",
        "--delivery-budget",
        "3",
    ];
    let mut args = vec!["rotate", CRED, "--wait"];
    args.extend(flags);
    let out = stack.cli(&args, &[]).await;
    assert_eq!(
        out.code,
        Some(0),
        "the rotation itself is not held up: {out:?}"
    );
    let mut args = vec!["run"];
    args.extend(flags);
    let mut daemon = stack.daemon(&args);
    tokio::time::sleep(Duration::from_secs(10)).await;
    daemon.kill().await.unwrap();

    let runs = std::fs::read_to_string(&count).unwrap().lines().count();
    assert_eq!(
        runs, 3,
        "the budget: three tries, then the next only after 60 s"
    );
    for pid in std::fs::read_to_string(&pids).unwrap().lines() {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "grandchild {pid} outlived the timeout"
        );
    }
    let log = stack.daemon_log() + &out.stderr;
    assert!(log.contains("exec dependent failed"), "{log}");
    let status = stack.cli(&["status", "--check"], &[]).await;
    assert_eq!(status.code, Some(1), "{status:?}");
    assert!(
        status
            .stdout
            .contains("storefront-main/slow (exec): NEEDS ATTENTION"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_level_run_shows_no_secret_in_logs_events_webhook_bodies_or_exec_environments() {
    let hook = HookReceiver::start(KEY).await;
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump");
    let script = dir.path().join("dump.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\n{{ env; cat; echo; }} >> {}\n", dump.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = dir.path().join("token");
    let stack = stack_with(
        format!(
            "{}\n[[credentials.dependents]]\ntype = \"exec\"\nname = \"dump\"\ncommand = [\"{}\"]\n[[credentials.dependents]]\ntype = \"file\"\nname = \"file\"\npath = \"{}\"\nfield = \"token\"\n",
            webhook("hook", &hook.url, ""),
            script.display(),
            file.display()
        ),
        "1s",
    )
    .await;
    let (_, first) = stack.current().await;
    let mut logs = String::new();
    for _ in 0..2 {
        let out = stack
            .cli(
                &args(&["rotate", CRED, "--wait"]),
                &[("SECRET_ROTATOR_LOG", "trace")],
            )
            .await;
        assert_eq!(out.code, Some(0), "{out:?}");
        logs.push_str(&out.stdout);
        logs.push_str(&out.stderr);
    }
    let mut secrets = vec![
        first,
        stack.token_at(2).await,
        stack.token_at(3).await,
        KEY.to_string(),
        KEY.trim_start_matches("whsec_").to_string(),
        bigcommerce_emulator::demo::ACCESS_TOKEN.to_string(),
        stack.token.clone(),
    ];
    secrets.dedup();
    assert!(logs.lines().count() > 100, "a TRACE run logs a lot");
    let places = [
        ("logs", logs),
        (
            "events",
            std::fs::read_to_string(&stack.events).unwrap_or_default(),
        ),
        (
            "webhook requests",
            hook.hits()
                .iter()
                .map(|h| h.body.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        (
            "exec environment and stdin",
            std::fs::read_to_string(&dump).unwrap(),
        ),
    ];
    for (place, text) in &places {
        assert!(!text.is_empty(), "{place} is empty: nothing was searched");
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret ({}...) appears in the {place}",
                &secret[..6]
            );
        }
    }
    // The file dependent is the one place the secret is meant to be.
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        stack.token_at(3).await
    );
}

#[tokio::test]
async fn test_dependent_sends_one_signed_ping_and_says_when_it_is_refused() {
    let hook = HookReceiver::start(KEY).await;
    let stack = stack_with(webhook("shop", &hook.url, ""), "1s").await;
    let out = stack.cli(&["test-dependent", CRED, "shop"], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let hits = hook.hits();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(
        hits[0].verified && hits[0].id.starts_with("ping:"),
        "{hits:?}"
    );
    assert_eq!(hits[0].kind, "ping");
    assert_eq!(hits[0].body["data"]["credential"], CRED);

    hook.script(&[], Answer::Status(500));
    let out = stack.cli(&["test-dependent", CRED, "shop"], &[]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stdout.contains("not delivered (may pass later)") && out.stdout.contains("500"),
        "{out:?}"
    );
    let out = stack.cli(&["test-dependent", CRED, "nobody"], &[]).await;
    assert_eq!(out.code, Some(64), "{out:?}");
    assert!(out.stderr.contains("known: shop"), "{out:?}");
    // A ping is not an event: nothing is recorded for the dependent.
    let out = stack.cli(&["deliveries", CRED, "--json"], &[]).await;
    let d: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(d["dependents"][0]["tries"], 0, "{d}");
}
