//! How fast the rotation engine rotates, against a real dev OpenBao and the in-repo BigCommerce
//! emulator, next to how fast that OpenBao takes check-and-set writes: a storefront-token rotation
//! on the common path (grace 0) makes exactly 4 Vault writes, so Vault's CAS write rate divided by
//! 4 bounds the rotation rate, and the ratio of the two shows how close the engine comes to that
//! bound.
//!
//! Run: `cargo bench --bench rotation`. In one run, side by side:
//! 1. raw `Vault::write_cas` on distinct keys (check-and-set 0, one new key per write) at
//!    concurrency 1, 8 and 16, for `BENCH_SECS` seconds per level (default 3);
//! 2. full rotations with `Engine::drive(.., Some(Begin::Manual), Wait::All)` in-process, grace 0 and the
//!    emulator's revocation delay 0, over `BENCH_CREDENTIALS` credentials per level (default
//!    600) each rotated once, counting Vault writes and reads per rotation; each level runs in
//!    `BENCH_ROUNDS` rounds (default 6) of raw writes then rotations in turn, so that the load of
//!    the (shared) machine weighs on both sides of the ratio alike;
//! 3. rotations/s × measured writes per rotation ÷ CAS writes/s at each concurrency (1, 8, 16);
//!    before the timed levels, each credential's first rotation (it creates the state record)
//!    is shown on a row of its own.
//!
//! Prints a table and writes `target/bench/rotation.json`. Everything stays on loopback and is
//! bounded in time and count. Without `--bench` (as under `cargo test --all-targets`) it runs a
//! smoke pass (0.2 s, 10 credentials) and writes nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bench::{env_or, root_client, target_dir};
use common::stack::{storefront_credential, Stack, StackOptions, STORE};
use secret_rotator::config::{Credential, KvPath};
use secret_rotator::providers::Provider;
use secret_rotator::rotation::{Engine, Outcome, RunResult};
use secret_rotator::secret::SecretFields;
use secret_rotator::vault::Vault;
use serde_json::{json, Value};

/// Vault writes of one rotation on the common path with grace 0: minting, minted, the secret,
/// idle (no `notified` write when nothing waits between the commit and the revocation).
const WRITES_PER_ROTATION: f64 = 4.0;
const CONCURRENCIES: [usize; 3] = [1, 8, 16];

struct Row {
    operation: &'static str,
    concurrency: usize,
    count: u64,
    errors: u64,
    seconds: f64,
    /// Rotation rows: the attempts, and the Vault writes and reads they made.
    attempts: u64,
    writes: u64,
    reads: u64,
    /// Of each operation that succeeded, in microseconds.
    latencies_us: Vec<u64>,
}

impl Row {
    fn per_second(&self) -> f64 {
        self.count as f64 / self.seconds
    }

    fn writes_per_rotation(&self) -> Option<f64> {
        (self.attempts > 0).then(|| self.writes as f64 / self.attempts as f64)
    }

    fn reads_per_rotation(&self) -> Option<f64> {
        (self.attempts > 0).then(|| self.reads as f64 / self.attempts as f64)
    }

    /// (p50, p99) in milliseconds.
    fn percentiles(&self) -> (f64, f64) {
        percentiles(self.latencies_us.clone())
    }

    /// The rounds of one level, as one row.
    fn merged(rounds: Vec<Row>) -> Row {
        let mut rounds = rounds.into_iter();
        let mut row = rounds.next().expect("at least one round");
        for r in rounds {
            row.count += r.count;
            row.errors += r.errors;
            row.seconds += r.seconds;
            row.attempts += r.attempts;
            row.writes += r.writes;
            row.reads += r.reads;
            row.latencies_us.extend(r.latencies_us);
        }
        row
    }

    fn json(&self) -> Value {
        let (p50_ms, p99_ms) = self.percentiles();
        json!({
            "operation": self.operation,
            "concurrency": self.concurrency,
            "count": self.count,
            "errors": self.errors,
            "seconds": self.seconds,
            "per_second": self.per_second(),
            "vault_writes_per_rotation": self.writes_per_rotation(),
            "vault_reads_per_rotation": self.reads_per_rotation(),
            "p50_ms": p50_ms,
            "p99_ms": p99_ms,
        })
    }
}

/// (p50, p99) in milliseconds.
fn percentiles(mut us: Vec<u64>) -> (f64, f64) {
    us.sort_unstable();
    let pick = |q: f64| {
        us.get(((us.len() as f64 * q) as usize).min(us.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    (pick(0.50), pick(0.99))
}

/// `write_cas` with check-and-set 0 on a new key per write, from `concurrency` tasks, for
/// `duration`.
async fn raw_cas(vault: &Arc<Vault>, concurrency: usize, round: usize, duration: Duration) -> Row {
    let data = SecretFields::new().with("token", "x".repeat(64));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let vault = vault.clone();
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::with_capacity(16_384), 0u64);
            let mut n = 0u64;
            while Instant::now() < deadline {
                let key = KvPath {
                    mount: "secret".into(),
                    path: format!("bench/raw/c{concurrency}/r{round}/w{worker}/k{n}"),
                };
                n += 1;
                let t = Instant::now();
                match vault.write_cas(&key, &data, 0).await {
                    Ok(_) => latencies.push(t.elapsed().as_micros() as u64),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.expect("raw CAS worker");
        all.extend(l);
        errors += e;
    }
    Row {
        operation: "vault write_cas (new key)",
        concurrency,
        count: all.len() as u64,
        errors,
        seconds: started.elapsed().as_secs_f64(),
        attempts: 0,
        writes: 0,
        reads: 0,
        latencies_us: all,
    }
}

/// One generated `[[credentials]]` entry per name, all on the emulator's demo store.
fn config_text(bao: &str, base: &str, names: &[String]) -> String {
    let head = common::token_config_head(bao, "1h", "0s");
    let mut text = format!(
        r#"
{head}"#
    );
    for name in names {
        text.push_str(&storefront_credential(
            name,
            &format!("bigcommerce/bench/{name}"),
            base,
        ));
    }
    text
}

/// Rotate each credential once with `Engine::drive`, `concurrency` at a time.
async fn rotations(
    engine: &Arc<Engine>,
    vault: &Arc<Vault>,
    work: Vec<(Credential, Box<dyn Provider>)>,
    concurrency: usize,
) -> Row {
    let vault = vault.clone();
    let work = Arc::new(work);
    let next = Arc::new(AtomicUsize::new(0));
    let writes_before = vault.stats.writes.load(Ordering::Relaxed);
    let reads_before = vault.stats.reads.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (engine, work, next) = (engine.clone(), work.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((cred, provider)) = work.get(i) else {
                    break;
                };
                let t = Instant::now();
                match engine
                    .drive(
                        cred,
                        provider.as_ref(),
                        Some(secret_rotator::rotation::Begin::Manual),
                        secret_rotator::rotation::Wait::All,
                    )
                    .await
                {
                    Ok(RunResult::Finished(f)) if f.outcome == Outcome::Rotated => {
                        latencies.push(t.elapsed().as_micros() as u64)
                    }
                    other => {
                        if errors == 0 {
                            eprintln!("{}: not rotated: {other:?}", cred.name);
                        }
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.expect("rotation worker");
        all.extend(l);
        errors += e;
    }
    Row {
        operation: "storefront token rotation",
        concurrency,
        count: all.len() as u64,
        errors,
        seconds: started.elapsed().as_secs_f64(),
        attempts: work.len() as u64,
        writes: vault.stats.writes.load(Ordering::Relaxed) - writes_before,
        reads: vault.stats.reads.load(Ordering::Relaxed) - reads_before,
        latencies_us: all,
    }
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let secs: f64 = if full { env_or("BENCH_SECS", 3.0) } else { 0.2 };
    let per_level: usize = if full {
        env_or("BENCH_CREDENTIALS", 600)
    } else {
        10
    };
    let rounds: usize = if full { env_or("BENCH_ROUNDS", 6) } else { 2 };
    let duration = Duration::from_secs_f64(secs);

    // OpenBao dev server, emulator (demo store, revocation delay set to 0 over the admin API),
    // the store access token in Vault; then the store's rate limit lifted.
    let s = Stack::with(StackOptions {
        grace: "0s",
        revocation_delay_ms: 0,
        ..Default::default()
    })
    .await;
    s.admin
        .set_rate_limit(STORE, u32::MAX, Duration::from_secs(30))
        .await
        .expect("lift the store's rate limit");

    let vault = root_client(&s.bao.addr).await;

    // Credentials: `per_level` per concurrency level, each adopted with a hand-minted token as
    // version 1 (setup, not timed, not counted in the client's stats).
    let names: Vec<Vec<String>> = CONCURRENCIES
        .iter()
        .map(|c| {
            (0..per_level)
                .map(|i| format!("bench-c{c}-{i:04}"))
                .collect()
        })
        .collect();
    let all_names: Vec<String> = names.iter().flatten().cloned().collect();
    let text = config_text(&s.bao.addr, &s.emu.base_url(), &all_names);
    let config = secret_rotator::config::parse(
        &text,
        "bench.toml",
        &secret_rotator::config::ProcessEnvironment,
    )
    .unwrap_or_else(|e| panic!("generated config: {e:?}"));
    s.seed_tokens_by_hand("bigcommerce/bench", &all_names).await;

    let engine = Arc::new(common::bench::engine(&vault));
    let http = secret_rotator::egress::builder().build().unwrap();

    let work_of = |level: &[String]| -> Vec<(Credential, Box<dyn Provider>)> {
        level
            .iter()
            .map(|n| {
                let cred = config.credential(n).expect("generated credential").clone();
                let provider = secret_rotator::providers::build(&cred, vault.clone(), http.clone())
                    .expect("build provider");
                (cred, provider)
            })
            .collect()
    };
    // Each credential's first rotation creates its state record (a read more to find none, a
    // write more to set its max_versions): shown, but the common path is the next ones.
    let first = rotations(&engine, &vault, work_of(&all_names), 8).await;
    // Each level in `rounds` rounds, raw writes and rotations in turn, so that a change in the
    // machine's load (it is shared) weighs on both sides of the ratio alike.
    let (mut raw_rows, mut rotation_rows) = (Vec::new(), Vec::new());
    for (c, level) in CONCURRENCIES.iter().zip(&names) {
        let chunk = level.len().div_ceil(rounds);
        let (mut raw, mut rot) = (Vec::new(), Vec::new());
        for (round, part) in level.chunks(chunk).enumerate() {
            raw.push(raw_cas(&vault, *c, round, duration / rounds as u32).await);
            rot.push(rotations(&engine, &vault, work_of(part), *c).await);
        }
        raw_rows.push(Row::merged(raw));
        rotation_rows.push(Row::merged(rot));
    }

    println!();
    println!(
        "secret-rotator rotation engine vs. dev OpenBao CAS writes ({} cores, {secs} s per raw \
         level, {per_level} credentials per rotation level, grace 0, revocation delay 0)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<28} {:>5} {:>7} {:>7} {:>8} {:>9} {:>13} {:>12} {:>8} {:>8}",
        "operation",
        "conc",
        "count",
        "errors",
        "seconds",
        "per s",
        "writes/rot",
        "reads/rot",
        "p50 ms",
        "p99 ms"
    );
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let mut first = first;
    first.operation = "first rotation (new record)";
    let rows: Vec<&Row> = raw_rows
        .iter()
        .chain([&first])
        .chain(&rotation_rows)
        .collect();
    for r in &rows {
        let (p50_ms, p99_ms) = r.percentiles();
        println!(
            "{:<28} {:>5} {:>7} {:>7} {:>8.2} {:>9.0} {:>13} {:>12} {:>8.2} {:>8.2}",
            r.operation,
            r.concurrency,
            r.count,
            r.errors,
            r.seconds,
            r.per_second(),
            opt(r.writes_per_rotation()),
            opt(r.reads_per_rotation()),
            p50_ms,
            p99_ms,
        );
    }
    println!();
    let mut ratios = Vec::new();
    for (raw, rot) in raw_rows.iter().zip(&rotation_rows) {
        let writes = rot.writes_per_rotation().unwrap_or(WRITES_PER_ROTATION);
        let bound = raw.per_second() / writes;
        let ratio = rot.per_second() / bound;
        println!(
            "concurrency {}: {:.0} rotations/s x {writes:.2} writes/rotation / {:.0} CAS writes/s = {ratio:.2} (write bound {bound:.0} rotations/s)",
            raw.concurrency,
            rot.per_second(),
            raw.per_second(),
        );
        ratios.push(json!({
            "concurrency": raw.concurrency,
            "rotations_per_second": rot.per_second(),
            "cas_writes_per_second": raw.per_second(),
            "write_bound_rotations_per_second": bound,
            "ratio": ratio,
        }));
    }

    let figures = json!({
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "raw_seconds_per_level": secs,
        "credentials_per_rotation_level": per_level,
        "writes_per_rotation_assumed": WRITES_PER_ROTATION,
        "rounds_per_level": rounds,
        "rows": rows.iter().map(|r| r.json()).collect::<Vec<_>>(),
        "ratios": ratios,
    });
    let failed = rotation_rows.iter().chain([&first]).any(|r| r.errors > 0);
    if full {
        let dir = target_dir().join("bench");
        std::fs::create_dir_all(&dir).expect("create target/bench");
        let out = dir.join("rotation.json");
        std::fs::write(&out, serde_json::to_string_pretty(&figures).unwrap())
            .expect("write rotation.json");
        println!("figures written to {}", out.display());
    }
    assert!(!failed, "some rotations did not finish as rotated");
}
