//! One schedule: the world, its instances, and the loop that lets the scheduler drive them
//! until the faults stop and the credential settles; then the invariants.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use secret_rotator::config::{Credential, KvPath};
use secret_rotator::events::{Event, EventSink};
use secret_rotator::records::memory::MemoryKv;
use secret_rotator::records::{RecordStore, SecretStore};
use secret_rotator::rotation::{Begin, Engine, Outcome, RunResult, Wait};

use crate::group::{Group, Membership, KEEPER_LAG, TTL};
use crate::sched::{Op, Profile, Sched, Task};
use crate::world::{short, SimKv, SimProvider, Token, Truth, World};

/// What a schedule came to.
pub struct Report {
    pub seed: u64,
    pub profile: Profile,
    pub steps: usize,
    /// Simulated time the schedule took.
    pub simulated: Duration,
    pub violations: Vec<String>,
    pub trace: Vec<String>,
    pub crashed_at: BTreeMap<String, u64>,
    /// Member churn events (deaths, pauses, joins, keeper stalls) in a schedule with a group.
    pub churned: u32,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The one command that replays this schedule.
    pub fn command(&self) -> String {
        format!(
            "SIM_SEED={} cargo test --release --all-features --test simulation -- replay --nocapture",
            self.seed
        )
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "seed {}: {} broken invariant(s)\n  {}\nprofile: {:?}\nlast steps:\n",
            self.seed,
            self.violations.len(),
            self.violations.join("\n  "),
            self.profile
        );
        // A replay shows its whole trace (the last 400 steps), a failing run its last 60.
        let shown = if std::env::var_os("SIM_SEED").is_some() {
            400
        } else {
            60
        };
        for line in self
            .trace
            .iter()
            .skip(self.trace.len().saturating_sub(shown))
        {
            s.push_str("  ");
            s.push_str(line);
            s.push('\n');
        }
        s.push_str(&format!("replay: {}\n", self.command()));
        s
    }
}

struct Quiet;

impl EventSink for Quiet {
    fn emit(&self, _: &Event) {}
}

fn credential(grace: bool) -> Credential {
    static CREDS: OnceLock<[Credential; 2]> = OnceLock::new();
    let creds = CREDS.get_or_init(|| {
        [false, true].map(|grace| {
            let text = format!(
                r#"
vault = {{ address = "http://127.0.0.1:9", auth = {{ method = "token" }} }}
[defaults]
grace = "{}"
[[credentials]]
name = "c"
path = "apps/c"
[credentials.exec]
mint = ["/bin/true"]
verify = ["/bin/true"]
revoke = ["/bin/true"]
fields = ["token"]
"#,
                if grace { "60s" } else { "0s" }
            );
            let config = secret_rotator::config::parse(
                &text,
                "simulation.toml",
                &secret_rotator::config::ProcessEnvironment,
            )
            .expect("the simulation's config");
            config.credentials[0].clone()
        })
    });
    creds[usize::from(grace)].clone()
}

/// The most turns of a schedule's loop (a step, or a respawn), and the most simulated time. A
/// schedule that ends normally takes at most `max_steps` (300) + 1,000 steps once the faults
/// stop; the longest of the first 20,000 seeds simulates 1.3 days (seed 18400).
pub const MAX_TURNS: usize = 20_000;
pub const MAX_SIMULATED: Duration = Duration::from_secs(60 * 86_400);

/// Run the schedule of this seed.
pub fn run(seed: u64) -> Report {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime")
        .block_on(schedule(seed))
}

async fn schedule(seed: u64) -> Report {
    let sched = Arc::new(Sched::new(seed));
    let profile = sched.lock().profile.clone();
    let cred = credential(profile.grace);
    let clock = sched.clone();
    let kv = Arc::new(MemoryKv::new(Arc::new(move || clock.wall())));
    let records = RecordStore::new(kv.clone(), "secret", "secret-rotator");
    let state_path: KvPath = records.path::<secret_rotator::rotation::StateRecord>(&cred.name);
    kv.put(&cred.secret, json!({"token": "t0"}));
    let truth = Truth {
        tokens: vec![Token {
            token: "t0".into(),
            attempt: None,
            expires_at: None,
            revoked: false,
        }],
        ..Truth::default()
    };
    let world = Arc::new(World {
        sched: sched.clone(),
        kv,
        cred,
        state_path,
        truth: Mutex::new(truth),
        group: Group::default(),
        last_rotation: AtomicU8::new(0),
    });
    let mut handles: BTreeMap<Task, (JoinHandle<()>, String)> = BTreeMap::new();
    let mut next = 0;
    for _ in 0..profile.instances {
        let owner = format!("i{next}");
        handles.insert(
            next,
            (spawn(&world, next, owner.clone(), Instant::now()), owner),
        );
        next += 1;
    }
    let mut steps = 0;
    let mut quiet_steps = 0;
    let mut settling = false;
    let mut stuck = false;
    let started = Instant::now();
    let mut capped = None;
    let mut turns = 0;
    // When the last instance (re)started, or will.
    let mut last_start = Instant::now();
    loop {
        // A schedule that does not finish fails with its seed instead of holding the run.
        turns += 1;
        if turns > MAX_TURNS || Instant::now() - started > MAX_SIMULATED {
            capped = Some(format!(
                "the schedule went past its caps ({MAX_TURNS} turns, {} days of simulated time): {turns} turns, {:.0} s",
                MAX_SIMULATED.as_secs() / 86_400,
                (Instant::now() - started).as_secs_f64()
            ));
            break;
        }
        if !sched.settle().await {
            capped = Some(format!(
                "an instance neither reached a gate nor waited on a timer for {} s of simulated time",
                crate::sched::SETTLE_LIMIT.as_secs()
            ));
            break;
        }
        let dead = sched.reap();
        let respawned = !dead.is_empty();
        for t in dead {
            let Some((handle, owner)) = handles.remove(&t) else {
                continue;
            };
            handle.abort();
            world.group.died(t);
            let (restart, same, delay) = {
                let mut st = sched.lock();
                let restart = handles.is_empty() || !profile.churn || st.rng.chance(0.3);
                (restart, st.rng.chance(0.5), st.rng.millis(0, 600_000))
            };
            if restart {
                let owner = if same { owner } else { format!("i{next}") };
                sched.trace(format!("i{next} starts as {owner} (after i{t} died)"));
                let first = Instant::now() + delay;
                last_start = last_start.max(first);
                handles.insert(next, (spawn(&world, next, owner.clone(), first), owner));
                next += 1;
            } else {
                sched.trace(format!("i{t} stays dead"));
            }
        }
        if profile.group && churn(&world, &mut handles, &mut next) {
            // Let a new member reach its first gate, a dead one be reaped.
            continue;
        }
        if respawned {
            // Let the new instances reach their first gate.
            continue;
        }
        let idle = world.idle();
        if !settling {
            let begun = world.truth().attempts.len();
            if steps >= profile.max_steps
                || (begun >= profile.rotations && idle && sched.all_between_drives())
            {
                settling = true;
                sched.faults_off();
                sched.trace("faults off".into());
            }
        } else {
            if idle && sched.all_between_drives() {
                // Settled: then an operator's rotate, which must rotate.
                match world.last_rotation.load(Ordering::SeqCst) {
                    0 => {
                        world.last_rotation.store(1, Ordering::SeqCst);
                        sched.trace("settled; an operator rotates".into());
                    }
                    2 => break,
                    _ => {}
                }
            }
            quiet_steps += 1;
            if quiet_steps > 1_000 {
                stuck = true;
                break;
            }
        }
        if !sched.step().await {
            stuck = !idle;
            break;
        }
        steps += 1;
    }
    let mut violations = Vec::new();
    if capped.is_none() && profile.group {
        // The churn stopped with the faults: within two lease TTLs after the last start, pause
        // (and its keeper's lag) or keeper stall, every view has caught up; a clock stepped
        // back delays a renewal by as much (two steps of 2 minutes at most, as a rule).
        let pauses = handles.keys().filter_map(|t| sched.paused_until(*t)).max();
        let until = [pauses, Some(last_start), world.group.stalled_until()]
            .into_iter()
            .flatten()
            .fold(Instant::now(), Instant::max);
        let steps = if profile.clock_steps {
            Duration::from_secs(240)
        } else {
            Duration::ZERO
        };
        tokio::time::sleep_until(until + KEEPER_LAG + TTL * 2 + steps).await;
        violations.extend(crate::check::owned_once(&world));
    }
    for (handle, _) in handles.values() {
        handle.abort();
    }
    let simulated = Instant::now() - started;
    if let Some(capped) = capped {
        sched.trace(capped.clone());
        let st = sched.lock();
        return Report {
            seed,
            profile,
            steps,
            simulated,
            violations: vec![capped],
            trace: st.trace.iter().cloned().collect(),
            crashed_at: st.crashed_at.clone(),
            churned: st.churned,
        };
    }
    violations.extend(crate::check::check(&world, &profile, stuck));
    if !stuck {
        let last = world.record().and_then(|r| r.history.last().cloned());
        if last.as_ref().map(|l| l.outcome) != Some(Outcome::Rotated) {
            violations.push(format!(
                "an operator's rotate after the faults did not rotate: {:?}",
                last.map(|l| (l.outcome, l.error))
            ));
        }
    }
    let st = sched.lock();
    Report {
        seed,
        profile,
        steps,
        simulated,
        violations,
        trace: st.trace.iter().cloned().collect(),
        crashed_at: st.crashed_at.clone(),
        churned: st.churned,
    }
}

/// While the faults last, now and then: a member dies where it is (its record lapses with its
/// lease; it may come back, as itself or as a new member, like any crashed instance), pauses
/// (every gate of its process stays shut, and its keeper wakes later still), or a new member
/// joins. True when the run loop should let the tasks settle first.
fn churn(
    world: &Arc<World>,
    handles: &mut BTreeMap<Task, (JoinHandle<()>, String)>,
    next: &mut Task,
) -> bool {
    let sched = &world.sched;
    let (event, task, pause) = {
        let mut st = sched.lock();
        if !st.faults_on || st.churned >= st.profile.max_churn || !st.rng.chance(0.02) {
            return false;
        }
        st.churned += 1;
        let live: Vec<Task> = handles.keys().copied().collect();
        let event = if live.len() >= 4 {
            st.rng.below(2)
        } else {
            st.rng.below(3)
        };
        (event, st.rng.pick(&live), st.rng.millis(20_000, 240_000))
    };
    match event {
        0 => {
            sched.trace(format!("i{task} (member {}) dies", handles[&task].1));
            sched.kill(task);
            true
        }
        1 => {
            sched.trace(format!(
                "i{task}'s process pauses for {:.0} s",
                pause.as_secs_f64()
            ));
            sched.pause(task, Instant::now() + pause);
            false
        }
        _ => {
            let owner = format!("i{next}");
            sched.trace(format!("i{next} joins as member {owner}"));
            handles.insert(
                *next,
                (spawn(world, *next, owner.clone(), Instant::now()), owner),
            );
            *next += 1;
            true
        }
    }
}

fn spawn(world: &Arc<World>, task: Task, owner: String, first: Instant) -> JoinHandle<()> {
    world.sched.add_task(task, 0);
    let sched = world.sched.clone();
    let hook: secret_rotator::crash::Hook = Arc::new(move |name| sched.crash_point(task, name));
    tokio::spawn(secret_rotator::crash::with_hook(
        hook,
        instance(world.clone(), task, owner, first),
    ))
}

/// One instance of the daemon: drives the credential whenever its loop would.
async fn instance(world: Arc<World>, task: Task, owner: String, first: Instant) {
    let kv = Arc::new(SimKv {
        world: world.clone(),
        task,
    });
    let records = RecordStore::new(kv.clone(), "secret", "secret-rotator");
    let clock = world.sched.clone();
    let jitter = world.sched.clone();
    let engine = Engine::new(kv.clone(), records, Arc::new(Quiet), &owner)
        .with_clock(Arc::new(move || clock.wall_of(task)))
        .with_jitter(Arc::new(move || jitter.unit()));
    let provider = SimProvider {
        world: world.clone(),
        task,
    };
    let mut not_before = first;
    // An operator's `rotate` of an attempt that needs attention: a few while the faults go
    // on, a few more once they stopped.
    let mut resumed = [0, 0];
    // In a group: this instance's membership, and whether its last drive left an attempt of
    // its own in flight (finished here even once the credential is handed over).
    let group = world.sched.lock().profile.group;
    let mut membership = group.then(|| Membership::join(&world, task, &owner, first));
    let mut finishing = false;
    loop {
        world.sched.gate(task, Op::Drive, not_before).await;
        if let Some(m) = membership.as_mut() {
            if !m.owns(&world, task) && !finishing {
                // Not this instance's: look again when the group may have changed.
                not_before = Instant::now() + world.sched.lock().rng.millis(5_000, 30_000);
                continue;
            }
        }
        let attempt = world.attempt();
        let begun = world.truth().attempts.len();
        let seen = if group {
            // The daemon reads the secret to plan the drive, through Vault like any read.
            let seen = match kv.read_for_cas(&world.cred.secret).await {
                Ok((Some(_), v)) => Some(v),
                Ok((None, _)) => None,
                Err(_) => {
                    not_before = Instant::now() + world.sched.lock().rng.millis(5_000, 30_000);
                    continue;
                }
            };
            // The process pauses between its plan and its drive: the others take the
            // credential over (and may rotate it) before it acts on the version it read.
            let pause = {
                let mut st = world.sched.lock();
                let p = st.faults_on && st.churned < st.profile.max_churn && st.rng.chance(0.1);
                if p {
                    st.churned += 1;
                }
                p.then(|| st.rng.millis(20_000, 240_000))
            };
            if let Some(d) = pause {
                world.sched.trace(format!(
                    "i{task}'s process pauses for {:.0} s after reading version {seen:?}",
                    d.as_secs_f64()
                ));
                world.sched.pause(task, Instant::now() + d);
            }
            seen
        } else {
            match world.kv.read_for_cas(&world.cred.secret).await {
                Ok((Some(_), v)) => Some(v),
                _ => None,
            }
        };
        let start = {
            let mut st = world.sched.lock();
            let (faults_on, rotations, manual) =
                (st.faults_on, st.profile.rotations, st.profile.manual);
            match &attempt {
                None if faults_on && begun < rotations => Some(if st.rng.chance(manual) {
                    Begin::Manual
                } else {
                    Begin::Due {
                        trigger: "max_age",
                        seen,
                    }
                }),
                None if !faults_on && world.last_rotation.load(Ordering::SeqCst) == 1 => {
                    world.last_rotation.store(2, Ordering::SeqCst);
                    Some(Begin::Manual)
                }
                Some(a)
                    if a.needs_attention
                        && resumed[usize::from(!faults_on)] < 3
                        && (!faults_on || st.rng.chance(0.3)) =>
                {
                    resumed[usize::from(!faults_on)] += 1;
                    Some(Begin::Manual)
                }
                _ => None,
            }
        };
        match start {
            Some(Begin::Due { seen, .. }) => world.truth().due_seen.insert(task, seen),
            _ => world.truth().due_seen.remove(&task),
        };
        let r = engine.drive(&world.cred, &provider, start, Wait::No).await;
        world.truth().due_seen.remove(&task);
        match &r {
            Ok(RunResult::RetryAt { .. }) | Ok(RunResult::Waiting { .. }) => finishing = true,
            Ok(_) => finishing = false,
            Err(_) => {}
        }
        world.sched.trace(format!(
            "i{task} ({owner}) drive {} -> {}",
            match start {
                None => "",
                Some(Begin::Manual) => "(rotate)",
                Some(Begin::Due { .. }) => "(due)",
            },
            outcome(&r)
        ));
        let now = Instant::now();
        let (extra, later) = {
            let mut st = world.sched.lock();
            (st.rng.millis(0, 2_000), st.rng.millis(1_000, 120_000))
        };
        not_before = match &r {
            Ok(RunResult::RetryAt { until, .. })
            | Ok(RunResult::Waiting { until })
            | Ok(RunResult::BackingOff { until })
            | Ok(RunResult::Busy { until, .. }) => world.sched.instant_of(task, *until),
            Ok(RunResult::Idle) | Ok(RunResult::Finished(_)) => now + later,
            Ok(RunResult::Parked(_)) => now + Duration::from_secs(3_600),
            Ok(RunResult::NeedsAttention { .. }) => now + later * 5,
            Err(_) => now + later / 4,
        } + extra;
    }
}

fn outcome(r: &Result<RunResult, secret_rotator::rotation::EngineError>) -> String {
    match r {
        Ok(RunResult::Finished(s)) => format!(
            "finished {} {} (orphans {})",
            short(&s.id),
            s.outcome.as_str(),
            s.orphans.len()
        ),
        Ok(RunResult::RetryAt { error, .. }) => format!("retry ({error})"),
        Ok(RunResult::NeedsAttention { phase, error }) => {
            format!("needs attention in {} ({error})", phase.as_str())
        }
        Ok(RunResult::Busy { owner, .. }) => format!("busy ({owner})"),
        Ok(other) => format!("{other:?}").chars().take(80).collect(),
        Err(e) => format!("error: {e}"),
    }
}
