//! The group's membership in Vault: this instance's member record, renewed every half of
//! `[daemon] group_lease_ttl`, and the other members' records, listed once per TTL and read
//! when the lease last read ends. `fleet` decides who is live and who owns what; this module
//! does the IO and publishes the live members to the loop.
//!
//! Cost per instance: a write every TTL/2, a LIST every TTL, and about one read per other
//! member per TTL. A clean stop deletes the record, so the others take over at their next read.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::config::{Credential, KvPath};
use crate::fleet::{self, MemberRecord, View};
use crate::vault::{Vault, VaultError};

/// The longest the start-up waits to join before it begins alone.
const JOIN_BOUND: Duration = Duration::from_secs(5);

/// How long after entering the group the members are listed again (see [`Joining::settle`]).
const SETTLE: Duration = Duration::from_secs(1);

/// Who owns what: this instance among the live members it sees.
#[derive(Debug, Clone)]
pub(super) struct Owners {
    me: Arc<str>,
    members: Arc<Vec<String>>,
}

impl Owners {
    /// An instance alone (`--once`, or before it joined): it owns everything.
    pub(super) fn alone(me: &str) -> Owners {
        Owners {
            me: Arc::from(me),
            members: Arc::new(vec![me.to_string()]),
        }
    }

    pub(super) fn owns(&self, credential: &str) -> bool {
        fleet::owns(credential, &self.members, &self.me)
    }

    pub(super) fn members(&self) -> &[String] {
        &self.members
    }
}

/// The one place where the daemon decides which credentials it plans: those the group gives
/// this instance (all of them when it is alone), of whatever list it has.
pub(super) fn owned<'a>(
    credentials: impl IntoIterator<Item = &'a Credential>,
    owners: &'a Owners,
) -> impl Iterator<Item = &'a Credential> {
    credentials.into_iter().filter(|c| owners.owns(&c.name))
}

/// This instance's membership: the task keeping it, and the live members it publishes.
pub(super) struct Group {
    members: watch::Receiver<Owners>,
    task: JoinHandle<()>,
    keeper: Arc<Keeper>,
}

impl Group {
    /// Enter the group: write this instance's record, list and read the others (within
    /// `JOIN_BOUND`, so an unreachable Vault does not hold the start-up: the instance then
    /// begins alone and the task keeps trying). Called before the credential sets are
    /// discovered, so that instances started together see each other's records by
    /// [`Joining::settle`].
    pub(super) async fn enter(app: &App) -> Joining {
        let me = fleet::member_name(crate::instance::instance_of(&app.engine.owner));
        let ttl = app.config.daemon.group_lease_ttl;
        let keeper = Arc::new(Keeper {
            vault: app.vault.clone(),
            mount: app.config.vault.state_mount.clone(),
            folder: format!("{}/members", app.config.vault.state_prefix),
            record: MemberRecord {
                member: me.clone(),
                owner: app.engine.owner.clone(),
                ttl_ms: ttl.as_millis() as u64,
            },
            ttl,
        });
        let mut state = State {
            view: View::new(&me),
            version: None,
            renew_at: Utc::now(),
            list_in: 0,
        };
        let entered = tokio::time::Instant::now();
        let bound = ttl.min(JOIN_BOUND);
        // At most a few seconds: a Vault that does not answer holds the start-up's own reads
        // anyway, and the task keeps trying.
        let _ = tokio::time::timeout(bound, keeper.turn(&mut state)).await;
        Joining {
            keeper,
            state,
            entered,
            bound,
        }
    }

    /// The live members, when they changed since the last call.
    pub(super) fn changed(&mut self) -> Option<Owners> {
        match self.members.has_changed() {
            Ok(true) => Some(self.members.borrow_and_update().clone()),
            _ => None,
        }
    }

    pub(super) fn owners(&self) -> Owners {
        self.members.borrow().clone()
    }

    /// Leave: stop renewing and delete the record, so the others take over at once.
    pub(super) async fn leave(self) {
        self.task.abort();
        let kv = self.keeper.path(&self.keeper.record.member);
        match tokio::time::timeout(
            Duration::from_secs(2),
            self.keeper.vault.delete_metadata(&kv),
        )
        .await
        {
            Ok(Ok(())) => tracing::info!(member = %self.keeper.record.member, "left the group"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not delete the member record; it ends with its lease")
            }
            Err(_) => {
                tracing::warn!("no answer deleting the member record; it ends with its lease")
            }
        }
    }
}

/// An instance that entered the group and has yet to settle on its members.
pub(super) struct Joining {
    keeper: Arc<Keeper>,
    state: State,
    entered: tokio::time::Instant,
    bound: Duration,
}

impl Joining {
    /// Settle on the members, then keep the membership in the background. Instances started
    /// together (a deploy, a host back from a reboot) each see only the records written before
    /// their first LIST; each would read every credential it owns alone, then hand most of
    /// them over. So the members are listed again [`SETTLE`] after this instance entered (the
    /// discovery of the credential sets runs meanwhile), and again while that finds someone
    /// new, for at most `JOIN_BOUND` from the end of the discovery: the start-up then reads
    /// each credential once in the group. Kafka's consumer groups wait out `group.initial.rebalance.delay.ms` for the
    /// same reason.
    pub(super) async fn settle(self) -> Group {
        let Joining {
            keeper,
            mut state,
            entered,
            bound,
        } = self;
        // Bounded from when the settling begins: the discovery before it may take longer than
        // the bound (100,000 members on a loaded machine), and the members are still listed
        // once after it.
        let until = tokio::time::Instant::now() + bound;
        let mut at = entered + SETTLE;
        loop {
            let seen = state.view.members(Utc::now());
            if at >= until {
                break;
            }
            tokio::time::sleep_until(at).await;
            let listed = tokio::time::timeout_at(until, keeper.list(&mut state)).await;
            if listed.is_err() || state.view.members(Utc::now()) == seen {
                break;
            }
            at = tokio::time::Instant::now() + SETTLE;
        }
        let me = keeper.record.member.clone();
        let first = Owners {
            me: Arc::from(me.as_str()),
            members: Arc::new(state.view.members(Utc::now())),
        };
        tracing::info!(member = %me, members = %first.members.join(","), lease = %crate::human::duration(keeper.ttl), "joined the group");
        let (tx, members) = watch::channel(first);
        let task = tokio::spawn(keeper.clone().keep(state, tx));
        Group {
            members,
            task,
            keeper,
        }
    }
}

struct Keeper {
    vault: Arc<Vault>,
    mount: String,
    folder: String,
    record: MemberRecord,
    ttl: Duration,
}

/// The keeper's own state between turns.
struct State {
    view: View,
    /// The version of this instance's record as last written (`None`: not known yet).
    version: Option<u64>,
    renew_at: DateTime<Utc>,
    /// Renewals until the next LIST.
    list_in: u32,
}

impl Keeper {
    fn path(&self, member: &str) -> KvPath {
        KvPath {
            mount: self.mount.clone(),
            path: format!("{}/{member}", self.folder),
        }
    }

    /// Renew when due (and list every second renewal), then read the records whose lease
    /// ended. Errors are logged and tried again at the next turn.
    async fn turn(&self, state: &mut State) {
        let now = Utc::now();
        if now >= state.renew_at {
            state.renew_at = now + fleet::renew_every(self.ttl);
            if let Err(e) = self.renew(state).await {
                tracing::warn!(error = %e, "could not renew the member record");
            }
            if state.list_in == 0 {
                self.list(state).await;
            } else {
                state.list_in -= 1;
            }
        }
        for member in state.view.to_read(Utc::now()) {
            self.read(state, &member).await;
        }
    }

    /// List the members' records and read the new ones.
    async fn list(&self, state: &mut State) {
        match self.vault.list(&self.mount, &self.folder).await {
            Ok(keys) => {
                state.list_in = 1;
                for member in state.view.listed(&keys) {
                    self.read(state, &member).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list the group's members"),
        }
    }

    async fn renew(&self, state: &mut State) -> Result<(), VaultError> {
        let kv = self.path(&self.record.member);
        let body = serde_json::to_value(&self.record).expect("a member record is JSON");
        let version = match state.version {
            Some(v) => v,
            None => self.vault.read_json(&kv).await?.map_or(0, |(_, v)| v),
        };
        let local = Utc::now();
        match self.vault.write_json_cas_created(&kv, &body, version).await {
            Ok((v, created)) => {
                state.version = Some(v);
                if let Some(created) = created {
                    state.view.renewed(local, created);
                }
                Ok(())
            }
            Err(e) => {
                if matches!(e, VaultError::CasMismatch { .. }) && state.version.is_some() {
                    tracing::warn!(member = %self.record.member, "another process wrote this instance's member record: do two instances share an instance id?");
                }
                state.version = None;
                Err(e)
            }
        }
    }

    async fn read(&self, state: &mut State, member: &str) {
        match self.vault.read_json_created(&self.path(member)).await {
            Ok(Some((value, _, created))) => match serde_json::from_value::<MemberRecord>(value) {
                Ok(record) => state
                    .view
                    .read(member, Some((&record, created)), Utc::now()),
                Err(_) => {
                    tracing::warn!(
                        member,
                        "a member record that is not one: left alone, not counted"
                    );
                    state.view.read(member, None, Utc::now());
                }
            },
            Ok(None) => state.view.read(member, None, Utc::now()),
            Err(e) => {
                tracing::warn!(member, error = %e, "could not read a member record");
                state
                    .view
                    .postpone(member, Utc::now() + fleet::renew_every(self.ttl));
            }
        }
    }

    /// Turn until aborted, publishing the live members whenever they change.
    async fn keep(self: Arc<Keeper>, mut state: State, tx: watch::Sender<Owners>) {
        loop {
            let now = Utc::now();
            let next = state
                .view
                .next_end()
                .map_or(state.renew_at, |end| end.min(state.renew_at));
            let wait = (next - now)
                .to_std()
                .unwrap_or_default()
                .max(Duration::from_millis(100));
            tokio::time::sleep(wait).await;
            self.turn(&mut state).await;
            let members = state.view.members(Utc::now());
            tx.send_if_modified(|current| {
                if *current.members != members {
                    tracing::info!(members = %members.join(","), "the group changed");
                    current.members = Arc::new(members);
                    true
                } else {
                    false
                }
            });
        }
    }
}

impl super::main_loop::Loop {
    /// When the group changed: take up the credentials this instance now owns (a full read
    /// each) and hand over the ones it no longer owns. One with an attempt in flight here is
    /// kept until that attempt ends (the new owner would find it leased and wait), then
    /// dropped ([`Loop::release_handed_over`]).
    pub(super) fn follow_group(&mut self) {
        let Some(owners) = self.group.as_mut().and_then(Group::changed) else {
            return;
        };
        let now = Utc::now();
        let (mut taken, mut handed) = (0usize, 0usize);
        self.handing_over.clear();
        for cred in &self.app.config.credentials {
            let mine = owners.owns(&cred.name);
            let tracked = self.planner.is_tracked(&cred.name);
            if mine && !tracked {
                super::schedule::track_one(&mut self.planner, cred, now, false);
                taken += 1;
            } else if !mine && tracked {
                handed += 1;
                if self.planner.busy(&cred.name) {
                    self.handing_over.insert(cred.name.clone());
                }
            }
        }
        if handed > 0 {
            let keep = &self.handing_over;
            self.planner
                .retain(|name| owners.owns(name) || keep.contains(name));
            self.metrics
                .retain_credentials(&|name| owners.owns(name) || keep.contains(name));
        }
        tracing::info!(
            members = %owners.members().join(","),
            taken,
            handed,
            finishing = self.handing_over.len(),
            owned = self.planner.tracked(),
            "credentials handed over in the group"
        );
        self.metrics
            .group(owners.members().len(), self.planner.tracked());
        self.owners = owners;
    }

    /// A credential handed over while its attempt was in flight here: dropped once that
    /// attempt has ended.
    pub(super) fn release_handed_over(&mut self, name: &str) {
        if self.handing_over.contains(name) && !self.planner.busy(name) {
            self.handing_over.remove(name);
            self.planner.retain(|n| n != name);
            self.metrics.retain_credentials(&|n| n != name);
            self.metrics
                .group(self.owners.members().len(), self.planner.tracked());
            tracing::info!(credential = %name, "handed over after its attempt ended");
        }
    }
}
