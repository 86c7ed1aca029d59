//! The reconcile by folder. The credentials this instance owns that share a parent folder with
//! another share that folder's reconcile slot, and at the slot the folder's metadata is read with
//! OpenBao's `detailed-metadata` LIST (pages of [`PAGE`] keys, growing while the answers stay
//! small: [`next_page`]) instead of one metadata read per credential. What a reconcile decides from it is the same ([`Glance`], from the same
//! parsing of the same metadata): the current version, and whether a set member's
//! custom_metadata overrides its policy.
//!
//! Invariants:
//! - A credential's reconcile uses a listing begun at or after its folder's slot time in the
//!   current interval, never an older one: a change is seen within one reconcile interval, as
//!   with a read of its own.
//! - Anything the listing cannot answer is read by itself, as before: every folder when the
//!   server has no such listing (HashiCorp Vault; remembered), a folder the token may not list
//!   (403; remembered, said once in the log), a folder with one owned credential, a key the
//!   listing does not hold (deleted since, or already taken this round).
//! - Memory: a round keeps the metadata of the keys listed and not yet taken (a version and a
//!   flag each); it is dropped when every owned credential of the folder has taken its own, and
//!   at the next round at the latest.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::planner::Planner;
use super::schedule::ByName;
use crate::app::App;
use crate::config::KvPath;
use crate::vault::{SecretMetadata, Vault, VaultError};

/// Keys in the first detailed listing of a round. Each key's metadata is about 0.5 KB, plus
/// about 0.1 KB per version kept (10 by default); custom_metadata is at most 64 keys of 128
/// bytes with values of 512 bytes (about 40 KB). A page of 1,000 is then about 2 MB in the
/// common case and under 42 MB at the worst the server allows, below the 48 MiB the Vault
/// transport reads of an answer, and one request for most folders.
pub(crate) const PAGE: usize = 1000;

/// Keys in a detailed listing at most.
pub(crate) const MAX_PAGE: usize = 64_000;

/// The size a page's answer is kept under, estimated from the keys listed so far.
pub(crate) const PAGE_BYTES: usize = 16 << 20;

/// The keys asked for after a page of `previous` keys whose largest key's metadata was about
/// `bytes_per_key`: four times more, up to [`MAX_PAGE`], as long as a page of them stays under
/// [`PAGE_BYTES`]; never fewer than [`PAGE`]. A dev server (storage in memory) answers any page
/// in about the time it takes to list the whole folder (BENCHMARKS.md, "Credential sets at
/// scale"): pages of 1,000 made a round of a million keys 1,000 listings of the whole folder;
/// growing pages make it about 30.
pub(crate) fn next_page(previous: usize, bytes_per_key: usize) -> usize {
    let fits = PAGE_BYTES / bytes_per_key.max(1);
    previous.saturating_mul(4).min(MAX_PAGE).min(fits).max(PAGE)
}

/// About how many bytes of a detailed listing's answer `key`'s metadata takes.
fn answer_bytes(key: &str, m: &SecretMetadata) -> usize {
    let custom: usize = m
        .custom_metadata
        .iter()
        .map(|(k, v)| k.len() + v.len() + 8)
        .sum();
    500 + key.len() + 120 * m.versions.len() + custom
}

/// A KV v2 folder: the mount and the path of the folder within it (`""` at the mount's root).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Folder {
    pub mount: String,
    pub path: String,
}

impl Folder {
    /// The folder holding `kv`, and `kv`'s key in it.
    pub(crate) fn of(kv: &KvPath) -> (Folder, &str) {
        let (path, key) = kv.path.rsplit_once('/').unwrap_or(("", kv.path.as_str()));
        (
            Folder {
                mount: kv.mount.clone(),
                path: path.to_string(),
            },
            key,
        )
    }

    /// What the folder's reconcile slot is derived from (no credential name has a NUL).
    pub(crate) fn slot_key(&self) -> String {
        format!("{}\0{}/", self.mount, self.path)
    }
}

/// What a reconcile needs of a secret's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Glance {
    pub version: u64,
    /// Its custom_metadata overrides a set member's policy.
    pub overrides: bool,
}

impl Glance {
    pub(crate) fn of(m: &SecretMetadata) -> Glance {
        Glance {
            version: m.current_version,
            overrides: crate::config::sets::has_overrides(&m.custom_metadata),
        }
    }
}

/// Pure: the folders holding at least two of `secrets`, and how many each holds.
pub(crate) fn shared<'a>(secrets: impl IntoIterator<Item = &'a KvPath>) -> HashMap<Folder, usize> {
    let mut count: HashMap<Folder, usize> = HashMap::new();
    for kv in secrets {
        *count.entry(Folder::of(kv).0).or_default() += 1;
    }
    count.retain(|_, n| *n >= 2);
    count
}

/// One folder's listing in the current interval.
#[derive(Default)]
pub(crate) struct Round {
    /// When it began (`None`: never).
    began: Option<DateTime<Utc>>,
    /// The last key listed.
    after: Option<String>,
    complete: bool,
    /// The keys the next page asks for.
    page: usize,
    /// Keys listed and not yet taken.
    found: HashMap<Box<str>, Glance>,
    /// How many owned credentials took theirs this round.
    taken: usize,
}

impl Round {
    fn begin(&mut self, now: DateTime<Utc>) {
        *self = Round {
            began: Some(now),
            page: PAGE,
            ..Round::default()
        };
    }

    /// A page of `limit` asked for came back.
    fn add(&mut self, page: Vec<(String, Option<SecretMetadata>)>, limit: usize) {
        self.complete = page.len() < limit;
        if let Some((last, _)) = page.last() {
            if self.after.as_deref().is_some_and(|a| last.as_str() <= a) {
                // A server that ignores `after` answered the same keys again.
                self.complete = true;
            }
            self.after = Some(last.clone());
        }
        let mut largest = 0;
        for (key, metadata) in page {
            if let Some(m) = metadata {
                largest = largest.max(answer_bytes(&key, &m));
                self.found.insert(key.into_boxed_str(), Glance::of(&m));
            }
        }
        self.page = next_page(limit, largest);
    }

    /// What the listing says of `key`: `Some` when listed and not taken yet; `None` when the
    /// listing holds it not (or no more), or the listing must go on. Once the `wanted` owned
    /// credentials took theirs, the rest (keys of other members, or of no credential) is dropped.
    fn take(&mut self, key: &str, wanted: usize) -> Option<Glance> {
        let g = self.found.remove(key)?;
        self.taken += 1;
        if self.taken >= wanted {
            self.found = HashMap::new();
        }
        Some(g)
    }

    /// The listing went past `key` (or ended): it will not find it any more.
    fn passed(&self, key: &str) -> bool {
        self.complete || self.after.as_deref().is_some_and(|a| key <= a)
    }
}

/// What the loop and its tasks share about folder listings.
#[derive(Default)]
pub(crate) struct Folders {
    /// The server has no detailed listing.
    unsupported: AtomicBool,
    /// Folders the token may not list.
    denied: Mutex<HashSet<Folder>>,
    /// That a folder may not be listed was said in the log.
    denied_said: AtomicBool,
    /// A folder fell back to reads of its own: the loop groups again.
    changed: AtomicBool,
    /// The folders listed, each with its owned credentials and its round.
    rounds: Mutex<HashMap<Folder, Listed>>,
}

/// A listed folder: how many owned credentials it holds, and its round.
type Listed = (usize, Arc<tokio::sync::Mutex<Round>>);

/// A reconcile's way to its folder's listing.
pub(crate) struct Batch {
    folders: Arc<Folders>,
    folder: Folder,
    round: Arc<tokio::sync::Mutex<Round>>,
    /// Owned credentials in the folder.
    wanted: usize,
    /// The folder's slot time in the current interval: a round begun before it is stale.
    since: DateTime<Utc>,
}

impl Folders {
    /// Whether a folder fell back since the last call (the loop then groups again).
    pub(crate) fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::Relaxed)
    }

    /// Group again: `shared` (from [`shared`]) less the folders that fell back are listed from
    /// now on. Returns those listed.
    pub(crate) fn regroup(&self, mut shared: HashMap<Folder, usize>) -> HashSet<Folder> {
        if self.unsupported.load(Ordering::Relaxed) {
            shared.clear();
        }
        {
            let denied = self.denied.lock().expect("folders lock poisoned");
            shared.retain(|f, _| !denied.contains(f));
        }
        let mut rounds = self.rounds.lock().expect("folders lock poisoned");
        rounds.retain(|f, _| shared.contains_key(f));
        for (folder, wanted) in &shared {
            rounds.entry(folder.clone()).or_default().0 = *wanted;
        }
        shared.into_keys().collect()
    }

    /// The way to `kv`'s folder listing for a reconcile at `now`, when its folder is listed.
    pub(crate) fn batch(
        self: &Arc<Folders>,
        kv: &KvPath,
        interval: Duration,
        now: DateTime<Utc>,
    ) -> Option<Batch> {
        let (folder, _) = Folder::of(kv);
        let (wanted, round) = self
            .rounds
            .lock()
            .expect("folders lock poisoned")
            .get(&folder)?
            .clone();
        let slot = super::planner::reconcile_slot(interval, &folder.slot_key());
        let span = chrono::Duration::from_std(interval).ok()?;
        let since = super::planner::slot_in(interval, slot, now - span, now).unwrap_or(now);
        Some(Batch {
            folders: self.clone(),
            folder,
            round,
            wanted,
            since,
        })
    }

    fn refused(&self, folder: &Folder) -> bool {
        self.unsupported.load(Ordering::Relaxed)
            || self
                .denied
                .lock()
                .expect("folders lock poisoned")
                .contains(folder)
    }

    fn deny(&self, folder: &Folder) {
        self.denied
            .lock()
            .expect("folders lock poisoned")
            .insert(folder.clone());
        self.changed.store(true, Ordering::Relaxed);
        if !self.denied_said.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                path = %format!("{}/detailed-metadata/{}/", folder.mount, folder.path),
                "the token may not list this folder's metadata: its credentials are reconciled with one metadata read each (grant `list` on it, see config/vault-policy.hcl); said once for every such folder"
            );
        }
    }

    /// A listing answered 404: the folder is gone, or the server has no such listing. A
    /// listing of the mount's root (one key) tells them apart; no such listing is remembered.
    async fn learn_if_unsupported(&self, vault: &Vault, mount: &str) {
        let none = match vault.list_metadata_page(mount, "", None, 1).await {
            Ok(_) => false,
            Err(e) => refuses_listing(&e),
        };
        if none && !self.unsupported.swap(true, Ordering::Relaxed) {
            self.changed.store(true, Ordering::Relaxed);
            tracing::info!(
                mount,
                "this server has no detailed-metadata listing (HashiCorp Vault): each credential's metadata is read by itself at its reconcile"
            );
        }
    }
}

/// The server does not know the listing (404: HashiCorp Vault's "unsupported path"; 405).
fn refuses_listing(e: &VaultError) -> bool {
    matches!(
        e,
        VaultError::NotFound { .. }
            | VaultError::Other {
                status: Some(405),
                ..
            }
    )
}

impl Batch {
    /// What the folder's listing says of `kv`; `None`: read it by itself (the listing does not
    /// hold it, or the folder cannot be listed).
    pub(crate) async fn glance(
        &self,
        vault: &Vault,
        kv: &KvPath,
    ) -> Result<Option<Glance>, VaultError> {
        let (_, key) = Folder::of(kv);
        let mut round = self.round.lock().await;
        if round.began.is_none_or(|t| t < self.since) {
            round.begin(Utc::now());
        }
        loop {
            if let Some(g) = round.take(key, self.wanted) {
                return Ok(Some(g));
            }
            if round.passed(key) || self.folders.refused(&self.folder) {
                return Ok(None);
            }
            let after = round.after.clone();
            let limit = round.page.max(PAGE);
            let page = vault
                .list_metadata_page(
                    &self.folder.mount,
                    &self.folder.path,
                    after.as_deref(),
                    limit,
                )
                .await;
            match page {
                Ok(page) => round.add(page, limit),
                Err(VaultError::PermissionDenied { .. }) => {
                    self.folders.deny(&self.folder);
                    return Ok(None);
                }
                Err(e) if refuses_listing(&e) => {
                    // A folder that is gone lists nothing: each of its credentials is read by
                    // itself (and found missing).
                    self.folders
                        .learn_if_unsupported(vault, &self.folder.mount)
                        .await;
                    round.complete = true;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Group the folders of the credentials `planner` tracks and give each credential of a listed
/// folder that folder's reconcile slot (the others their own).
pub(super) fn group(folders: &Folders, planner: &mut Planner, app: &App, by_name: &ByName) {
    let listed = folders.regroup(shared(
        planner
            .names()
            .filter_map(|name| by_name.get(app, name))
            .map(|c| &c.secret),
    ));
    planner.reslot(|name| {
        let cred = by_name.get(app, name)?;
        let (folder, _) = Folder::of(&cred.secret);
        listed.contains(&folder).then(|| folder.slot_key())
    });
    tracing::debug!(
        folders = listed.len(),
        "folders reconciled with one listing each"
    );
}

impl super::main_loop::Loop {
    /// When the credentials tracked changed, or a folder fell back: [`group`] again.
    pub(super) fn group_folders(&mut self) {
        let fell_back = self.folders.take_changed();
        let changes = self.planner.changes();
        if !fell_back && self.grouped_at == Some(changes) {
            return;
        }
        self.grouped_at = Some(changes);
        group(&self.folders, &mut self.planner, &self.app, &self.by_name);
    }
}

#[cfg(test)]
mod tests;
