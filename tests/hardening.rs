//! The engine under everyday failure, against a real OpenBao and the BigCommerce emulator:
//! a provider that keeps rejecting (no hot loop, a failure budget, parking, every minted token
//! accounted for), hundreds of attempts on one credential (the state record stays small), lost
//! Vault replies (never a blind re-send, never the live credential revoked), and a provider call
//! that hangs past the lease while a second instance waits (exactly one commit), and two
//! instances racing for one credential (never two rotations of one version, never a record
//! overwritten).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bigcommerce_emulator::{FaultMode, FaultSpec, TokenState};
use common::stack::{sha256_hex, Stack, StackOptions, CRED, SECRET_PATH, STORE};
use secrecy::SecretString;
use secret_rotator::config::Credential;
use secret_rotator::providers::Provider;
use secret_rotator::rotation::state::{json_size, MAX_RECORD_STRINGS};
use secret_rotator::rotation::{
    Begin, Engine, EngineError, EngineSettings, Outcome, RunResult, Wait,
};
use secret_rotator::vault::{Login, Vault};
use serde_json::Value;

/// The stack's credential, and an engine for it in this process with the stack's own token.
struct InProcess {
    vault: Arc<Vault>,
    cred: Credential,
    provider: Box<dyn Provider>,
}

impl InProcess {
    async fn new(s: &Stack) -> InProcess {
        let text = std::fs::read_to_string(&s.config).unwrap();
        let config = secret_rotator::config::parse(
            &text,
            "test.toml",
            &secret_rotator::config::ProcessEnvironment,
        )
        .unwrap();
        let vault = Arc::new(
            Vault::connect(
                &config.vault,
                Login::Token(SecretString::from(s.token.clone())),
            )
            .await
            .unwrap(),
        );
        let cred = config.credential(CRED).unwrap().clone();
        let provider = secret_rotator::providers::build(
            &cred,
            vault.clone(),
            secret_rotator::egress::builder().build().unwrap(),
        )
        .unwrap();
        InProcess {
            vault,
            cred,
            provider,
        }
    }

    fn engine(&self, owner: &str, settings: EngineSettings) -> Engine {
        common::engine(&self.vault, owner).with_settings(settings)
    }
}

/// A stack without grace or revocation delay: many attempts in little time.
async fn quick_stack() -> Stack {
    Stack::with(StackOptions {
        grace: "0s",
        revocation_delay_ms: 0,
        ..Default::default()
    })
    .await
}

/// The sha256 of every token the emulator has revoked.
async fn revoked(s: &Stack) -> Vec<String> {
    s.tokens_in_state(TokenState::Revoked)
        .await
        .into_iter()
        .map(|t| t.0)
        .collect()
}

async fn fault(s: &Stack, endpoint: &str, mode: FaultMode, count: Option<u64>) {
    let mut spec = FaultSpec::new(endpoint, mode);
    spec.count = count;
    s.admin.set_fault(spec).await.unwrap();
}

/// The state record as stored, read as root.
async fn raw_record(s: &Stack) -> Value {
    s.bao
        .root(
            "GET",
            &format!("secret/data/secret-rotator/credentials/{CRED}"),
            None,
        )
        .await["data"]["data"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_verify_rejection_spends_the_failure_budget_then_parks_the_credential() {
    let s = Stack::with(StackOptions {
        max_age: "2s",
        revocation_delay_ms: 0,
        ..Default::default()
    })
    .await;
    let (_, old) = s.current().await;
    tokio::time::sleep(Duration::from_millis(2100)).await; // due
    fault(
        &s,
        "storefront_graphql",
        FaultMode::Error { status: 401 },
        None,
    )
    .await;
    let before = s.admin.counters().await.unwrap();

    let daemon = tokio::process::Command::new(common::binary())
        .arg("--config")
        .arg(&s.config)
        .arg("--events-file")
        .arg(&s.events)
        .args(["run", "--attempt-backoff", "2s", "--failure-budget", "3"])
        .env("VAULT_TOKEN", &s.token)
        .env("SECRET_ROTATOR_INSTANCE_ID", "hardening")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let pid = daemon.id().expect("running");
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), daemon.wait_with_output())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let log = String::from_utf8_lossy(&out.stderr);

    // At most the budgeted attempts in 60 s, each rolled back, then parked.
    let h = s.history().await;
    let attempts = h["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{h}");
    assert!(
        attempts.iter().all(|a| a["outcome"] == "rolled_back"),
        "{h}"
    );
    assert!(h["in_flight"].is_null(), "{h}");

    // Every minted token is revoked or reported as a possible orphan.
    let c = s.admin.counters().await.unwrap();
    let orphans: u64 = attempts
        .iter()
        .map(|a| a["orphans"].as_array().unwrap().len() as u64)
        .sum();
    let minted = c.tokens_minted - before.tokens_minted;
    let revoked = c.tokens_revoked - before.tokens_revoked;
    assert_eq!(minted, 3, "{c:?}");
    assert_eq!(minted, revoked + orphans, "{c:?}");
    let live = s.tokens_in_state(TokenState::Live).await;
    assert_eq!(
        live.iter().map(|t| t.0.clone()).collect::<Vec<_>>(),
        vec![sha256_hex(&old)],
        "only the original token lives"
    );

    // Vault never refused a write (no 400: no record too complex, no blind CAS re-send). The
    // client words a 400 as "status 400" or "(400)"; timestamps may hold "400" by chance.
    assert!(
        !log.contains("status 400") && !log.contains("(400)"),
        "{log}"
    );
    let (v, current) = s.current().await;
    assert_eq!((v, current), (1, old));

    // `status` says the credential needs an operator, and why; `--check` fails.
    let out = s.cli(&["status", "--json", "--check"], &[]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    let rows: Value = serde_json::from_str(&out.stdout).unwrap();
    let why = rows[0]["needs_attention"].as_str().unwrap_or_default();
    assert!(
        why.contains("3 attempts in a row") && why.contains("401"),
        "{rows}"
    );
    let out = s.cli(&["status"], &[]).await;
    assert!(
        out.stdout.contains("NEEDS ATTENTION") && out.stdout.contains("rotate storefront-main"),
        "{out:?}"
    );
    let parked: Vec<Value> = s
        .events()
        .into_iter()
        .filter(|e| e["type"] == "rotation.needs_attention")
        .collect();
    assert_eq!(parked.len(), 1, "one needs_attention event when parked");

    // An operator's `rotate` starts again at once (and still fails, loudly).
    let out = s.cli(&["rotate", CRED], &[]).await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(out.stdout.contains("rolled_back"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_rotations_and_three_hundred_failures_keep_the_record_small() {
    let s = quick_stack().await;
    let p = InProcess::new(&s).await;
    let engine = p.engine("bound-test", EngineSettings::default());
    let mut most = 0;
    for i in 0..600 {
        if i == 300 {
            fault(
                &s,
                "storefront_graphql",
                FaultMode::Error { status: 401 },
                None,
            )
            .await;
        }
        let r = engine
            .drive(
                &p.cred,
                p.provider.as_ref(),
                Some(secret_rotator::rotation::Begin::Manual),
                Wait::All,
            )
            .await
            .unwrap_or_else(|e| panic!("attempt {i}: {e}"));
        let expected = if i < 300 {
            Outcome::Rotated
        } else {
            Outcome::RolledBack
        };
        assert!(
            matches!(&r, RunResult::Finished(f) if f.outcome == expected),
            "attempt {i}: {r:?}"
        );
        let (strings, _) = json_size(&raw_record(&s).await);
        most = most.max(strings);
    }
    println!("most JSON strings in the record over 600 attempts: {most}");
    assert!(most + 3 <= MAX_RECORD_STRINGS, "{most}");
    let meta = s
        .bao
        .root(
            "GET",
            &format!("secret/metadata/secret-rotator/credentials/{CRED}"),
            None,
        )
        .await;
    assert_eq!(meta["data"]["max_versions"], 5, "{meta}");
    assert!(meta["data"]["versions"].as_object().unwrap().len() <= 5);
    let (v, _) = s.current().await;
    assert_eq!(
        v, 301,
        "300 rotations, then 300 rejected ones changed nothing"
    );
}

/// Drop Vault's reply to the Nth write of a path: the write lands, the daemon never sees it.
/// (path fragment, nth write, what it is)
const LOST_REPLIES: &[(&str, usize, &str)] = &[
    (SECRET_PATH, 1, "the commit of the new token"),
    (
        "secret-rotator/credentials",
        1,
        "the record of the attempt's start",
    ),
    (
        "secret-rotator/credentials",
        2,
        "the record of the minted token",
    ),
    ("secret-rotator/credentials", 3, "the record of the commit"),
    ("secret-rotator/credentials", 4, "the record of the end"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_vault_reply_never_revokes_the_live_token() {
    for (path, nth, what) in LOST_REPLIES {
        let s = Stack::with(StackOptions {
            proxy: true,
            revocation_delay_ms: 0,
            ..Default::default()
        })
        .await;
        let (_, old) = s.current().await;
        let proxy = s.proxy.as_ref().unwrap();
        let data_path = format!("/data/{path}");
        proxy.drop_reply("POST", &data_path, *nth);
        let out = s.cli(&["rotate", CRED, "--wait"], &[]).await;
        // The daemon (run --once) finishes what `rotate` could not.
        for _ in 0..10 {
            if s.history().await["in_flight"].is_null() {
                break;
            }
            s.cli(&["run", "--once"], &[]).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let (version, current) = s.current().await;
        assert_eq!(version, 2, "{what}: one new version: {out:?}");
        assert_eq!(
            s.graphql_status(&current).await,
            200,
            "{what}: the token in Vault is live: {out:?}"
        );
        assert!(
            s.rejected_within(&old, Duration::from_secs(5)).await,
            "{what}: the old one is revoked"
        );
        assert!(
            !revoked(&s).await.contains(&sha256_hex(&current)),
            "{what}: the live token was never revoked"
        );
        let h = s.history().await;
        assert_eq!(h["attempts"][0]["outcome"], "rotated", "{what}: {h}");
        assert_eq!(
            proxy.count("POST", &format!("/data/{SECRET_PATH}")),
            1,
            "{what}: the secret was written once, never re-sent"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_call_hanging_past_the_lease_ends_in_exactly_one_commit() {
    // (lease, step deadline): as shipped, the deadline is shorter than the lease; the second
    // row breaks that rule on purpose, and fencing alone must still keep the live token safe.
    let cases = [
        (Duration::from_secs(3), Duration::from_secs(1)),
        (Duration::from_secs(2), Duration::from_secs(30)),
    ];
    for (lease, step_deadline) in cases {
        let s = quick_stack().await;
        let (_, old) = s.current().await;
        // Verification of the new token hangs for 4 s, once.
        fault(
            &s,
            "storefront_graphql",
            FaultMode::Latency { latency_ms: 4000 },
            Some(1),
        )
        .await;
        let p = InProcess::new(&s).await;
        let settings = EngineSettings {
            lease,
            step_deadline,
            ..EngineSettings::default()
        };
        let a = p.engine("instance-a", settings.clone());
        let b = p.engine("instance-b", settings);
        let first = a.drive(
            &p.cred,
            p.provider.as_ref(),
            Some(secret_rotator::rotation::Begin::Manual),
            Wait::All,
        );
        let second = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            // The second instance retries like the daemon does until nothing is in flight.
            let mut last = None;
            for _ in 0..100 {
                let r = b.drive(&p.cred, p.provider.as_ref(), None, Wait::All).await;
                let done = matches!(r, Ok(RunResult::Idle) | Ok(RunResult::Finished(_)));
                last = Some(r);
                if done {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            last.unwrap()
        };
        let (ra, rb) = tokio::join!(first, second);
        let case = format!("lease {lease:?}, deadline {step_deadline:?}: a {ra:?}, b {rb:?}");
        assert!(
            ra.is_ok() || matches!(ra, Err(EngineError::Fenced { .. })),
            "{case}"
        );
        let (version, current) = s.current().await;
        assert_eq!(version, 2, "exactly one commit: {case}");
        assert_eq!(s.graphql_status(&current).await, 200, "{case}");
        assert_eq!(
            revoked(&s).await,
            vec![sha256_hex(&old)],
            "only the old token: {case}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_outage_within_the_transient_budget_ends_in_a_completed_rotation() {
    use secret_rotator::rotation::state::{Backoff, RetryPolicy};
    // The shipped budget is 15 minutes (a 10-minute outage completes); scaled down here:
    // (outage, budget, expected)
    // An outage of `None` does not end.
    let cases = [
        (
            Some(Duration::from_secs(6)),
            Duration::from_secs(20),
            "rotated",
        ),
        (None, Duration::from_secs(5), "needs attention"),
    ];
    for (outage, budget, expected) in cases {
        let s = quick_stack().await;
        let (_, old) = s.current().await;
        // The store answers 503 to every token creation during the outage.
        fault(
            &s,
            "storefront_token_create",
            FaultMode::Error { status: 503 },
            None,
        )
        .await;
        let admin = s.admin.clone();
        let end_outage = tokio::spawn(async move {
            if let Some(outage) = outage {
                tokio::time::sleep(outage).await;
                admin.clear_faults().await.unwrap();
            }
        });
        let p = InProcess::new(&s).await;
        let settings = EngineSettings {
            retry: RetryPolicy {
                step: Backoff {
                    base: Duration::from_millis(200),
                    cap: Duration::from_secs(2),
                },
                transient_budget: budget,
                ..RetryPolicy::default()
            },
            ..EngineSettings::default()
        };
        let engine = p.engine("outage", settings);
        let r = engine
            .drive(
                &p.cred,
                p.provider.as_ref(),
                Some(secret_rotator::rotation::Begin::Manual),
                Wait::All,
            )
            .await
            .unwrap();
        let case = format!("outage {outage:?}, budget {budget:?}: {r:?}");
        match expected {
            "rotated" => {
                assert!(
                    matches!(&r, RunResult::Finished(f) if f.outcome == Outcome::Rotated),
                    "{case}"
                );
                let (v, current) = s.current().await;
                assert_eq!(v, 2, "{case}");
                assert_ne!(current, old, "{case}");
            }
            _ => {
                assert!(
                    matches!(&r, RunResult::NeedsAttention { error, .. } if error.contains("503")),
                    "{case}"
                );
                let out = s.cli(&["status", "--json"], &[]).await;
                assert!(out.stdout.contains("503"), "status shows why: {out:?}");
                assert_eq!(s.current().await.0, 1, "{case}");
            }
        }
        end_outage.abort();
    }
}

fn rotated(r: &Result<RunResult, EngineError>) -> bool {
    matches!(r, Ok(RunResult::Finished(f)) if f.outcome == Outcome::Rotated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_found_due_at_a_version_another_instance_has_since_rotated_is_not_rotated_again(
) {
    // (the version the second instance found due, counted back from the current one; does it
    // rotate?)
    let cases = [(1, false), (0, true)];
    for (back, rotates) in cases {
        let s = quick_stack().await;
        let p = InProcess::new(&s).await;
        let a = p.engine("instance-a", EngineSettings::default());
        let b = p.engine("instance-b", EngineSettings::default());
        // The second instance reads the secret at v1 and finds it due; the first rotates it.
        let r = a
            .drive(&p.cred, p.provider.as_ref(), Some(Begin::Manual), Wait::All)
            .await;
        assert!(rotated(&r), "{r:?}");
        let (version, _) = s.current().await;
        let mints = s.admin.storefront_tokens(STORE).await.unwrap().len();
        let due = Begin::Due {
            trigger: "max_age",
            seen: Some(version - back),
        };
        let r = b
            .drive(&p.cred, p.provider.as_ref(), Some(due), Wait::All)
            .await;
        let case = format!("found due at v{}, now v{version}: {r:?}", version - back);
        let minted = s.admin.storefront_tokens(STORE).await.unwrap().len() - mints;
        if rotates {
            assert!(rotated(&r), "{case}");
            assert_eq!((s.current().await.0, minted), (version + 1, 1), "{case}");
        } else {
            assert!(matches!(r, Ok(RunResult::Idle)), "{case}");
            assert_eq!((s.current().await.0, minted), (version, 0), "{case}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_record_created_between_the_read_and_its_metadata_read_is_read_again_not_overwritten(
) {
    let s = Stack::with(StackOptions {
        grace: "0s",
        revocation_delay_ms: 0,
        proxy: true,
        ..Default::default()
    })
    .await;
    let (status, _) = s
        .bao
        .call_as(
            common::ROOT_TOKEN,
            "GET",
            &format!("secret/data/secret-rotator/credentials/{CRED}"),
            None,
        )
        .await;
    assert_eq!(status, 404, "no state record yet");
    let (v0, _) = s.current().await;
    let p = InProcess::new(&s).await;
    let a = p.engine("instance-a", EngineSettings::default());
    let b = p.engine("instance-b", EngineSettings::default());
    // The first instance finds no record; its metadata read reaches OpenBao only after the
    // second instance has created the record and rotated.
    s.proxy.as_ref().unwrap().stall_request(
        "GET",
        &format!("metadata/secret-rotator/credentials/{CRED}"),
        1,
        Duration::from_secs(2),
    );
    let first = a.drive(&p.cred, p.provider.as_ref(), Some(Begin::Manual), Wait::All);
    let second = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.drive(&p.cred, p.provider.as_ref(), Some(Begin::Manual), Wait::All)
            .await
    };
    let (ra, rb) = tokio::join!(first, second);
    assert!(rotated(&ra) && rotated(&rb), "a {ra:?}, b {rb:?}");
    // Both attempts are in the record: the first instance did not start from a blank record
    // at the version the second one wrote.
    let record = raw_record(&s).await;
    let history = common::history_of(&record);
    let ids: Vec<&str> = history.iter().filter_map(|h| h["id"].as_str()).collect();
    assert_eq!(ids.len(), 2, "{record}");
    let (version, current) = s.current().await;
    assert_eq!(version, v0 + 2);
    assert_eq!(s.graphql_status(&current).await, 200);
    let live = s.admin.live_storefront_tokens(STORE).await.unwrap();
    assert_eq!(live.len(), 1, "only the current token is live: {live:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_record_write_after_a_mint_never_restores_the_attempt_as_it_was_before_the_step() {
    use secret_rotator::rotation::state::{Backoff, RetryPolicy};
    // The first mint is answered 503 (the attempt waits in `minting`, its mint settled); on
    // resume the attempt writes `mint_settled = false` and mints T1, then the write that records
    // T1 gets a gateway's 502 and never reaches OpenBao. (what, how T1's mint is answered)
    let cases = [
        (
            "T1 minted and answered: the write of the minted token fails",
            None,
        ),
        (
            "T1 minted, its answer lost: the write of the noted orphan fails",
            Some(FaultMode::DropAfterCommit),
        ),
    ];
    for (what, second_mint) in cases {
        let s = Stack::with(StackOptions {
            grace: "0s",
            revocation_delay_ms: 0,
            proxy: true,
            ..Default::default()
        })
        .await;
        let proxy = s.proxy.as_ref().unwrap();
        let p = InProcess::new(&s).await;
        let settings = EngineSettings {
            retry: RetryPolicy {
                step: Backoff {
                    base: Duration::from_millis(100),
                    cap: Duration::from_millis(200),
                },
                ..RetryPolicy::default()
            },
            ..EngineSettings::default()
        };
        let engine = p.engine("instance-a", settings);
        let record_writes = format!("/data/secret-rotator/credentials/{CRED}");
        // 1. The first mint is answered 503: the attempt waits in `minting`, the mint settled.
        fault(
            &s,
            "storefront_token_create",
            FaultMode::Error { status: 503 },
            Some(1),
        )
        .await;
        let r = engine
            .drive(&p.cred, p.provider.as_ref(), Some(Begin::Manual), Wait::No)
            .await;
        assert!(matches!(r, Ok(RunResult::RetryAt { .. })), "{what}: {r:?}");
        assert_eq!(
            raw_record(&s).await["attempt"]["mint_settled"],
            true,
            "{what}"
        );
        // 2. Resumed: `mint_settled = false` is written (1st write), T1 is minted, and the
        // write recording T1 (2nd) never reaches OpenBao.
        if let Some(mode) = second_mint {
            fault(&s, "storefront_token_create", mode, Some(1)).await;
        }
        proxy.answer("POST", &record_writes, 2, 502);
        let before = s.admin.storefront_tokens(STORE).await.unwrap().len();
        let r = engine
            .drive(&p.cred, p.provider.as_ref(), None, Wait::Retries)
            .await;
        assert!(matches!(r, Err(EngineError::Vault(_))), "{what}: {r:?}");
        assert_eq!(
            s.admin.storefront_tokens(STORE).await.unwrap().len(),
            before + 1,
            "{what}: T1 was minted"
        );
        let attempt = raw_record(&s).await["attempt"].clone();
        assert_ne!(
            attempt["mint_settled"], true,
            "{what}: the record still says a mint may be under way: phase {}, orphans {}, error {}",
            attempt["phase"], attempt["orphans"], attempt["last_error"]
        );
        proxy.clear_rules();
        // 3. The next run accounts for T1 before it mints T2, and the rotation completes.
        let r = engine
            .drive(&p.cred, p.provider.as_ref(), None, Wait::All)
            .await;
        assert!(rotated(&r), "{what}: {r:?}");
        let (_, current) = s.current().await;
        let live = s.admin.live_storefront_tokens(STORE).await.unwrap();
        let record = raw_record(&s).await;
        let history = common::history_of(&record);
        let orphans = history
            .last()
            .and_then(|h| h["orphans"].as_array())
            .map_or(0, Vec::len);
        assert_eq!(live.len(), 2, "{what}: T1 and T2 are live: {live:?}");
        assert!(
            orphans >= live.len() - 1,
            "{what}: every live token but the current one ({}) is a reported orphan: {orphans} orphans in {:?}",
            sha256_hex(&current),
            history.last().map(|h| &h["orphans"])
        );
    }
}
