//! Start-up at scale: time to READY, the requests it takes, and the memory per tracked
//! credential, side by side with raw OpenBao figures measured in the same run.
//!
//! Run: `cargo bench --bench startup` (release build). In one run:
//! 1. a dev OpenBao with a file audit device (every request logged by the server);
//! 2. `STARTUP_CREDENTIALS` credentials (default 10000; `exec` provider, max age 30 days, none
//!    due), their secrets and (unless `STARTUP_RECORDS=0`) a state record each as the daemon
//!    leaves it in a fleet in steady state (ten rotations in its history, the last of which
//!    wrote the current version), written beforehand by 32 concurrent writers;
//! 3. raw metadata reads/s against the same server at the daemon's start-up concurrency
//!    (`STARTUP_CONCURRENCY`, default 32, the daemon's own reads in flight) and at twice that;
//! 4. the release daemon with one credential (the baseline: READY, then its resident memory);
//! 5. the daemon with all of them (`[daemon] reconcile_interval = STARTUP_RECONCILE`, default 24h,
//!    so that the requests counted are the start-up's): the time from spawn to `READY=1` on a
//!    notify socket the bench listens on, the requests before READY by kind (audit log), then the
//!    background start-up checks until a `STATUS=` line no longer says "checking", the requests
//!    of those, and VmRSS at READY and after the checks, minus the baseline, per credential.
//!
//! `STARTUP_SET=1`: the same credentials as the members of one credential set
//! (`[[credential_sets]]`, pattern `boot/{id}`) rather than N tables; the bench then also times
//! one discovery of the set in-process (paginated LIST) against the same server, before the
//! daemon runs. For the largest runs: `STARTUP_AUDIT=0` (no audit device: requests are not
//! counted by kind, the audit log of a million credentials would be many gigabytes),
//! `STARTUP_WAIT_CHECKS=0` (stop at READY), `STARTUP_IDLE_SECS` (after READY, or after the checks,
//! count the daemon's Vault reads over that window from its own `/metrics`).
//!
//! Prints a table and writes `target/bench/startup-N.json` (`startup-set-N.json` for a set). Without `--bench` (as under
//! `cargo test --all-targets`) it runs a smoke pass (50 credentials) and writes nothing.
//! Loopback only.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, Read, Seek};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::bench::{
    cpu_secs, env_or, raw_metadata_reads, raw_reads, root_client, rss_kib, spawn_daemon,
    target_dir, RawRead,
};
use common::OpenBao;
use secret_rotator::config::KvPath;
use secret_rotator::rotation::state::HISTORY_LIMIT;
use secret_rotator::rotation::{Begin, Outcome, RunResult, StateRecord, Wait};
use secret_rotator::secret::SecretFields;
use secret_rotator::vault::Vault;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::UnixDatagram;

/// The configuration of `n` credentials `boot-0` .. `boot-{n-1}` (one string, built in one go);
/// with `set`, one credential set whose members they are (and the admin server on `admin`).
fn config_text(bao: &str, reconcile: &str, n: usize, set: bool, admin: Option<u16>) -> String {
    let mut text = String::with_capacity(200 + n * 180);
    let _ = write!(
        text,
        "[vault]\naddress = \"{bao}\"\n[vault.auth]\nmethod = \"token\"\n\n\
         [defaults]\nmax_age = \"30d\"\n\n[daemon]\nreconcile_interval = \"{reconcile}\"\n"
    );
    if let Some(port) = admin {
        let _ = write!(text, "\n[admin]\nlisten = \"127.0.0.1:{port}\"\n");
    }
    if set {
        let _ = write!(
            text,
            "\n[[credential_sets]]\nname = \"boot\"\npath = \"boot/{{id}}\"\n\
             [credential_sets.exec]\nmint = [\"/bin/true\"]\nverify = [\"/bin/true\"]\n\
             revoke = [\"/bin/true\"]\nfields = [\"key\"]\n"
        );
        return text;
    }
    for i in 0..n {
        let _ = write!(
            text,
            "\n[[credentials]]\nname = \"boot-{i}\"\npath = \"boot/boot-{i}\"\n\
             [credentials.exec]\nmint = [\"/bin/true\"]\nverify = [\"/bin/true\"]\n\
             revoke = [\"/bin/true\"]\nfields = [\"key\"]\n"
        );
    }
    text
}

fn secret(i: usize) -> KvPath {
    KvPath {
        mount: "secret".into(),
        path: format!("boot/boot-{i}"),
    }
}

fn record_path(i: usize) -> KvPath {
    KvPath {
        mount: "secret".into(),
        path: format!("secret-rotator/credentials/boot-{i}"),
    }
}

/// The state record of credential set `boot`'s member `boot/boot-{i}`.
fn member_record_path(i: usize) -> KvPath {
    KvPath {
        mount: "secret".into(),
        path: format!("secret-rotator/credentials/boot/boot-{i}"),
    }
}

/// The credential's name: `boot-{i}`, or as a member of the set `boot`, `boot/boot-{i}`.
fn name_of(i: usize, set: bool) -> String {
    if set {
        format!("boot/boot-{i}")
    } else {
        format!("boot-{i}")
    }
}

/// The state record a credential has after months of rotations by the daemon, made by the
/// daemon's own engine: one credential (`exec`, grace 0) rotated until its history holds as
/// many finished rotations as the record keeps; its record is returned, and [`seed`] gives each
/// credential a copy naming it and its own version 1 as current.
async fn steady_record(bao: &str, vault: &Arc<Vault>) -> StateRecord {
    let script = |out: &str| format!("cat >/dev/null; printf '%s' '{out}'");
    let text = format!(
        "[vault]\naddress = \"{bao}\"\n[vault.auth]\nmethod = \"token\"\n\n\
         [defaults]\nmax_age = \"30d\"\ngrace = \"0s\"\n\n\
         [[credentials]]\nname = \"template\"\npath = \"boot/template\"\n\
         [credentials.exec]\nmint = [\"/bin/sh\", \"-c\", {mint:?}]\nverify = [\"/bin/true\"]\n\
         revoke = [\"/bin/true\"]\nverify_revoked = [\"/bin/sh\", \"-c\", {dead:?}]\n\
         fields = [\"key\"]\n",
        mint = script(r#"{"fields": {"key": "k-'"$$"'"}}"#),
        dead = script(r#"{"revoked": true}"#),
    );
    let config = secret_rotator::config::parse(
        &text,
        "template.toml",
        &secret_rotator::config::ProcessEnvironment,
    )
    .unwrap_or_else(|e| panic!("template config: {e:?}"));
    let cred = config.credential("template").expect("template").clone();
    let provider = secret_rotator::providers::build(
        &cred,
        vault.clone(),
        secret_rotator::egress::builder().build().unwrap(),
    )
    .expect("template provider");
    let engine = common::bench::engine(vault);
    for _ in 0..=HISTORY_LIMIT {
        let r = engine
            .drive(&cred, provider.as_ref(), Some(Begin::Manual), Wait::All)
            .await
            .expect("rotate the template");
        assert!(
            matches!(&r, RunResult::Finished(f) if f.outcome == Outcome::Rotated),
            "template rotation: {r:?}"
        );
    }
    engine.record("template").await.expect("template record")
}

/// `template` as the record of credential `name`, whose version 1 Vault created at `created`.
fn record_of(template: &StateRecord, name: &str, created: Option<DateTime<Utc>>) -> Value {
    let mut record = template.clone();
    record.credential = name.to_string();
    if let Some(last) = record.history.last_mut() {
        last.version_before = 0;
        last.version_after = Some(1);
        last.version_created_at = created;
    }
    serde_json::to_value(record).unwrap()
}

/// The secrets (version 1, created now: none due) and, with `template`, a state record each as
/// the daemon leaves it ([`steady_record`]), from 32 concurrent writers. Returns writes/s.
async fn seed(vault: &Arc<Vault>, n: usize, template: Option<Arc<StateRecord>>, set: bool) -> f64 {
    let started = Instant::now();
    let data = SecretFields::new().with("key", "x".repeat(32));
    let mut tasks = Vec::new();
    for w in 0..32 {
        let (vault, data, template) = (vault.clone(), data.clone(), template.clone());
        tasks.push(tokio::spawn(async move {
            let mut writes = 0u64;
            for i in (w..n).step_by(32) {
                let (_, created) = vault
                    .write_cas_created(&secret(i), &data, 0)
                    .await
                    .expect("write a secret");
                writes += 1;
                if let Some(template) = &template {
                    let name = name_of(i, set);
                    let record = record_of(template, &name, created);
                    let path = if set {
                        member_record_path(i)
                    } else {
                        record_path(i)
                    };
                    vault
                        .write_json_cas(&path, &record, 0)
                        .await
                        .expect("write a state record");
                    writes += 1;
                }
            }
            writes
        }));
    }
    let mut writes = 0;
    for t in tasks {
        writes += t.await.unwrap();
    }
    writes as f64 / started.elapsed().as_secs_f64()
}

fn audit_len(log: &Path) -> u64 {
    std::fs::metadata(log).map(|m| m.len()).unwrap_or(0)
}

/// The audit log's requests between two byte offsets, by kind (streamed: the log of a 100,000
/// credential start-up is hundreds of megabytes).
fn requests(log: &Path, from: u64, to: u64) -> BTreeMap<String, u64> {
    #[derive(Deserialize)]
    struct Line {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        request: Option<Request>,
    }
    #[derive(Deserialize)]
    struct Request {
        #[serde(default)]
        path: String,
        #[serde(default)]
        operation: String,
    }
    let mut kinds = BTreeMap::new();
    let Ok(mut file) = std::fs::File::open(log) else {
        return kinds;
    };
    if file.seek(std::io::SeekFrom::Start(from)).is_err() {
        return kinds;
    }
    let reader = std::io::BufReader::with_capacity(1 << 20, file.take(to.saturating_sub(from)));
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if !line.contains("\"type\":\"request\"") {
            continue;
        }
        let Ok(v) = serde_json::from_str::<Line>(&line) else {
            continue;
        };
        if v.kind != "request" {
            continue;
        }
        let Some(r) = v.request else { continue };
        let kind = if r.path.starts_with("secret/metadata/boot/") {
            "secret metadata"
        } else if r.path.starts_with("secret/data/boot/") {
            "secret data"
        } else if r.path.contains("secret-rotator/credentials/") {
            "state record"
        } else if r.path.starts_with("sys/internal/ui/mounts/") {
            "mount kind"
        } else if r.path == "sys/capabilities-self" {
            "capabilities"
        } else {
            "other"
        };
        *kinds
            .entry(format!("{kind} ({})", r.operation))
            .or_insert(0) += 1;
    }
    kinds
}

/// A daemon under test, with the notify socket it reports to.
struct Daemon {
    child: tokio::process::Child,
    /// Every line received on the notify socket, read as it arrives (as systemd does: the
    /// socket's queue holds about ten datagrams).
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    reader: tokio::task::JoinHandle<()>,
}

impl Daemon {
    fn start(dir: &Path, config: &Path, log: &str, instance: &str) -> Daemon {
        let socket = dir.join(format!("notify-{instance}.sock"));
        let _ = std::fs::remove_file(&socket);
        let notify = UnixDatagram::bind(&socket).unwrap();
        let child = spawn_daemon(config, instance, log, &socket);
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(got) = notify.recv(&mut buf).await {
                for line in String::from_utf8_lossy(&buf[..got]).lines() {
                    let _ = tx.send(line.to_string());
                }
            }
        });
        Daemon {
            child,
            lines,
            reader,
        }
    }

    /// Waits for a notification line for which `pred` holds (the lines before it are dropped).
    async fn expect(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + limit;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let line = tokio::time::timeout(left, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no such notification within {limit:?}"))
                .expect("the notify socket is read");
            if pred(&line) {
                return line;
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    async fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = tokio::time::timeout(Duration::from_secs(40), self.child.wait()).await;
        self.reader.abort();
    }
}

/// After READY: the first `STATUS=` line that no longer reports start-up checks under way.
async fn checks_done(daemon: &mut Daemon, limit: Duration) -> String {
    daemon
        .expect(limit, |l| {
            l.starts_with("STATUS=") && !l.contains("checking")
        })
        .await
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = if full {
        env_or("STARTUP_CREDENTIALS", 10_000)
    } else {
        50
    };
    let concurrency: usize = env_or("STARTUP_CONCURRENCY", 32);
    let records = env_or("STARTUP_RECORDS", 1u8) != 0;
    let reconcile: String = env_or("STARTUP_RECONCILE", "24h".to_string());
    let log: String = env_or("STARTUP_LOG", "warn".to_string());
    let set = env_or("STARTUP_SET", 0u8) != 0;
    let audited = env_or("STARTUP_AUDIT", 1u8) != 0;
    let wait_checks = env_or("STARTUP_WAIT_CHECKS", 1u8) != 0;
    let idle_secs: u64 = env_or("STARTUP_IDLE_SECS", 0);
    let raw_secs = if full { 5 } else { 1 };
    let limit = Duration::from_secs(1800);

    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let bao = if audited {
        OpenBao::start_with_audit(&audit).await
    } else {
        OpenBao::start().await
    };
    let vault = root_client(&bao.addr).await;
    let seeded = Instant::now();
    let template = if records {
        let record = steady_record(&bao.addr, &vault).await;
        let text = serde_json::to_string_pretty(&record).unwrap();
        let size = serde_json::to_string(&record).unwrap().len();
        eprintln!(
            "state record after {} rotations: {size} bytes of JSON",
            record.history.len()
        );
        let dir = target_dir().join("bench");
        std::fs::create_dir_all(&dir).expect("create target/bench");
        std::fs::write(dir.join("steady-record.json"), text).expect("write steady-record.json");
        Some(Arc::new(record))
    } else {
        None
    };
    let write_rate = seed(&vault, n, template, set).await;
    eprintln!(
        "seeded {n} credentials in {:.1} s ({write_rate:.0} writes/s)",
        seeded.elapsed().as_secs_f64()
    );
    let raw = raw_metadata_reads(
        &vault,
        secret,
        n,
        concurrency,
        Duration::from_secs(raw_secs),
    )
    .await;
    let raw2 = raw_metadata_reads(
        &vault,
        secret,
        n,
        2 * concurrency,
        Duration::from_secs(raw_secs),
    )
    .await;
    // What the server alone gives for the reads start-up makes (no daemon): the records.
    let raw_records = if records {
        raw_reads(
            &vault,
            RawRead::Data,
            if set { member_record_path } else { record_path },
            n,
            concurrency,
            Duration::from_secs(raw_secs),
        )
        .await
    } else {
        0.0
    };

    // The baseline: the same daemon tracking one credential.
    let one = dir.path().join("one.toml");
    std::fs::write(&one, config_text(&bao.addr, &reconcile, 1, false, None)).unwrap();
    let mut daemon = Daemon::start(dir.path(), &one, &log, "startup-bench-baseline");
    daemon.expect(limit, |l| l == "READY=1").await;
    checks_done(&mut daemon, limit).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = rss_kib(daemon.pid());
    daemon.stop().await;

    let made = Instant::now();
    let text = config_text(&bao.addr, &reconcile, n, set, None);
    let config_secs = made.elapsed().as_secs_f64();

    // The set discovered in-process, as the daemon does before its first plan.
    let discovery = if set {
        let parsed = secret_rotator::config::parse(
            &text,
            "bench.toml",
            &secret_rotator::config::ProcessEnvironment,
        )
        .expect("the bench's configuration");
        let started = Instant::now();
        let found = secret_rotator::discovery::discover(&vault, &parsed.credential_sets[0])
            .await
            .expect("discover the set");
        // Every credential, and the template the steady record was made with (`boot/template`).
        assert!(found.members.len() >= n, "every credential is a member");
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "discovered {} members in {secs:.2} s ({} requests; load average {})",
            found.members.len(),
            found.requests,
            load_average()
        );
        Some((secs, found.requests))
    } else {
        None
    };
    let uptime = load_average();

    let bound = n as f64 / raw;
    let bound2 = n as f64 / raw2;
    let per_cred = |c: u64| c as f64 / n as f64;
    let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
    let per_cred_bytes =
        |rss: u64| (rss.saturating_sub(baseline) as f64 * 1024.0) / (n - 1).max(1) as f64;

    println!(
        "start-up: {n} credentials (exec, none due){}, state records {}, reconcile {reconcile}{}; load average {uptime}",
        if set {
            " as the members of one credential set"
        } else {
            ""
        },
        if records { "present" } else { "absent" },
        if audited {
            ""
        } else {
            "; no audit device (requests not counted by kind)"
        }
    );
    if let Some((secs, requests)) = discovery {
        println!(
            "discovery of the set (in-process, paginated LIST): {secs:.2} s, {requests} requests ({:.0} members/s)",
            n as f64 / secs
        );
    }
    println!("config written in {config_secs:.2} s; seeding {write_rate:.0} writes/s");

    let sizes: Vec<usize> = if full {
        env_or("STARTUP_INSTANCES", "1".to_string())
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .filter(|g| *g > 0)
            .collect()
    } else {
        vec![1]
    };
    let options = GroupOptions {
        bao: &bao.addr,
        reconcile: &reconcile,
        n,
        set,
        log: &log,
        limit,
        wait_checks,
        idle_secs,
        bao_pid: bao.pid(),
    };
    let mut groups = Vec::new();
    for &instances in &sizes {
        let g = run_group(dir.path(), &audit, &options, instances).await;
        let label = if instances == 1 {
            "one instance".to_string()
        } else {
            format!("a group of {instances}")
        };
        println!();
        println!(
            "{label}: every member READY after {:.2} s (each: {}); load average then {}",
            g.ready_secs(),
            g.ready_secs
                .iter()
                .map(|s| format!("{s:.2} s"))
                .collect::<Vec<_>>()
                .join(", "),
            g.uptime
        );
        if instances > 1 {
            println!("  credentials owned by each member: {:?}", g.owned);
        }
        if let Some(reads) = g.idle_reads {
            println!(
                "  idle for {idle_secs} s after {}: {reads} Vault reads in total = {:.2} per credential per hour (from /metrics); resident memory then {:?} KiB",
                if wait_checks { "the checks" } else { "READY" },
                reads as f64 * 3600.0 / idle_secs as f64 / n as f64,
                g.rss_idle
            );
        }
        if let Some((server, members)) = g.idle_cpu {
            println!(
                "  CPU over the idle window: the server {server:.1} s ({:.1} % of a core), the daemon(s) {members:.1} s ({:.1} %)",
                server * 100.0 / idle_secs as f64,
                members * 100.0 / idle_secs as f64
            );
        }
        println!(
            "  {:<44} {:>12} {:>14}",
            "kind", "requests", "per credential"
        );
        for (label, m) in [
            ("before READY", &g.before),
            ("after READY (checks)", &g.after),
        ] {
            println!("  {label}:");
            for (kind, count) in m {
                println!("    {kind:<42} {count:>12} {:>14.3}", per_cred(*count));
            }
            println!(
                "    {:<42} {:>12} {:>14.3}",
                "total",
                total(m),
                per_cred(total(m))
            );
        }
        println!(
            "  {:<44} {:>12.2} s {:>12.2} s   N / {raw:.0} metadata reads/s at concurrency {concurrency}: {:.2}x (target <= 1.25x)",
            "time to READY (the last member)",
            g.ready_secs(),
            bound,
            g.ready_secs() / bound
        );
        println!(
            "  {:<44} {:>14} {:>12.2} s   N / {raw2:.0} metadata reads/s at concurrency {}: {:.2}x",
            "",
            "",
            bound2,
            2 * concurrency,
            g.ready_secs() / bound2
        );
        if records {
            println!(
                "  {:<44} {:>14} {:>12.2} s   N / {raw_records:.0} state-record reads/s at concurrency {concurrency} (the server alone): {:.2}x",
                "",
                "",
                n as f64 / raw_records,
                g.ready_secs() * raw_records / n as f64
            );
        }
        println!(
            "  {:<44} {:>12.2} s   ({})",
            "start-up checks done (after READY)", g.checked_secs, g.status
        );
        println!(
            "  {:<44} {:>10?} KiB {:>10} KiB   (1 credential, same run)",
            "resident memory at READY / baseline", g.rss_ready, baseline
        );
        if instances == 1 {
            println!(
                "  {:<44} {:>10.0} B   at READY; {:.0} B after the checks",
                "resident memory per tracked credential",
                per_cred_bytes(g.rss_ready[0]),
                per_cred_bytes(g.rss_checked[0])
            );
        }
        groups.push(g);
    }
    // Memory: each member holds every credential (b bytes each), and what it owns costs more
    // (p). Alone: N (b + p) over the baseline; a group of g: g N b + N p over g baselines. So
    // b = (group - alone) / ((g - 1) N), and an owned credential costs alone / N.
    let split = |at: fn(&GroupFigures) -> &Vec<u64>| -> Option<(f64, f64)> {
        let alone = groups.iter().find(|g| g.instances == 1)?;
        let group = groups.iter().find(|g| g.instances > 1)?;
        let extra = |v: &Vec<u64>| {
            v.iter()
                .map(|r| r.saturating_sub(baseline) as f64 * 1024.0)
                .sum::<f64>()
        };
        let (alone, g, sum) = (extra(at(alone)), group.instances as f64, extra(at(group)));
        let m = (n - 1).max(1) as f64;
        Some((alone / m, (sum - alone) / ((g - 1.0) * m)))
    };
    let memory = [
        ("at READY", split(|g| &g.rss_ready)),
        ("after the checks", split(|g| &g.rss_checked)),
    ];
    for (when, figures) in memory {
        if let Some((owned, other)) = figures {
            println!(
                "resident memory {when}: {owned:.0} B per owned credential (target <= 1024 B), {other:.0} B per credential another member owns (target <= 200 B)"
            );
        }
    }

    if full {
        let out = target_dir().join("bench");
        std::fs::create_dir_all(&out).unwrap();
        let report = json!({
            "date": chrono::Utc::now().to_rfc3339(),
            "load_average": uptime,
            "credentials": n,
            "credential_set": set,
            "audit_device": audited,
            "discovery_seconds": discovery.map(|d| d.0),
            "discovery_requests": discovery.map(|d| d.1),
            "idle_seconds": idle_secs,
            "state_records": records,
            "reconcile_interval": reconcile,
            "seed_writes_per_second": write_rate,
            "raw_metadata_reads_per_second": { concurrency.to_string(): raw, (2 * concurrency).to_string(): raw2 },
            "raw_state_record_reads_per_second": { concurrency.to_string(): raw_records },
            "raw_bound_seconds": bound,
            "rss_kib_baseline_one_credential": baseline,
            "groups": groups.iter().map(|g| json!({
                "instances": g.instances,
                "load_average": g.uptime,
                "ready_seconds": g.ready_secs,
                "ready_seconds_last": g.ready_secs(),
                "ready_over_raw_bound": g.ready_secs() / bound,
                "ready_over_raw_bound_at_twice_the_concurrency": g.ready_secs() / bound2,
                "owned": g.owned,
                "requests_before_ready": g.before,
                "requests_before_ready_per_credential": per_cred(total(&g.before)),
                "requests_after_ready_checks": g.after,
                "requests_after_ready_checks_per_credential": per_cred(total(&g.after)),
                "checks_done_seconds": g.checked_secs,
                "idle_vault_reads": g.idle_reads,
                "idle_cpu_seconds": g.idle_cpu.map(|(server, members)| serde_json::json!({ "server": server, "daemons": members })),
                "rss_kib": { "at_ready": g.rss_ready, "after_checks": g.rss_checked, "after_idle": g.rss_idle },
            })).collect::<Vec<_>>(),
            "rss_bytes_per_owned_and_other_credential": memory.iter().map(|(when, f)| json!({"when": when, "owned": f.map(|f| f.0), "other": f.map(|f| f.1)})).collect::<Vec<_>>(),
        });
        let path = out.join(if set {
            format!("startup-set-{n}.json")
        } else {
            format!("startup-{n}.json")
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
        println!("wrote {}", path.display());
    }
}

/// What every group size is run with.
struct GroupOptions<'a> {
    bao: &'a str,
    reconcile: &'a str,
    n: usize,
    set: bool,
    log: &'a str,
    limit: Duration,
    wait_checks: bool,
    idle_secs: u64,
    /// The server's process, for its CPU time over the idle window.
    bao_pid: Option<u32>,
}

/// One start-up of `instances` daemons over the same credentials (one state prefix: a group).
struct GroupFigures {
    instances: usize,
    /// Each member's time from the first spawn to its `READY=1`.
    ready_secs: Vec<f64>,
    uptime: String,
    owned: Vec<u64>,
    before: BTreeMap<String, u64>,
    after: BTreeMap<String, u64>,
    checked_secs: f64,
    status: String,
    idle_reads: Option<u64>,
    /// CPU seconds over the idle window: the server's, and the members' together.
    idle_cpu: Option<(f64, f64)>,
    rss_ready: Vec<u64>,
    rss_checked: Vec<u64>,
    rss_idle: Vec<u64>,
}

impl GroupFigures {
    /// The time for the whole group to be READY.
    fn ready_secs(&self) -> f64 {
        self.ready_secs.iter().copied().fold(0.0, f64::max)
    }
}

async fn run_group(
    dir: &Path,
    audit: &Path,
    o: &GroupOptions<'_>,
    instances: usize,
) -> GroupFigures {
    // Each member with an admin server when there are several (what each owns) or an idle
    // window (its Vault reads).
    let admin = instances > 1 || o.idle_secs > 0;
    let mut ports = Vec::new();
    let mut daemons = Vec::new();
    let before_start = audit_len(audit);
    let started = Instant::now();
    for i in 0..instances {
        let port = admin.then(common::free_port_pair);
        ports.extend(port);
        let config = dir.join(format!("config-{instances}-{i}.toml"));
        std::fs::write(&config, config_text(o.bao, o.reconcile, o.n, o.set, port)).unwrap();
        daemons.push(Daemon::start(
            dir,
            &config,
            o.log,
            &format!("startup-bench-{instances}-{i}"),
        ));
    }
    let mut ready_secs = vec![0.0; instances];
    let mut rss_ready = vec![0; instances];
    // The members one after the other: each one's notify lines are kept meanwhile.
    for (i, daemon) in daemons.iter_mut().enumerate() {
        daemon.expect(o.limit, |l| l == "READY=1").await;
        ready_secs[i] = started.elapsed().as_secs_f64();
        rss_ready[i] = rss_kib(daemon.pid());
        eprintln!(
            "group of {instances}: member {i} READY after {:.2} s, {} KiB resident (load average {})",
            ready_secs[i],
            rss_ready[i],
            load_average()
        );
    }
    let uptime = load_average();
    // Every request made before READY was answered before it: its request line is written.
    let at_ready = audit_len(audit);
    let mut status = "not waited for".to_string();
    if o.wait_checks {
        for daemon in &mut daemons {
            status = checks_done(daemon, o.limit).await;
        }
    }
    let checked_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_checked = audit_len(audit);
    let rss_checked: Vec<u64> = daemons.iter().map(|d| rss_kib(d.pid())).collect();
    // A group: until the members have seen each other (each lists the others once a third of
    // the lease), so that what each owns adds up to every credential once.
    let mut owned = Vec::new();
    if instances > 1 {
        let until = Instant::now() + Duration::from_secs(90);
        loop {
            owned.clear();
            for port in &ports {
                owned.push(metric(*port, "secret_rotator_owned_credentials ").await);
            }
            if owned.iter().sum::<u64>() <= o.n as u64 + 1 || Instant::now() > until {
                break;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    let cpu = |daemons: &[Daemon]| {
        (
            o.bao_pid.map_or(0.0, cpu_secs),
            daemons.iter().map(|d| cpu_secs(d.pid())).sum::<f64>(),
        )
    };
    let mut idle_cpu = None;
    let idle_reads = if o.idle_secs > 0 {
        let mut before = 0;
        for port in &ports {
            before += vault_reads(*port).await;
        }
        let cpu_before = cpu(&daemons);
        tokio::time::sleep(Duration::from_secs(o.idle_secs)).await;
        let mut after = 0;
        for port in &ports {
            after += vault_reads(*port).await;
        }
        let cpu_after = cpu(&daemons);
        idle_cpu = Some((cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1));
        eprintln!(
            "group of {instances}: {} Vault reads over {} s idle, {:?} KiB resident",
            after.saturating_sub(before),
            o.idle_secs,
            daemons.iter().map(|d| rss_kib(d.pid())).collect::<Vec<_>>()
        );
        Some(after.saturating_sub(before))
    } else {
        None
    };
    let rss_idle: Vec<u64> = daemons.iter().map(|d| rss_kib(d.pid())).collect();
    for daemon in daemons {
        daemon.stop().await;
    }
    GroupFigures {
        instances,
        ready_secs,
        uptime,
        owned,
        before: requests(audit, before_start, at_ready),
        after: requests(audit, at_ready, at_checked),
        checked_secs,
        status,
        idle_reads,
        idle_cpu,
        rss_ready,
        rss_checked,
        rss_idle,
    }
}

/// The machine's load averages (`/proc/loadavg`), as `uptime` shows them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A gauge or counter of the daemon's `/metrics`, by the start of its line.
async fn metric(port: u16, line_start: &str) -> u64 {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("scrape /metrics")
        .text()
        .await
        .expect("read /metrics");
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0)
}

/// `secret_rotator_vault_requests_total{kind="read"}` of the daemon's `/metrics`.
async fn vault_reads(port: u16) -> u64 {
    metric(port, "secret_rotator_vault_requests_total{kind=\"read\"}").await
}
