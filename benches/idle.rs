//! What the daemon asks of Vault while nothing is due, counted by OpenBao itself.
//!
//! Run: `cargo bench --bench idle` (release build). In one run:
//! 1. a dev OpenBao with a file audit device (every request logged by the server);
//! 2. `IDLE_CREDENTIALS` credentials (default 1000, `exec` provider, max age 30 days, none due),
//!    their secrets written beforehand;
//! 3. raw metadata reads/s at concurrency 16 against the same server (the bound on start-up);
//! 4. for each group size in `IDLE_INSTANCES` (default `1,3`), one after the other over the same
//!    credentials: that many release daemons (`run`, `[daemon] reconcile_interval =
//!    IDLE_RECONCILE`, default 10m; `group_lease_ttl = IDLE_LEASE` when set, else the default),
//!    each until READY on its notify socket, then `IDLE_SECS` seconds (default 120) of idling;
//!    then SIGTERM to all (they leave the group);
//! 5. per group size, the audit log's requests once the start-up checks that follow READY are
//!    done (for a group, one lease TTL later: every member has listed the others), per
//!    credential per hour in total over the instances, by kind; the requests before
//!    READY and the time to READY; the resident memory after the idle window.
//!
//! Prints a table per group size and writes `target/bench/idle.json`. Without `--bench` (as
//! under `cargo test --all-targets`) it runs a smoke pass (20 credentials, 3 s, reconcile 2 s)
//! and writes nothing. Loopback only.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::bench::{env_or, raw_metadata_reads, root_client, rss_kib, spawn_daemon, target_dir};
use common::OpenBao;
use secret_rotator::config::KvPath;
use secret_rotator::secret::SecretFields;
use serde_json::{json, Value};
use tokio::net::UnixDatagram;

fn config_text(bao: &str, reconcile: &str, lease: Option<&str>, n: usize) -> String {
    let lease = lease
        .map(|l| format!("group_lease_ttl = \"{l}\"\n"))
        .unwrap_or_default();
    let mut text = format!(
        r#"
[vault]
address = "{bao}"
[vault.auth]
method = "token"

[defaults]
max_age = "30d"

[daemon]
reconcile_interval = "{reconcile}"
{lease}"#
    );
    for i in 0..n {
        text.push_str(&format!(
            r#"
[[credentials]]
name = "idle-{i}"
path = "idle/idle-{i}"
[credentials.exec]
mint = ["/bin/true"]
verify = ["/bin/true"]
revoke = ["/bin/true"]
fields = ["key"]
"#
        ));
    }
    text
}

/// The audit log's requests from byte `from` to `to`, by kind.
fn requests(log: &std::path::Path, from: usize, to: usize) -> BTreeMap<String, u64> {
    let text = std::fs::read(log).unwrap_or_default();
    let slice = &text[from.min(text.len())..to.min(text.len())];
    let mut kinds = BTreeMap::new();
    for line in String::from_utf8_lossy(slice).lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["type"] != "request" {
            continue;
        }
        let path = v["request"]["path"].as_str().unwrap_or("");
        let op = v["request"]["operation"].as_str().unwrap_or("");
        let kind = if path.starts_with("secret/metadata/idle/") {
            "secret metadata"
        } else if path.starts_with("secret/detailed-metadata/idle/") {
            "secret folder metadata"
        } else if path.starts_with("secret/data/idle/") {
            "secret data"
        } else if path.contains("secret-rotator/credentials/") {
            "state record"
        } else if path.contains("secret-rotator/deliveries/") {
            "deliveries record"
        } else if path.contains("secret-rotator/members") {
            "member records"
        } else {
            "other"
        };
        *kinds.entry(format!("{kind} ({op})")).or_insert(0) += 1;
    }
    kinds
}

fn audit_len(log: &std::path::Path) -> usize {
    std::fs::metadata(log)
        .map(|m| m.len() as usize)
        .unwrap_or(0)
}

/// The `i`th credential's secret.
fn idle_secret(i: usize) -> KvPath {
    KvPath {
        mount: "secret".into(),
        path: format!("idle/idle-{i}"),
    }
}

/// What one group size measured.
struct Figures {
    instances: usize,
    startup: BTreeMap<String, u64>,
    idle: BTreeMap<String, u64>,
    ready_secs: f64,
    checked_secs: f64,
    rss_kib: Vec<u64>,
}

/// `instances` daemons over the credentials of `config`: READY, the start-up checks, then
/// `idle_secs` of idling counted in the audit log; then SIGTERM to all.
async fn measure(
    dir: &std::path::Path,
    config: &std::path::Path,
    audit: &std::path::Path,
    instances: usize,
    idle_secs: f64,
    settle: Duration,
) -> Figures {
    let before_start = audit_len(audit);
    let started = Instant::now();
    let mut daemons = Vec::new();
    let mut sockets = Vec::new();
    for i in 0..instances {
        let socket = dir.join(format!("notify-{instances}-{i}.sock"));
        let _ = std::fs::remove_file(&socket);
        sockets.push(UnixDatagram::bind(&socket).unwrap());
        daemons.push(spawn_daemon(
            config,
            &format!("idle-bench-{i}"),
            &env_or("IDLE_LOG", "warn".to_string()),
            &socket,
        ));
    }
    let mut buf = vec![0u8; 4096];
    for notify in &sockets {
        loop {
            let got = tokio::time::timeout(Duration::from_secs(600), notify.recv(&mut buf))
                .await
                .expect("READY within 10 minutes")
                .unwrap();
            if String::from_utf8_lossy(&buf[..got])
                .lines()
                .any(|l| l == "READY=1")
            {
                break;
            }
        }
    }
    let ready_secs = started.elapsed().as_secs_f64();
    // Every request made before READY was answered before it: its request line is written.
    let before_ready = audit_len(audit);
    // Keep reading the notify sockets, as systemd does: a socket's queue holds about ten
    // datagrams, and a bench that stops reading measures a sender that waits for room (before
    // 2026-11-24 the daemon's loop itself waited there, and stopped reconciling after its first
    // minute). The start-up checks run after READY, in the background (about one request per
    // credential): the idle window begins when no status line says "checking" any more.
    let mut drains = Vec::new();
    let mut checked = Vec::new();
    for notify in sockets {
        let (checked_tx, checked_rx) = tokio::sync::oneshot::channel::<()>();
        checked.push(checked_rx);
        drains.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut checked_tx = Some(checked_tx);
            while let Ok(got) = notify.recv(&mut buf).await {
                let text = String::from_utf8_lossy(&buf[..got]).to_string();
                let done = text
                    .lines()
                    .any(|l| l.starts_with("STATUS=") && !l.contains("checking"));
                if done {
                    if let Some(tx) = checked_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        }));
    }
    for rx in checked {
        let _ = tokio::time::timeout(Duration::from_secs(600), rx).await;
    }
    let checked_secs = started.elapsed().as_secs_f64();
    // Let the audit device write the last responses of the start-up; a group, until every
    // member has listed the others (a member lists once per lease TTL: until then one that
    // joined first still plans every credential).
    tokio::time::sleep(Duration::from_millis(200)).await;
    if instances > 1 {
        tokio::time::sleep(settle).await;
    }
    let at_ready = audit_len(audit);
    tokio::time::sleep(Duration::from_secs_f64(idle_secs)).await;
    let at_end = audit_len(audit);
    let mut rss = Vec::new();
    for daemon in &daemons {
        let pid = daemon.id().unwrap();
        rss.push(rss_kib(pid));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    for daemon in &mut daemons {
        let _ = tokio::time::timeout(Duration::from_secs(40), daemon.wait()).await;
    }
    for d in drains {
        d.abort();
    }
    Figures {
        instances,
        startup: requests(audit, before_start, before_ready),
        idle: requests(audit, at_ready, at_end),
        ready_secs,
        checked_secs,
        rss_kib: rss,
    }
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = if full {
        env_or("IDLE_CREDENTIALS", 1000)
    } else {
        20
    };
    let idle_secs: f64 = if full {
        env_or("IDLE_SECS", 120.0)
    } else {
        3.0
    };
    let reconcile: String = if full {
        env_or("IDLE_RECONCILE", "10m".to_string())
    } else {
        "2s".into()
    };
    let lease: Option<String> = std::env::var("IDLE_LEASE").ok();
    // One lease TTL and a little more (60 s by default).
    let settle = lease
        .as_deref()
        .and_then(|l| humantime::parse_duration(l).ok())
        .unwrap_or(Duration::from_secs(60))
        + Duration::from_secs(2);
    let settle = if full { settle } else { Duration::ZERO };
    let sizes: Vec<usize> = env_or("IDLE_INSTANCES", "1,3".to_string())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|n| *n > 0)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let bao = OpenBao::start_with_audit(&audit).await;
    let vault = root_client(&bao.addr).await;
    // The secrets, written as an operator would have (version 1, created now: none due).
    let data = SecretFields::new().with("key", "x".repeat(32));
    let mut writes = Vec::new();
    for w in 0..8 {
        let (vault, data) = (vault.clone(), data.clone());
        writes.push(tokio::spawn(async move {
            for i in (w..n).step_by(8) {
                vault
                    .write_cas(&idle_secret(i), &data, 0)
                    .await
                    .expect("write a secret");
            }
        }));
    }
    for w in writes {
        w.await.unwrap();
    }
    let raw_reads = raw_metadata_reads(
        &vault,
        idle_secret,
        n,
        16,
        Duration::from_secs(if full { 3 } else { 1 }),
    )
    .await;

    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        config_text(&bao.addr, &reconcile, lease.as_deref(), n),
    )
    .unwrap();
    let per_hour = |count: u64| count as f64 / n as f64 * 3600.0 / idle_secs;
    let mut reports = Vec::new();
    for &instances in &sizes {
        let f = measure(dir.path(), &config, &audit, instances, idle_secs, settle).await;
        let idle_total: u64 = f.idle.values().sum();
        let startup_total: u64 = f.startup.values().sum();
        let bound = startup_total as f64 / raw_reads;
        println!(
            "idle group of {instances}: {n} credentials, none due, reconcile {reconcile}, group_lease_ttl {}, {idle_secs:.0} s idle after READY",
            lease.as_deref().unwrap_or("default")
        );
        println!(
            "{:<40} {:>12} {:>22}",
            "kind", "requests", "per credential per h"
        );
        for (kind, count) in &f.idle {
            println!("{kind:<40} {count:>12} {:>22.2}", per_hour(*count));
        }
        println!(
            "{:<40} {idle_total:>12} {:>22.2}   (target <= 6 in total for 3 instances; 18.0 before the group, 6.0 for one)",
            "total idle, all instances",
            per_hour(idle_total)
        );
        println!(
            "start-up: {startup_total} requests ({:.2} per credential), every instance READY after {:.2} s; raw metadata reads {raw_reads:.0}/s at concurrency 16 -> those requests alone take {bound:.2} s ({:.2}x)",
            startup_total as f64 / n as f64,
            f.ready_secs,
            f.ready_secs / bound.max(1e-9)
        );
        println!(
            "start-up checks done after {:.2} s (the idle window begins then)",
            f.checked_secs
        );
        println!(
            "resident memory after the idle window: {:?} KiB ({:.2} KiB per credential each, baseline included)",
            f.rss_kib,
            f.rss_kib.iter().sum::<u64>() as f64 / f.rss_kib.len().max(1) as f64 / n as f64
        );
        println!();
        reports.push(json!({
            "instances": f.instances,
            "idle_requests": f.idle,
            "idle_requests_per_credential_per_hour": per_hour(idle_total),
            "startup_requests": f.startup,
            "startup_requests_total": startup_total,
            "ready_seconds": f.ready_secs,
            "checks_done_seconds": f.checked_secs,
            "ready_over_raw_bound": f.ready_secs / bound.max(1e-9),
            "rss_kib": f.rss_kib,
        }));
    }

    if full {
        let out = target_dir().join("bench");
        std::fs::create_dir_all(&out).unwrap();
        let report = json!({
            "credentials": n,
            "reconcile_interval": reconcile,
            "group_lease_ttl": lease,
            "idle_seconds": idle_secs,
            "raw_metadata_reads_per_second_c16": raw_reads,
            "groups": reports,
        });
        let path = out.join("idle.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
        println!("wrote {}", path.display());
    }
}
