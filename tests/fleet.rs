//! Instances that share the work: three real daemons in one group over 30 storefront
//! credentials, 29 of them the members of one credential set found in Vault (the real binary,
//! a real OpenBao, the emulator), each credential rotated by its rendezvous owner only; one
//! member killed with SIGKILL and its credentials rotated by the others; a fourth member
//! joining and taking its share, never a double rotation; a store's token added in Vault and
//! rotated by its owner without a reload; every mint accounted for throughout.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::fleet::{
    self, adopt_secret, adopt_secrets, assert_current_tokens_live, assert_mints_accounted_for_of,
    assert_no_rotation_right_after_another, instance_log, mints, plus, shared_set, versions,
    wait_for_versions_of, Creds,
};
use common::stack::Stack;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use secret_rotator::fleet::owner_of;

const CREDENTIALS: usize = 30;
/// `[daemon] group_lease_ttl`.
const TTL: chrono::Duration = chrono::Duration::seconds(3);
/// The credentials' max age.
const MAX_AGE: chrono::Duration = chrono::Duration::seconds(6);

/// `run --interval 1s` as instance `id`, logging JSON lines to `{id}.log`.
fn start(stack: &Stack, id: &str) -> tokio::process::Child {
    let log = std::fs::File::create(stack.dir.path().join(format!("{id}.log"))).unwrap();
    tokio::process::Command::new(common::binary())
        .arg("--config")
        .arg(&stack.config)
        .args(["run", "--interval", "1s"])
        .env("VAULT_TOKEN", &stack.token)
        .env("SECRET_ROTATOR_INSTANCE_ID", id)
        .env("SECRET_ROTATOR_LOG", "info")
        .env("SECRET_ROTATOR_LOG_FORMAT", "json")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start an instance")
}

/// A commit as an instance logged it.
#[derive(Debug, Clone)]
struct Commit {
    instance: String,
    credential: String,
    version: u64,
    at: DateTime<Utc>,
}

/// Every commit the instances `ids` logged, oldest first.
fn commits(stack: &Stack, ids: &[&str]) -> Vec<Commit> {
    let mut out = Vec::new();
    for id in ids {
        for line in instance_log(stack, id).lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["fields"]["message"] != "new credential committed" {
                continue;
            }
            out.push(Commit {
                instance: id.to_string(),
                credential: v["fields"]["credential"].as_str().unwrap().to_string(),
                version: v["fields"]["version"].as_u64().unwrap(),
                at: v["timestamp"].as_str().unwrap().parse().unwrap(),
            });
        }
    }
    out.sort_by_key(|c| c.at);
    out
}

/// Waits until `status` shows `n` live members; returns when it did.
async fn all_live(stack: &Stack, n: usize) -> DateTime<Utc> {
    let until = Utc::now() + chrono::Duration::seconds(60);
    loop {
        let out = stack.cli(&["status"], &[]).await;
        if out.stdout.contains(&format!("group: {n} live members")) {
            return Utc::now();
        }
        assert!(Utc::now() < until, "no {n} live members: {}", out.stdout);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn members(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// Every commit after `since` was made by the credential's owner among `ids`.
fn assert_only_owners_commit(all: &[Commit], since: DateTime<Utc>, ids: &[&str]) -> usize {
    let group = members(ids);
    let mut n = 0;
    for c in all.iter().filter(|c| c.at > since) {
        let owner = owner_of(&c.credential, &group).unwrap();
        assert_eq!(
            c.instance, owner,
            "{} version {} committed by {} at {}, owner among {ids:?} is {owner}",
            c.credential, c.version, c.instance, c.at
        );
        n += 1;
    }
    assert!(n > 0, "no commit after {since}");
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_shares_the_credentials_hands_over_a_dead_members_and_takes_in_a_new_one() {
    let stack = Stack::with(fleet::options("6s")).await;
    fleet::lift_rate_limit(&stack).await;
    let creds = Creds::set(CREDENTIALS);
    let mut config = std::fs::read_to_string(&stack.config).unwrap();
    config.push_str("\n[daemon]\nstagger = \"1s\"\ngroup_lease_ttl = \"3s\"\n");
    config.push_str(&shared_set(&stack));
    std::fs::write(&stack.config, config).unwrap();
    // An operator adopted the store's tokens: the set's members are what Vault holds.
    adopt_secrets(&stack, creds).await;
    let initial = versions(&stack, creds).await;
    let minted_before = mints(&stack).await;
    let names: Vec<String> = (0..CREDENTIALS).map(|i| creds.name(i)).collect();

    // Three members. The first seconds may overlap (a member that has not listed the others
    // yet owns everything): only the check-and-set decides there.
    let mut a = start(&stack, "fleet-a");
    let mut b = start(&stack, "fleet-b");
    let mut c = start(&stack, "fleet-c");
    // Joined once all three member records are live (a loaded machine may take seconds to
    // start three processes); from a lease TTL on, each has listed the others.
    let joined = all_live(&stack, 3).await;
    let after =
        wait_for_versions_of(&stack, creds, &plus(&initial, 3), Duration::from_secs(60)).await;
    let all = commits(&stack, &["fleet-a", "fleet-b", "fleet-c"]);
    let n = assert_only_owners_commit(&all, joined + TTL + TTL, &["fleet-a", "fleet-b", "fleet-c"]);
    eprintln!("three members: {n} commits, each by its owner");
    // `status` shows the members and how many credentials each owns.
    let shares = secret_rotator::fleet::shares(
        names.iter().map(String::as_str),
        &members(&["fleet-a", "fleet-b", "fleet-c"]),
    );
    let status = stack.cli(&["status"], &[]).await;
    assert!(
        status.stdout.contains("group: 3 live members"),
        "{}",
        status.stdout
    );
    for (member, owned) in &shares {
        assert!(
            status
                .stdout
                .contains(&format!("  {member}  owns {owned}\n")),
            "{member} owns {owned}: {}",
            status.stdout
        );
    }

    // SIGKILL one member: its record stays until its lease ends; then the others own its
    // credentials, and each is rotated no later than the lease TTL past its due time.
    kill(Pid::from_raw(a.id().unwrap() as i32), Signal::SIGKILL).unwrap();
    let killed = Utc::now();
    let _ = a.wait().await;
    let dead: Vec<&String> = names
        .iter()
        .filter(|n| owner_of(n, &members(&["fleet-a", "fleet-b", "fleet-c"])) == Some("fleet-a"))
        .collect();
    assert!(dead.len() >= 3, "fleet-a owned only {dead:?}");
    let after_kill =
        wait_for_versions_of(&stack, creds, &plus(&after, 2), Duration::from_secs(60)).await;
    let all = commits(&stack, &["fleet-a", "fleet-b", "fleet-c"]);
    for cred in &dead {
        let before: Vec<&Commit> = all
            .iter()
            .filter(|c| &&c.credential == cred && c.at <= killed)
            .collect();
        let last_before = before.last().map_or(joined, |c| c.at);
        let first_after = all
            .iter()
            .find(|c| &&c.credential == cred && c.at > killed)
            .unwrap_or_else(|| panic!("{cred}: no commit after the kill"));
        assert_ne!(first_after.instance, "fleet-a");
        // Due a max age after its last commit (less jitter), owned by the others a lease TTL
        // after the kill at the latest; then the stagger (1 s) and the loop's wake-ups.
        let bound = (last_before + MAX_AGE).max(killed + TTL) + chrono::Duration::seconds(4);
        assert!(
            first_after.at <= bound,
            "{cred}: rotated by {} at {}, later than {bound} (killed {killed}, last commit {last_before})",
            first_after.instance,
            first_after.at
        );
    }
    let n = assert_only_owners_commit(&all, killed + TTL + TTL, &["fleet-b", "fleet-c"]);
    eprintln!(
        "after the kill: {} credentials of fleet-a handed over, {n} commits by their owners",
        dead.len()
    );

    // A fourth member joins: it takes about a third, from both others, and nothing is
    // rotated twice for one due time.
    let mut d = start(&stack, "fleet-d");
    let d_joined = all_live(&stack, 3).await;
    let after_join = wait_for_versions_of(
        &stack,
        creds,
        &plus(&after_kill, 3),
        Duration::from_secs(60),
    )
    .await;
    let all = commits(&stack, &["fleet-a", "fleet-b", "fleet-c", "fleet-d"]);
    let n = assert_only_owners_commit(
        &all,
        d_joined + TTL + TTL,
        &["fleet-b", "fleet-c", "fleet-d"],
    );
    let moved: BTreeSet<&String> = names
        .iter()
        .filter(|n| owner_of(n, &members(&["fleet-b", "fleet-c", "fleet-d"])) == Some("fleet-d"))
        .collect();
    let by_d: BTreeSet<&String> = all
        .iter()
        .filter(|c| c.instance == "fleet-d")
        .map(|c| &c.credential)
        .collect();
    assert!(moved.len() >= 3, "fleet-d owns only {moved:?}");
    assert!(
        by_d.is_subset(&moved) && by_d.len() == moved.len(),
        "fleet-d rotated {by_d:?}, owns {moved:?}"
    );
    eprintln!(
        "fleet-d joined: owns {} credentials; {n} commits by their owners",
        moved.len()
    );

    // A store's token is added in Vault: the set lists it within its discovery interval, and
    // its owner among the three live members rotates it, without a reload.
    let grown = Creds::set(CREDENTIALS + 1);
    let added = grown.name(CREDENTIALS);
    adopt_secret(&stack, grown, CREDENTIALS).await;
    let minted_before = minted_before + 1;
    let added_at = Utc::now();
    let mut initial = initial;
    initial.push(1);
    let mut wanted = versions(&stack, grown).await;
    wanted[CREDENTIALS] = 2;
    wait_for_versions_of(&stack, grown, &wanted, Duration::from_secs(60)).await;
    let all = commits(&stack, &["fleet-a", "fleet-b", "fleet-c", "fleet-d"]);
    let first = all
        .iter()
        .find(|c| c.credential == added)
        .unwrap_or_else(|| panic!("{added}: no commit logged"));
    let live = members(&["fleet-b", "fleet-c", "fleet-d"]);
    let owner = owner_of(&added, &live).unwrap();
    assert_eq!(first.instance, owner, "{added}: rotated by {first:?}");
    eprintln!(
        "{added} added in Vault: rotated by its owner {owner} {:.1} s later",
        (first.at - added_at).num_milliseconds() as f64 / 1000.0
    );

    for child in [&mut b, &mut c, &mut d] {
        kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    }
    for child in [&mut b, &mut c, &mut d] {
        let status = tokio::time::timeout(Duration::from_secs(40), child.wait())
            .await
            .expect("stops within its bound")
            .unwrap();
        assert_eq!(status.code(), Some(0));
    }

    // No version written twice: each (credential, version) committed once, and no more
    // commits logged than versions written.
    let all = commits(&stack, &["fleet-a", "fleet-b", "fleet-c", "fleet-d"]);
    let mut seen: BTreeMap<(String, u64), String> = BTreeMap::new();
    for c in &all {
        if let Some(other) = seen.insert((c.credential.clone(), c.version), c.instance.clone()) {
            panic!(
                "{} version {} committed by {other} and {}",
                c.credential, c.version, c.instance
            );
        }
    }
    let written: u64 = after_join.iter().zip(&initial).map(|(v, i)| v - i).sum();
    let last = versions(&stack, grown).await;
    let written_now: u64 = last.iter().zip(&initial).map(|(v, i)| v - i).sum();
    assert!(all.len() as u64 <= written_now && written <= written_now);
    // Never a rotation right after another one (a max age less its jitter, at most half).
    assert_no_rotation_right_after_another(&stack, grown, MAX_AGE / 2).await;
    // Every mint is a committed version or accounted for in a record.
    assert_mints_accounted_for_of(&stack, grown, &initial, minted_before).await;
    assert_current_tokens_live(&stack, grown).await;
    // The members that stopped cleanly deleted their records; the killed one's is left.
    let listed = stack
        .bao
        .root("LIST", "secret/metadata/secret-rotator/members", None)
        .await;
    assert_eq!(
        listed["data"]["keys"],
        serde_json::json!(["fleet-a"]),
        "{listed}"
    );
}
