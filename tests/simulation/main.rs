//! A deterministic simulation of the engine: in-memory Vault (KV v2) and provider, one seeded
//! scheduler for time, the interleaving of 1-3 instances and the faults, and the invariants
//! checked after every schedule. See ARCHITECTURE.md, "The simulation".
//!
//! - `schedules`: `SIM_SCHEDULES` schedules (20,000 in release, 100 in debug, unless set) from
//!   seed `SIM_FIRST` (1);
//!   prints the count and the wall time, and one replay command per failing seed.
//! - `replay`: the schedule of `SIM_SEED`, with its trace.
//! - `fixed_seeds`: the seeds that found bugs.

mod check;
mod rng;
mod run;
mod sched;
mod world;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Seeds that found bugs, each with what it found; each must stay green.
const FIXED: &[(u64, &str)] = &[
    (
        1,
        "a resumed attempt whose commit had landed verified the new credential again; a rejection revoked the current credential",
    ),
    (
        6,
        "a state record created by a write whose answer was lost never got its max_versions",
    ),
    (
        14,
        "each rotate of an attempt stopped with its orphans spent noted another orphan for the same mint",
    ),
];

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
}

#[test]
fn fixed_seeds() {
    for (seed, what) in FIXED {
        let r = run::run(*seed);
        assert!(r.ok(), "{what}\n{}", r.describe());
    }
}

#[test]
fn replay() {
    let Some(seed) = env_u64("SIM_SEED") else {
        return;
    };
    let r = run::run(seed);
    println!("{}", r.describe());
    assert!(r.ok(), "seed {seed} breaks an invariant");
}

/// The crash points of an automatic rotation: those of `crash::POINTS` up to the recorded retry
/// (rollback, assisted rotation and the delivery worker, after it, are not simulated).
fn simulated_points() -> &'static [&'static str] {
    let points = secret_rotator::crash::POINTS;
    let end = points.iter().position(|p| *p == "retry-recorded").unwrap();
    &points[..=end]
}

#[test]
fn schedules() {
    // Fewer in a debug build (the whole suite's run); scripts/test.sh runs 20,000 in release.
    let n = env_u64("SIM_SCHEDULES").unwrap_or(if cfg!(debug_assertions) { 100 } else { 20_000 });
    let first = env_u64("SIM_FIRST").unwrap_or(1);
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    let next = AtomicU64::new(first);
    let failed: Mutex<Vec<run::Report>> = Mutex::new(Vec::new());
    let crashed: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
    let steps = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut mine: BTreeMap<String, u64> = BTreeMap::new();
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= first + n {
                        break;
                    }
                    let r = run::run(seed);
                    steps.fetch_add(r.steps as u64, Ordering::Relaxed);
                    for (p, k) in &r.crashed_at {
                        *mine.entry(p.clone()).or_default() += k;
                    }
                    if !r.ok() {
                        let mut f = failed.lock().unwrap();
                        if f.len() < 5 {
                            f.push(r);
                        }
                    }
                }
                let mut all = crashed.lock().unwrap();
                for (p, k) in mine {
                    *all.entry(p).or_default() += k;
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let crashed = crashed.into_inner().unwrap();
    println!(
        "simulation: {n} schedules (seeds {first}..{}) in {:.1} s on {threads} threads, {} steps; crashes by point: {crashed:?}",
        first + n,
        elapsed.as_secs_f64(),
        steps.load(Ordering::Relaxed)
    );
    let mut failed = failed.into_inner().unwrap();
    failed.sort_by_key(|r| r.seed);
    for r in &failed {
        println!("{}", r.describe());
    }
    assert!(
        failed.is_empty(),
        "{} schedule(s) broke an invariant; replay the first with:\n{}",
        failed.len(),
        failed[0].command()
    );
    if n >= 2_000 {
        let missed: Vec<&&str> = simulated_points()
            .iter()
            .filter(|p| !crashed.contains_key(**p))
            .collect();
        assert!(missed.is_empty(), "no schedule crashed at {missed:?}");
    }
}
