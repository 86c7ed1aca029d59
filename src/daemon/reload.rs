//! SIGHUP: the configuration read and validated again, and what depends on it rebuilt (the
//! `App` through its one builder, the token keeper, the delivery workers, the plan). A refused
//! configuration leaves the running one in force.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;

use super::main_loop::Loop;
use super::metrics::Metrics;
use super::schedule::{track_all, ByName};
use super::{checks, systemd, DELIVERY_STOP};
use crate::app::App;
use crate::config::ProcessEnvironment;
use crate::notify::deliver::{Observed, Workers};

impl Loop {
    /// The reload step of the loop: take the new configuration when it is good, then tell
    /// systemd the daemon is ready again either way.
    pub(super) async fn reload(&mut self) {
        self.reload = false;
        systemd::reloading();
        if let Some(mut new) = reloaded(&self.app, &self.metrics).await {
            // The sets' members of the new configuration, found again.
            self.discovery.stop();
            self.discovery = super::sets::Discovery::start(&mut new).await;
            self.metrics.sets(&new.config.credential_sets);
            self.keeper.abort();
            if let Some(workers) = self.workers.take() {
                workers.stop(DELIVERY_STOP).await;
            }
            self.app = Arc::new(new);
            self.by_name = ByName::new(&self.app);
            self.keeper = keep_token(&self.app);
            self.current.send_replace(self.app.clone());
            if let Some(task) = self.checking.take() {
                task.abort();
            }
            self.checking = Some(checks::spawn(
                self.app.clone(),
                self.progress.clone(),
                self.owners.clone(),
            ));
            self.workers = Some(start_deliveries(&self.app, &self.metrics));
            // Re-plan: forget what left the configuration, read everything again.
            let (app, by_name) = (&self.app, &self.by_name);
            let owners = &self.owners;
            self.planner
                .retain(|name| by_name.get(app, name).is_some() && owners.owns(name));
            track_all(&self.app, &mut self.planner, Utc::now(), false, owners);
            // Another server, other paths: what the folders' listings taught is learnt again.
            self.folders = Default::default();
            self.grouped_at = None;
            self.metrics
                .group(owners.members().len(), self.planner.tracked());
        }
        // Whether the new configuration was taken or refused, the daemon runs on.
        systemd::ready(&self.status_line());
    }
}

/// A delivery worker per credential with dependents, counting deliveries in the metrics.
pub(super) fn start_deliveries(app: &App, metrics: &Arc<Metrics>) -> Workers {
    let counted = metrics.clone();
    let deliverer = Arc::new((*app.deliverer).clone().observed(Arc::new(
        move |credential: &str, dependent: &str, what: Observed| match what {
            Observed::Delivery(result) => counted.delivery(credential, dependent, result),
            Observed::Waiting(n) => counted.waiting(credential, dependent, n),
        },
    )));
    Workers::start(&deliverer, &app.engine.wakeup, &app.config.credentials)
}

pub(super) fn keep_token(app: &App) -> tokio::task::JoinHandle<()> {
    let vault = app.vault.clone();
    tokio::spawn(async move { vault.maintain_token().await })
}

/// SIGHUP: the configuration read and validated again, and what depends on it rebuilt (Vault
/// client, engine). `None`, with the reason logged, keeps the running configuration.
pub(super) async fn reloaded(old: &App, metrics: &Metrics) -> Option<App> {
    let config = match crate::config::load(&old.config_path, &ProcessEnvironment) {
        Ok(c) => c,
        Err(errors) => {
            // One line per error, each located (file:line:column key: message).
            for e in &errors.errors {
                tracing::error!(error = %e, "reload refused: invalid configuration; the running configuration stays in force");
            }
            return None;
        }
    };
    let vault = match crate::app::connect_vault(&config, false).await {
        Ok(v) => v,
        Err(failure) => {
            tracing::error!(error = %failure.message, "reload refused: cannot use the new Vault settings; the running configuration stays in force");
            return None;
        }
    };
    if config.daemon.group_lease_ttl != old.config.daemon.group_lease_ttl
        || config.vault.state_prefix != old.config.vault.state_prefix
        || config.vault.state_mount != old.config.vault.state_mount
    {
        tracing::warn!(
            "the group's lease or state prefix changed: the membership keeps the old ones until the next restart"
        );
    }
    if config.admin != old.config.admin {
        tracing::warn!(
            "[admin] changed: the admin server keeps its address until the next restart"
        );
    }
    // The credentials written out (the sets' members are found again after this).
    let names = |c: &crate::config::Config| -> HashSet<String> {
        c.credentials
            .iter()
            .filter(|c| c.set_name().is_none())
            .map(|c| c.name.clone())
            .collect()
    };
    let (old_names, new_names) = (names(&old.config), names(&config));
    let added: Vec<&str> = config
        .credentials
        .iter()
        .filter(|c| !old_names.contains(&c.name))
        .map(|c| c.name.as_str())
        .collect();
    let removed: Vec<&str> = old
        .config
        .credentials
        .iter()
        .filter(|c| c.set_name().is_none() && !new_names.contains(&c.name))
        .map(|c| c.name.as_str())
        .collect();
    tracing::info!(
        credentials = config.credentials.len(),
        added = %added.join(","),
        removed = %removed.join(","),
        "configuration reloaded"
    );
    metrics.retain_credentials(&|name| name.contains('/') || new_names.contains(name));
    metrics.set_vault(vault.clone());
    Some(old.rebuilt(config, vault))
}
