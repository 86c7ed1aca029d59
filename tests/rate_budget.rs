//! All rotations against one BigCommerce store share the store's rate-limit budget: the daemon
//! rotates 40 storefront credentials of one store, all due at once and all allowed in flight at
//! once, against a quota of 15 requests per 3 s, and paces itself instead of running into 429s.

mod common;

use std::time::{Duration, Instant};

use common::fleet::{
    add_credentials, adopt_secrets, instance_log, name, start_instance, wait_for_versions,
};
use common::stack::{Stack, StackOptions, STORE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const CREDENTIALS: usize = 40;
const QUOTA: u32 = 15;
const WINDOW: Duration = Duration::from_secs(3);
const MAX_AGE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_rotations_due_at_once_against_one_store_keep_to_its_quota_without_429() {
    let stack = Stack::with(StackOptions {
        max_age: "20s",
        grace: "1s",
        revocation_delay_ms: 0,
        root_token: true,
        ..Default::default()
    })
    .await;
    add_credentials(
        &stack,
        CREDENTIALS,
        &format!(
            "\n[daemon]\nstagger = \"0s\"\nmax_rotations = {CREDENTIALS}\nmax_rotations_per_provider = {CREDENTIALS}\n"
        ),
    );
    // Every credential holds version 1, adopted now: all are due together in 20 s.
    let old = adopt_secrets(&stack, CREDENTIALS).await;
    let due = Instant::now() + MAX_AGE;
    stack
        .admin
        .set_rate_limit(STORE, QUOTA, WINDOW)
        .await
        .unwrap();
    stack.admin.reset_counters().await.unwrap();
    let mut daemon = start_instance(&stack, "paced");

    // Each rotation mints (one rate-limited request), commits, then revokes the old token after
    // the grace (another): 80 requests against 5 per second.
    let log = || instance_log(&stack, "paced");
    let versions = tokio::time::timeout(
        MAX_AGE + Duration::from_secs(80),
        wait_for_versions(&stack, &[2; CREDENTIALS], MAX_AGE + Duration::from_secs(70)),
    )
    .await
    .unwrap_or_else(|_| panic!("log:\n{}", log()));
    for (i, token) in old.iter().enumerate() {
        assert!(
            stack.rejected_within(token, Duration::from_secs(40)).await,
            "{}: the old token is still accepted; log:\n{}",
            name(i),
            log()
        );
    }
    let elapsed = due.elapsed();

    kill(Pid::from_raw(daemon.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(40), daemon.wait())
        .await
        .expect("stops within its bound")
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let counters = stack.admin.counters().await.unwrap();
    let limited = counters.by_status(429);
    let metered = counters.by_endpoint("storefront_token_create")
        + counters.by_endpoint("storefront_token_revoke");
    let rotations: u64 = versions.iter().map(|v| v - 1).sum();
    eprintln!(
        "{CREDENTIALS} credentials due at once, quota {QUOTA} per {WINDOW:?}: {rotations} rotations (old token revoked) in {elapsed:.1?} after they fell due ({:.2} rotations/s); {metered} rate-limited requests; {limited} answered 429",
        rotations as f64 / elapsed.as_secs_f64(),
    );
    assert_eq!(limited, 0, "the store answered 429; log:\n{}", log());
}
