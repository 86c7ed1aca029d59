//! The daemon over a 3-node OpenBao Raft cluster: its config lists every node, it talks to the
//! active one, and when the leader is killed (SIGKILL) while rotations run it finds the new
//! leader and carries on: every credential keeps rotating, no version is lost, and the emulator
//! minted no token that Vault's versions and the records do not account for.

mod common;

use std::time::{Duration, Instant};

use common::fleet::{
    self, add_credentials, assert_current_tokens_live, assert_mints_accounted_for,
    assert_no_rotation_right_after_another, instance_log, mints, plus, start_instance, versions,
    wait_for_versions,
};
use common::raft::RaftCluster;
use common::stack::Stack;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const CREDENTIALS: usize = 20;
/// Versions every credential gains after the leader is killed.
const AFTER_FAILOVER: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_go_on_when_the_raft_leader_is_killed() {
    let mut cluster = RaftCluster::start(3).await;
    let leader = cluster.wait_active(Duration::from_secs(5)).await;
    let mut stack = Stack::on(
        cluster.client(leader),
        &cluster.addresses(),
        fleet::options("4s"),
    )
    .await;
    fleet::lift_rate_limit(&stack).await;
    add_credentials(&stack, CREDENTIALS, "");
    let config = std::fs::read_to_string(&stack.config).unwrap();
    assert!(config.contains("addresses = ["), "{config}");
    let initial = versions(&stack, CREDENTIALS).await;
    let minted_before = mints(&stack).await;

    let mut daemon = start_instance(&stack, "raft");
    let started = Instant::now();
    let warm = wait_for_versions(&stack, &plus(&initial, 1), Duration::from_secs(40)).await;
    eprintln!("one round on the cluster in {:?}", started.elapsed());

    // Rotations are under way all the time (4 s max age): kill the leader among them.
    let killed_at = Instant::now();
    cluster.kill(leader);
    let new_leader = cluster.wait_active(Duration::from_secs(30)).await;
    let failover = killed_at.elapsed();
    eprintln!("leader node-{leader} killed; node-{new_leader} active after {failover:?}");
    stack.bao = cluster.client(new_leader);

    wait_for_versions(
        &stack,
        &plus(&warm, AFTER_FAILOVER),
        Duration::from_secs(45),
    )
    .await;
    eprintln!(
        "{AFTER_FAILOVER} more versions of every credential {:?} after the kill",
        killed_at.elapsed()
    );
    let log = instance_log(&stack, "raft");
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon exited:\n{log}"
    );
    for line in log.lines().filter(|l| l.contains("active node")) {
        eprintln!("daemon: {line}");
    }
    assert!(
        log.contains("vault active node found"),
        "the daemon did not look for the new leader:\n{log}"
    );

    kill(Pid::from_raw(daemon.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(40), daemon.wait())
        .await
        .expect("stops within its bound")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", instance_log(&stack, "raft"));

    assert_mints_accounted_for(&stack, &initial, minted_before).await;
    assert_no_rotation_right_after_another(&stack, CREDENTIALS, chrono::Duration::seconds(2)).await;
    assert_current_tokens_live(&stack, CREDENTIALS).await;
}
