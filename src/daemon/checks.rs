//! The start-up checks: what would stop a rotation later (a wrong mount, missing capabilities,
//! a malformed secret, a dependent that cannot be told), said at once for every credential.
//!
//! Invariants:
//! - Advisory only: every attempt runs the engine's own preflight again before it mints
//!   (`Engine::drive`), so these checks gate nothing and run after READY, in the background;
//!   recovery of the attempts in flight never waits for them.
//! - What many credentials share is asked of Vault once: the kind of each mount, and the
//!   token's capabilities in batches of paths (far below OpenBao's limit of 1000 strings per
//!   request). Only the secret's own read (its fields) is one request per credential.
//! - A member of a group checks the credentials it owns when the checks begin (the others are
//!   their owners' to check; one taken over later is checked by its attempts' preflight).
//! - Every problem is logged with the credential's name and the path; the counts show in the
//!   `STATUS=` line ([`Progress::describe`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};

use super::group::Owners;
use crate::app::App;
use crate::config::Credential;
use crate::rotation::{Engine, EngineError};
use crate::vault::MountKind;

/// Credentials whose secrets are read at once.
const CONCURRENCY: usize = 16;

/// Credentials per `sys/capabilities-self` request (two paths each: 400 strings).
const CAPABILITY_BATCH: usize = 200;

/// How far the checks got, for the status line.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    running: AtomicBool,
    total: AtomicUsize,
    done: AtomicUsize,
    /// Credentials that cannot be rotated until something is fixed.
    refused: AtomicUsize,
    /// Credentials that could not be checked (Vault did not answer).
    unchecked: AtomicUsize,
    /// Dependents that cannot be told.
    dependents: AtomicUsize,
}

impl Progress {
    /// ", checking 120 of 1000 credentials" while running; then the problems found, if any.
    pub(crate) fn describe(&self) -> String {
        let mut line = String::new();
        if self.running.load(Ordering::Relaxed) {
            line.push_str(&format!(
                ", checking {} of {} credentials",
                self.done.load(Ordering::Relaxed),
                self.total.load(Ordering::Relaxed)
            ));
        }
        let refused = self.refused.load(Ordering::Relaxed);
        if refused > 0 {
            line.push_str(&format!(", {refused} cannot be rotated (see the log)"));
        }
        let unchecked = self.unchecked.load(Ordering::Relaxed);
        if unchecked > 0 {
            line.push_str(&format!(", {unchecked} not checked"));
        }
        let dependents = self.dependents.load(Ordering::Relaxed);
        if dependents > 0 {
            line.push_str(&format!(", {dependents} dependent problems"));
        }
        line
    }

    pub(crate) fn running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }
}

impl Progress {
    /// New checks of `total` credentials begin (the counts of earlier ones are dropped).
    fn start(&self, total: usize) {
        self.total.store(total, Ordering::Relaxed);
        for n in [&self.done, &self.refused, &self.unchecked, &self.dependents] {
            n.store(0, Ordering::Relaxed);
        }
        self.running.store(true, Ordering::Relaxed);
    }
}

/// Check every credential of `app`; problems are logged and counted in `progress`.
pub(crate) async fn run(app: &App, progress: &Progress) {
    let credentials: Vec<&Credential> = app.config.credentials.iter().collect();
    progress.start(credentials.len());
    check(app, &credentials, progress).await;
}

async fn check(app: &App, credentials: &[&Credential], progress: &Progress) {
    let engine = &app.engine;

    // Dependents first: no Vault request unless one has a webhook signing key.
    stream::iter(credentials.iter().copied())
        .for_each_concurrent(CONCURRENCY, |cred| async move {
            for problem in app.deliverer.preflight(cred).await {
                progress.dependents.fetch_add(1, Ordering::Relaxed);
                tracing::error!(credential = %cred.name, error = %problem, "a dependent cannot be told until this is fixed");
            }
        })
        .await;

    // Every credential the engine can drive, assisted ones too: a person who supplies a new
    // credential finds the same mount, policy and field problems too late otherwise.
    let automatic: Vec<&Credential> = credentials
        .iter()
        .copied()
        .filter(|c| app.provider(c).is_ok())
        .collect();
    progress
        .done
        .fetch_add(credentials.len() - automatic.len(), Ordering::Relaxed);

    // Each mount once.
    let mut mounts: HashMap<String, Result<Option<MountKind>, String>> = HashMap::new();
    let names: BTreeSet<&str> = automatic
        .iter()
        .map(|c| c.secret.mount.as_str())
        .chain(std::iter::once(engine.records().mount()))
        .collect();
    for mount in names {
        let kind = engine.mount_of(mount).await.map_err(|e| e.to_string());
        mounts.insert(mount.to_string(), kind);
    }
    let mut passed = Vec::with_capacity(automatic.len());
    'credentials: for cred in automatic {
        let state = engine.state_path(&cred.name);
        for kv in [&cred.secret, &state] {
            match &mounts[&kv.mount] {
                Ok(kind) => {
                    if let Err(e) = Engine::check_mount(cred, kv, kind.as_ref()) {
                        refused(progress, cred, &e);
                        continue 'credentials;
                    }
                }
                Err(e) => {
                    not_checked(progress, cred, e);
                    continue 'credentials;
                }
            }
        }
        passed.push(cred);
    }

    // The token's capabilities, a batch of credentials per request.
    let mut secrets = Vec::with_capacity(passed.len());
    for batch in passed.chunks(CAPABILITY_BATCH) {
        let paths: Vec<String> = batch
            .iter()
            .flat_map(|c| engine.preflight_capability_paths(c))
            .map(|(_, path, _)| path)
            .collect();
        match app.vault.capabilities_self(&paths).await {
            Ok(caps) => {
                for cred in batch {
                    match engine.check_capabilities(cred, &caps) {
                        Ok(()) => secrets.push(*cred),
                        Err(e) => refused(progress, cred, &e),
                    }
                }
            }
            Err(e) => {
                for cred in batch {
                    not_checked(progress, cred, &e.to_string());
                }
            }
        }
    }

    // Each secret holds what its provider needs: one read each.
    stream::iter(secrets)
        .for_each_concurrent(CONCURRENCY, |cred| async move {
            let Ok(provider) = app.provider(cred) else {
                progress.done.fetch_add(1, Ordering::Relaxed);
                return;
            };
            match engine.preflight_secret(cred, provider.as_ref()).await {
                Ok(_) => {
                    progress.done.fetch_add(1, Ordering::Relaxed);
                }
                Err(e @ EngineError::Refused { .. }) => refused(progress, cred, &e),
                Err(e) => not_checked(progress, cred, &e.to_string()),
            }
        })
        .await;
    progress.running.store(false, Ordering::Relaxed);
    tracing::info!(
        credentials = credentials.len(),
        cannot_be_rotated = progress.refused.load(Ordering::Relaxed),
        not_checked = progress.unchecked.load(Ordering::Relaxed),
        dependent_problems = progress.dependents.load(Ordering::Relaxed),
        "start-up checks done"
    );
}

fn refused(progress: &Progress, cred: &Credential, e: &EngineError) {
    progress.refused.fetch_add(1, Ordering::Relaxed);
    progress.done.fetch_add(1, Ordering::Relaxed);
    tracing::error!(credential = %cred.name, error = %e, "this credential cannot be rotated until this is fixed");
}

fn not_checked(progress: &Progress, cred: &Credential, e: &str) {
    progress.unchecked.fetch_add(1, Ordering::Relaxed);
    progress.done.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(credential = %cred.name, error = %e, "cannot check this credential at start-up");
}

/// Run the checks in the background; returns their task (aborted by a reload that starts new
/// ones).
pub(crate) fn spawn(
    app: Arc<App>,
    progress: Arc<Progress>,
    owners: Owners,
) -> tokio::task::JoinHandle<()> {
    // Which credentials are owned is decided once (a hash per credential and member), here.
    let all = &app.config.credentials;
    let mine: Vec<usize> = (0..all.len())
        .filter(|&i| owners.owns(&all[i].name))
        .collect();
    // Marked running at once, so that the status line sent with READY says so.
    progress.start(mine.len());
    tokio::spawn(async move {
        let credentials: Vec<&Credential> =
            mine.iter().map(|&i| &app.config.credentials[i]).collect();
        check(&app, &credentials, &progress).await
    })
}
