//! The credential sets' members in the running daemon: found before the first plan (and after a
//! reload), looked for again every set's `discovery_interval` off the loop, and taken into the
//! configuration's list of credentials the loop plans from. A member whose secret is gone is
//! dropped (its state record is left alone); a new one is read and planned like any other.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::main_loop::Loop;
use super::schedule::{track_these, ByName};
use crate::app::App;
use crate::config::{Config, CredentialSet};
use crate::discovery::{discover, list_members, Listing};

/// After a failed discovery, the next try comes this soon (or at the interval, if shorter).
const RETRY: Duration = Duration::from_secs(30);

/// The discovery task and what it reports.
pub(super) struct Discovery {
    found: mpsc::Receiver<(String, Listing)>,
    task: JoinHandle<()>,
    /// Sets not discovered yet: READY waits for them.
    pub(super) pending: HashSet<String>,
}

impl Discovery {
    /// Discovers every set of `app` now (its members join `app.config.credentials`), then starts
    /// the task that looks again every interval. A set that could not be listed is tried again
    /// by the task soon, and READY waits for it.
    pub(super) async fn start(app: &mut App) -> Discovery {
        let mut pending = HashSet::new();
        for set in &app.config.credential_sets {
            match discover(&app.vault, set).await {
                Ok(found) => {
                    report(
                        set,
                        &found.problems(set),
                        found.members.len(),
                        found.requests,
                        (0, 0),
                    );
                    app.config.credentials.extend(found.members);
                }
                Err(e) => {
                    tracing::error!(set = %set.name, path = %set.shown(), error = %e, "cannot list the credential set's members; trying again");
                    pending.insert(set.name.clone());
                }
            }
        }
        let (tx, found) = mpsc::channel(16);
        let task = tokio::spawn(rediscover(
            app.vault.clone(),
            app.config.credential_sets.clone(),
            pending.clone(),
            tx,
        ));
        Discovery {
            found,
            task,
            pending,
        }
    }

    pub(super) async fn recv(&mut self) -> Option<(String, Listing)> {
        self.found.recv().await
    }

    pub(super) fn stop(&self) {
        self.task.abort();
    }
}

/// Each set listed again every `discovery_interval` (a set not listed yet at once, then every
/// 30 s until it is); what is found goes to the loop.
async fn rediscover(
    vault: Arc<crate::vault::Vault>,
    sets: Vec<CredentialSet>,
    pending: HashSet<String>,
    tx: mpsc::Sender<(String, Listing)>,
) {
    let start = tokio::time::Instant::now();
    let mut next: Vec<tokio::time::Instant> = sets
        .iter()
        .map(|s| {
            if pending.contains(&s.name) {
                start
            } else {
                start + s.discovery_interval
            }
        })
        .collect();
    loop {
        let Some((i, at)) = next.iter().copied().enumerate().min_by_key(|(_, t)| *t) else {
            return;
        };
        tokio::time::sleep_until(at).await;
        let set = &sets[i];
        match list_members(&vault, set).await {
            Ok(found) => {
                next[i] = tokio::time::Instant::now() + set.discovery_interval;
                if tx.send((set.name.clone(), found)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(set = %set.name, path = %set.shown(), error = %e, "cannot list the credential set's members; trying again");
                next[i] = tokio::time::Instant::now() + RETRY.min(set.discovery_interval);
            }
        }
    }
}

/// What a discovery found, in the log: its problems (naming the set and the path), and the
/// members that came and went.
fn report(
    set: &CredentialSet,
    problems: &[String],
    members: usize,
    requests: usize,
    (added, removed): (usize, usize),
) {
    for problem in problems {
        tracing::warn!(set = %set.name, "{problem}");
    }
    tracing::info!(
        set = %set.name,
        path = %set.shown(),
        members,
        added,
        removed,
        requests,
        "credential set discovered"
    );
}

impl Loop {
    /// A discovery of `set` came back: when its members changed, the configuration the loop
    /// plans from is replaced by one with the members found (those it had kept as they are,
    /// only the new ones made), the new ones are planned for a read now, and the ones gone are
    /// forgotten.
    pub(super) fn discovered(&mut self, set_name: String, found: Listing) {
        let Some(set) = self
            .app
            .config
            .credential_sets
            .iter()
            .find(|s| s.name == set_name)
            .cloned()
        else {
            return;
        };
        let first = self.discovery.pending.remove(&set_name);
        let before = self
            .app
            .config
            .credentials
            .iter()
            .filter(|c| c.set_name() == Some(set_name.as_str()))
            .count();
        let (app, by_name) = (&self.app, &self.by_name);
        let kept = found
            .names
            .iter()
            .filter(|name| {
                by_name
                    .get(app, name)
                    .is_some_and(|c| c.set_name() == Some(set_name.as_str()))
            })
            .count();
        let (added, removed) = (found.names.len() - kept, before - kept);
        report(
            &set,
            &found.problems(&set),
            found.names.len(),
            found.requests,
            (added, removed),
        );
        if added == 0 && removed == 0 {
            return;
        }
        let (config, added) = with_members(&self.app.config, &self.by_name, &set, found.names);
        let mut app = self.app.rebuilt(config, self.app.vault.clone());
        app.notes = self.app.notes.clone();
        self.app = Arc::new(app);
        self.by_name = ByName::new(&self.app);
        self.current.send_replace(self.app.clone());
        let (app, by_name, owners) = (&self.app, &self.by_name, &self.owners);
        self.planner
            .retain(|name| by_name.get(app, name).is_some() && owners.owns(name));
        self.metrics
            .retain_credentials(&|name| by_name.get(app, name).is_some());
        let added: HashSet<String> = added.into_iter().collect();
        let now = Utc::now();
        let recovering = first && !self.ready();
        track_these(
            &mut self.planner,
            self.app
                .config
                .credentials
                .iter()
                .filter(|c| added.contains(&c.name)),
            now,
            recovering,
            &self.owners,
        );
        self.metrics
            .group(self.owners.members().len(), self.planner.tracked());
    }
}

/// `config` with the members of `set` replaced by those named (each kept as it was, or made
/// when new); and the names of the new ones.
fn with_members(
    config: &Config,
    by_name: &ByName,
    set: &CredentialSet,
    names: Vec<String>,
) -> (Config, Vec<String>) {
    let mut credentials = Vec::with_capacity(config.credentials.len() + names.len());
    credentials.extend(
        config
            .credentials
            .iter()
            .filter(|c| c.set_name() != Some(set.name.as_str()))
            .cloned(),
    );
    let mut added = Vec::new();
    for name in names {
        match by_name.get_in(config, &name) {
            Some(member) if member.set_name() == Some(set.name.as_str()) => {
                credentials.push(member.clone())
            }
            _ => match set.member_named(&name) {
                Ok(member) => {
                    credentials.push(member);
                    added.push(name);
                }
                Err(e) => tracing::warn!(set = %set.name, "{e}"),
            },
        }
    }
    let config = Config {
        vault: config.vault.clone(),
        defaults: config.defaults.clone(),
        credentials,
        credential_sets: config.credential_sets.clone(),
        admin: config.admin.clone(),
        daemon: config.daemon.clone(),
    };
    (config, added)
}
