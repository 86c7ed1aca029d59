//! Several daemon instances against one OpenBao share the credentials: the real binary three
//! times, 100 storefront credentials on the emulator, a short max age, several rounds.

mod common;

use std::time::{Duration, Instant};

use common::fleet::{
    self, add_credentials, assert_current_tokens_live, assert_mints_accounted_for,
    assert_no_rotation_right_after_another, mints, plus, start_instance, versions,
    wait_for_versions,
};
use common::stack::Stack;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const CREDENTIALS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_100_credentials_without_a_double_rotation_and_survive_a_kill() {
    let stack = Stack::with(fleet::options("10s")).await;
    fleet::lift_rate_limit(&stack).await;
    add_credentials(
        &stack,
        CREDENTIALS,
        "\n[daemon]\nstagger = \"2s\"\ngroup_lease_ttl = \"3s\"\n",
    );
    let initial = versions(&stack, CREDENTIALS).await;
    let minted_before = mints(&stack).await;

    let mut a = start_instance(&stack, "ha-a");
    let mut b = start_instance(&stack, "ha-b");
    let mut c = start_instance(&stack, "ha-c");
    // Round one mints the missing secrets; two more rounds on the 10 s max age.
    let started = Instant::now();
    let after = wait_for_versions(&stack, &plus(&initial, 3), Duration::from_secs(120)).await;
    eprintln!("three rounds in {:?}", started.elapsed());

    // One instance dies without a word; the other two carry its credentials on.
    kill(Pid::from_raw(a.id().unwrap() as i32), Signal::SIGKILL).unwrap();
    let _ = a.wait().await;
    let started = Instant::now();
    wait_for_versions(&stack, &plus(&after, 2), Duration::from_secs(90)).await;
    eprintln!("two more rounds after the kill in {:?}", started.elapsed());

    for child in [&mut b, &mut c] {
        kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    }
    for child in [&mut b, &mut c] {
        let status = tokio::time::timeout(Duration::from_secs(40), child.wait())
            .await
            .expect("stops within its bound")
            .unwrap();
        assert_eq!(status.code(), Some(0));
    }

    // Every mint is a committed version, or accounted for in a record (a mint the killed
    // instance had in flight): never two rotations of one version.
    assert_mints_accounted_for(&stack, &initial, minted_before).await;
    // Each rotation begins a max age (10 s) after the last commit, less its jitter (at most half).
    assert_no_rotation_right_after_another(&stack, CREDENTIALS, chrono::Duration::seconds(5)).await;
    // No version lost: every credential's current secret is live at the emulator.
    assert_current_tokens_live(&stack, CREDENTIALS).await;
}
