//! What the benchmarks (`benches/`) share: settings from the environment, where figures go, a
//! process's resident memory, and the raw metadata read rate of an OpenBao.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use secret_rotator::config::KvPath;
use secret_rotator::vault::{Login, Vault};

use super::{vault_config, ROOT_TOKEN};

/// `secret-rotator run` on `config` with the root token, as instance `instance`, logging at
/// `log` to this process's stderr and notifying `socket` (the bench reads READY and STATUS there).
pub fn spawn_daemon(
    config: &std::path::Path,
    instance: &str,
    log: &str,
    socket: &std::path::Path,
) -> tokio::process::Child {
    tokio::process::Command::new(super::binary())
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("VAULT_TOKEN", ROOT_TOKEN)
        .env("SECRET_ROTATOR_INSTANCE_ID", instance)
        .env("SECRET_ROTATOR_LOG", log)
        .env("NOTIFY_SOCKET", socket)
        .env_remove("WATCHDOG_USEC")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the daemon")
}

/// A Vault client on the dev server at `addr`, with its root token.
/// An engine as the daemon builds one (default settings, events kept in memory), owner "bench",
/// its records under `secret/secret-rotator`.
pub fn engine(vault: &Arc<Vault>) -> secret_rotator::rotation::Engine {
    super::engine(vault, "bench")
}

pub async fn root_client(addr: &str) -> Arc<Vault> {
    Arc::new(
        Vault::connect(
            &vault_config(addr),
            Login::Token(SecretString::from(ROOT_TOKEN.to_string())),
        )
        .await
        .expect("connect to OpenBao"),
    )
}

/// The environment variable `name` parsed, or `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Cargo's target directory (figures go under `bench/` in it).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// VmRSS of process `pid` in KiB (0 when it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The CPU time (user and system) process `pid` has used so far, in seconds (0 when gone).
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command's name in parentheses: state is field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Field 14 is the 12th after the name (state is the 1st); clock ticks are 100 a second.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Metadata reads per second of `n` secrets (`secret(i)`), `concurrency` in flight, for
/// `duration`: the raw figure the daemon's reads are compared with.
pub async fn raw_metadata_reads(
    vault: &Arc<Vault>,
    secret: fn(usize) -> KvPath,
    n: usize,
    concurrency: usize,
    duration: Duration,
) -> f64 {
    raw_reads(vault, RawRead::Metadata, secret, n, concurrency, duration).await
}

/// What [`raw_reads`] reads.
#[derive(Debug, Clone, Copy)]
pub enum RawRead {
    /// A secret's metadata (`GET {mount}/metadata/{path}`).
    Metadata,
    /// A secret's current data as JSON (`GET {mount}/data/{path}`): a state record, say.
    Data,
}

/// Reads/s of `path(0..n)`, `concurrency` at a time, for `duration`: the server's own rate.
pub async fn raw_reads(
    vault: &Arc<Vault>,
    read: RawRead,
    path: fn(usize) -> KvPath,
    n: usize,
    concurrency: usize,
    duration: Duration,
) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let vault = vault.clone();
        tasks.push(tokio::spawn(async move {
            let mut count = 0u64;
            let mut i = w;
            while started.elapsed() < duration {
                let kv = path(i % n);
                let ok = match read {
                    RawRead::Metadata => vault.read_metadata(&kv).await.is_ok(),
                    RawRead::Data => vault.read_json(&kv).await.is_ok_and(|v| v.is_some()),
                };
                if ok {
                    count += 1;
                }
                i += concurrency;
            }
            count
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}
