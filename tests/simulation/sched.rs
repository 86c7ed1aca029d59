//! The one seeded scheduler of a schedule: it owns time (tokio's paused clock, and each
//! instance's wall clock as an offset from it), which task goes next (every store and provider
//! call of every instance waits at a gate until the scheduler releases it), and the faults
//! (decided when a call is released, or when a task reaches a crash point).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::rng::Rng;

pub type Task = usize;

/// What a task waits at a gate to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// An instance between two drives (the daemon's loop).
    Drive,
    /// A Vault read.
    Read,
    /// A Vault check-and-set write.
    Write,
    /// Vault metadata: `max_versions`, destroy, mount, capabilities.
    Meta,
    Mint,
    Verify,
    Revoke,
    /// The late answer of a call whose effect already happened.
    Reply,
}

/// How a call is let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Go,
    /// Refused before any effect, and the answer says so (Vault 503, a provider's 429).
    Refused,
    /// No effect, and the answer does not say so (a gateway's 502 before forwarding).
    LostBefore,
    /// The effect happened, the answer is lost (a 502 or 504 after, a reset).
    LostAfter,
    /// The provider says no.
    Rejected,
    /// The effect happens now, the answer comes late (maybe past the lease).
    Slow(Duration),
}

/// What a schedule is made of, drawn from its seed.
#[derive(Debug, Clone)]
pub struct Profile {
    pub instances: usize,
    /// Attempts to begin while faults are on.
    pub rotations: usize,
    /// Per Vault call.
    pub vault_faults: f64,
    /// Per provider call.
    pub provider_faults: f64,
    /// Per verify and mint: the provider rejects.
    pub rejects: f64,
    /// Per crash point reached (and a tenth of it per gate).
    pub crashes: f64,
    pub max_crashes: u32,
    /// Per Vault write and provider call: the answer comes late.
    pub slow: f64,
    /// Instances' wall clocks step (forward or back).
    pub clock_steps: bool,
    /// The credential's grace period: 0 (the revocation follows the commit at once) or 60 s.
    pub grace: bool,
    /// An operator's `rotate` instead of a due time.
    pub manual: f64,
    /// A crashed instance stays dead (another takes over after its lease).
    pub churn: bool,
    pub max_steps: usize,
    /// Member churn (`group.rs`): the instances form a group and each drives the credential
    /// only while it owns it in its own view of the members; members die, come back, join and
    /// pause mid-run, so that ownership moves while attempts are in flight.
    pub group: bool,
    /// The most churn events (a death, a pause, a join) of a schedule with a group.
    pub max_churn: u32,
}

impl Profile {
    pub fn draw(rng: &mut Rng) -> Profile {
        let level = |rng: &mut Rng, levels: &[f64]| rng.pick(levels);
        Profile {
            instances: 1 + rng.below(3) as usize,
            rotations: 1 + rng.below(3) as usize,
            vault_faults: level(rng, &[0.0, 0.03, 0.1, 0.25]),
            provider_faults: level(rng, &[0.0, 0.05, 0.15, 0.3]),
            rejects: level(rng, &[0.0, 0.0, 0.05, 0.2]),
            crashes: level(rng, &[0.0, 0.05, 0.15, 0.4]),
            max_crashes: 1 + rng.below(3) as u32,
            slow: level(rng, &[0.0, 0.0, 0.05, 0.15]),
            clock_steps: rng.chance(0.25),
            grace: rng.chance(0.5),
            manual: level(rng, &[0.0, 0.2, 0.5]),
            churn: rng.chance(0.3),
            max_steps: 150 + rng.below(150) as usize,
            group: false,
            max_churn: 0,
        }
    }

    /// The profile of a seed. Member churn is drawn from a stream of its own, so that a seed
    /// without it runs the schedule it ran before member churn existed (and the fixed seeds
    /// found then replay the same schedules).
    pub fn of(seed: u64, rng: &mut Rng) -> Profile {
        let mut profile = Profile::draw(rng);
        let mut own = Rng::new(seed ^ 0x67_726F_7570);
        profile.group = own.chance(0.3);
        if profile.group {
            profile.instances = 2 + own.below(2) as usize;
            profile.max_churn = 1 + own.below(4) as u32;
        }
        profile
    }
}

enum TaskState {
    Running,
    Waiting {
        gate: u64,
        op: Op,
        not_before: Instant,
        tx: oneshot::Sender<Verdict>,
    },
    /// Crashed at a crash point: dies at its next gate.
    Crashing,
    /// Dead: its future is dropped by the run loop.
    Dead,
}

pub struct Sched {
    st: Mutex<St>,
    start: Instant,
    base: DateTime<Utc>,
}

pub struct St {
    pub rng: Rng,
    pub profile: Profile,
    tasks: BTreeMap<Task, TaskState>,
    next_gate: u64,
    pub faults_on: bool,
    pub crashes: u32,
    /// Each instance's wall clock, ahead (or behind) of the scheduler's, in milliseconds.
    offsets: BTreeMap<Task, i64>,
    /// Instances whose process is paused (a stop-the-world pause, a stopped VM): none of their
    /// gates opens before this.
    paused: BTreeMap<Task, Instant>,
    /// Churn events so far (member deaths, pauses, joins).
    pub churned: u32,
    pub trace: VecDeque<String>,
    /// Crash points reached, and crashed at.
    pub reached: BTreeMap<String, u64>,
    pub crashed_at: BTreeMap<String, u64>,
}

const TRACE: usize = 400;

/// The longest a task may run between two gates, in simulated time: longer than any wait of
/// the engine's own (a provider call's deadline, a revocation's polls).
pub const SETTLE_LIMIT: Duration = Duration::from_secs(900);

impl Sched {
    pub fn new(seed: u64) -> Sched {
        let mut rng = Rng::new(seed);
        let profile = Profile::of(seed, &mut rng);
        Sched {
            st: Mutex::new(St {
                rng,
                profile,
                tasks: BTreeMap::new(),
                next_gate: 0,
                faults_on: true,
                crashes: 0,
                offsets: BTreeMap::new(),
                paused: BTreeMap::new(),
                churned: 0,
                trace: VecDeque::new(),
                reached: BTreeMap::new(),
                crashed_at: BTreeMap::new(),
            }),
            start: Instant::now(),
            base: DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
                .expect("a time")
                .with_timezone(&Utc),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, St> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The scheduler's wall clock (Vault's `created_time`, the provider's expiries).
    pub fn wall(&self) -> DateTime<Utc> {
        self.base + chrono::Duration::from_std(Instant::now() - self.start).expect("in range")
    }

    /// An instance's wall clock.
    pub fn wall_of(&self, task: Task) -> DateTime<Utc> {
        let offset = self.lock().offsets.get(&task).copied().unwrap_or(0);
        self.wall() + chrono::Duration::milliseconds(offset)
    }

    /// The instant an instance's wall-clock time stands for.
    pub fn instant_of(&self, task: Task, t: DateTime<Utc>) -> Instant {
        let now = self.wall_of(task);
        match (t - now).to_std() {
            Ok(d) => Instant::now() + d,
            Err(_) => Instant::now(),
        }
    }

    pub fn trace(&self, line: String) {
        let mut st = self.lock();
        let at = Instant::now() - self.start;
        st.trace
            .push_back(format!("{:>9.3}s {line}", at.as_secs_f64()));
        if st.trace.len() > TRACE {
            st.trace.pop_front();
        }
    }

    pub fn add_task(&self, task: Task, offset_ms: i64) {
        let mut st = self.lock();
        st.tasks.insert(task, TaskState::Running);
        st.offsets.insert(task, offset_ms);
    }

    /// Wait until the scheduler lets this call through (never, once the task crashed).
    pub async fn gate(&self, task: Task, op: Op, not_before: Instant) -> Verdict {
        let entered = self.enter(task, op, not_before);
        let Some((rx, gate)) = entered else {
            return std::future::pending().await;
        };
        // A call given up on (a provider call's deadline) leaves the gate: the task runs on.
        let guard = Leave {
            sched: self,
            task,
            gate,
        };
        let verdict = rx.await;
        std::mem::forget(guard);
        match verdict {
            Ok(v) => v,
            Err(_) => std::future::pending().await,
        }
    }

    /// Wait at a gate; `None` when the task crashed (it is dead from now on).
    fn enter(
        &self,
        task: Task,
        op: Op,
        not_before: Instant,
    ) -> Option<(oneshot::Receiver<Verdict>, u64)> {
        {
            let mut st = self.lock();
            let state = st.tasks.get_mut(&task).expect("a known task");
            if matches!(state, TaskState::Crashing | TaskState::Dead) {
                *state = TaskState::Dead;
                return None;
            }
            let (tx, rx) = oneshot::channel();
            st.next_gate += 1;
            let gate = st.next_gate;
            st.tasks.insert(
                task,
                TaskState::Waiting {
                    gate,
                    op,
                    not_before,
                    tx,
                },
            );
            Some((rx, gate))
        }
    }

    /// A task reached a crash point: crash there (dies at its next gate) or go on.
    pub fn crash_point(&self, task: Task, name: &str) {
        let mut st = self.lock();
        *st.reached.entry(name.to_string()).or_default() += 1;
        let p = st.profile.crashes;
        if st.faults_on && st.crashes < st.profile.max_crashes && st.rng.chance(p) {
            st.crashes += 1;
            *st.crashed_at.entry(name.to_string()).or_default() += 1;
            st.tasks.insert(task, TaskState::Crashing);
            drop(st);
            self.trace(format!("i{task} crashes at {name}"));
        }
    }

    /// No task runs (each waits at a gate, or is dead).
    fn quiet(&self) -> bool {
        self.lock()
            .tasks
            .values()
            .all(|s| matches!(s, TaskState::Waiting { .. } | TaskState::Dead))
    }

    /// Let every task that can run reach its next gate (or a timer of its own); false when one
    /// still runs after [`SETTLE_LIMIT`] of simulated time (it waits on something that never
    /// comes).
    pub async fn settle(&self) -> bool {
        let until = Instant::now() + SETTLE_LIMIT;
        while Instant::now() < until {
            for _ in 0..4 {
                tokio::task::yield_now().await;
                if self.quiet() {
                    return true;
                }
            }
            // A task waits on a timer of the engine (a revocation poll, a deadline).
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Kill a task where it waits (a member's process dies): it never passes another gate.
    pub fn kill(&self, task: Task) {
        let mut st = self.lock();
        if st.tasks.contains_key(&task) {
            st.tasks.insert(task, TaskState::Dead);
        }
    }

    /// Pause a task's process until `until`: none of its gates opens before.
    pub fn pause(&self, task: Task, until: Instant) {
        self.lock().paused.insert(task, until);
    }

    /// When the task's pause ends (`None`: not paused now).
    pub fn paused_until(&self, task: Task) -> Option<Instant> {
        let now = Instant::now();
        self.lock().paused.get(&task).copied().filter(|t| *t > now)
    }

    /// Tasks that died since the last call.
    pub fn reap(&self) -> Vec<Task> {
        let mut st = self.lock();
        let dead: Vec<Task> = st
            .tasks
            .iter()
            .filter(|(_, s)| matches!(s, TaskState::Dead))
            .map(|(t, _)| *t)
            .collect();
        for t in &dead {
            st.tasks.remove(t);
        }
        dead
    }

    /// Every live task waits between two drives.
    pub fn all_between_drives(&self) -> bool {
        self.lock()
            .tasks
            .values()
            .all(|s| matches!(s, TaskState::Waiting { op: Op::Drive, .. }))
    }

    /// Tasks whose gate may open now, and the earliest time another one may.
    fn ready(&self) -> (Vec<Task>, Option<Instant>) {
        let now = Instant::now();
        let st = self.lock();
        let mut ready = Vec::new();
        let mut next: Option<Instant> = None;
        for (t, s) in &st.tasks {
            if let TaskState::Waiting { not_before, .. } = s {
                let not_before = match st.paused.get(t) {
                    Some(p) => p.max(not_before),
                    None => not_before,
                };
                if *not_before <= now {
                    ready.push(*t);
                } else {
                    next = Some(next.map_or(*not_before, |n| n.min(*not_before)));
                }
            }
        }
        (ready, next)
    }

    /// One step of the schedule: let time pass, or release one ready task with its verdict.
    /// Returns false when nothing can ever run again.
    pub async fn step(&self) -> bool {
        let (ready, next) = self.ready();
        if ready.is_empty() {
            let Some(next) = next else {
                return false;
            };
            tokio::time::sleep_until(next).await;
            return true;
        }
        let pass = {
            let mut st = self.lock();
            if st.rng.chance(0.2) {
                Some(st.rng.millis(1, 3_000))
            } else {
                None
            }
        };
        if let Some(d) = pass {
            tokio::time::sleep(d).await;
            return true;
        }
        let mut st = self.lock();
        if st.faults_on && st.profile.clock_steps && st.rng.chance(0.02) {
            let t = st.rng.pick(&ready);
            let step = st.rng.below(240_001) as i64 - 120_000;
            *st.offsets.entry(t).or_default() += step;
            drop(st);
            self.trace(format!("i{t}'s clock steps by {step} ms"));
            return true;
        }
        let task = st.rng.pick(&ready);
        let Some(TaskState::Waiting { op, tx, .. }) = st.tasks.insert(task, TaskState::Running)
        else {
            unreachable!("a ready task waits at a gate");
        };
        let verdict = if st.faults_on {
            decide(&mut st, op)
        } else {
            Verdict::Go
        };
        // A process may die anywhere, not only at the named points.
        let p = st.profile.crashes / 10.0;
        if st.faults_on
            && op != Op::Drive
            && st.crashes < st.profile.max_crashes
            && st.rng.chance(p)
        {
            st.crashes += 1;
            st.tasks.insert(task, TaskState::Dead);
            drop(st);
            self.trace(format!("i{task} dies before {op:?}"));
            return true;
        }
        drop(st);
        if verdict != Verdict::Go {
            self.trace(format!("i{task} {op:?}: {verdict:?}"));
        }
        let _ = tx.send(verdict);
        true
    }

    pub fn faults_off(&self) {
        self.lock().faults_on = false;
    }

    pub fn unit(&self) -> f64 {
        self.lock().rng.unit()
    }
}

/// The verdict on a call, with faults on.
fn decide(st: &mut St, op: Op) -> Verdict {
    let p = st.profile.clone();
    let rng = &mut st.rng;
    let slow = |rng: &mut Rng| Verdict::Slow(rng.millis(1_000, 420_000));
    match op {
        Op::Drive | Op::Reply => Verdict::Go,
        Op::Read | Op::Meta if rng.chance(p.vault_faults / 2.0) => Verdict::Refused,
        Op::Read | Op::Meta => Verdict::Go,
        Op::Write if rng.chance(p.vault_faults) => {
            rng.pick(&[Verdict::Refused, Verdict::LostBefore, Verdict::LostAfter])
        }
        Op::Write if rng.chance(p.slow) => slow(rng),
        Op::Write => Verdict::Go,
        Op::Mint | Op::Verify if rng.chance(p.rejects) => Verdict::Rejected,
        Op::Mint | Op::Verify | Op::Revoke if rng.chance(p.slow) => slow(rng),
        Op::Mint | Op::Revoke if rng.chance(p.provider_faults) => {
            rng.pick(&[Verdict::Refused, Verdict::LostBefore, Verdict::LostAfter])
        }
        Op::Verify if rng.chance(p.provider_faults) => Verdict::Refused,
        Op::Revoke if rng.chance(p.rejects) => Verdict::Rejected,
        Op::Mint | Op::Verify | Op::Revoke => Verdict::Go,
    }
}

/// Leaves the gate when the call waiting there is dropped (given up on).
struct Leave<'a> {
    sched: &'a Sched,
    task: Task,
    gate: u64,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut st = self.sched.lock();
        if let Some(s @ TaskState::Waiting { .. }) = st.tasks.get_mut(&self.task) {
            if matches!(s, TaskState::Waiting { gate, .. } if *gate == self.gate) {
                *s = TaskState::Running;
            }
        }
    }
}
