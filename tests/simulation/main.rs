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
mod group;
mod rng;
mod run;
mod sched;
mod world;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    (
        9224,
        "a record write answered after the lease ran out: the instance went on to commit a credential the attempt's new holder had rolled back",
    ),
    (
        10811,
        "the same stale commit: the new holder's revocation of its discarded credential revoked the current one",
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
/// The crash points of the engine's own path, up to a recorded retry; not the deliveries ahead
/// of a write (`ahead-of-*`): the simulated credentials have no dependents (the crash matrix
/// kills those points).
fn simulated_points() -> Vec<&'static str> {
    let points = secret_rotator::crash::POINTS;
    let end = points.iter().position(|p| *p == "retry-recorded").unwrap();
    points[..=end]
        .iter()
        .copied()
        .filter(|p| !p.starts_with("ahead-of"))
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long one schedule may run on the machine's clock before the run stops. A schedule
/// past its caps (`run::MAX_TURNS`, `run::MAX_SIMULATED`) fails on its own; this catches
/// one that never yields (a loop with no await), which no simulated cap can see.
const WATCHDOG: Duration = Duration::from_secs(120);

/// Ends the process, naming the seed and its replay, when a schedule runs past [`WATCHDOG`].
fn watchdog(running: &Mutex<BTreeMap<usize, (u64, Instant)>>, done: &AtomicBool) {
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let hung = lock(running)
            .values()
            .find(|(_, since)| since.elapsed() > WATCHDOG)
            .map(|(seed, _)| *seed);
        if let Some(seed) = hung {
            eprintln!(
                "seed {seed} has run for more than {} s; the run stops. Replay it with:\nSIM_SEED={seed} cargo test --release --all-features --test simulation -- replay --nocapture",
                WATCHDOG.as_secs()
            );
            std::process::exit(101);
        }
    }
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
    // Schedules with a group, and their churn events.
    let groups = AtomicU64::new(0);
    let churned = AtomicU64::new(0);
    // The longest schedule: simulated time, seed.
    let longest = Mutex::new((Duration::ZERO, 0));
    // The seed each thread runs, since when (the watchdog's).
    let running: Mutex<BTreeMap<usize, (u64, Instant)>> = Mutex::new(BTreeMap::new());
    let done = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| watchdog(&running, &done));
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let (next, failed, crashed, steps, longest, running) =
                    (&next, &failed, &crashed, &steps, &longest, &running);
                let (groups, churned) = (&groups, &churned);
                s.spawn(move || {
                    let mut mine: BTreeMap<String, u64> = BTreeMap::new();
                    loop {
                        let seed = next.fetch_add(1, Ordering::Relaxed);
                        if seed >= first + n {
                            break;
                        }
                        lock(running).insert(thread, (seed, Instant::now()));
                        let r = run::run(seed);
                        lock(running).remove(&thread);
                        steps.fetch_add(r.steps as u64, Ordering::Relaxed);
                        if r.profile.group {
                            groups.fetch_add(1, Ordering::Relaxed);
                            churned.fetch_add(u64::from(r.churned), Ordering::Relaxed);
                        }
                        {
                            let mut l = lock(longest);
                            if (r.simulated, std::cmp::Reverse(seed))
                                > (l.0, std::cmp::Reverse(l.1))
                            {
                                *l = (r.simulated, seed);
                            }
                        }
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
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
        done.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed();
    let crashed = crashed.into_inner().unwrap();
    let (longest, longest_seed) = longest.into_inner().unwrap();
    println!(
        "simulation: {n} schedules (seeds {first}..{}) in {:.1} s on {threads} threads, {} steps; {} with a group, {} member churn events; the longest, seed {longest_seed}, {:.1} days simulated; crashes by point: {crashed:?}",
        first + n,
        elapsed.as_secs_f64(),
        steps.load(Ordering::Relaxed),
        groups.load(Ordering::Relaxed),
        churned.load(Ordering::Relaxed),
        longest.as_secs_f64() / 86_400.0
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
        let missed: Vec<&str> = simulated_points()
            .into_iter()
            .filter(|p| !crashed.contains_key(*p))
            .collect();
        assert!(missed.is_empty(), "no schedule crashed at {missed:?}");
    }
}
