//! Member churn: the instances form a group as the daemon's do (`daemon::group`). Each keeps a
//! member record (`fleet::MemberRecord`) renewed every `fleet::renew_every(TTL)` by a keeper
//! task of its own, reads the others' records into a `fleet::View`, and drives the credential
//! only while `fleet::owns` gives it to this instance in that view, or while an attempt of its
//! own is in flight (the daemon finishes a handed-over attempt). Members die, come back, join
//! and pause mid-run (`run.rs`); a keeper's renewal fails or stalls while the faults last. So
//! views lag the truth: two instances may both act as owner for a while (a paused member that
//! resumes sees every other lease as last read ended, and takes everything), or none.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use secret_rotator::fleet::{self, MemberRecord, View};

use crate::sched::Task;
use crate::world::World;

/// The members' lease TTL (the daemon's default `group_lease_ttl`).
pub const TTL: Duration = Duration::from_secs(60);

/// The longest a keeper lags behind its process after a pause (the loop acts first, on the
/// view from before the pause).
pub const KEEPER_LAG: Duration = Duration::from_secs(30);

/// The group as it is: the member records in Vault, and the views of the instances alive.
#[derive(Default)]
pub struct Group {
    /// Member -> its record and the `created_time` of its last renewal (Vault's clock).
    records: Mutex<BTreeMap<String, (MemberRecord, DateTime<Utc>)>>,
    /// Each instance alive: its member name and the live members its keeper last published.
    views: Mutex<BTreeMap<Task, (String, Published)>>,
    /// When the last keeper stall ends.
    stalled_until: Mutex<Option<Instant>>,
}

type Published = Arc<Mutex<Vec<String>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Group {
    /// The instance's process died: its keeper stops (its record stays until its lease ends).
    pub fn died(&self, task: Task) {
        lock(&self.views).remove(&task);
    }

    /// When the last keeper stall ends (`None`: none stalled).
    pub fn stalled_until(&self) -> Option<Instant> {
        *lock(&self.stalled_until)
    }

    fn stalls_until(&self, end: Instant) {
        let mut last = lock(&self.stalled_until);
        *last = Some(last.map_or(end, |t| t.max(end)));
    }

    fn alive(&self, task: Task) -> bool {
        lock(&self.views).contains_key(&task)
    }

    /// Who owns `credential`: the members alive that their own view gives it to, and the owner
    /// among the members alive (what every view says once it caught up).
    pub fn owners(&self, credential: &str) -> (Vec<String>, Option<String>) {
        let views = lock(&self.views);
        let mut claim = Vec::new();
        let mut alive = Vec::new();
        for (me, published) in views.values() {
            alive.push(me.clone());
            if fleet::owns(credential, &lock(published), me) {
                claim.push(me.clone());
            }
        }
        alive.sort();
        alive.dedup();
        let owner = fleet::owner_of(credential, &alive).map(str::to_string);
        (claim, owner)
    }
}

/// An instance's membership: its keeper, and the live members the keeper last published.
pub struct Membership {
    me: String,
    members: Published,
    owned: Option<bool>,
    keeper: JoinHandle<()>,
}

impl Drop for Membership {
    /// The process died: its keeper with it.
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl Membership {
    /// Join when the process starts (`first`): the keeper's first turn comes before the
    /// instance's first drive.
    pub fn join(world: &Arc<World>, task: Task, me: &str, first: Instant) -> Membership {
        let members = Arc::new(Mutex::new(vec![me.to_string()]));
        let keeper = tokio::spawn(keep(
            world.clone(),
            task,
            me.to_string(),
            members.clone(),
            first,
        ));
        Membership {
            me: me.to_string(),
            members,
            owned: None,
            keeper,
        }
    }

    /// Does this instance own the credential in its view now? Traces each change.
    pub fn owns(&mut self, world: &World, task: Task) -> bool {
        let members = lock(&self.members).clone();
        let owns = fleet::owns(&world.cred.name, &members, &self.me);
        if self.owned != Some(owns) {
            world.sched.trace(format!(
                "i{task} {} (sees {})",
                if owns { "owns c" } else { "hands c over" },
                members.join(",")
            ));
            self.owned = Some(owns);
        }
        owns
    }
}

/// The keeper: renew when due (while the faults last the renewal may fail, or the keeper
/// stall), list and read the others' records when their lease as last read ends, and publish
/// the live members; then sleep until the next renewal or lease end. A paused process's keeper
/// sleeps through the pause and a little longer.
async fn keep(world: Arc<World>, task: Task, me: String, members: Published, first: Instant) {
    tokio::time::sleep_until(first).await;
    lock(&world.group.views).insert(task, (me.clone(), members.clone()));
    let record = MemberRecord {
        member: me.clone(),
        owner: me.clone(),
        ttl_ms: TTL.as_millis() as u64,
    };
    let mut view = View::new(&me);
    let every = chrono::Duration::from_std(fleet::renew_every(TTL)).expect("in range");
    let mut renew_at = world.sched.wall_of(task);
    while world.group.alive(task) {
        if let Some(until) = world.sched.paused_until(task) {
            let lag = world
                .sched
                .lock()
                .rng
                .millis(0, KEEPER_LAG.as_millis() as u64);
            tokio::time::sleep_until(until + lag).await;
            continue;
        }
        let local = world.sched.wall_of(task);
        if local >= renew_at {
            renew_at = local + every;
            let (fails, stall) = {
                let mut st = world.sched.lock();
                if st.faults_on {
                    let p = st.profile.vault_faults;
                    let fails = st.rng.chance(p);
                    let stall = st.churned < st.profile.max_churn && st.rng.chance(0.03);
                    if stall {
                        st.churned += 1;
                    }
                    (fails, stall.then(|| st.rng.millis(60_000, 240_000)))
                } else {
                    (false, None)
                }
            };
            if let Some(d) = stall {
                world.group.stalls_until(Instant::now() + d);
                world.sched.trace(format!(
                    "i{task}'s keeper stalls for {:.0} s",
                    d.as_secs_f64()
                ));
                tokio::time::sleep(d).await;
                continue;
            }
            if fails {
                world
                    .sched
                    .trace(format!("i{task}'s renewal of its member record fails"));
            } else {
                let created = world.sched.wall();
                lock(&world.group.records).insert(me.clone(), (record.clone(), created));
                view.renewed(local, created);
            }
            let keys: Vec<String> = lock(&world.group.records).keys().cloned().collect();
            for m in view.listed(&keys) {
                read(&world, task, &mut view, &m);
            }
        }
        for m in view.to_read(world.sched.wall_of(task)) {
            read(&world, task, &mut view, &m);
        }
        let local = world.sched.wall_of(task);
        *lock(&members) = view.members(local);
        let next = view.next_end().map_or(renew_at, |end| end.min(renew_at));
        let wait = (next - local)
            .to_std()
            .unwrap_or_default()
            .max(Duration::from_millis(100));
        tokio::time::sleep(wait).await;
    }
}

fn read(world: &World, task: Task, view: &mut View, member: &str) {
    let found = lock(&world.group.records).get(member).cloned();
    view.read(
        member,
        found.as_ref().map(|(r, created)| (r, *created)),
        world.sched.wall_of(task),
    );
}
